//! Rolling updates and rollbacks. A service whose update state is `Updating` (or `RollingBack`)
//! has its outdated slots (whose task runs an older version) replaced through a sliding window
//! (see [`window`]):
//!
//! - up to `parallelism` slots (0 = all) are in flight at once, lowest slots first: as soon as
//!   one new task runs (and is healthy, if it has a health check), the next outdated slot is
//!   replaced, after `delay` if one is set;
//! - `stop-first` stops the old task and creates the new one waiting (desired Ready) until the
//!   old one has stopped; `start-first` starts the new one at once and the slot stops the old one
//!   when the new one runs;
//! - failures (new tasks Failed or Rejected) above `max_failure_ratio` of the slots trigger the
//!   failure action: pause, continue, or roll back to the previous spec (using the rollback
//!   config); a failing rollback pauses;
//! - the update completes when no slot is outdated and every new task has run for `monitor`.
//!
//! A rollback decided here is one plan; its first batch comes in the next pass.

use crate::model::{Service, SlotKey, Task, TaskState, Timestamp, UpdateOrder, UpdateState};
use crate::plan::{ServiceAction, ServiceChange};
use crate::reconcile::slot::{self, Current};
use crate::reconcile::{Pass, Slots, window};

/// Moves the service's update along, given each occupied slot's outcome of this pass.
pub fn progress(
    pass: &mut Pass<'_>,
    svc: &Service,
    slots: &Slots<'_>,
    current: &[(SlotKey, Current<'_>)],
) {
    let Some(status) = svc.update_status.as_ref().filter(|_| svc.is_updating()) else {
        return;
    };
    let rolling_back = status.state == UpdateState::RollingBack;
    let config = if rolling_back {
        svc.spec.rollback
    } else {
        svc.spec.update
    };
    let fresh: Vec<&Task> = slots
        .values()
        .flatten()
        .copied()
        .filter(|t| t.spec_version == svc.version && t.created_at >= status.started_at)
        .collect();
    let failed = fresh
        .iter()
        .filter(|t| matches!(t.status.state, TaskState::Failed | TaskState::Rejected))
        .count() as u64;
    let total = current.len().max(1) as u64;
    if failed > 0 && failed * 1000 > u64::from(config.max_failure_permille) * total {
        fail(pass, svc, rolling_back, config.failure_action, failed);
        if config.failure_action != crate::model::FailureAction::Continue {
            return;
        }
    }
    let outdated: Vec<(&SlotKey, &Task)> = current
        .iter()
        .filter_map(|(k, c)| match c {
            Current::Existing(t) if !svc.is_current(t.spec_version) => Some((k, *t)),
            _ => None,
        })
        .collect();
    // A slot is in flight from the pass that replaces it until its new task runs (healthy).
    let in_flight = current
        .iter()
        .filter(|(_, c)| matches!(c, Current::Replaced))
        .count()
        + fresh
            .iter()
            .filter(|t| t.is_live() && t.status.state < TaskState::Running)
            .count();
    let started: Vec<Timestamp> = fresh
        .iter()
        .filter(|t| t.is_live() && t.status.state == TaskState::Running)
        .map(|t| t.status.timestamp)
        .collect();
    if outdated.is_empty() {
        if in_flight == 0 {
            let last_start = started.iter().max().copied();
            let done_at = last_start.map_or(pass.now, |s| s.plus_millis(config.monitor_ms));
            finish_at(pass, svc, rolling_back, done_at);
        }
        return;
    }
    let admission = window::admit(
        config.parallelism,
        config.delay_ms,
        in_flight,
        &started,
        pass.now,
    );
    if let Some(at) = admission.wake_at {
        pass.plan.wake_no_later_than(at);
    }
    for (key, old) in outdated.into_iter().take(admission.start) {
        let tasks = slots.get(key).map_or(&[][..], Vec::as_slice);
        // Start-first keeps a running task until its successor runs; a task that does not run
        // (yet, or any more) serves nothing and is replaced stop-first.
        let keep_old =
            config.order == UpdateOrder::StartFirst && old.status.state == TaskState::Running;
        if keep_old {
            pass.create(svc, key, pass.now, false);
        } else {
            slot::replace(pass, svc, key, tasks, old, pass.now);
        }
    }
}

/// Records the end of the update at `at` (now or later, after the monitor period).
fn finish_at(pass: &mut Pass<'_>, svc: &Service, rolling_back: bool, at: Timestamp) {
    if at > pass.now {
        pass.plan.wake_no_later_than(at);
        return;
    }
    let (state, message) = if rolling_back {
        (UpdateState::RolledBack, "rollback completed")
    } else {
        (UpdateState::Completed, "update completed")
    };
    change(
        pass,
        svc,
        ServiceAction::SetUpdateState(state, message.to_string()),
    );
}

/// Applies the failure action.
fn fail(
    pass: &mut Pass<'_>,
    svc: &Service,
    rolling_back: bool,
    action: crate::model::FailureAction,
    failed: u64,
) {
    use crate::model::FailureAction;
    let what = if rolling_back { "rollback" } else { "update" };
    let message = format!("{what} paused: {failed} new task(s) failed");
    match action {
        FailureAction::Continue => {}
        FailureAction::Rollback if !rolling_back && svc.previous_spec.is_some() => {
            let message = format!("update rolled back: {failed} new task(s) failed");
            change(pass, svc, ServiceAction::Rollback(message));
        }
        FailureAction::Pause | FailureAction::Rollback => {
            change(
                pass,
                svc,
                ServiceAction::SetUpdateState(UpdateState::Paused, message),
            );
        }
    }
}

fn change(pass: &mut Pass<'_>, svc: &Service, action: ServiceAction) {
    pass.plan.services.push(ServiceChange {
        service: svc.id,
        service_version: svc.version,
        action,
    });
}
