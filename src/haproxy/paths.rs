//! File layout of one HAProxy instance under a data directory, and the configuration
//! lines that reference that layout.
//!
//! Owns: the names of the live configuration, last-known-good copy, pid file, master
//! CLI socket, runtime (stats) socket, server-state file and HAProxy's log file, plus
//! the text of the `global`/`defaults` lines the renderer must embed so that the
//! supervisor's reload recipe works (runtime socket, server-state file, soft-stop
//! bounds, `option idle-close-on-response`).
//!
//! Must not: perform IO other than creating the directory, or know anything about
//! frontends, backends or routing.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Unix socket paths must fit in `sockaddr_un.sun_path` (108 bytes on Linux,
/// including the terminating NUL); keep a margin for HAProxy's temporary names.
const MAX_SOCKET_PATH: usize = 100;

/// Errors from building or preparing the file layout.
#[derive(Debug, thiserror::Error)]
pub enum PathsError {
    /// A socket path is too long for a Unix socket address.
    #[error("socket path {path} is {len} bytes long; Unix sockets allow at most {MAX_SOCKET_PATH}")]
    SocketPathTooLong {
        /// The offending path.
        path: PathBuf,
        /// Its length in bytes.
        len: usize,
    },
    /// A path contains characters that cannot be written into `haproxy.cfg` or the
    /// `-S` argument safely.
    #[error("path {0} contains whitespace, quotes, '#', ',' or non-UTF-8 characters")]
    UnsafePath(PathBuf),
    /// The data directory could not be created.
    #[error("cannot create data directory {path}")]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// Bounds on old workers after a reload (see the soft-stop settings in the
/// HAProxy 2.6 notes): `hard-stop-after` and `mworker-max-reloads`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SoftStopSettings {
    /// Longest time an old worker may drain its connections.
    pub hard_stop_after: Duration,
    /// Old workers that survive more reloads than this get SIGTERM.
    pub max_reloads: u32,
}

impl Default for SoftStopSettings {
    fn default() -> Self {
        Self {
            hard_stop_after: Duration::from_secs(30),
            max_reloads: 3,
        }
    }
}

/// Every file of one HAProxy instance, all inside one data directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HaproxyPaths {
    data_dir: PathBuf,
    config: PathBuf,
    last_good: PathBuf,
    pid_file: PathBuf,
    master_socket: PathBuf,
    runtime_socket: PathBuf,
    server_state: PathBuf,
    log_file: PathBuf,
    lock_file: PathBuf,
}

impl HaproxyPaths {
    /// The standard layout under `data_dir`. Does no IO.
    pub fn new(data_dir: impl Into<PathBuf>) -> Result<Self, PathsError> {
        let data_dir: PathBuf = data_dir.into();
        let paths = Self {
            config: data_dir.join("haproxy.cfg"),
            last_good: data_dir.join("haproxy.cfg.lkg"),
            pid_file: data_dir.join("haproxy.pid"),
            master_socket: data_dir.join("master.sock"),
            runtime_socket: data_dir.join("admin.sock"),
            server_state: data_dir.join("server-state"),
            log_file: data_dir.join("haproxy.log"),
            lock_file: data_dir.join("supervisor.lock"),
            data_dir,
        };
        for socket in [&paths.master_socket, &paths.runtime_socket] {
            let len = socket.as_os_str().len();
            if len > MAX_SOCKET_PATH {
                return Err(PathsError::SocketPathTooLong {
                    path: socket.clone(),
                    len,
                });
            }
        }
        for path in [
            &paths.runtime_socket,
            &paths.server_state,
            &paths.master_socket,
        ] {
            if !is_config_safe(path) {
                return Err(PathsError::UnsafePath(path.clone()));
            }
        }
        Ok(paths)
    }

    /// Creates the data directory (and parents) if missing.
    pub async fn create_dir(&self) -> Result<(), PathsError> {
        tokio::fs::create_dir_all(&self.data_dir)
            .await
            .map_err(|source| PathsError::CreateDir {
                path: self.data_dir.clone(),
                source,
            })
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }
    /// The live configuration file (`haproxy -f`).
    pub fn config(&self) -> &Path {
        &self.config
    }
    /// Copy of the last configuration that was confirmed live.
    pub fn last_good(&self) -> &Path {
        &self.last_good
    }
    /// The pid file written by the master (`haproxy -p`); it holds the master's pid.
    pub fn pid_file(&self) -> &Path {
        &self.pid_file
    }
    /// The master CLI socket (`haproxy -S`).
    pub fn master_socket(&self) -> &Path {
        &self.master_socket
    }
    /// The runtime API (stats) socket, declared in `global`.
    pub fn runtime_socket(&self) -> &Path {
        &self.runtime_socket
    }
    /// The server-state file read at startup by the new worker.
    pub fn server_state(&self) -> &Path {
        &self.server_state
    }
    /// Where the master's stdout and stderr go (alerts of failed reloads are read here).
    pub fn log_file(&self) -> &Path {
        &self.log_file
    }

    /// Lock file held by the one supervisor that owns this data directory.
    pub fn lock_file(&self) -> &Path {
        &self.lock_file
    }

    /// Lines for the `global` section (indented, each ending with `\n`). The renderer
    /// must embed them; the supervisor relies on the runtime socket and server-state
    /// file they declare.
    pub fn global_lines(&self, soft_stop: &SoftStopSettings) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = writeln!(
            out,
            "    stats socket {} mode 600 level admin expose-fd listeners",
            self.runtime_socket.display()
        );
        let _ = writeln!(out, "    stats timeout 30s");
        let _ = writeln!(out, "    server-state-file {}", self.server_state.display());
        let _ = writeln!(
            out,
            "    hard-stop-after {}ms",
            soft_stop.hard_stop_after.as_millis().max(1)
        );
        let _ = writeln!(out, "    mworker-max-reloads {}", soft_stop.max_reloads);
        out
    }

    /// Lines for the `defaults` section (indented, each ending with `\n`).
    pub fn defaults_lines(&self) -> String {
        "    option idle-close-on-response\n    load-server-state-from-file global\n".to_owned()
    }
}

fn is_config_safe(path: &Path) -> bool {
    match path.to_str() {
        Some(s) => !s.chars().any(|c| {
            c.is_whitespace() || c.is_control() || matches!(c, '"' | '\'' | '#' | '\\' | ',')
        }),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_is_under_data_dir() {
        let p = HaproxyPaths::new("/var/lib/flow-proxy").unwrap();
        assert_eq!(p.config(), Path::new("/var/lib/flow-proxy/haproxy.cfg"));
        assert_eq!(
            p.master_socket(),
            Path::new("/var/lib/flow-proxy/master.sock")
        );
        assert!(p.last_good().starts_with(p.data_dir()));
    }

    #[test]
    fn global_and_defaults_lines() {
        let p = HaproxyPaths::new("/d").unwrap();
        let g = p.global_lines(&SoftStopSettings::default());
        assert_eq!(
            g,
            "    stats socket /d/admin.sock mode 600 level admin expose-fd listeners\n    \
             stats timeout 30s\n    server-state-file /d/server-state\n    \
             hard-stop-after 30000ms\n    mworker-max-reloads 3\n"
        );
        assert_eq!(
            p.defaults_lines(),
            "    option idle-close-on-response\n    load-server-state-from-file global\n"
        );
    }

    #[test]
    fn rejects_long_or_unsafe_paths() {
        let long = format!("/{}", "x".repeat(120));
        assert!(matches!(
            HaproxyPaths::new(long),
            Err(PathsError::SocketPathTooLong { .. })
        ));
        assert!(matches!(
            HaproxyPaths::new("/tmp/a b"),
            Err(PathsError::UnsafePath(_))
        ));
        assert!(matches!(
            HaproxyPaths::new("/tmp/a,b"),
            Err(PathsError::UnsafePath(_))
        ));
    }
}
