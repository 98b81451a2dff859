//! Catalog change detection: keeps a validated [`CatalogSnapshot`] of the interesting services
//! up to date with a constant number of long-polls.
//!
//! Owns the coordination of two change feeds (`/v1/catalog/services` and
//! `/v1/health/state/any`, each one blocking query) and the plain per-service re-reads of
//! `/v1/health/service/<name>` they trigger. It must not open one long-poll per service, and a
//! failed or undecodable read must never change the published snapshot. See
//! `CHANGE_DETECTION.md` for the design and its request costs.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt as _;
use tokio::sync::watch;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use crate::domain::{CatalogSnapshot, Instance, NodeName, ServiceName};

use super::blocking::{BlockingQuery, WatchEvent, WatchOptions, spawn_watch};
use super::catalog::{
    checks_request, decode_checks, decode_health_entries, decode_services, health_service_request,
    services_request,
};
use super::client::ConsulClient;
use super::convert::{CheckState, ServiceTags, convert_health_entries};
use super::error::ConsulError;
use super::rate_limit::TokenBucket;
use super::resolve::{Resolver, SystemResolver};
use super::transport::Transport;

/// Which services to track.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Interest {
    /// Every service in the catalog except Consul's own `consul` service.
    #[default]
    All,
    /// Only these services.
    Services(BTreeSet<ServiceName>),
}

impl Interest {
    fn includes(&self, name: &ServiceName) -> bool {
        match self {
            Interest::All => name.as_str() != "consul",
            Interest::Services(set) => set.contains(name),
        }
    }
}

/// Tuning of the catalog watcher.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CatalogWatcherOptions {
    /// Options of the two change feeds (wait, rate limit, backoff).
    pub feeds: WatchOptions,
    /// Period of the full resync (every interesting service re-read and re-resolved).
    pub resync_interval: Duration,
    /// Maximum concurrent per-service reads.
    pub concurrency: usize,
    /// Burst of the token bucket limiting read rounds.
    pub round_burst: u32,
    /// Refill interval of that bucket: under churn, at most one read round per interval.
    pub round_refill: Duration,
}

impl Default for CatalogWatcherOptions {
    fn default() -> Self {
        CatalogWatcherOptions {
            feeds: WatchOptions::default(),
            resync_interval: Duration::from_secs(300),
            concurrency: 8,
            round_burst: 2,
            round_refill: Duration::from_millis(500),
        }
    }
}

/// Spawns catalog change detection.
#[derive(Debug)]
pub struct CatalogWatcher;

impl CatalogWatcher {
    /// Watches the catalog through `client`, resolving host names with the system resolver.
    ///
    /// The receiver starts with an empty snapshot; the first notification comes after the first
    /// complete read (even if the catalog is empty), later ones only when the snapshot changed.
    pub fn spawn(
        client: ConsulClient,
        interest: watch::Receiver<Interest>,
        options: CatalogWatcherOptions,
        cancel: CancellationToken,
    ) -> watch::Receiver<Arc<CatalogSnapshot>> {
        Self::spawn_with(
            Arc::new(client),
            Arc::new(SystemResolver),
            interest,
            options,
            cancel,
        )
    }

    /// Like [`CatalogWatcher::spawn`] over any transport and resolver.
    pub fn spawn_with(
        transport: Arc<dyn Transport>,
        resolver: Arc<dyn Resolver>,
        interest: watch::Receiver<Interest>,
        options: CatalogWatcherOptions,
        cancel: CancellationToken,
    ) -> watch::Receiver<Arc<CatalogSnapshot>> {
        let (tx, rx) = watch::channel(Arc::new(CatalogSnapshot::new()));
        let coordinator = Coordinator {
            transport,
            resolver,
            options,
            interest: Interest::All,
            services: Arc::new(BTreeMap::new()),
            checks: None,
            cache: BTreeMap::new(),
            dirty: BTreeSet::new(),
            sweep: false,
            full: true,
            published: false,
            tx,
        };
        tokio::spawn(coordinator.run(interest, cancel));
        rx
    }
}

/// Last good read of one service.
#[derive(Debug, Clone)]
struct Cached {
    index: u64,
    instances: Vec<Instance>,
}

struct Coordinator {
    transport: Arc<dyn Transport>,
    resolver: Arc<dyn Resolver>,
    options: CatalogWatcherOptions,
    interest: Interest,
    /// Last body of the services feed.
    services: Arc<ServiceTags>,
    /// Last body of the checks feed.
    checks: Option<Arc<Vec<CheckState>>>,
    /// Last good read per service.
    cache: BTreeMap<ServiceName, Cached>,
    /// Services to re-read in the next round.
    dirty: BTreeSet<ServiceName>,
    /// Re-read every interesting service (index compared) in the next round.
    sweep: bool,
    /// Re-read and re-resolve every interesting service, ignoring cached indexes.
    full: bool,
    published: bool,
    tx: watch::Sender<Arc<CatalogSnapshot>>,
}

type Feed<T> = watch::Receiver<Option<WatchEvent<T>>>;

impl Coordinator {
    async fn run(mut self, mut interest_rx: watch::Receiver<Interest>, cancel: CancellationToken) {
        let feeds_cancel = cancel.child_token();
        let _stop_feeds = feeds_cancel.clone().drop_guard();
        let wait = self.options.feeds.wait;
        let mut services_rx = spawn_watch(
            self.transport.clone(),
            BlockingQuery::new(services_request(), wait, decode_services),
            self.options.feeds,
            feeds_cancel.clone(),
        )
        .moves;
        let mut checks_rx = spawn_watch(
            self.transport.clone(),
            BlockingQuery::new(checks_request(), wait, decode_checks),
            self.options.feeds,
            feeds_cancel.clone(),
        )
        .moves;

        // The services list is needed before anything can be read.
        tokio::select! {
            biased;
            _ = cancel.cancelled() => return,
            r = services_rx.wait_for(Option::is_some) => if r.is_err() { return },
        }
        self.interest = interest_rx.borrow_and_update().clone();
        let mut interest_open = true;
        self.on_services(&mut services_rx);
        self.on_checks(&mut checks_rx);
        self.full = true;

        let mut rounds = TokenBucket::new(self.options.round_burst, self.options.round_refill);
        let mut backoff = self.options.feeds.backoff();
        let mut retry_at: Option<Instant> = None;
        let start = Instant::now() + self.options.resync_interval;
        let mut resync = tokio::time::interval_at(start, self.options.resync_interval);
        resync.set_missed_tick_behavior(MissedTickBehavior::Delay);

        loop {
            // Coalesce everything already pending into one round.
            if services_rx.has_changed().unwrap_or(false) {
                self.on_services(&mut services_rx);
            }
            if checks_rx.has_changed().unwrap_or(false) {
                self.on_checks(&mut checks_rx);
            }
            if interest_open && interest_rx.has_changed().unwrap_or(false) {
                self.on_interest(&mut interest_rx);
            }
            let retry_due = retry_at.is_none_or(|t| t <= Instant::now());
            if self.has_work() && retry_due {
                tokio::select! {
                    biased;
                    _ = cancel.cancelled() => return,
                    _ = rounds.acquire() => {}
                }
                let failed = tokio::select! {
                    biased;
                    _ = cancel.cancelled() => return,
                    f = self.round() => f,
                };
                if failed {
                    let delay = backoff.next().unwrap_or(self.options.feeds.backoff_max);
                    retry_at = Some(Instant::now() + delay);
                } else {
                    backoff = self.options.feeds.backoff();
                    retry_at = None;
                }
                continue;
            }
            let retry_sleep = retry_at.filter(|_| self.has_work());
            tokio::select! {
                biased;
                _ = cancel.cancelled() => return,
                r = services_rx.changed() => {
                    if r.is_err() { return }
                    self.on_services(&mut services_rx);
                }
                r = checks_rx.changed() => {
                    if r.is_err() { return }
                    self.on_checks(&mut checks_rx);
                }
                r = interest_rx.changed(), if interest_open => {
                    if r.is_err() {
                        interest_open = false;
                    } else {
                        self.on_interest(&mut interest_rx);
                    }
                }
                _ = resync.tick() => {
                    tracing::debug!("periodic catalog resync");
                    self.full = true;
                }
                _ = sleep_until_opt(retry_sleep), if retry_sleep.is_some() => {
                    retry_at = None;
                }
            }
        }
    }

    fn has_work(&self) -> bool {
        self.full || self.sweep || !self.dirty.is_empty()
    }

    fn interesting(&self) -> BTreeSet<ServiceName> {
        self.services
            .keys()
            .filter(|n| self.interest.includes(n))
            .cloned()
            .collect()
    }

    /// A move of the services feed: narrow by the body diff, then sweep, because an index move
    /// may hide instance changes that leave the body as it was (silent changes).
    fn on_services(&mut self, rx: &mut Feed<ServiceTags>) {
        let Some(event) = rx.borrow_and_update().clone() else {
            return;
        };
        let old = std::mem::replace(&mut self.services, event.payload);
        for (name, tags) in self.services.iter() {
            if old.get(name) != Some(tags) {
                self.dirty.insert(name.clone());
            }
        }
        self.sweep = true;
        tracing::debug!(
            index = event.index,
            changed = event.changed,
            "services index moved"
        );
    }

    /// A move of the checks feed: the changed checks name their service, or (node checks) their
    /// node, whose services are then re-read.
    fn on_checks(&mut self, rx: &mut Feed<Vec<CheckState>>) {
        let Some(event) = rx.borrow_and_update().clone() else {
            return;
        };
        let old = self.checks.replace(event.payload.clone());
        let Some(old) = old else {
            return;
        };
        let before: BTreeSet<&CheckState> = old.iter().collect();
        let after: BTreeSet<&CheckState> = event.payload.iter().collect();
        let mut nodes = BTreeSet::new();
        for check in before.symmetric_difference(&after) {
            if check.service_name.is_empty() {
                nodes.insert(check.node.clone());
            } else if let Ok(name) = ServiceName::new(check.service_name.clone()) {
                self.dirty.insert(name);
            }
        }
        for node in nodes {
            let Ok(node) = NodeName::new(node) else {
                continue;
            };
            for (name, cached) in &self.cache {
                if cached.instances.iter().any(|i| i.node == node) {
                    self.dirty.insert(name.clone());
                }
            }
        }
    }

    fn on_interest(&mut self, rx: &mut watch::Receiver<Interest>) {
        self.interest = rx.borrow_and_update().clone();
        let interesting = self.interesting();
        for name in interesting {
            if !self.cache.contains_key(&name) {
                self.dirty.insert(name);
            }
        }
    }

    /// Performs one read round and publishes. Returns whether some read failed (those services
    /// stay dirty and keep their last good data).
    async fn round(&mut self) -> bool {
        let interesting = self.interesting();
        let force = self.full;
        let targets: Vec<ServiceName> = if self.full || self.sweep {
            interesting.iter().cloned().collect()
        } else {
            self.dirty.intersection(&interesting).cloned().collect()
        };
        self.full = false;
        self.sweep = false;
        self.dirty.clear();

        let transport = &*self.transport;
        let resolver = &*self.resolver;
        let cache = &self.cache;
        let results: Vec<(ServiceName, Result<Option<Cached>, ConsulError>)> =
            futures_util::stream::iter(targets)
                .map(|name| async move {
                    let known = if force {
                        None
                    } else {
                        cache.get(&name).map(|c| c.index)
                    };
                    let r = read_if_changed(transport, resolver, &name, known).await;
                    (name, r)
                })
                .buffer_unordered(self.options.concurrency.max(1))
                .collect()
                .await;

        let mut failed = false;
        for (name, result) in results {
            match result {
                Ok(Some(cached)) => {
                    self.cache.insert(name, cached);
                }
                Ok(None) => {}
                Err(error) => {
                    tracing::warn!(service = %name, %error, "cannot read service, keeping its last known instances");
                    self.dirty.insert(name);
                    failed = true;
                }
            }
        }
        self.cache.retain(|name, _| interesting.contains(name));
        self.publish(&interesting);
        failed
    }

    fn publish(&mut self, interesting: &BTreeSet<ServiceName>) {
        let mut snapshot = CatalogSnapshot::new();
        for name in interesting {
            if let Some(cached) = self.cache.get(name) {
                snapshot.set_service(name.clone(), cached.instances.clone());
            }
        }
        if !self.published {
            self.published = true;
            self.tx.send_replace(Arc::new(snapshot));
            return;
        }
        self.tx.send_if_modified(|current| {
            if **current == snapshot {
                false
            } else {
                *current = Arc::new(snapshot);
                true
            }
        });
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Reads one service; `Ok(None)` when its per-service index equals `known` (nothing changed).
async fn read_if_changed(
    transport: &dyn Transport,
    resolver: &dyn Resolver,
    name: &ServiceName,
    known: Option<u64>,
) -> Result<Option<Cached>, ConsulError> {
    let resp = transport.get(health_service_request(name)).await?;
    let index = resp.index.unwrap_or(0).max(1);
    if known == Some(index) {
        return Ok(None);
    }
    let entries = decode_health_entries(name, &resp)?;
    let instances = convert_health_entries(name, entries, resolver).await;
    Ok(Some(Cached { index, instances }))
}
