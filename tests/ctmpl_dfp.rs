//! The consul-template engine against Docker Flow: Proxy's templates and a fake snapshot.

use std::collections::BTreeMap;

use flow_proxy::ctmpl::{
    CatalogService, DataError, DataSource, HealthCheck, KvPair, RenderErrorKind, ServiceEntry,
    ServiceQuery, Template,
};

#[derive(Default)]
struct Snapshot {
    services: BTreeMap<String, Vec<ServiceEntry>>,
    kv: BTreeMap<String, String>,
    fail: bool,
}

impl DataSource for Snapshot {
    fn service(&self, name: &str, tag: Option<&str>) -> Result<Vec<ServiceEntry>, DataError> {
        if self.fail {
            return Err(DataError("consul unreachable".into()));
        }
        let all = self.services.get(name).cloned().unwrap_or_default();
        Ok(all
            .into_iter()
            .filter(|e| tag.is_none_or(|t| e.tags.iter().any(|x| x == t)))
            .collect())
    }
    fn services(&self) -> Result<Vec<CatalogService>, DataError> {
        Ok(self
            .services
            .iter()
            .rev()
            .map(|(name, entries)| CatalogService {
                name: name.clone(),
                tags: entries.iter().flat_map(|e| e.tags.clone()).collect(),
            })
            .collect())
    }
    fn key(&self, path: &str) -> Result<Option<String>, DataError> {
        Ok(self.kv.get(path).cloned())
    }
    fn list(&self, prefix: &str) -> Result<Vec<KvPair>, DataError> {
        Ok(self
            .kv
            .iter()
            .rev()
            .filter(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| KvPair {
                key: k.clone(),
                value: v.clone(),
                create_index: 5,
                modify_index: 7,
                ..Default::default()
            })
            .collect())
    }
}

fn check(id: &str, status: &str) -> HealthCheck {
    HealthCheck {
        check_id: id.into(),
        status: status.into(),
        ..Default::default()
    }
}

fn instance(node: &str, node_addr: &str, addr: &str, port: i64, status: &str) -> ServiceEntry {
    ServiceEntry {
        node: node.into(),
        node_address: node_addr.into(),
        address: addr.into(),
        id: format!("{node}:go-demo_app_1:8080"),
        name: "go-demo".into(),
        port,
        tags: vec![],
        checks: vec![
            check("serfHealth", "passing"),
            check("service:go-demo", status),
        ],
        ..Default::default()
    }
}

/// Three go-demo instances, listed out of order; the one on node-b is critical.
fn go_demo() -> Snapshot {
    let mut s = Snapshot::default();
    s.services.insert(
        "go-demo".into(),
        vec![
            instance("node-c", "10.0.0.3", "", 32770, "passing"),
            instance("node-a", "10.0.0.1", "192.168.99.101", 32768, "passing"),
            instance("node-b", "10.0.0.2", "192.168.99.102", 32769, "critical"),
        ],
    );
    s
}

/// The custom template of the original README, verbatim (tab-indented).
const README_TEMPLATE: &str = "frontend go-demo-fe
\tbind *:80
\tbind *:443
\toption http-server-close
\tacl url_go-demo path_beg /demo
\tuse_backend go-demo-be if url_go-demo

backend go-demo-be
\t{{ range $i, $e := service \"go-demo\" \"any\" }}
\tserver {{$e.Node}}_{{$i}}_{{$e.Port}} {{$e.Address}}:{{$e.Port}} check
\t{{end}}
";

const README_HEAD: &str = "frontend go-demo-fe
\tbind *:80
\tbind *:443
\toption http-server-close
\tacl url_go-demo path_beg /demo
\tuse_backend go-demo-be if url_go-demo

backend go-demo-be
\t";

#[test]
fn readme_template_renders_every_instance_with_any() {
    let t = Template::parse("go-demo.tmpl", README_TEMPLATE).unwrap();
    let out = t.render(&go_demo()).unwrap();
    let want = format!(
        "{README_HEAD}\
\n\tserver node-a_0_32768 192.168.99.101:32768 check\n\t\
\n\tserver node-b_1_32769 192.168.99.102:32769 check\n\t\
\n\tserver node-c_2_32770 10.0.0.3:32770 check\n\t\
\n"
    );
    assert_eq!(out.text, want);
    let want_query = ServiceQuery {
        name: "go-demo".into(),
        tag: None,
        filters: vec!["any".into()],
    };
    assert_eq!(
        out.deps.services.iter().collect::<Vec<_>>(),
        vec![&want_query]
    );
    assert!(out.deps.keys.is_empty() && out.deps.prefixes.is_empty());
    assert!(!out.deps.catalog_services);
}

#[test]
fn default_filter_keeps_only_passing_instances() {
    let src = README_TEMPLATE.replace("service \"go-demo\" \"any\"", "service \"go-demo\"");
    let out = Template::parse("t", &src)
        .unwrap()
        .render(&go_demo())
        .unwrap();
    let want = format!(
        "{README_HEAD}\
\n\tserver node-a_0_32768 192.168.99.101:32768 check\n\t\
\n\tserver node-c_1_32770 10.0.0.3:32770 check\n\t\
\n"
    );
    assert_eq!(out.text, want);
    assert_eq!(
        out.deps.services.iter().next().map(|q| q.filters.clone()),
        Some(vec!["passing".to_string()])
    );
}

#[test]
fn builtin_backend_snippet_matches_the_original_output() {
    // Section 8.4/8.6 of the contract: two instances on node `proxy`, 4-space indent, no final
    // newline.
    let be = "backend go-demo-be
    {{range $i, $e := service \"go-demo\" \"any\"}}
    server {{$e.Node}}_{{$i}}_{{$e.Port}} {{$e.Address}}:{{$e.Port}} check
    {{end}}";
    let mut s = Snapshot::default();
    let mut a = instance("proxy", "10.0.0.9", "192.168.99.101", 32768, "passing");
    a.id = "a:go-demo_app_1:8080".into();
    let mut b = instance("proxy", "10.0.0.9", "192.168.99.102", 32768, "passing");
    b.id = "b:go-demo_app_2:8080".into();
    s.services.insert("go-demo".into(), vec![b, a]);
    let out = Template::parse("go-demo-be.cfg", be)
        .unwrap()
        .render(&s)
        .unwrap();
    assert_eq!(
        out.text,
        "backend go-demo-be\n    \n    server proxy_0_32768 192.168.99.101:32768 check\n    \n    server proxy_1_32768 192.168.99.102:32768 check\n    "
    );
    // No instances: no servers.
    let out = Template::parse("go-demo-be.cfg", be)
        .unwrap()
        .render(&Snapshot::default())
        .unwrap();
    assert_eq!(out.text, "backend go-demo-be\n    ");
}

#[test]
fn split_fe_and_be_fixtures_render() {
    let fe = "\tacl url_go-demo path_beg /demo\n\tuse_backend go-demo-be if url_go-demo\n";
    let out = Template::parse("go-demo-fe.tmpl", fe)
        .unwrap()
        .render(&go_demo())
        .unwrap();
    assert_eq!(out.text, fe);
    assert!(out.deps.is_empty());

    let be = "backend go-demo-be
\t{{ range $i, $e := service \"go-demo\" \"any\" }}
\tserver {{$e.Node}}_{{$i}}_{{$e.Port}} {{$e.Address}}:{{$e.Port}} check
\t{{end}}
";
    let out = Template::parse("go-demo-be.tmpl", be)
        .unwrap()
        .render(&go_demo())
        .unwrap();
    assert_eq!(out.text.matches("server ").count(), 3);
    assert!(
        out.text
            .starts_with("backend go-demo-be\n\t\n\tserver node-a_0_32768 ")
    );
}

#[test]
fn trimmed_template_gives_clean_output() {
    let src = "backend go-demo-be
{{- range $i, $e := service \"go-demo\" }}
    server {{ $e.Node }}_{{ $i }} {{ $e.Address }}:{{ $e.Port }} check
{{- else }}
    # no instances
{{- end }}
";
    let t = Template::parse("t", src).unwrap();
    assert_eq!(
        t.render(&go_demo()).unwrap().text,
        "backend go-demo-be\n    server node-a_0 192.168.99.101:32768 check\n    server node-c_1 10.0.0.3:32770 check\n"
    );
    assert_eq!(
        t.render(&Snapshot::default()).unwrap().text,
        "backend go-demo-be\n    # no instances\n"
    );
}

#[test]
fn health_filters_follow_the_aggregated_status() {
    let mut s = Snapshot::default();
    let mk = |node: &str, checks: Vec<HealthCheck>| ServiceEntry {
        node: node.into(),
        id: "web".into(),
        name: "web".into(),
        checks,
        ..Default::default()
    };
    s.services.insert(
        "web".into(),
        vec![
            mk("a-passing", vec![check("c", "passing")]),
            mk(
                "b-warning",
                vec![check("c", "passing"), check("d", "warning")],
            ),
            mk(
                "c-critical",
                vec![check("c", "warning"), check("d", "critical")],
            ),
            mk(
                "d-maint",
                vec![
                    check("c", "passing"),
                    check("_service_maintenance:web", "critical"),
                ],
            ),
            mk("e-nochecks", vec![]),
            mk("f-nodemaint", vec![check("_node_maintenance", "critical")]),
        ],
    );
    let nodes = |q: &str| {
        let src = format!("{{{{range service {q}}}}}{{{{.Node}}}}={{{{.Status}}}} {{{{end}}}}");
        Template::parse("t", &src).unwrap().render(&s).unwrap().text
    };
    assert_eq!(nodes("\"web\""), "a-passing=passing e-nochecks=passing ");
    assert_eq!(
        nodes("\"web|passing\""),
        "a-passing=passing e-nochecks=passing "
    );
    assert_eq!(
        nodes("\"web|passing,warning\""),
        "a-passing=passing b-warning=warning e-nochecks=passing "
    );
    assert_eq!(nodes("\"web\" \"critical\""), "c-critical=critical ");
    assert_eq!(
        nodes("\"web|maintenance\""),
        "d-maint=maintenance f-nodemaint=maintenance "
    );
    assert_eq!(nodes("\"web\" \"any\"").split(' ').count(), 7);
}

#[test]
fn tags_are_sorted_and_tag_queries_filter() {
    let mut s = Snapshot::default();
    let mk = |node: &str, tags: &[&str]| ServiceEntry {
        node: node.into(),
        id: "web".into(),
        name: "web".into(),
        tags: tags.iter().map(|t| t.to_string()).collect(),
        ..Default::default()
    };
    s.services.insert(
        "web".into(),
        vec![
            mk("n1", &["prod", "eu"]),
            mk("n2", &["dev"]),
            mk("n3", &["prod"]),
        ],
    );
    let t = Template::parse(
        "t",
        "{{range service \"prod.web\"}}{{.Node}}:{{join \",\" .Tags}} {{end}}|{{range $t, $l := service \"web\" | byTag}}{{$t}}={{len $l}} {{end}}|{{if .Tags}}{{end}}",
    );
    // `.Tags` on nil dot is allowed (nil); the template parses and renders.
    let out = t.unwrap().render(&s).unwrap();
    assert_eq!(out.text, "n1:eu,prod n3:prod |dev=1 eu=1 prod=2 |");
    let queries: Vec<_> = out
        .deps
        .services
        .iter()
        .map(|q| (q.name.as_str(), q.tag.as_deref()))
        .collect();
    assert_eq!(queries, vec![("web", None), ("web", Some("prod"))]);
}

#[test]
fn services_lists_the_catalog_sorted() {
    let mut s = go_demo();
    s.services.insert(
        "web".into(),
        vec![ServiceEntry {
            tags: vec!["b".into(), "a".into(), "a".into()],
            ..Default::default()
        }],
    );
    let out = Template::parse(
        "t",
        "{{range services}}{{.Name}}[{{join \",\" .Tags}}] {{end}}",
    )
    .unwrap()
    .render(&s)
    .unwrap();
    assert_eq!(out.text, "go-demo[] web[a,b] ");
    assert!(out.deps.catalog_services);
}

fn kv() -> Snapshot {
    let mut s = Snapshot::default();
    for (k, v) in [
        ("cfg/a", "1"),
        ("cfg/b/", ""),
        ("cfg/b/c", "2"),
        ("cfg/d", "4"),
        ("docker-flow/go-demo/color", "blue"),
    ] {
        s.kv.insert(k.into(), v.into());
    }
    s
}

#[test]
fn key_functions() {
    let out = Template::parse(
        "t",
        "{{key \"docker-flow/go-demo/color\"}} {{key \"/cfg/a\"}} {{keyOrDefault \"cfg/none\" \"dflt\"}} {{keyOrDefault \"cfg/d\" \"x\"}} {{keyExists \"cfg/a\"}} {{keyExists \"cfg/zz\"}}",
    )
    .unwrap()
    .render(&kv())
    .unwrap();
    assert_eq!(out.text, "blue 1 dflt 4 true false");
    let keys: Vec<_> = out.deps.keys.iter().map(String::as_str).collect();
    assert_eq!(
        keys,
        vec![
            "cfg/a",
            "cfg/d",
            "cfg/none",
            "cfg/zz",
            "docker-flow/go-demo/color"
        ]
    );
}

#[test]
fn missing_key_is_an_error_naming_the_key_and_recording_it() {
    let err = Template::parse(
        "be.tmpl",
        "ok\n{{ keyOrDefault \"a\" \"b\" }}\n{{ key \"cfg/missing\" }}",
    )
    .unwrap()
    .render(&kv())
    .unwrap_err();
    assert_eq!(err.kind, RenderErrorKind::MissingKey("cfg/missing".into()));
    assert_eq!((err.template.as_str(), err.line), ("be.tmpl", 3));
    assert!(err.deps.keys.contains("cfg/missing") && err.deps.keys.contains("a"));
    assert!(err.to_string().contains("be.tmpl") && err.to_string().contains("line 3"));
}

#[test]
fn ls_and_tree() {
    let r = |src: &str| Template::parse("t", src).unwrap().render(&kv()).unwrap();
    let out = r("{{range ls \"cfg\"}}{{.Key}}={{.Value}};{{end}}");
    assert_eq!(out.text, "a=1;d=4;");
    assert_eq!(out.deps.prefixes.iter().collect::<Vec<_>>(), vec!["cfg"]);
    assert_eq!(r("{{range ls \"cfg/\"}}{{.Key}};{{end}}").text, "a;d;");
    assert_eq!(
        r("{{range tree \"cfg\"}}{{.Key}}={{.Value}}@{{.Path}} {{end}}").text,
        "a=1@cfg/a b/c=2@cfg/b/c d=4@cfg/d "
    );
    assert_eq!(
        r("{{range tree \"/cfg/b\"}}{{.Key}} {{.CreateIndex}} {{.ModifyIndex}} {{.Flags}}{{end}}")
            .text,
        "c 5 7 0"
    );
    assert_eq!(
        r("{{range $top, $pairs := tree \"cfg\" | byKey}}{{$top}}:{{range $k, $p := $pairs}}{{$k}}={{$p.Value}}{{end}} {{end}}").text,
        "b:c=2 "
    );
    assert_eq!(
        r("{{range ls \"nothing\"}}x{{else}}empty{{end}}").text,
        "empty"
    );
    let err = Template::parse("t", "{{ safeLs \"nothing\" }}")
        .unwrap()
        .render(&kv())
        .unwrap_err();
    assert_eq!(err.kind, RenderErrorKind::EmptyPrefix("nothing".into()));
}

#[test]
fn data_source_errors_surface_with_the_line() {
    let s = Snapshot {
        fail: true,
        ..Default::default()
    };
    let err = Template::parse("t", "a\n\n{{ range service \"go-demo\" }}{{ end }}")
        .unwrap()
        .render(&s)
        .unwrap_err();
    assert!(matches!(err.kind, RenderErrorKind::Data(_)), "{err}");
    assert_eq!(err.line, 3);
    assert_eq!(err.deps.services.len(), 1);
}

#[test]
fn template_parses_once_and_renders_against_new_snapshots() {
    let t = Template::parse("t", "{{ len (service \"go-demo\" \"any\") }}").unwrap();
    assert_eq!(t.render(&go_demo()).unwrap().text, "3");
    assert_eq!(t.render(&Snapshot::default()).unwrap().text, "0");
    assert_eq!(t.name(), "t");
}

#[test]
fn static_source_serves_services_and_keys() {
    use flow_proxy::ctmpl::StaticSource;
    let mut s = StaticSource::default();
    for e in go_demo().services.remove("go-demo").unwrap() {
        s.add_service(e);
    }
    s.add_service(ServiceEntry {
        name: "web".into(),
        node: "n".into(),
        tags: vec!["v2".into(), "v1".into()],
        ..Default::default()
    });
    s.set_key("cfg/a", "1");
    s.set_key("cfg/b/c", "2");
    s.set_key("cfgx", "3");
    let src = "{{range services}}{{.Name}}{{.Tags}} {{end}}|{{len (service \"go-demo\")}} {{len (service \"v1.web\")}} {{len (service \"v3.web\")}}|{{key \"cfg/a\"}}|{{range tree \"cfg/\"}}{{.Key}} {{end}}";
    let out = Template::parse("t", src).unwrap().render(&s).unwrap();
    assert_eq!(out.text, "go-demo[] web[v1 v2] |2 1 0|1|a b/c ");
}

#[test]
fn every_service_entry_field_is_reachable() {
    let mut s = Snapshot::default();
    s.services.insert(
        "web".into(),
        vec![ServiceEntry {
            node: "n1".into(),
            node_id: "0b1c".into(),
            node_address: "10.0.0.1".into(),
            node_meta: [("rack".to_string(), "r1".to_string())].into(),
            node_tagged_addresses: [("lan".to_string(), "10.0.0.1".to_string())].into(),
            id: "web-1".into(),
            name: "web".into(),
            address: "".into(),
            port: 8080,
            tags: vec!["z".into(), "a".into()],
            service_meta: [("v".to_string(), "2".to_string())].into(),
            weights: flow_proxy::ctmpl::Weights {
                passing: 10,
                warning: 1,
            },
            checks: vec![HealthCheck {
                node: "n1".into(),
                check_id: "service:web-1".into(),
                name: "HTTP".into(),
                status: "passing".into(),
                output: "200 OK".into(),
                service_id: "web-1".into(),
                service_name: "web".into(),
                ..Default::default()
            }],
        }],
    );
    let src = "{{with index (service \"web\") 0 -}}
{{.Node}} {{.NodeID}} {{.NodeAddress}} {{.NodeMeta.rack}} {{.NodeTaggedAddresses.lan}}
{{.ID}} {{.Name}} {{.Address}} {{.Port}} {{.Tags}} {{.ServiceMeta}} {{.Status}}
{{.Weights.Passing}}/{{.Weights.Warning}}
{{range .Checks}}{{.CheckID}} {{.Name}} {{.Status}} {{.Output}} {{.ServiceID}} {{.ServiceName}} {{.Node}}{{end}}
{{- end}}";
    let out = Template::parse("t", src).unwrap().render(&s).unwrap();
    assert_eq!(
        out.text,
        "n1 0b1c 10.0.0.1 r1 10.0.0.1\nweb-1 web 10.0.0.1 8080 [a z] map[v:2] passing\n10/1\nservice:web-1 HTTP passing 200 OK web-1 web n1"
    );
}
