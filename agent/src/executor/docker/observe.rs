//! What a container's state means for its task: inspect results turned into [`Observation`]s,
//! and the listing of every container of this node by label.

use std::collections::HashMap;

use bollard::models::{
    ContainerInspectResponse, ContainerState, ContainerStateStatusEnum, HealthStatusEnum,
};
use futures::StreamExt;
use shoal_scheduler::TaskState;

use super::{Inner, status_of};
use crate::executor::{
    ExecutorError, Health, LABEL_SERVICE_ID, LABEL_SLOT, LABEL_SPEC_VERSION, LABEL_TASK_ID,
    Observation, Result, bounded_message, parse_service_id, parse_task_id,
};

/// Inspect calls in flight at once while observing.
const CONCURRENT_INSPECTS: usize = 8;

/// Every container of this node, inspected.
pub(super) async fn observe_all(inner: &Inner) -> Result<Vec<Observation>> {
    let listed = inner.node_containers(&[], true).await?;
    let ids: Vec<String> = listed.into_iter().filter_map(|c| c.id).collect();
    let inspected: Vec<Result<Option<Observation>>> = futures::stream::iter(ids)
        .map(|id| async move { inspect(inner, &id).await })
        .buffer_unordered(CONCURRENT_INSPECTS)
        .collect()
        .await;
    let mut observations = Vec::with_capacity(inspected.len());
    for item in inspected {
        if let Some(observation) = item? {
            observations.push(observation);
        }
    }
    observations.sort_by_key(|o| o.task_id);
    Ok(observations)
}

/// Inspects one container; `None` if it is gone or not a shoal task.
pub(super) async fn inspect(inner: &Inner, id: &str) -> Result<Option<Observation>> {
    match inner.docker.inspect_container(id, None).await {
        Ok(found) => {
            let observation = from_inspect(&found, |task| inner.is_stopping(task));
            if let Some(o) = &observation {
                inner.remember(o.task_id, id);
            }
            Ok(observation)
        }
        Err(e) if status_of(&e) == Some(404) => Ok(None),
        Err(source) => Err(ExecutorError::Docker {
            op: "inspect",
            source,
        }),
    }
}

/// The observation an inspect result gives; `None` when the labels do not name a task.
/// `stopping` says whether shoal stopped the task on purpose.
pub(super) fn from_inspect(
    found: &ContainerInspectResponse,
    stopping: impl Fn(shoal_scheduler::TaskId) -> bool,
) -> Option<Observation> {
    let labels = found.config.as_ref()?.labels.as_ref()?;
    let mut observation = skeleton(labels)?;
    observation.container_id = found.id.clone();
    let default_state = ContainerState::default();
    let state = found.state.as_ref().unwrap_or(&default_state);
    let (task_state, exit_code, health, message) = classify(state, stopping(observation.task_id));
    observation.state = task_state;
    observation.exit_code = exit_code;
    observation.health = health;
    observation.message = bounded_message(message);
    Some(observation)
}

/// An observation with the ids from the labels and nothing observed yet.
pub(super) fn skeleton(labels: &HashMap<String, String>) -> Option<Observation> {
    Some(Observation {
        task_id: parse_task_id(labels.get(LABEL_TASK_ID)?)?,
        service_id: parse_service_id(labels.get(LABEL_SERVICE_ID)?)?,
        slot: labels.get(LABEL_SLOT).and_then(|s| s.parse().ok()),
        spec_version: labels
            .get(LABEL_SPEC_VERSION)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0),
        state: TaskState::Preparing,
        exit_code: None,
        health: Health::None,
        container_id: None,
        removed: false,
        message: String::new(),
    })
}

/// What a container state means: task state, exit code, health and a message.
pub(super) fn classify(
    state: &ContainerState,
    stopping: bool,
) -> (TaskState, Option<i64>, Health, String) {
    let health = match state.health.as_ref().and_then(|h| h.status) {
        Some(HealthStatusEnum::STARTING) => Health::Starting,
        Some(HealthStatusEnum::HEALTHY) => Health::Healthy,
        Some(HealthStatusEnum::UNHEALTHY) => Health::Unhealthy,
        _ => Health::None,
    };
    let status = state.status.unwrap_or(ContainerStateStatusEnum::EMPTY);
    match status {
        ContainerStateStatusEnum::CREATED | ContainerStateStatusEnum::EMPTY => (
            TaskState::Preparing,
            None,
            health,
            "container created, not started".into(),
        ),
        ContainerStateStatusEnum::RUNNING
        | ContainerStateStatusEnum::PAUSED
        | ContainerStateStatusEnum::RESTARTING => running(state, status, health, stopping),
        ContainerStateStatusEnum::EXITED
        | ContainerStateStatusEnum::DEAD
        | ContainerStateStatusEnum::REMOVING
        | ContainerStateStatusEnum::STOPPING => exited(state, status, health, stopping),
    }
}

fn running(
    state: &ContainerState,
    status: ContainerStateStatusEnum,
    health: Health,
    stopping: bool,
) -> (TaskState, Option<i64>, Health, String) {
    let paused = if status == ContainerStateStatusEnum::PAUSED {
        " (paused)"
    } else {
        ""
    };
    match health {
        Health::Starting => (
            TaskState::Starting,
            None,
            health,
            "waiting to be healthy".into(),
        ),
        Health::Unhealthy if !stopping => (
            TaskState::Failed,
            None,
            health,
            format!("unhealthy: {}", last_check_output(state)),
        ),
        _ => (TaskState::Running, None, health, format!("running{paused}")),
    }
}

fn exited(
    state: &ContainerState,
    status: ContainerStateStatusEnum,
    health: Health,
    stopping: bool,
) -> (TaskState, Option<i64>, Health, String) {
    let code = state.exit_code;
    let error = state.error.as_deref().filter(|e| !e.is_empty());
    if stopping {
        let code_text = code
            .map(|c| format!(" (exit code {c})"))
            .unwrap_or_default();
        return (
            TaskState::Shutdown,
            code,
            health,
            format!("stopped by shoal{code_text}"),
        );
    }
    if state.oom_killed == Some(true) {
        return (
            TaskState::Failed,
            code,
            health,
            "killed: out of memory".into(),
        );
    }
    if let Some(error) = error {
        return (
            TaskState::Failed,
            code,
            health,
            format!("container error: {error}"),
        );
    }
    match code {
        Some(0) if status == ContainerStateStatusEnum::EXITED => (
            TaskState::Complete,
            code,
            health,
            "exited with code 0".into(),
        ),
        Some(c) => (
            TaskState::Failed,
            code,
            health,
            format!("exited with code {c}"),
        ),
        None => (
            TaskState::Failed,
            code,
            health,
            format!("container is {status}"),
        ),
    }
}

/// The output of the last health check, trimmed.
fn last_check_output(state: &ContainerState) -> String {
    let last = state
        .health
        .as_ref()
        .and_then(|h| h.log.as_ref())
        .and_then(|log| log.last());
    match last {
        Some(check) => {
            let output = check.output.as_deref().unwrap_or("").trim();
            let code = check.exit_code.unwrap_or(-1);
            if output.is_empty() {
                format!("health check exited with code {code}")
            } else {
                format!("health check exited with code {code}: {output}")
            }
        }
        None => "health check failing".into(),
    }
}

#[cfg(test)]
mod classify_tests {
    use bollard::models::Health as DockerHealth;

    use super::*;

    fn state(status: ContainerStateStatusEnum, code: Option<i64>) -> ContainerState {
        ContainerState {
            status: Some(status),
            exit_code: code,
            ..Default::default()
        }
    }

    #[test]
    fn exits_map_to_complete_failed_or_shutdown() {
        let done = classify(&state(ContainerStateStatusEnum::EXITED, Some(0)), false);
        assert_eq!((done.0, done.1), (TaskState::Complete, Some(0)));
        let failed = classify(&state(ContainerStateStatusEnum::EXITED, Some(3)), false);
        assert_eq!((failed.0, failed.1), (TaskState::Failed, Some(3)));
        assert!(failed.3.contains("exited with code 3"), "{}", failed.3);
        let stopped = classify(&state(ContainerStateStatusEnum::EXITED, Some(137)), true);
        assert_eq!(stopped.0, TaskState::Shutdown);
        let mut oom = state(ContainerStateStatusEnum::EXITED, Some(137));
        oom.oom_killed = Some(true);
        assert!(classify(&oom, false).3.contains("out of memory"));
    }

    #[test]
    fn health_gates_running() {
        let mut s = state(ContainerStateStatusEnum::RUNNING, None);
        assert_eq!(classify(&s, false).0, TaskState::Running);
        s.health = Some(DockerHealth {
            status: Some(HealthStatusEnum::STARTING),
            ..Default::default()
        });
        assert_eq!(classify(&s, false).0, TaskState::Starting);
        s.health = Some(DockerHealth {
            status: Some(HealthStatusEnum::HEALTHY),
            ..Default::default()
        });
        assert_eq!(classify(&s, false).0, TaskState::Running);
        s.health = Some(DockerHealth {
            status: Some(HealthStatusEnum::UNHEALTHY),
            ..Default::default()
        });
        let unhealthy = classify(&s, false);
        assert_eq!(
            (unhealthy.0, unhealthy.2),
            (TaskState::Failed, Health::Unhealthy)
        );
        assert!(unhealthy.3.starts_with("unhealthy"), "{}", unhealthy.3);
        let created = classify(&state(ContainerStateStatusEnum::CREATED, None), false);
        assert_eq!(created.0, TaskState::Preparing);
    }
}
