//! Wires the long-running pieces together for the `server` and `registry` subcommands.
//!
//! Owns start-up order and shutdown order. Must not hold domain logic: it only connects the
//! registry, the Consul client, the watchers, the reconciler and the API.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::access_log::{self, AccessLogError};
use crate::api::auth::ApiAuth;
use crate::api::{self, ApiState};
use crate::certs::{CertStore, CertsError};
use crate::consul::{
    CatalogWatcher, CatalogWatcherOptions, ConfigError, ConsulClient, ConsulConfig, Interest,
};
use crate::domain::StatsPage;
use crate::haproxy::{HaproxyPaths, PathsError, SoftStopSettings, Supervisor, SupervisorOptions};
use crate::intent_store::{IntentStore, IntentStoreError};
use crate::plan::PlanSettings;
use crate::reconcile::{Reconciler, ReconcilerInputs, ReconcilerOptions};
use crate::registry::acl::AclToken;
use crate::registry::{self, RegistryConfig, RegistryError, RunningRegistry};
use crate::render::{LogTarget, RenderSettings, Timeouts};
use crate::settings::{
    ConsulArgs, REGISTRY_SUBDIR, RegistryArgs, ServerArgs, node_name_or_hostname,
};
use crate::tag_routes::TagRouteSettings;

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
    /// The instance name cannot be a KV root.
    #[error("intent store: {0}")]
    IntentStore(#[from] IntentStoreError),
    /// The data directory cannot hold HAProxy's files.
    #[error("HAProxy files: {0}")]
    Paths(#[from] PathsError),
    /// HAProxy's log listener could not start.
    #[error(transparent)]
    AccessLog(#[from] AccessLogError),
    /// The TLS certificates could not be prepared.
    #[error("certificates: {0}")]
    Certs(#[from] CertsError),
    /// `API_USERS` is malformed.
    #[error("API credentials: {0}")]
    ApiAuth(#[from] crate::api::auth::AuthError),
    /// `STATS_USER` / `STATS_PASS` are unusable.
    #[error("statistics page: {0}")]
    Stats(#[from] crate::domain::StatsError),
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
        AclToken::new(args.embedded_registry_token.as_deref()),
    )
    .await?;
    shutdown.cancelled().await;
    running.shutdown().await?;
    info!("embedded registry stopped");
    Ok(())
}

/// How long the API may take to finish open requests at shutdown.
const API_GRACE: Duration = Duration::from_secs(10);
/// How long an apply in flight may take to finish at shutdown.
const RECONCILER_GRACE: Duration = Duration::from_secs(60);

/// Runs `flow-proxy server` until `shutdown` is cancelled.
///
/// Without a Consul address the embedded registry is served and then used through the very
/// same HTTP client as a real Consul, so both modes share one code path. Start-up: the API
/// listener is bound first (a bind error ends the run), then the watchers and the reconciler
/// start; `ping` answers 200 once the recovered configuration is live. Shutdown: the API
/// stops, then the watchers, then the reconciler finishes an apply in flight.
pub async fn run_server(args: ServerArgs, shutdown: CancellationToken) -> Result<(), ServerError> {
    if let Some(addresses) = args.consul.consul_address.as_deref()
        && !addresses.trim().is_empty()
    {
        // Bad settings are reported before anything is bound.
        consul_config(addresses, &args.consul)?;
    }
    security_settings(&args)?;
    let api_address = args.api_socket_address();
    let api_listener =
        TcpListener::bind(api_address)
            .await
            .map_err(|source| ServerError::Bind {
                address: api_address,
                source,
            })?;
    run_server_on(args, api_listener, shutdown).await
}

/// Like [`run_server`], with the API served on an already bound listener.
pub async fn run_server_on(
    args: ServerArgs,
    api_listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), ServerError> {
    let (consul_config, embedded) = match args.consul.consul_address.as_deref() {
        Some(addresses) if !addresses.trim().is_empty() => {
            (consul_config(addresses, &args.consul)?, None)
        }
        _ => {
            let token = AclToken::new(args.embedded_registry_token.as_deref());
            let running = start_registry(
                args.embedded_registry_address,
                &args.data_dir,
                args.node_name.as_deref(),
                token.clone(),
            )
            .await?;
            let address = format!("http://{}", running.local_addr());
            let mut config = consul_config(&address, &args.consul)?;
            if let Some(token) = token {
                // Our own client uses the token our registry requires.
                config = config
                    .with_token(Some(token.secret().to_owned()))
                    .with_token_file(None);
            }
            (config, Some(running))
        }
    };
    let result = run_proxy(&args, consul_config, api_listener, &shutdown).await;
    if let Some(running) = embedded {
        running.shutdown().await?;
        info!("embedded registry stopped");
    }
    result
}

async fn run_proxy(
    args: &ServerArgs,
    consul_config: ConsulConfig,
    api_listener: TcpListener,
    shutdown: &CancellationToken,
) -> Result<(), ServerError> {
    let (auth, stats) = security_settings(args)?;
    let client = ConsulClient::new(&consul_config)?;
    let metrics = crate::metrics::Metrics::new();
    client.set_observer(std::sync::Arc::new(metrics.clone()));
    info!(consul = %client.current_address(), "using Consul");
    let store = IntentStore::new(client.clone(), &args.proxy_instance_name)?;
    let paths = HaproxyPaths::new(&args.data_dir)?;
    tokio::fs::create_dir_all(&args.data_dir)
        .await
        .map_err(|source| ServerError::DataDir {
            path: args.data_dir.clone(),
            source,
        })?;

    // HAProxy from an earlier run may be adopted: it must then reload to read changed files.
    let earlier_run = tokio::fs::try_exists(paths.config()).await.unwrap_or(false);
    let (certs, certs_changed) = CertStore::open(
        client.clone(),
        &args.proxy_instance_name,
        &args.data_dir,
        Some(args.certs_dir.clone()),
    )
    .await?;
    let https_port = (args.https_port != 0).then_some(args.https_port);

    let watchers = CancellationToken::new();
    let log_address = access_log::spawn(watchers.clone()).await?;
    let render = RenderSettings {
        global_lines: paths.global_lines(&SoftStopSettings::default()),
        defaults_lines: paths.defaults_lines()
            + &stats.map(|s| s.defaults_lines()).unwrap_or_default(),
        log: Some(LogTarget::Udp(log_address)),
        timeouts: Timeouts {
            connect: args.timeout_connect,
            client: args.timeout_client,
            server: args.timeout_server,
            queue: args.timeout_queue,
            http_request: args.timeout_http_request,
            http_keep_alive: args.timeout_http_keep_alive,
        },
        maxconn: args.maxconn,
        bind_address: args.bind_address,
        http_port: args.http_port,
        https_port,
        health: None,
        // METRICS_PORT: HAProxy's own Prometheus exporter; 0 or unset is off.
        metrics: args
            .metrics_port
            .filter(|port| *port != 0)
            .map(|port| SocketAddr::new(args.bind_address, port)),
        tls: https_port.map(|_| certs.tls_bind()),
        users: args.global_users(),
        sticky_key: args.sticky_key(),
    };
    let options = ReconcilerOptions {
        plan: PlanSettings {
            health_filter: args.health_filter,
            ..PlanSettings::default()
        },
        render,
        stop_haproxy_on_exit: args.stop_haproxy_on_exit,
        templates_root: args.templates_root.clone(),
        tags: TagRouteSettings {
            enabled: args.tag_routes,
            prefix: args.tag_prefix.clone(),
            grace: Duration::from_secs(args.tag_route_grace),
        },
        metrics,
        resync_interval: Duration::from_secs(args.resync_interval),
        ..ReconcilerOptions::default()
    };
    let supervisor = Supervisor::new(
        paths.clone(),
        SupervisorOptions {
            haproxy_binary: find_haproxy(&args.haproxy_bin, std::env::var_os("PATH")),
            ..SupervisorOptions::default()
        },
    );

    let (interest_tx, interest_rx) = watch::channel(Interest::Services(BTreeSet::new()));
    let (catalog, service_list) = CatalogWatcher::spawn_with_service_list(
        client.clone(),
        interest_rx,
        CatalogWatcherOptions::default(),
        watchers.clone(),
    );
    let intents = store.watch(watchers.clone());
    let reconciler_stop = CancellationToken::new();
    let (handle, reconciler) = Reconciler::spawn(
        supervisor,
        options,
        ReconcilerInputs {
            store: store.clone(),
            client,
            catalog,
            interest: interest_tx,
            intents,
            service_list,
        },
        reconciler_stop.clone(),
    );
    certs.spawn_watch(
        handle.clone(),
        https_port.is_some(),
        earlier_run && certs_changed,
        watchers.clone(),
    );
    let api_stop = CancellationToken::new();
    let api_address = api_listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    if let Ok(address) = api_listener.local_addr() {
        auth.warn_if_exposed(address);
    }
    let api = api::serve(
        api_listener,
        ApiState {
            store,
            reconciler: handle,
            config_path: paths.config().to_path_buf(),
            templates_root: args.templates_root.clone(),
            certs,
            reserved_ports: vec![args.http_port, args.https_port],
            auth,
        },
        api_stop.clone(),
    );
    info!(
        api = %api_address,
        instance = %args.proxy_instance_name,
        http_port = args.http_port,
        https_port = args.https_port,
        data_dir = %args.data_dir.display(),
        "flow-proxy started"
    );

    shutdown.cancelled().await;
    api_stop.cancel();
    match tokio::time::timeout(API_GRACE, api).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => warn!(error = %e, "API task failed"),
        Err(_) => warn!("API connections still open after the grace period; going on"),
    }
    watchers.cancel();
    reconciler_stop.cancel();
    match tokio::time::timeout(RECONCILER_GRACE, reconciler).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => warn!(error = %e, "reconciler task failed"),
        Err(_) => warn!("the reconciler did not stop within the grace period"),
    }
    info!("flow-proxy stopped");
    Ok(())
}

/// The API credentials and the statistics page, validated.
fn security_settings(args: &ServerArgs) -> Result<(ApiAuth, Option<StatsPage>), ServerError> {
    let auth = ApiAuth::new(args.api_token.as_deref(), args.api_users.as_deref())?;
    let stats = StatsPage::from_settings(args.stats_user.as_deref(), args.stats_pass.as_deref())?;
    Ok((auth, stats))
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
    acl_token: Option<AclToken>,
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
        acl_token,
        ..RegistryConfig::default()
    };
    let running = registry::spawn(listener, config).await?;
    info!(address = %running.local_addr(), data_dir = %dir.display(), "embedded registry listening");
    Ok(running)
}

/// Where HAProxy is: `HAPROXY_BIN` as given when it is a path or found on `PATH`; a bare name
/// missing from `PATH` is looked for in `/usr/sbin` and `/usr/local/sbin` too, which Debian
/// leaves out of unprivileged users' `PATH` although its `haproxy` package installs there.
fn find_haproxy(bin: &Path, path: Option<OsString>) -> PathBuf {
    let bare = bin.components().count() == 1 && !bin.as_os_str().is_empty();
    if !bare {
        return bin.to_path_buf();
    }
    let on_path = path
        .iter()
        .flat_map(std::env::split_paths)
        .any(|dir| dir.join(bin).is_file());
    if on_path {
        return bin.to_path_buf();
    }
    ["/usr/sbin", "/usr/local/sbin"]
        .iter()
        .map(|dir| Path::new(dir).join(bin))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| bin.to_path_buf())
}

#[cfg(test)]
mod find_haproxy_tests {
    use super::*;

    #[test]
    fn a_bare_name_missing_from_path_is_found_in_sbin() {
        let dir = tempfile::tempdir().unwrap();
        let fake = dir.path().join("haproxy");
        std::fs::write(&fake, "").unwrap();
        // Found on PATH: kept as given.
        assert_eq!(
            find_haproxy(
                Path::new("haproxy"),
                Some(dir.path().as_os_str().to_owned())
            ),
            PathBuf::from("haproxy")
        );
        // A path is never searched.
        assert_eq!(find_haproxy(&fake, Some(OsString::new())), fake);
        // Missing from an empty PATH: /usr/sbin when HAProxy is installed there, else as given.
        let found = find_haproxy(Path::new("haproxy"), Some(OsString::new()));
        if Path::new("/usr/sbin/haproxy").is_file() {
            assert_eq!(found, PathBuf::from("/usr/sbin/haproxy"));
        } else {
            assert_eq!(found, PathBuf::from("haproxy"));
        }
        assert_eq!(
            find_haproxy(Path::new("no-such-haproxy"), Some(OsString::new())),
            PathBuf::from("no-such-haproxy")
        );
    }
}
