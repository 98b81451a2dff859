//! The single owner of one HAProxy master process (master-worker mode, `-W`).
//!
//! Owns: starting the master, adopting a master left running by an earlier controller
//! process, validated and confirmed reloads with last-known-good rollback, death
//! detection and recovery, and a bounded graceful stop. Every operation takes
//! `&mut self`, so two reloads can never be in flight at once.
//!
//! Reload recipe (HAProxy 2.6.12): validate with `haproxy -c` on a temporary file in
//! the data directory → rename it over the live file → save `show servers state` into
//! the server-state file → SIGUSR2 to the master (the master CLI `reload` returns
//! nothing on 2.6, so it is only a fallback) → poll `show proc` on the master CLI
//! (retrying while it refuses connections during the re-exec) until either a worker
//! with a reload count of 0 that was not there before appears (success) or the
//! master's `[failed: N]` counter rises (failure: restore the last-known-good file and
//! reload once more so the master leaves its `ReloadFailed` state).
//!
//! Dropping a `Supervisor` leaves HAProxy running on purpose: the next controller
//! process adopts it instead of binding the ports a second time.
//!
//! Must not: decide what configuration to apply, or change servers at runtime; it
//! takes finished configuration text from its caller.

use std::collections::BTreeSet;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, SystemTime};

use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::master_cli::{MasterCli, MasterCliError, ProcList};
use super::paths::HaproxyPaths;
use super::process::{self, Signal};
use super::runtime_api::RuntimeApi;
use super::validate::{self, ConfigAlert, ValidationError};

/// HAProxy's log is truncated when a master is started and it is larger than this.
const MAX_LOG_BYTES: u64 = 8 * 1024 * 1024;

/// Tunables of the supervisor.
#[derive(Debug, Clone)]
pub struct SupervisorOptions {
    /// The `haproxy` binary (looked up on `PATH` when relative).
    pub haproxy_binary: PathBuf,
    /// Bound on one `haproxy -c` run.
    pub validate_timeout: Duration,
    /// Bound on starting the master until a worker is listed.
    pub start_timeout: Duration,
    /// Bound on confirming one reload.
    pub reload_timeout: Duration,
    /// How long a soft stop may take before SIGTERM (and then SIGKILL) follow.
    pub stop_timeout: Duration,
    /// Save `show servers state` into the server-state file before each reload.
    ///
    /// HAProxy 2.6.12 then applies the saved address and port of a server even when
    /// the new configuration gives the same server another address: callers that move
    /// a server by editing the configuration must re-apply runtime state after the
    /// reload, or turn this off.
    pub save_server_state: bool,
}

impl Default for SupervisorOptions {
    fn default() -> Self {
        Self {
            haproxy_binary: PathBuf::from("haproxy"),
            validate_timeout: Duration::from_secs(30),
            start_timeout: Duration::from_secs(15),
            reload_timeout: Duration::from_secs(30),
            stop_timeout: Duration::from_secs(10),
            save_server_state: true,
        }
    }
}

/// Errors of start, adopt, stop and recovery.
#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    /// The configuration failed validation; nothing was started or changed.
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    /// A master is already running for this data directory.
    #[error("an HAProxy master (pid {pid}) is already running for this data directory")]
    AlreadyRunning {
        /// Its pid.
        pid: u32,
    },
    /// No master is running (or none was started by this supervisor).
    #[error("HAProxy is not running")]
    NotRunning,
    /// The master could not be spawned.
    #[error("cannot start {binary}")]
    Spawn {
        /// The binary.
        binary: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The master exited or never listed a worker.
    #[error("HAProxy did not start ({reason}): {}", join(.alerts))]
    StartFailed {
        /// What went wrong.
        reason: String,
        /// `[ALERT]` lines from HAProxy's log.
        alerts: Vec<ConfigAlert>,
    },
    /// Another supervisor (in this or another process) owns the data directory.
    #[error("another supervisor holds {0}")]
    Locked(PathBuf),
    /// There is no last-known-good configuration to recover with.
    #[error("no last-known-good configuration at {0}")]
    NoLastGood(PathBuf),
    /// A file operation failed.
    #[error("{what} {path}")]
    Io {
        /// The operation.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Sending a signal failed.
    #[error("cannot signal pid {pid}")]
    Signal {
        /// The pid.
        pid: u32,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The master CLI failed.
    #[error(transparent)]
    MasterCli(#[from] MasterCliError),
    /// Recovery needed a reload, and that reload failed.
    #[error("recovery reload failed")]
    Reload(#[source] Box<ReloadError>),
    /// The master was still alive after SIGKILL.
    #[error("HAProxy master {pid} did not exit")]
    StopFailed {
        /// Its pid.
        pid: u32,
    },
}

/// Why a reload did not take effect. In every case the configuration file on disk is
/// the last one that was confirmed live (or the caller's new one if it was confirmed).
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// No master is running.
    #[error("HAProxy is not running")]
    NotRunning,
    /// The configuration failed `haproxy -c`; it never went live.
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    /// The master tried the new configuration and refused it (`[failed: N]` rose).
    /// The last-known-good configuration was restored.
    #[error("HAProxy refused the configuration at reload (rolled back: {rolled_back}): {}", join(.alerts))]
    Rejected {
        /// `[ALERT]` lines the master logged during the reload.
        alerts: Vec<ConfigAlert>,
        /// True when the last-known-good configuration is live again.
        rolled_back: bool,
        /// Why the rollback failed, if it did.
        rollback_error: Option<String>,
    },
    /// The master died during the reload.
    #[error("HAProxy master died during the reload: {}", join(.alerts))]
    MasterDied {
        /// `[ALERT]` lines from HAProxy's log.
        alerts: Vec<ConfigAlert>,
    },
    /// Neither a new worker nor a failure showed up in time.
    #[error("reload not confirmed within {0:?}")]
    NotConfirmed(Duration),
    /// The reload could not be triggered.
    #[error("cannot trigger the reload of master {pid}")]
    Trigger {
        /// The master pid.
        pid: u32,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The master CLI failed.
    #[error(transparent)]
    MasterCli(#[from] MasterCliError),
    /// A file operation failed.
    #[error("{what} {path}")]
    Io {
        /// The operation.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

/// How a reload keeps a configuration HAProxy refuses from going live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReloadCheck {
    /// `haproxy -c` first: a configuration it refuses never reaches the live file.
    Precheck,
    /// The master's own parse is the check. A configuration it refuses never serves a request
    /// (the old workers keep serving, and `show proc` counts a failed reload), and the
    /// last-known-good file is restored and reloaded. Saves the cost of `haproxy -c` (about as
    /// much as a small reload) when the caller built every line from values HAProxy accepts;
    /// a refusal then costs two reloads instead of one check.
    AtReload,
}

fn join(alerts: &[ConfigAlert]) -> String {
    alerts
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// A confirmed reload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReloadOutcome {
    /// Pids of the workers forked by this reload.
    pub new_workers: Vec<u32>,
    /// Older workers still draining right after the reload.
    pub old_workers: usize,
    /// The master's cumulative reload counter after the reload.
    pub master_reloads: u32,
    /// From the start of validation to confirmation.
    pub duration: Duration,
    /// Whether `show servers state` was saved before the reload.
    pub server_state_saved: bool,
}

/// Result kind of the last reload attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReloadResult {
    /// Confirmed live.
    Succeeded,
    /// Refused by `haproxy -c`; never went live.
    Invalid,
    /// Triggered but refused by HAProxy, not confirmed, or the master died.
    Failed,
}

/// The last reload attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReloadRecord {
    /// When it finished.
    pub at: SystemTime,
    /// How long it took.
    pub duration: Duration,
    /// Its result.
    pub result: ReloadResult,
}

/// A snapshot for metrics and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SupervisorStatus {
    /// The master's pid, if one is supervised.
    pub master_pid: Option<u32>,
    /// Whether that master is alive.
    pub master_alive: bool,
    /// Whether the master was adopted from an earlier controller process.
    pub adopted: bool,
    /// Workers of the newest generation.
    pub current_workers: Vec<u32>,
    /// Older workers still draining.
    pub old_workers: usize,
    /// The master's cumulative reload counter.
    pub master_reloads: Option<u32>,
    /// Failed reloads since the last successful one, per the master.
    pub failed_reloads: Option<u32>,
    /// The last reload attempt through this supervisor.
    pub last_reload: Option<ReloadRecord>,
    /// Reloads that failed after validation passed, through this supervisor.
    pub reload_failures_total: u64,
}

/// What [`Supervisor::ensure_running`] found and did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnsureOutcome {
    /// Master and a current worker are alive.
    Healthy,
    /// The master was dead and was started again from the last-known-good file.
    RestartedMaster {
        /// The dead master's pid.
        old_pid: u32,
        /// The new master's pid.
        new_pid: u32,
    },
    /// The master was alive without workers; a reload forked new ones.
    ReloadedWorkers {
        /// The new workers.
        new_workers: Vec<u32>,
    },
}

#[derive(Debug)]
enum Master {
    /// Spawned by this supervisor; a task waits on it so it never lingers as a zombie.
    Owned {
        pid: u32,
        exit: watch::Receiver<Option<ExitStatus>>,
    },
    /// Found running at startup (pid file + master CLI); not our child.
    Adopted { pid: u32 },
}

impl Master {
    fn pid(&self) -> u32 {
        match self {
            Master::Owned { pid, .. } | Master::Adopted { pid } => *pid,
        }
    }

    fn alive(&self) -> bool {
        match self {
            Master::Owned { pid, exit } => exit.borrow().is_none() && process::pid_alive(*pid),
            Master::Adopted { pid } => process::pid_alive(*pid),
        }
    }
}

/// How a reload attempt ended at the HAProxy level.
enum Confirmation {
    Confirmed(ProcList),
    Refused,
}

/// Supervises one HAProxy master for one data directory.
#[derive(Debug)]
pub struct Supervisor {
    paths: HaproxyPaths,
    options: SupervisorOptions,
    master_cli: MasterCli,
    runtime: RuntimeApi,
    master: Option<Master>,
    last_reload: Option<ReloadRecord>,
    reload_failures_total: u64,
    /// `flock` on the data directory's lock file, so two supervisors never drive the
    /// same HAProxy (dropped with the supervisor).
    lock: Option<std::fs::File>,
}

impl Supervisor {
    /// A supervisor for the files in `paths`. Does no IO.
    pub fn new(paths: HaproxyPaths, options: SupervisorOptions) -> Self {
        Self {
            master_cli: MasterCli::new(paths.master_socket()),
            runtime: RuntimeApi::new(paths.runtime_socket()),
            paths,
            options,
            master: None,
            last_reload: None,
            reload_failures_total: 0,
            lock: None,
        }
    }

    /// Creates the data directory and takes its lock (once).
    async fn claim_data_dir(&mut self) -> Result<(), SupervisorError> {
        if self.lock.is_some() {
            return Ok(());
        }
        self.paths
            .create_dir()
            .await
            .map_err(|e| SupervisorError::Io {
                what: "cannot create",
                path: self.paths.data_dir().to_path_buf(),
                source: io::Error::other(e),
            })?;
        let path = self.paths.lock_file().to_path_buf();
        match process::try_lock_file(&path) {
            Ok(Some(file)) => {
                self.lock = Some(file);
                Ok(())
            }
            Ok(None) => Err(SupervisorError::Locked(path)),
            Err(source) => Err(SupervisorError::Io {
                what: "cannot lock",
                path,
                source,
            }),
        }
    }

    /// The file layout.
    pub fn paths(&self) -> &HaproxyPaths {
        &self.paths
    }

    /// A runtime API client for this instance's stats socket.
    pub fn runtime_api(&self) -> RuntimeApi {
        self.runtime.clone()
    }

    /// A master CLI client for this instance.
    pub fn master_cli(&self) -> MasterCli {
        self.master_cli.clone()
    }

    /// The supervised master's pid, if any.
    pub fn master_pid(&self) -> Option<u32> {
        self.master.as_ref().map(Master::pid)
    }

    /// Whether the supervised master is alive (a cheap check: no socket, no process spawned).
    pub fn master_alive(&self) -> bool {
        self.master.as_ref().is_some_and(Master::alive)
    }

    /// Checks `config_text` with `haproxy -c` (the live file is not touched).
    pub async fn validate(&self, config_text: &str) -> Result<(), ValidationError> {
        validate::check_to_tempfile(
            &self.paths,
            &self.options.haproxy_binary,
            config_text,
            self.options.validate_timeout,
        )
        .await
        .map(drop)
    }

    /// Validates `config_text`, installs it atomically and starts the master
    /// (`haproxy -W -S <master socket> -f <config> -p <pid file>`), returning once the
    /// master CLI lists a worker. Refuses to start a second master when one from an
    /// earlier run is alive (use [`Supervisor::adopt`]).
    pub async fn start(&mut self, config_text: &str) -> Result<u32, SupervisorError> {
        if let Some(m) = &self.master
            && m.alive()
        {
            return Err(SupervisorError::AlreadyRunning { pid: m.pid() });
        }
        self.claim_data_dir().await?;
        if let Some(pid) = self.find_running_master().await {
            return Err(SupervisorError::AlreadyRunning { pid });
        }
        self.check_and_write_config(config_text).await?;
        let pid = self.spawn_master(config_text).await?;
        self.save_last_good(config_text).await?;
        Ok(pid)
    }

    /// Adopts a master left running by an earlier controller process: the pid file
    /// names a live process and the master CLI reports that same pid. Returns whether
    /// a master was adopted.
    pub async fn adopt(&mut self) -> Result<bool, SupervisorError> {
        if let Some(m) = &self.master
            && m.alive()
        {
            return Ok(true);
        }
        self.claim_data_dir().await?;
        let Some(pid) = self.find_running_master().await else {
            return Ok(false);
        };
        // Without a last-known-good copy, the live file is the best candidate: it is
        // what the running master loaded (or what it was last asked to load).
        if tokio::fs::metadata(self.paths.last_good()).await.is_err() {
            match tokio::fs::read(self.paths.config()).await {
                Ok(text) => process::write_replace(self.paths.last_good(), text)
                    .await
                    .map_err(|source| SupervisorError::Io {
                        what: "cannot write",
                        path: self.paths.last_good().to_path_buf(),
                        source,
                    })?,
                Err(e) => warn!(error = %e, "adopted HAProxy has no readable configuration file"),
            }
        }
        info!(pid, "adopted running HAProxy master");
        self.master = Some(Master::Adopted { pid });
        Ok(true)
    }

    /// Adopts a running master if there is one, otherwise starts one with
    /// `config_text`. Returns the master pid and whether it was adopted. An adopted
    /// master keeps its configuration until the caller reloads.
    pub async fn start_or_adopt(
        &mut self,
        config_text: &str,
    ) -> Result<(u32, bool), SupervisorError> {
        if self.adopt().await? {
            let pid = self.master_pid().ok_or(SupervisorError::NotRunning)?;
            return Ok((pid, true));
        }
        Ok((self.start(config_text).await?, false))
    }

    /// Checks `config_text` with `haproxy -c` on a temporary file in the data directory and
    /// renames it over the live configuration file (no reload).
    async fn check_and_write_config(&self, config_text: &str) -> Result<(), SupervisorError> {
        let tmp = validate::check_to_tempfile(
            &self.paths,
            &self.options.haproxy_binary,
            config_text,
            self.options.validate_timeout,
        )
        .await?;
        process::persist_temp(tmp, self.paths.config())
            .await
            .map_err(|source| SupervisorError::Io {
                what: "cannot install",
                path: self.paths.config().to_path_buf(),
                source,
            })
    }

    /// Validates `config_text` and installs it as the live and last-known-good file
    /// without reloading: for a configuration that only records what runtime commands
    /// already applied, so that the next reload (or a restart) agrees with them.
    pub async fn install_config(&mut self, config_text: &str) -> Result<(), SupervisorError> {
        self.claim_data_dir().await?;
        self.check_and_write_config(config_text).await?;
        self.save_last_good(config_text).await
    }

    /// Installs `config_text` as the live and last-known-good file without running
    /// `haproxy -c`, for a text that differs from the last validated one only in server slot
    /// lines the caller built from validated values (see
    /// [`crate::render::only_slot_lines_differ`]); anything else goes through
    /// [`Supervisor::install_config`].
    pub async fn install_config_unchecked(
        &mut self,
        config_text: &str,
    ) -> Result<(), SupervisorError> {
        self.claim_data_dir().await?;
        process::write_replace(self.paths.config(), config_text.as_bytes().to_vec())
            .await
            .map_err(|source| SupervisorError::Io {
                what: "cannot install",
                path: self.paths.config().to_path_buf(),
                source,
            })?;
        self.save_last_good(config_text).await
    }

    /// Validates and applies `config_text` with a confirmed hitless reload. On any
    /// failure the live file is the last-known-good one again and the reason is
    /// returned; a configuration that fails validation never reaches the live file.
    pub async fn reload(&mut self, config_text: &str) -> Result<ReloadOutcome, ReloadError> {
        self.reload_with(config_text, ReloadCheck::Precheck).await
    }

    /// Like [`Supervisor::reload`], with the check `check`: with [`ReloadCheck::AtReload`] a
    /// configuration HAProxy refuses reaches the live file, is refused by the master (its
    /// workers go on serving the last-known-good one) and is rolled back, and the error is
    /// [`ReloadError::Rejected`] with the master's alerts.
    pub async fn reload_with(
        &mut self,
        config_text: &str,
        check: ReloadCheck,
    ) -> Result<ReloadOutcome, ReloadError> {
        let started = Instant::now();
        let result = self.reload_inner(config_text, check, started).await;
        let kind = match &result {
            Ok(_) => ReloadResult::Succeeded,
            Err(ReloadError::Invalid(_)) => ReloadResult::Invalid,
            Err(_) => {
                self.reload_failures_total += 1;
                ReloadResult::Failed
            }
        };
        self.last_reload = Some(ReloadRecord {
            at: SystemTime::now(),
            duration: started.elapsed(),
            result: kind,
        });
        result
    }

    async fn reload_inner(
        &mut self,
        config_text: &str,
        check: ReloadCheck,
        started: Instant,
    ) -> Result<ReloadOutcome, ReloadError> {
        let pid = self.live_master_pid().ok_or(ReloadError::NotRunning)?;
        let tmp = match check {
            ReloadCheck::Precheck => {
                validate::check_to_tempfile(
                    &self.paths,
                    &self.options.haproxy_binary,
                    config_text,
                    self.options.validate_timeout,
                )
                .await?
            }
            ReloadCheck::AtReload => validate::write_tempfile(&self.paths, config_text)
                .await
                .map_err(|source| ReloadError::Io {
                    what: "cannot write the new configuration in",
                    path: self.paths.data_dir().to_path_buf(),
                    source,
                })?,
        };
        let before = self.query_procs(self.options.reload_timeout).await?;
        process::persist_temp(tmp, self.paths.config())
            .await
            .map_err(|source| ReloadError::Io {
                what: "cannot install",
                path: self.paths.config().to_path_buf(),
                source,
            })?;
        let server_state_saved = self.save_server_state().await;
        let log_offset = self.log_len().await;

        match self.trigger_and_confirm(pid, &before).await {
            Ok(Confirmation::Confirmed(after)) => {
                let known: BTreeSet<u32> = before.workers.iter().map(|w| w.pid).collect();
                let new_workers: Vec<u32> = after
                    .fresh_workers()
                    .into_iter()
                    .filter(|p| !known.contains(p))
                    .collect();
                if let Err(source) = self.save_last_good(config_text).await {
                    warn!(error = %source, "reload confirmed but the last-known-good copy was not updated");
                }
                let outcome = ReloadOutcome {
                    new_workers,
                    old_workers: after.old_worker_count(),
                    master_reloads: after.master_reloads,
                    duration: started.elapsed(),
                    server_state_saved,
                };
                info!(?outcome, "HAProxy reload confirmed");
                Ok(outcome)
            }
            Ok(Confirmation::Refused) => {
                let alerts = self.alerts_since(log_offset, config_text).await;
                warn!(alerts = %join(&alerts), "HAProxy refused the new configuration; rolling back");
                let (rolled_back, rollback_error) = match self.rollback(pid).await {
                    Ok(()) => (true, None),
                    Err(e) => (false, Some(e.to_string())),
                };
                Err(ReloadError::Rejected {
                    alerts,
                    rolled_back,
                    rollback_error,
                })
            }
            Err(e) => {
                // The outcome is unknown or the master is gone: put the last good file
                // back so a restart or the next reload starts from it.
                if let Err(restore) = self.restore_last_good_file().await {
                    warn!(error = %restore, "cannot restore the last-known-good configuration");
                }
                match e {
                    ReloadError::MasterDied { .. } => Err(ReloadError::MasterDied {
                        alerts: self.alerts_since(log_offset, config_text).await,
                    }),
                    other => Err(other),
                }
            }
        }
    }

    /// Restores the last-known-good file and reloads once more, so the master leaves
    /// its `ReloadFailed` state with the old configuration.
    async fn rollback(&mut self, pid: u32) -> Result<(), ReloadError> {
        self.restore_last_good_file().await?;
        let before = self.query_procs(self.options.reload_timeout).await?;
        match self.trigger_and_confirm(pid, &before).await? {
            Confirmation::Confirmed(_) => Ok(()),
            Confirmation::Refused => Err(ReloadError::Rejected {
                alerts: Vec::new(),
                rolled_back: false,
                rollback_error: Some("the last-known-good configuration was refused too".into()),
            }),
        }
    }

    async fn restore_last_good_file(&self) -> Result<(), ReloadError> {
        let text = tokio::fs::read(self.paths.last_good())
            .await
            .map_err(|source| ReloadError::Io {
                what: "cannot read",
                path: self.paths.last_good().to_path_buf(),
                source,
            })?;
        process::write_replace(self.paths.config(), text)
            .await
            .map_err(|source| ReloadError::Io {
                what: "cannot restore",
                path: self.paths.config().to_path_buf(),
                source,
            })
    }

    /// Sends SIGUSR2 (falling back to the master CLI `reload`) and polls `show proc`
    /// until a new worker generation appears or the failure counter rises.
    async fn trigger_and_confirm(
        &self,
        pid: u32,
        before: &ProcList,
    ) -> Result<Confirmation, ReloadError> {
        let deadline = Instant::now() + self.options.reload_timeout;
        if let Err(source) = process::send_signal(pid, Signal::Usr2) {
            debug!(error = %source, "SIGUSR2 failed; using the master CLI reload command");
            self.master_cli
                .reload(self.options.reload_timeout)
                .await
                .map_err(|e| match e {
                    MasterCliError::Io { .. } => ReloadError::Trigger { pid, source },
                    other => ReloadError::MasterCli(other),
                })?;
        }
        let known: BTreeSet<u32> = before.workers.iter().map(|w| w.pid).collect();
        loop {
            if !self.master.as_ref().is_some_and(Master::alive) {
                return Err(ReloadError::MasterDied { alerts: Vec::new() });
            }
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(ReloadError::NotConfirmed(self.options.reload_timeout));
            }
            // One attempt at a time with a short pause: the master refuses connections while
            // it re-executes, and the new worker answers requests as soon as it is listed, so
            // a longer backoff would only delay the confirmation.
            match self.master_cli.try_show_proc().await {
                Ok(now) => {
                    if now.master_reloads > before.master_reloads {
                        if now.fresh_workers().iter().any(|p| !known.contains(p)) {
                            return Ok(Confirmation::Confirmed(now));
                        }
                        if now.failed_reloads > before.failed_reloads {
                            return Ok(Confirmation::Refused);
                        }
                    }
                }
                // Dead master or deadline: both are handled at the top of the loop.
                Err(e) if e.is_transient() => debug!(error = %e, "master CLI unavailable"),
                Err(e) => return Err(e.into()),
            }
            tokio::time::sleep(Duration::from_millis(2).min(remaining)).await;
        }
    }

    /// Saves `show servers state` into the server-state file. On failure the file is
    /// removed rather than left stale, and the reload goes on without it.
    async fn save_server_state(&self) -> bool {
        if !self.options.save_server_state {
            // A file left by an earlier run would otherwise be applied by the new worker.
            self.remove_server_state().await;
            return false;
        }
        let result = match self.runtime.show_servers_state().await {
            // Read by the new worker moments later: no fsync on the reload's path.
            Ok(text) => process::write_replace(self.paths.server_state(), text.into_bytes())
                .await
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match result {
            Ok(()) => true,
            Err(error) => {
                warn!(%error, "cannot save server state; reloading without it");
                self.remove_server_state().await;
                false
            }
        }
    }

    async fn remove_server_state(&self) {
        if let Err(e) = tokio::fs::remove_file(self.paths.server_state()).await
            && e.kind() != io::ErrorKind::NotFound
        {
            warn!(error = %e, "cannot remove stale server-state file");
        }
    }

    /// A snapshot of the master and its workers.
    pub async fn status(&self) -> SupervisorStatus {
        let master_pid = self.master_pid();
        let master_alive = self.master.as_ref().is_some_and(Master::alive);
        let procs = if master_alive {
            self.query_procs(Duration::from_secs(2)).await.ok()
        } else {
            None
        };
        SupervisorStatus {
            master_pid,
            master_alive,
            adopted: matches!(self.master, Some(Master::Adopted { .. })),
            current_workers: procs
                .as_ref()
                .map(ProcList::current_workers)
                .unwrap_or_default(),
            old_workers: procs.as_ref().map(ProcList::old_worker_count).unwrap_or(0),
            master_reloads: procs.as_ref().map(|p| p.master_reloads),
            failed_reloads: procs.as_ref().map(|p| p.failed_reloads),
            last_reload: self.last_reload.clone(),
            reload_failures_total: self.reload_failures_total,
        }
    }

    /// Detects a dead master and restarts it from the last-known-good file. A dead
    /// worker needs the same handling: on 2.6.12 the master exits once its last worker
    /// is gone (observed even with `master-worker no-exit-on-failure`), so it shows up
    /// as a dead master. A live master without workers, should one ever be seen, is
    /// reloaded. Call periodically.
    pub async fn ensure_running(&mut self) -> Result<EnsureOutcome, SupervisorError> {
        let Some(master) = &self.master else {
            return Err(SupervisorError::NotRunning);
        };
        let old_pid = master.pid();
        if !master.alive() {
            warn!(
                pid = old_pid,
                "HAProxy master is gone; restarting from the last-known-good configuration"
            );
            let text = tokio::fs::read_to_string(self.paths.last_good())
                .await
                .map_err(|_| SupervisorError::NoLastGood(self.paths.last_good().to_path_buf()))?;
            // The dead master stays recorded until a start succeeds, so a failed start is
            // tried again by the next call instead of being forgotten.
            let dead = self.master.take();
            return match self.start(&text).await {
                Ok(new_pid) => Ok(EnsureOutcome::RestartedMaster { old_pid, new_pid }),
                Err(e) => {
                    self.master = dead;
                    Err(e)
                }
            };
        }
        let procs = self.query_procs(Duration::from_secs(5)).await?;
        if !procs.workers.is_empty() {
            return Ok(EnsureOutcome::Healthy);
        }
        warn!(pid = old_pid, "HAProxy master has no workers; reloading");
        let text = tokio::fs::read_to_string(self.paths.last_good())
            .await
            .map_err(|_| SupervisorError::NoLastGood(self.paths.last_good().to_path_buf()))?;
        let outcome = self
            .reload(&text)
            .await
            .map_err(|e| SupervisorError::Reload(Box::new(e)))?;
        Ok(EnsureOutcome::ReloadedWorkers {
            new_workers: outcome.new_workers,
        })
    }

    /// Graceful stop: SIGUSR1 (workers finish their connections, bounded by
    /// `hard-stop-after`), then SIGTERM and SIGKILL if the master outlives
    /// `stop_timeout`. A no-op when nothing runs.
    pub async fn stop(&mut self) -> Result<(), SupervisorError> {
        let Some(master) = self.master.take() else {
            return Ok(());
        };
        let pid = master.pid();
        let steps = [
            (Signal::Usr1, self.options.stop_timeout),
            (Signal::Term, Duration::from_secs(3)),
            (Signal::Kill, Duration::from_secs(3)),
        ];
        for (signal, wait) in steps {
            if !master.alive() {
                break;
            }
            match process::send_signal(pid, signal) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::ESRCH) => break,
                Err(source) => {
                    self.master = Some(master);
                    return Err(SupervisorError::Signal { pid, source });
                }
            }
            if wait_for_exit(&master, wait).await {
                info!(pid, ?signal, "HAProxy master stopped");
                return Ok(());
            }
            warn!(pid, ?signal, "HAProxy master still running; escalating");
        }
        if master.alive() {
            self.master = Some(master);
            return Err(SupervisorError::StopFailed { pid });
        }
        Ok(())
    }

    /// `show proc`, retried while the master CLI refuses connections, but only as
    /// long as the master is alive and `deadline` has not passed.
    async fn query_procs(&self, deadline: Duration) -> Result<ProcList, MasterCliError> {
        let start = Instant::now();
        loop {
            let err = if self.master.as_ref().is_some_and(Master::alive) {
                match self.master_cli.try_show_proc().await {
                    Ok(p) => return Ok(p),
                    Err(e) if e.is_transient() => e,
                    Err(e) => return Err(e),
                }
            } else {
                MasterCliError::Io {
                    path: self.paths.master_socket().to_path_buf(),
                    source: io::Error::new(
                        io::ErrorKind::NotFound,
                        "HAProxy master is not running",
                    ),
                }
            };
            if start.elapsed() >= deadline || !self.master.as_ref().is_some_and(Master::alive) {
                return Err(match err {
                    MasterCliError::Io { path, source } => MasterCliError::Unavailable {
                        path,
                        waited: start.elapsed(),
                        source,
                    },
                    other => other,
                });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn live_master_pid(&self) -> Option<u32> {
        self.master.as_ref().filter(|m| m.alive()).map(Master::pid)
    }

    /// A master from an earlier run: the pid file names a live process, and the
    /// master CLI answers with the same pid (guards against pid reuse).
    async fn find_running_master(&self) -> Option<u32> {
        let pid = process::read_pid_file(self.paths.pid_file()).await.ok()??;
        if !process::pid_alive(pid) {
            return None;
        }
        match self.master_cli.show_proc(Duration::from_secs(2)).await {
            Ok(p) if p.master_pid == pid => Some(pid),
            Ok(p) => {
                debug!(
                    pid,
                    cli_pid = p.master_pid,
                    "pid file and master CLI disagree"
                );
                None
            }
            Err(e) => {
                debug!(pid, error = %e, "pid file names a live process but the master CLI does not answer");
                None
            }
        }
    }

    async fn spawn_master(&mut self, config_text: &str) -> Result<u32, SupervisorError> {
        let log_offset = self.log_len().await;
        // Keep the log bounded across restarts; it only serves recent diagnostics.
        let truncate = log_offset > MAX_LOG_BYTES;
        let log_offset = if truncate { 0 } else { log_offset };
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(!truncate)
            .write(true)
            .truncate(truncate)
            .open(self.paths.log_file())
            .map_err(|source| SupervisorError::Io {
                what: "cannot open",
                path: self.paths.log_file().to_path_buf(),
                source,
            })?;
        let log_err = log.try_clone().map_err(|source| SupervisorError::Io {
            what: "cannot open",
            path: self.paths.log_file().to_path_buf(),
            source,
        })?;
        let mut command = tokio::process::Command::new(&self.options.haproxy_binary);
        process::new_session(&mut command);
        let mut child = command
            .arg("-W")
            .arg("-S")
            .arg(format!("{},mode,600", self.paths.master_socket().display()))
            .arg("-f")
            .arg(self.paths.config())
            .arg("-p")
            .arg(self.paths.pid_file())
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log_err))
            // HAProxy must outlive a controller restart (it is adopted afterwards), and
            // a terminal's Ctrl-C or hang-up aimed at the controller must not reach it: it
            // runs in its own session (see `process::new_session`).
            .kill_on_drop(false)
            .spawn()
            .map_err(|source| SupervisorError::Spawn {
                binary: self.options.haproxy_binary.clone(),
                source,
            })?;
        let Some(pid) = child.id() else {
            return Err(SupervisorError::StartFailed {
                reason: "the master exited immediately".into(),
                alerts: self.alerts_since(log_offset, config_text).await,
            });
        };
        let (tx, rx) = watch::channel(None);
        tokio::spawn(async move {
            // Reap the master as soon as it exits, so it never lingers as a zombie.
            let status = child.wait().await;
            let _ = tx.send(Some(status.unwrap_or_else(|_| exit_status_unknown())));
        });
        let master = Master::Owned { pid, exit: rx };

        let deadline = Instant::now() + self.options.start_timeout;
        loop {
            if !master.alive() {
                let status = match &master {
                    Master::Owned { exit, .. } => *exit.borrow(),
                    Master::Adopted { .. } => None,
                };
                return Err(SupervisorError::StartFailed {
                    reason: match status {
                        Some(s) => format!("master exited with {s}"),
                        None => "master exited".into(),
                    },
                    alerts: self.alerts_since(log_offset, config_text).await,
                });
            }
            if let Ok(procs) = self.master_cli.try_show_proc().await
                && procs.master_pid == pid
                && !procs.workers.is_empty()
            {
                info!(pid, workers = ?procs.current_workers(), "HAProxy master started");
                self.master = Some(master);
                return Ok(pid);
            }
            if Instant::now() >= deadline {
                let _ = process::send_signal(pid, Signal::Kill);
                return Err(SupervisorError::StartFailed {
                    reason: format!("no worker listed within {:?}", self.options.start_timeout),
                    alerts: self.alerts_since(log_offset, config_text).await,
                });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn save_last_good(&self, config_text: &str) -> Result<(), SupervisorError> {
        process::write_replace(self.paths.last_good(), config_text.as_bytes().to_vec())
            .await
            .map_err(|source| SupervisorError::Io {
                what: "cannot write",
                path: self.paths.last_good().to_path_buf(),
                source,
            })
    }

    async fn log_len(&self) -> u64 {
        tokio::fs::metadata(self.paths.log_file())
            .await
            .map(|m| m.len())
            .unwrap_or(0)
    }

    /// `[ALERT]` lines HAProxy logged after `offset`.
    async fn alerts_since(&self, offset: u64, config_text: &str) -> Vec<ConfigAlert> {
        let bytes = tokio::fs::read(self.paths.log_file())
            .await
            .unwrap_or_default();
        let start = usize::try_from(offset).unwrap_or(0);
        let tail = bytes.get(start..).unwrap_or(&bytes[..]);
        let text = String::from_utf8_lossy(tail);
        let config = path_str(self.paths.config());
        let display = self
            .paths
            .config()
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| config.clone());
        validate::alerts_from_output(&text, &config, &display, config_text)
            .into_iter()
            .filter(|a| !a.message.is_empty())
            .collect()
    }
}

fn path_str(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

fn exit_status_unknown() -> ExitStatus {
    use std::os::unix::process::ExitStatusExt as _;
    ExitStatus::from_raw(-1)
}

async fn wait_for_exit(master: &Master, wait: Duration) -> bool {
    let deadline = Instant::now() + wait;
    while master.alive() {
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    true
}
