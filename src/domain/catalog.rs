//! Service instances and the catalog snapshot.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use super::{Health, InstanceId, MetaKey, MetaValue, NodeName, ServiceName, Tag};

/// DNS/load-balancing weights of an instance (Consul's `Weights`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Weights {
    /// Weight while passing.
    pub passing: u32,
    /// Weight while warning.
    pub warning: u32,
}

impl Default for Weights {
    /// Consul's default for agent-registered services: `{"Passing":1,"Warning":1}`.
    fn default() -> Self {
        Weights {
            passing: 1,
            warning: 1,
        }
    }
}

/// One validated instance of a service.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Instance {
    /// The service ID, unique per node.
    pub id: InstanceId,
    /// The node hosting the instance.
    pub node: NodeName,
    /// The resolved address (service address, or the node address when that is empty).
    pub address: IpAddr,
    /// The service port, never 0.
    pub port: u16,
    /// The instance's tags.
    pub tags: BTreeSet<Tag>,
    /// The instance's metadata.
    pub meta: BTreeMap<MetaKey, MetaValue>,
    /// Aggregated node and service check status.
    pub health: Health,
    /// Weights.
    pub weights: Weights,
}

impl Instance {
    /// The deterministic ordering key of an instance within its service.
    fn sort_key(&self) -> (&NodeName, &InstanceId) {
        (&self.node, &self.id)
    }
}

/// The catalog as seen by flow-proxy: the instances of every tracked service.
///
/// Instances are sorted by `(node, id)` and unique on that pair, so equal catalogs compare equal
/// and render identically.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CatalogSnapshot {
    /// Service name to its instances, sorted by `(node, id)`.
    pub services: BTreeMap<ServiceName, Vec<Instance>>,
}

impl CatalogSnapshot {
    /// An empty snapshot.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the instances of `service`, sorting them and dropping duplicate `(node, id)` pairs
    /// (the first one wins).
    pub fn set_service(&mut self, service: ServiceName, instances: Vec<Instance>) {
        self.services
            .insert(service, normalize_instances(instances));
    }

    /// Removes a service.
    pub fn remove_service(&mut self, service: &ServiceName) -> Option<Vec<Instance>> {
        self.services.remove(service)
    }

    /// The instances of `service`, if it is tracked.
    pub fn instances(&self, service: &ServiceName) -> Option<&[Instance]> {
        self.services.get(service).map(Vec::as_slice)
    }

    /// Names of the services with at least one instance on `node`.
    pub fn services_on_node(&self, node: &NodeName) -> BTreeSet<ServiceName> {
        self.services
            .iter()
            .filter(|(_, instances)| instances.iter().any(|i| &i.node == node))
            .map(|(name, _)| name.clone())
            .collect()
    }
}

/// Sorts instances by `(node, id)` and drops duplicates of that key, keeping the first.
pub(crate) fn normalize_instances(mut instances: Vec<Instance>) -> Vec<Instance> {
    instances.sort_by(|a, b| a.sort_key().cmp(&b.sort_key()));
    instances.dedup_by(|b, a| a.sort_key() == b.sort_key());
    instances
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inst(node: &str, id: &str, port: u16) -> Instance {
        Instance {
            id: InstanceId::new(id).unwrap(),
            node: NodeName::new(node).unwrap(),
            address: "10.0.0.1".parse().unwrap(),
            port,
            tags: BTreeSet::new(),
            meta: BTreeMap::new(),
            health: Health::Passing,
            weights: Weights::default(),
        }
    }

    #[test]
    fn instances_are_sorted_and_deduplicated() {
        let mut a = CatalogSnapshot::new();
        let svc = ServiceName::new("web").unwrap();
        a.set_service(
            svc.clone(),
            vec![
                inst("n2", "b", 1),
                inst("n1", "z", 2),
                inst("n1", "a", 3),
                inst("n1", "a", 4),
            ],
        );
        let got: Vec<_> = a.instances(&svc).unwrap().iter().map(|i| i.port).collect();
        assert_eq!(got, vec![3, 2, 1]);

        let mut b = CatalogSnapshot::new();
        b.set_service(
            svc,
            vec![inst("n1", "z", 2), inst("n2", "b", 1), inst("n1", "a", 3)],
        );
        assert_eq!(a, b);
        assert_eq!(a.services_on_node(&NodeName::new("n2").unwrap()).len(), 1);
    }
}
