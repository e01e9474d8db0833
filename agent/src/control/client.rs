//! The CLI's client of the control API: HTTP/1.1 over the agent's Unix socket, or over TCP to an
//! agent started with `--api-addr` (with its bearer token).

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpStream, UnixStream};

use shoal_scheduler::RequestId;

use super::api::{ErrorBody, INDEX_HEADER};
use super::forward::REQUEST_ID_HEADER;

/// Attempts of one write that keeps coming back uncertain.
const WRITE_ATTEMPTS: usize = 3;
/// How long connecting to a TCP agent may take.
const TCP_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Where an agent's control API is.
#[derive(Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// Its Unix socket.
    Unix(PathBuf),
    /// Its TCP API (`HOST:PORT`), with the token to present.
    Tcp {
        /// `HOST:PORT`.
        addr: String,
        /// The bearer token (none: every call is refused with 401).
        token: Option<String>,
    },
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Unix(path) => write!(f, "{}", path.display()),
            Endpoint::Tcp { addr, .. } => write!(f, "tcp://{addr}"),
        }
    }
}

impl fmt::Debug for Endpoint {
    /// Like `Display`: the token is never shown.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Endpoint({self})")
    }
}

impl Endpoint {
    /// What to try when the agent cannot be reached.
    fn reach_hint(&self) -> &'static str {
        match self {
            Endpoint::Unix(_) => {
                "Is `shoal agent` running? Point at another one with --data-dir or --socket, or \
                 at a remote one with --host tcp://HOST:PORT."
            }
            Endpoint::Tcp { .. } => {
                "Is the agent running with --api-addr on that address, and does the network let \
                 you through?"
            }
        }
    }
}

/// What can go wrong talking to an agent.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nothing listens at the endpoint.
    #[error("cannot reach the shoal agent at {endpoint}: {reason}\n{hint}", hint = endpoint.reach_hint())]
    Connect {
        /// The endpoint tried.
        endpoint: Endpoint,
        /// Why (shown in the message, so not a `source` printed twice).
        reason: std::io::Error,
    },
    /// The agent refused the call's token (TCP).
    #[error(
        "401 from {endpoint}: {message}\ngive the agent's API token with --api-token or \
         SHOAL_API_TOKEN; `shoal cluster info` on that machine prints it"
    )]
    Unauthorized {
        /// The endpoint.
        endpoint: Endpoint,
        /// The agent's message.
        message: String,
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

/// A client of one agent's control API. It remembers the log index of the newest write it
/// made, which a read through another agent can ask for (`?min_index=`, see
/// [`ControlClient::last_write_index`]).
#[derive(Debug, Clone)]
pub struct ControlClient {
    endpoint: Endpoint,
    last_write: Arc<AtomicU64>,
}

impl ControlClient {
    /// A client of the agent listening on the Unix socket `socket`.
    pub fn new(socket: impl AsRef<Path>) -> Self {
        ControlClient::at(Endpoint::Unix(socket.as_ref().to_path_buf()))
    }

    /// A client of the agent whose TCP API is at `addr` (`HOST:PORT`), presenting `token`.
    pub fn tcp(addr: impl Into<String>, token: Option<String>) -> Self {
        ControlClient::at(Endpoint::Tcp {
            addr: addr.into(),
            token,
        })
    }

    /// A client of the agent at `endpoint`.
    pub fn at(endpoint: Endpoint) -> Self {
        ControlClient {
            endpoint,
            last_write: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Where the agent is.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
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
        self.delete_as(path, shoal_consensus::new_request_id())
            .await
    }

    /// [`Self::delete`] under a request id the caller chose (a retry of an earlier call).
    pub async fn delete_as<T: DeserializeOwned>(
        &self,
        path: &str,
        request: RequestId,
    ) -> Result<T, ClientError> {
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
        Err(ClientError::Api {
            status,
            message: error_message(&bytes),
        })
    }

    async fn exchange(
        &self,
        method: Method,
        path: &str,
        payload: Vec<u8>,
        request: Option<RequestId>,
    ) -> Result<(StatusCode, Bytes), ClientError> {
        let request = self.request(method, path, payload, request)?;
        let response = match &self.endpoint {
            Endpoint::Unix(socket) => {
                send(self.connect(UnixStream::connect(socket)).await?, request).await?
            }
            Endpoint::Tcp { addr, .. } => {
                send(self.connect(connect_tcp(addr)).await?, request).await?
            }
        };
        self.read(response).await
    }

    /// Connects with `connect`, naming this client's endpoint if it fails.
    async fn connect<S>(
        &self,
        connect: impl Future<Output = std::io::Result<S>>,
    ) -> Result<S, ClientError> {
        connect.await.map_err(|reason| ClientError::Connect {
            endpoint: self.endpoint.clone(),
            reason,
        })
    }

    /// The HTTP request of a call: JSON, its request id, and over TCP the bearer token.
    fn request(
        &self,
        method: Method,
        path: &str,
        payload: Vec<u8>,
        request: Option<RequestId>,
    ) -> Result<Request<Full<Bytes>>, ClientError> {
        let (host, token) = match &self.endpoint {
            Endpoint::Unix(_) => ("shoal", None),
            Endpoint::Tcp { addr, token } => (addr.as_str(), token.as_deref()),
        };
        let mut builder = Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, host)
            .header(hyper::header::CONTENT_TYPE, "application/json");
        if let Some(id) = request {
            builder = builder.header(REQUEST_ID_HEADER, id.to_string());
        }
        if let Some(token) = token {
            builder = builder.header(hyper::header::AUTHORIZATION, format!("Bearer {token}"));
        }
        builder
            .body(Full::new(Bytes::from(payload)))
            .map_err(|e| ClientError::Http(e.to_string()))
    }

    /// The status and body of `response`, noting a write's log index; a 401 as
    /// [`ClientError::Unauthorized`].
    async fn read(&self, response: Response<Incoming>) -> Result<(StatusCode, Bytes), ClientError> {
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
        if status == StatusCode::UNAUTHORIZED {
            return Err(ClientError::Unauthorized {
                endpoint: self.endpoint.clone(),
                message: error_message(&bytes),
            });
        }
        Ok((status, bytes))
    }
}

/// Connects to `addr` (`HOST:PORT`), giving up after [`TCP_CONNECT_TIMEOUT`].
async fn connect_tcp(addr: &str) -> std::io::Result<TcpStream> {
    match tokio::time::timeout(TCP_CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
        Ok(connected) => connected,
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("no answer within {TCP_CONNECT_TIMEOUT:?}"),
        )),
    }
}

/// Sends `request` on a fresh HTTP/1.1 connection over `io`.
async fn send<S>(io: S, request: Request<Full<Bytes>>) -> Result<Response<Incoming>, ClientError>
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| ClientError::Http(e.to_string()))?;
    tokio::spawn(connection);
    sender
        .send_request(request)
        .await
        .map_err(|e| ClientError::Http(e.to_string()))
}

/// The message of an error answer: its `{"error": ...}`, or its text.
fn error_message(bytes: &[u8]) -> String {
    serde_json::from_slice::<ErrorBody>(bytes)
        .map(|body| body.error)
        .unwrap_or_else(|_| String::from_utf8_lossy(bytes).into_owned())
}
