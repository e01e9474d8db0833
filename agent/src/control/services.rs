//! The services' routes: list, create, inspect, tasks, scale, update, roll back, remove. Every
//! service is named by its name, id, unique id prefix or unpadded number.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::StatusCode;
use shoal_scheduler::{Command, Outcome, ServiceId, ServiceMode};

use super::api::{
    self, CreateServiceRequest, CreateServiceResponse, ErrorBody, ScaleRequest,
    UpdateServiceRequest,
};
use super::server::{
    ApiError, ApiResult, Call, ControlState, Declined, ReadOptions, WriteResult, cluster, decline,
    write,
};
use super::{filters, views};
use crate::worker::now;

/// The services, one row each, in name order.
#[utoipa::path(
    get,
    path = api::SERVICES,
    tag = "services",
    params(ReadOptions, ("filter" = Option<Vec<String>>, Query, description = "`KEY=VALUE`, repeatable: one key matches any of its values, different keys must all match")),
    responses(
        (status = 200, description = "The services", body = [views::ServiceRow]),
        (status = 400, description = "A bad body, query or path", body = ErrorBody),
        (status = 503, description = "No quorum, or a write that may or may not have committed (retry it under the same request id)", body = ErrorBody),
    )
)]
pub(super) async fn list_services(
    State(state): State<Arc<ControlState>>,
    Query(read): Query<ReadOptions>,
    filter: filters::ServiceFilter,
) -> ApiResult<Vec<views::ServiceRow>> {
    let cluster = cluster(&state, read).await?;
    Ok(Json(views::service_rows_where(&cluster, |s| {
        filter.matches(s)
    })))
}

/// Creates a service.
#[utoipa::path(
    post,
    path = api::SERVICES,
    tag = "services",
    request_body = CreateServiceRequest,
    responses(
        (status = 200, description = "The new service's id; its log index in `x-shoal-index`", body = CreateServiceResponse),
        (status = 400, description = "A bad body, query or path", body = ErrorBody),
        (status = 403, description = "A forwarded write the caller may not make", body = ErrorBody),
        (status = 409, description = "A conflict: a name in use, a stale version", body = ErrorBody),
        (status = 415, description = "No `Content-Type: application/json`", body = ErrorBody),
        (status = 422, description = "A body that does not fit the schema", body = ErrorBody),
        (status = 503, description = "No quorum, or a write that may or may not have committed (retry it under the same request id)", body = ErrorBody),
    )
)]
pub(super) async fn create_service(
    State(state): State<Arc<ControlState>>,
    call: Call,
    Json(request): Json<CreateServiceRequest>,
) -> WriteResult<CreateServiceResponse> {
    let command = Command::CreateService {
        spec: request.spec,
        at: now(),
    };
    let written = write(&state, &call, command).await?;
    match written.outcome {
        Outcome::ServiceCreated(id) => written.answer(CreateServiceResponse { id }),
        other => Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("unexpected outcome {other:?}"),
        )),
    }
}

/// One service in full (spec, version, update status).
#[utoipa::path(
    get,
    path = "/v1/services/{name}",
    tag = "services",
    params(("name" = String, Path, description = "The service's name, id or unique id prefix"), ReadOptions),
    responses(
        (status = 200, description = "The scheduler's `Service`", body = Object),
        (status = 404, description = "No such service", body = ErrorBody),
        (status = 503, description = "No quorum, or a write that may or may not have committed (retry it under the same request id)", body = ErrorBody),
    )
)]
pub(super) async fn inspect_service(
    State(state): State<Arc<ControlState>>,
    UrlPath(name): UrlPath<String>,
    Query(read): Query<ReadOptions>,
) -> ApiResult<shoal_scheduler::Service> {
    let cluster = cluster(&state, read).await?;
    Ok(Json(views::lookup_service(&cluster, &name)?.clone()))
}

/// The tasks of a service, current and past.
#[utoipa::path(
    get,
    path = "/v1/services/{name}/tasks",
    tag = "services",
    params(("name" = String, Path, description = "The service's name, id or unique id prefix"), ReadOptions, ("filter" = Option<Vec<String>>, Query, description = "`KEY=VALUE`, repeatable: one key matches any of its values, different keys must all match")),
    responses(
        (status = 200, description = "Its tasks", body = [views::TaskRow]),
        (status = 400, description = "A bad body, query or path", body = ErrorBody),
        (status = 404, description = "No such service", body = ErrorBody),
        (status = 503, description = "No quorum, or a write that may or may not have committed (retry it under the same request id)", body = ErrorBody),
    )
)]
pub(super) async fn service_tasks(
    State(state): State<Arc<ControlState>>,
    UrlPath(name): UrlPath<String>,
    Query(read): Query<ReadOptions>,
    filter: filters::TaskFilter,
) -> ApiResult<Vec<views::TaskRow>> {
    let cluster = cluster(&state, read).await?;
    let service = views::lookup_service(&cluster, &name)?;
    Ok(Json(views::task_rows_where(&cluster, service, |t| {
        filter.keeps(&cluster, t)
    })))
}

/// Removes a service (its tasks stop).
#[utoipa::path(
    delete,
    path = "/v1/services/{name}",
    tag = "services",
    params(("name" = String, Path, description = "The service's name, id or unique id prefix")),
    responses(
        (status = 200, description = "The removed service's id; its log index in `x-shoal-index`", body = u64, content_type = "application/json"),
        (status = 403, description = "A forwarded write the caller may not make", body = ErrorBody),
        (status = 404, description = "No such service", body = ErrorBody),
        (status = 503, description = "No quorum, or a write that may or may not have committed (retry it under the same request id)", body = ErrorBody),
    )
)]
pub(super) async fn remove_service(
    State(state): State<Arc<ControlState>>,
    UrlPath(name): UrlPath<String>,
    call: Call,
) -> WriteResult<ServiceId> {
    let id = match service_id(&state, &name).await? {
        Ok(id) => id,
        Err(declined) => return decline_for_service(&state, &call, declined).await,
    };
    write(&state, &call, Command::RemoveService { id, at: now() })
        .await?
        .answer(id)
}

/// Sets a replicated service's number of replicas.
#[utoipa::path(
    post,
    path = "/v1/services/{name}/scale",
    tag = "services",
    params(("name" = String, Path, description = "The service's name, id or unique id prefix")),
    request_body = ScaleRequest,
    responses(
        (status = 200, description = "The service's id; its log index in `x-shoal-index`", body = u64, content_type = "application/json"),
        (status = 400, description = "A global service, or a bad body", body = ErrorBody),
        (status = 404, description = "No such service", body = ErrorBody),
        (status = 409, description = "A conflict: a name in use, a stale version", body = ErrorBody),
        (status = 422, description = "A body that does not fit the schema", body = ErrorBody),
        (status = 503, description = "No quorum, or a write that may or may not have committed (retry it under the same request id)", body = ErrorBody),
    )
)]
pub(super) async fn scale_service(
    State(state): State<Arc<ControlState>>,
    UrlPath(name): UrlPath<String>,
    call: Call,
    Json(request): Json<ScaleRequest>,
) -> WriteResult<ServiceId> {
    let cluster = cluster(&state, ReadOptions::default()).await?;
    let service = match views::lookup_service(&cluster, &name) {
        Ok(service) => service,
        Err(missing) => return decline_for_service(&state, &call, missing.into()).await,
    };
    if service.spec.mode == ServiceMode::Global {
        let why =
            format!("{name} is a global service: it runs one task per node and cannot be scaled");
        return decline_for_service(&state, &call, Declined::invalid(why)).await;
    }
    let mut spec = service.spec.clone();
    spec.mode = ServiceMode::Replicated {
        replicas: request.replicas,
    };
    let command = Command::UpdateService {
        id: service.id,
        expected_revision: service.revision,
        spec,
        at: now(),
    };
    write(&state, &call, command).await?.answer(service.id)
}

/// Replaces a service's spec (a rolling update), if it is still at `expected_revision`.
#[utoipa::path(
    post,
    path = "/v1/services/{name}/update",
    tag = "services",
    params(("name" = String, Path, description = "The service's name, id or unique id prefix")),
    request_body = UpdateServiceRequest,
    responses(
        (status = 200, description = "The service's id; its log index in `x-shoal-index`", body = u64, content_type = "application/json"),
        (status = 400, description = "A bad body, query or path", body = ErrorBody),
        (status = 404, description = "No such service", body = ErrorBody),
        (status = 409, description = "A conflict: a name in use, a stale version", body = ErrorBody),
        (status = 422, description = "A body that does not fit the schema", body = ErrorBody),
        (status = 503, description = "No quorum, or a write that may or may not have committed (retry it under the same request id)", body = ErrorBody),
    )
)]
pub(super) async fn update_service(
    State(state): State<Arc<ControlState>>,
    UrlPath(name): UrlPath<String>,
    call: Call,
    Json(request): Json<UpdateServiceRequest>,
) -> WriteResult<ServiceId> {
    let id = match service_id(&state, &name).await? {
        Ok(id) => id,
        Err(declined) => return decline_for_service(&state, &call, declined).await,
    };
    let command = Command::UpdateService {
        id,
        expected_revision: request.expected_revision,
        spec: request.spec,
        at: now(),
    };
    write(&state, &call, command).await?.answer(id)
}

/// Rolls a service back to its previous spec.
#[utoipa::path(
    post,
    path = "/v1/services/{name}/rollback",
    tag = "services",
    params(("name" = String, Path, description = "The service's name, id or unique id prefix")),
    responses(
        (status = 200, description = "The service's id; its log index in `x-shoal-index`", body = u64, content_type = "application/json"),
        (status = 404, description = "No such service", body = ErrorBody),
        (status = 409, description = "A conflict: a name in use, a stale version", body = ErrorBody),
        (status = 503, description = "No quorum, or a write that may or may not have committed (retry it under the same request id)", body = ErrorBody),
    )
)]
pub(super) async fn rollback_service(
    State(state): State<Arc<ControlState>>,
    UrlPath(name): UrlPath<String>,
    call: Call,
) -> WriteResult<ServiceId> {
    let id = match service_id(&state, &name).await? {
        Ok(id) => id,
        Err(declined) => return decline_for_service(&state, &call, declined).await,
    };
    write(&state, &call, Command::RollbackService { id, at: now() })
        .await?
        .answer(id)
}

/// The id of the service `name` names in a linearizable read; what to decline when none or
/// several fit.
async fn service_id(
    state: &ControlState,
    name: &str,
) -> Result<Result<ServiceId, Declined>, ApiError> {
    let cluster = cluster(state, ReadOptions::default()).await?;
    Ok(views::lookup_service(&cluster, name)
        .map(|service| service.id)
        .map_err(Declined::from))
}

/// Declines a write about a service ([`decline`]): a copy of it that applied first answers
/// with the id of the service it changed.
async fn decline_for_service(
    state: &ControlState,
    call: &Call,
    declined: Declined,
) -> WriteResult<ServiceId> {
    decline(state, call, declined, |first| match first {
        Outcome::ServiceUpdated(id) | Outcome::ServiceRemoved(id) => Some(*id),
        _ => None,
    })
    .await
}
