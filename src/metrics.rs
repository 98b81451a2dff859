//! Prometheus counters of how changes reach HAProxy, served by the API on `/metrics`.
//!
//! Owns: the metric registry and its counters (reloads, failed reloads, runtime updates and the
//! runtime commands they sent, configuration checks run and skipped, HAProxy restarts after a
//! death), and their text encoding in the OpenMetrics format.
//!
//! Must not: decide anything. The reconciler increments the counters; the API only encodes
//! them. No global registry: each [`Metrics`] is its own, so tests do not interfere.

use std::sync::Arc;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;

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
            "Configurations installed unchecked because only server slot contents changed",
            validations_skipped.clone(),
        );
        registry.register(
            "haproxy_restarts",
            "HAProxy masters found dead (or without workers) and started again from the last-known-good configuration",
            haproxy_restarts.clone(),
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
                haproxy_restarts,
            }),
        }
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

    /// Counts a configuration installed without a check.
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
