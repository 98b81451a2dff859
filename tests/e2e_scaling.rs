//! Zero-reload scaling under load: instances registered 1 → 20 → 1 while requests flow through
//! HAProxy are applied through the runtime API, with no failed request and no reload except
//! slot growth (a validated reload, itself without a failed request); an instance keeps its slot
//! while it lives; runtime state (a critical instance parked in maintenance) survives a reload.

mod support;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use support::{Proxy, Registry, backend, haproxy_available, http, wait_until};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Mutex;

fn counter(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {text}"))
}

async fn reloads(proxy: &Proxy) -> u64 {
    let (status, text) = proxy.call("/metrics").await;
    assert_eq!(status, 200, "{text}");
    counter(&text, "flow_proxy_haproxy_reloads_total")
}

async fn runtime_updates(proxy: &Proxy) -> u64 {
    let (status, text) = proxy.call("/metrics").await;
    assert_eq!(status, 200, "{text}");
    counter(&text, "flow_proxy_runtime_updates_total")
}

fn config(proxy: &Proxy) -> String {
    std::fs::read_to_string(proxy.data_dir.path().join("haproxy.cfg")).unwrap()
}

/// The server lines of `backend <name>` in the live configuration file.
fn slot_lines(proxy: &Proxy, backend: &str) -> Vec<String> {
    let text = config(proxy);
    let header = format!("backend {backend}");
    text.lines()
        .skip_while(|l| l.trim() != header)
        .skip(1)
        .take_while(|l| l.starts_with(' '))
        .filter(|l| l.trim_start().starts_with("server "))
        .map(|l| l.trim().to_owned())
        .collect()
}

/// The slot name holding `127.0.0.1:<port>`, if any.
fn slot_of(proxy: &Proxy, backend: &str, port: u16) -> Option<String> {
    slot_lines(proxy, backend).into_iter().find_map(|l| {
        let mut t = l.split(' ');
        let (_, name, addr) = (t.next()?, t.next()?, t.next()?);
        (addr == format!("127.0.0.1:{port}")).then(|| name.to_owned())
    })
}

/// A raw command on HAProxy's runtime socket.
async fn runtime(proxy: &Proxy, command: &str) -> String {
    let mut s = tokio::net::UnixStream::connect(proxy.data_dir.path().join("admin.sock"))
        .await
        .unwrap();
    s.write_all(format!("{command}\n").as_bytes())
        .await
        .unwrap();
    s.shutdown().await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

/// `(server name, admin state, address, port)` of every server of `backend` from `show servers state`.
async fn admin_states(proxy: &Proxy, backend: &str) -> Vec<(String, u32, String, u16)> {
    let out = runtime(proxy, &format!("show servers state {backend}")).await;
    // Fields: be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state ... srv_port
    out.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.len() < 19 || f[1] != backend {
                return None;
            }
            Some((
                f[3].to_owned(),
                f[6].parse().ok()?,
                f[4].to_owned(),
                f[18].parse().ok()?,
            ))
        })
        .collect()
}

/// Requests sent in a loop through HAProxy, each on a new connection, until stopped.
struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    failures: Arc<Mutex<Vec<(u16, String)>>>,
    bodies: Arc<Mutex<BTreeSet<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Load {
    fn start(port: u16, path: &'static str) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let bodies = Arc::new(Mutex::new(BTreeSet::new()));
        let task = tokio::spawn({
            let (stop, ok, failures, bodies) =
                (stop.clone(), ok.clone(), failures.clone(), bodies.clone());
            async move {
                while !stop.load(Ordering::Relaxed) {
                    let (status, body) = http(port, "GET", "localhost", path).await;
                    if (200..300).contains(&status) {
                        ok.fetch_add(1, Ordering::Relaxed);
                        bodies.lock().await.insert(body);
                    } else {
                        // Status 0: the connection failed or no answer came (socket error).
                        failures.lock().await.push((status, body));
                    }
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            }
        });
        Load {
            stop,
            ok,
            failures,
            bodies,
            task,
        }
    }

    /// Stops the loop; (successful requests, failures).
    async fn finish(self) -> (u64, Vec<(u16, String)>) {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.unwrap();
        let failures = self.failures.lock().await.clone();
        (self.ok.load(Ordering::Relaxed), failures)
    }
}

async fn start_with_app(registry: &Registry) -> (Proxy, u16) {
    let proxy = Proxy::start(registry, "docker-flow").await;
    let first = backend("i1").await;
    registry.register("app", 1, first).await;
    let (status, body) = proxy
        .call("/v1/docker-flow-proxy/reconfigure?serviceName=app&servicePath=/app")
        .await;
    assert_eq!(status, 200, "{body}");
    wait_until("app is routed", || async {
        proxy.get("localhost", "/app").await.0 == 200
    })
    .await;
    (proxy, first)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_1_to_20_to_1_under_load_reloads_only_to_grow_slots() {
    if !haproxy_available() {
        return;
    }
    let registry = Registry::start().await;
    let (mut proxy, first) = start_with_app(&registry).await;
    let slots_before = slot_lines(&proxy, "app-be").len();
    let first_slot = slot_of(&proxy, "app-be", first).expect("the first instance has a slot");
    let reloads_before = reloads(&proxy).await;
    let updates_before = runtime_updates(&proxy).await;
    let load = Load::start(proxy.http_port, "/app");

    // Up: 2..=20, a little apart so that some land in separate applies.
    let mut instances = Vec::new();
    for n in 2..=20u32 {
        let port = backend(&format!("i{n}")).await;
        let id = registry.register("app", n, port).await;
        instances.push((id, port));
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    wait_until("all 20 instances are in the configuration", || async {
        instances
            .iter()
            .all(|(_, port)| slot_of(&proxy, "app-be", *port).is_some())
    })
    .await;
    wait_until("every instance has served a request", || async {
        load.bodies.lock().await.len() == 20
    })
    .await;
    let slots_up = slot_lines(&proxy, "app-be").len();
    let reloads_up = reloads(&proxy).await;
    assert_eq!(
        slot_of(&proxy, "app-be", first).as_deref(),
        Some(first_slot.as_str()),
        "the first instance keeps its slot while the backend grows"
    );
    assert!(slots_up >= 20 && slots_up > slots_before, "{slots_up}");
    let doublings = (slots_up / slots_before).trailing_zeros() as u64;
    let growth_reloads = reloads_up - reloads_before;
    assert!(
        (1..=doublings).contains(&growth_reloads),
        "reloads only for slot growth: {growth_reloads} reloads for {slots_before} → {slots_up} slots"
    );
    let pid_up = proxy.worker_pid().await;

    // Down: 20 → 1; slots never shrink, so nothing reloads.
    for (id, _) in &instances {
        registry.deregister(id).await;
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    wait_until(
        "only the first instance is left in the configuration",
        || async {
            instances
                .iter()
                .all(|(_, port)| slot_of(&proxy, "app-be", *port).is_none())
        },
    )
    .await;
    // Let requests flow a little longer on the single instance left.
    let ok_then = load.ok.load(Ordering::Relaxed);
    wait_until("requests keep being served", || async {
        load.ok.load(Ordering::Relaxed) > ok_then + 20
    })
    .await;
    let (ok, failures) = load.finish().await;

    assert!(failures.is_empty(), "failed requests: {failures:?}");
    assert!(ok > 100, "the load loop ran ({ok} requests)");
    assert_eq!(
        reloads(&proxy).await,
        reloads_up,
        "no reload while scaling down"
    );
    assert_eq!(proxy.worker_pid().await, pid_up, "the same worker serves");
    assert_eq!(
        slot_lines(&proxy, "app-be").len(),
        slots_up,
        "slots never shrink"
    );
    assert!(
        runtime_updates(&proxy).await > updates_before + 1,
        "instance changes went through the runtime API"
    );
    assert_eq!(
        slot_of(&proxy, "app-be", first).as_deref(),
        Some(first_slot.as_str())
    );
    for _ in 0..10 {
        assert_eq!(
            proxy.get("localhost", "/app").await,
            (200, "i1\n".to_owned())
        );
    }
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slot_growth_is_one_validated_reload_without_failed_requests() {
    if !haproxy_available() {
        return;
    }
    let registry = Registry::start().await;
    let (mut proxy, first) = start_with_app(&registry).await;
    let slots_before = slot_lines(&proxy, "app-be").len();
    let first_slot = slot_of(&proxy, "app-be", first).unwrap();
    let reloads_before = reloads(&proxy).await;
    let pid_before = proxy.worker_pid().await;
    let load = Load::start(proxy.http_port, "/app");

    // One more instance than there are slots, registered together.
    let mut ports = vec![first];
    for n in 2..=(slots_before as u32 + 1) {
        let port = backend(&format!("i{n}")).await;
        registry.register("app", n, port).await;
        ports.push(port);
    }
    wait_until("the backend has grown", || async {
        slot_lines(&proxy, "app-be").len() > slots_before
    })
    .await;
    wait_until("every instance has served a request", || async {
        load.bodies.lock().await.len() == ports.len()
    })
    .await;
    let (ok, failures) = load.finish().await;

    assert!(failures.is_empty(), "failed requests: {failures:?}");
    assert!(ok > 0);
    assert_eq!(
        slot_lines(&proxy, "app-be").len(),
        slots_before * 2,
        "doubled"
    );
    assert_eq!(reloads(&proxy).await, reloads_before + 1, "one reload");
    assert_ne!(proxy.worker_pid().await, pid_before, "a new worker serves");
    assert_eq!(slot_of(&proxy, "app-be", first).unwrap(), first_slot);
    let check = std::process::Command::new("haproxy")
        .arg("-c")
        .arg("-f")
        .arg(proxy.data_dir.path().join("haproxy.cfg"))
        .output()
        .unwrap();
    assert!(check.status.success(), "{check:?}");
    // HAProxy's runtime view matches: every instance is ready in the slot the file names.
    let states = admin_states(&proxy, "app-be").await;
    for port in &ports {
        let slot = slot_of(&proxy, "app-be", *port).unwrap();
        let (_, admin, addr, p) = states
            .iter()
            .find(|(name, ..)| *name == slot)
            .unwrap_or_else(|| panic!("{slot} in {states:?}"));
        assert_eq!((addr.as_str(), *p), ("127.0.0.1", *port));
        assert_eq!(*admin & 1, 0, "{slot} is not in maintenance: {states:?}");
    }
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runtime_state_is_kept_across_a_reload() {
    if !haproxy_available() {
        return;
    }
    let registry = Registry::start().await;
    let (mut proxy, first) = start_with_app(&registry).await;
    let first_slot = slot_of(&proxy, "app-be", first).unwrap();
    // A second instance that answers, but whose check is critical: it must never be routed.
    let sick = backend("sick").await;
    let sick_id = registry.register_critical("app", 2, sick).await;
    wait_until("the critical instance has a slot", || async {
        slot_of(&proxy, "app-be", sick).is_some()
    })
    .await;
    let sick_slot = slot_of(&proxy, "app-be", sick).unwrap();
    let in_maint = |states: Vec<(String, u32, String, u16)>| {
        states
            .iter()
            .any(|(name, admin, _, port)| *name == sick_slot && admin & 1 == 1 && *port == sick)
    };
    wait_until("the critical instance is in maintenance", || async {
        in_maint(admin_states(&proxy, "app-be").await)
    })
    .await;

    // A structural change (another service) and an explicit reload.
    let other = backend("other").await;
    registry.register("other", 1, other).await;
    let pid = proxy.worker_pid().await;
    let (status, body) = proxy
        .call("/v1/docker-flow-proxy/reconfigure?serviceName=other&servicePath=/other")
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = proxy.call("/v1/docker-flow-proxy/reload").await;
    assert_eq!(status, 200, "{body}");
    assert_ne!(proxy.worker_pid().await, pid, "reloaded");

    let states = admin_states(&proxy, "app-be").await;
    assert!(in_maint(states.clone()), "still in maintenance: {states:?}");
    for _ in 0..30 {
        assert_eq!(
            proxy.get("localhost", "/app").await,
            (200, "i1\n".to_owned())
        );
    }
    assert_eq!(proxy.get("localhost", "/other").await.0, 200);
    assert_eq!(slot_of(&proxy, "app-be", first).unwrap(), first_slot);

    // Healthy again: routed through the runtime API, and still after the next reload.
    let reloads_before = reloads(&proxy).await;
    registry
        .client
        .agent_check_pass(&format!("service:{sick_id}"))
        .await
        .unwrap();
    wait_until("the healed instance serves", || async {
        proxy.get("localhost", "/app").await.1 == "sick\n"
    })
    .await;
    assert_eq!(
        reloads(&proxy).await,
        reloads_before,
        "healing needs no reload"
    );
    let (status, body) = proxy.call("/v1/docker-flow-proxy/reload").await;
    assert_eq!(status, 200, "{body}");
    let states = admin_states(&proxy, "app-be").await;
    assert!(
        !in_maint(states.clone()),
        "ready after the reload: {states:?}"
    );
    wait_until("the healed instance serves after the reload", || async {
        proxy.get("localhost", "/app").await.1 == "sick\n"
    })
    .await;
    proxy.stop().await;
}
