//! Routes declared by the services themselves in Consul tags (no API call), kept for a grace
//! period after the last instance goes, separated by tag prefix, overridden by API intents; and
//! instance weights from Consul's `Weights`, a tag or a meta key, changed without a reload.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use flow_proxy::consul::ServiceRegistration;
use support::{Proxy, Registry, backend, haproxy_available, wait_until};

/// The body of the catch-all backend: nothing routes this host and path.
const UNROUTED: &str = "no service is configured for this host and path";

fn counter(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {text}"))
}

async fn register(
    registry: &Registry,
    name: &str,
    id: &str,
    port: u16,
    tags: &[&str],
    meta: &[(&str, &str)],
) {
    registry
        .client
        .agent_register(&ServiceRegistration {
            id: id.to_owned(),
            name: name.to_owned(),
            address: "127.0.0.1".to_owned(),
            port,
            tags: tags.iter().map(|t| (*t).to_owned()).collect(),
            meta: meta
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect::<BTreeMap<_, _>>(),
            ..ServiceRegistration::default()
        })
        .await
        .unwrap();
}

/// Registers through the agent API with Consul's own `Weights`.
async fn register_weighted(registry: &Registry, name: &str, id: &str, port: u16, passing: u32) {
    let body = serde_json::json!({
        "ID": id, "Name": name, "Address": "127.0.0.1", "Port": port,
        "Weights": {"Passing": passing, "Warning": 1},
    });
    let resp = reqwest::Client::new()
        .put(format!(
            "http://{}/v1/agent/service/register",
            registry.addr
        ))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{resp:?}");
}

/// `/config?type=json`'s entry of one service, if listed.
async fn config_entry(proxy: &Proxy, service: &str) -> Option<serde_json::Value> {
    let (status, body) = proxy.call("/v1/docker-flow-proxy/config?type=json").await;
    assert_eq!(status, 200, "{body}");
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    json["Services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["ServiceName"] == service)
        .cloned()
}

fn tag_args(extra: &[&str]) -> Vec<String> {
    extra.iter().map(|s| (*s).to_owned()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tags_route_a_service_and_the_route_outlives_its_last_instance_by_the_grace() {
    if !haproxy_available() {
        return;
    }
    let registry = Registry::start().await;
    let mut proxy = Proxy::start_with(
        &registry,
        "docker-flow",
        &tag_args(&["--tag-routes", "--tag-route-grace", "20"]),
    )
    .await;
    // A service whose tags the API would refuse is left out; the others are routed.
    let bad = backend("bad").await;
    register(
        &registry,
        "bad",
        "bad-1",
        bad,
        &["flow-proxy.path=/bad", "flow-proxy.pathType=nope"],
        &[],
    )
    .await;
    // One that passes validation but that HAProxy refuses (the regex does not compile) is
    // held back; it blocks nothing else.
    register(
        &registry,
        "regex",
        "regex-1",
        bad,
        &["flow-proxy.path=/rx(", "flow-proxy.pathType=path_reg"],
        &[],
    )
    .await;
    let one = backend("one").await;
    register(
        &registry,
        "web",
        "web-1",
        one,
        &["flow-proxy.path=/web", "flow-proxy.pathType=path_beg"],
        &[],
    )
    .await;
    wait_until("the tagged service is routed", || async {
        proxy.get("localhost", "/web/x").await == (200, "one\n".to_owned())
    })
    .await;
    // The status is published right after HAProxy has the change.
    wait_until("web is listed", || async {
        config_entry(&proxy, "web").await.is_some()
    })
    .await;
    let web = config_entry(&proxy, "web").await.unwrap();
    assert_eq!(web["Source"], "tags", "{web}");
    assert_eq!(web["Routes"][0]["Path"], "/web", "{web}");
    assert!(config_entry(&proxy, "bad").await.is_none());
    assert!(config_entry(&proxy, "regex").await.is_none());
    let (status, body) = proxy.get("localhost", "/bad").await;
    assert_eq!(status, 503);
    assert!(body.contains(UNROUTED), "{body}");
    // Tag intents live in the catalog, never in KV.
    assert!(registry.kv_keys("docker-flow/").await.is_empty());

    // A rolling restart: the last instance goes, a new one comes within the grace period. The
    // route stays all along, so HAProxy is never reloaded for it.
    let pid = proxy.worker_pid().await;
    let failures = "flow_proxy_haproxy_reload_failures_total";
    let failed_before = counter(&proxy.call("/metrics").await.1, failures);
    assert!(failed_before >= 1, "the refused regex was tried once");
    registry.deregister("web-1").await;
    wait_until("the instance is gone from the backend", || async {
        config_entry(&proxy, "web")
            .await
            .is_some_and(|w| w["Servers"] == 0)
    })
    .await;
    assert!(
        config_entry(&proxy, "web").await.is_some(),
        "the route is kept during the grace period"
    );
    let (status, body) = proxy.get("localhost", "/web").await;
    assert_eq!(status, 503);
    assert!(
        !body.contains(UNROUTED),
        "routed to its empty backend, not the catch-all: {body}"
    );
    let two = backend("two").await;
    register(
        &registry,
        "web",
        "web-2",
        two,
        &["flow-proxy.path=/web", "flow-proxy.pathType=path_beg"],
        &[],
    )
    .await;
    wait_until("the new instance serves", || async {
        proxy.get("localhost", "/web").await == (200, "two\n".to_owned())
    })
    .await;
    assert_eq!(
        proxy.worker_pid().await,
        pid,
        "no reload for a rolling restart"
    );
    // The refused tag route is not tried again on every catalog change.
    assert_eq!(
        counter(&proxy.call("/metrics").await.1, failures),
        failed_before
    );

    // Gone for good: the route is removed once the grace period is over.
    registry.deregister("web-2").await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let (status, body) = proxy.get("localhost", "/web").await;
        if status == 503 && body.contains(UNROUTED) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the route was never removed"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    wait_until("web is no longer listed", || async {
        config_entry(&proxy, "web").await.is_none()
    })
    .await;
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_proxy_reads_its_own_prefix_and_the_api_wins_over_tags() {
    if !haproxy_available() {
        return;
    }
    let registry = Registry::start().await;
    let (app, other) = (backend("app").await, backend("other").await);
    // Two tags of one parameter make a list (Registrator's SERVICE_TAGS cannot hold a comma).
    register(
        &registry,
        "app",
        "app-1",
        app,
        &["flow-proxy.path=/app", "flow-proxy.path=/also"],
        &[],
    )
    .await;
    register(
        &registry,
        "other",
        "other-1",
        other,
        &["edge.path=/other"],
        &[],
    )
    .await;
    let mut main = Proxy::start_with(&registry, "docker-flow", &tag_args(&["--tag-routes"])).await;
    let mut edge = Proxy::start_with(
        &registry,
        "edge",
        &tag_args(&["--tag-routes", "--tag-prefix", "edge"]),
    )
    .await;
    wait_until("each proxy routes its own tags", || async {
        main.get("localhost", "/app").await == (200, "app\n".to_owned())
            && edge.get("localhost", "/other").await == (200, "other\n".to_owned())
    })
    .await;
    assert_eq!(
        main.get("localhost", "/also").await,
        (200, "app\n".to_owned())
    );
    // Both services were in the catalog before either proxy started: each one saw both.
    for (proxy, path) in [(&main, "/other"), (&edge, "/app")] {
        let (status, body) = proxy.get("localhost", path).await;
        assert_eq!(status, 503, "{path}");
        assert!(body.contains(UNROUTED), "{path}: {body}");
    }
    assert!(config_entry(&edge, "app").await.is_none());
    assert!(config_entry(&main, "other").await.is_none());

    // An API intent for the same service replaces the tag route.
    let (status, body) = main
        .call("/v1/docker-flow-proxy/reconfigure?serviceName=app&servicePath=/by-api")
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        main.get("localhost", "/by-api").await,
        (200, "app\n".to_owned())
    );
    let (status, body) = main.get("localhost", "/app").await;
    assert_eq!(status, 503);
    assert!(body.contains(UNROUTED), "{body}");
    let entry = config_entry(&main, "app").await.unwrap();
    assert_eq!(entry["Source"], "api", "{entry}");
    assert!(!registry.kv_keys("docker-flow/app/").await.is_empty());

    // Removing the API intent hands the service back to its tags.
    let (status, body) = main
        .call("/v1/docker-flow-proxy/remove?serviceName=app")
        .await;
    assert_eq!(status, 200, "{body}");
    wait_until("the tag route is back", || async {
        main.get("localhost", "/app").await == (200, "app\n".to_owned())
            && config_entry(&main, "app")
                .await
                .is_some_and(|e| e["Source"] == "tags")
    })
    .await;
    main.stop().await;
    edge.stop().await;
}

/// Requests `n` times; how many answers each body got.
async fn spread(proxy: &Proxy, path: &str, n: usize) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for _ in 0..n {
        let (status, body) = proxy.get("localhost", path).await;
        assert_eq!(status, 200, "{body}");
        *out.entry(body.trim().to_owned()).or_insert(0) += 1;
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weights_split_traffic_and_change_at_runtime_without_a_reload() {
    if !haproxy_available() {
        return;
    }
    let registry = Registry::start().await;
    let mut proxy = Proxy::start(&registry, "docker-flow").await;
    let (light, heavy) = (backend("light").await, backend("heavy").await);
    // Consul's own Weights: 1 and 3.
    register_weighted(&registry, "w", "w-light", light, 1).await;
    register_weighted(&registry, "w", "w-heavy", heavy, 3).await;
    let (status, body) = proxy
        .call("/v1/docker-flow-proxy/reconfigure?serviceName=w&servicePath=/w")
        .await;
    assert_eq!(status, 200, "{body}");
    wait_until("both instances are routed", || async {
        config_entry(&proxy, "w")
            .await
            .is_some_and(|w| w["Servers"] == 2)
    })
    .await;
    let counts = spread(&proxy, "/w", 200).await;
    let (l, h) = (counts.get("light").copied(), counts.get("heavy").copied());
    let (l, h) = (l.unwrap_or(0), h.unwrap_or(0));
    assert!(h > l && l > 0, "weights 1 and 3 gave {counts:?}");

    // Meta beats tag beats Weights: light asks for 1 by tag and 12 by meta, heavy for 1 by
    // tag. Applied through the runtime API, with no reload.
    let metrics = proxy.call("/metrics").await.1;
    let reloads = "flow_proxy_haproxy_reloads_total";
    let updates = "flow_proxy_runtime_updates_total";
    let pid = proxy.worker_pid().await;
    register(
        &registry,
        "w",
        "w-light",
        light,
        &["flow-proxy.weight=1"],
        &[("flow_proxy_weight", "12")],
    )
    .await;
    register(
        &registry,
        "w",
        "w-heavy",
        heavy,
        &["flow-proxy.weight=1"],
        &[],
    )
    .await;
    let config = proxy.data_dir.path().join("haproxy.cfg");
    wait_until("both new weights are live", || async {
        let cfg = std::fs::read_to_string(&config).unwrap();
        cfg.contains(&format!("127.0.0.1:{light} check weight 12\n"))
            && cfg.contains(&format!("127.0.0.1:{heavy} check weight 1\n"))
    })
    .await;
    let counts = spread(&proxy, "/w", 26).await;
    let (l, h) = (counts.get("light").copied(), counts.get("heavy").copied());
    let (l, h) = (l.unwrap_or(0), h.unwrap_or(0));
    assert!(l > 3 * h, "weights 12 and 1 gave {counts:?}");
    let after = proxy.call("/metrics").await.1;
    assert_eq!(counter(&after, reloads), counter(&metrics, reloads));
    assert!(
        counter(&after, updates) > counter(&metrics, updates),
        "{after}"
    );
    assert_eq!(proxy.worker_pid().await, pid, "no reload");

    // An invalid weight is ignored: the next source (here Consul's default 1) applies.
    register(
        &registry,
        "w",
        "w-light",
        light,
        &[],
        &[("flow_proxy_weight", "999")],
    )
    .await;
    wait_until("the invalid weight falls back to Consul's", || async {
        let cfg = std::fs::read_to_string(&config).unwrap();
        cfg.contains(&format!("127.0.0.1:{light} check weight 1\n"))
    })
    .await;
    assert_eq!(proxy.worker_pid().await, pid, "no reload");
    proxy.stop().await;
}
