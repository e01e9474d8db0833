//! The page on the TCP control API's address, behind the API token. A browser cannot add an
//! `Authorization` header to a page it navigates to (nor to an `EventSource`), so the page's
//! login form takes the token once and the answer sets a cookie: `HttpOnly` (the page's script
//! never sees it), `SameSite=Strict` (never sent from another site's page) and `Path=/ui` (never
//! sent to the API's other routes, which keep asking for the bearer header). The cookie holds a
//! digest of the token, so it cannot be replayed as the API's bearer token; it is compared in
//! constant time. Every route under `/ui` also takes the bearer header, as scripts send it.

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

use crate::control::api::ErrorBody;
use crate::control::remote::{self, ApiToken};

/// The login form's target.
pub const LOGIN: &str = "/ui/login";
/// The cookie's name.
pub const COOKIE: &str = "shoal_ui";
/// The largest login body read.
const MAX_LOGIN_BYTES: usize = 4 * 1024;

/// The token a request must show, and where refusals are counted.
#[derive(Clone)]
pub struct Guard {
    /// The API token.
    pub token: ApiToken,
    /// The agent's metrics (`shoal_refused_requests_total`).
    pub metrics: shoal_metrics::AgentMetrics,
}

/// The cookie's value for `token`: a digest that proves the token was typed in, and that is
/// not the token itself.
pub fn session_value(token: &ApiToken) -> String {
    let digest = Sha256::new()
        .chain_update(b"shoal-ui-session\0")
        .chain_update(token.secret().as_bytes())
        .finalize();
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// The value of cookie `name` in `headers`, if sent.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .find_map(|pair| {
            let (key, value) = pair.trim().split_once('=')?;
            (key == name).then_some(value)
        })
}

/// Whether `headers` show the token: the bearer header, or the login cookie.
pub fn authorized(headers: &HeaderMap, token: &ApiToken) -> bool {
    if remote::bearer(headers).is_some_and(|presented| token.matches(presented)) {
        return true;
    }
    cookie(headers, COOKIE).is_some_and(|presented| {
        session_value(token)
            .as_bytes()
            .ct_eq(presented.as_bytes())
            .into()
    })
}

/// Lets a request to the page through only with the token; the page itself answers the login
/// form instead (401), its data routes a JSON 401.
pub async fn require(State(guard): State<Guard>, request: Request, next: Next) -> Response {
    if authorized(request.headers(), &guard.token) {
        return next.run(request).await;
    }
    guard.metrics.refused("control", "ui", "unauthorized");
    let path = request.uri().path();
    if path == super::PAGE || path == "/ui/" {
        return login_page(StatusCode::UNAUTHORIZED, "");
    }
    let body = ErrorBody {
        error: "the web view needs the API token: open /ui and enter it".into(),
    };
    (StatusCode::UNAUTHORIZED, Json(body)).into_response()
}

/// The login form, with `message` above it (empty: none).
fn login_page(status: StatusCode, message: &str) -> Response {
    let page = super::assets::LOGIN_HTML.replace("{{message}}", message);
    let mut response = super::with_headers("text/html; charset=utf-8", page);
    *response.status_mut() = status;
    response
}

/// The login form's body.
#[derive(Deserialize)]
struct LoginForm {
    token: String,
}

/// `POST /ui/login`: a right token sets the cookie and goes to the page; a wrong one shows the
/// form again.
pub async fn login(State(guard): State<Guard>, body: Body) -> Response {
    let bytes: Bytes = match axum::body::to_bytes(body, MAX_LOGIN_BYTES).await {
        Ok(bytes) => bytes,
        Err(_) => {
            return login_page(
                StatusCode::PAYLOAD_TOO_LARGE,
                "That is too long for a token.",
            );
        }
    };
    let form: Option<LoginForm> = serde_urlencoded::from_bytes(&bytes).ok();
    if !form.is_some_and(|form| guard.token.matches(form.token.trim())) {
        guard.metrics.refused("control", "ui", "unauthorized");
        return login_page(
            StatusCode::UNAUTHORIZED,
            "That is not this agent's API token.",
        );
    }
    let cookie = format!(
        "{COOKIE}={}; Path=/ui; HttpOnly; SameSite=Strict",
        session_value(&guard.token)
    );
    let mut response = StatusCode::SEE_OTHER.into_response();
    let headers = response.headers_mut();
    headers.insert(header::LOCATION, HeaderValue::from_static(super::PAGE));
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        headers.insert(header::SET_COOKIE, value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(name.clone(), HeaderValue::from_str(value).expect("header"));
        }
        map
    }

    #[test]
    fn the_token_or_its_cookie_lets_a_request_through_and_nothing_else_does() {
        let token = ApiToken::parse("s3cret").expect("token");
        let session = session_value(&token);
        assert_ne!(session, "s3cret");
        assert!(authorized(
            &headers(&[(header::AUTHORIZATION, "Bearer s3cret")]),
            &token
        ));
        assert!(authorized(
            &headers(&[(header::COOKIE, &format!("a=b; {COOKIE}={session}"))]),
            &token
        ));
        assert!(!authorized(&headers(&[]), &token));
        assert!(!authorized(
            &headers(&[(header::AUTHORIZATION, "Bearer wrong")]),
            &token
        ));
        // The token itself is not a valid cookie, nor the cookie a bearer token.
        assert!(!authorized(
            &headers(&[(header::COOKIE, &format!("{COOKIE}=s3cret"))]),
            &token
        ));
        assert!(!authorized(
            &headers(&[(header::AUTHORIZATION, &format!("Bearer {session}"))]),
            &token
        ));
    }
}
