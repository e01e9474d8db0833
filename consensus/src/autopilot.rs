//! Autopilot, on the leader only: keeps the manager (voter) count at its target — 1 while fewer
//! than 3 eligible nodes, else the configured 3 or 5, never even — by promoting healthy,
//! caught-up learners (preferring new hostnames and `node.labels.zone` values), adding learners
//! when there are too few, removing managers that stayed dead past a grace (only while the
//! remaining voters keep quorum), and demoting managers that are drained or asked to step down.
//! Learners are only the nodes it means to promote: as many as voters are missing or unhealthy
//! (one more while the set grows); a demoted manager and every other learner leave the raft
//! group and stay plain workers, so the group's size does not grow with the cluster's.
//! Only nodes admitted with a manager credential are ever eligible.
//! A node that still announces itself a voter though the membership left it out (a leader cut
//! off while the others replaced it) is added as a learner until its announcement says the log
//! told it so; then it leaves like any learner not meant for promotion.
//! A leader that is drained or asked to step down first hands leadership to a caught-up eligible
//! voter (openraft's leader transfer); the new leader then demotes it like any other manager.
//!
//! The decision ([`plan`]) is a pure function of a [`View`]; [`run`] gathers the view and applies
//! at most one membership change per round.

use openraft::async_runtime::WatchReceiver;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::ChangeMembers;
use shoal_discovery::{MemberState, RaftMembership};
use shoal_scheduler::{Availability, ClusterState, Command, Credential, NodeId, NodeRole};

use crate::core::{Core, raft_id_of_peer, raft_id_of_str};
use crate::join::MANAGER_LABEL;
use crate::types::{RaftId, RaftNode};

/// Entries a learner may lag behind the leader and still be promoted.
const CAUGHT_UP_LAG: u64 = 64;
/// A leader transfer that did not take effect is tried again after this long at the earliest
/// (if the old leader wins the election again, rounds must not turn into leader churn).
const TRANSFER_RETRY: Duration = Duration::from_secs(3);

/// One candidate node as the autopilot sees it.
#[derive(Debug, Clone)]
pub(crate) struct Candidate {
    pub(crate) id: RaftId,
    pub(crate) node: RaftNode,
    pub(crate) hostname: String,
    pub(crate) zone: Option<String>,
    pub(crate) alive: bool,
    /// Alive, not drained, not asked to step down.
    pub(crate) eligible: bool,
    /// Matched log index (learners and voters, as the leader sees it).
    pub(crate) matched: u64,
}

/// Everything a decision needs.
#[derive(Debug, Clone)]
pub(crate) struct View {
    pub(crate) leader: RaftId,
    pub(crate) target: usize,
    pub(crate) voters: BTreeSet<RaftId>,
    pub(crate) learners: BTreeSet<RaftId>,
    pub(crate) candidates: BTreeMap<RaftId, Candidate>,
    pub(crate) last_log: u64,
    /// Voters dead for longer than the grace.
    pub(crate) expired: BTreeSet<RaftId>,
    /// Nodes that announce themselves voters of this cluster although the membership left
    /// them out: cut off while they were replaced, they never received the change.
    pub(crate) strays: BTreeSet<RaftId>,
}

/// What one round decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Nothing to do.
    Nothing,
    /// Add these nodes as learners.
    AddLearners(Vec<(RaftId, RaftNode)>),
    /// Make `voters` the voter set; `remove` leaves the membership entirely.
    Change {
        voters: BTreeSet<RaftId>,
        remove: BTreeSet<RaftId>,
    },
    /// This leader may not stay a manager: hand leadership to this voter.
    TransferLeader(RaftId),
    /// These learners are not meant to be promoted: they leave the raft group.
    RemoveLearners(BTreeSet<RaftId>),
}

fn odd_at_most(n: usize) -> usize {
    if n == 0 {
        0
    } else if n.is_multiple_of(2) {
        n - 1
    } else {
        n
    }
}

/// The target voter count for `eligible` eligible nodes.
pub(crate) fn target_for(eligible: usize, configured: usize) -> usize {
    if eligible < 3 {
        1
    } else {
        odd_at_most(configured.min(eligible))
    }
}

/// Decides one round.
pub(crate) fn plan(v: &View) -> Decision {
    let cand = |id: &RaftId| v.candidates.get(id);
    let alive_voters = v
        .voters
        .iter()
        .filter(|id| cand(id).is_some_and(|c| c.alive))
        .count();
    if alive_voters < v.voters.len() / 2 + 1 {
        return Decision::Nothing; // no quorum: nothing can commit
    }
    // A drained or stepped-down leader cannot demote itself: it hands over first.
    if cand(&v.leader).is_some_and(|c| !c.eligible)
        && let Some(decision) = hand_over(v)
    {
        return decision;
    }
    // A stray voter keeps calling elections that every member refuses: as a learner it gets
    // the log, which tells it that it no longer votes (it leaves again below once it says so).
    let strays: Vec<(RaftId, RaftNode)> = v
        .strays
        .iter()
        .filter(|id| !v.voters.contains(id) && !v.learners.contains(id))
        .filter_map(&cand)
        .filter(|c| c.alive)
        .map(|c| (c.id, c.node.clone()))
        .collect();
    if !strays.is_empty() {
        return Decision::AddLearners(strays);
    }
    // Voters that stay: eligible ones, the leader, and the dead still within their grace.
    let mut keep: BTreeSet<RaftId> = v
        .voters
        .iter()
        .copied()
        .filter(|id| {
            *id == v.leader
                || (!v.expired.contains(id) && cand(id).is_none_or(|c| c.eligible || !c.alive))
        })
        .collect();
    let remove: BTreeSet<RaftId> = v
        .voters
        .iter()
        .copied()
        .filter(|id| v.expired.contains(id))
        .collect();
    // Promote caught-up, eligible learners, preferring new hostnames and zones.
    let mut promotable: Vec<&Candidate> = v
        .learners
        .iter()
        .filter_map(&cand)
        .filter(|c| c.eligible && c.matched > 0 && c.matched + CAUGHT_UP_LAG >= v.last_log)
        .collect();
    while keep.len() < v.target && !promotable.is_empty() {
        let hosts: BTreeSet<&str> = keep
            .iter()
            .filter_map(&cand)
            .map(|c| c.hostname.as_str())
            .collect();
        let zones: BTreeSet<&str> = keep
            .iter()
            .filter_map(&cand)
            .filter_map(|c| c.zone.as_deref())
            .collect();
        let score = |c: &Candidate| {
            u8::from(!hosts.contains(c.hostname.as_str())) * 2
                + u8::from(c.zone.as_deref().is_some_and(|z| !zones.contains(z)))
        };
        let best = promotable
            .iter()
            .enumerate()
            .max_by(|(_, a), (_, b)| score(a).cmp(&score(b)).then(b.id.cmp(&a.id)));
        let Some((i, _)) = best else { break };
        keep.insert(promotable.remove(i).id);
    }
    // Never even, never above target: trim non-leader voters (they stay learners), the dead
    // first, then those just promoted, then the highest ids.
    while keep.len() > 1 && (keep.len().is_multiple_of(2) || keep.len() > v.target) {
        let others = || keep.iter().rev().copied().filter(|id| *id != v.leader);
        let victim = others()
            .find(|id| cand(id).is_none_or(|c| !c.alive))
            .or_else(|| others().find(|id| !v.voters.contains(id)))
            .or_else(|| others().next());
        match victim {
            Some(id) => {
                keep.remove(&id);
            }
            None => break,
        }
    }
    if keep != v.voters {
        return Decision::Change {
            voters: keep,
            remove,
        };
    }
    // Learners: as many as may be promoted soon, the most caught up; the rest leave.
    let wanted = wanted_learners(v);
    let mut learners_ok: Vec<&Candidate> = v
        .learners
        .iter()
        .filter_map(&cand)
        .filter(|c| c.eligible)
        .collect();
    learners_ok.sort_by(|a, b| b.matched.cmp(&a.matched).then(a.id.cmp(&b.id)));
    let mut kept: BTreeSet<RaftId> = learners_ok.iter().take(wanted).map(|c| c.id).collect();
    // A stray stays until its announcement says it learned that it no longer votes.
    kept.extend(v.learners.intersection(&v.strays));
    let extra: BTreeSet<RaftId> = v.learners.difference(&kept).copied().collect();
    if !extra.is_empty() {
        return Decision::RemoveLearners(extra);
    }
    let learners_ok = learners_ok.len();
    if learners_ok < wanted {
        let new: Vec<(RaftId, RaftNode)> = v
            .candidates
            .values()
            .filter(|c| c.eligible && !v.voters.contains(&c.id) && !v.learners.contains(&c.id))
            .take(wanted - learners_ok)
            .map(|c| (c.id, c.node.clone()))
            .collect();
        if !new.is_empty() {
            return Decision::AddLearners(new);
        }
    }
    Decision::Nothing
}

/// How many learners the autopilot means to promote: while the voter set is below its target,
/// one per missing voter and one more; at its target, one per voter that is dead or no longer
/// eligible (within its grace), to be ready to replace it.
fn wanted_learners(v: &View) -> usize {
    if v.voters.len() < v.target {
        return v.target - v.voters.len() + 1;
    }
    let healthy = v
        .voters
        .iter()
        .filter(|id| v.candidates.get(id).is_some_and(|c| c.alive && c.eligible))
        .count();
    v.target.saturating_sub(healthy)
}

/// The steps of a leader that may not stay a manager: transfer leadership to a caught-up
/// eligible voter; without one, promote a caught-up eligible learner (the voter count may be
/// even until the old leader leaves); without one, add an eligible node as a learner. None (the
/// usual round) while an eligible learner catches up, or when no eligible node exists at all
/// (then it stays the manager).
fn hand_over(v: &View) -> Option<Decision> {
    let cand = |id: &RaftId| v.candidates.get(id);
    let caught_up = |c: &&Candidate| c.eligible && c.matched + CAUGHT_UP_LAG >= v.last_log;
    let best = |a: &&Candidate, b: &&Candidate| a.matched.cmp(&b.matched).then(b.id.cmp(&a.id));
    let others = v.voters.iter().filter(|id| **id != v.leader);
    if let Some(successor) = others.filter_map(cand).filter(caught_up).max_by(best) {
        return Some(Decision::TransferLeader(successor.id));
    }
    let learners = || v.learners.iter().filter_map(cand);
    if let Some(learner) = learners()
        .filter(|c| c.matched > 0)
        .filter(caught_up)
        .max_by(best)
    {
        let mut voters = v.voters.clone();
        voters.insert(learner.id);
        return Some(Decision::Change {
            voters,
            remove: BTreeSet::new(),
        });
    }
    if learners().any(|c| c.eligible) {
        return None; // still catching up: the usual round meanwhile
    }
    v.candidates
        .values()
        .find(|c| c.eligible && !v.voters.contains(&c.id) && !v.learners.contains(&c.id))
        .map(|c| Decision::AddLearners(vec![(c.id, c.node.clone())]))
}

/// Runs rounds while this agent is leader.
pub(crate) async fn run(core: Arc<Core>) {
    let mut dead_since: HashMap<RaftId, Instant> = HashMap::new();
    let mut transferred_at: Option<Instant> = None;
    let mut tick = tokio::time::interval(core.config.autopilot_interval);
    loop {
        tick.tick().await;
        if core.leader().map(|(id, _)| id) != Some(core.id) {
            dead_since.clear();
            continue;
        }
        let strays = stray_voters(&core).await;
        let Some(view) = gather(&core, &mut dead_since, strays) else {
            continue;
        };
        let decision = plan(&view);
        if let Decision::TransferLeader(to) = decision {
            if transferred_at.is_none_or(|at| at.elapsed() >= TRANSFER_RETRY) {
                tracing::info!(
                    to,
                    "autopilot: this leader may not stay a manager, handing over"
                );
                transferred_at = Some(Instant::now());
                if let Some(raft) = core.raft.get()
                    && let Err(e) = raft.trigger().transfer_leader(to).await
                {
                    tracing::warn!(error = %e, "autopilot: leader transfer");
                }
            }
            continue;
        }
        if decision == Decision::Nothing {
            // Keep node roles in the cluster state in step with the voters, including the
            // first voter, which was never promoted.
            record_roles(&core, &view, &view.voters).await;
        } else {
            tracing::info!(?decision, "autopilot");
        }
        apply(&core, &view, decision).await;
    }
}

/// The alive agents that announce themselves voters of this cluster, whatever the membership
/// says (the membership is compared in [`plan`]).
async fn stray_voters(core: &Core) -> BTreeSet<RaftId> {
    let Some(cluster) = core.access.settled_cluster_id() else {
        return BTreeSet::new();
    };
    let members = core.mesh.members().await.unwrap_or_default();
    members
        .iter()
        .filter(|m| {
            m.state == MemberState::Alive
                && m.info.raft.membership == RaftMembership::Voter
                && m.info.cluster_id.as_deref() == Some(cluster.as_str())
        })
        .map(|m| raft_id_of_peer(&m.peer_id))
        .collect()
}

fn gather(
    core: &Core,
    dead_since: &mut HashMap<RaftId, Instant>,
    announced_voters: BTreeSet<RaftId>,
) -> Option<View> {
    let metrics = core.raft.metrics().borrow_watched().clone();
    let membership = metrics.membership_config.membership();
    if membership.get_joint_config().len() > 1 {
        return None; // a change is in flight
    }
    let voters: BTreeSet<RaftId> = membership.voter_ids().collect();
    let learners: BTreeSet<RaftId> = membership.learner_ids().collect();
    let matched: BTreeMap<RaftId, u64> = metrics
        .replication
        .as_ref()
        .map(|r| {
            r.iter()
                .map(|(id, l)| (*id, l.as_ref().map(|l| l.index).unwrap_or(0)))
                .collect()
        })
        .unwrap_or_default();
    let last_log = metrics.last_log_index.unwrap_or(0);
    let state = core.state();
    let mut candidates = candidates_from(core, &state, &matched, last_log);
    // Raft members the state does not know (yet): judge them by the mesh only.
    for (id, node) in membership.nodes() {
        candidates.entry(*id).or_insert_with(|| Candidate {
            id: *id,
            node: node.clone(),
            hostname: node.peer_id.clone(),
            zone: None,
            alive: !core.is_dead(node),
            eligible: !core.is_dead(node),
            matched: matched
                .get(id)
                .copied()
                .unwrap_or(if *id == core.id { last_log } else { 0 }),
        });
    }
    let now = Instant::now();
    let grace = core.config.dead_manager_grace;
    let mut expired = BTreeSet::new();
    for id in &voters {
        let alive = candidates.get(id).is_some_and(|c| c.alive);
        if alive {
            dead_since.remove(id);
        } else if now.duration_since(*dead_since.entry(*id).or_insert(now)) >= grace {
            expired.insert(*id);
        }
    }
    // A manager that is dead but within its grace still counts: a blip must not shrink the set.
    let in_grace = voters
        .iter()
        .filter(|id| !expired.contains(id) && candidates.get(id).is_some_and(|c| !c.alive))
        .count();
    let eligible = candidates.values().filter(|c| c.eligible).count() + in_grace;
    let strays = announced_voters
        .into_iter()
        .filter(|id| membership.get_node(id).is_none() || learners.contains(id))
        .collect();
    Some(View {
        leader: core.id,
        target: target_for(eligible, core.config.target_managers),
        voters,
        learners,
        candidates,
        last_log,
        expired,
        strays,
    })
}

fn candidates_from(
    core: &Core,
    state: &ClusterState,
    matched: &BTreeMap<RaftId, u64>,
    last_log: u64,
) -> BTreeMap<RaftId, Candidate> {
    let mut out = BTreeMap::new();
    for node in state.nodes.values() {
        let Some(id) = raft_id_of_str(node.id.as_str()) else {
            continue;
        };
        let raft_node = RaftNode {
            peer_id: node.id.to_string(),
            addrs: node.addresses.clone(),
        };
        // Only a member the mesh declared dead counts as gone: a suspect is still a manager.
        let alive = !core.is_dead(&raft_node);
        let stepped_down = node.labels.get(MANAGER_LABEL).map(String::as_str) == Some("false");
        let eligible = alive
            && node.availability != Availability::Drain
            && !stepped_down
            && node.credential == Credential::Manager;
        let matched = if id == core.id {
            last_log
        } else {
            matched.get(&id).copied().unwrap_or(0)
        };
        out.insert(
            id,
            Candidate {
                id,
                node: raft_node,
                hostname: node.hostname.clone(),
                zone: node.labels.get("zone").cloned(),
                alive,
                eligible,
                matched,
            },
        );
    }
    out
}

async fn apply(core: &Core, view: &View, decision: Decision) {
    // Only a leader decides, and a leader's raft has started.
    let Some(raft) = core.raft.get() else {
        return;
    };
    match decision {
        Decision::Nothing | Decision::TransferLeader(_) => {}
        Decision::AddLearners(nodes) => {
            for (id, node) in nodes {
                if let Err(e) = raft.add_learner(id, node, false).await {
                    tracing::warn!(error = %e, "autopilot: add learner");
                }
            }
        }
        Decision::RemoveLearners(ids) => {
            let _ = change(core, ChangeMembers::RemoveNodes(ids)).await;
        }
        Decision::Change { voters, remove } => {
            // Two steps: the voter change (removed voters stay learners), then the removal.
            let replace = ChangeMembers::ReplaceAllVoters(voters.clone());
            if !change(core, replace).await {
                return;
            }
            record_roles(core, view, &voters).await;
            if !remove.is_empty() {
                let _ = change(core, ChangeMembers::RemoveNodes(remove)).await;
            }
        }
    }
}

async fn change(core: &Core, change: ChangeMembers<RaftId, RaftNode>) -> bool {
    let Some(raft) = core.raft.get() else {
        return false;
    };
    let call = raft.change_membership(change, true);
    match tokio::time::timeout(Duration::from_secs(10), call).await {
        Ok(Ok(_)) => true,
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "autopilot: membership change");
            false
        }
        Err(_) => {
            tracing::warn!("autopilot: membership change timed out");
            false
        }
    }
}

/// Records the new manager set in the cluster state (node roles).
async fn record_roles(core: &Core, view: &View, voters: &BTreeSet<RaftId>) {
    let state = core.state();
    for c in view.candidates.values() {
        let Some(node) = state.nodes.get(&NodeId::new(&c.node.peer_id)) else {
            continue;
        };
        let role = if voters.contains(&c.id) {
            NodeRole::Manager
        } else {
            NodeRole::Worker
        };
        if node.role == role {
            continue;
        }
        let cmd = Command::UpdateNode {
            id: node.id.clone(),
            availability: None,
            role: Some(role),
            labels_set: vec![],
            labels_remove: vec![],
        };
        if let Err(e) = core.write_as_leader(cmd, core.config.write_timeout).await {
            tracing::debug!(error = ?e, "autopilot: recording a role");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cand(id: RaftId, host: &str, alive: bool, eligible: bool, matched: u64) -> Candidate {
        Candidate {
            id,
            node: RaftNode {
                peer_id: format!("p{id}"),
                addrs: vec![],
            },
            hostname: host.to_owned(),
            zone: None,
            alive,
            eligible,
            matched,
        }
    }

    fn view(
        voters: &[RaftId],
        learners: &[RaftId],
        cands: Vec<Candidate>,
        expired: &[RaftId],
    ) -> View {
        let in_grace = voters
            .iter()
            .filter(|id| !expired.contains(id) && cands.iter().any(|c| c.id == **id && !c.alive))
            .count();
        let eligible = cands.iter().filter(|c| c.eligible).count() + in_grace;
        View {
            leader: voters[0],
            target: target_for(eligible, 3),
            voters: voters.iter().copied().collect(),
            learners: learners.iter().copied().collect(),
            candidates: cands.into_iter().map(|c| (c.id, c)).collect(),
            last_log: 100,
            expired: expired.iter().copied().collect(),
            strays: BTreeSet::new(),
        }
    }

    #[test]
    fn targets_are_odd() {
        assert_eq!(target_for(1, 3), 1);
        assert_eq!(target_for(2, 3), 1);
        assert_eq!(target_for(3, 3), 3);
        assert_eq!(target_for(4, 5), 3);
        assert_eq!(target_for(9, 5), 5);
    }

    #[test]
    fn replaces_an_expired_manager_with_a_caught_up_learner() {
        let v = view(
            &[1, 2, 3],
            &[4, 5],
            vec![
                cand(1, "a", true, true, 100),
                cand(2, "b", true, true, 100),
                cand(3, "c", false, false, 50),
                cand(4, "b", true, true, 99),
                cand(5, "e", true, true, 98),
            ],
            &[3],
        );
        // 5 prefers a new hostname over 4 (same host as 2).
        assert_eq!(
            plan(&v),
            Decision::Change {
                voters: [1, 2, 5].into(),
                remove: [3].into()
            }
        );
    }

    #[test]
    fn keeps_a_dead_manager_within_grace_and_without_quorum_does_nothing() {
        let cands = vec![
            cand(1, "a", true, true, 100),
            cand(2, "b", true, true, 100),
            cand(3, "c", false, false, 0),
        ];
        assert_eq!(
            plan(&view(&[1, 2, 3], &[], cands.clone(), &[])),
            Decision::Nothing
        );
        let lost = vec![
            cand(1, "a", true, true, 100),
            cand(2, "b", false, false, 0),
            cand(3, "c", false, false, 0),
        ];
        assert_eq!(
            plan(&view(&[1, 2, 3], &[], lost, &[2, 3])),
            Decision::Nothing
        );
    }

    #[test]
    fn grows_from_one_to_three_via_learners() {
        let cands = vec![
            cand(1, "a", true, true, 100),
            cand(2, "b", true, true, 0),
            cand(3, "c", true, true, 0),
        ];
        assert!(
            matches!(plan(&view(&[1], &[], cands.clone(), &[])), Decision::AddLearners(v) if v.len() == 2)
        );
        let caught = vec![
            cand(1, "a", true, true, 100),
            cand(2, "b", true, true, 100),
            cand(3, "c", true, true, 100),
        ];
        assert_eq!(
            plan(&view(&[1], &[2, 3], caught, &[])),
            Decision::Change {
                voters: [1, 2, 3].into(),
                remove: [].into()
            }
        );
    }

    #[test]
    fn demotes_a_drained_manager() {
        let cands = vec![
            cand(1, "a", true, true, 100),
            cand(2, "b", true, false, 100),
            cand(3, "c", true, true, 100),
            cand(4, "d", true, true, 100),
        ];
        assert_eq!(
            plan(&view(&[1, 2, 3], &[4], cands, &[])),
            Decision::Change {
                voters: [1, 3, 4].into(),
                remove: [].into()
            }
        );
    }

    #[test]
    fn a_drained_leader_hands_over_to_a_caught_up_voter() {
        let cands = vec![
            cand(1, "a", true, false, 100),
            cand(2, "b", true, true, 90),
            cand(3, "c", true, true, 99),
            cand(4, "d", true, true, 100),
        ];
        assert_eq!(
            plan(&view(&[1, 2, 3], &[4], cands, &[])),
            Decision::TransferLeader(3)
        );
        // Alone, it cannot hand over: another node becomes a learner, then a voter first.
        let alone = vec![cand(1, "a", true, false, 100), cand(4, "d", true, true, 0)];
        assert!(matches!(
            plan(&view(&[1], &[], alone, &[])),
            Decision::AddLearners(v) if v.len() == 1 && v[0].0 == 4
        ));
        let learning = vec![cand(1, "a", true, false, 100), cand(4, "d", true, true, 10)];
        assert_eq!(plan(&view(&[1], &[4], learning, &[])), Decision::Nothing);
        let caught = vec![
            cand(1, "a", true, false, 100),
            cand(4, "d", true, true, 100),
        ];
        assert_eq!(
            plan(&view(&[1], &[4], caught.clone(), &[])),
            Decision::Change {
                voters: [1, 4].into(),
                remove: [].into()
            }
        );
        assert_eq!(
            plan(&view(&[1, 4], &[], caught.clone(), &[])),
            Decision::TransferLeader(4)
        );
        // The new leader demotes the old one.
        let mut after = view(&[4, 1], &[], caught, &[]);
        after.leader = 4;
        assert_eq!(
            plan(&after),
            Decision::Change {
                voters: [4].into(),
                remove: [].into()
            }
        );
    }

    #[test]
    fn a_stray_voter_is_told_through_the_log_and_then_leaves() {
        // Node 4 was the leader, cut off while 1-3 replaced it; healed, it still says it votes.
        let cands = || {
            vec![
                cand(1, "a", true, true, 100),
                cand(2, "b", true, true, 100),
                cand(3, "c", true, true, 100),
                cand(4, "d", true, true, 0),
            ]
        };
        let mut stray = view(&[1, 2, 3], &[], cands(), &[]);
        stray.strays = [4].into();
        let node = stray.candidates[&4].node.clone();
        assert_eq!(plan(&stray), Decision::AddLearners(vec![(4, node)]));
        // A learner now, but still saying it votes: it stays until it learned.
        let mut learning = view(&[1, 2, 3], &[4], cands(), &[]);
        learning.strays = [4].into();
        assert_eq!(plan(&learning), Decision::Nothing);
        // It says it no longer votes: a learner nobody means to promote, so it leaves.
        let learned = view(&[1, 2, 3], &[4], cands(), &[]);
        assert_eq!(plan(&learned), Decision::RemoveLearners([4].into()));
        // A dead stray is left alone.
        let mut dead = cands();
        dead[3].alive = false;
        let mut gone = view(&[1, 2, 3], &[], dead, &[]);
        gone.strays = [4].into();
        assert_eq!(plan(&gone), Decision::Nothing);
    }

    #[test]
    fn learners_are_only_those_meant_for_promotion() {
        let healthy = |learners: &[RaftId]| {
            let mut cands = vec![
                cand(1, "a", true, true, 100),
                cand(2, "b", true, true, 100),
                cand(3, "c", true, true, 100),
            ];
            cands.extend(
                learners
                    .iter()
                    .map(|id| cand(*id, "x", true, true, 90 + id)),
            );
            view(&[1, 2, 3], learners, cands, &[])
        };
        // Three healthy managers: no learner is needed; those there leave the raft group.
        assert_eq!(
            plan(&healthy(&[4, 5])),
            Decision::RemoveLearners([4, 5].into())
        );
        assert_eq!(plan(&healthy(&[])), Decision::Nothing);
        // A manager dead within its grace: one learner stands ready, the most caught up.
        let mut cands = vec![
            cand(1, "a", true, true, 100),
            cand(2, "b", true, true, 100),
            cand(3, "c", false, false, 50),
            cand(4, "d", true, true, 90),
            cand(5, "e", true, true, 95),
        ];
        assert_eq!(
            plan(&view(&[1, 2, 3], &[4, 5], cands.clone(), &[])),
            Decision::RemoveLearners([4].into())
        );
        cands.truncate(3);
        cands.push(cand(6, "f", true, true, 0));
        cands.push(cand(7, "g", true, true, 0));
        assert!(matches!(
            plan(&view(&[1, 2, 3], &[], cands, &[])),
            Decision::AddLearners(v) if v.len() == 1
        ));
        // A demoted manager (drained, now a learner) leaves too.
        let drained = vec![
            cand(1, "a", true, true, 100),
            cand(2, "b", true, false, 100),
            cand(3, "c", true, true, 100),
            cand(4, "d", true, true, 100),
        ];
        assert_eq!(
            plan(&view(&[1, 3, 4], &[2], drained, &[])),
            Decision::RemoveLearners([2].into())
        );
    }

    #[test]
    fn never_even() {
        // Two eligible nodes: target 1; a second healthy voter is trimmed.
        let cands = vec![cand(1, "a", true, true, 100), cand(2, "b", true, true, 100)];
        assert_eq!(
            plan(&view(&[1, 2], &[], cands, &[])),
            Decision::Change {
                voters: [1].into(),
                remove: [].into()
            }
        );
    }
}
