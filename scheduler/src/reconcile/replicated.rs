//! Replicated services: exactly `replicas` occupied slots. Surplus slots (the highest numbers)
//! are stopped, missing ones created in the lowest free numbers, and every other slot goes
//! through [`slot::reconcile`]: restarts, and replacement of tasks on drained nodes, paced by
//! the update parallelism (a paused node keeps its tasks).

use std::cell::Cell;

use crate::model::{Availability, Service, SlotKey, Task, TaskState};
use crate::reconcile::slot::{self, Current};
use crate::reconcile::{Pass, Slots};

/// Reconciles one replicated service; returns each occupied slot's outcome, in slot order.
pub fn reconcile<'s>(
    pass: &mut Pass<'_>,
    svc: &Service,
    slots: &Slots<'s>,
    replicas: u64,
) -> Vec<(SlotKey, Current<'s>)> {
    let occupied: Vec<&SlotKey> = slots
        .iter()
        .filter(|(_, ts)| ts.iter().any(|t| t.is_live()))
        .map(|(k, _)| k)
        .collect();
    let keep = occupied
        .len()
        .min(usize::try_from(replicas).unwrap_or(usize::MAX));
    for key in &occupied[keep..] {
        slots[*key].iter().for_each(|t| pass.stop(t));
    }
    let state = pass.state;
    // Tasks leave a drained node paced like a rolling update: at most `parallelism` slots in
    // transition at once (0 = no limit), counting those an update or an earlier move started.
    let moves = Cell::new(drain_budget(svc, slots, &occupied[..keep]));
    let must_move = |t: &Task| {
        let drained = t.node.as_ref().is_some_and(|n| {
            state
                .nodes
                .get(n)
                .is_some_and(|node| node.availability == Availability::Drain)
        });
        let allowed = drained && moves.get() > 0;
        if allowed {
            moves.set(moves.get() - 1);
        }
        allowed
    };
    let mut current = Vec::with_capacity(keep);
    for key in &occupied[..keep] {
        let outcome = slot::reconcile(pass, svc, key, &slots[*key], must_move);
        current.push(((*key).clone(), outcome));
    }
    create_missing(pass, svc, slots, replicas - keep as u64, &mut current);
    current
}

/// How many tasks may leave drained nodes in this pass: the update parallelism less the slots
/// whose newest task is on its way (placed or starting, not yet running).
fn drain_budget(svc: &Service, slots: &Slots<'_>, occupied: &[&SlotKey]) -> u64 {
    let parallelism = svc.spec.update.parallelism;
    if parallelism == 0 {
        return u64::MAX;
    }
    let in_transition = occupied
        .iter()
        .filter(|key| {
            slots[**key].iter().rfind(|t| t.is_live()).is_some_and(|t| {
                t.status.state != TaskState::Running && !t.status.state.is_terminal()
            })
        })
        .count() as u64;
    parallelism.saturating_sub(in_transition)
}

/// Creates `missing` tasks in the lowest slot numbers that have no live task.
fn create_missing<'s>(
    pass: &mut Pass<'_>,
    svc: &Service,
    slots: &Slots<'s>,
    missing: u64,
    current: &mut Vec<(SlotKey, Current<'s>)>,
) {
    let mut made = 0;
    let mut number = 0u64;
    while made < missing {
        number += 1;
        let key = SlotKey::Slot(number);
        let tasks = slots.get(&key).map_or(&[][..], Vec::as_slice);
        if tasks.iter().any(|t| t.is_live()) {
            continue;
        }
        pass.create(svc, &key, pass.now, slot::blocked(tasks, None, None));
        current.push((key, Current::Replaced));
        made += 1;
    }
}
