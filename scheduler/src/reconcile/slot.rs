//! One slot (a replica number, or a node for a global service) and its tasks: restarts per the
//! restart policy, replacement of lost tasks, the start-first hand-over, and delayed starts.

use crate::model::{DesiredState, Service, SlotKey, Task, TaskState};
use crate::reconcile::Pass;
use crate::reconcile::restart::{self, Decision};

/// What a slot holds after this pass.
#[derive(Debug, Clone, Copy)]
pub enum Current<'s> {
    /// No live task: the slot is free.
    Free,
    /// This live task (the newest) stays.
    Existing(&'s Task),
    /// The pass created a new task of the current version for the slot.
    Replaced,
}

/// Reconciles one slot; `must_move` says whether a running task has to leave its node
/// (replicated tasks on a drained node).
pub fn reconcile<'s>(
    pass: &mut Pass<'_>,
    svc: &Service,
    key: &SlotKey,
    tasks: &[&'s Task],
    must_move: impl Fn(&Task) -> bool,
) -> Current<'s> {
    let live: Vec<&Task> = tasks.iter().copied().filter(|t| t.is_live()).collect();
    let Some((&newest, older)) = live.split_last() else {
        return Current::Free;
    };
    for old in older {
        // Start-first hand-over: the old task goes once its successor runs.
        if newest.status.state == TaskState::Running || old.status.state.is_terminal() {
            pass.stop(old);
        }
    }
    let state = newest.status.state;
    if state == TaskState::Orphaned || (!state.is_terminal() && must_move(newest)) {
        return replace(pass, svc, key, tasks, newest, pass.now);
    }
    if state.is_terminal() {
        return match restart::decide(&svc.spec.restart, newest, tasks, svc.version, pass.now) {
            Decision::At(at) => replace(pass, svc, key, tasks, newest, at),
            Decision::Never { retry_at } => {
                if let Some(at) = retry_at {
                    pass.plan.wake_no_later_than(at);
                }
                Current::Existing(newest)
            }
        };
    }
    if newest.desired == DesiredState::Ready {
        start_when_due(pass, newest, tasks);
    }
    Current::Existing(newest)
}

/// Stops `old` and creates its successor in the slot, to start at `at`.
pub fn replace<'s>(
    pass: &mut Pass<'_>,
    svc: &Service,
    key: &SlotKey,
    tasks: &[&Task],
    old: &Task,
    at: crate::model::Timestamp,
) -> Current<'s> {
    pass.stop(old);
    let blocked = blocked(tasks, Some(old), None);
    pass.create(svc, key, at, blocked);
    Current::Replaced
}

/// Whether a new task in this slot must wait: some other task there still holds its node's
/// resources and has been told to stop (or is being told now: `stopping`). A task kept for the
/// start-first hand-over does not block.
pub fn blocked(tasks: &[&Task], stopping: Option<&Task>, except: Option<&Task>) -> bool {
    tasks.iter().any(|t| {
        let told = t.desired == DesiredState::Shutdown || stopping.is_some_and(|s| s.id == t.id);
        told && t.holds_resources() && except.is_none_or(|e| e.id != t.id)
    })
}

/// Moves a waiting (desired Ready) task to Running once its time has come and nothing blocks it.
fn start_when_due(pass: &mut Pass<'_>, task: &Task, tasks: &[&Task]) {
    if task.not_before > pass.now {
        pass.plan.wake_no_later_than(task.not_before);
    } else if !blocked(tasks, None, Some(task)) {
        pass.set_desired(task, DesiredState::Running);
    }
}
