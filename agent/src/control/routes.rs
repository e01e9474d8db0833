//! The one list of the control API's routes ([`table`]) and its OpenAPI document ([`ApiDoc`],
//! served at `GET /v1/openapi.json`).
//!
//! To add a route: write its handler with a `#[utoipa::path(...)]` annotation (method, path,
//! parameters, bodies, answers), add one [`Route`] line to [`table`], and list the handler in
//! `paths(...)` of [`ApiDoc`]. A handler whose module does not annotate it gets a stub in
//! [`elsewhere`] instead. A unit test (and `tests/tests/cluster/tcp_api.rs`) fails while the
//! table and the document disagree.

use std::collections::BTreeSet;
use std::sync::{Arc, OnceLock};

use axum::handler::Handler;
use axum::http::{Method, header};
use axum::response::IntoResponse;
use axum::routing::{MethodRouter, delete, get, post};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::api::{self, ErrorBody};
use super::server::{self, ControlState};
use super::{
    autolock, cluster_info, endpoints, events, join_tokens, logs, nodes, remote, secrets, services,
    tasks,
};

/// One route: a method on a path (`{param}` segments as in the OpenAPI document) and its handler.
pub struct Route {
    method: Method,
    path: &'static str,
    endpoint: MethodRouter<Arc<ControlState>>,
}

impl Route {
    /// `GET path`.
    fn get<H: Handler<T, Arc<ControlState>>, T: 'static>(path: &'static str, handler: H) -> Self {
        Route::new(Method::GET, path, get(handler))
    }

    /// `POST path`.
    fn post<H: Handler<T, Arc<ControlState>>, T: 'static>(path: &'static str, handler: H) -> Self {
        Route::new(Method::POST, path, post(handler))
    }

    /// `DELETE path`.
    fn delete<H: Handler<T, Arc<ControlState>>, T: 'static>(
        path: &'static str,
        handler: H,
    ) -> Self {
        Route::new(Method::DELETE, path, delete(handler))
    }

    fn new(method: Method, path: &'static str, endpoint: MethodRouter<Arc<ControlState>>) -> Self {
        Route {
            method,
            path,
            endpoint,
        }
    }

    /// The same route, its request bodies bounded to `bytes`.
    fn body_limit(mut self, bytes: usize) -> Self {
        self.endpoint = self
            .endpoint
            .layer(axum::extract::DefaultBodyLimit::max(bytes));
        self
    }

    /// The method.
    pub fn method(&self) -> &Method {
        &self.method
    }

    /// The path, `{param}` segments included.
    pub fn path(&self) -> &'static str {
        self.path
    }

    /// The path and the handler, for the router.
    pub(super) fn into_parts(self) -> (&'static str, MethodRouter<Arc<ControlState>>) {
        (self.path, self.endpoint)
    }
}

/// Every route of the control API.
pub fn table() -> Vec<Route> {
    use server as s;
    vec![
        Route::get(api::INFO, s::info),
        Route::get(api::OPENAPI, openapi_json),
        Route::get(api::API_TOKEN, remote::api_token),
        Route::get(api::SERVICES, services::list_services),
        Route::post(api::SERVICES, services::create_service),
        Route::get("/v1/services/{name}", services::inspect_service),
        Route::delete("/v1/services/{name}", services::remove_service),
        Route::get("/v1/services/{name}/tasks", services::service_tasks),
        Route::get("/v1/services/{name}/logs", logs::service_logs),
        Route::post("/v1/services/{name}/scale", services::scale_service),
        Route::post("/v1/services/{name}/update", services::update_service),
        Route::post("/v1/services/{name}/rollback", services::rollback_service),
        Route::get(tasks::TASK_ROUTE, tasks::inspect_task),
        Route::get(api::ENDPOINTS, endpoints::endpoints),
        Route::get(api::LOCAL_LOGS, logs::local_logs),
        Route::get(api::EVENTS, events::list_events),
        Route::get(cluster_info::CLUSTER_INFO, cluster_info::cluster_info),
        Route::get(crate::ui::overview::OVERVIEW, crate::ui::overview::overview),
        Route::get(join_tokens::JOIN_TOKENS, join_tokens::join_tokens),
        Route::post(
            join_tokens::ROTATE_JOIN_TOKEN,
            join_tokens::rotate_join_token,
        ),
        Route::get(api::NODES, nodes::list_nodes),
        Route::get("/v1/nodes/{node}", nodes::inspect_node),
        Route::delete("/v1/nodes/{node}", nodes::remove_node),
        Route::get("/v1/nodes/{node}/tasks", nodes::node_tasks),
        Route::post("/v1/nodes/{node}/update", nodes::update_node),
        Route::get(api::SECRETS, secrets::list_secrets),
        Route::post(api::SECRETS, secrets::create_secret).body_limit(api::MAX_OBJECT_BODY_BYTES),
        Route::get("/v1/secrets/{name}", secrets::inspect_secret),
        Route::delete("/v1/secrets/{name}", secrets::remove_secret),
        Route::post("/v1/secrets/{name}/compare", secrets::compare_secret)
            .body_limit(api::MAX_OBJECT_BODY_BYTES),
        Route::get(api::CONFIGS, secrets::list_configs),
        Route::post(api::CONFIGS, secrets::create_config).body_limit(api::MAX_OBJECT_BODY_BYTES),
        Route::get("/v1/configs/{name}", secrets::inspect_config),
        Route::delete("/v1/configs/{name}", secrets::remove_config),
        Route::get(api::LOCAL_DATA_KEY, secrets::local_data_key),
        Route::post(api::LOCAL_AUTOLOCK, autolock::set_autolock),
        Route::get(api::LOCAL_UNLOCK_KEY, autolock::unlock_key),
        Route::post(api::LOCAL_UNLOCK_KEY, autolock::rotate_unlock_key),
        Route::post(api::LOCAL_UNLOCK, autolock::unlock),
        Route::get(api::CLUSTER_SETTINGS, s::cluster_settings),
        Route::post(api::CLUSTER_SETTINGS, s::update_cluster_settings),
    ]
}

/// The OpenAPI document of the control API.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "shoal control API",
        description = "The control API of a shoal agent: HTTP/JSON on its owner-only Unix socket, \
            and with `shoal agent --api-addr` on TCP behind a bearer token. Every error answers \
            `{\"error\": \"...\"}`. Reads are linearizable unless `?stale=true`; a write answers \
            its raft log index in the `x-shoal-index` header."
    ),
    paths(
        server::info,
        openapi_json,
        remote::api_token,
        services::list_services,
        services::create_service,
        services::inspect_service,
        services::remove_service,
        services::service_tasks,
        elsewhere::service_logs,
        services::scale_service,
        services::update_service,
        services::rollback_service,
        elsewhere::inspect_task,
        elsewhere::local_logs,
        elsewhere::list_events,
        elsewhere::cluster_info,
        crate::ui::overview::overview,
        elsewhere::join_tokens,
        elsewhere::rotate_join_token,
        nodes::list_nodes,
        nodes::inspect_node,
        nodes::remove_node,
        nodes::node_tasks,
        nodes::update_node,
        server::cluster_settings,
        server::update_cluster_settings,
        endpoints::endpoints,
        secrets::list_secrets,
        secrets::create_secret,
        secrets::inspect_secret,
        secrets::remove_secret,
        secrets::compare_secret,
        secrets::list_configs,
        secrets::create_config,
        secrets::inspect_config,
        secrets::remove_config,
        secrets::local_data_key,
        autolock::set_autolock,
        autolock::unlock_key,
        autolock::rotate_unlock_key,
        autolock::unlock,
    ),
    components(schemas(ErrorBody)),
    modifiers(&ApiTokenScheme),
    security((), ("api_token" = [])),
    tags(
        (name = "agent", description = "This agent and its API"),
        (name = "services", description = "Services and their tasks"),
        (name = "nodes", description = "The cluster's nodes"),
        (name = "cluster", description = "The cluster as a whole"),
        (name = "secrets", description = "Secrets (values sealed, never shown) and configs"),
    )
)]
pub struct ApiDoc;

/// The name of the bearer scheme in the document.
const API_TOKEN_SCHEME: &str = "api_token";

/// Adds the TCP API's bearer scheme to the document.
struct ApiTokenScheme;

impl Modify for ApiTokenScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            API_TOKEN_SCHEME,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "The agent's API token (`shoal cluster info` on its machine prints it); \
                         needed on TCP only, never on the Unix socket",
                    ))
                    .build(),
            ),
        );
    }
}

/// The document as JSON, made once.
fn document_json() -> &'static str {
    static JSON: OnceLock<String> = OnceLock::new();
    JSON.get_or_init(|| ApiDoc::openapi().to_json().unwrap_or_default())
}

/// The OpenAPI document of this API.
#[utoipa::path(
    get,
    path = api::OPENAPI,
    tag = "agent",
    responses((status = 200, description = "The OpenAPI 3.1 document", content_type = "application/json", body = Object))
)]
pub(super) async fn openapi_json() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        document_json(),
    )
}

/// Every `(method, path)` the document describes.
pub fn documented() -> BTreeSet<(Method, String)> {
    use utoipa::openapi::HttpMethod;
    let methods = [
        (HttpMethod::Get, Method::GET),
        (HttpMethod::Post, Method::POST),
        (HttpMethod::Put, Method::PUT),
        (HttpMethod::Delete, Method::DELETE),
        (HttpMethod::Patch, Method::PATCH),
        (HttpMethod::Head, Method::HEAD),
    ];
    let mut documented = BTreeSet::new();
    for (path, item) in ApiDoc::openapi().paths.paths {
        let operations = [
            &item.get,
            &item.post,
            &item.put,
            &item.delete,
            &item.patch,
            &item.head,
        ];
        for ((_, method), operation) in methods.iter().zip(operations) {
            if operation.is_some() {
                documented.insert((method.clone(), path.clone()));
            }
        }
    }
    documented
}

/// Every `(method, path)` the router serves.
pub fn served() -> BTreeSet<(Method, String)> {
    table()
        .iter()
        .map(|route| (route.method().clone(), route.path().to_owned()))
        .collect()
}

/// The documentation of handlers whose modules do not annotate them (the functions only carry
/// the annotations; the routes run the real handlers named in [`table`]).
#[allow(dead_code)]
mod elsewhere {
    use super::api::{self, ErrorBody, EventsQuery, LogsQuery};
    use super::server::ReadOptions;
    use super::{cluster_info, join_tokens, tasks};

    /// One task in full, by its id or a unique prefix of it.
    #[utoipa::path(
        get,
        path = tasks::TASK_ROUTE,
        tag = "services",
        params(("task" = String, Path, description = "The task's id or a unique id prefix"), ReadOptions),
        responses(
            (status = 200, description = "The task (`TaskDetail`)", body = Object),
            (status = 400, description = "An ambiguous prefix (the tasks it names)", body = ErrorBody),
            (status = 404, description = "No such task", body = ErrorBody),
        )
    )]
    fn inspect_task() {}

    /// A service's logs, gathered from every node that ran one of its tasks (partial, with
    /// warnings, when a node is gone).
    #[utoipa::path(
        get,
        path = "/v1/services/{name}/logs",
        tag = "services",
        params(("name" = String, Path, description = "The service's name or id"), LogsQuery),
        responses(
            (status = 200, description = "The lines and any warnings (`ServiceLogs`)", body = Object),
            (status = 404, description = "No such service or task", body = ErrorBody),
        )
    )]
    fn service_logs() {}

    /// The output of tasks this node runs (a manager gathers a service's logs with it).
    #[utoipa::path(
        get,
        path = api::LOCAL_LOGS,
        tag = "agent",
        params(
            ("tasks" = String, Query, description = "Task ids, comma-separated"),
            ("tail" = Option<usize>, Query, description = "The last this many lines of each"),
            ("since_secs" = Option<u64>, Query, description = "Only lines at or after this time (Unix seconds)"),
        ),
        responses(
            (status = 200, description = "Each task's lines (`[TaskLogs]`)", body = [Object]),
            (status = 400, description = "A bad task id", body = ErrorBody),
            (status = 404, description = "This agent runs no tasks", body = ErrorBody),
        )
    )]
    fn local_logs() {}

    /// A page of cluster events after a cursor, filtered, waiting up to `wait_ms` for a match.
    #[utoipa::path(
        get,
        path = api::EVENTS,
        tag = "cluster",
        params(EventsQuery),
        responses(
            (status = 200, description = "The events and the next cursor (`EventPage`)", body = Object),
            (status = 400, description = "A bad cursor or filter", body = ErrorBody),
        )
    )]
    fn list_events() {}

    /// The cluster at a glance: id, leader and managers, raft indexes, counts, settings.
    #[utoipa::path(
        get,
        path = cluster_info::CLUSTER_INFO,
        tag = "cluster",
        params(ReadOptions),
        responses(
            (status = 200, description = "`ClusterInfo`", body = Object),
            (status = 503, description = "No quorum to read from", body = ErrorBody),
        )
    )]
    fn cluster_info() {}

    /// The join tokens new agents must present now (a manager's socket owner only).
    #[utoipa::path(
        get,
        path = join_tokens::JOIN_TOKENS,
        tag = "cluster",
        responses(
            (status = 200, description = "The worker and manager tokens (`JoinTokens`)", body = Object),
            (status = 403, description = "Asked by another agent", body = ErrorBody),
            (status = 409, description = "No tokens here (open cluster, or a worker)", body = ErrorBody),
        )
    )]
    fn join_tokens() {}

    /// Replaces one role's join token, the old one accepted for a grace period.
    #[utoipa::path(
        post,
        path = join_tokens::ROTATE_JOIN_TOKEN,
        tag = "cluster",
        request_body(content = Object, description = "`{\"role\": \"worker\"|\"manager\", \"grace_ms\": N}`"),
        responses(
            (status = 200, description = "The tokens after the rotation (`JoinTokens`)", body = Object),
            (status = 400, description = "A grace longer than a week", body = ErrorBody),
            (status = 403, description = "Asked by another agent", body = ErrorBody),
            (status = 409, description = "No tokens here (open cluster, or a worker)", body = ErrorBody),
        )
    )]
    fn rotate_join_token() {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_is_documented_and_every_documented_route_is_served() {
        let (served, documented) = (served(), documented());
        let undocumented: Vec<_> = served.difference(&documented).collect();
        let unserved: Vec<_> = documented.difference(&served).collect();
        assert!(
            undocumented.is_empty(),
            "served but not in the OpenAPI document (list the handler in ApiDoc): {undocumented:?}"
        );
        assert!(
            unserved.is_empty(),
            "documented but not served (add a Route to the table): {unserved:?}"
        );
        assert_eq!(served.len(), table().len(), "a route is listed twice");
    }

    #[test]
    fn the_document_is_json_with_the_bearer_scheme() {
        let document: serde_json::Value =
            serde_json::from_str(document_json()).expect("the document is JSON");
        assert!(
            document["openapi"]
                .as_str()
                .is_some_and(|v| v.starts_with("3."))
        );
        assert_eq!(
            document["components"]["securitySchemes"][API_TOKEN_SCHEME]["scheme"],
            "bearer"
        );
        assert!(document["components"]["schemas"]["ServiceRow"].is_object());
    }
}
