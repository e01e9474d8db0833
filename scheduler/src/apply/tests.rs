//! Table tests for applying commands: validation, all-or-nothing, staleness, status reports.

use crate::model::*;
use crate::synthetic;
use crate::testkit::*;
use crate::{ApplyError, Command, Outcome};

#[test]
fn create_service_validates_and_assigns_ids() {
    let mut state = cluster(1);
    assert_eq!(create(&mut state, synthetic::spec("a", 1)), ServiceId(0));
    assert_eq!(create(&mut state, synthetic::spec("b", 1)), ServiceId(1));
    let mut bad = Vec::new();
    for name in ["", "-x", "has space", &"n".repeat(64)] {
        bad.push(synthetic::spec(name, 1));
    }
    let mut s = synthetic::spec("img", 1);
    s.image.clear();
    bad.push(s);
    bad.push(synthetic::spec("many", super::service::MAX_REPLICAS + 1));
    let mut s = synthetic::spec("port", 1);
    s.ports.push(PortSpec {
        target: 80,
        published: 0,
        protocol: PortProtocol::Tcp,
        host_mode: true,
    });
    bad.push(s);
    let before = state.clone();
    for spec in bad {
        let err = state.apply(&Command::CreateService {
            spec,
            at: Timestamp(1),
        });
        assert!(matches!(err, Err(ApplyError::InvalidSpec(_))), "{err:?}");
    }
    let dup = state.apply(&Command::CreateService {
        spec: synthetic::spec("a", 1),
        at: Timestamp(1),
    });
    assert_eq!(dup, Err(ApplyError::NameInUse("a".into())));
    assert_eq!(state, before, "refused commands change nothing");
}

#[test]
fn a_port_published_for_the_routing_mesh_belongs_to_one_service() {
    let publish = |published: u16, host_mode: bool| PortSpec {
        target: 80,
        published,
        protocol: PortProtocol::Tcp,
        host_mode,
    };
    let mut state = cluster(2);
    let mut web = synthetic::spec("web", 1);
    web.ports.push(publish(8080, false));
    let web_id = create(&mut state, web.clone());
    let before = state.clone();
    let mut api = synthetic::spec("api", 1);
    api.ports.push(publish(8080, false));
    let refused = state.apply(&Command::CreateService {
        spec: api.clone(),
        at: Timestamp(1),
    });
    assert!(
        matches!(&refused, Err(ApplyError::Refused(why)) if why.contains("8080/tcp is published by service web")),
        "{refused:?}"
    );
    api.ports = vec![publish(8080, true)];
    assert!(
        state
            .apply(&Command::CreateService {
                spec: api.clone(),
                at: Timestamp(1),
            })
            .is_err(),
        "a host-mode port cannot take an ingress port either"
    );
    assert_eq!(state, before, "refused commands change nothing");
    // The service's own port does not conflict with itself on an update; UDP is another port.
    web.env.push("V=2".into());
    web.ports.push(PortSpec {
        protocol: PortProtocol::Udp,
        ..publish(8080, false)
    });
    state
        .apply(&Command::UpdateService {
            id: web_id,
            expected_revision: 1,
            spec: web,
            at: Timestamp(2),
        })
        .expect("its own port");
    // Host mode on both sides: placement keeps them apart.
    let mut a = synthetic::spec("a", 1);
    a.ports.push(publish(9090, true));
    let mut b = synthetic::spec("b", 1);
    b.ports.push(publish(9090, true));
    create(&mut state, a);
    create(&mut state, b);
}

/// A scale keeps the version (its tasks stay current) but not the revision: an update based on
/// what a writer read before the scale is refused, instead of putting the old count back.
#[test]
fn an_update_read_before_a_scale_is_stale() {
    let mut state = cluster(1);
    let id = create(&mut state, synthetic::spec("a", 2));
    let read = state.services[&id].clone();
    let scale = Command::UpdateService {
        id,
        expected_revision: read.revision,
        spec: synthetic::spec("a", 0),
        at: Timestamp(1),
    };
    state.apply(&scale).expect("scale");
    let scaled = &state.services[&id];
    assert_eq!(
        (scaled.version, scaled.revision),
        (read.version, read.revision + 1)
    );
    let mut based_on_read = read.spec.clone();
    based_on_read.env.push("VERSION=2".into());
    let before = state.clone();
    let lost = state.apply(&Command::UpdateService {
        id,
        expected_revision: read.revision,
        spec: based_on_read,
        at: Timestamp(2),
    });
    assert!(matches!(lost, Err(ApplyError::Stale(_))), "{lost:?}");
    assert_eq!(state, before);
    assert_eq!(
        state.services[&id].spec.replicas(),
        Some(0),
        "the scale stays"
    );
}

#[test]
fn update_checks_version_and_keeps_previous_spec() {
    let mut state = cluster(1);
    let id = create(&mut state, synthetic::spec("a", 1));
    let mut spec = synthetic::spec("a", 1);
    spec.image = "nginx".into();
    let stale = state.apply(&Command::UpdateService {
        id,
        expected_revision: 7,
        spec: spec.clone(),
        at: Timestamp(1),
    });
    assert!(matches!(stale, Err(ApplyError::Stale(_))));
    state
        .apply(&Command::UpdateService {
            id,
            expected_revision: 1,
            spec,
            at: Timestamp(1),
        })
        .expect("update");
    let svc = &state.services[&id];
    assert_eq!((svc.version, svc.previous_version), (2, Some(1)));
    assert_eq!(
        svc.previous_spec.as_ref().map(|s| s.image.as_str()),
        Some("busybox:latest")
    );
    assert_eq!(
        svc.update_status.as_ref().map(|u| u.state),
        Some(UpdateState::Updating)
    );
    state
        .apply(&Command::RollbackService {
            id,
            at: Timestamp(2),
        })
        .expect("rollback");
    let svc = &state.services[&id];
    assert_eq!(
        (svc.version, svc.spec.image.as_str()),
        (3, "busybox:latest")
    );
    assert!(svc.is_current(1) && !svc.is_current(2));
}

#[test]
fn status_reports_only_move_forward_and_only_from_the_tasks_node() {
    let mut state = cluster(2);
    create(&mut state, synthetic::spec("a", 1));
    pass(&mut state, 1);
    let task = state.tasks.values().next().expect("task").clone();
    let other = state
        .nodes
        .keys()
        .find(|n| Some(*n) != task.node.as_ref())
        .expect("other")
        .clone();
    let running = status_at(TaskState::Running, Timestamp(2));
    let out = state.apply(&Command::ReportTaskStatus {
        node: other,
        reports: vec![(task.id, running.clone())],
    });
    assert_eq!(
        out,
        Ok(Outcome::StatusApplied {
            accepted: 0,
            ignored: 1
        })
    );
    assert_eq!(
        report(&mut state, task.id, TaskState::Running, 2),
        Outcome::StatusApplied {
            accepted: 1,
            ignored: 0
        }
    );
    assert_eq!(
        report(&mut state, task.id, TaskState::Starting, 3),
        Outcome::StatusApplied {
            accepted: 0,
            ignored: 1
        }
    );
    assert_eq!(state.tasks[&task.id].status.state, TaskState::Running);
}

#[test]
fn a_stale_plan_is_rejected_whole() {
    let mut state = cluster(2);
    let id = create(&mut state, synthetic::spec("a", 2));
    let plan = crate::reconcile(&state, Timestamp(1));
    let mut spec = synthetic::spec("a", 2);
    spec.image = "v2".into();
    state
        .apply(&Command::UpdateService {
            id,
            expected_revision: 1,
            spec,
            at: Timestamp(1),
        })
        .expect("update");
    let before = state.clone();
    let out = state.apply(&Command::ApplyPlan {
        plan,
        at: Timestamp(1),
    });
    assert!(matches!(out, Err(ApplyError::Stale(_))), "{out:?}");
    assert_eq!(state, before);
}

#[test]
fn a_plan_for_a_filled_slot_or_full_node_is_stale() {
    let mut state = cluster(1);
    let mut spec = synthetic::spec("a", 1);
    spec.resources.reservations.memory_bytes = 20 * synthetic::GIB;
    create(&mut state, spec);
    let plan = crate::reconcile(&state, Timestamp(1));
    state
        .apply(&Command::ApplyPlan {
            plan: plan.clone(),
            at: Timestamp(1),
        })
        .expect("first");
    let again = state.apply(&Command::ApplyPlan {
        plan: plan.clone(),
        at: Timestamp(1),
    });
    assert!(matches!(again, Err(ApplyError::Stale(_))), "{again:?}");
    // Same plan against a state where the node became too small.
    let mut other = cluster(1);
    let mut spec = synthetic::spec("a", 1);
    spec.resources.reservations.memory_bytes = 20 * synthetic::GIB;
    create(&mut other, spec);
    let node = first_node(&other);
    other.nodes.get_mut(&node).expect("node").total.memory_bytes = synthetic::GIB;
    let out = other.apply(&Command::ApplyPlan {
        plan,
        at: Timestamp(1),
    });
    assert!(matches!(out, Err(ApplyError::Stale(_))), "{out:?}");
}

#[test]
fn node_down_orphans_and_removal_needs_down_or_force() {
    let mut state = cluster(1);
    create(&mut state, synthetic::spec("a", 2));
    pass(&mut state, 1);
    let node = first_node(&state);
    let refused = state.apply(&Command::RemoveNode {
        id: node.clone(),
        force: false,
        at: Timestamp(2),
    });
    assert!(matches!(refused, Err(ApplyError::Refused(_))));
    state
        .apply(&Command::SetNodeStates {
            changes: vec![(node.clone(), NodeState::Down)],
            at: Timestamp(2),
        })
        .expect("down");
    assert!(
        state
            .tasks
            .values()
            .all(|t| t.status.state == TaskState::Orphaned)
    );
    state
        .apply(&Command::RemoveNode {
            id: node,
            force: false,
            at: Timestamp(3),
        })
        .expect("remove");
    assert!(state.nodes.is_empty());
}

#[test]
fn upsert_keeps_operator_fields() {
    let mut state = cluster(1);
    let id = first_node(&state);
    let cmd = Command::UpdateNode {
        id: id.clone(),
        availability: Some(Availability::Drain),
        role: None,
        labels_set: vec![("x".into(), "1".into())],
        labels_remove: vec![],
    };
    state.apply(&cmd).expect("update");
    let mut fresh = state.nodes[&id].clone();
    fresh.availability = Availability::Active;
    fresh.labels.clear();
    fresh.hostname = "renamed".into();
    state
        .apply(&Command::UpsertNode { node: fresh })
        .expect("upsert");
    let n = &state.nodes[&id];
    assert_eq!(
        (n.availability, n.labels.len(), n.hostname.as_str()),
        (Availability::Drain, 2 + 1, "renamed")
    );
}

#[test]
fn prune_keeps_bounded_history() {
    let mut state = cluster(1);
    let id = create(&mut state, synthetic::spec("a", 1));
    pass(&mut state, 1);
    for t in 0..5 {
        let task = live(&state, id)[0].id;
        report(&mut state, task, TaskState::Failed, 10 + t);
        pass(&mut state, 10 + t);
    }
    assert_eq!(state.tasks.len(), 6);
    state
        .apply(&Command::PruneTasks { keep_per_slot: 2 })
        .expect("prune");
    assert_eq!(state.tasks.len(), 3, "the live task and 2 ended ones");
    state
        .apply(&Command::RemoveService {
            id,
            at: Timestamp(20),
        })
        .expect("remove");
    state
        .apply(&Command::PruneTasks { keep_per_slot: 2 })
        .expect("prune");
    assert_eq!(
        state.tasks.len(),
        1,
        "the unfinished task stays until it reports"
    );
}

#[test]
fn init_cluster_once() {
    let mut state = ClusterState::default();
    let id = ClusterId("c1".into());
    state
        .apply(&Command::InitCluster {
            cluster_id: id.clone(),
        })
        .expect("init");
    let again = state.apply(&Command::InitCluster {
        cluster_id: ClusterId("c2".into()),
    });
    assert_eq!(again, Err(ApplyError::AlreadyInitialised(id)));
}
