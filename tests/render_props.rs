//! Property tests of parsing and rendering: no parameter value can add a line, a section or a
//! token to the configuration; output is deterministic and ends with a newline.
//!
//! Inputs come from a small deterministic generator over an alphabet rich in characters that
//! are dangerous in `haproxy.cfg` (newlines, `#`, quotes, backslashes, whitespace, `$`).

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
