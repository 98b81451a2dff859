//! Reads for custom templates: Consul data in the shape the template engine reads it.
//!
//! Owns the requests and the conversion of `/v1/health/service/<name>` (every instance, with its
//! node and checks, whatever its health), `/v1/catalog/services` and KV reads of single keys
//! and prefixes into [`crate::ctmpl`] records, and the blocking watch of a KV key or prefix
//! (custom templates watch the common prefix of everything they read with one). It must not
//! loop, cache or render; the caller decides when to read.
//!
//! Unlike the catalog watcher's reads, nothing is resolved here: templates print what Consul
//! holds, as consul-template does, and their output is checked by `haproxy -c`. Every string of
//! a service instance (name, ID, node, addresses, tags, meta, check fields) and of the service
//! list still passes the domain's validated types, so that no registration can smuggle a line,
//! a quote or a comment into `haproxy.cfg` through a template: an instance with an invalid
//! value is dropped with a warning, an invalid name or tag leaves the service list. KV values
//! are printed as written (they are the operator's own configuration).

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::ctmpl::{CatalogService, HealthCheck, KvPair as TemplateKvPair, ServiceEntry, Weights};
use crate::domain::{InstanceId, MetaKey, MetaValue, NodeName, ServiceName, Tag, ValidationError};

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
        node_id: e.node.id,
        node_address: e.node.address,
        node_meta: string_values(e.node.meta),
        node_tagged_addresses: string_values(e.node.tagged_addresses),
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
                name: c.name,
                status: c.status,
                notes: c.notes,
                output: c.output,
                service_id: c.service_id,
                service_name: c.service_name,
            })
            .collect(),
    }
}

/// The string values of a JSON map (other values are skipped).
fn string_values(map: Option<BTreeMap<String, serde_json::Value>>) -> BTreeMap<String, String> {
    map.unwrap_or_default()
        .into_iter()
        .filter_map(|(k, v)| match v {
            serde_json::Value::String(s) => Some((k, s)),
            _ => None,
        })
        .collect()
}

/// Checks every string of an instance against the domain's types (addresses and check fields
/// as free text: visible ASCII without quotes, backslashes or `#`).
fn check_entry(e: &ServiceEntry) -> Result<(), ValidationError> {
    ServiceName::new(e.name.as_str())?;
    InstanceId::new(e.id.as_str())?;
    NodeName::new(e.node.as_str())?;
    MetaValue::new(e.address.as_str())?;
    MetaValue::new(e.node_address.as_str())?;
    for t in &e.tags {
        Tag::new(t.as_str())?;
    }
    for (k, v) in &e.service_meta {
        MetaKey::new(k.as_str())?;
        MetaValue::new(v.as_str())?;
    }
    for c in &e.checks {
        for field in [
            &c.node,
            &c.check_id,
            &c.status,
            &c.service_id,
            &c.service_name,
        ] {
            MetaValue::new(field.as_str())?;
        }
    }
    Ok(())
}

/// The entries whose every value is valid; the others are dropped with a warning.
fn valid_entries(service: &str, entries: Vec<ServiceEntry>) -> Vec<ServiceEntry> {
    entries
        .into_iter()
        .filter(|e| match check_entry(e) {
            Ok(()) => true,
            Err(error) => {
                tracing::warn!(service, instance = ?e.id, %error, "template data: dropping invalid instance");
                false
            }
        })
        .collect()
}

/// The services whose name is valid, each with its valid tags.
fn valid_services(wire: CatalogServicesWire) -> Vec<CatalogService> {
    wire.into_iter()
        .filter_map(|(name, tags)| {
            if let Err(error) = ServiceName::new(name.as_str()) {
                tracing::warn!(%error, "template data: ignoring service with an invalid name");
                return None;
            }
            let mut tags: Vec<String> = tags
                .into_iter()
                .filter(|t| Tag::new(t.as_str()).is_ok())
                .collect();
            tags.sort();
            tags.dedup();
            Some(CatalogService { name, tags })
        })
        .collect()
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
        let mut out = valid_entries(service, wire.into_iter().map(convert_entry).collect());
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
        Ok(valid_services(wire))
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Consul's documentation sample of `/v1/health/service/:name`, with check notes and output
    /// and a node meta value that is not a string.
    const SAMPLE: &str = r#"[{"Node":{"ID":"40e4a748-2192-161a-0510-9bf59fe950b5","Node":"foobar","Address":"10.1.10.12","Datacenter":"dc1",
          "TaggedAddresses":{"lan":"10.1.10.12","wan":"10.1.10.13"},"Meta":{"instance_type":"t2.medium","odd":7}},
  "Service":{"ID":"redis","Service":"redis","Tags":["primary"],"Address":"10.1.10.12",
             "TaggedAddresses":{"lan":{"address":"10.1.10.12","port":8000}},
             "Meta":{"redis_version":"4.0"},"Port":8000,"Weights":{"Passing":10,"Warning":1},"Namespace":"default"},
  "Checks":[{"Node":"foobar","CheckID":"service:redis","Name":"Service 'redis' check","Status":"passing",
             "Notes":"checks redis","Output":"PONG","ServiceID":"redis","ServiceName":"redis","ServiceTags":["primary"],"Namespace":"default"},
            {"Node":"foobar","CheckID":"serfHealth","Name":"Serf Health Status","Status":"passing","Notes":"",
             "Output":"Agent alive and reachable","ServiceID":"","ServiceName":"","ServiceTags":[],"Namespace":"default"}]}]"#;

    #[test]
    fn health_entries_keep_node_and_check_fields() {
        let wire: Vec<HealthEntryWire> = serde_json::from_str(SAMPLE).unwrap();
        let e = convert_entry(wire.into_iter().next().unwrap());
        assert_eq!(e.node_id, "40e4a748-2192-161a-0510-9bf59fe950b5");
        assert_eq!(e.node_address, "10.1.10.12");
        assert_eq!(
            e.node_tagged_addresses,
            [("lan", "10.1.10.12"), ("wan", "10.1.10.13")]
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .into()
        );
        // A value that is not a string is skipped, not a failed read.
        assert_eq!(
            e.node_meta,
            [("instance_type".to_owned(), "t2.medium".to_owned())].into()
        );
        assert_eq!(
            e.weights,
            Weights {
                passing: 10,
                warning: 1
            }
        );
        let names: Vec<(&str, &str, &str)> = e
            .checks
            .iter()
            .map(|c| (c.name.as_str(), c.notes.as_str(), c.output.as_str()))
            .collect();
        assert_eq!(
            names,
            [
                ("Service 'redis' check", "checks redis", "PONG"),
                ("Serf Health Status", "", "Agent alive and reachable"),
            ]
        );
    }

    fn entry() -> ServiceEntry {
        ServiceEntry {
            node: "node1".into(),
            node_address: "10.0.0.1".into(),
            id: "host:app_1:8080".into(),
            name: "app".into(),
            address: "10.0.0.2".into(),
            port: 8080,
            tags: vec!["v1".into()],
            service_meta: [("k".to_owned(), "v".to_owned())].into(),
            ..ServiceEntry::default()
        }
    }

    #[test]
    fn instances_with_unsafe_values_are_dropped() {
        let mut bad = Vec::new();
        for v in ["a\nb", "a b", "a#b", "a\"b", "x'", "`", "a\\b", "\r"] {
            let v = v.to_owned();
            let mut e = entry();
            e.address = v.clone();
            bad.push(e);
            let mut e = entry();
            e.node_address = v.clone();
            bad.push(e);
            let mut e = entry();
            e.tags.push(v.clone());
            bad.push(e);
            let mut e = entry();
            e.service_meta.insert("k".into(), v.clone());
            bad.push(e);
            let mut e = entry();
            e.node = v.clone();
            bad.push(e);
            let mut e = entry();
            e.id = v.clone();
            bad.push(e);
        }
        let n = bad.len();
        let mut all = bad;
        all.push(entry());
        let kept = valid_entries("app", all);
        assert_eq!(kept, vec![entry()], "{n} invalid entries should be dropped");
    }

    #[test]
    fn service_list_keeps_only_valid_names_and_tags() {
        let wire: CatalogServicesWire = [
            (
                "app".to_owned(),
                vec!["b".to_owned(), "a b".to_owned(), "a".to_owned()],
            ),
            ("bad name".to_owned(), vec![]),
            ("x\ny".to_owned(), vec![]),
        ]
        .into_iter()
        .collect();
        let out = valid_services(wire);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].name, "app");
        assert_eq!(out[0].tags, vec!["a".to_owned(), "b".to_owned()]);
    }
}
