//! Errors under churn: `wrk` against a routed path while reconfigures and instance
//! registrations and deregistrations happen, then the old HAProxy workers left and their memory.
//!
//! Owns: the churn schedule, running `wrk` and reading its summary.
//!
//! Must not: assert anything about timings; a figure that cannot be taken is an error.

use std::time::Duration;

use anyhow::{Context, Result, bail};

use super::{Env, wait_for};

/// What to do during the run.
pub struct Plan {
    pub duration: Duration,
    pub reconfigures: usize,
    /// Registrations and deregistrations, counted separately (500 = 250 of each).
    pub events: usize,
}

/// The figures of one run.
pub struct Outcome {
    pub requests: u64,
    pub socket_errors: SocketErrors,
    pub non_2xx: u64,
    pub reconfigures_ok: usize,
    pub reconfigures_failed: usize,
    pub events_done: usize,
    pub reloads: u64,
    pub runtime_updates: u64,
    pub old_workers: usize,
    pub old_workers_rss_kib: u64,
    pub wrk_args: String,
}

/// `wrk`'s `Socket errors:` line (all zero when absent).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SocketErrors {
    pub connect: u64,
    pub read: u64,
    pub write: u64,
    pub timeout: u64,
}

impl SocketErrors {
    pub fn total(&self) -> u64 {
        self.connect + self.read + self.write + self.timeout
    }
}

/// Requests, socket errors and non-2xx/3xx answers from `wrk`'s summary.
pub fn parse_wrk(out: &str) -> Result<(u64, SocketErrors, u64)> {
    let mut requests = None;
    let mut errors = SocketErrors::default();
    let mut non_2xx = 0;
    for line in out.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("Socket errors:") {
            for part in rest.split(',') {
                let mut kv = part.split_whitespace();
                let (Some(k), Some(v)) = (kv.next(), kv.next()) else {
                    bail!("unexpected wrk line: {line}");
                };
                let v: u64 = v.parse().with_context(|| format!("in {line}"))?;
                match k {
                    "connect" => errors.connect = v,
                    "read" => errors.read = v,
                    "write" => errors.write = v,
                    "timeout" => errors.timeout = v,
                    _ => bail!("unexpected wrk line: {line}"),
                }
            }
        } else if let Some(rest) = line.strip_prefix("Non-2xx or 3xx responses:") {
            non_2xx = rest.trim().parse().with_context(|| format!("in {line}"))?;
        } else if line.contains(" requests in ") {
            requests = line.split_whitespace().next().and_then(|n| n.parse().ok());
        }
    }
    let requests = requests.with_context(|| format!("no request count in wrk's output:\n{out}"))?;
    Ok((requests, errors, non_2xx))
}

pub async fn run(env: &Env, app: u16, other: u16, plan: &Plan) -> Result<Outcome> {
    // The routed service: two stable instances, and churning ones on the same backends.
    env.register("churn", "churn-stable-1", app).await?;
    env.register("churn", "churn-stable-2", other).await?;
    env.api_ok("/v1/docker-flow-proxy/reconfigure?serviceName=churn&servicePath=/churn")
        .await?;
    wait_for("/churn answers 200", || async {
        env.get("/churn").await.0 == 200
    })
    .await?;
    let reloads_before = env.reloads().await?;
    let updates_before = env.counter("flow_proxy_runtime_updates_total").await?;

    let secs = plan.duration.as_secs().max(1);
    let wrk_args = format!("-t1 -c8 -d{secs}s --timeout 5s");
    let url = format!("http://127.0.0.1:{}/churn", env.http_port);
    let wrk = tokio::process::Command::new("wrk")
        .args(wrk_args.split(' '))
        .arg(&url)
        .kill_on_drop(true)
        .output();
    // Leave the last second of the run free of changes, so that each one is applied under load.
    let window = plan.duration.saturating_sub(Duration::from_secs(1));
    let reconfigures = async {
        let every = window / plan.reconfigures.max(1) as u32;
        let (mut ok, mut failed) = (0, 0);
        for i in 0..plan.reconfigures {
            tokio::time::sleep(every).await;
            let (status, _) = env
                .call(&format!(
                    "/v1/docker-flow-proxy/reconfigure?serviceName=churnrc{i}&servicePath=/churnrc{i}"
                ))
                .await;
            if status == 200 { ok += 1 } else { failed += 1 }
        }
        (ok, failed)
    };
    let events = async {
        // Each instance lives for three events; every event is a registration or a
        // deregistration, alternating so that about three churning instances exist at a time.
        let every = window / plan.events.max(1) as u32;
        let mut done = 0;
        let mut live = std::collections::VecDeque::new();
        let mut next = 0usize;
        while done < plan.events {
            tokio::time::sleep(every).await;
            let left = plan.events - done;
            if !live.is_empty() && (live.len() >= 3 || left <= live.len()) {
                let id: String = live.pop_front().unwrap_or_default();
                env.client.agent_deregister(&id).await?;
            } else {
                let id = format!("churn-{next}");
                let port = if next.is_multiple_of(2) { app } else { other };
                env.register("churn", &id, port).await?;
                live.push_back(id);
                next += 1;
            }
            done += 1;
        }
        for id in live {
            env.client.agent_deregister(&id).await?;
        }
        anyhow::Ok(done)
    };
    let (wrk, (reconfigures_ok, reconfigures_failed), events) =
        tokio::join!(wrk, reconfigures, events);
    let events_done = events?;
    let wrk = wrk.context("cannot run wrk (apt-get install wrk)")?;
    let out = String::from_utf8_lossy(&wrk.stdout).into_owned();
    if !wrk.status.success() {
        bail!(
            "wrk failed: {}\n{out}",
            String::from_utf8_lossy(&wrk.stderr)
        );
    }
    let (requests, socket_errors, non_2xx) = parse_wrk(&out)?;

    let procs = env.master()?.show_proc(Duration::from_secs(5)).await?;
    let current = procs.current_workers();
    let old: Vec<u32> = procs
        .workers
        .iter()
        .map(|w| w.pid)
        .filter(|p| !current.contains(p))
        .collect();
    let old_workers_rss_kib = old.iter().filter_map(|p| rss_kib_of(*p)).sum();
    Ok(Outcome {
        requests,
        socket_errors,
        non_2xx,
        reconfigures_ok,
        reconfigures_failed,
        events_done,
        reloads: env.reloads().await? - reloads_before,
        runtime_updates: env.counter("flow_proxy_runtime_updates_total").await? - updates_before,
        old_workers: old.len(),
        old_workers_rss_kib,
        wrk_args: format!("wrk {wrk_args} {url}"),
    })
}

/// Resident memory of a process, in KiB.
pub fn rss_kib_of(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_wrk_summaries() {
        let clean = "Running 30s test @ http://127.0.0.1:1/churn\n  1 threads and 8 connections\n\
                     \x20 12345 requests in 30.00s, 1.2MB read\nRequests/sec:    411.50\n";
        assert_eq!(
            parse_wrk(clean).unwrap(),
            (12345, SocketErrors::default(), 0)
        );
        let bad = "  99 requests in 5.00s, 1MB read\n  Socket errors: connect 1, read 2, write 3, timeout 4\n\
                   \x20 Non-2xx or 3xx responses: 7\n";
        let (n, e, non) = parse_wrk(bad).unwrap();
        assert_eq!((n, e.total(), non), (99, 10, 7));
        assert!(parse_wrk("nothing").is_err());
    }
}
