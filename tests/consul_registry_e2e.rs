//! End-to-end tests: the project's Consul client and catalog watcher against the embedded
//! registry, over HTTP on 127.0.0.1, on the real clock.
//!
//! Every wait is on a condition with a generous deadline; nothing asserts how fast something
//! happened.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use flow_proxy::consul::{
    CatalogWatcher, CatalogWatcherOptions, ConsulClient, ConsulConfig, ConsulError, Interest,
    KvKey, KvPair, KvPrefix, ServiceRegistration, TxnOp, WatchOptions,
};
use flow_proxy::domain::{CatalogSnapshot, Health, Instance, ServiceName};
use flow_proxy::registry::{RegistryConfig, RunningRegistry, spawn};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

const DEADLINE: Duration = Duration::from_secs(20);

fn registry_config() -> RegistryConfig {
    RegistryConfig {
        node_name: "e2e-node".into(),
        shutdown_grace: Duration::from_secs(3),
        ..RegistryConfig::default()
    }
}

async fn start_registry(config: RegistryConfig) -> RunningRegistry {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    spawn(listener, config).await.unwrap()
}

/// Binds `addr` again after a registry on it stopped, retrying briefly.
async fn rebind(addr: SocketAddr) -> tokio::net::TcpListener {
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        match tokio::net::TcpListener::bind(addr).await {
            Ok(l) => return l,
            Err(e) if Instant::now() < until => {
                eprintln!("rebinding {addr}: {e}; retrying");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("cannot rebind {addr}: {e}"),
        }
    }
}

fn client_for(addr: SocketAddr) -> ConsulClient {
    ConsulClient::new(&ConsulConfig::new(&addr.to_string()).unwrap()).unwrap()
}

fn fast_feeds() -> WatchOptions {
    WatchOptions {
        wait: Duration::from_secs(1),
        ..WatchOptions::default()
    }
}

/// Short blocking waits; the resync stays far away so that only change detection can pass.
fn watcher_options() -> CatalogWatcherOptions {
    CatalogWatcherOptions {
        feeds: fast_feeds(),
        resync_interval: Duration::from_secs(600),
        ..CatalogWatcherOptions::default()
    }
}

struct Watched {
    rx: watch::Receiver<Arc<CatalogSnapshot>>,
    _interest: watch::Sender<Interest>,
}

fn watch_catalog(client: &ConsulClient, interest: Interest, cancel: &CancellationToken) -> Watched {
    let (interest_tx, interest_rx) = watch::channel(interest);
    let rx = CatalogWatcher::spawn(
        client.clone(),
        interest_rx,
        watcher_options(),
        cancel.clone(),
    );
    Watched {
        rx,
        _interest: interest_tx,
    }
}

fn svc(name: &str) -> ServiceName {
    ServiceName::new(name).unwrap()
}

fn instances<'a>(snapshot: &'a CatalogSnapshot, service: &str) -> &'a [Instance] {
    snapshot
        .services
        .get(&svc(service))
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

fn ids(snapshot: &CatalogSnapshot, service: &str) -> Vec<String> {
    instances(snapshot, service)
        .iter()
        .map(|i| i.id.as_str().to_owned())
        .collect()
}

/// Waits until `condition` holds for the published snapshot; panics with `what` after
/// [`DEADLINE`].
async fn wait_snapshot(
    rx: &mut watch::Receiver<Arc<CatalogSnapshot>>,
    what: &str,
    condition: impl FnMut(&Arc<CatalogSnapshot>) -> bool,
) -> Arc<CatalogSnapshot> {
    let result = tokio::time::timeout(DEADLINE, rx.wait_for(condition))
        .await
        .map(|r| r.map(|s| s.clone()));
    match result {
        Ok(Ok(s)) => s,
        Ok(Err(_)) => panic!("catalog watcher stopped while waiting for: {what}"),
        Err(_) => panic!(
            "timed out waiting for: {what}; last snapshot: {:?}",
            rx.borrow().services
        ),
    }
}

async fn wait_kv<T: Clone>(
    rx: &mut watch::Receiver<Option<T>>,
    what: &str,
    mut condition: impl FnMut(&T) -> bool,
) -> T {
    match tokio::time::timeout(
        DEADLINE,
        rx.wait_for(|v| v.as_ref().is_some_and(&mut condition)),
    )
    .await
    {
        Ok(Ok(v)) => v.clone().unwrap(),
        Ok(Err(_)) => panic!("KV watcher stopped while waiting for: {what}"),
        Err(_) => panic!("timed out waiting for: {what}"),
    }
}

fn instance(id: &str, name: &str, port: u16, tags: &[&str]) -> ServiceRegistration {
    ServiceRegistration {
        id: id.into(),
        name: name.into(),
        tags: tags.iter().map(|t| (*t).to_owned()).collect(),
        address: "127.0.0.1".into(),
        port,
        ..ServiceRegistration::default()
    }
}

/// A raw GET: status, `X-Consul-Index` and body bytes.
async fn raw_get(addr: SocketAddr, path: &str) -> (u16, u64, Vec<u8>) {
    let resp = reqwest::Client::new()
        .get(format!("http://{addr}{path}"))
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let index = resp
        .headers()
        .get("X-Consul-Index")
        .expect("X-Consul-Index")
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    (status, index, resp.bytes().await.unwrap().to_vec())
}

async fn raw_put(addr: SocketAddr, path: &str) {
    let resp = reqwest::Client::new()
        .put(format!("http://{addr}{path}"))
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "PUT {path}: {}", resp.status());
}

fn key(k: &str) -> KvKey {
    KvKey::new(k).unwrap()
}

fn kv_view(pairs: &[KvPair]) -> Vec<(String, Vec<u8>)> {
    pairs
        .iter()
        .map(|p| (p.key.clone(), p.value.clone()))
        .collect()
}

fn kv(k: &str, v: &str) -> (String, Vec<u8>) {
    (k.to_owned(), v.as_bytes().to_vec())
}

/// 1. A check-less instance of a known service with the same tags changes neither feed body;
/// the watcher must still see it come and go.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_instance_registration_and_deregistration_are_seen() {
    let reg = start_registry(registry_config()).await;
    let addr = reg.local_addr();
    let client = client_for(addr);
    let cancel = CancellationToken::new();

    client
        .agent_register(&instance("go-demo-a", "go-demo", 8081, &["v1"]))
        .await
        .unwrap();
    let mut all = watch_catalog(&client, Interest::All, &cancel);
    let mut only = watch_catalog(
        &client,
        Interest::Services(BTreeSet::from([svc("go-demo")])),
        &cancel,
    );
    for (w, label) in [(&mut all, "All"), (&mut only, "Services")] {
        let s = wait_snapshot(&mut w.rx, &format!("{label}: instance A"), |s| {
            ids(s, "go-demo") == ["go-demo-a"]
        })
        .await;
        assert_eq!(instances(&s, "go-demo")[0].health, Health::Passing);
    }

    let (_, index_before, body_before) = raw_get(addr, "/v1/catalog/services").await;
    let (_, _, checks_before) = raw_get(addr, "/v1/health/state/any").await;
    client
        .agent_register(&instance("go-demo-b", "go-demo", 8082, &["v1"]))
        .await
        .unwrap();
    let (_, index_after, body_after) = raw_get(addr, "/v1/catalog/services").await;
    let (_, _, checks_after) = raw_get(addr, "/v1/health/state/any").await;
    assert_eq!(
        body_before, body_after,
        "the services feed body must not change"
    );
    assert_eq!(checks_before, checks_after, "no check was added");
    assert!(
        index_after > index_before,
        "X-Consul-Index must move: {index_before} -> {index_after}"
    );

    for (w, label) in [(&mut all, "All"), (&mut only, "Services")] {
        let s = wait_snapshot(&mut w.rx, &format!("{label}: instances A and B"), |s| {
            ids(s, "go-demo") == ["go-demo-a", "go-demo-b"]
        })
        .await;
        let b = &instances(&s, "go-demo")[1];
        assert_eq!(b.port, 8082);
        assert_eq!(b.address.to_string(), "127.0.0.1");
    }

    let (_, index_before, body_before) = raw_get(addr, "/v1/catalog/services").await;
    client.agent_deregister("go-demo-b").await.unwrap();
    let (_, index_after, body_after) = raw_get(addr, "/v1/catalog/services").await;
    assert_eq!(body_before, body_after);
    assert!(index_after > index_before);
    for (w, label) in [(&mut all, "All"), (&mut only, "Services")] {
        wait_snapshot(&mut w.rx, &format!("{label}: back to A"), |s| {
            ids(s, "go-demo") == ["go-demo-a"]
        })
        .await;
    }

    // The last instance goes: the service leaves the snapshot.
    client.agent_deregister("go-demo-a").await.unwrap();
    for (w, label) in [(&mut all, "All"), (&mut only, "Services")] {
        wait_snapshot(&mut w.rx, &format!("{label}: go-demo gone"), |s| {
            !s.services.contains_key(&svc("go-demo"))
        })
        .await;
    }

    cancel.cancel();
    reg.shutdown().await.unwrap();
}

/// 2. TTL check passing, expiring, and service maintenance mode.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_follows_ttl_checks_and_maintenance() {
    let reg = start_registry(registry_config()).await;
    let addr = reg.local_addr();
    let client = client_for(addr);
    let cancel = CancellationToken::new();

    let mut with_ttl = instance("api-1", "api", 9001, &[]);
    with_ttl.ttl_check = Some(Duration::from_secs(2));
    client.agent_register(&with_ttl).await.unwrap();
    client
        .agent_register(&instance("api-2", "api", 9002, &[]))
        .await
        .unwrap();
    let mut w = watch_catalog(&client, Interest::All, &cancel);
    let health = |s: &CatalogSnapshot, id: &str| {
        instances(s, "api")
            .iter()
            .find(|i| i.id.as_str() == id)
            .map(|i| i.health)
    };

    wait_snapshot(&mut w.rx, "api-1 starts critical", |s| {
        health(s, "api-1") == Some(Health::Critical) && health(s, "api-2") == Some(Health::Passing)
    })
    .await;
    client.agent_check_pass("service:api-1").await.unwrap();
    wait_snapshot(&mut w.rx, "api-1 passing", |s| {
        health(s, "api-1") == Some(Health::Passing)
    })
    .await;
    wait_snapshot(&mut w.rx, "api-1 critical after its TTL", |s| {
        health(s, "api-1") == Some(Health::Critical)
    })
    .await;

    raw_put(
        addr,
        "/v1/agent/service/maintenance/api-2?enable=true&reason=e2e",
    )
    .await;
    wait_snapshot(&mut w.rx, "api-2 in maintenance", |s| {
        health(s, "api-2") == Some(Health::Maintenance)
    })
    .await;
    raw_put(addr, "/v1/agent/service/maintenance/api-2?enable=false").await;
    wait_snapshot(&mut w.rx, "api-2 passing again", |s| {
        health(s, "api-2") == Some(Health::Passing)
    })
    .await;

    cancel.cancel();
    reg.shutdown().await.unwrap();
}

/// 3. A blocking KV prefix watch sees a put, a change and a delete, and ignores a sibling prefix.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_prefix_watch_sees_put_change_delete_only_under_its_prefix() {
    let reg = start_registry(registry_config()).await;
    let client = client_for(reg.local_addr());
    let cancel = CancellationToken::new();
    let mut h = client.watch_kv_prefix(
        &KvPrefix::new("docker-flow/").unwrap(),
        fast_feeds(),
        cancel.clone(),
    );

    wait_kv(&mut h.changes, "empty folder", |v| v.is_empty()).await;
    let a = key("docker-flow/go-demo/path");
    assert!(client.kv_put(&a, b"/demo", None).await.unwrap());
    wait_kv(&mut h.changes, "put", |v| {
        kv_view(v) == [kv("docker-flow/go-demo/path", "/demo")]
    })
    .await;
    assert!(client.kv_put(&a, b"/demo2", None).await.unwrap());
    wait_kv(&mut h.changes, "change", |v| {
        kv_view(v) == [kv("docker-flow/go-demo/path", "/demo2")]
    })
    .await;
    assert!(client.kv_delete(&a).await.unwrap());
    wait_kv(&mut h.changes, "delete", |v| v.is_empty()).await;

    // Let the watcher settle on the delete's index, then write next door.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    h.changes.mark_unchanged();
    let index_before = h.moves.borrow_and_update().as_ref().unwrap().index;
    assert!(
        client
            .kv_put(&key("docker-flow2/go-demo/path"), b"/other", None)
            .await
            .unwrap()
    );
    // Several blocking rounds (wait = 1 s) pass.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(
        !h.changes.has_changed().unwrap(),
        "a write under docker-flow2/ changed the docker-flow/ watch: {:?}",
        h.changes.borrow()
    );
    assert_eq!(
        h.moves.borrow().as_ref().unwrap().index,
        index_before,
        "the prefix index must not move for a sibling prefix"
    );

    cancel.cancel();
    reg.shutdown().await.unwrap();
}

/// 4. The KV list index goes backwards when the highest entry is deleted and its tombstone
/// reaped; the watcher resets and keeps following later writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_watch_resets_when_the_list_index_goes_backwards() {
    let reg = start_registry(RegistryConfig {
        tombstone_ttl: Duration::from_millis(500),
        ..registry_config()
    })
    .await;
    let addr = reg.local_addr();
    let client = client_for(addr);
    let cancel = CancellationToken::new();

    assert!(
        client
            .kv_put(&key("docker-flow/a"), b"1", None)
            .await
            .unwrap()
    );
    assert!(
        client
            .kv_put(&key("docker-flow/b"), b"2", None)
            .await
            .unwrap()
    );
    let mut h = client.watch_kv_prefix(
        &KvPrefix::new("docker-flow/").unwrap(),
        fast_feeds(),
        cancel.clone(),
    );
    wait_kv(&mut h.changes, "a and b", |v| v.len() == 2).await;
    let a_index = client
        .kv_get(&key("docker-flow/a"))
        .await
        .unwrap()
        .unwrap()
        .modify_index;

    let b_index = client
        .kv_get(&key("docker-flow/b"))
        .await
        .unwrap()
        .unwrap()
        .modify_index;

    assert!(client.kv_delete(&key("docker-flow/b")).await.unwrap());
    wait_kv(&mut h.changes, "b deleted", |v| {
        kv_view(v) == [kv("docker-flow/a", "1")]
    })
    .await;
    // Later than b's write: the move that announced b may still be the latest one seen.
    let tombstone_index = wait_kv(&mut h.moves, "the delete's index", |e| e.index > b_index)
        .await
        .index;
    let (_, listed, _) = raw_get(addr, "/v1/kv/docker-flow/?recurse").await;
    assert!(
        listed == tombstone_index || listed == a_index,
        "list index {listed}, tombstone {tombstone_index}, a {a_index}"
    );

    // Once the tombstone is reaped, the list index falls back to a's ModifyIndex.
    let back = wait_kv(&mut h.moves, "the index going backwards", |e| {
        e.index < tombstone_index
    })
    .await;
    assert_eq!(back.index, a_index);
    assert!(!back.changed, "same entries, lower index");

    // The watcher reset and still sees the next write.
    assert!(
        client
            .kv_put(&key("docker-flow/c"), b"3", None)
            .await
            .unwrap()
    );
    wait_kv(&mut h.changes, "c after the reset", |v| {
        kv_view(v) == [kv("docker-flow/a", "1"), kv("docker-flow/c", "3")]
    })
    .await;
    // `changes` is published just before `moves`: wait for the move too.
    wait_kv(
        &mut h.moves,
        "an index above the old one after the reset",
        |e| e.index > tombstone_index && e.payload.len() == 2,
    )
    .await;

    cancel.cancel();
    reg.shutdown().await.unwrap();
}

/// 5. The watchers keep the last good data while the registry is down, then recover on the same
/// address and data directory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watchers_survive_a_registry_outage() {
    let dir = tempfile::TempDir::new().unwrap();
    let config = RegistryConfig {
        data_dir: Some(dir.path().to_owned()),
        ..registry_config()
    };
    let reg = start_registry(config.clone()).await;
    let addr = reg.local_addr();
    let client = client_for(addr);
    let cancel = CancellationToken::new();

    client
        .agent_register(&instance("web-1", "web", 7001, &["v1"]))
        .await
        .unwrap();
    assert!(
        client
            .kv_put(&key("docker-flow/web/path"), b"/web", None)
            .await
            .unwrap()
    );
    let mut w = watch_catalog(&client, Interest::All, &cancel);
    let mut h = client.watch_kv_prefix(
        &KvPrefix::new("docker-flow/").unwrap(),
        fast_feeds(),
        cancel.clone(),
    );
    let before = wait_snapshot(&mut w.rx, "web-1", |s| ids(s, "web") == ["web-1"]).await;
    wait_kv(&mut h.changes, "web path", |v| v.len() == 1).await;
    let (_, services_index, _) = raw_get(addr, "/v1/catalog/services").await;
    let (_, kv_index, _) = raw_get(addr, "/v1/kv/docker-flow/?recurse").await;

    reg.shutdown().await.unwrap();
    w.rx.mark_unchanged();
    h.changes.mark_unchanged();
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(
        !w.rx.has_changed().unwrap(),
        "snapshot changed during the outage"
    );
    assert_eq!(**w.rx.borrow(), *before);
    assert!(
        !h.changes.has_changed().unwrap(),
        "KV changed during outage"
    );

    let reg = spawn(rebind(addr).await, config).await.unwrap();
    assert_eq!(reg.local_addr(), addr);
    let (_, services_index2, _) = raw_get(addr, "/v1/catalog/services").await;
    let (_, kv_index2, _) = raw_get(addr, "/v1/kv/docker-flow/?recurse").await;
    assert!(
        services_index2 >= services_index,
        "{services_index} -> {services_index2}"
    );
    assert!(kv_index2 >= kv_index, "{kv_index} -> {kv_index2}");

    client
        .agent_register(&instance("web-2", "web", 7002, &["v1"]))
        .await
        .unwrap();
    assert!(
        client
            .kv_put(&key("docker-flow/web/port"), b"7002", None)
            .await
            .unwrap()
    );
    wait_snapshot(&mut w.rx, "web-2 after the restart", |s| {
        ids(s, "web") == ["web-1", "web-2"]
    })
    .await;
    wait_kv(&mut h.changes, "port after the restart", |v| {
        kv_view(v)
            == [
                kv("docker-flow/web/path", "/web"),
                kv("docker-flow/web/port", "7002"),
            ]
    })
    .await;
    let (_, services_index3, _) = raw_get(addr, "/v1/catalog/services").await;
    assert!(services_index3 > services_index);

    cancel.cancel();
    reg.shutdown().await.unwrap();
}

/// 6. CAS puts, folder deletes and a rolled-back transaction.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_cas_delete_prefix_and_txn_conflict() {
    let reg = start_registry(registry_config()).await;
    let client = client_for(reg.local_addr());

    let k = key("docker-flow/go-demo/cas");
    assert!(client.kv_put(&k, b"1", Some(0)).await.unwrap(), "0 creates");
    assert!(
        !client.kv_put(&k, b"2", Some(0)).await.unwrap(),
        "0 fails when the key exists"
    );
    let m = client.kv_get(&k).await.unwrap().unwrap().modify_index;
    assert!(
        !client.kv_put(&k, b"3", Some(m + 1000)).await.unwrap(),
        "wrong cas"
    );
    assert_eq!(client.kv_get(&k).await.unwrap().unwrap().value, b"1");
    assert!(client.kv_put(&k, b"4", Some(m)).await.unwrap(), "right cas");
    assert_eq!(client.kv_get(&k).await.unwrap().unwrap().value, b"4");

    for k in [
        "docker-flow/go-demo/path",
        "docker-flow/go-demo/deep/x",
        "docker-flow/go-demo2/path",
        "docker-flow/go-demo2/deep/x",
    ] {
        assert!(client.kv_put(&key(k), b"v", None).await.unwrap());
    }
    assert!(
        client
            .kv_delete_prefix(&KvPrefix::new("docker-flow/go-demo/").unwrap())
            .await
            .unwrap()
    );
    let left = client
        .kv_keys(&KvPrefix::new("docker-flow/").unwrap())
        .await
        .unwrap();
    assert_eq!(
        left,
        ["docker-flow/go-demo2/deep/x", "docker-flow/go-demo2/path"]
    );

    let t = key("docker-flow/txn/a");
    assert!(client.kv_put(&t, b"before", None).await.unwrap());
    let tm = client.kv_get(&t).await.unwrap().unwrap().modify_index;
    let err = client
        .txn(&[
            TxnOp::Set {
                key: key("docker-flow/txn/b"),
                value: b"new".to_vec(),
            },
            TxnOp::CheckIndex {
                key: t.clone(),
                index: tm + 1000,
            },
            TxnOp::Set {
                key: t.clone(),
                value: b"after".to_vec(),
            },
        ])
        .await
        .unwrap_err();
    match err {
        ConsulError::TxnConflict { errors } => {
            assert_eq!(errors.len(), 1, "{errors:?}");
            assert_eq!(errors[0].op_index, 1);
        }
        other => panic!("expected a transaction conflict, got {other:?}"),
    }
    let a = client.kv_get(&t).await.unwrap().unwrap();
    assert_eq!((a.value.as_slice(), a.modify_index), (&b"before"[..], tm));
    assert!(
        client
            .kv_get(&key("docker-flow/txn/b"))
            .await
            .unwrap()
            .is_none()
    );

    // The same transaction with the right index commits.
    let ok = client
        .txn(&[
            TxnOp::CheckIndex {
                key: t.clone(),
                index: tm,
            },
            TxnOp::Set {
                key: t.clone(),
                value: b"after".to_vec(),
            },
        ])
        .await
        .unwrap();
    assert!(!ok.is_empty());
    assert_eq!(client.kv_get(&t).await.unwrap().unwrap().value, b"after");

    reg.shutdown().await.unwrap();
}

/// 7. The first configured address refuses connections; the client uses the second one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_fails_over_to_the_next_address() {
    let reg = start_registry(registry_config()).await;
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let client =
        ConsulClient::new(&ConsulConfig::new(&format!("{closed},{}", reg.local_addr())).unwrap())
            .unwrap();

    let k = key("docker-flow/failover");
    assert!(client.kv_put(&k, b"ok", None).await.unwrap());
    assert_eq!(client.kv_get(&k).await.unwrap().unwrap().value, b"ok");
    assert!(
        client
            .current_address()
            .contains(&reg.local_addr().to_string()),
        "{}",
        client.current_address()
    );
    client
        .agent_register(&instance("fo-1", "failover", 6001, &[]))
        .await
        .unwrap();
    let cancel = CancellationToken::new();
    let mut w = watch_catalog(&client, Interest::All, &cancel);
    wait_snapshot(&mut w.rx, "fo-1", |s| ids(s, "failover") == ["fo-1"]).await;

    cancel.cancel();
    reg.shutdown().await.unwrap();
}

/// Counts simultaneously open connections through a TCP forwarder.
struct Forwarder {
    addr: SocketAddr,
    open: Arc<AtomicUsize>,
    peak: Arc<AtomicUsize>,
    accepted: Arc<AtomicUsize>,
}

impl Forwarder {
    async fn start(upstream: SocketAddr, cancel: CancellationToken) -> Forwarder {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let open = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let accepted = Arc::new(AtomicUsize::new(0));
        let (o, p, a) = (open.clone(), peak.clone(), accepted.clone());
        tokio::spawn(async move {
            loop {
                let (mut down, _) = tokio::select! {
                    _ = cancel.cancelled() => return,
                    r = listener.accept() => r.unwrap(),
                };
                let (o, p, a) = (o.clone(), p.clone(), a.clone());
                let cancel = cancel.clone();
                tokio::spawn(async move {
                    let Ok(mut up) = tokio::net::TcpStream::connect(upstream).await else {
                        return;
                    };
                    a.fetch_add(1, Ordering::SeqCst);
                    let now = o.fetch_add(1, Ordering::SeqCst) + 1;
                    p.fetch_max(now, Ordering::SeqCst);
                    tokio::select! {
                        _ = cancel.cancelled() => {}
                        _ = tokio::io::copy_bidirectional(&mut down, &mut up) => {}
                    }
                    o.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        Forwarder {
            addr,
            open,
            peak,
            accepted,
        }
    }

    /// Peak of simultaneously open upstream connections over `window`.
    async fn peak_over(&self, window: Duration) -> usize {
        self.peak
            .store(self.open.load(Ordering::SeqCst), Ordering::SeqCst);
        tokio::time::sleep(window).await;
        self.peak.load(Ordering::SeqCst)
    }
}

/// 8. The catalog watcher keeps a constant number of connections, whatever the number of
/// services.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catalog_watcher_connections_do_not_grow_with_services() {
    let reg = start_registry(registry_config()).await;
    let direct = client_for(reg.local_addr());
    let cancel = CancellationToken::new();
    let fwd = Forwarder::start(reg.local_addr(), cancel.clone()).await;
    let options = watcher_options();
    // Three feeds plus at most `concurrency` reads; a returning connection may reach the pool
    // just after the next request checked out, so allow two more idle ones.
    let bound = 3 + options.concurrency + 2;

    for i in 0..10 {
        direct
            .agent_register(&instance(
                &format!("s{i:02}-1"),
                &format!("s{i:02}"),
                8000,
                &[],
            ))
            .await
            .unwrap();
    }
    let mut w = watch_catalog(&client_for(fwd.addr), Interest::All, &cancel);
    wait_snapshot(&mut w.rx, "10 services", |s| s.services.len() == 10).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let accepted_10 = fwd.accepted.load(Ordering::SeqCst);
    let peak_10 = fwd.peak_over(Duration::from_secs(4)).await;

    for i in 10..50 {
        direct
            .agent_register(&instance(
                &format!("s{i:02}-1"),
                &format!("s{i:02}"),
                8000,
                &[],
            ))
            .await
            .unwrap();
    }
    wait_snapshot(&mut w.rx, "50 services", |s| s.services.len() == 50).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let accepted_50 = fwd.accepted.load(Ordering::SeqCst);
    let peak_50 = fwd.peak_over(Duration::from_secs(4)).await;
    let accepted_end = fwd.accepted.load(Ordering::SeqCst);
    eprintln!(
        "open connections: peak {peak_10} with 10 services, {peak_50} with 50; \
         accepted {accepted_10}, {accepted_50}, {accepted_end}"
    );
    assert!(peak_10 >= 3, "the three feeds are open: {peak_10}");
    assert!(peak_10 <= bound, "{peak_10} connections with 10 services");
    assert!(peak_50 <= bound, "{peak_50} connections with 50 services");
    assert!(
        accepted_end <= accepted_10 + 2,
        "new connections while going from 10 to 50 services: {accepted_10} -> {accepted_end}"
    );

    cancel.cancel();
    reg.shutdown().await.unwrap();
}

/// A registry that comes back with lost state (its indexes go backwards, as after restoring an
/// older snapshot) can hand out a per-service index the watcher has already cached for
/// different data. The backwards feed index must invalidate the cached indexes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catalog_watcher_rereads_everything_when_the_registry_starts_over() {
    let reg = start_registry(registry_config()).await;
    let addr = reg.local_addr();
    let client = client_for(addr);
    let cancel = CancellationToken::new();

    client
        .agent_register(&instance("web-1", "web", 7001, &["v1"]))
        .await
        .unwrap();
    let (_, index_before, _) = raw_get(addr, "/v1/health/service/web").await;
    let mut w = watch_catalog(&client, Interest::All, &cancel);
    wait_snapshot(&mut w.rx, "web-1", |s| ids(s, "web") == ["web-1"]).await;
    // More writes move the feeds past web's own index.
    client
        .agent_register(&instance("other-1", "other", 7100, &[]))
        .await
        .unwrap();
    client.agent_deregister("other-1").await.unwrap();
    let (_, services_before, _) = raw_get(addr, "/v1/catalog/services").await;
    assert!(services_before > index_before);
    wait_snapshot(&mut w.rx, "other gone", |s| {
        ids(s, "web") == ["web-1"] && !s.services.contains_key(&svc("other"))
    })
    .await;

    // Same address, no data directory: everything starts over.
    reg.shutdown().await.unwrap();
    let reg = spawn(rebind(addr).await, registry_config()).await.unwrap();
    // A fresh client: the old one may hold a pooled connection to the stopped registry.
    let client = client_for(addr);
    client
        .agent_register(&instance("web-2", "web", 7002, &["v1"]))
        .await
        .unwrap();
    let (_, index_after, _) = raw_get(addr, "/v1/health/service/web").await;
    assert_eq!(
        index_before, index_after,
        "the scenario needs the new registry to reuse the per-service index"
    );
    let (_, services_after, _) = raw_get(addr, "/v1/catalog/services").await;
    assert!(
        services_after < services_before,
        "the services index goes backwards"
    );
    wait_snapshot(&mut w.rx, "web-2 from the new registry", |s| {
        ids(s, "web") == ["web-2"]
    })
    .await;

    cancel.cancel();
    reg.shutdown().await.unwrap();
}
