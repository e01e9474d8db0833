//! Who may talk raft to this agent: the members of its raft membership, the peers it explicitly
//! expects (the other agents of a `bootstrap_expect` set, joiners), the manager candidates of
//! its cluster state (a just-promoted voter it has not heard of yet), and — while it is not a
//! voter itself (joining, or a learner replaying old memberships) — any sender of its cluster.

use openraft::async_runtime::WatchReceiver;
use std::collections::HashSet;
use std::sync::{Arc, RwLock};

use crate::storage::state_machine::Shared;
use crate::types::{Raft, RaftId};

/// Shared between the network server, bootstrap and join. Locks are held only for copies.
pub(crate) struct Access {
    local: RaftId,
    shared: Arc<Shared>,
    expected_cluster: RwLock<Option<String>>,
    extra_peers: RwLock<HashSet<RaftId>>,
}

fn read<T: Clone>(lock: &RwLock<T>) -> T {
    match lock.read() {
        Ok(g) => g.clone(),
        Err(p) => p.into_inner().clone(),
    }
}

impl Access {
    pub(crate) fn new(local: RaftId, shared: Arc<Shared>) -> Access {
        Access {
            local,
            shared,
            expected_cluster: RwLock::new(None),
            extra_peers: RwLock::new(HashSet::new()),
        }
    }

    /// The cluster id this agent belongs to: the applied one, else the one it is joining.
    pub(crate) fn cluster_id(&self) -> Option<String> {
        self.shared
            .state()
            .cluster_id
            .as_ref()
            .map(|c| c.0.clone())
            .or_else(|| read(&self.expected_cluster))
    }

    /// Records the cluster this agent is joining or initialising.
    pub(crate) fn expect_cluster(&self, cluster_id: String) {
        let mut g = match self.expected_cluster.write() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        *g = Some(cluster_id);
    }

    /// Allows raft RPCs from `peers` before they are members.
    pub(crate) fn allow_peers(&self, peers: impl IntoIterator<Item = RaftId>) {
        let mut g = match self.extra_peers.write() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        g.extend(peers);
    }

    /// Whether `sender` is a node of the applied cluster state that may become a manager.
    fn is_manager_candidate(&self, sender: RaftId) -> bool {
        let state = self.shared.state();
        state.nodes.values().any(|n| {
            n.labels.get(crate::join::MANAGER_LABEL).map(String::as_str) != Some("false")
                && crate::core::raft_id_of_str(n.id.as_str()) == Some(sender)
        })
    }

    /// Whether `sender` (claiming `cluster`) may send raft RPCs here.
    pub(crate) fn allows(
        &self,
        raft: &Raft,
        sender: RaftId,
        cluster: Option<&str>,
    ) -> Result<(), String> {
        let ours = self.cluster_id();
        if let (Some(ours), Some(theirs)) = (ours.as_deref(), cluster)
            && ours != theirs
        {
            return Err(format!(
                "different cluster ({theirs}, this agent is in {ours})"
            ));
        }
        let metrics = raft.metrics();
        let membership = metrics.borrow_watched().membership_config.clone();
        let members = membership.membership();
        if members.get_node(&sender).is_some() {
            return Ok(());
        }
        if read(&self.extra_peers).contains(&sender) {
            return Ok(());
        }
        // A node admitted to the cluster as a manager candidate: it may be a voter in a
        // membership this agent has not received yet (a just-promoted manager asking for votes).
        if self.is_manager_candidate(sender) {
            return Ok(());
        }
        // Not a voter here (joining, or a learner replaying old memberships that predate the
        // current leader): anyone of this cluster may replicate to it. A non-voter cannot be
        // disrupted into an election.
        let voter_here = members.voter_ids().any(|v| v == self.local);
        if !voter_here && ours.is_some() && cluster == ours.as_deref() {
            return Ok(());
        }
        Err(format!(
            "not a raft member (this agent: cluster {ours:?}, {} members; sender claims {cluster:?})",
            members.nodes().count()
        ))
    }
}
