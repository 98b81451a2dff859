//! Rendered configurations routing real traffic through a real HAProxy: domain matching (port
//! ignored, no suffix tricks, wildcards), single-quoted patterns taken literally, a service
//! without instances answering 503 instead of falling through, the default 503 page, and a
//! slot filled through the runtime commands of `diff`.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use flow_proxy::domain::{
    CatalogSnapshot, Health, Instance, InstanceId, NodeName, ServiceIntent, ServiceName, Weights,
};
use flow_proxy::haproxy::{HaproxyPaths, SoftStopSettings};
use flow_proxy::plan::{Change, PlanSettings, SlotTable, diff, plan};
use flow_proxy::render::{RenderSettings, render};

mod support;
use support::haproxy_available;

/// A tiny HTTP backend answering every request with `body`.
fn backend(body: &'static str) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut s in l.incoming().flatten() {
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                let mut got = Vec::new();
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
                let resp = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(resp.as_bytes());
            });
        }
    });
    port
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Sends one request; returns (status, body).
fn get(port: u16, host: &str, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    let status = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = out.split("\r\n\r\n").nth(1).unwrap_or("").to_owned();
    (status, body)
}

fn intent(pairs: &[(&str, &str)]) -> ServiceIntent {
    let map = pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    ServiceIntent::from_params(&map).unwrap()
}

fn inst(id: &str, port: u16) -> Instance {
    Instance {
        id: InstanceId::new(id).unwrap(),
        node: NodeName::new("node1").unwrap(),
        address: "127.0.0.1".parse().unwrap(),
        port,
        tags: BTreeSet::new(),
        meta: BTreeMap::new(),
        health: Health::Passing,
        weights: Weights::default(),
    }
}

struct Haproxy(Child);
impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts HAProxy on the configuration at `paths` and waits until `http_port` accepts.
fn start_haproxy(paths: &HaproxyPaths, http_port: u16) -> Haproxy {
    let hp = Haproxy(
        Command::new("haproxy")
            .arg("-f")
            .arg(paths.config())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", http_port)).is_err() {
        assert!(Instant::now() < deadline, "haproxy did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    hp
}

fn runtime(paths: &HaproxyPaths, commands: &str) -> String {
    let mut s = UnixStream::connect(paths.runtime_socket()).unwrap();
    s.write_all(commands.as_bytes()).unwrap();
    s.write_all(b"\n").unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

#[test]
fn rendered_config_routes_real_traffic() {
    if !haproxy_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let paths = HaproxyPaths::new(dir.path().join("hp")).unwrap();
    std::fs::create_dir_all(paths.data_dir()).unwrap();
    let (demo1, demo2) = (backend("demo1"), backend("demo2"));
    let (wild, lit, api) = (backend("wild"), backend("lit"), backend("api"));

    let intents: BTreeMap<ServiceName, ServiceIntent> = [
        intent(&[
            ("serviceName", "go-demo"),
            ("servicePath", "/demo"),
            ("serviceDomain", "my-domain.com"),
        ]),
        intent(&[
            ("serviceName", "wild"),
            ("servicePath", "/"),
            ("serviceDomain", "*.example.org"),
        ]),
        intent(&[("serviceName", "lit"), ("servicePath", "/x${HOME}")]),
        intent(&[("serviceName", "api"), ("servicePath", "/api")]),
        intent(&[("serviceName", "gone"), ("servicePath", "/api/v2")]),
    ]
    .into_iter()
    .map(|i| (i.name.clone(), i))
    .collect();
    let mut cat = CatalogSnapshot::new();
    let name = |s: &str| ServiceName::new(s).unwrap();
    cat.set_service(name("go-demo"), vec![inst("a", demo1)]);
    cat.set_service(name("wild"), vec![inst("w", wild)]);
    cat.set_service(name("lit"), vec![inst("l", lit)]);
    cat.set_service(name("api"), vec![inst("p", api)]);
    let settings = PlanSettings::default();
    let p1 = plan(&intents, &cat, &SlotTable::default(), &settings);

    let http_port = free_port();
    let rs = RenderSettings {
        global_lines: paths.global_lines(&SoftStopSettings::default()),
        defaults_lines: paths.defaults_lines(),
        bind_address: "127.0.0.1".parse().unwrap(),
        http_port,
        https_port: None,
        ..RenderSettings::default()
    };
    let cfg = render(&p1, &rs).unwrap();
    std::fs::write(paths.config(), cfg.as_str()).unwrap();
    let _hp = start_haproxy(&paths, http_port);

    assert_eq!(
        get(http_port, "my-domain.com", "/demo/hello"),
        (200, "demo1".into())
    );
    assert_eq!(
        get(http_port, "My-Domain.COM:8080", "/demo"),
        (200, "demo1".into())
    );
    let (status, body) = get(http_port, "my-domain.com.evil.org", "/demo");
    assert_eq!(status, 503);
    assert!(body.contains("no service is configured"), "{body}");
    assert_eq!(
        get(http_port, "a.b.example.org", "/x"),
        (200, "wild".into())
    );
    assert_eq!(get(http_port, "example.org", "/nope").0, 503);
    assert_eq!(get(http_port, "any", "/x${HOME}/y"), (200, "lit".into()));
    assert_eq!(get(http_port, "any", "/api/v1"), (200, "api".into()));
    // The service without instances answers 503 and never falls through to /api.
    let (status, body) = get(http_port, "any", "/api/v2/x");
    assert_eq!(status, 503);
    assert!(!body.contains("no service is configured"), "{body}");

    // Scale go-demo to two instances through runtime commands only.
    cat.set_service(name("go-demo"), vec![inst("a", demo1), inst("b", demo2)]);
    let p2 = plan(&intents, &cat, &p1.slots, &settings);
    let Change::Runtime(cmds) = diff(&p1, &p2) else {
        panic!("expected runtime commands");
    };
    let text: Vec<String> = cmds.iter().map(ToString::to_string).collect();
    let answer = runtime(&paths, &text.join(";"));
    assert!(!answer.to_lowercase().contains("error"), "{answer}");
    let mut seen = BTreeSet::new();
    for _ in 0..10 {
        seen.insert(get(http_port, "my-domain.com", "/demo").1);
    }
    assert_eq!(
        seen,
        BTreeSet::from(["demo1".to_owned(), "demo2".to_owned()])
    );
}

/// HAProxy 2.6 refuses a line of more than 64 words: long domain lists are split over lines
/// that keep their meaning (ORed ACLs, repeated rules).
#[test]
fn long_domain_lists_are_split_over_lines() {
    if !haproxy_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let paths = HaproxyPaths::new(dir.path().join("hp")).unwrap();
    std::fs::create_dir_all(paths.data_dir()).unwrap();
    let many = backend("many");
    let list = |f: &dyn Fn(usize) -> String| (0..100).map(f).collect::<Vec<_>>().join(",");
    let domains = format!(
        "{},{}",
        list(&|i| format!("host{i}.example.com")),
        list(&|i| format!("*.wild{i}.example.net"))
    );
    let redirects = list(&|i| format!("old{i}.example.org"));
    let sni_domains = list(&|i| format!("tls{i}.example.com"));
    let sni_port = free_port();
    let intents: BTreeMap<ServiceName, ServiceIntent> = [
        intent(&[
            ("serviceName", "many"),
            ("servicePath", "/"),
            ("serviceDomain", &domains),
            ("redirectFromDomain", &redirects),
        ]),
        intent(&[
            ("serviceName", "tls"),
            ("reqMode", "sni"),
            ("srcPort", &sni_port.to_string()),
            ("servicePath", "/"),
            ("serviceDomain", &sni_domains),
        ]),
    ]
    .into_iter()
    .map(|i| (i.name.clone(), i))
    .collect();
    let mut cat = CatalogSnapshot::new();
    cat.set_service(ServiceName::new("many").unwrap(), vec![inst("m", many)]);
    let p = plan(
        &intents,
        &cat,
        &SlotTable::default(),
        &PlanSettings::default(),
    );
    let http_port = free_port();
    let rs = RenderSettings {
        global_lines: paths.global_lines(&SoftStopSettings::default()),
        defaults_lines: paths.defaults_lines(),
        bind_address: "127.0.0.1".parse().unwrap(),
        http_port,
        https_port: None,
        ..RenderSettings::default()
    };
    let cfg = render(&p, &rs).unwrap();
    let longest = cfg
        .as_str()
        .lines()
        .map(|l| l.split_whitespace().count())
        .max()
        .unwrap();
    assert!(longest <= 64, "a line has {longest} words");
    std::fs::write(paths.config(), cfg.as_str()).unwrap();
    let check = Command::new("haproxy")
        .arg("-c")
        .arg("-f")
        .arg(paths.config())
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    let _hp = start_haproxy(&paths, http_port);
    for host in [
        "host0.example.com",
        "host99.example.com",
        "a.wild99.example.net",
    ] {
        assert_eq!(get(http_port, host, "/x"), (200, "many".into()), "{host}");
    }
    assert_eq!(get(http_port, "host100.example.com", "/x").0, 503);
    for host in ["old0.example.org", "old99.example.org"] {
        assert_eq!(get(http_port, host, "/x").0, 301, "{host}");
    }
}
