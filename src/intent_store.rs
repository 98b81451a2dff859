//! Service intent persisted in Consul KV, in Docker Flow: Proxy's layout
//! `<instance>/<service>/{path,color,domain,pathtype,skipcheck,...}`.
//!
//! Owns: the KV keys of an intent, the atomic write (one `/v1/txn`: delete the service's folder
//! with its trailing `/`, then set every key, empty values included), the removal of exactly
//! one service's folder, loading every intent under the instance root, and the watch of that
//! root that lets a replica follow changes made through another one.
//!
//! Must not: validate intents itself (that is `domain::ServiceIntent::from_kv`, the same path as
//! the API), or talk to HAProxy. Names under the root that start with `_` are flow-proxy's own
//! data and are never read as services.

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::consul::{ConsulClient, ConsulError, KvPair, KvPrefix, TxnOp, WatchOptions};
use crate::domain::{ServiceIntent, ServiceName};

/// Why the intent store failed.
#[derive(Debug, thiserror::Error)]
pub enum IntentStoreError {
    /// The instance name cannot be a KV root.
    #[error("invalid proxy instance name {name:?}: {source}")]
    InvalidRoot {
        /// The name.
        name: String,
        /// Why.
        #[source]
        source: ConsulError,
    },
    /// Consul failed; nothing was half-written (a transaction is all or nothing).
    #[error("cannot reach Consul KV: {0}")]
    Consul(#[from] ConsulError),
}

/// Every valid intent under the root, by service name.
pub type Intents = BTreeMap<ServiceName, ServiceIntent>;

/// The intents of one proxy instance in Consul KV.
#[derive(Debug, Clone)]
pub struct IntentStore {
    client: ConsulClient,
    root: KvPrefix,
}

impl IntentStore {
    /// A store under `<instance_name>/`.
    pub fn new(client: ConsulClient, instance_name: &str) -> Result<Self, IntentStoreError> {
        let root = KvPrefix::new(format!("{instance_name}/")).map_err(|source| {
            IntentStoreError::InvalidRoot {
                name: instance_name.to_owned(),
                source,
            }
        })?;
        Ok(IntentStore { client, root })
    }

    /// The root folder, with its trailing `/`.
    pub fn root(&self) -> &KvPrefix {
        &self.root
    }

    fn folder(&self, service: &ServiceName) -> Result<KvPrefix, ConsulError> {
        KvPrefix::new(format!("{}{}/", self.root.as_str(), service.as_str()))
    }

    /// Writes `intent` atomically: its folder is replaced by exactly its keys.
    pub async fn put(&self, intent: &ServiceIntent) -> Result<(), IntentStoreError> {
        let folder = self.folder(&intent.name)?;
        let mut ops = vec![TxnOp::DeleteTree {
            prefix: folder.clone(),
        }];
        for (key, value) in intent.to_kv_pairs() {
            ops.push(TxnOp::Set {
                key: folder.key(&key)?,
                value: value.into_bytes(),
            });
        }
        self.client.txn(&ops).await?;
        Ok(())
    }

    /// Deletes exactly the folder of `service` (never a service whose name merely starts with
    /// the same letters).
    pub async fn remove(&self, service: &ServiceName) -> Result<(), IntentStoreError> {
        let folder = self.folder(service)?;
        self.client
            .txn(&[TxnOp::DeleteTree { prefix: folder }])
            .await?;
        Ok(())
    }

    /// Reads every intent under the root. Invalid stored intents are logged and skipped.
    pub async fn load_all(&self) -> Result<Intents, IntentStoreError> {
        let pairs = self.client.kv_list(&self.root).await?;
        Ok(parse_intents(self.root.as_str(), &pairs))
    }

    /// Watches the root with a blocking query: the receiver gets every valid intent whenever
    /// the folder's content changes (`None` until the first answer).
    pub fn watch(&self, cancel: CancellationToken) -> watch::Receiver<Option<Arc<Intents>>> {
        let handle =
            self.client
                .watch_kv_prefix(&self.root, WatchOptions::default(), cancel.clone());
        let mut changes = handle.changes;
        let (tx, rx) = watch::channel(None);
        let root = self.root.as_str().to_owned();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    changed = changes.changed() => {
                        if changed.is_err() {
                            return;
                        }
                        let latest = changes.borrow_and_update().clone();
                        if let Some(pairs) = latest {
                            let intents = Arc::new(parse_intents(&root, &pairs));
                            tx.send_if_modified(|current| {
                                if current.as_deref() == Some(&*intents) {
                                    false
                                } else {
                                    *current = Some(Arc::clone(&intents));
                                    true
                                }
                            });
                        }
                    }
                }
            }
        });
        rx
    }
}

/// Groups KV pairs under `root` by service folder and validates each through the API's path.
/// Keys directly under the root, folders starting with `_`, and invalid intents are skipped
/// (the last with a warning).
pub fn parse_intents(root: &str, pairs: &[KvPair]) -> Intents {
    let mut folders: BTreeMap<&str, BTreeMap<String, String>> = BTreeMap::new();
    for pair in pairs {
        let Some(rest) = pair.key.strip_prefix(root) else {
            continue;
        };
        let Some((service, key)) = rest.split_once('/') else {
            continue;
        };
        if service.starts_with('_') || key.is_empty() || key.contains('/') {
            continue;
        }
        let value = String::from_utf8_lossy(&pair.value).into_owned();
        folders
            .entry(service)
            .or_default()
            .insert(key.to_owned(), value);
    }
    let mut intents = Intents::new();
    for (service, values) in folders {
        match ServiceIntent::from_kv(service, &values) {
            Ok(intent) => {
                intents.insert(intent.name.clone(), intent);
            }
            Err(error) => {
                warn!(service, %error, "skipping an invalid intent stored in Consul KV");
            }
        }
    }
    intents
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(key: &str, value: &str) -> KvPair {
        KvPair {
            key: key.to_owned(),
            value: value.as_bytes().to_vec(),
            flags: 0,
            create_index: 1,
            modify_index: 1,
            lock_index: 0,
            session: None,
        }
    }

    #[test]
    fn groups_by_folder_and_skips_invalid_and_private_entries() {
        let pairs = vec![
            pair("docker-flow/go-demo/path", "/demo"),
            pair("docker-flow/go-demo/pathtype", ""),
            pair("docker-flow/go-demo/skipcheck", "false"),
            pair("docker-flow/broken/path", "/x y"),
            pair("docker-flow/_certs/path", "/x"),
            pair("docker-flow/service/go-demo", "swarm"),
            pair("docker-flow/stray", "x"),
            pair("docker-flow/other/path", "/other"),
            pair("docker-flow/other/domain", "example.com"),
        ];
        let intents = parse_intents("docker-flow/", &pairs);
        let names: Vec<&str> = intents.keys().map(ServiceName::as_str).collect();
        assert_eq!(names, vec!["go-demo", "other"]);
        let other = &intents[&ServiceName::new("other").unwrap()];
        assert_eq!(other.domains.len(), 1);
    }

    #[test]
    fn round_trips_through_kv_pairs() {
        let params: BTreeMap<String, String> = [
            ("serviceName", "go-demo"),
            ("servicePath", "/demo,/api"),
            ("serviceDomain", "example.com"),
            ("serviceColor", "blue"),
            ("pathType", "path_beg"),
        ]
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
        let intent = ServiceIntent::from_params(&params).unwrap();
        let pairs: Vec<KvPair> = intent
            .to_kv_pairs()
            .iter()
            .map(|(k, v)| pair(&format!("edge/go-demo/{k}"), v))
            .collect();
        let back = parse_intents("edge/", &pairs);
        assert_eq!(back.get(&intent.name), Some(&intent));
    }
}
