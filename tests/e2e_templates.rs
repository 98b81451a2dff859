//! Custom templates end to end through a real HAProxy: the original README's example verbatim,
//! the split frontend/backend form, health filters, KV reads, refused paths and templates, and
//! startup recovery.

mod support;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use support::{DEADLINE, Proxy, Registry, backend, haproxy_available};

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
        &["--templates-root".to_owned(), root.display().to_string()],
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
