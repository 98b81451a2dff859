//! Wires the long-running pieces together for the `server` and `registry` subcommands.
//!
//! Owns start-up order and shutdown order. Must not hold domain logic: it only connects the
//! registry, the Consul client and the watchers, and logs what they report.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::consul::{
    CatalogWatcher, CatalogWatcherOptions, ConfigError, ConsulClient, ConsulConfig, Interest,
};
use crate::domain::CatalogSnapshot;
use crate::registry::{self, RegistryConfig, RegistryError, RunningRegistry};
use crate::settings::{
    ConsulArgs, REGISTRY_SUBDIR, RegistryArgs, ServerArgs, node_name_or_hostname,
};

/// Why `server` or `registry` could not run.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// A listener could not be bound.
    #[error("cannot listen on {address}: {source}")]
    Bind {
        /// The address that was asked for.
        address: SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The data directory could not be created.
    #[error("cannot create the data directory {path}: {source}")]
    DataDir {
        /// The directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The embedded registry failed.
    #[error("embedded registry: {0}")]
    Registry(#[from] RegistryError),
    /// The Consul settings are invalid.
    #[error("Consul settings: {0}")]
    Consul(#[from] ConfigError),
}

/// Runs `flow-proxy registry` until `shutdown` is cancelled.
pub async fn run_registry(
    args: RegistryArgs,
    shutdown: CancellationToken,
) -> Result<(), ServerError> {
    let running = start_registry(
        args.embedded_registry_address,
        &args.data_dir,
        args.node_name.as_deref(),
    )
    .await?;
    shutdown.cancelled().await;
    running.shutdown().await?;
    info!("embedded registry stopped");
    Ok(())
}

/// Runs `flow-proxy server` until `shutdown` is cancelled.
///
/// Without a Consul address the embedded registry is served and then used through the very
/// same HTTP client as a real Consul, so both modes share one code path.
pub async fn run_server(args: ServerArgs, shutdown: CancellationToken) -> Result<(), ServerError> {
    let (consul_config, embedded) = match args.consul.consul_address.as_deref() {
        Some(addresses) if !addresses.trim().is_empty() => {
            (consul_config(addresses, &args.consul)?, None)
        }
        _ => {
            let running = start_registry(
                args.embedded_registry_address,
                &args.data_dir,
                args.node_name.as_deref(),
            )
            .await?;
            let address = format!("http://{}", running.local_addr());
            (consul_config(&address, &args.consul)?, Some(running))
        }
    };
    let client = ConsulClient::new(&consul_config)?;
    info!(consul = %client.current_address(), "watching the Consul catalog");

    let watchers = shutdown.child_token();
    let (_interest, interest_rx) = watch::channel(Interest::All);
    let mut snapshots = CatalogWatcher::spawn(
        client,
        interest_rx,
        CatalogWatcherOptions::default(),
        watchers.clone(),
    );
    loop {
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            changed = snapshots.changed() => {
                if changed.is_err() {
                    warn!("the catalog watcher stopped");
                    break;
                }
                let snapshot = Arc::clone(&snapshots.borrow_and_update());
                log_snapshot(&snapshot);
            }
        }
    }
    watchers.cancel();
    if let Some(running) = embedded {
        running.shutdown().await?;
        info!("embedded registry stopped");
    }
    Ok(())
}

fn consul_config(addresses: &str, args: &ConsulArgs) -> Result<ConsulConfig, ServerError> {
    Ok(ConsulConfig::new(addresses)?
        .with_token(args.consul_token.clone())
        .with_token_file(args.consul_token_file.clone())
        .with_ca_cert(args.consul_cacert.clone())
        .with_client_identity(
            args.consul_client_cert.clone(),
            args.consul_client_key.clone(),
        )
        .with_datacenter(args.consul_datacenter.clone())?
        .with_stale(args.consul_stale))
}

async fn start_registry(
    address: SocketAddr,
    data_dir: &std::path::Path,
    node_name: Option<&str>,
) -> Result<RunningRegistry, ServerError> {
    let dir = data_dir.join(REGISTRY_SUBDIR);
    tokio::fs::create_dir_all(&dir)
        .await
        .map_err(|source| ServerError::DataDir {
            path: dir.clone(),
            source,
        })?;
    let listener = TcpListener::bind(address)
        .await
        .map_err(|source| ServerError::Bind { address, source })?;
    let config = RegistryConfig {
        data_dir: Some(dir.clone()),
        node_name: node_name_or_hostname(node_name),
        ..RegistryConfig::default()
    };
    let running = registry::spawn(listener, config).await?;
    info!(address = %running.local_addr(), data_dir = %dir.display(), "embedded registry listening");
    Ok(running)
}

fn log_snapshot(snapshot: &CatalogSnapshot) {
    let instances: usize = snapshot.services.values().map(Vec::len).sum();
    info!(
        services = snapshot.services.len(),
        instances, "catalog snapshot updated"
    );
}
