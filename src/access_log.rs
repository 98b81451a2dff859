//! HAProxy's access log, forwarded into flow-proxy's own log output.
//!
//! Owns a UDP syslog listener on loopback: HAProxy sends one datagram per request (HAProxy's
//! HTTP log format), and each line is re-emitted through `tracing` with the target `haproxy`.
//! Must not interpret the lines.

use std::net::{Ipv4Addr, SocketAddr};

use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;
use tracing::info;

/// Why the listener could not start.
#[derive(Debug, thiserror::Error)]
#[error("cannot open the HAProxy log listener: {0}")]
pub struct AccessLogError(#[from] std::io::Error);

/// Binds a UDP socket on `127.0.0.1` (port chosen by the system) and forwards every datagram
/// until `cancel` fires. Returns the address to give HAProxy.
pub async fn spawn(cancel: CancellationToken) -> Result<SocketAddr, AccessLogError> {
    let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await?;
    let addr = socket.local_addr()?;
    tokio::spawn(async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                received = socket.recv_from(&mut buf) => {
                    let Ok((n, _)) = received else { continue };
                    let text = String::from_utf8_lossy(&buf[..n]);
                    for line in text.lines() {
                        let line = strip_priority(line).trim_end();
                        if !line.is_empty() {
                            info!(target: "haproxy", "{line}");
                        }
                    }
                }
            }
        }
    });
    Ok(addr)
}

/// Drops the syslog `<PRI>` prefix.
fn strip_priority(line: &str) -> &str {
    if let Some(rest) = line.strip_prefix('<')
        && let Some(end) = rest.find('>')
        && rest[..end].bytes().all(|b| b.is_ascii_digit())
    {
        return &rest[end + 1..];
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priority_is_stripped() {
        assert_eq!(
            strip_priority("<134>Nov 26 haproxy[1]: x"),
            "Nov 26 haproxy[1]: x"
        );
        assert_eq!(strip_priority("plain"), "plain");
        assert_eq!(strip_priority("<x>y"), "<x>y");
    }

    #[tokio::test]
    async fn forwards_datagrams() {
        let cancel = CancellationToken::new();
        let addr = spawn(cancel.clone()).await.unwrap();
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        client.send_to(b"<134>hello", addr).await.unwrap();
        cancel.cancel();
    }
}
