//! The worker: keeps this node's assigned tasks converged through the executor and reports every
//! state change.
//!
//! It is one actor task. Inputs: assignment sets from the leader, the executor's event stream, the
//! results of the operations it started, and a periodic full observation. Output: status reports on
//! a bounded channel that the dispatch client delivers to the leader. It keeps its tasks running
//! while no manager is reachable, adopts its own containers after a restart (the executor finds
//! them by label), and removes containers of tasks it is no longer assigned — but only once a
//! leader has told it what it should run.

mod backoff;
mod converge;
mod pages;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use shoal_scheduler::{NodeId, TaskId, TaskState, TaskStatus, Timestamp};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinSet;

use shoal_metrics::AgentMetrics;
use shoal_metrics::agent::{ExecutorOpLabels, OpResult};

use crate::dispatch::messages::{Assignment, AssignmentDelta, AssignmentSet};
use crate::executor::{Executor, ExecutorError, Observation, RunSpec};
use futures::future::BoxFuture;
use shoal_consensus::sealed::TaskFile;

pub use converge::Action;

use backoff::Backoffs;
use pages::{DeltaPage, DeltaPages, Pages};

/// How often the worker re-reads every container, in case an event was missed.
const RESYNC_INTERVAL: Duration = Duration::from_secs(30);
/// Executor operations run at once (Docker handles ~8 concurrent callers well).
const MAX_CONCURRENT_OPERATIONS: usize = 16;
/// How long a started task may go unobserved before its absence counts as a vanished container.
const UNSEEN_GRACE: Duration = Duration::from_secs(10);
/// How long the worker remembers that it removed a task's container (late events about it
/// arrive within milliseconds; a resync lists only what exists).
const REMOVED_MEMORY: Duration = Duration::from_secs(30);
/// Capacity of the worker's input channel.
const INPUT_CAPACITY: usize = 64;
/// How often the worker looks at every task, whatever happened (the safety net of its
/// event-driven looks).
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);
/// Statuses handed to the delivery queue in one batch at most.
const REPORT_BATCH: usize = 1_000;

/// What the worker is told.
#[derive(Debug)]
pub enum WorkerInput {
    /// The full set of tasks this node should converge (from the current leader).
    Assign(AssignmentSet),
    /// Changes to the set held; answers whether they applied (the worker held their base).
    Update(AssignmentDelta, oneshot::Sender<bool>),
    /// Answer with the `(term, version)` of the set held.
    Holds(oneshot::Sender<Option<(u64, u64)>>),
}

/// A cloneable handle to the worker actor.
#[derive(Debug, Clone)]
pub struct WorkerHandle {
    inputs: mpsc::Sender<WorkerInput>,
    holds: watch::Receiver<Option<(u64, u64)>>,
}

impl WorkerHandle {
    /// Hands the worker a new assignment set. Fails only when the worker stopped.
    pub async fn assign(&self, set: AssignmentSet) -> Result<(), WorkerStopped> {
        self.inputs
            .send(WorkerInput::Assign(set))
            .await
            .map_err(|_| WorkerStopped)
    }

    /// Hands the worker changes to the set it holds; `Ok(false)` when it does not hold their
    /// base and needs the full set.
    pub async fn update(&self, delta: AssignmentDelta) -> Result<bool, WorkerStopped> {
        let (reply, applied) = oneshot::channel();
        self.inputs
            .send(WorkerInput::Update(delta, reply))
            .await
            .map_err(|_| WorkerStopped)?;
        applied.await.map_err(|_| WorkerStopped)
    }

    /// The `(term, version)` of the assignment set the worker holds.
    pub fn holds(&self) -> Option<(u64, u64)> {
        *self.holds.borrow()
    }
}

/// Where the worker gets the files (secrets opened, configs) of a task whose spec mounts them,
/// just before starting it: the leader, over the mesh ([`crate::dispatch::files::FileFetcher`]).
pub trait TaskFileSource: Send + Sync + 'static {
    /// Every file of `task`: [`ExecutorError::InvalidSpec`] when they are refused to this node
    /// (the task is rejected), [`ExecutorError::FilesUnavailable`] when no leader could give them
    /// in time.
    fn fetch(&self, task: TaskId) -> BoxFuture<'_, Result<Vec<TaskFile>, ExecutorError>>;
}

/// The worker actor has stopped.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the worker has stopped")]
pub struct WorkerStopped;

/// Starts the worker of `node` on `executor`. Status reports are sent on `reports`; the files
/// of tasks that mount secrets or configs come from `files` (without one, such tasks are
/// rejected).
pub fn spawn(
    node: NodeId,
    executor: Arc<dyn Executor>,
    reports: mpsc::Sender<Vec<(TaskId, TaskStatus)>>,
    files: Option<Arc<dyn TaskFileSource>>,
    metrics: AgentMetrics,
) -> (WorkerHandle, tokio::task::JoinHandle<()>) {
    let (inputs, input_rx) = mpsc::channel(INPUT_CAPACITY);
    let (holds_tx, holds) = watch::channel(None);
    let worker = Worker {
        node,
        events: executor.events(),
        executor,
        reports,
        files,
        holds: holds_tx,
        assignments: BTreeMap::new(),
        pages: Pages::default(),
        delta_pages: DeltaPages::default(),
        told: false,
        observed: HashMap::new(),
        reported: HashMap::new(),
        busy: HashSet::new(),
        unseen: HashMap::new(),
        seen_at: HashMap::new(),
        removed: HashMap::new(),
        backoffs: Backoffs::default(),
        dirty: BTreeSet::new(),
        look_at_all: true,
        unsent: BTreeMap::new(),
        operations: JoinSet::new(),
        metrics,
    };
    let task = tokio::spawn(worker.run(input_rx));
    (WorkerHandle { inputs, holds }, task)
}

/// The outcome of one executor operation.
struct Done {
    task: TaskId,
    action: Action,
    result: Result<(), ExecutorError>,
    took: Duration,
}

struct Worker {
    node: NodeId,
    executor: Arc<dyn Executor>,
    events: mpsc::Receiver<Observation>,
    reports: mpsc::Sender<Vec<(TaskId, TaskStatus)>>,
    /// Where the files of tasks that mount secrets or configs come from.
    files: Option<Arc<dyn TaskFileSource>>,
    holds: watch::Sender<Option<(u64, u64)>>,
    /// What the leader wants, by task.
    assignments: BTreeMap<TaskId, Assignment>,
    /// The pages of a set being received.
    pages: Pages,
    /// The pages of changes being received.
    delta_pages: DeltaPages,
    /// Whether any leader has sent a set since start (until then nothing is removed).
    told: bool,
    /// What the executor last showed, by task.
    observed: HashMap<TaskId, Observation>,
    /// The last state reported per task, so that each state is reported once.
    reported: HashMap<TaskId, TaskState>,
    /// Tasks with an executor operation in flight (bounded by [`MAX_CONCURRENT_OPERATIONS`]).
    busy: HashSet<TaskId>,
    /// Started tasks not yet seen by the executor's events, with when their start finished, so
    /// a start is never mistaken for a vanished container. They do not count as busy.
    unseen: HashMap<TaskId, Instant>,
    /// When each observed task was last seen by an event or a resync.
    seen_at: HashMap<TaskId, Instant>,
    /// Tasks whose container this worker stopped and removed, and when: a late event about the
    /// container (its `die`, inspected after the removal) is reported but not taken as a sign
    /// that the container is still there.
    removed: HashMap<TaskId, Instant>,
    /// Tasks whose stop or removal failed, waiting before the next attempt.
    backoffs: Backoffs,
    /// Tasks something happened to since the worker last looked at them.
    dirty: BTreeSet<TaskId>,
    /// Whether the next look takes every task (a new set, a resync, the periodic sweep).
    look_at_all: bool,
    /// Statuses not yet handed to the delivery queue (the latest per task).
    unsent: BTreeMap<TaskId, TaskStatus>,
    operations: JoinSet<Done>,
    metrics: AgentMetrics,
}

impl Worker {
    async fn run(mut self, mut inputs: mpsc::Receiver<WorkerInput>) {
        // Adopt what already runs before acting on anything.
        let started = Instant::now();
        let initial = self.executor.observe().await;
        self.on_resync(started, initial);
        let mut resync = tokio::time::interval_at(
            tokio::time::Instant::now() + RESYNC_INTERVAL,
            RESYNC_INTERVAL,
        );
        resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut resyncs: JoinSet<(Instant, crate::executor::Result<Vec<Observation>>)> =
            JoinSet::new();
        let mut sweep = tokio::time::interval(SWEEP_INTERVAL);
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let retry_at = self.backoffs.next_due(Instant::now());
            tokio::select! {
                input = inputs.recv() => match input {
                    Some(input) => self.on_input(input),
                    None => break,
                },
                Some(observation) = self.events.recv() => self.on_observation(observation),
                Some(done) = self.operations.join_next(), if !self.operations.is_empty() => {
                    if let Ok(done) = done { self.on_done(done); }
                }
                _ = resync.tick(), if resyncs.is_empty() => {
                    // Off the actor's path: inspecting every container takes a while.
                    let executor = self.executor.clone();
                    resyncs.spawn(async move { (Instant::now(), executor.observe().await) });
                }
                Some(Ok((started, all))) = resyncs.join_next(), if !resyncs.is_empty() => {
                    self.on_resync(started, all);
                }
                _ = sweep.tick() => self.look_at_all = true,
                _ = sleep_until(retry_at), if retry_at.is_some() => self.look_at_all = true,
            }
            self.converge();
            self.flush_reports();
        }
        tracing::debug!(node = %self.node, "worker stopped");
    }

    fn on_input(&mut self, input: WorkerInput) {
        match input {
            WorkerInput::Assign(page) => {
                let Some(set) = self.pages.take(page) else {
                    return;
                };
                let held = *self.holds.borrow();
                if held.is_some_and(|(term, version)| term == set.term && version > set.version) {
                    // An older set of the same leader, overtaken by a newer one.
                    return;
                }
                tracing::debug!(
                    term = set.term,
                    version = set.version,
                    tasks = set.tasks.len(),
                    "assignments"
                );
                self.assignments = set.tasks.into_iter().map(|a| (a.task.id, a)).collect();
                self.told = true;
                self.look_at_all = true;
                self.holds.send_replace(Some((set.term, set.version)));
                self.forget_unassigned_reports();
            }
            WorkerInput::Update(page, reply) => {
                let holds_base = *self.holds.borrow() == Some((page.term, page.base));
                let delta = match self.delta_pages.take(page) {
                    DeltaPage::Whole(delta) => delta,
                    DeltaPage::Taken => {
                        let _ = reply.send(holds_base);
                        return;
                    }
                    DeltaPage::Dropped => {
                        let _ = reply.send(false);
                        return;
                    }
                };
                let applies = *self.holds.borrow() == Some((delta.term, delta.base));
                if applies {
                    tracing::debug!(
                        term = delta.term,
                        version = delta.version,
                        upserts = delta.upserts.len(),
                        removed = delta.removed.len(),
                        "assignment changes"
                    );
                    for task in &delta.removed {
                        self.assignments.remove(task);
                    }
                    self.dirty.extend(delta.removed.iter().copied());
                    self.dirty.extend(delta.upserts.iter().map(|a| a.task.id));
                    let upserts = delta.upserts.into_iter().map(|a| (a.task.id, a));
                    self.assignments.extend(upserts);
                    self.holds.send_replace(Some((delta.term, delta.version)));
                    self.forget_unassigned_reports();
                }
                let _ = reply.send(applies);
            }
            WorkerInput::Holds(reply) => {
                let _ = reply.send(*self.holds.borrow());
            }
        }
    }

    fn forget_unassigned_reports(&mut self) {
        let assignments = &self.assignments;
        let observed = &self.observed;
        self.reported
            .retain(|task, _| assignments.contains_key(task) || observed.contains_key(task));
    }

    fn on_observation(&mut self, observation: Observation) {
        let task = observation.task_id;
        self.dirty.insert(task);
        self.unseen.remove(&task);
        if observation.removed || self.removed.contains_key(&task) {
            self.observed.remove(&task);
            self.seen_at.remove(&task);
        } else {
            self.seen_at.insert(task, Instant::now());
            self.observed.insert(task, observation.clone());
        }
        self.report_observation(&observation);
    }

    /// Folds in a full observation of the runtime (the safety net for missed events).
    /// Events seen after `started` are newer than the resync and win over it.
    fn on_resync(&mut self, started: Instant, observed: crate::executor::Result<Vec<Observation>>) {
        self.look_at_all = true;
        match observed {
            Ok(all) => {
                let newer = |seen_at: &HashMap<TaskId, Instant>, task: &TaskId| {
                    seen_at.get(task).is_some_and(|at| *at > started)
                };
                let listed: HashSet<TaskId> = all.iter().map(|o| o.task_id).collect();
                let (busy, seen_at) = (&self.busy, &self.seen_at);
                self.observed.retain(|task, _| {
                    listed.contains(task) || busy.contains(task) || newer(seen_at, task)
                });
                let removed = &self.removed;
                let fresh: Vec<Observation> = all
                    .into_iter()
                    .filter(|o| {
                        !newer(&self.seen_at, &o.task_id) && !removed.contains_key(&o.task_id)
                    })
                    .collect();
                for observation in fresh {
                    self.seen_at.insert(observation.task_id, started);
                    self.observed
                        .insert(observation.task_id, observation.clone());
                    self.report_observation(&observation);
                }
                let observed = &self.observed;
                self.seen_at.retain(|task, _| observed.contains_key(task));
            }
            Err(error) => tracing::warn!(%error, "cannot observe the runtime; will retry"),
        }
    }

    fn on_done(&mut self, done: Done) {
        self.busy.remove(&done.task);
        self.dirty.insert(done.task);
        self.record_operation(&done);
        // A container stopped and removed is gone, whatever the events say later: without this
        // the task would look stoppable again until the `destroy` event arrives.
        let removed = done.action == Action::StopAndRemove && done.result.is_ok();
        let gone = removed
            || (done.action == Action::StopAndRemove && !self.assignments.contains_key(&done.task));
        match (done.action, done.result) {
            (Action::Start, Ok(())) => {
                // Until the executor shows it started, what it showed before (nothing, or a
                // created container) is out of date: do not start it again meanwhile.
                let shown_started = self
                    .observed
                    .get(&done.task)
                    .is_some_and(|o| o.state >= TaskState::Starting);
                if !shown_started {
                    self.observed.remove(&done.task);
                    self.unseen.insert(done.task, Instant::now());
                }
            }
            (_, Ok(())) => {}
            (Action::Start, Err(error)) => {
                let state = if error.rejects_task() {
                    TaskState::Rejected
                } else {
                    TaskState::Failed
                };
                tracing::warn!(task = %done.task, %error, "task could not start");
                self.report(done.task, state, error.to_string(), None, None);
            }
            (action, Err(error)) => {
                let retry_at = self.backoffs.failed(done.task, Instant::now());
                let wait = retry_at.saturating_duration_since(Instant::now());
                tracing::warn!(task = %done.task, ?action, %error, ?wait, "operation failed; will retry")
            }
        }
        if removed {
            self.removed.insert(done.task, Instant::now());
            self.backoffs.clear(done.task);
        }
        if gone {
            self.observed.remove(&done.task);
            self.seen_at.remove(&done.task);
        }
    }

    /// Decides and starts what moves the tasks something happened to (or, now and then, every
    /// task) toward their desired state, in task order. A task that must wait is looked at
    /// again when its wait ends: an operation in flight when it is done, a start not yet seen
    /// when it is seen or its grace ends, a back-off when it is due (every task is looked at
    /// then). Once every operation slot is taken the rest wait for the next turn untouched, so
    /// a turn costs what it can do, not what is pending.
    fn converge(&mut self) {
        let now = Instant::now();
        let expired: Vec<TaskId> = self
            .unseen
            .iter()
            .filter(|(_, at)| at.elapsed() > UNSEEN_GRACE)
            .map(|(task, _)| *task)
            .collect();
        for task in expired {
            self.unseen.remove(&task);
            self.dirty.insert(task);
        }
        self.removed.retain(|_, at| at.elapsed() <= REMOVED_MEMORY);
        let (assignments, observed) = (&self.assignments, &self.observed);
        self.backoffs
            .retain(|task| assignments.contains_key(task) || observed.contains_key(task));
        if std::mem::take(&mut self.look_at_all) {
            let all = self.assignments.keys().chain(self.observed.keys());
            self.dirty.extend(all.copied());
        }
        let waiting: HashSet<TaskId> = self.backoffs.waiting(now).collect();
        while let Some(task) = self.dirty.pop_first() {
            if self.busy.contains(&task)
                || self.unseen.contains_key(&task)
                || waiting.contains(&task)
            {
                continue;
            }
            let decided = converge::decide(
                task,
                &self.assignments,
                &self.observed,
                &self.reported,
                self.told,
            );
            match decided {
                None => {}
                Some(Action::ReportShutdown) => {
                    self.report(task, TaskState::Shutdown, "stopped".into(), None, None);
                }
                Some(Action::ReportMissing) => {
                    let why = "container disappeared".into();
                    self.report(task, TaskState::Failed, why, None, None);
                }
                Some(action) if !self.launch(task, action) => {
                    self.dirty.insert(task);
                    break;
                }
                Some(_) => {}
            }
        }
    }

    /// Starts `action` for `task`; false when no operation slot is free.
    fn launch(&mut self, task: TaskId, action: Action) -> bool {
        if self.busy.len() >= MAX_CONCURRENT_OPERATIONS {
            return false;
        }
        let executor = self.executor.clone();
        if action == Action::Start {
            let Some(spec) = self.run_spec(task) else {
                return true;
            };
            self.busy.insert(task);
            self.report(task, TaskState::Starting, String::new(), None, None);
            let files = self.files.clone();
            self.operations.spawn(async move {
                let started = Instant::now();
                let result = match with_files(spec, files.as_deref()).await {
                    Ok(spec) => executor.start(&spec).await,
                    Err(error) => Err(error),
                };
                let took = started.elapsed();
                Done {
                    task,
                    action,
                    result,
                    took,
                }
            });
            return true;
        }
        let grace = self
            .assignments
            .get(&task)
            .and_then(|a| a.spec.as_ref())
            // A task whose spec is gone (its service removed, or moved away while this node
            // was cut off) stops with the grace it was started with.
            .map(|spec| Duration::from_millis(spec.stop_grace_ms));
        self.busy.insert(task);
        self.operations.spawn(async move {
            let started = Instant::now();
            let result = match executor.stop(task, grace).await {
                Ok(()) => executor.remove(task).await,
                Err(error) => Err(error),
            };
            let took = started.elapsed();
            Done {
                task,
                action,
                result,
                took,
            }
        });
        true
    }

    fn record_operation(&self, done: &Done) {
        let op = if done.action == Action::Start {
            "start"
        } else {
            "stop_remove"
        };
        let result = if done.result.is_ok() {
            OpResult::Ok
        } else {
            OpResult::Error
        };
        let labels = ExecutorOpLabels {
            op: op.into(),
            result,
        };
        self.metrics
            .executor_operations
            .get_or_create(&labels)
            .inc();
        self.metrics
            .executor_operation_seconds
            .get_or_create(&labels)
            .observe(done.took.as_secs_f64());
    }

    /// Records how long `task` took from creation to running.
    fn observe_scheduling_delay(&self, task: TaskId) {
        if let Some(assignment) = self.assignments.get(&task) {
            let delay = now().millis_since(assignment.task.created_at);
            self.metrics
                .task_scheduling_delay_seconds
                .observe(delay as f64 / 1000.0);
        }
    }

    fn run_spec(&self, task: TaskId) -> Option<RunSpec> {
        let assignment = self.assignments.get(&task)?;
        Some(RunSpec {
            task_id: task,
            service_id: assignment.task.service,
            service_name: assignment.service_name.clone(),
            slot: assignment.task.slot,
            node_id: self.node.clone(),
            spec_version: assignment.task.spec_version,
            spec: assignment.spec.clone()?,
            files: Arc::from([]),
        })
    }

    fn report_observation(&mut self, observation: &Observation) {
        if observation.removed {
            return;
        }
        self.report(
            observation.task_id,
            observation.state,
            observation.message.clone(),
            observation.exit_code,
            observation.container_id.clone(),
        );
    }

    /// Reports `state` for `task` if it moves the task forward.
    fn report(
        &mut self,
        task: TaskId,
        state: TaskState,
        message: String,
        exit_code: Option<i64>,
        container_id: Option<String>,
    ) {
        if self.reported.get(&task).is_some_and(|last| *last >= state) {
            return;
        }
        self.reported.insert(task, state);
        if state == TaskState::Running {
            self.observe_scheduling_delay(task);
        }
        let status = TaskStatus {
            state,
            message,
            exit_code,
            timestamp: now(),
            container_id,
        };
        // A newer status of the same task replaces one not yet handed over.
        self.unsent.insert(task, status);
    }

    /// Hands the statuses not yet delivered to the delivery queue, in batches; what does not
    /// fit now waits for the next turn (nothing is dropped).
    fn flush_reports(&mut self) {
        while !self.unsent.is_empty() {
            let permit = match self.reports.try_reserve() {
                Ok(permit) => permit,
                Err(_) => return,
            };
            let rest = self
                .unsent
                .keys()
                .nth(REPORT_BATCH)
                .copied()
                .map(|at| self.unsent.split_off(&at))
                .unwrap_or_default();
            let batch = std::mem::replace(&mut self.unsent, rest);
            permit.send(batch.into_iter().collect());
        }
    }
}

/// `spec` with its files, fetched from `source` when its spec mounts any. The files live only
/// as long as the start: the executor keeps them in memory.
async fn with_files(
    mut spec: RunSpec,
    source: Option<&dyn TaskFileSource>,
) -> Result<RunSpec, ExecutorError> {
    if !spec.needs_files() {
        return Ok(spec);
    }
    let source = source.ok_or_else(|| {
        ExecutorError::InvalidSpec("this node cannot receive secrets and configs".into())
    })?;
    spec.files = source.fetch(spec.task_id).await?.into();
    Ok(spec)
}

/// Milliseconds since the Unix epoch.
pub fn now() -> Timestamp {
    Timestamp(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0),
    )
}

/// Sleeps until `at`, or forever when there is nothing to wait for.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests;
