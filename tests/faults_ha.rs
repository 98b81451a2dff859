//! Two replicas (same `PROXY_INSTANCE_NAME`, one registry, each its own HAProxy) get
//! concurrent reconfigures of the same service with different parameters: the final intent in
//! KV is one whole request, never a mix of the two, and both replicas route exactly that.

mod support;

use support::{Proxy, Registry, backend, haproxy_available, wait_until};

async fn kv_value(registry: &Registry, key: &str) -> Option<String> {
    let prefix =
        flow_proxy::consul::KvPrefix::new(key.rsplit_once('/').unwrap().0.to_owned() + "/")
            .unwrap();
    registry
        .client
        .kv_list(&prefix)
        .await
        .unwrap()
        .into_iter()
        .find(|p| p.key == key)
        .map(|p| String::from_utf8_lossy(&p.value).into_owned())
}

/// Whether `proxy` routes `domain` + `path` to the service (200 "s").
async fn routes(proxy: &Proxy, domain: &str, path: &str) -> bool {
    proxy.get(domain, path).await == (200, "s\n".to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_reconfigures_through_two_replicas_end_in_one_whole_request_on_both() {
    if !haproxy_available() {
        return;
    }
    let registry = Registry::start().await;
    let mut a = Proxy::start(&registry, "edge").await;
    let mut b = Proxy::start(&registry, "edge").await;
    let port = backend("s").await;
    for round in 0..8 {
        let name = format!("s{round}");
        registry.register(&name, 1, port).await;
        let one = format!(
            "/v1/docker-flow-proxy/reconfigure?serviceName={name}&servicePath=/one{round}&serviceDomain=one.example"
        );
        let two = format!(
            "/v1/docker-flow-proxy/reconfigure?serviceName={name}&servicePath=/two{round}&serviceDomain=two.example"
        );
        // Alternate who goes first, so both orders of arrival are exercised.
        let ((sa, ba), (sb, bb)) = if round % 2 == 0 {
            tokio::join!(a.call(&one), b.call(&two))
        } else {
            let (x, y) = tokio::join!(b.call(&two), a.call(&one));
            (y, x)
        };
        assert_eq!(sa, 200, "{ba}");
        assert_eq!(sb, 200, "{bb}");
        let path = kv_value(&registry, &format!("edge/{name}/path")).await;
        let domain = kv_value(&registry, &format!("edge/{name}/domain")).await;
        let (winner, loser) = match (path.as_deref(), domain.as_deref()) {
            (Some(p), Some("one.example")) if p == format!("/one{round}") => (
                ("one.example", format!("/one{round}")),
                ("two.example", format!("/two{round}")),
            ),
            (Some(p), Some("two.example")) if p == format!("/two{round}") => (
                ("two.example", format!("/two{round}")),
                ("one.example", format!("/one{round}")),
            ),
            other => panic!("round {round}: KV holds a mix of two requests: {other:?}"),
        };
        eprintln!("round {round}: {} won", winner.0);
        for (label, proxy) in [("a", &a), ("b", &b)] {
            wait_until(
                &format!("round {round}: replica {label} routes the winner only"),
                || async {
                    routes(proxy, winner.0, &winner.1).await
                        && !routes(proxy, loser.0, &loser.1).await
                },
            )
            .await;
        }
    }
    a.stop().await;
    b.stop().await;
}
