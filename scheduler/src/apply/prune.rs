//! Bounded task history: ended tasks that were told to stop are forgotten beyond the newest
//! `keep_per_slot` of each slot; every ended task of a removed service is forgotten.

use std::collections::HashMap;

use crate::command::Outcome;
use crate::model::{ClusterState, ServiceId, SlotKey, TaskId};

/// Forgets old ended tasks.
pub fn prune(state: &mut ClusterState, keep_per_slot: u64) -> Outcome {
    let mut per_slot: HashMap<(ServiceId, SlotKey), Vec<TaskId>> = HashMap::new();
    let ended = state
        .tasks
        .values()
        .filter(|t| t.status.state.is_terminal() && !t.is_live());
    for t in ended {
        per_slot
            .entry((t.service, t.slot_key()))
            .or_default()
            .push(t.id);
    }
    for ((service, _), mut ids) in per_slot {
        let keep = if state.services.contains_key(&service) {
            keep_per_slot
        } else {
            0
        };
        // Ids grow with creation: keep the newest.
        ids.sort_unstable();
        let drop = ids
            .len()
            .saturating_sub(usize::try_from(keep).unwrap_or(usize::MAX));
        for id in &ids[..drop] {
            state.tasks.remove(id);
        }
    }
    Outcome::Done
}
