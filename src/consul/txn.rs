//! `PUT /v1/txn`: atomic KV writes with typed operations.
//!
//! Owns the typed operation list and the 409 handling. It must not retry a rolled-back
//! transaction; the caller decides.

use base64::Engine as _;
use reqwest::Method;

use super::client::ConsulClient;
use super::error::{ConsulError, TxnOpError};
use super::kv::{KvKey, KvPair, KvPrefix};
use super::wire::{TxnKvOpWire, TxnOpWire, TxnResponseWire};

/// Consul's limit of operations per transaction.
pub const MAX_TXN_OPS: usize = 128;

/// One KV operation of a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxnOp {
    /// Set a key.
    Set {
        /// Key.
        key: KvKey,
        /// Value.
        value: Vec<u8>,
    },
    /// Set a key if its `ModifyIndex` equals `index` (0: only if missing).
    Cas {
        /// Key.
        key: KvKey,
        /// Value.
        value: Vec<u8>,
        /// Expected `ModifyIndex`.
        index: u64,
    },
    /// Read a key (fails the transaction if missing).
    Get {
        /// Key.
        key: KvKey,
    },
    /// Fail unless the key's `ModifyIndex` equals `index`.
    CheckIndex {
        /// Key.
        key: KvKey,
        /// Expected `ModifyIndex`.
        index: u64,
    },
    /// Fail if the key exists.
    CheckNotExists {
        /// Key.
        key: KvKey,
    },
    /// Delete one key.
    Delete {
        /// Key.
        key: KvKey,
    },
    /// Delete a folder.
    DeleteTree {
        /// Folder, ending in `/`.
        prefix: KvPrefix,
    },
}

impl TxnOp {
    fn to_wire(&self) -> TxnOpWire {
        let b64 = |v: &[u8]| Some(base64::engine::general_purpose::STANDARD.encode(v));
        let kv = match self {
            TxnOp::Set { key, value } => op("set", key.as_str(), b64(value), None),
            TxnOp::Cas { key, value, index } => op("cas", key.as_str(), b64(value), Some(*index)),
            TxnOp::Get { key } => op("get", key.as_str(), None, None),
            TxnOp::CheckIndex { key, index } => op("check-index", key.as_str(), None, Some(*index)),
            TxnOp::CheckNotExists { key } => op("check-not-exists", key.as_str(), None, None),
            TxnOp::Delete { key } => op("delete", key.as_str(), None, None),
            TxnOp::DeleteTree { prefix } => op("delete-tree", prefix.as_str(), None, None),
        };
        TxnOpWire { kv }
    }
}

fn op(verb: &'static str, key: &str, value: Option<String>, index: Option<u64>) -> TxnKvOpWire {
    TxnKvOpWire {
        verb,
        key: key.to_owned(),
        value,
        flags: None,
        index,
    }
}

impl ConsulClient {
    /// Runs the operations atomically. On success returns the KV results (Consul returns one per
    /// non-delete operation). A rollback is [`ConsulError::TxnConflict`] with Consul's `Errors`.
    pub async fn txn(&self, ops: &[TxnOp]) -> Result<Vec<KvPair>, ConsulError> {
        if ops.is_empty() {
            return Ok(Vec::new());
        }
        if ops.len() > MAX_TXN_OPS {
            return Err(ConsulError::InvalidArgument(format!(
                "a transaction holds at most {MAX_TXN_OPS} operations, got {}",
                ops.len()
            )));
        }
        let wire: Vec<TxnOpWire> = ops.iter().map(TxnOp::to_wire).collect();
        let body = serde_json::to_vec(&wire).map_err(|e| ConsulError::Build(e.to_string()))?;
        let (status, body) = self
            .write_raw(
                Method::PUT,
                &["v1".to_owned(), "txn".to_owned()],
                &[],
                Some(body),
                &[409],
            )
            .await?;
        let resp: TxnResponseWire =
            serde_json::from_slice(&body).map_err(|e| ConsulError::decode("txn response", e))?;
        let errors = resp.errors.unwrap_or_default();
        if status == 409 || !errors.is_empty() {
            return Err(ConsulError::TxnConflict {
                errors: errors.into_iter().map(TxnOpError::from).collect(),
            });
        }
        resp.results
            .unwrap_or_default()
            .into_iter()
            .filter_map(|r| r.kv)
            .map(KvPair::try_from)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_shape() {
        let ops = [
            TxnOp::Cas {
                key: KvKey::new("a").unwrap(),
                value: b"x".to_vec(),
                index: 0,
            },
            TxnOp::DeleteTree {
                prefix: KvPrefix::new("b/").unwrap(),
            },
        ];
        let wire: Vec<_> = ops.iter().map(TxnOp::to_wire).collect();
        assert_eq!(
            serde_json::to_string(&wire).unwrap(),
            r#"[{"KV":{"Verb":"cas","Key":"a","Value":"eA==","Index":0}},{"KV":{"Verb":"delete-tree","Key":"b/"}}]"#
        );
    }
}
