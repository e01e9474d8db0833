//! The cluster's join tokens, for the owner of a manager's socket only (`shoal cluster token`):
//! `GET /v1/local/join-tokens` shows the tokens new agents must present now, and
//! `POST /v1/local/join-tokens/rotate` replaces one role's token, keeping the old one valid for a
//! grace period. Never answered to another agent (a forwarded call) nor forwarded by a worker:
//! tokens are derived from the manager token this agent holds, which a worker does not have.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use shoal_scheduler::join_keys::{JoinKeys, JoinRole};
use shoal_scheduler::{ClusterState, Command};

use super::forward::Caller;
use super::remote::Transport;
use super::server::{ApiError, Call, ControlState, ReadOptions, cluster, write};
use crate::worker::now;

/// `GET`: the current join tokens.
pub const JOIN_TOKENS: &str = "/v1/local/join-tokens";
/// `POST` a [`RotateRequest`]: rotate one role's token.
pub const ROTATE_JOIN_TOKEN: &str = "/v1/local/join-tokens/rotate";
/// The longest grace a rotation may give the token it replaces (a week).
pub const MAX_GRACE_MS: u64 = 7 * 24 * 3_600_000;

/// Body of [`ROTATE_JOIN_TOKEN`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RotateRequest {
    /// The role whose token rotates.
    pub role: JoinRole,
    /// How long the replaced token is still accepted, in milliseconds (0: refused at once).
    pub grace_ms: u64,
}

/// The join tokens of a closed cluster, as the socket's owner may see them.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JoinTokens {
    /// What a new worker presents.
    pub worker: RoleToken,
    /// What a new manager presents.
    pub manager: RoleToken,
}

/// One role's token and its rotation.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RoleToken {
    /// The token (a secret: give it only to the machines that should join).
    pub token: String,
    /// How many times it was rotated.
    pub rotations: u64,
    /// When it was last rotated (ms since the epoch).
    pub rotated_at_ms: Option<u64>,
    /// Until when the token it replaced is still accepted (ms since the epoch), if that is
    /// still in the future.
    pub previous_valid_until_ms: Option<u64>,
}

/// Answers [`JOIN_TOKENS`].
pub async fn join_tokens(
    State(state): State<Arc<ControlState>>,
    transport: Transport,
    call: Call,
) -> Result<Json<JoinTokens>, ApiError> {
    only_the_owner(transport, &call)?;
    can_derive(&state)?;
    let snapshot = cluster(&state, ReadOptions::default()).await?;
    Ok(Json(tokens(&state, &snapshot)?))
}

/// Answers [`ROTATE_JOIN_TOKEN`]: the tokens after the rotation.
pub async fn rotate_join_token(
    State(state): State<Arc<ControlState>>,
    transport: Transport,
    call: Call,
    Json(request): Json<RotateRequest>,
) -> Result<Json<JoinTokens>, ApiError> {
    only_the_owner(transport, &call)?;
    if request.grace_ms > MAX_GRACE_MS {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!(
                "a grace of {} h is longer than a week; rotate with a shorter --grace",
                request.grace_ms / 3_600_000
            ),
        ));
    }
    // Refuse early (and change nothing) where no token can be derived afterwards.
    can_derive(&state)?;
    let nonce = shoal_consensus::new_join_nonce()
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let command = Command::RotateJoinToken {
        role: request.role,
        nonce,
        grace_ms: request.grace_ms,
        at: now(),
    };
    let written = write(&state, &call, command).await?;
    let after = cluster(
        &state,
        ReadOptions {
            stale: false,
            min_index: Some(written.index),
        },
    )
    .await?;
    tracing::info!(
        role = request.role.name(),
        grace_ms = request.grace_ms,
        "join token rotated"
    );
    Ok(Json(tokens(&state, &after)?))
}

/// Join tokens go to the owner of this machine's socket only: not over the TCP API (its bearer
/// token opens the API, not the cluster), not to another agent.
fn only_the_owner(transport: Transport, call: &Call) -> Result<(), ApiError> {
    if transport == Transport::Tcp {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "join tokens are shown on the agent's own socket only; run `shoal cluster token` on \
             that machine",
        ));
    }
    match call.caller() {
        Caller::Local => Ok(()),
        Caller::Peer(peer) => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!("join tokens are shown to the owner of a manager's socket only, not to {peer}"),
        )),
    }
}

/// Refuses on an agent that cannot derive tokens (open cluster, worker token), before any read:
/// a worker has no replica to read from.
fn can_derive(state: &ControlState) -> Result<(), ApiError> {
    state
        .quorum
        .join_token(JoinRole::Worker, &JoinKeys::default())
        .map(drop)
        .map_err(|why| ApiError::new(StatusCode::CONFLICT, why.to_string()))
}

fn tokens(state: &ControlState, snapshot: &ClusterState) -> Result<JoinTokens, ApiError> {
    let keys = &snapshot.join_keys;
    let role_token = |role| -> Result<RoleToken, ApiError> {
        let token = state
            .quorum
            .join_token(role, keys)
            .map_err(|why| ApiError::new(StatusCode::CONFLICT, why.to_string()))?;
        Ok(describe(keys, role, token, now().0))
    };
    Ok(JoinTokens {
        worker: role_token(JoinRole::Worker)?,
        manager: role_token(JoinRole::Manager)?,
    })
}

fn describe(keys: &JoinKeys, role: JoinRole, token: String, now_ms: u64) -> RoleToken {
    let key = keys.of(role);
    RoleToken {
        token,
        rotations: key.rotations,
        rotated_at_ms: key.rotated_at.map(|at| at.0),
        previous_valid_until_ms: key
            .previous
            .as_ref()
            .map(|previous| previous.valid_until.0)
            .filter(|until| *until > now_ms),
    }
}
