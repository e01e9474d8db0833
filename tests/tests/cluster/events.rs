//! `shoal events` and `GET /v1/events` on a cluster of six agents (three managers, three plain
//! workers) with the sim executor: a worker follows a service's creation and its tasks
//! reaching `running` as they happen (the latency printed), the stream resumes from a cursor
//! on another agent with the same events, a drained node is named, bad queries get a clear
//! error, and the CLI prints the past events and exits with `--until 0s`.

use std::time::{Duration, Instant};

use shoal_agent::control::api::{self, CreateServiceRequest, CreateServiceResponse, EventsQuery};
use shoal_agent::control::client::{ClientError, ControlClient};
use shoal_agent::daemon::ExecutorKind;
use shoal_consensus::events::EventPage;
use shoal_scheduler::events::{Event, EventKind};
use shoal_scheduler::{Availability, TaskState};
use shoal_tests::*;

fn events_path(query: &EventsQuery) -> String {
    let encoded = serde_urlencoded::to_string(query).unwrap_or_default();
    format!("{}?{encoded}", api::EVENTS)
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(0))
        .unwrap_or(0)
}

/// Follows `query` from `after` until `done` holds for the events gathered (bounded), noting
/// when each event arrived.
async fn follow(
    client: &ControlClient,
    mut query: EventsQuery,
    done: impl Fn(&[(Event, u64)]) -> bool,
) -> Vec<(Event, u64)> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen = Vec::new();
    query.wait_ms = Some(2_000);
    while Instant::now() < deadline {
        let page: EventPage = client.get(&events_path(&query)).await.expect("events");
        let arrived = now_ms();
        seen.extend(page.events.into_iter().map(|e| (e, arrived)));
        if done(&seen) {
            return seen;
        }
        query.after = Some(page.next.to_string());
    }
    panic!("the events never showed up; got {seen:#?}");
}

fn running_of(seen: &[(Event, u64)], service: &str) -> usize {
    seen.iter()
        .filter(|(e, _)| {
            matches!(&e.kind, EventKind::TaskState { service: s, to: TaskState::Running, .. } if s == service)
        })
        .count()
}

/// Log events only (a leader change is what the serving agent saw, not part of the log), with
/// their cursors.
fn log_events(events: &[Event]) -> Vec<(u64, u32, EventKind)> {
    events
        .iter()
        .filter(|e| !matches!(e.kind, EventKind::LeaderElected { .. }))
        .map(|e| (e.index, e.seq, e.kind.clone()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_worker_follows_events_and_another_agent_resumes_them() {
    init_logging();
    let dirs = temp_dirs(6);
    let agents = start_joined(&dirs, |dir, join| async move {
        start_agent(&dir, ExecutorKind::Sim, join).await
    })
    .await;
    wait_managers(&agents, 3).await;
    let worker = client(&agents[worker_index(&agents)]);
    let follower = client(&agents[follower_index(&agents)]);
    let leader = client(&agents[leader_index(&agents)]);

    // Only new events from here on, followed from a worker (its calls go to a manager).
    let start: EventPage = worker
        .get(&events_path(&EventsQuery {
            after: Some("end".into()),
            ..EventsQuery::default()
        }))
        .await
        .expect("the end of the stream");
    let query = EventsQuery {
        after: Some(start.next.to_string()),
        types: Some("service,task".into()),
        name: Some("ev".into()),
        ..EventsQuery::default()
    };
    let created_at = now_ms();
    let _: CreateServiceResponse = follower
        .post(
            api::SERVICES,
            &CreateServiceRequest {
                spec: sim_spec("ev", 5),
            },
        )
        .await
        .expect("create through a follower");
    let seen = follow(&worker, query.clone(), |seen| running_of(seen, "ev") >= 5).await;
    assert_eq!(
        running_of(&seen, "ev"),
        5,
        "a change named twice: {seen:#?}"
    );
    let first = &seen[0].0;
    assert!(
        matches!(&first.kind, EventKind::ServiceCreated { name, .. } if name == "ev"),
        "the first event is the creation: {first:?}"
    );
    assert!(seen.iter().all(|(e, _)| e.kind.subject_name() == "ev"));
    let mut latencies: Vec<u64> = seen
        .iter()
        .filter(|(e, _)| {
            matches!(
                e.kind,
                EventKind::TaskState {
                    to: TaskState::Running,
                    ..
                }
            )
        })
        .map(|(e, arrived)| arrived.saturating_sub(e.time.0))
        .collect();
    latencies.sort_unstable();
    eprintln!(
        "events: create -> 5 tasks running seen by a worker in {} ms; state change -> event \
         received: median {} ms, max {} ms",
        seen.last().map_or(0, |(_, t)| t.saturating_sub(created_at)),
        latencies[latencies.len() / 2],
        latencies[latencies.len() - 1]
    );

    // Resumed after the creation on the leader: the same log events as the worker got.
    let after_creation = EventsQuery {
        after: Some(format!("{}.{}", first.index, first.seq)),
        ..query.clone()
    };
    let want = log_events(&seen[1..].iter().map(|(e, _)| e.clone()).collect::<Vec<_>>());
    let resumed = follow(&leader, after_creation, |got| {
        let events: Vec<Event> = got.iter().map(|(e, _)| e.clone()).collect();
        log_events(&events).len() >= want.len()
    })
    .await;
    let resumed: Vec<Event> = resumed.into_iter().map(|(e, _)| e).collect();
    assert_eq!(log_events(&resumed)[..want.len()], want[..]);

    // A drained node is named in the node events.
    let node = agents[worker_index(&agents)].node_id().to_string();
    let node_start: EventPage = worker
        .get(&events_path(&EventsQuery {
            after: Some("end".into()),
            ..EventsQuery::default()
        }))
        .await
        .expect("end");
    let _: serde_json::Value = leader
        .post(
            &api::node_update(&node),
            &api::UpdateNodeRequest {
                availability: Some(Availability::Drain),
                ..api::UpdateNodeRequest::default()
            },
        )
        .await
        .expect("drain");
    follow(
        &follower,
        EventsQuery {
            after: Some(node_start.next.to_string()),
            types: Some("node".into()),
            ..EventsQuery::default()
        },
        |seen| {
            seen.iter().any(|(e, _)| {
                matches!(&e.kind, EventKind::NodeAvailability { id, availability: Availability::Drain, .. } if id.to_string() == node)
            })
        },
    )
    .await;

    // Bad queries: a clear error, nothing else.
    for (path, says) in [
        (format!("{}?after=x", api::EVENTS), "bad event cursor"),
        (
            format!("{}?type=container", api::EVENTS),
            "unknown event type",
        ),
    ] {
        match worker.get::<EventPage>(&path).await {
            Err(ClientError::Api { status, message }) => {
                assert_eq!(status.as_u16(), 400, "{path}");
                assert!(message.contains(says), "{path}: {message}");
            }
            other => panic!("{path}: {other:?}"),
        }
    }

    // The CLI prints what happened in the last minute and exits.
    let socket = agents[worker_index(&agents)].socket().to_path_buf();
    let started = Instant::now();
    shoal_cli(
        socket.clone(),
        &[
            "events", "--since", "1m", "--until", "0s", "--filter", "name=ev",
        ],
    )
    .await
    .expect("shoal events --until 0s");
    assert!(started.elapsed() < Duration::from_secs(5));
    shoal_cli(socket.clone(), &["version"])
        .await
        .expect("shoal version answers through a worker");
    let bad = shoal_cli(socket, &["events", "--filter", "colour=red"]).await;
    assert!(bad.is_err_and(|e| e.to_string().contains("bad filter")));
}
