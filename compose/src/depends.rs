//! The start order of a stack's services from their `depends_on` (which shoal honours, unlike
//! Swarm): a topological order in which every service comes after the services it depends on,
//! ties broken by name so the order is stable. A cycle is an error naming it.
//!
//! What "up" means for each edge is the dependency's [`Condition`](crate::Condition): the
//! deployer waits, before creating a service, until each of its dependencies' tasks are running
//! (`service_started`), running and healthy (`service_healthy`), or exited 0
//! (`service_completed_successfully`).

use std::collections::{BTreeMap, BTreeSet};

use crate::error::ComposeError;
use crate::model::{Stack, StackService};

/// The services of `stack` in an order in which each comes after all it depends on.
/// Dependencies on services outside the stack are not followed (they were refused or dropped
/// when the file was read).
pub fn start_order<'s>(stack: &'s Stack) -> Result<Vec<&'s StackService>, ComposeError> {
    let by_name: BTreeMap<&str, &StackService> = stack
        .services
        .iter()
        .map(|s| (s.name.as_str(), s))
        .collect();
    let deps = |s: &'s StackService| -> BTreeSet<&'s str> {
        s.depends_on
            .iter()
            .map(|d| d.service.as_str())
            .filter(|d| by_name.contains_key(d))
            .collect()
    };
    // Kahn's algorithm over names, smallest ready name first.
    let mut waiting: BTreeMap<&str, BTreeSet<&str>> =
        by_name.iter().map(|(&n, &s)| (n, deps(s))).collect();
    let mut order = Vec::with_capacity(by_name.len());
    loop {
        let ready: Vec<&str> = waiting
            .iter()
            .filter(|(_, d)| d.is_empty())
            .map(|(&n, _)| n)
            .collect();
        if ready.is_empty() {
            break;
        }
        for name in ready {
            waiting.remove(name);
            for d in waiting.values_mut() {
                d.remove(name);
            }
            order.push(by_name[name]);
        }
    }
    if waiting.is_empty() {
        return Ok(order);
    }
    Err(ComposeError::Cycle {
        cycle: find_cycle(&waiting),
    })
}

/// A cycle among the services left: follow the first remaining dependency until a name
/// repeats (every one left has one, or it would have been ready).
fn find_cycle(waiting: &BTreeMap<&str, BTreeSet<&str>>) -> Vec<String> {
    let Some(start) = waiting.keys().next() else {
        return Vec::new();
    };
    let mut path: Vec<&str> = vec![start];
    let mut current = *start;
    loop {
        let Some(next) = waiting.get(current).and_then(|d| d.iter().next()) else {
            return path.iter().map(|s| s.to_string()).collect();
        };
        if let Some(i) = path.iter().position(|p| p == next) {
            let mut cycle: Vec<String> = path[i..].iter().map(|s| s.to_string()).collect();
            cycle.push(next.to_string());
            return cycle;
        }
        path.push(next);
        current = next;
    }
}
