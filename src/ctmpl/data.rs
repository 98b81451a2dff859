//! The data interface between the template engine and the caller's snapshot.
//!
//! Owns [`DataSource`] (implemented by the caller over data it has already fetched), the records
//! it returns ([`ServiceEntry`], [`HealthCheck`], [`CatalogService`], [`KvPair`]) and the
//! [`Dependencies`] a render reports. Nothing here performs IO: a `DataSource` answers from memory.

use std::collections::{BTreeMap, BTreeSet};

/// An error raised by a [`DataSource`], e.g. because the snapshot lacks the requested data.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DataError(pub String);

/// Read access to an already-fetched snapshot of Consul data.
///
/// Implementations must not block or perform IO: the engine calls them while rendering.
pub trait DataSource {
    /// Instances of `name` (only those carrying `tag` when it is given), whatever their health.
    /// The engine applies the health filter, the tag check and the ordering itself.
    fn service(&self, name: &str, tag: Option<&str>) -> Result<Vec<ServiceEntry>, DataError>;
    /// Every service in the catalog, with its tags.
    fn services(&self) -> Result<Vec<CatalogService>, DataError>;
    /// The raw value of `path`, or `None` when the key does not exist.
    fn key(&self, path: &str) -> Result<Option<String>, DataError>;
    /// Every pair whose key starts with `prefix`, recursively (as `?recurse` returns them).
    fn list(&self, prefix: &str) -> Result<Vec<KvPair>, DataError>;
}

/// One health check attached to a service instance or its node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HealthCheck {
    pub node: String,
    pub check_id: String,
    pub name: String,
    /// `passing`, `warning`, `critical` (maintenance checks are critical with a special ID).
    pub status: String,
    pub notes: String,
    pub output: String,
    pub service_id: String,
    pub service_name: String,
}

/// Service weights, as Consul reports them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Weights {
    pub passing: i64,
    pub warning: i64,
}

/// One instance of a service with its node and health checks (a `/v1/health/service` entry).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServiceEntry {
    pub node: String,
    pub node_id: String,
    pub node_address: String,
    pub node_meta: BTreeMap<String, String>,
    pub node_tagged_addresses: BTreeMap<String, String>,
    pub id: String,
    pub name: String,
    /// The service address; the engine falls back to `node_address` when it is empty.
    pub address: String,
    pub port: i64,
    pub tags: Vec<String>,
    pub service_meta: BTreeMap<String, String>,
    pub weights: Weights,
    /// Node and service checks; `.Status` is aggregated from them.
    pub checks: Vec<HealthCheck>,
}

/// Check ID Consul uses for node maintenance mode.
const NODE_MAINT: &str = "_node_maintenance";
/// Check ID prefix Consul uses for service maintenance mode.
const SERVICE_MAINT_PREFIX: &str = "_service_maintenance:";

impl ServiceEntry {
    /// The aggregated health status, as the Consul API computes it: `maintenance` when a
    /// maintenance check is present, else the worst of `critical` > `warning` > `passing`
    /// (`passing` without checks), or `""` when a check has an unknown status.
    pub fn aggregated_status(&self) -> &'static str {
        let (mut warning, mut critical, mut maintenance) = (false, false, false);
        for check in &self.checks {
            if check.check_id == NODE_MAINT || check.check_id.starts_with(SERVICE_MAINT_PREFIX) {
                maintenance = true;
                continue;
            }
            match check.status.as_str() {
                "passing" => {}
                "warning" => warning = true,
                "critical" => critical = true,
                _ => return "",
            }
        }
        if maintenance {
            "maintenance"
        } else if critical {
            "critical"
        } else if warning {
            "warning"
        } else {
            "passing"
        }
    }
}

/// One catalog service: its name and tags.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CatalogService {
    pub name: String,
    pub tags: Vec<String>,
}

/// One KV pair as the KV store returns it; `key` is the full path.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KvPair {
    pub key: String,
    pub value: String,
    pub create_index: u64,
    pub modify_index: u64,
    pub lock_index: u64,
    pub flags: u64,
    pub session: String,
}

/// A ready-made in-memory [`DataSource`]: services by name and KV pairs by full key.
///
/// Callers that hold a snapshot in another shape can convert it into this once per render.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StaticSource {
    /// Instances by service name, whatever their health.
    pub services: BTreeMap<String, Vec<ServiceEntry>>,
    /// KV pairs by full key (`KvPair::key` is expected to equal the map key).
    pub kv: BTreeMap<String, KvPair>,
}

impl StaticSource {
    /// Adds a service instance under its `name`.
    pub fn add_service(&mut self, entry: ServiceEntry) {
        self.services
            .entry(entry.name.clone())
            .or_default()
            .push(entry);
    }

    /// Sets a KV pair with zero indexes and flags.
    pub fn set_key(&mut self, key: &str, value: &str) {
        self.kv.insert(
            key.to_string(),
            KvPair {
                key: key.to_string(),
                value: value.to_string(),
                ..KvPair::default()
            },
        );
    }
}

impl DataSource for StaticSource {
    fn service(&self, name: &str, tag: Option<&str>) -> Result<Vec<ServiceEntry>, DataError> {
        Ok(self
            .services
            .get(name)
            .into_iter()
            .flatten()
            .filter(|e| tag.is_none_or(|t| e.tags.iter().any(|x| x == t)))
            .cloned()
            .collect())
    }

    fn services(&self) -> Result<Vec<CatalogService>, DataError> {
        Ok(self
            .services
            .iter()
            .filter(|(_, entries)| !entries.is_empty())
            .map(|(name, entries)| {
                let tags: BTreeSet<&String> = entries.iter().flat_map(|e| &e.tags).collect();
                CatalogService {
                    name: name.clone(),
                    tags: tags.into_iter().cloned().collect(),
                }
            })
            .collect())
    }

    fn key(&self, path: &str) -> Result<Option<String>, DataError> {
        Ok(self.kv.get(path).map(|p| p.value.clone()))
    }

    fn list(&self, prefix: &str) -> Result<Vec<KvPair>, DataError> {
        Ok(self
            .kv
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(_, p)| p.clone())
            .collect())
    }
}

/// A `service` query as a template used it: name, optional tag and the sorted health filters
/// (`["passing"]` by default, `["any"]` for everything).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServiceQuery {
    pub name: String,
    pub tag: Option<String>,
    pub filters: Vec<String>,
}

/// Everything a render read, so the caller can re-render when exactly these change.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Dependencies {
    /// `service` queries.
    pub services: BTreeSet<ServiceQuery>,
    /// True when the template called `services` (the catalog's service list).
    pub catalog_services: bool,
    /// Single keys read by `key`, `keyOrDefault` and `keyExists`.
    pub keys: BTreeSet<String>,
    /// Prefixes listed by `ls`, `tree`, `safeLs` and `safeTree`.
    pub prefixes: BTreeSet<String>,
}

impl Dependencies {
    /// True when the template read no Consul data at all.
    pub fn is_empty(&self) -> bool {
        self.services.is_empty()
            && !self.catalog_services
            && self.keys.is_empty()
            && self.prefixes.is_empty()
    }
}
