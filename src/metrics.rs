//! Prometheus metrics of the controller, served by the API on `/metrics` (and DFP's
//! `/v1/docker-flow-proxy/metrics`).
//!
//! Owns: the metric registry and its metrics (reconciles and failed ones, reloads, failed
//! reloads and their duration, runtime updates and the runtime commands they sent,
//! configuration checks run and skipped, HAProxy restarts after a death, services and
//! instances routed, the time of the last successful apply, Consul watch errors and Consul
//! request latency), and their text encoding in the OpenMetrics format. HAProxy's own metrics
//! come from its built-in exporter (`METRICS_PORT`), not from here.
//!
//! Must not: decide anything. The reconciler increments the counters; the API only encodes
//! them. No global registry: each [`Metrics`] is its own, so tests do not interfere.

use std::sync::Arc;

use std::sync::atomic::AtomicU64;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

use crate::consul::RequestObserver;

/// Labels of the Consul request metrics: `kind` is `read` or `write` (`watch` for errors of
/// blocking queries).
type KindLabel = Vec<(&'static str, &'static str)>;
type HistogramFamily = Family<KindLabel, Histogram, fn() -> Histogram>;

/// The content type of [`Metrics::encode`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Why the metrics could not be encoded.
#[derive(Debug, thiserror::Error)]
#[error("cannot encode the metrics")]
pub struct EncodeError(#[from] std::fmt::Error);

/// The counters, cheap to clone (every clone counts into the same registry).
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Registry,
    reloads: Counter,
    reload_failures: Counter,
    runtime_updates: Counter,
    runtime_commands: Counter,
    validations: Counter,
    validations_skipped: Counter,
    haproxy_restarts: Counter,
    reconciles: Counter,
    reconcile_failures: Counter,
    reload_duration: Histogram,
    services_routed: Gauge,
    instances_routed: Gauge,
    last_apply: Gauge<f64, AtomicU64>,
    consul_errors: Family<KindLabel, Counter>,
    consul_duration: HistogramFamily,
}

fn reload_histogram() -> Histogram {
    // 10 ms to about 80 s.
    Histogram::new(exponential_buckets(0.01, 2.0, 14))
}

fn consul_histogram() -> Histogram {
    // 1 ms to about 16 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field("reloads", &self.reloads())
            .field("runtime_updates", &self.runtime_updates())
            .finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// A fresh registry with every counter at zero.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("flow_proxy");
        let reloads = Counter::default();
        let reload_failures = Counter::default();
        let runtime_updates = Counter::default();
        let runtime_commands = Counter::default();
        let validations = Counter::default();
        let validations_skipped = Counter::default();
        let haproxy_restarts = Counter::default();
        registry.register(
            "haproxy_reloads",
            "HAProxy reloads that went live",
            reloads.clone(),
        );
        registry.register(
            "haproxy_reload_failures",
            "HAProxy reloads that did not go live (the last-known-good configuration stayed)",
            reload_failures.clone(),
        );
        registry.register(
            "runtime_updates",
            "Changes applied through HAProxy's runtime API without a reload",
            runtime_updates.clone(),
        );
        registry.register(
            "runtime_commands",
            "Runtime API commands sent by runtime updates",
            runtime_commands.clone(),
        );
        registry.register(
            "config_validations",
            "Configurations checked with haproxy -c",
            validations.clone(),
        );
        registry.register(
            "config_validations_skipped",
            "Configurations installed or reloaded without haproxy -c: only server slots changed, or the reload itself checked them",
            validations_skipped.clone(),
        );
        registry.register(
            "haproxy_restarts",
            "HAProxy masters found dead (or without workers) and started again from the last-known-good configuration",
            haproxy_restarts.clone(),
        );
        let reconciles = Counter::default();
        let reconcile_failures = Counter::default();
        let reload_duration = reload_histogram();
        let services_routed = Gauge::default();
        let instances_routed = Gauge::default();
        let last_apply = Gauge::<f64, AtomicU64>::default();
        let consul_errors = Family::<KindLabel, Counter>::default();
        let consul_duration: HistogramFamily = Family::new_with_constructor(consul_histogram);
        registry.register(
            "reconciles",
            "Reconcile rounds (each brings HAProxy to intents x catalog)",
            reconciles.clone(),
        );
        registry.register(
            "reconcile_failures",
            "Reconcile rounds that left some change not live",
            reconcile_failures.clone(),
        );
        registry.register_with_unit(
            "haproxy_reload_duration",
            "Time from the reload signal to the new worker's confirmation",
            Unit::Seconds,
            reload_duration.clone(),
        );
        registry.register(
            "services_routed",
            "Services in the live configuration",
            services_routed.clone(),
        );
        registry.register(
            "instances_routed",
            "Instances (HAProxy servers) in the live configuration",
            instances_routed.clone(),
        );
        registry.register(
            "last_successful_apply_timestamp_seconds",
            "Unix time of the last reconcile round whose result went live",
            last_apply.clone(),
        );
        registry.register(
            "consul_errors",
            "Consul requests that failed, by kind (watch: blocking queries)",
            consul_errors.clone(),
        );
        registry.register_with_unit(
            "consul_request_duration",
            "Latency of Consul requests other than blocking queries, by kind",
            Unit::Seconds,
            consul_duration.clone(),
        );
        Metrics {
            inner: Arc::new(Inner {
                registry,
                reloads,
                reload_failures,
                runtime_updates,
                runtime_commands,
                validations,
                validations_skipped,
                reconciles,
                reconcile_failures,
                reload_duration,
                services_routed,
                instances_routed,
                last_apply,
                consul_errors,
                consul_duration,
                haproxy_restarts,
            }),
        }
    }

    /// Counts a reconcile round and whether all of it went live.
    pub fn reconciled(&self, ok: bool) {
        self.inner.reconciles.inc();
        if !ok {
            self.inner.reconcile_failures.inc();
        }
    }

    /// Records how long a confirmed reload took.
    pub fn reload_took(&self, duration: Duration) {
        self.inner.reload_duration.observe(duration.as_secs_f64());
    }

    /// Records what the configuration that just went live routes, and when.
    pub fn went_live(&self, services: usize, instances: usize) {
        self.inner
            .services_routed
            .set(i64::try_from(services).unwrap_or(i64::MAX));
        self.inner
            .instances_routed
            .set(i64::try_from(instances).unwrap_or(i64::MAX));
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        self.inner.last_apply.set(now);
    }

    /// Reconcile rounds so far.
    pub fn reconciles(&self) -> u64 {
        self.inner.reconciles.get()
    }

    /// Counts a reload that went live.
    pub fn reloaded(&self) {
        self.inner.reloads.inc();
    }

    /// Counts a reload that did not go live.
    pub fn reload_failed(&self) {
        self.inner.reload_failures.inc();
    }

    /// Counts a runtime update of `commands` commands.
    pub fn runtime_update(&self, commands: usize) {
        self.inner.runtime_updates.inc();
        self.inner.runtime_commands.inc_by(commands as u64);
    }

    /// Counts a configuration checked with `haproxy -c`.
    pub fn validated(&self) {
        self.inner.validations.inc();
    }

    /// Counts a configuration installed without `haproxy -c` (only slots changed) or reloaded
    /// with the master's parse as its check.
    pub fn validation_skipped(&self) {
        self.inner.validations_skipped.inc();
    }

    /// Counts HAProxy found dead and started again.
    pub fn haproxy_restarted(&self) {
        self.inner.haproxy_restarts.inc();
    }

    /// HAProxy restarts so far.
    pub fn haproxy_restarts(&self) -> u64 {
        self.inner.haproxy_restarts.get()
    }

    /// Reloads that went live so far.
    pub fn reloads(&self) -> u64 {
        self.inner.reloads.get()
    }

    /// Runtime updates so far.
    pub fn runtime_updates(&self) -> u64 {
        self.inner.runtime_updates.get()
    }

    /// Configurations installed without a check so far.
    pub fn validations_skipped(&self) -> u64 {
        self.inner.validations_skipped.get()
    }

    /// The OpenMetrics text of every counter.
    pub fn encode(&self) -> Result<String, EncodeError> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.inner.registry)?;
        Ok(out)
    }
}

impl RequestObserver for Metrics {
    fn observe(&self, kind: &'static str, blocking: bool, elapsed: Duration, ok: bool) {
        if !ok {
            let kind = if blocking { "watch" } else { kind };
            self.inner
                .consul_errors
                .get_or_create(&vec![("kind", kind)])
                .inc();
        }
        if !blocking {
            self.inner
                .consul_duration
                .get_or_create(&vec![("kind", kind)])
                .observe(elapsed.as_secs_f64());
        }
    }
}

/// The `/metrics` response: the encoded counters, or a 500 if they cannot be encoded.
pub fn reply(metrics: &Metrics) -> warp::reply::Response {
    use warp::Reply;
    match metrics.encode() {
        Ok(text) => warp::reply::with_header(text, "content-type", CONTENT_TYPE).into_response(),
        Err(e) => {
            warp::reply::with_status(e.to_string(), warp::http::StatusCode::INTERNAL_SERVER_ERROR)
                .into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_encoded_with_their_totals() {
        let metrics = Metrics::new();
        metrics.reloaded();
        metrics.runtime_update(3);
        metrics.runtime_update(2);
        let text = metrics.encode().unwrap();
        assert!(
            text.contains("flow_proxy_haproxy_reloads_total 1\n"),
            "{text}"
        );
        assert!(
            text.contains("flow_proxy_runtime_updates_total 2\n"),
            "{text}"
        );
        assert!(
            text.contains("flow_proxy_runtime_commands_total 5\n"),
            "{text}"
        );
        assert!(
            text.contains("flow_proxy_haproxy_reload_failures_total 0\n"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[test]
    fn controller_figures_are_encoded() {
        let metrics = Metrics::new();
        metrics.reconciled(true);
        metrics.reconciled(false);
        metrics.reload_took(Duration::from_millis(300));
        metrics.went_live(2, 5);
        metrics.observe("read", false, Duration::from_millis(3), true);
        metrics.observe("read", true, Duration::from_secs(60), false);
        metrics.observe("write", false, Duration::from_millis(3), false);
        let text = metrics.encode().unwrap();
        for line in [
            "flow_proxy_reconciles_total 2\n",
            "flow_proxy_reconcile_failures_total 1\n",
            "flow_proxy_haproxy_reload_duration_seconds_count 1\n",
            "flow_proxy_haproxy_reload_duration_seconds_bucket{le=\"0.32\"} 1\n",
            "flow_proxy_haproxy_reload_duration_seconds_bucket{le=\"0.16\"} 0\n",
            "flow_proxy_services_routed 2\n",
            "flow_proxy_instances_routed 5\n",
            "flow_proxy_consul_errors_total{kind=\"watch\"} 1\n",
            "flow_proxy_consul_errors_total{kind=\"write\"} 1\n",
            "flow_proxy_consul_request_duration_seconds_count{kind=\"read\"} 1\n",
            "flow_proxy_consul_request_duration_seconds_count{kind=\"write\"} 1\n",
        ] {
            assert!(text.contains(line), "{line} missing from {text}");
        }
        let stamp = text
            .lines()
            .find_map(|l| l.strip_prefix("flow_proxy_last_successful_apply_timestamp_seconds "))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap();
        assert!(stamp > 1.7e9, "{text}");
    }

    #[test]
    fn haproxy_restarts_are_counted() {
        let metrics = Metrics::new();
        metrics.haproxy_restarted();
        assert_eq!(metrics.haproxy_restarts(), 1);
        let text = metrics.encode().unwrap();
        assert!(
            text.contains("flow_proxy_haproxy_restarts_total 1\n"),
            "{text}"
        );
    }

    #[test]
    fn clones_count_into_the_same_registry() {
        let metrics = Metrics::new();
        metrics.clone().reloaded();
        assert_eq!(metrics.reloads(), 1);
    }
}
