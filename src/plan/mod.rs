//! The desired HAProxy model: intents × catalog → [`Plan`].
//!
//! Owns: route ordering (one shared frontend, routes sorted by specificity), backend naming
//! (`<service>-be`, stable across colors), the health filter, server slot assignment
//! ([`SlotTable`]) and the comparison of two plans ([`diff()`]: runtime commands or a reload).
//!
//! Pure and deterministic: no IO, no clock; every collection is sorted, so equal inputs give
//! equal plans whatever order they were built in.

pub mod diff;
mod slots;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;

use crate::domain::{
    CatalogSnapshot, DomainName, Health, PathPattern, PathType, RedirectCode, RoutingOptions,
    ServiceIntent, ServiceName,
};

pub use diff::{Change, RuntimeCommand, ServerAdminState, diff};
pub use slots::{InstanceKey, SlotTable};

/// Which instances receive traffic, by their aggregated Consul health.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum HealthFilter {
    /// Every instance, whatever its health.
    Any,
    /// Only passing instances.
    Passing,
    /// Passing and warning instances (the default): critical and maintenance are not routed.
    #[default]
    NonCritical,
}

impl HealthFilter {
    /// Parses `any`, `passing` or `non-critical`.
    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "any" => Some(HealthFilter::Any),
            "passing" => Some(HealthFilter::Passing),
            "non-critical" => Some(HealthFilter::NonCritical),
            _ => None,
        }
    }

    /// Whether an instance with this health is routed.
    pub fn admits(self, health: Health) -> bool {
        match self {
            HealthFilter::Any => true,
            HealthFilter::Passing => health == Health::Passing,
            HealthFilter::NonCritical => matches!(health, Health::Passing | Health::Warning),
        }
    }
}

/// Settings that shape the plan. A change of any of them is structural (a reload).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlanSettings {
    /// Which instances are routed.
    pub health_filter: HealthFilter,
    /// Minimum number of server slots per backend; rounded up to a power of two (at least 1).
    pub min_slots: u32,
}

impl Default for PlanSettings {
    fn default() -> Self {
        PlanSettings {
            health_filter: HealthFilter::default(),
            min_slots: 4,
        }
    }
}

/// An HAProxy backend name: `<service>-be`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BackendName(String);

impl BackendName {
    /// The backend of a service.
    pub fn for_service(service: &ServiceName) -> Self {
        BackendName(format!("{service}-be"))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for BackendName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A server slot name within a backend: `s1`, `s2`, …
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SlotName(pub u32);

impl fmt::Display for SlotName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "s{}", self.0 + 1)
    }
}

/// Whether a filled slot takes traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ServerState {
    /// Routed.
    Ready,
    /// Known but not routed (filtered out by health): in maintenance, keeping its slot.
    Maint,
}

/// The instance in a filled slot.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Server {
    /// Address.
    pub addr: IpAddr,
    /// Port (never 0).
    pub port: u16,
    /// HAProxy weight, 0 to 256.
    pub weight: u16,
    /// Routed or parked in maintenance.
    pub state: ServerState,
}

/// One server slot: empty slots are rendered with a parked address and `disabled`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Slot {
    /// The slot name.
    pub name: SlotName,
    /// The instance, if the slot is filled.
    pub server: Option<Server>,
}

/// The address of empty slots.
pub const PARKED_ADDR: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);
/// The port of empty slots.
pub const PARKED_PORT: u16 = 1;

/// One backend fed by one Consul service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backend {
    /// `<service>-be`.
    pub name: BackendName,
    /// The intent's service name.
    pub service: ServiceName,
    /// The Consul service feeding it (`<service>` or `<service>-<color>`).
    pub catalog_service: ServiceName,
    /// Health-check the servers.
    pub check: bool,
    /// The slots, `s1..sN`, N a power of two.
    pub slots: Vec<Slot>,
    /// `httpsOnly`: plain HTTP requests are redirected to HTTPS with this code.
    pub https_redirect: Option<RedirectCode>,
    /// Rewrites, auth, stickiness, headers, timeouts, TCP/SNI mode (a change is structural).
    pub routing: RoutingOptions,
}

/// How the `Host` header must match for a route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostMatch {
    /// Exact host names (lower case).
    pub exact: Vec<String>,
    /// Suffixes for wildcards, each starting with `.` (e.g. `.example.com`).
    pub suffixes: Vec<String>,
}

impl HostMatch {
    fn from_domains(domains: &[DomainName]) -> Option<HostMatch> {
        if domains.is_empty() {
            return None;
        }
        let exact = domains
            .iter()
            .filter(|d| !d.is_wildcard())
            .map(|d| d.host().to_owned())
            .collect();
        let suffixes = domains
            .iter()
            .filter(|d| d.is_wildcard())
            .map(|d| format!(".{}", d.host()))
            .collect();
        Some(HostMatch { exact, suffixes })
    }
}

/// One routing rule of the shared frontend: `use_backend <backend> if [host] path`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The service.
    pub service: ServiceName,
    /// The backend.
    pub backend: BackendName,
    /// Index of the pattern in the service's sorted paths (names the ACL `url_<svc>_<i>`).
    pub index: usize,
    /// Path matcher.
    pub path_type: PathType,
    /// Path pattern.
    pub pattern: PathPattern,
    /// Host restriction, if any (ACL `host_<svc>`).
    pub host: Option<HostMatch>,
    /// The service also requires request headers (`serviceHeader`, ACLs `hdr_<svc>_<i>`).
    pub header_match: bool,
}

/// The desired HAProxy model.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Plan {
    /// Routes in match order.
    pub routes: Vec<Route>,
    /// Backends by service name.
    pub backends: BTreeMap<ServiceName, Backend>,
    /// Services whose frontend and backend come from custom templates (not rendered here).
    pub custom_templates: BTreeSet<ServiceName>,
    /// The slot table to pass as `previous` to the next round.
    pub slots: SlotTable,
    /// The settings this plan was built with.
    pub settings: PlanSettings,
}

/// Builds the desired plan. Deterministic: the same arguments always give an equal plan.
pub fn plan(
    intents: &BTreeMap<ServiceName, ServiceIntent>,
    catalog: &CatalogSnapshot,
    previous: &SlotTable,
    settings: &PlanSettings,
) -> Plan {
    let mut routes = Vec::new();
    let mut backends = BTreeMap::new();
    let mut custom_templates = BTreeSet::new();
    let mut table = SlotTable::default();
    for (name, intent) in intents {
        if intent.templates.is_some() {
            custom_templates.insert(name.clone());
            continue;
        }
        let backend_name = BackendName::for_service(name);
        let instances = catalog
            .instances(&intent.catalog_service)
            .unwrap_or_default();
        let (slots, entry) = slots::assign(
            previous.backend(name),
            &intent.catalog_service,
            instances,
            settings,
        );
        table.insert(name.clone(), entry);
        backends.insert(
            name.clone(),
            Backend {
                name: backend_name.clone(),
                service: name.clone(),
                catalog_service: intent.catalog_service.clone(),
                check: !intent.skip_check,
                slots,
                https_redirect: intent.https_redirect,
                routing: intent.routing.clone(),
            },
        );
        if intent.routing.is_tcp() {
            // Reached through its own frontend on `srcPort`, not through HTTP routes.
            continue;
        }
        let host = HostMatch::from_domains(&intent.domains);
        for (index, pattern) in intent.paths.iter().enumerate() {
            routes.push(Route {
                service: name.clone(),
                backend: backend_name.clone(),
                index,
                path_type: intent.path_type,
                pattern: pattern.clone(),
                host: host.clone(),
                header_match: !intent.routing.service_headers.is_empty(),
            });
        }
    }
    routes.sort_by(|a, b| route_key(a).cmp(&route_key(b)));
    Plan {
        routes,
        backends,
        custom_templates,
        slots: table,
        settings: *settings,
    }
}

/// Specificity order: host-specific first, then header-specific, `/` last, longer patterns
/// first, then by service name and pattern.
fn route_key(
    r: &Route,
) -> (
    bool,
    bool,
    bool,
    std::cmp::Reverse<usize>,
    &ServiceName,
    usize,
) {
    (
        r.host.is_none(),
        !r.header_match,
        r.pattern.is_root(),
        std::cmp::Reverse(r.pattern.as_str().len()),
        &r.service,
        r.index,
    )
}

#[cfg(test)]
pub(crate) mod test_support {
    use super::*;
    use crate::domain::{Instance, InstanceId, NodeName, Weights};

    pub fn intent(pairs: &[(&str, &str)]) -> ServiceIntent {
        let map = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        ServiceIntent::from_params(&map).unwrap()
    }

    pub fn intents(list: Vec<ServiceIntent>) -> BTreeMap<ServiceName, ServiceIntent> {
        list.into_iter().map(|i| (i.name.clone(), i)).collect()
    }

    pub fn inst(node: &str, id: &str, addr: &str, port: u16, health: Health) -> Instance {
        Instance {
            id: InstanceId::new(id).unwrap(),
            node: NodeName::new(node).unwrap(),
            address: addr.parse().unwrap(),
            port,
            tags: BTreeSet::new(),
            meta: BTreeMap::new(),
            health,
            weights: Weights::default(),
        }
    }

    pub fn svc(s: &str) -> ServiceName {
        ServiceName::new(s).unwrap()
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::*;
    use super::*;

    #[test]
    fn routes_are_ordered_by_specificity() {
        let ints = intents(vec![
            intent(&[("serviceName", "root"), ("servicePath", "/")]),
            intent(&[("serviceName", "api"), ("servicePath", "/api,/api/v2/long")]),
            intent(&[("serviceName", "b"), ("servicePath", "/api/v2")]),
            intent(&[("serviceName", "a"), ("servicePath", "/api/v3")]),
            intent(&[
                ("serviceName", "web"),
                ("servicePath", "/,/x"),
                ("serviceDomain", "example.com"),
            ]),
        ]);
        let p = plan(
            &ints,
            &CatalogSnapshot::new(),
            &SlotTable::default(),
            &PlanSettings::default(),
        );
        let got: Vec<String> = p
            .routes
            .iter()
            .map(|r| format!("{} {}", r.service, r.pattern))
            .collect();
        assert_eq!(
            got,
            [
                "web /x",
                "web /",
                "api /api/v2/long",
                "a /api/v3",
                "b /api/v2",
                "api /api",
                "root /"
            ]
        );
        assert_eq!(p.backends.len(), 5);
        assert_eq!(p.backends[&svc("web")].name.as_str(), "web-be");
    }

    #[test]
    fn health_filter_and_colors() {
        let ints = intents(vec![intent(&[
            ("serviceName", "go-demo"),
            ("servicePath", "/demo"),
            ("serviceColor", "blue"),
        ])]);
        let mut cat = CatalogSnapshot::new();
        cat.set_service(
            svc("go-demo-blue"),
            vec![
                inst("n1", "a", "10.0.0.1", 8080, Health::Passing),
                inst("n1", "b", "10.0.0.2", 8080, Health::Warning),
                inst("n1", "c", "10.0.0.3", 8080, Health::Critical),
                inst("n1", "d", "10.0.0.4", 8080, Health::Maintenance),
            ],
        );
        cat.set_service(
            svc("go-demo"),
            vec![inst("n1", "z", "10.9.9.9", 1, Health::Passing)],
        );
        let states = |f: HealthFilter| {
            let s = PlanSettings {
                health_filter: f,
                ..Default::default()
            };
            let p = plan(&ints, &cat, &SlotTable::default(), &s);
            let b = &p.backends[&svc("go-demo")];
            assert_eq!(b.name.as_str(), "go-demo-be");
            assert_eq!(b.catalog_service.as_str(), "go-demo-blue");
            b.slots
                .iter()
                .map(|s| s.server.as_ref().map(|x| x.state))
                .collect::<Vec<_>>()
        };
        use ServerState::*;
        assert_eq!(
            states(HealthFilter::NonCritical),
            [Some(Ready), Some(Ready), Some(Maint), Some(Maint)]
        );
        assert_eq!(
            states(HealthFilter::Passing),
            [Some(Ready), Some(Maint), Some(Maint), Some(Maint)]
        );
        assert_eq!(states(HealthFilter::Any), [Some(Ready); 4]);
    }

    #[test]
    fn deterministic_under_permutation() {
        let list = [
            intent(&[("serviceName", "a"), ("servicePath", "/a,/b,/")]),
            intent(&[("serviceName", "b"), ("servicePath", "/b,/a")]),
            intent(&[
                ("serviceName", "c"),
                ("servicePath", "/a"),
                ("serviceDomain", "x.com,*.y.com"),
            ]),
        ];
        let instances = vec![
            inst("n2", "x", "10.0.0.1", 1, Health::Passing),
            inst("n1", "y", "10.0.0.2", 2, Health::Passing),
            inst("n1", "a", "10.0.0.3", 3, Health::Warning),
        ];
        let build = |order: &[usize], rev: bool| {
            let mut ints = BTreeMap::new();
            for &i in order {
                let x: &ServiceIntent = &list[i];
                ints.insert(x.name.clone(), x.clone());
            }
            let mut inst = instances.clone();
            if rev {
                inst.reverse();
            }
            let mut cat = CatalogSnapshot::new();
            for s in ["a", "b", "c"] {
                cat.set_service(svc(s), inst.clone());
            }
            plan(&ints, &cat, &SlotTable::default(), &PlanSettings::default())
        };
        let base = build(&[0, 1, 2], false);
        for (order, rev) in [(&[2, 1, 0][..], true), (&[1, 0, 2][..], false)] {
            assert_eq!(build(order, rev), base);
        }
    }
}
