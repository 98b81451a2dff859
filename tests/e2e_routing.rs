//! Per-service routing parameters end to end, through a real HAProxy: path rewrites, basic
//! auth, sticky sessions, header rules, redirects, `serviceHeader`, `isDefaultBackend`,
//! timeouts, and TCP and SNI services on their own ports.

mod support;

use std::time::Duration;

use support::{Proxy, Registry, free_port, haproxy_available, wait_until};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// An HTTP backend answering `<name> <path>` and one line per request header (lower-cased
/// names), with the response headers `X-Backend: <name>` and `Server: echo`.
async fn echo_backend(name: &str) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let name = name.to_owned();
    tokio::spawn(async move {
        loop {
            let Ok((mut conn, _)) = listener.accept().await else {
                return;
            };
            let name = name.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 1024];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 64 * 1024 {
                    match conn.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&buf).into_owned();
                let mut lines = head.lines();
                let path = lines
                    .next()
                    .and_then(|l| l.split_whitespace().nth(1))
                    .unwrap_or("")
                    .to_owned();
                let mut body = format!("{name} {path}\n");
                for l in lines.take_while(|l| !l.is_empty()) {
                    if let Some((k, v)) = l.split_once(':') {
                        body.push_str(&format!("{}: {}\n", k.to_ascii_lowercase(), v.trim()));
                    }
                }
                let resp = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nX-Backend: {name}\r\nServer: echo\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = conn.write_all(resp.as_bytes()).await;
                let _ = conn.shutdown().await;
            });
        }
    });
    port
}

/// A raw TCP backend: reads whatever comes first, then answers `<name>\n` and closes.
async fn tcp_backend(name: &str) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let name = name.to_owned();
    tokio::spawn(async move {
        loop {
            let Ok((mut conn, _)) = listener.accept().await else {
                return;
            };
            let name = name.clone();
            tokio::spawn(async move {
                let mut chunk = [0u8; 4096];
                if matches!(conn.read(&mut chunk).await, Ok(n) if n > 0) {
                    let _ = conn.write_all(format!("{name}\n").as_bytes()).await;
                }
                let _ = conn.shutdown().await;
            });
        }
    });
    port
}

/// The answer to one request: status, response head (lower-cased header lines) and body.
#[derive(Debug)]
struct Answer {
    status: u16,
    head: String,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<String> {
        let prefix = format!("{}:", name.to_ascii_lowercase());
        self.head
            .lines()
            .find_map(|l| l.strip_prefix(prefix.as_str()).map(|v| v.trim().to_owned()))
    }
}

/// One HTTP/1.1 request with extra header lines (`Name: value`).
async fn request(port: u16, host: &str, path: &str, headers: &[&str]) -> Answer {
    let attempt = async {
        let mut s = TcpStream::connect(("127.0.0.1", port)).await.ok()?;
        let mut req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
        for h in headers {
            req.push_str(h);
            req.push_str("\r\n");
        }
        req.push_str("\r\n");
        s.write_all(req.as_bytes()).await.ok()?;
        let mut out = Vec::new();
        s.read_to_end(&mut out).await.ok()?;
        let out = String::from_utf8_lossy(&out).into_owned();
        let (head, body) = out.split_once("\r\n\r\n")?;
        let status = head.split_whitespace().nth(1)?.parse().ok()?;
        let head = head
            .lines()
            .map(|l| match l.split_once(':') {
                Some((k, v)) => format!("{}:{v}", k.to_ascii_lowercase()),
                None => l.to_owned(),
            })
            .collect::<Vec<_>>()
            .join("\n");
        Some(Answer {
            status,
            head,
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

/// `reconfigure` with the parameters URL-encoded.
async fn reconfigure(proxy: &Proxy, params: &[(&str, &str)]) -> (u16, String) {
    let query: String = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(params)
        .finish();
    proxy
        .call(&format!("/v1/docker-flow-proxy/reconfigure?{query}"))
        .await
}

fn basic(user: &str, password: &str) -> String {
    use base64::Engine;
    let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    format!("Authorization: Basic {token}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_rewrites_strip_a_prefix_and_survive_a_restart() {
    if !haproxy_available() {
        return;
    }
    let registry = Registry::start().await;
    let mut proxy = Proxy::start(&registry, "docker-flow").await;
    registry.register("api", 1, echo_backend("api").await).await;
    registry.register("old", 1, echo_backend("old").await).await;

    let kv_before = registry.kv_keys("docker-flow/").await;
    for bad in [
        r"^/api/v1/(.*),/\1 x",
        r"^/api,/%[env(CONSUL_HTTP_TOKEN)]",
        "^/api'\n    http-request deny,/",
        "^/api",
    ] {
        let (status, body) = reconfigure(
            &proxy,
            &[
                ("serviceName", "api"),
                ("servicePath", "/api/v1"),
                ("reqPathSearchReplace", bad),
            ],
        )
        .await;
        assert_eq!(status, 400, "{bad:?}: {body}");
        assert!(
            body.contains(r#""Message":"invalid reqPathSearchReplace"#),
            "{body}"
        );
    }
    assert_eq!(registry.kv_keys("docker-flow/").await, kv_before);

    let (status, body) = reconfigure(
        &proxy,
        &[
            ("serviceName", "api"),
            ("servicePath", "/api/v1"),
            ("reqPathSearchReplace", r"^/api/v1/(.*),/\1:^/x$,/y"),
        ],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body.ends_with(r#""SkipCheck":false,"ReqPathSearchReplace":"^/api/v1/(.*),/\\1:^/x$,/y"}"#),
        "{body}"
    );
    let (status, body) = reconfigure(
        &proxy,
        &[
            ("serviceName", "old"),
            ("servicePath", "/legacy"),
            ("reqPathSearch", "^/legacy/"),
            ("reqPathReplace", "/modern/"),
        ],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let a = request(proxy.http_port, "localhost", "/api/v1/hello?x=1", &[]).await;
    assert_eq!(a.status, 200, "{a:?}");
    assert!(a.body.starts_with("api /hello?x=1\n"), "{a:?}");
    let a = request(proxy.http_port, "localhost", "/legacy/page", &[]).await;
    assert!(a.body.starts_with("old /modern/page\n"), "{a:?}");
    let keys = registry.kv_keys("docker-flow/api/").await;
    assert!(keys.contains(&"docker-flow/api/reqpathsearchreplace".to_owned()));

    // A regex HAProxy cannot compile: 500 with its reason, the live rewrite stays.
    let (status, body) = reconfigure(
        &proxy,
        &[
            ("serviceName", "api"),
            ("servicePath", "/api/v1"),
            ("reqPathSearchReplace", "^/api/v1/(unclosed,/x"),
        ],
    )
    .await;
    assert_eq!(status, 500, "{body}");
    let a = request(proxy.http_port, "localhost", "/api/v1/still", &[]).await;
    assert!(a.body.starts_with("api /still\n"), "{a:?}");

    // A new flow-proxy recovers the rewrite from KV alone.
    proxy.stop().await;
    let proxy = Proxy::start(&registry, "docker-flow").await;
    let a = request(proxy.http_port, "localhost", "/api/v1/again", &[]).await;
    assert!(a.body.starts_with("api /again\n"), "{a:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_auth_per_service_encrypted_and_global() {
    if !haproxy_available() {
        return;
    }
    let registry = Registry::start().await;
    let mut proxy = Proxy::start_with(
        &registry,
        "docker-flow",
        &["--users".to_owned(), "admin:global-pw".to_owned()],
    )
    .await;
    for name in ["plain", "hashed", "open"] {
        registry.register(name, 1, echo_backend(name).await).await;
    }
    let (status, body) = reconfigure(
        &proxy,
        &[
            ("serviceName", "plain"),
            ("servicePath", "/plain"),
            ("users", "alice:s3cret$,bob:pw2"),
        ],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains(r#""Users":[{"Username":"alice","PassEncrypted":false},{"Username":"bob","PassEncrypted":false}]"#),
        "{body}"
    );
    assert!(!body.contains("s3cret"), "passwords are not echoed: {body}");
    // The hash of "secret" (openssl passwd -6 -salt flowprox secret).
    let hash = "$6$flowprox$YqHUONHnT.D3H65HcDSIS2NwpjbecIomIJbo/W56qC1UA4dP82XNDGEDYBgC88F7wCZ5HAeWJNLF5wQHqfnRH/";
    let (status, body) = reconfigure(
        &proxy,
        &[
            ("serviceName", "hashed"),
            ("servicePath", "/hashed"),
            ("users", &format!("carol:{hash}")),
            ("usersPassEncrypted", "true"),
        ],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) =
        reconfigure(&proxy, &[("serviceName", "open"), ("servicePath", "/open")]).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = reconfigure(
        &proxy,
        &[
            ("serviceName", "bad"),
            ("servicePath", "/bad"),
            ("users", "eve:two words"),
        ],
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("invalid users"), "{body}");

    let port = proxy.http_port;
    let a = request(port, "localhost", "/plain", &[]).await;
    assert_eq!(a.status, 401, "{a:?}");
    assert!(a.header("www-authenticate").is_some(), "{a:?}");
    assert_eq!(
        request(port, "localhost", "/plain", &[&basic("alice", "wrong")])
            .await
            .status,
        401
    );
    let a = request(port, "localhost", "/plain", &[&basic("alice", "s3cret$")]).await;
    assert_eq!(a.status, 200, "{a:?}");
    assert!(
        !a.body.contains("authorization:"),
        "credentials are not passed on: {a:?}"
    );
    assert_eq!(
        request(port, "localhost", "/plain", &[&basic("bob", "pw2")])
            .await
            .status,
        200
    );
    // The service's own users replace the global ones.
    assert_eq!(
        request(port, "localhost", "/plain", &[&basic("admin", "global-pw")])
            .await
            .status,
        401
    );
    assert_eq!(request(port, "localhost", "/hashed", &[]).await.status, 401);
    assert_eq!(
        request(port, "localhost", "/hashed", &[&basic("carol", hash)])
            .await
            .status,
        401,
        "the hash itself is not the password"
    );
    assert_eq!(
        request(port, "localhost", "/hashed", &[&basic("carol", "secret")])
            .await
            .status,
        200
    );
    // USERS protects services without users of their own.
    assert_eq!(request(port, "localhost", "/open", &[]).await.status, 401);
    assert_eq!(
        request(port, "localhost", "/open", &[&basic("admin", "global-pw")])
            .await
            .status,
        200
    );
    proxy.stop().await;
}

/// Requests `/app` with `cookie` (if any) until the answer comes from `want` (or any backend
/// when `want` is empty); returns the backend that answered and the `Set-Cookie` value.
async fn sticky_get(port: u16, cookie: Option<&str>) -> (String, Option<String>) {
    let header = cookie.map(|c| format!("Cookie: {c}"));
    let headers: Vec<&str> = header.iter().map(String::as_str).collect();
    let a = request(port, "localhost", "/app", &headers).await;
    assert_eq!(a.status, 200, "{a:?}");
    let backend = a.body.split_whitespace().next().unwrap_or("").to_owned();
    let set = a
        .header("set-cookie")
        .map(|c| c.split(';').next().unwrap_or("").to_owned());
    (backend, set)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sticky_sessions_follow_the_instance_across_slot_moves_and_reloads() {
    if !haproxy_available() {
        return;
    }
    let registry = Registry::start().await;
    let mut proxy = Proxy::start_with(
        &registry,
        "docker-flow",
        &["--sticky-key".to_owned(), "shared-secret".to_owned()],
    )
    .await;
    let (pa, pb) = (echo_backend("a").await, echo_backend("b").await);
    let ida = registry.register("app", 1, pa).await;
    let idb = registry.register("app", 2, pb).await;
    let (status, body) = reconfigure(
        &proxy,
        &[
            ("serviceName", "app"),
            ("servicePath", "/app"),
            ("sessionType", "sticky-server"),
        ],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(r#""SessionType":"sticky-server""#), "{body}");
    let port = proxy.http_port;
    wait_until("both instances answer", || async {
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..6 {
            seen.insert(sticky_get(port, None).await.0);
        }
        seen.len() == 2
    })
    .await;
    // The cookie of instance b.
    let mut cookie_b = None;
    for _ in 0..20 {
        let (who, set) = sticky_get(port, None).await;
        if who == "b" {
            cookie_b = set;
            break;
        }
    }
    let cookie_b = cookie_b.expect("a Set-Cookie from instance b");
    assert!(cookie_b.starts_with("app="), "{cookie_b}");
    for _ in 0..5 {
        assert_eq!(sticky_get(port, Some(&cookie_b)).await.0, "b");
    }

    // Both instances leave; b comes back first, so it takes the first slot (a's old one),
    // and a takes the second: only `set server addr` moves them, no reload.
    let pid = proxy.worker_pid().await;
    registry.deregister(&ida).await;
    registry.deregister(&idb).await;
    wait_until("no instance is routed", || async {
        request(port, "localhost", "/app", &[]).await.status == 503
    })
    .await;
    registry.register("app", 3, pb).await;
    wait_until("b is routed again", || async {
        request(port, "localhost", "/app", &[]).await.status == 200
    })
    .await;
    registry.register("app", 4, pa).await;
    wait_until("a is routed again", || async {
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..6 {
            seen.insert(sticky_get(port, None).await.0);
        }
        seen.len() == 2
    })
    .await;
    assert_eq!(
        proxy.worker_pid().await,
        pid,
        "instance churn needs no reload"
    );
    // The file is rewritten right after the runtime change that routed the instance.
    let config_path = proxy.data_dir.path().join("haproxy.cfg");
    let slot_of = |config: &str, p: u16| {
        config
            .lines()
            .find(|l| l.contains(&format!("127.0.0.1:{p} ")))
            .and_then(|l| l.split_whitespace().nth(1))
            .unwrap_or("")
            .to_owned()
    };
    wait_until("the file shows both slots", || async {
        let config = std::fs::read_to_string(&config_path).unwrap_or_default();
        slot_of(&config, pa) == "s2"
    })
    .await;
    let config = std::fs::read_to_string(&config_path).unwrap();
    assert_eq!(
        (slot_of(&config, pb), slot_of(&config, pa)),
        ("s1".to_owned(), "s2".to_owned()),
        "{config}"
    );
    for _ in 0..5 {
        assert_eq!(
            sticky_get(port, Some(&cookie_b)).await.0,
            "b",
            "the cookie follows the instance to its new slot"
        );
    }

    // A structural change reloads HAProxy; the cookie still leads to b.
    registry
        .register("other", 1, echo_backend("other").await)
        .await;
    let (status, body) = reconfigure(
        &proxy,
        &[("serviceName", "other"), ("servicePath", "/other")],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_ne!(proxy.worker_pid().await, pid, "a new route reloads");
    for _ in 0..5 {
        assert_eq!(sticky_get(port, Some(&cookie_b)).await.0, "b");
    }
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_redirects_service_header_default_backend_and_timeouts() {
    if !haproxy_available() {
        return;
    }
    let registry = Registry::start().await;
    let mut proxy = Proxy::start(&registry, "docker-flow").await;
    for name in ["web", "v3", "fallback"] {
        registry.register(name, 1, echo_backend(name).await).await;
    }
    let (status, body) = reconfigure(
        &proxy,
        &[
            ("serviceName", "web"),
            ("servicePath", "/web"),
            ("serviceDomain", "new.example.com"),
            ("redirectFromDomain", "old.example.com,*.older.example.com"),
            ("addReqHeader", "X-Added one two,X-Other v"),
            ("setReqHeader", "X-Set yes"),
            ("delReqHeader", "X-Secret"),
            ("addResHeader", "X-Res-Added a"),
            ("setResHeader", "Cache-Control no-cache"),
            ("delResHeader", "Server"),
            ("timeoutServer", "61"),
            ("timeoutTunnel", "3601"),
        ],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains(r#""AddReqHeader":["X-Added one two","X-Other v"]"#)
            && body.contains(r#""RedirectFromDomain":["old.example.com","*.older.example.com"]"#)
            && body.contains(r#""TimeoutServer":"61""#),
        "{body}"
    );
    let (status, body) = reconfigure(
        &proxy,
        &[
            ("serviceName", "v3"),
            ("servicePath", "/web"),
            ("serviceDomain", "new.example.com"),
            ("serviceHeader", "X-Version:3"),
        ],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains(r#""ServiceHeader":{"X-Version":"3"}"#),
        "{body}"
    );
    let (status, body) = reconfigure(
        &proxy,
        &[
            ("serviceName", "fallback"),
            ("servicePath", "/fallback"),
            ("isDefaultBackend", "true"),
        ],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    for (param, bad) in [
        ("addReqHeader", "X-Bad value\nhttp-request deny"),
        ("setResHeader", "X-Leak %[env(CONSUL_HTTP_TOKEN)]"),
        ("setReqHeader", "X-Quote it's"),
        ("serviceHeader", "X-Version:3 4"),
        ("timeoutServer", "-1"),
    ] {
        let (status, body) = reconfigure(
            &proxy,
            &[
                ("serviceName", "web"),
                ("servicePath", "/web"),
                (param, bad),
            ],
        )
        .await;
        assert_eq!(status, 400, "{param}={bad:?}: {body}");
        assert!(body.contains(&format!("invalid {param}")), "{body}");
    }
    let (status, body) = reconfigure(
        &proxy,
        &[
            ("serviceName", "second"),
            ("servicePath", "/second"),
            ("isDefaultBackend", "true"),
        ],
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("already the default backend"), "{body}");

    let port = proxy.http_port;
    let a = request(
        port,
        "new.example.com",
        "/web/page",
        &["X-Secret: hidden", "X-Set: no"],
    )
    .await;
    assert_eq!(a.status, 200, "{a:?}");
    assert!(a.body.starts_with("web /web/page\n"), "{a:?}");
    assert!(a.body.contains("x-added: one two\n"), "{a:?}");
    assert!(a.body.contains("x-other: v\n"), "{a:?}");
    assert!(
        a.body.contains("x-set: yes\n") && !a.body.contains("x-set: no"),
        "{a:?}"
    );
    assert!(!a.body.contains("x-secret"), "{a:?}");
    assert_eq!(a.header("x-res-added").as_deref(), Some("a"), "{a:?}");
    assert_eq!(
        a.header("cache-control").as_deref(),
        Some("no-cache"),
        "{a:?}"
    );
    assert_eq!(a.header("server"), None, "{a:?}");
    assert_eq!(a.header("x-backend").as_deref(), Some("web"), "{a:?}");

    // serviceHeader: the same host and path go to v3 when the header matches.
    let a = request(port, "new.example.com", "/web/page", &["X-Version: 3"]).await;
    assert!(a.body.starts_with("v3 /web/page\n"), "{a:?}");
    let a = request(port, "new.example.com", "/web/page", &["X-Version: 2"]).await;
    assert!(a.body.starts_with("web "), "{a:?}");

    // redirectFromDomain: 301 to the first serviceDomain, path kept.
    for host in ["old.example.com", "a.older.example.com:8080"] {
        let a = request(port, host, "/web/x?y=1", &[]).await;
        assert_eq!(a.status, 301, "{host}: {a:?}");
        assert_eq!(
            a.header("location").as_deref(),
            Some("http://new.example.com/web/x?y=1"),
            "{a:?}"
        );
    }

    // isDefaultBackend: what no route matches goes to fallback instead of the 503 page.
    let a = request(port, "unknown.example.com", "/nothing", &[]).await;
    assert_eq!(a.status, 200, "{a:?}");
    assert!(a.body.starts_with("fallback /nothing\n"), "{a:?}");

    let config = std::fs::read_to_string(proxy.data_dir.path().join("haproxy.cfg")).unwrap();
    assert!(
        config.contains("\n    timeout server 61s\n    timeout tunnel 3601s\n"),
        "{config}"
    );

    // Instance churn in such a backend still goes through the runtime API.
    let pid = proxy.worker_pid().await;
    registry.register("web", 2, echo_backend("web").await).await;
    wait_until("the second instance is in the configuration", || async {
        let c = std::fs::read_to_string(proxy.data_dir.path().join("haproxy.cfg")).unwrap();
        c.matches("check weight 1").count() >= 4
    })
    .await;
    assert_eq!(
        proxy.worker_pid().await,
        pid,
        "no reload for a new instance"
    );

    // Changing a routing parameter alone is structural: a reload.
    let (status, body) = reconfigure(
        &proxy,
        &[
            ("serviceName", "fallback"),
            ("servicePath", "/fallback"),
            ("isDefaultBackend", "false"),
        ],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_ne!(proxy.worker_pid().await, pid);
    assert_eq!(
        request(port, "unknown.example.com", "/nothing", &[])
            .await
            .status,
        503
    );
    proxy.stop().await;
}

/// The bytes of a TLS ClientHello naming `server_name`.
fn client_hello(server_name: &str) -> Vec<u8> {
    use std::sync::Arc;
    flow_proxy::tls::install_crypto_provider();
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from(server_name.to_owned()).unwrap();
    let mut conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let mut out = Vec::new();
    conn.write_tls(&mut out).unwrap();
    out
}

/// Sends `bytes` to `port` and returns the first line of the answer ("" on failure).
async fn tcp_exchange(port: u16, bytes: &[u8]) -> String {
    let attempt = async {
        let mut s = TcpStream::connect(("127.0.0.1", port)).await.ok()?;
        s.write_all(bytes).await.ok()?;
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out).await;
        Some(String::from_utf8_lossy(&out).lines().next()?.to_owned())
    };
    tokio::time::timeout(Duration::from_secs(20), attempt)
        .await
        .ok()
        .flatten()
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_and_sni_services_get_their_own_ports() {
    if !haproxy_available() {
        return;
    }
    let registry = Registry::start().await;
    let mut proxy = Proxy::start(&registry, "docker-flow").await;
    registry.register("db", 1, tcp_backend("db").await).await;
    registry
        .register("tls-a", 1, tcp_backend("tls-a").await)
        .await;
    registry
        .register("tls-b", 1, tcp_backend("tls-b").await)
        .await;
    let (tcp_port, sni_port) = (free_port(), free_port());
    let (tcp_s, sni_s) = (tcp_port.to_string(), sni_port.to_string());

    let (status, body) = reconfigure(
        &proxy,
        &[
            ("serviceName", "db"),
            ("reqMode", "tcp"),
            ("srcPort", &tcp_s),
        ],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains(r#""ServicePath":null"#)
            && body.ends_with(&format!(r#""ReqMode":"tcp","SrcPort":{tcp_port}}}"#)),
        "{body}"
    );
    for (name, domain) in [
        ("tls-a", "a.example.com,*.a.example.org"),
        ("tls-b", "b.example.com"),
    ] {
        let (status, body) = reconfigure(
            &proxy,
            &[
                ("serviceName", name),
                ("reqMode", "sni"),
                ("srcPort", &sni_s),
                ("serviceDomain", domain),
            ],
        )
        .await;
        assert_eq!(status, 200, "{body}");
    }
    assert_eq!(tcp_exchange(tcp_port, b"hello\n").await, "db");
    assert_eq!(
        tcp_exchange(sni_port, &client_hello("a.example.com")).await,
        "tls-a"
    );
    assert_eq!(
        tcp_exchange(sni_port, &client_hello("x.a.example.org")).await,
        "tls-a"
    );
    assert_eq!(
        tcp_exchange(sni_port, &client_hello("b.example.com")).await,
        "tls-b"
    );
    assert_eq!(
        tcp_exchange(sni_port, &client_hello("c.example.com")).await,
        ""
    );

    // Clashes are refused before anything is written.
    let kv_before = registry.kv_keys("docker-flow/").await;
    let http = proxy.http_port.to_string();
    for (params, want) in [
        (
            vec![
                ("serviceName", "x"),
                ("reqMode", "tcp"),
                ("srcPort", http.as_str()),
            ],
            "HTTP_PORT",
        ),
        (
            vec![
                ("serviceName", "x"),
                ("reqMode", "tcp"),
                ("srcPort", sni_s.as_str()),
            ],
            "already used by the service tls-a",
        ),
        (
            vec![
                ("serviceName", "x"),
                ("reqMode", "tcp"),
                ("srcPort", tcp_s.as_str()),
            ],
            "already used by the service db",
        ),
        (
            vec![
                ("serviceName", "x"),
                ("reqMode", "sni"),
                ("srcPort", tcp_s.as_str()),
                ("serviceDomain", "x.example.com"),
            ],
            "already used by the service db",
        ),
        (vec![("serviceName", "x"), ("reqMode", "tcp")], "srcPort"),
        (
            vec![("serviceName", "x"), ("reqMode", "sni"), ("srcPort", "1")],
            "serviceDomain",
        ),
    ] {
        let (status, body) = reconfigure(&proxy, &params).await;
        assert_eq!(status, 400, "{params:?}: {body}");
        assert!(body.contains(want), "{params:?}: {body}");
    }
    assert_eq!(registry.kv_keys("docker-flow/").await, kv_before);

    // A new instance of the TCP service joins through the runtime API.
    let pid = proxy.worker_pid().await;
    registry.register("db", 2, tcp_backend("db2").await).await;
    wait_until("both TCP instances answer", || async {
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..6 {
            seen.insert(tcp_exchange(tcp_port, b"x").await);
        }
        seen.contains("db") && seen.contains("db2")
    })
    .await;
    assert_eq!(proxy.worker_pid().await, pid);
    proxy.stop().await;
}
