//! Command line and environment settings.
//!
//! Owns the names of every flag and environment variable (a public contract) and turns them
//! into validated settings for the other modules. Every flag also reads its environment
//! variable. Must not hold runtime logic: it only parses and validates.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::domain::tag_intent::TagPrefix;
use crate::domain::{StickyKey, Users};
use crate::plan::HealthFilter;

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
    Server(Box<ServerArgs>),
    /// Runs only the embedded Consul-compatible registry.
    Registry(RegistryArgs),
    /// Asks a running flow-proxy to route a service (DFP's `reconfigure`); prints the answer.
    Reconfigure(Box<crate::client::ReconfigureArgs>),
    /// Asks a running flow-proxy to stop routing a service (DFP's `remove`); prints the answer.
    Remove(crate::client::RemoveArgs),
    /// Asks a running flow-proxy whether it is ready (DFP's `ping`); exits non-zero otherwise.
    Ping(crate::client::PingArgs),
    /// A tiny HTTP service like DFP's go-demo, for the demo (`/demo/hello` → `hello, world!`).
    #[command(hide = true)]
    DemoBackend(crate::demo_backend::DemoBackendArgs),
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

    /// Directory for flow-proxy's state: haproxy.cfg, sockets, pid and state files, and the
    /// embedded registry's data.
    #[arg(long, env = "DATA_DIR", default_value = "/var/lib/flow-proxy")]
    pub data_dir: PathBuf,

    /// Name of this node in the embedded registry (defaults to the host name).
    #[arg(long, env = "NODE_NAME")]
    pub node_name: Option<String>,

    /// KV root of the intent: proxies with different names sharing one Consul don't see each
    /// other; replicas with the same name serve the same routes.
    #[arg(long, env = "PROXY_INSTANCE_NAME", default_value = "docker-flow")]
    pub proxy_instance_name: String,

    /// Where the control API listens (default `0.0.0.0:8080`; DFP's `IP` and `PORT` are
    /// honoured when this is unset).
    #[arg(long, env = "API_ADDRESS")]
    pub api_address: Option<SocketAddr>,

    /// DFP's `IP`: the API's address when `API_ADDRESS` is unset.
    #[arg(long = "ip", env = "IP", hide = true)]
    pub dfp_ip: Option<IpAddr>,

    /// DFP's `PORT`: the API's port when `API_ADDRESS` is unset.
    #[arg(long = "port", env = "PORT", hide = true)]
    pub dfp_port: Option<u16>,

    /// Where HAProxy listens.
    #[arg(long, env = "BIND_ADDRESS", default_value = "0.0.0.0")]
    pub bind_address: IpAddr,

    /// HAProxy's HTTP port.
    #[arg(long, env = "HTTP_PORT", default_value_t = 80)]
    pub http_port: u16,

    /// HAProxy's HTTPS port, terminating TLS (certificates from `CERTS_DIR` and the API, a
    /// self-signed default otherwise); 0 leaves it unbound.
    #[arg(long, env = "HTTPS_PORT", default_value_t = 443)]
    pub https_port: u16,

    /// The HAProxy executable.
    #[arg(long, env = "HAPROXY_BIN", default_value = "haproxy")]
    pub haproxy_bin: PathBuf,

    /// The only directory custom templates may be read from.
    #[arg(long, env = "TEMPLATES_ROOT", default_value = "/consul_templates")]
    pub templates_root: PathBuf,

    /// Which instances are routed, by their Consul health: `any`, `passing` or
    /// `non-critical` (critical and maintenance instances are not routed).
    #[arg(long, env = "HEALTH_FILTER", default_value = "non-critical", value_parser = parse_health_filter)]
    pub health_filter: HealthFilter,

    /// HAProxy's `timeout connect`, in seconds.
    #[arg(long, env = "TIMEOUT_CONNECT", default_value_t = 5)]
    pub timeout_connect: u32,

    /// HAProxy's `timeout client`, in seconds.
    #[arg(long, env = "TIMEOUT_CLIENT", default_value_t = 20)]
    pub timeout_client: u32,

    /// HAProxy's `timeout server`, in seconds.
    #[arg(long, env = "TIMEOUT_SERVER", default_value_t = 20)]
    pub timeout_server: u32,

    /// HAProxy's `timeout queue`, in seconds.
    #[arg(long, env = "TIMEOUT_QUEUE", default_value_t = 30)]
    pub timeout_queue: u32,

    /// HAProxy's `timeout http-request`, in seconds.
    #[arg(long, env = "TIMEOUT_HTTP_REQUEST", default_value_t = 5)]
    pub timeout_http_request: u32,

    /// HAProxy's `timeout http-keep-alive`, in seconds.
    #[arg(long, env = "TIMEOUT_HTTP_KEEP_ALIVE", default_value_t = 15)]
    pub timeout_http_keep_alive: u32,

    /// HAProxy's `maxconn` (global and per frontend).
    #[arg(long, env = "MAXCONN", default_value_t = 5000)]
    pub maxconn: u32,

    /// Stop HAProxy gracefully when flow-proxy exits (by default it is left serving, and the
    /// next flow-proxy on the same data directory adopts it).
    #[arg(long, env = "STOP_HAPROXY_ON_EXIT", default_value_t = false)]
    pub stop_haproxy_on_exit: bool,

    /// Route services by their Consul tags `<TAG_PREFIX>.path=/x` etc., with no API call (API
    /// intents for the same service win).
    #[arg(long, env = "TAG_ROUTES", default_value_t = false)]
    pub tag_routes: bool,

    /// Prefix of the tags read for routes and weights (`<prefix>.path=...`,
    /// `<prefix>.weight=N`); the weight meta key is the prefix with `.` and `-` as `_`, then
    /// `_weight`. Proxies with different prefixes can share one Consul.
    #[arg(long, env = "TAG_PREFIX", default_value = "flow-proxy", value_parser = parse_tag_prefix)]
    pub tag_prefix: TagPrefix,

    /// Seconds a route declared by tags is kept after its last instance is gone.
    #[arg(long, env = "TAG_ROUTE_GRACE", default_value_t = 5)]
    pub tag_route_grace: u64,
    /// Port of HAProxy's built-in Prometheus exporter (`/metrics`, on `BIND_ADDRESS`);
    /// unset or 0: not served.
    #[arg(long, env = "METRICS_PORT")]
    pub metrics_port: Option<u16>,
    /// Directory of PEM bundles (certificate chain and key) served on `HTTPS_PORT`, picked by
    /// SNI; read at start and every 10 s. A missing directory holds none.
    #[arg(long, env = "CERTS_DIR", default_value = "/certs")]
    pub certs_dir: PathBuf,
    /// DFP's `USERS`: `user:pass,user2:pass2`, basic auth of every HTTP service that has no
    /// `users` of its own.
    #[arg(long, env = "USERS", value_parser = parse_users)]
    pub users: Option<String>,

    /// DFP's `USERS_PASS_ENCRYPTED`: the passwords of `USERS` are crypt(3) hashes.
    #[arg(long, env = "USERS_PASS_ENCRYPTED", default_value_t = false)]
    pub users_pass_encrypted: bool,

    /// The dynamic-cookie secret of `sessionType=sticky-server`; replicas must share it.
    /// Derived from `PROXY_INSTANCE_NAME` when unset.
    #[arg(long, env = "STICKY_KEY", value_parser = parse_sticky_key)]
    pub sticky_key: Option<StickyKey>,
    /// Seconds between two resyncs of the reconciler: HAProxy checked, the data of every
    /// custom template read again, and a level-triggered apply.
    #[arg(long, env = "RESYNC_INTERVAL", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub resync_interval: u64,
    /// Bearer token the control API requires (`Authorization: Bearer <token>`); `ping`,
    /// `/v1/test` and `/v2/test` stay open.
    #[arg(long, env = "API_TOKEN", hide_env_values = true)]
    pub api_token: Option<String>,

    /// Users the control API accepts with basic authentication: `user:pass,user2:pass2`.
    #[arg(long, env = "API_USERS", hide_env_values = true)]
    pub api_users: Option<String>,

    /// User of HAProxy's statistics page (`/admin?stats`); the page is served only when both
    /// `STATS_USER` and `STATS_PASS` are set.
    #[arg(long, env = "STATS_USER")]
    pub stats_user: Option<String>,

    /// Password of HAProxy's statistics page.
    #[arg(long, env = "STATS_PASS", hide_env_values = true)]
    pub stats_pass: Option<String>,

    /// ACL token the embedded registry requires on every endpoint but `/v1/status/*`;
    /// flow-proxy's own client then sends it.
    #[arg(long, env = "EMBEDDED_REGISTRY_TOKEN", hide_env_values = true)]
    pub embedded_registry_token: Option<String>,
}

/// The API's default port, DFP's.
pub const DEFAULT_API_PORT: u16 = 8080;

impl ServerArgs {
    /// The API address: `API_ADDRESS`, else DFP's `IP`/`PORT`, else `0.0.0.0:8080`.
    pub fn api_socket_address(&self) -> SocketAddr {
        self.api_address.unwrap_or_else(|| {
            SocketAddr::new(
                self.dfp_ip.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
                self.dfp_port.unwrap_or(DEFAULT_API_PORT),
            )
        })
    }
}

fn parse_tag_prefix(value: &str) -> Result<TagPrefix, String> {
    TagPrefix::new(value).map_err(|e| e.to_string())
}

impl ServerArgs {
    /// The global `USERS`, validated (the syntax was checked when parsing the arguments).
    pub fn global_users(&self) -> Option<Users> {
        self.users
            .as_deref()
            .filter(|u| !u.is_empty())
            .and_then(|u| Users::parse("USERS", u, self.users_pass_encrypted).ok())
    }

    /// `STICKY_KEY`, or the key derived from `PROXY_INSTANCE_NAME`.
    pub fn sticky_key(&self) -> StickyKey {
        self.sticky_key
            .clone()
            .unwrap_or_else(|| StickyKey::from_instance_name(&self.proxy_instance_name))
    }
}

fn parse_users(value: &str) -> Result<String, String> {
    if value.is_empty() {
        return Ok(String::new());
    }
    Users::parse("USERS", value, false)
        .map(|_| value.to_owned())
        .map_err(|e| e.to_string())
}

fn parse_sticky_key(value: &str) -> Result<StickyKey, String> {
    StickyKey::new(value).map_err(|e| e.to_string())
}

fn parse_health_filter(value: &str) -> Result<HealthFilter, String> {
    HealthFilter::parse(value)
        .ok_or_else(|| format!("{value:?} is not one of any, passing, non-critical"))
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

    /// ACL token required on every endpoint but `/v1/status/*`.
    #[arg(long, env = "EMBEDDED_REGISTRY_TOKEN", hide_env_values = true)]
    pub embedded_registry_token: Option<String>,
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
        assert_eq!(args.proxy_instance_name, "docker-flow");
        assert_eq!(args.api_socket_address().to_string(), "0.0.0.0:8080");
        assert_eq!(args.http_port, 80);
        assert_eq!(args.https_port, 443);
        assert_eq!(args.health_filter, HealthFilter::NonCritical);
        assert_eq!(args.templates_root, PathBuf::from("/consul_templates"));
        assert_eq!(args.maxconn, 5000);
        assert!(!args.stop_haproxy_on_exit);
        assert!(!args.tag_routes);
        assert_eq!(args.tag_prefix.as_str(), "flow-proxy");
        assert_eq!(args.tag_route_grace, 5);
    }

    #[test]
    fn tag_prefix_is_checked() {
        assert!(Cli::try_parse_from(["flow-proxy", "server", "--tag-prefix", "a b"]).is_err());
        assert!(Cli::try_parse_from(["flow-proxy", "server", "--tag-prefix", "edge."]).is_err());
        let cli = Cli::try_parse_from([
            "flow-proxy",
            "server",
            "--tag-routes",
            "--tag-prefix",
            "edge",
        ])
        .unwrap();
        let Command::Server(args) = cli.command else {
            panic!("expected server")
        };
        assert!(args.tag_routes);
        assert_eq!(args.tag_prefix.as_str(), "edge");
        assert_eq!(args.certs_dir, PathBuf::from("/certs"));
    }

    #[test]
    fn dfp_ip_and_port_apply_when_api_address_is_unset() {
        let cli = Cli::try_parse_from([
            "flow-proxy",
            "server",
            "--ip",
            "127.0.0.1",
            "--port",
            "9000",
        ])
        .unwrap();
        let Command::Server(args) = cli.command else {
            panic!("expected server")
        };
        assert_eq!(args.api_socket_address().to_string(), "127.0.0.1:9000");
        let cli = Cli::try_parse_from([
            "flow-proxy",
            "server",
            "--port",
            "9000",
            "--api-address",
            "127.0.0.1:7000",
        ])
        .unwrap();
        let Command::Server(args) = cli.command else {
            panic!("expected server")
        };
        assert_eq!(args.api_socket_address().to_string(), "127.0.0.1:7000");
    }

    #[test]
    fn health_filter_is_checked() {
        assert!(Cli::try_parse_from(["flow-proxy", "server", "--health-filter", "bogus"]).is_err());
        let cli = Cli::try_parse_from(["flow-proxy", "server", "--health-filter", "any"]).unwrap();
        let Command::Server(args) = cli.command else {
            panic!("expected server")
        };
        assert_eq!(args.health_filter, HealthFilter::Any);
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

    #[test]
    fn global_users_and_sticky_key_are_checked() {
        let server = |extra: &[&str]| {
            let mut argv = vec!["flow-proxy", "server"];
            argv.extend_from_slice(extra);
            Cli::try_parse_from(argv).map(|cli| match cli.command {
                Command::Server(args) => args,
                _ => panic!("expected server"),
            })
        };
        assert!(server(&["--users", "alice"]).is_err());
        assert!(server(&["--users", "a:two words"]).is_err());
        assert!(server(&["--sticky-key", "has space"]).is_err());
        let args = server(&["--users", "a:b,c:d", "--users-pass-encrypted"]).unwrap();
        let users = args.global_users().unwrap();
        assert!(users.encrypted && users.users.len() == 2);
        let args = server(&["--proxy-instance-name", "edge"]).unwrap();
        assert!(args.global_users().is_none());
        assert_eq!(args.sticky_key(), StickyKey::from_instance_name("edge"));
        let args = server(&["--sticky-key", "k-1"]).unwrap();
        assert_eq!(args.sticky_key().to_string(), "k-1");
    }
}
