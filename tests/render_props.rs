//! Property tests of parsing and rendering: no value, from the API (parameters, raw query
//! strings) or from Consul (service names, instance IDs, node names, tags, meta), can add a
//! line, a section or a token to the configuration or to a custom template's output; parsing
//! and rendering (the template language included) never panic; output is deterministic and
//! ends with a newline.
//!
//! Inputs come from a small deterministic generator and from proptest strategies over an
//! alphabet rich in characters that are dangerous in `haproxy.cfg` (newlines, `#`, quotes,
//! backslashes, whitespace, `$`) plus any character.

use std::collections::{BTreeMap, BTreeSet};

use flow_proxy::domain::{
    CatalogSnapshot, Health, Instance, InstanceId, NodeName, ServiceIntent, ServiceName, Weights,
};
use flow_proxy::plan::{Plan, PlanSettings, SlotTable, plan};
use flow_proxy::render::{RenderSettings, render};

struct Lcg(u64);
impl Lcg {
    fn next(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

const ALPHABET: &[&str] = &[
    "\n", "\r", "#", " ", "\t", "'", "\"", "\\", "`", "$", "{", "}", ",", ":", "*", ".", "/", "a",
    "Z", "0", "-", "_", "\u{0}", "é", ";", "..", "\u{85}", "\u{2028}", "%", "[", "]",
];

fn random_value(rng: &mut Lcg, base: &str) -> String {
    let mut s = if rng.next(2) == 0 {
        base.to_owned()
    } else {
        String::new()
    };
    for _ in 0..rng.next(8) {
        let piece = ALPHABET[rng.next(ALPHABET.len() as u64) as usize];
        let at = rng.next(s.len() as u64 + 1) as usize;
        if s.is_char_boundary(at) {
            s.insert_str(at, piece);
        } else {
            s.push_str(piece);
        }
    }
    s
}

fn catalog_for(services: &[&ServiceName]) -> CatalogSnapshot {
    let mut c = CatalogSnapshot::new();
    for s in services {
        c.set_service(
            (*s).clone(),
            vec![Instance {
                id: InstanceId::new("node1:app_1:8080").unwrap(),
                node: NodeName::new("node1").unwrap(),
                address: "10.0.0.1".parse().unwrap(),
                port: 8080,
                tags: BTreeSet::new(),
                meta: BTreeMap::new(),
                health: Health::Passing,
                weights: Weights::default(),
            }],
        );
    }
    c
}

/// The number of lines the configuration of `plan` must have, from its structure alone.
fn expected_lines(plan: &Plan, empty_lines: usize) -> usize {
    let backends: usize = plan.backends.values().map(|b| 2 + b.slots.len()).sum();
    let mut host_lines = 0;
    let mut seen = BTreeSet::new();
    for r in &plan.routes {
        if let Some(h) = &r.host
            && seen.insert(r.service.clone())
        {
            host_lines += usize::from(!h.exact.is_empty()) + usize::from(!h.suffixes.is_empty());
        }
    }
    empty_lines + backends + 2 * plan.routes.len() + host_lines
}

fn check_tokens(text: &str) {
    for (n, line) in text.lines().enumerate() {
        assert!(!line.contains('\r'), "line {n}: {line:?}");
        if n > 0 {
            assert!(!line.contains('#'), "line {n}: {line:?}");
        }
        let tokens: Vec<&str> = line.split_whitespace().collect();
        match tokens.first().copied() {
            Some("acl") if tokens[1].starts_with("url_") => {
                assert_eq!(tokens.len(), 4, "{line:?}");
                let pat = tokens[3];
                assert!(pat.len() >= 3 && pat.starts_with('\'') && pat.ends_with('\''));
                assert!(
                    !pat[1..pat.len() - 1].contains(['\'', '"', '`']),
                    "{line:?}"
                );
            }
            Some("acl") => {
                assert!(tokens[1].starts_with("host_"), "{line:?}");
                assert!(tokens.len() >= 5, "{line:?}");
                for host in &tokens[5..] {
                    assert!(
                        host.chars().all(|c| c.is_ascii_lowercase()
                            || c.is_ascii_digit()
                            || matches!(c, '.' | '-' | '_')),
                        "{line:?}"
                    );
                }
            }
            Some("use_backend") => assert!(matches!(tokens.len(), 4 | 5), "{line:?}"),
            Some("backend") | Some("frontend") => assert_eq!(tokens.len(), 2, "{line:?}"),
            _ => {}
        }
    }
}

#[test]
fn no_parameter_value_adds_a_line() {
    let settings = RenderSettings::default();
    let empty = render(
        &plan(
            &BTreeMap::new(),
            &CatalogSnapshot::new(),
            &SlotTable::default(),
            &PlanSettings::default(),
        ),
        &settings,
    )
    .unwrap();
    let empty_lines = empty.as_str().lines().count();
    let base: [(&str, &str); 6] = [
        ("serviceName", "go-demo"),
        ("servicePath", "/demo"),
        ("serviceDomain", "example.com"),
        ("pathType", "path_beg"),
        ("serviceColor", "blue"),
        ("skipCheck", "false"),
    ];
    let mut rng = Lcg(42);
    let mut accepted = 0;
    let mut rejected = 0;
    for round in 0..6000 {
        let target = round % base.len();
        let mut params: BTreeMap<String, String> = base
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let value = random_value(&mut rng, base[target].1);
        params.insert(base[target].0.to_owned(), value);
        let intent = match ServiceIntent::from_params(&params) {
            Ok(i) => i,
            Err(e) => {
                let msg = e.to_string();
                assert!(!msg.contains('\n'), "error message spans lines: {msg:?}");
                rejected += 1;
                continue;
            }
        };
        accepted += 1;
        // The KV encoding round-trips through the same validation.
        let kv: BTreeMap<String, String> = intent.to_kv_pairs().into_iter().collect();
        assert_eq!(
            ServiceIntent::from_kv(intent.name.as_str(), &kv).as_ref(),
            Ok(&intent)
        );
        let name = intent.name.clone();
        let cat_name = intent.catalog_service.clone();
        let intents: BTreeMap<ServiceName, ServiceIntent> = [(name, intent)].into();
        let p = plan(
            &intents,
            &catalog_for(&[&cat_name]),
            &SlotTable::default(),
            &PlanSettings::default(),
        );
        let text = render(&p, &settings).unwrap().into_string();
        assert!(text.ends_with('\n'));
        assert_eq!(
            text.lines().count(),
            expected_lines(&p, empty_lines),
            "params {params:?}\n{text}"
        );
        check_tokens(&text);
    }
    assert!(accepted > 500 && rejected > 500, "{accepted} {rejected}");
}

#[test]
fn rendering_is_deterministic_under_permuted_inputs() {
    let names = ["a", "b-1", "c.2", "d_3", "e"];
    let mut rng = Lcg(9);
    let mut all = Vec::new();
    for (i, n) in names.iter().enumerate() {
        let mut params = BTreeMap::new();
        params.insert("serviceName".to_owned(), (*n).to_owned());
        params.insert(
            "servicePath".to_owned(),
            ["/", "/x", "/x/y", "/api,/api/v2", "/z,/"][i].to_owned(),
        );
        if i % 2 == 0 {
            params.insert("serviceDomain".to_owned(), "a.com,*.b.com".to_owned());
        }
        all.push(ServiceIntent::from_params(&params).unwrap());
    }
    let mut instances = Vec::new();
    for i in 0..6u8 {
        instances.push(Instance {
            id: InstanceId::new(format!("id{i}")).unwrap(),
            node: NodeName::new(format!("n{}", i % 3)).unwrap(),
            address: format!("10.0.0.{i}").parse().unwrap(),
            port: 8000 + u16::from(i),
            tags: BTreeSet::new(),
            meta: BTreeMap::new(),
            health: if i == 2 {
                Health::Critical
            } else {
                Health::Passing
            },
            weights: Weights::default(),
        });
    }
    let build = |order: &[usize], inst: &[Instance]| {
        let mut intents = BTreeMap::new();
        let mut cat = CatalogSnapshot::new();
        for &i in order {
            let x: &ServiceIntent = &all[i];
            intents.insert(x.name.clone(), x.clone());
            cat.set_service(x.catalog_service.clone(), inst.to_vec());
        }
        let p = plan(
            &intents,
            &cat,
            &SlotTable::default(),
            &PlanSettings::default(),
        );
        render(&p, &RenderSettings::default())
            .unwrap()
            .into_string()
    };
    let reference = build(&[0, 1, 2, 3, 4], &instances);
    for _ in 0..50 {
        let mut order: Vec<usize> = (0..5).collect();
        let mut inst = instances.clone();
        for i in (1..order.len()).rev() {
            order.swap(i, rng.next(i as u64 + 1) as usize);
        }
        for i in (1..inst.len()).rev() {
            inst.swap(i, rng.next(i as u64 + 1) as usize);
        }
        assert_eq!(build(&order, &inst), reference);
    }
    assert!(reference.ends_with('\n'));
}

// ---------------------------------------------------------------------------------------------
// proptest: Consul-side values, raw API query strings, the template language and the
// statistics credentials.

use flow_proxy::ctmpl::{ServiceEntry, StaticSource, Template};
use flow_proxy::domain::{MetaKey, MetaValue, StatsPage, Tag};
use proptest::prelude::*;

/// Strings rich in what is dangerous in `haproxy.cfg`, plus any character at all.
fn dangerous() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![
            prop::sample::select(ALPHABET.to_vec()).prop_map(str::to_owned),
            any::<char>().prop_map(|c| c.to_string()),
            "[a-z0-9.:_-]{1,6}",
        ],
        0..8,
    )
    .prop_map(|v| v.concat())
}

/// What no accepted value may hold: it would end a token, a line or start a comment.
fn breaks_a_token(s: &str) -> bool {
    s.chars()
        .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '#' | '"' | '\'' | '`' | '\\'))
}

/// Prints every field of every instance on one line each, as a custom template would.
const ALL_FIELDS: &str = "{{range service \"app\" \"any\"}}server {{.Node}} {{.Address}}:{{.Port}} id={{.ID}} tags={{join \",\" .Tags}} meta={{range $k, $v := .ServiceMeta}}{{$k}}={{$v}};{{end}}\n{{end}}";

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Service names, instance IDs, node names, tags and meta read from Consul: a value the
    /// validated types accept cannot break a token, and neither the generated configuration nor
    /// a custom template printing every field gains a line or a token.
    #[test]
    fn consul_values_cannot_add_lines_or_tokens(
        name in dangerous(),
        id in dangerous(),
        node in dangerous(),
        tags in prop::collection::vec(dangerous(), 0..4),
        meta in prop::collection::vec((dangerous(), dangerous()), 0..4),
    ) {
        let name = ServiceName::new(name.as_str()).ok();
        let id = InstanceId::new(id.as_str()).ok();
        let node = NodeName::new(node.as_str()).ok();
        let tags: BTreeSet<Tag> = tags.iter().filter_map(|t| Tag::new(t.as_str()).ok()).collect();
        let meta: BTreeMap<MetaKey, MetaValue> = meta
            .iter()
            .filter_map(|(k, v)| Some((MetaKey::new(k.as_str()).ok()?, MetaValue::new(v.as_str()).ok()?)))
            .collect();
        for accepted in name.iter().map(|n| n.as_str())
            .chain(id.iter().map(|i| i.as_str()))
            .chain(node.iter().map(|n| n.as_str()))
            .chain(tags.iter().map(|t| t.as_str()))
            .chain(meta.iter().flat_map(|(k, v)| [k.as_str(), v.as_str()]))
        {
            prop_assert!(!breaks_a_token(accepted), "accepted {accepted:?}");
        }
        let name = name.unwrap_or_else(|| ServiceName::new("app").unwrap());
        let instance = Instance {
            id: id.unwrap_or_else(|| InstanceId::new("i1").unwrap()),
            node: node.unwrap_or_else(|| NodeName::new("n1").unwrap()),
            address: "10.0.0.1".parse().unwrap(),
            port: 8080,
            tags,
            meta,
            health: Health::Passing,
            weights: Weights::default(),
        };

        // The generated configuration.
        let mut params = BTreeMap::new();
        params.insert("serviceName".to_owned(), name.as_str().to_owned());
        params.insert("servicePath".to_owned(), "/x".to_owned());
        let intent = ServiceIntent::from_params(&params).unwrap();
        let mut catalog = CatalogSnapshot::new();
        catalog.set_service(name.clone(), vec![instance.clone(), instance.clone()]);
        let settings = RenderSettings::default();
        let empty = render(
            &plan(&BTreeMap::new(), &CatalogSnapshot::new(), &SlotTable::default(), &PlanSettings::default()),
            &settings,
        ).unwrap();
        let intents: BTreeMap<ServiceName, ServiceIntent> = [(name.clone(), intent)].into();
        let p = plan(&intents, &catalog, &SlotTable::default(), &PlanSettings::default());
        let text = render(&p, &settings).unwrap().into_string();
        prop_assert_eq!(text.lines().count(), expected_lines(&p, empty.as_str().lines().count()));
        check_tokens(&text);

        // A custom template printing every field: one line per instance, fixed token count.
        let entry = ServiceEntry {
            node: instance.node.as_str().to_owned(),
            node_address: "10.0.0.9".to_owned(),
            id: instance.id.as_str().to_owned(),
            name: "app".to_owned(),
            address: instance.address.to_string(),
            port: 8080,
            tags: instance.tags.iter().map(|t| t.as_str().to_owned()).collect(),
            service_meta: instance.meta.iter().map(|(k, v)| (k.as_str().to_owned(), v.as_str().to_owned())).collect(),
            ..ServiceEntry::default()
        };
        let mut source = StaticSource::default();
        source.add_service(entry.clone());
        source.add_service(ServiceEntry { id: format!("{}-2", entry.id), ..entry });
        let out = Template::parse("all", ALL_FIELDS).unwrap().render(&source).unwrap().text;
        prop_assert_eq!(out.lines().count(), 2, "{}", out);
        for line in out.lines() {
            prop_assert_eq!(line.split_whitespace().count(), 6, "{}", line);
            prop_assert!(!line.contains(['#', '"', '\'', '`', '\\']), "{}", line);
        }
    }

    /// Raw query strings, percent-encoded or not: parsing never panics, a refusal is a one-line
    /// message, and an accepted intent renders with exactly its own lines.
    #[test]
    fn raw_api_queries_never_panic_or_add_lines(
        pairs in prop::collection::vec(
            (
                prop::sample::select(vec![
                    "serviceName", "servicePath", "serviceDomain", "pathType", "serviceColor",
                    "skipCheck", "consulTemplatePath", "unknown",
                ]),
                dangerous(),
                any::<bool>(),
            ),
            0..8,
        ),
        noise in dangerous(),
    ) {
        let mut raw = String::new();
        for (k, v, encode) in &pairs {
            let v = if *encode {
                form_urlencoded::byte_serialize(v.as_bytes()).collect::<String>()
            } else {
                v.clone()
            };
            raw.push_str(&format!("{k}={v}&"));
        }
        raw.push_str(&noise);
        let params = flow_proxy::api::parse_query(&raw);
        match ServiceIntent::from_params(&params) {
            Err(e) => prop_assert!(!e.to_string().contains('\n')),
            Ok(intent) => {
                let name = intent.name.clone();
                let cat = intent.catalog_service.clone();
                let intents: BTreeMap<ServiceName, ServiceIntent> = [(name, intent)].into();
                let p = plan(&intents, &catalog_for(&[&cat]), &SlotTable::default(), &PlanSettings::default());
                let text = render(&p, &RenderSettings::default()).unwrap().into_string();
                let empty = render(
                    &plan(&BTreeMap::new(), &CatalogSnapshot::new(), &SlotTable::default(), &PlanSettings::default()),
                    &RenderSettings::default(),
                ).unwrap();
                prop_assert_eq!(text.lines().count(), expected_lines(&p, empty.as_str().lines().count()));
                check_tokens(&text);
            }
        }
    }

    /// The template language: parsing and rendering arbitrary text never panics.
    #[test]
    fn templates_never_panic(
        pieces in prop::collection::vec(
            prop_oneof![
                prop::sample::select(vec![
                    "{{", "}}", "{{-", "-}}", "range", "end", "if", "else", "with", "$x", ":=",
                    "=", "|", "(", ")", ".", ".Node", "service", "\"app\"", "`raw`", "printf",
                    "\"%s\"", "key", "ls", "join", "index", "slice", "1", "-1", "0x10", "nil",
                    "/*", "*/", " ", "\n", "$", ",", "len", "eq", "and", "or", "not", "break",
                ]).prop_map(str::to_owned),
                dangerous(),
            ],
            0..24,
        ),
    ) {
        let source_text = pieces.concat();
        let mut source = StaticSource::default();
        source.add_service(ServiceEntry {
            node: "n1".into(),
            id: "app1".into(),
            name: "app".into(),
            port: 80,
            ..ServiceEntry::default()
        });
        if let Ok(t) = Template::parse("fuzz", &source_text) {
            let _ = t.render(&source);
        }
    }

    /// Statistics credentials that are accepted produce exactly DFP's five `defaults` lines and
    /// one `user:pass` token.
    #[test]
    fn stats_credentials_stay_one_token(user in dangerous(), pass in dangerous()) {
        if let Ok(page) = StatsPage::new(&user, &pass) {
            let lines = page.defaults_lines();
            prop_assert_eq!(lines.lines().count(), 5);
            let auth: Vec<&str> = lines.lines().nth(3).unwrap().split_whitespace().collect();
            prop_assert_eq!(auth.len(), 3);
            prop_assert_eq!(auth[2], format!("{user}:{pass}"));
            prop_assert!(!breaks_a_token(&user) && !breaks_a_token(&pass));
        }
    }
}
