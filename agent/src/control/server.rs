//! The control API server: axum routes over the cluster state and raft writes, served on the
//! agent's owner-only Unix socket, and to other agents' forwarded calls ([`super::forward`]).
//!
//! Reads are linearizable by default: they see every write committed before they began (a read
//! index confirmed by the leader); `?stale=true` answers from this agent's replica at once, for
//! cheap polling. Writes go through raft (forwarded to the leader when this agent is a
//! follower); a write may carry a request id (header `x-shoal-request-id`), and a retry with the
//! same id is applied once. An agent with no replica (a worker) forwards every call to a
//! manager. A forwarded write is authorized by what its caller's admission allows.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use serde::Deserialize;
use shoal_consensus::{Committed, Quorum};
use shoal_discovery::Mesh;
use shoal_scheduler::authz::{self, Origin};
use shoal_scheduler::{
    ApplyError, ClusterState, Command, DeclineReason, NodeId, Outcome, RequestId,
};
use tokio::net::UnixListener;
use utoipa::IntoParams;

use super::api::{self, ClusterSettingsRequest, ErrorBody, InfoResponse};
use super::forward::{self, Caller, ForwardedAnswer, REQUEST_ID_HEADER};
use super::remote::RemoteAccess;
use super::views;

/// What the handlers share.
#[derive(Clone)]
pub struct ControlState {
    /// The raft handle.
    pub quorum: Quorum,
    /// The mesh (forwarded calls).
    pub mesh: Mesh,
    /// This agent's node id.
    pub node_id: String,
    /// This agent's runtime (`docker`, `sim`, `none`).
    pub runtime: String,
    /// The agent's metric families.
    pub metrics: shoal_metrics::AgentMetrics,
    /// The executor of this node's tasks (their logs), if it runs any.
    pub executor: Option<Arc<dyn crate::executor::Executor>>,
    /// The TCP API's token and address.
    pub remote: RemoteAccess,
    /// The cluster's data key as this agent holds it (a manager's; see
    /// [`super::secrets::data_key`]).
    pub data_key: Arc<shoal_consensus::sealed::DataKeyStore>,
    /// This replica's endpoint view as the calls that wait on it share it.
    pub endpoints: Arc<super::endpoints::EndpointsCache>,
}

/// How a read is served.
#[derive(Debug, Clone, Copy, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ReadOptions {
    /// Answer from this agent's replica at once instead of a linearizable read.
    #[serde(default)]
    pub stale: bool,
    /// Answer from this agent's replica once it has applied this log index (a write's
    /// [`api::INDEX_HEADER`]): reads your own writes through any manager without a round to
    /// the leader.
    #[serde(default)]
    pub min_index: Option<u64>,
}

/// An error answer with its HTTP status.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    /// An error with its status.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
        }
    }

    /// The error as an HTTP response.
    pub fn into_response_body(self) -> Response<Body> {
        self.into_response()
    }

    /// The error as the answer to a forwarded call.
    pub fn into_answer(self) -> ForwardedAnswer {
        let body = serde_json::to_vec(&ErrorBody {
            error: self.message,
        })
        .unwrap_or_default();
        ForwardedAnswer {
            status: self.status.as_u16(),
            body,
            index: None,
        }
    }

    pub(super) fn no_such_service(name: &str) -> Self {
        ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no such service: {name} (see `shoal service ls`)"),
        )
    }
}

impl From<views::LookupError> for ApiError {
    fn from(error: views::LookupError) -> Self {
        let status = if error.is_not_found() {
            StatusCode::NOT_FOUND
        } else {
            StatusCode::BAD_REQUEST
        };
        ApiError::new(status, error.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(ErrorBody {
                error: self.message,
            }),
        )
            .into_response()
    }
}

impl From<ApplyError> for ApiError {
    fn from(error: ApplyError) -> Self {
        let status = match &error {
            ApplyError::NoSuchService(_)
            | ApplyError::NoSuchNode(_)
            | ApplyError::NoSuchObject(..) => StatusCode::NOT_FOUND,
            ApplyError::NameInUse(_)
            | ApplyError::ObjectNameInUse(..)
            | ApplyError::Stale(_)
            | ApplyError::AlreadyInitialised(_) => StatusCode::CONFLICT,
            ApplyError::InvalidSpec(_) => StatusCode::BAD_REQUEST,
            ApplyError::Unauthorized(_) => StatusCode::FORBIDDEN,
            ApplyError::Declined { reason, .. } => match reason {
                DeclineReason::NotFound => StatusCode::NOT_FOUND,
                DeclineReason::Conflict => StatusCode::CONFLICT,
                DeclineReason::Ambiguous | DeclineReason::Invalid => StatusCode::BAD_REQUEST,
            },
            _ => StatusCode::UNPROCESSABLE_ENTITY,
        };
        ApiError::new(status, error.to_string())
    }
}

pub(super) type ApiResult<T> = Result<Json<T>, ApiError>;

/// A write's answer: its body, and the log index it committed at in [`api::INDEX_HEADER`].
pub(super) type WriteResult<T> = Result<([(&'static str, String); 1], Json<T>), ApiError>;

/// What a committed write answered, and where it is in the log.
pub(super) struct Written {
    /// What applying it answered.
    pub(super) outcome: Outcome,
    /// The log index it committed at.
    pub(super) index: u64,
}

impl Written {
    /// The answer `body`, with this write's index.
    pub(super) fn answer<T>(&self, body: T) -> WriteResult<T> {
        Ok(([(api::INDEX_HEADER, self.index.to_string())], Json(body)))
    }
}

/// The control API's routes ([`super::routes::table`]), every error answered as JSON.
pub fn router(state: ControlState) -> Router {
    let routes = super::routes::table()
        .into_iter()
        .map(super::routes::Route::into_parts)
        .fold(Router::new(), |router, (path, endpoint)| {
            router.route(path, endpoint)
        });
    let routes = routes
        .fallback(super::errors::no_route)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            forward_from_workers,
        ))
        .with_state(Arc::new(state));
    // Around the whole router, so that a 405 is rewritten with its `Allow` header in place.
    Router::new()
        .fallback_service(routes)
        .layer(middleware::from_fn(super::errors::json_errors))
}

/// On an agent without a replica of the state, sends its socket's calls to a manager (all but
/// `/v1/info`, which is about this agent).
async fn forward_from_workers(
    State(state): State<ControlState>,
    request: Request,
    next: Next,
) -> Response {
    let local = request.extensions().get::<Caller>().is_none();
    let path = request.uri().path();
    let about_this_agent = [api::INFO, api::API_TOKEN, api::OPENAPI].contains(&path)
        || path.starts_with(api::LOCAL_PREFIX);
    if local && !about_this_agent && !state.quorum.is_member() {
        return forward::forward(&state, request).await;
    }
    next.run(request).await
}

/// Binds the socket at `path` (replacing a stale one), owner-only; the returned future serves
/// it until dropped.
pub async fn serve(
    path: &Path,
    state: ControlState,
) -> std::io::Result<impl Future<Output = ()> + Send + 'static> {
    if path.exists() {
        std::fs::remove_file(path)?;
    }
    let listener = UnixListener::bind(path)?;
    set_owner_only(path)?;
    let app = router(state);
    let shown: PathBuf = path.to_path_buf();
    tracing::info!(socket = %shown.display(), "control API listening");
    Ok(async move {
        if let Err(error) = axum::serve(listener, app).await {
            tracing::warn!(%error, "the control API stopped");
        }
    })
}

fn set_owner_only(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
}

/// The request id a write carries, if any.
fn request_id(headers: &HeaderMap) -> Option<RequestId> {
    let text = headers.get(REQUEST_ID_HEADER)?.to_str().ok()?;
    let hex = text.strip_prefix('r').unwrap_or(text);
    u64::from_str_radix(hex, 16).ok().map(RequestId)
}

/// Writes `command` for `caller`: a forwarded call only if the caller's admission allows it.
pub(super) async fn write(
    state: &ControlState,
    call: &Call,
    command: Command,
) -> Result<Written, ApiError> {
    authorize(state, call, &command)?;
    let request = call.request.or_else(|| {
        command
            .wants_request_id()
            .then(shoal_consensus::new_request_id)
    });
    match state.quorum.write_request(request, command).await {
        Ok(Committed {
            index,
            result: Ok(outcome),
        }) => Ok(Written { outcome, index }),
        Ok(Committed {
            result: Err(error), ..
        }) => Err(error.into()),
        Err(error) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            error.to_string(),
        )),
    }
}

/// Refuses a forwarded `command` that the caller's admission does not allow.
fn authorize(state: &ControlState, call: &Call, command: &Command) -> Result<(), ApiError> {
    let Caller::Peer(peer) = call.caller else {
        return Ok(());
    };
    let cluster = state.quorum.state();
    let node = NodeId::new(peer.to_string());
    let origin = Origin::of_node(&cluster, &node).unwrap_or(Origin::Worker(&node));
    authz::authorize(&cluster, origin, command).map_err(|refused| {
        tracing::warn!(%peer, command = command.kind(), %refused, "forwarded write refused");
        state.metrics.refused("control", "write", "unauthorized");
        ApiError::from(refused)
    })
}

/// A write its handler refuses from what it read, before it becomes a command: what the call
/// names does not exist or names several records, or may not change now.
pub(super) struct Declined {
    reason: DeclineReason,
    message: String,
}

impl Declined {
    /// A refusal because what the call names may not change that way now.
    pub(super) fn conflict(message: impl Into<String>) -> Self {
        Declined {
            reason: DeclineReason::Conflict,
            message: message.into(),
        }
    }

    /// A refusal because the call itself is wrong.
    pub(super) fn invalid(message: impl Into<String>) -> Self {
        Declined {
            reason: DeclineReason::Invalid,
            message: message.into(),
        }
    }

    fn into_error(self) -> ApplyError {
        ApplyError::Declined {
            reason: self.reason,
            message: self.message,
        }
    }
}

impl From<views::LookupError> for Declined {
    fn from(error: views::LookupError) -> Self {
        let reason = if error.is_not_found() {
            DeclineReason::NotFound
        } else {
            DeclineReason::Ambiguous
        };
        Declined {
            reason,
            message: error.to_string(),
        }
    }
}

/// Answers a write that its handler refuses (`declined`), deciding its request once. A write
/// may reach managers more than once under one request id (a worker forwards it on to another
/// manager when the first is slow to answer), and a late copy resolves names against a later
/// state: the copy that answered "no such service" must not leave another one free to remove
/// the service of that name made meanwhile. So the refusal is written to the log under the
/// request id ([`Command::Decline`]): a later copy is answered this refusal, and a copy that
/// applied first makes this one answer as it applied (`first` picks the body from its
/// outcome). A call without a request id, or from an agent that may not write, is refused
/// without a write: no copy of it can apply.
pub(super) async fn decline<T>(
    state: &ControlState,
    call: &Call,
    declined: Declined,
    first: impl FnOnce(&Outcome) -> Option<T>,
) -> WriteResult<T> {
    let command = Command::Decline {
        reason: declined.reason,
        message: declined.message.clone(),
    };
    if call.request.is_none() || authorize(state, call, &command).is_err() {
        return Err(declined.into_error().into());
    }
    let written = write(state, call, command).await?;
    match first(&written.outcome) {
        Some(body) => written.answer(body),
        None => Err(declined.into_error().into()),
    }
}

/// The state a read answers from: linearizable by default, this replica's with `stale`.
pub(crate) async fn cluster(
    state: &ControlState,
    options: ReadOptions,
) -> Result<Arc<ClusterState>, ApiError> {
    let unavailable = |error: shoal_consensus::WriteError| {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, error.to_string())
    };
    if let Some(index) = options.min_index {
        return state.quorum.read_at_least(index).await.map_err(unavailable);
    }
    if options.stale {
        return Ok(state.quorum.state());
    }
    state
        .quorum
        .read()
        .await
        .map_err(|error| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, error.to_string()))
}

/// Facts about this agent and the cluster as it sees them.
#[utoipa::path(
    get,
    path = api::INFO,
    tag = "agent",
    responses(
        (status = 200, description = "This agent", body = InfoResponse),
    )
)]
pub(super) async fn info(State(state): State<Arc<ControlState>>) -> ApiResult<InfoResponse> {
    let leader = *state.quorum.leader().borrow();
    Ok(Json(InfoResponse {
        node_id: state.node_id.clone(),
        cluster_id: state.quorum.cluster_id(),
        leader: leader.map(|peer| peer.to_string()),
        is_leader: leader.map(|peer| peer.to_string()) == Some(state.node_id.clone()),
        runtime: state.runtime.clone(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        data_key: api::DataKeyState::of(&state.data_key.status()),
    }))
}

/// Who makes a write and under which request id.
pub struct Call {
    caller: Caller,
    request: Option<RequestId>,
}

impl Call {
    /// Who makes the call: the socket's owner or another agent.
    pub fn caller(&self) -> Caller {
        self.caller
    }
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Call {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Call, Self::Rejection> {
        Ok(Call {
            caller: parts
                .extensions
                .get::<Caller>()
                .copied()
                .unwrap_or(Caller::Local),
            request: request_id(&parts.headers),
        })
    }
}

/// The cluster-wide settings.
#[utoipa::path(
    get,
    path = api::CLUSTER_SETTINGS,
    tag = "cluster",
    params(ReadOptions),
    responses(
        (status = 200, description = "The scheduler's `ClusterSettings`", body = Object),
        (status = 503, description = "No quorum, or a write that may or may not have committed (retry it under the same request id)", body = ErrorBody),
    )
)]
pub(super) async fn cluster_settings(
    State(state): State<Arc<ControlState>>,
    Query(read): Query<ReadOptions>,
) -> ApiResult<shoal_scheduler::ClusterSettings> {
    Ok(Json(cluster(&state, read).await?.settings.clone()))
}

/// Changes cluster-wide settings (absent ones stay).
#[utoipa::path(
    post,
    path = api::CLUSTER_SETTINGS,
    tag = "cluster",
    request_body = ClusterSettingsRequest,
    responses(
        (status = 200, description = "The settings after the change; its log index in `x-shoal-index`", body = Object),
        (status = 400, description = "A bad body, query or path", body = ErrorBody),
        (status = 403, description = "A forwarded write the caller may not make", body = ErrorBody),
        (status = 422, description = "A body that does not fit the schema", body = ErrorBody),
        (status = 503, description = "No quorum, or a write that may or may not have committed (retry it under the same request id)", body = ErrorBody),
    )
)]
pub(super) async fn update_cluster_settings(
    State(state): State<Arc<ControlState>>,
    call: Call,
    Json(request): Json<ClusterSettingsRequest>,
) -> WriteResult<shoal_scheduler::ClusterSettings> {
    let command = Command::UpdateClusterSettings {
        allow_sensitive_mounts: request.allow_sensitive_mounts,
        task_history_limit: request.task_history_limit,
    };
    let written = write(&state, &call, command).await?;
    let read = ReadOptions {
        min_index: Some(written.index),
        ..ReadOptions::default()
    };
    written.answer(cluster(&state, read).await?.settings.clone())
}
