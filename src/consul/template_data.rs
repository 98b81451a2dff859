//! Reads for custom templates: Consul data in the shape the template engine reads it.
//!
//! Owns the requests and the conversion of `/v1/health/service/<name>` (every instance, with its
//! node and checks, whatever its health), `/v1/catalog/services` and KV reads of single keys
//! and prefixes into [`crate::ctmpl`] records, and the blocking watch of one KV key or prefix a
//! template reads. It must not loop, cache or render; the caller decides when to read.
//!
//! Unlike the catalog watcher's reads, nothing is validated or resolved here: templates print
//! what Consul holds, as consul-template does, and their output is checked by `haproxy -c`.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::ctmpl::{CatalogService, HealthCheck, KvPair as TemplateKvPair, ServiceEntry, Weights};

use super::blocking::{BlockingQuery, WatchHandle, WatchOptions, spawn_watch};
use super::catalog::require_ok;
use super::error::ConsulError;
use super::kv::{KvPair, decode_kv_list, kv_segments};
use super::transport::{GetRequest, Transport};
use super::wire::{CatalogServicesWire, HealthEntryWire};

fn convert_entry(e: HealthEntryWire) -> ServiceEntry {
    let weights = e.service.weights.map_or(
        Weights {
            passing: 1,
            warning: 1,
        },
        |w| Weights {
            passing: w.passing,
            warning: w.warning,
        },
    );
    ServiceEntry {
        node: e.node.node,
        node_address: e.node.address,
        id: e.service.id,
        name: e.service.service,
        address: e.service.address,
        port: e.service.port,
        tags: e.service.tags.unwrap_or_default(),
        service_meta: e.service.meta.unwrap_or_default(),
        weights,
        checks: e
            .checks
            .unwrap_or_default()
            .into_iter()
            .map(|c| HealthCheck {
                node: c.node,
                check_id: c.check_id,
                status: c.status,
                service_id: c.service_id,
                service_name: c.service_name,
                ..HealthCheck::default()
            })
            .collect(),
        ..ServiceEntry::default()
    }
}

fn convert_pair(p: KvPair) -> TemplateKvPair {
    TemplateKvPair {
        key: p.key,
        value: String::from_utf8_lossy(&p.value).into_owned(),
        create_index: p.create_index,
        modify_index: p.modify_index,
        lock_index: p.lock_index,
        flags: p.flags,
        session: p.session.unwrap_or_default(),
    }
}

/// The request for a KV key, or for every key under a prefix with `recurse`.
fn kv_request(path: &str, recurse: bool) -> GetRequest {
    GetRequest {
        segments: kv_segments(path.trim_start_matches('/')),
        query: if recurse {
            vec![("recurse".into(), String::new())]
        } else {
            Vec::new()
        },
        blocking: None,
    }
}

impl super::ConsulClient {
    /// Every instance of `service` with its node and checks, whatever its health, sorted by
    /// node then ID; empty when the service does not exist.
    pub async fn template_service(&self, service: &str) -> Result<Vec<ServiceEntry>, ConsulError> {
        let resp = self
            .get_raw(GetRequest::new(["v1", "health", "service", service]))
            .await?;
        let what = format!("health of service {service}");
        require_ok(&resp, &what)?;
        let wire: Vec<HealthEntryWire> =
            serde_json::from_slice(&resp.body).map_err(|e| ConsulError::decode(what, e))?;
        let mut out: Vec<ServiceEntry> = wire.into_iter().map(convert_entry).collect();
        out.sort_by(|a, b| (&a.node, &a.id).cmp(&(&b.node, &b.id)));
        Ok(out)
    }

    /// Every catalog service with its tags, sorted by name.
    pub async fn template_services(&self) -> Result<Vec<CatalogService>, ConsulError> {
        let resp = self
            .get_raw(GetRequest::new(["v1", "catalog", "services"]))
            .await?;
        require_ok(&resp, "catalog services")?;
        let wire: CatalogServicesWire = serde_json::from_slice(&resp.body)
            .map_err(|e| ConsulError::decode("catalog services", e))?;
        Ok(wire
            .into_iter()
            .map(|(name, mut tags)| {
                tags.sort();
                tags.dedup();
                CatalogService { name, tags }
            })
            .collect())
    }

    /// The pair at `path`, or `None` when the key does not exist.
    pub async fn template_key(&self, path: &str) -> Result<Option<TemplateKvPair>, ConsulError> {
        let resp = self.get_raw(kv_request(path, false)).await?;
        let wanted = path.trim_start_matches('/');
        Ok(decode_kv_list(&resp)?
            .into_iter()
            .find(|p| p.key == wanted)
            .map(convert_pair))
    }

    /// Every pair whose key starts with `prefix`, sorted by key.
    pub async fn template_list(&self, prefix: &str) -> Result<Vec<TemplateKvPair>, ConsulError> {
        let resp = self.get_raw(kv_request(prefix, true)).await?;
        Ok(decode_kv_list(&resp)?
            .into_iter()
            .map(convert_pair)
            .collect())
    }

    /// Watches one key (`recurse` false) or every key under a prefix a template reads; the
    /// handle is updated whenever the value(s) change.
    pub fn watch_template_kv(
        &self,
        path: &str,
        recurse: bool,
        options: WatchOptions,
        cancel: CancellationToken,
    ) -> WatchHandle<Vec<KvPair>> {
        watch_template_kv(Arc::new(self.clone()), path, recurse, options, cancel)
    }
}

/// [`super::ConsulClient::watch_template_kv`] over any transport. An empty `path` with
/// `recurse` watches the whole KV store.
pub fn watch_template_kv(
    transport: Arc<dyn Transport>,
    path: &str,
    recurse: bool,
    options: WatchOptions,
    cancel: CancellationToken,
) -> WatchHandle<Vec<KvPair>> {
    let query = BlockingQuery::new(kv_request(path, recurse), options.wait, decode_kv_list);
    spawn_watch(transport, query, options, cancel)
}
