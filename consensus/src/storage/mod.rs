//! Durable raft storage on one redb file per agent: the log, the vote, the committed log id and
//! the current snapshot of the state machine.
//!
//! # Layout
//! - [`writer`]: the one thread that writes the file. Each round drains every queued write into
//!   one fsync'd commit (group commit) and only then fires the appends' flush callbacks: many
//!   appends queued behind one fsync cost one fsync.
//! - [`pending`]: the log's in-memory tail, which makes appends readable before they are durable
//!   so that the raft core never waits for the disk, and the latest committed log id.
//! - [`log`]: [`LogStore`], openraft's `RaftLogStorage` and `RaftLogReader`.
//! - [`state_machine`]: [`StateMachine`]: the in-memory `ClusterState`, its apply watch, and
//!   snapshot building/installation.
//! - [`snapshot`]: snapshot files (the encoded state, streamed to and from disk) and their
//!   records.
//!
//! Restart: the state machine is restored from its last durable snapshot and openraft re-applies
//! the log up to the saved committed log id, so nothing acknowledged is lost.

pub mod log;
pub(crate) mod pending;
pub mod snapshot;
pub mod state_machine;
pub mod writer;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use redb::{Database, ReadableDatabase, TableDefinition};

pub use self::log::LogStore;
pub use self::state_machine::{AppliedState, StateMachine};

/// Log entries by index (CBOR of `Entry`).
pub(crate) const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("raft_log");
/// Small records: vote, committed, last purged log id (CBOR each).
pub(crate) const META: TableDefinition<&str, &[u8]> = TableDefinition::new("raft_meta");
/// The current snapshot's record (CBOR of [`snapshot::StoredSnapshot`]: metadata and file).
pub(crate) const SNAPSHOT: TableDefinition<&str, &[u8]> = TableDefinition::new("raft_snapshot");

pub(crate) const KEY_VOTE: &str = "vote";
pub(crate) const KEY_COMMITTED: &str = "committed";
pub(crate) const KEY_PURGED: &str = "last_purged";
pub(crate) const KEY_CURRENT: &str = "current";
pub(crate) const KEY_SELF: &str = "self";

/// The file name of the raft database inside the data directory.
pub const DB_FILE: &str = "raft.redb";

/// Why storage could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum StorageOpenError {
    /// The data directory could not be created.
    #[error("create data dir {path}: {source}")]
    Dir {
        /// The directory.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// redb refused to open or create the file.
    #[error("open {path}: {source}")]
    Open {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: Box<redb::DatabaseError>,
    },
    /// The tables could not be created or read.
    #[error("raft storage: {0}")]
    Io(#[from] std::io::Error),
}

/// Opens (or creates) the raft database in `data_dir` and returns the log store and the state
/// machine that share it. The state machine is restored from the last stored snapshot.
pub fn open(data_dir: &Path) -> Result<(LogStore, StateMachine), StorageOpenError> {
    std::fs::create_dir_all(data_dir).map_err(|source| StorageOpenError::Dir {
        path: data_dir.to_path_buf(),
        source,
    })?;
    let path = data_dir.join(DB_FILE);
    let db = create_with_retry(&path)?;
    let db = Arc::new(db);
    create_tables(&db)?;
    let pending = Arc::new(pending::Pending::default());
    let metrics = crate::metrics::LogMetrics::default();
    let writer = writer::Writer::spawn(db.clone(), pending.clone(), metrics.clone())?;
    let log = LogStore::new(db.clone(), pending, writer.clone(), metrics);
    let sm = StateMachine::open(db, writer, snapshot::SnapshotDir::open(data_dir)?)?;
    Ok((log, sm))
}

/// Where [`set_aside`] moves a cluster's state, under the data directory.
pub const SET_ASIDE_DIR: &str = "set-aside";

/// Moves this agent's cluster state (the raft database, its snapshots, the managers it knew)
/// out of the way, into `set-aside/<cluster>-<unix seconds>/` under `data_dir`, so that the
/// agent starts next as one that never belonged to a cluster. Nothing is deleted. The agent
/// must have stopped its quorum first. Returns the directory the state went to.
pub fn set_aside(data_dir: &Path, cluster: &str) -> std::io::Result<PathBuf> {
    let seconds = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let safe: String = cluster
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .take(64)
        .collect();
    let target = data_dir
        .join(SET_ASIDE_DIR)
        .join(format!("{safe}-{seconds}"));
    std::fs::create_dir_all(&target)?;
    for name in [DB_FILE, snapshot::SNAPSHOT_DIR, crate::MANAGERS_FILE] {
        let from = data_dir.join(name);
        if from.exists() {
            std::fs::rename(&from, target.join(name))?;
        }
    }
    Ok(target)
}

/// Whether `data_dir` holds raft state (a database with a vote or log entries).
pub fn has_state(data_dir: &Path) -> bool {
    let path = data_dir.join(DB_FILE);
    if !path.exists() {
        return false;
    }
    let Ok(db) = Database::open(&path) else {
        return false;
    };
    let Ok(rtx) = db.begin_read() else {
        return false;
    };
    let Ok(meta) = rtx.open_table(META) else {
        return false;
    };
    matches!(meta.get(KEY_VOTE), Ok(Some(_)))
}

/// Opens the file, waiting briefly if a previous instance in this process is still closing.
fn create_with_retry(path: &Path) -> Result<Database, StorageOpenError> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
    loop {
        match Database::create(path) {
            Ok(db) => return Ok(db),
            Err(redb::DatabaseError::DatabaseAlreadyOpen)
                if std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(source) => {
                return Err(StorageOpenError::Open {
                    path: path.to_path_buf(),
                    source: Box::new(source),
                });
            }
        }
    }
}

fn create_tables(db: &Database) -> Result<(), std::io::Error> {
    let tx = db.begin_write().map_err(crate::codec::io_err)?;
    {
        tx.open_table(LOG).map_err(crate::codec::io_err)?;
        tx.open_table(META).map_err(crate::codec::io_err)?;
        tx.open_table(SNAPSHOT).map_err(crate::codec::io_err)?;
    }
    tx.commit().map_err(crate::codec::io_err)
}
