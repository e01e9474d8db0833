//! Tasks on their own: `GET /v1/tasks/{task}` answers one task in full ([`TaskDetail`]), named
//! by its id or a unique prefix of it. An ambiguous prefix is a 400 that lists the tasks it
//! names; an unknown one a 404 that says where task ids are shown.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path as UrlPath, Query, State};

use super::server::{self, ApiError, ControlState, ReadOptions};
use super::views::{self, TaskDetail};

/// The route of one task.
pub const TASK_ROUTE: &str = "/v1/tasks/{task}";

/// The path of one task, by id or unique id prefix (`GET` answers a [`TaskDetail`]).
pub fn task(name: &str) -> String {
    format!("/v1/tasks/{name}")
}

/// `GET /v1/tasks/{task}`.
pub(super) async fn inspect_task(
    State(state): State<Arc<ControlState>>,
    UrlPath(name): UrlPath<String>,
    Query(read): Query<ReadOptions>,
) -> Result<Json<TaskDetail>, ApiError> {
    let cluster = server::cluster(&state, read).await?;
    let task = views::find_task(&cluster, &name)?;
    Ok(Json(views::task_detail(&cluster, task)))
}
