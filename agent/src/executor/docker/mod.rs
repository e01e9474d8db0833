//! [`DockerExecutor`]: tasks as containers of the local Docker engine, through bollard.
//!
//! The executor owns one bollard client (cheap to clone: it shares its connection pool) and a
//! small ledger of the containers it knows (task -> container id, and which tasks it is stopping
//! or removing on purpose, so that their exit reads as `Shutdown` rather than `Failed`).
//!
//! # Layout
//! - this file: configuration, connection, the [`Executor`] implementation, stop/remove/logs.
//! - `create`: the container body built from a [`RunSpec`], image handling, start and adoption.
//! - `observe`: a container's inspect result turned into an [`Observation`]; listing by label.
//! - `events`: Docker's event stream turned into observations, reconnecting with backoff.
//! - `network`: the service network the tasks join, and their addresses on it.
//! - `files`: the secrets and configs of tasks, on a tmpfs, bind-mounted into their containers.

mod create;
mod events;
mod files;
mod network;
mod observe;

pub use files::{DEFAULT_FILES_BASE, TaskFilesRoot};

pub use network::{AttachedNetwork, LABEL_NETWORK, NetworkConfig};

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bollard::Docker;
use bollard::container::LogOutput;
use bollard::query_parameters::{
    KillContainerOptions, ListContainersOptionsBuilder, LogsOptionsBuilder,
    RemoveContainerOptionsBuilder, StopContainerOptionsBuilder,
};
use futures::StreamExt;
use futures::future::BoxFuture;
use shoal_scheduler::{NodeId, Runtime, TaskId};
use tokio::sync::{Semaphore, mpsc};

use super::{
    Executor, ExecutorError, LABEL_NODE_ID, LABEL_TASK_ID, LogLine, LogQuery, LogStream,
    Observation, Result, RunSpec, RuntimeInfo,
};

/// Where the engine is looked for when neither the config nor `DOCKER_HOST` says.
pub const DEFAULT_DOCKER_HOST: &str = "unix:///var/run/docker.sock";
/// Most lines [`Executor::logs`] returns.
pub const MAX_LOG_LINES: usize = 10_000;
/// Longest log line returned, in bytes (longer lines are cut).
pub const MAX_LOG_LINE_BYTES: usize = 8 * 1024;
/// How many recently removed tasks are remembered (to tell our removals from others').
const REMEMBERED_REMOVALS: usize = 4096;
/// How long a stop may take when the grace is the container's own (at most the longest
/// grace a spec is likely to give, beyond which the stop is given up and the container killed).
const UNKNOWN_GRACE_WAIT: Duration = Duration::from_secs(120);

/// Whether the executor may pull an image that is not on the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum PullPolicy {
    /// Never pull: a missing image rejects the task at once. Tests use this.
    Never,
    /// Pull when the image is not on the node.
    #[default]
    IfMissing,
}

/// How to reach and use the Docker engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DockerConfig {
    /// Engine address (`unix:///var/run/docker.sock`, `tcp://...`); `None` = `DOCKER_HOST`, else
    /// [`DEFAULT_DOCKER_HOST`].
    pub host: Option<String>,
    /// This node: put on every container's labels and used to find them again.
    pub node_id: NodeId,
    /// Whether missing images are pulled.
    pub pull: PullPolicy,
    /// Container starts (create + start) in flight at once; more wait their turn.
    pub max_concurrent_starts: usize,
    /// How long [`DockerExecutor::connect`] waits for the engine to answer.
    pub connect_timeout: Duration,
    /// Longest wait for the answer to one API call (stop adds the grace period to it).
    pub request_timeout: Duration,
    /// Longest wait for an image pull.
    pub pull_timeout: Duration,
    /// The service network every task joins (made when missing); `None` leaves tasks on the
    /// engine's default bridge.
    pub network: Option<NetworkConfig>,
    /// Where the secrets and configs of tasks are written (a tmpfs); `None`:
    /// [`TaskFilesRoot::default_for`] the node.
    pub files_root: Option<std::path::PathBuf>,
}

impl DockerConfig {
    /// Defaults for node `node_id`: the local engine, pull if missing, 8 concurrent starts.
    pub fn new(node_id: NodeId) -> Self {
        DockerConfig {
            host: None,
            node_id,
            pull: PullPolicy::default(),
            max_concurrent_starts: 8,
            connect_timeout: Duration::from_secs(3),
            request_timeout: Duration::from_secs(60),
            pull_timeout: Duration::from_secs(600),
            network: None,
            files_root: None,
        }
    }
}

/// Runs tasks as containers of a Docker engine. Cloning is shallow: clones share the client and
/// the ledger.
#[derive(Clone)]
pub struct DockerExecutor {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for DockerExecutor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DockerExecutor")
            .field("endpoint", &self.inner.endpoint)
            .field("node_id", &self.inner.config.node_id)
            .finish_non_exhaustive()
    }
}

/// What every operation shares.
struct Inner {
    docker: Docker,
    endpoint: String,
    network: Option<AttachedNetwork>,
    config: DockerConfig,
    start_permits: Semaphore,
    ledger: Mutex<Ledger>,
    pull_attempts: AtomicU64,
    files: TaskFilesRoot,
}

/// The containers this executor knows. Guarded by a `std` mutex: it is never held across an
/// `.await`.
#[derive(Default)]
struct Ledger {
    containers: HashMap<TaskId, Known>,
    removed: VecDeque<TaskId>,
}

/// One known container.
struct Known {
    container_id: String,
    stopping: bool,
}

impl DockerExecutor {
    /// Connects to the engine and agrees on an API version. Fails with
    /// [`ExecutorError::EngineUnavailable`] when no engine answers within the connect timeout.
    pub async fn connect(config: DockerConfig) -> Result<Self> {
        let endpoint = config
            .host
            .clone()
            .or_else(|| std::env::var("DOCKER_HOST").ok().filter(|h| !h.is_empty()))
            .unwrap_or_else(|| DEFAULT_DOCKER_HOST.to_string());
        let unavailable = |reason: String| ExecutorError::EngineUnavailable {
            endpoint: endpoint.clone(),
            reason,
        };
        let docker = Docker::connect_with_host(&endpoint)
            .map_err(|e| unavailable(e.to_string()))?
            .with_timeout(config.request_timeout);
        let docker =
            match tokio::time::timeout(config.connect_timeout, docker.negotiate_version()).await {
                Ok(Ok(docker)) => docker,
                Ok(Err(e)) => return Err(unavailable(e.to_string())),
                Err(_) => {
                    return Err(unavailable(format!(
                        "no answer within {} ms",
                        config.connect_timeout.as_millis()
                    )));
                }
            };
        let permits = config.max_concurrent_starts.max(1);
        let network = match &config.network {
            Some(wanted) => match network::ensure(&docker, wanted).await {
                Ok(network) => Some(network),
                Err(error) => {
                    tracing::warn!(
                        %error,
                        "no service network: tasks run on the engine's default bridge, without \
                         service names or virtual addresses"
                    );
                    None
                }
            },
            None => None,
        };
        let files = match &config.files_root {
            Some(root) => TaskFilesRoot::at(root),
            None => TaskFilesRoot::default_for(&config.node_id),
        };
        let executor = DockerExecutor {
            inner: Arc::new(Inner {
                docker,
                endpoint,
                network,
                start_permits: Semaphore::new(permits),
                config,
                ledger: Mutex::new(Ledger::default()),
                pull_attempts: AtomicU64::new(0),
                files,
            }),
        };
        executor.inner.prune_task_files().await;
        Ok(executor)
    }

    /// The engine address in use.
    pub fn endpoint(&self) -> &str {
        &self.inner.endpoint
    }

    /// This executor's node.
    pub fn node_id(&self) -> &NodeId {
        &self.inner.config.node_id
    }

    /// How many image pulls this executor attempted (a pull policy of `Never` keeps it at 0).
    pub fn pull_attempts(&self) -> u64 {
        self.inner.pull_attempts.load(Ordering::Relaxed)
    }

    /// The bollard client, for callers that need a raw API call (benchmark floors, tests).
    pub fn client(&self) -> &Docker {
        &self.inner.docker
    }
}

impl Inner {
    fn ledger(&self) -> MutexGuard<'_, Ledger> {
        // A poisoned lock only means another thread panicked while holding it; the ledger is a
        // cache of plain values that stays consistent, so keep using it.
        self.ledger
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn remember(&self, task: TaskId, container_id: &str) {
        let mut ledger = self.ledger();
        let entry = ledger.containers.entry(task).or_insert_with(|| Known {
            container_id: container_id.to_string(),
            stopping: false,
        });
        if entry.container_id != container_id {
            entry.container_id = container_id.to_string();
            entry.stopping = false;
        }
    }

    /// A new container was created for `task`: it is no longer one shoal removed.
    fn created(&self, task: TaskId, container_id: &str) {
        self.ledger().removed.retain(|t| *t != task);
        self.remember(task, container_id);
    }

    /// Whether shoal stopped or removed the task on purpose.
    fn is_stopping(&self, task: TaskId) -> bool {
        let ledger = self.ledger();
        ledger
            .containers
            .get(&task)
            .is_some_and(|known| known.stopping)
            || ledger.removed.contains(&task)
    }

    fn was_removed(&self, task: TaskId) -> bool {
        self.ledger().removed.contains(&task)
    }

    fn mark_stopping(&self, task: TaskId) {
        if let Some(known) = self.ledger().containers.get_mut(&task) {
            known.stopping = true;
        }
    }

    /// Records that shoal is removing the task, before asking the engine, so that the `destroy`
    /// event (which may arrive before the engine's answer) reads as `Shutdown`.
    fn mark_removing(&self, task: TaskId) {
        let mut ledger = self.ledger();
        if let Some(known) = ledger.containers.get_mut(&task) {
            known.stopping = true;
        }
        if !ledger.removed.contains(&task) {
            if ledger.removed.len() >= REMEMBERED_REMOVALS {
                ledger.removed.pop_front();
            }
            ledger.removed.push_back(task);
        }
    }

    /// Drops what the ledger knows of the task's container.
    fn forget(&self, task: TaskId) {
        self.ledger().containers.remove(&task);
    }

    /// Forgets the files of tasks that have no container here any more (left by an agent that
    /// stopped before it could remove them).
    async fn prune_task_files(&self) {
        if !self.files.path().exists() {
            return;
        }
        match self.node_containers(&[], true).await {
            Ok(containers) => {
                let keep = containers
                    .iter()
                    .filter_map(|c| c.labels.as_ref()?.get(LABEL_TASK_ID))
                    .filter_map(|t| super::parse_task_id(t))
                    .collect();
                self.files.prune(&keep);
            }
            Err(error) => tracing::warn!(%error, "task files not pruned"),
        }
    }

    /// Whether the engine runs on this machine (so that a path here is a path for it).
    fn engine_is_local(&self) -> bool {
        self.endpoint.starts_with("unix://") || self.endpoint.starts_with('/')
    }

    /// The label filter that selects this node's containers.
    fn node_filter(&self) -> String {
        format!("{LABEL_NODE_ID}={}", self.config.node_id)
    }

    /// This node's containers that also carry `labels` (running ones only, unless `all`).
    async fn node_containers(
        &self,
        labels: &[String],
        all: bool,
    ) -> Result<Vec<bollard::models::ContainerSummary>> {
        let mut wanted = vec![self.node_filter()];
        wanted.extend_from_slice(labels);
        let filters: HashMap<&str, Vec<String>> = HashMap::from([("label", wanted)]);
        let options = ListContainersOptionsBuilder::new()
            .all(all)
            .filters(&filters)
            .build();
        self.docker
            .list_containers(Some(options))
            .await
            .map_err(ExecutorError::docker("list"))
    }

    /// The id of the task's container, from the ledger or by label; `None` if there is none.
    async fn container_of(&self, task: TaskId) -> Result<Option<String>> {
        if let Some(known) = self.ledger().containers.get(&task) {
            return Ok(Some(known.container_id.clone()));
        }
        let found = self
            .node_containers(&[format!("{LABEL_TASK_ID}={task}")], true)
            .await?;
        let id = found.into_iter().find_map(|summary| summary.id);
        if let Some(id) = &id {
            self.remember(task, id);
        }
        Ok(id)
    }

    async fn stop(&self, task: TaskId, grace: Option<Duration>) -> Result<()> {
        let Some(id) = self.container_of(task).await? else {
            return Ok(());
        };
        self.mark_stopping(task);
        // Docker counts the grace in whole seconds: round up so the task gets at least `grace`.
        // Without one, the engine uses the stop timeout the container was created with.
        let options = match grace {
            Some(grace) => {
                let seconds = grace.as_millis().div_ceil(1000).min(i32::MAX as u128) as i32;
                StopContainerOptionsBuilder::new().t(seconds).build()
            }
            None => StopContainerOptionsBuilder::new().build(),
        };
        let client = self
            .docker
            .clone()
            .with_timeout(grace.unwrap_or(UNKNOWN_GRACE_WAIT) + self.config.request_timeout);
        match client.stop_container(&id, Some(options)).await {
            Ok(()) => Ok(()),
            Err(e) if status_of(&e) == Some(404) => {
                self.forget(task);
                Ok(())
            }
            Err(e) => {
                tracing::warn!(%task, error = %e, "stop failed; killing the container");
                self.kill(task, &id).await
            }
        }
    }

    async fn kill(&self, task: TaskId, id: &str) -> Result<()> {
        match self
            .docker
            .kill_container(id, Some(KillContainerOptions::default()))
            .await
        {
            Ok(()) => Ok(()),
            // 404: gone already; 409: not running any more.
            Err(e) if matches!(status_of(&e), Some(404 | 409)) => Ok(()),
            Err(source) => {
                tracing::warn!(%task, error = %source, "kill failed");
                Err(ExecutorError::Docker { op: "kill", source })
            }
        }
    }

    async fn remove(&self, task: TaskId) -> Result<()> {
        let Some(id) = self.container_of(task).await? else {
            return Ok(());
        };
        self.mark_removing(task);
        let options = RemoveContainerOptionsBuilder::new()
            .force(true)
            .v(true)
            .build();
        match self.docker.remove_container(&id, Some(options)).await {
            Ok(()) => {
                self.forget(task);
                Ok(())
            }
            Err(e) if status_of(&e) == Some(404) => {
                self.forget(task);
                Ok(())
            }
            Err(source) => Err(ExecutorError::Docker {
                op: "remove",
                source,
            }),
        }
    }

    async fn logs(&self, task: TaskId, query: &LogQuery) -> Result<Vec<LogLine>> {
        let id = self
            .container_of(task)
            .await?
            .ok_or(ExecutorError::NotFound(task))?;
        let tail = query.tail.min(MAX_LOG_LINES);
        let options = LogsOptionsBuilder::new()
            .stdout(true)
            .stderr(true)
            .timestamps(true)
            .since(i32::try_from(query.since_secs).unwrap_or(i32::MAX))
            .tail(&tail.to_string())
            .build();
        let mut stream = self.docker.logs(&id, Some(options));
        let mut lines = LineSplitter::new(tail);
        while let Some(item) = stream.next().await {
            match item.map_err(ExecutorError::docker("logs"))? {
                LogOutput::StdErr { message } => lines.push(LogStream::Stderr, &message),
                LogOutput::StdOut { message } | LogOutput::Console { message } => {
                    lines.push(LogStream::Stdout, &message)
                }
                LogOutput::StdIn { .. } => {}
            }
        }
        Ok(lines.finish())
    }

    async fn describe(&self) -> Result<RuntimeInfo> {
        let info = self
            .docker
            .info()
            .await
            .map_err(ExecutorError::docker("info"))?;
        Ok(RuntimeInfo {
            runtime: Runtime::Docker,
            cpus: info.ncpu.and_then(|n| u64::try_from(n).ok()).unwrap_or(0),
            memory_bytes: info
                .mem_total
                .and_then(|n| u64::try_from(n).ok())
                .unwrap_or(0),
            os: info.os_type.unwrap_or_default(),
            arch: info.architecture.unwrap_or_default(),
            engine_version: info.server_version.unwrap_or_default(),
        })
    }
}

/// Cuts the engine's frames into lines per stream (a frame may hold part of a line, or
/// several), keeping the last `keep` lines, each cut to [`MAX_LOG_LINE_BYTES`] and split into
/// its timestamp and text.
struct LineSplitter {
    keep: usize,
    lines: VecDeque<LogLine>,
    partial: HashMap<LogStream, String>,
}

impl LineSplitter {
    fn new(keep: usize) -> Self {
        LineSplitter {
            keep,
            lines: VecDeque::new(),
            partial: HashMap::new(),
        }
    }

    fn push(&mut self, stream: LogStream, bytes: &[u8]) {
        let mut partial = self.partial.remove(&stream).unwrap_or_default();
        partial.push_str(&String::from_utf8_lossy(bytes));
        while let Some(end) = partial.find('\n') {
            let line: String = partial.drain(..=end).collect();
            self.line(stream, line.trim_end_matches(['\n', '\r']));
        }
        if partial.len() > MAX_LOG_LINE_BYTES {
            let line = std::mem::take(&mut partial);
            self.line(stream, &line);
        }
        self.partial.insert(stream, partial);
    }

    fn line(&mut self, stream: LogStream, raw: &str) {
        if self.keep == 0 {
            return;
        }
        let (time, text) = match raw.split_once(' ') {
            Some((time, text)) if time.ends_with('Z') && time.contains('T') => (time, text),
            _ => ("", raw),
        };
        let mut end = text.len().min(MAX_LOG_LINE_BYTES);
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        if self.lines.len() == self.keep {
            self.lines.pop_front();
        }
        self.lines.push_back(LogLine {
            stream,
            time: time.to_owned(),
            text: text[..end].to_owned(),
        });
    }

    fn finish(mut self) -> Vec<LogLine> {
        let rest: Vec<(LogStream, String)> = self.partial.drain().collect();
        for (stream, partial) in rest {
            if !partial.is_empty() {
                self.line(stream, &partial);
            }
        }
        self.lines.into()
    }
}

/// The HTTP status of an engine error, if it is one.
fn status_of(error: &bollard::errors::Error) -> Option<u16> {
    match error {
        bollard::errors::Error::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}

impl Executor for DockerExecutor {
    fn runtime(&self) -> Runtime {
        Runtime::Docker
    }

    fn service_network(&self) -> Option<AttachedNetwork> {
        self.inner.network.clone()
    }

    fn task_addresses(&self) -> BoxFuture<'_, Result<BTreeMap<TaskId, Ipv4Addr>>> {
        Box::pin(async move {
            match &self.inner.network {
                Some(network) if network.serving() => {
                    network::task_addresses(&self.inner, &network.name).await
                }
                _ => Ok(BTreeMap::new()),
            }
        })
    }

    fn describe(&self) -> BoxFuture<'_, Result<RuntimeInfo>> {
        Box::pin(self.inner.describe())
    }

    fn start<'a>(&'a self, spec: &'a RunSpec) -> BoxFuture<'a, Result<()>> {
        Box::pin(create::start(&self.inner, spec))
    }

    fn stop(&self, task: TaskId, grace: Option<Duration>) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            let stopped = self.inner.stop(task, grace).await;
            // A stopped task's secrets and configs are forgotten at once (a container that
            // still runs after a failed stop keeps the files it has open).
            self.inner.files.forget(task);
            stopped
        })
    }

    fn remove(&self, task: TaskId) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            let removed = self.inner.remove(task).await;
            self.inner.files.forget(task);
            removed
        })
    }

    fn observe(&self) -> BoxFuture<'_, Result<Vec<Observation>>> {
        Box::pin(observe::observe_all(&self.inner))
    }

    fn events(&self) -> mpsc::Receiver<Observation> {
        events::subscribe(self.inner.clone())
    }

    fn logs<'a>(
        &'a self,
        task: TaskId,
        query: &'a LogQuery,
    ) -> BoxFuture<'a, Result<Vec<LogLine>>> {
        Box::pin(self.inner.logs(task, query))
    }
}
