//! End-to-end tests of the HAProxy supervisor against a real `haproxy` binary.
//!
//! Every test uses its own data directory and ports picked at run time on 127.0.0.1.
//! Without `haproxy` on `PATH` the tests print a skip note and pass, unless `CI=true`,
//! where a missing binary is a failure.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use flow_proxy::haproxy::{
    EnsureOutcome, HaproxyPaths, ReloadCheck, ReloadError, ReloadResult, SoftStopSettings,
    Supervisor, SupervisorError, SupervisorOptions,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

mod support;
use support::{free_port, haproxy_available};

const DEADLINE: Duration = Duration::from_secs(20);

/// A tiny HTTP backend answering every request with exactly `body`.
async fn start_backend(body: &'static str) -> u16 {
    support::backend_exact(body.to_owned()).await
}

/// One `GET /` through HAProxy on a new connection; returns status and body.
async fn get(port: u16) -> Result<(u16, String), String> {
    let work = async {
        let mut s = TcpStream::connect(("127.0.0.1", port))
            .await
            .map_err(|e| format!("connect: {e}"))?;
        s.write_all(b"GET / HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
            .await
            .map_err(|e| format!("write: {e}"))?;
        let mut out = Vec::new();
        s.read_to_end(&mut out)
            .await
            .map_err(|e| format!("read: {e}"))?;
        let text = String::from_utf8_lossy(&out).into_owned();
        let status = text
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| format!("bad response: {text:?}"))?;
        let body = text
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .unwrap_or_default();
        Ok((status, body))
    };
    tokio::time::timeout(Duration::from_secs(5), work)
        .await
        .map_err(|_| "timeout".to_owned())?
}

/// Polls until `GET /` answers `want_status` with `want_body`.
async fn wait_for_answer(port: u16, want_status: u16, want_body: &str) {
    let start = tokio::time::Instant::now();
    loop {
        let got = get(port).await;
        if matches!(&got, Ok((s, b)) if *s == want_status && b == want_body) {
            return;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "expected {want_status} {want_body:?}, last answer {got:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Polls until `GET /` answers `want_status`, whatever the body.
async fn wait_for_status(port: u16, want_status: u16) {
    let start = tokio::time::Instant::now();
    loop {
        let got = get(port).await;
        if matches!(&got, Ok((s, _)) if *s == want_status) {
            return;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "expected {want_status}, last answer {got:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

struct Env {
    _dir: tempfile::TempDir,
    paths: HaproxyPaths,
    port: u16,
}

impl Env {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let paths = HaproxyPaths::new(dir.path().join("hp")).unwrap();
        Self {
            _dir: dir,
            paths,
            port: free_port(),
        }
    }

    fn supervisor(&self) -> Supervisor {
        let options = SupervisorOptions {
            stop_timeout: Duration::from_secs(5),
            ..SupervisorOptions::default()
        };
        Supervisor::new(self.paths.clone(), options)
    }

    /// A configuration whose frontend sends everything to `backend`; `extra` is
    /// appended verbatim.
    fn config(&self, backends: &[(&str, u16)], use_backend: &str, extra: &str) -> String {
        let soft = SoftStopSettings {
            hard_stop_after: Duration::from_secs(5),
            max_reloads: 3,
        };
        let mut cfg = format!(
            "global\n{}    nbthread 1\n\ndefaults\n    mode http\n    timeout connect 2s\n    \
             timeout client 10s\n    timeout server 10s\n{}\nfrontend fe\n    bind 127.0.0.1:{}\n    \
             default_backend {use_backend}\n",
            self.paths.global_lines(&soft),
            self.paths.defaults_lines(),
            self.port
        );
        for (name, port) in backends {
            cfg.push_str(&format!(
                "\nbackend {name}\n    balance roundrobin\n    server s1 127.0.0.1:{port}\n"
            ));
        }
        cfg.push_str(extra);
        cfg
    }
}

/// Kills the master if a test fails before stopping it.
struct KillGuard(std::path::PathBuf);

impl Drop for KillGuard {
    fn drop(&mut self) {
        if let Ok(text) = std::fs::read_to_string(&self.0)
            && let Ok(pid) = text.trim().parse::<i32>()
            && pid > 0
            && flow_proxy::haproxy::process::pid_alive(pid as u32)
        {
            unsafe {
                libc::kill(pid, libc::SIGTERM);
            }
        }
    }
}

fn kill_guard(env: &Env) -> KillGuard {
    KillGuard(env.paths.pid_file().to_path_buf())
}

async fn stop_and_check(sup: &mut Supervisor) {
    let pid = sup.master_pid().unwrap();
    sup.stop().await.unwrap();
    assert!(!flow_proxy::haproxy::process::pid_alive(pid));
    assert!(!sup.status().await.master_alive);
}

#[tokio::test]
async fn start_serves_then_reload_switches_backend() {
    if !haproxy_available() {
        return;
    }
    let env = Env::new();
    let _guard = kill_guard(&env);
    let a = start_backend("A").await;
    let b = start_backend("B").await;
    let cfg_a = env.config(&[("app_a", a), ("app_b", b)], "app_a", "");
    let cfg_b = env.config(&[("app_a", a), ("app_b", b)], "app_b", "");

    let mut sup = env.supervisor();
    let pid = sup.start(&cfg_a).await.unwrap();
    assert_eq!(get(env.port).await.unwrap(), (200, "A".to_owned()));
    let before = sup.status().await;
    assert!(before.master_alive);
    assert_eq!(before.master_pid, Some(pid));
    assert_eq!(before.current_workers.len(), 1);

    let outcome = sup.reload(&cfg_b).await.unwrap();
    assert_eq!(outcome.new_workers.len(), 1);
    assert!(!before.current_workers.contains(&outcome.new_workers[0]));
    assert!(outcome.server_state_saved);
    assert_eq!(get(env.port).await.unwrap(), (200, "B".to_owned()));

    let after = sup.status().await;
    assert_eq!(after.master_pid, Some(pid), "a reload keeps the master");
    assert_eq!(after.current_workers, outcome.new_workers);
    assert_eq!(
        after.master_reloads,
        Some(before.master_reloads.unwrap() + 1)
    );
    assert_eq!(after.failed_reloads, Some(0));
    assert_eq!(after.last_reload.unwrap().result, ReloadResult::Succeeded);
    assert_eq!(std::fs::read_to_string(env.paths.config()).unwrap(), cfg_b);
    assert_eq!(
        std::fs::read_to_string(env.paths.last_good()).unwrap(),
        cfg_b
    );
    assert!(
        std::fs::read_to_string(env.paths.server_state())
            .unwrap()
            .starts_with("1\n# be_id")
    );

    stop_and_check(&mut sup).await;
}

#[tokio::test]
async fn invalid_config_never_goes_live() {
    if !haproxy_available() {
        return;
    }
    let env = Env::new();
    let _guard = kill_guard(&env);
    let a = start_backend("A").await;
    let b = start_backend("B").await;
    let cfg_a = env.config(&[("app_a", a)], "app_a", "");
    let bad = env.config(&[("app_a", a)], "app_a", "    bogus_keyword on\n");
    let bad_line = bad.lines().count() as u32;
    let cfg_b = env.config(&[("app_a", a), ("app_b", b)], "app_b", "");

    let mut sup = env.supervisor();
    sup.start(&cfg_a).await.unwrap();
    let before = sup.status().await;

    let err = sup.reload(&bad).await.unwrap_err();
    let ReloadError::Invalid(v) = &err else {
        panic!("expected a validation error, got {err:?}");
    };
    let first = &v.alerts()[0];
    assert!(
        first.message.contains("unknown keyword 'bogus_keyword'"),
        "{first:?}"
    );
    assert!(
        first.message.contains(&format!("[haproxy.cfg:{bad_line}]")),
        "{first:?}"
    );
    assert_eq!(first.line, Some(bad_line));
    assert_eq!(first.source_line.as_deref(), Some("bogus_keyword on"));
    assert!(
        !err.to_string().contains("timeout connect"),
        "no config dump: {err}"
    );

    // Nothing changed: same file, same worker, same answers.
    assert_eq!(std::fs::read_to_string(env.paths.config()).unwrap(), cfg_a);
    let status = sup.status().await;
    assert_eq!(status.current_workers, before.current_workers);
    assert_eq!(status.master_reloads, before.master_reloads);
    assert_eq!(status.last_reload.unwrap().result, ReloadResult::Invalid);
    assert_eq!(get(env.port).await.unwrap(), (200, "A".to_owned()));

    // A missing final newline is caught too.
    let truncated = cfg_a.trim_end_matches('\n');
    let err = sup.validate(truncated).await.unwrap_err();
    assert!(err.to_string().contains("Missing LF"), "{err}");

    // The next valid reload is not poisoned.
    sup.reload(&cfg_b).await.unwrap();
    assert_eq!(get(env.port).await.unwrap(), (200, "B".to_owned()));

    stop_and_check(&mut sup).await;
}

#[tokio::test]
async fn config_refused_at_reload_is_rolled_back() {
    if !haproxy_available() {
        return;
    }
    let env = Env::new();
    let _guard = kill_guard(&env);
    let a = start_backend("A").await;
    let b = start_backend("B").await;
    // Passes `haproxy -c` (which does not bind) but fails when the new worker binds.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_port = taken.local_addr().unwrap().port();
    let cfg_a = env.config(&[("app_a", a)], "app_a", "");
    let cfg_bind = env.config(
        &[("app_a", a)],
        "app_a",
        &format!("\nfrontend clash\n    bind 127.0.0.1:{taken_port}\n    default_backend app_a\n"),
    );
    let cfg_b = env.config(&[("app_a", a), ("app_b", b)], "app_b", "");

    let mut sup = env.supervisor();
    sup.start(&cfg_a).await.unwrap();
    sup.validate(&cfg_bind).await.unwrap();

    let t0 = std::time::Instant::now();
    let err = sup.reload(&cfg_bind).await.unwrap_err();
    eprintln!("refused reload took {:?}: {err}", t0.elapsed());
    match &err {
        ReloadError::Rejected {
            alerts,
            rolled_back,
            rollback_error,
        } => {
            assert!(*rolled_back, "rollback failed: {rollback_error:?}");
            assert!(
                alerts.iter().any(|a| a.message.contains("cannot bind")),
                "{alerts:?}"
            );
        }
        other => panic!("expected Rejected, got {other:?}"),
    }
    assert_eq!(std::fs::read_to_string(env.paths.config()).unwrap(), cfg_a);
    let status = sup.status().await;
    assert_eq!(
        status.failed_reloads,
        Some(0),
        "rollback reload clears the failure"
    );
    assert_eq!(status.reload_failures_total, 1);
    assert_eq!(get(env.port).await.unwrap(), (200, "A".to_owned()));

    sup.reload(&cfg_b).await.unwrap();
    assert_eq!(get(env.port).await.unwrap(), (200, "B".to_owned()));
    drop(taken);
    stop_and_check(&mut sup).await;
}

/// Without `haproxy -c`, the master's own parse is the check: a configuration it refuses never
/// serves a request, is rolled back, and the next reload works.
#[tokio::test]
async fn config_refused_by_the_master_without_precheck_is_rolled_back() {
    if !haproxy_available() {
        return;
    }
    let env = Env::new();
    let _guard = kill_guard(&env);
    let a = start_backend("A").await;
    let b = start_backend("B").await;
    let cfg_a = env.config(&[("app_a", a)], "app_a", "");
    let bad = env.config(&[("app_b", b)], "app_b", "    bogus_keyword on\n");
    let cfg_b = env.config(&[("app_a", a), ("app_b", b)], "app_b", "");

    let mut sup = env.supervisor();
    sup.start(&cfg_a).await.unwrap();
    let before = sup.status().await;

    let err = sup
        .reload_with(&bad, ReloadCheck::AtReload)
        .await
        .unwrap_err();
    match &err {
        ReloadError::Rejected {
            alerts,
            rolled_back,
            rollback_error,
        } => {
            assert!(*rolled_back, "rollback failed: {rollback_error:?}");
            assert!(
                alerts
                    .iter()
                    .any(|a| a.message.contains("unknown keyword 'bogus_keyword'")),
                "{alerts:?}"
            );
        }
        other => panic!("expected Rejected, got {other:?}"),
    }
    assert_eq!(std::fs::read_to_string(env.paths.config()).unwrap(), cfg_a);
    let status = sup.status().await;
    assert_eq!(
        status.failed_reloads,
        Some(0),
        "the rollback clears the failure"
    );
    assert_eq!(status.reload_failures_total, 1);
    assert_eq!(status.last_reload.unwrap().result, ReloadResult::Failed);
    assert!(
        status.master_reloads > before.master_reloads,
        "the master tried the configuration"
    );
    assert_eq!(get(env.port).await.unwrap(), (200, "A".to_owned()));

    sup.reload_with(&cfg_b, ReloadCheck::AtReload)
        .await
        .unwrap();
    assert_eq!(get(env.port).await.unwrap(), (200, "B".to_owned()));
    stop_and_check(&mut sup).await;
}

#[tokio::test]
async fn no_failed_requests_while_reloading() {
    if !haproxy_available() {
        return;
    }
    let env = Env::new();
    let _guard = kill_guard(&env);
    let a = start_backend("A").await;
    let b = start_backend("B").await;
    let backends = [("app_a", a), ("app_b", b)];
    let cfg_a = env.config(&backends, "app_a", "");
    let cfg_b = env.config(&backends, "app_b", "");

    let mut sup = env.supervisor();
    sup.start(&cfg_a).await.unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let mut clients = Vec::new();
    for _ in 0..4 {
        let (stop, ok, failures, port) = (stop.clone(), ok.clone(), failures.clone(), env.port);
        clients.push(tokio::spawn(async move {
            // Bounded in count as well as by the stop flag.
            for _ in 0..20_000 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                match get(port).await {
                    Ok((200, body)) if body == "A" || body == "B" => {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    other => failures.lock().unwrap().push(format!("{other:?}")),
                }
            }
        }));
    }

    let mut reloads = 0;
    for i in 0..10 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let cfg = if i % 2 == 0 { &cfg_b } else { &cfg_a };
        let outcome = sup.reload(cfg).await.unwrap();
        assert_eq!(outcome.new_workers.len(), 1);
        reloads += 1;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        tokio::time::timeout(DEADLINE, c).await.unwrap().unwrap();
    }
    let failures = failures.lock().unwrap().clone();
    let ok = ok.load(Ordering::Relaxed);
    eprintln!(
        "{reloads} reloads, {ok} successful requests, {} failed",
        failures.len()
    );
    assert!(failures.is_empty(), "failed requests: {failures:?}");
    assert!(ok > 0);

    stop_and_check(&mut sup).await;
}

#[tokio::test]
async fn runtime_api_fills_a_server_slot_without_reload() {
    if !haproxy_available() {
        return;
    }
    let env = Env::new();
    let _guard = kill_guard(&env);
    let a = start_backend("A").await;
    let cfg = env.config(
        &[],
        "slots",
        "\nbackend slots\n    balance roundrobin\n    server-template s 1-3 127.0.0.1:1 disabled\n",
    );

    let mut sup = env.supervisor();
    sup.start(&cfg).await.unwrap();
    let before = sup.status().await;
    assert_eq!(get(env.port).await.unwrap().0, 503);

    let api = sup.runtime_api();
    let answers = api
        .execute_checked(&[
            format!("set server slots/s2 addr 127.0.0.1 port {a}"),
            "set server slots/s2 state ready".to_owned(),
            "set server slots/s2 weight 10".to_owned(),
        ])
        .await
        .unwrap();
    assert_eq!(answers.len(), 3);
    assert!(answers[0].output.contains("port changed"), "{answers:?}");
    wait_for_answer(env.port, 200, "A").await;

    let state = api.show_servers_state().await.unwrap();
    let s2 = state
        .lines()
        .find(|l| l.contains(" slots ") && l.contains(" s2 "))
        .unwrap();
    assert!(s2.contains(&format!(" {a} ")), "{s2}");
    let stat = api.show_stat().await.unwrap();
    assert!(stat.contains("slots,s2,"), "{stat}");

    // Errors are typed and the rest of the pipeline still runs.
    let answers = api
        .execute(&["set server slots/nope state ready", "show info"])
        .await
        .unwrap();
    assert!(answers[0].looks_like_error());
    assert!(answers[1].output.contains("Name: HAProxy"));
    assert!(
        api.execute_checked(&["set server slots/nope state ready"])
            .await
            .is_err()
    );

    // Drain: no new traffic to the only server.
    api.execute_checked(&["set server slots/s2 state maint"])
        .await
        .unwrap();
    wait_for_status(env.port, 503).await;

    let after = sup.status().await;
    assert_eq!(
        after.master_reloads, before.master_reloads,
        "no reload happened"
    );
    assert_eq!(after.current_workers, before.current_workers);
    stop_and_check(&mut sup).await;
}

#[tokio::test]
async fn restarted_controller_adopts_the_running_master() {
    if !haproxy_available() {
        return;
    }
    let env = Env::new();
    let _guard = kill_guard(&env);
    let a = start_backend("A").await;
    let b = start_backend("B").await;
    let backends = [("app_a", a), ("app_b", b)];
    let cfg_a = env.config(&backends, "app_a", "");
    let cfg_b = env.config(&backends, "app_b", "");

    let mut first = env.supervisor();
    let pid = first.start(&cfg_a).await.unwrap();
    // While the first supervisor lives, nobody else may drive this HAProxy.
    assert!(matches!(
        env.supervisor().adopt().await,
        Err(SupervisorError::Locked(_))
    ));
    drop(first); // the controller goes away; HAProxy keeps running

    assert_eq!(get(env.port).await.unwrap(), (200, "A".to_owned()));
    let mut other = env.supervisor();
    assert!(matches!(
        other.start(&cfg_a).await,
        Err(SupervisorError::AlreadyRunning { pid: p }) if p == pid
    ));
    drop(other);

    let mut second = env.supervisor();
    assert!(second.adopt().await.unwrap());
    assert_eq!(second.master_pid(), Some(pid));
    let status = second.status().await;
    assert!(status.adopted && status.master_alive);
    assert_eq!(status.current_workers.len(), 1);

    second.reload(&cfg_b).await.unwrap();
    assert_eq!(get(env.port).await.unwrap(), (200, "B".to_owned()));
    assert_eq!(second.status().await.master_pid, Some(pid));

    stop_and_check(&mut second).await;
    drop(second);
    // Nothing left to adopt.
    let mut third = env.supervisor();
    assert!(!third.adopt().await.unwrap());
}

#[tokio::test]
async fn dead_master_is_restarted_from_last_known_good() {
    if !haproxy_available() {
        return;
    }
    let env = Env::new();
    let _guard = kill_guard(&env);
    let a = start_backend("A").await;
    let b = start_backend("B").await;
    let backends = [("app_a", a), ("app_b", b)];
    let cfg_b = env.config(&backends, "app_b", "");

    let mut sup = env.supervisor();
    let old_pid = sup
        .start(&env.config(&backends, "app_a", ""))
        .await
        .unwrap();
    sup.reload(&cfg_b).await.unwrap();
    assert_eq!(sup.ensure_running().await.unwrap(), EnsureOutcome::Healthy);

    unsafe {
        libc::kill(old_pid as i32, libc::SIGKILL);
    }
    let start = tokio::time::Instant::now();
    while sup.status().await.master_alive {
        assert!(start.elapsed() < DEADLINE, "master still reported alive");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let outcome = sup.ensure_running().await.unwrap();
    let EnsureOutcome::RestartedMaster {
        old_pid: o,
        new_pid,
    } = outcome
    else {
        panic!("expected a restart, got {outcome:?}");
    };
    assert_eq!(o, old_pid);
    assert_ne!(new_pid, old_pid);
    wait_for_answer(env.port, 200, "B").await;
    assert_eq!(sup.ensure_running().await.unwrap(), EnsureOutcome::Healthy);

    stop_and_check(&mut sup).await;
}

#[tokio::test]
async fn runtime_server_state_survives_a_reload() {
    if !haproxy_available() {
        return;
    }
    let env = Env::new();
    let _guard = kill_guard(&env);
    let a = start_backend("A").await;
    let slots =
        "\nbackend slots\n    balance roundrobin\n    server-template s 1-3 127.0.0.1:1 disabled\n";
    let cfg = env.config(&[], "slots", slots);
    // Same servers, one more backend: a structural change that needs a reload.
    let cfg2 = env.config(&[("other", a)], "slots", slots);

    let mut sup = env.supervisor();
    sup.start(&cfg).await.unwrap();
    sup.runtime_api()
        .execute_checked(&[
            format!("set server slots/s1 addr 127.0.0.1 port {a}"),
            "set server slots/s1 state ready".to_owned(),
        ])
        .await
        .unwrap();
    wait_for_answer(env.port, 200, "A").await;

    let outcome = sup.reload(&cfg2).await.unwrap();
    assert!(outcome.server_state_saved);
    // The new worker loaded the saved state: the slot is still filled and enabled.
    assert_eq!(get(env.port).await.unwrap(), (200, "A".to_owned()));

    stop_and_check(&mut sup).await;
}

/// Pins an HAProxy 2.6.12 behaviour callers must know about: the saved server state
/// wins over a server address changed in the configuration.
#[tokio::test]
async fn saved_state_overrides_a_changed_server_address() {
    if !haproxy_available() {
        return;
    }
    let a = start_backend("A").await;
    let b = start_backend("B").await;
    for save_server_state in [true, false] {
        let env = Env::new();
        let _guard = kill_guard(&env);
        let mut sup = Supervisor::new(
            env.paths.clone(),
            SupervisorOptions {
                save_server_state,
                ..SupervisorOptions::default()
            },
        );
        sup.start(&env.config(&[("app", a)], "app", ""))
            .await
            .unwrap();
        assert_eq!(get(env.port).await.unwrap(), (200, "A".to_owned()));
        let outcome = sup
            .reload(&env.config(&[("app", b)], "app", ""))
            .await
            .unwrap();
        assert_eq!(outcome.server_state_saved, save_server_state);
        let want = if save_server_state { "A" } else { "B" };
        assert_eq!(get(env.port).await.unwrap(), (200, want.to_owned()));
        stop_and_check(&mut sup).await;
    }
}

#[tokio::test]
async fn dead_worker_takes_the_master_down_and_is_recovered() {
    if !haproxy_available() {
        return;
    }
    let env = Env::new();
    let _guard = kill_guard(&env);
    let a = start_backend("A").await;
    let mut sup = env.supervisor();
    let old_pid = sup
        .start(&env.config(&[("app", a)], "app", ""))
        .await
        .unwrap();
    let worker = sup.status().await.current_workers[0];

    unsafe {
        libc::kill(worker as i32, libc::SIGKILL);
    }
    // HAProxy 2.6 without `no-exit-on-failure`: the master exits with its worker.
    let start = tokio::time::Instant::now();
    while sup.status().await.master_alive {
        assert!(start.elapsed() < DEADLINE, "master survived its worker");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    match sup.ensure_running().await.unwrap() {
        EnsureOutcome::RestartedMaster { old_pid: o, .. } => assert_eq!(o, old_pid),
        other => panic!("expected a restart, got {other:?}"),
    }
    wait_for_answer(env.port, 200, "A").await;
    stop_and_check(&mut sup).await;
}

#[tokio::test]
async fn old_workers_are_counted_while_they_drain() {
    if !haproxy_available() {
        return;
    }
    let env = Env::new();
    let _guard = kill_guard(&env);
    let a = start_backend("A").await;
    let cfg = env.config(&[("app", a)], "app", "");
    let mut sup = env.supervisor();
    sup.start(&cfg).await.unwrap();

    // A request whose headers are not complete keeps the old worker busy.
    let mut slow = TcpStream::connect(("127.0.0.1", env.port)).await.unwrap();
    slow.write_all(b"GET / HTTP/1.1\r\nHost: test\r\n")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;

    let outcome = sup.reload(&format!("{cfg}# generation 2\n")).await.unwrap();
    assert_eq!(outcome.old_workers, 1, "{outcome:?}");
    let status = sup.status().await;
    assert_eq!(status.old_workers, 1);
    assert_eq!(status.current_workers, outcome.new_workers);

    // Finishing the request lets the old worker exit.
    slow.write_all(b"Connection: close\r\n\r\n").await.unwrap();
    let mut answer = Vec::new();
    slow.read_to_end(&mut answer).await.unwrap();
    assert!(String::from_utf8_lossy(&answer).ends_with("\r\n\r\nA"));
    let start = tokio::time::Instant::now();
    while sup.status().await.old_workers > 0 {
        assert!(start.elapsed() < DEADLINE, "old worker did not exit");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop_and_check(&mut sup).await;
}

#[tokio::test]
async fn start_failure_reports_alerts_and_leaves_nothing_running() {
    if !haproxy_available() {
        return;
    }
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let env = Env { port, ..Env::new() };
    let _guard = kill_guard(&env);
    let cfg = env.config(&[("app", 1)], "app", "");

    let mut sup = env.supervisor();
    let err = sup.start(&cfg).await.unwrap_err();
    let SupervisorError::StartFailed { alerts, .. } = &err else {
        panic!("expected StartFailed, got {err:?}");
    };
    assert!(
        alerts.iter().any(|a| a.message.contains("cannot bind")),
        "{alerts:?}"
    );
    assert!(sup.master_pid().is_none());
    assert!(!sup.status().await.master_alive);
    drop(taken);
}

#[tokio::test]
async fn install_config_writes_the_files_without_reloading() {
    if !haproxy_available() {
        return;
    }
    let env = Env::new();
    let _guard = kill_guard(&env);
    let a = start_backend("A").await;
    let b = start_backend("B").await;
    let cfg_a = env.config(&[("app_a", a), ("app_b", b)], "app_a", "");
    let cfg_b = env.config(&[("app_a", a), ("app_b", b)], "app_b", "");
    let mut sup = env.supervisor();
    sup.start(&cfg_a).await.unwrap();
    let before = sup.status().await;

    sup.install_config(&cfg_b).await.unwrap();
    assert_eq!(std::fs::read_to_string(env.paths.config()).unwrap(), cfg_b);
    assert_eq!(
        std::fs::read_to_string(env.paths.last_good()).unwrap(),
        cfg_b
    );
    let after = sup.status().await;
    assert_eq!(after.current_workers, before.current_workers, "no reload");
    assert_eq!(after.master_reloads, before.master_reloads);
    assert_eq!(get(env.port).await.unwrap(), (200, "A".to_owned()));

    // An invalid configuration is refused and touches nothing.
    let bad = env.config(
        &[("app_a", a)],
        "app_a",
        "\nbackend broken\n    nonsense here\n",
    );
    assert!(sup.install_config(&bad).await.is_err());
    assert_eq!(std::fs::read_to_string(env.paths.config()).unwrap(), cfg_b);
    stop_and_check(&mut sup).await;
}
