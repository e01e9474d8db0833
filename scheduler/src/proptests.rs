//! Property tests: what must never happen, over random clusters, services and event sequences.

use std::collections::BTreeMap;

use proptest::prelude::*;
use proptest::strategy::Strategy;

use crate::model::*;
use crate::placement::filters::constraint_holds;
use crate::synthetic::{self, CPU, GIB};
use crate::testkit::create;
use crate::{Command, reconcile};

/// A random node: `(cpus, GiB, zone, availability 0..3, ready)`.
fn nodes() -> impl Strategy<Value = Vec<(u64, u64, u8, u8, bool)>> {
    prop::collection::vec(
        (1..4u64, 1..8u64, 0..3u8, 0..4u8, prop::bool::weighted(0.8)),
        1..8,
    )
}

/// A random service: `(replicas or global, half-cpus, half-GiB, constraint, max per node, binpack, preference)`.
type Svc = (Option<u64>, u64, u64, u8, u64, bool, bool);

fn services() -> impl Strategy<Value = Vec<Svc>> {
    let svc = (
        prop::option::weighted(0.8, 0..12u64),
        0..3u64,
        0..3u64,
        0..3u8,
        0..3u64,
        any::<bool>(),
        any::<bool>(),
    );
    prop::collection::vec(svc, 1..4)
}

fn build(nodes: &[(u64, u64, u8, u8, bool)], services: &[Svc]) -> ClusterState {
    let mut state = synthetic::cluster(&synthetic::ClusterShape::new(nodes.len(), 3));
    for (node, &(cpus, gib, zone, avail, ready)) in state.nodes.values_mut().zip(nodes) {
        node.total = Resources {
            nano_cpus: cpus * CPU,
            memory_bytes: gib * GIB,
        };
        node.labels.insert("zone".into(), format!("z{zone}"));
        node.availability = match avail {
            0 => Availability::Pause,
            1 => Availability::Drain,
            _ => Availability::Active,
        };
        node.state = if ready {
            NodeState::Ready
        } else {
            NodeState::Down
        };
    }
    for (i, &(replicas, cpu, mem, constraint, max, binpack, pref)) in services.iter().enumerate() {
        let mut spec = synthetic::spec(&format!("s{i}"), replicas.unwrap_or(0));
        if replicas.is_none() {
            spec.mode = ServiceMode::Global;
        }
        spec.resources.reservations = Resources {
            nano_cpus: cpu * CPU / 2,
            memory_bytes: mem * GIB / 2,
        };
        match constraint {
            1 => spec
                .constraints
                .push(crate::parse::constraint("node.labels.zone==z0").expect("c")),
            2 => spec
                .constraints
                .push(crate::parse::constraint("node.labels.zone!=z1").expect("c")),
            _ => {}
        }
        spec.max_replicas_per_node = max;
        spec.strategy = if binpack {
            crate::model::Strategy::Binpack
        } else {
            crate::model::Strategy::Spread
        };
        if pref {
            spec.preferences
                .push(PlacementPreference::SpreadOverLabel("zone".into()));
        }
        spec.restart.delay_ms = 5;
        spec.update.monitor_ms = 3;
        create(&mut state, spec);
    }
    state
}

/// An event between passes: `(kind, pick, new state index)`.
type Event = (u8, usize, u8);

fn events() -> impl Strategy<Value = Vec<Event>> {
    prop::collection::vec((0..6u8, any::<usize>(), 0..7u8), 0..25)
}

const REPORTED: [TaskState; 7] = [
    TaskState::Accepted,
    TaskState::Running,
    TaskState::Running,
    TaskState::Complete,
    TaskState::Shutdown,
    TaskState::Failed,
    TaskState::Rejected,
];

fn happen(state: &mut ClusterState, (kind, pick, to): Event, now: u64) {
    let at = Timestamp(now);
    match kind {
        0..=2 => {
            let assigned: Vec<&Task> = state.tasks.values().filter(|t| t.node.is_some()).collect();
            if assigned.is_empty() {
                return;
            }
            let t = assigned[pick % assigned.len()];
            let status = status_at(REPORTED[to as usize], at);
            let cmd = Command::ReportTaskStatus {
                node: t.node.clone().expect("assigned"),
                reports: vec![(t.id, status)],
            };
            state.apply(&cmd).expect("reports never fail");
        }
        3 => {
            let id = state
                .nodes
                .keys()
                .nth(pick % state.nodes.len())
                .expect("node")
                .clone();
            let s = if to % 2 == 0 {
                NodeState::Down
            } else {
                NodeState::Ready
            };
            state
                .apply(&Command::SetNodeStates {
                    changes: vec![(id, s)],
                    at,
                })
                .expect("node state");
        }
        4 => {
            let Some(svc) = state
                .services
                .values()
                .nth(pick % state.services.len().max(1))
            else {
                return;
            };
            let (id, revision, mut spec) = (svc.id, svc.revision, svc.spec.clone());
            spec.image = format!("img:{now}");
            spec.update.parallelism = u64::from(to % 3);
            spec.update.order = if to % 2 == 0 {
                UpdateOrder::StopFirst
            } else {
                UpdateOrder::StartFirst
            };
            let cmd = Command::UpdateService {
                id,
                expected_revision: revision,
                spec,
                at,
            };
            state.apply(&cmd).expect("update");
        }
        _ => {}
    }
}

fn states(state: &ClusterState) -> BTreeMap<TaskId, TaskState> {
    state
        .tasks
        .iter()
        .map(|(id, t)| (*id, t.status.state))
        .collect()
}

/// Checks the invariants that hold after every pass.
fn check_invariants(state: &ClusterState, now: u64) -> Result<(), TestCaseError> {
    let mut used: BTreeMap<&NodeId, Resources> = BTreeMap::new();
    for t in state.tasks.values().filter(|t| t.holds_resources()) {
        let (Some(node_id), Some(svc)) = (&t.node, state.services.get(&t.service)) else {
            continue;
        };
        let spec = svc.spec_for(t.spec_version);
        let node = &state.nodes[node_id];
        prop_assert!(
            spec.constraints.iter().all(|c| constraint_holds(c, node)),
            "constraint broken"
        );
        let u = used.entry(node_id).or_default();
        *u = u.plus(spec.resources.reservations);
    }
    for (id, u) in used {
        let room = state.nodes[id].allocatable();
        prop_assert!(
            Resources::default().fits(u, room),
            "node {id} overcommitted"
        );
    }
    for svc in state
        .services
        .values()
        .filter(|s| s.spec.mode == ServiceMode::Global)
    {
        for node in state.nodes.values() {
            let live: Vec<&Task> = state
                .tasks
                .values()
                .filter(|t| t.service == svc.id && t.is_live() && t.node.as_ref() == Some(&node.id))
                .collect();
            let n = live.len();
            let eligible = node.accepts_tasks()
                && svc
                    .spec
                    .constraints
                    .iter()
                    .all(|c| constraint_holds(c, node));
            // One task, or two while a start-first update hands over from an older version.
            let handing_over = n == 2 && live[0].spec_version < live[1].spec_version;
            if eligible {
                prop_assert!(
                    n == 1 || handing_over,
                    "global service has {} tasks on eligible node {}",
                    n,
                    node.id
                );
            }
            let excluded = node.state == NodeState::Down
                || node.availability == Availability::Drain
                || !svc
                    .spec
                    .constraints
                    .iter()
                    .all(|c| constraint_holds(c, node));
            if excluded {
                prop_assert_eq!(n, 0, "global service on excluded node {}", node.id);
            }
        }
    }
    settled(state, now)
}

/// Reconciling the result of a pass again proposes nothing.
pub(crate) fn settled(state: &ClusterState, now: u64) -> Result<(), TestCaseError> {
    let again = reconcile(state, Timestamp(now));
    prop_assert!(
        again.is_empty(),
        "reconcile of its own result proposed {:?}",
        again
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Random clusters and event sequences: no overcommit, constraints hold, global services
    /// cover exactly their eligible nodes, reconcile is idempotent, states never go backwards.
    #[test]
    fn invariants_hold_through_random_events(nodes in nodes(), services in services(), events in events()) {
        let mut state = build(&nodes, &services);
        let mut now = 1;
        for event in events.into_iter().chain(std::iter::once((5, 0, 0))) {
            let before = states(&state);
            let plan = reconcile(&state, Timestamp(now));
            state.apply(&Command::ApplyPlan { plan, at: Timestamp(now) }).expect("own plan applies");
            check_invariants(&state, now)?;
            happen(&mut state, event, now);
            for (id, s) in states(&state) {
                if let Some(old) = before.get(&id) {
                    prop_assert!(s >= *old, "task {} went back from {:?} to {:?}", id, old, s);
                }
            }
            now += 2;
        }
    }

    /// On a fresh cluster, spread keeps each service's task counts within one across the nodes
    /// it may use.
    #[test]
    fn spread_is_balanced(n in 1..12usize, replicas in prop::collection::vec(0..40u64, 1..4), constrained in any::<bool>()) {
        let mut state = synthetic::cluster(&synthetic::ClusterShape::new(n, 5));
        let ids: Vec<ServiceId> = replicas.iter().enumerate().map(|(i, &r)| {
            let mut spec = synthetic::spec(&format!("s{i}"), r);
            if constrained && i == 0 {
                spec.constraints.push(synthetic::gold_constraint());
            }
            create(&mut state, spec)
        }).collect();
        let plan = reconcile(&state, Timestamp(1));
        state.apply(&Command::ApplyPlan { plan, at: Timestamp(1) }).expect("applies");
        for id in ids {
            let spec = &state.services[&id].spec;
            let counts: Vec<usize> = state.nodes.values()
                .filter(|node| spec.constraints.iter().all(|c| constraint_holds(c, node)))
                .map(|node| state.tasks.values().filter(|t| t.service == id && t.node.as_ref() == Some(&node.id)).count())
                .collect();
            let (min, max) = (counts.iter().min().copied().unwrap_or(0), counts.iter().max().copied().unwrap_or(0));
            prop_assert!(max - min <= 1, "service {} unbalanced: {:?}", id, counts);
        }
    }
}
