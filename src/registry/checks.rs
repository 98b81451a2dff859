//! Background runners: TTL expiry, HTTP and TCP probes, `DeregisterCriticalServiceAfter`,
//! and KV tombstone reaping.
//!
//! Owns: timers and probes, turning their results into [`Command`]s. TTL checks turn
//! critical when not refreshed within their TTL; HTTP checks are 2xx → passing,
//! 429 → warning, anything else (or an error/timeout) → critical; TCP checks are passing
//! when a connection opens. Probes run at their `Interval` (raised to the configured
//! minimum, 1 s like Consul's) with their `Timeout` (default 10 s); the first probe runs
//! as soon as the check is seen. Script, docker and gRPC
//! checks are stored but not executed: their status stays as registered or as updated
//! through the API. HTTPS probes use rustls with ring (installed as the process default
//! provider if none is set) and honour `TLSSkipVerify` only as far as the TLS stack
//! allows: certificates are always verified.
//! Must not: mutate the store other than through [`Core::write_async`], or serve HTTP.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::store::{CRITICAL, CheckDef, CheckRec, Command, PASSING, SERF_CHECK_ID, WARNING};
use super::{Core, lock};

/// Default probe timeout (Consul's).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Check output is capped at this many bytes.
pub const MAX_OUTPUT: usize = 4096;

/// Truncates output the way Consul does.
pub fn truncate_output(output: &str) -> String {
    if output.len() <= MAX_OUTPUT {
        return output.to_string();
    }
    let mut cut = MAX_OUTPUT;
    while !output.is_char_boundary(cut) {
        cut -= 1;
    }
    format!(
        "{} ... (captured {} of {} bytes)",
        &output[..cut],
        cut,
        output.len()
    )
}

/// Records a TTL refresh for `check_id`: its deadline moves to now + TTL.
pub(crate) fn touch_ttl(core: &Core, check_id: &str, ttl: Duration) {
    lock(&core.ttl_deadlines).insert(check_id.to_string(), Instant::now() + ttl);
    core.runner_wake.notify_one();
}

/// Records a session renewal: it expires after twice its TTL, as Consul allows.
pub(crate) fn touch_session(core: &Core, id: &str, ttl: Duration) {
    lock(&core.session_deadlines).insert(id.to_string(), Instant::now() + ttl * 2);
    core.runner_wake.notify_one();
}

/// Destroys TTL sessions past their deadline; returns the next deadline.
async fn expire_sessions(core: &Arc<Core>) -> Option<Instant> {
    let now = Instant::now();
    let sessions: Vec<(String, Duration)> = core.read(|s| {
        s.sessions
            .values()
            .filter_map(|r| r.ttl.map(|t| (r.id.clone(), t)))
            .collect()
    });
    let (expired, next) = {
        let mut deadlines = lock(&core.session_deadlines);
        deadlines.retain(|id, _| sessions.iter().any(|(s, _)| s == id));
        for (id, ttl) in &sessions {
            deadlines.entry(id.clone()).or_insert(now + *ttl * 2);
        }
        let expired: Vec<String> = deadlines
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(id, _)| id.clone())
            .collect();
        for id in &expired {
            deadlines.remove(id);
        }
        (expired, deadlines.values().min().copied())
    };
    for id in expired {
        tracing::info!(session = %id, "session TTL expired");
        if let Err(e) = core
            .write_async(Command::SessionDestroy { id: id.clone() })
            .await
        {
            tracing::warn!(session = %id, error = %e, "session expiry not applied");
        }
    }
    next
}

struct Probe {
    def: CheckDef,
    handle: JoinHandle<()>,
}

/// The check supervisor: keeps probes and TTL timers in line with the store.
pub(crate) async fn run_checks(core: Arc<Core>) {
    let mut rx = core.subscribe();
    let mut probes: HashMap<String, Probe> = HashMap::new();
    let mut critical_since: HashMap<String, Instant> = HashMap::new();
    let mut reap_tick = tokio::time::interval(core.config.check_reap_interval);
    reap_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    crate::tls::install_crypto_provider();
    let client = reqwest::Client::builder().no_proxy().build().ok();
    loop {
        rx.borrow_and_update();
        let checks: Vec<CheckRec> = core.read(|s| {
            s.checks
                .values()
                .filter(|c| c.check_id != SERF_CHECK_ID)
                .cloned()
                .collect()
        });
        let now = Instant::now();
        let mut expired = Vec::new();
        let next_deadline = {
            let mut deadlines = lock(&core.ttl_deadlines);
            deadlines.retain(|id, _| {
                checks
                    .iter()
                    .any(|c| &c.check_id == id && c.def.ttl.is_some())
            });
            for c in &checks {
                if let Some(ttl) = c.def.ttl {
                    deadlines.entry(c.check_id.clone()).or_insert(now + ttl);
                }
            }
            for (id, at) in deadlines.iter_mut() {
                if *at <= now
                    && let Some(c) = checks.iter().find(|c| &c.check_id == id)
                {
                    expired.push(c.clone());
                    *at = now + c.def.ttl.unwrap_or(Duration::from_secs(30));
                }
            }
            deadlines.values().min().copied()
        };
        for c in expired {
            if c.status != CRITICAL {
                let output = format!(
                    "TTL expired (last output before timeout follows): {}",
                    c.output
                );
                let cmd = Command::UpdateCheck {
                    id: c.check_id.clone(),
                    status: CRITICAL.to_string(),
                    output: truncate_output(&output),
                };
                if let Err(e) = core.write_async(cmd).await {
                    tracing::debug!(check = %c.check_id, error = %e, "TTL expiry not applied");
                }
            }
        }
        // Probes follow the store's HTTP and TCP checks.
        probes.retain(|id, p| {
            let keep = checks.iter().any(|c| &c.check_id == id && c.def == p.def);
            if !keep {
                p.handle.abort();
            }
            keep
        });
        for c in &checks {
            let runnable = c.def.http.is_some() || c.def.tcp.is_some();
            if runnable && !probes.contains_key(&c.check_id) {
                let handle = tokio::spawn(probe_loop(
                    Arc::clone(&core),
                    c.check_id.clone(),
                    c.def.clone(),
                    client.clone(),
                ));
                probes.insert(
                    c.check_id.clone(),
                    Probe {
                        def: c.def.clone(),
                        handle,
                    },
                );
            }
        }
        // Critical-since bookkeeping for DeregisterCriticalServiceAfter.
        critical_since.retain(|id, _| {
            checks
                .iter()
                .any(|c| &c.check_id == id && c.status == CRITICAL)
        });
        for c in &checks {
            if c.status == CRITICAL && c.def.deregister_critical_after.is_some() {
                critical_since.entry(c.check_id.clone()).or_insert(now);
            }
        }
        let session_deadline = expire_sessions(&core).await;
        let sleep_until = [next_deadline, session_deadline]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or_else(|| now + Duration::from_secs(3600));
        tokio::select! {
            () = core.cancel.cancelled() => break,
            changed = rx.changed() => if changed.is_err() { break },
            () = core.runner_wake.notified() => {}
            () = tokio::time::sleep_until(sleep_until) => {}
            _ = reap_tick.tick() => {
                reap_critical(&core, &checks, &critical_since).await;
            }
        }
    }
    for (_, p) in probes {
        p.handle.abort();
    }
}

async fn reap_critical(core: &Arc<Core>, checks: &[CheckRec], since: &HashMap<String, Instant>) {
    let now = Instant::now();
    let min = core.config.min_deregister_critical_after;
    let mut doomed: Vec<String> = Vec::new();
    for c in checks {
        let (Some(after), Some(t)) = (c.def.deregister_critical_after, since.get(&c.check_id))
        else {
            continue;
        };
        if c.service_id.is_empty() || doomed.contains(&c.service_id) {
            continue;
        }
        if now.duration_since(*t) >= after.max(min) {
            doomed.push(c.service_id.clone());
        }
    }
    for id in doomed {
        tracing::info!(service = %id, "deregistering service whose check stayed critical");
        if let Err(e) = core
            .write_async(Command::DeregisterService { id: id.clone() })
            .await
        {
            tracing::debug!(service = %id, error = %e, "critical service already gone");
        }
    }
}

async fn probe_loop(core: Arc<Core>, id: String, def: CheckDef, client: Option<reqwest::Client>) {
    let interval = def
        .interval
        .unwrap_or(Duration::from_secs(10))
        .max(core.config.min_check_interval);
    let timeout = def.timeout.unwrap_or(DEFAULT_TIMEOUT);
    loop {
        let (status, output) = if let Some(url) = &def.http {
            http_probe(client.as_ref(), &def, url, timeout).await
        } else if let Some(addr) = &def.tcp {
            tcp_probe(addr, timeout).await
        } else {
            return;
        };
        let cmd = Command::UpdateCheck {
            id: id.clone(),
            status: status.to_string(),
            output: truncate_output(&output),
        };
        if let Err(e) = core.write_async(cmd).await {
            tracing::debug!(check = %id, error = %e, "probe result not applied");
            return;
        }
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            () = core.cancel.cancelled() => return,
        }
    }
}

async fn http_probe(
    client: Option<&reqwest::Client>,
    def: &CheckDef,
    url: &str,
    timeout: Duration,
) -> (&'static str, String) {
    let method = def.method.clone().unwrap_or_else(|| "GET".to_string());
    let Some(client) = client else {
        return (CRITICAL, "HTTP client unavailable".to_string());
    };
    let Ok(m) = reqwest::Method::from_bytes(method.as_bytes()) else {
        return (CRITICAL, format!("invalid HTTP method {method:?}"));
    };
    let mut req = client.request(m, url).timeout(timeout);
    for (k, vals) in &def.header {
        for v in vals {
            req = req.header(k.as_str(), v.as_str());
        }
    }
    if let Some(body) = &def.body {
        req = req.body(body.clone());
    }
    match req.send().await {
        Ok(resp) => {
            let code = resp.status();
            let text = resp.text().await.unwrap_or_default();
            let output = format!("HTTP {method} {url}: {code} Output: {text}");
            let status = if code.is_success() {
                PASSING
            } else if code.as_u16() == 429 {
                WARNING
            } else {
                CRITICAL
            };
            (status, output)
        }
        Err(e) => (CRITICAL, format!("Get \"{url}\": {e}")),
    }
}

async fn tcp_probe(addr: &str, timeout: Duration) -> (&'static str, String) {
    match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr)).await {
        Ok(Ok(_)) => (PASSING, format!("TCP connect {addr}: Success")),
        Ok(Err(e)) => (CRITICAL, format!("dial tcp {addr}: {e}")),
        Err(_) => (CRITICAL, format!("dial tcp {addr}: i/o timeout")),
    }
}

/// Reaps KV tombstones older than the configured TTL. It samples the raft index every
/// `ttl/8` (between 10 ms and 30 s) and, once a sample is older than the TTL, reaps every
/// tombstone at or below that sample's index.
pub(crate) async fn run_tombstone_reaper(core: Arc<Core>) {
    let ttl = core.config.tombstone_ttl;
    let granularity = (ttl / 8).clamp(Duration::from_millis(10), Duration::from_secs(30));
    let mut samples: VecDeque<(Instant, u64)> = VecDeque::new();
    loop {
        tokio::select! {
            () = tokio::time::sleep(granularity) => {}
            () = core.cancel.cancelled() => return,
        }
        let now = Instant::now();
        samples.push_back((now, core.read(|s| s.raft_index)));
        let mut up_to = None;
        while let Some(&(t, i)) = samples.front() {
            if now.duration_since(t) >= ttl {
                up_to = Some(i);
                samples.pop_front();
            } else {
                break;
            }
        }
        if let Some(up_to) = up_to
            && core.read(|s| s.kv.has_reapable(up_to))
            && let Err(e) = core.write_async(Command::ReapTombstones { up_to }).await
        {
            tracing::warn!(error = %e, "tombstone reap failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_is_truncated_like_consul() {
        let long = "x".repeat(5000);
        let out = truncate_output(&long);
        assert!(out.ends_with("... (captured 4096 of 5000 bytes)"));
        assert_eq!(truncate_output("short"), "short");
    }
}
