//! Configuration validation with `haproxy -c`.
//!
//! Owns: writing candidate configuration text to a temporary file *in the data
//! directory* (so it can later be renamed over the live file), running `haproxy -c -f`
//! on it with a timeout (the child is killed if the caller gives up), and turning
//! HAProxy's `[ALERT]` lines into [`ConfigAlert`]s whose file name is the live
//! configuration's and whose line number points into the submitted text.
//!
//! Must not: touch the live configuration file or any running HAProxy.

use std::fmt;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tempfile::NamedTempFile;

use super::paths::HaproxyPaths;

/// Maximum number of alert lines kept in an error.
const MAX_ALERTS: usize = 20;

/// One `[ALERT]` reported by HAProxy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigAlert {
    /// Line number in the submitted configuration text, when HAProxy named one.
    pub line: Option<u32>,
    /// HAProxy's message, with the temporary file name replaced by the live one.
    pub message: String,
    /// The offending line of the submitted text, trimmed, when known.
    pub source_line: Option<String>,
}

impl fmt::Display for ConfigAlert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        if let Some(src) = &self.source_line {
            write!(f, " (line: `{src}`)")?;
        }
        Ok(())
    }
}

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ValidationError {
    /// `haproxy -c` rejected the configuration.
    #[error("haproxy rejected the configuration ({}): {}", exit_desc(*.exit_code), join_alerts(.alerts))]
    Rejected {
        /// The exit code (2 means "valid but no listener, would not start").
        exit_code: Option<i32>,
        /// The `[ALERT]` lines, or the last output lines when there were none.
        alerts: Vec<ConfigAlert>,
    },
    /// `haproxy -c` did not finish in time (the child was killed).
    #[error("haproxy -c did not finish within {0:?}")]
    Timeout(Duration),
    /// The `haproxy` binary could not be run.
    #[error("cannot run {binary}")]
    Spawn {
        /// The binary.
        binary: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Writing the temporary file failed.
    #[error("cannot write the candidate configuration in {dir}")]
    Io {
        /// The data directory.
        dir: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

impl ValidationError {
    /// The alerts, if HAProxy rejected the configuration.
    pub fn alerts(&self) -> &[ConfigAlert] {
        match self {
            ValidationError::Rejected { alerts, .. } => alerts,
            _ => &[],
        }
    }
}

fn exit_desc(code: Option<i32>) -> String {
    match code {
        Some(c) => format!("exit code {c}"),
        None => "killed by a signal".to_owned(),
    }
}

fn join_alerts(alerts: &[ConfigAlert]) -> String {
    alerts
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// Checks `config_text` with `haproxy -c` using the default binary and timeout.
/// The live configuration is not touched.
pub async fn validate(paths: &HaproxyPaths, config_text: &str) -> Result<(), ValidationError> {
    check_to_tempfile(
        paths,
        Path::new("haproxy"),
        config_text,
        Duration::from_secs(30),
    )
    .await
    .map(drop)
}

/// Writes `config_text` to a temporary file in the data directory, checks it, and on
/// success returns the file so the caller can rename it into place.
pub(crate) async fn check_to_tempfile(
    paths: &HaproxyPaths,
    binary: &Path,
    config_text: &str,
    timeout: Duration,
) -> Result<NamedTempFile, ValidationError> {
    let tmp = write_tempfile(paths, config_text)
        .await
        .map_err(|source| ValidationError::Io {
            dir: paths.data_dir().to_path_buf(),
            source,
        })?;
    check_file(paths, binary, config_text, tmp, timeout).await
}

/// Writes `config_text` to a temporary file in the data directory (flushed, not fsynced: the
/// files there are derived from Consul and rendered again at every start).
pub(crate) async fn write_tempfile(
    paths: &HaproxyPaths,
    config_text: &str,
) -> std::io::Result<NamedTempFile> {
    let dir = paths.data_dir().to_path_buf();
    tokio::fs::create_dir_all(&dir).await?;
    let text = config_text.to_owned();
    tokio::task::spawn_blocking(move || -> std::io::Result<NamedTempFile> {
        let mut tmp = tempfile::Builder::new()
            .prefix(".haproxy.cfg.")
            .suffix(".tmp")
            .tempfile_in(&dir)?;
        tmp.write_all(text.as_bytes())?;
        tmp.flush()?;
        Ok(tmp)
    })
    .await
    .map_err(std::io::Error::other)?
}

/// Runs `haproxy -c` on `tmp`, which holds `config_text`; returns `tmp` when it passes.
async fn check_file(
    paths: &HaproxyPaths,
    binary: &Path,
    config_text: &str,
    tmp: NamedTempFile,
    timeout: Duration,
) -> Result<NamedTempFile, ValidationError> {
    let child = tokio::process::Command::new(binary)
        .arg("-c")
        .arg("-f")
        .arg(tmp.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| ValidationError::Spawn {
            binary: binary.to_path_buf(),
            source,
        })?;
    let output = match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Ok(r) => r.map_err(|source| ValidationError::Spawn {
            binary: binary.to_path_buf(),
            source,
        })?,
        // Dropping the future drops the child, which kill_on_drop kills and tokio reaps.
        Err(_) => return Err(ValidationError::Timeout(timeout)),
    };
    if output.status.success() {
        return Ok(tmp);
    }
    let mut combined = String::from_utf8_lossy(&output.stderr).into_owned();
    combined.push_str(&String::from_utf8_lossy(&output.stdout));
    let display = file_name(paths.config());
    let alerts = alerts_from_output(
        &combined,
        &tmp.path().to_string_lossy(),
        &display,
        config_text,
    );
    Err(ValidationError::Rejected {
        exit_code: output.status.code(),
        alerts,
    })
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.to_string_lossy().into_owned())
}

/// Extracts `[ALERT]` lines from HAProxy output. `tmp_path` is replaced by
/// `display_name`; line numbers of `[file:line]` references are resolved against
/// `config_text`. Without any alert, the last non-empty lines are returned instead.
pub(crate) fn alerts_from_output(
    output: &str,
    tmp_path: &str,
    display_name: &str,
    config_text: &str,
) -> Vec<ConfigAlert> {
    let mut alerts: Vec<ConfigAlert> = output
        .lines()
        .filter_map(|l| l.trim().strip_prefix("[ALERT]"))
        .map(|rest| make_alert(rest, tmp_path, display_name, config_text))
        .take(MAX_ALERTS)
        .collect();
    if alerts.is_empty() {
        let lines: Vec<&str> = output.lines().filter(|l| !l.trim().is_empty()).collect();
        let start = lines.len().saturating_sub(5);
        alerts = lines[start..]
            .iter()
            .map(|l| make_alert(l, tmp_path, display_name, config_text))
            .collect();
    }
    alerts
}

fn make_alert(rest: &str, tmp_path: &str, display_name: &str, config_text: &str) -> ConfigAlert {
    let message = strip_pid_prefix(rest.trim()).replace(tmp_path, display_name);
    let line = line_number(&message, display_name);
    let source_line = line
        .and_then(|n| config_text.lines().nth(n.checked_sub(1)? as usize))
        .map(|l| l.trim().to_owned())
        .filter(|l| !l.is_empty());
    ConfigAlert {
        line,
        message,
        source_line,
    }
}

/// `(12345) : config : ...` → `config : ...`.
fn strip_pid_prefix(s: &str) -> &str {
    if let Some(rest) = s.strip_prefix('(')
        && let Some(close) = rest.find(')')
        && rest[..close].chars().all(|c| c.is_ascii_digit())
    {
        let after = rest[close + 1..].trim_start();
        return after
            .strip_prefix(':')
            .map(str::trim_start)
            .unwrap_or(after);
    }
    s
}

/// Finds `[<display_name>:<line>]` in a message.
fn line_number(message: &str, display_name: &str) -> Option<u32> {
    let needle = format!("[{display_name}:");
    let start = message.find(&needle)? + needle.len();
    let rest = &message[start..];
    let end = rest.find(|c: char| !c.is_ascii_digit())?;
    rest[..end].parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_alert_lines() {
        let out = "[NOTICE]   (8546) : haproxy version is 2.6.12\n\
            [ALERT]    (8546) : config : parsing [/d/.haproxy.cfg.abc.tmp:3] : unknown keyword 'bogus' in 'backend' section\n\
            [ALERT]    (8546) : config : Error(s) found in configuration file : /d/.haproxy.cfg.abc.tmp\n\
            [ALERT]    (8546) : config : Fatal errors found in configuration.\n";
        let cfg = "backend b\n  balance roundrobin\n  bogus\n";
        let alerts = alerts_from_output(out, "/d/.haproxy.cfg.abc.tmp", "haproxy.cfg", cfg);
        assert_eq!(alerts.len(), 3);
        assert_eq!(alerts[0].line, Some(3));
        assert_eq!(
            alerts[0].message,
            "config : parsing [haproxy.cfg:3] : unknown keyword 'bogus' in 'backend' section"
        );
        assert_eq!(alerts[0].source_line.as_deref(), Some("bogus"));
        assert_eq!(
            alerts[1].message,
            "config : Error(s) found in configuration file : haproxy.cfg"
        );
        assert_eq!(alerts[1].line, None);
    }

    #[test]
    fn falls_back_to_last_lines() {
        let out =
            "a\n\nConfiguration file has no error but will not start (no listener) => exit(2).\n";
        let alerts = alerts_from_output(out, "/t", "haproxy.cfg", "");
        assert_eq!(alerts.len(), 2);
        assert!(alerts[1].message.contains("no listener"));
    }

    #[test]
    fn strips_pid() {
        assert_eq!(strip_pid_prefix("(12) : config : x"), "config : x");
        assert_eq!(strip_pid_prefix("(ab) : x"), "(ab) : x");
        assert_eq!(strip_pid_prefix("plain"), "plain");
    }
}
