//! `GET /v1/events`: a page of this manager's recent cluster events after a cursor, filtered,
//! waiting (bounded) for the first match so that a client can follow the stream by asking
//! again with the page's `next`.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use shoal_consensus::events::{EventCursor, EventPage};
use shoal_scheduler::Timestamp;
use shoal_scheduler::events::{Event, EventType};

use super::api::{EventsQuery, MAX_EVENTS_PAGE, MAX_EVENTS_WAIT_MS};
use super::server::{ApiError, ControlState};

/// The `after` that means "after the newest event": only new events.
pub const END: &str = "end";

/// Which events a reader wants.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EventFilter {
    /// Only these types (all if empty).
    pub types: Vec<EventType>,
    /// Only events whose subject has this name or id.
    pub name: Option<String>,
    /// Only events at or after this time.
    pub since: Option<Timestamp>,
}

impl EventFilter {
    /// The filter a query asks for, or what is wrong with it.
    pub fn of(query: &EventsQuery) -> Result<Self, String> {
        let types = match query.types.as_deref() {
            None | Some("") => Vec::new(),
            Some(list) => list
                .split(',')
                .map(|t| parse_type(t.trim()))
                .collect::<Result<_, _>>()?,
        };
        Ok(EventFilter {
            types,
            name: query.name.clone().filter(|n| !n.is_empty()),
            since: query.since_ms.map(Timestamp),
        })
    }

    /// Whether `event` passes.
    pub fn matches(&self, event: &Event) -> bool {
        let kind = &event.kind;
        (self.types.is_empty() || self.types.contains(&kind.event_type()))
            && self
                .name
                .as_deref()
                .is_none_or(|n| kind.subject_name() == n || kind.subject_id() == n)
            && self.since.is_none_or(|since| event.time >= since)
    }
}

/// An event type as users write it.
pub fn parse_type(text: &str) -> Result<EventType, String> {
    match text {
        "service" => Ok(EventType::Service),
        "node" => Ok(EventType::Node),
        "task" => Ok(EventType::Task),
        "endpoint" => Ok(EventType::Endpoint),
        "cluster" => Ok(EventType::Cluster),
        "secret" => Ok(EventType::Secret),
        "config" => Ok(EventType::Config),
        other => Err(format!(
            "unknown event type {other:?}: use service, node, task, endpoint, cluster, secret \
             or config"
        )),
    }
}

/// The handler.
pub(super) async fn list_events(
    State(state): State<Arc<ControlState>>,
    Query(query): Query<EventsQuery>,
) -> Result<Json<EventPage>, ApiError> {
    let bad = |e: String| ApiError::new(StatusCode::BAD_REQUEST, e);
    let filter = EventFilter::of(&query).map_err(bad)?;
    let mut after = match query.after.as_deref() {
        Some(END) => state.quorum.events_end(),
        Some(text) => EventCursor::from_str(text).map_err(bad)?,
        None => EventCursor::default(),
    };
    let limit = query
        .limit
        .unwrap_or(MAX_EVENTS_PAGE)
        .clamp(1, MAX_EVENTS_PAGE);
    let wait = Duration::from_millis(query.wait_ms.unwrap_or(0).min(MAX_EVENTS_WAIT_MS));
    let deadline = tokio::time::Instant::now() + wait;
    let mut pushed = state.quorum.watch_events();
    let mut truncated = false;
    loop {
        pushed.borrow_and_update();
        let page = state.quorum.events(after, limit);
        truncated |= page.truncated;
        let more = page.more;
        let scanned = page.events.len();
        let events: Vec<Event> = page
            .events
            .into_iter()
            .filter(|e| filter.matches(e))
            .collect();
        after = page.next;
        // A full page is answered at once, matches or not, so the reader's cursor moves on.
        if !events.is_empty() || scanned == limit {
            return Ok(Json(EventPage {
                events,
                next: after,
                truncated,
                more,
            }));
        }
        let woke = tokio::time::timeout_at(deadline, pushed.changed()).await;
        if !matches!(woke, Ok(Ok(()))) {
            return Ok(Json(EventPage {
                events,
                next: after,
                truncated,
                more,
            }));
        }
    }
}

#[cfg(test)]
mod tests {
    use shoal_scheduler::events::EventKind;
    use shoal_scheduler::{DesiredState, ServiceId, TaskId, TaskState};

    use super::*;

    fn query(types: &str, name: &str) -> EventsQuery {
        EventsQuery {
            types: Some(types.into()),
            name: Some(name.into()),
            ..EventsQuery::default()
        }
    }

    #[test]
    fn filters_match_type_name_and_time() {
        let task = Event {
            index: 4,
            seq: 0,
            time: Timestamp(100),
            kind: EventKind::TaskState {
                id: TaskId(9),
                service: "web".into(),
                slot: Some(1),
                node: None,
                from: TaskState::Starting,
                to: TaskState::Running,
                desired: DesiredState::Running,
                message: String::new(),
            },
        };
        let service = Event {
            kind: EventKind::ServiceCreated {
                id: ServiceId(0),
                name: "db".into(),
            },
            ..task.clone()
        };
        let web_tasks = EventFilter::of(&query("task", "web")).expect("valid");
        assert!(web_tasks.matches(&task));
        assert!(!web_tasks.matches(&service));
        let by_id = EventFilter::of(&query("", &TaskId(9).to_string())).expect("valid");
        assert!(by_id.matches(&task) && !by_id.matches(&service));
        let services_or_tasks = EventFilter::of(&query("service, task", "")).expect("valid");
        assert!(services_or_tasks.matches(&task) && services_or_tasks.matches(&service));
        let later = EventFilter {
            since: Some(Timestamp(101)),
            ..EventFilter::default()
        };
        assert!(!later.matches(&task));
        let err = EventFilter::of(&query("container", "")).expect_err("unknown type");
        assert!(
            err.contains("use service, node, task, endpoint, cluster, secret or config"),
            "{err}"
        );
    }
}
