//! What changed between the live state and the one about to go live, in words for the log:
//! every reload and every runtime update is logged with it (which service, what changed).
//!
//! Owns: the comparison of two (intents, plan) pairs into a [`ChangeSummary`] and its one-line
//! rendering. Pure: no IO, no logging itself (the reconciler logs the summary).
//!
//! Must not: decide how a change is applied (`plan::diff` does) or influence it.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use crate::domain::{ServiceIntent, ServiceName};
use crate::plan::{Plan, Server, ServerState};

/// The changes of one apply, per service, sorted by service name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChangeSummary {
    /// Services newly routed.
    pub added: Vec<String>,
    /// Services no longer routed.
    pub removed: Vec<String>,
    /// Services whose routing parameters (paths, domains, templates...) changed.
    pub reconfigured: Vec<String>,
    /// Instance changes, per service: `+addr:port`, `-addr:port`, `~addr:port weight/state`.
    pub instances: BTreeMap<String, Vec<String>>,
}

impl ChangeSummary {
    /// Whether nothing a reader would care about changed.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty()
            && self.removed.is_empty()
            && self.reconfigured.is_empty()
            && self.instances.is_empty()
    }

    /// Counts the services whose custom template output differs between `live` and `next`
    /// as reconfigured (their intent may be unchanged: the data they read moved).
    pub fn templates_changed<T: PartialEq>(
        &mut self,
        live: &BTreeMap<ServiceName, T>,
        next: &BTreeMap<ServiceName, T>,
    ) {
        let names: BTreeSet<&ServiceName> = live.keys().chain(next.keys()).collect();
        for name in names {
            let name_text = name.to_string();
            let known = self.added.contains(&name_text)
                || self.removed.contains(&name_text)
                || self.reconfigured.contains(&name_text);
            if !known && live.get(name) != next.get(name) {
                self.reconfigured.push(name_text);
            }
        }
        self.reconfigured.sort();
    }

    /// The services concerned, sorted, without repeats.
    pub fn services(&self) -> Vec<String> {
        let all: BTreeSet<&String> = self
            .added
            .iter()
            .chain(&self.removed)
            .chain(&self.reconfigured)
            .chain(self.instances.keys())
            .collect();
        all.into_iter().cloned().collect()
    }
}

impl fmt::Display for ChangeSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        for (label, list) in [
            ("added", &self.added),
            ("removed", &self.removed),
            ("reconfigured", &self.reconfigured),
        ] {
            if !list.is_empty() {
                parts.push(format!("{label} {}", list.join(",")));
            }
        }
        for (service, changes) in &self.instances {
            parts.push(format!("{service} instances {}", changes.join(" ")));
        }
        if parts.is_empty() {
            f.write_str("no routing change")
        } else {
            f.write_str(&parts.join("; "))
        }
    }
}

fn servers(plan: &Plan, service: &ServiceName) -> BTreeMap<(String, u16), Server> {
    plan.backends
        .get(service)
        .map(|b| {
            b.slots
                .iter()
                .filter_map(|s| s.server.clone())
                .map(|s| ((s.addr.to_string(), s.port), s))
                .collect()
        })
        .unwrap_or_default()
}

fn describe(server: &Server) -> String {
    let state = match server.state {
        ServerState::Ready => "ready",
        ServerState::Maint => "maint",
    };
    format!("weight {} {state}", server.weight)
}

/// Compares the live intents and plan with the desired ones.
pub fn summarize(
    live_intents: &BTreeMap<ServiceName, ServiceIntent>,
    live_plan: &Plan,
    intents: &BTreeMap<ServiceName, ServiceIntent>,
    plan: &Plan,
) -> ChangeSummary {
    let mut summary = ChangeSummary::default();
    for (name, intent) in intents {
        match live_intents.get(name) {
            None => summary.added.push(name.to_string()),
            Some(live) if live != intent => summary.reconfigured.push(name.to_string()),
            Some(_) => {}
        }
    }
    for name in live_intents.keys() {
        if !intents.contains_key(name) {
            summary.removed.push(name.to_string());
        }
    }
    let services: BTreeSet<&ServiceName> = live_plan
        .backends
        .keys()
        .chain(plan.backends.keys())
        .collect();
    for service in services {
        let before = servers(live_plan, service);
        let after = servers(plan, service);
        let mut changes = Vec::new();
        for ((addr, port), server) in &after {
            match before.get(&(addr.clone(), *port)) {
                None => changes.push(format!("+{addr}:{port}")),
                Some(old) if old != server => {
                    changes.push(format!("~{addr}:{port} {}", describe(server)));
                }
                Some(_) => {}
            }
        }
        for (addr, port) in before.keys() {
            if !after.contains_key(&(addr.clone(), *port)) {
                changes.push(format!("-{addr}:{port}"));
            }
        }
        if !changes.is_empty() {
            summary.instances.insert(service.to_string(), changes);
        }
    }
    summary
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{CatalogSnapshot, Health, Instance};
    use crate::plan::test_support::svc;
    use crate::plan::{PlanSettings, SlotTable, plan};

    fn intent(name: &str, path: &str) -> ServiceIntent {
        crate::plan::test_support::intent(&[("serviceName", name), ("servicePath", path)])
    }

    fn inst(id: &str, port: u16, health: Health) -> Instance {
        crate::plan::test_support::inst("n1", id, "10.0.0.1", port, health)
    }

    fn state(
        list: &[ServiceIntent],
        instances: &[(&str, Vec<Instance>)],
    ) -> (BTreeMap<ServiceName, ServiceIntent>, Plan) {
        let intents: BTreeMap<_, _> = list.iter().map(|i| (i.name.clone(), i.clone())).collect();
        let mut catalog = CatalogSnapshot::default();
        for (name, list) in instances {
            catalog.set_service(svc(name), list.clone());
        }
        let settings = PlanSettings {
            health_filter: crate::plan::HealthFilter::Passing,
            ..PlanSettings::default()
        };
        let p = plan(&intents, &catalog, &SlotTable::default(), &settings);
        (intents, p)
    }

    #[test]
    fn services_and_instances_are_named() {
        let (li, lp) = state(
            &[intent("app", "/app"), intent("old", "/old")],
            &[("app", vec![inst("a1", 4000, Health::Passing)])],
        );
        let (ni, np) = state(
            &[intent("app", "/app,/v2"), intent("new", "/new")],
            &[(
                "app",
                vec![
                    inst("a2", 4001, Health::Passing),
                    inst("a3", 4002, Health::Passing),
                ],
            )],
        );
        let s = summarize(&li, &lp, &ni, &np);
        assert_eq!(s.added, ["new"]);
        assert_eq!(s.removed, ["old"]);
        assert_eq!(s.reconfigured, ["app"]);
        assert_eq!(
            s.instances["app"],
            ["+10.0.0.1:4001", "+10.0.0.1:4002", "-10.0.0.1:4000"]
        );
        assert_eq!(
            s.to_string(),
            "added new; removed old; reconfigured app; app instances +10.0.0.1:4001 +10.0.0.1:4002 -10.0.0.1:4000"
        );
        assert_eq!(s.services(), ["app", "new", "old"]);
    }

    #[test]
    fn changed_template_output_counts_as_reconfigured() {
        let mut s = ChangeSummary {
            added: vec!["new".into()],
            ..ChangeSummary::default()
        };
        let live: BTreeMap<_, _> = [(svc("a"), "x"), (svc("b"), "y")].into();
        let next: BTreeMap<_, _> = [(svc("a"), "x2"), (svc("b"), "y"), (svc("new"), "z")].into();
        s.templates_changed(&live, &next);
        assert_eq!(s.reconfigured, ["a"]);
        assert_eq!(s.to_string(), "added new; reconfigured a");
    }

    #[test]
    fn a_health_change_is_an_instance_change_and_no_change_says_so() {
        let (li, lp) = state(
            &[intent("app", "/app")],
            &[("app", vec![inst("a1", 4000, Health::Passing)])],
        );
        let (ni, np) = state(
            &[intent("app", "/app")],
            &[("app", vec![inst("a1", 4000, Health::Critical)])],
        );
        let s = summarize(&li, &lp, &ni, &np);
        assert_eq!(s.instances["app"], ["~10.0.0.1:4000 weight 1 maint"], "{s}");
        let same = summarize(&li, &lp, &li, &lp);
        assert!(same.is_empty());
        assert_eq!(same.to_string(), "no routing change");
    }
}
