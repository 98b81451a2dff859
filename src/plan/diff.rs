//! The difference between the live plan and the desired one.
//!
//! Owns: [`diff()`], which decides whether two plans differ only in slot contents (addresses,
//! ports, weights, states: [`Change::Runtime`] commands for HAProxy's runtime API) or in
//! structure (services, routes, check flags, slot counts, routing options, settings:
//! [`Change::Reload`]), and the text of those runtime commands, built only from validated
//! types.
//!
//! Pure: no IO. Sending the commands is the caller's job.

use std::fmt;
use std::net::IpAddr;

use super::{BackendName, PARKED_ADDR, PARKED_PORT, Plan, Server, ServerState, SlotName};

/// A server's administrative state as set through the runtime API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ServerAdminState {
    /// Takes traffic.
    Ready,
    /// Finishes existing connections, takes no new ones.
    Drain,
    /// Maintenance: no traffic, no checks.
    Maint,
}

impl ServerAdminState {
    /// The runtime API keyword.
    pub fn as_str(self) -> &'static str {
        match self {
            ServerAdminState::Ready => "ready",
            ServerAdminState::Drain => "drain",
            ServerAdminState::Maint => "maint",
        }
    }
}

/// One runtime API command. `Display` gives the command line (without the newline).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuntimeCommand {
    /// `set server <b>/<s> addr <ip> port <p>`
    SetAddr {
        /// Backend.
        backend: BackendName,
        /// Slot.
        server: SlotName,
        /// New address.
        addr: IpAddr,
        /// New port.
        port: u16,
    },
    /// `set server <b>/<s> state ready|drain|maint`
    SetState {
        /// Backend.
        backend: BackendName,
        /// Slot.
        server: SlotName,
        /// New state.
        state: ServerAdminState,
    },
    /// `set server <b>/<s> weight <w>`
    SetWeight {
        /// Backend.
        backend: BackendName,
        /// Slot.
        server: SlotName,
        /// New weight (0 to 256).
        weight: u16,
    },
}

impl fmt::Display for RuntimeCommand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RuntimeCommand::SetAddr {
                backend,
                server,
                addr,
                port,
            } => write!(f, "set server {backend}/{server} addr {addr} port {port}"),
            RuntimeCommand::SetState {
                backend,
                server,
                state,
            } => write!(f, "set server {backend}/{server} state {}", state.as_str()),
            RuntimeCommand::SetWeight {
                backend,
                server,
                weight,
            } => write!(f, "set server {backend}/{server} weight {weight}"),
        }
    }
}

/// What it takes to go from the live plan to the desired one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Nothing to send to HAProxy. The desired plan should still become the live one: its
    /// slot table may differ in bookkeeping that is not visible in the configuration.
    None,
    /// Runtime commands, in order; the configuration file should be rewritten to match.
    Runtime(Vec<RuntimeCommand>),
    /// A structural change: render, validate and reload.
    Reload,
}

/// Compares two plans.
pub fn diff(live: &Plan, desired: &Plan) -> Change {
    if !same_structure(live, desired) {
        return Change::Reload;
    }
    // Three phases, so capacity is added before it is taken away: slots that start taking
    // traffic, then changes to routed slots, then slots that stop.
    let mut phases: [Vec<RuntimeCommand>; 3] = Default::default();
    for (service, want) in &desired.backends {
        let Some(have) = live.backends.get(service) else {
            return Change::Reload;
        };
        for (old_slot, new_slot) in have.slots.iter().zip(&want.slots) {
            let (old, new) = (old_slot.server.as_ref(), new_slot.server.as_ref());
            let was_ready = old.is_some_and(|o| o.state == ServerState::Ready);
            let will_be_ready = new.is_some_and(|n| n.state == ServerState::Ready);
            let phase = match (was_ready, will_be_ready) {
                (false, _) => 0,
                (true, true) => 1,
                (true, false) => 2,
            };
            slot_commands(&want.name, new_slot.name, old, new, &mut phases[phase]);
        }
    }
    let commands: Vec<RuntimeCommand> = phases.into_iter().flatten().collect();
    if commands.is_empty() {
        Change::None
    } else {
        Change::Runtime(commands)
    }
}

fn same_structure(a: &Plan, b: &Plan) -> bool {
    a.routes == b.routes
        && a.settings == b.settings
        && a.custom_templates == b.custom_templates
        && a.backends.len() == b.backends.len()
        && a.backends
            .iter()
            .zip(&b.backends)
            .all(|((ka, x), (kb, y))| {
                ka == kb
                    && x.name == y.name
                    && x.check == y.check
                    && x.slots.len() == y.slots.len()
                    && x.https_redirect == y.https_redirect
                    && x.routing == y.routing
            })
}

fn slot_commands(
    backend: &BackendName,
    server: SlotName,
    old: Option<&Server>,
    new: Option<&Server>,
    out: &mut Vec<RuntimeCommand>,
) {
    let set_state = |state| RuntimeCommand::SetState {
        backend: backend.clone(),
        server,
        state,
    };
    let set_addr = |addr, port| RuntimeCommand::SetAddr {
        backend: backend.clone(),
        server,
        addr,
        port,
    };
    match (old, new) {
        (None, None) => {}
        (Some(o), None) => {
            // Empty the slot: stop traffic first, then park it with the default weight.
            if o.state == ServerState::Ready {
                out.push(set_state(ServerAdminState::Maint));
            }
            out.push(set_addr(PARKED_ADDR, PARKED_PORT));
            if o.weight != 1 {
                out.push(RuntimeCommand::SetWeight {
                    backend: backend.clone(),
                    server,
                    weight: 1,
                });
            }
        }
        (old, Some(n)) => {
            let (old_addr, old_port, old_weight, old_ready) = match old {
                Some(o) => (o.addr, o.port, o.weight, o.state == ServerState::Ready),
                None => (PARKED_ADDR, PARKED_PORT, 1, false),
            };
            let ready = n.state == ServerState::Ready;
            let moved = (old_addr, old_port) != (n.addr, n.port);
            // Leaving rotation comes first; a routed server that moves stays routed (HAProxy
            // switches new connections to the new address at once).
            if !ready && old_ready {
                out.push(set_state(ServerAdminState::Maint));
            }
            if moved {
                out.push(set_addr(n.addr, n.port));
            }
            if n.weight != old_weight {
                out.push(RuntimeCommand::SetWeight {
                    backend: backend.clone(),
                    server,
                    weight: n.weight,
                });
            }
            if ready && !old_ready {
                out.push(set_state(ServerAdminState::Ready));
            }
        }
    }
}

/// Applies runtime commands to a plan's slots, as HAProxy would. For tests of [`diff()`].
#[cfg(test)]
pub(crate) fn apply(live: &Plan, commands: &[RuntimeCommand]) -> Plan {
    use std::collections::BTreeMap;
    // (addr, port, weight, ready) per (backend, slot), starting from the live plan.
    let mut state: BTreeMap<(BackendName, SlotName), (IpAddr, u16, u16, bool)> = BTreeMap::new();
    for b in live.backends.values() {
        for s in &b.slots {
            let v = match &s.server {
                Some(x) => (x.addr, x.port, x.weight, x.state == ServerState::Ready),
                None => (PARKED_ADDR, PARKED_PORT, 1, false),
            };
            state.insert((b.name.clone(), s.name), v);
        }
    }
    for c in commands {
        match c {
            RuntimeCommand::SetAddr {
                backend,
                server,
                addr,
                port,
            } => {
                let e = state.get_mut(&(backend.clone(), *server)).unwrap();
                e.0 = *addr;
                e.1 = *port;
            }
            RuntimeCommand::SetWeight {
                backend,
                server,
                weight,
            } => state.get_mut(&(backend.clone(), *server)).unwrap().2 = *weight,
            RuntimeCommand::SetState {
                backend,
                server,
                state: st,
            } => {
                state.get_mut(&(backend.clone(), *server)).unwrap().3 =
                    *st == ServerAdminState::Ready
            }
        }
    }
    let mut out = live.clone();
    for b in out.backends.values_mut() {
        for s in &mut b.slots {
            let (addr, port, weight, ready) = state[&(b.name.clone(), s.name)];
            s.server = if (addr, port) == (PARKED_ADDR, PARKED_PORT) && !ready {
                None
            } else {
                Some(Server {
                    addr,
                    port,
                    weight,
                    state: if ready {
                        ServerState::Ready
                    } else {
                        ServerState::Maint
                    },
                })
            };
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::super::*;
    use super::*;
    use crate::domain::Health;

    fn cat(list: &[(&str, &str, u16, Health)]) -> CatalogSnapshot {
        let mut c = CatalogSnapshot::new();
        c.set_service(
            svc("web"),
            list.iter()
                .map(|(id, a, p, h)| inst("n1", id, a, *p, *h))
                .collect(),
        );
        c
    }

    #[test]
    fn scaling_is_runtime_and_structure_is_reload() {
        let ints = intents(vec![intent(&[
            ("serviceName", "web"),
            ("servicePath", "/"),
        ])]);
        let s = PlanSettings::default();
        let p1 = plan(
            &ints,
            &cat(&[("a", "10.0.0.1", 80, Health::Passing)]),
            &SlotTable::default(),
            &s,
        );
        assert_eq!(diff(&p1, &p1), Change::None);
        let p2 = plan(
            &ints,
            &cat(&[
                ("a", "10.0.0.1", 80, Health::Passing),
                ("b", "10.0.0.2", 81, Health::Passing),
            ]),
            &p1.slots,
            &s,
        );
        let Change::Runtime(cmds) = diff(&p1, &p2) else {
            panic!("expected runtime commands");
        };
        let text: Vec<String> = cmds.iter().map(ToString::to_string).collect();
        assert_eq!(
            text,
            [
                "set server web-be/s2 addr 10.0.0.2 port 81",
                "set server web-be/s2 state ready"
            ]
        );
        let Change::Runtime(cmds) = diff(&p2, &p1) else {
            panic!("expected runtime commands");
        };
        let text: Vec<String> = cmds.iter().map(ToString::to_string).collect();
        assert_eq!(
            text,
            [
                "set server web-be/s2 state maint",
                "set server web-be/s2 addr 127.0.0.1 port 1"
            ]
        );
        // A new path is structural.
        let ints2 = intents(vec![intent(&[
            ("serviceName", "web"),
            ("servicePath", "/,/x"),
        ])]);
        let p3 = plan(
            &ints2,
            &cat(&[("a", "10.0.0.1", 80, Health::Passing)]),
            &p1.slots,
            &s,
        );
        assert_eq!(diff(&p1, &p3), Change::Reload);
        // Slot growth is structural.
        let many: Vec<(String, String)> = (1..=5)
            .map(|i| (format!("i{i}"), format!("10.0.1.{i}")))
            .collect();
        let list: Vec<(&str, &str, u16, Health)> = many
            .iter()
            .map(|(a, b)| (a.as_str(), b.as_str(), 80, Health::Passing))
            .collect();
        let p4 = plan(&ints, &cat(&list), &p1.slots, &s);
        assert_eq!(diff(&p1, &p4), Change::Reload);
        // skipCheck is structural.
        let ints3 = intents(vec![intent(&[
            ("serviceName", "web"),
            ("servicePath", "/"),
            ("skipCheck", "true"),
        ])]);
        let p5 = plan(
            &ints3,
            &cat(&[("a", "10.0.0.1", 80, Health::Passing)]),
            &p1.slots,
            &s,
        );
        assert_eq!(diff(&p1, &p5), Change::Reload);
    }

    #[test]
    fn color_switch_is_runtime_while_slots_suffice() {
        let s = PlanSettings::default();
        let colored = |c: &str| {
            intents(vec![intent(&[
                ("serviceName", "web"),
                ("servicePath", "/"),
                ("serviceColor", c),
            ])])
        };
        let mut c = CatalogSnapshot::new();
        c.set_service(
            svc("web-blue"),
            vec![inst("n1", "b1", "10.0.0.1", 80, Health::Passing)],
        );
        c.set_service(
            svc("web-green"),
            vec![
                inst("n1", "g1", "10.0.0.2", 80, Health::Passing),
                inst("n1", "g2", "10.0.0.3", 80, Health::Passing),
            ],
        );
        let blue = plan(&colored("blue"), &c, &SlotTable::default(), &s);
        let green = plan(&colored("green"), &c, &blue.slots, &s);
        assert_eq!(green.backends[&svc("web")].name.as_str(), "web-be");
        let Change::Runtime(cmds) = diff(&blue, &green) else {
            panic!("expected runtime commands");
        };
        let text: Vec<String> = cmds.iter().map(ToString::to_string).collect();
        assert_eq!(
            text,
            [
                "set server web-be/s2 addr 10.0.0.3 port 80",
                "set server web-be/s2 state ready",
                "set server web-be/s1 addr 10.0.0.2 port 80",
            ]
        );
    }

    /// A small deterministic generator, so the property below needs no extra dependency.
    struct Lcg(u64);
    impl Lcg {
        fn next(&mut self, n: u64) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (self.0 >> 33) % n
        }
    }

    #[test]
    fn runtime_commands_reproduce_the_desired_config() {
        let ints = intents(vec![
            intent(&[("serviceName", "web"), ("servicePath", "/")]),
            intent(&[
                ("serviceName", "api"),
                ("servicePath", "/api"),
                ("serviceColor", "blue"),
            ]),
        ]);
        let s = PlanSettings {
            min_slots: 8,
            ..Default::default()
        };
        let settings = crate::render::RenderSettings::for_tests();
        let healths = [
            Health::Passing,
            Health::Warning,
            Health::Critical,
            Health::Maintenance,
        ];
        let mut rng = Lcg(7);
        let mut live = plan(&ints, &CatalogSnapshot::new(), &SlotTable::default(), &s);
        let mut runtime_rounds = 0;
        for _ in 0..300 {
            let mut c = CatalogSnapshot::new();
            for name in ["web", "api-blue", "api"] {
                let n = rng.next(7);
                let mut list = Vec::new();
                for _ in 0..n {
                    let id = rng.next(10);
                    let mut i = inst(
                        &format!("n{}", rng.next(2)),
                        &format!("i{id}"),
                        &format!("10.0.{}.{}", rng.next(3), rng.next(3) + 1),
                        8000 + rng.next(3) as u16,
                        healths[rng.next(4) as usize],
                    );
                    i.weights.passing = 1 + rng.next(3) as u32;
                    list.push(i);
                }
                c.set_service(svc(name), list);
            }
            let desired = plan(&ints, &c, &live.slots, &s);
            match diff(&live, &desired) {
                Change::None => {
                    assert_eq!(
                        crate::render::render(&live, &settings).unwrap(),
                        crate::render::render(&desired, &settings).unwrap()
                    );
                }
                Change::Runtime(cmds) => {
                    runtime_rounds += 1;
                    let applied = apply(&live, &cmds);
                    assert_eq!(
                        crate::render::render(&applied, &settings).unwrap(),
                        crate::render::render(&desired, &settings).unwrap()
                    );
                }
                Change::Reload => {
                    assert_ne!(
                        crate::render::render(&live, &settings).unwrap(),
                        crate::render::render(&desired, &settings).unwrap()
                    );
                }
            }
            live = desired;
        }
        assert!(runtime_rounds > 100, "{runtime_rounds}");
    }

    #[test]
    fn routing_options_are_structural_and_churn_stays_runtime() {
        let with = |extra: &[(&str, &str)]| {
            let mut pairs = vec![("serviceName", "web"), ("servicePath", "/")];
            pairs.extend_from_slice(extra);
            intents(vec![intent(&pairs)])
        };
        let s = PlanSettings::default();
        let one = cat(&[("a", "10.0.0.1", 80, Health::Passing)]);
        let two = cat(&[
            ("a", "10.0.0.1", 80, Health::Passing),
            ("b", "10.0.0.2", 80, Health::Passing),
        ]);
        let sticky = with(&[("sessionType", "sticky-server"), ("users", "a:b")]);
        let p1 = plan(&sticky, &one, &SlotTable::default(), &s);
        let p2 = plan(&sticky, &two, &p1.slots, &s);
        assert!(matches!(diff(&p1, &p2), Change::Runtime(_)));
        for other in [
            with(&[]),
            with(&[("sessionType", "sticky-server"), ("users", "a:c")]),
            with(&[
                ("sessionType", "sticky-server"),
                ("users", "a:b"),
                ("timeoutServer", "9"),
            ]),
        ] {
            let p3 = plan(&other, &one, &p1.slots, &s);
            assert_eq!(diff(&p1, &p3), Change::Reload);
        }
    }
}
