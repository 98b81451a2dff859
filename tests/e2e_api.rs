//! The control API end to end: DFP's status codes and messages, bad input refused with live
//! state unchanged, methods and unknown paths, config output, and the catalog followed without
//! further calls (deregistration, critical instances).

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use support::{Proxy, Registry, api_call, backend, haproxy_available, wait_until};

const MANDATORY: &str = "The following queries are mandatory: (serviceName and servicePath) or (serviceName, consulTemplateFePath, and consulTemplateBePath)";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_and_live_state_is_unchanged() {
    if !haproxy_available() {
        return;
    }
    let registry = Registry::start().await;
    let mut proxy = Proxy::start(&registry, "docker-flow").await;
    let app = backend("app").await;
    registry.register("app", 1, app).await;
    let (status, body) = proxy
        .call("/v1/docker-flow-proxy/reconfigure?serviceName=app&servicePath=/app")
        .await;
    assert_eq!(status, 200, "{body}");
    let config_before = proxy.call("/v1/docker-flow-proxy/config").await;
    assert_eq!(config_before.0, 200);
    assert!(
        config_before.1.contains("frontend services"),
        "{}",
        config_before.1
    );
    let kv_before = registry.kv_keys("docker-flow/").await;

    // Missing serviceName (or servicePath): DFP's exact message, echo with NOK.
    let (status, body) = proxy
        .call("/v1/docker-flow-proxy/reconfigure?servicePath=/x")
        .await;
    assert_eq!(status, 400);
    assert_eq!(
        body,
        format!(
            r#"{{"Status":"NOK","Message":"{MANDATORY}","ServiceName":"","ServiceColor":"","ServicePath":["/x"],"ServiceDomain":"","ConsulTemplateFePath":"","ConsulTemplateBePath":"","PathType":"","SkipCheck":false}}"#
        )
    );
    let (status, body) = proxy
        .call("/v1/docker-flow-proxy/reconfigure?serviceName=x")
        .await;
    assert_eq!(status, 400);
    assert!(body.contains(MANDATORY), "{body}");

    // Each bad value: 400 naming the parameter.
    for (query, param) in [
        ("serviceName=x&servicePath=/x&pathType=hdr_dom", "pathType"),
        ("serviceName=x&servicePath=/a%20b", "servicePath"),
        ("serviceName=x&servicePath=/a%0Ab", "servicePath"),
        ("serviceName=x&servicePath=/a%23b", "servicePath"),
        (
            "serviceName=x&servicePath=/x&serviceDomain=a%20b.com",
            "serviceDomain",
        ),
        (
            "serviceName=x&servicePath=/x&serviceDomain=a.com%0Ab",
            "serviceDomain",
        ),
        (
            "serviceName=x&servicePath=/x&serviceDomain=a.com%23",
            "serviceDomain",
        ),
        ("serviceName=a%2Fb&servicePath=/x", "serviceName"),
        ("serviceName=a..b&servicePath=/x", "serviceName"),
        ("serviceName=..&servicePath=/x", "serviceName"),
        ("serviceName=x&servicePath=/x&skipCheck=maybe", "skipCheck"),
    ] {
        let (status, body) = proxy
            .call(&format!("/v1/docker-flow-proxy/reconfigure?{query}"))
            .await;
        assert_eq!(status, 400, "{query}: {body}");
        assert!(body.starts_with(r#"{"Status":"NOK","Message":""#), "{body}");
        assert!(body.contains(param), "{query}: {body}");
    }
    // A custom template that cannot be read is refused, naming the parameter.
    let (status, body) = proxy
        .call("/v1/docker-flow-proxy/reconfigure?serviceName=x&consulTemplatePath=/consul_templates/x.tmpl")
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("consulTemplatePath"), "{body}");

    // remove without or with a bad serviceName.
    let (status, body) = proxy.call("/v1/docker-flow-proxy/remove").await;
    assert_eq!(status, 400);
    assert!(
        body.contains(r#""Message":"The serviceName query is mandatory""#),
        "{body}"
    );
    let (status, _) = proxy
        .call("/v1/docker-flow-proxy/remove?serviceName=a%2F..")
        .await;
    assert_eq!(status, 400);

    // Nothing changed: the same configuration, the same keys, the route still works.
    assert_eq!(
        proxy.call("/v1/docker-flow-proxy/config").await,
        config_before
    );
    assert_eq!(registry.kv_keys("docker-flow/").await, kv_before);
    assert_eq!(
        proxy.get("localhost", "/app").await,
        (200, "app\n".to_owned())
    );
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_methods_and_unknown_paths() {
    if !haproxy_available() {
        return;
    }
    let registry = Registry::start().await;
    let mut proxy = Proxy::start(&registry, "docker-flow").await;
    let app = backend("app").await;
    registry.register("app", 1, app).await;

    for method in ["GET", "PUT", "POST"] {
        let (status, body) = api_call(
            proxy.api,
            method,
            "/v1/docker-flow-proxy/reconfigure?serviceName=app&servicePath=/app&pathType=path_beg",
        )
        .await;
        assert_eq!(status, 200, "{method}: {body}");
        assert!(body.contains(r#""PathType":"path_beg""#), "{body}");
        assert_eq!(proxy.get("localhost", "/app/x").await.0, 200);
        for path in ["/v1/test", "/v2/test", "/v1/docker-flow-proxy/ping"] {
            let (status, body) = api_call(proxy.api, method, path).await;
            assert_eq!(status, 200, "{method} {path}");
            assert!(body.starts_with(r#"{"Status":"OK""#), "{body}");
        }
        let (status, body) = api_call(proxy.api, method, "/v1/nothing-here").await;
        assert_eq!((status, body.as_str()), (404, ""), "{method}");
    }

    let (status, body) = proxy.call("/v1/docker-flow-proxy/reload").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(proxy.get("localhost", "/app").await.0, 200);

    let (status, body) = proxy.call("/v1/docker-flow-proxy/config?type=json").await;
    assert_eq!(status, 200);
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    let services = json["Services"].as_array().unwrap();
    assert_eq!(services.len(), 1, "{body}");
    assert_eq!(services[0]["ServiceName"], "app");
    assert_eq!(services[0]["Routes"][0]["Path"], "/app");
    assert_eq!(services[0]["Servers"], 1);

    // Unmatched paths get the 503 page; a service without routed instances answers 503 too.
    let (status, body) = proxy.get("localhost", "/elsewhere").await;
    assert_eq!(status, 503);
    assert!(body.contains("no service is configured"), "{body}");
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_catalog_is_followed_without_further_calls() {
    if !haproxy_available() {
        return;
    }
    let registry = Registry::start().await;
    let mut proxy = Proxy::start(&registry, "docker-flow").await;
    let (one, two) = (backend("one").await, backend("two").await);
    let id1 = registry.register("svc", 1, one).await;
    registry.register("svc", 2, two).await;
    let (status, body) = proxy
        .call("/v1/docker-flow-proxy/reconfigure?serviceName=svc&servicePath=/svc")
        .await;
    assert_eq!(status, 200, "{body}");

    // Both get traffic; after deregistration only the second one does.
    let mut seen = BTreeSet::new();
    for _ in 0..20 {
        seen.insert(proxy.get("localhost", "/svc").await.1);
    }
    assert_eq!(seen.len(), 2, "{seen:?}");
    // An identical reconfigure changes nothing; instance churn needs no reload.
    let worker = proxy.worker_pid().await;
    let (status, _) = proxy
        .call("/v1/docker-flow-proxy/reconfigure?serviceName=svc&servicePath=/svc")
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        proxy.worker_pid().await,
        worker,
        "no reload for an unchanged intent"
    );
    registry.deregister(&id1).await;
    wait_until("the deregistered instance gets no traffic", || async {
        for _ in 0..6 {
            if proxy.get("localhost", "/svc").await != (200, "two\n".to_owned()) {
                return false;
            }
        }
        true
    })
    .await;
    assert_eq!(
        proxy.worker_pid().await,
        worker,
        "no reload for instance churn"
    );

    // A critical instance is not routed: its service keeps its route and answers 503.
    let sick = backend("sick").await;
    registry.register_critical("sick", 1, sick).await;
    let (status, body) = proxy
        .call("/v1/docker-flow-proxy/reconfigure?serviceName=sick&servicePath=/sick")
        .await;
    assert_eq!(status, 200, "{body}");
    for _ in 0..5 {
        let (status, body) = proxy.get("localhost", "/sick").await;
        assert_eq!(status, 503, "{body}");
        assert!(!body.contains("sick"), "{body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A healthy instance registered later is routed.
    let well = backend("well").await;
    registry.register("sick", 2, well).await;
    wait_until("the healthy instance is routed", || async {
        proxy.get("localhost", "/sick").await == (200, "well\n".to_owned())
    })
    .await;

    // A lone reconfigure is live when it answers, every time.
    for i in 0..4 {
        let name = format!("quick{i}");
        let port = backend("quick").await;
        registry.register(&name, 1, port).await;
        let (status, body) = proxy
            .call(&format!(
                "/v1/docker-flow-proxy/reconfigure?serviceName={name}&servicePath=/{name}"
            ))
            .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(
            proxy.get("localhost", &format!("/{name}")).await,
            (200, "quick\n".to_owned())
        );
    }
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consul_unreachable_gives_503_and_keeps_serving() {
    if !haproxy_available() {
        return;
    }
    let mut registry = Registry::start().await;
    let mut proxy = Proxy::start(&registry, "docker-flow").await;
    let app = backend("app").await;
    registry.register("app", 1, app).await;
    let (status, body) = proxy
        .call("/v1/docker-flow-proxy/reconfigure?serviceName=app&servicePath=/app")
        .await;
    assert_eq!(status, 200, "{body}");
    let config_before = proxy.call("/v1/docker-flow-proxy/config").await;

    registry.running.take().unwrap().shutdown().await.unwrap();
    let (status, body) = proxy
        .call("/v1/docker-flow-proxy/reconfigure?serviceName=other&servicePath=/other")
        .await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("Could not send data to Consul"), "{body}");
    let (status, body) = proxy
        .call("/v1/docker-flow-proxy/remove?serviceName=app")
        .await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("Consul"), "{body}");
    assert_eq!(
        proxy.call("/v1/docker-flow-proxy/config").await,
        config_before
    );
    assert_eq!(
        proxy.get("localhost", "/app").await,
        (200, "app\n".to_owned())
    );
    proxy.stop().await;
}

/// A change HAProxy refuses answers 500 with HAProxy's reason, is taken back out of KV, and
/// blocks nothing else. The refusal is injected from the test side: `HAPROXY_BIN` is a wrapper
/// whose `-c` refuses any configuration routing the service `poison`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_change_answers_500_and_blocks_nothing_else() {
    if !haproxy_available() {
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let wrapper = dir.path().join("haproxy-wrapper");
    std::fs::write(
        &wrapper,
        "#!/bin/sh\nif [ \"$1\" = \"-c\" ] && grep -q url_poison \"$3\"; then\n  \
         echo \"[ALERT]    (1) : config : parsing [$3:1] : poisoned service refused\" >&2\n  \
         exit 1\nfi\nexec haproxy \"$@\"\n",
    )
    .unwrap();
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let registry = Registry::start().await;
    let mut proxy = Proxy::start_with(
        &registry,
        "docker-flow",
        &["--haproxy-bin".to_owned(), wrapper.display().to_string()],
    )
    .await;
    let app = backend("app").await;
    registry.register("app", 1, app).await;
    let (status, body) = proxy
        .call("/v1/docker-flow-proxy/reconfigure?serviceName=app&servicePath=/app")
        .await;
    assert_eq!(status, 200, "{body}");

    // A regular expression: HAProxy may refuse it, so it is checked with `haproxy -c` (here
    // the wrapper) before the reload.
    let (status, body) = proxy
        .call(
            "/v1/docker-flow-proxy/reconfigure?serviceName=poison&servicePath=/poison\
             &pathType=path_reg",
        )
        .await;
    assert_eq!(status, 500, "{body}");
    assert!(body.starts_with(r#"{"Status":"NOK","Message":""#), "{body}");
    assert!(body.contains("poisoned service refused"), "{body}");
    assert!(
        !body.contains("frontend services"),
        "never the whole config: {body}"
    );
    assert!(registry.kv_keys("docker-flow/poison/").await.is_empty());

    // Later changes still apply, and the earlier route still works.
    let other = backend("other").await;
    registry.register("other", 1, other).await;
    let (status, body) = proxy
        .call("/v1/docker-flow-proxy/reconfigure?serviceName=other&servicePath=/other")
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        proxy.get("localhost", "/other").await,
        (200, "other\n".to_owned())
    );
    assert_eq!(
        proxy.get("localhost", "/app").await,
        (200, "app\n".to_owned())
    );
    assert_eq!(proxy.get("localhost", "/poison").await.0, 503);

    // The same refused intent written straight into KV (as another replica or a tool might)
    // does not block later changes either.
    for (key, value) in [("path", "/poison"), ("pathtype", "path_reg")] {
        registry
            .client
            .kv_put(
                &flow_proxy::consul::KvKey::new(format!("docker-flow/poison/{key}")).unwrap(),
                value.as_bytes(),
                None,
            )
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let third = backend("third").await;
    registry.register("third", 1, third).await;
    let (status, body) = proxy
        .call("/v1/docker-flow-proxy/reconfigure?serviceName=third&servicePath=/third")
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        proxy.get("localhost", "/third").await,
        (200, "third\n".to_owned())
    );
    assert_eq!(
        proxy.get("localhost", "/app").await,
        (200, "app\n".to_owned())
    );
    proxy.stop().await;
}

fn counter(metrics: &str, name: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {metrics}"))
}

/// A change built only from values HAProxy takes literally goes live without `haproxy -c`: its
/// reload is the check. One that HAProxy refuses anyway (here a TCP port another process holds,
/// which `haproxy -c` would not catch either) answers 500 with HAProxy's reason, is rolled back
/// (route, KV), and blocks nothing else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_change_is_checked_by_its_reload_and_a_refusal_is_rolled_back() {
    if !haproxy_available() {
        return;
    }
    let registry = Registry::start().await;
    let mut proxy = Proxy::start(&registry, "docker-flow").await;
    let app = backend("app").await;
    registry.register("app", 1, app).await;
    let checked = "flow_proxy_config_validations_total";
    let unchecked = "flow_proxy_config_validations_skipped_total";
    let before = proxy.call("/metrics").await.1;
    let (status, body) = proxy
        .call("/v1/docker-flow-proxy/reconfigure?serviceName=app&servicePath=/app")
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        proxy.get("localhost", "/app").await,
        (200, "app\n".to_owned())
    );
    let after = proxy.call("/metrics").await.1;
    assert_eq!(
        counter(&after, checked),
        counter(&before, checked),
        "{after}"
    );
    assert!(
        counter(&after, unchecked) > counter(&before, unchecked),
        "{after}"
    );

    // A regular expression is checked first.
    let (status, body) = proxy
        .call(
            "/v1/docker-flow-proxy/reconfigure?serviceName=app&servicePath=/app&pathType=path_reg",
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let regex = proxy.call("/metrics").await.1;
    assert!(
        counter(&regex, checked) > counter(&after, checked),
        "{regex}"
    );

    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let db = backend("db").await;
    registry.register("db", 1, db).await;
    let (status, body) = proxy
        .call(&format!(
            "/v1/docker-flow-proxy/reconfigure?serviceName=db&reqMode=tcp&srcPort={port}"
        ))
        .await;
    assert_eq!(status, 500, "{body}");
    assert!(body.contains("cannot bind"), "{body}");
    assert!(registry.kv_keys("docker-flow/db/").await.is_empty());
    assert_eq!(
        proxy.get("localhost", "/app").await,
        (200, "app\n".to_owned())
    );
    let config = proxy.call("/v1/docker-flow-proxy/config").await.1;
    assert!(!config.contains("db-be"), "{config}");

    let other = backend("other").await;
    registry.register("other", 1, other).await;
    let (status, body) = proxy
        .call("/v1/docker-flow-proxy/reconfigure?serviceName=other&servicePath=/other")
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        proxy.get("localhost", "/other").await,
        (200, "other\n".to_owned())
    );
    drop(taken);
    proxy.stop().await;
}

/// Before the recovered configuration is live, `ping` answers 503 and writes are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_ready_until_the_recovered_configuration_is_live() {
    use clap::Parser;
    let data_dir = tempfile::Builder::new()
        .prefix("fp")
        .tempdir_in("/tmp")
        .unwrap();
    // Nothing listens there: intents cannot be recovered, so the proxy never gets ready.
    let consul = format!("http://127.0.0.1:{}", support::free_port());
    let cli = flow_proxy::settings::Cli::try_parse_from([
        "flow-proxy".to_owned(),
        "server".to_owned(),
        "--consul-address".to_owned(),
        consul,
        "--bind-address".to_owned(),
        "127.0.0.1".to_owned(),
        "--http-port".to_owned(),
        support::free_port().to_string(),
        "--data-dir".to_owned(),
        data_dir.path().display().to_string(),
    ])
    .unwrap();
    let flow_proxy::settings::Command::Server(args) = cli.command else {
        panic!("expected server")
    };
    flow_proxy::tls::install_crypto_provider();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let api = listener.local_addr().unwrap();
    let shutdown = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn(flow_proxy::server::run_server_on(
        *args,
        listener,
        shutdown.clone(),
    ));
    wait_until("the API answers", || async {
        api_call(api, "GET", "/v1/test").await.0 == 200
    })
    .await;
    let (status, body) = api_call(api, "GET", "/v1/docker-flow-proxy/ping").await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("not live yet"), "{body}");
    let (status, _) = api_call(
        api,
        "GET",
        "/v1/docker-flow-proxy/reconfigure?serviceName=a&servicePath=/a",
    )
    .await;
    assert_eq!(status, 503);
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(30), task)
        .await
        .expect("stops while still recovering")
        .unwrap()
        .unwrap();
    assert!(!data_dir.path().join("haproxy.pid").exists());
}

/// A service whose instances all disappear keeps its route and answers 503: it never falls
/// through to a catch-all. Wildcard domains match subdomains only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_service_answers_503_and_wildcards_match_subdomains() {
    if !haproxy_available() {
        return;
    }
    let registry = Registry::start().await;
    let mut proxy = Proxy::start(&registry, "docker-flow").await;
    let (root, api, wild) = (
        backend("root").await,
        backend("api").await,
        backend("wild").await,
    );
    registry.register("root", 1, root).await;
    let api_id = registry.register("api", 1, api).await;
    registry.register("wild", 1, wild).await;
    for query in [
        "serviceName=root&servicePath=/",
        "serviceName=api&servicePath=/api",
        "serviceName=wild&servicePath=/&serviceDomain=*.example.org",
    ] {
        let (status, body) = proxy
            .call(&format!("/v1/docker-flow-proxy/reconfigure?{query}"))
            .await;
        assert_eq!(status, 200, "{query}: {body}");
    }
    assert_eq!(
        proxy.get("localhost", "/api/x").await,
        (200, "api\n".to_owned())
    );
    assert_eq!(
        proxy.get("localhost", "/else").await,
        (200, "root\n".to_owned())
    );
    assert_eq!(
        proxy.get("a.example.org", "/x").await,
        (200, "wild\n".to_owned())
    );
    assert_eq!(
        proxy.get("A.B.Example.org:80", "/x").await,
        (200, "wild\n".to_owned())
    );
    assert_eq!(
        proxy.get("example.org", "/x").await,
        (200, "root\n".to_owned())
    );
    assert_eq!(
        proxy.get("a.example.org.evil.com", "/x").await,
        (200, "root\n".to_owned())
    );

    registry.deregister(&api_id).await;
    wait_until("the emptied service answers 503", || async {
        proxy.get("localhost", "/api/x").await.0 == 503
    })
    .await;
    for _ in 0..5 {
        assert_eq!(proxy.get("localhost", "/api/x").await.0, 503);
    }
    assert_eq!(
        proxy.get("localhost", "/else").await,
        (200, "root\n".to_owned())
    );
    proxy.stop().await;
}
