//! An in-memory fake Consul for tests: catalog, health and a request log, with real blocking
//! and index semantics (one raft index; `services`, `checks`, per-service and extinction index
//! entries, as Consul moves them). No IO: safe under paused tokio time. Test-only;
//! it must not be used outside `#[cfg(test)]` code.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::future::BoxFuture;
use serde_json::{Value, json};
use tokio::sync::watch;

use super::error::ConsulError;
use super::resolve::Resolver;
use super::transport::{GetRequest, RawResponse, Transport};

#[derive(Debug, Clone)]
pub struct FakeInstance {
    pub node: String,
    pub node_address: String,
    pub id: String,
    pub service: String,
    pub address: String,
    pub port: i64,
    pub tags: Vec<String>,
    pub checks: Vec<(String, String)>,
    /// Set by the fake when the instance is registered.
    pub modify_index: u64,
}

impl FakeInstance {
    pub fn new(service: &str, id: &str, node: &str, port: i64) -> Self {
        FakeInstance {
            node: node.into(),
            node_address: "10.0.0.1".into(),
            id: id.into(),
            service: service.into(),
            address: String::new(),
            port,
            tags: Vec::new(),
            checks: Vec::new(),
            modify_index: 0,
        }
    }
    pub fn tags(mut self, tags: &[&str]) -> Self {
        self.tags = tags.iter().map(|t| t.to_string()).collect();
        self
    }
    pub fn address(mut self, a: &str) -> Self {
        self.address = a.into();
        self
    }
    pub fn check(mut self, id: &str, status: &str) -> Self {
        self.checks.push((id.into(), status.into()));
        self
    }
}

#[derive(Debug, Default)]
struct State {
    raft: u64,
    services_idx: u64,
    checks_idx: u64,
    nodes_idx: u64,
    extinction: u64,
    svc_idx: BTreeMap<String, u64>,
    instances: Vec<FakeInstance>,
    node_checks: Vec<(String, String, String)>,
    fail: BTreeSet<String>,
    garbage: BTreeSet<String>,
    /// Status answered to every `/v1/catalog/node/<node>` read instead of its body.
    node_status: Option<u16>,
}

#[derive(Debug)]
pub struct FakeConsul {
    state: Mutex<State>,
    version: watch::Sender<u64>,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    log: Mutex<Vec<String>>,
}

struct InFlight<'a>(&'a FakeConsul);
impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

impl FakeConsul {
    pub fn new() -> Arc<Self> {
        let state = State {
            raft: 10,
            services_idx: 10,
            checks_idx: 10,
            nodes_idx: 10,
            ..State::default()
        };
        Arc::new(FakeConsul {
            state: Mutex::new(state),
            version: watch::channel(0).0,
            in_flight: AtomicUsize::new(0),
            max_in_flight: AtomicUsize::new(0),
            log: Mutex::new(Vec::new()),
        })
    }

    fn write(&self, f: impl FnOnce(&mut State, u64)) {
        {
            let mut s = self.state.lock().unwrap();
            s.raft += 1;
            let idx = s.raft;
            f(&mut s, idx);
        }
        self.version.send_modify(|v| *v += 1);
    }

    pub fn register(&self, mut inst: FakeInstance) {
        self.write(|s, idx| {
            inst.modify_index = idx;
            let had_checks = s
                .instances
                .iter()
                .any(|i| i.id == inst.id && i.node == inst.node && !i.checks.is_empty());
            s.instances
                .retain(|i| !(i.id == inst.id && i.node == inst.node));
            if had_checks || !inst.checks.is_empty() {
                s.checks_idx = idx;
            }
            let known = s
                .instances
                .iter()
                .any(|i| i.node == inst.node && i.node_address == inst.node_address);
            if !known {
                s.nodes_idx = idx;
            }
            s.services_idx = idx;
            s.svc_idx.insert(inst.service.clone(), idx);
            s.instances.push(inst);
        });
    }

    pub fn deregister(&self, service: &str, id: &str) {
        self.write(|s, idx| {
            let had_checks = s
                .instances
                .iter()
                .any(|i| i.id == id && i.service == service && !i.checks.is_empty());
            s.instances
                .retain(|i| !(i.id == id && i.service == service));
            s.services_idx = idx;
            if had_checks {
                s.checks_idx = idx;
            }
            if s.instances.iter().any(|i| i.service == service) {
                s.svc_idx.insert(service.into(), idx);
            } else {
                s.svc_idx.remove(service);
                s.extinction = idx;
            }
        });
    }

    /// Removes a node with every instance on it (moves `nodes`, `services` and the entries
    /// of the services that lose instances).
    pub fn deregister_node(&self, node: &str) {
        self.write(|s, idx| {
            let names: BTreeSet<String> = s
                .instances
                .iter()
                .filter(|i| i.node == node)
                .map(|i| i.service.clone())
                .collect();
            s.instances.retain(|i| i.node != node);
            s.nodes_idx = idx;
            s.services_idx = idx;
            s.checks_idx = idx;
            for name in names {
                if s.instances.iter().any(|i| i.service == name) {
                    s.svc_idx.insert(name, idx);
                } else {
                    s.svc_idx.remove(&name);
                    s.extinction = idx;
                }
            }
        });
    }

    pub fn set_check(&self, service: &str, id: &str, check: &str, status: &str) {
        self.write(|s, idx| {
            for i in s.instances.iter_mut() {
                if i.service == service && i.id == id {
                    for c in i.checks.iter_mut() {
                        if c.0 == check {
                            c.1 = status.into();
                        }
                    }
                }
            }
            s.checks_idx = idx;
            s.svc_idx.insert(service.into(), idx);
        });
    }

    pub fn set_node_check(&self, node: &str, check: &str, status: &str) {
        self.write(|s, idx| {
            s.node_checks.retain(|c| !(c.0 == node && c.1 == check));
            s.node_checks
                .push((node.into(), check.into(), status.into()));
            s.checks_idx = idx;
            let names: Vec<String> = s
                .instances
                .iter()
                .filter(|i| i.node == node)
                .map(|i| i.service.clone())
                .collect();
            for n in names {
                s.svc_idx.insert(n, idx);
            }
        });
    }

    /// Changes a node's address: moves `nodes` and the node's services' entries only.
    pub fn set_node_address(&self, node: &str, address: &str) {
        self.write(|s, idx| {
            s.nodes_idx = idx;
            let mut names = Vec::new();
            for i in s.instances.iter_mut().filter(|i| i.node == node) {
                i.node_address = address.into();
                names.push(i.service.clone());
            }
            for n in names {
                s.svc_idx.insert(n, idx);
            }
        });
    }

    /// An unrelated write (e.g. KV): consumes a raft index, moves no catalog entry.
    pub fn unrelated_write(&self) {
        self.write(|_, _| {});
    }

    pub fn set_failing(&self, service: &str, failing: bool) {
        let mut s = self.state.lock().unwrap();
        if failing {
            s.fail.insert(service.into());
        } else {
            s.fail.remove(service);
        }
    }

    pub fn set_garbage(&self, service: &str, garbage: bool) {
        let mut s = self.state.lock().unwrap();
        if garbage {
            s.garbage.insert(service.into());
        } else {
            s.garbage.remove(service);
        }
    }

    /// Makes every node read answer `status` (403 as for a token without `node:read` on an
    /// older server, 404 as for a server without the endpoint), or serve again with `None`.
    pub fn set_node_status(&self, status: Option<u16>) {
        self.state.lock().unwrap().node_status = status;
    }

    /// Number of logged reads of `/v1/catalog/node/<node>`.
    pub fn node_reads(&self) -> usize {
        self.log()
            .iter()
            .filter(|l| l.starts_with("/v1/catalog/node/"))
            .count()
    }

    pub fn max_in_flight(&self) -> usize {
        self.max_in_flight.load(Ordering::SeqCst)
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }

    pub fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    pub fn clear_log(&self) {
        self.log.lock().unwrap().clear();
    }

    /// Number of logged reads of `/v1/health/service/<name>`.
    pub fn service_reads(&self, name: &str) -> usize {
        let p = format!("/v1/health/service/{name}");
        self.log().iter().filter(|l| **l == p).count()
    }

    /// Body of `/v1/catalog/services` and `/v1/health/state/any` (for asserting silence).
    pub fn feed_bodies(&self) -> (Value, Value) {
        let s = self.state.lock().unwrap();
        (services_body(&s), checks_body(&s))
    }

    fn answer(&self, path: &str) -> Result<(u64, Value), ConsulError> {
        let s = self.state.lock().unwrap();
        match path {
            "/v1/catalog/services" => Ok((s.services_idx, services_body(&s))),
            "/v1/health/state/any" => Ok((s.checks_idx, checks_body(&s))),
            "/v1/catalog/nodes" => Ok((s.nodes_idx, nodes_body(&s))),
            p if p.starts_with("/v1/catalog/node/") => {
                let node = &p["/v1/catalog/node/".len()..];
                if let Some(status) = s.node_status {
                    return Err(ConsulError::Status {
                        status,
                        body: "Permission denied".into(),
                    });
                }
                if !s.instances.iter().any(|i| i.node == node) {
                    return Ok((0, Value::Null));
                }
                Ok((s.nodes_idx.max(s.services_idx), node_body(&s, node)))
            }
            p if p.starts_with("/v1/health/service/") => {
                let name = &p["/v1/health/service/".len()..];
                if s.fail.contains(name) {
                    return Err(ConsulError::Status {
                        status: 500,
                        body: "boom".into(),
                    });
                }
                let idx = match s.svc_idx.get(name) {
                    Some(i) => *i,
                    None if s.extinction > 0 => s.extinction,
                    None => s.services_idx.max(s.checks_idx),
                };
                if s.garbage.contains(name) {
                    return Ok((idx, json!({"not": "a list"})));
                }
                Ok((idx, health_body(&s, name)))
            }
            other => Err(ConsulError::Status {
                status: 404,
                body: format!("no fake for {other}"),
            }),
        }
    }
}

fn services_body(s: &State) -> Value {
    let mut m: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for i in &s.instances {
        m.entry(i.service.clone())
            .or_default()
            .extend(i.tags.iter().cloned());
    }
    json!(m)
}

fn nodes_body(s: &State) -> Value {
    let nodes: BTreeMap<&str, &str> = s
        .instances
        .iter()
        .map(|i| (i.node.as_str(), i.node_address.as_str()))
        .collect();
    Value::Array(
        nodes
            .into_iter()
            .map(|(n, a)| json!({"Node": n, "Address": a}))
            .collect(),
    )
}

fn node_body(s: &State, node: &str) -> Value {
    let mut services = serde_json::Map::new();
    let mut address = String::new();
    for i in s.instances.iter().filter(|i| i.node == node) {
        address.clone_from(&i.node_address);
        services.insert(
            i.id.clone(),
            json!({"ID": i.id, "Service": i.service, "Tags": i.tags, "Address": i.address,
                   "Port": i.port, "Meta": {}, "CreateIndex": i.modify_index,
                   "ModifyIndex": i.modify_index}),
        );
    }
    json!({"Node": {"Node": node, "Address": address}, "Services": services})
}

fn checks_body(s: &State) -> Value {
    let mut v = Vec::new();
    for (node, id, status) in &s.node_checks {
        v.push(json!({"Node": node, "CheckID": id, "Status": status, "ServiceID": "", "ServiceName": "", "Output": ""}));
    }
    for i in &s.instances {
        for (id, status) in &i.checks {
            v.push(json!({"Node": i.node, "CheckID": id, "Status": status, "ServiceID": i.id, "ServiceName": i.service, "Output": ""}));
        }
    }
    Value::Array(v)
}

fn health_body(s: &State, name: &str) -> Value {
    let mut v = Vec::new();
    for i in s.instances.iter().filter(|i| i.service == name) {
        let mut checks = Vec::new();
        for (node, id, status) in &s.node_checks {
            if *node == i.node {
                checks.push(json!({"Node": node, "CheckID": id, "Status": status, "ServiceID": "", "ServiceName": ""}));
            }
        }
        for (id, status) in &i.checks {
            checks.push(json!({"Node": i.node, "CheckID": id, "Status": status, "ServiceID": i.id, "ServiceName": i.service}));
        }
        v.push(json!({
            "Node": {"Node": i.node, "Address": i.node_address},
            "Service": {"ID": i.id, "Service": i.service, "Tags": i.tags, "Address": i.address,
                        "Port": i.port, "Meta": {}, "Weights": {"Passing": 1, "Warning": 1}},
            "Checks": checks,
        }));
    }
    Value::Array(v)
}

impl Transport for FakeConsul {
    fn get(&self, request: GetRequest) -> BoxFuture<'_, Result<RawResponse, ConsulError>> {
        Box::pin(async move {
            let path = request.path();
            self.log.lock().unwrap().push(path.clone());
            let mut version = self.version.subscribe();
            let blocking = request.blocking.filter(|b| b.index > 0);
            let _guard = blocking.map(|_| {
                let n = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                self.max_in_flight.fetch_max(n, Ordering::SeqCst);
                InFlight(self)
            });
            let deadline = blocking.map(|b| tokio::time::Instant::now() + b.wait);
            loop {
                version.borrow_and_update();
                let (index, body) = self.answer(&path)?;
                let index = index.max(1);
                let done = match (blocking, deadline) {
                    (Some(b), Some(deadline)) => {
                        index > b.index || tokio::time::Instant::now() >= deadline
                    }
                    _ => true,
                };
                if done {
                    return Ok(RawResponse {
                        status: 200,
                        index: Some(index),
                        body: Bytes::from(serde_json::to_vec(&body).unwrap()),
                    });
                }
                if let Some(deadline) = deadline {
                    tokio::select! {
                        _ = version.changed() => {}
                        _ = tokio::time::sleep_until(deadline) => {}
                    }
                }
            }
        })
    }
}

/// A resolver with a fixed, changeable table.
#[derive(Debug, Default)]
pub struct FakeResolver {
    pub table: Mutex<BTreeMap<String, IpAddr>>,
}

impl FakeResolver {
    pub fn set(&self, host: &str, ip: &str) {
        self.table
            .lock()
            .unwrap()
            .insert(host.into(), ip.parse().unwrap());
    }
}

impl Resolver for FakeResolver {
    fn resolve<'a>(&'a self, host: &'a str) -> BoxFuture<'a, Option<IpAddr>> {
        Box::pin(async move { self.table.lock().unwrap().get(host).copied() })
    }
}
