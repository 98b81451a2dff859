//! Routes and weights a service declares itself, in its Consul tags and meta.
//!
//! Owns: the tag prefix ([`TagPrefix`]) and the meta key derived from it, the mapping of tags
//! `<prefix>.<key>=<value>` onto Docker Flow: Proxy's query parameters and the deterministic
//! choice between instances that disagree ([`service_tag_intent`], [`tag_intents`]), the
//! precedence of API intents over tag intents ([`merge_intents`]), and the instance weight
//! from meta, tag or Consul's `Weights` ([`instance_weight`], [`apply_weights`]).
//!
//! Pure: no IO, no clock. Tag intents are built with [`ServiceIntent::from_params`], the very
//! parser the API uses, so every API parameter works as a tag and a bad value is refused with
//! the same message (the caller logs it; nothing of that service is rendered).
//!
//! Rules:
//! - `<prefix>.path`, `<prefix>.domain` and `<prefix>.pathType` are short for `servicePath`,
//!   `serviceDomain` and `pathType`; any other key is taken as a DFP parameter name verbatim
//!   (`<prefix>.servicePath=/a,/b`, `<prefix>.skipCheck=true`, ...); unknown names are
//!   ignored, as the API ignores unknown query parameters.
//! - `serviceName` and `serviceColor` cannot be tags (the service's own Consul name is its
//!   name), nor can custom templates; `weight` is the instance's weight, not a route
//!   parameter. A parameter given by several tags of one instance is joined into a comma list
//!   (values in byte order), as DFP writes lists.
//! - Instances that disagree: the route-tag set carried by the most instances wins; a tie goes
//!   to the smallest set in byte order. Weights stay per instance.
//! - An API intent for the same service wins: a tag intent of Consul service `S` is dropped when
//!   an API intent is named `S` or routes `S` (`serviceColor`).
//! - Weight, per instance: meta `<prefix with . and - as _>_weight` (`flow_proxy_weight`) >
//!   tag `<prefix>.weight` > Consul's `Weights` (`Passing`, or `Warning` while warning). Only
//!   an integer 0 to 256 is valid; an invalid value is ignored (the next source applies) and
//!   reported.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use super::{
    CatalogSnapshot, Instance, IntentError, MetaKey, ServiceIntent, ServiceName, Tag, Weights,
};

/// HAProxy's largest server weight.
pub const MAX_WEIGHT: u16 = 256;

/// The key of the instance weight in tags (`<prefix>.weight`).
pub const WEIGHT_KEY: &str = "weight";

/// Short tag keys and the DFP parameter each stands for.
pub const TAG_ALIASES: [(&str, &str); 3] = [
    ("path", "servicePath"),
    ("domain", "serviceDomain"),
    ("pathType", "pathType"),
];

/// Keys a tag cannot set: the name is the Consul service's, templates are read from files the
/// operator names through the API.
const RESERVED: [&str; 5] = [
    "serviceName",
    "serviceColor",
    "consulTemplatePath",
    "consulTemplateFePath",
    "consulTemplateBePath",
];

/// Why tags do not make a route, or a prefix is not valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TagError {
    /// The configured prefix is not valid.
    #[error(
        "invalid tag prefix {0:?}: 1 to 64 characters of letters, digits, '.', '_' and '-', \
         starting with a letter or a digit, not ending with '.'"
    )]
    Prefix(String),
    /// A route tag without `=`.
    #[error("tag {0:?} has no '=<value>'")]
    NoValue(String),
    /// A key that tags cannot set.
    #[error("tag {tag:?}: {key} cannot be set by a tag")]
    Reserved {
        /// The tag.
        tag: String,
        /// The key.
        key: String,
    },
    /// The parameters are not a valid intent (the API's own message).
    #[error("{0}")]
    Intent(#[from] IntentError),
}

/// The prefix of the tags this proxy reads: `<prefix>.<key>=<value>`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TagPrefix(String);

impl TagPrefix {
    /// Validates a prefix: `[A-Za-z0-9][A-Za-z0-9._-]*`, at most 64 bytes, not ending in `.`.
    pub fn new(value: &str) -> Result<Self, TagError> {
        let ok = !value.is_empty()
            && value.len() <= 64
            && value.starts_with(|c: char| c.is_ascii_alphanumeric())
            && !value.ends_with('.')
            && value
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        if ok {
            Ok(TagPrefix(value.to_owned()))
        } else {
            Err(TagError::Prefix(value.to_owned()))
        }
    }

    /// The prefix.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The meta key of the weight: the prefix with `.` and `-` as `_`, then `_weight`
    /// (`flow-proxy` → `flow_proxy_weight`); Consul meta keys allow no dots.
    pub fn weight_meta_key(&self) -> String {
        let base: String = self
            .0
            .chars()
            .map(|c| if matches!(c, '.' | '-') { '_' } else { c })
            .collect();
        format!("{base}_{WEIGHT_KEY}")
    }

    /// The `<key>=<value>` part of a tag with this prefix, if it has it.
    fn strip<'a>(&self, tag: &'a str) -> Option<&'a str> {
        tag.strip_prefix(self.0.as_str())?.strip_prefix('.')
    }

    /// Whether a tag is one of this prefix's route tags (anything but the weight).
    pub fn is_route_tag(&self, tag: &str) -> bool {
        self.strip(tag).is_some_and(|rest| {
            let key = rest.split_once('=').map_or(rest, |(k, _)| k);
            key != WEIGHT_KEY
        })
    }
}

impl Default for TagPrefix {
    fn default() -> Self {
        TagPrefix("flow-proxy".to_owned())
    }
}

impl fmt::Display for TagPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The `(key, value)` pairs of an instance's route tags, keys as written (aliases not yet
/// expanded). Empty when the instance declares no route.
fn route_pairs<'a>(
    tags: impl IntoIterator<Item = &'a Tag>,
    prefix: &TagPrefix,
) -> BTreeSet<(String, String)> {
    tags.into_iter()
        .filter(|t| prefix.is_route_tag(t.as_str()))
        .filter_map(|t| prefix.strip(t.as_str()))
        .filter_map(|rest| rest.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// Refuses a route tag without `=<value>`.
fn check_values<'a>(
    tags: impl IntoIterator<Item = &'a Tag>,
    prefix: &TagPrefix,
) -> Result<(), TagError> {
    match tags.into_iter().find(|t| {
        prefix
            .strip(t.as_str())
            .is_some_and(|rest| !rest.contains('=') && rest != WEIGHT_KEY)
    }) {
        Some(bare) => Err(TagError::NoValue(bare.as_str().to_owned())),
        None => Ok(()),
    }
}

/// Turns route pairs into DFP query parameters for `service`.
fn pairs_to_params(
    service: &ServiceName,
    pairs: &BTreeSet<(String, String)>,
    prefix: &TagPrefix,
) -> Result<BTreeMap<String, String>, TagError> {
    let mut params: BTreeMap<String, String> = BTreeMap::new();
    for (key, value) in pairs {
        let tag = format!("{prefix}.{key}={value}");
        let param = TAG_ALIASES
            .iter()
            .find(|(short, _)| short == key)
            .map_or(key.as_str(), |(_, long)| long);
        if RESERVED.contains(&param) {
            return Err(TagError::Reserved {
                tag,
                key: param.to_owned(),
            });
        }
        // Several tags of one parameter make a comma list, as DFP's lists are written (and as
        // Registrator's `SERVICE_TAGS`, itself split on commas, needs).
        params
            .entry(param.to_owned())
            .and_modify(|v| {
                v.push(',');
                v.push_str(value);
            })
            .or_insert_with(|| value.clone());
    }
    params.insert("serviceName".to_owned(), service.as_str().to_owned());
    Ok(params)
}

/// What the tags of one service's instances declare.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceTagIntent {
    /// The intent, built by the API's parser.
    pub intent: ServiceIntent,
    /// Instances disagreed; the most common set (ties: the smallest) was taken.
    pub conflicting: bool,
}

/// The intent the instances of Consul service `service` declare in their tags; `Ok(None)`
/// when none of them declares a route.
pub fn service_tag_intent(
    service: &ServiceName,
    instances: &[Instance],
    prefix: &TagPrefix,
) -> Result<Option<ServiceTagIntent>, TagError> {
    // Count each distinct declaration; a tag without a value refuses the service.
    let mut counts: BTreeMap<BTreeSet<(String, String)>, usize> = BTreeMap::new();
    for instance in instances {
        check_values(&instance.tags, prefix)?;
        let pairs = route_pairs(&instance.tags, prefix);
        if !pairs.is_empty() {
            *counts.entry(pairs).or_default() += 1;
        }
    }
    // Most instances first; among equals the BTreeMap order (smallest set) wins.
    let Some((chosen, _)) = counts
        .iter()
        .max_by(|(a, na), (b, nb)| na.cmp(nb).then_with(|| b.cmp(a)))
    else {
        return Ok(None);
    };
    let params = pairs_to_params(service, chosen, prefix)?;
    let intent = ServiceIntent::from_params(&params)?;
    Ok(Some(ServiceTagIntent {
        intent,
        conflicting: counts.len() > 1,
    }))
}

/// Tag intents of every service of a snapshot.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TagIntents {
    /// Valid intents by Consul service name.
    pub intents: BTreeMap<ServiceName, ServiceIntent>,
    /// Services whose tags were refused, with the reason.
    pub rejected: BTreeMap<ServiceName, String>,
    /// Services whose instances disagreed.
    pub conflicting: BTreeSet<ServiceName>,
}

/// The tag intents of every service in `catalog`. One refused service leaves the others as
/// they are.
pub fn tag_intents(catalog: &CatalogSnapshot, prefix: &TagPrefix) -> TagIntents {
    let mut out = TagIntents::default();
    for (name, instances) in &catalog.services {
        match service_tag_intent(name, instances, prefix) {
            Ok(None) => {}
            Ok(Some(found)) => {
                if found.conflicting {
                    out.conflicting.insert(name.clone());
                }
                out.intents.insert(name.clone(), found.intent);
            }
            Err(error) => {
                out.rejected.insert(name.clone(), error.to_string());
            }
        }
    }
    out
}

/// API intents plus the tag intents no API intent covers: a tag intent of Consul service `S` is
/// dropped when an API intent is named `S` or routes the Consul service `S`. Returns the merged
/// intents and the names that came from tags.
pub fn merge_intents(
    api: &BTreeMap<ServiceName, ServiceIntent>,
    tags: &BTreeMap<ServiceName, ServiceIntent>,
) -> (BTreeMap<ServiceName, ServiceIntent>, BTreeSet<ServiceName>) {
    let routed: BTreeSet<&ServiceName> = api.values().map(|i| &i.catalog_service).collect();
    let mut merged = api.clone();
    let mut from_tags = BTreeSet::new();
    for (name, intent) in tags {
        if api.contains_key(name) || routed.contains(name) {
            continue;
        }
        merged.insert(name.clone(), intent.clone());
        from_tags.insert(name.clone());
    }
    (merged, from_tags)
}

/// Where an instance's weight came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightSource {
    /// The meta key.
    Meta,
    /// The `<prefix>.weight` tag.
    Tag,
    /// Consul's `Weights`.
    Consul,
}

/// An instance's weight override and the values that were ignored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceWeight {
    /// The weight from meta or tag, `None` to keep Consul's `Weights`.
    pub weight: Option<u16>,
    /// Which source decided.
    pub source: WeightSource,
    /// Invalid values that were ignored, each described for a log line.
    pub ignored: Vec<String>,
}

fn parse_weight(value: &str) -> Option<u16> {
    if value.is_empty() || value.len() > 3 || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    value.parse::<u16>().ok().filter(|w| *w <= MAX_WEIGHT)
}

/// The weight an instance asks for: meta > tag > Consul's `Weights`.
pub fn instance_weight(instance: &Instance, prefix: &TagPrefix) -> InstanceWeight {
    let mut ignored = Vec::new();
    let meta_key = prefix.weight_meta_key();
    if let Some(value) = MetaKey::new(meta_key.as_str())
        .ok()
        .and_then(|k| instance.meta.get(&k))
    {
        match parse_weight(value.as_str()) {
            Some(w) => {
                return InstanceWeight {
                    weight: Some(w),
                    source: WeightSource::Meta,
                    ignored,
                };
            }
            None => ignored.push(format!(
                "meta {meta_key}={:?} is not a weight (an integer 0 to {MAX_WEIGHT})",
                value.as_str()
            )),
        }
    }
    let tag_values: BTreeSet<&str> = instance
        .tags
        .iter()
        .filter_map(|t| prefix.strip(t.as_str()))
        .filter_map(|rest| rest.strip_prefix(WEIGHT_KEY)?.strip_prefix('='))
        .collect();
    let valid: BTreeSet<u16> = tag_values.iter().filter_map(|v| parse_weight(v)).collect();
    for v in tag_values.iter().filter(|v| parse_weight(v).is_none()) {
        ignored.push(format!(
            "tag {prefix}.{WEIGHT_KEY}={v:?} is not a weight (an integer 0 to {MAX_WEIGHT})"
        ));
    }
    match valid.len() {
        1 => {
            return InstanceWeight {
                weight: valid.first().copied(),
                source: WeightSource::Tag,
                ignored,
            };
        }
        0 => {}
        _ => ignored.push(format!(
            "tags {prefix}.{WEIGHT_KEY} give several weights {valid:?}"
        )),
    }
    InstanceWeight {
        weight: None,
        source: WeightSource::Consul,
        ignored,
    }
}

/// Applies every instance's meta or tag weight to its `Weights` (both passing and warning).
/// Returns the ignored values, one line each, naming the service and instance.
pub fn apply_weights(catalog: &mut CatalogSnapshot, prefix: &TagPrefix) -> Vec<String> {
    let mut problems = Vec::new();
    for (name, instances) in catalog.services.iter_mut() {
        for instance in instances.iter_mut() {
            let found = instance_weight(instance, prefix);
            for p in found.ignored {
                problems.push(format!("service {name} instance {}: {p}", instance.id));
            }
            if let Some(w) = found.weight {
                instance.weights = Weights {
                    passing: u32::from(w),
                    warning: u32::from(w),
                };
            }
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Health, InstanceId, MetaValue, NodeName, PathType};

    fn svc(s: &str) -> ServiceName {
        ServiceName::new(s).unwrap()
    }

    fn inst(id: &str, tags: &[&str], meta: &[(&str, &str)]) -> Instance {
        Instance {
            id: InstanceId::new(id).unwrap(),
            node: NodeName::new("n1").unwrap(),
            address: "10.0.0.1".parse().unwrap(),
            port: 80,
            tags: tags.iter().map(|t| Tag::new(*t).unwrap()).collect(),
            meta: meta
                .iter()
                .map(|(k, v)| (MetaKey::new(*k).unwrap(), MetaValue::new(*v).unwrap()))
                .collect(),
            health: Health::Passing,
            weights: Weights {
                passing: 5,
                warning: 2,
            },
        }
    }

    fn p() -> TagPrefix {
        TagPrefix::default()
    }

    fn intent_of(name: &str, instances: &[Instance]) -> Result<Option<ServiceIntent>, TagError> {
        service_tag_intent(&svc(name), instances, &p()).map(|o| o.map(|t| t.intent))
    }

    #[test]
    fn prefixes() {
        for ok in ["flow-proxy", "edge", "a.b", "x_1-y"] {
            assert!(TagPrefix::new(ok).is_ok(), "{ok}");
        }
        for bad in ["", ".a", "a.", "a b", "a=b", "a/b", "-a", &"x".repeat(65)] {
            assert!(TagPrefix::new(bad).is_err(), "{bad:?}");
        }
        assert_eq!(p().weight_meta_key(), "flow_proxy_weight");
        assert_eq!(
            TagPrefix::new("edge.v2").unwrap().weight_meta_key(),
            "edge_v2_weight"
        );
    }

    #[test]
    fn aliases_and_verbatim_parameters() {
        let i = intent_of(
            "go-demo",
            &[inst(
                "a",
                &[
                    "flow-proxy.path=/demo,/api",
                    "flow-proxy.domain=Example.com",
                    "flow-proxy.pathType=path_reg",
                    "flow-proxy.skipCheck=true",
                    "flow-proxy.weight=3",
                    "other",
                    "flow-proxyish.path=/x",
                ],
                &[],
            )],
        )
        .unwrap()
        .unwrap();
        assert_eq!(i.name.as_str(), "go-demo");
        assert_eq!(i.catalog_service.as_str(), "go-demo");
        let paths: Vec<&str> = i.paths.iter().map(|p| p.as_str()).collect();
        assert_eq!(paths, ["/api", "/demo"]);
        assert_eq!(i.domains[0].to_string(), "example.com");
        assert_eq!(i.path_type, PathType::PathReg);
        assert!(i.skip_check);

        let verbatim = intent_of("s", &[inst("a", &["flow-proxy.servicePath=/v"], &[])])
            .unwrap()
            .unwrap();
        assert_eq!(verbatim.paths[0].as_str(), "/v");
    }

    #[test]
    fn no_route_tags_means_no_intent() {
        assert_eq!(intent_of("s", &[]).unwrap(), None);
        assert_eq!(
            intent_of("s", &[inst("a", &["flow-proxy.weight=4", "x=y"], &[])]).unwrap(),
            None
        );
        // Only the path makes a route: a domain alone is the API's missing-parameter error.
        let err = intent_of("s", &[inst("a", &["flow-proxy.domain=a.com"], &[])]).unwrap_err();
        assert_eq!(err, TagError::Intent(IntentError::Mandatory));
    }

    #[test]
    fn bad_values_are_refused_with_the_api_message() {
        let err = intent_of(
            "s",
            &[inst(
                "a",
                &["flow-proxy.path=/a", "flow-proxy.pathType=hdr_dom"],
                &[],
            )],
        )
        .unwrap_err();
        assert!(err.to_string().starts_with("invalid pathType"), "{err}");
        let err = intent_of(
            "s",
            &[inst(
                "a",
                &["flow-proxy.path=/a", "flow-proxy.domain=a..b"],
                &[],
            )],
        )
        .unwrap_err();
        assert!(
            err.to_string().starts_with("invalid serviceDomain"),
            "{err}"
        );
        for (tag, key) in [
            ("flow-proxy.serviceName=x", "serviceName"),
            ("flow-proxy.serviceColor=blue", "serviceColor"),
            ("flow-proxy.consulTemplatePath=/t", "consulTemplatePath"),
        ] {
            let err = intent_of("s", &[inst("a", &["flow-proxy.path=/a", tag], &[])]).unwrap_err();
            assert!(
                matches!(&err, TagError::Reserved { key: k, .. } if k == key),
                "{err}"
            );
        }
        let err = intent_of("s", &[inst("a", &["flow-proxy.path"], &[])]).unwrap_err();
        assert_eq!(err, TagError::NoValue("flow-proxy.path".into()));
        // A parameter given by several tags is a comma list; a single-valued one is then
        // refused by the API's parser.
        let i = intent_of(
            "s",
            &[inst(
                "a",
                &[
                    "flow-proxy.path=/b",
                    "flow-proxy.servicePath=/c",
                    "flow-proxy.path=/a",
                ],
                &[],
            )],
        )
        .unwrap()
        .unwrap();
        let paths: Vec<&str> = i.paths.iter().map(|p| p.as_str()).collect();
        assert_eq!(paths, ["/a", "/b", "/c"]);
        let err = intent_of(
            "s",
            &[inst(
                "a",
                &[
                    "flow-proxy.path=/a",
                    "flow-proxy.pathType=path",
                    "flow-proxy.pathType=path_beg",
                ],
                &[],
            )],
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("invalid pathType \"path,path_beg\""),
            "{err}"
        );
    }

    #[test]
    fn one_bad_service_leaves_the_others() {
        let mut catalog = CatalogSnapshot::new();
        catalog.set_service(svc("good"), vec![inst("a", &["flow-proxy.path=/g"], &[])]);
        catalog.set_service(
            svc("bad"),
            vec![inst(
                "a",
                &["flow-proxy.path=/b", "flow-proxy.pathType=x"],
                &[],
            )],
        );
        catalog.set_service(svc("plain"), vec![inst("a", &[], &[])]);
        let found = tag_intents(&catalog, &p());
        assert_eq!(found.intents.keys().collect::<Vec<_>>(), [&svc("good")]);
        assert_eq!(found.rejected.keys().collect::<Vec<_>>(), [&svc("bad")]);
        assert!(found.conflicting.is_empty());
    }

    #[test]
    fn conflicts_pick_the_majority_then_the_smallest() {
        let a = inst("a", &["flow-proxy.path=/b"], &[]);
        let b = inst("b", &["flow-proxy.path=/a"], &[]);
        let c = inst("c", &["flow-proxy.path=/b"], &[]);
        let plain = inst("d", &[], &[]);
        let pick = |list: &[Instance]| {
            let found = service_tag_intent(&svc("s"), list, &p()).unwrap().unwrap();
            (found.intent.paths[0].as_str().to_owned(), found.conflicting)
        };
        assert_eq!(
            pick(&[a.clone(), b.clone(), c.clone()]),
            ("/b".into(), true)
        );
        assert_eq!(pick(&[a.clone(), b.clone()]), ("/a".into(), true));
        assert_eq!(pick(&[b.clone(), a.clone()]), ("/a".into(), true));
        // Instances without route tags do not vote.
        assert_eq!(
            pick(&[plain.clone(), a.clone(), plain]),
            ("/b".into(), false)
        );
        // A weight tag is not part of the route: equal routes do not conflict.
        let w1 = inst("w1", &["flow-proxy.path=/w", "flow-proxy.weight=1"], &[]);
        let w3 = inst("w3", &["flow-proxy.path=/w", "flow-proxy.weight=3"], &[]);
        assert_eq!(pick(&[w1, w3]), ("/w".into(), false));
    }

    #[test]
    fn another_prefix_ignores_these_tags() {
        let edge = TagPrefix::new("edge").unwrap();
        let list = [inst(
            "a",
            &["flow-proxy.path=/x", "flow-proxy.weight=9"],
            &[],
        )];
        assert_eq!(service_tag_intent(&svc("s"), &list, &edge).unwrap(), None);
        assert_eq!(instance_weight(&list[0], &edge).weight, None);
        let mine = [inst("a", &["edge.path=/e", "flow-proxy.path=/x"], &[])];
        let i = service_tag_intent(&svc("s"), &mine, &edge)
            .unwrap()
            .unwrap()
            .intent;
        assert_eq!(i.paths[0].as_str(), "/e");
    }

    #[test]
    fn api_intents_win() {
        let tag = |name: &str, path: &str| {
            intent_of(
                name,
                &[inst("a", &[&format!("flow-proxy.path={path}")], &[])],
            )
            .unwrap()
            .unwrap()
        };
        let api_intent = |pairs: &[(&str, &str)]| {
            let map = pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect();
            ServiceIntent::from_params(&map).unwrap()
        };
        let api: BTreeMap<_, _> = [
            api_intent(&[("serviceName", "a"), ("servicePath", "/api-a")]),
            api_intent(&[
                ("serviceName", "b"),
                ("servicePath", "/api-b"),
                ("serviceColor", "blue"),
            ]),
        ]
        .into_iter()
        .map(|i| (i.name.clone(), i))
        .collect();
        let tags: BTreeMap<_, _> = [tag("a", "/tag-a"), tag("b-blue", "/x"), tag("c", "/c")]
            .into_iter()
            .map(|i| (i.name.clone(), i))
            .collect();
        let (merged, from_tags) = merge_intents(&api, &tags);
        assert_eq!(merged[&svc("a")].paths[0].as_str(), "/api-a");
        assert!(!merged.contains_key(&svc("b-blue")));
        assert_eq!(merged[&svc("c")].paths[0].as_str(), "/c");
        assert_eq!(from_tags.into_iter().collect::<Vec<_>>(), [svc("c")]);
    }

    #[test]
    fn weight_precedence_meta_then_tag_then_consul() {
        let both = inst(
            "a",
            &["flow-proxy.weight=10"],
            &[("flow_proxy_weight", "20")],
        );
        let w = instance_weight(&both, &p());
        assert_eq!((w.weight, w.source), (Some(20), WeightSource::Meta));
        let tag = inst("a", &["flow-proxy.weight=10"], &[]);
        let w = instance_weight(&tag, &p());
        assert_eq!((w.weight, w.source), (Some(10), WeightSource::Tag));
        let none = inst("a", &[], &[]);
        let w = instance_weight(&none, &p());
        assert_eq!((w.weight, w.source), (None, WeightSource::Consul));
        for edge in ["0", "256"] {
            let i = inst("a", &[], &[("flow_proxy_weight", edge)]);
            assert!(instance_weight(&i, &p()).weight.is_some(), "{edge}");
        }
    }

    #[test]
    fn invalid_weights_are_ignored_and_reported() {
        for bad in ["257", "-1", "1.5", "ten", "", "0010"] {
            let i = inst("a", &["flow-proxy.weight=7"], &[("flow_proxy_weight", bad)]);
            let w = instance_weight(&i, &p());
            assert_eq!(
                (w.weight, w.source),
                (Some(7), WeightSource::Tag),
                "{bad:?}"
            );
            assert_eq!(w.ignored.len(), 1, "{bad:?}");
        }
        let i = inst("a", &["flow-proxy.weight=999"], &[]);
        let w = instance_weight(&i, &p());
        assert_eq!((w.weight, w.source), (None, WeightSource::Consul));
        assert_eq!(w.ignored.len(), 1);
        let i = inst("a", &["flow-proxy.weight=1", "flow-proxy.weight=2"], &[]);
        let w = instance_weight(&i, &p());
        assert_eq!(w.weight, None);
        assert_eq!(w.ignored.len(), 1);
    }

    #[test]
    fn apply_weights_sets_passing_and_warning() {
        let mut catalog = CatalogSnapshot::new();
        catalog.set_service(
            svc("s"),
            vec![
                inst("a", &["flow-proxy.weight=3"], &[]),
                inst("b", &[], &[]),
                inst("c", &[], &[("flow_proxy_weight", "x")]),
            ],
        );
        let problems = apply_weights(&mut catalog, &p());
        let got: Vec<(u32, u32)> = catalog.services[&svc("s")]
            .iter()
            .map(|i| (i.weights.passing, i.weights.warning))
            .collect();
        assert_eq!(got, [(3, 3), (5, 2), (5, 2)]);
        assert_eq!(problems.len(), 1);
        assert!(problems[0].contains("instance c"), "{problems:?}");
    }
}
