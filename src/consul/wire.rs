//! Serde types mirroring Consul's JSON, exactly as it is sent on the wire.
//!
//! Owns the wire shapes only. Nothing here is validated: these types must not leave the
//! `consul` module; they are converted to domain types at the boundary (`convert.rs`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// `GET /v1/catalog/services`: service name to tags.
pub type CatalogServicesWire = BTreeMap<String, Vec<String>>;

/// `GET /v1/catalog/node/:node`, reduced to what change detection reads; the body is `null`
/// for a node Consul does not know.
pub type CatalogNodeWire = Option<CatalogNodeServicesWire>;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CatalogNodeServicesWire {
    /// The instances (Consul sends a map keyed by instance ID).
    #[serde(default)]
    pub services: Option<NodeServicesList>,
}

/// The `Services` map of `/v1/catalog/node/:node` read as a list: its keys repeat each
/// instance's `ID`, so they are skipped rather than kept twice.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct NodeServicesList(pub Vec<NodeServiceWire>);

impl<'de> Deserialize<'de> for NodeServicesList {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Entries;
        impl<'de> serde::de::Visitor<'de> for Entries {
            type Value = NodeServicesList;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a map of service instances")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Self::Value, A::Error> {
                let mut out = Vec::with_capacity(map.size_hint().unwrap_or(0).min(65_536));
                while let Some((_, s)) =
                    map.next_entry::<serde::de::IgnoredAny, NodeServiceWire>()?
                {
                    out.push(s);
                }
                Ok(NodeServicesList(out))
            }
        }
        deserializer.deserialize_map(Entries)
    }
}

/// One instance of `GET /v1/catalog/node/:node` (other fields are skipped).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct NodeServiceWire {
    #[serde(rename = "ID")]
    pub id: String,
    pub service: String,
    #[serde(default)]
    pub modify_index: u64,
}

/// One entry of `GET /v1/health/service/:name`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct HealthEntryWire {
    pub node: NodeWire,
    pub service: AgentServiceWire,
    #[serde(default)]
    pub checks: Option<Vec<HealthCheckWire>>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct NodeWire {
    pub node: String,
    #[serde(default)]
    pub address: String,
    /// The node's UUID.
    #[serde(rename = "ID", default)]
    pub id: String,
    /// `lan`, `wan`, … to an address. Values are kept as JSON so that an unexpected shape
    /// never fails the whole read; only strings are used.
    #[serde(default)]
    pub tagged_addresses: Option<BTreeMap<String, serde_json::Value>>,
    /// Node metadata (strings only are used, as above).
    #[serde(default)]
    pub meta: Option<BTreeMap<String, serde_json::Value>>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct AgentServiceWire {
    #[serde(rename = "ID")]
    pub id: String,
    pub service: String,
    #[serde(default)]
    pub tags: Option<Vec<String>>,
    #[serde(default)]
    pub address: String,
    #[serde(default)]
    pub meta: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub port: i64,
    #[serde(default)]
    pub weights: Option<WeightsWire>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct WeightsWire {
    pub passing: i64,
    pub warning: i64,
}

/// A health check, as in `/v1/health/state/:state` and the `Checks` of a health entry.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct HealthCheckWire {
    #[serde(default)]
    pub node: String,
    #[serde(rename = "CheckID", default)]
    pub check_id: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub notes: String,
    #[serde(default)]
    pub output: String,
    #[serde(rename = "ServiceID", default)]
    pub service_id: String,
    #[serde(default)]
    pub service_name: String,
}

/// One KV entry.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct KvPairWire {
    pub key: String,
    #[serde(default)]
    pub value: Option<String>,
    #[serde(default)]
    pub flags: u64,
    #[serde(default)]
    pub create_index: u64,
    #[serde(default)]
    pub modify_index: u64,
    #[serde(default)]
    pub lock_index: u64,
    #[serde(default)]
    pub session: Option<String>,
}

/// One `/v1/txn` operation (KV only).
#[derive(Debug, Clone, Serialize)]
pub struct TxnOpWire {
    #[serde(rename = "KV")]
    pub kv: TxnKvOpWire,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct TxnKvOpWire {
    pub verb: &'static str,
    pub key: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flags: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index: Option<u64>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TxnResponseWire {
    #[serde(default)]
    pub results: Option<Vec<TxnResultWire>>,
    #[serde(default)]
    pub errors: Option<Vec<TxnErrorWire>>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct TxnResultWire {
    #[serde(rename = "KV", default)]
    pub kv: Option<KvPairWire>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TxnErrorWire {
    #[serde(default)]
    pub op_index: usize,
    #[serde(default)]
    pub what: String,
}

/// `PUT /v1/agent/service/register` body.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct AgentServiceRegistrationWire {
    #[serde(rename = "ID")]
    pub id: String,
    pub name: String,
    pub tags: Vec<String>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub address: String,
    pub port: u16,
    pub meta: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub check: Option<AgentCheckWire>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct AgentCheckWire {
    #[serde(rename = "TTL")]
    pub ttl: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
}
