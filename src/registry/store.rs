//! The registry's state machine.
//!
//! Owns: the single global raft index, the index table (`nodes`, `services`, `checks`,
//! `kvs`, `tombstones`, `service.<name>`, `service_last_extinction`), the node, its
//! services and checks, and the KV table with its tombstones. A write is a [`Command`]:
//! [`Store::apply`] consumes exactly one raft index for every accepted write (rejected
//! writes consume none) and moves only the index entries the write really changed.
//! Reads return their data together with the index the endpoint must report.
//! Must not: do IO, look at clocks, spawn tasks or know about HTTP. Everything here is
//! deterministic so that replaying the same commands rebuilds the same state.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::catalog::{CheckInput, ServiceDef};
use super::kv::{KvState, TxnOp, TxnOutcome};
use super::lookup::Lookup;
use super::session::SessionRec;

/// Health status strings, as Consul spells them.
pub const PASSING: &str = "passing";
pub const WARNING: &str = "warning";
pub const CRITICAL: &str = "critical";
/// Prefix of the check a service's maintenance mode adds.
pub const SERVICE_MAINT_PREFIX: &str = "_service_maintenance:";
/// The node-level check every node carries.
pub const SERF_CHECK_ID: &str = "serfHealth";

/// The one node this registry serves.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeInfo {
    pub id: String,
    pub name: String,
    pub address: String,
    pub datacenter: String,
    pub create_index: u64,
    pub modify_index: u64,
}

/// How a check is run (kept so runners can execute it and reads can show it).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckDef {
    pub ttl: Option<Duration>,
    pub http: Option<String>,
    pub method: Option<String>,
    pub header: BTreeMap<String, Vec<String>>,
    pub body: Option<String>,
    pub tls_skip_verify: bool,
    pub tcp: Option<String>,
    pub grpc: Option<String>,
    pub script_args: Vec<String>,
    pub docker_container_id: Option<String>,
    pub shell: Option<String>,
    pub alias_service: Option<String>,
    pub interval: Option<Duration>,
    pub timeout: Option<Duration>,
    pub deregister_critical_after: Option<Duration>,
}

impl CheckDef {
    /// Consul's `Type` string for this definition.
    pub fn kind(&self) -> &'static str {
        if self.ttl.is_some() {
            "ttl"
        } else if self.http.is_some() {
            "http"
        } else if self.tcp.is_some() {
            "tcp"
        } else if self.grpc.is_some() {
            "grpc"
        } else if self.docker_container_id.is_some() {
            "docker"
        } else if !self.script_args.is_empty() {
            "script"
        } else if self.alias_service.is_some() {
            "alias"
        } else {
            ""
        }
    }
}

/// A stored health check.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckRec {
    pub check_id: String,
    pub name: String,
    pub status: String,
    pub notes: String,
    pub output: String,
    pub service_id: String,
    pub service_name: String,
    pub service_tags: Vec<String>,
    /// `Type` as reported (`ttl`, `http`, `maintenance`, ...).
    pub kind: String,
    pub def: CheckDef,
    pub create_index: u64,
    pub modify_index: u64,
}

impl CheckRec {
    fn same_content(&self, other: &CheckRec) -> bool {
        let mut a = self.clone();
        a.create_index = other.create_index;
        a.modify_index = other.modify_index;
        a == *other
    }
}

/// A stored service instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceRec {
    pub def: ServiceDef,
    pub create_index: u64,
    pub modify_index: u64,
    /// The servers' own `consul` service: in the catalog, not on the agent.
    #[serde(default)]
    pub server_owned: bool,
}

impl ServiceRec {
    /// Whether the agent endpoints see this instance.
    pub fn on_agent(&self) -> bool {
        !self.server_owned
    }
}

/// The index table.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Indexes {
    pub nodes: u64,
    pub services: u64,
    pub checks: u64,
    pub kvs: u64,
    pub tombstones: u64,
    #[serde(default)]
    pub sessions: u64,
    /// `service.<name>` entries.
    pub service: BTreeMap<String, u64>,
    /// `service_last_extinction`, once set.
    pub service_last_extinction: Option<u64>,
}

/// A write request. Every variant is deterministic given the state it is applied to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Command {
    KvSet {
        key: String,
        #[serde(with = "super::kv::b64")]
        value: Vec<u8>,
        flags: u64,
        cas: Option<u64>,
    },
    KvDelete {
        key: String,
        cas: Option<u64>,
    },
    KvDeleteTree {
        prefix: String,
    },
    Txn {
        ops: Vec<TxnOp>,
    },
    RegisterService {
        service: Box<ServiceDef>,
        checks: Vec<CheckInput>,
        replace_existing_checks: bool,
    },
    DeregisterService {
        id: String,
    },
    RegisterCheck {
        check: Box<CheckInput>,
    },
    DeregisterCheck {
        id: String,
    },
    /// Sets a check's status and output (TTL updates, runner results, TTL expiry).
    UpdateCheck {
        id: String,
        status: String,
        output: String,
    },
    ServiceMaintenance {
        id: String,
        enable: bool,
        reason: String,
    },
    /// Removes tombstones created at or below `up_to`.
    ReapTombstones {
        up_to: u64,
    },
    /// `?acquire=<session>`.
    KvAcquire {
        key: String,
        #[serde(with = "super::kv::b64")]
        value: Vec<u8>,
        flags: u64,
        session: String,
    },
    /// `?release=<session>`.
    KvRelease {
        key: String,
        #[serde(with = "super::kv::b64")]
        value: Vec<u8>,
        flags: u64,
        session: String,
    },
    SessionCreate {
        session: Box<SessionRec>,
    },
    /// Destroys (invalidates) a session; unknown IDs are a no-op.
    SessionDestroy {
        id: String,
    },
}

/// Why a write was refused (no index consumed).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApplyError {
    #[error(
        "Unknown service ID {0:?}. Ensure that the service ID is passed, not the service name."
    )]
    UnknownService(String),
    #[error("Unknown check ID {0:?}. Ensure that the check ID is passed, not the check name.")]
    UnknownCheck(String),
    #[error("ServiceID {0:?} does not exist")]
    CheckServiceMissing(String),
    #[error("CheckID {0:?} does not have associated TTL")]
    NotTtl(String),
    #[error("invalid session {0:?}")]
    InvalidSession(String),
    #[error("Missing node registration")]
    MissingNode,
    #[error("Missing check '{0}' registration")]
    MissingCheck(String),
    #[error("Check '{0}' is in critical state")]
    CriticalCheck(String),
}

/// What an accepted write returned.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Nothing to report (agent writes): 200 with an empty body.
    Done,
    /// KV PUT / DELETE result.
    Bool(bool),
    /// A transaction's result.
    Txn(TxnOutcome),
}

/// Result of [`Store::apply`]: the outcome and whether a raft index was consumed.
#[derive(Debug, Clone, PartialEq)]
pub struct Applied {
    pub outcome: Outcome,
    /// The raft index consumed, `None` when the write was a no-op that Consul's agent
    /// would not have sent to the servers (e.g. a TTL refresh with unchanged status).
    pub index: Option<u64>,
}

/// The whole state.
///
/// `services` and `checks` are read freely but changed only through
/// [`Store::put_service`], [`Store::take_service`], [`Store::upsert_check`] and
/// [`Store::remove_check`], which keep the derived [`Lookup`] in step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(from = "StoreData")]
pub struct Store {
    pub raft_index: u64,
    pub idx: Indexes,
    pub node: NodeInfo,
    pub services: BTreeMap<String, ServiceRec>,
    pub checks: BTreeMap<String, CheckRec>,
    pub kv: KvState,
    #[serde(default)]
    pub sessions: BTreeMap<String, SessionRec>,
    /// Derived from `services` and `checks`; rebuilt when a store is loaded.
    #[serde(skip)]
    pub(crate) lookup: Lookup,
}

/// The persisted fields of a [`Store`]; loading one rebuilds its [`Lookup`].
#[derive(Deserialize)]
struct StoreData {
    raft_index: u64,
    idx: Indexes,
    node: NodeInfo,
    services: BTreeMap<String, ServiceRec>,
    checks: BTreeMap<String, CheckRec>,
    kv: KvState,
    #[serde(default)]
    sessions: BTreeMap<String, SessionRec>,
}

impl From<StoreData> for Store {
    fn from(d: StoreData) -> Store {
        let lookup = Lookup::rebuild(d.services.values(), d.checks.values());
        Store {
            raft_index: d.raft_index,
            idx: d.idx,
            node: d.node,
            services: d.services,
            checks: d.checks,
            kv: d.kv,
            sessions: d.sessions,
            lookup,
        }
    }
}

impl Store {
    /// A fresh store: raft index 1 registers the node and its `serfHealth` check.
    pub fn new(node_id: String, node_name: String, datacenter: String) -> Store {
        let mut store = Store {
            raft_index: 1,
            idx: Indexes {
                nodes: 1,
                checks: 1,
                ..Indexes::default()
            },
            node: NodeInfo {
                id: node_id,
                name: node_name,
                address: "127.0.0.1".to_string(),
                datacenter,
                create_index: 1,
                modify_index: 1,
            },
            services: BTreeMap::new(),
            checks: BTreeMap::new(),
            kv: KvState::default(),
            sessions: BTreeMap::new(),
            lookup: Lookup::default(),
        };
        store.put_check(CheckRec {
            check_id: SERF_CHECK_ID.to_string(),
            name: "Serf Health Status".to_string(),
            status: PASSING.to_string(),
            notes: String::new(),
            output: "Agent alive and reachable".to_string(),
            service_id: String::new(),
            service_name: String::new(),
            service_tags: Vec::new(),
            kind: String::new(),
            def: CheckDef::default(),
            create_index: 1,
            modify_index: 1,
        });
        store
    }

    /// Adds the servers' own `consul` service at index 1, as a real cluster shows it.
    pub fn with_consul_service(mut self) -> Store {
        let meta = [
            ("non_voter", "false"),
            ("raft_version", "3"),
            ("read_replica", "false"),
            ("serf_protocol_current", "2"),
            ("serf_protocol_max", "5"),
            ("serf_protocol_min", "1"),
            ("version", "1.21.0"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let def = ServiceDef {
            id: "consul".to_string(),
            name: "consul".to_string(),
            port: 8300,
            meta,
            ..ServiceDef::default()
        };
        self.put_service(ServiceRec {
            def,
            create_index: 1,
            modify_index: 1,
            server_owned: true,
        });
        self.idx.services = 1;
        self.idx.service.insert("consul".to_string(), 1);
        self
    }

    /// Applies one write. On `Err` nothing changed and no index was consumed.
    pub fn apply(&mut self, cmd: &Command) -> Result<Applied, ApplyError> {
        let next = self.raft_index + 1;
        let outcome = match cmd {
            Command::KvSet {
                key,
                value,
                flags,
                cas,
            } => Outcome::Bool(self.kv.set(next, key, value, *flags, *cas)),
            Command::KvDelete { key, cas } => Outcome::Bool(self.kv.delete(next, key, *cas)),
            Command::KvDeleteTree { prefix } => {
                self.kv.delete_tree(next, prefix);
                Outcome::Bool(true)
            }
            Command::Txn { ops } => {
                let sessions: BTreeSet<String> = self.sessions.keys().cloned().collect();
                Outcome::Txn(self.kv.txn(next, ops, &sessions))
            }
            Command::KvAcquire {
                key,
                value,
                flags,
                session,
            } => {
                if !self.sessions.contains_key(session) {
                    return Err(ApplyError::InvalidSession(session.clone()));
                }
                Outcome::Bool(self.kv.acquire(next, key, value, *flags, session))
            }
            Command::KvRelease {
                key,
                value,
                flags,
                session,
            } => {
                if !self.sessions.contains_key(session) {
                    return Err(ApplyError::InvalidSession(session.clone()));
                }
                Outcome::Bool(self.kv.release(next, key, value, *flags, session))
            }
            Command::SessionCreate { session } => {
                self.create_session(next, session)?;
                Outcome::Done
            }
            Command::SessionDestroy { id } => {
                self.destroy_session(next, id);
                Outcome::Bool(true)
            }
            Command::RegisterService {
                service,
                checks,
                replace_existing_checks,
            } => {
                self.register_service(next, service, checks, *replace_existing_checks)?;
                Outcome::Done
            }
            Command::DeregisterService { id } => {
                self.deregister_service(next, id)?;
                Outcome::Done
            }
            Command::RegisterCheck { check } => {
                self.register_check(next, check)?;
                Outcome::Done
            }
            Command::DeregisterCheck { id } => {
                self.deregister_check(next, id)?;
                Outcome::Done
            }
            Command::UpdateCheck { id, status, output } => {
                let Some(existing) = self.checks.get(id) else {
                    return Err(ApplyError::UnknownCheck(id.clone()));
                };
                if existing.status == *status && existing.output == *output {
                    return Ok(Applied {
                        outcome: Outcome::Done,
                        index: None,
                    });
                }
                self.update_check(next, id, status, output);
                Outcome::Done
            }
            Command::ServiceMaintenance { id, enable, reason } => {
                self.maintenance(next, id, *enable, reason)?;
                Outcome::Done
            }
            Command::ReapTombstones { up_to } => {
                self.kv.reap(*up_to);
                Outcome::Done
            }
        };
        self.raft_index = next;
        Ok(Applied {
            outcome,
            index: Some(next),
        })
    }

    /// The KV table index (`kvs` and `tombstones` entries together).
    pub fn kv_table_index(&self) -> u64 {
        self.kv.table_index()
    }

    /// Inserts or replaces a service instance (by ID), keeping the lookups in step.
    pub(crate) fn put_service(&mut self, rec: ServiceRec) {
        if let Some(prev) = self.services.remove(&rec.def.id) {
            self.lookup.remove_service(&prev);
        }
        self.lookup.add_service(&rec);
        self.services.insert(rec.def.id.clone(), rec);
    }

    /// Removes a service instance, keeping the lookups in step.
    pub(crate) fn take_service(&mut self, id: &str) -> Option<ServiceRec> {
        let rec = self.services.remove(id)?;
        self.lookup.remove_service(&rec);
        Some(rec)
    }

    /// Inserts or replaces a check (by ID) as given, keeping the lookups in step.
    fn put_check(&mut self, check: CheckRec) {
        if let Some(prev) = self.checks.remove(&check.check_id) {
            self.lookup.remove_check(&prev);
        }
        self.lookup.add_check(&check);
        self.checks.insert(check.check_id.clone(), check);
    }

    /// The instances of the service `name`, in ID order.
    pub fn instances_named<'a>(&'a self, name: &str) -> impl Iterator<Item = &'a ServiceRec> {
        self.lookup
            .instances(name)
            .filter_map(|id| self.services.get(id))
    }

    /// Whether the service `name` has an instance.
    pub fn has_service(&self, name: &str) -> bool {
        self.lookup.has_service(name)
    }

    /// The checks bound to the instance `service_id`, in ID order.
    pub fn checks_of<'a>(&'a self, service_id: &str) -> impl Iterator<Item = &'a CheckRec> {
        self.lookup
            .checks_of(service_id)
            .filter_map(|id| self.checks.get(id))
    }

    /// The node-level checks, in ID order.
    pub fn node_level_checks(&self) -> impl Iterator<Item = &CheckRec> {
        self.lookup
            .node_checks()
            .filter_map(|id| self.checks.get(id))
    }

    /// Moves `service.<name>` for every service on the node (node-level changes).
    pub(crate) fn touch_all_services(&mut self, idx: u64) {
        let names: BTreeSet<String> = self.lookup.names().cloned().collect();
        for name in names {
            self.idx.service.insert(name, idx);
        }
    }

    /// Inserts or updates a check; moves entries only if it changed.
    pub(crate) fn upsert_check(&mut self, idx: u64, mut check: CheckRec) {
        if let Some(prev) = self.checks.get(&check.check_id) {
            if check.same_content(prev) {
                return;
            }
            check.create_index = prev.create_index;
        } else {
            check.create_index = idx;
        }
        check.modify_index = idx;
        self.touch_check_scope(idx, &check);
        self.put_check(check);
    }

    /// Removes a check and moves the entries a check delete moves.
    pub(crate) fn remove_check(&mut self, idx: u64, id: &str) {
        if let Some(check) = self.checks.remove(id) {
            self.lookup.remove_check(&check);
            self.touch_check_scope(idx, &check);
            if check.service_id.is_empty() {
                self.idx.services = idx;
            }
        }
    }

    fn touch_check_scope(&mut self, idx: u64, check: &CheckRec) {
        self.idx.checks = idx;
        if check.service_id.is_empty() {
            self.touch_all_services(idx);
        } else if self.services.contains_key(&check.service_id) {
            self.idx.service.insert(check.service_name.clone(), idx);
        }
    }

    fn update_check(&mut self, idx: u64, id: &str, status: &str, output: &str) {
        let Some(check) = self.checks.get_mut(id) else {
            return;
        };
        check.status = status.to_string();
        check.output = output.to_string();
        check.modify_index = idx;
        let check = check.clone();
        self.touch_check_scope(idx, &check);
    }

    /// `X-Consul-Index` of a per-service read (catalog or health) per section 12.2.
    pub fn service_read_index(&self, name: &str, with_checks: bool, exists: bool) -> u64 {
        let fallback = if with_checks {
            self.idx.nodes.max(self.idx.services).max(self.idx.checks)
        } else {
            self.idx.nodes.max(self.idx.services)
        };
        if exists {
            self.idx.service.get(name).copied().unwrap_or(fallback)
        } else {
            self.idx.service_last_extinction.unwrap_or(fallback)
        }
    }
}

/// Rewrites 0 to 1: `X-Consul-Index` is never 0.
pub fn non_zero(index: u64) -> u64 {
    index.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::catalog::{CheckInput, ServiceDef};

    fn store() -> Store {
        Store::new("node-id".into(), "node1".into(), "dc1".into())
    }

    fn svc(id: &str, name: &str) -> ServiceDef {
        ServiceDef {
            id: id.into(),
            name: name.into(),
            ..ServiceDef::default()
        }
    }

    fn ttl_check() -> CheckInput {
        CheckInput {
            def: CheckDef {
                ttl: Some(Duration::from_secs(10)),
                ..CheckDef::default()
            },
            ..CheckInput::default()
        }
    }

    fn register(s: &mut Store, def: ServiceDef, checks: Vec<CheckInput>) -> u64 {
        let applied = s
            .apply(&Command::RegisterService {
                service: Box::new(def),
                checks,
                replace_existing_checks: false,
            })
            .unwrap();
        applied.index.unwrap()
    }

    #[test]
    fn fresh_store_has_node_and_serf_check_at_index_one() {
        let s = store();
        assert_eq!(s.raft_index, 1);
        assert_eq!(s.idx.nodes, 1);
        assert_eq!(s.idx.checks, 1);
        assert_eq!(s.idx.services, 0);
        assert_eq!(s.checks[SERF_CHECK_ID].status, PASSING);
        assert_eq!(non_zero(s.idx.services), 1);
    }

    #[test]
    fn every_accepted_write_consumes_one_index_even_if_unchanged() {
        let mut s = store();
        let i1 = register(&mut s, svc("web1", "web"), vec![]);
        assert_eq!(i1, 2);
        assert_eq!(s.idx.services, 2);
        assert_eq!(s.idx.service["web"], 2);
        let i2 = register(&mut s, svc("web1", "web"), vec![]);
        assert_eq!(i2, 3);
        assert_eq!(s.raft_index, 3);
        // identical re-registration moves no entry
        assert_eq!(s.idx.services, 2);
        assert_eq!(s.idx.service["web"], 2);
        assert_eq!(s.services["web1"].modify_index, 2);
    }

    #[test]
    fn rejected_write_consumes_no_index() {
        let mut s = store();
        let err = s.apply(&Command::DeregisterService { id: "nope".into() });
        assert_eq!(err, Err(ApplyError::UnknownService("nope".into())));
        assert_eq!(s.raft_index, 1);
    }

    #[test]
    fn check_status_change_moves_checks_and_service_entry_but_not_services() {
        let mut s = store();
        register(&mut s, svc("web1", "web"), vec![ttl_check()]);
        register(&mut s, svc("db1", "db"), vec![]);
        let services_before = s.idx.services;
        let db_before = s.idx.service["db"];
        let applied = s
            .apply(&Command::UpdateCheck {
                id: "service:web1".into(),
                status: PASSING.into(),
                output: "ok".into(),
            })
            .unwrap();
        let i = applied.index.unwrap();
        assert_eq!(s.idx.checks, i);
        assert_eq!(s.idx.service["web"], i);
        assert_eq!(s.idx.services, services_before);
        assert_eq!(s.idx.service["db"], db_before);
        // an unchanged update is not a write at all
        let again = s
            .apply(&Command::UpdateCheck {
                id: "service:web1".into(),
                status: PASSING.into(),
                output: "ok".into(),
            })
            .unwrap();
        assert_eq!(again.index, None);
        assert_eq!(s.raft_index, i);
    }

    #[test]
    fn deregistering_last_instance_sets_extinction_and_drops_entry() {
        let mut s = store();
        register(&mut s, svc("web1", "web"), vec![ttl_check()]);
        register(&mut s, svc("web2", "web"), vec![]);
        let i = s
            .apply(&Command::DeregisterService { id: "web1".into() })
            .unwrap()
            .index
            .unwrap();
        assert_eq!(s.idx.service["web"], i);
        assert_eq!(s.idx.services, i);
        assert_eq!(s.idx.checks, i);
        assert_eq!(s.idx.service_last_extinction, None);
        let j = s
            .apply(&Command::DeregisterService { id: "web2".into() })
            .unwrap()
            .index
            .unwrap();
        assert!(!s.idx.service.contains_key("web"));
        assert_eq!(s.idx.service_last_extinction, Some(j));
        assert_eq!(s.service_read_index("web", true, false), j);
        assert_eq!(s.service_read_index("other", false, false), j);
    }

    #[test]
    fn missing_service_index_falls_back_to_tables_before_any_extinction() {
        let mut s = store();
        register(&mut s, svc("web1", "web"), vec![]);
        assert_eq!(s.service_read_index("nope", false, false), 2);
        let i = s
            .apply(&Command::UpdateCheck {
                id: SERF_CHECK_ID.into(),
                status: WARNING.into(),
                output: String::new(),
            })
            .unwrap()
            .index
            .unwrap();
        // with checks, the checks table counts too
        assert_eq!(s.service_read_index("nope", true, false), i);
        assert_eq!(s.service_read_index("nope", false, false), 2);
        // a node-level check change moves every service entry on the node
        assert_eq!(s.idx.service["web"], i);
    }

    #[test]
    fn reregistration_keeps_check_status_and_output() {
        let mut s = store();
        register(&mut s, svc("web1", "web"), vec![ttl_check()]);
        s.apply(&Command::UpdateCheck {
            id: "service:web1".into(),
            status: PASSING.into(),
            output: "fine".into(),
        })
        .unwrap();
        let before = s.idx.clone();
        register(&mut s, svc("web1", "web"), vec![ttl_check()]);
        assert_eq!(s.checks["service:web1"].status, PASSING);
        assert_eq!(s.checks["service:web1"].output, "fine");
        assert_eq!(s.idx, before);
    }

    #[test]
    fn replace_existing_checks_removes_missing_ones() {
        let mut s = store();
        register(&mut s, svc("web1", "web"), vec![ttl_check()]);
        let i = s
            .apply(&Command::RegisterService {
                service: Box::new(svc("web1", "web")),
                checks: vec![],
                replace_existing_checks: true,
            })
            .unwrap()
            .index
            .unwrap();
        assert!(!s.checks.contains_key("service:web1"));
        assert_eq!(s.idx.checks, i);
        assert_eq!(s.idx.service["web"], i);
    }

    #[test]
    fn maintenance_adds_and_removes_critical_check() {
        let mut s = store();
        register(&mut s, svc("redis", "redis"), vec![]);
        s.apply(&Command::ServiceMaintenance {
            id: "redis".into(),
            enable: true,
            reason: "broken".into(),
        })
        .unwrap();
        let c = &s.checks["_service_maintenance:redis"];
        assert_eq!(c.status, CRITICAL);
        assert_eq!(c.notes, "broken");
        assert_eq!(c.kind, "maintenance");
        s.apply(&Command::ServiceMaintenance {
            id: "redis".into(),
            enable: false,
            reason: String::new(),
        })
        .unwrap();
        assert!(!s.checks.contains_key("_service_maintenance:redis"));
    }

    #[test]
    fn node_level_check_changes_move_every_service_entry_and_delete_moves_services() {
        let mut s = store();
        register(&mut s, svc("a1", "a"), vec![]);
        register(&mut s, svc("b1", "b"), vec![]);
        let node_check = CheckInput {
            name: "disk".into(),
            id: "disk".into(),
            ..ttl_check()
        };
        let i = s
            .apply(&Command::RegisterCheck {
                check: Box::new(node_check),
            })
            .unwrap()
            .index
            .unwrap();
        assert_eq!(s.idx.checks, i);
        assert_eq!(s.idx.service["a"], i);
        assert_eq!(s.idx.service["b"], i);
        assert_eq!(
            s.idx.services, 3,
            "adding a node check leaves services alone"
        );
        let j = s
            .apply(&Command::DeregisterCheck { id: "disk".into() })
            .unwrap()
            .index
            .unwrap();
        assert_eq!(
            s.idx.services, j,
            "deleting a node-level check moves services"
        );
        assert_eq!(s.idx.service["a"], j);
    }

    #[test]
    fn renaming_an_instance_extinguishes_the_old_name() {
        let mut s = store();
        register(&mut s, svc("x1", "old"), vec![]);
        let i = register(&mut s, svc("x1", "new"), vec![]);
        assert!(!s.idx.service.contains_key("old"));
        assert_eq!(s.idx.service_last_extinction, Some(i));
        assert_eq!(s.idx.service["new"], i);
        assert_eq!(s.services["x1"].create_index, 2);
    }

    #[test]
    fn kv_writes_move_only_kv_entries() {
        let mut s = store();
        register(&mut s, svc("a1", "a"), vec![]);
        let before = s.idx.clone();
        let i = s
            .apply(&Command::KvSet {
                key: "k".into(),
                value: b"v".to_vec(),
                flags: 0,
                cas: None,
            })
            .unwrap()
            .index
            .unwrap();
        assert_eq!(s.kv.idx_kvs, i);
        assert_eq!(s.idx, before);
        // a failed cas still consumes an index but moves nothing
        let j = s
            .apply(&Command::KvSet {
                key: "k".into(),
                value: b"w".to_vec(),
                flags: 0,
                cas: Some(0),
            })
            .unwrap();
        assert_eq!(j.outcome, Outcome::Bool(false));
        assert_eq!(j.index, Some(i + 1));
        assert_eq!(s.kv_table_index(), i);
    }

    #[test]
    fn service_bound_check_needs_its_service() {
        let mut s = store();
        let c = CheckInput {
            name: "c".into(),
            service_id: "nope".into(),
            ..ttl_check()
        };
        assert_eq!(
            s.apply(&Command::RegisterCheck { check: Box::new(c) }),
            Err(ApplyError::CheckServiceMissing("nope".into()))
        );
        assert_eq!(s.raft_index, 1);
    }

    #[test]
    fn lookups_stay_equal_to_a_rebuild_after_every_write() {
        let mut s = store().with_consul_service();
        let same = |s: &Store| {
            assert_eq!(
                s.lookup,
                Lookup::rebuild(s.services.values(), s.checks.values())
            );
        };
        register(&mut s, svc("w1", "web"), vec![ttl_check()]);
        register(&mut s, svc("w2", "web"), vec![ttl_check(), ttl_check()]);
        register(&mut s, svc("a1", "api"), vec![]);
        same(&s);
        assert_eq!(
            s.instances_named("web")
                .map(|r| r.def.id.as_str())
                .collect::<Vec<_>>(),
            ["w1", "w2"]
        );
        assert_eq!(s.checks_of("w2").count(), 2);
        // Renamed instance, checks replaced, maintenance on and off.
        s.apply(&Command::RegisterService {
            service: Box::new(svc("w2", "api")),
            checks: vec![],
            replace_existing_checks: true,
        })
        .unwrap();
        same(&s);
        assert!(s.has_service("web") && s.checks_of("w2").count() == 0);
        for enable in [true, false] {
            s.apply(&Command::ServiceMaintenance {
                id: "a1".into(),
                enable,
                reason: String::new(),
            })
            .unwrap();
            same(&s);
        }
        s.apply(&Command::DeregisterService { id: "w1".into() })
            .unwrap();
        same(&s);
        assert!(!s.has_service("web"));
        assert_eq!(s.node_level_checks().count(), 1);
        let back: Store = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
        assert_eq!(back, s);
    }

    #[test]
    fn state_round_trips_through_serde() {
        let mut s = store();
        register(&mut s, svc("web1", "web"), vec![ttl_check()]);
        s.apply(&Command::KvSet {
            key: "a".into(),
            value: b"x".to_vec(),
            flags: 3,
            cas: None,
        })
        .unwrap();
        let json = serde_json::to_string(&s).unwrap();
        let back: Store = serde_json::from_str(&json).unwrap();
        assert_eq!(back, s);
    }
}
