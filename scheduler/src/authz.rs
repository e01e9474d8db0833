//! Who may write what. The leader asks [`authorize`] about every write that reaches it from
//! another agent, with the sender's authenticated identity, before proposing it; a manager asks
//! it about every control call forwarded from another agent.
//!
//! Managers (raft members, and nodes admitted with a manager credential) may write anything.
//! A node admitted with a worker token speaks only for itself: it reports the status of its own
//! tasks and refreshes what it reports about itself (hostname, addresses, resources), and
//! nothing else — not its own or another node's labels, role, availability or state, not a node
//! removal, not a service.

use crate::command::{ApplyError, Command};
use crate::model::{ClusterState, Credential, NodeId};

/// Who sends a write, as the receiver authenticated it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin<'a> {
    /// A manager: a raft member, or a node admitted with a manager credential.
    Manager,
    /// A node admitted with a worker credential, speaking for itself.
    Worker(&'a NodeId),
}

impl<'a> Origin<'a> {
    /// The origin of a write from `node`, which is not a raft member: what its admission allows,
    /// or `None` when it is not a node of this cluster.
    pub fn of_node(state: &ClusterState, node: &'a NodeId) -> Option<Origin<'a>> {
        state.nodes.get(node).map(|n| match n.credential {
            Credential::Manager => Origin::Manager,
            Credential::Worker => Origin::Worker(node),
        })
    }
}

/// Whether `origin` may write `cmd`. The refusal says why and what to do instead.
pub fn authorize(
    state: &ClusterState,
    origin: Origin<'_>,
    cmd: &Command,
) -> Result<(), ApplyError> {
    let Origin::Worker(me) = origin else {
        return Ok(());
    };
    let refuse = |why: String| Err(ApplyError::Unauthorized(why));
    match cmd {
        Command::ReportTaskStatus { node, .. } if node == me => Ok(()),
        Command::ReportTaskStatus { node, .. } => refuse(format!(
            "node {me} joined with a worker token and may only report its own tasks, not those of {node}"
        )),
        Command::UpsertNode { node } if node.id != *me => refuse(format!(
            "node {me} joined with a worker token and may not register node {}",
            node.id
        )),
        Command::UpsertNode { .. } if !state.nodes.contains_key(me) => refuse(format!(
            "node {me} is not in the cluster any more; it must join again"
        )),
        Command::UpsertNode { node } if node.credential != Credential::Worker => refuse(format!(
            "node {me} joined with a worker token and cannot make itself a manager"
        )),
        Command::UpsertNode { .. } => Ok(()),
        other => refuse(format!(
            "{} is for managers; node {me} joined with a worker token (run it on a manager)",
            other.kind()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Availability, NodeState, Timestamp};

    fn worker_cluster() -> (ClusterState, NodeId, NodeId) {
        let mut state = crate::testkit::cluster(2);
        let ids: Vec<NodeId> = state.nodes.keys().cloned().collect();
        if let Some(node) = state.nodes.get_mut(&ids[0]) {
            node.credential = Credential::Worker;
        }
        (state, ids[0].clone(), ids[1].clone())
    }

    #[test]
    fn managers_may_write_anything() {
        let (state, worker, _) = worker_cluster();
        let remove = Command::RemoveNode {
            id: worker,
            force: true,
            at: Timestamp(1),
        };
        assert!(authorize(&state, Origin::Manager, &remove).is_ok());
    }

    #[test]
    fn a_worker_speaks_only_for_itself() {
        let (state, me, other) = worker_cluster();
        let origin = Origin::of_node(&state, &me).expect("a node");
        assert_eq!(origin, Origin::Worker(&me));
        let own = Command::ReportTaskStatus {
            node: me.clone(),
            reports: vec![],
        };
        assert!(authorize(&state, origin, &own).is_ok());
        let forged = Command::ReportTaskStatus {
            node: other.clone(),
            reports: vec![],
        };
        let mut refresh = state.nodes[&me].clone();
        assert!(
            authorize(
                &state,
                origin,
                &Command::UpsertNode {
                    node: refresh.clone()
                }
            )
            .is_ok()
        );
        refresh.credential = Credential::Manager;
        let escalate = Command::UpsertNode { node: refresh };
        let labels = Command::UpdateNode {
            id: me.clone(),
            availability: Some(Availability::Active),
            role: None,
            labels_set: vec![("zone".into(), "a".into())],
            labels_remove: vec![],
        };
        let down = Command::SetNodeStates {
            changes: vec![(other.clone(), NodeState::Down)],
            at: Timestamp(1),
        };
        let remove = Command::RemoveNode {
            id: other.clone(),
            force: true,
            at: Timestamp(1),
        };
        let create = Command::CreateService {
            spec: crate::synthetic::spec("web", 1),
            at: Timestamp(1),
        };
        let other_record = Command::UpsertNode {
            node: state.nodes[&other].clone(),
        };
        for cmd in [forged, escalate, labels, down, remove, create, other_record] {
            match authorize(&state, origin, &cmd) {
                Err(ApplyError::Unauthorized(why)) => assert!(why.contains("worker"), "{why}"),
                other => panic!("{} must be refused, got {other:?}", cmd.kind()),
            }
        }
    }

    #[test]
    fn strangers_are_no_origin() {
        let (state, _, _) = worker_cluster();
        assert_eq!(Origin::of_node(&state, &NodeId::new("stranger")), None);
    }
}
