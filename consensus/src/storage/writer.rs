//! The single writer of the raft database: a dedicated thread that owns every write transaction.
//!
//! Each round drains the queued operations, applies them in one non-durable commit (so they are
//! visible to readers at once and their senders are released), then makes them durable with one
//! fsync'd commit and only then answers the operations that wait for durability (log flush
//! callbacks, the vote, snapshots). Operations that arrive during an fsync are grouped into the
//! next round: 32 concurrent appends cost one fsync, not 32.

use std::io;
use std::sync::Arc;

use openraft::storage::IOFlushed;
use redb::{Database, Durability};
use tokio::sync::{mpsc, oneshot};

use super::{KEY_FLUSH, KEY_PURGED, LOG, META, SNAPSHOT};
use crate::codec::io_err;
use crate::types::TypeConfig;

/// Operations queued at most before senders wait.
const QUEUE: usize = 1024;
/// Operations applied in one round at most.
const MAX_ROUND: usize = 512;

/// Which small-record table a [`WriteOp::Put`] targets.
#[derive(Debug, Clone, Copy)]
pub(crate) enum RecordTable {
    /// Vote, committed, purged.
    Meta,
    /// The current snapshot.
    Snapshot,
}

/// One write, with how its sender learns it is done.
pub(crate) enum WriteOp {
    /// Append encoded entries; `visible` fires after the non-durable commit, `flushed` after fsync.
    Append {
        entries: Vec<(u64, Vec<u8>)>,
        flushed: IOFlushed<TypeConfig>,
        visible: Ack,
    },
    /// Set (or delete, with `None`) one record; `done` fires after fsync if `durable`.
    Put {
        table: RecordTable,
        key: &'static str,
        value: Option<Vec<u8>>,
        durable: bool,
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
    /// Starts the writer thread for `db`.
    pub(crate) fn spawn(db: Arc<Database>) -> io::Result<Writer> {
        let (tx, rx) = mpsc::channel(QUEUE);
        std::thread::Builder::new()
            .name("shoal-raft-writer".into())
            .spawn(move || run(db, rx))?;
        Ok(Writer { tx })
    }

    /// Queues `op` and returns the receiver of its acknowledgement.
    async fn submit(&self, op: WriteOp) -> io::Result<()> {
        self.tx
            .send(op)
            .await
            .map_err(|_| io::Error::other("raft storage writer stopped"))
    }

    /// Appends encoded entries; returns once they are readable. `flushed` fires once durable.
    pub(crate) async fn append(
        &self,
        entries: Vec<(u64, Vec<u8>)>,
        flushed: IOFlushed<TypeConfig>,
    ) -> io::Result<()> {
        let (visible, rx) = oneshot::channel();
        self.submit(WriteOp::Append {
            entries,
            flushed,
            visible,
        })
        .await?;
        wait(rx).await
    }

    /// Sets or deletes one record; returns after fsync when `durable`.
    pub(crate) async fn put(
        &self,
        table: RecordTable,
        key: &'static str,
        value: Option<Vec<u8>>,
        durable: bool,
    ) -> io::Result<()> {
        let (done, rx) = oneshot::channel();
        self.submit(WriteOp::Put {
            table,
            key,
            value,
            durable,
            done,
        })
        .await?;
        wait(rx).await
    }

    /// Deletes entries with index >= `from`.
    pub(crate) async fn truncate_from(&self, from: u64) -> io::Result<()> {
        let (done, rx) = oneshot::channel();
        self.submit(WriteOp::TruncateFrom { from, done }).await?;
        wait(rx).await
    }

    /// Deletes entries with index <= `upto` and records `purged` (an encoded log id).
    pub(crate) async fn purge(&self, upto: u64, purged: Vec<u8>) -> io::Result<()> {
        let (done, rx) = oneshot::channel();
        self.submit(WriteOp::Purge { upto, purged, done }).await?;
        wait(rx).await
    }
}

async fn wait(rx: oneshot::Receiver<io::Result<()>>) -> io::Result<()> {
    rx.await
        .map_err(|_| io::Error::other("raft storage writer dropped a request"))?
}

/// What must be answered after the durable commit of a round.
enum AfterFlush {
    Flushed(IOFlushed<TypeConfig>),
    Ack(Ack),
}

fn run(db: Arc<Database>, mut rx: mpsc::Receiver<WriteOp>) {
    let mut flush_seq: u64 = 0;
    while let Some(first) = rx.blocking_recv() {
        let mut ops = vec![first];
        while ops.len() < MAX_ROUND {
            match rx.try_recv() {
                Ok(op) => ops.push(op),
                Err(_) => break,
            }
        }
        let applied = apply_round(&db, &ops);
        let mut waiting = Vec::with_capacity(ops.len());
        for op in ops {
            answer_visible(op, &applied, &mut waiting);
        }
        if waiting.is_empty() {
            continue;
        }
        flush_seq = flush_seq.wrapping_add(1);
        let flushed = match &applied {
            Ok(()) => durable_commit(&db, flush_seq),
            Err(e) => Err(io::Error::new(e.kind(), e.to_string())),
        };
        for w in waiting {
            let result = match &flushed {
                Ok(()) => Ok(()),
                Err(e) => Err(io::Error::new(e.kind(), e.to_string())),
            };
            match w {
                AfterFlush::Flushed(cb) => cb.io_completed(result),
                AfterFlush::Ack(ack) => {
                    let _ = ack.send(result);
                }
            }
        }
    }
    tracing::debug!("raft storage writer stopped");
}

/// Answers what needs only visibility, and collects what waits for the fsync.
fn answer_visible(op: WriteOp, applied: &io::Result<()>, waiting: &mut Vec<AfterFlush>) {
    let copy = || match applied {
        Ok(()) => Ok(()),
        Err(e) => Err(io::Error::new(e.kind(), e.to_string())),
    };
    match op {
        WriteOp::Append {
            flushed, visible, ..
        } => {
            let _ = visible.send(copy());
            waiting.push(AfterFlush::Flushed(flushed));
        }
        WriteOp::Put {
            durable: true,
            done,
            ..
        } => waiting.push(AfterFlush::Ack(done)),
        WriteOp::Put {
            durable: false,
            done,
            ..
        }
        | WriteOp::TruncateFrom { done, .. }
        | WriteOp::Purge { done, .. } => {
            let _ = done.send(copy());
        }
    }
}

/// Applies every op of a round in one non-durable transaction.
fn apply_round(db: &Database, ops: &[WriteOp]) -> io::Result<()> {
    let mut tx = db.begin_write().map_err(io_err)?;
    tx.set_durability(Durability::None).map_err(io_err)?;
    {
        let mut log = tx.open_table(LOG).map_err(io_err)?;
        let mut meta = tx.open_table(META).map_err(io_err)?;
        let mut snap = tx.open_table(SNAPSHOT).map_err(io_err)?;
        for op in ops {
            match op {
                WriteOp::Append { entries, .. } => {
                    for (index, bytes) in entries {
                        log.insert(*index, bytes.as_slice()).map_err(io_err)?;
                    }
                }
                WriteOp::Put {
                    table, key, value, ..
                } => {
                    let t = match table {
                        RecordTable::Meta => &mut meta,
                        RecordTable::Snapshot => &mut snap,
                    };
                    match value {
                        Some(v) => {
                            t.insert(*key, v.as_slice()).map_err(io_err)?;
                        }
                        None => {
                            t.remove(*key).map_err(io_err)?;
                        }
                    }
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
    }
    tx.commit().map_err(io_err)
}

/// Makes every earlier non-durable commit durable with one fsync'd commit.
fn durable_commit(db: &Database, seq: u64) -> io::Result<()> {
    let mut tx = db.begin_write().map_err(io_err)?;
    tx.set_durability(Durability::Immediate).map_err(io_err)?;
    {
        let mut meta = tx.open_table(META).map_err(io_err)?;
        meta.insert(KEY_FLUSH, seq.to_le_bytes().as_slice())
            .map_err(io_err)?;
    }
    tx.commit().map_err(io_err)
}
