//! `flow-proxy reconfigure`, `flow-proxy remove` and `flow-proxy ping` as an operator runs them against a running
//! instance: the JSON answer on stdout, the exit status, the reason of a failure on stderr, and
//! `API_TOKEN` sent as a bearer token.

mod support;

use std::process::Output;

use support::{Proxy, Registry, backend, free_port, haproxy_available, wait_until};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const BIN: &str = env!("CARGO_BIN_EXE_flow-proxy");

async fn cli(args: &[&str], envs: &[(&str, &str)]) -> Output {
    let mut command = tokio::process::Command::new(BIN);
    command
        .args(args)
        .env_remove("API_ADDRESS")
        .env_remove("API_TOKEN");
    for (k, v) in envs {
        command.env(k, v);
    }
    command.output().await.expect("flow-proxy runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconfigure_and_remove_drive_a_running_instance() {
    if !haproxy_available() {
        return;
    }
    let registry = Registry::start().await;
    let mut proxy = Proxy::start(&registry, "docker-flow").await;
    let port = backend("from the app").await;
    registry.register("go-demo", 1, port).await;
    let api = proxy.api.to_string();

    // The image's health check.
    let out = cli(&["ping", "--api-address", &api], &[]).await;
    assert!(out.status.success(), "{out:?}");
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    assert_eq!(answer["Status"], "OK", "{answer}");

    let out = cli(
        &[
            "reconfigure",
            "--api-address",
            &api,
            "--service-name",
            "go-demo",
            "--service-path",
            "/demo",
            "--param",
            "pathType=path_beg",
        ],
        &[],
    )
    .await;
    assert!(out.status.success(), "{out:?}");
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    assert_eq!(answer["Status"], "OK", "{answer}");
    assert_eq!(answer["ServiceName"], "go-demo");
    assert_eq!(answer["ServicePath"], serde_json::json!(["/demo"]));
    assert_eq!(answer["PathType"], "path_beg");
    // The answer comes once the route is live.
    assert_eq!(
        proxy.get("localhost", "/demo/hello").await,
        (200, "from the app\n".to_owned())
    );

    // Bad input: the server's 400 and its message, and a failing exit status.
    let out = cli(
        &[
            "reconfigure",
            "--api-address",
            &format!("http://{api}"),
            "--service-name",
            "go-demo",
        ],
        &[],
    )
    .await;
    assert!(!out.status.success(), "{out:?}");
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    assert_eq!(answer["Status"], "NOK", "{answer}");
    assert!(
        answer["Message"]
            .as_str()
            .unwrap()
            .contains("The following queries are mandatory"),
        "{answer}"
    );
    assert!(text(&out.stderr).contains("HTTP 400"), "{out:?}");
    assert_eq!(proxy.get("localhost", "/demo/hello").await.0, 200);

    // API_ADDRESS from the environment names the target too.
    let out = cli(
        &["remove", "--service-name", "go-demo"],
        &[("API_ADDRESS", &api)],
    )
    .await;
    assert!(out.status.success(), "{out:?}");
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    assert_eq!(answer["Status"], "OK", "{answer}");
    assert_eq!(answer["ServiceName"], "go-demo");
    wait_until("the route is gone", || async {
        proxy.get("localhost", "/demo/hello").await.0 == 503
    })
    .await;
    proxy.stop().await;
}

#[tokio::test]
async fn an_unreachable_instance_is_a_failure_with_a_clear_message() {
    let port = free_port();
    let out = cli(
        &[
            "remove",
            "--api-address",
            &format!("127.0.0.1:{port}"),
            "--service-name",
            "go-demo",
        ],
        &[],
    )
    .await;
    assert!(!out.status.success(), "{out:?}");
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "cannot reach flow-proxy at http://127.0.0.1:{port}/v1/docker-flow-proxy/remove"
        )),
        "{stderr}"
    );
    assert!(out.stdout.is_empty(), "{out:?}");
}

/// A one-shot HTTP server that records the request it gets and answers `status` with `body`.
async fn recording_server(
    status: &'static str,
    body: &'static str,
) -> (u16, tokio::task::JoinHandle<String>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        let (mut conn, _) = listener.accept().await.unwrap();
        let mut buf = Vec::new();
        let mut chunk = [0u8; 1024];
        while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = conn.read(&mut chunk).await.unwrap();
            assert!(n > 0, "connection closed early");
            buf.extend_from_slice(&chunk[..n]);
        }
        let resp = format!(
            "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        conn.write_all(resp.as_bytes()).await.unwrap();
        conn.shutdown().await.unwrap();
        String::from_utf8_lossy(&buf).into_owned()
    });
    (port, task)
}

#[tokio::test]
async fn api_token_is_sent_as_a_bearer_token_and_a_refusal_fails() {
    let (port, request) = recording_server("401 Unauthorized", r#"{"Status":"NOK"}"#).await;
    let out = cli(
        &[
            "reconfigure",
            "--service-name",
            "go-demo",
            "--service-path",
            "/demo",
            "--service-domain",
            "a.example.com",
            "--service-domain",
            "b.example.com",
        ],
        &[
            ("API_ADDRESS", &format!("127.0.0.1:{port}")),
            ("API_TOKEN", "s3cret"),
        ],
    )
    .await;
    let request = request.await.unwrap();
    let head = request.to_ascii_lowercase();
    assert!(
        head.starts_with(
            "put /v1/docker-flow-proxy/reconfigure?servicename=go-demo&servicepath=%2fdemo&servicedomain=a.example.com%2cb.example.com http/1.1\r\n"
        ),
        "{request}"
    );
    assert!(
        request.contains("authorization: Bearer s3cret\r\n"),
        "{request}"
    );
    assert!(!out.status.success(), "{out:?}");
    assert_eq!(text(&out.stdout).trim(), r#"{"Status":"NOK"}"#);
    assert!(text(&out.stderr).contains("HTTP 401"), "{out:?}");

    // Without API_TOKEN no Authorization header is sent.
    let (port, request) = recording_server("200 OK", "{}").await;
    let out = cli(
        &["remove", "--service-name", "go-demo"],
        &[("API_ADDRESS", &format!("127.0.0.1:{port}"))],
    )
    .await;
    assert!(out.status.success(), "{out:?}");
    let request = request.await.unwrap();
    assert!(
        !request.to_ascii_lowercase().contains("authorization"),
        "{request}"
    );
}

#[tokio::test]
async fn help_lists_the_client_commands_and_the_metrics_port() {
    let out = cli(&["--help"], &[]).await;
    assert!(out.status.success(), "{out:?}");
    let help = text(&out.stdout);
    for command in ["reconfigure", "remove", "ping"] {
        assert!(help.contains(command), "{command} missing from:\n{help}");
    }
    assert!(!help.contains("demo-backend"), "{help}");
    let out = cli(&["reconfigure", "--help"], &[]).await;
    let help = text(&out.stdout);
    for flag in [
        "--api-address",
        "API_TOKEN",
        "--service-name",
        "--service-path",
        "--service-domain",
        "--service-color",
        "--path-type",
        "--skip-check",
        "--consul-template-path",
        "--consul-template-fe-path",
        "--consul-template-be-path",
        "--param",
    ] {
        assert!(help.contains(flag), "{flag} missing from:\n{help}");
    }
    let out = cli(&["server", "--help"], &[]).await;
    assert!(text(&out.stdout).contains("METRICS_PORT"), "{out:?}");
}
