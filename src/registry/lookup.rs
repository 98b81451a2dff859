//! Secondary indexes of the registry's store: instance IDs by service name, check IDs by the
//! service instance they are bound to, and the node-level check IDs.
//!
//! Owns: keeping these sets equal to what a scan of the store's `services` and `checks` maps
//! would find, so that a per-service read costs the instances and checks of that service, not
//! a scan of the whole catalog. They are derived data: never persisted, rebuilt from the maps
//! when a store is loaded ([`Lookup::rebuild`]).
//! Must not: decide anything about index entries (`store` moves those) or hold data of its own.

use std::collections::{BTreeMap, BTreeSet};

use super::store::{CheckRec, ServiceRec};

/// The derived lookups. Every insert or removal in the store's `services` and `checks` maps
/// goes through [`Lookup::add_service`], [`Lookup::remove_service`], [`Lookup::add_check`] and
/// [`Lookup::remove_check`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Lookup {
    /// Service name → IDs of its instances.
    by_name: BTreeMap<String, BTreeSet<String>>,
    /// Service instance ID → IDs of the checks bound to it.
    checks_of: BTreeMap<String, BTreeSet<String>>,
    /// IDs of the node-level checks (bound to no service).
    node_checks: BTreeSet<String>,
}

impl Lookup {
    /// Builds the lookups from the maps.
    pub fn rebuild<'a>(
        services: impl IntoIterator<Item = &'a ServiceRec>,
        checks: impl IntoIterator<Item = &'a CheckRec>,
    ) -> Lookup {
        let mut l = Lookup::default();
        for s in services {
            l.add_service(s);
        }
        for c in checks {
            l.add_check(c);
        }
        l
    }

    pub fn add_service(&mut self, rec: &ServiceRec) {
        self.by_name
            .entry(rec.def.name.clone())
            .or_default()
            .insert(rec.def.id.clone());
    }

    pub fn remove_service(&mut self, rec: &ServiceRec) {
        if let Some(ids) = self.by_name.get_mut(&rec.def.name) {
            ids.remove(&rec.def.id);
            if ids.is_empty() {
                self.by_name.remove(&rec.def.name);
            }
        }
    }

    pub fn add_check(&mut self, check: &CheckRec) {
        if check.service_id.is_empty() {
            self.node_checks.insert(check.check_id.clone());
        } else {
            self.checks_of
                .entry(check.service_id.clone())
                .or_default()
                .insert(check.check_id.clone());
        }
    }

    pub fn remove_check(&mut self, check: &CheckRec) {
        if check.service_id.is_empty() {
            self.node_checks.remove(&check.check_id);
        } else if let Some(ids) = self.checks_of.get_mut(&check.service_id) {
            ids.remove(&check.check_id);
            if ids.is_empty() {
                self.checks_of.remove(&check.service_id);
            }
        }
    }

    /// IDs of the instances of `name`, in ID order (the order of the `services` map).
    pub fn instances(&self, name: &str) -> impl Iterator<Item = &String> {
        self.by_name.get(name).into_iter().flatten()
    }

    /// Whether any instance of `name` exists.
    pub fn has_service(&self, name: &str) -> bool {
        self.by_name.contains_key(name)
    }

    /// Every service name with at least one instance.
    pub fn names(&self) -> impl Iterator<Item = &String> {
        self.by_name.keys()
    }

    /// IDs of the checks bound to the instance `service_id`, in ID order.
    pub fn checks_of(&self, service_id: &str) -> impl Iterator<Item = &String> {
        self.checks_of.get(service_id).into_iter().flatten()
    }

    /// IDs of the node-level checks, in ID order.
    pub fn node_checks(&self) -> impl Iterator<Item = &String> {
        self.node_checks.iter()
    }
}
