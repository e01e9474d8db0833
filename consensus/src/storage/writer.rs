//! The single writer of the raft database: a dedicated thread that owns every write transaction.
//!
//! Group commit: each round drains every queued operation into one redb transaction committed
//! with `Durability::Immediate` (one fsync), and only then answers them — the appends' flush
//! callbacks, the vote, truncations, purges, snapshots. Operations that arrive during an fsync
//! wait for the next round, so 32 concurrent appends cost one fsync, not 32, and the raft core
//! never waits for a disk: appends are readable from the in-memory [`Pending`] tail at once,
//! and the latest committed log id rides along with the next round.

use std::io;
use std::sync::Arc;
use std::time::Instant;

use openraft::storage::IOFlushed;
use redb::{Database, Durability, Table};
use shoal_metrics::prometheus_client::metrics::histogram::Histogram;
use tokio::sync::{mpsc, oneshot};

use super::pending::{Pending, PendingEntry};
use super::{KEY_COMMITTED, KEY_PURGED, LOG, META, SNAPSHOT};
use crate::codec::{encode, io_err};
use crate::metrics::LogMetrics;
use crate::types::TypeConfig;

/// Operations queued at most before senders wait.
const QUEUE: usize = 1024;
/// Operations applied in one round at most.
const MAX_ROUND: usize = 512;
/// The committed log id is stored at most this often: it only saves re-applying entries after a
/// restart, and leaving it out of most rounds leaves one page fewer to write and fsync.
const COMMITTED_EVERY: std::time::Duration = std::time::Duration::from_millis(50);

/// Which small-record table a [`WriteOp::Put`] targets.
#[derive(Debug, Clone, Copy)]
pub(crate) enum RecordTable {
    /// Vote, committed, purged, this node.
    Meta,
    /// The current snapshot.
    Snapshot,
}

/// One write, with how its sender learns it is durable.
pub(crate) enum WriteOp {
    /// Store appended entries (already readable from the pending tail); `flushed` fires once
    /// they are durable.
    Append {
        entries: Vec<Arc<PendingEntry>>,
        flushed: IOFlushed<TypeConfig>,
        submitted: Instant,
    },
    /// Set (or delete, with `None`) one record.
    Put {
        table: RecordTable,
        key: &'static str,
        value: Option<Vec<u8>>,
        done: Ack,
    },
    /// Delete log entries with index >= `from`.
    TruncateFrom { from: u64, done: Ack },
    /// Delete log entries with index <= `upto` and record the purged log id.
    Purge {
        upto: u64,
        purged: Vec<u8>,
        done: Ack,
    },
}

type Ack = oneshot::Sender<io::Result<()>>;

/// Cloneable handle to the writer thread.
#[derive(Clone)]
pub(crate) struct Writer {
    tx: mpsc::Sender<WriteOp>,
}

impl Writer {
    /// Starts the writer thread for `db`. `metrics` observes each append's time to durability
    /// and each round's time.
    pub(crate) fn spawn(
        db: Arc<Database>,
        pending: Arc<Pending>,
        metrics: LogMetrics,
    ) -> io::Result<Writer> {
        let (tx, rx) = mpsc::channel(QUEUE);
        std::thread::Builder::new()
            .name("shoal-raft-writer".into())
            .spawn(move || run(&db, &pending, &metrics, rx))?;
        Ok(Writer { tx })
    }

    async fn submit(&self, op: WriteOp) -> io::Result<()> {
        self.tx
            .send(op)
            .await
            .map_err(|_| io::Error::other("raft storage writer stopped"))
    }

    async fn submit_and_wait(&self, make: impl FnOnce(Ack) -> WriteOp) -> io::Result<()> {
        let (done, rx) = oneshot::channel();
        self.submit(make(done)).await?;
        rx.await
            .map_err(|_| io::Error::other("raft storage writer dropped a request"))?
    }

    /// Queues entries for the next round; returns at once (after queueing). `flushed` fires once
    /// they are durable.
    pub(crate) async fn append(
        &self,
        entries: Vec<Arc<PendingEntry>>,
        flushed: IOFlushed<TypeConfig>,
        submitted: Instant,
    ) -> io::Result<()> {
        self.submit(WriteOp::Append {
            entries,
            flushed,
            submitted,
        })
        .await
    }

    /// Sets or deletes one record; returns once it is durable.
    pub(crate) async fn put(
        &self,
        table: RecordTable,
        key: &'static str,
        value: Option<Vec<u8>>,
    ) -> io::Result<()> {
        self.submit_and_wait(|done| WriteOp::Put {
            table,
            key,
            value,
            done,
        })
        .await
    }

    /// Deletes entries with index >= `from`; returns once that is durable.
    pub(crate) async fn truncate_from(&self, from: u64) -> io::Result<()> {
        self.submit_and_wait(|done| WriteOp::TruncateFrom { from, done })
            .await
    }

    /// Deletes entries with index <= `upto` and records `purged` (an encoded log id); returns
    /// once that is durable.
    pub(crate) async fn purge(&self, upto: u64, purged: Vec<u8>) -> io::Result<()> {
        self.submit_and_wait(|done| WriteOp::Purge { upto, purged, done })
            .await
    }
}

fn run(db: &Database, pending: &Pending, metrics: &LogMetrics, mut rx: mpsc::Receiver<WriteOp>) {
    let mut committed_at: Option<Instant> = None;
    while let Some(first) = rx.blocking_recv() {
        // Taken before draining: see `Pending::take_committed`.
        let due = committed_at.is_none_or(|at| at.elapsed() >= COMMITTED_EVERY);
        let committed = if due { pending.take_committed() } else { None };
        let mut ops = vec![first];
        while ops.len() < MAX_ROUND {
            match rx.try_recv() {
                Ok(op) => ops.push(op),
                Err(_) => break,
            }
        }
        // A round cut short may not hold the entries the committed id points to: keep it for
        // the next round.
        let committed = if ops.len() == MAX_ROUND && committed.is_some() {
            pending.keep_committed_dirty();
            None
        } else {
            committed
        };
        if committed.is_some() {
            committed_at = Some(Instant::now());
        }
        let started = Instant::now();
        let result = commit_round(db, &ops, committed);
        metrics.syncs.observe(started.elapsed().as_secs_f64());
        answer(ops, &result, pending, &metrics.appends);
    }
    tracing::debug!("raft storage writer stopped");
}

/// Applies every op of a round and the committed log id in one durable transaction.
fn commit_round(
    db: &Database,
    ops: &[WriteOp],
    committed: Option<Option<crate::types::LogId>>,
) -> io::Result<()> {
    let mut tx = db.begin_write().map_err(io_err)?;
    tx.set_durability(Durability::Immediate).map_err(io_err)?;
    {
        let mut log = tx.open_table(LOG).map_err(io_err)?;
        let mut meta = tx.open_table(META).map_err(io_err)?;
        let mut snap = tx.open_table(SNAPSHOT).map_err(io_err)?;
        for op in ops {
            match op {
                WriteOp::Append { entries, .. } => {
                    for e in entries {
                        log.insert(e.entry.log_id.index, e.bytes.as_slice())
                            .map_err(io_err)?;
                    }
                }
                WriteOp::Put {
                    table, key, value, ..
                } => {
                    let t = match table {
                        RecordTable::Meta => &mut meta,
                        RecordTable::Snapshot => &mut snap,
                    };
                    set(t, key, value.as_deref())?;
                }
                WriteOp::TruncateFrom { from, .. } => {
                    log.retain_in(*from.., |_, _| false).map_err(io_err)?;
                }
                WriteOp::Purge { upto, purged, .. } => {
                    log.retain_in(..=*upto, |_, _| false).map_err(io_err)?;
                    meta.insert(KEY_PURGED, purged.as_slice()).map_err(io_err)?;
                }
            }
        }
        if let Some(committed) = committed {
            let bytes = committed.map(|c| encode(&c)).transpose().map_err(io_err)?;
            set(&mut meta, KEY_COMMITTED, bytes.as_deref())?;
        }
    }
    tx.commit().map_err(io_err)
}

fn set(
    t: &mut Table<'_, &'static str, &'static [u8]>,
    key: &str,
    value: Option<&[u8]>,
) -> io::Result<()> {
    match value {
        Some(v) => t.insert(key, v).map(drop).map_err(io_err),
        None => t.remove(key).map(drop).map_err(io_err),
    }
}

/// Answers every op of a round with its result, and lets go of the entries now durable.
fn answer(ops: Vec<WriteOp>, result: &io::Result<()>, pending: &Pending, appends: &Histogram) {
    let copy = || match result {
        Ok(()) => Ok(()),
        Err(e) => Err(io::Error::new(e.kind(), e.to_string())),
    };
    let now = Instant::now();
    for op in ops {
        match op {
            WriteOp::Append {
                entries,
                flushed,
                submitted,
            } => {
                if result.is_ok() {
                    pending.mark_flushed(&entries);
                    appends.observe(now.duration_since(submitted).as_secs_f64());
                }
                flushed.io_completed(copy());
            }
            WriteOp::Put { done, .. }
            | WriteOp::TruncateFrom { done, .. }
            | WriteOp::Purge { done, .. } => {
                let _ = done.send(copy());
            }
        }
    }
}
