//! Sessions: creation, destruction and the locks they hold.
//!
//! Owns: decoding and validating `PUT /v1/session/create`, the session table and its
//! `sessions` index entry, invalidation (locks released, or deleted with the `delete`
//! behaviour), and the JSON shape of session reads. Must not: run timers (TTL expiry is
//! driven by the check runner), do IO, or know about HTTP transport details.
//! Not implemented: lock delay, and invalidation by a linked check turning critical
//! (checks are only verified to exist and not be critical at creation).

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::catalog::Invalid;
use super::duration::{format_go_duration, parse_go_duration};
use super::store::{ApplyError, CRITICAL, SERF_CHECK_ID, Store};

/// Shortest and longest session TTL Consul accepts.
pub const MIN_TTL: Duration = Duration::from_secs(10);
pub const MAX_TTL: Duration = Duration::from_secs(86400);

/// A stored session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRec {
    pub id: String,
    pub name: String,
    pub node: String,
    pub lock_delay: Duration,
    pub behavior: String,
    pub ttl: Option<Duration>,
    pub node_checks: Vec<String>,
    pub create_index: u64,
    pub modify_index: u64,
}

impl SessionRec {
    /// Consul's session JSON.
    pub fn to_json(&self) -> Value {
        json!({
            "ID": self.id,
            "Name": self.name,
            "Node": self.node,
            "LockDelay": u64::try_from(self.lock_delay.as_nanos()).unwrap_or(u64::MAX),
            "Behavior": self.behavior,
            "TTL": self.ttl.map(format_go_duration).unwrap_or_default(),
            "NodeChecks": self.node_checks,
            "ServiceChecks": Value::Null,
            "CreateIndex": self.create_index,
            "ModifyIndex": self.modify_index,
        })
    }
}

fn get<'a>(obj: &'a serde_json::Map<String, Value>, name: &str) -> Option<&'a Value> {
    obj.iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v)
        .filter(|v| !v.is_null())
}

/// Decodes `PUT /v1/session/create` (an empty body is allowed).
/// `min_ttl` is Consul's 10 s unless configured lower (tests).
pub fn parse_session_create(
    body: &Value,
    id: String,
    default_node: &str,
    min_ttl: Duration,
) -> Result<SessionRec, Invalid> {
    let empty = serde_json::Map::new();
    let obj = body.as_object().unwrap_or(&empty);
    let text = |name: &str| {
        get(obj, name)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    let behavior = match text("Behavior").as_str() {
        "" | "release" => "release".to_string(),
        "delete" => "delete".to_string(),
        other => return Err(Invalid(format!("Invalid Behavior setting '{other}'"))),
    };
    let lock_delay = match get(obj, "LockDelay") {
        None => Duration::from_secs(15),
        Some(Value::String(s)) => {
            parse_go_duration(s).map_err(|e| Invalid(format!("Request decode failed: {e}")))?
        }
        // Consul reads small numbers as seconds and large ones as nanoseconds.
        Some(Value::Number(n)) => match n.as_u64() {
            Some(v) if v < 1000 => Duration::from_secs(v),
            Some(v) => Duration::from_nanos(v),
            None => return Err(Invalid("Request decode failed: invalid LockDelay".into())),
        },
        Some(_) => return Err(Invalid("Request decode failed: invalid LockDelay".into())),
    };
    let ttl = match text("TTL").as_str() {
        "" => None,
        t => {
            let d =
                parse_go_duration(t).map_err(|e| Invalid(format!("Request decode failed: {e}")))?;
            if d.is_zero() {
                None
            } else if d < min_ttl || d > MAX_TTL {
                return Err(Invalid(format!(
                    "Invalid Session TTL '{}', must be between [{}={}]",
                    d.as_nanos(),
                    format_go_duration(min_ttl),
                    format_go_duration(MAX_TTL)
                )));
            } else {
                Some(d)
            }
        }
    };
    let node_checks = match get(obj, "NodeChecks").or_else(|| get(obj, "Checks")) {
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(|i| i.as_str().map(str::to_string))
            .collect(),
        _ => vec![SERF_CHECK_ID.to_string()],
    };
    let node = match text("Node") {
        n if n.is_empty() => default_node.to_string(),
        n => n,
    };
    Ok(SessionRec {
        id,
        name: text("Name"),
        node,
        lock_delay,
        behavior,
        ttl,
        node_checks,
        create_index: 0,
        modify_index: 0,
    })
}

impl Store {
    pub(crate) fn create_session(&mut self, idx: u64, rec: &SessionRec) -> Result<(), ApplyError> {
        if rec.node != self.node.name {
            return Err(ApplyError::MissingNode);
        }
        for c in &rec.node_checks {
            match self.checks.get(c) {
                None => return Err(ApplyError::MissingCheck(c.clone())),
                Some(check) if check.status == CRITICAL => {
                    return Err(ApplyError::CriticalCheck(c.clone()));
                }
                Some(_) => {}
            }
        }
        let mut rec = rec.clone();
        rec.create_index = idx;
        rec.modify_index = idx;
        self.sessions.insert(rec.id.clone(), rec);
        self.idx.sessions = idx;
        Ok(())
    }

    pub(crate) fn destroy_session(&mut self, idx: u64, id: &str) {
        if let Some(rec) = self.sessions.remove(id) {
            self.kv
                .invalidate_session(idx, id, rec.behavior == "delete");
            self.idx.sessions = idx;
        }
    }

    /// Sessions as JSON, filtered.
    pub fn sessions_json(&self, keep: impl Fn(&SessionRec) -> bool) -> Value {
        Value::Array(
            self.sessions
                .values()
                .filter(|s| keep(s))
                .map(SessionRec::to_json)
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_defaults_and_validation() {
        let s = parse_session_create(&json!({}), "id1".into(), "n1", MIN_TTL).unwrap();
        assert_eq!(s.behavior, "release");
        assert_eq!(s.lock_delay, Duration::from_secs(15));
        assert_eq!(s.node, "n1");
        assert_eq!(s.node_checks, vec!["serfHealth"]);
        assert!(parse_session_create(&json!({"Behavior": "x"}), "i".into(), "n", MIN_TTL).is_err());
        assert!(parse_session_create(&json!({"TTL": "1s"}), "i".into(), "n", MIN_TTL).is_err());
        let s = parse_session_create(
            &json!({"TTL": "10s", "LockDelay": 5}),
            "i".into(),
            "n",
            MIN_TTL,
        )
        .unwrap();
        assert_eq!(s.ttl, Some(Duration::from_secs(10)));
        assert_eq!(s.lock_delay, Duration::from_secs(5));
    }
}
