//! Catalog change detection: keeps a validated [`CatalogSnapshot`] of the interesting services
//! up to date with a constant number of long-polls.
//!
//! Owns the coordination of three change feeds (`/v1/catalog/services`,
//! `/v1/health/state/any` and `/v1/catalog/nodes`, each one blocking query) and the plain
//! reads they trigger: per-service re-reads of `/v1/health/service/<name>`, and the *node
//! sweep* that finds a silent change (an instance registered or deregistered without checks,
//! which moves only the services feed's index): one `/v1/catalog/node/<node>` per node the
//! nodes feed lists, each instance's (ID, service name, `ModifyIndex`) compared with the
//! previous sweep, and only the services whose instances appeared, vanished or changed
//! re-read. A sweep's cost follows the nodes (requests) and the instances on them (bytes), not
//! the services; node sweeps are rate-limited to one per `instances × 50 µs` (500 ms to 2 s)
//! after a burst of two. When a node read fails (an older server, a token that may not read
//! nodes) or no baseline exists yet, the sweep re-reads every interesting service instead,
//! comparing per-service indexes, so nothing is missed. A proxy that routes a few services of
//! a large catalog keeps per-service sweeps, which then cost Consul less (`node_sweep_pays`).
//!
//! It must not open one long-poll per service, and a failed or undecodable read must never
//! change the published snapshot. See ARCHITECTURE.md ("Watching Consul") for the design and
//! its request costs.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt as _;
use tokio::sync::watch;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use crate::domain::{CatalogSnapshot, Instance, NodeName, ServiceName, Tag};

use super::blocking::{BlockingQuery, WatchEvent, WatchOptions, spawn_watch};
use super::catalog::{
    NodeInstances, checks_request, decode_checks, decode_health_entries, decode_node, decode_nodes,
    decode_services, health_service_request, node_request, nodes_request, services_request,
};
use super::client::ConsulClient;
use super::convert::{CheckState, ServiceTags, convert_health_entries};
use super::error::ConsulError;
use super::rate_limit::TokenBucket;
use super::resolve::{Resolver, SystemResolver};
use super::transport::Transport;

/// What one request costs Consul, in instance entries of a node read, when the watcher
/// chooses between a node sweep and a per-service sweep (about 280 bytes per entry: a request
/// weighs as much as some 28 KB of body).
const REQUEST_COST: usize = 100;

/// Which services to track.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Interest {
    /// Every service in the catalog except Consul's own `consul` service.
    #[default]
    All,
    /// Only these services.
    Services(BTreeSet<ServiceName>),
    /// These services, and every service with a tag starting with `<prefix>.` in
    /// `/v1/catalog/services` (routes declared by tags): found through the services feed, so
    /// the number of long-polls stays the same.
    Tagged {
        /// Services tracked whatever their tags.
        services: BTreeSet<ServiceName>,
        /// The tag prefix, without its trailing `.`.
        prefix: String,
    },
}

impl Interest {
    fn includes(&self, name: &ServiceName, tags: &BTreeSet<Tag>) -> bool {
        match self {
            Interest::All => name.as_str() != "consul",
            Interest::Services(set) => set.contains(name),
            Interest::Tagged { services, prefix } => {
                services.contains(name)
                    || tags.iter().any(|t| {
                        t.as_str()
                            .strip_prefix(prefix.as_str())
                            .is_some_and(|rest| rest.starts_with('.'))
                    })
            }
        }
    }

    /// The services tracked whatever their tags (none for [`Interest::All`]).
    pub fn named(&self) -> BTreeSet<ServiceName> {
        match self {
            Interest::All => BTreeSet::new(),
            Interest::Services(set) | Interest::Tagged { services: set, .. } => set.clone(),
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
    /// Longest refill interval of the bucket (same burst) limiting sweeps, the rounds that
    /// re-read every interesting service: under registration churn, at most one sweep per
    /// interval.
    pub sweep_refill: Duration,
    /// What one interesting service adds to the sweep interval, which is
    /// `services × sweep_cost_per_service` kept between `round_refill` and `sweep_refill`: a
    /// few services are swept as often as any round runs, thousands at most once per
    /// `sweep_refill`, so the read rate a sweep costs Consul stays bounded at any size.
    pub sweep_cost_per_service: Duration,
    /// What one instance listed by the node reads adds to the interval of node sweeps (one
    /// `/v1/catalog/node/<node>` per node), which is `instances × sweep_cost_per_instance`
    /// kept between `round_refill` and `sweep_refill`: a node sweep moves every instance's
    /// entry, so its interval follows their number, not the number of services.
    pub sweep_cost_per_instance: Duration,
}

impl CatalogWatcherOptions {
    /// The interval of per-service sweeps (the fallback) for this many interesting services.
    pub fn sweep_interval(&self, services: usize) -> Duration {
        self.bounded(self.sweep_cost_per_service, services)
    }

    /// The interval of node sweeps when the last one listed this many instances.
    pub fn node_sweep_interval(&self, instances: usize) -> Duration {
        self.bounded(self.sweep_cost_per_instance, instances)
    }

    fn bounded(&self, each: Duration, count: usize) -> Duration {
        each.saturating_mul(u32::try_from(count).unwrap_or(u32::MAX))
            .max(self.round_refill)
            .min(self.sweep_refill.max(self.round_refill))
    }
}

impl Default for CatalogWatcherOptions {
    fn default() -> Self {
        CatalogWatcherOptions {
            feeds: WatchOptions::default(),
            resync_interval: Duration::from_secs(300),
            concurrency: 8,
            round_burst: 2,
            round_refill: Duration::from_millis(500),
            sweep_refill: Duration::from_secs(2),
            sweep_cost_per_service: Duration::from_millis(1),
            sweep_cost_per_instance: Duration::from_micros(50),
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

    /// Like [`CatalogWatcher::spawn`], and also publishes the catalog's service list (names
    /// and tags, validated) as the services feed sees it: the same long-poll, no extra request.
    /// The list receiver starts empty and changes only when the list does.
    pub fn spawn_with_service_list(
        client: ConsulClient,
        interest: watch::Receiver<Interest>,
        options: CatalogWatcherOptions,
        cancel: CancellationToken,
    ) -> (
        watch::Receiver<Arc<CatalogSnapshot>>,
        watch::Receiver<Arc<ServiceTags>>,
    ) {
        Self::spawn_inner(
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
        Self::spawn_inner(transport, resolver, interest, options, cancel).0
    }

    fn spawn_inner(
        transport: Arc<dyn Transport>,
        resolver: Arc<dyn Resolver>,
        interest: watch::Receiver<Interest>,
        options: CatalogWatcherOptions,
        cancel: CancellationToken,
    ) -> (
        watch::Receiver<Arc<CatalogSnapshot>>,
        watch::Receiver<Arc<ServiceTags>>,
    ) {
        let (tx, rx) = watch::channel(Arc::new(CatalogSnapshot::new()));
        let (list_tx, list_rx) = watch::channel(Arc::new(ServiceTags::new()));
        let coordinator = Coordinator {
            transport,
            resolver,
            options,
            interest: Interest::All,
            services: Arc::new(BTreeMap::new()),
            checks: None,
            nodes: None,
            cache: BTreeMap::new(),
            dirty: BTreeSet::new(),
            retry: BTreeSet::new(),
            sweep: false,
            full: true,
            node_views: None,
            published: false,
            feed_indexes: [0; 3],
            tx,
            list_tx,
        };
        tokio::spawn(coordinator.run(interest, cancel));
        (rx, list_rx)
    }
}

/// One node as the last node sweep read it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct NodeView {
    /// `X-Consul-Index` of the read: equal on the next read means the list is unchanged.
    index: u64,
    instances: NodeInstances,
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
    /// Last body of the nodes feed (node name to address).
    nodes: Option<Arc<BTreeMap<String, String>>>,
    /// Last good read per service.
    cache: BTreeMap<ServiceName, Cached>,
    /// Services to re-read in the next round.
    dirty: BTreeSet<ServiceName>,
    /// Services whose last read failed, re-read when the backoff expires.
    retry: BTreeSet<ServiceName>,
    /// Re-read every interesting service (index compared) in the next round.
    sweep: bool,
    /// Re-read and re-resolve every interesting service, ignoring cached indexes.
    full: bool,
    /// Every node's instances as the last node sweep saw them (the baseline the next one is
    /// compared with); `None` until a node sweep succeeds and after one fails.
    node_views: Option<BTreeMap<String, NodeView>>,
    published: bool,
    /// Last index of the services, checks and nodes feeds, to notice one going backwards.
    feed_indexes: [u64; 3],
    tx: watch::Sender<Arc<CatalogSnapshot>>,
    /// The service list as the services feed last answered it, for custom templates.
    list_tx: watch::Sender<Arc<ServiceTags>>,
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
        let mut nodes_rx = spawn_watch(
            self.transport.clone(),
            BlockingQuery::new(nodes_request(), wait, decode_nodes),
            self.options.feeds,
            feeds_cancel.clone(),
        )
        .moves;

        // Every feed's first answer is the baseline for later diffs; they must be taken
        // before the first read so that no change falls between the two.
        tokio::select! {
            biased;
            _ = cancel.cancelled() => return,
            r = services_rx.wait_for(Option::is_some) => if r.is_err() { return },
        }
        tokio::select! {
            biased;
            _ = cancel.cancelled() => return,
            r = checks_rx.wait_for(Option::is_some) => if r.is_err() { return },
        }
        tokio::select! {
            biased;
            _ = cancel.cancelled() => return,
            r = nodes_rx.wait_for(Option::is_some) => if r.is_err() { return },
        }
        self.interest = interest_rx.borrow_and_update().clone();
        let mut interest_open = true;
        self.on_services(&mut services_rx);
        self.on_checks(&mut checks_rx);
        self.on_nodes(&mut nodes_rx);
        self.full = true;

        let mut rounds = TokenBucket::new(self.options.round_burst, self.options.round_refill);
        let mut sweeps = TokenBucket::new(self.options.round_burst, self.options.sweep_refill);
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
            if nodes_rx.has_changed().unwrap_or(false) {
                self.on_nodes(&mut nodes_rx);
            }
            if interest_open && interest_rx.has_changed().unwrap_or(false) {
                self.on_interest(&mut interest_rx);
            }
            if self.tx.is_closed() {
                return;
            }
            // Failed services are retried on their own schedule; they never hold back new work.
            if retry_at.is_some_and(|t| t <= Instant::now()) {
                retry_at = None;
                let retry = std::mem::take(&mut self.retry);
                self.dirty.extend(retry);
            }
            if self.has_work() {
                if self.full || self.sweep {
                    sweeps.set_refill_every(self.sweep_interval());
                    tokio::select! {
                        biased;
                        _ = cancel.cancelled() => return,
                        _ = sweeps.acquire() => {}
                    }
                }
                tokio::select! {
                    biased;
                    _ = cancel.cancelled() => return,
                    _ = rounds.acquire() => {}
                }
                tokio::select! {
                    biased;
                    _ = cancel.cancelled() => return,
                    _ = self.round() => {}
                }
                if self.retry.is_empty() {
                    backoff = self.options.feeds.backoff();
                    retry_at = None;
                } else if retry_at.is_none() {
                    let delay = backoff.next().unwrap_or(self.options.feeds.backoff_max);
                    retry_at = Some(Instant::now() + delay);
                }
                continue;
            }
            let retry_sleep = retry_at;
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
                r = nodes_rx.changed() => {
                    if r.is_err() { return }
                    self.on_nodes(&mut nodes_rx);
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
                _ = sleep_until_opt(retry_sleep), if retry_sleep.is_some() => {}
            }
        }
    }

    /// Node sweeps are paced by the instances they list; per-service sweeps (no node
    /// baseline yet, or node reads failing) by the interesting services.
    fn sweep_interval(&self) -> Duration {
        let interesting = self.interesting();
        match &self.node_views {
            Some(views) if self.node_sweep_pays(&interesting) => self
                .options
                .node_sweep_interval(views.values().map(|v| v.instances.len()).sum()),
            _ => self.options.sweep_interval(interesting.len()),
        }
    }

    /// Whether a node sweep is expected to cost Consul less than a per-service sweep, counting
    /// a request as [`REQUEST_COST`] instance entries: `nodes × REQUEST_COST + all instances`
    /// against `services × REQUEST_COST + their instances`. A proxy routing a few services of
    /// a large catalog keeps per-service sweeps; one routing most of it sweeps the nodes.
    /// Without a node baseline the instance count is unknown and the nodes are tried.
    fn node_sweep_pays(&self, interesting: &BTreeSet<ServiceName>) -> bool {
        let Some(views) = &self.node_views else {
            return true;
        };
        let nodes = self.nodes.as_ref().map_or(views.len(), |n| n.len());
        let all: usize = views.values().map(|v| v.instances.len()).sum();
        let routed: usize = interesting
            .iter()
            .filter_map(|name| self.cache.get(name))
            .map(|c| c.instances.len())
            .sum();
        nodes.saturating_mul(REQUEST_COST).saturating_add(all)
            <= interesting
                .len()
                .saturating_mul(REQUEST_COST)
                .saturating_add(routed)
    }

    fn has_work(&self) -> bool {
        self.full || self.sweep || !self.dirty.is_empty()
    }

    fn interesting(&self) -> BTreeSet<ServiceName> {
        self.services
            .iter()
            .filter(|(n, tags)| self.interest.includes(n, tags))
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// A move of the services feed: narrow by the body diff, then sweep, because an index move
    /// may hide instance changes that leave the body as it was (silent changes).
    fn on_services(&mut self, rx: &mut Feed<ServiceTags>) {
        let Some(event) = rx.borrow_and_update().clone() else {
            return;
        };
        self.note_feed_index(0, event.index);
        let old = std::mem::replace(&mut self.services, event.payload);
        for (name, tags) in self.services.iter() {
            if old.get(name) != Some(tags) {
                self.dirty.insert(name.clone());
            }
        }
        let list = &self.services;
        self.list_tx.send_if_modified(|current| {
            let modified = **current != **list;
            if modified {
                *current = Arc::clone(list);
            }
            modified
        });
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
        self.note_feed_index(1, event.index);
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
        self.mark_nodes(nodes);
    }

    /// A move of the nodes feed: a node whose address changed (or that appeared or vanished)
    /// affects the services with instances on it, which are re-read.
    fn on_nodes(&mut self, rx: &mut Feed<BTreeMap<String, String>>) {
        let Some(event) = rx.borrow_and_update().clone() else {
            return;
        };
        self.note_feed_index(2, event.index);
        let old = self.nodes.replace(event.payload.clone());
        let Some(old) = old else {
            return;
        };
        let changed: BTreeSet<&String> = old
            .iter()
            .filter(|(node, addr)| event.payload.get(*node) != Some(*addr))
            .map(|(node, _)| node)
            .chain(event.payload.keys().filter(|n| !old.contains_key(*n)))
            .collect();
        // A node that appeared may bring instances the services feed announced before the
        // node was listed; one that vanished takes its instances with it: the node sweep
        // finds which services they belong to.
        if old.len() != event.payload.len() || old.keys().any(|n| !event.payload.contains_key(n)) {
            self.sweep = true;
        }
        self.mark_nodes(changed.into_iter().cloned());
    }

    /// A feed index that goes backwards means the server's state started over (restored
    /// snapshot, lost data): per-service indexes may repeat for different data, so the cached
    /// ones can no longer prove "no change" and everything is re-read.
    fn note_feed_index(&mut self, feed: usize, index: u64) {
        let last = std::mem::replace(&mut self.feed_indexes[feed], index);
        if index < last {
            tracing::info!(
                old = last,
                new = index,
                "a catalog feed index went backwards, re-reading every service"
            );
            self.full = true;
        }
    }

    fn mark_nodes(&mut self, nodes: impl IntoIterator<Item = String>) {
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

    /// Performs one read round and publishes. Services whose read failed keep their last good
    /// data and go to the retry set.
    async fn round(&mut self) {
        let interesting = self.interesting();
        let force = self.full;
        let use_nodes = self.node_sweep_pays(&interesting);
        let targets: Vec<ServiceName> = if self.full {
            // The node baseline is read before the services, so a change between the two
            // reads shows in the next node sweep's diff rather than falling between them.
            if use_nodes {
                self.node_views = self.read_node_views(false).await;
            }
            interesting.iter().cloned().collect()
        } else if self.sweep && use_nodes {
            match self.node_sweep(&interesting).await {
                Some(changed) => {
                    self.dirty.extend(changed);
                    self.dirty.intersection(&interesting).cloned().collect()
                }
                None => interesting.iter().cloned().collect(),
            }
        } else if self.sweep {
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

        for (name, result) in results {
            match result {
                Ok(Some(cached)) => {
                    self.retry.remove(&name);
                    self.cache.insert(name, cached);
                }
                Ok(None) => {
                    self.retry.remove(&name);
                }
                Err(error) => {
                    tracing::warn!(service = %name, %error, "cannot read service, keeping its last known instances");
                    // Keep the instances, forget the index: the retry must decode again.
                    if let Some(cached) = self.cache.get_mut(&name) {
                        cached.index = 0;
                    }
                    self.retry.insert(name);
                }
            }
        }
        self.cache.retain(|name, _| interesting.contains(name));
        self.retry.retain(|name| interesting.contains(name));
        self.publish(&interesting);
    }

    /// Reads every node the nodes feed lists (`/v1/catalog/node/<node>`, at most
    /// `concurrency` at once). With `reuse`, a node whose index equals the baseline's keeps
    /// the baseline's list undecoded. `None` if any read fails or there is no node list.
    async fn read_node_views(&self, reuse: bool) -> Option<BTreeMap<String, NodeView>> {
        let nodes = self.nodes.as_ref()?;
        let transport = &*self.transport;
        let baseline = if reuse {
            self.node_views.as_ref()
        } else {
            None
        };
        let results: Vec<(String, Result<NodeView, ConsulError>)> =
            futures_util::stream::iter(nodes.keys().cloned())
                .map(|node| async move {
                    let known = baseline.and_then(|b| b.get(&node));
                    let r = read_node(transport, &node, known).await;
                    (node, r)
                })
                .buffer_unordered(self.options.concurrency.max(1))
                .collect()
                .await;
        let mut views = BTreeMap::new();
        for (node, result) in results {
            match result {
                Ok(view) => {
                    views.insert(node, view);
                }
                Err(error) => {
                    tracing::info!(%node, %error, "cannot read the services of a node, sweeping every service instead");
                    return None;
                }
            }
        }
        Some(views)
    }

    /// A sweep through the nodes: reads every node's instance list and compares it with the
    /// baseline. Returns the services whose instances appeared, vanished or changed, plus the
    /// interesting services no node lists (their instances may sit on nodes this token cannot
    /// read, so only a read of the service can tell). `None` asks for a per-service sweep: a
    /// node read failed, or there was no baseline yet (the lists read now become it).
    async fn node_sweep(
        &mut self,
        interesting: &BTreeSet<ServiceName>,
    ) -> Option<BTreeSet<ServiceName>> {
        let views = self.read_node_views(true).await;
        let old = std::mem::replace(&mut self.node_views, views);
        let (Some(old), Some(new)) = (old, self.node_views.as_ref()) else {
            return None;
        };
        let mut names: BTreeSet<&str> = BTreeSet::new();
        let empty = NodeInstances::new();
        let nodes: BTreeSet<&String> = old.keys().chain(new.keys()).collect();
        for node in nodes {
            let before = old.get(node).map_or(&empty, |v| &v.instances);
            let after = new.get(node).map_or(&empty, |v| &v.instances);
            if before != after {
                moved_services(before, after, &mut names);
            }
        }
        let mut changed: BTreeSet<ServiceName> = names
            .into_iter()
            .filter_map(|n| ServiceName::new(n).ok())
            .collect();
        let listed: BTreeSet<&str> = new
            .values()
            .flat_map(|v| v.instances.values().map(|(name, _)| name.as_str()))
            .collect();
        changed.extend(
            interesting
                .iter()
                .filter(|name| !listed.contains(name.as_str()))
                .cloned(),
        );
        tracing::debug!(nodes = new.len(), changed = changed.len(), "node sweep");
        Some(changed)
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

/// Adds the service names of the instances that differ between two lists of one node
/// (appeared, vanished, or another name or `ModifyIndex`): one merge pass over both, which
/// are sorted by instance ID.
fn moved_services<'a>(
    before: &'a NodeInstances,
    after: &'a NodeInstances,
    out: &mut BTreeSet<&'a str>,
) {
    let mut b = before.iter().peekable();
    let mut a = after.iter().peekable();
    loop {
        match (b.peek(), a.peek()) {
            (None, None) => return,
            (Some((_, old)), None) => {
                out.insert(old.0.as_str());
                b.next();
            }
            (None, Some((_, new))) => {
                out.insert(new.0.as_str());
                a.next();
            }
            (Some((old_id, old)), Some((new_id, new))) => match old_id.cmp(new_id) {
                std::cmp::Ordering::Less => {
                    out.insert(old.0.as_str());
                    b.next();
                }
                std::cmp::Ordering::Greater => {
                    out.insert(new.0.as_str());
                    a.next();
                }
                std::cmp::Ordering::Equal => {
                    if old != new {
                        out.insert(old.0.as_str());
                        out.insert(new.0.as_str());
                    }
                    b.next();
                    a.next();
                }
            },
        }
    }
}

/// Reads one node's instance list; a `known` view with the same index is kept undecoded. An
/// unknown node (`null`) has no instances.
async fn read_node(
    transport: &dyn Transport,
    node: &str,
    known: Option<&NodeView>,
) -> Result<NodeView, ConsulError> {
    let resp = transport.get(node_request(node)).await?;
    let index = resp.index.unwrap_or(0).max(1);
    if let Some(known) = known.filter(|k| k.index == index && resp.status == 200) {
        return Ok(known.clone());
    }
    Ok(NodeView {
        index,
        instances: decode_node(&resp)?.unwrap_or_default(),
    })
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

#[cfg(test)]
mod tests {
    use super::super::fake::{FakeConsul, FakeInstance, FakeResolver};
    use super::*;

    fn svc(s: &str) -> ServiceName {
        ServiceName::new(s).unwrap()
    }

    fn opts() -> CatalogWatcherOptions {
        CatalogWatcherOptions {
            resync_interval: Duration::from_secs(3600),
            ..CatalogWatcherOptions::default()
        }
    }

    struct Harness {
        resolver: Arc<FakeResolver>,
        rx: watch::Receiver<Arc<CatalogSnapshot>>,
        interest: watch::Sender<Interest>,
        cancel: CancellationToken,
    }

    impl Drop for Harness {
        fn drop(&mut self) {
            self.cancel.cancel();
        }
    }

    fn start(
        fake: &Arc<FakeConsul>,
        interest: Interest,
        options: CatalogWatcherOptions,
    ) -> Harness {
        let resolver = Arc::new(FakeResolver::default());
        let (interest_tx, interest_rx) = watch::channel(interest);
        let cancel = CancellationToken::new();
        let rx = CatalogWatcher::spawn_with(
            fake.clone(),
            resolver.clone(),
            interest_rx,
            options,
            cancel.clone(),
        );
        Harness {
            resolver,
            rx,
            interest: interest_tx,
            cancel,
        }
    }

    impl Harness {
        /// Waits (at most 20 s of tokio time, far below the resync interval) for `pred`.
        async fn until(&mut self, pred: impl Fn(&CatalogSnapshot) -> bool) -> Arc<CatalogSnapshot> {
            self.until_within(Duration::from_secs(20), pred).await
        }

        async fn until_within(
            &mut self,
            limit: Duration,
            pred: impl Fn(&CatalogSnapshot) -> bool,
        ) -> Arc<CatalogSnapshot> {
            let r = tokio::time::timeout(limit, self.rx.wait_for(|s| pred(s)))
                .await
                .map(|r| r.unwrap().clone());
            match r {
                Ok(r) => r,
                Err(_) => panic!(
                    "condition not reached in time; last snapshot: {:?}",
                    self.rx.borrow().services.keys().collect::<Vec<_>>()
                ),
            }
        }
    }

    fn ids(s: &CatalogSnapshot, name: &str) -> Vec<String> {
        s.instances(&svc(name))
            .unwrap_or_default()
            .iter()
            .map(|i| i.id.to_string())
            .collect()
    }

    async fn settle() {
        tokio::time::sleep(Duration::from_secs(3)).await;
    }

    #[tokio::test(start_paused = true)]
    async fn checkless_instances_of_a_known_service_are_seen() {
        let fake = FakeConsul::new();
        fake.register(FakeInstance::new("web", "web-1", "n1", 80).tags(&["flow-proxy.path=/web"]));
        fake.register(
            FakeInstance::new("api", "api-1", "n1", 81).check("service:api-1", "passing"),
        );
        let mut h = start(&fake, Interest::All, opts());
        let s = h.until(|s| s.services.len() == 2).await;
        assert_eq!(ids(&s, "web"), ["web-1"]);
        assert_eq!(ids(&s, "api"), ["api-1"]);
        settle().await;

        // The hard case: same tags, no checks. Neither feed body changes; only indexes move.
        let before = fake.feed_bodies();
        fake.register(FakeInstance::new("web", "web-2", "n2", 80).tags(&["flow-proxy.path=/web"]));
        assert_eq!(fake.feed_bodies(), before);
        let s = h.until(|s| ids(s, "web").len() == 2).await;
        assert_eq!(ids(&s, "web"), ["web-1", "web-2"]);

        // Deregistering one of several check-less instances is just as silent.
        settle().await;
        fake.deregister("web", "web-1");
        assert_eq!(fake.feed_bodies(), before);
        let s = h.until(|s| ids(s, "web") == ["web-2"]).await;
        assert_eq!(ids(&s, "api"), ["api-1"]);
        drop(h);
    }

    #[tokio::test(start_paused = true)]
    async fn a_tagged_interest_follows_the_services_carrying_the_prefix() {
        let fake = FakeConsul::new();
        fake.register(FakeInstance::new("web", "web-1", "n1", 80).tags(&["flow-proxy.path=/web"]));
        fake.register(FakeInstance::new("near", "near-1", "n1", 81).tags(&["flow-proxyx.path=/n"]));
        fake.register(FakeInstance::new("api", "api-1", "n1", 82));
        fake.register(FakeInstance::new("other", "other-1", "n1", 83));
        let interest = Interest::Tagged {
            services: [svc("api")].into_iter().collect(),
            prefix: "flow-proxy".into(),
        };
        assert_eq!(interest.named(), [svc("api")].into_iter().collect());
        let mut h = start(&fake, interest, opts());
        let s = h.until(|s| !s.services.is_empty()).await;
        let names: Vec<&str> = s.services.keys().map(|n| n.as_str()).collect();
        assert_eq!(names, ["api", "web"]);

        // A service tagged later is followed with no change of interest.
        settle().await;
        fake.register(FakeInstance::new("late", "late-1", "n2", 84).tags(&["flow-proxy.weight=2"]));
        let s = h.until(|s| s.instances(&svc("late")).is_some()).await;
        let names: Vec<&str> = s.services.keys().map(|n| n.as_str()).collect();
        assert_eq!(names, ["api", "late", "web"]);
        drop(h);
    }

    #[tokio::test(start_paused = true)]
    async fn a_check_change_rereads_only_its_service() {
        let fake = FakeConsul::new();
        for (name, node) in [
            ("a", "n1"),
            ("b", "n1"),
            ("c", "n2"),
            ("d", "n1"),
            ("e", "n1"),
        ] {
            let id = format!("{name}-1");
            fake.register(
                FakeInstance::new(name, &id, node, 80).check(&format!("service:{id}"), "passing"),
            );
        }
        let mut h = start(&fake, Interest::All, opts());
        h.until(|s| s.services.len() == 5).await;
        settle().await;

        fake.clear_log();
        fake.set_check("a", "a-1", "service:a-1", "critical");
        h.until(|s| {
            s.instances(&svc("a"))
                .is_some_and(|i| i[0].health == crate::domain::Health::Critical)
        })
        .await;
        settle().await;
        assert_eq!(fake.service_reads("a"), 1);
        for other in ["b", "c", "d", "e"] {
            assert_eq!(fake.service_reads(other), 0, "{other} was re-read");
        }

        // A node-level check names no service: the services on that node are re-read.
        fake.clear_log();
        fake.set_node_check("n2", "serfHealth", "critical");
        h.until(|s| {
            s.instances(&svc("c"))
                .is_some_and(|i| i[0].health == crate::domain::Health::Critical)
        })
        .await;
        settle().await;
        assert_eq!(fake.service_reads("c"), 1);
        for other in ["a", "b", "d", "e"] {
            assert_eq!(fake.service_reads(other), 0, "{other} was re-read");
        }

        // An unrelated write (e.g. KV) costs nothing.
        fake.clear_log();
        fake.unrelated_write();
        settle().await;
        assert!(
            fake.log()
                .iter()
                .all(|p| !p.starts_with("/v1/health/service/"))
        );
        drop(h);
    }

    #[tokio::test(start_paused = true)]
    async fn a_node_address_change_rereads_the_services_on_that_node() {
        let fake = FakeConsul::new();
        fake.register(FakeInstance::new("web", "w1", "n1", 80));
        fake.register(FakeInstance::new("api", "a1", "n2", 80));
        let mut h = start(&fake, Interest::All, opts());
        h.until(|s| s.services.len() == 2).await;
        settle().await;
        fake.clear_log();
        let before = fake.feed_bodies();
        fake.set_node_address("n1", "10.9.9.9");
        assert_eq!(fake.feed_bodies(), before);
        let s = h
            .until(|s| s.instances(&svc("web")).unwrap()[0].address.to_string() == "10.9.9.9")
            .await;
        assert_eq!(ids(&s, "api"), ["a1"]);
        settle().await;
        assert_eq!(
            (fake.service_reads("web"), fake.service_reads("api")),
            (1, 0)
        );
        drop(h);
    }

    #[tokio::test(start_paused = true)]
    async fn failed_or_undecodable_reads_keep_the_last_good_data() {
        let fake = FakeConsul::new();
        fake.register(FakeInstance::new("web", "web-1", "n1", 80));
        fake.register(FakeInstance::new("web", "web-2", "n1", 81));
        let mut h = start(&fake, Interest::All, opts());
        h.until(|s| ids(s, "web").len() == 2).await;

        fake.set_failing("web", true);
        fake.deregister("web", "web-2");
        settle().await;
        assert_eq!(ids(&h.rx.borrow(), "web"), ["web-1", "web-2"]);

        fake.set_failing("web", false);
        fake.set_garbage("web", true);
        settle().await;
        assert_eq!(ids(&h.rx.borrow(), "web"), ["web-1", "web-2"]);

        // Retried with backoff, without any new event.
        fake.set_garbage("web", false);
        h.until(|s| ids(s, "web") == ["web-1"]).await;
        drop(h);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failing_service_does_not_hold_back_others() {
        let fake = FakeConsul::new();
        fake.register(FakeInstance::new("web", "w1", "n1", 80));
        fake.register(FakeInstance::new("api", "a1", "n1", 81).check("service:a1", "passing"));
        let mut h = start(&fake, Interest::All, opts());
        h.until(|s| s.services.len() == 2).await;
        fake.set_failing("web", true);
        fake.register(FakeInstance::new("web", "w2", "n1", 82));
        // Let the failures back off to their longest delays.
        tokio::time::sleep(Duration::from_secs(20)).await;
        assert_eq!(ids(&h.rx.borrow(), "web"), ["w1"]);
        fake.set_check("api", "a1", "service:a1", "critical");
        h.until_within(Duration::from_millis(600), |s| {
            s.instances(&svc("api"))
                .is_some_and(|i| i[0].health == crate::domain::Health::Critical)
        })
        .await;
        fake.set_failing("web", false);
        h.until(|s| ids(s, "web") == ["w1", "w2"]).await;
        drop(h);
    }

    #[tokio::test(start_paused = true)]
    async fn invalid_and_unresolvable_instances_are_dropped_alone() {
        let fake = FakeConsul::new();
        fake.register(FakeInstance::new("web", "ok", "n1", 80).address("10.1.1.1"));
        fake.register(FakeInstance::new("web", "named", "n1", 81).address("good.example"));
        fake.register(FakeInstance::new("web", "nowhere", "n1", 82).address("nowhere.example"));
        fake.register(FakeInstance::new("web", "port0", "n1", 0));
        fake.register(FakeInstance::new("web", "bigport", "n1", 70000));
        fake.register(FakeInstance::new("web", "bad id", "n1", 83));
        fake.register(FakeInstance::new("web", "badtag", "n1", 84).tags(&["a b"]));
        fake.register(FakeInstance::new("web", "badaddr", "n1", 85).address("a;b"));
        fake.register(FakeInstance::new("web", "badnode", "n 1", 86));
        fake.register(FakeInstance::new("web", "anyaddr", "n1", 88).address("0.0.0.0"));
        fake.register(FakeInstance::new("bad name", "x", "n1", 87));
        let mut h = start(&fake, Interest::All, opts());
        h.resolver.set("good.example", "10.2.2.2");
        let s = h.until(|s| !s.services.is_empty()).await;
        assert_eq!(s.services.len(), 1);
        let web = s.instances(&svc("web")).unwrap();
        let got: Vec<(String, String)> = web
            .iter()
            .map(|i| (i.id.to_string(), i.address.to_string()))
            .collect();
        assert_eq!(
            got,
            [
                ("named".to_owned(), "10.2.2.2".to_owned()),
                ("ok".to_owned(), "10.1.1.1".to_owned())
            ]
        );
        drop(h);
    }

    #[tokio::test(start_paused = true)]
    async fn open_long_polls_stay_constant_as_services_grow() {
        let fake = FakeConsul::new();
        for n in 0..3 {
            fake.register(FakeInstance::new(
                &format!("s{n}"),
                &format!("i{n}"),
                "n1",
                80,
            ));
        }
        let mut h = start(&fake, Interest::All, opts());
        h.until(|s| s.services.len() == 3).await;
        settle().await;
        assert_eq!(fake.in_flight(), 3);
        for n in 3..250 {
            fake.register(FakeInstance::new(
                &format!("s{n}"),
                &format!("i{n}"),
                "n1",
                80,
            ));
        }
        h.until(|s| s.services.len() == 250).await;
        settle().await;
        assert_eq!(fake.in_flight(), 3);
        assert_eq!(fake.max_in_flight(), 3);
        drop(h);
    }

    #[tokio::test(start_paused = true)]
    async fn churn_is_coalesced_into_few_rounds() {
        let fake = FakeConsul::new();
        fake.register(FakeInstance::new("web", "w0", "n1", 80));
        fake.register(FakeInstance::new("api", "a0", "n1", 80));
        let mut h = start(&fake, Interest::All, opts());
        h.until(|s| s.services.len() == 2).await;
        settle().await;
        fake.clear_log();
        // 100 check-less registrations, 10 ms apart: each one is a silent change.
        for n in 1..=100 {
            fake.register(FakeInstance::new("web", &format!("w{n}"), "n1", 80));
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        h.until(|s| ids(s, "web").len() == 101).await;
        settle().await;
        let reads = fake.service_reads("api");
        // 100 silent changes in one second with two services: a burst of 2 sweeps, then at
        // most one per round interval (500 ms) until the last change is read, not one each.
        assert!(reads <= 6, "api was re-read {reads} times");
        drop(h);
    }

    #[tokio::test(start_paused = true)]
    async fn silent_registrations_in_a_small_catalog_are_not_held_by_the_sweep_limit() {
        let fake = FakeConsul::new();
        fake.register(FakeInstance::new("web", "w0", "n1", 80));
        fake.register(FakeInstance::new("api", "a0", "n1", 80));
        let mut h = start(&fake, Interest::All, opts());
        h.until(|s| s.services.len() == 2).await;
        settle().await;
        // Check-less registrations 600 ms apart: each is a silent change that only a sweep
        // finds. With two services a sweep may run as often as a round (every 500 ms), so
        // none waits for the 2 s that thousands of services would need between sweeps.
        for n in 1..=6usize {
            fake.register(FakeInstance::new("web", &format!("w{n}"), "n1", 80));
            let registered = tokio::time::Instant::now();
            h.until(|s| ids(s, "web").len() == n + 1).await;
            let waited = registered.elapsed();
            assert!(
                waited < Duration::from_millis(400),
                "registration {n} was seen after {waited:?}"
            );
            tokio::time::sleep(Duration::from_millis(600)).await;
        }
        drop(h);
    }

    /// Three services with two check-less instances each, on two nodes, watched and settled.
    async fn three_services(fake: &Arc<FakeConsul>) -> Harness {
        for (name, port) in [("web", 80), ("api", 81), ("db", 82)] {
            fake.register(FakeInstance::new(name, &format!("{name}-1"), "n1", port));
            fake.register(FakeInstance::new(name, &format!("{name}-2"), "n2", port));
        }
        let mut h = start(fake, Interest::All, opts());
        h.until(|s| s.services.len() == 3).await;
        settle().await;
        h
    }

    fn assert_only_read(fake: &FakeConsul, name: &str) {
        assert_eq!(
            fake.service_reads(name),
            1,
            "{name} was not read exactly once"
        );
        for other in ["web", "api", "db"].into_iter().filter(|o| *o != name) {
            assert_eq!(fake.service_reads(other), 0, "{other} was re-read");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_change_rereads_only_the_service_whose_instances_moved() {
        let fake = FakeConsul::new();
        let mut h = three_services(&fake).await;

        fake.clear_log();
        let before = fake.feed_bodies();
        fake.register(FakeInstance::new("api", "api-3", "n1", 83));
        assert_eq!(
            fake.feed_bodies(),
            before,
            "the registration must be silent"
        );
        h.until(|s| ids(s, "api").len() == 3).await;
        settle().await;
        assert!(fake.node_reads() >= 2, "the sweep went through the nodes");
        assert_only_read(&fake, "api");

        fake.clear_log();
        fake.deregister("db", "db-1");
        assert_eq!(
            fake.feed_bodies(),
            before,
            "the deregistration must be silent"
        );
        let s = h.until(|s| ids(s, "db") == ["db-2"]).await;
        assert_eq!(ids(&s, "api"), ["api-1", "api-3", "api-2"]);
        settle().await;
        assert_only_read(&fake, "db");
        drop(h);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failing_node_read_falls_back_to_sweeping_every_service() {
        let fake = FakeConsul::new();
        let mut h = three_services(&fake).await;

        for status in [403, 404, 500] {
            fake.set_node_status(Some(status));
            fake.clear_log();
            let n = ids(&h.rx.borrow(), "web").len();
            fake.register(FakeInstance::new(
                "web",
                &format!("web-x{status}"),
                "n1",
                90,
            ));
            h.until(|s| ids(s, "web").len() == n + 1).await;
            settle().await;
            for name in ["web", "api", "db"] {
                assert!(
                    fake.service_reads(name) >= 1,
                    "{status}: {name} was not swept"
                );
            }
        }

        // Node reads work again: the next sweep takes a new baseline (and still sweeps every
        // service); the one after it is narrowed again.
        fake.set_node_status(None);
        fake.clear_log();
        fake.register(FakeInstance::new("db", "db-3", "n2", 91));
        h.until(|s| ids(s, "db").len() == 3).await;
        settle().await;
        assert!(fake.service_reads("web") >= 1 && fake.service_reads("api") >= 1);
        fake.clear_log();
        fake.register(FakeInstance::new("db", "db-4", "n2", 92));
        h.until(|s| ids(s, "db").len() == 4).await;
        settle().await;
        assert_only_read(&fake, "db");
        drop(h);
    }

    #[tokio::test(start_paused = true)]
    async fn the_node_baseline_is_read_before_the_services() {
        let fake = FakeConsul::new();
        fake.register(FakeInstance::new("web", "web-1", "n1", 80));
        fake.register(FakeInstance::new("api", "api-1", "n2", 81));
        let mut h = start(&fake, Interest::All, opts());
        h.until(|s| s.services.len() == 2).await;
        let log = fake.log();
        let first_node = log.iter().position(|p| p.starts_with("/v1/catalog/node/"));
        let first_service = log
            .iter()
            .position(|p| p.starts_with("/v1/health/service/"));
        assert!(
            first_node.is_some() && first_node < first_service,
            "node baseline after the service reads: {log:?}"
        );
        settle().await;

        // The first silent change after the start is already narrowed by that baseline.
        fake.clear_log();
        fake.register(FakeInstance::new("web", "web-2", "n2", 82));
        h.until(|s| ids(s, "web").len() == 2).await;
        settle().await;
        assert_eq!(
            (fake.service_reads("web"), fake.service_reads("api")),
            (1, 0)
        );
        drop(h);
    }

    #[tokio::test(start_paused = true)]
    async fn without_a_baseline_the_first_sweep_reads_every_service_and_takes_one() {
        let fake = FakeConsul::new();
        fake.set_node_status(Some(403));
        fake.register(FakeInstance::new("web", "web-1", "n1", 80));
        fake.register(FakeInstance::new("api", "api-1", "n2", 81));
        let mut h = start(&fake, Interest::All, opts());
        h.until(|s| s.services.len() == 2).await;
        settle().await;
        fake.set_node_status(None);

        fake.clear_log();
        fake.register(FakeInstance::new("web", "web-2", "n1", 82));
        h.until(|s| ids(s, "web").len() == 2).await;
        settle().await;
        assert_eq!(
            fake.service_reads("api"),
            1,
            "no baseline: every service is swept"
        );
        assert!(fake.node_reads() >= 2, "the baseline is taken");

        fake.clear_log();
        fake.register(FakeInstance::new("web", "web-3", "n1", 83));
        h.until(|s| ids(s, "web").len() == 3).await;
        settle().await;
        assert_eq!(
            (fake.service_reads("web"), fake.service_reads("api")),
            (1, 0)
        );
        drop(h);
    }

    #[tokio::test(start_paused = true)]
    async fn a_node_appearing_or_vanishing_rereads_only_the_services_on_it() {
        let fake = FakeConsul::new();
        let mut h = three_services(&fake).await;

        fake.clear_log();
        fake.register(FakeInstance::new("web", "web-3", "n3", 80).address("10.3.3.3"));
        let s = h.until(|s| ids(s, "web").len() == 3).await;
        assert!(
            s.instances(&svc("web"))
                .unwrap()
                .iter()
                .any(|i| i.node.as_str() == "n3")
        );
        settle().await;
        assert!(fake.log().iter().any(|p| p == "/v1/catalog/node/n3"));
        assert_only_read(&fake, "web");

        // A node whose instance list reads `null` (gone between the node list and the read)
        // has no instances.
        fake.clear_log();
        fake.deregister("web", "web-3");
        h.until(|s| ids(s, "web").len() == 2).await;
        settle().await;
        assert_only_read(&fake, "web");

        // A node leaving the catalog takes its instances with it.
        fake.register(FakeInstance::new("api", "api-3", "n3", 81));
        h.until(|s| ids(s, "api").len() == 3).await;
        settle().await;
        fake.clear_log();
        fake.deregister_node("n3");
        h.until(|s| ids(s, "api").len() == 2).await;
        settle().await;
        assert_only_read(&fake, "api");
        drop(h);
    }

    #[tokio::test(start_paused = true)]
    async fn a_few_routed_services_of_a_large_catalog_keep_per_service_sweeps() {
        let fake = FakeConsul::new();
        fake.register(FakeInstance::new("web", "web-1", "n1", 80));
        for n in 0..300 {
            fake.register(FakeInstance::new("other", &format!("o{n}"), "n1", 81));
        }
        let only_web = Interest::Services([svc("web")].into());
        let mut h = start(&fake, only_web, opts());
        h.until(|s| ids(s, "web").len() == 1).await;
        settle().await;

        // One node listing 301 instances weighs more than reading the one routed service.
        fake.clear_log();
        fake.register(FakeInstance::new("web", "web-2", "n1", 82));
        h.until(|s| ids(s, "web").len() == 2).await;
        settle().await;
        assert_eq!(fake.node_reads(), 0);
        assert_eq!(fake.service_reads("web"), 1);
        assert_eq!(fake.service_reads("other"), 0);
        drop(h);
    }

    #[test]
    fn moved_services_are_the_names_of_instances_that_differ() {
        let list = |items: &[(&str, &str, u64)]| -> NodeInstances {
            items
                .iter()
                .map(|(id, name, idx)| ((*id).to_owned(), ((*name).to_owned(), *idx)))
                .collect()
        };
        let before = list(&[
            ("a1", "a", 5),
            ("b1", "b", 6),
            ("c1", "c", 7),
            ("d1", "d", 8),
        ]);
        let after = list(&[
            ("a1", "a", 5),
            ("b1", "b", 9),
            ("c1", "e", 7),
            ("f1", "f", 10),
        ]);
        let mut out = BTreeSet::new();
        moved_services(&before, &after, &mut out);
        assert_eq!(
            out.into_iter().collect::<Vec<_>>(),
            ["b", "c", "d", "e", "f"]
        );
        let mut out = BTreeSet::new();
        moved_services(&before, &before, &mut out);
        assert!(out.is_empty());
        let none = NodeInstances::new();
        let mut out = BTreeSet::new();
        moved_services(&none, &before, &mut out);
        assert_eq!(out.len(), 4);
    }

    #[test]
    fn the_node_sweep_interval_grows_with_the_instances_between_its_bounds() {
        let o = CatalogWatcherOptions::default();
        assert_eq!(o.node_sweep_interval(0), o.round_refill);
        assert_eq!(o.node_sweep_interval(10_000), o.round_refill);
        assert_eq!(o.node_sweep_interval(20_000), Duration::from_secs(1));
        assert_eq!(o.node_sweep_interval(40_000), o.sweep_refill);
        assert_eq!(o.node_sweep_interval(usize::MAX), o.sweep_refill);
    }

    #[test]
    fn the_sweep_interval_grows_with_the_services_between_its_bounds() {
        let o = CatalogWatcherOptions::default();
        assert_eq!(o.sweep_interval(0), o.round_refill);
        assert_eq!(o.sweep_interval(10), o.round_refill);
        assert_eq!(o.sweep_interval(1000), Duration::from_secs(1));
        assert_eq!(o.sweep_interval(2000), o.sweep_refill);
        assert_eq!(o.sweep_interval(usize::MAX), o.sweep_refill);
    }

    #[tokio::test(start_paused = true)]
    async fn interest_limits_and_extends_what_is_read() {
        let fake = FakeConsul::new();
        fake.register(FakeInstance::new("a", "a1", "n1", 80));
        fake.register(FakeInstance::new("b", "b1", "n1", 80));
        fake.register(FakeInstance::new("consul", "consul", "n1", 8300));
        let only_a = Interest::Services([svc("a")].into());
        let mut h = start(&fake, only_a, opts());
        let s = h.until(|s| !s.services.is_empty()).await;
        assert_eq!(
            s.services.keys().map(|k| k.as_str()).collect::<Vec<_>>(),
            ["a"]
        );
        settle().await;
        assert_eq!(fake.service_reads("b"), 0);

        h.interest
            .send_replace(Interest::Services([svc("a"), svc("b")].into()));
        let s = h.until(|s| s.services.len() == 2).await;
        assert_eq!(ids(&s, "b"), ["b1"]);

        h.interest.send_replace(Interest::All);
        settle().await;
        assert_eq!(
            h.rx.borrow().services.len(),
            2,
            "`consul` is ignored under All"
        );
        assert_eq!(fake.service_reads("consul"), 0);
        drop(h);
    }

    #[tokio::test(start_paused = true)]
    async fn resync_resolves_host_names_again() {
        let fake = FakeConsul::new();
        fake.register(FakeInstance::new("web", "w", "n1", 80).address("h.example"));
        let options = CatalogWatcherOptions {
            resync_interval: Duration::from_secs(60),
            ..CatalogWatcherOptions::default()
        };
        let mut h = start(&fake, Interest::All, options);
        h.resolver.set("h.example", "10.0.0.5");
        let s = h.until(|s| !s.services.is_empty()).await;
        assert_eq!(
            s.instances(&svc("web")).unwrap()[0].address.to_string(),
            "10.0.0.5"
        );
        h.resolver.set("h.example", "10.0.0.6");
        tokio::time::sleep(Duration::from_secs(30)).await;
        assert_eq!(
            h.rx.borrow().instances(&svc("web")).unwrap()[0]
                .address
                .to_string(),
            "10.0.0.5"
        );
        let s = h
            .until_within(Duration::from_secs(40), |s| {
                s.instances(&svc("web")).unwrap()[0].address.to_string() == "10.0.0.6"
            })
            .await;
        assert_eq!(ids(&s, "web"), ["w"]);
        drop(h);
    }

    #[tokio::test(start_paused = true)]
    async fn first_snapshot_is_announced_even_when_empty() {
        let fake = FakeConsul::new();
        let mut h = start(&fake, Interest::All, opts());
        tokio::time::timeout(Duration::from_secs(5), h.rx.changed())
            .await
            .expect("no first snapshot")
            .unwrap();
        assert!(h.rx.borrow_and_update().services.is_empty());
        drop(h);
    }
}
