//! Every error of the control API is JSON (`{"error": "..."}`, an [`ErrorBody`]) with its status:
//! the handlers' own ([`super::server::ApiError`]), and those axum answers by itself in plain text
//! — a body, query or path it cannot read (400, 415, 422), a method the path does not accept
//! (405) — which [`json_errors`] rewrites; an unknown path gets [`no_route`] (404).

use axum::body::{Body, to_bytes};
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::api::{self, ErrorBody};
use super::server::ApiError;

/// The most of a plain-text error body read to turn it into JSON.
const MAX_TEXT_BYTES: usize = 16 * 1024;

/// The answer to a path no route serves: 404, naming it and pointing to the OpenAPI document.
pub async fn no_route(method: Method, uri: Uri) -> Response {
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!(
            "no route {method} {}: the API's routes are listed in its OpenAPI document, GET {}",
            uri.path(),
            api::OPENAPI
        ),
    )
    .into_response()
}

/// Rewrites an error answer that is not JSON (axum's own rejections, a 405) as an
/// [`ErrorBody`] with the same status and headers.
pub async fn json_errors(request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let response = next.run(request).await;
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) || is_json(response.headers()) {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let text = to_bytes(body, MAX_TEXT_BYTES)
        .await
        .map(|bytes| String::from_utf8_lossy(&bytes).trim().to_owned())
        .unwrap_or_default();
    let error = explain(status, &method, &path, &parts.headers, text);
    let body = serde_json::to_vec(&ErrorBody { error }).unwrap_or_default();
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Response::from_parts(parts, Body::from(body))
}

/// Whether a response says its body is JSON.
fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("application/json"))
}

/// The message of an error answer whose plain body was `text`.
fn explain(
    status: StatusCode,
    method: &Method,
    path: &str,
    headers: &HeaderMap,
    text: String,
) -> String {
    if status == StatusCode::METHOD_NOT_ALLOWED {
        let allowed = headers
            .get(header::ALLOW)
            .and_then(|value| value.to_str().ok())
            .unwrap_or("other methods");
        return format!(
            "method {method} is not allowed on {path}: it accepts {allowed} (see GET {})",
            api::OPENAPI
        );
    }
    let what = if text.is_empty() {
        status.canonical_reason().unwrap_or("error").to_owned()
    } else {
        text
    };
    format!("{method} {path}: {what}")
}

#[cfg(test)]
mod tests {
    use axum::Router;
    use axum::routing::post;
    use tower::ServiceExt as _;

    use super::*;

    /// A plain-text error answer, as a handler outside this API's conventions might give.
    fn plain(status: StatusCode, text: &'static str) -> Response {
        let mut response = Response::new(Body::from(text));
        *response.status_mut() = status;
        response
    }

    async fn answer(app: Router, request: Request) -> (StatusCode, String) {
        let response = app.oneshot(request).await.expect("answered");
        let status = response.status();
        assert!(is_json(response.headers()), "{status} is not JSON");
        let bytes = to_bytes(response.into_body(), 1 << 20).await.expect("body");
        let body: ErrorBody = serde_json::from_slice(&bytes).expect("an ErrorBody");
        (status, body.error)
    }

    /// A router built as the control API's is, with a JSON route and a plain-text one.
    fn app() -> Router {
        let routes = Router::new()
            .route(
                "/json",
                post(|axum::Json(_): axum::Json<api::ScaleRequest>| async { "ok" }),
            )
            .route(
                "/teapot",
                post(|| async { plain(StatusCode::IM_A_TEAPOT, "") }),
            )
            .fallback(no_route);
        Router::new()
            .fallback_service(routes)
            .layer(axum::middleware::from_fn(json_errors))
    }

    fn request(method: &str, uri: &str, content_type: Option<&str>, body: &str) -> Request {
        let mut builder = Request::builder().method(method).uri(uri);
        if let Some(content_type) = content_type {
            builder = builder.header(header::CONTENT_TYPE, content_type);
        }
        builder.body(Body::from(body.to_owned())).expect("request")
    }

    #[tokio::test]
    async fn axums_own_errors_answer_json() {
        let json = Some("application/json");
        let cases = [
            (
                request("POST", "/json", json, "{"),
                StatusCode::BAD_REQUEST,
                "EOF",
            ),
            (
                request("POST", "/json", None, "{}"),
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "Content-Type",
            ),
            (
                request("POST", "/json", json, r#"{"replicas": "x"}"#),
                StatusCode::UNPROCESSABLE_ENTITY,
                "replicas",
            ),
            (
                request("GET", "/json", None, ""),
                StatusCode::METHOD_NOT_ALLOWED,
                "accepts POST",
            ),
            (
                request("GET", "/nowhere", None, ""),
                StatusCode::NOT_FOUND,
                "/v1/openapi.json",
            ),
            (
                request("POST", "/teapot", None, ""),
                StatusCode::IM_A_TEAPOT,
                "teapot",
            ),
        ];
        for (request, status, says) in cases {
            let (got, message) = answer(app(), request).await;
            assert_eq!(got, status, "{message}");
            assert!(
                message.contains(says),
                "{status}: {message:?} lacks {says:?}"
            );
        }
    }
}
