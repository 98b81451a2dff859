//! Shared helpers of the end-to-end tests: an embedded registry, flow-proxy run in-process
//! with its own ports and data directory, tiny HTTP backends, and raw HTTP requests.
#![allow(dead_code)]

pub mod chaos;
pub mod faults;

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use flow_proxy::consul::{ConsulClient, ConsulConfig, KvPrefix, ServiceRegistration};
use flow_proxy::registry::{self, RegistryConfig, RunningRegistry};
use flow_proxy::settings::{Cli, Command};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// Generous: the machine is slow and shared.
pub const DEADLINE: Duration = Duration::from_secs(30);

pub fn haproxy_available() -> bool {
    let found = std::process::Command::new("haproxy")
        .arg("-v")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !found {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("haproxy is not on PATH and CI=true: install it (apt-get install -y haproxy)");
        }
        eprintln!("SKIP: haproxy is not on PATH; end-to-end tests not run");
    }
    found
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// An embedded registry on a port picked at run time, in memory.
pub struct Registry {
    pub running: Option<RunningRegistry>,
    pub addr: SocketAddr,
    pub client: ConsulClient,
}

impl Registry {
    pub async fn start() -> Registry {
        flow_proxy::tls::install_crypto_provider();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let config = RegistryConfig {
            data_dir: None,
            node_name: "node1".into(),
            ..RegistryConfig::default()
        };
        let running = registry::spawn(listener, config).await.unwrap();
        let addr = running.local_addr();
        let client =
            ConsulClient::new(&ConsulConfig::new(&format!("http://{addr}")).unwrap()).unwrap();
        Registry {
            running: Some(running),
            addr,
            client,
        }
    }

    /// Registers an instance as Registrator does: `host:<name>_app_<n>:8080`, no checks.
    pub async fn register(&self, name: &str, n: u32, port: u16) -> String {
        let id = format!("host:{name}_app_{n}:8080");
        self.client
            .agent_register(&ServiceRegistration {
                id: id.clone(),
                name: name.into(),
                address: "127.0.0.1".into(),
                port,
                ..ServiceRegistration::default()
            })
            .await
            .unwrap();
        id
    }

    /// Registers an instance with a TTL check that is never passed (critical).
    pub async fn register_critical(&self, name: &str, n: u32, port: u16) -> String {
        let id = format!("host:{name}_app_{n}:8080");
        self.client
            .agent_register(&ServiceRegistration {
                id: id.clone(),
                name: name.into(),
                address: "127.0.0.1".into(),
                port,
                ttl_check: Some(Duration::from_secs(600)),
                ..ServiceRegistration::default()
            })
            .await
            .unwrap();
        id
    }

    pub async fn deregister(&self, id: &str) {
        self.client.agent_deregister(id).await.unwrap();
    }

    /// Keys under a folder (ending in `/`).
    pub async fn kv_keys(&self, prefix: &str) -> Vec<String> {
        self.client
            .kv_list(&KvPrefix::new(prefix).unwrap())
            .await
            .unwrap()
            .into_iter()
            .map(|p| p.key)
            .collect()
    }
}

/// flow-proxy running in-process.
pub struct Proxy {
    pub api: SocketAddr,
    pub http_port: u16,
    pub data_dir: tempfile::TempDir,
    shutdown: CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Proxy {
    /// Starts flow-proxy on `registry` and waits until `ping` answers 200.
    pub async fn start(registry: &Registry, instance: &str) -> Proxy {
        Self::start_with(registry, instance, &[]).await
    }

    /// Like [`Proxy::start`], with extra command-line arguments.
    pub async fn start_with(registry: &Registry, instance: &str, extra: &[String]) -> Proxy {
        let data_dir = tempfile::Builder::new()
            .prefix("fp")
            .tempdir_in("/tmp")
            .unwrap();
        let mut extra = extra.to_vec();
        extra.push("--stop-haproxy-on-exit".to_owned());
        Self::start_in(registry, instance, &extra, data_dir, free_port()).await
    }

    /// Starts flow-proxy in `data_dir` with HAProxy on `http_port`; HAProxy is left running
    /// at exit unless `extra` holds `--stop-haproxy-on-exit`.
    pub async fn start_in(
        registry: &Registry,
        instance: &str,
        extra: &[String],
        data_dir: tempfile::TempDir,
        http_port: u16,
    ) -> Proxy {
        let consul = format!("http://{}", registry.addr);
        Self::start_on(&consul, instance, extra, data_dir, http_port).await
    }

    /// Starts flow-proxy on the Consul at `consul` (any URL: a registry, a fault-injecting
    /// proxy in front of one) in `data_dir` with HAProxy on `http_port`, and waits until
    /// `ping` answers 200.
    pub async fn start_on(
        consul: &str,
        instance: &str,
        extra: &[String],
        data_dir: tempfile::TempDir,
        http_port: u16,
    ) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let api = listener.local_addr().unwrap();
        let mut argv = vec![
            "flow-proxy".to_owned(),
            "server".to_owned(),
            "--consul-address".to_owned(),
            consul.to_owned(),
            "--proxy-instance-name".to_owned(),
            instance.to_owned(),
            "--bind-address".to_owned(),
            "127.0.0.1".to_owned(),
            "--http-port".to_owned(),
            http_port.to_string(),
            "--data-dir".to_owned(),
            data_dir.path().display().to_string(),
        ];
        // HTTPS stays off and no operator certificates are read unless a test asks.
        if !extra.iter().any(|a| a == "--https-port") {
            argv.extend(["--https-port".to_owned(), "0".to_owned()]);
        }
        if !extra.iter().any(|a| a == "--certs-dir") {
            let none = data_dir.path().join("no-certs");
            argv.extend(["--certs-dir".to_owned(), none.display().to_string()]);
        }
        argv.extend(extra.iter().cloned());
        let cli = Cli::try_parse_from(argv).unwrap();
        let Command::Server(args) = cli.command else {
            panic!("expected server")
        };
        let shutdown = CancellationToken::new();
        let stop = shutdown.clone();
        let task = tokio::spawn(async move {
            flow_proxy::server::run_server_on(*args, listener, stop)
                .await
                .unwrap();
        });
        let proxy = Proxy {
            api,
            http_port,
            data_dir,
            shutdown,
            task: Some(task),
        };
        wait_until("ping answers 200", || async {
            api_call(proxy.api, "GET", "/v1/docker-flow-proxy/ping")
                .await
                .0
                == 200
        })
        .await;
        proxy
    }

    /// GET on the API.
    pub async fn call(&self, path: &str) -> (u16, String) {
        api_call(self.api, "GET", path).await
    }

    /// A request through HAProxy.
    pub async fn get(&self, host: &str, path: &str) -> (u16, String) {
        http(self.http_port, "GET", host, path).await
    }

    /// The pid of HAProxy's current worker (`show info` on the runtime socket): a reload
    /// changes it, a runtime-API change does not.
    pub async fn worker_pid(&self) -> u32 {
        let mut s = tokio::net::UnixStream::connect(self.data_dir.path().join("admin.sock"))
            .await
            .unwrap();
        s.write_all(b"show info\n").await.unwrap();
        s.shutdown().await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out.lines()
            .find_map(|l| l.strip_prefix("Pid: "))
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or_else(|| panic!("no Pid in show info: {out}"))
    }

    /// Stops flow-proxy (and its HAProxy when it was started with `--stop-haproxy-on-exit`).
    pub async fn stop(&mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(90), task)
                .await
                .expect("flow-proxy stops")
                .unwrap();
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shutdown.cancel();
        // Last resort when a test failed before stop(): don't leave HAProxy behind.
        if self.task.is_some() {
            let pid_file = self.data_dir.path().join("haproxy.pid");
            if let Ok(pid) = std::fs::read_to_string(pid_file) {
                let _ = std::process::Command::new("kill").arg(pid.trim()).status();
            }
        }
    }
}

/// One raw HTTP/1.1 request; (status, body). Status 0 when the connection failed.
pub async fn http(port: u16, method: &str, host: &str, path: &str) -> (u16, String) {
    let attempt = async {
        let mut s = TcpStream::connect(("127.0.0.1", port)).await.ok()?;
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        s.write_all(req.as_bytes()).await.ok()?;
        let mut out = Vec::new();
        s.read_to_end(&mut out).await.ok()?;
        let out = String::from_utf8_lossy(&out).into_owned();
        let status = out.split_whitespace().nth(1)?.parse().ok()?;
        let body = out.split_once("\r\n\r\n").map(|(_, b)| b.to_owned())?;
        Some((status, body))
    };
    match tokio::time::timeout(Duration::from_secs(20), attempt).await {
        Ok(Some(r)) => r,
        _ => (0, String::new()),
    }
}

pub async fn api_call(api: SocketAddr, method: &str, path: &str) -> (u16, String) {
    http(api.port(), method, "localhost", path).await
}

/// Polls `cond` until it holds; panics with `what` after [`DEADLINE`].
pub async fn wait_until<F, Fut>(what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        if cond().await {
            return;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out waiting until {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A tiny HTTP backend answering every request with `body` and a newline.
pub async fn backend(body: &str) -> u16 {
    backend_exact(format!("{body}\n")).await
}

/// A tiny HTTP backend answering every request with exactly `body`.
pub async fn backend_exact(body: String) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((mut conn, _)) = listener.accept().await else {
                return;
            };
            let body = body.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 1024];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 64 * 1024 {
                    match conn.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let resp = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = conn.write_all(resp.as_bytes()).await;
                let _ = conn.shutdown().await;
            });
        }
    });
    port
}
