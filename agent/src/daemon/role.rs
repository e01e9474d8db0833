//! This agent's role in its cluster (`leader`, `manager`, `worker`) and its cluster id, as
//! `shoal_agent_info` shows them. Both change while the agent runs: the cluster id once it forms
//! or joins a cluster, the role when autopilot promotes or demotes it and when the leadership
//! moves. [`follow`] keeps the info current.

use std::time::Duration;

use shoal_consensus::Quorum;
use shoal_metrics::AgentInfoHandle;
use shoal_metrics::registry::{ROLE_LEADER, ROLE_MANAGER, ROLE_WORKER};

/// How often the role is read again without any signal (raft membership changes are not always
/// visible as an applied entry).
const RECHECK: Duration = Duration::from_secs(1);

/// The role and cluster id this agent has now.
pub fn current(quorum: &Quorum) -> (&'static str, String) {
    let status = quorum.status();
    let me = quorum.peer_id();
    let role = if status.leader == Some(me) {
        ROLE_LEADER
    } else if status.voters.contains(&me) {
        ROLE_MANAGER
    } else {
        ROLE_WORKER
    };
    let cluster_id = quorum.cluster_id().unwrap_or_default();
    (role, cluster_id)
}

/// Updates `info` whenever the leader, the applied state or the membership changes. Runs until
/// the quorum's watches close.
pub async fn follow(quorum: Quorum, info: AgentInfoHandle) {
    let mut leader = quorum.leader();
    let mut applied = quorum.watch();
    loop {
        let (role, cluster_id) = current(&quorum);
        if info.set(role, &cluster_id) {
            tracing::info!(role, cluster = %cluster_id, "this agent's role in the cluster");
        }
        tokio::select! {
            changed = leader.changed() => if changed.is_err() { return },
            changed = applied.changed() => if changed.is_err() { return },
            _ = tokio::time::sleep(RECHECK) => {}
        }
    }
}
