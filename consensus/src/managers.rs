//! [`Managers`]: what an agent knows of its cluster's managers and leader, beside its raft log.
//!
//! A raft voter knows the leader from raft itself. Every other agent — a plain worker, and a
//! learner whose log may lag — learns it here, from sources it can trust:
//! - the **manager set**: the raft members (voters and learners) as an authenticated manager
//!   last told it: the answer to its join, the leader's answers to its heartbeats, and, while it
//!   is a raft member, its own log's membership. The set comes with the log index of the
//!   membership it describes (`epoch`); only a newer one replaces it;
//! - the **leader**: a member of the manager set with the raft term it leads in, from the
//!   managers' gossip announcements and from the leader's own dispatcher messages. A claim is
//!   taken only from a manager, about a manager, and only for a newer term (or the same leader).
//!
//! The cluster id and the manager set are persisted (`cluster.cbor` in the data dir), so that a
//! restarted worker goes back to its cluster instead of forming a new one, and finds its
//! managers again without a seed.

use std::collections::BTreeSet;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use shoal_discovery::PeerId;
use tokio::sync::watch;

use crate::codec::{decode_bounded, encode};

/// The file the view is kept in, inside the data dir.
pub const MANAGERS_FILE: &str = "cluster.cbor";
/// Largest manager set accepted from anyone (raft groups are small: 7 voters plus learners).
pub const MAX_MANAGERS: usize = 64;
/// Largest managers file read.
const MAX_FILE_BYTES: usize = 64 * 1024;

/// The persisted part: the cluster and its manager set.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManagerSet {
    /// The cluster this agent belongs to.
    pub cluster_id: Option<String>,
    /// The raft members (PeerIds in text form).
    pub members: BTreeSet<String>,
    /// Log index of the membership the set describes (0: from a join answer before any).
    pub epoch: u64,
}

/// A leader as this agent knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaderClaim {
    /// The leader.
    pub peer: PeerId,
    /// The raft term it leads in.
    pub term: u64,
}

/// The leader claim held, and the highest term any claim named.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Known {
    claim: Option<LeaderClaim>,
    term: u64,
}

/// The cluster's managers and leader as this agent knows them. Locks are held only for copies.
pub(crate) struct Managers {
    path: PathBuf,
    set: Mutex<ManagerSet>,
    leader: watch::Sender<Known>,
}

impl Managers {
    /// The view kept in `data_dir`, empty if there is none (or it cannot be read).
    pub(crate) fn load(data_dir: &Path) -> Managers {
        let path = data_dir.join(MANAGERS_FILE);
        let set = match std::fs::read(&path) {
            Ok(bytes) => decode_bounded(&bytes, MAX_FILE_BYTES).unwrap_or_else(|error| {
                tracing::warn!(file = %path.display(), %error, "unreadable managers file ignored");
                ManagerSet::default()
            }),
            Err(_) => ManagerSet::default(),
        };
        Managers {
            path,
            set: Mutex::new(set),
            leader: watch::channel(Known::default()).0,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ManagerSet> {
        match self.set.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// A copy of the manager set.
    pub(crate) fn set(&self) -> ManagerSet {
        self.lock().clone()
    }

    /// Whether `peer` is one of the managers.
    pub(crate) fn contains(&self, peer: &PeerId) -> bool {
        self.lock().members.contains(&peer.to_string())
    }

    /// The managers as PeerIds.
    pub(crate) fn peers(&self) -> Vec<PeerId> {
        self.lock()
            .members
            .iter()
            .filter_map(|p| p.parse().ok())
            .collect()
    }

    /// Takes a manager set told by an authenticated manager (or this agent's own log) if it is
    /// newer than the one held, or the first of a cluster. Returns whether it changed anything.
    pub(crate) fn learn(&self, cluster_id: &str, epoch: u64, members: BTreeSet<String>) -> bool {
        if members.is_empty() || members.len() > MAX_MANAGERS {
            return false;
        }
        let changed = {
            let mut set = self.lock();
            let same_cluster = set.cluster_id.as_deref() == Some(cluster_id);
            let newer = !same_cluster || epoch > set.epoch;
            if !newer || (set.members == members && set.epoch == epoch) {
                false
            } else {
                *set = ManagerSet {
                    cluster_id: Some(cluster_id.to_owned()),
                    members,
                    epoch,
                };
                true
            }
        };
        if changed {
            self.persist();
        }
        changed
    }

    /// Takes `claim` if it comes from a manager about a manager and names a newer term than any
    /// seen, or the term of the last leader known when that leader says so itself. Returns
    /// whether the claim is the leader now.
    pub(crate) fn claim_leader(&self, from: &PeerId, claim: LeaderClaim) -> bool {
        if !self.contains(from) || !self.contains(&claim.peer) {
            return false;
        }
        let mut taken = false;
        self.leader.send_if_modified(|known| {
            let same = known.claim == Some(claim);
            let newer = claim.term > known.term;
            let reclaimed =
                claim.term == known.term && known.claim.is_none() && *from == claim.peer;
            taken = same || newer || reclaimed;
            if same || !taken {
                return false;
            }
            *known = Known {
                claim: Some(claim),
                term: claim.term,
            };
            true
        });
        taken
    }

    /// Forgets the leader if it is `peer` (it died, or answered that it no longer leads). Only
    /// a newer term, or that leader itself, can make a leader known again.
    pub(crate) fn forget_leader(&self, peer: &PeerId) {
        self.leader.send_if_modified(|known| {
            let forget = known.claim.is_some_and(|c| c.peer == *peer);
            if forget {
                known.claim = None;
            }
            forget
        });
    }

    /// The leader as the managers claimed it, if any.
    pub(crate) fn leader(&self) -> Option<LeaderClaim> {
        self.leader.borrow().claim
    }

    /// A receiver that changes whenever [`Self::leader`] does.
    pub(crate) fn watch_leader(&self) -> watch::Receiver<Known> {
        self.leader.subscribe()
    }

    /// Writes the set to its file (atomically: a temporary file, fsync'd, then renamed).
    fn persist(&self) {
        let set = self.set();
        let result = encode(&set)
            .map_err(std::io::Error::other)
            .and_then(|bytes| {
                let tmp = self.path.with_extension("tmp");
                let mut file = std::fs::File::create(&tmp)?;
                file.write_all(&bytes)?;
                file.sync_all()?;
                std::fs::rename(&tmp, &self.path)
            });
        if let Err(error) = result {
            tracing::warn!(file = %self.path.display(), %error, "cannot save the manager set");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer() -> PeerId {
        shoal_discovery::Keypair::generate_ed25519()
            .public()
            .to_peer_id()
    }

    fn set(peers: &[PeerId]) -> BTreeSet<String> {
        peers.iter().map(|p| p.to_string()).collect()
    }

    #[test]
    fn only_newer_sets_replace_and_they_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let (a, b, c) = (peer(), peer(), peer());
        let managers = Managers::load(dir.path());
        assert!(managers.learn("c1", 5, set(&[a, b])));
        assert!(!managers.learn("c1", 4, set(&[c])), "an older set");
        assert!(!managers.learn("c1", 6, BTreeSet::new()), "an empty set");
        assert!(managers.learn("c1", 9, set(&[a, b, c])));
        let again = Managers::load(dir.path());
        assert_eq!(again.set().epoch, 9);
        assert!(again.contains(&c));
        assert_eq!(again.set().cluster_id.as_deref(), Some("c1"));
    }

    #[test]
    fn leader_claims_come_from_managers_about_managers_for_newer_terms() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let (a, b, outsider) = (peer(), peer(), peer());
        let managers = Managers::load(dir.path());
        managers.learn("c1", 1, set(&[a, b]));
        let claim = |peer, term| LeaderClaim { peer, term };
        assert!(
            !managers.claim_leader(&outsider, claim(a, 3)),
            "not from a manager"
        );
        assert!(
            !managers.claim_leader(&a, claim(outsider, 3)),
            "not about a manager"
        );
        assert!(managers.claim_leader(&a, claim(a, 3)));
        assert!(
            !managers.claim_leader(&b, claim(b, 3)),
            "two leaders in one term"
        );
        assert!(!managers.claim_leader(&b, claim(b, 2)), "an older term");
        assert!(
            managers.claim_leader(&b, claim(a, 3)),
            "the known leader again"
        );
        assert!(managers.claim_leader(&b, claim(b, 4)));
        assert_eq!(managers.leader(), Some(claim(b, 4)));
        managers.forget_leader(&b);
        assert_eq!(managers.leader(), None);
        assert!(
            !managers.claim_leader(&a, claim(b, 4)),
            "a stale word about the forgotten"
        );
        assert!(managers.claim_leader(&b, claim(b, 4)), "the leader itself");
    }
}
