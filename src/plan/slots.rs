//! Server slot assignment for zero-reload scaling.
//!
//! Owns: [`SlotTable`], which remembers per backend its slot count and which instance holds
//! which slot, and the assignment rule: an instance keeps its slot while it lives, new
//! instances take the lowest free slot, the slot count is a power of two at least the
//! configured minimum and doubles when instances outgrow it, and it never shrinks while the
//! service exists.
//!
//! Pure: no IO.

use std::collections::{BTreeMap, BTreeSet};

use super::{PlanSettings, Server, ServerState, Slot, SlotName};
use crate::domain::{Health, Instance, InstanceId, NodeName, ServiceName};

/// The identity of an instance: Consul service, node and service ID.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct InstanceKey {
    /// The Consul service (the colored name when a color is set).
    pub service: ServiceName,
    /// The node.
    pub node: NodeName,
    /// The service ID on that node.
    pub id: InstanceId,
}

/// The slots of one backend.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BackendSlots {
    /// Number of slots (a power of two).
    pub capacity: u32,
    /// Which instance holds which slot index (0-based).
    pub assigned: BTreeMap<InstanceKey, u32>,
}

/// Slot assignments of every backend, keyed by the intent's service name. Start with
/// `SlotTable::default()` and pass each plan's table to the next round.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SlotTable {
    backends: BTreeMap<ServiceName, BackendSlots>,
}

impl SlotTable {
    /// The slots of one backend, if known.
    pub fn backend(&self, service: &ServiceName) -> Option<&BackendSlots> {
        self.backends.get(service)
    }

    pub(super) fn insert(&mut self, service: ServiceName, slots: BackendSlots) {
        self.backends.insert(service, slots);
    }

    /// Every backend's slots.
    pub fn iter(&self) -> impl Iterator<Item = (&ServiceName, &BackendSlots)> {
        self.backends.iter()
    }
}

/// The smallest power of two ≥ `n` (at least 1), saturating at 2^31.
fn pow2_at_least(n: usize) -> u32 {
    let n = u32::try_from(n.max(1)).unwrap_or(u32::MAX);
    n.checked_next_power_of_two().unwrap_or(1 << 31)
}

fn server_for(instance: &Instance, settings: &PlanSettings) -> Server {
    let raw_weight = if instance.health == Health::Warning {
        instance.weights.warning
    } else {
        instance.weights.passing
    };
    let weight = u16::try_from(raw_weight.min(256)).unwrap_or(256);
    let state = if settings.health_filter.admits(instance.health) {
        ServerState::Ready
    } else {
        ServerState::Maint
    };
    Server {
        addr: instance.address,
        port: instance.port,
        weight,
        state,
    }
}

/// Assigns `instances` (sorted by node and id) of `catalog_service` to slots.
pub(super) fn assign(
    previous: Option<&BackendSlots>,
    catalog_service: &ServiceName,
    instances: &[Instance],
    settings: &PlanSettings,
) -> (Vec<Slot>, BackendSlots) {
    let min = pow2_at_least(settings.min_slots as usize);
    let mut capacity = previous.map_or(0, |p| p.capacity).max(min);
    if (capacity as usize) < instances.len() {
        capacity = capacity.max(pow2_at_least(instances.len()));
    }
    // Each instance's key is built once: cloning names is most of the cost at scale.
    let keys: Vec<InstanceKey> = instances
        .iter()
        .map(|i| InstanceKey {
            service: catalog_service.clone(),
            node: i.node.clone(),
            id: i.id.clone(),
        })
        .collect();
    let live: BTreeSet<&InstanceKey> = keys.iter().collect();
    let mut assigned: BTreeMap<InstanceKey, u32> = previous
        .map(|p| {
            p.assigned
                .iter()
                .filter(|(k, idx)| live.contains(k) && **idx < capacity)
                .map(|(k, idx)| (k.clone(), *idx))
                .collect()
        })
        .unwrap_or_default();
    let mut used: BTreeSet<u32> = assigned.values().copied().collect();
    let mut next_free = 0u32;
    let mut slot_of = Vec::with_capacity(keys.len());
    for key in &keys {
        let idx = match assigned.get(key) {
            Some(idx) => *idx,
            None => {
                while used.contains(&next_free) {
                    next_free += 1;
                }
                used.insert(next_free);
                assigned.insert(key.clone(), next_free);
                next_free
            }
        };
        slot_of.push(idx);
    }
    let mut slots: Vec<Slot> = (0..capacity)
        .map(|i| Slot {
            name: SlotName(i),
            server: None,
        })
        .collect();
    for (instance, idx) in instances.iter().zip(slot_of) {
        if let Some(slot) = slots.get_mut(idx as usize) {
            slot.server = Some(server_for(instance, settings));
        }
    }
    (slots, BackendSlots { capacity, assigned })
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::super::*;

    fn addrs(p: &Plan, s: &str) -> Vec<String> {
        p.backends[&svc(s)]
            .slots
            .iter()
            .map(|s| match &s.server {
                Some(x) => x.addr.to_string(),
                None => "-".into(),
            })
            .collect()
    }

    #[test]
    fn slots_are_stable_grow_by_doubling_and_never_shrink() {
        let ints = intents(vec![intent(&[
            ("serviceName", "web"),
            ("servicePath", "/"),
        ])]);
        let settings = PlanSettings::default();
        let mk = |ids: &[u8]| {
            let mut cat = CatalogSnapshot::new();
            cat.set_service(
                svc("web"),
                ids.iter()
                    .map(|i| {
                        inst(
                            "n",
                            &format!("i{i}"),
                            &format!("10.0.0.{i}"),
                            80,
                            Health::Passing,
                        )
                    })
                    .collect(),
            );
            cat
        };
        let p1 = plan(&ints, &mk(&[1, 2, 3]), &SlotTable::default(), &settings);
        assert_eq!(addrs(&p1, "web"), ["10.0.0.1", "10.0.0.2", "10.0.0.3", "-"]);
        // 2 leaves, 4 and 5 arrive: 4 takes the freed slot, 5 the last one.
        let p2 = plan(&ints, &mk(&[1, 3, 4, 5]), &p1.slots, &settings);
        assert_eq!(
            addrs(&p2, "web"),
            ["10.0.0.1", "10.0.0.4", "10.0.0.3", "10.0.0.5"]
        );
        // Growth doubles and keeps existing assignments.
        let p3 = plan(&ints, &mk(&[1, 3, 4, 5, 6]), &p2.slots, &settings);
        assert_eq!(
            addrs(&p3, "web"),
            [
                "10.0.0.1", "10.0.0.4", "10.0.0.3", "10.0.0.5", "10.0.0.6", "-", "-", "-"
            ]
        );
        // Shrinking the instance count keeps the slot count.
        let p4 = plan(&ints, &mk(&[6]), &p3.slots, &settings);
        assert_eq!(
            addrs(&p4, "web"),
            ["-", "-", "-", "-", "10.0.0.6", "-", "-", "-"]
        );
        // Removing the service forgets its slots.
        let p5 = plan(&BTreeMap::new(), &mk(&[6]), &p4.slots, &settings);
        assert!(p5.slots.backend(&svc("web")).is_none());
        let p6 = plan(&ints, &mk(&[6]), &p5.slots, &settings);
        assert_eq!(addrs(&p6, "web"), ["10.0.0.6", "-", "-", "-"]);
        // From scratch, 9 instances need 16 slots.
        let p7 = plan(
            &ints,
            &mk(&[1, 2, 3, 4, 5, 6, 7, 8, 9]),
            &SlotTable::default(),
            &settings,
        );
        assert_eq!(p7.backends[&svc("web")].slots.len(), 16);
    }
}
