//! The configuration lines of the per-service routing options ([`RoutingOptions`]): backend
//! directives (mode, timeouts, basic auth, header rules, path rewrites, dynamic cookies), the
//! `userlist` sections, the shared frontend's redirects and `serviceHeader` ACLs, the
//! `default_backend`, and the frontends of TCP and SNI services on their own ports.
//!
//! Pure: no IO. Every line is built from fixed keywords, numbers, addresses and validated
//! domain types; values that may hold characters special to HAProxy's parser (regular
//! expressions, replacements, passwords, header values and patterns) are written inside single
//! quotes, where HAProxy neither unescapes nor expands anything, and their types exclude
//! quotes, backslashes (except back-references), `#` and line breaks.
//!
//! Must not: decide what is routed (that is `plan`).

use std::collections::BTreeMap;
use std::net::SocketAddr;

use super::RenderSettings;
use crate::domain::{DomainName, HeaderRule, ReqMode, Users};
use crate::plan::{Backend, Plan};

/// The name of a service's own userlist.
fn userlist_name(b: &Backend) -> String {
    format!("users-{}", b.service)
}

/// The userlist of the global `USERS` setting (service names cannot start with `_` nor
/// contain it next to `users`, so it cannot clash with `users-<service>`).
const GLOBAL_USERLIST: &str = "users_global";

fn header_line(direction: &str, rule: &HeaderRule) -> String {
    match &rule.value {
        Some(v) => format!("{direction} {} {} '{v}'", rule.op.as_str(), rule.name),
        None => format!("{direction} {} {}", rule.op.as_str(), rule.name),
    }
}

/// The directives of a backend, placed before its server lines.
pub(super) fn backend_lines(b: &Backend, settings: &RenderSettings) -> Vec<String> {
    let r = &b.routing;
    let mut out = Vec::new();
    if r.is_tcp() {
        out.push("mode tcp".to_owned());
    }
    if let Some(t) = r.timeout_server {
        out.push(format!("timeout server {t}s"));
    }
    if let Some(t) = r.timeout_tunnel {
        out.push(format!("timeout tunnel {t}s"));
    }
    if r.is_tcp() {
        return out;
    }
    let userlist = match (&r.users, &settings.users) {
        (Some(_), _) => Some(userlist_name(b)),
        (None, Some(_)) => Some(GLOBAL_USERLIST.to_owned()),
        (None, None) => None,
    };
    if let Some(list) = userlist {
        out.push(format!(
            "http-request auth realm {} unless {{ http_auth({list}) }}",
            b.service
        ));
        out.push("http-request del-header Authorization".to_owned());
    }
    out.extend(
        r.request_headers
            .iter()
            .map(|h| header_line("http-request", h)),
    );
    out.extend(
        r.response_headers
            .iter()
            .map(|h| header_line("http-response", h)),
    );
    out.extend(r.path_rewrites.iter().map(|p| {
        let (regex, fmt) = p.haproxy_args();
        format!("http-request replace-path '{regex}' '{fmt}'")
    }));
    if r.sticky {
        out.push(format!(
            "cookie {} insert indirect nocache dynamic",
            b.service
        ));
        out.push(format!("dynamic-cookie-key {}", settings.sticky_key));
    }
    out
}

fn userlist_section(name: &str, users: &Users) -> String {
    let keyword = if users.encrypted {
        "password"
    } else {
        "insecure-password"
    };
    let mut s = format!("userlist {name}");
    for u in &users.users {
        s.push_str(&format!("\n    user {} {keyword} '{}'", u.name, u.password));
    }
    s
}

/// Whole sections after the backends: userlists, then TCP and SNI frontends by port.
pub(super) fn extra_sections(plan: &Plan, settings: &RenderSettings) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(users) = &settings.users {
        out.push(userlist_section(GLOBAL_USERLIST, users));
    }
    for b in plan.backends.values() {
        if let (Some(users), false) = (&b.routing.users, b.routing.is_tcp()) {
            out.push(userlist_section(&userlist_name(b), users));
        }
    }
    let mut by_port: BTreeMap<u16, Vec<&Backend>> = BTreeMap::new();
    for b in plan.backends.values() {
        if let (true, Some(port)) = (b.routing.is_tcp(), b.routing.src_port) {
            by_port.entry(port).or_default().push(b);
        }
    }
    for (port, backends) in by_port {
        let bind = SocketAddr::new(settings.bind_address, port);
        let sni = backends.iter().all(|b| b.routing.mode == ReqMode::Sni);
        if sni {
            let mut s = format!(
                "frontend sni_{port}\n    bind {bind}\n    mode tcp\n    \
                 tcp-request inspect-delay 5s\n    \
                 tcp-request content accept if {{ req.ssl_hello_type 1 }}"
            );
            for b in &backends {
                let (exact, suffixes) = split_names(&b.routing.sni_names);
                for (method, list) in [("str", exact), ("end", suffixes)] {
                    for values in value_lines(&list) {
                        s.push_str(&format!(
                            "\n    use_backend {} if {{ req.ssl_sni,lower -m {method} {values} }}",
                            b.name
                        ));
                    }
                }
            }
            out.push(s);
        } else if let Some(b) = backends.first() {
            // Plain TCP owns its port alone (the API refuses a second service on it); if KV
            // holds a clash anyway, the first service by name gets the port.
            out.push(format!(
                "frontend tcp_{port}\n    bind {bind}\n    mode tcp\n    default_backend {}",
                b.name
            ));
        }
    }
    out
}

/// Values written on one configuration line at most. HAProxy 2.6 reads at most 64 words per
/// line and refuses the configuration ("too many words") beyond; the longest line that lists
/// values has 16 words besides them.
pub(super) const VALUES_PER_LINE: usize = 32;

/// `values` joined by spaces, [`VALUES_PER_LINE`] per entry: one entry per configuration line.
/// Lines repeating an ACL name are ORed, and so are repeated `use_backend` and `redirect` rules
/// with the same target, so splitting a list keeps its meaning.
pub(super) fn value_lines<S: AsRef<str>>(values: &[S]) -> Vec<String> {
    values
        .chunks(VALUES_PER_LINE)
        .map(|chunk| {
            chunk
                .iter()
                .map(AsRef::as_ref)
                .collect::<Vec<&str>>()
                .join(" ")
        })
        .collect()
}

fn split_names(names: &[DomainName]) -> (Vec<String>, Vec<String>) {
    let exact = names
        .iter()
        .filter(|d| !d.is_wildcard())
        .map(|d| d.host().to_owned())
        .collect();
    let suffixes = names
        .iter()
        .filter(|d| d.is_wildcard())
        .map(|d| format!(".{}", d.host()))
        .collect();
    (exact, suffixes)
}

/// Lines of the shared frontend placed before the routes: `redirectFromDomain` redirects and
/// `serviceHeader` ACLs.
pub(super) fn frontend_lines(plan: &Plan) -> Vec<String> {
    let mut out = Vec::new();
    for b in plan.backends.values() {
        let r = &b.routing;
        if r.is_tcp() {
            continue;
        }
        if let Some(target) = &r.redirect_to {
            let (exact, suffixes) = split_names(&r.redirect_from);
            for (method, list) in [("str", exact), ("end", suffixes)] {
                for values in value_lines(&list) {
                    let cond = format!("{{ req.hdr(host),field(1,:),lower -m {method} {values} }}");
                    out.push(format!(
                        "http-request redirect prefix http://{} code 301 if !{{ ssl_fc }} {cond}",
                        target.host()
                    ));
                    out.push(format!(
                        "http-request redirect prefix https://{} code 301 if {{ ssl_fc }} {cond}",
                        target.host()
                    ));
                }
            }
        }
        for (i, h) in r.service_headers.iter().enumerate() {
            out.push(format!(
                "acl hdr_{}_{i} req.hdr({}) -m str '{}'",
                b.service, h.name, h.value
            ));
        }
    }
    out
}

/// The extra conditions of a service's `use_backend` lines (` hdr_<svc>_0 hdr_<svc>_1`).
pub(super) fn route_conditions(plan: &Plan, service: &crate::domain::ServiceName) -> String {
    plan.backends
        .get(service)
        .map(|b| {
            (0..b.routing.service_headers.len())
                .map(|i| format!(" hdr_{service}_{i}"))
                .collect()
        })
        .unwrap_or_default()
}

/// The shared frontend's `default_backend`: the first HTTP service (by name) that asked for
/// it, else the 503 backend.
pub(super) fn default_backend(plan: &Plan) -> String {
    plan.backends
        .values()
        .find(|b| b.routing.default_backend && !b.routing.is_tcp())
        .map(|b| b.name.to_string())
        .unwrap_or_else(|| "default_503".to_owned())
}
