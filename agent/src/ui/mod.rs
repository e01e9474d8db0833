//! The web view: a live page of the cluster at `/ui`, served by every agent from its own binary.
//!
//! The page is plain HTML, CSS and JavaScript embedded with `include_str!` ([`assets`]): no
//! build step, nothing to download. It draws the cluster (id, leader, managers, raft term and
//! index), the nodes as columns with their tasks as cards, and the services; it then follows
//! the cluster's event stream and changes only what the events name. It owns no logic beyond
//! presentation: every fact comes from the control API.
//!
//! # Where it is served
//! - On the agent's HTTP address (`--metrics-addr`, loopback by default), beside `/metrics`,
//!   with no token: whoever can reach that address sees the cluster. Task logs are shown there
//!   only when the address is loopback.
//! - On the TCP control API (`--api-addr`), behind its token: a bearer header, or the cookie
//!   that the page's login form sets once the token was typed in (`POST /ui/login`; the cookie
//!   holds a digest of the token, never the token, and is only sent to `/ui`).
//!
//! # Layout
//! - [`router`]: the page, its assets and its read-only data routes under `/ui/api/`, which call
//!   the control API's router in-process (so a worker forwards them to a manager as it does its
//!   socket's calls). Nothing under `/ui` writes.
//! - [`overview`]: `GET /v1/overview`, the whole cluster in one answer shaped for the page.
//! - [`stream`]: `GET /ui/api/stream`, the event stream as server-sent events, with this
//!   agent's view of its leader and of its managers' reachability.
//! - [`auth`]: the token check, the login form and its cookie on the TCP API's address.

pub mod auth;
pub mod overview;
pub mod stream;

use std::sync::Arc;

use axum::Router;
use axum::body::{Body, to_bytes};
use axum::extract::{Path as UrlPath, Query, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use tower::ServiceExt as _;

use crate::control::api;
use crate::control::remote::ApiToken;
use crate::control::server::{ApiError, ControlState};

/// The page's path.
pub const PAGE: &str = "/ui";
/// How many lines of a task's log its details show.
pub const LOG_TAIL: usize = 50;

/// The embedded files.
pub mod assets {
    /// The page.
    pub const INDEX_HTML: &str = include_str!("assets/index.html");
    /// Its style sheet.
    pub const STYLE_CSS: &str = include_str!("assets/style.css");
    /// Its script.
    pub const APP_JS: &str = include_str!("assets/app.js");
    /// The form that asks for the API token (TCP API address only).
    pub const LOGIN_HTML: &str = include_str!("assets/login.html");
}

/// Who may see the page on a given address.
#[derive(Debug, Clone)]
pub enum Access {
    /// The agent's own HTTP address: no token. `logs` says whether task logs are shown (only
    /// on a loopback address).
    Open {
        /// Whether task logs are shown.
        logs: bool,
    },
    /// The TCP control API's address: the API token is needed for everything but the login
    /// form.
    Token(ApiToken),
}

/// What the page's routes share.
pub(crate) struct Ui {
    /// The agent's control state (its leader, its metrics).
    control: ControlState,
    /// The control API's router, called in-process for every read.
    api: Router,
    /// Whether task logs are shown on this address.
    logs: bool,
}

/// The page, its assets and its data routes, for the address `access` describes.
pub fn router(control: ControlState, access: Access) -> Router {
    let logs = match &access {
        Access::Open { logs } => *logs,
        Access::Token(_) => true,
    };
    let ui = Arc::new(Ui {
        api: crate::control::server::router(control.clone()),
        control: control.clone(),
        logs,
    });
    // The style sheet is public: the login form uses it too.
    let public = Router::new().route("/ui/style.css", get(style));
    let routes = Router::new()
        .route(PAGE, get(page))
        .route("/ui/", get(page))
        .route("/ui/app.js", get(script))
        .route("/ui/api/overview", get(overview_data))
        .route("/ui/api/tasks/{task}", get(task_data))
        .route("/ui/api/logs", get(logs_data))
        .route("/ui/api/stream", get(stream::stream))
        .with_state(ui);
    match access {
        Access::Open { .. } => routes.merge(public),
        Access::Token(token) => {
            let guard = auth::Guard {
                token,
                metrics: control.metrics.clone(),
            };
            routes
                .layer(middleware::from_fn_with_state(guard.clone(), auth::require))
                .merge(public)
                .merge(
                    Router::new()
                        .route(auth::LOGIN, post(auth::login))
                        .with_state(guard),
                )
        }
    }
}

/// Headers every answer of the page carries: no caching of cluster data, and a content policy
/// that allows only the page's own files (no inline script, nothing from elsewhere).
fn with_headers(content_type: &'static str, body: impl Into<Body>) -> Response {
    let mut response = Response::new(body.into());
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
             img-src 'self' data:; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
        ),
    );
    response
}

async fn page() -> Response {
    with_headers("text/html; charset=utf-8", assets::INDEX_HTML)
}

async fn style() -> Response {
    with_headers("text/css; charset=utf-8", assets::STYLE_CSS)
}

async fn script() -> Response {
    with_headers("text/javascript; charset=utf-8", assets::APP_JS)
}

/// The largest answer the page reads from the control API.
const MAX_ANSWER_BYTES: usize = 16 << 20;

/// Calls the control API in-process with `GET path_and_query` and relays its answer (status
/// and JSON body).
async fn relay(ui: &Ui, path_and_query: &str) -> Response {
    let request = match Request::get(path_and_query).body(Body::empty()) {
        Ok(request) => request,
        Err(error) => {
            return ApiError::new(StatusCode::BAD_REQUEST, error.to_string()).into_response();
        }
    };
    let Ok(response) = ui.api.clone().oneshot(request).await;
    let status = response.status();
    match to_bytes(response.into_body(), MAX_ANSWER_BYTES).await {
        Ok(bytes) => {
            let mut answer = with_headers("application/json", bytes);
            *answer.status_mut() = status;
            answer
        }
        Err(error) => ApiError::new(StatusCode::BAD_GATEWAY, error.to_string()).into_response(),
    }
}

/// Query of the overview route.
#[derive(Debug, Deserialize)]
struct OverviewData {
    #[serde(default)]
    tasks: Option<bool>,
}

async fn overview_data(State(ui): State<Arc<Ui>>, Query(query): Query<OverviewData>) -> Response {
    let tasks = query.tasks.unwrap_or(true);
    relay(
        &ui,
        &format!("{}?stale=true&tasks={tasks}", overview::OVERVIEW),
    )
    .await
}

async fn task_data(State(ui): State<Arc<Ui>>, UrlPath(task): UrlPath<String>) -> Response {
    relay(
        &ui,
        &format!(
            "{}?stale=true",
            crate::control::tasks::task(&encode_segment(&task))
        ),
    )
    .await
}

/// Query of the logs route: one task of one service.
#[derive(Debug, Deserialize)]
struct LogsData {
    service: String,
    task: String,
}

async fn logs_data(State(ui): State<Arc<Ui>>, Query(query): Query<LogsData>) -> Response {
    if !ui.logs {
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "task logs are shown only on a loopback address or through the API's address \
             (--api-addr), behind its token",
        )
        .into_response();
    }
    let tail = LOG_TAIL.to_string();
    let Ok(params) =
        serde_urlencoded::to_string([("task", query.task.as_str()), ("tail", tail.as_str())])
    else {
        return ApiError::new(StatusCode::BAD_REQUEST, "a bad task").into_response();
    };
    relay(
        &ui,
        &format!(
            "{}?{params}",
            api::service_logs(&encode_segment(&query.service))
        ),
    )
    .await
}

/// `text` as one path segment: everything but unreserved characters percent-encoded.
fn encode_segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_segment_cannot_leave_its_place() {
        assert_eq!(encode_segment("web"), "web");
        assert_eq!(encode_segment("../v1/api-token"), "..%2Fv1%2Fapi-token");
        assert_eq!(encode_segment("a b?c#d"), "a%20b%3Fc%23d");
    }

    #[test]
    fn the_page_names_only_its_own_files() {
        assert!(assets::INDEX_HTML.contains("src=\"/ui/app.js\""));
        assert!(assets::INDEX_HTML.contains("href=\"/ui/style.css\""));
        assert!(
            !assets::INDEX_HTML.contains("http"),
            "nothing from elsewhere"
        );
        assert!(!assets::APP_JS.contains("innerHTML"), "text is set as text");
    }
}
