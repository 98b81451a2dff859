//! [`Plan`] → `haproxy.cfg` text, through the askama template `templates/haproxy.cfg`.
//!
//! Owns: the layout of the generated configuration (global, defaults, the one shared
//! `services` frontend with its ACLs and `use_backend` lines in plan order, one backend per
//! service with every slot as an explicit `server` line, the default 503 backend and the
//! optional health listener) and the settings that shape it ([`RenderSettings`]).
//!
//! Pure: no IO. Escaping is off (the output is not HTML); every value reaching the template is
//! a validated domain type, a number, an address, or a fixed string. Path patterns are written
//! inside single quotes, where HAProxy neither unescapes nor expands anything, and patterns
//! cannot contain a quote. The output is deterministic and always ends with `\n`.
//!
//! Retries: `retries 3`, `option redispatch` and `retry-on conn-failure empty-response
//! response-timeout`; requests other than GET, HEAD and OPTIONS are only retried on connection
//! failures (`http-request disable-l7-retry`), so a POST is never sent twice.
//!
//! The one exception to validated input is [`CustomSnippets`]: the text of an operator's own
//! custom templates (rendered elsewhere), inserted verbatim by [`render_with_custom`].

mod routing;
mod slot_lines;
mod tls;

pub use slot_lines::only_slot_lines_differ;
pub use tls::{ConfigFilePath, ConfigFilePathError, TlsBind};

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use askama::Template;

use std::collections::BTreeMap;

use crate::domain::{ServiceName, StickyKey, Users};
use crate::plan::{Backend, PARKED_ADDR, PARKED_PORT, Plan, ServerState};

/// DFP's `TIMEOUT_*` settings, in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// `TIMEOUT_CONNECT` (default 5).
    pub connect: u32,
    /// `TIMEOUT_CLIENT` (default 20).
    pub client: u32,
    /// `TIMEOUT_SERVER` (default 20).
    pub server: u32,
    /// `TIMEOUT_QUEUE` (default 30).
    pub queue: u32,
    /// `TIMEOUT_HTTP_REQUEST` (default 5).
    pub http_request: u32,
    /// `TIMEOUT_HTTP_KEEP_ALIVE` (default 15).
    pub http_keep_alive: u32,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: 5,
            client: 20,
            server: 20,
            queue: 30,
            http_request: 5,
            http_keep_alive: 15,
        }
    }
}

/// Where HAProxy sends its logs (access logs in HAProxy's HTTP log format).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogTarget {
    /// A UDP syslog address.
    Udp(SocketAddr),
    /// A Unix datagram socket path.
    Unix(UnixSocketPath),
}

impl fmt::Display for LogTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LogTarget::Udp(addr) => write!(f, "{addr}"),
            LogTarget::Unix(path) => f.write_str(&path.0),
        }
    }
}

/// An absolute Unix socket path safe to write into the configuration: starts with `/`, at most
/// 100 bytes, `[A-Za-z0-9/._-]` only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnixSocketPath(String);

/// A rejected [`UnixSocketPath`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid log socket path {0:?}: must be absolute, at most 100 bytes, [A-Za-z0-9/._-]")]
pub struct UnixSocketPathError(pub String);

impl UnixSocketPath {
    /// Validates a socket path.
    pub fn new(path: &str) -> Result<Self, UnixSocketPathError> {
        let ok = path.starts_with('/')
            && path.len() <= 100
            && path
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '/' | '.' | '_' | '-'));
        if ok {
            Ok(UnixSocketPath(path.to_owned()))
        } else {
            Err(UnixSocketPathError(path.to_owned()))
        }
    }
}

/// Everything the configuration needs besides the plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderSettings {
    /// The supervisor's `global` lines (`HaproxyPaths::global_lines`), each ending with `\n`.
    pub global_lines: String,
    /// The supervisor's `defaults` lines (`HaproxyPaths::defaults_lines`).
    pub defaults_lines: String,
    /// Log target; `None` disables logging.
    pub log: Option<LogTarget>,
    /// Timeouts.
    pub timeouts: Timeouts,
    /// `maxconn` (global and per frontend).
    pub maxconn: u32,
    /// `BIND_ADDRESS`.
    pub bind_address: IpAddr,
    /// `HTTP_PORT`.
    pub http_port: u16,
    /// `HTTPS_PORT`, when HAProxy also listens there.
    pub https_port: Option<u16>,
    /// A small listener answering 200, for health probes.
    pub health: Option<SocketAddr>,
    /// Where HAProxy's built-in Prometheus exporter answers `/metrics` (`METRICS_PORT`).
    pub metrics: Option<SocketAddr>,
    /// TLS termination on `https_port`; `None`: plain HTTP there.
    pub tls: Option<TlsBind>,
    /// The global `USERS`: basic auth of every HTTP service without its own `users`.
    pub users: Option<Users>,
    /// The dynamic-cookie secret of `sessionType=sticky-server`, shared by replicas.
    pub sticky_key: StickyKey,
}

impl Default for RenderSettings {
    fn default() -> Self {
        RenderSettings {
            global_lines: String::new(),
            defaults_lines: String::new(),
            log: None,
            timeouts: Timeouts::default(),
            maxconn: 5000,
            bind_address: IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
            http_port: 80,
            https_port: Some(443),
            health: None,
            metrics: None,
            tls: None,
            users: None,
            sticky_key: StickyKey::default(),
        }
    }
}

#[cfg(test)]
impl RenderSettings {
    pub(crate) fn for_tests() -> Self {
        RenderSettings {
            global_lines: "    stats timeout 30s\n".into(),
            ..Default::default()
        }
    }
}

/// A rendered configuration; always ends with `\n`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderedConfig(String);

impl RenderedConfig {
    /// The text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The text, owned.
    pub fn into_string(self) -> String {
        self.0
    }
}

impl fmt::Display for RenderedConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Rendering failed. Every value is pre-formatted and infallible, so this indicates a bug.
#[derive(Debug, thiserror::Error)]
#[error("cannot render haproxy.cfg: {0}")]
pub struct RenderError(#[from] askama::Error);

/// The host ACL of one service; each entry of `exact` and `suffixes` is one line's values
/// ([`routing::value_lines`]), the lines of one name being ORed by HAProxy.
struct HostAclView {
    service: String,
    exact: Vec<String>,
    suffixes: Vec<String>,
}

struct RouteView {
    service: String,
    index: usize,
    path_type: &'static str,
    pattern: String,
    backend: String,
    host: bool,
    /// A host-less `/` route: emitted after custom frontend snippets.
    catch_all: bool,
    /// Further conditions of the `use_backend` line (`serviceHeader` ACLs), each with a
    /// leading space.
    extra: String,
}

struct BackendView {
    name: String,
    lines: Vec<String>,
    servers: Vec<String>,
    https_redirect: Option<u16>,
}

#[derive(Template)]
#[template(path = "haproxy.cfg")]
struct ConfigView<'a> {
    /// `:<HTTPS_PORT>` for the `httpsOnly` redirects, empty for 443 (or no HTTPS port).
    https_port_suffix: String,
    global_lines: &'a str,
    defaults_lines: &'a str,
    log: Option<String>,
    maxconn: u32,
    timeouts: Timeouts,
    binds: Vec<String>,
    host_acls: Vec<HostAclView>,
    routes: Vec<RouteView>,
    backends: Vec<BackendView>,
    custom_frontends: Vec<&'a str>,
    custom_backends: Vec<&'a str>,
    health: Option<String>,
    metrics: Option<String>,
    frontend_lines: Vec<String>,
    default_backend: String,
    extra_sections: Vec<String>,
}

/// Configuration text of a service that uses custom templates, already rendered by the caller.
/// Inserted verbatim: it comes from the operator's own template files, not from the API.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CustomSnippets {
    /// Lines for the shared `services` frontend (ACLs and `use_backend`), placed after the
    /// built-in routes except the host-less `/` catch-alls, which stay last
    /// (`consulTemplateFePath`).
    pub frontend: String,
    /// Whole sections placed after the built-in backends: the `consulTemplateBePath` backend,
    /// or the whole `consulTemplatePath` file.
    pub sections: String,
}

fn server_lines(b: &Backend) -> Vec<String> {
    let check = if b.check { " check" } else { "" };
    b.slots
        .iter()
        .map(|slot| match &slot.server {
            None => format!(
                "{} {}{check} disabled",
                slot.name,
                SocketAddr::new(PARKED_ADDR, PARKED_PORT)
            ),
            Some(s) => {
                let disabled = if s.state == ServerState::Maint {
                    " disabled"
                } else {
                    ""
                };
                format!(
                    "{} {}{check}{disabled} weight {}",
                    slot.name,
                    SocketAddr::new(s.addr, s.port),
                    s.weight
                )
            }
        })
        .collect()
}

/// Renders the configuration of `plan` (services with custom templates are left out).
pub fn render(plan: &Plan, settings: &RenderSettings) -> Result<RenderedConfig, RenderError> {
    render_with_custom(plan, settings, &BTreeMap::new())
}

fn trim_snippet(s: &str) -> Option<&str> {
    let t = s.trim_start_matches(['\n', '\r']).trim_end();
    (!t.trim().is_empty()).then_some(t)
}

/// Renders the configuration of `plan` plus the custom snippets of the services listed in
/// `plan.custom_templates` (snippets of other services are ignored), in service-name order.
pub fn render_with_custom(
    plan: &Plan,
    settings: &RenderSettings,
    custom: &BTreeMap<ServiceName, CustomSnippets>,
) -> Result<RenderedConfig, RenderError> {
    let snippets: Vec<&CustomSnippets> = custom
        .iter()
        .filter(|(name, _)| plan.custom_templates.contains(*name))
        .map(|(_, s)| s)
        .collect();
    let custom_frontends = snippets
        .iter()
        .filter_map(|s| trim_snippet(&s.frontend))
        .collect();
    let custom_backends = snippets
        .iter()
        .filter_map(|s| trim_snippet(&s.sections))
        .collect();
    let mut binds = vec![SocketAddr::new(settings.bind_address, settings.http_port).to_string()];
    if let Some(p) = settings.https_port.filter(|p| *p != settings.http_port) {
        let addr = SocketAddr::new(settings.bind_address, p);
        binds.push(match &settings.tls {
            Some(tls) => format!("{addr} {}", tls.bind_options()),
            None => addr.to_string(),
        });
    }
    let mut host_acls: Vec<HostAclView> = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for r in &plan.routes {
        if let Some(h) = &r.host
            && seen.insert(r.service.clone())
        {
            host_acls.push(HostAclView {
                service: r.service.to_string(),
                exact: routing::value_lines(&h.exact),
                suffixes: routing::value_lines(&h.suffixes),
            });
        }
    }
    host_acls.sort_by(|a, b| a.service.cmp(&b.service));
    let routes = plan
        .routes
        .iter()
        .map(|r| RouteView {
            service: r.service.to_string(),
            index: r.index,
            path_type: r.path_type.as_str(),
            pattern: r.pattern.to_string(),
            backend: r.backend.to_string(),
            host: r.host.is_some(),
            catch_all: r.host.is_none() && !r.header_match && r.pattern.is_root(),
            extra: routing::route_conditions(plan, &r.service),
        })
        .collect();
    let backends = plan
        .backends
        .values()
        .map(|b| BackendView {
            name: b.name.to_string(),
            lines: routing::backend_lines(b, settings),
            servers: server_lines(b),
            https_redirect: b.https_redirect.map(|c| c.get()),
        })
        .collect();
    let view = ConfigView {
        global_lines: settings.global_lines.trim_end_matches('\n'),
        defaults_lines: settings.defaults_lines.trim_end_matches('\n'),
        log: settings.log.as_ref().map(ToString::to_string),
        maxconn: settings.maxconn,
        timeouts: settings.timeouts,
        binds,
        host_acls,
        routes,
        backends,
        custom_frontends,
        custom_backends,
        health: settings.health.map(|h| h.to_string()),
        metrics: settings.metrics.map(|m| m.to_string()),
        https_port_suffix: match settings.https_port {
            Some(443) | None => String::new(),
            Some(port) => format!(":{port}"),
        },
        frontend_lines: routing::frontend_lines(plan),
        default_backend: routing::default_backend(plan),
        extra_sections: routing::extra_sections(plan, settings),
    };
    let mut out = view.render()?;
    if !out.ends_with('\n') {
        out.push('\n');
    }
    Ok(RenderedConfig(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::test_support::*;
    use crate::plan::{PlanSettings, SlotTable, plan};

    #[test]
    fn snippets_only_for_custom_template_services() {
        let ints = intents(vec![
            intent(&[("serviceName", "web"), ("servicePath", "/")]),
            intent(&[("serviceName", "t"), ("consulTemplatePath", "/x/t.tmpl")]),
        ]);
        let p = plan(
            &ints,
            &crate::domain::CatalogSnapshot::new(),
            &SlotTable::default(),
            &PlanSettings::default(),
        );
        assert_eq!(p.custom_templates.len(), 1);
        let snip = |s: &str| CustomSnippets {
            frontend: String::new(),
            sections: format!("backend {s}-be\n    server x 10.0.0.1:80\n\n\n"),
        };
        let custom = [(svc("t"), snip("t")), (svc("web"), snip("web"))].into();
        let text = render_with_custom(&p, &RenderSettings::for_tests(), &custom)
            .unwrap()
            .into_string();
        assert!(text.contains("\n\nbackend t-be\n    server x 10.0.0.1:80\n\nbackend default_503"));
        assert!(!text.contains("server x 10.0.0.1:80\n\n\n"));
        assert_eq!(text.matches("backend web-be").count(), 2, "{text}");
        assert!(text.ends_with('\n'));
    }
}
