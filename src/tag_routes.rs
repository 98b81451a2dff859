//! Routes and weights declared in Consul tags and meta, as the reconciler follows them over time.
//!
//! Owns: the settings (`TAG_ROUTES`, `TAG_PREFIX`, `TAG_ROUTE_GRACE`), the grace period that
//! keeps a tag route after its last instance is gone (so a rolling restart does not flap the
//! route), the catalog watcher's interest in tagged services, and logging each refused tag set,
//! disagreement between instances and ignored weight once (not on every apply).
//!
//! Must not: decide what tags mean (`domain::tag_intent` does, purely), write Consul KV (tag
//! intents live in the catalog), or talk to HAProxy.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use tokio::time::Instant;
use tracing::{info, warn};

use crate::consul::Interest;
use crate::domain::tag_intent::{TagPrefix, apply_weights, merge_intents, tag_intents};
use crate::domain::{CatalogSnapshot, ServiceIntent, ServiceName};

/// How this proxy reads tags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagRouteSettings {
    /// Route services by their tags (`TAG_ROUTES`).
    pub enabled: bool,
    /// The tag prefix (`TAG_PREFIX`); also names the weight tag and meta key.
    pub prefix: TagPrefix,
    /// How long a tag route outlives its last instance (`TAG_ROUTE_GRACE`).
    pub grace: Duration,
}

impl Default for TagRouteSettings {
    fn default() -> Self {
        TagRouteSettings {
            enabled: false,
            prefix: TagPrefix::default(),
            grace: Duration::from_secs(5),
        }
    }
}

#[derive(Debug, Clone)]
struct Remembered {
    intent: ServiceIntent,
    /// When its tags were last missing from the catalog (`None`: present now).
    missing_since: Option<Instant>,
}

/// Tag routes as the reconciler sees them: the ones declared now plus the ones in their grace
/// period.
#[derive(Debug, Default)]
pub struct TagRoutes {
    settings: TagRouteSettings,
    remembered: BTreeMap<ServiceName, Remembered>,
    /// Names the last merge took from tags.
    from_tags: BTreeSet<ServiceName>,
    logged_rejected: BTreeMap<ServiceName, String>,
    logged_conflicts: BTreeSet<ServiceName>,
    logged_weights: BTreeSet<String>,
    /// Tag intents HAProxy refused, left out until the service's tags change.
    refused: BTreeMap<ServiceName, ServiceIntent>,
}

impl TagRoutes {
    /// Tag routes with these settings.
    pub fn new(settings: TagRouteSettings) -> Self {
        TagRoutes {
            settings,
            ..TagRoutes::default()
        }
    }

    /// The catalog watcher's interest for `services`: those, plus every service carrying a
    /// tag of the prefix when tag routes are on.
    pub fn interest(&self, services: BTreeSet<ServiceName>) -> Interest {
        if self.settings.enabled {
            Interest::Tagged {
                services,
                prefix: self.settings.prefix.as_str().to_owned(),
            }
        } else {
            Interest::Services(services)
        }
    }

    /// The catalog with every instance's meta or tag weight applied (always on: a weight
    /// declared by an instance of an API-routed service counts too). Ignored values are logged
    /// once each.
    pub fn weighted(&mut self, mut catalog: CatalogSnapshot) -> CatalogSnapshot {
        let problems: BTreeSet<String> = apply_weights(&mut catalog, &self.settings.prefix)
            .into_iter()
            .collect();
        for p in problems.difference(&self.logged_weights) {
            warn!(problem = %p, "ignoring an instance weight");
        }
        self.logged_weights = problems;
        catalog
    }

    /// The intents to apply: `api` plus the tag intents of `catalog` and those still in their
    /// grace period that no API intent covers (the API wins). `now` ends expired graces.
    pub fn wanted(
        &mut self,
        api: &BTreeMap<ServiceName, ServiceIntent>,
        catalog: &CatalogSnapshot,
        now: Instant,
    ) -> BTreeMap<ServiceName, ServiceIntent> {
        if !self.settings.enabled {
            self.from_tags.clear();
            return api.clone();
        }
        let found = tag_intents(catalog, &self.settings.prefix);
        self.log(&found.rejected, &found.conflicting);
        for (name, entry) in self.remembered.iter_mut() {
            if !found.intents.contains_key(name) && entry.missing_since.is_none() {
                info!(service = %name, grace_secs = self.settings.grace.as_secs_f64(), "tag route has no instance left; kept for the grace period");
                entry.missing_since = Some(now);
            }
        }
        let grace = self.settings.grace;
        self.remembered.retain(|name, entry| {
            let keep = entry
                .missing_since
                .is_none_or(|since| now.saturating_duration_since(since) < grace);
            if !keep {
                info!(service = %name, "tag route removed: no instance declared it within the grace period");
            }
            keep
        });
        for (name, intent) in found.intents {
            if !self.remembered.contains_key(&name) {
                info!(service = %name, "route declared by tags");
            }
            self.remembered.insert(
                name,
                Remembered {
                    intent,
                    missing_since: None,
                },
            );
        }
        let remembered = &self.remembered;
        self.refused
            .retain(|name, intent| remembered.get(name).is_some_and(|r| &r.intent == intent));
        let tags: BTreeMap<ServiceName, ServiceIntent> = self
            .remembered
            .iter()
            .filter(|(n, _)| !self.refused.contains_key(*n))
            .map(|(n, r)| (n.clone(), r.intent.clone()))
            .collect();
        let (merged, from_tags) = merge_intents(api, &tags);
        self.from_tags = from_tags;
        merged
    }

    /// HAProxy refused the configuration with this tag intent: it is left out until the
    /// service declares something else (or goes and comes back).
    pub fn refused(&mut self, name: &ServiceName, intent: &ServiceIntent) {
        warn!(service = %name, "HAProxy refuses the route declared by these tags; it is left out until they change");
        self.refused.insert(name.clone(), intent.clone());
    }

    /// Names the last [`TagRoutes::wanted`] took from tags.
    pub fn from_tags(&self) -> &BTreeSet<ServiceName> {
        &self.from_tags
    }

    /// When the next grace period ends, if one is running.
    pub fn next_expiry(&self) -> Option<Instant> {
        self.remembered
            .values()
            .filter_map(|r| r.missing_since)
            .min()
            .map(|since| since + self.settings.grace)
    }

    fn log(
        &mut self,
        rejected: &BTreeMap<ServiceName, String>,
        conflicting: &BTreeSet<ServiceName>,
    ) {
        for (name, reason) in rejected {
            if self.logged_rejected.get(name) != Some(reason) {
                warn!(service = %name, %reason, "tags refused; the service is not routed by its tags");
            }
        }
        self.logged_rejected = rejected.clone();
        for name in conflicting.difference(&self.logged_conflicts) {
            warn!(service = %name, "instances declare different routes in their tags; the one most instances declare is used");
        }
        self.logged_conflicts = conflicting.clone();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Health, Instance, InstanceId, NodeName, Tag, Weights};

    fn svc(s: &str) -> ServiceName {
        ServiceName::new(s).unwrap()
    }

    fn catalog(services: &[(&str, &[&str])]) -> CatalogSnapshot {
        let mut c = CatalogSnapshot::new();
        for (name, tags) in services {
            c.set_service(
                svc(name),
                vec![Instance {
                    id: InstanceId::new("i1").unwrap(),
                    node: NodeName::new("n1").unwrap(),
                    address: "10.0.0.1".parse().unwrap(),
                    port: 80,
                    tags: tags.iter().map(|t| Tag::new(*t).unwrap()).collect(),
                    meta: BTreeMap::new(),
                    health: Health::Passing,
                    weights: Weights::default(),
                }],
            );
        }
        c
    }

    fn on(grace: u64) -> TagRoutes {
        TagRoutes::new(TagRouteSettings {
            enabled: true,
            grace: Duration::from_secs(grace),
            ..TagRouteSettings::default()
        })
    }

    #[test]
    fn a_route_outlives_its_last_instance_by_the_grace_period() {
        let mut t = on(5);
        let api = BTreeMap::new();
        let start = Instant::now();
        let with = catalog(&[("web", &["flow-proxy.path=/web"])]);
        let without = catalog(&[]);
        assert!(t.wanted(&api, &with, start).contains_key(&svc("web")));
        assert_eq!(t.next_expiry(), None);
        let gone = start + Duration::from_secs(1);
        assert!(t.wanted(&api, &without, gone).contains_key(&svc("web")));
        assert_eq!(t.next_expiry(), Some(gone + Duration::from_secs(5)));
        let later = gone + Duration::from_secs(4);
        assert!(t.wanted(&api, &without, later).contains_key(&svc("web")));
        // Back before the grace ended: the clock starts over next time.
        assert!(t.wanted(&api, &with, later).contains_key(&svc("web")));
        assert_eq!(t.next_expiry(), None);
        let again = later + Duration::from_secs(1);
        assert!(t.wanted(&api, &without, again).contains_key(&svc("web")));
        let end = again + Duration::from_secs(5);
        assert!(t.wanted(&api, &without, end).is_empty());
        assert_eq!(t.next_expiry(), None);
    }

    #[test]
    fn off_means_api_only_and_the_plain_interest() {
        let mut t = TagRoutes::new(TagRouteSettings::default());
        let with = catalog(&[("web", &["flow-proxy.path=/web"])]);
        assert!(t.wanted(&BTreeMap::new(), &with, Instant::now()).is_empty());
        assert_eq!(
            t.interest(BTreeSet::new()),
            Interest::Services(BTreeSet::new())
        );
        assert!(matches!(
            on(1).interest(BTreeSet::new()),
            Interest::Tagged { prefix, .. } if prefix == "flow-proxy"
        ));
    }

    #[test]
    fn a_refused_route_waits_for_other_tags() {
        let mut t = on(5);
        let now = Instant::now();
        let bad = catalog(&[(
            "rx",
            &["flow-proxy.path=/a(", "flow-proxy.pathType=path_reg"],
        )]);
        let wanted = t.wanted(&BTreeMap::new(), &bad, now);
        t.refused(&svc("rx"), &wanted[&svc("rx")]);
        assert!(t.wanted(&BTreeMap::new(), &bad, now).is_empty());
        assert!(t.from_tags().is_empty());
        let fixed = catalog(&[(
            "rx",
            &["flow-proxy.path=/a", "flow-proxy.pathType=path_reg"],
        )]);
        assert!(
            t.wanted(&BTreeMap::new(), &fixed, now)
                .contains_key(&svc("rx"))
        );
        // The same bad tags again are tried again: the refusal was forgotten with them.
        assert!(
            t.wanted(&BTreeMap::new(), &bad, now)
                .contains_key(&svc("rx"))
        );
    }

    #[test]
    fn names_taken_from_tags_are_reported() {
        let mut t = on(5);
        let with = catalog(&[
            ("web", &["flow-proxy.path=/web"]),
            ("bad", &["flow-proxy.path=/b", "flow-proxy.pathType=no"]),
        ]);
        let wanted = t.wanted(&BTreeMap::new(), &with, Instant::now());
        assert_eq!(wanted.keys().collect::<Vec<_>>(), [&svc("web")]);
        assert_eq!(t.from_tags().iter().collect::<Vec<_>>(), [&svc("web")]);
    }
}
