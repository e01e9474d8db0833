//! Placement: where each task of a [`Plan`] goes. Reconciliation decides *what* should run;
//! this stage decides *where*, as a pipeline:
//!
//! 1. [`usage`]: per-node counters computed once from the state, O(tasks).
//! 2. per group of tasks with the same spec, [`filters`] run once over every node, O(nodes),
//!    counting refusals for [`explain`];
//! 3. [`scorers`] keep the eligible nodes ranked; each task pops the best node and puts it back
//!    if it can take another, O(log nodes) per task. A node only ever leaves the ranking.
//! 4. tasks left over get a message explaining why, computed against the final counters so that
//!    the next pass, seeing the same state, finds the same message (and proposes nothing).

pub mod explain;
pub mod fasthash;
pub mod filters;
pub mod scorers;
pub mod usage;

use std::collections::{BTreeMap, HashSet};

use crate::model::{ClusterState, DesiredState, Node, NodeId, ServiceId, Task, TaskId, TaskState};
use crate::plan::{PendingMessage, Placement, Plan};
use explain::Explanation;
use scorers::{Candidates, Entry};
use usage::{NodeTable, Usage};

/// A task waiting for a node: one of the plan's creates, or an existing unassigned task.
#[derive(Debug, Clone, Copy)]
enum Work<'s> {
    Create(usize),
    Existing(&'s Task),
}

/// Tasks sharing a service version (hence a spec).
type GroupKey = (ServiceId, u64);

/// Places the plan's new tasks and the state's unassigned live tasks on nodes, writing the
/// results into `plan` (assigned creates, `placements`, and `messages` for what stays pending).
pub fn place(state: &ClusterState, plan: &mut Plan) {
    let table = NodeTable::new(state);
    let mut usage = Usage::from_state(state, &table);
    let (groups, bound) = collect_work(state, &table, plan);
    let mut unplaced: Vec<(GroupKey, Vec<Work<'_>>)> = Vec::new();
    for (key, works) in groups {
        let left = place_group(state, &table, &mut usage, plan, key, works);
        if !left.is_empty() {
            unplaced.push((key, left));
        }
    }
    let mut bound_left = Vec::new();
    for (key, work, node) in bound {
        if !place_bound(state, &table, &mut usage, plan, key, work, node) {
            bound_left.push((key, work, node));
        }
    }
    for (key, works) in unplaced {
        let message = explain_group(state, &table, &usage, key);
        for work in works {
            set_message(plan, work, &message);
        }
    }
    for (key, work, node) in bound_left {
        let message = explain_node(state, &table, &usage, key, node);
        set_message(plan, work, &message);
    }
}

/// Work grouped by spec (replicated, any node) and work bound to one node (global services).
type Collected<'s> = (
    BTreeMap<GroupKey, Vec<Work<'s>>>,
    Vec<(GroupKey, Work<'s>, u32)>,
);

fn collect_work<'s>(state: &'s ClusterState, table: &NodeTable<'_>, plan: &Plan) -> Collected<'s> {
    let stopping: HashSet<TaskId> = plan
        .desired
        .iter()
        .filter(|d| d.desired == DesiredState::Shutdown)
        .map(|d| d.task)
        .collect();
    let mut groups: BTreeMap<GroupKey, Vec<Work<'s>>> = BTreeMap::new();
    let mut bound = Vec::new();
    let mut push = |key: GroupKey, work: Work<'s>, node: Option<&NodeId>| match node {
        // A task bound to a node that no longer exists waits for reconciliation to stop it.
        Some(id) => bound.extend(table.index_of(id).map(|idx| (key, work, idx))),
        None => groups.entry(key).or_default().push(work),
    };
    let waiting = state.tasks.values().filter(|t| {
        t.is_live()
            && t.is_unassigned()
            && !stopping.contains(&t.id)
            && state.services.contains_key(&t.service)
    });
    for task in waiting {
        push(
            (task.service, task.spec_version),
            Work::Existing(task),
            task.node.as_ref(),
        );
    }
    for (i, c) in plan.creates.iter().enumerate().filter(|(_, c)| !c.assigned) {
        push(
            (c.service, c.service_version),
            Work::Create(i),
            c.node.as_ref(),
        );
    }
    (groups, bound)
}

/// Places one group of tasks that may go on any node; returns the tasks left unplaced.
fn place_group<'s>(
    state: &ClusterState,
    table: &NodeTable<'_>,
    usage: &mut Usage,
    plan: &mut Plan,
    (service, version): GroupKey,
    works: Vec<Work<'s>>,
) -> Vec<Work<'s>> {
    let Some(svc) = state.services.get(&service) else {
        return works;
    };
    let spec = svc.spec_for(version);
    let strategy = spec.strategy;
    let entries: Vec<Entry> = (0..table.len() as u32)
        .filter(|&idx| filters::check(idx, table.node(idx), service, spec, usage).is_ok())
        .map(|idx| Entry {
            idx,
            key: scorers::key(strategy, idx, table.node(idx), service, usage),
            service_tasks: usage.service_count(service, idx),
        })
        .collect();
    let mut ranking = Candidates::build(entries, &table.nodes, spec);
    let mut path = Vec::new();
    let mut works = works.into_iter();
    for work in works.by_ref() {
        path.clear();
        let Some(idx) = ranking.pop(&mut path) else {
            return std::iter::once(work).chain(works).collect();
        };
        let node = table.node(idx);
        usage.add(idx, service, spec);
        assign(plan, work, node);
        let fits_more = filters::check_capacity(idx, node, service, spec, usage).is_ok();
        let back = fits_more.then(|| scorers::key(strategy, idx, node, service, usage));
        ranking.finish(idx, back, true, &path);
    }
    Vec::new()
}

/// Places one task bound to node `idx` (global services); returns whether it fit.
fn place_bound(
    state: &ClusterState,
    table: &NodeTable<'_>,
    usage: &mut Usage,
    plan: &mut Plan,
    (service, version): GroupKey,
    work: Work<'_>,
    idx: u32,
) -> bool {
    let Some(svc) = state.services.get(&service) else {
        return false;
    };
    let spec = svc.spec_for(version);
    let node = table.node(idx);
    if filters::check(idx, node, service, spec, usage).is_err() {
        return false;
    }
    usage.add(idx, service, spec);
    assign(plan, work, node);
    true
}

/// Records in the plan that `work` goes on `node`.
fn assign(plan: &mut Plan, work: Work<'_>, node: &Node) {
    match work {
        Work::Create(i) => {
            let c = &mut plan.creates[i];
            c.node = Some(node.id.clone());
            c.assigned = true;
            c.message.clear();
        }
        Work::Existing(t) => plan.placements.push(Placement {
            task: t.id,
            seen: t.status.state,
            node: node.id.clone(),
        }),
    }
}

/// Records why `work` stays pending (only if that changes an existing task's message).
fn set_message(plan: &mut Plan, work: Work<'_>, message: &str) {
    match work {
        Work::Create(i) => plan.creates[i].message = message.to_string(),
        Work::Existing(t)
            if t.status.message != message || t.status.state != TaskState::Pending =>
        {
            plan.messages.push(PendingMessage {
                task: t.id,
                seen: t.status.state,
                message: message.to_string(),
            });
        }
        Work::Existing(_) => {}
    }
}

/// Why no node takes a task of this group, given the final counters.
fn explain_group(
    state: &ClusterState,
    table: &NodeTable<'_>,
    usage: &Usage,
    (service, version): GroupKey,
) -> String {
    let mut why = Explanation::default();
    if let Some(svc) = state.services.get(&service) {
        let spec = svc.spec_for(version);
        for idx in 0..table.len() as u32 {
            why.consider(filters::check(idx, table.node(idx), service, spec, usage));
        }
    }
    why.message()
}

/// Why node `idx` does not take a task of this group, given the final counters.
fn explain_node(
    state: &ClusterState,
    table: &NodeTable<'_>,
    usage: &Usage,
    (service, version): GroupKey,
    idx: u32,
) -> String {
    let mut why = Explanation::default();
    if let Some(svc) = state.services.get(&service) {
        let spec = svc.spec_for(version);
        why.consider(filters::check(idx, table.node(idx), service, spec, usage));
    }
    why.message()
}

#[cfg(test)]
mod tests;
