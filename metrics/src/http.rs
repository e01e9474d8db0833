//! The `/metrics` endpoint: an axum server exposing one registry in the OpenMetrics text format.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus_client::encoding::text::encode;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::MetricsError;
use crate::text_format;

/// The content type of the OpenMetrics text exposition.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// A running `/metrics` server. Dropping it does not stop it; call [`MetricsServer::stop`].
#[derive(Debug)]
pub struct MetricsServer {
    /// The address actually bound (useful with port 0).
    pub local_addr: SocketAddr,
    task: JoinHandle<()>,
}

impl MetricsServer {
    /// Stops serving.
    pub fn stop(self) {
        self.task.abort();
    }
}

/// Binds `addr` and serves `registry` at `/metrics` until stopped.
pub async fn serve(
    addr: SocketAddr,
    registry: Arc<Registry>,
) -> Result<MetricsServer, MetricsError> {
    serve_with(addr, registry, Router::new()).await
}

/// [`serve`], with the routes of `beside` served on the same address (the agent's web view).
pub async fn serve_with(
    addr: SocketAddr,
    registry: Arc<Registry>,
    beside: Router,
) -> Result<MetricsServer, MetricsError> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| MetricsError::Bind { addr, source })?;
    let local_addr = listener
        .local_addr()
        .map_err(|source| MetricsError::Bind { addr, source })?;
    let app = Router::new()
        .route("/metrics", get(scrape))
        .with_state(registry)
        .merge(beside);
    let task = tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, app).await {
            tracing::warn!(%error, "the /metrics server stopped");
        }
    });
    tracing::info!(%local_addr, "serving Prometheus metrics at /metrics");
    Ok(MetricsServer { local_addr, task })
}

/// Serves OpenMetrics to scrapers that ask for it (Prometheus does), the classic text format
/// to everyone else.
async fn scrape(State(registry): State<Arc<Registry>>, headers: HeaderMap) -> Response {
    let mut body = String::with_capacity(16 * 1024);
    if encode(&mut body, &registry).is_err() {
        return (StatusCode::INTERNAL_SERVER_ERROR, "metrics encoding failed").into_response();
    }
    let wants_openmetrics = headers
        .get(header::ACCEPT)
        .and_then(|accept| accept.to_str().ok())
        .is_some_and(|accept| accept.contains("application/openmetrics-text"));
    if wants_openmetrics {
        ([(header::CONTENT_TYPE, OPENMETRICS_CONTENT_TYPE)], body).into_response()
    } else {
        let text = text_format::from_openmetrics(&body);
        (
            [(header::CONTENT_TYPE, text_format::TEXT_CONTENT_TYPE)],
            text,
        )
            .into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::{AgentInfo, new_registry};

    #[tokio::test]
    async fn scrape_returns_agent_info_and_process_families() {
        let (registry, _info) = new_registry(AgentInfo::new("0.1.0", "12D3KooTest"));
        let server = serve(
            "127.0.0.1:0".parse().expect("literal address"),
            Arc::new(registry),
        )
        .await
        .expect("bind loopback");
        let body = http_get(
            server.local_addr,
            "/metrics",
            "application/openmetrics-text",
        )
        .await;
        assert!(
            body.contains(
                "shoal_agent_info{version=\"0.1.0\",node_id=\"12D3KooTest\",role=\"worker\",cluster_id=\"\"} 1"
            ),
            "{body}"
        );
        assert!(body.contains("process_open_fds "), "{body}");
        assert!(body.trim_end().ends_with("# EOF"), "{body}");
        let text = http_get(server.local_addr, "/metrics", "text/plain").await;
        assert!(text.contains("text/plain; version=0.0.4"), "{text}");
        assert!(text.contains("# TYPE shoal_agent_info gauge"), "{text}");
        assert!(!text.contains("# EOF"), "{text}");
        server.stop();
    }

    /// A minimal HTTP/1.0 GET over a raw TCP stream.
    async fn http_get(addr: SocketAddr, path: &str, accept: &str) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let request = format!("GET {path} HTTP/1.0\r\nHost: localhost\r\nAccept: {accept}\r\n\r\n");
        stream.write_all(request.as_bytes()).await.expect("write");
        let mut response = String::new();
        stream.read_to_string(&mut response).await.expect("read");
        response
    }
}
