//! `shoal cluster recover`: restart a surviving manager as a single-voter cluster from its own
//! data after the quorum was lost for good.
//!
//! The survivor's snapshot and every entry of its log (committed or not, as etcd's
//! `--force-new-cluster` does) are folded into one new snapshot whose membership is this node
//! alone; the log is emptied. On the next start raft elects this node, and autopilot rebuilds the
//! manager set from the agents that join again.

use std::path::Path;

use openraft::EntryPayload;
use shoal_scheduler::ClusterState;

use crate::error::ConsensusError;
use crate::storage::snapshot::SnapshotDir;
use crate::types::{LogId, Membership, SnapshotMeta, StoredMembership};

/// What `recover` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoverReport {
    /// The node that is now the only voter (its PeerId).
    pub peer_id: String,
    /// The last log index folded into the new snapshot.
    pub last_index: u64,
    /// Entries applied on top of the previous snapshot.
    pub replayed: u64,
}

/// Rewrites the raft data in `data_dir` into a single-voter cluster of the node that owns it.
/// Run it while the agent is stopped.
pub async fn recover(data_dir: &Path) -> Result<RecoverReport, ConsensusError> {
    if !data_dir.join(crate::storage::DB_FILE).exists() {
        return Err(ConsensusError::NothingToRecover(
            data_dir.display().to_string(),
        ));
    }
    let (log, mut sm) = crate::storage::open(data_dir)?;
    let me = log
        .read_self()?
        .ok_or_else(|| ConsensusError::NothingToRecover("no node identity recorded".into()))?;
    let id = crate::core::raft_id_of_str(&me.peer_id)
        .ok_or_else(|| ConsensusError::Config(format!("invalid PeerId {}", me.peer_id)))?;
    let current = openraft::storage::RaftStateMachine::get_current_snapshot(&mut sm).await?;
    let (mut state, mut last): (ClusterState, Option<LogId>) = match current {
        Some(s) => (s.snapshot.read_state()?, s.meta.last_log_id),
        None => (ClusterState::default(), None),
    };
    let mut replayed = 0u64;
    for entry in log.all_entries()? {
        if last.as_ref().is_some_and(|l| entry.log_id.index <= l.index) {
            continue;
        }
        if let EntryPayload::Normal(cmd) = &entry.payload {
            // A refused command changes nothing, exactly as when it was applied live.
            let _ = state.apply_request(cmd.request, &cmd.command);
        }
        replayed += 1;
        last = Some(entry.log_id);
    }
    let Some(last) = last else {
        return Err(ConsensusError::NothingToRecover(
            "empty log and no snapshot".into(),
        ));
    };
    let voters = std::collections::BTreeSet::from([id]);
    let membership = Membership::new(
        vec![voters],
        std::collections::BTreeMap::from([(id, me.clone())]),
    )
    .map_err(|e| ConsensusError::Raft(e.to_string()))?;
    let meta = SnapshotMeta {
        last_log_id: Some(last),
        last_membership: StoredMembership::new(Some(last), membership),
    };
    let (_, file) = SnapshotDir::open(data_dir)?.write(&state, &meta)?;
    openraft::storage::RaftStateMachine::install_snapshot(&mut sm, &meta, file).await?;
    log.purge_all(&last).await?;
    log.save_committed_durable(&last).await?;
    tracing::warn!(peer = %me.peer_id, index = last.index, replayed, "recovered as a single-voter cluster");
    Ok(RecoverReport {
        peer_id: me.peer_id,
        last_index: last.index,
        replayed,
    })
}
