//! A TCP relay in front of the registry that counts what flow-proxy asks of it.
//!
//! Owns: relaying bytes both ways unchanged, counting HTTP/1.1 request lines sent by the
//! client, and how many requests carrying `index=` (blocking queries) are waiting for their
//! answer right now. HTTP/1.1 clients do not pipeline, so a connection that sent a request and
//! has not received a byte since is waiting for that request's answer.
//!
//! Must not: change, delay or inspect anything but request lines.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};

use anyhow::Result;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Longest request line looked at; longer lines are not counted.
const MAX_LINE: usize = 16 * 1024;

/// Counters shared by every relayed connection.
#[derive(Debug, Default)]
pub struct Counters {
    /// Requests sent through the relay.
    pub requests: AtomicU64,
    /// Blocking queries waiting for their answer.
    pub blocking_open: AtomicI64,
    /// Connections open through the relay.
    pub connections_open: AtomicI64,
}

/// The relay: listen on `addr`, forward to the registry.
pub struct CountingProxy {
    pub addr: SocketAddr,
    pub counters: Arc<Counters>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for CountingProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl CountingProxy {
    pub async fn start(upstream: SocketAddr) -> Result<CountingProxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let counters = Arc::new(Counters::default());
        let shared = counters.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let counters = shared.clone();
                tokio::spawn(async move {
                    if let Ok(server) = TcpStream::connect(upstream).await {
                        relay(client, server, counters).await;
                    }
                });
            }
        });
        Ok(CountingProxy {
            addr,
            counters,
            task,
        })
    }
}

async fn relay(client: TcpStream, server: TcpStream, counters: Arc<Counters>) {
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    counters.connections_open.fetch_add(1, Ordering::Relaxed);
    let waiting = Arc::new(AtomicBool::new(false));
    let (mut client_rd, mut client_wr) = client.into_split();
    let (mut server_rd, mut server_wr) = server.into_split();
    let upstream = {
        let (counters, waiting) = (counters.clone(), waiting.clone());
        async move {
            let mut buf = vec![0u8; 16 * 1024];
            let mut line = Vec::new();
            loop {
                let n = match client_rd.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                for &b in &buf[..n] {
                    if b == b'\n' {
                        if is_request_line(&line) {
                            counters.requests.fetch_add(1, Ordering::Relaxed);
                            let blocking = line.windows(6).any(|w| w == b"index=");
                            if blocking && !waiting.swap(true, Ordering::Relaxed) {
                                counters.blocking_open.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        line.clear();
                    } else if line.len() < MAX_LINE {
                        line.push(b);
                    }
                }
                if server_wr.write_all(&buf[..n]).await.is_err() {
                    break;
                }
            }
            let _ = server_wr.shutdown().await;
        }
    };
    let downstream = {
        let (counters, waiting) = (counters.clone(), waiting.clone());
        async move {
            let mut buf = vec![0u8; 16 * 1024];
            loop {
                let n = match server_rd.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                if waiting.swap(false, Ordering::Relaxed) {
                    counters.blocking_open.fetch_sub(1, Ordering::Relaxed);
                }
                if client_wr.write_all(&buf[..n]).await.is_err() {
                    break;
                }
            }
            let _ = client_wr.shutdown().await;
        }
    };
    tokio::join!(upstream, downstream);
    if waiting.swap(false, Ordering::Relaxed) {
        counters.blocking_open.fetch_sub(1, Ordering::Relaxed);
    }
    counters.connections_open.fetch_sub(1, Ordering::Relaxed);
}

/// `METHOD target HTTP/1.x` (with its `\r`).
fn is_request_line(line: &[u8]) -> bool {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let Some(method_end) = line.iter().position(|b| *b == b' ') else {
        return false;
    };
    method_end > 0
        && line[..method_end].iter().all(u8::is_ascii_uppercase)
        && (line.ends_with(b" HTTP/1.1") || line.ends_with(b" HTTP/1.0"))
}
