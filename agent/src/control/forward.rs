//! Control calls between agents (`/shoal/control/1`). An agent that holds no replica of the
//! cluster state (a worker outside the raft group) forwards each call its socket receives to a
//! manager — the leader first — and relays the answer; a manager serves forwarded calls through
//! the same routes as its own socket's, with the caller's authenticated PeerId attached, so that
//! reads are linearizable there and writes are authorized by what the caller's admission allows.
//!
//! The messages are CBOR, bounded by the protocol's limits (a call 1 MiB, an answer 8 MiB).

use axum::body::{Body, to_bytes};
use axum::http::{HeaderValue, Request, Response, StatusCode, header};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

use shoal_discovery::{InboundRequest, MemberState, Mesh, PeerId, ShoalProtocol};
use tower::ServiceExt as _;

use super::api;
use super::server::{ApiError, ControlState};

/// Largest forwarded call, in bytes (the protocol's bound).
pub const MAX_CALL_BYTES: usize = ShoalProtocol::Control.max_request_bytes();
/// Largest answer to a forwarded call, in bytes (the protocol's bound).
pub const MAX_ANSWER_BYTES: usize = ShoalProtocol::Control.max_response_bytes();
/// Room for the message around a body.
const ENVELOPE_BYTES: usize = 4 * 1024;
/// The header that carries a write's request id (the same for each retry of it).
pub const REQUEST_ID_HEADER: &str = "x-shoal-request-id";
pub use super::api::INDEX_HEADER;
/// Managers tried for one call at most.
const MAX_ATTEMPTS: usize = 3;

/// Who makes a control call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caller {
    /// The owner of this agent's socket.
    Local,
    /// Another agent of the cluster, authenticated by the mesh.
    Peer(PeerId),
}

/// One forwarded call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForwardedCall {
    /// `GET`, `POST`, `DELETE`.
    pub method: String,
    /// The path and query.
    pub uri: String,
    /// The request id of a write, if the caller gave one.
    pub request_id: Option<String>,
    /// The JSON body.
    #[serde(with = "serde_bytes")]
    pub body: Vec<u8>,
}

/// The answer to a forwarded call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForwardedAnswer {
    /// The HTTP status.
    pub status: u16,
    /// The JSON body.
    #[serde(with = "serde_bytes")]
    pub body: Vec<u8>,
    /// A write's log index ([`INDEX_HEADER`]).
    #[serde(default)]
    pub index: Option<u64>,
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, String> {
    cbor4ii::serde::to_vec(Vec::new(), value).map_err(|e| e.to_string())
}

fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, String> {
    cbor4ii::serde::from_slice(bytes).map_err(|e| e.to_string())
}

/// A call as another agent sends it on `/shoal/control/1` (CBOR).
pub fn encode_call(call: &ForwardedCall) -> Result<Vec<u8>, String> {
    encode(call)
}

/// An answer as it comes back on `/shoal/control/1`.
pub fn decode_answer(bytes: &[u8]) -> Result<ForwardedAnswer, String> {
    decode(bytes)
}

/// Forwards `request` (from this agent's socket) to a manager and returns its answer.
pub async fn forward(state: &ControlState, request: Request<Body>) -> Response<Body> {
    let call = match into_call(request).await {
        Ok(call) => call,
        Err(error) => return error.into_response_body(),
    };
    let bytes = match encode(&call) {
        Ok(bytes) if bytes.len() <= MAX_CALL_BYTES => bytes,
        Ok(bytes) => {
            state.metrics.unsent("control", "call", "too_large");
            return ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the call of {} bytes is too large to forward", bytes.len()),
            )
            .into_response_body();
        }
        Err(error) => {
            state.metrics.unsent("control", "call", "encode");
            return ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, error).into_response_body();
        }
    };
    let mut last = String::from("no manager known yet");
    for manager in managers(state).await.into_iter().take(MAX_ATTEMPTS) {
        // A leader that died without closing its connections never answers: once another leader
        // is known the call goes on to the next manager (a write's request id makes a second
        // copy apply once).
        let asked = tokio::select! {
            answer = ask(&state.mesh, manager, bytes.clone()) => answer,
            () = shoal_consensus::leader_moved_from(state.quorum.leader(), manager) => {
                Err(format!("the leader moved from {manager}"))
            }
        };
        match asked {
            Ok(answer) => return into_response(answer),
            Err(why) => {
                tracing::debug!(%manager, why, "forwarded control call failed; trying another");
                last = format!("manager {manager}: {why}");
            }
        }
    }
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        format!(
            "this agent is a worker and no manager answered ({last}); retry, or run the command \
             on a manager"
        ),
    )
    .into_response_body()
}

/// Sends a `GET uri` about `node` itself (a [`api::LOCAL_PREFIX`] path) to that node's agent.
pub async fn call_node(
    state: &ControlState,
    node: PeerId,
    uri: &str,
) -> Result<ForwardedAnswer, String> {
    let call = ForwardedCall {
        method: "GET".into(),
        uri: uri.to_owned(),
        request_id: None,
        body: Vec::new(),
    };
    let bytes = state
        .mesh
        .request(node, ShoalProtocol::Control, encode(&call)?)
        .await
        .map_err(|e| e.to_string())?;
    decode(&bytes)
}

/// Runs a `GET uri` through this agent's own routes, as [`call_node`] does on another.
pub async fn call_self(state: &ControlState, uri: &str) -> Result<ForwardedAnswer, String> {
    let request = Request::builder()
        .method("GET")
        .uri(uri)
        .body(Body::empty())
        .map_err(|e| e.to_string())?;
    Ok(run_routes(state, request).await)
}

/// The managers to ask, best first ([`ask_order`]), as the mesh sees them now.
async fn managers(state: &ControlState) -> Vec<PeerId> {
    let leader = *state.quorum.leader().borrow();
    let liveness: HashMap<PeerId, MemberState> = state
        .mesh
        .members()
        .await
        .map(|members| members.into_iter().map(|m| (m.peer_id, m.state)).collect())
        .unwrap_or_default();
    ask_order(state.quorum.known_managers(), leader, &liveness)
}

/// Orders `managers` for a forwarded call: those the mesh sees alive first, then the suspected,
/// then those it has not heard of, and those it declared dead or gone last; the leader first
/// within its rank. A call tries a few managers only, and one that is down can cost a whole
/// request timeout: the leader this agent last heard of may be the one that died.
fn ask_order(
    mut managers: Vec<PeerId>,
    leader: Option<PeerId>,
    liveness: &HashMap<PeerId, MemberState>,
) -> Vec<PeerId> {
    if let Some(leader) = leader
        && !managers.contains(&leader)
    {
        managers.push(leader);
    }
    let rank = |peer: &PeerId| match liveness.get(peer) {
        Some(MemberState::Alive) => 0,
        Some(MemberState::Suspect) => 1,
        None => 2,
        Some(MemberState::Dead | MemberState::Left) => 3,
    };
    managers.sort_by_key(|m| (rank(m), Some(*m) != leader));
    managers
}

async fn ask(mesh: &Mesh, manager: PeerId, call: Vec<u8>) -> Result<ForwardedAnswer, String> {
    let bytes = mesh
        .request(manager, ShoalProtocol::Control, call)
        .await
        .map_err(|e| e.to_string())?;
    let answer: ForwardedAnswer = decode(&bytes)?;
    if answer.status == StatusCode::MISDIRECTED_REQUEST.as_u16() {
        return Err("not a manager".into());
    }
    Ok(answer)
}

async fn into_call(request: Request<Body>) -> Result<ForwardedCall, ApiError> {
    let (parts, body) = request.into_parts();
    let request_id = parts
        .headers
        .get(REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = to_bytes(body, MAX_CALL_BYTES - ENVELOPE_BYTES)
        .await
        .map_err(|e| ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, e.to_string()))?;
    Ok(ForwardedCall {
        method: parts.method.to_string(),
        uri: parts
            .uri
            .path_and_query()
            .map_or_else(|| parts.uri.path().to_owned(), |p| p.as_str().to_owned()),
        request_id,
        body: body.to_vec(),
    })
}

fn into_response(answer: ForwardedAnswer) -> Response<Body> {
    let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::BAD_GATEWAY);
    let mut response = Response::new(Body::from(answer.body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Some(index) = answer.index {
        response
            .headers_mut()
            .insert(INDEX_HEADER, HeaderValue::from(index));
    }
    response
}

/// Serves the calls other agents forward to this one, until the mesh stops delivering them.
pub async fn serve(mut inbound: tokio::sync::mpsc::Receiver<InboundRequest>, state: ControlState) {
    while let Some(request) = inbound.recv().await {
        let state = state.clone();
        tokio::spawn(async move {
            let peer = request.peer;
            let answer = answer(&state, peer, &request.payload).await;
            match encode(&answer) {
                Ok(bytes) if bytes.len() <= MAX_ANSWER_BYTES => request.respond(bytes),
                Ok(bytes) => {
                    tracing::warn!(%peer, size = bytes.len(), "control answer too large to send");
                    state.metrics.unsent("control", "answer", "too_large");
                    let too_large = ApiError::new(
                        StatusCode::INSUFFICIENT_STORAGE,
                        format!(
                            "the answer of {} bytes is larger than a forwarded answer may be; \
                             run the command on a manager",
                            bytes.len()
                        ),
                    );
                    if let Ok(bytes) = encode(&too_large.into_answer()) {
                        request.respond(bytes);
                    }
                }
                Err(error) => {
                    tracing::warn!(%peer, %error, "control answer not encodable");
                    state.metrics.unsent("control", "answer", "encode");
                }
            }
        });
    }
}

/// Runs one forwarded call through this agent's routes as `Caller::Peer(peer)`.
async fn answer(state: &ControlState, peer: PeerId, payload: &[u8]) -> ForwardedAnswer {
    let refuse = |status: StatusCode, reason: &'static str, why: String| {
        tracing::warn!(%peer, reason, why, "forwarded control call refused");
        state.metrics.refused("control", "call", reason);
        ApiError::new(status, why).into_answer()
    };
    let call: ForwardedCall = match decode(payload) {
        Ok(call) => call,
        Err(why) => return refuse(StatusCode::BAD_REQUEST, "malformed", why),
    };
    if call.uri.starts_with(api::LOCAL_PREFIX) {
        // About this node (its tasks' output): only its managers may ask.
        if call.method != "GET" || !state.quorum.known_managers().contains(&peer) {
            return refuse(
                StatusCode::FORBIDDEN,
                "not_a_manager",
                format!("{peer} is not a manager of this node's cluster"),
            );
        }
    } else {
        if !state.quorum.is_member() {
            return ApiError::new(
                StatusCode::MISDIRECTED_REQUEST,
                "this agent is not a manager",
            )
            .into_answer();
        }
        let known = state
            .quorum
            .state()
            .nodes
            .contains_key(&shoal_scheduler::NodeId::new(peer.to_string()));
        if !known {
            return refuse(
                StatusCode::FORBIDDEN,
                "not_a_node",
                format!("{peer} is not a node of this cluster"),
            );
        }
    }
    let mut builder = Request::builder()
        .method(call.method.as_str())
        .uri(&call.uri);
    if let Some(id) = &call.request_id {
        builder = builder.header(REQUEST_ID_HEADER, id);
    }
    let request = match builder
        .header(header::CONTENT_TYPE, "application/json")
        .extension(Caller::Peer(peer))
        .body(Body::from(call.body))
    {
        Ok(request) => request,
        Err(e) => return refuse(StatusCode::BAD_REQUEST, "malformed", e.to_string()),
    };
    run_routes(state, request).await
}

/// Runs `request` through the control routes and reads the answer (bounded).
async fn run_routes(state: &ControlState, request: Request<Body>) -> ForwardedAnswer {
    let response = match super::server::router(state.clone()).oneshot(request).await {
        Ok(response) => response,
        Err(never) => match never {},
    };
    let status = response.status().as_u16();
    let index = response
        .headers()
        .get(INDEX_HEADER)
        .and_then(|v| v.to_str().ok()?.parse().ok());
    match to_bytes(response.into_body(), MAX_ANSWER_BYTES).await {
        Ok(body) => ForwardedAnswer {
            status,
            body: body.to_vec(),
            index,
        },
        Err(_) => ApiError::new(
            StatusCode::INSUFFICIENT_STORAGE,
            "the answer is larger than a forwarded answer may be; run the command on a manager",
        )
        .into_answer(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_round_trip() {
        let call = ForwardedCall {
            method: "POST".into(),
            uri: "/v1/services?stale=true".into(),
            request_id: Some("r1".into()),
            body: b"{}".to_vec(),
        };
        let bytes = encode(&call).expect("encodes");
        assert_eq!(decode::<ForwardedCall>(&bytes), Ok(call));
        assert!(decode::<ForwardedCall>(&[0xff, 0x01]).is_err());
    }

    #[test]
    fn live_managers_are_asked_first_and_the_leader_first_among_equals() {
        let [dead_leader, dead, back, unheard, suspect] = [(); 5].map(|()| PeerId::random());
        let liveness = HashMap::from([
            (dead_leader, MemberState::Dead),
            (dead, MemberState::Left),
            (back, MemberState::Alive),
            (suspect, MemberState::Suspect),
        ]);
        let order = ask_order(
            vec![dead, back, unheard, suspect],
            Some(dead_leader),
            &liveness,
        );
        assert_eq!(order, [back, suspect, unheard, dead_leader, dead]);
        // Among live managers the leader goes first; a leader not listed is still asked.
        let [leader, other] = [(); 2].map(|()| PeerId::random());
        let alive = HashMap::from([(leader, MemberState::Alive), (other, MemberState::Alive)]);
        assert_eq!(
            ask_order(vec![other], Some(leader), &alive),
            [leader, other]
        );
        assert_eq!(
            ask_order(vec![other, leader], None, &HashMap::new()),
            [other, leader]
        );
    }
}
