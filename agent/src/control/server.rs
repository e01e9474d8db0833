//! The control API server: axum routes over the cluster state and raft writes, served on the
//! agent's owner-only Unix socket. Reads come from this agent's applied state; writes go through
//! raft (forwarded to the leader when this agent is a follower).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use shoal_consensus::Quorum;
use shoal_scheduler::{ApplyError, ClusterState, Command, Outcome, ServiceId, ServiceMode};
use tokio::net::UnixListener;

use super::api::{
    self, CreateServiceRequest, CreateServiceResponse, ErrorBody, InfoResponse, ScaleRequest,
    UpdateServiceRequest,
};
use super::views;
use crate::worker::now;

/// What the handlers share.
#[derive(Clone)]
pub struct ControlState {
    /// The raft handle.
    pub quorum: Quorum,
    /// This agent's node id.
    pub node_id: String,
    /// This agent's runtime (`docker`, `sim`, `none`).
    pub runtime: String,
}

/// An error answer with its HTTP status.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
        }
    }

    fn no_such_service(name: &str) -> Self {
        ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no such service: {name} (see `shoal service ls`)"),
        )
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
            ApplyError::NoSuchService(_) | ApplyError::NoSuchNode(_) => StatusCode::NOT_FOUND,
            ApplyError::NameInUse(_) | ApplyError::Stale(_) | ApplyError::AlreadyInitialised(_) => {
                StatusCode::CONFLICT
            }
            ApplyError::InvalidSpec(_) => StatusCode::BAD_REQUEST,
            _ => StatusCode::UNPROCESSABLE_ENTITY,
        };
        ApiError::new(status, error.to_string())
    }
}

type ApiResult<T> = Result<Json<T>, ApiError>;

/// The control API's routes.
pub fn router(state: ControlState) -> Router {
    Router::new()
        .route(api::INFO, get(info))
        .route(api::SERVICES, get(list_services).post(create_service))
        .route(
            "/v1/services/{name}",
            get(inspect_service).delete(remove_service),
        )
        .route("/v1/services/{name}/tasks", get(service_tasks))
        .route("/v1/services/{name}/scale", post(scale_service))
        .route("/v1/services/{name}/update", post(update_service))
        .route("/v1/services/{name}/rollback", post(rollback_service))
        .route(api::NODES, get(list_nodes))
        .with_state(Arc::new(state))
}

/// Binds the socket at `path` (replacing a stale one), owner-only, and serves until aborted.
pub async fn serve(
    path: &Path,
    state: ControlState,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    if path.exists() {
        std::fs::remove_file(path)?;
    }
    let listener = UnixListener::bind(path)?;
    set_owner_only(path)?;
    let app = router(state);
    let shown: PathBuf = path.to_path_buf();
    tracing::info!(socket = %shown.display(), "control API listening");
    Ok(tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, app).await {
            tracing::warn!(%error, "the control API stopped");
        }
    }))
}

fn set_owner_only(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
}

async fn write(state: &ControlState, command: Command) -> Result<Outcome, ApiError> {
    match state.quorum.write(command).await {
        Ok(Ok(outcome)) => Ok(outcome),
        Ok(Err(error)) => Err(error.into()),
        Err(error) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            error.to_string(),
        )),
    }
}

fn cluster(state: &ControlState) -> Arc<ClusterState> {
    state.quorum.state()
}

async fn info(State(state): State<Arc<ControlState>>) -> ApiResult<InfoResponse> {
    let leader = *state.quorum.leader().borrow();
    Ok(Json(InfoResponse {
        node_id: state.node_id.clone(),
        cluster_id: cluster(&state).cluster_id.as_ref().map(|id| id.to_string()),
        leader: leader.map(|peer| peer.to_string()),
        is_leader: leader.map(|peer| peer.to_string()) == Some(state.node_id.clone()),
        runtime: state.runtime.clone(),
        version: env!("CARGO_PKG_VERSION").to_string(),
    }))
}

async fn list_services(
    State(state): State<Arc<ControlState>>,
) -> ApiResult<Vec<views::ServiceRow>> {
    Ok(Json(views::service_rows(&cluster(&state))))
}

async fn create_service(
    State(state): State<Arc<ControlState>>,
    Json(request): Json<CreateServiceRequest>,
) -> ApiResult<CreateServiceResponse> {
    match write(
        &state,
        Command::CreateService {
            spec: request.spec,
            at: now(),
        },
    )
    .await?
    {
        Outcome::ServiceCreated(id) => Ok(Json(CreateServiceResponse { id })),
        other => Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("unexpected outcome {other:?}"),
        )),
    }
}

async fn inspect_service(
    State(state): State<Arc<ControlState>>,
    UrlPath(name): UrlPath<String>,
) -> ApiResult<shoal_scheduler::Service> {
    let cluster = cluster(&state);
    let service =
        views::find_service(&cluster, &name).ok_or_else(|| ApiError::no_such_service(&name))?;
    Ok(Json(service.clone()))
}

async fn service_tasks(
    State(state): State<Arc<ControlState>>,
    UrlPath(name): UrlPath<String>,
) -> ApiResult<Vec<views::TaskRow>> {
    let cluster = cluster(&state);
    let service =
        views::find_service(&cluster, &name).ok_or_else(|| ApiError::no_such_service(&name))?;
    Ok(Json(views::task_rows(&cluster, service)))
}

async fn remove_service(
    State(state): State<Arc<ControlState>>,
    UrlPath(name): UrlPath<String>,
) -> ApiResult<ServiceId> {
    let id = service_id(&state, &name)?;
    write(&state, Command::RemoveService { id, at: now() }).await?;
    Ok(Json(id))
}

async fn scale_service(
    State(state): State<Arc<ControlState>>,
    UrlPath(name): UrlPath<String>,
    Json(request): Json<ScaleRequest>,
) -> ApiResult<ServiceId> {
    let cluster = cluster(&state);
    let service =
        views::find_service(&cluster, &name).ok_or_else(|| ApiError::no_such_service(&name))?;
    if service.spec.mode == ServiceMode::Global {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("{name} is a global service: it runs one task per node and cannot be scaled"),
        ));
    }
    let mut spec = service.spec.clone();
    spec.mode = ServiceMode::Replicated {
        replicas: request.replicas,
    };
    let command = Command::UpdateService {
        id: service.id,
        expected_version: service.version,
        spec,
        at: now(),
    };
    write(&state, command).await?;
    Ok(Json(service.id))
}

async fn update_service(
    State(state): State<Arc<ControlState>>,
    UrlPath(name): UrlPath<String>,
    Json(request): Json<UpdateServiceRequest>,
) -> ApiResult<ServiceId> {
    let id = service_id(&state, &name)?;
    let command = Command::UpdateService {
        id,
        expected_version: request.expected_version,
        spec: request.spec,
        at: now(),
    };
    write(&state, command).await?;
    Ok(Json(id))
}

async fn rollback_service(
    State(state): State<Arc<ControlState>>,
    UrlPath(name): UrlPath<String>,
) -> ApiResult<ServiceId> {
    let id = service_id(&state, &name)?;
    write(&state, Command::RollbackService { id, at: now() }).await?;
    Ok(Json(id))
}

async fn list_nodes(State(state): State<Arc<ControlState>>) -> ApiResult<Vec<views::NodeRow>> {
    Ok(Json(views::node_rows(&cluster(&state))))
}

fn service_id(state: &ControlState, name: &str) -> Result<ServiceId, ApiError> {
    let cluster = cluster(state);
    views::find_service(&cluster, name)
        .map(|s| s.id)
        .ok_or_else(|| ApiError::no_such_service(name))
}
