//! Observability: the controller's own figures on `/metrics` (and DFP's alias
//! `/v1/docker-flow-proxy/metrics`), HAProxy's built-in Prometheus exporter on `METRICS_PORT`,
//! and Consul watch errors counted while the registry is down.

mod support;

use std::collections::BTreeMap;

use flow_proxy::domain::CatalogSnapshot;
use flow_proxy::plan::{PlanSettings, SlotTable, plan};
use flow_proxy::render::{RenderSettings, render};
use support::{Proxy, Registry, backend, free_port, haproxy_available, http, wait_until};

/// The value of the sample `name` (with its labels) in an exposition text.
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
}

fn value(text: &str, name: &str) -> f64 {
    sample(text, name).unwrap_or_else(|| panic!("no {name} in {text}"))
}

#[test]
fn the_exporter_frontend_is_rendered_only_with_a_metrics_port() {
    let empty = plan(
        &BTreeMap::new(),
        &CatalogSnapshot::default(),
        &SlotTable::default(),
        &PlanSettings::default(),
    );
    let off = render(&empty, &RenderSettings::default()).unwrap();
    assert!(!off.as_str().contains("prometheus"), "{}", off.as_str());
    let on = render(
        &empty,
        &RenderSettings {
            metrics: Some("127.0.0.1:9101".parse().unwrap()),
            ..RenderSettings::default()
        },
    )
    .unwrap();
    assert!(
        on.as_str().contains(
            "frontend prometheus\n    bind 127.0.0.1:9101\n    no log\n    http-request use-service prometheus-exporter if { path /metrics }\n"
        ),
        "{}",
        on.as_str()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controller_and_haproxy_metrics_are_served() {
    if !haproxy_available() {
        return;
    }
    let mut registry = Registry::start().await;
    let metrics_port = free_port();
    let mut proxy = Proxy::start_with(
        &registry,
        "docker-flow",
        &["--metrics-port".to_owned(), metrics_port.to_string()],
    )
    .await;
    let one = backend("one").await;
    registry.register("app", 1, one).await;
    let two = backend("two").await;
    registry.register("app", 2, two).await;
    let (status, body) = proxy
        .call("/v1/docker-flow-proxy/reconfigure?serviceName=app&servicePath=/app")
        .await;
    assert_eq!(status, 200, "{body}");

    let (status, text) = proxy.call("/metrics").await;
    assert_eq!(status, 200);
    assert!(value(&text, "flow_proxy_reconciles_total") >= 1.0, "{text}");
    assert_eq!(value(&text, "flow_proxy_services_routed"), 1.0, "{text}");
    assert!(
        value(&text, "flow_proxy_haproxy_reload_duration_seconds_count") >= 1.0,
        "{text}"
    );
    let stamp = value(&text, "flow_proxy_last_successful_apply_timestamp_seconds");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(stamp > 0.0 && stamp <= now + 1.0, "{stamp} vs {now}");
    // The intent was written to Consul KV in a transaction.
    assert!(
        value(
            &text,
            "flow_proxy_consul_request_duration_seconds_count{kind=\"write\"}"
        ) >= 1.0,
        "{text}"
    );
    // Both instances are routed once the catalog has them.
    wait_until("both instances are routed", || async {
        let text = proxy.call("/metrics").await.1;
        sample(&text, "flow_proxy_instances_routed") == Some(2.0)
    })
    .await;

    // DFP's path for the same figures.
    let (status, alias) = proxy.call("/v1/docker-flow-proxy/metrics").await;
    assert_eq!(status, 200);
    assert!(alias.contains("flow_proxy_reconciles_total"), "{alias}");

    // HAProxy's own exporter, on METRICS_PORT.
    wait_until("HAProxy's exporter answers", || async {
        let (status, body) = http(metrics_port, "GET", "localhost", "/metrics").await;
        status == 200 && body.contains("haproxy_process_")
    })
    .await;
    let (_, body) = http(metrics_port, "GET", "localhost", "/metrics").await;
    assert!(
        body.contains("haproxy_frontend_http_requests_total{proxy=\"services\"}"),
        "{body}"
    );

    // With the registry gone, the watches fail and are counted.
    registry
        .running
        .take()
        .expect("registry running")
        .shutdown()
        .await
        .unwrap();
    wait_until("watch errors are counted", || async {
        let text = proxy.call("/metrics").await.1;
        sample(&text, "flow_proxy_consul_errors_total{kind=\"watch\"}").unwrap_or(0.0) >= 1.0
    })
    .await;
    proxy.stop().await;
}
