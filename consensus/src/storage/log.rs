//! The raft log store: entries, vote, committed and purged log ids in redb.
//!
//! Appends go to the in-memory [`Pending`] tail (readable at once) and to the single [`Writer`]
//! thread, which makes them durable in groups and then fires their flush callbacks. Reads take
//! the tail first and then a redb read transaction (MVCC, never blocked by the writer) for what
//! lies below it: an entry that leaves the tail in between (only ever long after it became
//! durable) is already in that transaction. The tail also keeps the most recent durable
//! entries, so the state machine and replication rarely read the file at all.

use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;
use std::time::Instant;

use openraft::storage::{IOFlushed, LogState, RaftLogStorage};
use openraft::{OptionalSend, RaftLogReader};
use redb::{Database, ReadableDatabase, ReadableTable};
use serde::de::DeserializeOwned;

use super::pending::{Pending, PendingEntry};
use super::writer::{RecordTable, Writer};
use super::{KEY_COMMITTED, KEY_PURGED, KEY_SELF, KEY_VOTE, LOG, META};
use crate::codec::{decode, encode, io_err};
use crate::limits::MAX_APPEND_BYTES;
use crate::metrics::LogMetrics;
use crate::types::{Entry, LogId, RaftNode, TypeConfig, Vote};

/// openraft's log storage on redb. Cloning is shallow (the database, the pending tail and the
/// writer are shared), which is how log readers for replication are made.
#[derive(Clone)]
pub struct LogStore {
    db: Arc<Database>,
    pending: Arc<Pending>,
    writer: Writer,
    metrics: LogMetrics,
}

impl LogStore {
    pub(crate) fn new(
        db: Arc<Database>,
        pending: Arc<Pending>,
        writer: Writer,
        metrics: LogMetrics,
    ) -> LogStore {
        LogStore {
            db,
            pending,
            writer,
            metrics,
        }
    }

    /// `shoal_raft_log_append_seconds` (time from `append` until the entries are durable) and
    /// `shoal_raft_log_sync_seconds` (one durable write round).
    pub(crate) fn metrics(&self) -> LogMetrics {
        self.metrics.clone()
    }

    fn read_meta<T: DeserializeOwned>(&self, key: &str) -> io::Result<Option<T>> {
        let rtx = self.db.begin_read().map_err(io_err)?;
        let meta = rtx.open_table(META).map_err(io_err)?;
        match meta.get(key).map_err(io_err)? {
            Some(v) => Ok(Some(decode(v.value()).map_err(io_err)?)),
            None => Ok(None),
        }
    }

    /// Reads entries in `range`, stopping after `byte_budget` encoded bytes (at least one entry).
    fn read_range(
        &self,
        range: (Bound<u64>, Bound<u64>),
        byte_budget: usize,
    ) -> io::Result<Vec<Entry>> {
        // The tail first: see the module doc for why this order never misses an entry.
        let tail = self.pending.view(range);
        let durable_end = match tail.first {
            Some(first) => min_end(range.1, first),
            None => range.1,
        };
        let mut out = Vec::new();
        let mut bytes = 0usize;
        let mut fits = |len: usize, taken: usize| {
            if taken > 0 && bytes + len > byte_budget {
                return false;
            }
            bytes += len;
            true
        };
        if !is_empty_range(range.0, durable_end) {
            let rtx = self.db.begin_read().map_err(io_err)?;
            let log = rtx.open_table(LOG).map_err(io_err)?;
            for item in log.range::<u64>((range.0, durable_end)).map_err(io_err)? {
                let (_, v) = item.map_err(io_err)?;
                let raw = v.value();
                if !fits(raw.len(), out.len()) {
                    return Ok(out);
                }
                out.push(decode::<Entry>(raw).map_err(io_err)?);
            }
        }
        for e in tail.entries {
            if !fits(e.bytes.len(), out.len()) {
                break;
            }
            out.push(e.entry.clone());
        }
        Ok(out)
    }

    /// The last entry's log id, if the log holds any entry.
    fn last_entry_id(&self) -> io::Result<Option<LogId>> {
        if let Some(last) = self.pending.last_log_id() {
            return Ok(Some(last));
        }
        let rtx = self.db.begin_read().map_err(io_err)?;
        let log = rtx.open_table(LOG).map_err(io_err)?;
        match log.last().map_err(io_err)? {
            Some((_, v)) => Ok(Some(decode::<Entry>(v.value()).map_err(io_err)?.log_id)),
            None => Ok(None),
        }
    }

    /// Every entry in the log (for `recover`).
    pub(crate) fn all_entries(&self) -> io::Result<Vec<Entry>> {
        self.read_range((Bound::Unbounded, Bound::Unbounded), usize::MAX)
    }

    /// Records which node this storage belongs to (for `recover`).
    pub(crate) async fn save_self(&self, node: &RaftNode) -> io::Result<()> {
        let bytes = encode(node).map_err(io_err)?;
        self.writer
            .put(RecordTable::Meta, KEY_SELF, Some(bytes))
            .await
    }

    /// The node this storage belongs to, if recorded.
    pub(crate) fn read_self(&self) -> io::Result<Option<RaftNode>> {
        self.read_meta(KEY_SELF)
    }

    /// Records the committed log id durably (for `recover`).
    pub(crate) async fn save_committed_durable(&self, committed: &LogId) -> io::Result<()> {
        let bytes = encode(committed).map_err(io_err)?;
        self.pending.set_committed(Some(*committed));
        self.writer
            .put(RecordTable::Meta, KEY_COMMITTED, Some(bytes))
            .await
    }

    /// Deletes the whole log and records `purged` as the last purged log id (for `recover`).
    pub(crate) async fn purge_all(&self, purged: &LogId) -> io::Result<()> {
        self.pending.remove_from(0);
        self.writer.truncate_from(0).await?;
        self.writer
            .put(
                RecordTable::Meta,
                KEY_PURGED,
                Some(encode(purged).map_err(io_err)?),
            )
            .await
    }
}

/// The smaller of an end bound and `Excluded(first)`.
fn min_end(end: Bound<u64>, first: u64) -> Bound<u64> {
    match end {
        Bound::Included(e) if e < first => Bound::Included(e),
        Bound::Excluded(e) if e <= first => Bound::Excluded(e),
        _ => Bound::Excluded(first),
    }
}

/// Whether no index lies between `start` and `end` (redb panics on an inverted range).
fn is_empty_range(start: Bound<u64>, end: Bound<u64>) -> bool {
    let lo = match start {
        Bound::Included(s) => Some(s),
        Bound::Excluded(s) => s.checked_add(1),
        Bound::Unbounded => Some(0),
    };
    let Some(lo) = lo else { return true };
    match end {
        Bound::Included(e) => e < lo,
        Bound::Excluded(e) => e <= lo,
        Bound::Unbounded => false,
    }
}

fn clone_bounds<RB: RangeBounds<u64>>(range: &RB) -> (Bound<u64>, Bound<u64>) {
    (range.start_bound().cloned(), range.end_bound().cloned())
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, io::Error> {
        self.read_range(clone_bounds(&range), usize::MAX)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, io::Error> {
        self.read_meta(KEY_VOTE)
    }

    async fn limited_get_log_entries(
        &mut self,
        start: u64,
        end: u64,
    ) -> Result<Vec<Entry>, io::Error> {
        // Bounded by bytes so that one AppendEntries message stays under the mesh's raft limit.
        self.read_range(
            (Bound::Included(start), Bound::Excluded(end)),
            MAX_APPEND_BYTES,
        )
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, io::Error> {
        let last_purged_log_id: Option<LogId> = self.read_meta(KEY_PURGED)?;
        let last_log_id = self.last_entry_id()?.or(last_purged_log_id);
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), io::Error> {
        let bytes = encode(vote).map_err(io_err)?;
        self.writer
            .put(RecordTable::Meta, KEY_VOTE, Some(bytes))
            .await
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), io::Error> {
        // Never waits for the disk: the writer stores the latest value with its next round, in
        // order with the appends. Losing the latest value in a crash only means re-applying a
        // little less on restart.
        self.pending.set_committed(committed);
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, io::Error> {
        match self.pending.committed() {
            Some(latest) => Ok(latest),
            None => self.read_meta(KEY_COMMITTED),
        }
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: IOFlushed<TypeConfig>,
    ) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let submitted = Instant::now();
        let mut batch = Vec::new();
        for entry in entries {
            let bytes = encode(&entry).map_err(io_err)?;
            batch.push(Arc::new(PendingEntry { entry, bytes }));
        }
        if batch.is_empty() {
            callback.io_completed(Ok(()));
            return Ok(());
        }
        // Readable from here on; durable (and `callback` fired) after the writer's next round.
        self.pending.insert(&batch);
        self.writer.append(batch, callback, submitted).await
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> Result<(), io::Error> {
        let from = last_log_id.map(|id| id.index + 1).unwrap_or(0);
        // Awaited until the durable log no longer holds the entries, so that a later append at
        // these indexes never sits above stale durable entries.
        self.pending.remove_from(from);
        self.writer.truncate_from(from).await
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), io::Error> {
        let bytes = encode(&log_id).map_err(io_err)?;
        self.pending.remove_upto(log_id.index);
        self.writer.purge(log_id.index, bytes).await
    }
}
