//! flow-proxy's log as an operator reads it: with `LOG_FORMAT=json` every line is one JSON
//! object; `RUST_LOG` filters; every reload and every runtime change is logged with its reason
//! (which service, what changed).

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

use support::{free_port, haproxy_available, http, wait_until};

const BIN: &str = env!("CARGO_BIN_EXE_flow-proxy");

/// A running `flow-proxy` whose stdout and stderr lines are collected; killed on drop.
struct Running {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    readers: Vec<std::thread::JoinHandle<()>>,
}

impl Running {
    fn start(args: &[&str], envs: &[(&str, String)]) -> Running {
        let mut command = Command::new(BIN);
        command
            .args(args)
            .env_remove("CONSUL_ADDRESS")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in envs {
            command.env(k, v);
        }
        let mut child = command.spawn().expect("flow-proxy starts");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let mut readers = Vec::new();
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let lines = Arc::clone(&lines);
            readers.push(std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    lines.lock().unwrap().push(line);
                }
            }));
        }
        Running {
            child,
            lines,
            readers,
        }
    }

    fn snapshot(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// Waits for a line holding every needle and returns it.
    async fn line(&self, needles: &[&str]) -> String {
        let find = || {
            self.snapshot()
                .into_iter()
                .find(|l| needles.iter().all(|n| l.contains(n)))
        };
        let mut found = None;
        wait_until(&format!("a log line with {needles:?}"), || {
            found = find();
            std::future::ready(found.is_some())
        })
        .await;
        found.unwrap_or_else(|| panic!("{needles:?} not in {:#?}", self.snapshot()))
    }

    /// SIGTERM, a clean exit, and every line it wrote.
    fn terminate(mut self) -> Vec<String> {
        let pid = self.child.id().to_string();
        assert!(
            Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .unwrap()
                .success()
        );
        let status = self.child.wait().unwrap();
        assert!(status.success(), "flow-proxy exited with {status}");
        for reader in self.readers.drain(..) {
            reader.join().unwrap();
        }
        self.snapshot()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn request(method: &str, url: &str, body: &str) -> (u16, String) {
    flow_proxy::tls::install_crypto_provider();
    let response = reqwest::Client::new()
        .request(method.parse().unwrap(), url)
        .body(body.to_owned())
        .send()
        .await
        .expect("request succeeds");
    let status = response.status().as_u16();
    (status, response.text().await.unwrap_or_default())
}

fn register(id: &str, port: u16) -> String {
    format!(r#"{{"ID":"{id}","Name":"app","Address":"127.0.0.1","Port":{port}}}"#)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_lines_and_reasons_of_every_reload_and_runtime_change() {
    if !haproxy_available() {
        return;
    }
    let dir = tempfile::Builder::new()
        .prefix("fp")
        .tempdir_in("/tmp")
        .unwrap();
    let api = format!("127.0.0.1:{}", free_port());
    let http_port = free_port();
    let server = Running::start(
        &["server"],
        &[
            ("LOG_FORMAT", "json".into()),
            ("RUST_LOG", "info".into()),
            ("EMBEDDED_REGISTRY_ADDRESS", "127.0.0.1:0".into()),
            ("API_ADDRESS", api.clone()),
            ("BIND_ADDRESS", "127.0.0.1".into()),
            ("HTTP_PORT", http_port.to_string()),
            ("HTTPS_PORT", "0".into()),
            ("DATA_DIR", dir.path().display().to_string()),
            ("STOP_HAPROXY_ON_EXIT", "true".into()),
        ],
    );
    let line = server.line(&["embedded registry listening"]).await;
    let value: serde_json::Value = serde_json::from_str(&line).unwrap();
    let registry = value["fields"]["address"].as_str().unwrap().to_owned();
    server.line(&["recovered configuration is live"]).await;

    let one = support::backend("one").await;
    let (status, body) = request(
        "PUT",
        &format!("http://{registry}/v1/agent/service/register"),
        &register("host:app_1:8080", one),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = request(
        "PUT",
        &format!("http://{api}/v1/docker-flow-proxy/reconfigure?serviceName=app&servicePath=/app"),
        "",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let reload = server.line(&["HAProxy reloaded", "added app"]).await;
    let reload: serde_json::Value = serde_json::from_str(&reload).unwrap();
    assert_eq!(reload["fields"]["services"], "[\"app\"]", "{reload}");
    assert_eq!(
        reload["fields"]["reason"], "configuration structure changed",
        "{reload}"
    );

    // A second instance goes live through the runtime API, logged with what changed.
    let two = support::backend("two").await;
    let (status, body) = request(
        "PUT",
        &format!("http://{registry}/v1/agent/service/register"),
        &register("host:app_2:8080", two),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let runtime = server
        .line(&[
            "instance changes applied through the runtime API",
            &format!("app instances +127.0.0.1:{two}"),
        ])
        .await;
    let runtime: serde_json::Value = serde_json::from_str(&runtime).unwrap();
    assert!(
        runtime["fields"]["commands"]
            .as_str()
            .unwrap()
            .contains(&format!("addr 127.0.0.1 port {two}")),
        "{runtime}"
    );
    wait_until("the second instance serves", || async {
        http(http_port, "GET", "localhost", "/app").await.1 == "two\n"
    })
    .await;

    let lines = server.terminate();
    assert!(lines.len() > 5, "{lines:#?}");
    for line in &lines {
        let value: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not one JSON object ({e}): {line:?}"));
        assert!(value.is_object(), "{line}");
        for key in ["timestamp", "level", "fields", "target"] {
            assert!(value.get(key).is_some(), "no {key} in {line}");
        }
    }
}

#[tokio::test]
async fn rust_log_filters_by_level() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let envs = |level: &str| {
        vec![
            ("LOG_FORMAT", "json".to_owned()),
            ("RUST_LOG", level.to_owned()),
            ("EMBEDDED_REGISTRY_ADDRESS", format!("127.0.0.1:{port}")),
            ("DATA_DIR", dir.path().display().to_string()),
        ]
    };
    let quiet = Running::start(&["registry"], &envs("warn"));
    wait_until("the registry answers", || async {
        http(port, "GET", "localhost", "/v1/status/leader").await.0 == 200
    })
    .await;
    let lines = quiet.terminate();
    assert!(lines.iter().all(|l| !l.contains("\"INFO\"")), "{lines:#?}");

    let chatty = Running::start(&["registry"], &envs("info"));
    chatty
        .line(&["embedded registry listening", "\"INFO\""])
        .await;
    chatty.terminate();
}
