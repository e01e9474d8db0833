//! `GET /v1/endpoints`: what a node's service network needs of the state — the services, and
//! their tasks that take connections — for the agents that hold no replica of it (workers),
//! which ask it of a manager through their own socket.
//!
//! A worker asks again as soon as it has an answer, giving the digest of the view it holds
//! (`unchanged`) and how long it may wait (`wait_ms`): the manager answers when its view differs,
//! or, once the wait is over, with a small `unchanged` answer. A change reaches every worker
//! within the time of one forwarded call, and an idle cluster costs one small answer per worker
//! every [`MAX_ENDPOINTS_WAIT_MS`] instead of the whole view every second. The manager builds its
//! view when a waiting call needs it, once per applied change however many workers wait, and
//! not at all while none asks ([`EndpointsCache`]).

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::{Query, State};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use shoal_consensus::Quorum;
use shoal_scheduler::{ClusterState, Service, Task};
use tokio::sync::Mutex;
use utoipa::IntoParams;

use super::api::{self, ErrorBody};
use super::server::{ApiResult, ControlState, ReadOptions, cluster};

/// The longest a call may wait for the view to change (under the mesh's request timeout, so
/// that a forwarded call is answered before it is given up).
pub const MAX_ENDPOINTS_WAIT_MS: u64 = 5_000;
/// How long a waiting call lets more changes come with the one that woke it, before the view is
/// built again: a burst of applied entries costs one build.
const CHANGE_SETTLE: Duration = Duration::from_millis(50);

/// The services and the tasks that take their connections.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointsView {
    /// Every service.
    pub services: Vec<Service>,
    /// The tasks running and still wanted running.
    pub tasks: Vec<Task>,
    /// A digest of the services and tasks: the same view has the same digest.
    #[serde(default)]
    pub digest: String,
    /// The caller's view (its `unchanged` digest) still holds: `services` and `tasks` are left
    /// empty.
    #[serde(default)]
    pub unchanged: bool,
}

impl EndpointsView {
    /// The view of `state`.
    pub fn of(state: &ClusterState) -> EndpointsView {
        let services: Vec<Service> = state.services.values().cloned().collect();
        let tasks: Vec<Task> = state
            .tasks
            .values()
            .filter(|t| t.takes_connections())
            .cloned()
            .collect();
        let digest = digest_of(&services, &tasks);
        EndpointsView {
            services,
            tasks,
            digest,
            unchanged: false,
        }
    }

    /// The answer that the view with `digest` still holds.
    fn still(digest: &str) -> EndpointsView {
        EndpointsView {
            services: Vec::new(),
            tasks: Vec::new(),
            digest: digest.to_owned(),
            unchanged: true,
        }
    }

    /// A state holding only the view's services and tasks (what the endpoint table reads).
    pub fn into_state(self) -> ClusterState {
        ClusterState {
            services: self.services.into_iter().map(|s| (s.id, s)).collect(),
            tasks: self.tasks.into_iter().map(|t| (t.id, t)).collect(),
            ..ClusterState::default()
        }
    }
}

/// SHA-256 of the view's encoding, first 16 bytes in hex. The state's maps are ordered, so the
/// same services and tasks give the same digest on every manager.
fn digest_of(services: &[Service], tasks: &[Task]) -> String {
    let encoded = cbor4ii::serde::to_vec(Vec::new(), &(services, tasks)).unwrap_or_default();
    Sha256::digest(&encoded)[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// How the endpoints are asked for: [`ReadOptions`]' fields and the wait's. (Not a flattened
/// `ReadOptions`: a flattened struct reads query values as strings only, and `stale=true` would
/// not parse.)
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EndpointsQuery {
    /// Answer from this agent's replica at once instead of a linearizable read.
    #[serde(default)]
    pub stale: bool,
    /// Answer from this agent's replica once it has applied this log index.
    #[serde(default)]
    pub min_index: Option<u64>,
    /// The digest of the view the caller holds: answer once the view differs (from this
    /// agent's replica, as `stale`), or with `unchanged` once `wait_ms` is over.
    #[serde(default)]
    pub unchanged: Option<String>,
    /// With `unchanged`: wait up to this long (milliseconds, at most [`MAX_ENDPOINTS_WAIT_MS`]).
    #[serde(default)]
    pub wait_ms: Option<u64>,
}

/// The services and the tasks that take their connections.
#[utoipa::path(
    get,
    path = api::ENDPOINTS,
    tag = "services",
    params(EndpointsQuery),
    responses(
        (status = 200, description = "`{services: [Service], tasks: [Task], digest, unchanged}`: every service, and the tasks running and still wanted running (both empty when `unchanged`)", body = Object),
        (status = 503, description = "No quorum", body = ErrorBody),
    )
)]
pub(super) async fn endpoints(
    State(state): State<Arc<ControlState>>,
    Query(query): Query<EndpointsQuery>,
) -> ApiResult<EndpointsView> {
    let Some(held) = query.unchanged else {
        let read = ReadOptions {
            stale: query.stale,
            min_index: query.min_index,
        };
        return Ok(Json(EndpointsView::of(&*cluster(&state, read).await?)));
    };
    let wait = Duration::from_millis(query.wait_ms.unwrap_or(0).min(MAX_ENDPOINTS_WAIT_MS));
    let deadline = tokio::time::Instant::now() + wait;
    let mut applied = state.quorum.watch();
    loop {
        let applies = applied.borrow_and_update().applies;
        let view = state.endpoints.current(&state.quorum, applies).await;
        if view.digest != held {
            return Ok(Json(EndpointsView::clone(&view)));
        }
        let woke = tokio::time::timeout_at(deadline, applied.changed()).await;
        if !matches!(woke, Ok(Ok(()))) {
            return Ok(Json(EndpointsView::still(&held)));
        }
        tokio::time::sleep(CHANGE_SETTLE).await;
    }
}

/// This replica's endpoint view as the waiting calls share it: built when a call finds the state
/// moved since the last build, so that any number of waiting workers cost one build per applied
/// change, and an agent that no worker asks builds nothing.
#[derive(Default)]
pub struct EndpointsCache {
    /// The view and the applied count (`AppliedState::applies`) it was built at.
    built: Mutex<Option<(u64, Arc<EndpointsView>)>>,
}

impl EndpointsCache {
    /// The view of `quorum`'s applied state, built again unless it was built at `applies`
    /// (read before the state, so that a view is never labelled newer than it is).
    async fn current(&self, quorum: &Quorum, applies: u64) -> Arc<EndpointsView> {
        let mut built = self.built.lock().await;
        if let Some((at, view)) = built.as_ref()
            && *at == applies
        {
            return view.clone();
        }
        let view = Arc::new(EndpointsView::of(&quorum.state()));
        *built = Some((applies, view.clone()));
        view
    }
}
