//! Table tests for filters, scorers and explanations.

use std::collections::BTreeMap;

use crate::Command;
use crate::model::*;
use crate::synthetic;
use crate::testkit::*;

fn per_node(state: &ClusterState, id: ServiceId) -> BTreeMap<NodeId, usize> {
    let mut m: BTreeMap<NodeId, usize> = state.nodes.keys().map(|n| (n.clone(), 0)).collect();
    for t in live(state, id) {
        if let Some(n) = &t.node {
            *m.entry(n.clone()).or_default() += 1;
        }
    }
    m
}

#[test]
fn spread_balances_then_binpack_fills() {
    let mut state = cluster(4);
    let a = create(&mut state, synthetic::spec("a", 10));
    pass(&mut state, 1);
    let counts: Vec<usize> = per_node(&state, a).into_values().collect();
    assert_eq!(
        counts.iter().max().copied().unwrap_or(0) - counts.iter().min().copied().unwrap_or(0),
        1
    );
    let mut spec = synthetic::spec("b", 3);
    spec.strategy = Strategy::Binpack;
    spec.resources.reservations = Resources {
        nano_cpus: synthetic::CPU,
        memory_bytes: synthetic::GIB,
    };
    let b = create(&mut state, spec);
    pass(&mut state, 2);
    let used: Vec<usize> = per_node(&state, b)
        .into_values()
        .filter(|&c| c > 0)
        .collect();
    assert_eq!(
        used,
        vec![3],
        "binpack puts all on the fullest node that fits"
    );
}

#[test]
fn preference_spreads_over_label_values_first() {
    let mut state = cluster(8); // zones z0..z3, two nodes each
    let mut spec = synthetic::spec("a", 8);
    spec.preferences
        .push(PlacementPreference::SpreadOverLabel("zone".into()));
    spec.constraints
        .push(crate::parse::constraint("node.labels.zone!=z3").expect("constraint"));
    let id = create(&mut state, spec);
    pass(&mut state, 1);
    let mut per_zone: BTreeMap<String, usize> = BTreeMap::new();
    for t in live(&state, id) {
        let node = &state.nodes[t.node.as_ref().expect("placed")];
        *per_zone.entry(node.labels["zone"].clone()).or_default() += 1;
    }
    let counts: Vec<usize> = per_zone.values().copied().collect();
    assert_eq!(per_zone.len(), 3);
    assert!(
        counts.iter().max().copied().unwrap_or(0) - counts.iter().min().copied().unwrap_or(0) <= 1,
        "{per_zone:?}"
    );
}

#[test]
fn max_replicas_and_host_ports_limit_each_node() {
    for limit in ["max", "port"] {
        let mut state = cluster(3);
        let mut spec = synthetic::spec("a", 5);
        if limit == "max" {
            spec.max_replicas_per_node = 1;
        } else {
            spec.ports
                .push(crate::parse::port("mode=host,target=80,published=8080").expect("port"));
        }
        let id = create(&mut state, spec);
        pass(&mut state, 1);
        assert!(per_node(&state, id).values().all(|&c| c <= 1), "{limit}");
        let pending: Vec<&Task> = live(&state, id)
            .into_iter()
            .filter(|t| t.node.is_none())
            .collect();
        assert_eq!(pending.len(), 2);
        let expected = if limit == "max" {
            "no suitable node (max replicas per node reached on 3 nodes)"
        } else {
            "no suitable node (host port 8080/tcp in use on 3 nodes)"
        };
        assert_eq!(pending[0].status.message, expected);
    }
}

#[test]
fn every_filter_explains_its_refusals() {
    let mut state = cluster(6);
    let ids: Vec<NodeId> = state.nodes.keys().cloned().collect();
    state
        .apply(&Command::SetNodeStates {
            changes: vec![(ids[0].clone(), NodeState::Down)],
            at: Timestamp(1),
        })
        .expect("down");
    state
        .apply(&Command::SetNodeStates {
            changes: vec![(ids[1].clone(), NodeState::Down)],
            at: Timestamp(1),
        })
        .expect("down");
    let drain = Command::UpdateNode {
        id: ids[2].clone(),
        availability: Some(Availability::Drain),
        role: None,
        labels_set: vec![],
        labels_remove: vec![],
    };
    state.apply(&drain).expect("drain");
    state.nodes.get_mut(&ids[3]).expect("node").runtime = Runtime::None;
    state
        .nodes
        .get_mut(&ids[4])
        .expect("node")
        .total
        .memory_bytes = 1;
    state.nodes.get_mut(&ids[5]).expect("node").platform.os = "windows".into();
    let mut spec = synthetic::spec("a", 1);
    spec.resources.reservations.memory_bytes = 1 << 20;
    spec.constraints
        .push(crate::parse::constraint("node.platform.os==linux").expect("constraint"));
    let id = create(&mut state, spec);
    pass(&mut state, 2);
    let task = live(&state, id)[0].clone();
    assert_eq!(task.status.state, TaskState::Pending);
    assert_eq!(
        task.status.message,
        "no suitable node (2 nodes not ready; 1 node is paused or drained; 1 node without a container runtime; \
         constraint node.platform.os==linux not met on 1 node; insufficient memory on 1 node)"
    );
}

#[test]
fn no_nodes_at_all() {
    let mut state = ClusterState::default();
    let id = create(&mut state, synthetic::spec("a", 1));
    pass(&mut state, 1);
    assert_eq!(
        live(&state, id)[0].status.message,
        "no suitable node (the cluster has no nodes)"
    );
}
