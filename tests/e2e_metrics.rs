//! `/metrics`: reloads and runtime updates are counted, and instance churn within the slots
//! is applied through the runtime API with no reload, the live file rewritten to match (and
//! still valid, although `haproxy -c` was skipped for it).

mod support;

use support::{Proxy, Registry, backend, haproxy_available, wait_until};

fn counter(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instance_churn_is_counted_as_runtime_updates_without_reloads() {
    if !haproxy_available() {
        return;
    }
    let registry = Registry::start().await;
    let mut proxy = Proxy::start(&registry, "docker-flow").await;
    let (status, text) = proxy.call("/metrics").await;
    assert_eq!(status, 200);
    assert!(text.contains("flow_proxy_haproxy_reloads_total"), "{text}");

    let one = backend("one").await;
    registry.register("app", 1, one).await;
    let (status, body) = proxy
        .call("/v1/docker-flow-proxy/reconfigure?serviceName=app&servicePath=/app")
        .await;
    assert_eq!(status, 200, "{body}");
    wait_until("app is routed", || async {
        proxy.get("localhost", "/app").await.0 == 200
    })
    .await;
    let before = proxy.call("/metrics").await.1;
    let pid = proxy.worker_pid().await;

    let two = backend("two").await;
    let id = registry.register("app", 2, two).await;
    wait_until("the second instance serves", || async {
        proxy.get("localhost", "/app").await.1 == "two\n"
    })
    .await;
    registry.deregister(&id).await;
    wait_until("the second instance is gone from the config", || async {
        let cfg = std::fs::read_to_string(proxy.data_dir.path().join("haproxy.cfg")).unwrap();
        !cfg.contains(&format!(":{two} "))
    })
    .await;
    let after = proxy.call("/metrics").await.1;

    assert_eq!(proxy.worker_pid().await, pid, "no reload");
    let reloads = "flow_proxy_haproxy_reloads_total";
    assert_eq!(counter(&after, reloads), counter(&before, reloads));
    let updates = "flow_proxy_runtime_updates_total";
    assert!(
        counter(&after, updates) >= counter(&before, updates) + 2,
        "{after}"
    );
    let skipped = "flow_proxy_config_validations_skipped_total";
    assert!(
        counter(&after, skipped) > counter(&before, skipped),
        "{after}"
    );
    let check = std::process::Command::new("haproxy")
        .arg("-c")
        .arg("-f")
        .arg(proxy.data_dir.path().join("haproxy.cfg"))
        .output()
        .unwrap();
    assert!(check.status.success(), "{check:?}");
    proxy.stop().await;
}
