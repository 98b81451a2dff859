//! The embedded single-node registry: a Consul-HTTP-API-compatible agent and server.
//!
//! It lets flow-proxy (and its tests) run without a Consul binary. It follows Consul's
//! documented semantics for the endpoints it serves: one global raft index, per-table and
//! per-service index entries, blocking queries, KV with tombstones, transactions, agent
//! service and check registration with TTL/HTTP/TCP check runners, and optional
//! persistence.
//!
//! Module map:
//! - [`acl`]: the optional ACL token (`EMBEDDED_REGISTRY_TOKEN`) and Consul's 403 answers.
//! - [`store`]: the pure state machine (commands, index entries).
//! - [`kv`]: the KV table, tombstones and transactions.
//! - [`lookup`]: derived lookups (instances by service name, checks by instance).
//! - [`catalog`]: registration decoding/validation and catalog/health/agent views.
//! - [`blocking`]: `index`/`wait` parsing and the wait loop.
//! - [`duration`]: Go duration parsing.
//! - [`persist`]: command log and snapshots.
//! - [`session`]: sessions and the locks they hold.
//! - [`checks`]: TTL expiry, HTTP/TCP probes, critical-service reaping, tombstone reaping.
//! - [`http`]: the warp routes.
//!
//! Where it knowingly differs from Consul:
//! - Agent writes reach the catalog synchronously (Consul syncs them asynchronously);
//!   clients must not rely on either.
//! - Sessions have no lock delay, and only TTL expiry or destruction invalidates them
//!   (a linked check turning critical does not). A TTL session expires after twice its
//!   TTL without renewal, as Consul allows. `/v1/txn` accepts only KV operations.
//! - `filter`, `near` and `node-meta` are accepted and ignored. ACLs are reduced to one
//!   optional token ([`RegistryConfig::acl_token`]) that may do everything; without it nothing
//!   is enforced (`X-Consul-Default-ACL-Policy: allow`); the servers' own `consul` service is only
//!   shown with [`RegistryConfig::register_consul_service`].
//! - Script, docker, gRPC and alias checks are stored but not executed. HTTP and TCP
//!   probes run their first probe immediately instead of after a random stagger.
//! - A check status update that changes nothing (e.g. a TTL refresh with the same
//!   output) consumes no raft index, as Consul's agent does not sync it.
//! - Persistence: if appending to the command log fails, the write has already been
//!   applied in memory; the client gets a 500 and the change may be lost on restart.
//!
//! This module owns the wiring ([`spawn`], [`RunningRegistry`]) and the shared core that
//! serialises writes, makes them durable and wakes blocked readers. It must not know
//! anything about HAProxy or flow-proxy's own data.

pub mod acl;
pub mod blocking;
pub mod catalog;
pub mod checks;
pub mod duration;
pub mod http;
pub mod kv;
pub mod lookup;
pub mod persist;
pub mod session;
pub mod store;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{Notify, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use persist::{Durable, PersistError};
use store::{Applied, ApplyError, Command, Store};

/// Registry settings.
#[derive(Debug, Clone)]
pub struct RegistryConfig {
    /// Where state is persisted; `None` keeps everything in memory.
    pub data_dir: Option<PathBuf>,
    pub node_name: String,
    pub datacenter: String,
    /// How long KV tombstones are kept before they are reaped.
    pub tombstone_ttl: Duration,
    /// How often `DeregisterCriticalServiceAfter` is enforced.
    pub check_reap_interval: Duration,
    /// Lower bound applied to `DeregisterCriticalServiceAfter`.
    pub min_deregister_critical_after: Duration,
    /// Show the servers' own `consul` service in the catalog, as a real cluster does
    /// (decided when the state is first created).
    pub register_consul_service: bool,
    /// HTTP and TCP check intervals below this are raised to it (Consul: 1 s).
    pub min_check_interval: Duration,
    /// Shortest session TTL accepted (Consul: 10 s).
    pub min_session_ttl: Duration,
    /// Upper bound on the wait for open connections and tasks at shutdown.
    pub shutdown_grace: Duration,
    /// Command-log records after which a snapshot is written and the log emptied.
    pub compact_after_records: usize,
    /// When set, every endpoint but `/v1/status/*` requires this token (403 otherwise).
    pub acl_token: Option<acl::AclToken>,
}

fn default_node_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok().filter(|s| !s.is_empty()))
        .unwrap_or_else(|| "flow-proxy".to_string())
}

impl Default for RegistryConfig {
    fn default() -> Self {
        RegistryConfig {
            data_dir: None,
            node_name: default_node_name(),
            datacenter: "dc1".to_string(),
            tombstone_ttl: Duration::from_secs(15 * 60),
            check_reap_interval: Duration::from_secs(30),
            min_deregister_critical_after: Duration::from_secs(60),
            register_consul_service: false,
            min_check_interval: Duration::from_secs(1),
            min_session_ttl: session::MIN_TTL,
            shutdown_grace: Duration::from_secs(10),
            compact_after_records: 1000,
            acl_token: None,
        }
    }
}

/// Registry failures surfaced to the embedding program.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("listener: {0}")]
    Listener(#[source] std::io::Error),
    #[error("persistence: {0}")]
    Persist(#[from] PersistError),
    #[error("background task failed: {0}")]
    Task(String),
    #[error("shutdown did not finish within {0:?}")]
    ShutdownTimeout(Duration),
}

/// Why a write failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum WriteError {
    #[error(transparent)]
    Rejected(#[from] ApplyError),
    #[error(transparent)]
    Persist(#[from] PersistError),
    #[error("write task failed: {0}")]
    Task(String),
}

struct Inner {
    store: Store,
    durable: Option<Durable>,
}

/// State shared by the HTTP layer and the background runners.
pub(crate) struct Core {
    inner: Mutex<Inner>,
    index_tx: watch::Sender<u64>,
    durable: bool,
    pub(crate) config: RegistryConfig,
    pub(crate) cancel: CancellationToken,
    /// TTL check deadlines (check ID -> when it turns critical).
    pub(crate) ttl_deadlines: Mutex<HashMap<String, Instant>>,
    /// TTL session deadlines (session ID -> when it is invalidated).
    pub(crate) session_deadlines: Mutex<HashMap<String, Instant>>,
    /// Wakes the check runner (TTL refreshes).
    pub(crate) runner_wake: Notify,
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Core {
    /// Applies a write, makes it durable, then wakes blocked readers.
    pub(crate) fn write(&self, cmd: &Command) -> Result<Applied, WriteError> {
        let mut guard = lock(&self.inner);
        let Inner { store, durable } = &mut *guard;
        let applied = store.apply(cmd)?;
        let mut result = Ok(());
        if let Some(index) = applied.index {
            if let Some(d) = durable.as_mut() {
                result = d.append(index, cmd).and_then(|()| d.maybe_compact(store));
            }
            self.index_tx.send_replace(index);
        }
        drop(guard);
        result?;
        Ok(applied)
    }

    /// [`Core::write`] off the async threads when it may fsync.
    pub(crate) async fn write_async(self: &Arc<Self>, cmd: Command) -> Result<Applied, WriteError> {
        if !self.durable {
            return self.write(&cmd);
        }
        let core = Arc::clone(self);
        tokio::task::spawn_blocking(move || core.write(&cmd))
            .await
            .map_err(|e| WriteError::Task(e.to_string()))?
    }

    /// Runs a read against the current state.
    pub(crate) fn read<R>(&self, f: impl FnOnce(&Store) -> R) -> R {
        f(&lock(&self.inner).store)
    }

    /// A receiver of the raft index, for blocking reads.
    pub(crate) fn subscribe(&self) -> watch::Receiver<u64> {
        self.index_tx.subscribe()
    }

    fn flush(&self) -> Result<(), PersistError> {
        let mut guard = lock(&self.inner);
        let Inner { store, durable } = &mut *guard;
        if let Some(d) = durable.as_mut() {
            d.compact(store)?;
        }
        Ok(())
    }
}

fn random_node_id() -> String {
    let b: [u8; 16] = rand::random();
    format!(
        "{:02x}{:02x}{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}",
        b[0],
        b[1],
        b[2],
        b[3],
        b[4],
        b[5],
        b[6],
        b[7],
        b[8],
        b[9],
        b[10],
        b[11],
        b[12],
        b[13],
        b[14],
        b[15]
    )
}

/// A registry serving on its listener.
pub struct RunningRegistry {
    local_addr: SocketAddr,
    core: Arc<Core>,
    server: tokio::task::JoinHandle<()>,
    tasks: TaskTracker,
}

/// Opens (recovers) the state and serves the HTTP API on `listener` until `shutdown` is called.
pub async fn spawn(
    listener: tokio::net::TcpListener,
    config: RegistryConfig,
) -> Result<RunningRegistry, RegistryError> {
    let local_addr = listener.local_addr().map_err(RegistryError::Listener)?;
    crate::tls::install_crypto_provider();
    let node_name = config.node_name.clone();
    let datacenter = config.datacenter.clone();
    let with_consul = config.register_consul_service;
    let fresh = move || {
        let store = Store::new(random_node_id(), node_name, datacenter);
        if with_consul {
            store.with_consul_service()
        } else {
            store
        }
    };
    let (store, durable) = match config.data_dir.clone() {
        Some(dir) => {
            let every = config.compact_after_records;
            let (s, d) = tokio::task::spawn_blocking(move || persist::open(&dir, every, fresh))
                .await
                .map_err(|e| RegistryError::Task(e.to_string()))??;
            (s, Some(d))
        }
        None => (fresh(), None),
    };
    // The configured node name and datacenter win over recovered ones.
    let mut store = store;
    store.node.name = config.node_name.clone();
    store.node.datacenter = config.datacenter.clone();
    let (index_tx, _) = watch::channel(store.raft_index);
    let core = Arc::new(Core {
        durable: durable.is_some(),
        inner: Mutex::new(Inner { store, durable }),
        index_tx,
        config,
        cancel: CancellationToken::new(),
        ttl_deadlines: Mutex::new(HashMap::new()),
        session_deadlines: Mutex::new(HashMap::new()),
        runner_wake: Notify::new(),
    });
    let routes = http::routes(Arc::clone(&core));
    let server = warp::serve(routes)
        .incoming(listener)
        .graceful(core.cancel.clone().cancelled_owned());
    let server = tokio::spawn(server.run());
    let tasks = TaskTracker::new();
    tasks.spawn(checks::run_checks(Arc::clone(&core)));
    tasks.spawn(checks::run_tombstone_reaper(Arc::clone(&core)));
    tracing::info!(%local_addr, "registry serving the Consul HTTP API");
    Ok(RunningRegistry {
        local_addr,
        core,
        server,
        tasks,
    })
}

impl RunningRegistry {
    /// The address the HTTP API listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops serving, stops check runners, flushes state; bounded wait.
    pub async fn shutdown(self) -> Result<(), RegistryError> {
        let grace = self.core.config.shutdown_grace;
        self.core.cancel.cancel();
        self.tasks.close();
        let mut timed_out = false;
        let mut server = self.server;
        match tokio::time::timeout(grace, &mut server).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "registry HTTP task failed"),
            Err(_) => {
                tracing::warn!("registry connections still open after grace period");
                server.abort();
                timed_out = true;
            }
        }
        if tokio::time::timeout(grace, self.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!("registry check runners did not stop in time");
            timed_out = true;
        }
        let core = Arc::clone(&self.core);
        tokio::task::spawn_blocking(move || core.flush())
            .await
            .map_err(|e| RegistryError::Task(e.to_string()))??;
        if timed_out {
            return Err(RegistryError::ShutdownTimeout(grace));
        }
        Ok(())
    }
}
