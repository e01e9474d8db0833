//! A [`Plan`]: what one reconciliation and placement pass decided, applied through raft as one
//! [`Command::ApplyPlan`](crate::Command::ApplyPlan).
//!
//! Every item carries the preconditions it was computed under (the service version, the state it
//! saw a task in, the node it chose). The state machine checks them all before changing anything
//! and rejects the whole plan as stale if one fails; the leader then simply recomputes.

use serde::{Deserialize, Serialize};

use crate::model::{DesiredState, NodeId, ServiceId, TaskId, TaskState, Timestamp, UpdateState};

/// The orchestrator's decisions for one pass.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Plan {
    /// `ClusterState::next_task_id` when the plan was computed. A create is stale if its slot
    /// gained a live task with an id at or above this since.
    pub base_next_task_id: u64,
    /// New tasks, placed or not.
    pub creates: Vec<NewTask>,
    /// Existing unassigned tasks now placed on a node.
    pub placements: Vec<Placement>,
    /// Desired-state changes of existing tasks (stops and starts).
    pub desired: Vec<DesiredChange>,
    /// New explanations for existing tasks that still cannot be placed.
    pub messages: Vec<PendingMessage>,
    /// Changes to services' update progress (complete, pause, roll back).
    pub services: Vec<ServiceChange>,
    /// The earliest time a later pass has something to do without any change in the state
    /// (a restart delay, an update delay or monitor period ending). Not part of [`Plan::is_empty`].
    pub wake_at: Option<Timestamp>,
}

impl Plan {
    /// Whether the plan changes nothing.
    pub fn is_empty(&self) -> bool {
        self.creates.is_empty()
            && self.placements.is_empty()
            && self.desired.is_empty()
            && self.messages.is_empty()
            && self.services.is_empty()
    }

    /// How many tasks the plan puts on a node (new and existing).
    pub fn placed_count(&self) -> usize {
        self.placements.len() + self.creates.iter().filter(|c| c.assigned).count()
    }

    /// Moves `wake_at` earlier to `at` if `at` is earlier.
    pub fn wake_no_later_than(&mut self, at: Timestamp) {
        self.wake_at = Some(self.wake_at.map_or(at, |w| w.min(at)));
    }
}

/// A task to create.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewTask {
    /// Its service.
    pub service: ServiceId,
    /// The service version it runs; the plan is stale if the service moved on.
    pub service_version: u64,
    /// Its slot (replicated services).
    pub slot: Option<u64>,
    /// The node: where it was placed (if `assigned`), or the node a global task is bound to.
    pub node: Option<NodeId>,
    /// Placed on `node` (observed state Assigned); otherwise it is created Pending.
    pub assigned: bool,
    /// Running, or Ready when it must wait (restart delay, stop-first predecessor still running).
    pub desired: DesiredState,
    /// Earliest start.
    pub not_before: Timestamp,
    /// Why it is not placed (empty when assigned).
    pub message: String,
}

/// An existing unassigned task placed on a node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Placement {
    /// The task.
    pub task: TaskId,
    /// The state the planner saw it in (New or Pending).
    pub seen: TaskState,
    /// Where it goes.
    pub node: NodeId,
}

/// A change of an existing task's desired state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DesiredChange {
    /// The task.
    pub task: TaskId,
    /// The observed state the planner saw.
    pub seen: TaskState,
    /// The desired state the planner saw.
    pub seen_desired: DesiredState,
    /// The new desired state.
    pub desired: DesiredState,
}

/// A new explanation for an unplaced task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingMessage {
    /// The task.
    pub task: TaskId,
    /// The observed state the planner saw (New or Pending).
    pub seen: TaskState,
    /// Why it cannot be placed.
    pub message: String,
}

/// A change to a service's update progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceChange {
    /// The service.
    pub service: ServiceId,
    /// The version the planner saw.
    pub service_version: u64,
    /// What to do.
    pub action: ServiceAction,
}

/// What happens to a service's update.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ServiceAction {
    /// Record a new update state (completed, paused, rolled back) with a message.
    SetUpdateState(UpdateState, String),
    /// Roll back to the previous spec (the update's failure action).
    Rollback(String),
}
