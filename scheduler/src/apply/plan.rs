//! Applying a [`Plan`]: every precondition is checked first and the plan is rejected whole as
//! [`ApplyError::Stale`] if one fails; then the changes are made.
//!
//! Preconditions: each item's service exists at the version the item was computed for; each
//! existing task is still in the observed (and desired) state the planner saw; a slot given a
//! new task has gained no live task since the plan's base; each chosen node still exists, is
//! ready and active with a runtime, meets the constraints and has room (resources, max replicas,
//! host ports), counting what the plan itself places there.

use std::collections::HashSet;

use crate::command::{ApplyError, Outcome};
use crate::model::{
    ClusterState, ServiceId, SlotKey, Task, TaskId, TaskState, TaskStatus, Timestamp, status_at,
};
use crate::placement::filters;
use crate::placement::usage::{NodeTable, Usage};
use crate::plan::{NewTask, Plan, ServiceAction};

fn stale(msg: String) -> ApplyError {
    ApplyError::Stale(msg)
}

/// Validates and applies `plan` at time `at`.
pub fn apply(state: &mut ClusterState, plan: &Plan, at: Timestamp) -> Result<Outcome, ApplyError> {
    validate(state, plan)?;
    Ok(mutate(state, plan, at))
}

fn validate(state: &ClusterState, plan: &Plan) -> Result<(), ApplyError> {
    if plan.base_next_task_id > state.next_task_id {
        return Err(stale(
            "plan computed on a state this replica has not reached".into(),
        ));
    }
    check_services(state, plan)?;
    check_tasks(state, plan)?;
    check_slots(state, plan)?;
    check_nodes(state, plan)
}

fn service_at(state: &ClusterState, id: ServiceId, version: u64) -> Result<(), ApplyError> {
    match state.services.get(&id) {
        Some(s) if s.version == version => Ok(()),
        Some(s) => Err(stale(format!(
            "service {id} is at version {}, plan saw {version}",
            s.version
        ))),
        None => Err(stale(format!("service {id} no longer exists"))),
    }
}

fn check_services(state: &ClusterState, plan: &Plan) -> Result<(), ApplyError> {
    for c in &plan.services {
        service_at(state, c.service, c.service_version)?;
        let rollback = matches!(c.action, ServiceAction::Rollback(_));
        if rollback
            && state
                .services
                .get(&c.service)
                .is_some_and(|s| s.previous_spec.is_none())
        {
            return Err(ApplyError::Refused(format!(
                "service {} has no previous spec",
                c.service
            )));
        }
    }
    let mut last = None;
    for c in &plan.creates {
        // Creates come grouped by service: check each run once.
        if last != Some((c.service, c.service_version)) {
            service_at(state, c.service, c.service_version)?;
            last = Some((c.service, c.service_version));
        }
    }
    Ok(())
}

fn task_in(state: &ClusterState, id: TaskId, seen: TaskState) -> Result<&Task, ApplyError> {
    match state.tasks.get(&id) {
        Some(t) if t.status.state == seen => Ok(t),
        Some(t) => Err(stale(format!(
            "task {id} is {:?}, plan saw {seen:?}",
            t.status.state
        ))),
        None => Err(stale(format!("task {id} no longer exists"))),
    }
}

fn check_tasks(state: &ClusterState, plan: &Plan) -> Result<(), ApplyError> {
    for d in &plan.desired {
        let t = task_in(state, d.task, d.seen)?;
        if t.desired != d.seen_desired {
            return Err(stale(format!("task {} desired state changed", d.task)));
        }
    }
    for p in &plan.placements {
        let t = task_in(state, p.task, p.seen)?;
        let bound_elsewhere = t.node.as_ref().is_some_and(|n| *n != p.node);
        if !t.is_live() || !t.is_unassigned() || bound_elsewhere {
            return Err(stale(format!(
                "task {} can no longer be placed on {}",
                p.task, p.node
            )));
        }
    }
    for m in &plan.messages {
        task_in(state, m.task, m.seen)?;
    }
    Ok(())
}

/// A slot given a new task must not have gained a live task since the plan's base.
fn check_slots(state: &ClusterState, plan: &Plan) -> Result<(), ApplyError> {
    let newer: HashSet<(ServiceId, SlotKey)> = state
        .tasks
        .range(TaskId(plan.base_next_task_id)..)
        .map(|(_, t)| t)
        .filter(|t| t.is_live())
        .map(|t| (t.service, t.slot_key()))
        .collect();
    if newer.is_empty() {
        return Ok(());
    }
    match plan
        .creates
        .iter()
        .find(|c| newer.contains(&(c.service, create_slot(c))))
    {
        Some(c) => Err(stale(format!(
            "slot {:?} of service {} was filled meanwhile",
            create_slot(c),
            c.service
        ))),
        None => Ok(()),
    }
}

fn create_slot(c: &NewTask) -> SlotKey {
    match (&c.slot, &c.node) {
        (Some(s), _) => SlotKey::Slot(*s),
        (None, Some(n)) => SlotKey::Node(n.clone()),
        (None, None) => SlotKey::Slot(0),
    }
}

/// Every chosen node can still take what the plan puts on it.
fn check_nodes(state: &ClusterState, plan: &Plan) -> Result<(), ApplyError> {
    if plan.placements.is_empty() && plan.creates.iter().all(|c| c.node.is_none()) {
        return Ok(());
    }
    let table = NodeTable::new(state);
    let mut usage = Usage::from_state(state, &table);
    let existing = plan.placements.iter().filter_map(|p| {
        let t = state.tasks.get(&p.task)?;
        Some((t.service, t.spec_version, &p.node, true))
    });
    let created = plan.creates.iter().filter_map(|c| {
        let node = c.node.as_ref()?;
        Some((c.service, c.service_version, node, c.assigned))
    });
    for (service, version, node, assigned) in existing.chain(created) {
        let idx = table
            .index_of(node)
            .ok_or_else(|| stale(format!("node {node} no longer exists")))?;
        if !assigned {
            continue;
        }
        let svc = state
            .services
            .get(&service)
            .ok_or_else(|| stale(format!("service {service} no longer exists")))?;
        let spec = svc.spec_for(version);
        if let Err(why) = filters::check(idx, table.node(idx), service, spec, &usage) {
            return Err(stale(format!(
                "node {node} can no longer take a task of {service}: {why:?}"
            )));
        }
        usage.add(idx, service, spec);
    }
    Ok(())
}

fn mutate(state: &mut ClusterState, plan: &Plan, at: Timestamp) -> Outcome {
    for d in &plan.desired {
        if let Some(t) = state.tasks.get_mut(&d.task) {
            t.desired = d.desired;
        }
    }
    for p in &plan.placements {
        if let Some(t) = state.tasks.get_mut(&p.task) {
            t.node = Some(p.node.clone());
            t.status = status_at(TaskState::Assigned, at);
        }
    }
    for m in &plan.messages {
        if let Some(t) = state.tasks.get_mut(&m.task) {
            t.status = TaskStatus {
                message: m.message.clone(),
                ..status_at(TaskState::Pending, at)
            };
        }
    }
    let created = create_all(state, &plan.creates, at);
    for c in &plan.services {
        change_service(state, c.service, &c.action, at);
    }
    Outcome::PlanApplied { created }
}

/// Creates the plan's new tasks, in plan order, with consecutive ids after every existing one.
/// A batch large against the tasks there are is built on its own and appended whole (linear,
/// no search per task); a small one is inserted task by task (no pass over the existing ones).
fn create_all(state: &mut ClusterState, creates: &[NewTask], at: Timestamp) -> Vec<TaskId> {
    let first = state.next_task_id;
    let tasks: Vec<Task> = creates
        .iter()
        .enumerate()
        .map(|(i, c)| new_task(TaskId(first + i as u64), c, at))
        .collect();
    state.next_task_id += tasks.len() as u64;
    let ids = tasks.iter().map(|t| t.id).collect();
    if tasks.len() >= state.tasks.len() / 4 {
        // Ids ascend and exceed every existing key: the map is built from sorted input.
        let mut batch: std::collections::BTreeMap<TaskId, Task> =
            tasks.into_iter().map(|t| (t.id, t)).collect();
        state.tasks.append(&mut batch);
    } else {
        state.tasks.extend(tasks.into_iter().map(|t| (t.id, t)));
    }
    ids
}

fn new_task(id: TaskId, c: &NewTask, at: Timestamp) -> Task {
    let observed = if c.assigned {
        TaskState::Assigned
    } else {
        TaskState::Pending
    };
    Task {
        id,
        service: c.service,
        slot: c.slot,
        node: c.node.clone(),
        spec_version: c.service_version,
        desired: c.desired,
        status: TaskStatus {
            message: c.message.clone(),
            ..status_at(observed, at)
        },
        created_at: at,
        not_before: c.not_before,
    }
}

fn change_service(state: &mut ClusterState, id: ServiceId, action: &ServiceAction, at: Timestamp) {
    match action {
        ServiceAction::SetUpdateState(new_state, message) => {
            if let Some(status) = state
                .services
                .get_mut(&id)
                .and_then(|s| s.update_status.as_mut())
            {
                status.state = *new_state;
                status.message.clone_from(message);
            }
        }
        ServiceAction::Rollback(message) => {
            // Cannot fail: validation checked that the service exists with a previous spec.
            let _ = crate::apply::service::rollback(state, id, at, Some(message));
        }
    }
}
