//! The control API on TCP (`shoal agent --api-addr HOST:PORT`): the same routes as the Unix
//! socket, behind a bearer token. The token is a random secret the agent makes on its first start
//! and keeps owner-only in `<data-dir>/api-token` (or reads from `--api-token-file`); the socket's
//! owner reads it with `GET /v1/api-token`, which is never answered over TCP nor to another agent.
//!
//! The TCP API is plain HTTP: on anything but loopback, put it behind TLS or an SSH tunnel, or
//! the token crosses the network in the clear.

use std::fmt;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use axum::Json;
use axum::extract::{Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq as _;
use tokio::net::TcpListener;

use super::api::{self, ApiTokenResponse, ErrorBody};
use super::forward::Caller;
use super::server::{ApiError, ControlState};

/// The file name of the generated token inside the data dir.
pub const TOKEN_FILE_NAME: &str = "api-token";
/// Random bytes in a generated token (shown as hex).
const TOKEN_BYTES: usize = 32;

/// Where an agent whose data dir is `data_dir` keeps the token it generated.
pub fn token_path(data_dir: &Path) -> PathBuf {
    data_dir.join(TOKEN_FILE_NAME)
}

/// The TCP API's bearer token. Its `Debug` never shows the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiToken(Arc<str>);

impl fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiToken(<secret>)")
    }
}

impl ApiToken {
    /// The token of `--api-token-file` if given, else the one in the data dir, made (owner-only)
    /// if there is none yet.
    pub fn for_agent(data_dir: &Path, file: Option<&Path>) -> anyhow::Result<ApiToken> {
        match file {
            Some(file) => ApiToken::read(file).context("--api-token-file"),
            None => ApiToken::load_or_create(&token_path(data_dir)),
        }
    }

    /// The token stored at `path`, or a new one written there (mode 0600) if the file is absent.
    pub fn load_or_create(path: &Path) -> anyhow::Result<ApiToken> {
        if path.exists() {
            return ApiToken::read(path);
        }
        let token = ApiToken::generate()?;
        write_owner_only(path, token.secret())
            .with_context(|| format!("cannot write the API token to {}", path.display()))?;
        tracing::info!(file = %path.display(), "made a new API token");
        Ok(token)
    }

    /// The token held by the file at `path` (surrounding whitespace ignored; never empty).
    pub fn read(path: &Path) -> anyhow::Result<ApiToken> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the API token from {}", path.display()))?;
        ApiToken::parse(&text).with_context(|| format!("{} holds no API token", path.display()))
    }

    /// A token from its text (trimmed); `None` if it is empty.
    pub fn parse(text: &str) -> Option<ApiToken> {
        let token = text.trim();
        (!token.is_empty()).then(|| ApiToken(token.into()))
    }

    /// A new random token from the system's RNG.
    pub fn generate() -> anyhow::Result<ApiToken> {
        let mut bytes = [0u8; TOKEN_BYTES];
        getrandom::getrandom(&mut bytes)
            .map_err(|e| anyhow::anyhow!("no randomness for the API token: {e}"))?;
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        Ok(ApiToken(hex.into()))
    }

    /// The secret itself, to show its owner or send as a bearer token.
    pub fn secret(&self) -> &str {
        &self.0
    }

    /// Whether `presented` is this token, compared in constant time.
    pub fn matches(&self, presented: &str) -> bool {
        self.0.as_bytes().ct_eq(presented.as_bytes()).into()
    }
}

/// Creates `path` with mode 0600 and writes `secret` into it.
fn write_owner_only(path: &Path, secret: &str) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(format!("{secret}\n").as_bytes())?;
    file.sync_all()
}

/// What the control API knows of its TCP side: the token, and the address if it is served.
#[derive(Debug, Clone)]
pub struct RemoteAccess {
    /// The bearer token TCP callers must present.
    pub token: ApiToken,
    /// Where the TCP API listens, if it does.
    pub addr: Option<SocketAddr>,
}

/// Marks a request that came in over TCP (and presented the token).
#[derive(Debug, Clone, Copy)]
struct OverTcp;

/// Binds the TCP API's listener on `addr` (port 0: any free port), warning when it is not
/// loopback (plain HTTP).
pub async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on --api-addr {addr}"))?;
    if !addr.ip().is_loopback() {
        tracing::warn!(
            %addr,
            "the TCP control API is plain HTTP: its token crosses the network in the clear; \
             put it behind TLS or an SSH tunnel"
        );
    }
    Ok(listener)
}

/// Serves the control routes on `listener`, each call only with the bearer token, until the
/// returned future is dropped.
pub async fn serve(listener: TcpListener, state: ControlState) {
    let token = state.remote.token.clone();
    let api = super::server::router(state.clone()).layer(middleware::from_fn_with_state(
        (token.clone(), state.metrics.clone()),
        require_token,
    ));
    // The web view under `/ui` (its own token check: the header, or its login form's cookie).
    let app = crate::ui::router(state, crate::ui::Access::Token(token)).fallback_service(api);
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "control API listening on TCP");
    }
    if let Err(error) = axum::serve(listener, app).await {
        tracing::warn!(%error, "the TCP control API stopped");
    }
}

/// Lets a call through only with `Authorization: Bearer <token>`; 401 otherwise.
async fn require_token(
    State((token, metrics)): State<(ApiToken, shoal_metrics::AgentMetrics)>,
    mut request: Request,
    next: Next,
) -> Response {
    let presented = bearer(request.headers());
    if !presented.is_some_and(|presented| token.matches(presented)) {
        metrics.refused("control", "tcp", "unauthorized");
        return unauthorized(presented.is_some());
    }
    request.extensions_mut().insert(OverTcp);
    next.run(request).await
}

/// The token of an `Authorization: Bearer <token>` header (the scheme in any case).
pub(crate) fn bearer(headers: &axum::http::HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// The 401 answer: no token, or the wrong one.
fn unauthorized(presented: bool) -> Response {
    let what = if presented {
        "the API token is wrong"
    } else {
        "an API token is needed: send `Authorization: Bearer <token>`"
    };
    let body = ErrorBody {
        error: format!(
            "{what} (`shoal cluster info` on the agent's machine prints it; it is in \
             <data-dir>/{TOKEN_FILE_NAME})"
        ),
    };
    let mut response = (StatusCode::UNAUTHORIZED, Json(body)).into_response();
    response
        .headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    response
}

/// How a call reached this agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// Through the owner-only Unix socket.
    Socket,
    /// Over TCP, with the token.
    Tcp,
    /// Forwarded by another agent of the cluster.
    Peer,
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Transport {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Transport, Self::Rejection> {
        Ok(
            if let Some(Caller::Peer(_)) = parts.extensions.get::<Caller>() {
                Transport::Peer
            } else if parts.extensions.get::<OverTcp>().is_some() {
                Transport::Tcp
            } else {
                Transport::Socket
            },
        )
    }
}

/// The TCP API's token and address, for the socket's owner only.
#[utoipa::path(
    get,
    path = api::API_TOKEN,
    tag = "agent",
    responses(
        (status = 200, description = "The token and where the TCP API listens", body = ApiTokenResponse),
        (status = 403, description = "Asked over TCP or by another agent", body = ErrorBody),
    )
)]
pub(super) async fn api_token(
    State(state): State<Arc<ControlState>>,
    transport: Transport,
) -> Result<Json<ApiTokenResponse>, ApiError> {
    if transport != Transport::Socket {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "the API token is only given on the agent's Unix socket (run `shoal cluster info` \
             on its machine)",
        ));
    }
    Ok(Json(ApiTokenResponse {
        token: state.remote.token.secret().to_owned(),
        addr: state.remote.addr.map(|addr| addr.to_string()),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_made_once_owner_only_and_read_back() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = token_path(dir.path());
        let made = ApiToken::load_or_create(&path).expect("made");
        assert_eq!(made.secret().len(), 2 * TOKEN_BYTES);
        let mode = std::fs::metadata(&path).expect("file").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let again = ApiToken::load_or_create(&path).expect("read");
        assert_eq!(made, again);
        assert!(made.matches(again.secret()));
        assert!(!made.matches("wrong"));
        assert!(!made.matches(""));
        assert!(!format!("{made:?}").contains(made.secret()));
    }

    #[test]
    fn an_empty_token_file_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("token");
        std::fs::write(&path, "  \n").expect("write");
        assert!(ApiToken::read(&path).is_err());
        assert!(ApiToken::for_agent(dir.path(), Some(&dir.path().join("absent"))).is_err());
        std::fs::write(&path, "s3cret\n").expect("write");
        let token = ApiToken::for_agent(dir.path(), Some(&path)).expect("given");
        assert_eq!(token.secret(), "s3cret");
    }
}
