//! Replicated services: exactly `replicas` occupied slots. Surplus slots (the highest numbers)
//! are stopped, missing ones created in the lowest free numbers, and every other slot goes
//! through [`slot::reconcile`]: restarts, and replacement of tasks on drained nodes (a paused
//! node keeps its tasks).

use crate::model::{Availability, Service, SlotKey, Task};
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
    let on_drained_node = |t: &Task| {
        t.node.as_ref().is_some_and(|n| {
            state
                .nodes
                .get(n)
                .is_some_and(|node| node.availability == Availability::Drain)
        })
    };
    let mut current = Vec::with_capacity(keep);
    for key in &occupied[..keep] {
        let outcome = slot::reconcile(pass, svc, key, &slots[*key], on_drained_node);
        current.push(((*key).clone(), outcome));
    }
    create_missing(pass, svc, slots, replicas - keep as u64, &mut current);
    current
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
