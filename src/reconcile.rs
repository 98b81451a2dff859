//! The reconciler: the one task that drives HAProxy towards intents × catalog.
//!
//! Owns: the latest intents and catalog snapshot, the live plan and configuration text, the
//! HAProxy [`Supervisor`], startup recovery (intents from KV, first catalog snapshot, render,
//! start or adopt HAProxy, then ready) and the published [`Status`] (readiness, applied
//! generation, outcome) that the API waits on. Custom templates are rendered through
//! [`CustomTemplates`] before each apply, and the services they read join the catalog
//! watcher's interest.
//!
//! One loop over a closed set of triggers: API requests, catalog changed, intents changed in
//! KV, the resync tick and shutdown. Level-triggered: every apply recomputes the plan from the
//! latest state and diffs it against the live one; it acts only when they differ. A trigger
//! that finds the reconciler idle is applied at once; triggers that arrive while an apply is in
//! flight, or in a burst from the watchers, are coalesced into the next apply, and a watcher
//! burst waits for a short quiet window capped by a maximum wait, so churn cannot starve it.
//! Only this task calls the supervisor, so two reloads are never in flight.
//!
//! Must not: talk to Consul KV for writes (the API persists intents before handing them over),
//! or build configuration text itself (`plan` and `render` do).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::consul::{ConsulClient, Interest, ServiceTags};
use crate::custom::{CustomTemplates, merge::shared_ports};
use crate::domain::{
    CatalogSnapshot, CustomTemplates as TemplateSpec, Instance, ServiceIntent, ServiceName,
};
use crate::haproxy::{EnsureOutcome, ReloadCheck, Supervisor};
use crate::intent_store::{IntentStore, Intents};
use crate::metrics::Metrics;
use crate::plan::{
    Change, PARKED_ADDR, PARKED_PORT, Plan, PlanSettings, RuntimeCommand, ServerAdminState,
    ServerState, SlotTable, diff, plan,
};
use crate::render::{CustomSnippets, RenderSettings, only_slot_lines_differ, render_with_custom};
use crate::tag_routes::{TagRouteSettings, TagRoutes};

/// Why an apply did not go live.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApplyError {
    /// The reconciler is not running (shutting down).
    #[error("the reconciler is not running")]
    Stopped,
    /// The recovered configuration is not live yet.
    #[error("flow-proxy is starting: the recovered configuration is not live yet")]
    NotReady,
    /// HAProxy refused the change, or it could not be applied; the last-known-good
    /// configuration stays live.
    #[error("{0}")]
    Failed(String),
}

/// Tuning of the reconciler.
#[derive(Debug, Clone)]
pub struct ReconcilerOptions {
    /// Shapes the plan.
    pub plan: PlanSettings,
    /// Everything the configuration needs besides the plan.
    pub render: RenderSettings,
    /// Period of the resync tick (re-apply, and check that HAProxy is alive).
    pub resync_interval: Duration,
    /// Quiet window for bursts from the watchers.
    pub quiet: Duration,
    /// Upper bound on how long a burst can delay its apply.
    pub max_wait: Duration,
    /// Stop HAProxy when the reconciler stops.
    pub stop_haproxy_on_exit: bool,
    /// The only directory custom templates are read from (`TEMPLATES_ROOT`).
    pub templates_root: std::path::PathBuf,
    /// Counters of reloads and runtime updates.
    pub metrics: Metrics,
    /// Routes and weights declared in Consul tags and meta.
    pub tags: TagRouteSettings,
    /// How often the HAProxy master's pid is checked; a dead master is restarted at once
    /// instead of at the next resync tick.
    pub liveness_interval: Duration,
}

impl Default for ReconcilerOptions {
    fn default() -> Self {
        ReconcilerOptions {
            plan: PlanSettings::default(),
            render: RenderSettings::default(),
            resync_interval: Duration::from_secs(30),
            quiet: Duration::from_millis(200),
            max_wait: Duration::from_secs(2),
            stop_haproxy_on_exit: false,
            templates_root: std::path::PathBuf::from("/consul_templates"),
            metrics: Metrics::new(),
            tags: TagRouteSettings::default(),
            liveness_interval: Duration::from_millis(500),
        }
    }
}

/// What the reconciler has made live.
#[derive(Debug, Clone, Default)]
pub struct Status {
    /// The recovered configuration is live.
    pub ready: bool,
    /// Incremented after every apply that went live.
    pub generation: u64,
    /// The intents of the live configuration.
    pub intents: Arc<Intents>,
    /// The live plan.
    pub plan: Option<Arc<Plan>>,
    /// The reason the last apply failed, if it did.
    pub last_error: Option<String>,
    /// The live intents that come from Consul tags (not from the API or KV).
    pub tag_routed: Arc<BTreeSet<ServiceName>>,
    /// The live snippets of the services with custom templates.
    pub custom: Arc<BTreeMap<ServiceName, CustomSnippets>>,
}

enum Request {
    Put(Box<ServiceIntent>, oneshot::Sender<Result<(), ApplyError>>),
    Remove(ServiceName, oneshot::Sender<Result<(), ApplyError>>),
    Reload(oneshot::Sender<Result<(), ApplyError>>),
}

/// The API's side of the reconciler.
#[derive(Debug, Clone)]
pub struct ReconcilerHandle {
    requests: mpsc::Sender<Request>,
    status: watch::Receiver<Arc<Status>>,
    metrics: Metrics,
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Request::Put(i, _) => write!(f, "Put({})", i.name),
            Request::Remove(n, _) => write!(f, "Remove({n})"),
            Request::Reload(_) => f.write_str("Reload"),
        }
    }
}

impl ReconcilerHandle {
    async fn ask(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<(), ApplyError>>) -> Request,
    ) -> Result<(), ApplyError> {
        let (tx, rx) = oneshot::channel();
        self.requests
            .send(make(tx))
            .await
            .map_err(|_| ApplyError::Stopped)?;
        rx.await.map_err(|_| ApplyError::Stopped)?
    }

    /// Sets the intent of one service and returns once it is live.
    pub async fn put(&self, intent: ServiceIntent) -> Result<(), ApplyError> {
        self.ask(|tx| Request::Put(Box::new(intent), tx)).await
    }

    /// Removes a service and returns once it is no longer routed.
    pub async fn remove(&self, service: ServiceName) -> Result<(), ApplyError> {
        self.ask(|tx| Request::Remove(service, tx)).await
    }

    /// Re-applies the current state with a reload.
    pub async fn reload(&self) -> Result<(), ApplyError> {
        self.ask(Request::Reload).await
    }

    /// The latest status.
    pub fn status(&self) -> Arc<Status> {
        Arc::clone(&self.status.borrow())
    }

    /// The counters of reloads and runtime updates.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// A receiver of status updates.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Status>> {
        self.status.clone()
    }
}

/// Inputs of the reconciler.
pub struct ReconcilerInputs {
    /// Loads intents at startup.
    pub store: IntentStore,
    /// Reads a newly routed service at once, before the catalog watcher follows it.
    pub client: ConsulClient,
    /// Catalog snapshots.
    pub catalog: watch::Receiver<Arc<CatalogSnapshot>>,
    /// Where the reconciler publishes the catalog services it needs.
    pub interest: watch::Sender<Interest>,
    /// Intents changed in KV (by this replica or another one).
    pub intents: watch::Receiver<Option<Arc<Intents>>>,
    /// The catalog's service list from the catalog watcher, for custom templates reading
    /// `services`.
    pub service_list: watch::Receiver<Arc<ServiceTags>>,
}

/// The live state; the plan, intents and snippets are shared with the published [`Status`]
/// rather than copied (at thousands of services a copy costs tens of milliseconds).
struct Live {
    plan: Arc<Plan>,
    text: String,
    intents: Arc<Intents>,
    custom: Arc<BTreeMap<ServiceName, CustomSnippets>>,
}

/// A rendered configuration with the custom snippets it holds.
struct Rendered {
    text: String,
    custom: BTreeMap<ServiceName, CustomSnippets>,
}

/// A service read directly, valid until the catalog watcher has caught up.
struct Overlay {
    instances: Vec<Instance>,
    until: Instant,
    reads: u32,
}

/// How long a direct read stands in for the catalog watcher before it is read again. A service
/// the snapshot lacks is either not in the catalog or not read by the watcher yet; a fresh read
/// tells which, so a deregistration is never hidden for longer than this.
const OVERLAY_TTL: Duration = Duration::from_secs(1);
/// Attempts at applying the full runtime state when the runtime socket cuts the connection.
const RUNTIME_STATE_ATTEMPTS: u32 = 3;
/// Direct reads of one service before the watcher's view is trusted alone.
const OVERLAY_MAX_READS: u32 = 30;

/// The reconciler task.
pub struct Reconciler {
    supervisor: Supervisor,
    options: ReconcilerOptions,
    inputs: ReconcilerInputs,
    requests: mpsc::Receiver<Request>,
    status: watch::Sender<Arc<Status>>,
    intents: Intents,
    catalog: Arc<CatalogSnapshot>,
    overlay: BTreeMap<ServiceName, Overlay>,
    custom: CustomTemplates,
    live: Option<Live>,
    generation: u64,
    last_apply: Option<Instant>,
    tags: TagRoutes,
}

impl Reconciler {
    /// Spawns the reconciler; it stops when `shutdown` is cancelled (after finishing an apply in
    /// flight).
    pub fn spawn(
        supervisor: Supervisor,
        options: ReconcilerOptions,
        inputs: ReconcilerInputs,
        shutdown: CancellationToken,
    ) -> (ReconcilerHandle, tokio::task::JoinHandle<()>) {
        let (req_tx, req_rx) = mpsc::channel(256);
        let (status_tx, status_rx) = watch::channel(Arc::new(Status::default()));
        let custom = CustomTemplates::new(
            options.templates_root.clone(),
            shared_ports(options.render.http_port, options.render.https_port),
            inputs.client.clone(),
            inputs.service_list.clone(),
        );
        let metrics = options.metrics.clone();
        let tags = TagRoutes::new(options.tags.clone());
        let reconciler = Reconciler {
            supervisor,
            options,
            inputs,
            requests: req_rx,
            status: status_tx,
            intents: Intents::new(),
            catalog: Arc::new(CatalogSnapshot::new()),
            overlay: BTreeMap::new(),
            custom,
            live: None,
            generation: 0,
            last_apply: None,
            tags,
        };
        let task = tokio::spawn(reconciler.run(shutdown));
        (
            ReconcilerHandle {
                requests: req_tx,
                status: status_rx,
                metrics,
            },
            task,
        )
    }

    async fn run(mut self, shutdown: CancellationToken) {
        if self.recover(&shutdown).await {
            self.main_loop(&shutdown).await;
        }
        self.status.send_modify(|s| {
            let mut next = (**s).clone();
            next.ready = false;
            *s = Arc::new(next);
        });
        if self.options.stop_haproxy_on_exit {
            match self.supervisor.stop().await {
                Ok(()) => info!("HAProxy stopped"),
                Err(error) => warn!(error = %chain(&error), "cannot stop HAProxy"),
            }
        }
        self.requests.close();
        while let Ok(request) = self.requests.try_recv() {
            reply(request, Err(ApplyError::Stopped));
        }
    }

    /// Startup recovery. Returns false when shutdown came first.
    async fn recover(&mut self, shutdown: &CancellationToken) -> bool {
        let mut backoff = Duration::from_millis(200);
        // 1. Every intent under the instance root.
        loop {
            match self.inputs.store.load_all().await {
                Ok(intents) => {
                    info!(services = intents.len(), "intents recovered from Consul KV");
                    self.intents = intents;
                    break;
                }
                Err(error) => {
                    warn!(error = %chain(&error), "cannot load intents; retrying");
                    if !self.pause(shutdown, &mut backoff).await {
                        return false;
                    }
                }
            }
        }
        self.prepare_custom().await;
        let routed = self.publish_interest();
        // 2. The first catalog snapshot of those services; services it does not hold yet (the
        // watcher may still be taking in the new interest) are read directly.
        tokio::select! {
            _ = shutdown.cancelled() => return false,
            changed = self.inputs.catalog.changed() => {
                if changed.is_ok() {
                    self.catalog = Arc::clone(&self.inputs.catalog.borrow_and_update());
                }
            }
        }
        self.read_new_services(routed).await;
        self.prepare_custom().await;
        // 3. Render, start or adopt HAProxy, and go live.
        backoff = Duration::from_millis(200);
        loop {
            match self.start().await {
                Ok(()) => break,
                Err(error) => {
                    warn!(%error, "cannot start HAProxy; retrying");
                    self.set_error(Some(error.to_string()));
                    if !self.pause(shutdown, &mut backoff).await {
                        return false;
                    }
                }
            }
        }
        info!(
            services = self.intents.len(),
            "recovered configuration is live; ready"
        );
        true
    }

    async fn pause(&self, shutdown: &CancellationToken, backoff: &mut Duration) -> bool {
        let wait = *backoff;
        *backoff = (*backoff * 2).min(Duration::from_secs(5));
        tokio::select! {
            _ = shutdown.cancelled() => false,
            _ = tokio::time::sleep(wait) => true,
        }
    }

    async fn start(&mut self) -> Result<(), ApplyError> {
        // A custom template that cannot be read or rendered (a missing file, a missing key)
        // must not keep every other service down: it is left out and retried by later applies.
        let mut intents = self.wanted();
        intents.retain(|name, intent| match &intent.templates {
            None => true,
            Some(spec) => match self.custom.snippets(name, spec) {
                Ok(_) => true,
                Err(error) => {
                    warn!(service = %name, %error, "custom template left out at start");
                    false
                }
            },
        });
        // Likewise a template whose output HAProxy refuses: template services are taken in
        // one at a time, each only if the configuration still validates.
        if intents.values().any(|i| i.templates.is_some()) && !self.validates(&intents).await {
            let mut candidate = intents.clone();
            candidate.retain(|_, i| i.templates.is_none());
            for (name, intent) in intents.iter().filter(|(_, i)| i.templates.is_some()) {
                let mut trial = candidate.clone();
                trial.insert(name.clone(), intent.clone());
                if self.validates(&trial).await {
                    candidate = trial;
                } else {
                    warn!(service = %name, "custom template left out at start: HAProxy refuses its output");
                }
            }
            intents = candidate;
        }
        let desired = self.desired(&intents);
        let Rendered { text, custom } = self.render(&desired, &intents)?;
        let (pid, adopted) = self
            .supervisor
            .start_or_adopt(&text)
            .await
            .map_err(|e| ApplyError::Failed(chain(&e)))?;
        info!(pid, adopted, "HAProxy master running");
        if adopted {
            let current = tokio::fs::read_to_string(self.supervisor.paths().config())
                .await
                .unwrap_or_default();
            if current != text {
                self.supervisor
                    .reload(&text)
                    .await
                    .map_err(|e| ApplyError::Failed(chain(&e)))?;
            }
        }
        self.apply_full_runtime_state(&desired).await?;
        self.went_live(desired, text, intents, custom);
        Ok(())
    }

    async fn main_loop(&mut self, shutdown: &CancellationToken) {
        let mut tick = tokio::time::interval(self.options.resync_interval);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        tick.reset();
        let mut liveness = tokio::time::interval(self.options.liveness_interval);
        liveness.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut catalog_open = true;
        let mut intents_open = true;
        loop {
            let mut batch = Batch::default();
            // Wait for the first trigger.
            let overlay_expiry = self.overlay.values().map(|o| o.until).min();
            let tag_expiry = self.tags.next_expiry();
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                request = self.requests.recv() => match request {
                    Some(request) => batch.add(request, &mut self.intents),
                    None => break,
                },
                changed = self.inputs.catalog.changed(), if catalog_open => {
                    if changed.is_err() {
                        catalog_open = false;
                        warn!("the catalog watcher stopped");
                    }
                    batch.watcher = true;
                }
                changed = self.inputs.intents.changed(), if intents_open => {
                    if changed.is_err() {
                        intents_open = false;
                        warn!("the intent watch stopped");
                    }
                    batch.watcher = true;
                    batch.kv_changed = true;
                }
                _ = tick.tick() => batch.tick = true,
                _ = liveness.tick() => {
                    if self.supervisor.master_alive() {
                        continue;
                    }
                    self.check_haproxy().await;
                    batch.watcher = true;
                }
                _ = sleep_until_opt(overlay_expiry) => batch.watcher = true,
                _ = sleep_until_opt(tag_expiry) => batch.watcher = true,
                _ = self.custom.kv_changed() => batch.watcher = true,
            }
            // A burst from the watchers right after an apply waits for a quiet window, capped.
            let recent = self
                .last_apply
                .is_some_and(|at| at.elapsed() < self.options.quiet);
            if batch.replies.is_empty() && batch.watcher && recent {
                let hard = Instant::now() + self.options.max_wait;
                loop {
                    let soft = (Instant::now() + self.options.quiet).min(hard);
                    tokio::select! {
                        biased;
                        _ = shutdown.cancelled() => break,
                        request = self.requests.recv() => {
                            if let Some(request) = request {
                                batch.add(request, &mut self.intents);
                            }
                            break;
                        }
                        _ = tokio::time::sleep_until(soft) => break,
                        r = self.inputs.catalog.changed(), if catalog_open => {
                            if r.is_err() { catalog_open = false; }
                        }
                        r = self.inputs.intents.changed(), if intents_open => {
                            if r.is_err() { intents_open = false; }
                            batch.kv_changed = true;
                        }
                    }
                }
            }
            // Whatever else is already queued joins this apply.
            while let Ok(request) = self.requests.try_recv() {
                batch.add(request, &mut self.intents);
            }
            if catalog_open && self.inputs.catalog.has_changed().unwrap_or(false) {
                batch.watcher = true;
            }
            self.catalog = Arc::clone(&self.inputs.catalog.borrow_and_update());
            if batch.kv_changed || self.inputs.intents.has_changed().unwrap_or(false) {
                let latest = self.inputs.intents.borrow_and_update().clone();
                if let Some(latest) = latest {
                    // Requests in this batch were persisted before they were sent, so they
                    // win over a watch answer that may predate them.
                    let mut merged = (*latest).clone();
                    for (name, intent) in &batch.pending {
                        match intent {
                            Some(i) => merged.insert(name.clone(), i.clone()),
                            None => merged.remove(name),
                        };
                    }
                    self.intents = merged;
                }
            }
            if !batch.pending.is_empty() {
                self.reread_intents().await;
            }
            if batch.tick {
                self.check_haproxy().await;
                self.custom.refresh_all();
            }
            // A reconfigure reads its template files again.
            for name in batch.pending.keys() {
                self.custom.forget(name);
            }
            let result = self.apply(batch.reload).await;
            self.options.metrics.reconciled(result.is_ok());
            if let Err(error) = &result {
                warn!(%error, "apply failed; the last-known-good configuration stays live");
            }
            // Each request learns whether its own change is live.
            let live = self.live.as_ref().map(|l| &l.intents);
            for (target, tx) in batch.replies {
                let own = match (&result, &target, live) {
                    (Ok(()), _, _) => Ok(()),
                    (Err(_), Some((name, want)), Some(live)) if live.get(name) == want.as_ref() => {
                        Ok(())
                    }
                    (Err(e), _, _) => Err(e.clone()),
                };
                let _ = tx.send(own);
            }
        }
    }

    /// Reads every intent from KV again before applying API requests. The requests were
    /// persisted before they were sent here, so this read holds them, and also any later write
    /// of the same service by another replica. Without it, a request merged over a watch
    /// answer that already held another replica's later write would win here while KV holds
    /// the other one, and no further watch answer would come to undo the difference. When the
    /// read fails, the requests merged over the last watch answer stand.
    async fn reread_intents(&mut self) {
        match self.inputs.store.load_all().await {
            Ok(intents) => self.intents = intents,
            Err(error) => {
                debug!(error = %chain(&error), "cannot read the intents again; keeping the requests as sent")
            }
        }
    }

    async fn check_haproxy(&mut self) {
        match self.supervisor.ensure_running().await {
            Ok(EnsureOutcome::Healthy) => debug!("HAProxy is running"),
            Ok(outcome) => {
                self.options.metrics.haproxy_restarted();
                warn!(
                    ?outcome,
                    "HAProxy was recovered; re-applying the runtime state"
                );
                if let Some(live) = &self.live {
                    let plan = live.plan.clone();
                    if let Err(error) = self.apply_full_runtime_state(&plan).await {
                        warn!(%error, "cannot re-apply the runtime state");
                    }
                }
            }
            Err(error) => warn!(error = %chain(&error), "HAProxy check failed"),
        }
    }

    /// The catalog the plan sees: the watcher's snapshot, plus direct reads of services it does
    /// not track yet.
    fn effective_catalog(&mut self) -> CatalogSnapshot {
        let catalog = &self.catalog;
        self.overlay
            .retain(|name, _| catalog.instances(name).is_none());
        let mut snapshot = (*self.catalog).clone();
        for (name, o) in &self.overlay {
            snapshot.set_service(name.clone(), o.instances.clone());
        }
        self.tags.weighted(snapshot)
    }

    /// The intents to apply: the API's (from KV) and, when tag routes are on, those declared
    /// in Consul tags that no API intent covers.
    fn wanted(&mut self) -> Intents {
        self.tags
            .wanted(&self.intents, &self.catalog, Instant::now())
    }

    fn desired(&mut self, intents: &Intents) -> Plan {
        let catalog = self.effective_catalog();
        let empty = SlotTable::default();
        let previous = self.live.as_ref().map_or(&empty, |l| &l.plan.slots);
        plan(intents, &catalog, previous, &self.options.plan)
    }

    /// Renders `desired` with the custom snippets of the template services of `intents`; a
    /// template that cannot be rendered fails the whole configuration.
    fn render(&self, desired: &Plan, intents: &Intents) -> Result<Rendered, ApplyError> {
        let custom = self.snippets(desired, intents)?;
        let text = self.render_text(desired, &custom)?;
        Ok(Rendered { text, custom })
    }

    /// The custom snippets of the template services of `intents` that `desired` holds.
    fn snippets(
        &self,
        desired: &Plan,
        intents: &Intents,
    ) -> Result<BTreeMap<ServiceName, CustomSnippets>, ApplyError> {
        let mut custom = BTreeMap::new();
        for name in &desired.custom_templates {
            let Some(spec) = intents.get(name).and_then(|i| i.templates.as_ref()) else {
                continue;
            };
            let snippets = self
                .custom
                .snippets(name, spec)
                .map_err(|e| ApplyError::Failed(format!("custom template of {name}: {e}")))?;
            custom.insert(name.clone(), snippets);
        }
        Ok(custom)
    }

    /// The configuration text of `desired` with `custom`.
    fn render_text(
        &self,
        desired: &Plan,
        custom: &BTreeMap<ServiceName, CustomSnippets>,
    ) -> Result<String, ApplyError> {
        render_with_custom(desired, &self.options.render, custom)
            .map(|r| r.into_string())
            .map_err(|e| ApplyError::Failed(chain(&e)))
    }

    /// Loads, fetches the data of and renders the custom templates of the wanted and the live
    /// intents (the live ones are needed to keep a service's live version).
    async fn prepare_custom(&mut self) {
        let live = self.live.as_ref().map(|l| &l.intents);
        let specs: BTreeSet<(ServiceName, TemplateSpec)> = self
            .intents
            .iter()
            .chain(live.into_iter().flat_map(|l| l.iter()))
            .filter_map(|(name, i)| i.templates.clone().map(|t| (name.clone(), t)))
            .collect();
        let catalog = Arc::clone(&self.catalog);
        self.custom.prepare(&specs, &catalog).await;
    }

    /// Publishes the catalog services the intents route and the custom templates read; newly
    /// routed ones are read at once.
    fn publish_interest(&self) -> BTreeSet<ServiceName> {
        let routed: BTreeSet<ServiceName> = self
            .intents
            .values()
            .filter(|i| i.templates.is_none())
            .map(|i| i.catalog_service.clone())
            .collect();
        let mut wanted = routed.clone();
        wanted.extend(self.custom.services_read());
        let mut added = BTreeSet::new();
        let next = self.tags.interest(wanted);
        self.inputs.interest.send_if_modified(|current| {
            let before = current.named();
            added = routed.difference(&before).cloned().collect();
            if *current == next {
                false
            } else {
                *current = next;
                true
            }
        });
        added
    }

    /// Reads newly routed services the snapshot lacks, and re-reads expired stand-ins.
    async fn read_new_services(&mut self, added: BTreeSet<ServiceName>) {
        let now = Instant::now();
        let routed: BTreeSet<&ServiceName> =
            self.intents.values().map(|i| &i.catalog_service).collect();
        let catalog = &self.catalog;
        self.overlay.retain(|name, o| {
            routed.contains(name)
                && catalog.instances(name).is_none()
                && (o.until > now || o.reads < OVERLAY_MAX_READS)
        });
        let expired: Vec<ServiceName> = self
            .overlay
            .iter()
            .filter(|(_, o)| o.until <= now)
            .map(|(name, _)| name.clone())
            .collect();
        for name in added.into_iter().chain(expired) {
            if self.catalog.instances(&name).is_some() {
                continue;
            }
            let read = tokio::time::timeout(
                Duration::from_secs(5),
                self.inputs.client.health_service(&name),
            )
            .await;
            match read {
                Ok(Ok(read)) if read.instances.is_empty() => {
                    // Agrees with a snapshot that lacks the service.
                    self.overlay.remove(&name);
                }
                Ok(Ok(read)) => {
                    let reads = self.overlay.get(&name).map_or(0, |o| o.reads) + 1;
                    self.overlay.insert(
                        name,
                        Overlay {
                            instances: read.instances,
                            until: Instant::now() + OVERLAY_TTL,
                            reads,
                        },
                    );
                }
                Ok(Err(error)) => {
                    warn!(service = %name, error = %chain(&error), "cannot read a newly routed service");
                    self.postpone(&name);
                }
                Err(_) => {
                    warn!(service = %name, "reading a newly routed service timed out");
                    self.postpone(&name);
                }
            }
        }
    }

    /// After a failed read, a stand-in keeps its instances until the next attempt.
    fn postpone(&mut self, name: &ServiceName) {
        if let Some(o) = self.overlay.get_mut(name) {
            o.until = Instant::now() + OVERLAY_TTL;
            o.reads += 1;
        }
    }

    async fn apply(&mut self, force_reload: bool) -> Result<(), ApplyError> {
        self.prepare_custom().await;
        let added = self.publish_interest();
        self.read_new_services(added).await;
        let wanted = self.wanted();
        let Err((error, wanted)) = self.apply_intents(wanted, force_reload).await else {
            return Ok(());
        };
        self.set_error(Some(error.to_string()));
        // A change that cannot go live must not block the others: starting from the live
        // intents, each changed service is taken in only if the configuration still validates;
        // the rest keep their live version. Catalog changes apply either way.
        if let Some(live) = &self.live {
            let live_intents = live.intents.clone();
            let changed = changed_services(&wanted, &live_intents);
            let mut candidate = keep_live_versions(&wanted, &live_intents);
            let mut held = Vec::new();
            for name in changed {
                let mut trial = candidate.clone();
                match wanted.get(&name) {
                    Some(intent) => trial.insert(name.clone(), intent.clone()),
                    None => trial.remove(&name),
                };
                if self.validates(&trial).await {
                    candidate = trial;
                } else {
                    held.push(name.to_string());
                    // A tag route HAProxy refuses is not tried again until its tags change.
                    if let Some(intent) = wanted.get(&name)
                        && self.tags.from_tags().contains(&name)
                    {
                        self.tags.refused(&name, intent);
                    }
                }
            }
            warn!(services = ?held, "these changes cannot go live; keeping their live version");
            if candidate != wanted
                && let Err((e, _)) = self.apply_intents(candidate, false).await
            {
                warn!(error = %e, "the other changes cannot be applied either");
            }
            self.set_error(Some(error.to_string()));
        }
        Err(error)
    }

    /// Whether the configuration for `intents` passes `haproxy -c`.
    async fn validates(&mut self, intents: &Intents) -> bool {
        let desired = self.desired(intents);
        match self.render(&desired, intents) {
            Ok(r) => {
                self.options.metrics.validated();
                self.supervisor.validate(&r.text).await.is_ok()
            }
            Err(_) => false,
        }
    }

    /// Makes `intents` live; on failure, gives them back with the reason.
    async fn apply_intents(
        &mut self,
        intents: Intents,
        force_reload: bool,
    ) -> Result<(), (ApplyError, Intents)> {
        match self.make_live(&intents, force_reload).await {
            Ok((desired, text, custom)) => {
                self.went_live(desired, text, intents, custom);
                Ok(())
            }
            Err(error) => Err((error, intents)),
        }
    }

    /// Plans, renders and applies `intents`; returns what went live.
    async fn make_live(
        &mut self,
        intents: &Intents,
        force_reload: bool,
    ) -> Result<(Plan, String, BTreeMap<ServiceName, CustomSnippets>), ApplyError> {
        let desired = self.desired(intents);
        let custom = self.snippets(&desired, intents)?;
        self.last_apply = Some(Instant::now());
        let Some(live) = &self.live else {
            return Err(ApplyError::NotReady);
        };
        // What changed, for the log of the reload or runtime update below.
        let summary = || {
            let mut summary =
                crate::change_log::summarize(&live.intents, &live.plan, intents, &desired);
            summary.templates_changed(&live.custom, &custom);
            summary
        };
        // The plan does not hold the text of custom templates: a change there is structural.
        let templates_changed = custom != *live.custom;
        let (change, why) = if force_reload {
            (Change::Reload, "reload requested")
        } else if templates_changed {
            (Change::Reload, "custom template output changed")
        } else {
            (
                diff(&live.plan, &desired),
                "configuration structure changed",
            )
        };
        // `haproxy -c` before a reload only when the change holds something HAProxy may refuse
        // although it passed validation here (a template, a regular expression, a certificate
        // through a requested reload); otherwise the reload is the check.
        let check = if force_reload
            || templates_changed
            || changed_services(&live.intents, intents).iter().any(|name| {
                intents
                    .get(name)
                    .is_some_and(ServiceIntent::haproxy_may_refuse)
            }) {
            ReloadCheck::Precheck
        } else {
            ReloadCheck::AtReload
        };
        // Every live text was validated or differs from a validated one only in slot lines.
        let slots_only = |text: &str| only_slot_lines_differ(&live.text, text);
        // The text is rendered after the runtime commands are sent: it only records them.
        let text = match change {
            Change::None => {
                let text = self.render_text(&desired, &custom)?;
                if text != live.text {
                    let slots_only = slots_only(&text);
                    self.install(&text, slots_only).await?;
                }
                text
            }
            Change::Runtime(commands) => {
                let lines: Vec<String> = commands.iter().map(ToString::to_string).collect();
                let sent = self.supervisor.runtime_api().execute_checked(&lines).await;
                let summary = summary();
                let text = self.render_text(&desired, &custom)?;
                match sent {
                    Ok(_) => {
                        info!(
                            services = ?summary.services(),
                            changes = %summary,
                            commands = ?lines,
                            "instance changes applied through the runtime API"
                        );
                        self.options.metrics.runtime_update(lines.len());
                        let slots_only = slots_only(&text);
                        self.install(&text, slots_only).await?
                    }
                    Err(error) => {
                        warn!(
                            services = ?summary.services(),
                            changes = %summary,
                            commands = ?lines,
                            error = %chain(&error),
                            "runtime commands failed; reloading instead"
                        );
                        self.reload(&desired, &text, "runtime commands failed", &summary, check)
                            .await?;
                    }
                }
                text
            }
            Change::Reload => {
                let text = self.render_text(&desired, &custom)?;
                let summary = summary();
                self.reload(&desired, &text, why, &summary, check).await?;
                text
            }
        };
        Ok((desired, text, custom))
    }

    /// Installs `text` without reloading; `haproxy -c` is skipped when only slot lines changed.
    async fn install(&mut self, text: &str, slots_only: bool) -> Result<(), ApplyError> {
        let installed = if slots_only {
            self.options.metrics.validation_skipped();
            self.supervisor.install_config_unchecked(text).await
        } else {
            self.options.metrics.validated();
            self.supervisor.install_config(text).await
        };
        installed.map_err(|e| ApplyError::Failed(chain(&e)))
    }

    /// Reloads HAProxy with `text`, checked as `check` says; `why` and `summary` say why, for
    /// the log.
    async fn reload(
        &mut self,
        desired: &Plan,
        text: &str,
        why: &str,
        summary: &crate::change_log::ChangeSummary,
        check: ReloadCheck,
    ) -> Result<(), ApplyError> {
        match check {
            ReloadCheck::Precheck => self.options.metrics.validated(),
            ReloadCheck::AtReload => self.options.metrics.validation_skipped(),
        }
        let outcome = self
            .supervisor
            .reload_with(text, check)
            .await
            .map_err(|e| {
                self.options.metrics.reload_failed();
                warn!(
                    reason = why,
                    services = ?summary.services(),
                    changes = %summary,
                    error = %chain(&e),
                    "HAProxy reload failed"
                );
                ApplyError::Failed(chain(&e))
            })?;
        self.options.metrics.reloaded();
        self.options.metrics.reload_took(outcome.duration);
        info!(
            reason = why,
            services = ?summary.services(),
            changes = %summary,
            duration_ms = outcome.duration.as_millis() as u64,
            old_workers = outcome.old_workers,
            "HAProxy reloaded"
        );
        // A saved server state beats the configuration for a server that keeps its name: the
        // backends whose slots this apply changes are set again. The others' saved state is
        // the live runtime state, which the new worker takes over as it is.
        let commands = match (&self.live, outcome.server_state_saved) {
            (Some(live), true) => changed_runtime_state(desired, &live.plan),
            _ => full_runtime_state(desired),
        };
        self.apply_runtime_state(commands).await
    }

    /// Sets every slot's address, weight and state as the plan says.
    async fn apply_full_runtime_state(&self, desired: &Plan) -> Result<(), ApplyError> {
        self.apply_runtime_state(full_runtime_state(desired)).await
    }

    /// Sends `commands`, which set absolute slot values.
    async fn apply_runtime_state(&self, commands: Vec<RuntimeCommand>) -> Result<(), ApplyError> {
        if commands.is_empty() {
            return Ok(());
        }
        let lines: Vec<String> = commands.iter().map(ToString::to_string).collect();
        // The commands set absolute values, so sending them again is safe. Right after a
        // reload the runtime socket may be reset by a worker that is leaving (seen under load
        // with many servers): a cut connection is retried a few times.
        let mut attempt = 1;
        loop {
            match self.supervisor.runtime_api().execute_checked(&lines).await {
                Ok(_) => return Ok(()),
                Err(
                    e @ (crate::haproxy::RuntimeApiError::Io { .. }
                    | crate::haproxy::RuntimeApiError::Framing { .. }),
                ) if attempt < RUNTIME_STATE_ATTEMPTS => {
                    warn!(error = %chain(&e), attempt, "runtime state not applied; trying again");
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => return Err(ApplyError::Failed(chain(&e))),
            }
        }
    }

    fn went_live(
        &mut self,
        desired: Plan,
        text: String,
        intents: Intents,
        custom: BTreeMap<ServiceName, CustomSnippets>,
    ) {
        self.generation += 1;
        let tag_routed = intents
            .keys()
            .filter(|name| {
                self.tags.from_tags().contains(*name) && !self.intents.contains_key(*name)
            })
            .cloned()
            .collect();
        let instances = desired
            .backends
            .values()
            .map(|b| b.slots.iter().filter(|s| s.server.is_some()).count())
            .sum();
        self.options.metrics.went_live(intents.len(), instances);
        let (plan, intents, custom) = (Arc::new(desired), Arc::new(intents), Arc::new(custom));
        let status = Status {
            ready: true,
            generation: self.generation,
            intents: Arc::clone(&intents),
            plan: Some(Arc::clone(&plan)),
            last_error: None,
            tag_routed: Arc::new(tag_routed),
            custom: Arc::clone(&custom),
        };
        self.live = Some(Live {
            plan,
            text,
            intents,
            custom,
        });
        self.status.send_replace(Arc::new(status));
    }

    fn set_error(&self, error: Option<String>) {
        self.status.send_modify(|s| {
            let mut next = (**s).clone();
            next.last_error = error;
            *s = Arc::new(next);
        });
    }
}

#[derive(Default)]
struct Batch {
    /// Each request's reply, with the intent it asked for (`None` for a reload).
    #[allow(clippy::type_complexity)]
    replies: Vec<(
        Option<(ServiceName, Option<ServiceIntent>)>,
        oneshot::Sender<Result<(), ApplyError>>,
    )>,
    /// Intents set or removed by the requests of this batch.
    pending: BTreeMap<ServiceName, Option<ServiceIntent>>,
    watcher: bool,
    kv_changed: bool,
    tick: bool,
    reload: bool,
}

impl Batch {
    fn add(&mut self, request: Request, intents: &mut Intents) {
        match request {
            Request::Put(intent, tx) => {
                intents.insert(intent.name.clone(), (*intent).clone());
                self.pending
                    .insert(intent.name.clone(), Some((*intent).clone()));
                self.replies
                    .push((Some((intent.name.clone(), Some(*intent))), tx));
            }
            Request::Remove(name, tx) => {
                intents.remove(&name);
                self.pending.insert(name.clone(), None);
                self.replies.push((Some((name, None)), tx));
            }
            Request::Reload(tx) => {
                self.reload = true;
                self.replies.push((None, tx));
            }
        }
    }
}

fn reply(request: Request, result: Result<(), ApplyError>) {
    let tx = match request {
        Request::Put(_, tx) | Request::Remove(_, tx) | Request::Reload(tx) => tx,
    };
    let _ = tx.send(result);
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// `wanted` with every service whose intent differs from `live` put back to its live version
/// (added services dropped, removed ones restored).
fn keep_live_versions(wanted: &Intents, live: &Intents) -> Intents {
    let mut out = wanted.clone();
    for name in changed_services(wanted, live) {
        match live.get(&name) {
            Some(intent) => out.insert(name, intent.clone()),
            None => out.remove(&name),
        };
    }
    out
}

/// Services whose intent differs between `a` and `b` (present in one only, or different).
fn changed_services(a: &Intents, b: &Intents) -> BTreeSet<ServiceName> {
    a.keys()
        .chain(b.keys())
        .filter(|name| a.get(*name) != b.get(*name))
        .cloned()
        .collect()
}

/// Commands that set every slot of `plan` to its planned address, weight and state, whatever
/// HAProxy currently holds (used at startup, after HAProxy was restarted, and after a reload
/// without a saved server state).
pub fn full_runtime_state(plan: &Plan) -> Vec<RuntimeCommand> {
    let mut out = Vec::new();
    for backend in plan.backends.values() {
        backend_runtime_state(backend, &mut out);
    }
    out
}

/// The commands of [`full_runtime_state`] for the backends of `desired` that are new or whose
/// slots differ from `live`'s: after a reload with a saved server state, the only ones the new
/// worker may hold wrong. Proportional to the change, not to the configuration.
pub fn changed_runtime_state(desired: &Plan, live: &Plan) -> Vec<RuntimeCommand> {
    let mut out = Vec::new();
    for (name, backend) in &desired.backends {
        let same = live.backends.get(name).is_some_and(|l| {
            l.name == backend.name && l.slots == backend.slots && l.check == backend.check
        });
        if !same {
            backend_runtime_state(backend, &mut out);
        }
    }
    out
}

fn backend_runtime_state(backend: &crate::plan::Backend, out: &mut Vec<RuntimeCommand>) {
    for slot in &backend.slots {
        let (addr, port, weight, state) = match &slot.server {
            Some(s) => (
                s.addr,
                s.port,
                s.weight,
                match s.state {
                    ServerState::Ready => ServerAdminState::Ready,
                    ServerState::Maint => ServerAdminState::Maint,
                },
            ),
            None => (PARKED_ADDR, PARKED_PORT, 1, ServerAdminState::Maint),
        };
        let (b, s) = (backend.name.clone(), slot.name);
        if state != ServerAdminState::Ready {
            out.push(RuntimeCommand::SetState {
                backend: b.clone(),
                server: s,
                state,
            });
        }
        out.push(RuntimeCommand::SetAddr {
            backend: b.clone(),
            server: s,
            addr,
            port,
        });
        out.push(RuntimeCommand::SetWeight {
            backend: b.clone(),
            server: s,
            weight,
        });
        if state == ServerAdminState::Ready {
            out.push(RuntimeCommand::SetState {
                backend: b,
                server: s,
                state,
            });
        }
    }
}

/// An error and its sources, joined with `: `.
pub fn chain(error: &dyn std::error::Error) -> String {
    let mut out = error.to_string();
    let mut source = error.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Health, InstanceId, NodeName, Weights};

    #[test]
    fn full_runtime_state_sets_every_slot() {
        let params: BTreeMap<String, String> = [("serviceName", "web"), ("servicePath", "/")]
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let intent = ServiceIntent::from_params(&params).unwrap();
        let intents: Intents = [(intent.name.clone(), intent)].into_iter().collect();
        let mut catalog = CatalogSnapshot::new();
        catalog.set_service(
            ServiceName::new("web").unwrap(),
            vec![Instance {
                id: InstanceId::new("web-1").unwrap(),
                node: NodeName::new("n1").unwrap(),
                address: "10.0.0.1".parse().unwrap(),
                port: 8080,
                tags: BTreeSet::new(),
                meta: BTreeMap::new(),
                health: Health::Passing,
                weights: Weights::default(),
            }],
        );
        let p = plan(
            &intents,
            &catalog,
            &SlotTable::default(),
            &PlanSettings::default(),
        );
        let lines: Vec<String> = full_runtime_state(&p)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(lines[0], "set server web-be/s1 addr 10.0.0.1 port 8080");
        assert!(lines[1].starts_with("set server web-be/s1 weight "));
        assert_eq!(lines[2], "set server web-be/s1 state ready");
        assert_eq!(lines[3], "set server web-be/s2 state maint");
        assert_eq!(lines[4], "set server web-be/s2 addr 127.0.0.1 port 1");
        let slots = p.backends.values().next().unwrap().slots.len();
        assert_eq!(lines.len(), 3 * slots);
    }

    #[test]
    fn after_a_reload_only_changed_backends_are_set_again() {
        let inst = |id: &str, port: u16| Instance {
            id: InstanceId::new(id).unwrap(),
            node: NodeName::new("n1").unwrap(),
            address: "10.0.0.1".parse().unwrap(),
            port,
            tags: BTreeSet::new(),
            meta: BTreeMap::new(),
            health: Health::Passing,
            weights: Weights::default(),
        };
        let live_intents = intents(&[intent("a", "/a"), intent("b", "/b")]);
        let mut catalog = CatalogSnapshot::new();
        catalog.set_service(ServiceName::new("a").unwrap(), vec![inst("a-1", 1)]);
        catalog.set_service(ServiceName::new("b").unwrap(), vec![inst("b-1", 2)]);
        let settings = PlanSettings::default();
        let live = plan(&live_intents, &catalog, &SlotTable::default(), &settings);
        // A new service c, and b gets a second instance in the same apply.
        let wanted = intents(&[intent("a", "/a"), intent("b", "/b"), intent("c", "/c")]);
        catalog.set_service(
            ServiceName::new("b").unwrap(),
            vec![inst("b-1", 2), inst("b-2", 3)],
        );
        catalog.set_service(ServiceName::new("c").unwrap(), vec![inst("c-1", 4)]);
        let desired = plan(&wanted, &catalog, &live.slots, &settings);
        let backends: BTreeSet<String> = changed_runtime_state(&desired, &live)
            .iter()
            .map(|c| c.to_string().split(['/', ' ']).nth(2).unwrap().to_owned())
            .collect();
        assert_eq!(
            backends,
            BTreeSet::from(["b-be".to_owned(), "c-be".to_owned()])
        );
        assert!(changed_runtime_state(&desired, &desired).is_empty());
        assert_eq!(
            changed_runtime_state(&desired, &Plan::default()),
            full_runtime_state(&desired)
        );
    }

    fn intent(name: &str, path: &str) -> ServiceIntent {
        let params: BTreeMap<String, String> = [("serviceName", name), ("servicePath", path)]
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        ServiceIntent::from_params(&params).unwrap()
    }

    fn intents(list: &[ServiceIntent]) -> Intents {
        list.iter().map(|i| (i.name.clone(), i.clone())).collect()
    }

    #[test]
    fn changed_services_fall_back_to_their_live_version() {
        let live = intents(&[intent("a", "/a"), intent("b", "/b"), intent("c", "/c")]);
        let wanted = intents(&[intent("a", "/a"), intent("b", "/b2"), intent("d", "/d")]);
        let names: Vec<String> = changed_services(&wanted, &live)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(names, vec!["b", "c", "d"]);
        assert_eq!(keep_live_versions(&wanted, &live), live);
        assert_eq!(keep_live_versions(&live, &live), live);
    }

    #[test]
    fn error_chain_joins_sources() {
        let inner = std::io::Error::other("disk full");
        let outer = crate::haproxy::SupervisorError::Io {
            what: "cannot write",
            path: "/x".into(),
            source: inner,
        };
        assert_eq!(chain(&outer), "cannot write /x: disk full");
    }
}
