//! Golden files of rendered configurations. Each golden file must also pass `haproxy -c`.
//!
//! `UPDATE_GOLDEN=1 cargo test --test render_golden` rewrites the files.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use flow_proxy::domain::{
    CatalogSnapshot, Health, Instance, InstanceId, NodeName, ServiceIntent, ServiceName, Weights,
};
use flow_proxy::haproxy::{HaproxyPaths, SoftStopSettings, validate};
use flow_proxy::plan::{Plan, PlanSettings, SlotTable, plan};
use flow_proxy::render::{CustomSnippets, LogTarget, RenderSettings, render_with_custom};

mod support;
use support::haproxy_available;

fn intent(pairs: &[(&str, &str)]) -> ServiceIntent {
    let map = pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    ServiceIntent::from_params(&map).unwrap()
}

fn intents(list: Vec<ServiceIntent>) -> BTreeMap<ServiceName, ServiceIntent> {
    list.into_iter().map(|i| (i.name.clone(), i)).collect()
}

fn svc(s: &str) -> ServiceName {
    ServiceName::new(s).unwrap()
}

/// `n` instances the way Registrator registers them: `<host>:go-demo_app_<i>:8080`.
fn instances(service: &str, n: u8, health: Health) -> Vec<Instance> {
    (1..=n)
        .map(|i| Instance {
            id: InstanceId::new(format!("node{i}:{service}_app_{i}:8080")).unwrap(),
            node: NodeName::new(format!("node{i}")).unwrap(),
            address: format!("192.168.99.{}", 100 + i).parse().unwrap(),
            port: 32768 + u16::from(i),
            tags: BTreeSet::new(),
            meta: BTreeMap::new(),
            health,
            weights: Weights::default(),
        })
        .collect()
}

fn catalog(services: &[(&str, Vec<Instance>)]) -> CatalogSnapshot {
    let mut c = CatalogSnapshot::new();
    for (name, list) in services {
        c.set_service(svc(name), list.clone());
    }
    c
}

fn settings() -> RenderSettings {
    let paths = HaproxyPaths::new("/var/lib/flow-proxy").unwrap();
    RenderSettings {
        global_lines: paths.global_lines(&SoftStopSettings::default()),
        defaults_lines: paths.defaults_lines(),
        log: Some(LogTarget::Udp("127.0.0.1:5514".parse().unwrap())),
        health: Some("127.0.0.1:8081".parse().unwrap()),
        ..RenderSettings::default()
    }
}

fn one(ints: BTreeMap<ServiceName, ServiceIntent>, cat: CatalogSnapshot) -> Plan {
    plan(&ints, &cat, &SlotTable::default(), &PlanSettings::default())
}

fn go_demo() -> ServiceIntent {
    intent(&[("serviceName", "go-demo"), ("servicePath", "/demo")])
}

/// DFP's test fixtures `go-demo-fe.tmpl` / `go-demo-be.tmpl` (tab-indented) after template
/// rendering, next to a built-in service.
fn custom_case() -> (Plan, BTreeMap<ServiceName, CustomSnippets>) {
    let ints = intents(vec![
        intent(&[
            ("serviceName", "go-demo"),
            (
                "consulTemplateFePath",
                "/consul_templates/tmpl/go-demo-fe.tmpl",
            ),
            (
                "consulTemplateBePath",
                "/consul_templates/tmpl/go-demo-be.tmpl",
            ),
        ]),
        intent(&[("serviceName", "web"), ("servicePath", "/")]),
    ]);
    let p = one(
        ints,
        catalog(&[
            ("go-demo", instances("go-demo", 2, Health::Passing)),
            ("web", instances("web", 1, Health::Passing)),
        ]),
    );
    let snippets = CustomSnippets {
        frontend: "\tacl url_go-demo path_beg /demo\n\tuse_backend go-demo-be if url_go-demo\n".into(),
        sections: "backend go-demo-be\n\t\n\tserver node1_0_32769 192.168.99.101:32769 check\n\t\n\tserver node2_1_32770 192.168.99.102:32770 check\n\t\n".into(),
    };
    (p, [(svc("go-demo"), snippets)].into())
}

fn cases() -> Vec<(&'static str, Plan, RenderSettings)> {
    let s = PlanSettings::default();
    let mut out = vec![
        (
            "no_services",
            one(BTreeMap::new(), catalog(&[])),
            settings(),
        ),
        (
            "no_services_minimal",
            one(BTreeMap::new(), catalog(&[])),
            RenderSettings {
                https_port: None,
                http_port: 8080,
                bind_address: "::".parse().unwrap(),
                ..RenderSettings::default()
            },
        ),
        (
            "go_demo_1",
            one(
                intents(vec![go_demo()]),
                catalog(&[("go-demo", instances("go-demo", 1, Health::Passing))]),
            ),
            settings(),
        ),
        (
            "go_demo_3",
            one(
                intents(vec![go_demo()]),
                catalog(&[("go-demo", instances("go-demo", 3, Health::Passing))]),
            ),
            settings(),
        ),
    ];
    let mut mixed = instances("go-demo", 4, Health::Passing);
    mixed[1].health = Health::Warning;
    mixed[2].health = Health::Critical;
    mixed[3].health = Health::Maintenance;
    mixed[0].weights.passing = 10;
    out.push((
        "health_filtered",
        one(intents(vec![go_demo()]), catalog(&[("go-demo", mixed)])),
        settings(),
    ));
    out.push((
        "multiple_paths",
        one(
            intents(vec![
                intent(&[
                    ("serviceName", "go-demo"),
                    ("servicePath", "/demo/hello,/demo/person"),
                ]),
                intent(&[("serviceName", "root"), ("servicePath", "/")]),
                intent(&[("serviceName", "api"), ("servicePath", "/api,/api/v2")]),
            ]),
            catalog(&[
                ("go-demo", instances("go-demo", 2, Health::Passing)),
                ("root", instances("root", 1, Health::Passing)),
                ("api", instances("api", 1, Health::Passing)),
            ]),
        ),
        settings(),
    ));
    out.push((
        "domains",
        one(
            intents(vec![
                intent(&[
                    ("serviceName", "go-demo"),
                    ("servicePath", "/demo"),
                    ("serviceDomain", "my-domain.com"),
                ]),
                intent(&[
                    ("serviceName", "shop"),
                    ("servicePath", "/"),
                    ("serviceDomain", "Shop.example.com:8080,*.shop.example.com"),
                ]),
                intent(&[
                    ("serviceName", "wild"),
                    ("servicePath", "/"),
                    ("serviceDomain", "*.example.org"),
                ]),
                intent(&[("serviceName", "any-host"), ("servicePath", "/demo")]),
            ]),
            catalog(&[
                ("go-demo", instances("go-demo", 1, Health::Passing)),
                ("shop", instances("shop", 1, Health::Passing)),
                ("wild", instances("wild", 1, Health::Passing)),
                ("any-host", instances("any-host", 1, Health::Passing)),
            ]),
        ),
        settings(),
    ));
    out.push((
        "colors",
        one(
            intents(vec![intent(&[
                ("serviceName", "go-demo"),
                ("servicePath", "/demo"),
                ("serviceColor", "blue"),
            ])]),
            catalog(&[
                ("go-demo", instances("go-demo", 3, Health::Passing)),
                (
                    "go-demo-blue",
                    instances("go-demo-blue", 2, Health::Passing),
                ),
            ]),
        ),
        settings(),
    ));
    out.push((
        "path_reg",
        one(
            intents(vec![intent(&[
                ("serviceName", "go-demo"),
                ("servicePath", r"^/demo/v[0-9]+/.*$,^/x\.y/${HOME}"),
                ("pathType", "path_reg"),
            ])]),
            catalog(&[("go-demo", instances("go-demo", 1, Health::Passing))]),
        ),
        settings(),
    ));
    out.push((
        "skip_check",
        one(
            intents(vec![intent(&[
                ("serviceName", "go-demo"),
                ("servicePath", "/demo"),
                ("skipCheck", "true"),
            ])]),
            catalog(&[("go-demo", instances("go-demo", 2, Health::Passing))]),
        ),
        settings(),
    ));
    let ints = intents(vec![go_demo()]);
    let before = plan(
        &ints,
        &catalog(&[("go-demo", instances("go-demo", 3, Health::Passing))]),
        &SlotTable::default(),
        &s,
    );
    let gone = plan(&ints, &catalog(&[("go-demo", vec![])]), &before.slots, &s);
    out.push(("all_instances_gone", gone, settings()));
    let before = plan(
        &ints,
        &catalog(&[("go-demo", instances("go-demo", 4, Health::Passing))]),
        &SlotTable::default(),
        &s,
    );
    let grown = plan(
        &ints,
        &catalog(&[("go-demo", instances("go-demo", 5, Health::Passing))]),
        &before.slots,
        &s,
    );
    out.push(("slot_growth", grown, settings()));
    out.push(routing_case());
    out
}

/// Every per-service routing parameter, plus the global `USERS`.
fn routing_case() -> (&'static str, Plan, RenderSettings) {
    let ints = intents(vec![
        intent(&[
            ("serviceName", "api"),
            ("servicePath", "/api/v1"),
            ("reqPathSearchReplace", "^/api/v1/(.*),/\\1:^/x$,/y"),
            ("reqPathSearch", "^/old/"),
            ("reqPathReplace", "/new/"),
            ("users", "alice:s3cret$,bob:pw"),
            ("sessionType", "sticky-server"),
            ("addReqHeader", "X-Added one two,X-Other v"),
            ("setReqHeader", "X-Set yes"),
            ("delReqHeader", "X-Gone"),
            ("addResHeader", "X-Res-Added a"),
            ("setResHeader", "Cache-Control no-cache"),
            ("delResHeader", "Server"),
            ("timeoutServer", "60"),
            ("timeoutTunnel", "3600"),
        ]),
        intent(&[
            ("serviceName", "hashed"),
            ("servicePath", "/hashed"),
            (
                "users",
                "carol:$6$salt$IxDD3jeSOb5eB1CX5LBsqZFVkJdido3OUILO5Ifz5iwMuTS4XMS130MTSuDDl3aCI6WouIL9AjRbLCelDCy.g.",
            ),
            ("usersPassEncrypted", "true"),
        ]),
        intent(&[
            ("serviceName", "v3"),
            ("servicePath", "/"),
            ("serviceHeader", "X-Version:3,name:Viktor"),
            ("serviceDomain", "new.example.com"),
            ("redirectFromDomain", "old.example.com,*.older.example.com"),
        ]),
        intent(&[
            ("serviceName", "fallback"),
            ("servicePath", "/fallback"),
            ("isDefaultBackend", "true"),
        ]),
        intent(&[
            ("serviceName", "db"),
            ("reqMode", "tcp"),
            ("srcPort", "5432"),
            ("timeoutServer", "600"),
        ]),
        intent(&[
            ("serviceName", "tls-a"),
            ("reqMode", "sni"),
            ("srcPort", "8443"),
            ("serviceDomain", "a.example.com,*.a.example.org"),
        ]),
        intent(&[
            ("serviceName", "tls-b"),
            ("reqMode", "sni"),
            ("srcPort", "8443"),
            ("serviceDomain", "b.example.com"),
        ]),
    ]);
    let names = ["api", "hashed", "v3", "fallback", "db", "tls-a", "tls-b"];
    let list: Vec<(&str, Vec<Instance>)> = names
        .iter()
        .map(|n| (*n, instances(n, 2, Health::Passing)))
        .collect();
    let mut s = settings();
    s.users = Some(flow_proxy::domain::Users::parse("USERS", "admin:admin-pw", false).unwrap());
    s.sticky_key = flow_proxy::domain::StickyKey::new("shared-secret").unwrap();
    ("routing", one(ints, catalog(&list)), s)
}

#[tokio::test]
async fn golden_files() {
    let update = std::env::var("UPDATE_GOLDEN").as_deref() == Ok("1");
    let check = haproxy_available();
    let dir = tempfile::tempdir().unwrap();
    let paths = HaproxyPaths::new(dir.path().join("hp")).unwrap();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let mut failures = Vec::new();
    let (custom_plan, snippets) = custom_case();
    let mut all: Vec<_> = cases()
        .into_iter()
        .map(|(n, p, s)| (n, p, s, BTreeMap::new()))
        .collect();
    all.push(("custom_templates", custom_plan, settings(), snippets));
    for (name, plan, settings, custom) in all {
        let text = render_with_custom(&plan, &settings, &custom)
            .unwrap()
            .into_string();
        assert!(text.ends_with('\n'), "{name}");
        let file = root.join(format!("{name}.cfg"));
        if update {
            std::fs::write(&file, &text).unwrap();
        } else {
            let want = std::fs::read_to_string(&file)
                .unwrap_or_else(|e| panic!("{}: {e} (run with UPDATE_GOLDEN=1)", file.display()));
            if want != text {
                failures.push(format!(
                    "{name}: rendered text differs from {}",
                    file.display()
                ));
            }
        }
        if check {
            let golden = std::fs::read_to_string(&file).unwrap();
            if let Err(e) = validate(&paths, &golden).await {
                failures.push(format!("{name}: haproxy -c: {e}"));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
