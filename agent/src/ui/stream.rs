//! `GET /ui/api/stream`: the cluster's event stream as server-sent events, so that the page
//! changes only what each event names instead of asking for the whole state again.
//!
//! The stream follows the control API's events route (long-polled in-process, so a worker asks a
//! manager) from the cursor the page's overview was read at, or from the `Last-Event-ID` a
//! reconnecting browser sends. It sends:
//! - `agent`: this agent's view — its leader (none while it has lost it) and whether its
//!   managers answer — at the start and whenever that changes;
//! - `cluster`: one cluster event (the control API's JSON), its cursor as the SSE id;
//! - `resync`: events were missed (the managers' ring moved past the cursor): read the overview
//!   again.
//!
//! One task per open stream feeds a bounded channel; it ends when the browser goes away.

use std::convert::Infallible;
use std::str::FromStr as _;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, to_bytes};
use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use shoal_consensus::events::{EventCursor, EventPage};
use tokio::sync::mpsc;
use tower::ServiceExt as _;

use super::Ui;
use crate::control::api::{self, ErrorBody};
use crate::control::events::END;
use crate::control::server::ApiError;

/// Messages queued for one browser at most (the feeder waits on a slow one).
const STREAM_CAPACITY: usize = 256;
/// How long one events call may wait for news (the route's bound).
const WAIT_MS: u64 = api::MAX_EVENTS_WAIT_MS;
/// Events asked for at once.
const PAGE: usize = 1_000;
/// An events call that has not answered after this long counts as unanswered.
const CALL_TIMEOUT: Duration = Duration::from_secs(15);
/// The pause before asking again after a failed call.
const RETRY: Duration = Duration::from_secs(1);
/// The largest page read.
const MAX_PAGE_BYTES: usize = 16 << 20;

/// Query of the stream.
#[derive(Debug, Deserialize)]
pub(crate) struct StreamQuery {
    /// Follow from after this cursor (the overview's); new events only if absent.
    #[serde(default)]
    after: Option<String>,
}

/// The `agent` message: this agent's view of its cluster.
#[derive(Debug, Clone, PartialEq, Serialize)]
struct AgentView {
    /// This agent's node id.
    node: String,
    /// The leader this agent follows, if it knows one.
    leader: Option<String>,
    /// Whether the last events call was answered.
    reachable: bool,
    /// Why it was not, if it was not.
    message: Option<String>,
}

/// The handler.
pub(crate) async fn stream(
    State(ui): State<Arc<Ui>>,
    Query(query): Query<StreamQuery>,
    headers: HeaderMap,
) -> Response {
    let resume = headers
        .get("last-event-id")
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    let after = resume.or(query.after).unwrap_or_else(|| END.to_owned());
    if after != END
        && let Err(error) = EventCursor::from_str(&after)
    {
        return ApiError::new(StatusCode::BAD_REQUEST, error).into_response();
    }
    let (tx, rx) = mpsc::channel(STREAM_CAPACITY);
    tokio::spawn(feed(ui, after, tx));
    let events = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|event| (Ok::<_, Infallible>(event), rx))
    });
    Sse::new(events)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(10)))
        .into_response()
}

/// Feeds one browser until it goes away.
async fn feed(ui: Arc<Ui>, mut after: String, tx: mpsc::Sender<SseEvent>) {
    let mut leader = ui.control.quorum.leader();
    let mut view = AgentView {
        node: ui.control.node_id.clone(),
        leader: leader.borrow_and_update().map(|peer| peer.to_string()),
        reachable: true,
        message: None,
    };
    if tx.send(agent_message(&view)).await.is_err() {
        return;
    }
    let mut fetch = Box::pin(next_page(ui.api.clone(), after.clone(), Duration::ZERO));
    loop {
        tokio::select! {
            () = tx.closed() => return,
            changed = leader.changed() => {
                if changed.is_err() {
                    return;
                }
                view.leader = leader.borrow_and_update().map(|peer| peer.to_string());
                if tx.send(agent_message(&view)).await.is_err() {
                    return;
                }
            }
            page = &mut fetch => {
                let pause = match page {
                    Ok(page) => {
                        let mut messages = Vec::with_capacity(page.events.len() + 2);
                        if !view.reachable {
                            view.reachable = true;
                            view.message = None;
                            messages.push(agent_message(&view));
                        }
                        if page.truncated {
                            messages.push(SseEvent::default().event("resync").data("{}"));
                        }
                        for event in &page.events {
                            let Ok(data) = serde_json::to_string(event) else {
                                continue;
                            };
                            messages.push(
                                SseEvent::default()
                                    .event("cluster")
                                    .id(EventCursor::of(event).to_string())
                                    .data(data),
                            );
                        }
                        for message in messages {
                            if tx.send(message).await.is_err() {
                                return;
                            }
                        }
                        after = page.next.to_string();
                        Duration::ZERO
                    }
                    Err(why) => {
                        if view.reachable || view.message.as_deref() != Some(why.as_str()) {
                            view.reachable = false;
                            view.message = Some(why);
                            if tx.send(agent_message(&view)).await.is_err() {
                                return;
                            }
                        }
                        RETRY
                    }
                };
                fetch = Box::pin(next_page(ui.api.clone(), after.clone(), pause));
            }
        }
    }
}

fn agent_message(view: &AgentView) -> SseEvent {
    let data = serde_json::to_string(view).unwrap_or_else(|_| "{}".into());
    SseEvent::default().event("agent").data(data)
}

/// After `pause`, the next page of events after `after`, waiting for news up to the route's
/// bound; an error says why there is none.
async fn next_page(api: axum::Router, after: String, pause: Duration) -> Result<EventPage, String> {
    tokio::time::sleep(pause).await;
    let wait = WAIT_MS.to_string();
    let limit = PAGE.to_string();
    let query = serde_urlencoded::to_string([
        ("after", after.as_str()),
        ("wait_ms", wait.as_str()),
        ("limit", limit.as_str()),
    ])
    .map_err(|e| e.to_string())?;
    let request = Request::get(format!("{}?{query}", api::EVENTS))
        .body(Body::empty())
        .map_err(|e| e.to_string())?;
    let call = async move {
        let Ok(response) = api.oneshot(request).await;
        let status = response.status();
        let bytes = to_bytes(response.into_body(), MAX_PAGE_BYTES)
            .await
            .map_err(|e| e.to_string())?;
        if !status.is_success() {
            return Err(serde_json::from_slice::<ErrorBody>(&bytes)
                .map(|body| body.error)
                .unwrap_or_else(|_| status.to_string()));
        }
        serde_json::from_slice::<EventPage>(&bytes).map_err(|e| e.to_string())
    };
    match tokio::time::timeout(CALL_TIMEOUT, call).await {
        Ok(answer) => answer,
        Err(_) => Err(format!(
            "no manager answered within {} s",
            CALL_TIMEOUT.as_secs()
        )),
    }
}
