//! flow-proxy: a Consul-driven HAProxy controller.
//!
//! Module map (each module's own `//!` docs say what it owns and what it must not do):
//!
//! - [`domain`]: validated newtypes and the catalog snapshot. Pure: no IO, no serde wire types.
//! - [`plan`]: intents × catalog → the desired HAProxy model, server slots, and the diff between
//!   the live and the desired model (runtime commands or a reload). Pure.
//! - [`render`]: the desired model → `haproxy.cfg` text through askama templates. Pure.
//! - [`consul`]: the Consul HTTP client, blocking-query watchers and catalog change detection.
//! - [`registry`]: the embedded single-node Consul-compatible registry.
//! - [`intent_store`]: service intents in Consul KV (DFP's layout), written atomically, watched.
//! - [`change_log`]: what an apply changes, in words for the log (pure).
//! - [`reconcile`]: the one task that drives HAProxy towards intents × catalog.
//! - [`api`]: the Docker Flow: Proxy-compatible control API.
//! - [`access_log`]: HAProxy's access log forwarded into flow-proxy's log.
//! - [`settings`]: command line and environment settings.
//! - [`server`]: wires the pieces together for `flow-proxy server`.
//! - [`tls`]: the process-wide TLS crypto provider.
//! - [`client`]: the command-line client of a running instance's control API.
//! - [`demo_backend`]: a go-demo-like HTTP service for the demo.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod access_log;
pub mod api;
pub mod certs;
pub mod change_log;
pub mod client;
pub mod consul;
pub mod ctmpl;
pub mod custom;
pub mod demo_backend;
pub mod domain;
pub mod haproxy;
pub mod intent_store;
pub mod metrics;
pub mod plan;
pub mod reconcile;
pub mod registry;
pub mod render;
pub mod server;
pub mod settings;
pub mod tag_routes;
pub mod tls;
