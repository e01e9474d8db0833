//! Task logs, gathered from the nodes that run them.
//!
//! `GET /v1/services/{name}/logs` on a manager (a worker's call is forwarded to one) reads which
//! nodes ran the service's tasks and asks each of them at once, over the mesh, for its tasks'
//! output (`GET /v1/local/logs`, which a node serves from its own executor, to its managers
//! only). A node that is down, or that does not answer within [`NODE_LOGS_TIMEOUT`], is named in
//! a warning and the others' lines are answered anyway: a gone node never hangs the command.
//! Every answer is bounded ([`MAX_LOG_BYTES`]): the oldest lines are dropped first.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::StatusCode;
use futures::future::join_all;
use serde::{Deserialize, Serialize};
use shoal_discovery::PeerId;
use shoal_scheduler::{ClusterState, NodeId, NodeState, Service, Task, TaskId};

use super::api::{self, LogsQuery};
use super::server::{self, ApiError, ControlState, ReadOptions};
use crate::executor::{ExecutorError, LogLine, LogQuery, parse_task_id};

/// How long a node has to answer with its tasks' output.
pub const NODE_LOGS_TIMEOUT: Duration = Duration::from_secs(5);
/// The most bytes of log text one answer carries (under the mesh's answer bound).
pub const MAX_LOG_BYTES: usize = 4 * 1024 * 1024;
/// The most lines of one task a node returns.
pub const MAX_TASK_LINES: usize = crate::executor::docker::MAX_LOG_LINES;

/// Query of `GET /v1/local/logs`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LocalLogsQuery {
    /// The tasks, comma-separated ids.
    pub tasks: String,
    /// The last this many lines of each.
    #[serde(default)]
    pub tail: Option<usize>,
    /// Only lines at or after this time (seconds since the Unix epoch).
    #[serde(default)]
    pub since_secs: Option<u64>,
}

/// One task's output from its node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskLogs {
    /// The task.
    pub task: TaskId,
    /// Its lines, oldest first.
    pub lines: Vec<LogLine>,
    /// Why there are none, if the executor failed (a removed container is not an error).
    pub error: Option<String>,
}

/// A service's logs: every line labelled with its task, oldest first, and what is missing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceLogs {
    /// The lines.
    pub lines: Vec<ServiceLogLine>,
    /// Nodes that did not answer, output that was cut: each says what is missing.
    pub warnings: Vec<String>,
}

/// One line of a service's logs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceLogLine {
    /// The service's name.
    pub service: String,
    /// The task that wrote it.
    pub task: TaskId,
    /// Its slot (replicated services).
    pub slot: Option<u64>,
    /// The hostname of its node.
    pub node: String,
    /// The line.
    #[serde(flatten)]
    pub line: LogLine,
}

/// `GET /v1/local/logs`: the output of this node's tasks.
pub(super) async fn local_logs(
    State(state): State<Arc<ControlState>>,
    Query(query): Query<LocalLogsQuery>,
) -> Result<Json<Vec<TaskLogs>>, ApiError> {
    let Some(executor) = state.executor.as_ref() else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "this agent runs no tasks (no runtime)",
        ));
    };
    let tasks: Vec<TaskId> = query
        .tasks
        .split(',')
        .filter(|t| !t.is_empty())
        .map(|t| parse_task_id(t).ok_or_else(|| format!("bad task id {t:?}")))
        .collect::<Result<_, _>>()
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e))?;
    let wanted = LogQuery {
        tail: query.tail.unwrap_or(MAX_TASK_LINES).min(MAX_TASK_LINES),
        since_secs: query.since_secs.unwrap_or(0),
    };
    let mut answers = Vec::with_capacity(tasks.len());
    for task in tasks {
        let (lines, error) = match executor.logs(task, &wanted).await {
            Ok(lines) => (lines, None),
            Err(ExecutorError::NotFound(_)) => (Vec::new(), None),
            Err(e) => (Vec::new(), Some(e.to_string())),
        };
        answers.push(TaskLogs { task, lines, error });
    }
    Ok(Json(answers))
}

/// `GET /v1/services/{name}/logs`: every task's output, from every node that ran one.
pub(super) async fn service_logs(
    State(state): State<Arc<ControlState>>,
    UrlPath(name): UrlPath<String>,
    Query(query): Query<LogsQuery>,
) -> Result<Json<ServiceLogs>, ApiError> {
    let cluster = server::cluster(&state, ReadOptions::default()).await?;
    let (service, task) = match super::views::find_service(&cluster, &name) {
        Some(service) => (service, query.task.clone()),
        // A task's id (or a unique prefix) names its service and itself.
        None => task_by_prefix(&cluster, &name)
            .and_then(|t| {
                cluster
                    .services
                    .get(&t.service)
                    .map(|s| (s, Some(t.id.to_string())))
            })
            .ok_or_else(|| ApiError::no_such_service(&name))?,
    };
    let tasks = tasks_with_output(&cluster, service, task.as_deref())?;
    let mut by_node: BTreeMap<NodeId, Vec<&Task>> = BTreeMap::new();
    for task in tasks {
        if let Some(node) = &task.node {
            by_node.entry(node.clone()).or_default().push(task);
        }
    }
    let local = LocalLogsQuery {
        tasks: String::new(),
        tail: query.tail,
        since_secs: query.since_secs,
    };
    let asks = by_node
        .iter()
        .map(|(node, tasks)| node_logs(&state, &cluster, node, tasks, &local));
    let mut logs = ServiceLogs::default();
    for (node, answer) in by_node.keys().zip(join_all(asks).await) {
        let hostname = hostname(&cluster, node);
        match answer {
            Ok(tasks) => label(&cluster, &service.spec.name, &hostname, tasks, &mut logs),
            Err(why) => logs.warnings.push(format!(
                "node {hostname} ({node}): {why}; its tasks' lines are missing"
            )),
        }
    }
    logs.lines.sort_by(|a, b| a.line.time.cmp(&b.line.time));
    bound(&mut logs);
    Ok(Json(logs))
}

/// The one task whose id starts with `prefix` (at least `t` and one digit), if exactly one does.
fn task_by_prefix<'a>(cluster: &'a ClusterState, prefix: &str) -> Option<&'a Task> {
    if prefix.len() < 2 || !prefix.starts_with('t') {
        return None;
    }
    let mut matching = cluster
        .tasks
        .values()
        .filter(|t| t.id.to_string().starts_with(prefix));
    let first = matching.next()?;
    matching.next().is_none().then_some(first)
}

/// The service's tasks that were placed and may have written something: all of them, or the
/// one `task` names.
fn tasks_with_output<'a>(
    cluster: &'a ClusterState,
    service: &Service,
    task: Option<&str>,
) -> Result<Vec<&'a Task>, ApiError> {
    let mut tasks: Vec<&Task> = cluster
        .tasks
        .values()
        .filter(|t| t.service == service.id && t.node.is_some())
        .filter(|t| task.is_none_or(|name| t.id.to_string().starts_with(name)))
        .collect();
    if let Some(name) = task {
        match tasks.len() {
            1 => {}
            0 => {
                return Err(ApiError::new(
                    StatusCode::NOT_FOUND,
                    format!(
                        "no task {name} in service {} (see `shoal service ps`)",
                        service.spec.name
                    ),
                ));
            }
            n => {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    format!("{name} names {n} tasks: give more of the id"),
                ));
            }
        }
    }
    tasks.sort_by_key(|t| (t.slot, t.id));
    Ok(tasks)
}

/// Asks `node` for the output of `tasks` (this agent's own executor when it is this node).
async fn node_logs(
    state: &ControlState,
    cluster: &ClusterState,
    node: &NodeId,
    tasks: &[&Task],
    query: &LocalLogsQuery,
) -> Result<Vec<TaskLogs>, String> {
    if cluster
        .nodes
        .get(node)
        .is_some_and(|n| n.state == NodeState::Down)
    {
        return Err("the node is down".to_owned());
    }
    let query = LocalLogsQuery {
        tasks: tasks
            .iter()
            .map(|t| t.id.to_string())
            .collect::<Vec<_>>()
            .join(","),
        ..query.clone()
    };
    let uri = format!(
        "{}?{}",
        api::LOCAL_LOGS,
        serde_urlencoded::to_string(&query).map_err(|e| e.to_string())?
    );
    let answer = if node.as_str() == state.node_id {
        super::forward::call_self(state, &uri).await
    } else {
        let peer = PeerId::from_str(node.as_str()).map_err(|e| e.to_string())?;
        match tokio::time::timeout(
            NODE_LOGS_TIMEOUT,
            super::forward::call_node(state, peer, &uri),
        )
        .await
        {
            Ok(answer) => answer,
            Err(_) => Err(format!("no answer within {NODE_LOGS_TIMEOUT:?}")),
        }
    }?;
    if answer.status != StatusCode::OK.as_u16() {
        let body: Result<api::ErrorBody, _> = serde_json::from_slice(&answer.body);
        return Err(body.map_or_else(|_| format!("status {}", answer.status), |b| b.error));
    }
    serde_json::from_slice(&answer.body).map_err(|e| format!("bad answer: {e}"))
}

fn hostname(cluster: &ClusterState, node: &NodeId) -> String {
    cluster
        .nodes
        .get(node)
        .map_or_else(|| node.to_string(), |n| n.hostname.clone())
}

/// Adds a node's answer to the service's logs, each line labelled.
fn label(
    cluster: &ClusterState,
    service: &str,
    hostname: &str,
    tasks: Vec<TaskLogs>,
    logs: &mut ServiceLogs,
) {
    for task in tasks {
        if let Some(error) = task.error {
            logs.warnings
                .push(format!("task {} on {hostname}: {error}", task.task));
        }
        let slot = cluster.tasks.get(&task.task).and_then(|t| t.slot);
        logs.lines
            .extend(task.lines.into_iter().map(|line| ServiceLogLine {
                service: service.to_owned(),
                task: task.task,
                slot,
                node: hostname.to_owned(),
                line,
            }));
    }
}

/// Keeps the newest lines within [`MAX_LOG_BYTES`], saying so when it drops any.
fn bound(logs: &mut ServiceLogs) {
    let mut bytes = 0;
    let keep_from = logs
        .lines
        .iter()
        .rposition(|l| {
            bytes += l.line.text.len() + l.line.time.len() + l.node.len() + 48;
            bytes > MAX_LOG_BYTES
        })
        .map_or(0, |i| i + 1);
    if keep_from > 0 {
        logs.lines.drain(..keep_from);
        logs.warnings.push(format!(
            "output cut to the newest {} lines ({} MiB); ask for less with --tail or --since",
            logs.lines.len(),
            MAX_LOG_BYTES / (1024 * 1024)
        ));
    }
}
