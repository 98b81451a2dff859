//! Blue-green: the color picks the Consul service `<name>-<color>` while the route and backend
//! stay, so a switch is one reconfigure with no failed request.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use support::{Proxy, Registry, backend, haproxy_available};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_color_switch_is_one_reconfigure_with_no_failed_request() {
    if !haproxy_available() {
        return;
    }
    let registry = Registry::start().await;
    let mut proxy = Proxy::start(&registry, "docker-flow").await;
    let (blue, green) = (backend("blue").await, backend("green").await);
    registry.register("go-demo-blue", 1, blue).await;
    registry.register("go-demo-green", 1, green).await;

    let (status, body) = proxy
        .call("/v1/docker-flow-proxy/reconfigure?serviceName=go-demo&servicePath=/demo&serviceColor=blue")
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(r#""ServiceColor":"blue""#), "{body}");
    assert_eq!(
        proxy.get("localhost", "/demo").await,
        (200, "blue\n".to_owned())
    );

    let stop = Arc::new(AtomicBool::new(false));
    let port = proxy.http_port;
    let traffic = tokio::spawn({
        let stop = Arc::clone(&stop);
        async move {
            let mut answers = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                answers.push(support::http(port, "GET", "localhost", "/demo").await);
            }
            answers
        }
    });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let (status, body) = proxy
        .call("/v1/docker-flow-proxy/reconfigure?serviceName=go-demo&servicePath=/demo&serviceColor=green")
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        proxy.get("localhost", "/demo").await,
        (200, "green\n".to_owned())
    );
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    let answers = traffic.await.unwrap();
    assert!(answers.len() > 5, "too little traffic: {}", answers.len());
    let failed: Vec<_> = answers.iter().filter(|(s, _)| *s != 200).collect();
    assert!(
        failed.is_empty(),
        "failed requests during the switch: {failed:?}"
    );
    assert_eq!(answers.last().unwrap().1, "green\n");
    let keys = registry.kv_keys("docker-flow/go-demo/").await;
    assert!(keys.contains(&"docker-flow/go-demo/color".to_owned()));
    proxy.stop().await;
}
