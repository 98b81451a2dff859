//! A fault-injecting TCP proxy for the fault tests, placed between flow-proxy and the registry
//! (flow-proxy's `CONSUL_ADDRESS` points at it). Its mode is switched at run time and applies
//! to new connections and, where it makes sense, to the ones already open (a long-poll that was
//! passing starts hanging or is reset).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// What the proxy does with a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Forwards bytes both ways.
    Pass,
    /// Accepts and reads, never answers (open connections stop forwarding too).
    Hang,
    /// Resets the connection at once (open connections too).
    Reset,
    /// Forwards, but holds every chunk from the registry back for this long (and waits as long
    /// before connecting).
    Delay(Duration),
    /// Answers every request with this HTTP status and an empty JSON body.
    Status(u16),
    /// Answers every request with 200, a large `X-Consul-Index` and a body that is not JSON.
    Garbage,
}

/// A running chaos proxy; dropped, it keeps running until the test's runtime ends.
pub struct Chaos {
    pub addr: SocketAddr,
    mode: Arc<watch::Sender<Mode>>,
    accepted: Arc<AtomicU64>,
}

impl Chaos {
    /// Listens on a port picked at run time and forwards to `upstream`.
    pub async fn start(upstream: SocketAddr) -> Chaos {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, _) = watch::channel(Mode::Pass);
        let mode = Arc::new(tx);
        let accepted = Arc::new(AtomicU64::new(0));
        let m = Arc::clone(&mode);
        let count = Arc::clone(&accepted);
        tokio::spawn(async move {
            loop {
                let Ok((conn, _)) = listener.accept().await else {
                    return;
                };
                count.fetch_add(1, Ordering::Relaxed);
                tokio::spawn(handle(conn, upstream, m.subscribe()));
            }
        });
        Chaos {
            addr,
            mode,
            accepted,
        }
    }

    /// `http://<addr>`, for `--consul-address`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Switches the mode; open connections follow at once.
    pub fn set(&self, mode: Mode) {
        self.mode.send_replace(mode);
    }

    /// Connections accepted so far (a watcher that keeps retrying keeps this moving).
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }
}

async fn handle(client: TcpStream, upstream: SocketAddr, mut mode: watch::Receiver<Mode>) {
    let current = *mode.borrow_and_update();
    match current {
        Mode::Pass => {}
        Mode::Delay(d) => tokio::time::sleep(d).await,
        Mode::Hang => return hold(client, mode).await,
        Mode::Reset => return reset(client),
        Mode::Status(code) => return answer(client, code, "{}", 1).await,
        Mode::Garbage => return answer(client, 200, "}{ not json", 999_999_999).await,
    }
    let Ok(server) = TcpStream::connect(upstream).await else {
        return reset(client);
    };
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = server.into_split();
    let mut up = [0u8; 16 * 1024];
    let mut down = [0u8; 16 * 1024];
    loop {
        tokio::select! {
            r = cr.read(&mut up) => match r {
                Ok(0) | Err(_) => return,
                Ok(n) => if sw.write_all(&up[..n]).await.is_err() { return },
            },
            r = sr.read(&mut down) => match r {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    let now = *mode.borrow();
                    if let Mode::Delay(d) = now {
                        tokio::time::sleep(d).await;
                    }
                    if cw.write_all(&down[..n]).await.is_err() { return }
                }
            },
            changed = mode.changed() => {
                if changed.is_err() { return }
                let next = *mode.borrow_and_update();
                match next {
                    Mode::Pass | Mode::Delay(_) => {}
                    Mode::Reset | Mode::Status(_) | Mode::Garbage => {
                        // The client reconnects and meets the new mode.
                        let client = cr.reunite(cw).unwrap();
                        return reset(client);
                    }
                    Mode::Hang => {
                        // Stops forwarding; the connection stays open until the mode is Pass.
                        drop((sr, sw));
                        let client = cr.reunite(cw).unwrap();
                        return hold(client, mode).await;
                    }
                }
            }
        }
    }
}

// Linger 0 sends RST on close without blocking: exactly the fault wanted here.
#[allow(deprecated)]
fn reset(client: TcpStream) {
    let _ = client.set_linger(Some(Duration::ZERO));
    drop(client);
}

/// Reads and discards while the mode is Hang; resets the connection when it changes.
async fn hold(mut client: TcpStream, mut mode: watch::Receiver<Mode>) {
    let mut sink = [0u8; 4096];
    loop {
        tokio::select! {
            r = client.read(&mut sink) => match r {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            },
            changed = mode.changed() => {
                if changed.is_err() { return }
                let next = *mode.borrow_and_update();
                match next {
                    Mode::Hang => {}
                    _ => return reset(client),
                }
            }
        }
    }
}

/// Reads one request head and answers it, then closes.
async fn answer(mut client: TcpStream, status: u16, body: &str, index: u64) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 64 * 1024 {
        match client.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let resp = format!(
        "HTTP/1.1 {status} Chaos\r\nContent-Type: application/json\r\nX-Consul-Index: {index}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = client.write_all(resp.as_bytes()).await;
    let _ = client.shutdown().await;
}
