//! By default HAProxy outlives flow-proxy: it keeps serving while flow-proxy is down, and the
//! next flow-proxy on the same data directory adopts it instead of starting a second one.

mod support;

use support::{Proxy, Registry, backend, free_port, haproxy_available};

fn tmp() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("fp")
        .tempdir_in("/tmp")
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn haproxy_keeps_serving_across_a_restart_and_is_adopted() {
    if !haproxy_available() {
        return;
    }
    let registry = Registry::start().await;
    let http_port = free_port();
    let mut first = Proxy::start_in(&registry, "docker-flow", &[], tmp(), http_port).await;
    let app = backend("app").await;
    registry.register("app", 1, app).await;
    let (status, body) = first
        .call("/v1/docker-flow-proxy/reconfigure?serviceName=app&servicePath=/app")
        .await;
    assert_eq!(status, 200, "{body}");
    first.stop().await;
    // No controller: HAProxy still serves.
    assert_eq!(
        support::http(http_port, "GET", "localhost", "/app").await,
        (200, "app\n".to_owned())
    );
    let dir = std::mem::replace(&mut first.data_dir, tmp());
    let pid = std::fs::read_to_string(dir.path().join("haproxy.pid")).unwrap();

    let mut second = Proxy::start_in(
        &registry,
        "docker-flow",
        &["--stop-haproxy-on-exit".to_owned()],
        dir,
        http_port,
    )
    .await;
    let adopted = std::fs::read_to_string(second.data_dir.path().join("haproxy.pid")).unwrap();
    assert_eq!(adopted, pid, "the running master was adopted");
    assert_eq!(second.get("localhost", "/app").await.0, 200);
    let other = backend("other").await;
    registry.register("other", 1, other).await;
    let (status, body) = second
        .call("/v1/docker-flow-proxy/reconfigure?serviceName=other&servicePath=/other")
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        second.get("localhost", "/other").await,
        (200, "other\n".to_owned())
    );
    second.stop().await;
    assert_eq!(
        support::http(http_port, "GET", "localhost", "/app").await.0,
        0
    );
}
