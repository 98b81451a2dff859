//! The `flow-proxy` binary as an operator runs it: help, bad settings, and the `registry` and
//! `server` subcommands on the embedded registry (ports chosen at run time, state in a
//! temporary directory), including a restart that keeps the registry's state.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

mod support;
use support::haproxy_available;

const BIN: &str = env!("CARGO_BIN_EXE_flow-proxy");

/// A running `flow-proxy` whose log lines are collected; killed on drop.
struct Running {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Running {
    fn start(args: &[&str], envs: &[(&str, &str)]) -> Running {
        let mut command = Command::new(BIN);
        command
            .args(args)
            .env_remove("CONSUL_ADDRESS")
            .env("RUST_LOG", "info")
            .env("LOG_FORMAT", "json")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (key, value) in envs {
            command.env(key, value);
        }
        let mut child = command.spawn().expect("flow-proxy starts");
        let (tx, lines) = mpsc::channel();
        for stream in [
            Box::new(child.stdout.take().expect("stdout")) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().expect("stderr")),
        ] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
        }
        Running {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits (up to 30 s) for a log line containing all of `needles`, and returns it.
    fn wait_for_line(&mut self, needles: &[&str]) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(line) = self
                .seen
                .iter()
                .find(|l| needles.iter().all(|n| l.contains(n)))
            {
                return line.clone();
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => self.seen.push(line),
                Err(_) => panic!(
                    "no log line containing {needles:?}; output so far:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }

    /// The address the embedded registry reports it listens on.
    fn registry_address(&mut self) -> String {
        let line = self.wait_for_line(&["embedded registry listening"]);
        let value: serde_json::Value = serde_json::from_str(&line).expect("JSON log line");
        value["fields"]["address"]
            .as_str()
            .expect("address field")
            .to_owned()
    }

    /// Sends SIGTERM and waits for a clean exit.
    fn terminate(mut self) {
        let pid = self.child.id().to_string();
        let status = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill runs");
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                assert!(status.success(), "flow-proxy exited with {status}");
                return;
            }
            assert!(
                Instant::now() < deadline,
                "flow-proxy did not stop on SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn http(method: &str, url: &str, body: Option<&str>) -> (u16, String) {
    flow_proxy::tls::install_crypto_provider();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let client = reqwest::Client::new();
        let mut request = client.request(method.parse().unwrap(), url);
        if let Some(body) = body {
            request = request.body(body.to_owned());
        }
        let response = request.send().await.expect("request succeeds");
        let status = response.status().as_u16();
        (status, response.text().await.unwrap_or_default())
    })
}

#[test]
fn help_lists_the_subcommands() {
    let output = Command::new(BIN).arg("--help").output().unwrap();
    assert!(output.status.success());
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.contains("server"), "{text}");
    assert!(text.contains("registry"), "{text}");
    let output = Command::new(BIN)
        .args(["server", "--help"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    for setting in [
        "CONSUL_ADDRESS",
        "CONSUL_HTTP_TOKEN",
        "CONSUL_HTTP_TOKEN_FILE",
        "CONSUL_CACERT",
        "CONSUL_CLIENT_CERT",
        "CONSUL_CLIENT_KEY",
        "EMBEDDED_REGISTRY_ADDRESS",
        "DATA_DIR",
        "PROXY_INSTANCE_NAME",
        "API_ADDRESS",
        "BIND_ADDRESS",
        "HTTP_PORT",
        "HTTPS_PORT",
        "HAPROXY_BIN",
        "TEMPLATES_ROOT",
        "HEALTH_FILTER",
        "TIMEOUT_CONNECT",
        "TIMEOUT_CLIENT",
        "TIMEOUT_SERVER",
        "TIMEOUT_QUEUE",
        "TIMEOUT_HTTP_REQUEST",
        "TIMEOUT_HTTP_KEEP_ALIVE",
        "MAXCONN",
        "STOP_HAPROXY_ON_EXIT",
    ] {
        assert!(text.contains(setting), "{setting} missing from:\n{text}");
    }
}

#[test]
fn an_invalid_consul_address_is_refused_with_a_clear_message() {
    let output = Command::new(BIN)
        .args(["server"])
        .env("CONSUL_ADDRESS", "ftp://consul:8500")
        .env("DATA_DIR", tempfile::tempdir().unwrap().path())
        .output()
        .unwrap();
    assert!(!output.status.success());
    let text = String::from_utf8_lossy(&output.stderr);
    assert!(text.contains("ftp://consul:8500"), "{text}");
}

#[test]
fn registry_subcommand_serves_the_consul_api_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let mut registry = Running::start(
        &["registry"],
        &[
            ("EMBEDDED_REGISTRY_ADDRESS", "127.0.0.1:0"),
            ("DATA_DIR", dir.path().to_str().unwrap()),
            ("NODE_NAME", "cli-node"),
        ],
    );
    let address = registry.registry_address();
    let (status, body) = http("GET", &format!("http://{address}/v1/status/leader"), None);
    assert_eq!(status, 200);
    assert!(body.starts_with('"'), "{body}");
    let (status, body) = http("GET", &format!("http://{address}/v1/catalog/nodes"), None);
    assert_eq!(status, 200);
    assert!(body.contains("cli-node"), "{body}");
    registry.terminate();
    assert!(dir.path().join("registry").is_dir());
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A tiny HTTP backend answering `body`.
fn backend(body: &'static str) -> u16 {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut s in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut got = Vec::new();
                let mut buf = [0u8; 1024];
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

#[test]
fn server_on_the_embedded_registry_routes_and_recovers_its_state_across_restarts() {
    if !haproxy_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // Both ports picked here: an API on port 0 could be given the HTTP port just released.
    let http_number = free_port();
    let api_port = std::iter::repeat_with(free_port)
        .find(|p| *p != http_number)
        .unwrap();
    let http_port = http_number.to_string();
    let api_listen = format!("127.0.0.1:{api_port}");
    let envs = [
        ("EMBEDDED_REGISTRY_ADDRESS", "127.0.0.1:0"),
        ("DATA_DIR", dir.path().to_str().unwrap()),
        ("API_ADDRESS", api_listen.as_str()),
        ("BIND_ADDRESS", "127.0.0.1"),
        ("HTTP_PORT", http_port.as_str()),
        ("HTTPS_PORT", "0"),
        ("STOP_HAPROXY_ON_EXIT", "true"),
    ];
    let mut server = Running::start(&["server"], &envs);
    let address = server.registry_address();
    let api = api_address(&mut server);
    server.wait_for_line(&["recovered configuration is live"]);
    let port = backend("hello");
    let registration = format!(
        r#"{{"ID":"host:go-demo_1:8080","Name":"go-demo","Address":"127.0.0.1","Port":{port},"Check":null}}"#
    );
    let (status, body) = http(
        "PUT",
        &format!("http://{address}/v1/agent/service/register"),
        Some(&registration),
    );
    assert_eq!(status, 200, "{body}");
    let (status, body) = http(
        "PUT",
        &format!(
            "http://{api}/v1/docker-flow-proxy/reconfigure?serviceName=go-demo&servicePath=/demo"
        ),
        None,
    );
    assert_eq!(status, 200, "{body}");
    let route = format!("http://127.0.0.1:{http_port}/demo");
    assert_eq!(http("GET", &route, None), (200, "hello".to_owned()));
    server.terminate();

    // The registry's catalog and KV survive the restart, and so does the route.
    let mut restarted = Running::start(&["server"], &envs);
    restarted.registry_address();
    restarted.wait_for_line(&["recovered configuration is live", "\"services\":1"]);
    assert_eq!(http("GET", &route, None), (200, "hello".to_owned()));
    restarted.terminate();
}

/// The API address from the start-up line.
fn api_address(running: &mut Running) -> String {
    let line = running.wait_for_line(&["flow-proxy started"]);
    let value: serde_json::Value = serde_json::from_str(&line).expect("JSON log line");
    value["fields"]["api"]
        .as_str()
        .expect("api field")
        .to_owned()
}
