//! Docker's event stream, filtered to this node's containers and turned into observations, so an
//! exit or a health change is seen at once. When the stream breaks it is opened again with
//! backoff, from the time of the last event seen, and every container is observed again so that
//! nothing that happened in between is missed.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bollard::models::{EventMessage, EventMessageTypeEnum};
use bollard::query_parameters::EventsOptionsBuilder;
use futures::StreamExt;
use futures::stream::FuturesOrdered;
use shoal_scheduler::TaskState;
use tokio::sync::mpsc;

use super::Inner;
use super::observe::{inspect, observe_all, skeleton};
use crate::executor::{EVENTS_CHANNEL_CAPACITY, LABEL_HEALTHCHECK, Observation};

/// First wait before reopening a broken stream.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
/// Longest wait before reopening a broken stream.
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// Container inspections in flight at once while turning events into observations.
const MAX_CONCURRENT_INSPECTIONS: usize = 16;

/// Starts a watcher task and returns its channel. The task ends when the receiver is dropped.
pub(super) fn subscribe(inner: Arc<Inner>) -> mpsc::Receiver<Observation> {
    let (tx, rx) = mpsc::channel(EVENTS_CHANNEL_CAPACITY);
    tokio::spawn(watch(inner, tx));
    rx
}

/// What the event loop should do after a stream ended.
enum StreamEnd {
    /// The receiver is gone: stop.
    Closed,
    /// The stream broke: reopen it.
    Broken,
}

async fn watch(inner: Arc<Inner>, tx: mpsc::Sender<Observation>) {
    let mut since_nanos: Option<i64> = None;
    let mut backoff = BACKOFF_MIN;
    let mut reconnecting = false;
    loop {
        match run_stream(&inner, &tx, &mut since_nanos, reconnecting, &mut backoff).await {
            StreamEnd::Closed => return,
            StreamEnd::Broken => {}
        }
        reconnecting = true;
        tokio::select! {
            _ = tx.closed() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// Reads one event stream until it breaks or the receiver goes away.
async fn run_stream(
    inner: &Inner,
    tx: &mpsc::Sender<Observation>,
    since_nanos: &mut Option<i64>,
    reconnecting: bool,
    backoff: &mut Duration,
) -> StreamEnd {
    let filters: HashMap<&str, Vec<String>> = HashMap::from([
        ("type", vec!["container".to_string()]),
        ("label", vec![inner.node_filter()]),
    ]);
    let mut options = EventsOptionsBuilder::new().filters(&filters);
    if let Some(nanos) = *since_nanos {
        options = options.since(&format_since(nanos));
    }
    let mut stream = Box::pin(inner.docker.events(Some(options.build())));
    if reconnecting {
        // The stream is open again; catch up on anything its `since` could not replay.
        match observe_all(inner).await {
            Ok(all) => {
                for observation in all {
                    if tx.send(observation).await.is_err() {
                        return StreamEnd::Closed;
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "docker events: resync failed");
                return StreamEnd::Broken;
            }
        }
    }
    // Inspections run concurrently (a burst of 60 starts must not queue behind one another),
    // and their observations are delivered in event order.
    let mut inspections = FuturesOrdered::new();
    loop {
        let item = tokio::select! {
            _ = tx.closed() => return StreamEnd::Closed,
            Some(observation) = inspections.next(), if !inspections.is_empty() => {
                if let Some(observation) = observation
                    && tx.send(observation).await.is_err()
                {
                    return StreamEnd::Closed;
                }
                continue;
            }
            item = stream.next(), if inspections.len() < MAX_CONCURRENT_INSPECTIONS => item,
        };
        match item {
            Some(Ok(event)) => {
                *backoff = BACKOFF_MIN;
                if let Some(nanos) = event.time_nano {
                    *since_nanos = Some(nanos);
                }
                inspections.push_back(observation_of(inner, event));
            }
            Some(Err(e)) => {
                tracing::warn!(error = %e, "docker event stream broke; reopening");
                return StreamEnd::Broken;
            }
            None => {
                tracing::warn!("docker event stream ended; reopening");
                return StreamEnd::Broken;
            }
        }
    }
}

/// Docker's `since` for an event time: seconds and nanoseconds.
fn format_since(nanos: i64) -> String {
    format!(
        "{}.{:09}",
        nanos.div_euclid(1_000_000_000),
        nanos.rem_euclid(1_000_000_000)
    )
}

/// The actions that change what a task looks like. Health actions read `health_status: x`.
fn is_relevant(action: &str) -> bool {
    matches!(
        action,
        "start" | "die" | "oom" | "pause" | "unpause" | "destroy" | "restart"
    ) || action.starts_with("health_status")
}

/// Turns one event into an observation, inspecting the container for its full state.
async fn observation_of(inner: &Inner, event: EventMessage) -> Option<Observation> {
    if event.typ != Some(EventMessageTypeEnum::CONTAINER) {
        return None;
    }
    let action = event.action.as_deref()?;
    if !is_relevant(action) {
        return None;
    }
    let actor = event.actor.as_ref()?;
    let id = actor.id.as_deref()?;
    let attributes = actor.attributes.as_ref()?;
    if action == "destroy" {
        return destroyed(inner, id, attributes);
    }
    if action == "start" && attributes.get(LABEL_HEALTHCHECK).map(String::as_str) == Some("false") {
        // No health check: started is running, and the event says all there is to say.
        return started(inner, id, attributes);
    }
    match inspect(inner, id).await {
        Ok(Some(observation)) => Some(observation),
        // Gone before we could look (or the engine failed): say what the event itself says.
        Ok(None) | Err(_) => from_attributes(inner, id, action, attributes),
    }
}

/// A container without a health check started: it runs.
fn started(inner: &Inner, id: &str, attributes: &HashMap<String, String>) -> Option<Observation> {
    let mut observation = skeleton(attributes)?;
    inner.remember(observation.task_id, id);
    observation.container_id = Some(id.to_string());
    observation.state = TaskState::Running;
    observation.message = "running".into();
    Some(observation)
}

/// A container was removed: by shoal (`Shutdown`) or by someone else (`Failed`).
fn destroyed(inner: &Inner, id: &str, attributes: &HashMap<String, String>) -> Option<Observation> {
    let mut observation = skeleton(attributes)?;
    observation.container_id = Some(id.to_string());
    observation.removed = true;
    if inner.was_removed(observation.task_id) {
        observation.state = TaskState::Shutdown;
        observation.message = "container removed by shoal".into();
    } else {
        inner.forget(observation.task_id);
        observation.state = TaskState::Failed;
        observation.message = "container removed outside shoal".into();
    }
    Some(observation)
}

/// The observation the event's own attributes allow, when the container cannot be inspected.
fn from_attributes(
    inner: &Inner,
    id: &str,
    action: &str,
    attributes: &HashMap<String, String>,
) -> Option<Observation> {
    let mut observation = skeleton(attributes)?;
    observation.container_id = Some(id.to_string());
    if action != "die" {
        return None;
    }
    let code = attributes
        .get("exitCode")
        .and_then(|c| c.parse::<i64>().ok());
    observation.exit_code = code;
    (observation.state, observation.message) = if inner.is_stopping(observation.task_id) {
        (TaskState::Shutdown, "stopped by shoal".into())
    } else if code == Some(0) {
        (TaskState::Complete, "exited with code 0".into())
    } else {
        let code = code.map_or_else(|| "?".to_string(), |c| c.to_string());
        (TaskState::Failed, format!("exited with code {code}"))
    };
    Some(observation)
}

#[cfg(test)]
mod event_tests {
    use super::*;

    #[test]
    fn since_is_seconds_dot_nanos() {
        assert_eq!(
            format_since(1_700_000_000_000_000_001),
            "1700000000.000000001"
        );
        assert_eq!(format_since(5), "0.000000005");
    }

    #[test]
    fn health_and_exit_actions_are_relevant() {
        assert!(is_relevant("health_status: healthy"));
        assert!(is_relevant("die"));
        assert!(!is_relevant("exec_start: sh -c true"));
        assert!(!is_relevant("attach"));
    }
}
