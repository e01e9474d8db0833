//! Reconciliation: desired state versus actual state, as a [`Plan`]. It decides *what* should
//! run (new tasks, stops, starts, update progress); [`placement`](crate::placement) then decides
//! *where*. Pure: the state and the time are arguments.
//!
//! Every decision is a function of the state alone, and each one is recorded in the state when
//! its plan is applied, so reconciling the result of a plan again proposes nothing.
//!
//! # Layout
//! - [`slot`]: one slot's tasks: restarts, start-first hand-over, delayed starts, replacements.
//! - [`restart`]: the restart policy.
//! - [`replicated`] and [`global`]: the two service modes.
//! - [`update`]: rolling updates and rollbacks.
//! - [`window`]: how many replacements of an update may be in flight.

pub mod global;
pub mod replicated;
pub mod restart;
pub mod slot;
pub mod update;
pub mod window;

use std::collections::BTreeMap;

use crate::model::{
    ClusterState, DesiredState, NodeId, Service, ServiceId, ServiceMode, SlotKey, Task, Timestamp,
};
use crate::plan::{DesiredChange, NewTask, Plan};

/// One full pass: reconciliation, then placement.
pub fn reconcile(state: &ClusterState, now: Timestamp) -> Plan {
    let mut plan = decide(state, now);
    crate::placement::place(state, &mut plan);
    plan
}

/// Reconciliation alone: the plan's new tasks are not placed yet.
pub fn decide(state: &ClusterState, now: Timestamp) -> Plan {
    let mut pass = Pass {
        state,
        now,
        plan: Plan {
            base_next_task_id: state.next_task_id,
            ..Plan::default()
        },
    };
    let index = index_tasks(state);
    for (service_id, slots) in &index {
        match state.services.get(service_id) {
            Some(svc) => reconcile_service(&mut pass, svc, slots),
            None => slots.values().flatten().for_each(|t| pass.stop(t)),
        }
    }
    for svc in state
        .services
        .values()
        .filter(|s| !index.contains_key(&s.id))
    {
        reconcile_service(&mut pass, svc, &BTreeMap::new());
    }
    pass.plan
}

/// A service's tasks by slot, each slot's tasks in id (creation) order.
pub type Slots<'s> = BTreeMap<SlotKey, Vec<&'s Task>>;

fn index_tasks(state: &ClusterState) -> BTreeMap<ServiceId, Slots<'_>> {
    let mut index: BTreeMap<ServiceId, Slots<'_>> = BTreeMap::new();
    for task in state.tasks.values() {
        let slots = index.entry(task.service).or_default();
        slots.entry(task.slot_key()).or_default().push(task);
    }
    index
}

fn reconcile_service(pass: &mut Pass<'_>, svc: &Service, slots: &Slots<'_>) {
    let current = match svc.spec.mode {
        ServiceMode::Replicated { replicas } => replicated::reconcile(pass, svc, slots, replicas),
        ServiceMode::Global => global::reconcile(pass, svc, slots),
    };
    update::progress(pass, svc, slots, &current);
}

/// A reconciliation pass in progress: the state it reads and the plan it writes.
#[derive(Debug)]
pub struct Pass<'s> {
    /// The state being reconciled.
    pub state: &'s ClusterState,
    /// The time of the pass.
    pub now: Timestamp,
    /// What the pass decided so far.
    pub plan: Plan,
}

impl Pass<'_> {
    /// Tells a live task to shut down.
    pub fn stop(&mut self, task: &Task) {
        self.set_desired(task, DesiredState::Shutdown);
    }

    /// Changes a task's desired state (no-op if it already is).
    pub fn set_desired(&mut self, task: &Task, desired: DesiredState) {
        if task.desired != desired {
            self.plan.desired.push(DesiredChange {
                task: task.id,
                seen: task.status.state,
                seen_desired: task.desired,
                desired,
            });
        }
    }

    /// Creates a task of `svc`'s current version in `slot`, to start at `not_before`. It is
    /// created Ready (waiting) if it must wait for the time or for a stopping task in its slot
    /// (`blocked`), otherwise Running.
    pub fn create(&mut self, svc: &Service, slot: &SlotKey, not_before: Timestamp, blocked: bool) {
        let waits = blocked || not_before > self.now;
        if not_before > self.now {
            self.plan.wake_no_later_than(not_before);
        }
        let (slot, node): (Option<u64>, Option<NodeId>) = match slot {
            SlotKey::Slot(n) => (Some(*n), None),
            SlotKey::Node(id) => (None, Some(id.clone())),
        };
        self.plan.creates.push(NewTask {
            service: svc.id,
            service_version: svc.version,
            slot,
            node,
            assigned: false,
            desired: if waits {
                DesiredState::Ready
            } else {
                DesiredState::Running
            },
            not_before: not_before.max(self.now),
            message: String::new(),
        });
    }
}

#[cfg(test)]
mod tests;
