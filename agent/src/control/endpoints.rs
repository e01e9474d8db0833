//! `GET /v1/endpoints`: what a node's service network needs of the state — the services, and
//! their tasks that take connections — for the agents that hold no replica of it (workers),
//! which ask it of a manager through their own socket once a second.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Query, State};
use serde::{Deserialize, Serialize};
use shoal_scheduler::{ClusterState, Service, Task};

use super::api::{self, ErrorBody};
use super::server::{ApiResult, ControlState, ReadOptions, cluster};

/// The services and the tasks that take their connections.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointsView {
    /// Every service.
    pub services: Vec<Service>,
    /// The tasks running and still wanted running.
    pub tasks: Vec<Task>,
}

impl EndpointsView {
    /// The view of `state`.
    pub fn of(state: &ClusterState) -> EndpointsView {
        EndpointsView {
            services: state.services.values().cloned().collect(),
            tasks: state
                .tasks
                .values()
                .filter(|t| t.takes_connections())
                .cloned()
                .collect(),
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

/// The services and the tasks that take their connections.
#[utoipa::path(
    get,
    path = api::ENDPOINTS,
    tag = "services",
    params(ReadOptions),
    responses(
        (status = 200, description = "`{services: [Service], tasks: [Task]}`: every service, and the tasks running and still wanted running", body = Object),
        (status = 503, description = "No quorum, or a write that may or may not have committed (retry it under the same request id)", body = ErrorBody),
    )
)]
pub(super) async fn endpoints(
    State(state): State<Arc<ControlState>>,
    Query(read): Query<ReadOptions>,
) -> ApiResult<EndpointsView> {
    let state = cluster(&state, read).await?;
    Ok(Json(EndpointsView::of(&state)))
}
