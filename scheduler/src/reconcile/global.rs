//! Global services: one live task on every eligible node.
//!
//! A node gets a task when it is ready, active, has a runtime and meets the constraints. A
//! paused or not-yet-heard-from node keeps the task it has but gets no new one. A node that is
//! down, drained, gone, without runtime or no longer meeting the constraints has its tasks
//! stopped. Placement then checks the node's capacity; a task that does not fit stays Pending
//! on its node with the reason.

use crate::model::{Availability, Node, NodeState, Runtime, Service, SlotKey};
use crate::placement::filters::constraint_holds;
use crate::reconcile::slot::{self, Current};
use crate::reconcile::{Pass, Slots};

/// What a global service does on one node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    /// Run a task here.
    Run,
    /// Keep a task that is here, start none.
    Keep,
    /// No task here.
    Stop,
}

fn verdict(node: Option<&Node>, svc: &Service) -> Verdict {
    let Some(node) = node else {
        return Verdict::Stop;
    };
    let gone = node.state == NodeState::Down
        || node.availability == Availability::Drain
        || node.runtime == Runtime::None
        || !svc
            .spec
            .constraints
            .iter()
            .all(|c| constraint_holds(c, node));
    if gone {
        Verdict::Stop
    } else if node.state == NodeState::Ready && node.availability == Availability::Active {
        Verdict::Run
    } else {
        Verdict::Keep
    }
}

/// Reconciles one global service; returns each occupied slot's outcome, in node order.
pub fn reconcile<'s>(
    pass: &mut Pass<'_>,
    svc: &Service,
    slots: &Slots<'s>,
) -> Vec<(SlotKey, Current<'s>)> {
    let state = pass.state;
    let mut current = Vec::new();
    // Slots of nodes that no longer exist.
    for (key, tasks) in slots {
        let known = matches!(key, SlotKey::Node(id) if state.nodes.contains_key(id));
        if !known {
            tasks.iter().for_each(|t| pass.stop(t));
        }
    }
    for node in state.nodes.values() {
        let key = SlotKey::Node(node.id.clone());
        let tasks = slots.get(&key).map_or(&[][..], Vec::as_slice);
        match verdict(Some(node), svc) {
            Verdict::Stop => tasks.iter().for_each(|t| pass.stop(t)),
            v => match slot::reconcile(pass, svc, &key, tasks, |_| false) {
                Current::Free if v == Verdict::Run => {
                    pass.create(svc, &key, pass.now, slot::blocked(tasks, None, None));
                    current.push((key, Current::Replaced));
                }
                Current::Free => {}
                outcome => current.push((key, outcome)),
            },
        }
    }
    current
}
