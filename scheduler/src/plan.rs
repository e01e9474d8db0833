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

    /// Splits the plan into plans whose items add up to at most `budget` bytes each (by
    /// [`Plan::item_bytes`], an upper bound of their encoded size), to be applied in order.
    ///
    /// Each piece is a valid plan on its own: every item carries its own preconditions, and an
    /// item's checks hold whatever pieces came before it, since a plan names each task once and
    /// each slot once, and the capacity checks of a node count what earlier pieces placed there.
    /// The one exception is a service change, which can move the service's version: service
    /// changes go in the last piece. `wake_at` goes with the last piece too. A plan that fits is
    /// returned whole.
    pub fn into_pieces(self, budget: usize) -> Vec<Plan> {
        let mut pieces = Pieces::new(self.base_next_task_id, budget);
        for d in self.desired {
            pieces.room(DESIRED_BYTES).desired.push(d);
        }
        for p in self.placements {
            pieces
                .room(PLACEMENT_BYTES + p.node.as_str().len())
                .placements
                .push(p);
        }
        for m in self.messages {
            pieces
                .room(MESSAGE_BYTES + m.message.len())
                .messages
                .push(m);
        }
        for c in self.creates {
            pieces.room(Plan::create_bytes(&c)).creates.push(c);
        }
        pieces.current.services = self.services;
        pieces.current.wake_at = self.wake_at;
        pieces.done.push(pieces.current);
        pieces.done
    }

    /// An upper bound of the encoded size of one new task.
    pub fn create_bytes(c: &NewTask) -> usize {
        CREATE_BYTES + c.node.as_ref().map_or(0, |n| n.as_str().len()) + c.message.len()
    }

    /// An upper bound of the encoded size of the plan's items (service changes excluded).
    pub fn item_bytes(&self) -> usize {
        self.desired.len() * DESIRED_BYTES
            + self
                .placements
                .iter()
                .map(|p| PLACEMENT_BYTES + p.node.as_str().len())
                .sum::<usize>()
            + self
                .messages
                .iter()
                .map(|m| MESSAGE_BYTES + m.message.len())
                .sum::<usize>()
            + self.creates.iter().map(Plan::create_bytes).sum::<usize>()
    }
}

/// Encoded size bounds of one item of each kind without its strings (field names included, as
/// a self-describing encoding such as CBOR writes them; numbers at their widest).
const DESIRED_BYTES: usize = 96;
const PLACEMENT_BYTES: usize = 64;
const MESSAGE_BYTES: usize = 64;
const CREATE_BYTES: usize = 160;

/// The plans [`Plan::into_pieces`] fills, one after the other.
struct Pieces {
    base_next_task_id: u64,
    budget: usize,
    done: Vec<Plan>,
    current: Plan,
    used: usize,
}

impl Pieces {
    fn new(base_next_task_id: u64, budget: usize) -> Pieces {
        Pieces {
            base_next_task_id,
            budget,
            done: Vec::new(),
            current: Plan {
                base_next_task_id,
                ..Plan::default()
            },
            used: 0,
        }
    }

    /// The piece an item of `bytes` goes into: the current one, or a new one when it is full.
    fn room(&mut self, bytes: usize) -> &mut Plan {
        if self.used + bytes > self.budget && !self.current.is_empty() {
            let next = Plan {
                base_next_task_id: self.base_next_task_id,
                ..Plan::default()
            };
            self.done.push(std::mem::replace(&mut self.current, next));
            self.used = 0;
        }
        self.used += bytes;
        &mut self.current
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

#[cfg(test)]
mod tests {
    use crate::model::{ServiceMode, Timestamp};
    use crate::testkit::{cluster, create, pass};
    use crate::{Command, reconcile};

    /// Applying a plan's pieces one after the other gives the state the whole plan gives.
    #[test]
    fn pieces_applied_in_order_equal_the_whole_plan() {
        let mut state = cluster(20);
        let web = create(&mut state, crate::synthetic::spec("web", 300));
        pass(&mut state, 1);
        // Scale down one service, create another, so that the plan stops, creates and places.
        let mut spec = state.services[&web].spec.clone();
        spec.mode = ServiceMode::Replicated { replicas: 120 };
        let update = Command::UpdateService {
            id: web,
            expected_revision: state.services[&web].revision,
            spec,
            at: Timestamp(2),
        };
        state.apply(&update).expect("scaled");
        create(&mut state, crate::synthetic::spec("api", 500));
        let plan = reconcile(&state, Timestamp(3));
        assert!(
            plan.desired.len() >= 180 && plan.creates.len() == 500,
            "{plan:?}"
        );
        let mut whole = state.clone();
        whole
            .apply(&Command::ApplyPlan {
                plan: plan.clone(),
                at: Timestamp(3),
            })
            .expect("the whole plan applies");
        let budget = plan.item_bytes() / 7;
        let pieces = plan.clone().into_pieces(budget);
        assert!(pieces.len() >= 7, "{} pieces", pieces.len());
        assert!(pieces.iter().all(|p| p.item_bytes() <= budget));
        assert_eq!(pieces.last().map(|p| p.wake_at), Some(plan.wake_at));
        for piece in pieces {
            state
                .apply(&Command::ApplyPlan {
                    plan: piece,
                    at: Timestamp(3),
                })
                .expect("every piece applies after the ones before it");
        }
        assert_eq!(state, whole);
        assert_eq!(plan.clone().into_pieces(usize::MAX), vec![plan]);
    }
}
