//! Building blocks of the fault tests: traffic that keeps flowing through HAProxy while a
//! fault is injected, the registry and flow-proxy as their own processes (so they can be
//! stopped, killed and started again), in-process flow-proxy on any Consul address (the chaos proxy),
//! and reading `/metrics`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use flow_proxy::consul::{ConsulClient, ConsulConfig};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::{Proxy, api_call, free_port, http, wait_until};

/// What a traffic loop saw.
#[derive(Debug, Default, Clone)]
pub struct Counts {
    /// 2xx answers with the expected body.
    pub ok: u64,
    /// Answers that were not 2xx, or 2xx with another body (another route answered).
    pub failed: u64,
    /// Connections that failed (refused, reset, no answer).
    pub socket_errors: u64,
    /// The first few failures, for the assertion message.
    pub samples: Vec<String>,
}

impl Counts {
    pub fn failures(&self) -> u64 {
        self.failed + self.socket_errors
    }
}

/// A loop client sending one request after another through HAProxy.
pub struct Traffic {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<Counts>,
}

impl Traffic {
    /// Requests `path` with `Host: host` on `port` until stopped; an answer counts as good when
    /// it is 2xx with exactly `body`.
    pub fn start(port: u16, host: &str, path: &str, body: &str) -> Traffic {
        let stop = CancellationToken::new();
        let token = stop.clone();
        let (host, path, body) = (host.to_owned(), path.to_owned(), body.to_owned());
        let task = tokio::spawn(async move {
            let mut counts = Counts::default();
            while !token.is_cancelled() {
                let (status, got) = http(port, "GET", &host, &path).await;
                if status == 0 {
                    counts.socket_errors += 1;
                } else if (200..300).contains(&status) && got == body {
                    counts.ok += 1;
                    continue_pause().await;
                    continue;
                } else {
                    counts.failed += 1;
                }
                if counts.samples.len() < 10 {
                    counts.samples.push(format!(
                        "{status} {:?}",
                        got.chars().take(80).collect::<String>()
                    ));
                }
                continue_pause().await;
            }
            counts
        });
        Traffic { stop, task }
    }

    /// Stops the loop and returns what it saw.
    pub async fn stop(self) -> Counts {
        self.stop.cancel();
        self.task.await.unwrap()
    }
}

async fn continue_pause() {
    tokio::time::sleep(Duration::from_millis(10)).await;
}

/// The `flow-proxy` binary built with the tests.
pub fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_flow-proxy"))
}

pub fn tmp() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("fp")
        .tempdir_in("/tmp")
        .unwrap()
}

/// `flow-proxy registry` as its own process, with its state on disk so that it can be stopped
/// and started again on the same address.
pub struct RegistryProcess {
    pub addr: SocketAddr,
    pub dir: tempfile::TempDir,
    pub client: ConsulClient,
    child: Option<tokio::process::Child>,
}

impl RegistryProcess {
    pub async fn start() -> RegistryProcess {
        flow_proxy::tls::install_crypto_provider();
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let client =
            ConsulClient::new(&ConsulConfig::new(&format!("http://{addr}")).unwrap()).unwrap();
        let mut r = RegistryProcess {
            addr,
            dir: tmp(),
            client,
            child: None,
        };
        r.resume().await;
        r
    }

    /// Starts the process again (same address, same data).
    pub async fn resume(&mut self) {
        assert!(self.child.is_none(), "the registry is running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("registry.log"))
            .unwrap();
        let child = tokio::process::Command::new(binary())
            .arg("registry")
            .arg("--embedded-registry-address")
            .arg(self.addr.to_string())
            .arg("--data-dir")
            .arg(self.dir.path())
            .arg("--node-name")
            .arg("node1")
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let addr = self.addr;
        wait_until("the registry answers", || async move {
            http(addr.port(), "GET", "localhost", "/v1/status/leader")
                .await
                .0
                == 200
        })
        .await;
    }

    /// Kills the process (SIGKILL): connections are reset, new ones refused.
    pub async fn kill(&mut self) {
        let mut child = self.child.take().expect("the registry is running");
        child.kill().await.unwrap();
    }

    /// Registers an instance as Registrator does: `host:<name>_app_<n>:8080`, no checks.
    pub async fn register(&self, name: &str, n: u32, port: u16) -> String {
        let id = format!("host:{name}_app_{n}:8080");
        self.client
            .agent_register(&flow_proxy::consul::ServiceRegistration {
                id: id.clone(),
                name: name.into(),
                address: "127.0.0.1".into(),
                port,
                ..Default::default()
            })
            .await
            .unwrap();
        id
    }

    pub async fn deregister(&self, id: &str) {
        self.client.agent_deregister(id).await.unwrap();
    }
}

/// Starts flow-proxy in-process on `consul` (any URL: the chaos proxy, a registry process) and
/// waits until `ping` answers 200. HAProxy is stopped when it stops.
pub async fn proxy_on(consul: &str, instance: &str, extra: &[&str]) -> Proxy {
    let mut extra: Vec<String> = extra.iter().map(|s| (*s).to_owned()).collect();
    extra.push("--stop-haproxy-on-exit".to_owned());
    Proxy::start_on(consul, instance, &extra, tmp(), free_port()).await
}

/// `flow-proxy server` as its own process (so it can be killed or sent SIGTERM).
pub struct ProxyProcess {
    pub api: SocketAddr,
    pub http_port: u16,
    pub data_dir: PathBuf,
    child: Option<tokio::process::Child>,
}

impl ProxyProcess {
    /// Starts the binary with its state in `data_dir` and waits until `ping` answers 200.
    pub async fn start(
        consul: &str,
        instance: &str,
        data_dir: &Path,
        http_port: u16,
        extra: &[&str],
    ) -> ProxyProcess {
        let api: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(data_dir.join("flow-proxy.log"))
            .unwrap();
        let child = tokio::process::Command::new(binary())
            .arg("server")
            .args(["--consul-address", consul])
            .args(["--proxy-instance-name", instance])
            .args(["--bind-address", "127.0.0.1"])
            .args(["--http-port", &http_port.to_string()])
            .args(["--https-port", "0"])
            .args(["--api-address", &api.to_string()])
            .arg("--data-dir")
            .arg(data_dir)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let p = ProxyProcess {
            api,
            http_port,
            data_dir: data_dir.to_path_buf(),
            child: Some(child),
        };
        wait_until("ping answers 200", || async {
            api_call(p.api, "GET", "/v1/docker-flow-proxy/ping").await.0 == 200
        })
        .await;
        p
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().and_then(|c| c.id()).expect("running")
    }

    pub async fn call(&self, path: &str) -> (u16, String) {
        api_call(self.api, "GET", path).await
    }

    /// `kill -9`.
    pub async fn kill(&mut self) {
        let mut child = self.child.take().expect("running");
        child.kill().await.unwrap();
    }

    /// Sends SIGTERM and returns how long the process took to exit (panics after 60 s).
    pub async fn terminate(&mut self) -> Duration {
        signal(self.pid(), "TERM");
        self.terminate_signalled().await
    }

    /// Waits for the exit after a SIGTERM already sent; returns how long it took (panics
    /// after 60 s) and checks the exit status.
    pub async fn terminate_signalled(&mut self) -> Duration {
        let mut child = self.child.take().expect("running");
        let started = std::time::Instant::now();
        let status = tokio::time::timeout(Duration::from_secs(60), child.wait())
            .await
            .expect("flow-proxy exits after SIGTERM")
            .unwrap();
        assert!(status.success(), "flow-proxy exit status {status}");
        started.elapsed()
    }

    /// flow-proxy's own log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.data_dir.join("flow-proxy.log")).unwrap_or_default()
    }
}

impl Drop for ProxyProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.start_kill();
        }
    }
}

/// Sends a signal with `kill -<name> <pid>`.
pub fn signal(pid: u32, name: &str) {
    let status = std::process::Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status()
        .unwrap();
    assert!(status.success(), "kill -{name} {pid}");
}

pub fn pid_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_default()
            .contains(") Z ")
}

/// The HAProxy master pid from the pid file in `data_dir`.
pub fn master_pid(data_dir: &Path) -> u32 {
    std::fs::read_to_string(data_dir.join("haproxy.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// Stops the HAProxy whose pid file is in `data_dir` (SIGUSR1, then SIGKILL), for cleanup.
pub async fn stop_haproxy(data_dir: &Path) {
    let Ok(text) = std::fs::read_to_string(data_dir.join("haproxy.pid")) else {
        return;
    };
    let Ok(pid) = text.trim().parse::<u32>() else {
        return;
    };
    let _ = std::process::Command::new("kill")
        .arg(pid.to_string())
        .status();
    for _ in 0..100 {
        if !pid_alive(pid) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status();
}

/// `show proc` on the master socket of the HAProxy in `data_dir`.
pub async fn show_proc(data_dir: &Path) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let ask = async {
        let mut s = tokio::net::UnixStream::connect(data_dir.join("master.sock"))
            .await
            .unwrap();
        s.write_all(b"show proc\n").await.unwrap();
        s.shutdown().await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    };
    tokio::time::timeout(Duration::from_secs(20), ask)
        .await
        .expect("the master CLI answers show proc")
}

/// A counter's value on `/metrics` (0 when absent).
pub async fn metric(api: SocketAddr, name: &str) -> u64 {
    let (status, body) = api_call(api, "GET", "/metrics").await;
    assert_eq!(status, 200, "{body}");
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(0)
}

/// An HTTP backend that waits `delay` before answering `body` and a newline, on a keep-alive
/// connection (HTTP/1.1, `Content-Length`), so connections through HAProxy stay open.
pub async fn slow_backend(body: &str, delay: Duration) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let body = format!("{body}\n");
    tokio::spawn(async move {
        loop {
            let Ok((mut conn, _)) = listener.accept().await else {
                return;
            };
            let body = body.clone();
            tokio::spawn(async move {
                loop {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 1024];
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        match conn.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    tokio::time::sleep(delay).await;
                    let resp = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    if conn.write_all(resp.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    port
}

/// The process group and session of `pid` (fields 5 and 6 of `/proc/<pid>/stat`).
pub fn group_and_session(pid: u32) -> (u32, u32) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let rest = stat.rsplit_once(')').unwrap().1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    (fields[2].parse().unwrap(), fields[3].parse().unwrap())
}
