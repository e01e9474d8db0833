//! The log's in-memory tail: entries handed to the log store but not yet durable, the most
//! recent durable ones, and the latest committed log id.
//!
//! openraft wants `append` to return as soon as the entries are readable and to learn about
//! durability through the flush callback. Entries therefore go here first (readable at once by
//! the replication readers), and the writer thread marks them durable once its fsync'd commit
//! holds them. The most recent durable entries stay (up to [`RECENT_ENTRIES`] and
//! [`RECENT_BYTES`]): the state machine applies entries right after they became durable, and
//! reading them here saves a read transaction and a decode each. An entry held here and stored
//! on disk is the same entry in both places.
//!
//! The lock is a `std::sync::Mutex`: it is held only to copy a few `Arc`s in or out, never across
//! an `.await` or disk I/O.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::types::{Entry, LogId};

/// One appended entry with its encoding (what the writer stores and what read budgets count).
#[derive(Debug)]
pub(crate) struct PendingEntry {
    /// The entry as openraft handed it over.
    pub(crate) entry: Entry,
    /// Its CBOR encoding.
    pub(crate) bytes: Vec<u8>,
}

/// Durable entries kept in memory at most.
pub(crate) const RECENT_ENTRIES: usize = 4096;
/// Encoded bytes of durable entries kept in memory at most.
pub(crate) const RECENT_BYTES: usize = 16 * 1024 * 1024;

/// The in-memory tail of the log, shared by the log store, its readers and the writer.
#[derive(Debug, Default)]
pub(crate) struct Pending {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Not durable yet.
    entries: BTreeMap<u64, Arc<PendingEntry>>,
    /// Durable, kept for readers; every index is below those of `entries`.
    recent: BTreeMap<u64, Arc<PendingEntry>>,
    recent_bytes: usize,
    /// The latest committed log id saved in this process (outer `None`: none saved yet).
    committed: Option<Option<LogId>>,
    /// Whether `committed` still has to be written by the writer.
    committed_dirty: bool,
}

/// A consistent copy of the tail for one read.
pub(crate) struct TailView {
    /// The first index held in memory: the durable log is only read below it.
    pub(crate) first: Option<u64>,
    /// The held entries inside the requested range, in index order.
    pub(crate) entries: Vec<Arc<PendingEntry>>,
}

impl Pending {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Nothing here can panic half-way through an update; a poisoned lock is still consistent.
        match self.inner.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// Adds appended entries (replacing any held entry at the same index).
    pub(crate) fn insert(&self, entries: &[Arc<PendingEntry>]) {
        let mut g = self.lock();
        for e in entries {
            g.entries.insert(e.entry.log_id.index, e.clone());
        }
    }

    /// Marks entries durable (they move to the recent ones), unless a later append replaced
    /// them.
    pub(crate) fn mark_flushed(&self, entries: &[Arc<PendingEntry>]) {
        let mut g = self.lock();
        for e in entries {
            let index = e.entry.log_id.index;
            if g.entries
                .get(&index)
                .is_some_and(|held| Arc::ptr_eq(held, e))
            {
                g.entries.remove(&index);
                g.recent_bytes += e.bytes.len();
                if let Some(old) = g.recent.insert(index, e.clone()) {
                    g.recent_bytes -= old.bytes.len();
                }
            }
        }
        while g.recent.len() > RECENT_ENTRIES || g.recent_bytes > RECENT_BYTES {
            match g.recent.pop_first() {
                Some((_, old)) => g.recent_bytes -= old.bytes.len(),
                None => break,
            }
        }
    }

    /// Drops held entries with index >= `from` (a truncation).
    pub(crate) fn remove_from(&self, from: u64) {
        let mut g = self.lock();
        drop(g.entries.split_off(&from));
        let dropped = g.recent.split_off(&from);
        g.recent_bytes -= dropped.values().map(|e| e.bytes.len()).sum::<usize>();
    }

    /// Drops held entries with index <= `upto` (a purge).
    pub(crate) fn remove_upto(&self, upto: u64) {
        let mut g = self.lock();
        let Some(next) = upto.checked_add(1) else {
            g.entries.clear();
            g.recent.clear();
            g.recent_bytes = 0;
            return;
        };
        g.entries = g.entries.split_off(&next);
        g.recent = g.recent.split_off(&next);
        g.recent_bytes = g.recent.values().map(|e| e.bytes.len()).sum();
    }

    /// The held entries in `range`, and where the held tail starts.
    pub(crate) fn view(&self, range: (Bound<u64>, Bound<u64>)) -> TailView {
        let g = self.lock();
        let first = g
            .recent
            .keys()
            .next()
            .or_else(|| g.entries.keys().next())
            .copied();
        let entries = g
            .recent
            .range(range)
            .chain(g.entries.range(range))
            .map(|(_, e)| e.clone())
            .collect();
        TailView { first, entries }
    }

    /// The log id of the last held entry.
    pub(crate) fn last_log_id(&self) -> Option<LogId> {
        let g = self.lock();
        g.entries
            .values()
            .next_back()
            .or_else(|| g.recent.values().next_back())
            .map(|e| e.entry.log_id)
    }

    /// Records the committed log id; the writer persists it with its next round.
    pub(crate) fn set_committed(&self, committed: Option<LogId>) {
        let mut g = self.lock();
        g.committed = Some(committed);
        g.committed_dirty = true;
    }

    /// The latest committed log id saved in this process, if any.
    pub(crate) fn committed(&self) -> Option<Option<LogId>> {
        self.lock().committed
    }

    /// Takes the committed log id to persist, if it changed since the last take.
    ///
    /// The writer takes it *before* draining its queue: the entries up to a committed log id were
    /// appended (queued) before that id was saved, so the round that writes the id also writes
    /// (or already wrote) those entries, and a durable committed id never points past the
    /// durable log.
    pub(crate) fn take_committed(&self) -> Option<Option<LogId>> {
        let mut g = self.lock();
        if !g.committed_dirty {
            return None;
        }
        g.committed_dirty = false;
        g.committed
    }

    /// Marks the committed log id as still to be written (a round that could not take it).
    pub(crate) fn keep_committed_dirty(&self) {
        let mut g = self.lock();
        if g.committed.is_some() {
            g.committed_dirty = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::EntryPayload;
    use openraft::vote::RaftLeaderIdExt;

    fn entry(term: u64, index: u64) -> Arc<PendingEntry> {
        type Leader = <crate::types::TypeConfig as openraft::RaftTypeConfig>::LeaderId;
        let leader = Leader::new_committed(term, 1);
        Arc::new(PendingEntry {
            entry: Entry {
                log_id: LogId::new(leader, index),
                payload: EntryPayload::Blank,
            },
            bytes: vec![0; 8],
        })
    }

    fn indexes(v: &TailView) -> Vec<(u64, u64)> {
        v.entries
            .iter()
            .map(|e| (e.entry.log_id.leader_id.term, e.entry.log_id.index))
            .collect()
    }

    #[test]
    fn a_flush_never_removes_a_replacement() {
        let p = Pending::default();
        let old: Vec<_> = (1..=4).map(|i| entry(1, i)).collect();
        p.insert(&old);
        p.remove_from(3);
        let new = vec![entry(2, 3)];
        p.insert(&new);
        // The round that held the old entries 1..=4 completes after the truncation: 1 and 2 are
        // durable now, 3 and 4 were replaced or dropped.
        p.mark_flushed(&old);
        let all = (Bound::Unbounded, Bound::Unbounded);
        assert_eq!(indexes(&p.view(all)), vec![(1, 1), (1, 2), (2, 3)]);
        assert_eq!(p.view(all).first, Some(1));
        p.mark_flushed(&new);
        assert_eq!(indexes(&p.view(all)), vec![(1, 1), (1, 2), (2, 3)]);
        assert_eq!(p.last_log_id().map(|l| l.index), Some(3));
        p.remove_from(2);
        assert_eq!(indexes(&p.view(all)), vec![(1, 1)]);
    }

    #[test]
    fn recent_entries_are_bounded() {
        let p = Pending::default();
        let many: Vec<_> = (1..=RECENT_ENTRIES as u64 + 10)
            .map(|i| entry(1, i))
            .collect();
        p.insert(&many);
        p.mark_flushed(&many);
        let v = p.view((Bound::Unbounded, Bound::Unbounded));
        assert_eq!(v.entries.len(), RECENT_ENTRIES);
        assert_eq!(v.first, Some(11));
    }

    #[test]
    fn purge_and_views_respect_bounds() {
        let p = Pending::default();
        p.insert(&(1..=5).map(|i| entry(1, i)).collect::<Vec<_>>());
        p.remove_upto(2);
        let v = p.view((Bound::Included(4), Bound::Excluded(10)));
        assert_eq!(v.first, Some(3));
        assert_eq!(indexes(&v), vec![(1, 4), (1, 5)]);
        assert_eq!(p.last_log_id().map(|l| l.index), Some(5));
        p.remove_upto(u64::MAX);
        assert_eq!(p.last_log_id(), None);
    }

    #[test]
    fn committed_is_taken_once_and_can_be_kept() {
        let p = Pending::default();
        assert_eq!(p.take_committed(), None);
        let id = entry(1, 7).entry.log_id;
        p.set_committed(Some(id));
        assert_eq!(p.committed(), Some(Some(id)));
        assert_eq!(p.take_committed(), Some(Some(id)));
        assert_eq!(p.take_committed(), None);
        p.keep_committed_dirty();
        assert_eq!(p.take_committed(), Some(Some(id)));
        assert_eq!(p.committed(), Some(Some(id)));
    }
}
