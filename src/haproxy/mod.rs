//! HAProxy process supervision: validation, master-worker lifecycle, hitless reloads
//! with confirmation and rollback, and clients for the master CLI and runtime API.
//!
//! This module takes configuration *text* produced elsewhere and applies it. It must
//! never decide *what* configuration to apply, nor build runtime commands from
//! unvalidated input: callers hand it finished text and finished command strings.
//!
//! - [`paths`]: where every HAProxy file lives under the data directory, and the
//!   `global`/`defaults` lines that tie a rendered configuration to those files.
//! - [`validate`]: `haproxy -c` on a temporary file, with `[ALERT]` lines mapped back
//!   to the configuration file.
//! - [`master_cli`]: the master CLI (`show proc`, `reload`) and parsing of `show proc`.
//! - [`runtime_api`]: pipelined runtime (stats socket) commands on one connection.
//! - [`supervisor`]: the single owner of the HAProxy master process.
//! - [`process`]: low-level process helpers (signals, liveness, pid file, atomic writes).

pub mod master_cli;
pub mod paths;
pub mod process;
pub mod runtime_api;
mod socket;
pub mod supervisor;
pub mod validate;

pub use master_cli::{MasterCli, MasterCliError, ProcInfo, ProcList};
pub use paths::{HaproxyPaths, PathsError, SoftStopSettings};
pub use runtime_api::{CommandAnswer, RuntimeApi, RuntimeApiError};
pub use supervisor::{
    EnsureOutcome, ReloadCheck, ReloadError, ReloadOutcome, ReloadRecord, ReloadResult, Supervisor,
    SupervisorError, SupervisorOptions, SupervisorStatus,
};
pub use validate::{ConfigAlert, ValidationError, validate};
