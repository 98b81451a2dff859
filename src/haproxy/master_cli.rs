//! Client for the HAProxy master CLI (`haproxy -S <socket>`) and parser for its
//! `show proc` answer.
//!
//! Owns: one-command-per-connection exchanges with the master, retrying while the
//! master refuses connections (it does so while re-executing during a reload), and the
//! typed view of `show proc` (master reload and failure counters, worker generations).
//!
//! Must not: decide whether a reload succeeded; the supervisor compares snapshots.
//! On 2.6 the `reload` command returns nothing, so it is fire-and-forget here.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::time::Instant;

use super::socket;

/// Errors talking to the master CLI.
#[derive(Debug, thiserror::Error)]
pub enum MasterCliError {
    /// The socket kept refusing or resetting connections until the deadline.
    #[error("master CLI {path} unavailable for {waited:?}")]
    Unavailable {
        /// The socket.
        path: PathBuf,
        /// How long it was retried.
        waited: Duration,
        /// The last error seen.
        #[source]
        source: io::Error,
    },
    /// A non-transient IO error.
    #[error("master CLI {path}: {source}")]
    Io {
        /// The socket.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The answer to `show proc` could not be understood.
    #[error("unexpected `show proc` answer: {0}")]
    Parse(String),
}

impl MasterCliError {
    /// True when retrying may help (the master is re-executing, or the connection
    /// was cut), false for lasting failures.
    pub fn is_transient(&self) -> bool {
        match self {
            MasterCliError::Unavailable { .. } => true,
            MasterCliError::Io { source, .. } => {
                socket::is_transient(source) || source.kind() == io::ErrorKind::TimedOut
            }
            MasterCliError::Parse(_) => false,
        }
    }
}

/// One process listed by `show proc`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcInfo {
    /// Its pid.
    pub pid: u32,
    /// Number of reloads it has survived (0 for the newest worker generation).
    pub reloads: u32,
}

/// The parsed answer to `show proc`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcList {
    /// The master's pid.
    pub master_pid: u32,
    /// How many reloads the master has performed (successful or not), cumulative.
    pub master_reloads: u32,
    /// Failed reloads since the last successful one (`[failed: N]`; reset by success).
    pub failed_reloads: u32,
    /// Every worker, newest and old ones.
    pub workers: Vec<ProcInfo>,
}

impl ProcList {
    /// Workers of the newest generation (lowest reload count). After a successful
    /// reload their count is 0; after a failed one the previous workers stay current
    /// and their count rises.
    pub fn current_workers(&self) -> Vec<u32> {
        match self.workers.iter().map(|w| w.reloads).min() {
            Some(min) => self
                .workers
                .iter()
                .filter(|w| w.reloads == min)
                .map(|w| w.pid)
                .collect(),
            None => Vec::new(),
        }
    }

    /// Number of workers from older generations still draining.
    pub fn old_worker_count(&self) -> usize {
        self.workers.len() - self.current_workers().len()
    }

    /// Workers with a reload count of 0 (forked by the latest successful (re)load).
    pub fn fresh_workers(&self) -> Vec<u32> {
        self.workers
            .iter()
            .filter(|w| w.reloads == 0)
            .map(|w| w.pid)
            .collect()
    }
}

/// Parses the answer to `show proc` on HAProxy 2.6:
///
/// ```text
/// #<PID>          <type>          <reloads>       <uptime>        <version>
/// 8546            master          5 [failed: 4]   0d00h00m11s     2.6.12-1+deb12u4
/// # workers
/// 8580            worker          4               0d00h00m09s     2.6.12-1+deb12u4
/// # programs
/// ```
pub fn parse_show_proc(text: &str) -> Result<ProcList, MasterCliError> {
    let mut master: Option<(u32, u32, u32)> = None;
    let mut workers = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut fields = line.split_whitespace();
        let (Some(pid), Some(kind), Some(reloads)) = (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        let parse = |s: &str| {
            s.parse::<u32>()
                .map_err(|_| MasterCliError::Parse(format!("bad number {s:?} in line {line:?}")))
        };
        match kind {
            "master" => {
                let failed = match line.find("[failed:") {
                    Some(i) => {
                        let rest = &line[i + "[failed:".len()..];
                        let end = rest.find(']').ok_or_else(|| {
                            MasterCliError::Parse(format!(
                                "unterminated failed counter in {line:?}"
                            ))
                        })?;
                        parse(rest[..end].trim())?
                    }
                    None => 0,
                };
                master = Some((parse(pid)?, parse(reloads)?, failed));
            }
            "worker" => workers.push(ProcInfo {
                pid: parse(pid)?,
                reloads: parse(reloads)?,
            }),
            // Programs and anything newer versions may add.
            _ => {}
        }
    }
    let (master_pid, master_reloads, failed_reloads) =
        master.ok_or_else(|| MasterCliError::Parse(format!("no master line in {text:?}")))?;
    Ok(ProcList {
        master_pid,
        master_reloads,
        failed_reloads,
        workers,
    })
}

/// Client for the master CLI socket.
#[derive(Debug, Clone)]
pub struct MasterCli {
    path: PathBuf,
    io_timeout: Duration,
}

impl MasterCli {
    /// A client for the socket at `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            io_timeout: Duration::from_secs(5),
        }
    }

    /// The socket path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Sends one command, retrying transient failures (refused, reset, empty answer)
    /// until `deadline` has elapsed.
    pub async fn command(
        &self,
        command: &str,
        deadline: Duration,
    ) -> Result<String, MasterCliError> {
        let start = Instant::now();
        let request = format!("{command}\n");
        let mut backoff = Duration::from_millis(10);
        loop {
            let err = match socket::exchange(&self.path, request.as_bytes(), self.io_timeout).await
            {
                Ok(bytes) if !bytes.is_empty() => {
                    return Ok(String::from_utf8_lossy(&bytes).into_owned());
                }
                Ok(_) => io::Error::new(io::ErrorKind::UnexpectedEof, "empty answer"),
                Err(e) if socket::is_transient(&e) || e.kind() == io::ErrorKind::TimedOut => e,
                Err(source) => {
                    return Err(MasterCliError::Io {
                        path: self.path.clone(),
                        source,
                    });
                }
            };
            if start.elapsed() + backoff > deadline {
                return Err(MasterCliError::Unavailable {
                    path: self.path.clone(),
                    waited: start.elapsed(),
                    source: err,
                });
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_millis(100));
        }
    }

    /// `show proc`, parsed.
    pub async fn show_proc(&self, deadline: Duration) -> Result<ProcList, MasterCliError> {
        parse_show_proc(&self.command("show proc", deadline).await?)
    }

    /// One `show proc` attempt without retries (for liveness checks).
    pub async fn try_show_proc(&self) -> Result<ProcList, MasterCliError> {
        let bytes = socket::exchange(&self.path, b"show proc\n", self.io_timeout)
            .await
            .map_err(|source| MasterCliError::Io {
                path: self.path.clone(),
                source,
            })?;
        if bytes.is_empty() {
            return Err(MasterCliError::Io {
                path: self.path.clone(),
                source: io::Error::new(io::ErrorKind::UnexpectedEof, "empty answer"),
            });
        }
        parse_show_proc(&String::from_utf8_lossy(&bytes))
    }

    /// The master CLI `reload` command. On 2.6 it answers nothing and closes the
    /// connection; confirm the reload with [`MasterCli::show_proc`]. Retries while the
    /// socket refuses connections.
    pub async fn reload(&self, deadline: Duration) -> Result<(), MasterCliError> {
        let start = Instant::now();
        let mut backoff = Duration::from_millis(10);
        loop {
            match socket::exchange(&self.path, b"reload\n", self.io_timeout).await {
                Ok(_) => return Ok(()),
                Err(e) if socket::is_transient(&e) && start.elapsed() + backoff <= deadline => {
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_millis(100));
                }
                Err(source) if socket::is_transient(&source) => {
                    return Err(MasterCliError::Unavailable {
                        path: self.path.clone(),
                        waited: start.elapsed(),
                        source,
                    });
                }
                Err(source) => {
                    return Err(MasterCliError::Io {
                        path: self.path.clone(),
                        source,
                    });
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str =
        "#<PID>          <type>          <reloads>       <uptime>        <version>      \n";

    #[test]
    fn parses_fresh_start() {
        let text = format!(
            "{HEADER}8546            master          0 [failed: 0]   0d00h00m01s     2.6.12-1+deb12u4\n\
             # workers\n8549            worker          0               0d00h00m01s     2.6.12-1+deb12u4\n\
             # programs\n\n"
        );
        let p = parse_show_proc(&text).unwrap();
        assert_eq!(p.master_pid, 8546);
        assert_eq!(p.master_reloads, 0);
        assert_eq!(p.failed_reloads, 0);
        assert_eq!(p.current_workers(), vec![8549]);
        assert_eq!(p.fresh_workers(), vec![8549]);
        assert_eq!(p.old_worker_count(), 0);
    }

    #[test]
    fn parses_failed_reload() {
        let text = format!(
            "{HEADER}8546            master          5 [failed: 4]   0d00h00m11s     2.6.12-1+deb12u4\n\
             # workers\n8580            worker          4               0d00h00m09s     2.6.12-1+deb12u4\n\
             # programs\n"
        );
        let p = parse_show_proc(&text).unwrap();
        assert_eq!((p.master_reloads, p.failed_reloads), (5, 4));
        assert_eq!(p.current_workers(), vec![8580]);
        assert!(p.fresh_workers().is_empty());
    }

    #[test]
    fn parses_old_workers() {
        let text = format!(
            "{HEADER}10 master 3 [failed: 0] 0d00h00m11s 2.6.12\n# workers\n\
             30 worker 0 0d00h00m01s 2.6.12\n20 worker 1 0d00h00m05s 2.6.12\n\
             15 worker 2 0d00h00m08s 2.6.12\n# programs\n"
        );
        let p = parse_show_proc(&text).unwrap();
        assert_eq!(p.current_workers(), vec![30]);
        assert_eq!(p.old_worker_count(), 2);
    }

    #[test]
    fn master_without_failed_counter_and_garbage() {
        let p = parse_show_proc("1 master 2 0d 2.6\n").unwrap();
        assert_eq!(
            (p.master_pid, p.master_reloads, p.failed_reloads),
            (1, 2, 0)
        );
        assert!(parse_show_proc("").is_err());
        assert!(parse_show_proc("x master y\n").is_err());
        assert!(parse_show_proc("1 master 0 [failed: 3\n").is_err());
    }
}
