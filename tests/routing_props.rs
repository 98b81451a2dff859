//! Property test of the routing parameters: whatever a parameter holds, an accepted value never
//! starts a line or a directive of its own, never opens an unbalanced quote and never writes a
//! comment; a refused one is a one-line error naming a parameter.

use std::collections::BTreeMap;

use flow_proxy::domain::{CatalogSnapshot, ServiceIntent, ServiceName};
use flow_proxy::plan::{PlanSettings, SlotTable, plan};
use flow_proxy::render::{RenderSettings, render};

/// A small deterministic generator (no dependency needed for this).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
}

const HOSTILE: [&str; 16] = [
    "\nINJECTED x",
    "'\nINJECTED x",
    "\r\nINJECTED x",
    "' INJECTED '",
    "\" INJECTED \"",
    "#",
    "\\",
    "\\n",
    "%[env(HOME)]",
    " ",
    "\t",
    "'",
    "`",
    "é",
    "\0",
    "$HOME",
];

#[test]
fn no_routing_value_adds_a_line_or_a_directive() {
    let base: [(&str, &str); 11] = [
        ("reqPathSearchReplace", r"^/api/(.*),/\1"),
        ("reqPathSearch", "^/old/"),
        ("users", "alice:pw"),
        ("addReqHeader", "X-A one two"),
        ("setResHeader", "X-B b"),
        ("delReqHeader", "X-C"),
        ("serviceHeader", "X-Version:3"),
        ("redirectFromDomain", "old.example.com"),
        ("timeoutServer", "30"),
        ("sessionType", "sticky-server"),
        ("isDefaultBackend", "true"),
    ];
    let mut rng = Lcg(7);
    let (mut accepted, mut rejected) = (0, 0);
    for round in 0..3000 {
        let (param, value) = base[round % base.len()];
        let hostile = HOSTILE[(rng.next() as usize) % HOSTILE.len()];
        let at = (rng.next() as usize) % (value.len() + 1);
        let at = (0..=at)
            .rev()
            .find(|i| value.is_char_boundary(*i))
            .unwrap_or(0);
        let mutated = format!("{}{hostile}{}", &value[..at], &value[at..]);
        let mut params: BTreeMap<String, String> = [
            ("serviceName", "svc"),
            ("servicePath", "/svc"),
            ("serviceDomain", "new.example.com"),
        ]
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
        params.insert(param.to_owned(), mutated.clone());
        if param == "reqPathSearch" {
            params.insert("reqPathReplace".to_owned(), "/new/".to_owned());
        }
        let intent = match ServiceIntent::from_params(&params) {
            Ok(i) => i,
            Err(e) => {
                let msg = e.to_string();
                assert!(!msg.contains('\n') && !msg.contains('\r'), "{msg:?}");
                assert!(msg.starts_with("invalid "), "{msg:?}");
                rejected += 1;
                continue;
            }
        };
        accepted += 1;
        let kv: BTreeMap<String, String> = intent.to_kv_pairs().into_iter().collect();
        assert_eq!(ServiceIntent::from_kv("svc", &kv).as_ref(), Ok(&intent));
        let intents: BTreeMap<ServiceName, ServiceIntent> = [(intent.name.clone(), intent)].into();
        let p = plan(
            &intents,
            &CatalogSnapshot::new(),
            &SlotTable::default(),
            &PlanSettings::default(),
        );
        let text = render(&p, &RenderSettings::default())
            .unwrap()
            .into_string();
        for (n, line) in text.lines().enumerate() {
            let first = line.split_whitespace().next().unwrap_or("");
            assert!(
                !line.contains("INJECTED") && !line.contains('\r') && !line.contains('\0'),
                "{param}={mutated:?} line {n}: {line:?}"
            );
            assert!(
                n == 0 || !line.contains('#'),
                "{param}={mutated:?}: {line:?}"
            );
            assert_eq!(
                line.matches('\'').count() % 2,
                0,
                "{param}={mutated:?}: {line:?}"
            );
            assert!(!first.starts_with('\''), "{line:?}");
        }
    }
    assert!(accepted > 100 && rejected > 1000, "{accepted} {rejected}");
}
