//! One request/response exchange over a HAProxy CLI Unix socket.
//!
//! HAProxy 2.6 answers a non-interactive command only once the client has half-closed
//! its side, so the request is written in full, the write side is shut down, and the
//! answer is read until EOF. Reading and writing run concurrently so a large answer
//! cannot deadlock a large request. The whole exchange is bounded by a timeout.
//!
//! Must not: interpret answers or retry; callers decide what a failure means.

use std::io;
use std::path::Path;
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::UnixStream;

/// Sends `request` and returns everything HAProxy wrote back before closing.
pub(crate) async fn exchange(
    path: &Path,
    request: &[u8],
    timeout: Duration,
) -> io::Result<Vec<u8>> {
    let work = async {
        let stream = UnixStream::connect(path).await?;
        let (mut rd, mut wr) = stream.into_split();
        let write = async {
            wr.write_all(request).await?;
            wr.shutdown().await
        };
        let read = async {
            let mut buf = Vec::new();
            rd.read_to_end(&mut buf).await?;
            Ok::<_, io::Error>(buf)
        };
        let (w, r) = tokio::join!(write, read);
        let answer = r?;
        // A peer that closes before reading the whole request is only an error if it
        // also sent nothing back.
        if let Err(e) = w
            && answer.is_empty()
        {
            return Err(e);
        }
        Ok(answer)
    };
    match tokio::time::timeout(timeout, work).await {
        Ok(r) => r,
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!(
                "no complete answer from {} within {timeout:?}",
                path.display()
            ),
        )),
    }
}

/// True for errors that mean "the socket is not accepting right now" (a master that
/// is re-executing during a reload), as opposed to a lasting failure.
pub(crate) fn is_transient(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::NotFound
            | io::ErrorKind::UnexpectedEof
    )
}
