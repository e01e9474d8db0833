//! Events named from real applies: each command's changes, and nothing for a refused or
//! no-op command.

use super::*;
use crate::model::{ServiceSpec, TaskStatus, status_at};
use crate::synthetic;
use crate::testkit::*;

/// Applies `cmd` to `state` the way the state machine does, returning its events.
fn apply(state: &mut ClusterState, cmd: &Command, index: u64) -> Vec<Event> {
    let probe = Probe::before(state, cmd);
    match state.apply(cmd) {
        Ok(outcome) => probe.after(state, cmd, &outcome, index, Timestamp(999)),
        Err(_) => Vec::new(),
    }
}

fn kinds(events: &[Event]) -> Vec<&EventKind> {
    events.iter().map(|e| &e.kind).collect()
}

fn spec(name: &str, replicas: u64) -> ServiceSpec {
    synthetic::spec(name, replicas)
}

#[test]
fn a_service_is_created_updated_and_removed() {
    let mut state = cluster(2);
    let create = Command::CreateService {
        spec: spec("web", 2),
        at: Timestamp(10),
    };
    let events = apply(&mut state, &create, 7);
    assert_eq!(
        kinds(&events),
        [&EventKind::ServiceCreated {
            id: ServiceId(0),
            name: "web".into()
        }]
    );
    assert_eq!((events[0].index, events[0].time), (7, Timestamp(10)));
    // The same create again is refused: no event.
    assert!(apply(&mut state, &create, 8).is_empty());
    let mut changed = spec("web", 2);
    changed.image = "other:1".into();
    let update = Command::UpdateService {
        id: ServiceId(0),
        expected_revision: state.services[&ServiceId(0)].revision,
        spec: changed,
        at: Timestamp(20),
    };
    let events = apply(&mut state, &update, 9);
    assert!(
        kinds(&events).iter().any(|k| matches!(
            k,
            EventKind::ServiceUpdated { name, version, .. } if name == "web" && *version == 2
        )),
        "{events:?}"
    );
    let remove = Command::RemoveService {
        id: ServiceId(0),
        at: Timestamp(30),
    };
    assert_eq!(
        kinds(&apply(&mut state, &remove, 10)),
        [&EventKind::ServiceRemoved {
            id: ServiceId(0),
            name: "web".into()
        }]
    );
}

#[test]
fn a_plan_names_its_new_tasks_and_reports_name_state_changes() {
    let mut state = cluster(2);
    create(&mut state, spec("api", 3));
    let plan = crate::reconcile(&state, Timestamp(5));
    let cmd = Command::ApplyPlan {
        plan,
        at: Timestamp(5),
    };
    let events = apply(&mut state, &cmd, 3);
    let created: Vec<_> = events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::TaskCreated {
                id, service, node, ..
            } => Some((*id, service.clone(), node.is_some())),
            _ => None,
        })
        .collect();
    assert_eq!(created.len(), 3, "{events:?}");
    assert!(created.iter().all(|(_, s, placed)| s == "api" && *placed));
    let task = created[0].0;
    let node = state.tasks[&task].node.clone().expect("placed");
    let report = Command::ReportTaskStatus {
        node: node.clone(),
        reports: vec![(task, status_at(TaskState::Running, Timestamp(40)))],
    };
    let events = apply(&mut state, &report, 4);
    assert_eq!(events.len(), 2, "{events:?}");
    assert_eq!(events[0].time, Timestamp(40));
    match &events[0].kind {
        EventKind::TaskState { id, from, to, .. } => {
            assert_eq!(
                (*id, *from, *to),
                (task, TaskState::Assigned, TaskState::Running)
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        events[1].kind,
        EventKind::EndpointAdded {
            id: task,
            service: "api".into(),
            node: Some(node.clone()),
        }
    );
    // The same report again changes nothing: no event.
    assert!(apply(&mut state, &report, 5).is_empty());
    // A report from another node about this task is ignored: no event.
    let other_node = state
        .nodes
        .keys()
        .find(|n| **n != node)
        .cloned()
        .expect("2 nodes");
    let foreign = Command::ReportTaskStatus {
        node: other_node,
        reports: vec![(
            task,
            TaskStatus {
                message: "lie".into(),
                ..status_at(TaskState::Failed, Timestamp(41))
            },
        )],
    };
    assert!(apply(&mut state, &foreign, 6).is_empty());
}

#[test]
fn nodes_going_down_and_changing_are_named() {
    let mut state = cluster(3);
    let node = first_node(&state);
    let hostname = state.nodes[&node].hostname.clone();
    let down = Command::SetNodeStates {
        changes: vec![(node.clone(), NodeState::Down)],
        at: Timestamp(3),
    };
    assert_eq!(
        kinds(&apply(&mut state, &down, 1)),
        [&EventKind::NodeState {
            id: node.clone(),
            hostname: hostname.clone(),
            from: NodeState::Ready,
            to: NodeState::Down,
        }]
    );
    let update = Command::UpdateNode {
        id: node.clone(),
        availability: Some(Availability::Drain),
        role: None,
        labels_set: vec![("disk".into(), "ssd".into())],
        labels_remove: vec![],
    };
    let events = apply(&mut state, &update, 2);
    assert_eq!(
        kinds(&events),
        [
            &EventKind::NodeAvailability {
                id: node.clone(),
                hostname: hostname.clone(),
                availability: Availability::Drain,
            },
            &EventKind::NodeLabels {
                id: node.clone(),
                hostname: hostname.clone(),
            }
        ]
    );
    // With no command time, the apply time is the event's.
    assert_eq!(events[0].time, Timestamp(999));
    let remove = Command::RemoveNode {
        id: node.clone(),
        force: true,
        at: Timestamp(4),
    };
    assert_eq!(
        kinds(&apply(&mut state, &remove, 3)),
        [&EventKind::NodeRemoved { id: node, hostname }]
    );
}

#[test]
fn types_and_names_are_what_filters_match() {
    let task = EventKind::TaskCreated {
        id: TaskId(1),
        service: "web".into(),
        slot: Some(1),
        node: None,
    };
    assert_eq!(
        (task.event_type(), task.subject_name()),
        (EventType::Task, "web")
    );
    let json = serde_json::to_value(Event {
        index: 3,
        seq: 0,
        time: Timestamp(5),
        kind: task,
    })
    .expect("json");
    assert_eq!(json["action"], "task_created");
    assert_eq!(json["index"], 3);
}

#[test]
fn a_retried_create_answered_from_the_request_log_names_nothing_again() {
    let mut state = cluster(1);
    let cmd = Command::CreateService {
        spec: spec("once", 1),
        at: Timestamp(1),
    };
    let request = Some(crate::RequestId(42));
    let mut events = Vec::new();
    for index in [1, 2] {
        let probe = Probe::before(&state, &cmd);
        let outcome = state.apply_request(request, &cmd).expect("created");
        events.extend(probe.after(&state, &cmd, &outcome, index, Timestamp(1)));
    }
    assert_eq!(events.len(), 1, "{events:?}");
}

#[test]
fn a_batch_that_reports_one_task_twice_names_one_change() {
    let mut state = cluster(1);
    create(&mut state, spec("twice", 1));
    pass(&mut state, 1);
    let (task, node) = state
        .tasks
        .values()
        .map(|t| (t.id, t.node.clone().expect("placed")))
        .next()
        .expect("a task");
    let report = Command::ReportTaskStatus {
        node,
        reports: vec![
            (task, status_at(TaskState::Starting, Timestamp(2))),
            (task, status_at(TaskState::Running, Timestamp(3))),
        ],
    };
    let events = apply(&mut state, &report, 9);
    assert_eq!(events.len(), 2, "{events:?}");
    assert!(matches!(
        events[0].kind,
        EventKind::TaskState {
            from: TaskState::Assigned,
            to: TaskState::Running,
            ..
        }
    ));
    assert!(matches!(events[1].kind, EventKind::EndpointAdded { .. }));
}

#[test]
fn a_task_leaves_its_services_endpoints_when_told_to_stop_or_when_it_fails() {
    let mut state = cluster(2);
    create(&mut state, spec("api", 2));
    let plan = crate::reconcile(&state, Timestamp(5));
    apply(
        &mut state,
        &Command::ApplyPlan {
            plan,
            at: Timestamp(5),
        },
        3,
    );
    let tasks: Vec<(TaskId, NodeId)> = state
        .tasks
        .values()
        .map(|t| (t.id, t.node.clone().expect("placed")))
        .collect();
    for (index, (task, node)) in tasks.iter().enumerate() {
        let running = Command::ReportTaskStatus {
            node: node.clone(),
            reports: vec![(*task, status_at(TaskState::Running, Timestamp(40)))],
        };
        apply(&mut state, &running, 4 + index as u64);
    }
    let endpoint = |events: &[Event]| -> Vec<(bool, TaskId, String)> {
        events
            .iter()
            .filter_map(|e| match &e.kind {
                EventKind::EndpointAdded { id, service, .. } => Some((true, *id, service.clone())),
                EventKind::EndpointRemoved { id, service, .. } => {
                    Some((false, *id, service.clone()))
                }
                _ => None,
            })
            .collect()
    };
    // One fails: it is no longer an endpoint.
    let (failed, node) = tasks[0].clone();
    let failure = Command::ReportTaskStatus {
        node,
        reports: vec![(failed, status_at(TaskState::Failed, Timestamp(50)))],
    };
    let events = apply(&mut state, &failure, 10);
    assert_eq!(endpoint(&events), [(false, failed, "api".to_owned())]);
    assert_eq!(events[1].kind.event_type(), EventType::Endpoint);
    // The service is removed: its running task is told to stop and leaves, named by the
    // service's name as it was.
    let remove = Command::RemoveService {
        id: ServiceId(0),
        at: Timestamp(60),
    };
    let events = apply(&mut state, &remove, 11);
    assert_eq!(endpoint(&events), [(false, tasks[1].0, "api".to_owned())]);
    assert!(
        kinds(&events).contains(&&EventKind::ServiceRemoved {
            id: ServiceId(0),
            name: "api".into()
        }),
        "{events:?}"
    );
}
