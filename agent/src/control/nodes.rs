//! The nodes' routes: list, inspect, their tasks, update (availability, labels, role), remove.
//! A node is named by its id, hostname or unique id prefix.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path as UrlPath, Query, State};
use shoal_scheduler::{Command, NodeId, Outcome};

use super::api::{self, ErrorBody, RemoveNodeQuery, UpdateNodeRequest};
use super::server::{
    ApiError, ApiResult, Call, ControlState, Declined, ReadOptions, WriteResult, cluster, decline,
    write,
};
use super::{filters, views};
use crate::worker::now;

/// The nodes, one row each.
#[utoipa::path(
    get,
    path = api::NODES,
    tag = "nodes",
    params(ReadOptions, ("filter" = Option<Vec<String>>, Query, description = "`KEY=VALUE`, repeatable: one key matches any of its values, different keys must all match")),
    responses(
        (status = 200, description = "The nodes", body = [views::NodeRow]),
        (status = 400, description = "A bad body, query or path", body = ErrorBody),
        (status = 503, description = "No quorum, or a write that may or may not have committed (retry it under the same request id)", body = ErrorBody),
    )
)]
pub(super) async fn list_nodes(
    State(state): State<Arc<ControlState>>,
    Query(read): Query<ReadOptions>,
    filter: filters::NodeFilter,
) -> ApiResult<Vec<views::NodeRow>> {
    let cluster = cluster(&state, read).await?;
    Ok(Json(views::node_rows_where(&cluster, |n| {
        filter.matches(n)
    })))
}

/// One node in full.
#[utoipa::path(
    get,
    path = "/v1/nodes/{node}",
    tag = "nodes",
    params(("node" = String, Path, description = "The node's id, hostname or unique id prefix"), ReadOptions),
    responses(
        (status = 200, description = "The scheduler's `Node`", body = Object),
        (status = 400, description = "An ambiguous prefix", body = ErrorBody),
        (status = 404, description = "No such node", body = ErrorBody),
        (status = 503, description = "No quorum, or a write that may or may not have committed (retry it under the same request id)", body = ErrorBody),
    )
)]
pub(super) async fn inspect_node(
    State(state): State<Arc<ControlState>>,
    UrlPath(name): UrlPath<String>,
    Query(read): Query<ReadOptions>,
) -> ApiResult<shoal_scheduler::Node> {
    let cluster = cluster(&state, read).await?;
    Ok(Json(views::find_node(&cluster, &name)?.clone()))
}

/// The tasks placed on a node.
#[utoipa::path(
    get,
    path = "/v1/nodes/{node}/tasks",
    tag = "nodes",
    params(("node" = String, Path, description = "The node's id, hostname or unique id prefix"), ReadOptions, ("filter" = Option<Vec<String>>, Query, description = "`KEY=VALUE`, repeatable: one key matches any of its values, different keys must all match")),
    responses(
        (status = 200, description = "Its tasks", body = [views::TaskRow]),
        (status = 400, description = "A bad body, query or path", body = ErrorBody),
        (status = 404, description = "No such node", body = ErrorBody),
        (status = 503, description = "No quorum, or a write that may or may not have committed (retry it under the same request id)", body = ErrorBody),
    )
)]
pub(super) async fn node_tasks(
    State(state): State<Arc<ControlState>>,
    UrlPath(name): UrlPath<String>,
    Query(read): Query<ReadOptions>,
    filter: filters::TaskFilter,
) -> ApiResult<Vec<views::TaskRow>> {
    let cluster = cluster(&state, read).await?;
    let node = views::find_node(&cluster, &name)?;
    Ok(Json(views::node_task_rows_where(&cluster, &node.id, |t| {
        filter.keeps(&cluster, t)
    })))
}

/// Changes a node's availability and labels.
#[utoipa::path(
    post,
    path = "/v1/nodes/{node}/update",
    tag = "nodes",
    params(("node" = String, Path, description = "The node's id, hostname or unique id prefix")),
    request_body = UpdateNodeRequest,
    responses(
        (status = 200, description = "The node's id; its log index in `x-shoal-index`", body = String, content_type = "application/json"),
        (status = 400, description = "A bad body, query or path", body = ErrorBody),
        (status = 404, description = "No such node", body = ErrorBody),
        (status = 422, description = "A body that does not fit the schema", body = ErrorBody),
        (status = 503, description = "No quorum, or a write that may or may not have committed (retry it under the same request id)", body = ErrorBody),
    )
)]
pub(super) async fn update_node(
    State(state): State<Arc<ControlState>>,
    UrlPath(name): UrlPath<String>,
    call: Call,
    Json(request): Json<UpdateNodeRequest>,
) -> WriteResult<NodeId> {
    let id = match node_id(&state, &name).await? {
        Ok(id) => id,
        Err(declined) => return decline_for_node(&state, &call, declined).await,
    };
    let command = Command::UpdateNode {
        id: id.clone(),
        availability: request.availability,
        role: None,
        labels_set: request.labels_set,
        labels_remove: request.labels_remove,
    };
    write(&state, &call, command).await?.answer(id)
}

/// Removes a node from the cluster's state. A raft member is refused: its vote must move first
/// (autopilot does it once the node is drained or asked to step down), or the group could lose
/// its quorum to a removal.
#[utoipa::path(
    delete,
    path = "/v1/nodes/{node}",
    tag = "nodes",
    params(("node" = String, Path, description = "The node's id, hostname or unique id prefix"), RemoveNodeQuery),
    responses(
        (status = 200, description = "The removed node's id; its log index in `x-shoal-index`", body = String, content_type = "application/json"),
        (status = 404, description = "No such node", body = ErrorBody),
        (status = 409, description = "A manager, or a node that is not down (without `force`)", body = ErrorBody),
        (status = 503, description = "No quorum, or a write that may or may not have committed (retry it under the same request id)", body = ErrorBody),
    )
)]
pub(super) async fn remove_node(
    State(state): State<Arc<ControlState>>,
    UrlPath(name): UrlPath<String>,
    Query(query): Query<RemoveNodeQuery>,
    call: Call,
) -> WriteResult<NodeId> {
    let cluster = cluster(&state, ReadOptions::default()).await?;
    let node = match views::find_node(&cluster, &name) {
        Ok(node) => node,
        Err(missing) => return decline_for_node(&state, &call, missing.into()).await,
    };
    let raft = state.quorum.status();
    let member = raft
        .voters
        .iter()
        .chain(&raft.learners)
        .any(|peer| peer.to_string() == node.id.as_str());
    if member {
        let why = format!(
            "{name} is a manager: demote it first (`shoal node demote {name}`), wait until \
             `shoal node ls` shows it as a worker, then remove it"
        );
        return decline_for_node(&state, &call, Declined::conflict(why)).await;
    }
    let command = Command::RemoveNode {
        id: node.id.clone(),
        force: query.force,
        at: now(),
    };
    write(&state, &call, command).await?.answer(node.id.clone())
}

/// The id of the node `name` names in a linearizable read; what to decline when none or
/// several fit.
async fn node_id(state: &ControlState, name: &str) -> Result<Result<NodeId, Declined>, ApiError> {
    let cluster = cluster(state, ReadOptions::default()).await?;
    Ok(views::find_node(&cluster, name)
        .map(|node| node.id.clone())
        .map_err(Declined::from))
}

/// Declines a write about a node ([`decline`]): a copy of it that applied first answers with
/// the id of the node it changed.
async fn decline_for_node(
    state: &ControlState,
    call: &Call,
    declined: Declined,
) -> WriteResult<NodeId> {
    decline(state, call, declined, |first| match first {
        Outcome::NodeUpdated(id) | Outcome::NodeRemoved(id) => Some(id.clone()),
        _ => None,
    })
    .await
}
