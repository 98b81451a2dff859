//! Two flow-proxies with the same instance name on one registry serve the same routes: a change
//! made through one is followed by the other through its KV watch. A proxy with another
//! instance name sees none of it.

mod support;

use support::{Proxy, Registry, backend, haproxy_available, wait_until};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_follows_changes_made_through_the_other() {
    if !haproxy_available() {
        return;
    }
    let registry = Registry::start().await;
    let mut a = Proxy::start(&registry, "edge").await;
    let mut b = Proxy::start(&registry, "edge").await;
    let mut other = Proxy::start(&registry, "elsewhere").await;
    let app = backend("shared").await;
    registry.register("shared", 1, app).await;

    let (status, body) = a
        .call("/v1/docker-flow-proxy/reconfigure?serviceName=shared&servicePath=/shared")
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(a.get("localhost", "/shared").await.0, 200);
    wait_until("the replica serves the route", || async {
        b.get("localhost", "/shared").await == (200, "shared\n".to_owned())
    })
    .await;
    assert_eq!(other.get("localhost", "/shared").await.0, 503);
    assert!(registry.kv_keys("elsewhere/").await.is_empty());

    let (status, body) = b
        .call("/v1/docker-flow-proxy/remove?serviceName=shared")
        .await;
    assert_eq!(status, 200, "{body}");
    wait_until("the first replica drops the route", || async {
        a.get("localhost", "/shared").await.0 == 503
    })
    .await;
    a.stop().await;
    b.stop().await;
    other.stop().await;
}
