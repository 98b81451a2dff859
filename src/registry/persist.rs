//! Durable state: an append-only command log plus an atomically replaced snapshot.
//!
//! Layout of the data directory:
//! - `snapshot.json`: the whole [`Store`] (written to `snapshot.json.tmp`, fsync'd,
//!   renamed over the old one, then the directory is fsync'd);
//! - `commands.log`: one JSON record per line, `{"index":N,"cmd":...}`, appended and
//!   fsync'd before the write is acknowledged. Compaction writes a snapshot and then
//!   truncates the log; records at or below the snapshot's raft index are skipped on
//!   replay, so a crash between the two steps is harmless.
//!
//! Recovery drops a torn or corrupt tail of the log (with a warning) instead of failing.
//! Owns: file formats, fsync discipline, replay. Must not: decide what a command means
//! (the [`Store`] does) or know about HTTP and timers.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::store::{Command, Store};

const SNAPSHOT: &str = "snapshot.json";
const SNAPSHOT_TMP: &str = "snapshot.json.tmp";
const LOG: &str = "commands.log";

/// Persistence failures.
#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("corrupt snapshot {path}: {source}")]
    Snapshot {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("encode record: {0}")]
    Encode(#[from] serde_json::Error),
}

fn io_err(
    action: &'static str,
    path: &Path,
) -> impl FnOnce(std::io::Error) -> PersistError + use<> {
    let path = path.to_path_buf();
    move |source| PersistError::Io {
        action,
        path,
        source,
    }
}

#[derive(Serialize, Deserialize)]
struct Record {
    index: u64,
    cmd: Command,
}

/// An open data directory.
#[derive(Debug)]
pub struct Durable {
    dir: PathBuf,
    log: File,
    records: usize,
    compact_every: usize,
}

/// Opens `dir`, recovering the state (or starting from `fresh()`).
pub fn open(
    dir: &Path,
    compact_every: usize,
    fresh: impl FnOnce() -> Store,
) -> Result<(Store, Durable), PersistError> {
    std::fs::create_dir_all(dir).map_err(io_err("create", dir))?;
    let snap_path = dir.join(SNAPSHOT);
    let mut store = match std::fs::read(&snap_path) {
        Ok(bytes) => {
            serde_json::from_slice::<Store>(&bytes).map_err(|source| PersistError::Snapshot {
                path: snap_path.clone(),
                source,
            })?
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => fresh(),
        Err(e) => return Err(io_err("read", &snap_path)(e)),
    };
    let log_path = dir.join(LOG);
    let mut bytes = Vec::new();
    match File::open(&log_path) {
        Ok(mut f) => {
            f.read_to_end(&mut bytes)
                .map_err(io_err("read", &log_path))?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err("open", &log_path)(e)),
    }
    let mut good_len = 0usize;
    let mut records = 0usize;
    let mut rest = &bytes[..];
    while !rest.is_empty() {
        let Some(nl) = rest.iter().position(|b| *b == b'\n') else {
            tracing::warn!(path = %log_path.display(), "dropping torn record at end of command log");
            break;
        };
        let line = &rest[..nl];
        let rec: Record = match serde_json::from_slice(line) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(path = %log_path.display(), error = %e, offset = good_len,
                    "dropping corrupt tail of command log");
                break;
            }
        };
        if rec.index > store.raft_index {
            match store.apply(&rec.cmd) {
                Ok(applied) => {
                    if applied.index != Some(rec.index) {
                        tracing::warn!(
                            logged = rec.index,
                            replayed = ?applied.index,
                            "command log replay produced a different index"
                        );
                        store.raft_index = store.raft_index.max(rec.index);
                    }
                }
                Err(e) => {
                    tracing::warn!(index = rec.index, error = %e, "command log record no longer applies");
                    store.raft_index = store.raft_index.max(rec.index);
                }
            }
        }
        records += 1;
        good_len += nl + 1;
        rest = &rest[nl + 1..];
    }
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(io_err("open", &log_path))?;
    if good_len < bytes.len() {
        log.set_len(good_len as u64)
            .map_err(io_err("truncate", &log_path))?;
        log.sync_all().map_err(io_err("sync", &log_path))?;
    }
    let mut durable = Durable {
        dir: dir.to_path_buf(),
        log,
        records,
        compact_every: compact_every.max(1),
    };
    // Start from a compact state so the next crash replays little.
    if records > 0 {
        durable.compact(&store)?;
    } else if !snap_path.exists() {
        durable.write_snapshot(&store)?;
    }
    Ok((store, durable))
}

impl Durable {
    /// Appends one applied command and fsyncs it.
    pub fn append(&mut self, index: u64, cmd: &Command) -> Result<(), PersistError> {
        let mut line = serde_json::to_vec(&Record {
            index,
            cmd: cmd.clone(),
        })?;
        line.push(b'\n');
        let path = self.dir.join(LOG);
        self.log.write_all(&line).map_err(io_err("append", &path))?;
        self.log.sync_data().map_err(io_err("sync", &path))?;
        self.records += 1;
        Ok(())
    }

    /// Compacts once the log has grown past the threshold.
    pub fn maybe_compact(&mut self, store: &Store) -> Result<(), PersistError> {
        if self.records >= self.compact_every {
            self.compact(store)?;
        }
        Ok(())
    }

    /// Writes a snapshot of `store` and empties the log.
    pub fn compact(&mut self, store: &Store) -> Result<(), PersistError> {
        self.write_snapshot(store)?;
        let path = self.dir.join(LOG);
        self.log.set_len(0).map_err(io_err("truncate", &path))?;
        self.log.sync_all().map_err(io_err("sync", &path))?;
        self.records = 0;
        Ok(())
    }

    fn write_snapshot(&self, store: &Store) -> Result<(), PersistError> {
        let tmp = self.dir.join(SNAPSHOT_TMP);
        let dst = self.dir.join(SNAPSHOT);
        let bytes = serde_json::to_vec(store)?;
        let mut f = File::create(&tmp).map_err(io_err("create", &tmp))?;
        f.write_all(&bytes).map_err(io_err("write", &tmp))?;
        f.sync_all().map_err(io_err("sync", &tmp))?;
        drop(f);
        std::fs::rename(&tmp, &dst).map_err(io_err("rename", &dst))?;
        if let Ok(d) = File::open(&self.dir) {
            // Directory fsync makes the rename durable; not supported everywhere.
            let _ = d.sync_all();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fresh() -> Store {
        Store::new("id".into(), "n".into(), "dc1".into())
    }

    fn set(key: &str) -> Command {
        Command::KvSet {
            key: key.into(),
            value: b"v".to_vec(),
            flags: 0,
            cas: None,
        }
    }

    #[test]
    fn replays_log_and_survives_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, mut d) = open(dir.path(), 1000, fresh).unwrap();
        for k in ["a", "b", "c"] {
            let cmd = set(k);
            let applied = store.apply(&cmd).unwrap();
            d.append(applied.index.unwrap(), &cmd).unwrap();
        }
        drop(d);
        // a torn record at the end
        let mut f = OpenOptions::new()
            .append(true)
            .open(dir.path().join(LOG))
            .unwrap();
        f.write_all(b"{\"index\":99,\"cmd\":{\"KvSe").unwrap();
        drop(f);
        let (back, _d) = open(dir.path(), 1000, fresh).unwrap();
        assert_eq!(back, store);
        assert_eq!(back.raft_index, 4);
    }

    #[test]
    fn compaction_keeps_state_and_index() {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, mut d) = open(dir.path(), 2, fresh).unwrap();
        for k in ["a", "b", "c", "d", "e"] {
            let cmd = set(k);
            let applied = store.apply(&cmd).unwrap();
            d.append(applied.index.unwrap(), &cmd).unwrap();
            d.maybe_compact(&store).unwrap();
        }
        drop(d);
        let (back, _d) = open(dir.path(), 2, fresh).unwrap();
        assert_eq!(back, store);
    }

    #[test]
    fn corrupt_middle_record_drops_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, mut d) = open(dir.path(), 1000, fresh).unwrap();
        let cmd = set("a");
        let applied = store.apply(&cmd).unwrap();
        d.append(applied.index.unwrap(), &cmd).unwrap();
        drop(d);
        let mut f = OpenOptions::new()
            .append(true)
            .open(dir.path().join(LOG))
            .unwrap();
        f.write_all(
            b"garbage\n{\"index\":3,\"cmd\":{\"KvDelete\":{\"key\":\"a\",\"cas\":null}}}\n",
        )
        .unwrap();
        drop(f);
        let (back, _d) = open(dir.path(), 1000, fresh).unwrap();
        assert_eq!(back, store);
    }
}
