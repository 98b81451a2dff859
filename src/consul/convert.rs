//! The boundary between wire types and domain types.
//!
//! Owns validation of everything read from Consul: a value that fails validation is dropped
//! with a `tracing::warn!` and never passed on. It must not do HTTP; address resolution goes
//! through the injected [`Resolver`].

use std::collections::{BTreeMap, BTreeSet};

use crate::domain::{
    Health, Instance, InstanceId, MetaKey, MetaValue, NodeName, ServiceName, Tag, Weights,
};

use super::resolve::{Resolver, resolve_address};
use super::wire::{CatalogServicesWire, HealthCheckWire, HealthEntryWire, WeightsWire};

/// Validated `/v1/catalog/services`: name to the union of tags.
pub type ServiceTags = BTreeMap<ServiceName, BTreeSet<Tag>>;

/// Validates the catalog service list; invalid names are dropped with a warning, invalid tags
/// are dropped from their service.
pub fn convert_services(wire: CatalogServicesWire) -> ServiceTags {
    let mut out = BTreeMap::new();
    for (name, tags) in wire {
        let name = match ServiceName::new(name) {
            Ok(n) => n,
            Err(error) => {
                tracing::warn!(%error, "ignoring service with an invalid name");
                continue;
            }
        };
        let tags = tags
            .into_iter()
            .filter_map(|t| match Tag::new(t) {
                Ok(t) => Some(t),
                Err(error) => {
                    tracing::warn!(service = %name, %error, "ignoring invalid tag");
                    None
                }
            })
            .collect();
        out.insert(name, tags);
    }
    out
}

/// The health of one check: maintenance checks are recognised by their IDs
/// (`_node_maintenance`, `_service_maintenance:<id>`); unknown statuses count as critical.
pub fn check_health(check: &HealthCheckWire) -> Health {
    if check.check_id == "_node_maintenance" || check.check_id.starts_with("_service_maintenance:")
    {
        return Health::Maintenance;
    }
    match check.status.as_str() {
        "passing" => Health::Passing,
        "warning" => Health::Warning,
        "critical" => Health::Critical,
        other => {
            tracing::warn!(check = %check.check_id, status = other, "unknown check status, treating it as critical");
            Health::Critical
        }
    }
}

fn convert_weights(w: Option<WeightsWire>) -> Option<Weights> {
    match w {
        None => Some(Weights::default()),
        Some(w) => Some(Weights {
            passing: u32::try_from(w.passing).ok()?,
            warning: u32::try_from(w.warning).ok()?,
        }),
    }
}

/// Converts one `/v1/health/service/<service>` entry, or explains why it is dropped.
async fn convert_entry(
    service: &ServiceName,
    entry: HealthEntryWire,
    resolver: &dyn Resolver,
) -> Result<Instance, String> {
    if entry.service.service != service.as_str() {
        return Err(format!(
            "entry belongs to service {:?}",
            entry.service.service
        ));
    }
    let id = InstanceId::new(entry.service.id.clone()).map_err(|e| e.to_string())?;
    let node = NodeName::new(entry.node.node.clone()).map_err(|e| e.to_string())?;
    let port = u16::try_from(entry.service.port)
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| format!("invalid port {}", entry.service.port))?;
    let raw_address = if entry.service.address.is_empty() {
        entry.node.address.as_str()
    } else {
        entry.service.address.as_str()
    };
    if raw_address.is_empty() {
        return Err("no service or node address".into());
    }
    let address = resolve_address(resolver, raw_address)
        .await
        .ok_or_else(|| format!("cannot resolve address {raw_address:?}"))?;
    if address.is_unspecified() || address.is_multicast() {
        return Err(format!("unusable address {address}"));
    }
    let tags = entry
        .service
        .tags
        .unwrap_or_default()
        .into_iter()
        .map(Tag::new)
        .collect::<Result<BTreeSet<_>, _>>()
        .map_err(|e| e.to_string())?;
    let meta = entry
        .service
        .meta
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| Ok((MetaKey::new(k)?, MetaValue::new(v)?)))
        .collect::<Result<BTreeMap<_, _>, crate::domain::ValidationError>>()
        .map_err(|e| e.to_string())?;
    let weights =
        convert_weights(entry.service.weights).ok_or_else(|| "invalid weights".to_owned())?;
    let health = Health::aggregate(entry.checks.unwrap_or_default().iter().map(check_health));
    Ok(Instance {
        id,
        node,
        address,
        port,
        tags,
        meta,
        health,
        weights,
    })
}

/// Converts the entries of `/v1/health/service/<service>`, dropping (with a warning) every
/// instance with an invalid value or an unresolvable address. One bad instance never affects
/// the others.
pub async fn convert_health_entries(
    service: &ServiceName,
    entries: Vec<HealthEntryWire>,
    resolver: &dyn Resolver,
) -> Vec<Instance> {
    let mut out = Vec::with_capacity(entries.len());
    for entry in entries {
        let raw_id = entry.service.id.clone();
        let raw_node = entry.node.node.clone();
        match convert_entry(service, entry, resolver).await {
            Ok(instance) => out.push(instance),
            Err(reason) => tracing::warn!(
                service = %service,
                instance = ?raw_id,
                node = ?raw_node,
                %reason,
                "dropping invalid instance"
            ),
        }
    }
    out
}

/// The part of a check that matters for change detection (output and notes are ignored).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CheckState {
    /// Node of the check.
    pub node: String,
    /// Check ID.
    pub check_id: String,
    /// Status.
    pub status: String,
    /// Service ID, empty for node-level checks.
    pub service_id: String,
    /// Service name, empty for node-level checks.
    pub service_name: String,
}

/// Reduces `/v1/health/state/any` to the comparable check states, sorted.
pub fn reduce_checks(wire: Vec<HealthCheckWire>) -> Vec<CheckState> {
    let mut out: Vec<CheckState> = wire
        .into_iter()
        .map(|c| CheckState {
            node: c.node,
            check_id: c.check_id,
            status: c.status,
            service_id: c.service_id,
            service_name: c.service_name,
        })
        .collect();
    out.sort();
    out
}
