//! Low-level process and file helpers for the supervisor: sending signals to a pid,
//! checking whether a pid is alive (and not a zombie), starting a child in its own session,
//! reading the pid file, and atomic file replacement (temporary file in the same directory,
//! rename).
//!
//! Must not: decide when to signal or write anything; that is the supervisor's job.

use std::io::{self, Write as _};
use std::path::{Path, PathBuf};

/// Signals the supervisor sends to HAProxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// Reload (master re-executes itself and forks new workers).
    Usr2,
    /// Soft stop: finish connections, then exit.
    Usr1,
    /// Hard stop.
    Term,
    /// Last resort.
    Kill,
}

impl Signal {
    fn raw(self) -> libc::c_int {
        match self {
            Signal::Usr2 => libc::SIGUSR2,
            Signal::Usr1 => libc::SIGUSR1,
            Signal::Term => libc::SIGTERM,
            Signal::Kill => libc::SIGKILL,
        }
    }
}

fn to_pid(pid: u32) -> io::Result<libc::pid_t> {
    match libc::pid_t::try_from(pid) {
        Ok(p) if p > 0 => Ok(p),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("invalid pid {pid}"),
        )),
    }
}

/// Makes the child that `command` spawns the leader of a new session (and process group), so
/// that signals aimed at the controller's group or terminal (Ctrl-C, hang-up, a service
/// manager stopping the controller's group) never reach it.
pub fn new_session(command: &mut tokio::process::Command) {
    // SAFETY: the closure runs in the child between fork and exec and only calls setsid(2),
    // which is async-signal-safe and touches no memory shared with the parent.
    unsafe {
        command.pre_exec(|| {
            if libc::setsid() == -1 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Sends `signal` to the single process `pid` (never to a process group).
pub fn send_signal(pid: u32, signal: Signal) -> io::Result<()> {
    let pid = to_pid(pid)?;
    // SAFETY: kill(2) has no memory-safety preconditions; `pid` is a positive pid,
    // so it never addresses a process group or every process.
    let rc = unsafe { libc::kill(pid, signal.raw()) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// True if `pid` exists and is not a zombie.
pub fn pid_alive(pid: u32) -> bool {
    let Ok(raw) = to_pid(pid) else {
        return false;
    };
    // SAFETY: signal 0 only checks for existence and permission.
    let rc = unsafe { libc::kill(raw, 0) };
    let exists = rc == 0 || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
    if !exists {
        return false;
    }
    // A zombie still answers kill(0); /proc tells them apart.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !matches!(stat_state(&stat), Some('Z' | 'X')),
        Err(_) => true,
    }
}

/// The state letter of a `/proc/<pid>/stat` line (the field after `(comm)`).
fn stat_state(stat: &str) -> Option<char> {
    let after = &stat[stat.rfind(')')? + 1..];
    after.trim_start().chars().next()
}

/// Takes an exclusive, non-blocking `flock` on `path` (created if missing). The lock
/// lives as long as the returned file; `Ok(None)` means another holder has it.
pub fn try_lock_file(path: &Path) -> io::Result<Option<std::fs::File>> {
    use std::os::fd::AsRawFd as _;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)?;
    // SAFETY: flock(2) on a file descriptor we own; no memory is shared.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc == 0 {
        return Ok(Some(file));
    }
    let err = io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
        Ok(None)
    } else {
        Err(err)
    }
}

/// Reads a pid file; `Ok(None)` when it is missing or does not hold a pid.
pub async fn read_pid_file(path: &Path) -> io::Result<Option<u32>> {
    match tokio::fs::read_to_string(path).await {
        Ok(text) => Ok(text.lines().next().and_then(|l| l.trim().parse().ok())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Writes `contents` to `target` through a temporary file renamed over it, without fsync: a
/// reader never sees a partial file, but a power loss may lose it. Every file the supervisor
/// writes matters within this boot only: the configuration, its last-known-good copy and the
/// server state are derived from Consul and rendered again at every start, and a power loss
/// ends HAProxy too. An fsync would cost milliseconds on every reload for nothing.
pub async fn write_replace(target: &Path, contents: Vec<u8>) -> io::Result<()> {
    let target = target.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let mut tmp = tempfile::Builder::new()
            .prefix(".flow-proxy-")
            .suffix(".tmp")
            .tempfile_in(parent_dir(&target))?;
        tmp.write_all(&contents)?;
        tmp.flush()?;
        tmp.persist(&target).map(drop).map_err(|e| e.error)
    })
    .await
    .map_err(io::Error::other)?
}

/// Renames a temporary file of the same directory over `target` (no fsync, as for
/// [`write_replace`]).
pub async fn persist_temp(tmp: tempfile::NamedTempFile, target: &Path) -> io::Result<()> {
    let target = target.to_path_buf();
    tokio::task::spawn_blocking(move || tmp.persist(&target).map(drop).map_err(|e| e.error))
        .await
        .map_err(io::Error::other)?
}

fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn write_replace_replaces_the_whole_file_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("server-state");
        write_replace(&target, b"first\nlonger line\n".to_vec())
            .await
            .unwrap();
        write_replace(&target, b"second\n".to_vec()).await.unwrap();
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "second\n");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn parses_proc_stat_state() {
        assert_eq!(stat_state("123 (haproxy) S 1 2 3"), Some('S'));
        assert_eq!(stat_state("123 (odd) name) Z 1 2 3"), Some('Z'));
        assert_eq!(stat_state("garbage"), None);
    }

    #[test]
    fn own_pid_is_alive_and_zero_is_not() {
        assert!(pid_alive(std::process::id()));
        assert!(!pid_alive(0));
    }

    #[test]
    fn lock_is_exclusive_until_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("lock");
        let held = try_lock_file(&f).unwrap();
        assert!(held.is_some());
        assert!(try_lock_file(&f).unwrap().is_none());
        drop(held);
        assert!(try_lock_file(&f).unwrap().is_some());
    }

    #[tokio::test]
    async fn pid_file_parsing() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("pid");
        assert_eq!(read_pid_file(&f).await.unwrap(), None);
        std::fs::write(&f, "4242\n").unwrap();
        assert_eq!(read_pid_file(&f).await.unwrap(), Some(4242));
        std::fs::write(&f, "junk\n").unwrap();
        assert_eq!(read_pid_file(&f).await.unwrap(), None);
    }
}
