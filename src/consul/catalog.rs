//! Typed catalog and health reads: the service list, the check list, the node list, the
//! instances on one node and one service's instances.
//!
//! Owns the requests and decoding of these endpoints. It must not loop or keep state; the
//! catalog watcher (`catalog_watcher.rs`) decides when to call them.

use std::collections::BTreeMap;

use crate::domain::{Instance, ServiceName};

use super::convert::{
    CheckState, ServiceTags, convert_health_entries, convert_services, reduce_checks,
};
use super::error::ConsulError;
use super::resolve::{Resolver, SystemResolver};
use super::transport::{GetRequest, RawResponse, Transport};
use super::wire::{
    CatalogNodeWire, CatalogServicesWire, HealthCheckWire, HealthEntryWire, NodeWire,
};

/// Request for `/v1/catalog/services`.
pub fn services_request() -> GetRequest {
    GetRequest::new(["v1", "catalog", "services"])
}

/// Request for `/v1/health/state/any`.
pub fn checks_request() -> GetRequest {
    GetRequest::new(["v1", "health", "state", "any"])
}

/// Request for `/v1/catalog/nodes`.
pub fn nodes_request() -> GetRequest {
    GetRequest::new(["v1", "catalog", "nodes"])
}

/// Decodes `/v1/catalog/nodes` into node name to address.
pub fn decode_nodes(resp: &RawResponse) -> Result<BTreeMap<String, String>, ConsulError> {
    require_ok(resp, "catalog nodes")?;
    let wire: Vec<NodeWire> =
        serde_json::from_slice(&resp.body).map_err(|e| ConsulError::decode("catalog nodes", e))?;
    Ok(wire.into_iter().map(|n| (n.node, n.address)).collect())
}

/// Request for `/v1/catalog/node/<node>`.
pub fn node_request(node: &str) -> GetRequest {
    GetRequest::new(["v1", "catalog", "node", node])
}

/// The instances on one node as `/v1/catalog/node/<node>` lists them: instance ID to
/// (service name, `ModifyIndex`). Not validated: used only to decide which services to read.
pub type NodeInstances = BTreeMap<String, (String, u64)>;

/// Decodes `/v1/catalog/node/<node>`; `None` for an unknown node (`null`).
pub fn decode_node(resp: &RawResponse) -> Result<Option<NodeInstances>, ConsulError> {
    require_ok(resp, "catalog node")?;
    let wire: CatalogNodeWire =
        serde_json::from_slice(&resp.body).map_err(|e| ConsulError::decode("catalog node", e))?;
    Ok(wire.map(|n| {
        n.services
            .unwrap_or_default()
            .0
            .into_iter()
            .map(|s| (s.id, (s.service, s.modify_index)))
            .collect()
    }))
}

/// Request for `/v1/health/service/<name>`.
pub fn health_service_request(service: &ServiceName) -> GetRequest {
    GetRequest::new(["v1", "health", "service", service.as_str()])
}

/// Refuses any answer but 200 as undecodable.
pub(crate) fn require_ok(resp: &RawResponse, what: &str) -> Result<(), ConsulError> {
    if resp.status == 200 {
        Ok(())
    } else {
        Err(ConsulError::decode(
            what,
            format!("unexpected status {}", resp.status),
        ))
    }
}

/// Decodes `/v1/catalog/services`.
pub fn decode_services(resp: &RawResponse) -> Result<ServiceTags, ConsulError> {
    require_ok(resp, "catalog services")?;
    let wire: CatalogServicesWire = serde_json::from_slice(&resp.body)
        .map_err(|e| ConsulError::decode("catalog services", e))?;
    Ok(convert_services(wire))
}

/// Decodes `/v1/health/state/any`.
pub fn decode_checks(resp: &RawResponse) -> Result<Vec<CheckState>, ConsulError> {
    require_ok(resp, "health state")?;
    let wire: Vec<HealthCheckWire> =
        serde_json::from_slice(&resp.body).map_err(|e| ConsulError::decode("health state", e))?;
    Ok(reduce_checks(wire))
}

/// Decodes the wire entries of `/v1/health/service/<name>`.
pub(crate) fn decode_health_entries(
    service: &ServiceName,
    resp: &RawResponse,
) -> Result<Vec<HealthEntryWire>, ConsulError> {
    let what = format!("health of service {service}");
    require_ok(resp, &what)?;
    serde_json::from_slice(&resp.body).map_err(|e| ConsulError::decode(what, e))
}

/// One service's instances with the per-service index they were read at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceRead {
    /// `X-Consul-Index` of the read (the per-service index).
    pub index: u64,
    /// Valid, resolved instances.
    pub instances: Vec<Instance>,
}

/// Reads and converts `/v1/health/service/<name>`.
pub async fn read_service(
    transport: &dyn Transport,
    resolver: &dyn Resolver,
    service: &ServiceName,
) -> Result<ServiceRead, ConsulError> {
    let resp = transport.get(health_service_request(service)).await?;
    let entries = decode_health_entries(service, &resp)?;
    Ok(ServiceRead {
        index: resp.index.unwrap_or(0).max(1),
        instances: convert_health_entries(service, entries, resolver).await,
    })
}

impl super::ConsulClient {
    /// `/v1/catalog/services`, validated (the `consul` service included).
    pub async fn catalog_services(&self) -> Result<ServiceTags, ConsulError> {
        decode_services(&self.get_raw(services_request()).await?)
    }

    /// `/v1/health/service/<name>`: instances with aggregated health, addresses resolved by the
    /// system resolver; invalid instances dropped with a warning.
    pub async fn health_service(&self, service: &ServiceName) -> Result<ServiceRead, ConsulError> {
        read_service(self, &SystemResolver, service).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn resp(status: u16, body: &str) -> RawResponse {
        RawResponse {
            status,
            index: Some(7),
            body: Bytes::from(body.to_owned()),
        }
    }

    #[test]
    fn a_node_read_lists_id_name_and_modify_index_and_null_is_no_node() {
        let body = r#"{"Node":{"Node":"n1","Address":"10.0.0.1"},"Services":{
            "h:web:80":{"ID":"h:web:80","Service":"web","Tags":["a"],"Port":80,
                        "Weights":{"Passing":1,"Warning":1},"Proxy":{"Expose":{}},
                        "CreateIndex":3,"ModifyIndex":9},
            "db1":{"ID":"db1","Service":"db","Tags":null,"ModifyIndex":4}}}"#;
        let got = decode_node(&resp(200, body)).unwrap().unwrap();
        let want: NodeInstances = [
            ("db1".to_owned(), ("db".to_owned(), 4)),
            ("h:web:80".to_owned(), ("web".to_owned(), 9)),
        ]
        .into();
        assert_eq!(got, want);
        assert_eq!(decode_node(&resp(200, "null")).unwrap(), None);
        assert_eq!(
            decode_node(&resp(200, r#"{"Node":{"Node":"n1"},"Services":null}"#)).unwrap(),
            Some(NodeInstances::new())
        );
        assert!(decode_node(&resp(404, "")).is_err());
        assert!(decode_node(&resp(200, r#"{"Services":[1]}"#)).is_err());
    }
}
