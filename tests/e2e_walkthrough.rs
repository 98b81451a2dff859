//! The original Docker Flow: Proxy README walkthrough, step by step, through a real HAProxy:
//! reconfigure, use, scale without another call, several paths, domain, remove, failover.

mod support;

use std::collections::BTreeSet;

use support::{Proxy, Registry, backend, haproxy_available};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readme_walkthrough() {
    if !haproxy_available() {
        return;
    }
    let registry = Registry::start().await;
    let mut proxy = Proxy::start(&registry, "docker-flow").await;
    let app1 = backend("hello, world! 1").await;
    registry.register("go-demo", 1, app1).await;

    // 2. Deploy and reconfigure: the answer is DFP's echo.
    let (status, body) = proxy
        .call("/v1/docker-flow-proxy/reconfigure?serviceName=go-demo&servicePath=/demo")
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        r#"{"Status":"OK","Message":"","ServiceName":"go-demo","ServiceColor":"","ServicePath":["/demo"],"ServiceDomain":"","ConsulTemplateFePath":"","ConsulTemplateBePath":"","PathType":"","SkipCheck":false}"#
    );
    let keys = registry.kv_keys("docker-flow/go-demo/").await;
    assert!(
        keys.contains(&"docker-flow/go-demo/path".to_owned()),
        "{keys:?}"
    );
    assert!(
        keys.contains(&"docker-flow/go-demo/pathtype".to_owned()),
        "{keys:?}"
    );

    // 3. Use it: right after the answer, the route works.
    let (status, body) = proxy.get("localhost", "/demo/hello").await;
    assert_eq!((status, body.as_str()), (200, "hello, world! 1\n"));

    // 4. Scale 1 → 3 as Registrator would, with no further call.
    let app2 = backend("hello, world! 2").await;
    let app3 = backend("hello, world! 3").await;
    registry.register("go-demo", 2, app2).await;
    registry.register("go-demo", 3, app3).await;
    let mut seen = BTreeSet::new();
    let deadline = tokio::time::Instant::now() + support::DEADLINE;
    while seen.len() < 3 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {seen:?} got traffic"
        );
        let (status, body) = proxy.get("localhost", "/demo/hello").await;
        if status == 200 {
            seen.insert(body);
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }

    // 5. Several paths.
    let (status, body) = proxy
        .call("/v1/docker-flow-proxy/reconfigure?serviceName=go-demo&servicePath=/demo/hello,/demo/person")
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains(r#""ServicePath":["/demo/hello","/demo/person"]"#),
        "{body}"
    );
    assert_eq!(proxy.get("localhost", "/demo/hello").await.0, 200);
    assert_eq!(proxy.get("localhost", "/demo/person").await.0, 200);
    let (status, body) = proxy.get("localhost", "/demo/other").await;
    assert_eq!(status, 503, "an unmatched path gets the 503 page");
    assert!(body.contains("no service is configured"), "{body}");

    // 6. Domain: only requests for that host.
    let (status, body) = proxy
        .call("/v1/docker-flow-proxy/reconfigure?serviceName=go-demo&servicePath=/demo&serviceDomain=my-domain.com")
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(proxy.get("my-domain.com", "/demo/hello").await.0, 200);
    assert_eq!(proxy.get("My-Domain.com:8080", "/demo/hello").await.0, 200);
    assert_eq!(proxy.get("other.com", "/demo/hello").await.0, 503);
    assert_eq!(
        proxy.get("my-domain.com.evil.org", "/demo/hello").await.0,
        503
    );

    // 7. Remove: no longer routed, KV clean, a service sharing the prefix untouched.
    let other = backend("two").await;
    registry.register("go-demo2", 1, other).await;
    let (status, _) = proxy
        .call("/v1/docker-flow-proxy/reconfigure?serviceName=go-demo2&servicePath=/two")
        .await;
    assert_eq!(status, 200);
    let (status, body) = proxy
        .call("/v1/docker-flow-proxy/remove?serviceName=go-demo")
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body.starts_with(r#"{"Status":"OK","Message":"","ServiceName":"go-demo""#),
        "{body}"
    );
    assert_eq!(proxy.get("my-domain.com", "/demo/hello").await.0, 503);
    assert!(registry.kv_keys("docker-flow/go-demo/").await.is_empty());
    assert!(!registry.kv_keys("docker-flow/go-demo2/").await.is_empty());
    assert_eq!(
        proxy.get("localhost", "/two").await,
        (200, "two\n".to_owned())
    );

    // 9. Failover: reconfigure, stop the proxy and its HAProxy, start a new one with a new
    // data directory on the same registry: the routes come back with no API call.
    let (status, _) = proxy
        .call("/v1/docker-flow-proxy/reconfigure?serviceName=go-demo&servicePath=/demo")
        .await;
    assert_eq!(status, 200);
    let old_port = proxy.http_port;
    proxy.stop().await;
    assert_eq!(
        support::http(old_port, "GET", "localhost", "/demo/hello")
            .await
            .0,
        0
    );
    let mut replacement = Proxy::start(&registry, "docker-flow").await;
    let (status, body) = replacement.get("localhost", "/demo/hello").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.starts_with("hello, world!"), "{body}");
    assert_eq!(replacement.get("localhost", "/two").await.0, 200);
    replacement.stop().await;
}
