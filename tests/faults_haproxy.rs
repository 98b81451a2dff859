//! HAProxy dies under traffic (its worker or its master gets `kill -9`): flow-proxy notices
//! within about a second, starts HAProxy again from the last-known-good configuration, logs it
//! and counts it in `flow_proxy_haproxy_restarts_total`; traffic comes back by itself.

mod support;

use std::time::{Duration, Instant};

use support::faults::{Traffic, master_pid, metric, pid_alive, proxy_on, signal};
use support::{Registry, backend, haproxy_available, wait_until};

const RESTARTS: &str = "flow_proxy_haproxy_restarts_total";

async fn killed_and_recovered(kill_master: bool) {
    let registry = Registry::start().await;
    let mut proxy = proxy_on(&format!("http://{}", registry.addr), "edge", &[]).await;
    registry.register("app", 1, backend("app").await).await;
    let (status, body) = proxy
        .call("/v1/docker-flow-proxy/reconfigure?serviceName=app&servicePath=/app")
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(metric(proxy.api, RESTARTS).await, 0);
    let master = master_pid(proxy.data_dir.path());
    let worker = proxy.worker_pid().await;
    let traffic = Traffic::start(proxy.http_port, "localhost", "/app", "app\n");
    tokio::time::sleep(Duration::from_secs(1)).await;

    let victim = if kill_master { master } else { worker };
    signal(victim, "KILL");
    let killed = Instant::now();
    wait_until("the restart is counted", || async {
        metric(proxy.api, RESTARTS).await == 1
    })
    .await;
    eprintln!("restart counted {:?} after the kill", killed.elapsed());
    wait_until("HAProxy serves the route again", || async {
        proxy.get("localhost", "/app").await == (200, "app\n".to_owned())
    })
    .await;
    eprintln!("serving again {:?} after the kill", killed.elapsed());
    let new_master = master_pid(proxy.data_dir.path());
    assert_ne!(new_master, master, "a new master runs");
    assert!(pid_alive(new_master));
    assert!(!pid_alive(master), "the old master is gone");
    assert_ne!(proxy.worker_pid().await, worker);
    // Traffic keeps flowing after the recovery.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let counts = traffic.stop().await;
    eprintln!(
        "traffic across the death of the {}: {counts:?}",
        if kill_master { "master" } else { "worker" }
    );
    assert!(counts.ok > 50, "{counts:?}");
    // Later changes still apply to the new HAProxy.
    registry.register("other", 1, backend("other").await).await;
    let (status, body) = proxy
        .call("/v1/docker-flow-proxy/reconfigure?serviceName=other&servicePath=/other")
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        proxy.get("localhost", "/other").await,
        (200, "other\n".to_owned())
    );
    assert_eq!(metric(proxy.api, RESTARTS).await, 1);
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_worker_is_restarted_from_the_last_known_good_configuration() {
    if !haproxy_available() {
        return;
    }
    killed_and_recovered(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_master_is_restarted_from_the_last_known_good_configuration() {
    if !haproxy_available() {
        return;
    }
    killed_and_recovered(true).await;
}
