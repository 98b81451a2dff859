//! Security end to end, with the real HAProxy: control API authentication (`API_TOKEN`,
//! `API_USERS`), size limits and malformed parameters refused with nothing changed, the
//! statistics page served only with `STATS_USER`/`STATS_PASS`, private sockets in
//! `DATA_DIR`, and the embedded registry's token used by flow-proxy's own client.

mod support;

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::time::Duration;

use base64::Engine as _;
use clap::Parser;
use flow_proxy::settings::{Cli, Command};
use support::{Proxy, Registry, backend, free_port, haproxy_available, wait_until};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

const TOKEN: &str = "tok-3f9c1d";

/// An answer: status, raw head (status line and headers) and body.
struct Answer {
    status: u16,
    head: String,
    body: String,
}

impl Answer {
    /// Every value of a header (case-insensitive name).
    fn headers(&self, name: &str) -> Vec<String> {
        self.head
            .lines()
            .filter_map(|l| l.split_once(':'))
            .filter(|(k, _)| k.trim().eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim().to_owned())
            .collect()
    }
}

/// One raw HTTP/1.1 request with extra header lines; status 0 when the connection failed.
async fn request(port: u16, method: &str, target: &str, headers: &[String], body: &str) -> Answer {
    let attempt = async {
        let mut s = TcpStream::connect(("127.0.0.1", port)).await.ok()?;
        let mut req =
            format!("{method} {target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
        for h in headers {
            req.push_str(h);
            req.push_str("\r\n");
        }
        if !headers
            .iter()
            .any(|h| h.to_ascii_lowercase().starts_with("content-length"))
        {
            req.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        req.push_str("\r\n");
        req.push_str(body);
        // The server may answer and close before reading everything: keep what it sent.
        let _ = s.write_all(req.as_bytes()).await;
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out).await;
        let out = String::from_utf8_lossy(&out).into_owned();
        let status = out.split_whitespace().nth(1)?.parse().ok()?;
        let (head, body) = out.split_once("\r\n\r\n")?;
        Some(Answer {
            status,
            head: head.to_owned(),
            body: body.to_owned(),
        })
    };
    match tokio::time::timeout(Duration::from_secs(20), attempt).await {
        Ok(Some(a)) => a,
        _ => Answer {
            status: 0,
            head: String::new(),
            body: String::new(),
        },
    }
}

fn basic(user_pass: &str) -> String {
    format!(
        "Authorization: Basic {}",
        base64::engine::general_purpose::STANDARD.encode(user_pass)
    )
}

fn bearer(token: &str) -> String {
    format!("Authorization: Bearer {token}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_requires_credentials_on_every_endpoint_but_health_checks() {
    if !haproxy_available() {
        return;
    }
    let registry = Registry::start().await;
    let mut proxy = Proxy::start_with(
        &registry,
        "docker-flow",
        &[
            "--api-token".to_owned(),
            TOKEN.to_owned(),
            "--api-users".to_owned(),
            "ops:pw-1,ci:pw:2".to_owned(),
        ],
    )
    .await;
    let api = proxy.api.port();
    let app = backend("app").await;
    registry.register("app", 1, app).await;
    let reconfigure = "/v1/docker-flow-proxy/reconfigure?serviceName=app&servicePath=/app";

    // Without credentials, or with wrong ones, whatever the method and path: 401, nothing done.
    let wrong = [
        vec![],
        vec![bearer("tok-3f9c1")],
        vec![bearer(&format!("{TOKEN}x"))],
        vec![basic("ops:pw-2")],
        vec![basic("nobody:pw-1")],
        vec![format!("Authorization: {TOKEN}")],
        vec![format!("X-Api-Token: {TOKEN}")],
    ];
    for method in ["GET", "PUT", "POST", "DELETE", "PATCH"] {
        for path in [
            reconfigure,
            "/v1/docker-flow-proxy/remove?serviceName=app",
            "/v1/docker-flow-proxy/reload",
            "/v1/docker-flow-proxy/config",
            "/v1/docker-flow-proxy/config?type=json",
            "/metrics",
            "/v1/docker-flow-proxy/unknown",
            "/",
        ] {
            for headers in &wrong {
                let a = request(api, method, path, headers, "").await;
                assert_eq!(a.status, 401, "{method} {path} {headers:?}: {}", a.body);
                let challenges = a.headers("WWW-Authenticate");
                assert!(
                    challenges.iter().any(|c| c.starts_with("Bearer "))
                        && challenges.iter().any(|c| c.starts_with("Basic ")),
                    "{challenges:?}"
                );
                assert!(a.body.contains(r#""Status":"NOK""#), "{}", a.body);
            }
        }
    }
    assert!(registry.kv_keys("docker-flow/").await.is_empty());
    assert_eq!(proxy.get("localhost", "/app").await.0, 503);

    // Health checks stay open, with any method.
    for method in ["GET", "POST"] {
        for path in ["/v1/docker-flow-proxy/ping", "/v1/test", "/v2/test"] {
            let a = request(api, method, path, &[], "").await;
            assert_eq!(a.status, 200, "{method} {path}: {}", a.body);
        }
    }

    // The bearer token and each user are accepted.
    let a = request(api, "PUT", reconfigure, &[bearer(TOKEN)], "").await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(proxy.get("localhost", "/app").await, (200, "app\n".into()));
    let a = request(api, "GET", "/metrics", &[basic("ops:pw-1")], "").await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert!(
        a.body.contains("flow_proxy_haproxy_reloads_total"),
        "{}",
        a.body
    );
    let a = request(
        api,
        "GET",
        "/v1/docker-flow-proxy/config",
        &[basic("ci:pw:2")],
        "",
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert!(a.body.contains("backend app-be"), "{}", a.body);
    let a = request(
        api,
        "POST",
        "/v1/docker-flow-proxy/remove?serviceName=app",
        &[basic("ops:pw-1")],
        "",
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert!(registry.kv_keys("docker-flow/").await.is_empty());
    // Unknown paths stay 404 for an authenticated caller.
    let a = request(api, "GET", "/v1/nothing", &[bearer(TOKEN)], "").await;
    assert_eq!(a.status, 404);
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_requests_are_refused_and_change_nothing() {
    if !haproxy_available() {
        return;
    }
    let registry = Registry::start().await;
    let mut proxy = Proxy::start(&registry, "docker-flow").await;
    let api = proxy.api.port();
    let config_before = proxy.call("/v1/docker-flow-proxy/config").await;
    assert_eq!(config_before.0, 200);

    // A request target above 8 KiB: 414.
    let long = format!(
        "/v1/docker-flow-proxy/reconfigure?serviceName=app&servicePath=/app&pad={}",
        "a".repeat(9 * 1024)
    );
    let a = request(api, "GET", &long, &[], "").await;
    assert_eq!(a.status, 414, "{}", a.body);
    assert!(a.body.contains("at most 8192"), "{}", a.body);

    // Headers above 16 KiB: 431.
    let a = request(
        api,
        "GET",
        "/v1/docker-flow-proxy/reconfigure?serviceName=app&servicePath=/app",
        &[format!("X-Pad: {}", "b".repeat(17 * 1024))],
        "",
    )
    .await;
    assert_eq!(a.status, 431, "{}", a.body);

    // A body above 1 MiB: 413, refused before it is read.
    let a = request(
        api,
        "PUT",
        "/v1/docker-flow-proxy/reconfigure?serviceName=app&servicePath=/app",
        &[format!("Content-Length: {}", 2 * 1024 * 1024)],
        "",
    )
    .await;
    assert_eq!(a.status, 413, "{}", a.body);

    assert!(registry.kv_keys("docker-flow/").await.is_empty());
    assert_eq!(
        proxy.call("/v1/docker-flow-proxy/config").await,
        config_before
    );
    // A request within the limits still works.
    let a = request(
        api,
        "GET",
        &format!(
            "/v1/docker-flow-proxy/reconfigure?serviceName=app&servicePath=/app&pad={}",
            "a".repeat(4 * 1024)
        ),
        &[],
        "",
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.body);
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_known_parameters_are_400_unknown_ones_ignored() {
    if !haproxy_available() {
        return;
    }
    let registry = Registry::start().await;
    let mut proxy = Proxy::start(&registry, "docker-flow").await;
    let config_before = proxy.call("/v1/docker-flow-proxy/config").await;
    for (path, param) in [
        (
            "reconfigure?serviceName=x&servicePath=/x&skipCheck=yes",
            "skipCheck",
        ),
        (
            "reconfigure?serviceName=x&servicePath=/x&skipCheck=TRUE%20",
            "skipCheck",
        ),
        (
            "reconfigure?serviceName=x&servicePath=/x&pathType=path_foo",
            "pathType",
        ),
        (
            "reconfigure?serviceName=x&servicePath=/x&pathType=",
            "pathType",
        ),
        (
            "reconfigure?serviceName=x&servicePath=/x&serviceColor=a%20b",
            "serviceColor",
        ),
        (
            "reconfigure?serviceName=x&servicePath=/x&serviceColor=a%0Ab",
            "serviceColor",
        ),
        (
            "reconfigure?serviceName=x&servicePath=/x&serviceDomain=a%0Ab",
            "serviceDomain",
        ),
        (
            "reconfigure?serviceName=x&servicePath=/x,/a%0D",
            "servicePath",
        ),
        (
            "reconfigure?serviceName=x%20y&servicePath=/x",
            "serviceName",
        ),
        (
            "reconfigure?serviceName=x&consulTemplatePath=a%0Ab",
            "consulTemplatePath",
        ),
        ("remove?serviceName=a%0Ab", "serviceName"),
        ("config?type=xml", "type"),
        ("config?type=json%0A", "type"),
    ] {
        let (status, body) = proxy.call(&format!("/v1/docker-flow-proxy/{path}")).await;
        if path.ends_with("pathType=") {
            // An empty pathType is DFP's default (path_beg), not malformed.
            assert_eq!(status, 200, "{path}: {body}");
            let (status, _) = proxy
                .call("/v1/docker-flow-proxy/remove?serviceName=x")
                .await;
            assert_eq!(status, 200);
            continue;
        }
        assert_eq!(status, 400, "{path}: {body}");
        assert!(body.contains(param), "{path}: {body}");
        assert!(body.starts_with(r#"{"Status":"NOK""#), "{path}: {body}");
    }
    assert!(registry.kv_keys("docker-flow/").await.is_empty());
    assert_eq!(
        proxy.call("/v1/docker-flow-proxy/config").await,
        config_before
    );

    // Unknown parameters are ignored, as DFP did.
    let app = backend("app").await;
    registry.register("app", 1, app).await;
    let (status, body) = proxy
        .call("/v1/docker-flow-proxy/reconfigure?serviceName=app&servicePath=/app&distribute=maybe&foo=%0A")
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(proxy.get("localhost", "/app").await, (200, "app\n".into()));
    let (status, _) = proxy
        .call("/v1/docker-flow-proxy/config?type=json&x=1")
        .await;
    assert_eq!(status, 200);
    proxy.stop().await;
}

const STATS_TITLE: &str = "Statistics Report";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_page_is_served_only_with_credentials() {
    if !haproxy_available() {
        return;
    }
    let registry = Registry::start().await;
    // Unset: no statistics page at all, not even with DFP's old admin:admin.
    let mut proxy = Proxy::start(&registry, "no-stats").await;
    let a = request(
        proxy.http_port,
        "GET",
        "/admin?stats",
        &[basic("admin:admin")],
        "",
    )
    .await;
    assert_ne!(a.status, 0);
    assert!(!a.body.contains(STATS_TITLE), "{}", a.body);
    let config = proxy.call("/v1/docker-flow-proxy/config").await.1;
    assert!(!config.contains("stats auth"), "{config}");
    proxy.stop().await;

    let mut proxy = Proxy::start_with(
        &registry,
        "stats",
        &[
            "--stats-user".to_owned(),
            "ops".to_owned(),
            "--stats-pass".to_owned(),
            "s3cr:t".to_owned(),
        ],
    )
    .await;
    let port = proxy.http_port;
    let a = request(port, "GET", "/admin?stats", &[], "").await;
    assert_eq!(a.status, 401, "{}", a.body);
    let a = request(port, "GET", "/admin?stats", &[basic("admin:admin")], "").await;
    assert_eq!(a.status, 401, "{}", a.body);
    let a = request(port, "GET", "/admin?stats", &[basic("ops:s3cr:t")], "").await;
    assert_eq!(a.status, 200, "{}", a.head);
    assert!(a.body.contains(STATS_TITLE), "{}", a.body);
    proxy.stop().await;

    // Values that could break the configuration are refused at start.
    for (user, pass) in [("ops", "a b"), ("ops", "a#b"), ("o:ps", "pw"), ("ops", "")] {
        let cli = Cli::try_parse_from([
            "flow-proxy",
            "server",
            "--stats-user",
            user,
            "--stats-pass",
            pass,
        ])
        .unwrap();
        let Command::Server(args) = cli.command else {
            panic!("expected server")
        };
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let err = flow_proxy::server::run_server_on(*args, listener, CancellationToken::new())
            .await
            .unwrap_err();
        assert!(
            err.to_string().contains("STATS_"),
            "{user:?} {pass:?}: {err}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runtime_and_master_sockets_are_private() {
    if !haproxy_available() {
        return;
    }
    let registry = Registry::start().await;
    let mut proxy = Proxy::start(&registry, "docker-flow").await;
    for name in ["admin.sock", "master.sock"] {
        let path = proxy.data_dir.path().join(name);
        let meta = std::fs::metadata(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(meta.file_type().is_socket(), "{name} is not a socket");
        assert_eq!(
            meta.permissions().mode() & 0o777,
            0o600,
            "{name} has mode {:o}",
            meta.permissions().mode() & 0o777
        );
    }
    proxy.stop().await;
}

/// flow-proxy serving its embedded registry with a token: the registry refuses requests
/// without it, and flow-proxy's own client (intents, catalog watch) uses it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_registry_token_is_required_and_used_by_flow_proxy() {
    if !haproxy_available() {
        return;
    }
    flow_proxy::tls::install_crypto_provider();
    let data_dir = tempfile::Builder::new()
        .prefix("fp")
        .tempdir_in("/tmp")
        .unwrap();
    let registry_port = free_port();
    let http_port = free_port();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let api = listener.local_addr().unwrap();
    let argv = [
        "flow-proxy".to_owned(),
        "server".to_owned(),
        "--embedded-registry-address".to_owned(),
        format!("127.0.0.1:{registry_port}"),
        "--embedded-registry-token".to_owned(),
        TOKEN.to_owned(),
        "--bind-address".to_owned(),
        "127.0.0.1".to_owned(),
        "--http-port".to_owned(),
        http_port.to_string(),
        "--data-dir".to_owned(),
        data_dir.path().display().to_string(),
        "--stop-haproxy-on-exit".to_owned(),
    ];
    let Command::Server(args) = Cli::try_parse_from(argv).unwrap().command else {
        panic!("expected server")
    };
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    let task = tokio::spawn(async move {
        flow_proxy::server::run_server_on(*args, listener, stop)
            .await
            .unwrap();
    });
    wait_until("ping answers 200", || async {
        support::api_call(api, "GET", "/v1/docker-flow-proxy/ping")
            .await
            .0
            == 200
    })
    .await;

    // The registry refuses requests without the token, as Consul does.
    let a = request(registry_port, "GET", "/v1/kv/docker-flow/?recurse", &[], "").await;
    assert_eq!((a.status, a.body.as_str()), (403, "Permission denied"));
    let a = request(
        registry_port,
        "GET",
        "/v1/catalog/services",
        &["X-Consul-Token: wrong".to_owned()],
        "",
    )
    .await;
    assert_eq!((a.status, a.body.as_str()), (403, "ACL not found"));
    let a = request(registry_port, "GET", "/v1/status/leader", &[], "").await;
    assert_eq!(a.status, 200);

    // Registration with the token; flow-proxy persists and follows it with the same token.
    let app = backend("app").await;
    let reg = serde_json::json!({"ID": "host:app_1:8080", "Name": "app", "Address": "127.0.0.1", "Port": app}).to_string();
    let a = request(
        registry_port,
        "PUT",
        "/v1/agent/service/register",
        &[format!("X-Consul-Token: {TOKEN}")],
        &reg,
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.body);
    let (status, body) = support::api_call(
        api,
        "GET",
        "/v1/docker-flow-proxy/reconfigure?serviceName=app&servicePath=/app",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        support::http(http_port, "GET", "localhost", "/app").await,
        (200, "app\n".into())
    );
    let a = request(
        registry_port,
        "GET",
        &format!("/v1/kv/docker-flow/app/path?raw&token={TOKEN}"),
        &[],
        "",
    )
    .await;
    assert_eq!((a.status, a.body.as_str()), (200, "/app"));

    // A second instance is followed through the token-protected catalog.
    let app2 = backend("app2").await;
    let a = request(
        registry_port,
        "PUT",
        "/v1/agent/service/deregister/host:app_1:8080",
        &[bearer(TOKEN)],
        "",
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.body);
    let reg2 = serde_json::json!({"ID": "host:app_2:8080", "Name": "app", "Address": "127.0.0.1", "Port": app2}).to_string();
    let a = request(
        registry_port,
        "PUT",
        "/v1/agent/service/register",
        &[bearer(TOKEN)],
        &reg2,
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.body);
    wait_until("the new instance is routed", || async {
        support::http(http_port, "GET", "localhost", "/app").await == (200, "app2\n".into())
    })
    .await;

    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(90), task)
        .await
        .expect("flow-proxy stops")
        .unwrap();
}
