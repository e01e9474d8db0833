//! Nodes: joining and refreshing what they report, operator changes, liveness and removal.
//!
//! When a node goes down (or is removed), its unfinished tasks become Orphaned: they are lost,
//! and reconciliation replaces them elsewhere. If the node comes back, its tasks' desired state
//! is already Shutdown (set when they were replaced), so the worker stops them.

use crate::command::{ApplyError, Outcome};
use crate::model::{
    Availability, ClusterState, Node, NodeId, NodeRole, NodeState, TaskState, Timestamp,
};

/// The most labels a node may carry.
pub const MAX_NODE_LABELS: usize = 1_000;

/// Adds a node, or refreshes what an existing node reports about itself while keeping the
/// operator's fields (role, availability, labels) and the observed state.
pub fn upsert(state: &mut ClusterState, node: &Node) -> Result<Outcome, ApplyError> {
    if node.id.as_str().is_empty() {
        return Err(ApplyError::Refused("a node needs an id".into()));
    }
    if node.labels.len() > MAX_NODE_LABELS {
        return Err(ApplyError::Refused(format!(
            "more than {MAX_NODE_LABELS} labels"
        )));
    }
    match state.nodes.get_mut(&node.id) {
        Some(existing) => {
            existing.hostname.clone_from(&node.hostname);
            existing.addresses.clone_from(&node.addresses);
            existing.platform.clone_from(&node.platform);
            existing.total = node.total;
            existing.reserved = node.reserved;
            existing.runtime = node.runtime;
            existing.version.clone_from(&node.version);
        }
        None => {
            state.nodes.insert(node.id.clone(), node.clone());
        }
    }
    Ok(Outcome::Done)
}

/// Changes the operator's fields of a node.
pub fn update(
    state: &mut ClusterState,
    id: &NodeId,
    availability: Option<Availability>,
    role: Option<NodeRole>,
    labels_set: &[(String, String)],
    labels_remove: &[String],
) -> Result<Outcome, ApplyError> {
    let node = state
        .nodes
        .get(id)
        .ok_or_else(|| ApplyError::NoSuchNode(id.clone()))?;
    if labels_set.iter().any(|(k, _)| k.is_empty()) {
        return Err(ApplyError::Refused("a label needs a name".into()));
    }
    if node.labels.len() + labels_set.len() > MAX_NODE_LABELS {
        return Err(ApplyError::Refused(format!(
            "more than {MAX_NODE_LABELS} labels"
        )));
    }
    let node = state
        .nodes
        .get_mut(id)
        .ok_or_else(|| ApplyError::NoSuchNode(id.clone()))?;
    if let Some(a) = availability {
        node.availability = a;
    }
    if let Some(r) = role {
        node.role = r;
    }
    for (k, v) in labels_set {
        node.labels.insert(k.clone(), v.clone());
    }
    for k in labels_remove {
        node.labels.remove(k);
    }
    Ok(Outcome::NodeUpdated(id.clone()))
}

/// The most nodes one liveness write may change.
pub const MAX_NODE_STATE_CHANGES: usize = 10_000;

/// Records the liveness of several nodes; a node going down loses its unfinished tasks. A node
/// that is gone is skipped (it may have been removed while the write was on its way); a batch
/// that names no existing node is refused.
pub fn set_states(
    state: &mut ClusterState,
    changes: &[(NodeId, NodeState)],
    at: Timestamp,
) -> Result<Outcome, ApplyError> {
    if changes.len() > MAX_NODE_STATE_CHANGES {
        return Err(ApplyError::Refused(format!(
            "more than {MAX_NODE_STATE_CHANGES} node states in one write"
        )));
    }
    if let Some((id, _)) = changes.first()
        && changes.iter().all(|(id, _)| !state.nodes.contains_key(id))
    {
        return Err(ApplyError::NoSuchNode(id.clone()));
    }
    let mut down = Vec::new();
    for (id, new_state) in changes {
        let Some(node) = state.nodes.get_mut(id) else {
            continue;
        };
        if *new_state == NodeState::Down && node.state != NodeState::Down {
            down.push(id.clone());
        }
        node.state = *new_state;
    }
    for id in &down {
        orphan_tasks(state, id, at, "node down");
    }
    Ok(Outcome::Done)
}

/// Removes a node (only a down node unless forced); its unfinished tasks are lost.
pub fn remove(
    state: &mut ClusterState,
    id: &NodeId,
    force: bool,
    at: Timestamp,
) -> Result<Outcome, ApplyError> {
    let node = state
        .nodes
        .get(id)
        .ok_or_else(|| ApplyError::NoSuchNode(id.clone()))?;
    if !force && node.state != NodeState::Down {
        return Err(ApplyError::Refused(format!(
            "node {id} is not down; drain it and stop it first, or force the removal"
        )));
    }
    state.nodes.remove(id);
    orphan_tasks(state, id, at, "node removed");
    Ok(Outcome::NodeRemoved(id.clone()))
}

/// Marks every unfinished task on node `id` Orphaned.
fn orphan_tasks(state: &mut ClusterState, id: &NodeId, at: Timestamp, why: &str) {
    let on_node = state
        .tasks
        .values_mut()
        .filter(|t| t.node.as_ref() == Some(id));
    for task in on_node.filter(|t| !t.status.state.is_terminal()) {
        task.status.state = TaskState::Orphaned;
        task.status.message = why.to_string();
        task.status.timestamp = at;
    }
}
