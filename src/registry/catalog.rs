//! Services and checks: decoding and validating agent registrations, applying them to the
//! [`Store`], and rendering catalog, health and agent reads in Consul's JSON shapes.
//!
//! Owns: the defaults the agent fills in (check IDs `service:<id>[:<n>]`, check names,
//! initial status `critical`, weights), registration validation messages (section 6.1),
//! catalog/health/agent read views and their `X-Consul-Index` (section 12.2).
//! Must not: do IO, read clocks or know about HTTP transport details.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::duration::{format_go_duration, parse_go_duration};
use super::store::{
    ApplyError, CRITICAL, CheckDef, CheckRec, PASSING, SERF_CHECK_ID, SERVICE_MAINT_PREFIX,
    ServiceRec, Store, WARNING,
};

/// A tagged address (`{Address, Port}`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceAddress {
    pub address: String,
    pub port: i64,
}

/// A service as registered through the agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceDef {
    pub id: String,
    pub name: String,
    pub tags: Vec<String>,
    pub address: String,
    pub tagged_addresses: BTreeMap<String, ServiceAddress>,
    pub meta: BTreeMap<String, String>,
    pub port: i64,
    pub kind: String,
    pub enable_tag_override: bool,
    pub weights_passing: i64,
    pub weights_warning: i64,
}

impl Default for ServiceDef {
    fn default() -> Self {
        ServiceDef {
            id: String::new(),
            name: String::new(),
            tags: Vec::new(),
            address: String::new(),
            tagged_addresses: BTreeMap::new(),
            meta: BTreeMap::new(),
            port: 0,
            kind: String::new(),
            enable_tag_override: false,
            weights_passing: 1,
            weights_warning: 1,
        }
    }
}

/// A check as given in a registration, before the agent's defaults are applied.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckInput {
    pub id: String,
    pub name: String,
    pub notes: String,
    pub status: String,
    pub service_id: String,
    pub def: CheckDef,
}

/// A registration rejected with 400 (the message is the body).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Invalid(pub String);

fn norm(k: &str) -> String {
    k.chars()
        .filter(|c| *c != '_' && *c != '-')
        .flat_map(char::to_lowercase)
        .collect()
}

/// Looks a field up by name, accepting CamelCase, snake_case and any letter case.
fn field<'a>(obj: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    let want = norm(name);
    obj.iter()
        .find(|(k, _)| norm(k) == want)
        .map(|(_, v)| v)
        .filter(|v| !v.is_null())
}

fn str_field(obj: &Map<String, Value>, name: &str) -> Result<String, Invalid> {
    match field(obj, name) {
        None => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Number(n)) => Ok(n.to_string()),
        Some(Value::Bool(b)) => Ok(b.to_string()),
        Some(_) => Err(Invalid(format!(
            "Request decode failed: field {name} must be a string"
        ))),
    }
}

fn opt_str(obj: &Map<String, Value>, name: &str) -> Result<Option<String>, Invalid> {
    let s = str_field(obj, name)?;
    Ok(if s.is_empty() { None } else { Some(s) })
}

fn int_field(obj: &Map<String, Value>, name: &str) -> Result<i64, Invalid> {
    match field(obj, name) {
        None => Ok(0),
        Some(Value::Number(n)) => n
            .as_i64()
            .ok_or_else(|| Invalid(format!("Request decode failed: invalid {name}"))),
        Some(Value::String(s)) => s
            .parse()
            .map_err(|_| Invalid(format!("Request decode failed: invalid {name}"))),
        Some(_) => Err(Invalid(format!("Request decode failed: invalid {name}"))),
    }
}

fn bool_field(obj: &Map<String, Value>, name: &str) -> bool {
    matches!(field(obj, name), Some(Value::Bool(true)))
}

fn duration_field(obj: &Map<String, Value>, name: &str) -> Result<Option<Duration>, Invalid> {
    match field(obj, name) {
        None => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => parse_go_duration(s)
            .map(|d| if d.is_zero() { None } else { Some(d) })
            .map_err(|e| Invalid(format!("Request decode failed: {e}"))),
        // Consul also accepts a number of nanoseconds.
        Some(Value::Number(n)) => match n.as_u64() {
            Some(0) => Ok(None),
            Some(ns) => Ok(Some(Duration::from_nanos(ns))),
            None => Err(Invalid(format!(
                "Request decode failed: time: invalid duration \"{n}\""
            ))),
        },
        Some(other) => Err(Invalid(format!(
            "Request decode failed: time: invalid duration \"{other}\""
        ))),
    }
}

fn string_list(v: Option<&Value>) -> Vec<String> {
    match v {
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(|i| i.as_str().map(str::to_string))
            .collect(),
        _ => Vec::new(),
    }
}

fn as_object(v: &Value) -> Result<&Map<String, Value>, Invalid> {
    v.as_object()
        .ok_or_else(|| Invalid("Request decode failed: expected a JSON object".to_string()))
}

fn validate_meta(meta: &BTreeMap<String, String>) -> Result<(), String> {
    if meta.len() > 64 {
        return Err("Node metadata cannot contain more than 64 key/value pairs".to_string());
    }
    for (k, v) in meta {
        let reason = if k.is_empty() {
            Some("Key cannot be blank")
        } else if !k
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            Some("Key contains invalid characters")
        } else if k.len() > 128 {
            Some("Key is too long (limit: 128 characters)")
        } else if k.starts_with("consul-") {
            Some("Key prefix 'consul-' is reserved for internal use")
        } else if v.len() > 512 {
            Some("Value is too long (limit: 512 characters)")
        } else {
            None
        };
        if let Some(reason) = reason {
            return Err(format!(
                "Couldn't load metadata pair ('{k}', '{v}'): {reason}"
            ));
        }
    }
    Ok(())
}

/// Decodes a check object. Returns `None` for an empty check (`{}`), which Consul ignores.
pub fn parse_check(v: &Value) -> Result<Option<CheckInput>, Invalid> {
    let obj = as_object(v)?;
    let mut header = BTreeMap::new();
    if let Some(Value::Object(h)) = field(obj, "Header") {
        for (k, vals) in h {
            header.insert(k.clone(), string_list(Some(vals)));
        }
    }
    let mut script_args = string_list(field(obj, "ScriptArgs"));
    if script_args.is_empty() {
        script_args = string_list(field(obj, "Args"));
    }
    let def = CheckDef {
        ttl: duration_field(obj, "TTL")?,
        http: opt_str(obj, "HTTP")?,
        method: opt_str(obj, "Method")?,
        header,
        body: opt_str(obj, "Body")?,
        tls_skip_verify: bool_field(obj, "TLSSkipVerify"),
        tcp: opt_str(obj, "TCP")?,
        grpc: opt_str(obj, "GRPC")?,
        script_args,
        docker_container_id: opt_str(obj, "DockerContainerID")?,
        shell: opt_str(obj, "Shell")?,
        alias_service: opt_str(obj, "AliasService")?,
        interval: duration_field(obj, "Interval")?,
        timeout: duration_field(obj, "Timeout")?,
        deregister_critical_after: duration_field(obj, "DeregisterCriticalServiceAfter")?,
    };
    let mut id = str_field(obj, "CheckID")?;
    if id.is_empty() {
        id = str_field(obj, "ID")?;
    }
    let input = CheckInput {
        id,
        name: str_field(obj, "Name")?,
        notes: str_field(obj, "Notes")?,
        status: str_field(obj, "Status")?,
        service_id: str_field(obj, "ServiceID")?,
        def,
    };
    if input == CheckInput::default() {
        return Ok(None);
    }
    validate_check(&input)?;
    Ok(Some(input))
}

fn validate_check(c: &CheckInput) -> Result<(), Invalid> {
    if !c.status.is_empty() && ![PASSING, WARNING, CRITICAL].contains(&c.status.as_str()) {
        return Err(Invalid(
            "Status for checks must 'passing', 'warning', 'critical'".to_string(),
        ));
    }
    let d = &c.def;
    let runnable = d.http.is_some()
        || d.tcp.is_some()
        || d.grpc.is_some()
        || !d.script_args.is_empty()
        || d.docker_container_id.is_some();
    let valid = d.ttl.is_some() || (runnable && d.interval.is_some()) || d.alias_service.is_some();
    if !valid {
        return Err(Invalid(
            "Invalid check: Must provide TTL or Script/DockerContainerID/HTTP/TCP and Interval"
                .to_string(),
        ));
    }
    Ok(())
}

/// Decodes `PUT /v1/agent/service/register`.
pub fn parse_service_registration(v: &Value) -> Result<(ServiceDef, Vec<CheckInput>), Invalid> {
    let obj = as_object(v)?;
    let name = str_field(obj, "Name")?;
    if name.is_empty() {
        return Err(Invalid("Missing service name".to_string()));
    }
    let mut id = str_field(obj, "ID")?;
    if id.is_empty() {
        id = name.clone();
    }
    let address = str_field(obj, "Address")?;
    if ["0.0.0.0", "::", "[::]"].contains(&address.as_str()) {
        return Err(Invalid("Invalid service address".to_string()));
    }
    let mut meta = BTreeMap::new();
    if let Some(Value::Object(m)) = field(obj, "Meta") {
        for (k, v) in m {
            let value = match v {
                Value::String(s) => s.clone(),
                Value::Null => String::new(),
                other => other.to_string(),
            };
            meta.insert(k.clone(), value);
        }
    }
    validate_meta(&meta).map_err(|e| Invalid(format!("Invalid Service Meta: {e}")))?;
    let mut tagged_addresses = BTreeMap::new();
    if let Some(Value::Object(m)) = field(obj, "TaggedAddresses") {
        for (k, v) in m {
            let o = as_object(v)?;
            tagged_addresses.insert(
                k.clone(),
                ServiceAddress {
                    address: str_field(o, "Address")?,
                    port: int_field(o, "Port")?,
                },
            );
        }
    }
    let (mut weights_passing, mut weights_warning) = (1, 1);
    if let Some(Value::Object(w)) = field(obj, "Weights") {
        weights_passing = int_field(w, "Passing")?;
        weights_warning = int_field(w, "Warning")?;
        if weights_passing < 1 {
            return Err(Invalid(format!(
                "Invalid Weights: Passing must be greater than 0, got {weights_passing}"
            )));
        }
        if weights_warning < 0 {
            return Err(Invalid(format!(
                "Invalid Weights: Warning must be greater or equal than 0, got {weights_warning}"
            )));
        }
    }
    let def = ServiceDef {
        id,
        name,
        tags: string_list(field(obj, "Tags")),
        address,
        tagged_addresses,
        meta,
        port: int_field(obj, "Port")?,
        kind: str_field(obj, "Kind")?,
        enable_tag_override: bool_field(obj, "EnableTagOverride"),
        weights_passing,
        weights_warning,
    };
    let mut checks = Vec::new();
    if let Some(c) = field(obj, "Check")
        && let Some(c) = parse_check(c)?
    {
        checks.push(c);
    }
    if let Some(Value::Array(list)) = field(obj, "Checks") {
        for c in list {
            // An empty entry in Checks is invalid, unlike an empty Check.
            match parse_check(c)? {
                Some(c) => checks.push(c),
                None => {
                    return Err(Invalid(
                        "Invalid check: Must provide TTL or Script/DockerContainerID/HTTP/TCP and Interval"
                            .to_string(),
                    ));
                }
            }
        }
    }
    Ok((def, checks))
}

/// Decodes `PUT /v1/agent/check/register`.
pub fn parse_check_registration(v: &Value) -> Result<CheckInput, Invalid> {
    let obj = as_object(v)?;
    if str_field(obj, "Name")?.is_empty() {
        return Err(Invalid("Missing check name".to_string()));
    }
    match parse_check(v)? {
        Some(mut c) => {
            if c.id.is_empty() {
                c.id = c.name.clone();
            }
            Ok(c)
        }
        None => Err(Invalid("Missing check name".to_string())),
    }
}

fn check_from_input(input: &CheckInput, default_id: String, svc: Option<&ServiceDef>) -> CheckRec {
    let check_id = if input.id.is_empty() {
        default_id
    } else {
        input.id.clone()
    };
    let name = if input.name.is_empty() {
        match svc {
            Some(s) => format!("Service '{}' check", s.name),
            None => check_id.clone(),
        }
    } else {
        input.name.clone()
    };
    CheckRec {
        check_id,
        name,
        status: if input.status.is_empty() {
            CRITICAL.to_string()
        } else {
            input.status.clone()
        },
        notes: input.notes.clone(),
        output: String::new(),
        service_id: svc.map(|s| s.id.clone()).unwrap_or_default(),
        service_name: svc.map(|s| s.name.clone()).unwrap_or_default(),
        service_tags: svc.map(|s| s.tags.clone()).unwrap_or_default(),
        kind: input.def.kind().to_string(),
        def: input.def.clone(),
        create_index: 0,
        modify_index: 0,
    }
}

impl Store {
    pub(crate) fn register_service(
        &mut self,
        idx: u64,
        def: &ServiceDef,
        checks: &[CheckInput],
        replace: bool,
    ) -> Result<(), ApplyError> {
        let prev = self.services.get(&def.id).cloned();
        if prev.as_ref().map(|p| &p.def) != Some(def) {
            if let Some(p) = &prev
                && p.def.name != def.name
            {
                self.take_service(&def.id);
                self.drop_service_name_if_extinct(idx, &p.def.name);
            }
            self.put_service(ServiceRec {
                def: def.clone(),
                create_index: prev.as_ref().map_or(idx, |p| p.create_index),
                modify_index: idx,
                server_owned: false,
            });
            self.idx.services = idx;
            self.idx.service.insert(def.name.clone(), idx);
        }
        let mut kept = BTreeSet::new();
        for (i, input) in checks.iter().enumerate() {
            let default_id = if checks.len() == 1 {
                format!("service:{}", def.id)
            } else {
                format!("service:{}:{}", def.id, i + 1)
            };
            let mut rec = check_from_input(input, default_id, Some(def));
            if let Some(prev) = self.checks.get(&rec.check_id) {
                rec.status = prev.status.clone();
                rec.output = prev.output.clone();
            }
            kept.insert(rec.check_id.clone());
            self.upsert_check(idx, rec);
        }
        if replace {
            let stale: Vec<String> = self
                .checks_of(&def.id)
                .filter(|c| !kept.contains(&c.check_id))
                .map(|c| c.check_id.clone())
                .collect();
            for id in stale {
                self.remove_check(idx, &id);
            }
        }
        Ok(())
    }

    fn drop_service_name_if_extinct(&mut self, idx: u64, name: &str) {
        if self.has_service(name) {
            self.idx.service.insert(name.to_string(), idx);
        } else {
            self.idx.service.remove(name);
            self.idx.service_last_extinction = Some(idx);
        }
    }

    pub(crate) fn deregister_service(&mut self, idx: u64, id: &str) -> Result<(), ApplyError> {
        let Some(rec) = self.services.get(id).filter(|r| r.on_agent()).cloned() else {
            return Err(ApplyError::UnknownService(id.to_string()));
        };
        let bound: Vec<String> = self.checks_of(id).map(|c| c.check_id.clone()).collect();
        for c in bound {
            self.remove_check(idx, &c);
        }
        self.take_service(id);
        self.idx.services = idx;
        self.drop_service_name_if_extinct(idx, &rec.def.name);
        Ok(())
    }

    pub(crate) fn register_check(
        &mut self,
        idx: u64,
        input: &CheckInput,
    ) -> Result<(), ApplyError> {
        let svc = if input.service_id.is_empty() {
            None
        } else {
            match self
                .services
                .get(&input.service_id)
                .filter(|s| s.on_agent())
            {
                Some(s) => Some(s.def.clone()),
                None => return Err(ApplyError::CheckServiceMissing(input.service_id.clone())),
            }
        };
        let mut rec = check_from_input(input, input.name.clone(), svc.as_ref());
        if input.status.is_empty()
            && let Some(prev) = self.checks.get(&rec.check_id)
        {
            rec.status = prev.status.clone();
            rec.output = prev.output.clone();
        }
        self.upsert_check(idx, rec);
        Ok(())
    }

    pub(crate) fn deregister_check(&mut self, idx: u64, id: &str) -> Result<(), ApplyError> {
        if !self.checks.contains_key(id) || id == SERF_CHECK_ID {
            return Err(ApplyError::UnknownCheck(id.to_string()));
        }
        self.remove_check(idx, id);
        Ok(())
    }

    pub(crate) fn maintenance(
        &mut self,
        idx: u64,
        id: &str,
        enable: bool,
        reason: &str,
    ) -> Result<(), ApplyError> {
        let Some(svc) = self
            .services
            .get(id)
            .filter(|s| s.on_agent())
            .map(|s| s.def.clone())
        else {
            return Err(ApplyError::UnknownService(id.to_string()));
        };
        let check_id = format!("{SERVICE_MAINT_PREFIX}{id}");
        if enable {
            if self.checks.contains_key(&check_id) {
                return Ok(());
            }
            let notes = if reason.is_empty() {
                "Maintenance mode is enabled for this service, but no reason was provided. This is a default message.".to_string()
            } else {
                reason.to_string()
            };
            let rec = CheckRec {
                check_id,
                name: "Service Maintenance Mode".to_string(),
                status: CRITICAL.to_string(),
                notes,
                output: String::new(),
                service_id: svc.id.clone(),
                service_name: svc.name.clone(),
                service_tags: svc.tags.clone(),
                kind: "maintenance".to_string(),
                def: CheckDef::default(),
                create_index: 0,
                modify_index: 0,
            };
            self.upsert_check(idx, rec);
        } else {
            self.remove_check(idx, &check_id);
        }
        Ok(())
    }

    // ----- read views -----

    fn node_tagged_addresses(&self) -> Value {
        let a = &self.node.address;
        json!({"lan": a, "lan_ipv4": a, "wan": a, "wan_ipv4": a})
    }

    /// The node object of health entries and `/v1/catalog/nodes`.
    pub fn node_json(&self) -> Value {
        json!({
            "ID": self.node.id,
            "Node": self.node.name,
            "Address": self.node.address,
            "Datacenter": self.node.datacenter,
            "TaggedAddresses": self.node_tagged_addresses(),
            "Meta": {"consul-network-segment": ""},
            "CreateIndex": self.node.create_index,
            "ModifyIndex": self.node.modify_index,
        })
    }

    /// A check in Consul's HealthCheck shape.
    pub fn check_json(&self, c: &CheckRec) -> Value {
        let d = &c.def;
        let mut definition = Map::new();
        if let Some(h) = &d.http {
            definition.insert("HTTP".into(), h.clone().into());
            definition.insert("Header".into(), json!(d.header));
            definition.insert("Method".into(), d.method.clone().unwrap_or_default().into());
            definition.insert("Body".into(), d.body.clone().unwrap_or_default().into());
            definition.insert("TLSSkipVerify".into(), d.tls_skip_verify.into());
        }
        if let Some(t) = &d.tcp {
            definition.insert("TCP".into(), t.clone().into());
        }
        if let Some(t) = &d.grpc {
            definition.insert("GRPC".into(), t.clone().into());
        }
        if !d.script_args.is_empty() {
            definition.insert("ScriptArgs".into(), json!(d.script_args));
        }
        let dur = |v: Option<Duration>| v.map(format_go_duration).unwrap_or_default();
        if d.interval.is_some() {
            definition.insert("Interval".into(), dur(d.interval).into());
        }
        if d.timeout.is_some() {
            definition.insert("Timeout".into(), dur(d.timeout).into());
        }
        if d.deregister_critical_after.is_some() {
            definition.insert(
                "DeregisterCriticalServiceAfter".into(),
                dur(d.deregister_critical_after).into(),
            );
        }
        json!({
            "Node": self.node.name,
            "CheckID": c.check_id,
            "Name": c.name,
            "Status": c.status,
            "Notes": c.notes,
            "Output": c.output,
            "ServiceID": c.service_id,
            "ServiceName": c.service_name,
            "ServiceTags": c.service_tags,
            "Type": c.kind,
            "Interval": dur(d.interval),
            "Timeout": dur(d.timeout),
            "ExposedPort": 0,
            "Definition": Value::Object(definition),
            "CreateIndex": c.create_index,
            "ModifyIndex": c.modify_index,
        })
    }

    fn tagged_json(s: &ServiceDef) -> Value {
        let m: Map<String, Value> = s
            .tagged_addresses
            .iter()
            .map(|(k, a)| (k.clone(), json!({"Address": a.address, "Port": a.port})))
            .collect();
        Value::Object(m)
    }

    /// The agent/health `Service` object.
    pub fn service_json(&self, rec: &ServiceRec) -> Value {
        serde_json::to_value(ServiceView(rec)).unwrap_or_default()
    }

    /// The agent's view of one service (`/v1/agent/services` values).
    pub fn agent_service_json(&self, rec: &ServiceRec) -> Value {
        let mut v = self.service_json(rec);
        if let Some(o) = v.as_object_mut() {
            o.remove("CreateIndex");
            o.remove("ModifyIndex");
            o.insert("Datacenter".into(), self.node.datacenter.clone().into());
        }
        v
    }

    fn instances_of<'a>(&'a self, name: &str, tags: &[String]) -> Vec<&'a ServiceRec> {
        let wanted: Vec<String> = tags.iter().map(|t| t.to_lowercase()).collect();
        self.instances_named(name)
            .filter(|s| {
                wanted
                    .iter()
                    .all(|w| s.def.tags.iter().any(|t| t.to_lowercase() == *w))
            })
            .collect()
    }

    /// The index `/v1/catalog/service/:name` reports, without rendering it.
    pub fn catalog_service_index(&self, name: &str) -> u64 {
        let exists = self.has_service(name);
        self.service_read_index(name, false, exists)
    }

    /// The index `/v1/health/service/:name` reports, without rendering it.
    pub fn health_service_index(&self, name: &str, tags: &[String]) -> u64 {
        let exists = !self.instances_of(name, tags).is_empty();
        self.service_read_index(name, true, exists)
    }

    /// `/v1/catalog/services`: name -> union of tags, with the `services` entry.
    pub fn catalog_services(&self) -> (Value, u64) {
        let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for s in self.services.values() {
            out.entry(s.def.name.clone())
                .or_default()
                .extend(s.def.tags.iter().cloned());
        }
        (json!(out), self.idx.services)
    }

    /// `/v1/catalog/service/:name`.
    pub fn catalog_service(&self, name: &str, tags: &[String]) -> (Value, u64) {
        let exists = self.has_service(name);
        let items: Vec<Value> = self
            .instances_of(name, tags)
            .into_iter()
            .map(|rec| {
                let s = &rec.def;
                json!({
                    "ID": self.node.id,
                    "Node": self.node.name,
                    "Address": self.node.address,
                    "Datacenter": self.node.datacenter,
                    "TaggedAddresses": self.node_tagged_addresses(),
                    "NodeMeta": {"consul-network-segment": ""},
                    "ServiceKind": s.kind,
                    "ServiceID": s.id,
                    "ServiceName": s.name,
                    "ServiceTags": s.tags,
                    "ServiceAddress": s.address,
                    "ServiceTaggedAddresses": Self::tagged_json(s),
                    "ServiceWeights": {"Passing": s.weights_passing, "Warning": s.weights_warning},
                    "ServiceMeta": s.meta,
                    "ServicePort": s.port,
                    "ServiceSocketPath": "",
                    "ServiceEnableTagOverride": s.enable_tag_override,
                    "ServiceProxy": {"Mode": "", "MeshGateway": {}, "Expose": {}},
                    "ServiceConnect": {},
                    "PeerName": "",
                    "CreateIndex": rec.create_index,
                    "ModifyIndex": rec.modify_index,
                })
            })
            .collect();
        (
            Value::Array(items),
            self.service_read_index(name, false, exists),
        )
    }

    /// `/v1/health/service/:name`, `passing` applied after the query.
    pub fn health_service(&self, name: &str, tags: &[String], passing: bool) -> (Value, u64) {
        let instances = self.instances_of(name, tags);
        let exists = !instances.is_empty();
        let index = self.service_read_index(name, true, exists);
        let mut items = Vec::new();
        for rec in instances {
            let checks: Vec<&CheckRec> = self
                .node_level_checks()
                .chain(self.checks_of(&rec.def.id))
                .collect();
            if passing && checks.iter().any(|c| c.status != PASSING) {
                continue;
            }
            let checks: Vec<Value> = checks.iter().map(|c| self.check_json(c)).collect();
            items.push(json!({
                "Node": self.node_json(),
                "Service": self.service_json(rec),
                "Checks": checks,
            }));
        }
        (Value::Array(items), index)
    }

    /// `/v1/health/state/:state` (`any` or a status; unknown states give `[]`).
    pub fn health_state(&self, state: &str) -> (Value, u64) {
        let items: Vec<Value> = self
            .checks
            .values()
            .filter(|c| state == "any" || c.status == state)
            .map(|c| self.check_json(c))
            .collect();
        (Value::Array(items), self.idx.checks)
    }

    /// `/v1/health/checks/:service`.
    pub fn health_checks(&self, name: &str) -> (Value, u64) {
        let items: Vec<Value> = self
            .checks
            .values()
            .filter(|c| !c.service_id.is_empty() && c.service_name == name)
            .map(|c| self.check_json(c))
            .collect();
        (Value::Array(items), self.idx.checks)
    }

    /// `/v1/catalog/nodes`.
    pub fn catalog_nodes(&self) -> (Value, u64) {
        let mut n = self.node_json();
        if let Some(o) = n.as_object_mut() {
            o.insert("Meta".into(), json!({"consul-network-segment": ""}));
        }
        (json!([n]), self.idx.nodes)
    }

    /// `/v1/catalog/node/<node>` as JSON bytes: the node and its service instances keyed by
    /// ID, with Consul's `NodeServices` index: max(`nodes`, `services`), whatever node is
    /// asked for. An unknown node is `null` with index 0 (sent as 1), as Consul's state store
    /// answers a node it cannot find: a blocking read of it waits for a write that moves the
    /// index. The instances are serialized straight from the store (no intermediate `Value`):
    /// this one answer lists every instance on the node.
    pub fn catalog_node(&self, name: &str) -> (Vec<u8>, u64) {
        if name != self.node.name && name != self.node.id {
            return (b"null".to_vec(), 0);
        }
        let mut node = self.node_json();
        if let Some(o) = node.as_object_mut() {
            o.insert("Meta".into(), json!({"consul-network-segment": ""}));
        }
        let view = NodeServicesView {
            node,
            services: ServicesById(&self.services),
        };
        (
            serde_json::to_vec(&view).unwrap_or_default(),
            self.catalog_node_index(name),
        )
    }

    /// `X-Consul-Index` of `/v1/catalog/node/<node>` (see [`Store::catalog_node`]).
    pub fn catalog_node_index(&self, name: &str) -> u64 {
        if name != self.node.name && name != self.node.id {
            return 0;
        }
        self.idx.nodes.max(self.idx.services)
    }

    /// `/v1/agent/services`.
    pub fn agent_services(&self) -> Value {
        let m: Map<String, Value> = self
            .services
            .iter()
            .filter(|(_, rec)| rec.on_agent())
            .map(|(id, rec)| (id.clone(), self.agent_service_json(rec)))
            .collect();
        Value::Object(m)
    }

    /// `/v1/agent/checks` (the agent's own checks; `serfHealth` lives in the catalog only).
    pub fn agent_checks(&self) -> Value {
        let m: Map<String, Value> = self
            .checks
            .iter()
            .filter(|(id, _)| id.as_str() != SERF_CHECK_ID)
            .map(|(id, c)| {
                let mut v = self.check_json(c);
                if let Some(o) = v.as_object_mut() {
                    o.remove("CreateIndex");
                    o.remove("ModifyIndex");
                }
                (id.clone(), v)
            })
            .collect();
        Value::Object(m)
    }

    /// `/v1/agent/health/service/id/:id`: aggregated status and body, `None` if unknown.
    pub fn agent_service_health(&self, id: &str) -> Option<(String, Value)> {
        let rec = self.services.get(id).filter(|r| r.on_agent())?;
        let checks: Vec<&CheckRec> = self
            .checks
            .values()
            .filter(|c| {
                (c.service_id.is_empty() && c.check_id != SERF_CHECK_ID) || c.service_id == id
            })
            .collect();
        let status = aggregated_status(&checks);
        let body = json!({
            "AggregatedStatus": status,
            "Service": self.agent_service_json(rec),
            "Checks": checks.iter().map(|c| self.check_json(c)).collect::<Vec<_>>(),
        });
        Some((status, body))
    }
}

/// A service instance in Consul's `NodeService` shape, in the field order Consul writes.
struct ServiceView<'a>(&'a ServiceRec);

#[derive(Serialize)]
struct WeightsView {
    #[serde(rename = "Passing")]
    passing: i64,
    #[serde(rename = "Warning")]
    warning: i64,
}

#[derive(Serialize)]
struct EmptyObject {}

#[derive(Serialize)]
struct ProxyView {
    #[serde(rename = "Mode")]
    mode: &'static str,
    #[serde(rename = "MeshGateway")]
    mesh_gateway: EmptyObject,
    #[serde(rename = "Expose")]
    expose: EmptyObject,
}

#[derive(Serialize)]
struct TaggedView<'a> {
    #[serde(rename = "Address")]
    address: &'a str,
    #[serde(rename = "Port")]
    port: i64,
}

impl Serialize for ServiceView<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap as _;
        let rec = self.0;
        let s = &rec.def;
        let mut m = serializer.serialize_map(None)?;
        m.serialize_entry("ID", &s.id)?;
        m.serialize_entry("Service", &s.name)?;
        m.serialize_entry("Tags", &s.tags)?;
        m.serialize_entry("Address", &s.address)?;
        m.serialize_entry("Meta", &s.meta)?;
        m.serialize_entry("Port", &s.port)?;
        m.serialize_entry(
            "Weights",
            &WeightsView {
                passing: s.weights_passing,
                warning: s.weights_warning,
            },
        )?;
        m.serialize_entry("EnableTagOverride", &s.enable_tag_override)?;
        m.serialize_entry(
            "Proxy",
            &ProxyView {
                mode: "",
                mesh_gateway: EmptyObject {},
                expose: EmptyObject {},
            },
        )?;
        m.serialize_entry("Connect", &EmptyObject {})?;
        m.serialize_entry("PeerName", "")?;
        m.serialize_entry("CreateIndex", &rec.create_index)?;
        m.serialize_entry("ModifyIndex", &rec.modify_index)?;
        if !s.tagged_addresses.is_empty() {
            let tagged: BTreeMap<&str, TaggedView<'_>> = s
                .tagged_addresses
                .iter()
                .map(|(k, a)| {
                    (
                        k.as_str(),
                        TaggedView {
                            address: &a.address,
                            port: a.port,
                        },
                    )
                })
                .collect();
            m.serialize_entry("TaggedAddresses", &tagged)?;
        }
        if !s.kind.is_empty() {
            m.serialize_entry("Kind", &s.kind)?;
        }
        m.end()
    }
}

/// Service instances keyed by ID, serialized in ID order.
struct ServicesById<'a>(&'a BTreeMap<String, ServiceRec>);

impl Serialize for ServicesById<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.0.iter().map(|(id, rec)| (id, ServiceView(rec))))
    }
}

/// The body of `/v1/catalog/node/<node>`.
#[derive(Serialize)]
struct NodeServicesView<'a> {
    #[serde(rename = "Node")]
    node: Value,
    #[serde(rename = "Services")]
    services: ServicesById<'a>,
}

/// Consul's `AggregatedStatus`: maintenance > critical > warning > passing; empty is passing.
pub fn aggregated_status(checks: &[&CheckRec]) -> String {
    let mut worst = 0;
    for c in checks {
        let rank =
            if c.check_id.starts_with(SERVICE_MAINT_PREFIX) || c.check_id == "_node_maintenance" {
                4
            } else {
                match c.status.as_str() {
                    CRITICAL => 3,
                    WARNING => 2,
                    PASSING => 1,
                    _ => 3,
                }
            };
        worst = worst.max(rank);
    }
    match worst {
        4 => "maintenance",
        3 => CRITICAL,
        2 => WARNING,
        _ => PASSING,
    }
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_objects_keep_consul_shape_and_field_order() {
        let mut store = Store::new("id".into(), "n1".into(), "dc1".into());
        let def = ServiceDef {
            id: "w1".into(),
            name: "web".into(),
            tags: vec!["a".into()],
            meta: [("k".to_string(), "v".to_string())].into(),
            port: 80,
            kind: "connect-proxy".into(),
            tagged_addresses: [(
                "lan".to_string(),
                ServiceAddress {
                    address: "10.0.0.1".into(),
                    port: 81,
                },
            )]
            .into(),
            ..ServiceDef::default()
        };
        store.register_service(7, &def, &[], false).unwrap();
        let v = store.service_json(&store.services["w1"]);
        assert_eq!(
            serde_json::to_string(&v).unwrap(),
            r#"{"ID":"w1","Service":"web","Tags":["a"],"Address":"","Meta":{"k":"v"},"Port":80,"Weights":{"Passing":1,"Warning":1},"EnableTagOverride":false,"Proxy":{"Mode":"","MeshGateway":{},"Expose":{}},"Connect":{},"PeerName":"","CreateIndex":7,"ModifyIndex":7,"TaggedAddresses":{"lan":{"Address":"10.0.0.1","Port":81}},"Kind":"connect-proxy"}"#
        );
        let (body, index) = store.catalog_node("n1");
        let node: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(node["Services"]["w1"], v);
        assert_eq!(node["Node"]["Node"], "n1");
        assert_eq!(index, 7);
        assert_eq!(store.catalog_node("other"), (b"null".to_vec(), 0));
    }

    #[test]
    fn registrator_payload_is_accepted() {
        let v = json!({"ID":"host:web:80","Name":"web","Port":32768,"Tags":["a"],
            "Address":"10.0.0.2","Meta":{"check_http":"/health","check_interval":"15s"},
            "Check":null,"Checks":null});
        let (def, checks) = parse_service_registration(&v).unwrap();
        assert_eq!(def.id, "host:web:80");
        assert!(checks.is_empty());
        assert_eq!(def.meta["check_http"], "/health");
    }

    #[test]
    fn snake_case_and_script_args() {
        let v = json!({"name":"db","check":{"script_args":["/bin/true"],"interval":"10s"}});
        let (def, checks) = parse_service_registration(&v).unwrap();
        assert_eq!(def.id, "db");
        assert_eq!(checks[0].def.script_args, vec!["/bin/true"]);
        assert_eq!(checks[0].def.kind(), "script");
    }

    #[test]
    fn validation_messages() {
        let err = |v: Value| parse_service_registration(&v).unwrap_err().0;
        assert_eq!(err(json!({})), "Missing service name");
        assert_eq!(
            err(json!({"Name":"a","Address":"0.0.0.0"})),
            "Invalid service address"
        );
        assert!(err(json!({"Name":"a","Meta":{"a.b":"c"}})).starts_with("Invalid Service Meta"));
        assert!(
            err(json!({"Name":"a","Meta":{"consul-x":"c"}})).starts_with("Invalid Service Meta")
        );
        assert!(err(json!({"Name":"a","Check":{"HTTP":"http://x"}})).starts_with("Invalid check"));
        assert_eq!(
            err(json!({"Name":"a","Check":{"TTL":"1s","Status":"fluffy"}})),
            "Status for checks must 'passing', 'warning', 'critical'"
        );
        assert!(
            err(json!({"Name":"a","Check":{"TTL":"1s","DeregisterCriticalServiceAfter":"nope"}}))
                .contains("invalid duration")
        );
    }

    #[test]
    fn aggregated_status_ranks() {
        assert_eq!(aggregated_status(&[]), PASSING);
    }
}
