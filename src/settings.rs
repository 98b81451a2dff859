//! Command line and environment settings.
//!
//! Owns the names of every flag and environment variable (a public contract) and turns them
//! into validated settings for the other modules. Every flag also reads its environment
//! variable. Must not hold runtime logic: it only parses and validates.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// `flow-proxy`: keeps HAProxy routing to every live instance that Consul knows about.
#[derive(Debug, Parser)]
#[command(name = "flow-proxy", version, about, long_about = None)]
pub struct Cli {
    /// Log output format.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,

    #[command(subcommand)]
    pub command: Command,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Runs the proxy controller. Without a Consul address it serves its own embedded registry.
    Server(ServerArgs),
    /// Runs only the embedded Consul-compatible registry.
    Registry(RegistryArgs),
}

/// How to reach Consul.
#[derive(Debug, Clone, Args)]
pub struct ConsulArgs {
    /// Comma-separated Consul addresses (`host:port`, `http://host:port` or `https://host:port`),
    /// tried in order on transport failure. Unset: the embedded registry is served and used.
    #[arg(long, env = "CONSUL_ADDRESS")]
    pub consul_address: Option<String>,

    /// ACL token sent as `X-Consul-Token`.
    #[arg(long, env = "CONSUL_HTTP_TOKEN", hide_env_values = true)]
    pub consul_token: Option<String>,

    /// File holding the ACL token; wins over `--consul-token` when both are set.
    #[arg(long, env = "CONSUL_HTTP_TOKEN_FILE")]
    pub consul_token_file: Option<PathBuf>,

    /// PEM file of the CA that signed Consul's HTTPS certificate.
    #[arg(long, env = "CONSUL_CACERT")]
    pub consul_cacert: Option<PathBuf>,

    /// PEM client certificate for mutual TLS with Consul.
    #[arg(long, env = "CONSUL_CLIENT_CERT", requires = "consul_client_key")]
    pub consul_client_cert: Option<PathBuf>,

    /// PEM private key of the client certificate.
    #[arg(long, env = "CONSUL_CLIENT_KEY", requires = "consul_client_cert")]
    pub consul_client_key: Option<PathBuf>,

    /// Consul datacenter to query (`?dc=`); unset: the agent's own.
    #[arg(long, env = "CONSUL_DATACENTER")]
    pub consul_datacenter: Option<String>,

    /// Allow stale reads (`?stale`): any Consul server may answer, spreading the load.
    #[arg(long, env = "CONSUL_STALE", default_value_t = false)]
    pub consul_stale: bool,
}

/// Settings of `flow-proxy server`.
#[derive(Debug, Clone, Args)]
pub struct ServerArgs {
    #[command(flatten)]
    pub consul: ConsulArgs,

    /// Where the embedded registry listens when `CONSUL_ADDRESS` is unset.
    #[arg(
        long,
        env = "EMBEDDED_REGISTRY_ADDRESS",
        default_value = "127.0.0.1:8500"
    )]
    pub embedded_registry_address: SocketAddr,

    /// Directory for flow-proxy's state (the embedded registry's data among it).
    #[arg(long, env = "DATA_DIR", default_value = "/var/lib/flow-proxy")]
    pub data_dir: PathBuf,

    /// Name of this node in the embedded registry (defaults to the host name).
    #[arg(long, env = "NODE_NAME")]
    pub node_name: Option<String>,
}

/// Settings of `flow-proxy registry`.
#[derive(Debug, Clone, Args)]
pub struct RegistryArgs {
    /// Where the registry listens.
    #[arg(
        long,
        env = "EMBEDDED_REGISTRY_ADDRESS",
        default_value = "127.0.0.1:8500"
    )]
    pub embedded_registry_address: SocketAddr,

    /// Directory for the registry's state.
    #[arg(long, env = "DATA_DIR", default_value = "/var/lib/flow-proxy")]
    pub data_dir: PathBuf,

    /// Name of this node (defaults to the host name).
    #[arg(long, env = "NODE_NAME")]
    pub node_name: Option<String>,
}

/// The embedded registry keeps its state in this subdirectory of `DATA_DIR`, so that
/// `flow-proxy registry` and `flow-proxy server` share it.
pub const REGISTRY_SUBDIR: &str = "registry";

/// The node name to use: the one given, else the host name, else `flow-proxy`.
pub fn node_name_or_hostname(given: Option<&str>) -> String {
    if let Some(name) = given.map(str::trim).filter(|n| !n.is_empty()) {
        return name.to_owned();
    }
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "flow-proxy".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn server_defaults() {
        let cli = Cli::try_parse_from(["flow-proxy", "server"]).unwrap();
        let Command::Server(args) = cli.command else {
            panic!("expected server")
        };
        assert_eq!(args.embedded_registry_address.to_string(), "127.0.0.1:8500");
        assert_eq!(args.data_dir, PathBuf::from("/var/lib/flow-proxy"));
        assert!(!args.consul.consul_stale);
    }

    #[test]
    fn client_certificate_needs_its_key() {
        let err = Cli::try_parse_from([
            "flow-proxy",
            "server",
            "--consul-client-cert",
            "/tmp/cert.pem",
        ])
        .unwrap_err();
        assert!(err.to_string().contains("--consul-client-key"), "{err}");
    }

    #[test]
    fn node_name_prefers_the_given_one() {
        assert_eq!(node_name_or_hostname(Some(" edge-1 ")), "edge-1");
        assert!(!node_name_or_hostname(None).is_empty());
        assert!(!node_name_or_hostname(Some("  ")).is_empty());
    }
}
