//! Old workers stay bounded: 100 reloads, each with a long-lived request open on the worker it
//! retires (a slow backend holds it for a minute), never leave more old workers than
//! `mworker-max-reloads` allows (`show proc` on the master CLI after every reload); the
//! resident memory of every HAProxy process is measured and printed.

mod support;

use std::time::{Duration, Instant};

use flow_proxy::haproxy::SoftStopSettings;
use flow_proxy::haproxy::master_cli::parse_show_proc;
use support::faults::{proxy_on, show_proc, slow_backend};
use support::{Registry, backend, haproxy_available, http};

const RELOADS: usize = 100;

fn reloads() -> usize {
    std::env::var("FAULTS_RELOADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(RELOADS)
}

/// Resident memory (kB) of the master and every worker it lists.
fn rss_kb(pids: &[u32]) -> u64 {
    pids.iter()
        .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/status")).ok())
        .filter_map(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_workers_stay_bounded_across_a_hundred_reloads_with_long_lived_requests() {
    if !haproxy_available() {
        return;
    }
    let registry = Registry::start().await;
    let mut proxy = proxy_on(
        &format!("http://{}", registry.addr),
        "edge",
        &["--timeout-server", "120"],
    )
    .await;
    registry
        .register(
            "slow",
            1,
            slow_backend("slow", Duration::from_secs(60)).await,
        )
        .await;
    registry.register("app", 1, backend("app").await).await;
    for path in [
        "/v1/docker-flow-proxy/reconfigure?serviceName=slow&servicePath=/slow",
        "/v1/docker-flow-proxy/reconfigure?serviceName=app&servicePath=/app",
    ] {
        let (status, body) = proxy.call(path).await;
        assert_eq!(status, 200, "{body}");
    }
    let bound = SoftStopSettings::default().max_reloads as usize + 1;
    let port = proxy.http_port;
    let started = Instant::now();
    let mut most_old = 0;
    let mut most_rss = 0;
    let mut held = Vec::new();
    for round in 0..reloads() {
        // A long-lived request pinned to the current worker before every reload, so each
        // old worker has a reason to stay.
        held.push(tokio::spawn(async move {
            http(port, "GET", "localhost", "/slow").await
        }));
        tokio::time::sleep(Duration::from_millis(100)).await;
        let (status, body) = proxy.call("/v1/docker-flow-proxy/reload").await;
        assert_eq!(status, 200, "reload {round}: {body}");
        let procs = parse_show_proc(&show_proc(proxy.data_dir.path()).await).unwrap();
        let old = procs.old_worker_count();
        let mut pids = vec![procs.master_pid];
        pids.extend(procs.workers.iter().map(|w| w.pid));
        let rss = rss_kb(&pids);
        most_old = most_old.max(old);
        most_rss = most_rss.max(rss);
        if round % 10 == 9 || std::env::var("FAULTS_RELOADS").is_ok() {
            eprintln!(
                "after {} reloads: {old} old workers, {} processes, {rss} kB resident",
                round + 1,
                pids.len()
            );
        }
        assert!(
            old <= bound,
            "after {} reloads: {old} old workers (bound {bound}):\n{procs:?}",
            round + 1
        );
    }
    eprintln!(
        "{RELOADS} reloads in {:?}: at most {most_old} old workers, at most {most_rss} kB resident",
        started.elapsed()
    );
    // The test saw old workers pile up to the bound, so the bound is what held them back.
    assert!(
        most_old >= 2,
        "at most {most_old} old workers: nothing was held open"
    );
    // The service kept answering through it all.
    assert_eq!(
        proxy.get("localhost", "/app").await,
        (200, "app\n".to_owned())
    );
    for h in held {
        if std::env::var("FAULTS_RELOADS").is_ok() {
            eprintln!("held request: {:?}", h.await);
        } else {
            h.abort();
        }
    }
    proxy.stop().await;
}
