//! The raft log store: entries, vote, committed and purged log ids in redb.
//!
//! Reads use their own redb read transactions (MVCC, never blocked by the writer); every write
//! goes through the single [`Writer`] thread.

use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;

use openraft::storage::{IOFlushed, LogState, RaftLogStorage};
use openraft::{OptionalSend, RaftLogReader};
use redb::{Database, ReadableDatabase, ReadableTable};
use serde::de::DeserializeOwned;

use super::writer::{RecordTable, Writer};
use super::{KEY_COMMITTED, KEY_PURGED, KEY_SELF, KEY_VOTE, LOG, META};
use crate::codec::{decode, encode, io_err};
use crate::limits::MAX_APPEND_BYTES;
use crate::types::{Entry, LogId, RaftNode, TypeConfig, Vote};

/// openraft's log storage on redb. Cloning is shallow (the database and the writer are shared),
/// which is how log readers for replication are made.
#[derive(Clone)]
pub struct LogStore {
    db: Arc<Database>,
    writer: Writer,
}

impl LogStore {
    pub(crate) fn new(db: Arc<Database>, writer: Writer) -> LogStore {
        LogStore { db, writer }
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
        let rtx = self.db.begin_read().map_err(io_err)?;
        let log = rtx.open_table(LOG).map_err(io_err)?;
        let mut out = Vec::new();
        let mut bytes = 0usize;
        for item in log.range::<u64>(range).map_err(io_err)? {
            let (_, v) = item.map_err(io_err)?;
            let raw = v.value();
            if !out.is_empty() && bytes + raw.len() > byte_budget {
                break;
            }
            bytes += raw.len();
            out.push(decode::<Entry>(raw).map_err(io_err)?);
        }
        Ok(out)
    }

    /// The last entry's log id, if the log holds any entry.
    fn last_entry_id(&self) -> io::Result<Option<LogId>> {
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
            .put(RecordTable::Meta, KEY_SELF, Some(bytes), true)
            .await
    }

    /// The node this storage belongs to, if recorded.
    pub(crate) fn read_self(&self) -> io::Result<Option<RaftNode>> {
        self.read_meta(KEY_SELF)
    }

    /// Records the committed log id durably (for `recover`).
    pub(crate) async fn save_committed_durable(&self, committed: &LogId) -> io::Result<()> {
        let bytes = encode(committed).map_err(io_err)?;
        self.writer
            .put(RecordTable::Meta, KEY_COMMITTED, Some(bytes), true)
            .await
    }

    /// Deletes the whole log and records `purged` as the last purged log id (for `recover`).
    pub(crate) async fn purge_all(&self, purged: &LogId) -> io::Result<()> {
        self.writer.truncate_from(0).await?;
        self.writer
            .put(
                RecordTable::Meta,
                KEY_PURGED,
                Some(encode(purged).map_err(io_err)?),
                true,
            )
            .await
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
            .put(RecordTable::Meta, KEY_VOTE, Some(bytes), true)
            .await
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), io::Error> {
        // Not fsync'd on its own: it becomes durable with the next flush. Losing the latest value
        // in a crash only means re-applying a little less on restart.
        let value = match committed {
            Some(c) => Some(encode(&c).map_err(io_err)?),
            None => None,
        };
        self.writer
            .put(RecordTable::Meta, KEY_COMMITTED, value, false)
            .await
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, io::Error> {
        self.read_meta(KEY_COMMITTED)
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
        let mut encoded = Vec::new();
        for entry in entries {
            encoded.push((entry.log_id.index, encode(&entry).map_err(io_err)?));
        }
        if encoded.is_empty() {
            callback.io_completed(Ok(()));
            return Ok(());
        }
        self.writer.append(encoded, callback).await
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> Result<(), io::Error> {
        let from = last_log_id.map(|id| id.index + 1).unwrap_or(0);
        self.writer.truncate_from(from).await
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), io::Error> {
        let bytes = encode(&log_id).map_err(io_err)?;
        self.writer.purge(log_id.index, bytes).await
    }
}
