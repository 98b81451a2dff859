//! Load on the API: 200 concurrent reconfigure calls for 200 services, while traffic flows to
//! another route. Every call answers 200, every intent is persisted, every service is routed,
//! and the calls share far fewer reloads than there are calls. No request through HAProxy
//! fails meanwhile.

mod support;

use std::time::{Duration, Instant};

use support::faults::{Traffic, metric};
use support::{Proxy, Registry, backend, haproxy_available, wait_until};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const SERVICES: usize = 200;

fn services() -> usize {
    std::env::var("FAULTS_LOAD_SERVICES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(SERVICES)
}

/// A GET on the API with a generous timeout (one call may wait for several applies).
async fn slow_call(api: std::net::SocketAddr, path: String) -> (u16, String) {
    let attempt = async {
        let mut s = tokio::net::TcpStream::connect(api).await.ok()?;
        let req = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.ok()?;
        let mut out = Vec::new();
        s.read_to_end(&mut out).await.ok()?;
        let out = String::from_utf8_lossy(&out).into_owned();
        let status = out.split_whitespace().nth(1)?.parse().ok()?;
        Some((status, out))
    };
    tokio::time::timeout(Duration::from_secs(100), attempt)
        .await
        .ok()
        .flatten()
        .unwrap_or((0, String::new()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_reconfigures_are_all_persisted_routed_and_batched() {
    if !haproxy_available() {
        return;
    }
    let _ = tracing_subscriber::fmt()
        .with_env_filter("info,warp=off")
        .with_test_writer()
        .try_init();
    let n = services();
    let registry = Registry::start().await;
    let mut proxy = Proxy::start(&registry, "edge").await;
    let port = backend("svc").await;
    registry.register("app", 1, backend("app").await).await;
    let (status, body) = proxy
        .call("/v1/docker-flow-proxy/reconfigure?serviceName=app&servicePath=/app")
        .await;
    assert_eq!(status, 200, "{body}");
    for i in 0..n {
        registry.register(&format!("svc{i}"), 1, port).await;
    }
    let reloads_before = metric(proxy.api, "flow_proxy_haproxy_reloads_total").await;
    let traffic = Traffic::start(proxy.http_port, "localhost", "/app", "app\n");

    let started = Instant::now();
    let calls: Vec<_> = (0..n)
        .map(|i| {
            let path =
                format!("/v1/docker-flow-proxy/reconfigure?serviceName=svc{i}&servicePath=/svc{i}");
            tokio::spawn(slow_call(proxy.api, path))
        })
        .collect();
    for (i, call) in calls.into_iter().enumerate() {
        let (status, out) = call.await.unwrap();
        eprintln!("svc{i}: {status} after {:?}", started.elapsed());
        assert_eq!(status, 200, "svc{i}: {out}");
    }
    let reloads = metric(proxy.api, "flow_proxy_haproxy_reloads_total").await - reloads_before;
    eprintln!(
        "{n} concurrent reconfigures answered in {:?} with {reloads} reloads",
        started.elapsed()
    );
    let counts = traffic.stop().await;
    eprintln!("traffic during the load: {counts:?}");

    let keys = registry.kv_keys("edge/").await;
    let mut late = Vec::new();
    for i in 0..n {
        let folder = format!("edge/svc{i}/");
        assert!(
            keys.iter().any(|k| k.starts_with(&folder)),
            "svc{i} is not persisted"
        );
        let got = proxy.get("localhost", &format!("/svc{i}")).await;
        if got != (200, "svc\n".to_owned()) {
            late.push((i, got));
        }
    }
    // A route answered 200 is live; its instance may still be on its way from the catalog
    // when the machine is very busy. Every service must be routed within the deadline.
    eprintln!("not yet routed right after the calls: {late:?}");
    for (i, _) in late {
        wait_until(&format!("svc{i} is routed"), || async {
            proxy.get("localhost", &format!("/svc{i}")).await == (200, "svc\n".to_owned())
        })
        .await;
    }
    assert!(reloads >= 1);
    assert!(
        reloads <= (n / 10) as u64,
        "{reloads} reloads for {n} calls: the calls are not batched"
    );
    assert!(counts.ok > 0, "{counts:?}");
    assert_eq!(
        counts.failures(),
        0,
        "failed requests during the load: {counts:?}"
    );
    proxy.stop().await;
}
