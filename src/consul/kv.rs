//! Typed KV endpoints: get, recursive list, keys, put (with CAS), delete of a key and of a
//! folder.
//!
//! Owns key validation ([`KvKey`], [`KvPrefix`]) and the KV calls of [`ConsulClient`]. It must
//! not retry or watch; see `kv_watch.rs` for a blocking watch of a prefix.

use base64::Engine as _;
use reqwest::Method;

use super::client::ConsulClient;
use super::error::ConsulError;
use super::transport::{GetRequest, RawResponse};
use super::wire::KvPairWire;

/// A KV key: non-empty, no leading `/`, no whitespace or control characters.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KvKey(String);

/// A KV folder: like a key, but it must end in `/`, so deleting `go-demo/` can never touch
/// `go-demo2`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KvPrefix(String);

fn validate_key(kind: &str, s: &str) -> Result<(), ConsulError> {
    if s.is_empty() {
        return Err(ConsulError::InvalidArgument(format!(
            "{kind} must not be empty"
        )));
    }
    if s.starts_with('/') {
        return Err(ConsulError::InvalidArgument(format!(
            "{kind} {s:?} must not start with `/`"
        )));
    }
    if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(ConsulError::InvalidArgument(format!(
            "{kind} {s:?} contains whitespace or control characters"
        )));
    }
    if s.split('/').any(|seg| seg == "." || seg == "..") || s.contains("//") {
        return Err(ConsulError::InvalidArgument(format!(
            "{kind} {s:?} contains an empty, `.` or `..` segment"
        )));
    }
    Ok(())
}

impl KvKey {
    /// Validates a key.
    pub fn new(key: impl Into<String>) -> Result<Self, ConsulError> {
        let key = key.into();
        validate_key("KV key", &key)?;
        if key.ends_with('/') {
            return Err(ConsulError::InvalidArgument(format!(
                "KV key {key:?} ends with `/`; use a KvPrefix for folders"
            )));
        }
        Ok(KvKey(key))
    }

    /// The key.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl KvPrefix {
    /// Validates a folder prefix; it must end in `/`.
    pub fn new(prefix: impl Into<String>) -> Result<Self, ConsulError> {
        let prefix = prefix.into();
        validate_key("KV prefix", &prefix)?;
        if !prefix.ends_with('/') {
            return Err(ConsulError::InvalidArgument(format!(
                "KV prefix {prefix:?} must end with `/`"
            )));
        }
        Ok(KvPrefix(prefix))
    }

    /// The prefix, with its trailing `/`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A key inside this folder.
    pub fn key(&self, rest: &str) -> Result<KvKey, ConsulError> {
        KvKey::new(format!("{}{rest}", self.0))
    }
}

impl std::fmt::Display for KvKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::fmt::Display for KvPrefix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A KV entry with its value decoded from base64.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvPair {
    /// The key.
    pub key: String,
    /// The raw value (empty for Consul's `null`).
    pub value: Vec<u8>,
    /// User flags.
    pub flags: u64,
    /// Index of creation.
    pub create_index: u64,
    /// Index of the last modification (use it for `cas`).
    pub modify_index: u64,
    /// Number of successful lock acquisitions.
    pub lock_index: u64,
    /// The session holding the lock, if any.
    pub session: Option<String>,
}

impl TryFrom<KvPairWire> for KvPair {
    type Error = ConsulError;
    fn try_from(w: KvPairWire) -> Result<Self, ConsulError> {
        let value = match w.value {
            Some(v) => base64::engine::general_purpose::STANDARD
                .decode(v.as_bytes())
                .map_err(|e| ConsulError::decode(format!("value of KV key {:?}", w.key), e))?,
            None => Vec::new(),
        };
        Ok(KvPair {
            key: w.key,
            value,
            flags: w.flags,
            create_index: w.create_index,
            modify_index: w.modify_index,
            lock_index: w.lock_index,
            session: w.session,
        })
    }
}

pub(crate) fn kv_segments(key: &str) -> Vec<String> {
    let mut segs = vec!["v1".to_owned(), "kv".to_owned()];
    segs.extend(key.split('/').map(str::to_owned));
    segs
}

/// Decodes a KV list response; 404 means no entries.
pub(crate) fn decode_kv_list(resp: &RawResponse) -> Result<Vec<KvPair>, ConsulError> {
    if resp.status == 404 {
        return Ok(Vec::new());
    }
    let wire: Vec<KvPairWire> =
        serde_json::from_slice(&resp.body).map_err(|e| ConsulError::decode("KV list", e))?;
    wire.into_iter().map(KvPair::try_from).collect()
}

fn decode_bool(what: &str, body: &[u8]) -> Result<bool, ConsulError> {
    serde_json::from_slice::<bool>(body).map_err(|e| ConsulError::decode(what, e))
}

impl ConsulClient {
    /// Reads one key; `None` when it does not exist.
    pub async fn kv_get(&self, key: &KvKey) -> Result<Option<KvPair>, ConsulError> {
        let resp = self
            .get_raw(GetRequest {
                segments: kv_segments(key.as_str()),
                query: Vec::new(),
                blocking: None,
            })
            .await?;
        Ok(decode_kv_list(&resp)?
            .into_iter()
            .find(|p| p.key == key.as_str()))
    }

    /// Lists every entry under a folder (`?recurse`), sorted by key; empty when none.
    pub async fn kv_list(&self, prefix: &KvPrefix) -> Result<Vec<KvPair>, ConsulError> {
        let resp = self
            .get_raw(GetRequest {
                segments: kv_segments(prefix.as_str()),
                query: vec![("recurse".into(), String::new())],
                blocking: None,
            })
            .await?;
        decode_kv_list(&resp)
    }

    /// Lists the keys under a folder (`?keys`); empty when none.
    pub async fn kv_keys(&self, prefix: &KvPrefix) -> Result<Vec<String>, ConsulError> {
        let resp = self
            .get_raw(GetRequest {
                segments: kv_segments(prefix.as_str()),
                query: vec![("keys".into(), String::new())],
                blocking: None,
            })
            .await?;
        if resp.status == 404 {
            return Ok(Vec::new());
        }
        serde_json::from_slice(&resp.body).map_err(|e| ConsulError::decode("KV keys", e))
    }

    /// Writes a key. With `cas = Some(i)` the write only happens if the key's `ModifyIndex` is
    /// `i` (`0`: only if it does not exist). Returns Consul's `true`/`false`.
    pub async fn kv_put(
        &self,
        key: &KvKey,
        value: &[u8],
        cas: Option<u64>,
    ) -> Result<bool, ConsulError> {
        let query: Vec<(String, String)> = cas
            .map(|i| vec![("cas".to_owned(), i.to_string())])
            .unwrap_or_default();
        let (_, body) = self
            .write_raw(
                Method::PUT,
                &kv_segments(key.as_str()),
                &query,
                Some(value.to_vec()),
                &[],
            )
            .await?;
        decode_bool("KV put", &body)
    }

    /// Deletes exactly one key.
    pub async fn kv_delete(&self, key: &KvKey) -> Result<bool, ConsulError> {
        let (_, body) = self
            .write_raw(Method::DELETE, &kv_segments(key.as_str()), &[], None, &[])
            .await?;
        decode_bool("KV delete", &body)
    }

    /// Deletes a whole folder (`?recurse`). The prefix ends in `/` by construction.
    pub async fn kv_delete_prefix(&self, prefix: &KvPrefix) -> Result<bool, ConsulError> {
        let (_, body) = self
            .write_raw(
                Method::DELETE,
                &kv_segments(prefix.as_str()),
                &[("recurse".into(), String::new())],
                None,
                &[],
            )
            .await?;
        decode_bool("KV delete", &body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_and_prefix_validation() {
        assert!(KvKey::new("flow-proxy/services/go-demo").is_ok());
        assert!(KvKey::new("").is_err());
        assert!(KvKey::new("/a").is_err());
        assert!(KvKey::new("a b").is_err());
        assert!(KvKey::new("a/../b").is_err());
        assert!(KvKey::new("a/").is_err());
        assert!(KvPrefix::new("go-demo/").is_ok());
        assert!(KvPrefix::new("go-demo").is_err());
        assert!(KvPrefix::new("/").is_err());
        assert!(KvPrefix::new("a//").is_err());
        assert_eq!(kv_segments("go-demo/"), vec!["v1", "kv", "go-demo", ""]);
        let p = KvPrefix::new("svc/").unwrap();
        assert_eq!(p.key("x").unwrap().as_str(), "svc/x");
    }

    #[test]
    fn kv_decoding() {
        let resp = RawResponse {
            status: 200,
            index: Some(3),
            body: bytes::Bytes::from_static(
                br#"[{"LockIndex":0,"Key":"a","Flags":0,"Value":"dGVzdA==","CreateIndex":1,"ModifyIndex":2},{"Key":"b","Value":null}]"#,
            ),
        };
        let pairs = decode_kv_list(&resp).unwrap();
        assert_eq!(pairs[0].value, b"test");
        assert_eq!(pairs[0].modify_index, 2);
        assert!(pairs[1].value.is_empty());
        let missing = RawResponse {
            status: 404,
            index: Some(3),
            body: bytes::Bytes::new(),
        };
        assert!(decode_kv_list(&missing).unwrap().is_empty());
    }
}
