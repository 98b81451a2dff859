//! Custom templates end to end through a real HAProxy: the original README's example verbatim,
//! the split frontend/backend form, health filters, KV reads, refused paths and templates, and
//! startup recovery.

mod support;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use flow_proxy::consul::KvKey;
use support::{DEADLINE, Proxy, Registry, backend, haproxy_available, wait_until};

/// `test_configs/tmpl/go-demo.tmpl` of Docker Flow: Proxy's README, verbatim.
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

fn templates_dir() -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("fp-tmpl")
        .tempdir_in("/tmp")
        .unwrap();
    std::fs::create_dir(dir.path().join("tmpl")).unwrap();
    dir
}

fn write(root: &Path, name: &str, text: &str) -> String {
    let path = root.join(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

async fn start(registry: &Registry, root: &Path) -> Proxy {
    Proxy::start_with(
        registry,
        "docker-flow",
        &[
            "--templates-root".to_owned(),
            root.display().to_string(),
            // The resync re-reads every template's data: push it out of the tests' reach, so
            // only the watches can bring a change.
            "--resync-interval".to_owned(),
            "3600".to_owned(),
        ],
    )
    .await
}

/// Polls `path` until every body in `want` was seen and nothing else, or panics.
async fn expect_bodies(proxy: &Proxy, path: &str, want: &[&str]) {
    let want: BTreeSet<String> = want.iter().map(|b| format!("{b}\n")).collect();
    let deadline = tokio::time::Instant::now() + DEADLINE;
    let mut seen = BTreeSet::new();
    loop {
        let (status, body) = proxy.get("localhost", path).await;
        if status == 200 {
            if want.contains(&body) {
                seen.insert(body.clone());
            } else {
                seen.clear();
            }
        }
        if seen == want {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{path}: saw {seen:?} (last {status} {body:?}), want {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readme_example_template_follows_scaling() {
    if !haproxy_available() {
        return;
    }
    let root = templates_dir();
    let path = write(root.path(), "tmpl/go-demo.tmpl", README_TEMPLATE);
    let registry = Registry::start().await;
    let mut proxy = start(&registry, root.path()).await;
    let app1 = backend("hello, world! 1").await;
    registry.register("go-demo", 1, app1).await;

    let (status, body) = proxy
        .call(&format!(
            "/v1/docker-flow-proxy/reconfigure?serviceName=go-demo&consulTemplatePath={path}"
        ))
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(r#""Status":"OK""#), "{body}");
    let keys = registry.kv_keys("docker-flow/go-demo/").await;
    assert!(keys.contains(&"docker-flow/go-demo/consultemplatepath".to_owned()));
    // Right after the answer, the route works.
    let (status, body) = proxy.get("localhost", "/demo/hello").await;
    assert_eq!((status, body.as_str()), (200, "hello, world! 1\n"));
    // The frontend was merged into the shared one: no second frontend on the ports.
    let (_, config) = proxy.call("/v1/docker-flow-proxy/config").await;
    assert!(!config.contains("frontend go-demo-fe"), "{config}");
    assert!(
        config.contains("\tacl url_go-demo path_beg /demo"),
        "{config}"
    );

    // Scale 1 → 3, no further call.
    let app2 = backend("hello, world! 2").await;
    let app3 = backend("hello, world! 3").await;
    registry.register("go-demo", 2, app2).await;
    let id3 = registry.register("go-demo", 3, app3).await;
    expect_bodies(
        &proxy,
        "/demo/hello",
        &["hello, world! 1", "hello, world! 2", "hello, world! 3"],
    )
    .await;
    // `config?type=json` shows the template service: its path, backend, servers and routes.
    // (The new worker serves a moment before the reconciler has confirmed the reload and
    // published its status.)
    let config_json = || async {
        let (status, body) = proxy.call("/v1/docker-flow-proxy/config?type=json").await;
        assert_eq!(status, 200, "{body}");
        body
    };
    wait_until("config?type=json counts the three servers", || async {
        config_json().await.contains(r#""Servers":3"#)
    })
    .await;
    let body = config_json().await;
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    let svc = &json["Services"][0];
    assert_eq!(svc["ServiceName"], "go-demo", "{body}");
    assert_eq!(svc["ConsulTemplatePath"], path.as_str(), "{body}");
    assert_eq!(svc["Backend"], "go-demo-be", "{body}");
    assert_eq!(svc["Servers"], 3, "{body}");
    assert_eq!(
        svc["Routes"],
        serde_json::json!([{"Path": "/demo", "PathType": "path_beg", "Domains": []}]),
        "{body}"
    );
    assert_eq!(
        svc["Backends"],
        serde_json::json!([{"Name": "go-demo-be", "Servers": 3}]),
        "{body}"
    );
    // And down again.
    registry.deregister(&id3).await;
    expect_bodies(
        &proxy,
        "/demo/hello",
        &["hello, world! 1", "hello, world! 2"],
    )
    .await;
    proxy.stop().await;
}

/// `test_configs/tmpl/go-demo-fe.tmpl` and `go-demo-be.tmpl` of Docker Flow: Proxy.
const FE_TEMPLATE: &str =
    "\tacl url_go-demo path_beg /demo\n\tuse_backend go-demo-be if url_go-demo\n";
const BE_TEMPLATE: &str = "backend go-demo-be
\t{{ range $i, $e := service \"go-demo\" \"any\" }}
\tserver {{$e.Node}}_{{$i}}_{{$e.Port}} {{$e.Address}}:{{$e.Port}} check
\t{{end}}
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_form_and_startup_recovery() {
    if !haproxy_available() {
        return;
    }
    let root = templates_dir();
    let fe = write(root.path(), "tmpl/go-demo-fe.tmpl", FE_TEMPLATE);
    let be = write(root.path(), "tmpl/go-demo-be.tmpl", BE_TEMPLATE);
    let registry = Registry::start().await;
    let mut proxy = start(&registry, root.path()).await;
    let app1 = backend("split 1").await;
    registry.register("go-demo", 1, app1).await;
    let (status, body) = proxy
        .call(&format!(
            "/v1/docker-flow-proxy/reconfigure?serviceName=go-demo&consulTemplateFePath={fe}&consulTemplateBePath={be}"
        ))
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains(&format!(r#""ConsulTemplateFePath":"{fe}""#)),
        "{body}"
    );
    let (status, body) = proxy.get("localhost", "/demo/hello").await;
    assert_eq!((status, body.as_str()), (200, "split 1\n"));
    let app2 = backend("split 2").await;
    registry.register("go-demo", 2, app2).await;
    expect_bodies(&proxy, "/demo/hello", &["split 1", "split 2"]).await;
    proxy.stop().await;

    // A new proxy on the same Consul, with no API call, serves the template-based service.
    let second = start(&registry, root.path()).await;
    expect_bodies(&second, "/demo/hello", &["split 1", "split 2"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passing_and_any_filter_by_health() {
    if !haproxy_available() {
        return;
    }
    let root = templates_dir();
    let template = |filter: &str, path: &str| {
        format!(
            "frontend x\n    bind *:80\n    acl url_{path} path_beg /{path}\n    use_backend {path}-be if url_{path}\n\nbackend {path}-be\n{{{{- range service \"web{filter}\" }}}}\n    server {{{{.Node}}}}_{{{{.Port}}}} {{{{.Address}}}}:{{{{.Port}}}}\n{{{{- end }}}}\n"
        )
    };
    let passing = write(root.path(), "passing.tmpl", &template("", "passing"));
    let any = write(root.path(), "any.tmpl", &template("|any", "any"));
    let registry = Registry::start().await;
    let mut proxy = start(&registry, root.path()).await;
    let healthy = backend("healthy").await;
    let critical = backend("critical").await;
    registry.register("web", 1, healthy).await;
    registry.register_critical("web", 2, critical).await;
    for (name, path) in [("passing", &passing), ("any", &any)] {
        let (status, body) = proxy
            .call(&format!(
                "/v1/docker-flow-proxy/reconfigure?serviceName={name}&consulTemplatePath={path}"
            ))
            .await;
        assert_eq!(status, 200, "{body}");
    }
    expect_bodies(&proxy, "/passing", &["healthy"]).await;
    expect_bodies(&proxy, "/any", &["healthy", "critical"]).await;
    // Health changes re-render: the critical instance turns passing.
    registry
        .client
        .agent_check_pass("service:host:web_app_2:8080")
        .await
        .unwrap();
    expect_bodies(&proxy, "/passing", &["healthy", "critical"]).await;
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_are_read_and_followed() {
    if !haproxy_available() {
        return;
    }
    let root = templates_dir();
    let path = write(
        root.path(),
        "kv.tmpl",
        "frontend kv\n    bind *:80\n    acl url_kv path_beg {{ keyOrDefault \"cfg/path\" \"/default\" }}\n    use_backend kv-be if url_kv\n\nbackend kv-be\n    http-request return status 200 content-type text/plain string \"{{ key \"cfg/greeting\" }}\"\n",
    );
    let registry = Registry::start().await;
    let mut proxy = start(&registry, root.path()).await;
    let put = |key: &'static str, value: &'static str| {
        let client = registry.client.clone();
        async move {
            client
                .kv_put(&KvKey::new(key).unwrap(), value.as_bytes(), None)
                .await
                .unwrap();
        }
    };
    let call =
        format!("/v1/docker-flow-proxy/reconfigure?serviceName=kv&consulTemplatePath={path}");
    // `key` of a missing key: refused with the reason, nothing stored.
    let (status, body) = proxy.call(&call).await;
    assert_eq!(status, 500, "{body}");
    assert!(body.contains("cfg/greeting"), "{body}");
    assert!(registry.kv_keys("docker-flow/kv/").await.is_empty());
    put("cfg/greeting", "hello").await;
    let (status, body) = proxy.call(&call).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        proxy.get("localhost", "/default").await,
        (200, "hello".to_owned())
    );
    // A KV change re-renders without another call.
    put("cfg/path", "/custom").await;
    put("cfg/greeting", "changed").await;
    wait_until("the KV change is live", || async {
        proxy.get("localhost", "/custom").await == (200, "changed".to_owned())
    })
    .await;
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_paths_and_templates_are_refused_with_live_routes_untouched() {
    if !haproxy_available() {
        return;
    }
    let root = templates_dir();
    let outside = tempfile::tempdir().unwrap();
    let secret = write(outside.path(), "secret.tmpl", BE_TEMPLATE);
    std::os::unix::fs::symlink(&secret, root.path().join("tmpl/escape.tmpl")).unwrap();
    let good = write(root.path(), "tmpl/go-demo.tmpl", README_TEMPLATE);
    let broken = write(
        root.path(),
        "tmpl/broken.tmpl",
        "backend b\n{{ range service \"x\" }\n",
    );
    let unknown = write(
        root.path(),
        "tmpl/unknown.tmpl",
        "backend b\n{{ nosuchfunc }}\n",
    );
    let invalid = write(
        root.path(),
        "tmpl/invalid.tmpl",
        "backend bad-be\n    no-such-directive {{ len (service \"go-demo\") }}\n",
    );
    let registry = Registry::start().await;
    let mut proxy = start(&registry, root.path()).await;
    let app = backend("live").await;
    registry.register("go-demo", 1, app).await;
    let reconfigure = |name: &str, path: &str| {
        format!("/v1/docker-flow-proxy/reconfigure?serviceName={name}&consulTemplatePath={path}")
    };
    let (status, body) = proxy.call(&reconfigure("go-demo", &good)).await;
    assert_eq!(status, 200, "{body}");
    let before = proxy.call("/v1/docker-flow-proxy/config").await.1;

    let root_path = root.path().display().to_string();
    for (path, reason) in [
        (secret.as_str(), "outside TEMPLATES_ROOT"),
        (&format!("{root_path}/tmpl/../../etc/passwd"), "'..'"),
        ("tmpl/escape.tmpl", "outside TEMPLATES_ROOT"),
        ("tmpl/missing.tmpl", "cannot read"),
        (broken.as_str(), "line 2"),
        (unknown.as_str(), "nosuchfunc"),
    ] {
        let (status, body) = proxy.call(&reconfigure("other", path)).await;
        assert_eq!(status, 400, "{path}: {body}");
        assert!(body.contains(reason), "{path}: {body}");
    }
    // A template rendering a configuration HAProxy refuses: 500 with HAProxy's line.
    let (status, body) = proxy.call(&reconfigure("other", &invalid)).await;
    assert_eq!(status, 500, "{body}");
    assert!(body.contains("no-such-directive"), "{body}");
    assert!(
        !body.contains("frontend services"),
        "the whole config was dumped: {body}"
    );
    assert!(registry.kv_keys("docker-flow/other/").await.is_empty());
    assert_eq!(proxy.call("/v1/docker-flow-proxy/config").await.1, before);
    assert_eq!(
        proxy.get("localhost", "/demo/x").await,
        (200, "live\n".to_owned())
    );
    // Later changes of other services are unaffected.
    let app2 = backend("plain").await;
    registry.register("plain", 1, app2).await;
    let (status, body) = proxy
        .call("/v1/docker-flow-proxy/reconfigure?serviceName=plain&servicePath=/plain")
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        proxy.get("localhost", "/plain").await,
        (200, "plain\n".to_owned())
    );
    assert_eq!(
        proxy.get("localhost", "/demo/x").await,
        (200, "live\n".to_owned())
    );
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_port_clash_is_refused_at_reload_and_rolled_back() {
    if !haproxy_available() {
        return;
    }
    let root = templates_dir();
    // Another process holds this port: `haproxy -c` accepts the configuration, the reload
    // cannot bind.
    let holder = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = holder.local_addr().unwrap().port();
    let clash = write(
        root.path(),
        "clash.tmpl",
        &format!(
            "frontend clash-fe\n    bind 127.0.0.1:{port}\n    default_backend clash-be\n\nbackend clash-be\n    http-request return status 200\n"
        ),
    );
    let registry = Registry::start().await;
    let mut proxy = start(&registry, root.path()).await;
    let app = backend("live").await;
    registry.register("go-demo", 1, app).await;
    let (status, body) = proxy
        .call("/v1/docker-flow-proxy/reconfigure?serviceName=go-demo&servicePath=/demo")
        .await;
    assert_eq!(status, 200, "{body}");
    let before = proxy.call("/v1/docker-flow-proxy/config").await.1;
    let (status, body) = proxy
        .call(&format!(
            "/v1/docker-flow-proxy/reconfigure?serviceName=clash&consulTemplatePath={clash}"
        ))
        .await;
    assert_eq!(status, 500, "{body}");
    assert!(body.contains("cannot bind socket"), "{body}");
    assert!(registry.kv_keys("docker-flow/clash/").await.is_empty());
    assert_eq!(proxy.call("/v1/docker-flow-proxy/config").await.1, before);
    assert_eq!(
        proxy.get("localhost", "/demo/x").await,
        (200, "live\n".to_owned())
    );
    drop(holder);
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nested_reads_and_kv_prefixes() {
    if !haproxy_available() {
        return;
    }
    let root = templates_dir();
    // `services` then `service .Name`: the second read depends on the first (a fetch round
    // each); routes come from a KV prefix.
    let path = write(
        root.path(),
        "nested.tmpl",
        "frontend all\n    bind *:80\n{{- range ls \"routes\" }}\n    acl url_{{ .Key }} path_beg {{ .Value }}\n    use_backend {{ .Key }}-be if url_{{ .Key }}\n{{- end }}\n{{ range services }}{{ if in .Tags \"web\" }}\nbackend {{ .Name }}-be\n{{- range service .Name }}\n    server s{{ .Port }} {{ .Address }}:{{ .Port }}\n{{- end }}\n{{ end }}{{ end }}",
    );
    let registry = Registry::start().await;
    let mut proxy = start(&registry, root.path()).await;
    for (name, body) in [("alpha", "alpha"), ("beta", "beta")] {
        let port = backend(body).await;
        registry
            .client
            .agent_register(&flow_proxy::consul::ServiceRegistration {
                id: format!("{name}-1"),
                name: name.into(),
                tags: vec!["web".into()],
                address: "127.0.0.1".into(),
                port,
                ..Default::default()
            })
            .await
            .unwrap();
    }
    let put = |key: &'static str, value: &'static str| {
        let client = registry.client.clone();
        async move {
            client
                .kv_put(&KvKey::new(key).unwrap(), value.as_bytes(), None)
                .await
                .unwrap();
        }
    };
    put("routes/alpha", "/a").await;
    let (status, body) = proxy
        .call(&format!(
            "/v1/docker-flow-proxy/reconfigure?serviceName=nested&consulTemplatePath={path}"
        ))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        proxy.get("localhost", "/a").await,
        (200, "alpha\n".to_owned())
    );
    // A key added under the prefix re-renders with no further call.
    put("routes/beta", "/b").await;
    wait_until("the new route under the prefix is live", || async {
        proxy.get("localhost", "/b").await == (200, "beta\n".to_owned())
    })
    .await;
    // So does a new instance of a service read in the second round.
    let port = backend("alpha 2").await;
    registry
        .client
        .agent_register(&flow_proxy::consul::ServiceRegistration {
            id: "alpha-2".into(),
            name: "alpha".into(),
            tags: vec!["web".into()],
            address: "127.0.0.1".into(),
            port,
            ..Default::default()
        })
        .await
        .unwrap();
    expect_bodies(&proxy, "/a", &["alpha", "alpha 2"]).await;
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_template_missing_at_start_does_not_keep_the_others_down() {
    if !haproxy_available() {
        return;
    }
    let root = templates_dir();
    let path = write(root.path(), "tmpl/go-demo.tmpl", README_TEMPLATE);
    let other = write(root.path(), "tmpl/other.tmpl", "backend other-be\n");
    let registry = Registry::start().await;
    let mut first = start(&registry, root.path()).await;
    let app = backend("templated").await;
    registry.register("go-demo", 1, app).await;
    let plain = backend("plain").await;
    registry.register("plain", 1, plain).await;
    for call in [
        format!("/v1/docker-flow-proxy/reconfigure?serviceName=go-demo&consulTemplatePath={path}"),
        "/v1/docker-flow-proxy/reconfigure?serviceName=plain&servicePath=/plain".to_owned(),
        format!("/v1/docker-flow-proxy/reconfigure?serviceName=other&consulTemplatePath={other}"),
    ] {
        let (status, body) = first.call(&call).await;
        assert_eq!(status, 200, "{body}");
    }
    first.stop().await;
    std::fs::remove_file(&path).unwrap();
    // And one whose output HAProxy now refuses.
    std::fs::write(&other, "backend other-be\n    no-such-directive\n").unwrap();
    // `start` waits until ping answers 200.
    let mut second = start(&registry, root.path()).await;
    assert_eq!(
        second.get("localhost", "/plain").await,
        (200, "plain\n".to_owned())
    );
    // Once the file is back, the next apply takes the service in; the refused one stays out
    // and the reload answers with HAProxy's reason.
    std::fs::write(&path, README_TEMPLATE).unwrap();
    let (status, body) = second.call("/v1/docker-flow-proxy/reload").await;
    assert_eq!(status, 500, "{body}");
    assert!(body.contains("no-such-directive"), "{body}");
    expect_bodies(&second, "/demo/hello", &["templated"]).await;
    second.stop().await;
}

/// Registers one instance of `name` with `tags` on 127.0.0.1, answering `body`.
async fn register_tagged(registry: &Registry, name: &str, id: &str, tags: &[&str], body: &str) {
    let port = backend(body).await;
    registry
        .client
        .agent_register(&flow_proxy::consul::ServiceRegistration {
            id: id.into(),
            name: name.into(),
            tags: tags.iter().map(|t| (*t).to_owned()).collect(),
            address: "127.0.0.1".into(),
            port,
            ..Default::default()
        })
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_service_in_the_list_is_rendered_without_waiting_for_the_resync() {
    if !haproxy_available() {
        return;
    }
    let root = templates_dir();
    // One route and one backend per service tagged `web`, found through `services`.
    let path = write(
        root.path(),
        "list.tmpl",
        "frontend all\n    bind *:80\n{{- range services }}{{ if in .Tags \"web\" }}\n    acl url_{{ .Name }} path_beg /{{ .Name }}\n    use_backend {{ .Name }}-be if url_{{ .Name }}\n{{- end }}{{ end }}\n{{ range services }}{{ if in .Tags \"web\" }}\nbackend {{ .Name }}-be\n{{- range service .Name }}\n    server s{{ .Port }} {{ .Address }}:{{ .Port }}\n{{- end }}\n{{ end }}{{ end }}",
    );
    let registry = Registry::start().await;
    // `start` pushes the resync out of reach: only the services feed can bring the change.
    let mut proxy = start(&registry, root.path()).await;
    register_tagged(&registry, "alpha", "alpha-1", &["web"], "alpha").await;
    let (status, body) = proxy
        .call(&format!(
            "/v1/docker-flow-proxy/reconfigure?serviceName=list&consulTemplatePath={path}"
        ))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        proxy.get("localhost", "/alpha").await,
        (200, "alpha\n".to_owned())
    );
    // A service that appears in the list is routed with no further call.
    register_tagged(&registry, "gamma", "gamma-1", &["web"], "gamma").await;
    wait_until("the new service of the list is live", || async {
        proxy.get("localhost", "/gamma").await == (200, "gamma\n".to_owned())
    })
    .await;
    // A retag that takes a service out of the list's selection removes its route.
    register_tagged(&registry, "gamma", "gamma-1", &["internal"], "gamma").await;
    wait_until("the retagged service is gone", || async {
        proxy.get("localhost", "/gamma").await.0 == 503
    })
    .await;
    assert_eq!(
        proxy.get("localhost", "/alpha").await,
        (200, "alpha\n".to_owned())
    );
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_and_check_fields_come_from_the_health_endpoint() {
    if !haproxy_available() {
        return;
    }
    let root = templates_dir();
    let path = write(
        root.path(),
        "fields.tmpl",
        "frontend fields\n    bind *:80\n    acl url_fields path_beg /fields\n    use_backend fields-be if url_fields\n\nbackend fields-be\n{{- range service \"fields\" \"any\" }}\n    http-request return status 200 content-type text/plain string \"id={{ .NodeID }};lan={{ .NodeTaggedAddresses.lan }};meta={{ range $k, $v := .NodeMeta }}{{ $k }}{{ end }};{{ range .Checks }}check={{ .Name }}/{{ .Status }}/{{ .Output }}{{ end }}\"\n{{- end }}\n",
    );
    let registry = Registry::start().await;
    let mut proxy = start(&registry, root.path()).await;
    let id = registry.register_critical("fields", 1, 1).await;
    // A note passed with the check becomes its output.
    let (status, _) = support::http(
        registry.addr.port(),
        "PUT",
        "localhost",
        &format!("/v1/agent/check/pass/service:{id}?note=all-good"),
    )
    .await;
    assert_eq!(status, 200);
    let (status, body) = proxy
        .call(&format!(
            "/v1/docker-flow-proxy/reconfigure?serviceName=fields&consulTemplatePath={path}"
        ))
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = proxy.get("localhost", "/fields").await;
    assert_eq!(status, 200, "{body}");
    let fields: std::collections::BTreeMap<&str, &str> =
        body.split(';').filter_map(|f| f.split_once('=')).collect();
    assert_eq!(fields["id"].len(), 36, "a node UUID: {body}");
    assert_eq!(fields["lan"], registry.addr.ip().to_string(), "{body}");
    assert_eq!(fields["meta"], "consul-network-segment", "{body}");
    let check = fields["check"];
    assert!(
        check.ends_with("/passing/all-good") && !check.starts_with('/'),
        "a named check with its output: {body}"
    );
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frontend_on_a_shared_and_another_port_serves_both() {
    if !haproxy_available() {
        return;
    }
    let root = templates_dir();
    let other = support::free_port();
    let path = write(
        root.path(),
        "both.tmpl",
        &format!(
            "frontend both\n    bind *:80\n    bind 127.0.0.1:{other}\n    acl url_both path_beg /both\n    use_backend both-be if url_both\n\nbackend both-be\n{{{{- range service \"both\" }}}}\n    server s{{{{ .Port }}}} {{{{ .Address }}}}:{{{{ .Port }}}}\n{{{{- end }}}}\n"
        ),
    );
    let registry = Registry::start().await;
    let mut proxy = start(&registry, root.path()).await;
    register_tagged(&registry, "both", "both-1", &[], "both").await;
    let (status, body) = proxy
        .call(&format!(
            "/v1/docker-flow-proxy/reconfigure?serviceName=both&consulTemplatePath={path}"
        ))
        .await;
    assert_eq!(status, 200, "{body}");
    // The rules serve on the shared frontend...
    assert_eq!(
        proxy.get("localhost", "/both").await,
        (200, "both\n".to_owned())
    );
    // ...and on the frontend's own other port, which keeps only that bind.
    assert_eq!(
        support::http(other, "GET", "localhost", "/both").await,
        (200, "both\n".to_owned())
    );
    let (_, config) = proxy.call("/v1/docker-flow-proxy/config").await;
    assert!(
        config.contains(&format!("frontend both\n    bind 127.0.0.1:{other}\n")),
        "{config}"
    );
    assert!(!config.contains("bind *:80"), "{config}");
    proxy.stop().await;
}
