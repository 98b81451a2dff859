//! The KV table: entries, tombstones, their index entries, and KV transactions.
//!
//! Owns: `set` (with `cas`), `delete` (with `cas`), `delete-tree`, tombstone insertion and
//! reaping, the KV verbs of `/v1/txn` applied atomically (all or nothing, one index), and
//! the index a KV read must report (section 12.2). Must not: do IO, read clocks, parse
//! HTTP, or touch catalog state. Sessions are not implemented: verbs that need one fail.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

/// Serde helper: bytes as standard base64 strings (how Consul writes `Value`).
pub mod b64 {
    use base64::Engine;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(v))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        base64::engine::general_purpose::STANDARD
            .decode(s.as_bytes())
            .map_err(serde::de::Error::custom)
    }
}

/// One KV entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvEntry {
    pub key: String,
    #[serde(with = "b64")]
    pub value: Vec<u8>,
    pub flags: u64,
    pub lock_index: u64,
    pub session: Option<String>,
    pub create_index: u64,
    pub modify_index: u64,
}

impl KvEntry {
    /// Consul's JSON shape. `with_value` false blanks the value (txn results).
    pub fn to_json(&self, with_value: bool) -> serde_json::Value {
        use base64::Engine;
        let value = if with_value && !self.value.is_empty() {
            serde_json::Value::String(base64::engine::general_purpose::STANDARD.encode(&self.value))
        } else {
            serde_json::Value::Null
        };
        let mut m = serde_json::Map::new();
        m.insert("LockIndex".into(), self.lock_index.into());
        m.insert("Key".into(), self.key.clone().into());
        m.insert("Flags".into(), self.flags.into());
        m.insert("Value".into(), value);
        if let Some(session) = &self.session {
            m.insert("Session".into(), session.clone().into());
        }
        m.insert("CreateIndex".into(), self.create_index.into());
        m.insert("ModifyIndex".into(), self.modify_index.into());
        serde_json::Value::Object(m)
    }
}

/// The KV table with its tombstones and index entries.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvState {
    pub entries: BTreeMap<String, KvEntry>,
    /// key (or deleted prefix) -> raft index of the delete.
    pub tombstones: BTreeMap<String, u64>,
    pub idx_kvs: u64,
    pub idx_tombstones: u64,
}

/// One `/v1/txn` KV operation (already decoded; `Value` is raw bytes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxnOp {
    pub verb: String,
    pub key: String,
    #[serde(with = "b64")]
    pub value: Vec<u8>,
    pub flags: u64,
    pub index: u64,
    pub session: String,
}

impl TxnOp {
    /// Whether the verb writes (a transaction with only reads consumes no index).
    pub fn is_write(&self) -> bool {
        matches!(
            self.verb.as_str(),
            "set" | "cas" | "lock" | "unlock" | "delete" | "delete-tree" | "delete-cas"
        )
    }
}

/// A transaction's result: either every result, or the errors (and nothing applied).
#[derive(Debug, Clone, PartialEq)]
pub enum TxnOutcome {
    Committed(Vec<serde_json::Value>),
    RolledBack(Vec<(usize, String)>),
}

impl KvState {
    /// `kvs` and `tombstones` entries together (`kvsMaxIndex`).
    pub fn table_index(&self) -> u64 {
        self.idx_kvs.max(self.idx_tombstones)
    }

    fn max_tombstone_under(&self, prefix: &str) -> u64 {
        self.tombstones
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(_, i)| *i)
            .max()
            .unwrap_or(0)
    }

    /// Entries whose key starts with `prefix`, in lexical order.
    pub fn list(&self, prefix: &str) -> Vec<&KvEntry> {
        self.entries
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(_, e)| e)
            .collect()
    }

    /// The index a list (`recurse` / `keys`) over `prefix` reports.
    pub fn list_index(&self, prefix: &str) -> u64 {
        if prefix.is_empty() {
            return self.table_index();
        }
        let max_entry = self
            .list(prefix)
            .iter()
            .map(|e| e.modify_index)
            .max()
            .unwrap_or(0);
        let idx = max_entry.max(self.max_tombstone_under(prefix));
        if idx == 0 { self.table_index() } else { idx }
    }

    /// The index a single-key GET reports.
    pub fn get_index(&self, key: &str) -> u64 {
        self.entries
            .get(key)
            .map_or_else(|| self.table_index(), |e| e.modify_index)
    }

    /// `?keys` listing with an optional separator.
    pub fn keys(&self, prefix: &str, separator: Option<&str>) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for e in self.list(prefix) {
            let rest = &e.key[prefix.len()..];
            let name = match separator.filter(|s| !s.is_empty()) {
                Some(sep) => match rest.find(sep) {
                    Some(pos) => format!("{prefix}{}", &rest[..pos + sep.len()]),
                    None => e.key.clone(),
                },
                None => e.key.clone(),
            };
            if out.last() != Some(&name) {
                out.push(name);
            }
        }
        out
    }

    /// PUT. Returns Consul's `true`/`false`.
    pub fn set(&mut self, idx: u64, key: &str, value: &[u8], flags: u64, cas: Option<u64>) -> bool {
        let existing = self.entries.get(key);
        match (cas, existing) {
            (Some(0), Some(_)) => return false,
            (Some(n), None) if n != 0 => return false,
            (Some(n), Some(e)) if n != 0 && e.modify_index != n => return false,
            _ => {}
        }
        if let Some(e) = existing
            && e.value == value
            && e.flags == flags
        {
            return true;
        }
        let entry = KvEntry {
            key: key.to_string(),
            value: value.to_vec(),
            flags,
            lock_index: existing.map_or(0, |e| e.lock_index),
            session: existing.and_then(|e| e.session.clone()),
            create_index: existing.map_or(idx, |e| e.create_index),
            modify_index: idx,
        };
        self.entries.insert(key.to_string(), entry);
        self.idx_kvs = idx;
        true
    }

    /// DELETE of one key. Deleting a missing key is `true` and moves nothing.
    pub fn delete(&mut self, idx: u64, key: &str, cas: Option<u64>) -> bool {
        let Some(e) = self.entries.get(key) else {
            return true;
        };
        if let Some(n) = cas
            && e.modify_index != n
        {
            return false;
        }
        self.entries.remove(key);
        self.tombstones.insert(key.to_string(), idx);
        self.idx_kvs = idx;
        self.idx_tombstones = idx;
        true
    }

    /// DELETE `?recurse`: one tombstone for the prefix (none for the empty prefix).
    pub fn delete_tree(&mut self, idx: u64, prefix: &str) {
        let keys: Vec<String> = self.list(prefix).iter().map(|e| e.key.clone()).collect();
        if keys.is_empty() {
            return;
        }
        for k in keys {
            self.entries.remove(&k);
        }
        if !prefix.is_empty() {
            self.tombstones.insert(prefix.to_string(), idx);
            self.idx_tombstones = idx;
        }
        self.idx_kvs = idx;
    }

    /// `acquire=<session>`: takes the lock if free (incrementing `LockIndex`), or updates
    /// the value if `session` already holds it; `false` if another session holds it.
    /// The caller checks that the session exists.
    pub fn acquire(
        &mut self,
        idx: u64,
        key: &str,
        value: &[u8],
        flags: u64,
        session: &str,
    ) -> bool {
        let existing = self.entries.get(key);
        let (lock_index, create_index) = match existing {
            Some(e) => match e.session.as_deref() {
                Some(s) if s != session => return false,
                Some(_) => (e.lock_index, e.create_index),
                None => (e.lock_index + 1, e.create_index),
            },
            None => (1, idx),
        };
        self.entries.insert(
            key.to_string(),
            KvEntry {
                key: key.to_string(),
                value: value.to_vec(),
                flags,
                lock_index,
                session: Some(session.to_string()),
                create_index,
                modify_index: idx,
            },
        );
        self.idx_kvs = idx;
        true
    }

    /// `release=<session>`: clears the lock (keeping `LockIndex`) if `session` holds it.
    pub fn release(
        &mut self,
        idx: u64,
        key: &str,
        value: &[u8],
        flags: u64,
        session: &str,
    ) -> bool {
        let Some(e) = self.entries.get_mut(key) else {
            return false;
        };
        if e.session.as_deref() != Some(session) {
            return false;
        }
        e.session = None;
        e.value = value.to_vec();
        e.flags = flags;
        e.modify_index = idx;
        self.idx_kvs = idx;
        true
    }

    /// Invalidates a session's locks: released, or deleted with `delete` behaviour.
    pub fn invalidate_session(&mut self, idx: u64, session: &str, delete: bool) {
        let held: Vec<String> = self
            .entries
            .values()
            .filter(|e| e.session.as_deref() == Some(session))
            .map(|e| e.key.clone())
            .collect();
        for key in held {
            if delete {
                self.delete(idx, &key, None);
            } else if let Some(e) = self.entries.get_mut(&key) {
                e.session = None;
                e.modify_index = idx;
                self.idx_kvs = idx;
            }
        }
    }

    /// Drops tombstones created at or below `up_to`.
    pub fn reap(&mut self, up_to: u64) {
        self.tombstones.retain(|_, i| *i > up_to);
    }

    /// Whether any tombstone is at or below `up_to`.
    pub fn has_reapable(&self, up_to: u64) -> bool {
        self.tombstones.values().any(|i| *i <= up_to)
    }

    /// Applies a transaction atomically at `idx`.
    pub fn txn(&mut self, idx: u64, ops: &[TxnOp], sessions: &BTreeSet<String>) -> TxnOutcome {
        let mut work = self.clone();
        let mut results = Vec::new();
        let mut errors = Vec::new();
        for (i, op) in ops.iter().enumerate() {
            match work.txn_op(idx, op, sessions) {
                Ok(Some(serde_json::Value::Array(items))) => results.extend(items),
                Ok(Some(r)) => results.push(r),
                Ok(None) => {}
                Err(e) => errors.push((i, e)),
            }
        }
        if errors.is_empty() {
            *self = work;
            TxnOutcome::Committed(results)
        } else {
            TxnOutcome::RolledBack(errors)
        }
    }

    fn txn_op(
        &mut self,
        idx: u64,
        op: &TxnOp,
        sessions: &BTreeSet<String>,
    ) -> Result<Option<serde_json::Value>, String> {
        let key = op.key.as_str();
        let blank = |e: &KvEntry| Some(serde_json::json!({"KV": e.to_json(false)}));
        match op.verb.as_str() {
            "set" => {
                self.set(idx, key, &op.value, op.flags, None);
                Ok(self.entries.get(key).and_then(blank))
            }
            "cas" => {
                if self.set(idx, key, &op.value, op.flags, Some(op.index)) {
                    Ok(self.entries.get(key).and_then(blank))
                } else if op.index == 0 {
                    Err(format!("failed to set key {key:?}, index is stale"))
                } else {
                    match self.entries.get(key) {
                        None => Err(format!(
                            "failed to set key {key:?}, key doesn't exist or index is stale"
                        )),
                        Some(_) => Err(format!("failed to set key {key:?}, index is stale")),
                    }
                }
            }
            "get" => match self.entries.get(key) {
                Some(e) => Ok(Some(serde_json::json!({"KV": e.to_json(true)}))),
                None => Err(format!("key {key:?} doesn't exist")),
            },
            "get-or-empty" => Ok(Some(match self.entries.get(key) {
                Some(e) => serde_json::json!({"KV": e.to_json(true)}),
                None => {
                    let empty = KvEntry {
                        key: key.to_string(),
                        value: Vec::new(),
                        flags: 0,
                        lock_index: 0,
                        session: None,
                        create_index: 0,
                        modify_index: 0,
                    };
                    serde_json::json!({"KV": empty.to_json(true)})
                }
            })),
            "get-tree" => {
                // Every entry under the prefix, with values; several results for one op.
                let items: Vec<serde_json::Value> = self
                    .list(key)
                    .iter()
                    .map(|e| serde_json::json!({"KV": e.to_json(true)}))
                    .collect();
                Ok(Some(serde_json::Value::Array(items)))
            }
            "check-index" => match self.entries.get(key) {
                None => Err(format!("failed to check index, key {key:?} doesn't exist")),
                Some(e) if e.modify_index != op.index => Err(format!(
                    "failed index check for key {key:?}, current modify index {} != {}",
                    e.modify_index, op.index
                )),
                Some(e) => Ok(blank(e)),
            },
            "check-not-exists" => match self.entries.get(key) {
                Some(_) => Err(format!("key {key:?} exists")),
                None => Ok(None),
            },
            "delete" => {
                self.delete(idx, key, None);
                Ok(None)
            }
            "delete-tree" => {
                self.delete_tree(idx, key);
                Ok(None)
            }
            "delete-cas" => {
                if self.delete(idx, key, Some(op.index)) {
                    Ok(None)
                } else {
                    Err(format!("failed to delete key {key:?}, index is stale"))
                }
            }
            "lock" | "unlock" | "check-session" => {
                let session = op.session.as_str();
                if session.is_empty() {
                    return Err("missing session".to_string());
                }
                if op.verb != "check-session" && !sessions.contains(session) {
                    return Err(format!("invalid session {session:?}"));
                }
                match op.verb.as_str() {
                    "lock" => {
                        if self.acquire(idx, key, &op.value, op.flags, session) {
                            Ok(self.entries.get(key).and_then(blank))
                        } else {
                            Err(format!("failed to lock key {key:?}, lock is already held"))
                        }
                    }
                    "unlock" => {
                        if self.release(idx, key, &op.value, op.flags, session) {
                            Ok(self.entries.get(key).and_then(blank))
                        } else {
                            Err(format!(
                                "failed to unlock key {key:?}, lock isn't held, or is held by another session"
                            ))
                        }
                    }
                    _ => match self.entries.get(key) {
                        None => Err(format!(
                            "failed to check session, key {key:?} doesn't exist"
                        )),
                        Some(e) if e.session.as_deref() != Some(session) => Err(format!(
                            "failed session check for key {key:?}, current session {:?} != {session:?}",
                            e.session.clone().unwrap_or_default()
                        )),
                        Some(e) => Ok(blank(e)),
                    },
                }
            }
            other => Err(format!("unknown KV verb {other:?}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn txn_no_sessions(kv: &mut KvState, idx: u64, ops: &[TxnOp]) -> TxnOutcome {
        kv.txn(idx, ops, &BTreeSet::new())
    }

    #[test]
    fn acquire_release_and_session_txn_verbs() {
        let mut kv = KvState::default();
        assert!(kv.acquire(2, "l", b"a", 0, "s1"));
        assert_eq!(kv.entries["l"].lock_index, 1);
        assert!(
            kv.acquire(3, "l", b"b", 0, "s1"),
            "re-acquire by the holder"
        );
        assert_eq!(kv.entries["l"].lock_index, 1);
        assert!(!kv.acquire(4, "l", b"c", 0, "s2"));
        assert!(!kv.release(5, "l", b"c", 0, "s2"));
        assert!(kv.release(6, "l", b"d", 0, "s1"));
        assert_eq!(kv.entries["l"].session, None);
        assert_eq!(kv.entries["l"].lock_index, 1);
        assert!(kv.acquire(7, "l", b"e", 0, "s2"));
        assert_eq!(kv.entries["l"].lock_index, 2);
        kv.invalidate_session(8, "s2", false);
        assert_eq!(kv.entries["l"].session, None);
        assert!(kv.acquire(9, "l", b"e", 0, "s3"));
        kv.invalidate_session(10, "s3", true);
        assert!(!kv.entries.contains_key("l"));
        assert_eq!(kv.tombstones["l"], 10);
        let sessions: BTreeSet<String> = ["s1".to_string()].into();
        let mut lock = op("lock", "m", b"v", 0);
        lock.session = "s1".into();
        let mut check = op("check-session", "m", b"", 0);
        check.session = "s1".into();
        let TxnOutcome::Committed(r) = kv.txn(11, &[lock, check], &sessions) else {
            panic!("must commit")
        };
        assert_eq!(r.len(), 2);
        assert_eq!(r[0]["KV"]["Session"], "s1");
        let mut bad = op("lock", "m", b"v", 0);
        bad.session = "nope".into();
        let TxnOutcome::RolledBack(e) = kv.txn(12, &[bad], &sessions) else {
            panic!("must roll back")
        };
        assert_eq!(e[0].1, "invalid session \"nope\"");
    }

    fn op(verb: &str, key: &str, value: &[u8], index: u64) -> TxnOp {
        TxnOp {
            verb: verb.into(),
            key: key.into(),
            value: value.to_vec(),
            flags: 0,
            index,
            session: String::new(),
        }
    }

    #[test]
    fn cas_semantics() {
        let mut kv = KvState::default();
        assert!(kv.set(2, "k", b"a", 0, Some(0)));
        assert!(!kv.set(3, "k", b"b", 0, Some(0)));
        assert!(!kv.set(4, "k", b"b", 0, Some(1)));
        assert!(kv.set(5, "k", b"b", 0, Some(2)));
        assert_eq!(kv.entries["k"].modify_index, 5);
        assert_eq!(kv.entries["k"].create_index, 2);
        assert!(!kv.set(6, "missing", b"b", 0, Some(7)));
    }

    #[test]
    fn identical_put_keeps_modify_index_and_entries() {
        let mut kv = KvState::default();
        kv.set(2, "k", b"a", 1, None);
        assert!(kv.set(3, "k", b"a", 1, None));
        assert_eq!(kv.entries["k"].modify_index, 2);
        assert_eq!(kv.idx_kvs, 2);
        kv.set(4, "k", b"a", 2, None);
        assert_eq!(kv.entries["k"].modify_index, 4);
    }

    #[test]
    fn tombstones_keep_list_index_until_reaped() {
        let mut kv = KvState::default();
        kv.set(2, "app/a", b"1", 0, None);
        kv.set(3, "app/b", b"1", 0, None);
        kv.set(4, "other", b"1", 0, None);
        assert_eq!(kv.list_index("app/"), 3);
        assert!(kv.delete(5, "app/b", None));
        assert_eq!(kv.list_index("app/"), 5);
        assert_eq!(kv.table_index(), 5);
        kv.reap(5);
        // the list index goes backwards once the tombstone is reaped
        assert_eq!(kv.list_index("app/"), 2);
        // a missing prefix reports the table index
        assert_eq!(kv.list_index("nothing/"), 5);
        assert_eq!(kv.get_index("missing"), 5);
    }

    #[test]
    fn delete_tree_inserts_one_prefix_tombstone_except_for_root() {
        let mut kv = KvState::default();
        kv.set(2, "p/a", b"1", 0, None);
        kv.set(3, "p/b", b"1", 0, None);
        kv.delete_tree(4, "p/");
        assert!(kv.entries.is_empty());
        assert_eq!(kv.tombstones.get("p/"), Some(&4));
        assert_eq!(kv.list_index("p/"), 4);
        kv.set(5, "q", b"1", 0, None);
        kv.delete_tree(6, "");
        assert!(!kv.tombstones.contains_key(""));
        assert_eq!(kv.idx_kvs, 6);
        // deleting nothing moves nothing
        kv.delete_tree(7, "zzz");
        assert_eq!(kv.idx_kvs, 6);
        assert!(kv.delete(8, "zzz", None));
        assert_eq!(kv.table_index(), 6);
    }

    #[test]
    fn delete_cas_on_missing_key_is_true() {
        let mut kv = KvState::default();
        assert!(kv.delete(2, "nope", Some(9)));
        kv.set(3, "k", b"v", 0, None);
        assert!(!kv.delete(4, "k", Some(2)));
        assert!(kv.delete(5, "k", Some(3)));
    }

    #[test]
    fn keys_with_separator() {
        let mut kv = KvState::default();
        for (i, k) in ["bar", "baz", "foo/sub1", "foo/sub2", "zip"]
            .iter()
            .enumerate()
        {
            kv.set(i as u64 + 2, k, b"x", 0, None);
        }
        assert_eq!(kv.keys("", Some("/")), vec!["bar", "baz", "foo/", "zip"]);
        assert_eq!(kv.keys("foo/", Some("/")), vec!["foo/sub1", "foo/sub2"]);
        assert_eq!(kv.keys("", None).len(), 5);
    }

    #[test]
    fn txn_is_atomic() {
        let mut kv = KvState::default();
        kv.set(2, "a", b"1", 0, None);
        let before = kv.clone();
        let out = txn_no_sessions(
            &mut kv,
            3,
            &[
                op("set", "b", b"2", 0),
                op("delete", "a", b"", 0),
                op("check-index", "a", b"", 99),
            ],
        );
        match out {
            TxnOutcome::RolledBack(errs) => {
                assert_eq!(errs.len(), 1);
                assert_eq!(errs[0].0, 2);
                assert!(errs[0].1.contains("doesn't exist"), "{}", errs[0].1);
            }
            TxnOutcome::Committed(_) => panic!("must roll back"),
        }
        assert_eq!(kv, before);
        let out = txn_no_sessions(
            &mut kv,
            4,
            &[
                op("check-index", "a", b"", 2),
                op("set", "b", b"2", 0),
                op("cas", "a", b"3", 2),
                op("get", "b", b"", 0),
                op("check-not-exists", "c", b"", 0),
                op("delete", "zz", b"", 0),
            ],
        );
        let TxnOutcome::Committed(results) = out else {
            panic!("must commit")
        };
        assert_eq!(results.len(), 4);
        assert_eq!(results[1]["KV"]["Value"], serde_json::Value::Null);
        assert_eq!(results[3]["KV"]["Value"], "Mg==");
        // one index for all operations
        assert_eq!(kv.entries["a"].modify_index, 4);
        assert_eq!(kv.entries["b"].modify_index, 4);
        assert_eq!(kv.idx_kvs, 4);
    }

    #[test]
    fn txn_lock_without_session_fails() {
        let mut kv = KvState::default();
        let TxnOutcome::RolledBack(errs) = txn_no_sessions(
            &mut kv,
            2,
            &[op("lock", "k", b"v", 0), op("get", "k", b"", 0)],
        ) else {
            panic!("must roll back")
        };
        assert_eq!(errs[0], (0, "missing session".to_string()));
        assert!(errs[1].1.contains("doesn't exist"));
    }
}
