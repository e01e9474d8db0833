//! A lone cluster yields. Zero-config agents that start together decide within a short window;
//! one that hears no other agent in time (an mDNS answer lost on a loaded machine, a slow
//! start) forms a cluster of its own next to the others'. Left alone, the LAN would hold two
//! clusters for good. So an agent whose cluster is only itself and holds nothing (no other
//! node, no service, no other agent announcing it) watches the mesh: once it hears a larger cluster (or an equally lone one
//! with a lower id, so that of two lone agents exactly one yields), it says so through
//! [`crate::Quorum::lone_cluster_yields`], and the agent sets its empty cluster aside and joins
//! that one. A cluster that holds a service or a second node never yields: nothing a user made
//! is ever dropped.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use shoal_discovery::{Member, MemberState, Multiaddr, PeerId, RaftMembership};
use shoal_scheduler::ClusterState;
use tokio::sync::watch;

use crate::core::Core;
use crate::types::{RaftId, RaftNode};

/// How often a lone cluster looks for a larger one.
const LOOK_EVERY: Duration = Duration::from_secs(1);

/// Looks in a row that must agree before yielding: a cluster heard once in passing (an agent
/// restarting, a view not yet settled) is no reason to leave.
const LOOKS_THAT_AGREE: u32 = 3;

/// The cluster a lone agent leaves its own for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct YieldTo {
    /// The other cluster's id.
    pub cluster: String,
    /// How many agents this one hears in it.
    pub agents: usize,
    /// A manager of it to join through.
    pub via: PeerId,
    /// That manager's announced addresses.
    pub addrs: Vec<Multiaddr>,
}

/// Which cluster agent `me`, alone in cluster `mine`, should join, from the `members` it hears:
/// the largest cluster heard (ties to the lowest id), when that is larger than its own one
/// agent, or as lone as it with a lower id. Only a cluster with a manager alive to join through
/// counts. None while any other agent announces `mine`: one that joined it would be left
/// without a manager.
pub fn cluster_to_join(mine: &str, me: PeerId, members: &[Member]) -> Option<YieldTo> {
    let others = members.iter().filter(|m| m.peer_id != me);
    if others
        .clone()
        .any(|m| m.info.cluster_id.as_deref() == Some(mine) && m.state != MemberState::Dead)
    {
        return None;
    }
    let mut sizes: BTreeMap<&str, usize> = BTreeMap::new();
    let mut managers: BTreeMap<&str, &Member> = BTreeMap::new();
    for member in others.filter(|m| m.state == MemberState::Alive) {
        let Some(cluster) = member.info.cluster_id.as_deref() else {
            continue;
        };
        *sizes.entry(cluster).or_default() += 1;
        if member.info.raft.membership == RaftMembership::Voter {
            managers.entry(cluster).or_insert(member);
        }
    }
    let (cluster, agents) = sizes
        .into_iter()
        .filter(|(cluster, _)| *cluster != mine && managers.contains_key(cluster))
        .max_by(|(a_id, a), (b_id, b)| a.cmp(b).then_with(|| b_id.cmp(a_id)))?;
    if agents == 1 && cluster > mine {
        return None;
    }
    let via = managers[cluster];
    Some(YieldTo {
        cluster: cluster.to_owned(),
        agents,
        via: via.peer_id,
        addrs: via.addrs.clone(),
    })
}

/// Whether this agent's cluster (its applied `state` and raft `voters`) is only itself and holds
/// nothing a user made.
fn lone_and_empty(core: &Core, state: &ClusterState, voters: &BTreeMap<RaftId, RaftNode>) -> bool {
    state.cluster_id.is_some()
        && state.services.is_empty()
        && state
            .nodes
            .keys()
            .all(|node| node.as_str() == core.me.peer_id)
        && voters.len() == 1
        && voters.contains_key(&core.id)
}

/// Watches, while this agent's cluster stays lone and empty, for a cluster it should join;
/// sends it once and stops. Stops for good once its own cluster holds anything.
pub(crate) async fn watch(core: Arc<Core>, found: watch::Sender<Option<YieldTo>>) {
    let mut agreeing = 0;
    let mut last: Option<String> = None;
    loop {
        tokio::time::sleep(LOOK_EVERY).await;
        let (state, voters) = (core.state(), core.voters());
        let Some(mine) = state.cluster_id.clone() else {
            continue;
        };
        if voters.is_empty() {
            continue;
        }
        if !lone_and_empty(&core, &state, &voters) {
            return;
        }
        let members = core.mesh.members().await.unwrap_or_default();
        let target = cluster_to_join(&mine.0, core.peer, &members);
        let same = target.as_ref().map(|t| &t.cluster) == last.as_ref();
        agreeing = if same && target.is_some() {
            agreeing + 1
        } else {
            u32::from(target.is_some())
        };
        last = target.as_ref().map(|t| t.cluster.clone());
        if let Some(target) = target
            && agreeing >= LOOKS_THAT_AGREE
        {
            tracing::warn!(
                own = %mine.0,
                other = %target.cluster,
                agents = target.agents,
                via = %target.via,
                "this agent formed a cluster alone, and hears a larger one on its network: \
                 leaving its empty cluster to join that one"
            );
            let _ = found.send(Some(target));
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use shoal_discovery::{NodeInfo, RaftAnnouncement};

    use super::*;

    fn member(cluster: Option<&str>, voter: bool, state: MemberState) -> Member {
        Member {
            peer_id: PeerId::random(),
            state,
            info: NodeInfo {
                cluster_id: cluster.map(str::to_owned),
                raft: RaftAnnouncement {
                    membership: if voter {
                        RaftMembership::Voter
                    } else {
                        RaftMembership::None
                    },
                    ..RaftAnnouncement::default()
                },
                ..NodeInfo::default()
            },
            addrs: vec!["/ip4/10.0.0.2/tcp/4946".parse().expect("multiaddr")],
            seq: 0,
            last_heard: Instant::now(),
        }
    }

    fn alive(cluster: &str, voter: bool) -> Member {
        member(Some(cluster), voter, MemberState::Alive)
    }

    #[test]
    fn a_lone_agent_joins_the_larger_cluster_through_one_of_its_managers() {
        let manager = alive("big", true);
        let myself = alive("mine", true);
        let members = vec![
            myself.clone(),
            manager.clone(),
            alive("big", false),
            alive("big", false),
        ];
        let target = cluster_to_join("mine", myself.peer_id, &members).expect("a cluster to join");
        assert_eq!(target.cluster, "big");
        assert_eq!(target.agents, 3);
        assert_eq!(target.via, manager.peer_id);
        assert_eq!(target.addrs, manager.addrs);
    }

    #[test]
    fn of_two_lone_agents_only_the_one_with_the_higher_cluster_id_yields() {
        let (a, b) = (alive("a-cluster", true), alive("b-cluster", true));
        let members = vec![a.clone(), b.clone()];
        let yielded = cluster_to_join("b-cluster", b.peer_id, &members).expect("b yields");
        assert_eq!(yielded.cluster, "a-cluster");
        assert_eq!(cluster_to_join("a-cluster", a.peer_id, &members), None);
    }

    #[test]
    fn the_largest_cluster_wins_and_ties_go_to_the_lowest_id() {
        let myself = alive("mine", true);
        let members = vec![
            myself.clone(),
            alive("x", true),
            alive("x", false),
            alive("w", true),
            alive("w", false),
            alive("z", true),
        ];
        assert_eq!(
            cluster_to_join("mine", myself.peer_id, &members).map(|t| t.cluster),
            Some("w".to_owned())
        );
    }

    #[test]
    fn nothing_to_join_without_a_live_manager_of_another_cluster() {
        let myself = alive("mine", true);
        let members = vec![
            myself.clone(),
            // Workers of another cluster, its manager dead, and agents with no cluster yet.
            alive("other", false),
            alive("other", false),
            member(Some("other"), true, MemberState::Dead),
            member(None, false, MemberState::Alive),
        ];
        assert_eq!(cluster_to_join("mine", myself.peer_id, &members), None);
        assert_eq!(cluster_to_join("mine", myself.peer_id, &[]), None);
    }

    #[test]
    fn an_agent_that_another_one_joined_never_yields() {
        // This agent itself is heard too, and an agent that joined its cluster as a worker.
        let myself = alive("mine", true);
        let members = vec![
            myself.clone(),
            alive("mine", false),
            alive("big", true),
            alive("big", false),
            alive("big", false),
        ];
        assert_eq!(cluster_to_join("mine", myself.peer_id, &members), None);
        let alone = vec![myself.clone(), alive("big", true), alive("big", false)];
        assert_eq!(
            cluster_to_join("mine", myself.peer_id, &alone).map(|t| t.cluster),
            Some("big".to_owned())
        );
    }
}
