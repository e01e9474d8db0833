//! [`SimExecutor`]: tasks that only live in memory, for scale tests and benchmarks. Never the
//! default runtime.
//!
//! A started task is `Running` at once, or `Starting` and then `Running` after the configured
//! delay; a stopped one is `Shutdown`; [`SimExecutor::kill`] makes one `Failed`, as a crash
//! would. Every change goes to all subscribers of [`Executor::events`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures::future::BoxFuture;
use shoal_scheduler::{NodeId, Runtime, ServiceId, TaskId, TaskState};
use tokio::sync::mpsc;

use super::{
    EVENTS_CHANNEL_CAPACITY, Executor, ExecutorError, Health, LogLine, LogQuery, Observation,
    Result, RunSpec, RuntimeInfo,
};

/// Exit code reported for a task killed with [`SimExecutor::kill`] (as for SIGKILL).
pub const SIM_KILL_EXIT_CODE: i64 = 137;

/// How the simulated runtime behaves and what machine it pretends to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimConfig {
    /// This node.
    pub node_id: NodeId,
    /// Time from `start` to `Running` (zero: at once).
    pub start_delay: Duration,
    /// CPUs reported by `describe`.
    pub cpus: u64,
    /// Memory reported by `describe`, in bytes.
    pub memory_bytes: u64,
}

impl SimConfig {
    /// A node with 4 CPUs and 8 GiB whose tasks run at once.
    pub fn new(node_id: NodeId) -> Self {
        SimConfig {
            node_id,
            start_delay: Duration::ZERO,
            cpus: 4,
            memory_bytes: 8 << 30,
        }
    }
}

/// Runs tasks in memory. Cloning is shallow: clones share the tasks.
#[derive(Debug, Clone)]
pub struct SimExecutor {
    inner: Arc<SimInner>,
}

#[derive(Debug)]
struct SimInner {
    config: SimConfig,
    /// Tasks and subscribers. A `std` mutex: never held across an `.await`.
    state: Mutex<SimState>,
}

#[derive(Debug, Default)]
struct SimState {
    tasks: HashMap<TaskId, SimTask>,
    subscribers: Vec<mpsc::Sender<Observation>>,
}

#[derive(Debug, Clone)]
struct SimTask {
    service_id: ServiceId,
    slot: Option<u64>,
    spec_version: u64,
    state: TaskState,
    exit_code: Option<i64>,
    message: String,
}

impl SimTask {
    fn observation(&self, task_id: TaskId, removed: bool) -> Observation {
        Observation {
            task_id,
            service_id: self.service_id,
            slot: self.slot,
            spec_version: self.spec_version,
            state: self.state,
            exit_code: self.exit_code,
            health: Health::None,
            container_id: None,
            removed,
            message: self.message.clone(),
        }
    }
}

impl SimExecutor {
    /// A simulated runtime with no tasks.
    pub fn new(config: SimConfig) -> Self {
        SimExecutor {
            inner: Arc::new(SimInner {
                config,
                state: Mutex::new(SimState::default()),
            }),
        }
    }

    /// Makes a live task fail as if its process crashed (exit code [`SIM_KILL_EXIT_CODE`]).
    pub async fn kill(&self, task: TaskId) -> Result<()> {
        let observation = self
            .inner
            .change(task, |t| {
                if t.state.is_terminal() {
                    return false;
                }
                t.state = TaskState::Failed;
                t.exit_code = Some(SIM_KILL_EXIT_CODE);
                t.message = "killed (simulated crash)".into();
                true
            })
            .ok_or(ExecutorError::NotFound(task))?;
        if let Some(observation) = observation {
            self.inner.broadcast(observation).await;
        }
        Ok(())
    }

    /// Number of tasks held (in any state).
    pub fn len(&self) -> usize {
        self.inner.state().tasks.len()
    }

    /// Whether no task is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl SimInner {
    fn state(&self) -> MutexGuard<'_, SimState> {
        // Poisoning only means a panic elsewhere while holding the lock; the map stays usable.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Applies `f` to the task; returns `None` if unknown, `Some(None)` if `f` changed nothing,
    /// `Some(Some(observation))` after a change.
    fn change(
        &self,
        task: TaskId,
        f: impl FnOnce(&mut SimTask) -> bool,
    ) -> Option<Option<Observation>> {
        let mut state = self.state();
        let sim = state.tasks.get_mut(&task)?;
        Some(f(sim).then(|| sim.observation(task, false)))
    }

    /// Sends `observation` to every live subscriber, waiting when one is full.
    async fn broadcast(&self, observation: Observation) {
        let subscribers: Vec<mpsc::Sender<Observation>> = {
            let mut state = self.state();
            state.subscribers.retain(|s| !s.is_closed());
            state.subscribers.clone()
        };
        for subscriber in subscribers {
            // A receiver dropped meanwhile is pruned on the next broadcast.
            let _ = subscriber.send(observation.clone()).await;
        }
    }

    async fn start(self: Arc<Self>, run: &RunSpec) -> Result<()> {
        if run.node_id != self.config.node_id {
            return Err(ExecutorError::InvalidSpec(format!(
                "task {} is for node {}, not this node ({})",
                run.task_id, run.node_id, self.config.node_id
            )));
        }
        let delayed = !self.config.start_delay.is_zero();
        let observation = {
            let mut state = self.state();
            if let Some(existing) = state.tasks.get(&run.task_id) {
                if existing.state.is_terminal() {
                    return Err(ExecutorError::AlreadyEnded {
                        task: run.task_id,
                        state: existing.state,
                    });
                }
                return Ok(());
            }
            let (task_state, message) = if delayed {
                (TaskState::Starting, "starting (simulated)")
            } else {
                (TaskState::Running, "running (simulated)")
            };
            let sim = SimTask {
                service_id: run.service_id,
                slot: run.slot,
                spec_version: run.spec_version,
                state: task_state,
                exit_code: None,
                message: message.into(),
            };
            let observation = sim.observation(run.task_id, false);
            state.tasks.insert(run.task_id, sim);
            observation
        };
        self.broadcast(observation).await;
        if delayed {
            let inner = self.clone();
            let task = run.task_id;
            tokio::spawn(async move {
                tokio::time::sleep(inner.config.start_delay).await;
                let changed = inner.change(task, |t| {
                    let starting = t.state == TaskState::Starting;
                    if starting {
                        t.state = TaskState::Running;
                        t.message = "running (simulated)".into();
                    }
                    starting
                });
                if let Some(Some(observation)) = changed {
                    inner.broadcast(observation).await;
                }
            });
        }
        Ok(())
    }

    async fn stop(&self, task: TaskId) -> Result<()> {
        let changed = self.change(task, |t| {
            if t.state.is_terminal() {
                return false;
            }
            t.state = TaskState::Shutdown;
            t.exit_code = Some(0);
            t.message = "stopped by shoal".into();
            true
        });
        if let Some(Some(observation)) = changed {
            self.broadcast(observation).await;
        }
        Ok(())
    }

    async fn remove(&self, task: TaskId) -> Result<()> {
        let removed = self.state().tasks.remove(&task);
        if let Some(mut sim) = removed {
            if !sim.state.is_terminal() {
                sim.state = TaskState::Shutdown;
                sim.message = "removed by shoal".into();
            }
            self.broadcast(sim.observation(task, true)).await;
        }
        Ok(())
    }
}

impl Executor for SimExecutor {
    fn runtime(&self) -> Runtime {
        Runtime::Sim
    }

    fn describe(&self) -> BoxFuture<'_, Result<RuntimeInfo>> {
        let config = &self.inner.config;
        let info = RuntimeInfo {
            runtime: Runtime::Sim,
            cpus: config.cpus,
            memory_bytes: config.memory_bytes,
            os: std::env::consts::OS.to_string(),
            arch: std::env::consts::ARCH.to_string(),
            engine_version: format!("shoal-sim {}", env!("CARGO_PKG_VERSION")),
        };
        Box::pin(async move { Ok(info) })
    }

    fn start<'a>(&'a self, spec: &'a RunSpec) -> BoxFuture<'a, Result<()>> {
        Box::pin(self.inner.clone().start(spec))
    }

    fn stop(&self, task: TaskId, _grace: Option<Duration>) -> BoxFuture<'_, Result<()>> {
        Box::pin(self.inner.stop(task))
    }

    fn remove(&self, task: TaskId) -> BoxFuture<'_, Result<()>> {
        Box::pin(self.inner.remove(task))
    }

    fn observe(&self) -> BoxFuture<'_, Result<Vec<Observation>>> {
        let mut all: Vec<Observation> = self
            .inner
            .state()
            .tasks
            .iter()
            .map(|(id, t)| t.observation(*id, false))
            .collect();
        all.sort_by_key(|o| o.task_id);
        Box::pin(async move { Ok(all) })
    }

    fn events(&self) -> mpsc::Receiver<Observation> {
        let (tx, rx) = mpsc::channel(EVENTS_CHANNEL_CAPACITY);
        self.inner.state().subscribers.push(tx);
        rx
    }

    /// A simulated task writes nothing: its output is empty (a task it does not know is
    /// [`ExecutorError::NotFound`], as a removed container is).
    fn logs<'a>(
        &'a self,
        task: TaskId,
        _query: &'a LogQuery,
    ) -> BoxFuture<'a, Result<Vec<LogLine>>> {
        let known = self.inner.state().tasks.contains_key(&task);
        Box::pin(async move {
            if known {
                Ok(Vec::new())
            } else {
                Err(ExecutorError::NotFound(task))
            }
        })
    }
}
