//! The Consul side of flow-proxy: HTTP client, blocking-query watchers and catalog change
//! detection.
//!
//! Owns every byte exchanged with Consul. Wire types (`wire.rs`) never leave this module; they
//! are validated and converted to [`crate::domain`] types at the boundary (`convert.rs`), and a
//! value that fails validation is dropped with a warning. This module must not render
//! configuration or decide routing; it only reports what Consul holds.
//!
//! Entry points:
//! * [`ConsulConfig`] / [`ConsulClient`]: settings and the client (KV, txn, catalog, agent);
//! * [`CatalogWatcher::spawn`]: a `watch::Receiver<Arc<CatalogSnapshot>>` kept up to date;
//!   [`CatalogWatcher::spawn_with_service_list`] also publishes the catalog's service list;
//! * [`watch_kv_prefix`] and [`spawn_watch`]: generic blocking watchers.

mod agent;
mod blocking;
mod catalog;
mod catalog_watcher;
mod client;
mod config;
mod convert;
mod error;
mod kv;
mod kv_watch;
mod rate_limit;
mod resolve;
mod template_data;
mod transport;
mod txn;
mod wire;

#[cfg(test)]
mod fake;

pub use agent::ServiceRegistration;
pub use blocking::{
    BlockingQuery, Decoder, Step, WatchEvent, WatchHandle, WatchOptions, spawn_watch,
};
pub use catalog::{
    ServiceRead, checks_request, decode_checks, decode_nodes, decode_services,
    health_service_request, nodes_request, read_service, services_request,
};
pub use catalog_watcher::{CatalogWatcher, CatalogWatcherOptions, Interest};
pub use client::{ConsulClient, RequestObserver};
pub use config::{ConfigError, ConsulAddress, ConsulConfig, Scheme};
pub use convert::{CheckState, ServiceTags};
pub use error::{ConsulError, TxnOpError};
pub use kv::{KvKey, KvPair, KvPrefix};
pub use kv_watch::{kv_prefix_query, watch_kv_prefix};
pub use rate_limit::TokenBucket;
pub use resolve::{Resolver, SystemResolver};
pub use template_data::watch_template_kv;
pub use transport::{Blocking, GetRequest, RawResponse, Transport};
pub use txn::{MAX_TXN_OPS, TxnOp};
