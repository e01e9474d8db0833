//! Worker tests on the sim executor: a stop that keeps failing is retried with a growing wait;
//! assignment changes apply only to the set they were computed from; the leader's sender keeps a
//! worker on its latest set.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use shoal_scheduler::{
    DesiredState, NodeId, Runtime, ServiceId, Task, TaskId, TaskState, Timestamp, status_at,
};
use tokio::sync::mpsc;

use super::backoff::FIRST_RETRY;
use crate::dispatch::messages::{Assignment, AssignmentDelta, AssignmentSet};
use crate::dispatch::pusher::{Leadership, Pusher, Target};
use crate::executor::{
    Executor, ExecutorError, LogLine, LogQuery, Observation, Result, RunSpec, RuntimeInfo,
    SimConfig, SimExecutor,
};

/// The sim executor, except that the first `failures` stops fail; it records every stop.
struct FailingStops {
    inner: SimExecutor,
    failures: usize,
    stops: Mutex<Vec<Instant>>,
}

impl Executor for FailingStops {
    fn runtime(&self) -> Runtime {
        self.inner.runtime()
    }
    fn describe(&self) -> BoxFuture<'_, Result<RuntimeInfo>> {
        self.inner.describe()
    }
    fn start<'a>(&'a self, spec: &'a RunSpec) -> BoxFuture<'a, Result<()>> {
        self.inner.start(spec)
    }
    fn stop(&self, task: TaskId, grace: Option<Duration>) -> BoxFuture<'_, Result<()>> {
        let attempt = {
            let mut stops = self.stops.lock().expect("stops");
            stops.push(Instant::now());
            stops.len()
        };
        if attempt <= self.failures {
            return Box::pin(async move { Err(ExecutorError::InvalidSpec("engine busy".into())) });
        }
        self.inner.stop(task, grace)
    }
    fn remove(&self, task: TaskId) -> BoxFuture<'_, Result<()>> {
        self.inner.remove(task)
    }
    fn observe(&self) -> BoxFuture<'_, Result<Vec<Observation>>> {
        self.inner.observe()
    }
    fn events(&self) -> mpsc::Receiver<Observation> {
        self.inner.events()
    }
    fn logs<'a>(
        &'a self,
        task: TaskId,
        query: &'a LogQuery,
    ) -> BoxFuture<'a, Result<Vec<LogLine>>> {
        self.inner.logs(task, query)
    }
}

fn assignment(node: &NodeId, desired: DesiredState) -> Assignment {
    Assignment {
        task: Task {
            id: TaskId(1),
            service: ServiceId(1),
            slot: Some(1),
            node: Some(node.clone()),
            spec_version: 1,
            desired,
            status: status_at(TaskState::Assigned, Timestamp(0)),
            created_at: Timestamp(0),
            not_before: Timestamp(0),
        },
        service_name: "web".into(),
        spec: Some(Arc::new(shoal_scheduler::synthetic::spec("web", 1))),
    }
}

#[tokio::test]
async fn a_failing_stop_is_retried_with_a_doubling_wait() {
    let node = NodeId::new("worker-backoff");
    let executor = Arc::new(FailingStops {
        inner: SimExecutor::new(SimConfig::new(node.clone())),
        failures: 3,
        stops: Mutex::new(Vec::new()),
    });
    let (reports_tx, mut reports) = mpsc::channel(256);
    let metrics = shoal_metrics::AgentMetrics::register(&mut Default::default());
    let (worker, _task) = super::spawn(node.clone(), executor.clone(), reports_tx, None, metrics);
    let set = |version, desired| AssignmentSet {
        term: 1,
        version,
        leader_term: 1,
        page: 0,
        pages: 1,
        tasks: vec![assignment(&node, desired)],
    };
    worker
        .assign(set(1, DesiredState::Running))
        .await
        .expect("assign");
    wait_for_report(&mut reports, TaskState::Running).await;
    worker
        .assign(set(2, DesiredState::Shutdown))
        .await
        .expect("assign");
    wait_for_report(&mut reports, TaskState::Shutdown).await;

    let stops = executor.stops.lock().expect("stops").clone();
    assert_eq!(stops.len(), 4, "three failures, then the stop that worked");
    for (i, pair) in stops.windows(2).enumerate() {
        let wait = pair[1] - pair[0];
        let least = FIRST_RETRY * (1 << i);
        assert!(
            wait >= least,
            "retry {i} after {wait:?}, expected at least {least:?}"
        );
        let most = least + Duration::from_secs(1);
        assert!(
            wait < most,
            "retry {i} after {wait:?}, far more than {least:?}"
        );
    }
}

/// A worker's status reports.
type Reports = mpsc::Receiver<Vec<(TaskId, shoal_scheduler::TaskStatus)>>;

async fn wait_for_report(reports: &mut Reports, state: TaskState) {
    let found = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(batch) = reports.recv().await {
            if batch.iter().any(|(_, s)| s.state == state) {
                return;
            }
        }
    })
    .await;
    assert!(found.is_ok(), "no {state:?} report");
}

/// A worker on the sim executor; its reports arrive on the returned receiver.
fn sim_worker(name: &str) -> (NodeId, super::WorkerHandle, Reports) {
    let node = NodeId::new(name);
    let executor = Arc::new(SimExecutor::new(SimConfig::new(node.clone())));
    let (reports_tx, reports) = mpsc::channel(256);
    let metrics = shoal_metrics::AgentMetrics::register(&mut Default::default());
    let (worker, _task) = super::spawn(node.clone(), executor, reports_tx, None, metrics);
    (node, worker, reports)
}

#[tokio::test]
async fn changes_apply_only_on_their_base() {
    let (node, worker, _reports) = sim_worker("worker-delta");
    let delta = |base, version| AssignmentDelta {
        term: 7,
        leader_term: 1,
        base,
        version,
        page: 0,
        pages: 1,
        upserts: vec![assignment(&node, DesiredState::Running)],
        removed: Vec::new(),
    };
    assert!(
        !worker.update(delta(0, 1)).await.expect("worker"),
        "nothing held yet"
    );
    let set = AssignmentSet {
        term: 7,
        version: 1,
        leader_term: 1,
        page: 0,
        pages: 1,
        tasks: Vec::new(),
    };
    worker.assign(set).await.expect("assign");
    assert!(
        !worker.update(delta(2, 3)).await.expect("worker"),
        "wrong base"
    );
    assert!(worker.update(delta(1, 2)).await.expect("worker"));
    assert_eq!(worker.holds(), Some((7, 2)));
}

#[tokio::test]
async fn the_sender_keeps_a_worker_on_the_latest_set() {
    let (node, worker, _reports) = sim_worker("worker-pusher");
    let metrics = shoal_metrics::AgentMetrics::register(&mut Default::default());
    let leadership = Leadership { epoch: 9, term: 1 };
    let pusher = Pusher::spawn(Target::Local(worker.clone()), leadership, metrics);
    let holds = |want: (u64, u64)| {
        let worker = worker.clone();
        async move {
            let reached = tokio::time::timeout(Duration::from_secs(5), async {
                while worker.holds() != Some(want) {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            })
            .await;
            assert!(
                reached.is_ok(),
                "worker holds {:?}, not {want:?}",
                worker.holds()
            );
        }
    };
    pusher.want(
        1,
        Arc::new(vec![assignment(&node, DesiredState::Running)]),
        true,
    );
    holds((9, 1)).await;
    pusher.want(
        2,
        Arc::new(vec![assignment(&node, DesiredState::Shutdown)]),
        true,
    );
    holds((9, 2)).await;
    // A worker that restarted (it holds nothing) is sent the full set again.
    pusher.heartbeat(None);
    pusher.want(3, Arc::new(Vec::new()), true);
    holds((9, 3)).await;
}
