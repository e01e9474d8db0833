//! `GET /v1/cluster`: the cluster at a glance, as `shoal cluster info` prints it — its id, the
//! leader and the managers, raft's term and indexes, the autopilot's target, how many nodes,
//! services and tasks there are, the settings, the token's public fingerprint (never the
//! token), and autolock (the unlock key's fingerprint, and whether the answering manager is
//! locked). Served by a manager (a worker forwards the call), from a linearizable read unless
//! `?stale=true`.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Query, State};
use serde::{Deserialize, Serialize};
use shoal_scheduler::{ClusterSettings, ClusterState, NodeState, TaskState};

use super::server::{ApiError, ControlState, ReadOptions, cluster};

/// The route.
pub const CLUSTER_INFO: &str = "/v1/cluster";

/// The answer of [`CLUSTER_INFO`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClusterInfo {
    /// The cluster id.
    pub cluster_id: Option<String>,
    /// The manager that answered.
    pub served_by: String,
    /// The raft leader as the answering manager knows it.
    pub leader: Option<String>,
    /// The raft term.
    pub term: u64,
    /// The last log index the answering manager applied.
    pub applied_index: u64,
    /// The last log index in its log.
    pub last_log_index: u64,
    /// The voters (managers), leader first.
    pub managers: Vec<ManagerInfo>,
    /// Nodes being caught up to become managers (raft learners).
    pub learners: Vec<String>,
    /// How many managers the autopilot keeps (fewer while too few nodes are eligible).
    pub manager_target: usize,
    /// The nodes by state.
    pub nodes: NodeCounts,
    /// How many services there are.
    pub services: usize,
    /// How many tasks run, and how many tasks the state holds (history included).
    pub tasks_running: usize,
    /// Every task the state holds.
    pub tasks_total: usize,
    /// The cluster-wide settings.
    pub settings: ClusterSettings,
    /// The transport: `open` (anyone on the LAN may join) or `closed` (a token is needed).
    pub mode: String,
    /// The cluster secret's public fingerprint (closed mode): an agent whose token has another
    /// fingerprint belongs to another cluster.
    pub token_fingerprint: Option<String>,
    /// The current unlock key's fingerprint while autolock is on (never the key).
    #[serde(default)]
    pub unlock_key_id: Option<String>,
    /// How the answering manager holds the data key: `locked` while it waits for
    /// `shoal cluster unlock`.
    #[serde(default)]
    pub data_key: super::api::DataKeyState,
}

/// One manager.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ManagerInfo {
    /// Its node id.
    pub id: String,
    /// Its hostname, if the state knows the node.
    pub hostname: String,
    /// `ready`, `down` or `unknown`.
    pub state: String,
    /// Whether it leads.
    pub leader: bool,
}

/// Nodes counted by state.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct NodeCounts {
    /// Every node.
    pub total: usize,
    /// Heard from recently.
    pub ready: usize,
    /// Declared gone.
    pub down: usize,
    /// Neither yet.
    pub unknown: usize,
}

/// Answers [`CLUSTER_INFO`].
pub async fn cluster_info(
    State(state): State<Arc<ControlState>>,
    Query(read): Query<ReadOptions>,
) -> Result<Json<ClusterInfo>, ApiError> {
    let snapshot = cluster(&state, read).await?;
    Ok(Json(describe(&state, &snapshot)))
}

fn describe(control: &ControlState, snapshot: &ClusterState) -> ClusterInfo {
    let status = control.quorum.status();
    let leader = status.leader.map(|peer| peer.to_string());
    let mut managers: Vec<ManagerInfo> = status
        .voters
        .iter()
        .map(|peer| manager(snapshot, &peer.to_string(), leader.as_deref()))
        .collect();
    managers.sort_by_key(|m| (!m.leader, m.hostname.clone(), m.id.clone()));
    let token = control.quorum.token_summary();
    ClusterInfo {
        cluster_id: control.quorum.cluster_id(),
        served_by: control.node_id.clone(),
        leader,
        term: status.term,
        applied_index: status.applied,
        last_log_index: status.last_log,
        managers,
        learners: status.learners.iter().map(ToString::to_string).collect(),
        manager_target: control.quorum.manager_target(),
        nodes: node_counts(snapshot),
        services: snapshot.services.len(),
        tasks_running: snapshot
            .tasks
            .values()
            .filter(|t| t.status.state == TaskState::Running)
            .count(),
        tasks_total: snapshot.tasks.len(),
        settings: snapshot.settings.clone(),
        mode: if token.is_some() { "closed" } else { "open" }.into(),
        token_fingerprint: token.map(|(_, fingerprint)| fingerprint),
        unlock_key_id: snapshot.autolock.unlock_key_id().map(str::to_owned),
        data_key: super::api::DataKeyState::of(&control.data_key.status()),
    }
}

fn manager(snapshot: &ClusterState, id: &str, leader: Option<&str>) -> ManagerInfo {
    let node = snapshot
        .nodes
        .values()
        .find(|node| node.id.to_string() == id);
    ManagerInfo {
        id: id.to_string(),
        hostname: node.map(|n| n.hostname.clone()).unwrap_or_default(),
        state: node
            .map(|n| node_state_name(n.state))
            .unwrap_or("unknown")
            .into(),
        leader: leader == Some(id),
    }
}

fn node_state_name(state: NodeState) -> &'static str {
    match state {
        NodeState::Ready => "ready",
        NodeState::Down => "down",
        NodeState::Unknown => "unknown",
    }
}

fn node_counts(snapshot: &ClusterState) -> NodeCounts {
    snapshot
        .nodes
        .values()
        .fold(NodeCounts::default(), |mut counts, node| {
            counts.total += 1;
            match node.state {
                NodeState::Ready => counts.ready += 1,
                NodeState::Down => counts.down += 1,
                NodeState::Unknown => counts.unknown += 1,
            }
            counts
        })
}
