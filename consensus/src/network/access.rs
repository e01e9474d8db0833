//! Who may talk raft to this agent: the raft members as this agent knows them — the nodes of
//! its log's membership, voters and learners alike, and the manager set an authenticated
//! manager last told it (which is newer than a lagging learner's log, and the only membership a
//! plain worker about to become a learner has) — plus, while a `bootstrap_expect` cluster
//! forms, the other agents of the expected set. Claiming the cluster id is not enough.
//!
//! In a closed cluster every raft RPC also carries a [proof](crate::token::RaftKey) that its
//! sender holds a manager token: a worker token cannot complete a raft exchange even with an
//! agent that took it for a member.

use openraft::async_runtime::WatchReceiver;
use std::collections::HashSet;
use std::sync::{Arc, RwLock};

use shoal_discovery::PeerId;

use crate::core::raft_id_of_peer;
use crate::lazy::LazyRaft;
use crate::managers::Managers;
use crate::storage::state_machine::Shared;
use crate::token::{Proof, RaftKey};
use crate::types::RaftId;

/// Why a raft RPC was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Refusal {
    /// The sender claims another cluster.
    #[error("different cluster ({theirs:?}, this agent is in {ours:?})")]
    OtherCluster {
        /// The sender's claim.
        theirs: Option<String>,
        /// Ours.
        ours: Option<String>,
    },
    /// The sender is not a raft member as this agent knows them.
    #[error("not a raft member (this agent: cluster {cluster:?}, {members} members)")]
    NotMember {
        /// Ours.
        cluster: Option<String>,
        /// Members known here.
        members: usize,
    },
    /// A closed cluster's RPC without a valid manager proof.
    #[error("no valid manager proof: raft needs a manager token")]
    NoProof,
}

impl Refusal {
    /// A short label for metrics.
    pub(crate) fn label(&self) -> &'static str {
        match self {
            Refusal::OtherCluster { .. } => "other_cluster",
            Refusal::NotMember { .. } => "not_member",
            Refusal::NoProof => "no_proof",
        }
    }
}

/// Shared between the network server, bootstrap and join. Locks are held only for copies.
pub(crate) struct Access {
    local: PeerId,
    shared: Arc<Shared>,
    managers: Arc<Managers>,
    /// The key of manager proofs (closed clusters, manager tokens only).
    key: Option<RaftKey>,
    /// Whether the cluster is closed (a token, of either kind, was given).
    closed: bool,
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
    pub(crate) fn new(
        local: PeerId,
        shared: Arc<Shared>,
        managers: Arc<Managers>,
        key: Option<RaftKey>,
        closed: bool,
    ) -> Access {
        Access {
            local,
            shared,
            managers,
            key,
            closed,
            expected_cluster: RwLock::new(None),
            extra_peers: RwLock::new(HashSet::new()),
        }
    }

    /// The cluster id this agent belongs to: the applied one, else the one it is joining or
    /// initialising, else the one its manager set names (a restarted worker).
    pub(crate) fn cluster_id(&self) -> Option<String> {
        self.shared
            .state()
            .cluster_id
            .as_ref()
            .map(|c| c.0.clone())
            .or_else(|| read(&self.expected_cluster))
            .or_else(|| self.managers.set().cluster_id)
    }

    /// The cluster this agent belongs to for certain: its log committed the id, or its
    /// managers told it (a worker). Unlike [`Self::cluster_id`], not one it is still forming or
    /// joining, so that others never take an agent for a cluster's manager too early.
    pub(crate) fn settled_cluster_id(&self) -> Option<String> {
        self.shared
            .state()
            .cluster_id
            .as_ref()
            .map(|c| c.0.clone())
            .or_else(|| self.managers.set().cluster_id)
    }

    /// Records the cluster this agent is joining or initialising.
    pub(crate) fn expect_cluster(&self, cluster_id: String) {
        let mut g = match self.expected_cluster.write() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        *g = Some(cluster_id);
    }

    /// Allows raft RPCs from `peers` before they are members (a `bootstrap_expect` set).
    pub(crate) fn allow_peers(&self, peers: impl IntoIterator<Item = RaftId>) {
        let mut g = match self.extra_peers.write() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        g.extend(peers);
    }

    /// The proof this agent sends `to` with its raft RPCs (None in open mode, or without a
    /// manager token).
    pub(crate) fn proof_for(&self, to: &PeerId) -> Option<Proof> {
        self.key.as_ref().map(|key| key.proof(&self.local, to))
    }

    /// Whether `sender` (claiming `cluster`, with `proof`) may send raft RPCs here.
    pub(crate) fn allows(
        &self,
        raft: &LazyRaft,
        sender: &PeerId,
        cluster: Option<&str>,
        proof: Option<&Proof>,
    ) -> Result<(), Refusal> {
        let ours = self.cluster_id();
        if let (Some(ours), Some(theirs)) = (ours.as_deref(), cluster)
            && ours != theirs
        {
            return Err(Refusal::OtherCluster {
                theirs: cluster.map(str::to_owned),
                ours: Some(ours.to_owned()),
            });
        }
        self.allows_peer(raft, sender)?;
        if self.closed {
            let valid = match (&self.key, proof) {
                (Some(key), Some(proof)) => key.verify(sender, &self.local, proof),
                _ => false,
            };
            if !valid {
                return Err(Refusal::NoProof);
            }
        }
        Ok(())
    }

    /// Whether `sender` is a raft member as this agent knows them (checked before anything of
    /// the sender's is read into memory).
    pub(crate) fn allows_peer(&self, raft: &LazyRaft, sender: &PeerId) -> Result<(), Refusal> {
        let id = raft_id_of_peer(sender);
        let metrics = raft.metrics();
        let membership = metrics.borrow_watched().membership_config.clone();
        let members = membership.membership();
        if members.get_node(&id).is_some()
            || self.managers.contains(sender)
            || read(&self.extra_peers).contains(&id)
        {
            return Ok(());
        }
        Err(Refusal::NotMember {
            cluster: self.cluster_id(),
            members: members
                .nodes()
                .count()
                .max(self.managers.set().members.len()),
        })
    }
}
