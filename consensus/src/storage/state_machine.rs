//! The replicated state machine: shoal's `ClusterState` in memory, with durable snapshots.
//!
//! Applying does not write to disk: the log is durable and openraft re-applies it from the last
//! snapshot up to the saved committed log id on restart. Snapshots (taken by openraft's snapshot
//! policy, or received from the leader) are written with an fsync'd commit.
//!
//! Readers get the applied state as an `Arc<ClusterState>` (cheap). The state lives behind a
//! `std::sync::RwLock<Arc<_>>` held only for non-async work: an apply batch mutates it in place
//! with `Arc::make_mut`, which clones the state only if a reader still holds an older `Arc`.

use std::io;
use std::sync::{Arc, RwLock};

use futures::{Stream, StreamExt};
use openraft::storage::{EntryResponder, RaftStateMachine};
use openraft::{EntryPayload, OptionalSend, RaftSnapshotBuilder};
use redb::{Database, ReadableDatabase};
use shoal_scheduler::events::{Event, Probe};
use shoal_scheduler::{ClusterState, Outcome, Timestamp};
use tokio::sync::watch;

use super::snapshot::{SnapshotDir, SnapshotFile, StoredSnapshot, decode_stored, encode_stored};
use super::writer::{RecordTable, Writer};
use super::{KEY_CURRENT, SNAPSHOT};
use crate::codec::io_err;
use crate::events::EventLog;
use crate::metrics::SnapshotMetrics;
use crate::types::{LogId, SnapshotMeta, StoredMembership, TypeConfig};

/// The snapshot data openraft moves around: the file of an encoded `ClusterState`.
pub type SnapshotData = SnapshotFile;
/// A snapshot with its metadata.
pub type Snapshot = openraft::storage::Snapshot<
    crate::types::LeaderIdCommitted,
    crate::types::RaftId,
    crate::types::RaftNode,
    SnapshotData,
>;

/// What the apply watch carries: how far the state machine got.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AppliedState {
    /// The last applied log id (None before the first entry).
    pub last_applied: Option<LogId>,
    /// Number of entries applied (or installed by snapshot) since this process started.
    pub applies: u64,
}

/// The state shared between the state machine (owned by openraft) and the `Quorum` handle.
pub(crate) struct Shared {
    state: RwLock<Arc<ClusterState>>,
    applied: watch::Sender<AppliedState>,
    /// The events of what was applied (and the leader changes seen).
    pub(crate) events: EventLog,
}

impl Shared {
    /// The applied state (cheap: an `Arc` clone).
    pub(crate) fn state(&self) -> Arc<ClusterState> {
        // A poisoned lock means a panic while applying; the state itself is still the last
        // consistent one that was stored (apply is all-or-nothing per command).
        match self.state.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// A watch that changes after every apply.
    pub(crate) fn subscribe(&self) -> watch::Receiver<AppliedState> {
        self.applied.subscribe()
    }

    fn replace(&self, state: ClusterState) {
        let mut g = match self.state.write() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        *g = Arc::new(state);
    }
}

/// openraft's state machine for shoal.
pub struct StateMachine {
    shared: Arc<Shared>,
    db: Arc<Database>,
    writer: Writer,
    snapshots: SnapshotDir,
    last_applied: Option<LogId>,
    membership: StoredMembership,
    applies: u64,
    snapshot_metrics: SnapshotMetrics,
}

impl StateMachine {
    /// Opens the state machine, restored from the stored snapshot if there is one.
    pub(crate) fn open(
        db: Arc<Database>,
        writer: Writer,
        snapshots: SnapshotDir,
    ) -> io::Result<StateMachine> {
        let (state, last_applied, membership) = match read_current(&db)? {
            Some(s) => {
                let state = stored_state(&snapshots, &s)?;
                (state, s.meta.last_log_id, s.meta.last_membership)
            }
            None => (ClusterState::default(), None, StoredMembership::default()),
        };
        let (applied, _) = watch::channel(AppliedState {
            last_applied,
            applies: 0,
        });
        let shared = Arc::new(Shared {
            state: RwLock::new(Arc::new(state)),
            applied,
            events: EventLog::new(),
        });
        if let Some(last) = last_applied {
            shared.events.start_after(last.index);
        }
        Ok(StateMachine {
            shared,
            db,
            writer,
            snapshots,
            last_applied,
            membership,
            applies: 0,
            snapshot_metrics: SnapshotMetrics::default(),
        })
    }

    /// The snapshot figures this state machine records (register them to expose them).
    pub(crate) fn snapshot_metrics(&self) -> SnapshotMetrics {
        self.snapshot_metrics.clone()
    }

    /// The handle readers use.
    pub(crate) fn shared(&self) -> Arc<Shared> {
        self.shared.clone()
    }

    fn publish(&mut self) {
        self.applies += 1;
        let last_applied = self.last_applied;
        let applies = self.applies;
        self.shared.applied.send_replace(AppliedState {
            last_applied,
            applies,
        });
    }
}

/// Now, in milliseconds since the Unix epoch (the time of events whose command carries none).
pub(crate) fn wall_clock() -> Timestamp {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    Timestamp(u64::try_from(since.as_millis()).unwrap_or(u64::MAX))
}

/// The state a stored record names: decoded from its file, or from the record itself for a
/// snapshot stored before snapshots had files.
fn stored_state(snapshots: &SnapshotDir, stored: &StoredSnapshot) -> io::Result<ClusterState> {
    match &stored.file {
        Some(name) => SnapshotFile::at(snapshots.path(name))?.read_state(),
        None => crate::codec::decode(&stored.data).map_err(io_err),
    }
}

/// The current snapshot as openraft wants it: its file (a snapshot stored before snapshots
/// had files is written to one first).
fn current_file(snapshots: &SnapshotDir, stored: &StoredSnapshot) -> io::Result<SnapshotFile> {
    match &stored.file {
        Some(name) => SnapshotFile::at(snapshots.path(name)),
        None => {
            let state = stored_state(snapshots, stored)?;
            snapshots.write(&state, &stored.meta).map(|(_, file)| file)
        }
    }
}

fn read_current(db: &Database) -> io::Result<Option<StoredSnapshot>> {
    let rtx = db.begin_read().map_err(io_err)?;
    let t = rtx.open_table(SNAPSHOT).map_err(io_err)?;
    match redb::ReadableTable::get(&t, KEY_CURRENT).map_err(io_err)? {
        Some(v) => Ok(Some(decode_stored(v.value()).map_err(io_err)?)),
        None => Ok(None),
    }
}

async fn write_current(writer: &Writer, stored: &StoredSnapshot) -> io::Result<()> {
    let bytes = encode_stored(stored).map_err(io_err)?;
    writer
        .put(RecordTable::Snapshot, KEY_CURRENT, Some(bytes))
        .await
}

/// Builds a snapshot from a frozen view of the state.
pub struct SnapshotBuilder {
    metrics: SnapshotMetrics,
    db: Arc<Database>,
    state: Arc<ClusterState>,
    meta: SnapshotMeta,
    writer: Writer,
    snapshots: SnapshotDir,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    type SnapshotData = SnapshotData;

    async fn build_snapshot(&mut self) -> Result<Snapshot, io::Error> {
        let started = std::time::Instant::now();
        let (state, meta, snapshots) = (
            self.state.clone(),
            self.meta.clone(),
            self.snapshots.clone(),
        );
        let (name, file) = tokio::task::spawn_blocking(move || snapshots.write(&state, &meta))
            .await
            .map_err(io_err)??;
        let stored = StoredSnapshot {
            meta: self.meta.clone(),
            file: Some(name.clone()),
            data: Vec::new(),
        };
        // A snapshot installed from the leader meanwhile may be newer: never replace it.
        let newer_stored =
            read_current(&self.db)?.is_some_and(|s| s.meta.last_log_id > stored.meta.last_log_id);
        if !newer_stored {
            write_current(&self.writer, &stored).await?;
            self.snapshots.prune(&name);
        }
        self.metrics
            .duration
            .observe(started.elapsed().as_secs_f64());
        self.metrics
            .size
            .set(i64::try_from(file.len).unwrap_or(i64::MAX));
        tracing::debug!(last = ?stored.meta.last_log_id, bytes = file.len, "snapshot built");
        Ok(Snapshot {
            meta: stored.meta,
            snapshot: file,
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotData = SnapshotData;
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), io::Error> {
        Ok((self.last_applied, self.membership.clone()))
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), io::Error>
    where
        Strm: Stream<Item = Result<EntryResponder<TypeConfig>, io::Error>> + Unpin + OptionalSend,
    {
        let mut batch = Vec::new();
        while let Some(item) = entries.next().await {
            batch.push(item?);
        }
        if batch.is_empty() {
            return Ok(());
        }
        let applied_at = wall_clock();
        let mut events: Vec<Event> = Vec::new();
        {
            let mut guard = match self.shared.state.write() {
                Ok(g) => g,
                Err(p) => p.into_inner(),
            };
            let state = Arc::make_mut(&mut guard);
            for (entry, responder) in batch {
                let response = match &entry.payload {
                    EntryPayload::Blank => Ok(Outcome::Done),
                    EntryPayload::Normal(cmd) => {
                        let probe = Probe::before(state, &cmd.command);
                        let result = state.apply_request(cmd.request, &cmd.command);
                        if let Ok(outcome) = &result {
                            let index = entry.log_id.index;
                            events.extend(probe.after(
                                state,
                                &cmd.command,
                                outcome,
                                index,
                                applied_at,
                            ));
                        }
                        result
                    }
                    EntryPayload::Membership(m) => {
                        self.membership = StoredMembership::new(Some(entry.log_id), m.clone());
                        Ok(Outcome::Done)
                    }
                };
                self.last_applied = Some(entry.log_id);
                if let Some(r) = responder {
                    r.send(response);
                }
            }
        }
        self.shared.events.push(events);
        self.publish();
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        SnapshotBuilder {
            metrics: self.snapshot_metrics.clone(),
            db: self.db.clone(),
            state: self.shared.state(),
            meta: SnapshotMeta {
                last_log_id: self.last_applied,
                last_membership: self.membership.clone(),
            },
            writer: self.writer.clone(),
            snapshots: self.snapshots.clone(),
        }
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: SnapshotData,
    ) -> Result<(), io::Error> {
        let snapshots = self.snapshots.clone();
        let already_stored = read_current(&self.db)?.is_some_and(|s| s.meta == *meta);
        let owned_meta = meta.clone();
        // Decoded as a stream; a received file is moved into place, any other file (one this
        // agent does not own) is written anew.
        let (state, name) = tokio::task::spawn_blocking(move || {
            let state = snapshot.read_state()?;
            let name = if already_stored {
                String::new()
            } else if snapshots.is_incoming(&snapshot.path) {
                snapshots.adopt_incoming(&snapshot.path, &owned_meta)?.0
            } else {
                snapshots.write(&state, &owned_meta)?.0
            };
            Ok::<_, io::Error>((state, name))
        })
        .await
        .map_err(io_err)??;
        if !already_stored {
            write_current(
                &self.writer,
                &StoredSnapshot {
                    meta: meta.clone(),
                    file: Some(name.clone()),
                    data: Vec::new(),
                },
            )
            .await?;
            self.snapshots.prune(&name);
        }
        self.shared.replace(state);
        if let Some(last) = meta.last_log_id {
            self.shared.events.start_after(last.index);
        }
        self.last_applied = meta.last_log_id;
        self.membership = meta.last_membership.clone();
        self.publish();
        tracing::info!(last = ?meta.last_log_id, "snapshot installed");
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, io::Error> {
        let Some(stored) = read_current(&self.db)? else {
            return Ok(None);
        };
        let file = current_file(&self.snapshots, &stored)?;
        Ok(Some(Snapshot {
            meta: stored.meta,
            snapshot: file,
        }))
    }
}
