//! The CLI's client of the control API: HTTP/1.1 over the agent's Unix socket.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::net::UnixStream;

use shoal_scheduler::RequestId;

use super::api::{ErrorBody, INDEX_HEADER};
use super::forward::REQUEST_ID_HEADER;

/// Attempts of one write that keeps coming back uncertain.
const WRITE_ATTEMPTS: usize = 3;

/// What can go wrong talking to an agent.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nothing listens on the socket.
    #[error(
        "cannot reach the shoal agent at {path}: {source}\n\
         Is `shoal agent` running? Point at another one with --data-dir or --socket."
    )]
    Connect {
        /// The socket tried.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The HTTP exchange failed.
    #[error("the agent's control API failed: {0}")]
    Http(String),
    /// The agent answered with an error.
    #[error("{message}")]
    Api {
        /// The HTTP status.
        status: StatusCode,
        /// The agent's message.
        message: String,
    },
    /// The answer was not what the client expected.
    #[error("unexpected answer from the agent: {0}")]
    Decode(#[from] serde_json::Error),
}

/// A client of one agent's control socket. It remembers the log index of the newest write it
/// made, which a read through another agent can ask for (`?min_index=`, see
/// [`ControlClient::last_write_index`]).
#[derive(Debug, Clone)]
pub struct ControlClient {
    socket: PathBuf,
    last_write: Arc<AtomicU64>,
}

impl ControlClient {
    /// A client of the agent listening on `socket`.
    pub fn new(socket: impl AsRef<Path>) -> Self {
        ControlClient {
            socket: socket.as_ref().to_path_buf(),
            last_write: Arc::new(AtomicU64::new(0)),
        }
    }

    /// The log index of the newest write this client made (0 before the first).
    pub fn last_write_index(&self) -> u64 {
        self.last_write.load(Ordering::Relaxed)
    }

    /// `GET path`, decoding JSON.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.call(Method::GET, path, None::<&()>, None).await
    }

    /// `POST path` with a JSON body, decoding JSON. The write carries a request id of its own:
    /// when the agent answers that it may or may not have committed it (a timeout, a leader
    /// change), it is sent again under the same id, which the cluster applies at most once.
    pub async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        let request = shoal_consensus::new_request_id();
        self.post_as(path, body, request).await
    }

    /// [`Self::post`] under a request id the caller chose (a retry of an earlier call).
    pub async fn post_as<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
        request: RequestId,
    ) -> Result<T, ClientError> {
        self.write(Method::POST, path, Some(body), request).await
    }

    /// `DELETE path`, decoding JSON (retried like [`Self::post`]).
    pub async fn delete<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        let request = shoal_consensus::new_request_id();
        self.write(Method::DELETE, path, None::<&()>, request).await
    }

    async fn write<B: Serialize, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
        request: RequestId,
    ) -> Result<T, ClientError> {
        let mut attempts = 0;
        loop {
            attempts += 1;
            match self.call(method.clone(), path, body, Some(request)).await {
                Err(ClientError::Api { status, message })
                    if status == StatusCode::SERVICE_UNAVAILABLE
                        && message.contains("may or may not have been committed")
                        && attempts < WRITE_ATTEMPTS => {}
                other => return other,
            }
        }
    }

    async fn call<B: Serialize, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
        request: Option<RequestId>,
    ) -> Result<T, ClientError> {
        let payload = match body {
            Some(body) => serde_json::to_vec(body)?,
            None => Vec::new(),
        };
        let (status, bytes) = self.exchange(method, path, payload, request).await?;
        if status.is_success() {
            return Ok(serde_json::from_slice(&bytes)?);
        }
        let message = serde_json::from_slice::<ErrorBody>(&bytes)
            .map(|body| body.error)
            .unwrap_or_else(|_| String::from_utf8_lossy(&bytes).into_owned());
        Err(ClientError::Api { status, message })
    }

    async fn exchange(
        &self,
        method: Method,
        path: &str,
        payload: Vec<u8>,
        request: Option<RequestId>,
    ) -> Result<(StatusCode, Bytes), ClientError> {
        let stream =
            UnixStream::connect(&self.socket)
                .await
                .map_err(|source| ClientError::Connect {
                    path: self.socket.clone(),
                    source,
                })?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| ClientError::Http(e.to_string()))?;
        tokio::spawn(connection);
        let mut builder = Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, "shoal")
            .header(hyper::header::CONTENT_TYPE, "application/json");
        if let Some(id) = request {
            builder = builder.header(REQUEST_ID_HEADER, id.to_string());
        }
        let request = builder
            .body(Full::new(Bytes::from(payload)))
            .map_err(|e| ClientError::Http(e.to_string()))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| ClientError::Http(e.to_string()))?;
        let status = response.status();
        let index = response
            .headers()
            .get(INDEX_HEADER)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        if let Some(index) = index {
            self.last_write.fetch_max(index, Ordering::Relaxed);
        }
        let bytes = response
            .into_body()
            .collect()
            .await
            .map_err(|e| ClientError::Http(e.to_string()))?
            .to_bytes();
        Ok((status, bytes))
    }
}
