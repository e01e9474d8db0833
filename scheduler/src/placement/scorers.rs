//! Ranking the nodes that passed the filters. Eligible nodes live in ordered structures keyed by
//! the scorer, so choosing the best node for a task and putting it back costs O(log nodes):
//!
//! - `spread` (default): fewest tasks of this service, then fewest tasks overall, then node id.
//! - `binpack`: the fullest node that still fits (least free share of CPU plus memory), then the
//!   busiest, then node id.
//! - placement preferences `spread=node.labels.X`: a tree whose levels are the preferences; each
//!   branch picks the label value with the fewest tasks of the service, then recurses.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};

use crate::model::{Node, PlacementPreference, ServiceId, ServiceSpec, Strategy};
use crate::placement::usage::Usage;

/// A node's rank: smaller is better.
pub type Key = (u64, u64);

/// The scorer's key for node `idx`.
pub fn key(strategy: Strategy, idx: u32, node: &Node, service: ServiceId, usage: &Usage) -> Key {
    let total = usage.tasks[idx as usize];
    match strategy {
        Strategy::Spread => (usage.service_count(service, idx), total),
        Strategy::Binpack => (free_share(node, usage, idx), u64::MAX - total),
    }
}

/// Free CPU and memory as a share of what is allocatable, in millionths (summed).
fn free_share(node: &Node, usage: &Usage, idx: u32) -> u64 {
    let room = node.allocatable();
    let used = usage.reserved[idx as usize];
    let share = |free: u64, all: u64| free.saturating_mul(1_000_000).checked_div(all).unwrap_or(0);
    share(
        room.nano_cpus.saturating_sub(used.nano_cpus),
        room.nano_cpus,
    ) + share(
        room.memory_bytes.saturating_sub(used.memory_bytes),
        room.memory_bytes,
    )
}

/// One eligible node entering the ranking.
#[derive(Debug, Clone, Copy)]
pub struct Entry {
    /// Dense node index.
    pub idx: u32,
    /// Its rank.
    pub key: Key,
    /// Tasks of the service already on it (balances preference branches).
    pub service_tasks: u64,
}

/// The ranked eligible nodes for one group of tasks.
#[derive(Debug)]
pub enum Candidates {
    /// Nodes ranked by key.
    Leaf(BinaryHeap<Reverse<(Key, u32)>>),
    /// One child per label value, ranked by tasks of the service in that child.
    Branch {
        /// `(tasks of the service, child index)`, smallest first.
        order: BTreeSet<(u64, u32)>,
        /// The children.
        children: Vec<Candidates>,
    },
}

impl Candidates {
    /// Builds the ranking of `entries` under `spec`'s placement preferences.
    pub fn build(entries: Vec<Entry>, nodes: &[&Node], spec: &ServiceSpec) -> Self {
        build_level(entries, nodes, &spec.preferences)
    }

    /// Removes the best node and returns it; `path` receives the branch choices so that
    /// [`Candidates::finish`] can put the node back.
    pub fn pop(&mut self, path: &mut Vec<u32>) -> Option<u32> {
        match self {
            Candidates::Leaf(heap) => heap.pop().map(|Reverse((_, idx))| idx),
            Candidates::Branch { order, children } => {
                let (count, child) = order.pop_first()?;
                path.push(child);
                let found = children[child as usize].pop(path);
                // The branch is re-ranked in `finish`, once we know whether the node stays.
                path.push(u32::try_from(count).unwrap_or(u32::MAX));
                found
            }
        }
    }

    /// Completes a [`Candidates::pop`]: puts the node back with `key` if it can take another
    /// task (`Some`), and re-ranks the branches on the way, counting one more task (if `placed`).
    pub fn finish(&mut self, idx: u32, back: Option<Key>, placed: bool, path: &[u32]) {
        match self {
            Candidates::Leaf(heap) => {
                if let Some(k) = back {
                    heap.push(Reverse((k, idx)));
                }
            }
            Candidates::Branch { order, children } => {
                // `path` is `[child, <the child's path>, count]`, as `pop` wrote it.
                let (child, rest) = (path[0], &path[1..path.len() - 1]);
                let count = u64::from(path[path.len() - 1]);
                let sub = &mut children[child as usize];
                sub.finish(idx, back, placed, rest);
                if !sub.is_empty() {
                    order.insert((count + u64::from(placed), child));
                }
            }
        }
    }

    fn is_empty(&self) -> bool {
        match self {
            Candidates::Leaf(heap) => heap.is_empty(),
            Candidates::Branch { order, .. } => order.is_empty(),
        }
    }
}

fn build_level(entries: Vec<Entry>, nodes: &[&Node], prefs: &[PlacementPreference]) -> Candidates {
    let Some((PlacementPreference::SpreadOverLabel(label), rest)) = prefs.split_first() else {
        let heap = entries
            .into_iter()
            .map(|e| Reverse((e.key, e.idx)))
            .collect();
        return Candidates::Leaf(heap);
    };
    let mut groups: BTreeMap<&str, Vec<Entry>> = BTreeMap::new();
    for e in entries {
        let value = nodes[e.idx as usize]
            .labels
            .get(label)
            .map_or("", String::as_str);
        groups.entry(value).or_default().push(e);
    }
    let mut order = BTreeSet::new();
    let mut children = Vec::with_capacity(groups.len());
    for (i, group) in groups.into_values().enumerate() {
        let count = group.iter().map(|e| e.service_tasks).sum();
        order.insert((count, i as u32));
        children.push(build_level(group, nodes, rest));
    }
    Candidates::Branch { order, children }
}
