//! Consul unreachable (hanging, resetting, slow, answering 500 or garbage, or stopped) while
//! requests flow through HAProxy: the last-known-good routing keeps serving with zero failed
//! requests, API writes fail with a clear 503 in bounded time and write nothing, the watchers
//! back off instead of spinning, and changes made in the catalog meanwhile are picked up once
//! Consul answers again.

mod support;

use std::time::{Duration, Instant};

use support::chaos::{Chaos, Mode};
use support::faults::{RegistryProcess, Traffic, proxy_on};
use support::{backend, haproxy_available, wait_until};

const RECONFIGURE_X: &str = "/v1/docker-flow-proxy/reconfigure?serviceName=x&servicePath=/x";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_consul_fault_keeps_traffic_flowing_and_writes_fail_cleanly() {
    if !haproxy_available() {
        return;
    }
    let registry = RegistryProcess::start().await;
    let chaos = Chaos::start(registry.addr).await;
    let mut proxy = proxy_on(&chaos.url(), "edge", &[]).await;
    registry.register("app", 1, backend("app").await).await;
    let b1 = registry.register("b", 1, backend("b1").await).await;
    for path in [
        "/v1/docker-flow-proxy/reconfigure?serviceName=app&servicePath=/app",
        "/v1/docker-flow-proxy/reconfigure?serviceName=b&servicePath=/b",
    ] {
        let (status, body) = proxy.call(path).await;
        assert_eq!(status, 200, "{body}");
    }
    assert_eq!(proxy.get("localhost", "/b").await, (200, "b1\n".to_owned()));
    let traffic = Traffic::start(proxy.http_port, "localhost", "/app", "app\n");

    let faults = [
        Mode::Hang,
        Mode::Reset,
        Mode::Delay(Duration::from_millis(1500)),
        Mode::Status(500),
        Mode::Garbage,
    ];
    for (round, mode) in faults.into_iter().enumerate() {
        chaos.set(mode);
        let before = chaos.accepted();
        tokio::time::sleep(Duration::from_secs(3)).await;
        let during = chaos.accepted() - before;
        eprintln!("{mode:?}: {during} connections to Consul in 3 s");
        // Backoff, not a hot loop: a few watchers retrying at most a few times a second each.
        assert!(
            during < 300,
            "{mode:?}: {during} connections in 3 s: the watchers do not back off"
        );
        if !matches!(mode, Mode::Delay(_)) {
            // A write fails with 503 and a clear message, in bounded time (the request gives up
            // after 20 s and reports status 0).
            let started = Instant::now();
            let (status, body) = proxy.call(RECONFIGURE_X).await;
            eprintln!(
                "{mode:?}: reconfigure answered {status} in {:?}",
                started.elapsed()
            );
            assert_eq!(status, 503, "{mode:?}: {body}");
            assert!(body.contains("Consul"), "{mode:?}: {body}");
            // The route it asked for is not live.
            assert_eq!(proxy.get("localhost", "/x").await.0, 503, "{mode:?}");
        }
        // Meanwhile the catalog changes (directly on the registry) in the first round.
        if round == 0 {
            registry.register("b", 2, backend("b2").await).await;
            registry.deregister(&b1).await;
        }
        chaos.set(Mode::Pass);
        let picked_up = Instant::now();
        wait_until("the change made during the outage is live", || async {
            proxy.get("localhost", "/b").await == (200, "b2\n".to_owned())
        })
        .await;
        eprintln!(
            "{mode:?}: catalog state live {:?} after Consul returned",
            picked_up.elapsed()
        );
        // Nothing half-written: the refused reconfigure left no key.
        assert!(
            registry_kv_keys(&registry, "edge/x/").await.is_empty(),
            "{mode:?}: a refused write left keys in KV"
        );
    }

    let counts = traffic.stop().await;
    eprintln!("traffic during the faults: {counts:?}");
    assert!(
        counts.ok > 100,
        "too little traffic to prove anything: {counts:?}"
    );
    assert_eq!(counts.failures(), 0, "failed requests: {counts:?}");
    // After the faults the API writes again.
    registry.register("x", 1, backend("x").await).await;
    let (status, body) = proxy.call(RECONFIGURE_X).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(proxy.get("localhost", "/x").await, (200, "x\n".to_owned()));
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_that_is_stopped_and_started_again_loses_nothing() {
    if !haproxy_available() {
        return;
    }
    let mut registry = RegistryProcess::start().await;
    let mut proxy = proxy_on(&format!("http://{}", registry.addr), "edge", &[]).await;
    registry.register("app", 1, backend("app").await).await;
    let (status, body) = proxy
        .call("/v1/docker-flow-proxy/reconfigure?serviceName=app&servicePath=/app")
        .await;
    assert_eq!(status, 200, "{body}");
    let traffic = Traffic::start(proxy.http_port, "localhost", "/app", "app\n");

    registry.kill().await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let started = Instant::now();
    let (status, body) = proxy.call(RECONFIGURE_X).await;
    eprintln!(
        "reconfigure with the registry down answered {status} in {:?}",
        started.elapsed()
    );
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("Consul"), "{body}");
    tokio::time::sleep(Duration::from_secs(3)).await;
    registry.resume().await;

    // A change after the restart is picked up by the watchers that outlived the outage.
    registry.register("x", 1, backend("x").await).await;
    assert!(registry_kv_keys(&registry, "edge/x/").await.is_empty());
    let (status, body) = proxy.call(RECONFIGURE_X).await;
    assert_eq!(status, 200, "{body}");
    registry.register("app", 2, backend("app").await).await;
    let instances = || async {
        let cfg = std::fs::read_to_string(proxy.data_dir.path().join("haproxy.cfg")).unwrap();
        cfg.lines()
            .filter(|l| l.trim_start().starts_with("server ") && !l.contains("disabled"))
            .count()
    };
    wait_until("the new instance is routed", || async {
        instances().await >= 3
    })
    .await;
    let counts = traffic.stop().await;
    eprintln!("traffic across the registry restart: {counts:?}");
    assert!(counts.ok > 50, "too little traffic: {counts:?}");
    assert_eq!(counts.failures(), 0, "failed requests: {counts:?}");
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_with_zero_instances_answers_503_and_never_falls_through() {
    if !haproxy_available() {
        return;
    }
    let registry = RegistryProcess::start().await;
    let chaos = Chaos::start(registry.addr).await;
    let mut proxy = proxy_on(&chaos.url(), "edge", &[]).await;
    let api_id = registry.register("api", 1, backend("api").await).await;
    registry.register("web", 1, backend("web").await).await;
    for path in [
        "/v1/docker-flow-proxy/reconfigure?serviceName=api&servicePath=/api",
        "/v1/docker-flow-proxy/reconfigure?serviceName=web&servicePath=/",
    ] {
        let (status, body) = proxy.call(path).await;
        assert_eq!(status, 200, "{body}");
    }
    assert_eq!(
        proxy.get("localhost", "/api").await,
        (200, "api\n".to_owned())
    );
    assert_eq!(
        proxy.get("localhost", "/other").await,
        (200, "web\n".to_owned())
    );

    // A failed read (500, garbage) does not empty the service.
    for mode in [Mode::Status(500), Mode::Garbage] {
        chaos.set(mode);
        tokio::time::sleep(Duration::from_secs(2)).await;
        for _ in 0..10 {
            assert_eq!(
                proxy.get("localhost", "/api").await,
                (200, "api\n".to_owned()),
                "{mode:?}"
            );
        }
        chaos.set(Mode::Pass);
    }

    // A good read with zero instances: the route stays and answers 503, never "web".
    registry.deregister(&api_id).await;
    wait_until("the api route answers 503", || async {
        proxy.get("localhost", "/api").await.0 == 503
    })
    .await;
    for _ in 0..20 {
        let (status, body) = proxy.get("localhost", "/api/x").await;
        assert_eq!(status, 503, "{body}");
        assert_ne!(body, "web\n");
    }
    assert_eq!(
        proxy.get("localhost", "/other").await,
        (200, "web\n".to_owned())
    );
    proxy.stop().await;
}

async fn registry_kv_keys(registry: &RegistryProcess, prefix: &str) -> Vec<String> {
    registry
        .client
        .kv_list(&flow_proxy::consul::KvPrefix::new(prefix).unwrap())
        .await
        .unwrap()
        .into_iter()
        .map(|p| p.key)
        .collect()
}
