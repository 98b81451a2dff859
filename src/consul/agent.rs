//! Agent endpoints: service registration, deregistration and passing a TTL check.
//!
//! Handy for tests and tools. Owns only these calls; it must not be used to read the catalog.

use std::collections::BTreeMap;
use std::time::Duration;

use reqwest::Method;

use super::client::ConsulClient;
use super::error::ConsulError;
use super::wire::{AgentCheckWire, AgentServiceRegistrationWire};

/// A service to register with the local agent.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ServiceRegistration {
    /// Instance ID (defaults to the name in Consul when empty).
    pub id: String,
    /// Service name.
    pub name: String,
    /// Tags.
    pub tags: Vec<String>,
    /// Service address; empty means the node address.
    pub address: String,
    /// Port.
    pub port: u16,
    /// Metadata.
    pub meta: BTreeMap<String, String>,
    /// Optional TTL check, registered as `service:<id>`.
    pub ttl_check: Option<Duration>,
}

fn seg(parts: &[&str]) -> Vec<String> {
    parts.iter().map(|s| (*s).to_owned()).collect()
}

impl ConsulClient {
    /// `PUT /v1/agent/service/register`.
    pub async fn agent_register(&self, service: &ServiceRegistration) -> Result<(), ConsulError> {
        let wire = AgentServiceRegistrationWire {
            id: service.id.clone(),
            name: service.name.clone(),
            tags: service.tags.clone(),
            address: service.address.clone(),
            port: service.port,
            meta: service.meta.clone(),
            check: service.ttl_check.map(|ttl| AgentCheckWire {
                ttl: format!("{}ms", ttl.as_millis()),
                status: None,
            }),
        };
        let body = serde_json::to_vec(&wire).map_err(|e| ConsulError::Build(e.to_string()))?;
        self.write_raw(
            Method::PUT,
            &seg(&["v1", "agent", "service", "register"]),
            &[],
            Some(body),
            &[],
        )
        .await?;
        Ok(())
    }

    /// `PUT /v1/agent/service/deregister/<id>`.
    pub async fn agent_deregister(&self, service_id: &str) -> Result<(), ConsulError> {
        if service_id.is_empty() {
            return Err(ConsulError::InvalidArgument("empty service id".into()));
        }
        self.write_raw(
            Method::PUT,
            &seg(&["v1", "agent", "service", "deregister", service_id]),
            &[],
            None,
            &[],
        )
        .await?;
        Ok(())
    }

    /// `PUT /v1/agent/check/pass/<check_id>`.
    pub async fn agent_check_pass(&self, check_id: &str) -> Result<(), ConsulError> {
        if check_id.is_empty() {
            return Err(ConsulError::InvalidArgument("empty check id".into()));
        }
        self.write_raw(
            Method::PUT,
            &seg(&["v1", "agent", "check", "pass", check_id]),
            &[],
            None,
            &[],
        )
        .await?;
        Ok(())
    }
}
