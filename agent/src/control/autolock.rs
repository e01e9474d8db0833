//! Autolock's routes: turn it on or off (`shoal cluster update --autolock`), show or rotate the
//! unlock key (`shoal cluster unlock-key [--rotate]`), and unlock a locked manager
//! (`shoal cluster unlock`). All on a manager's owner-only Unix socket only: never over TCP,
//! never forwarded from another agent (the unlock key must not travel).
//!
//! The unlock key is made on the manager that takes the call, sealed with the cluster's data key
//! and proposed ([`Command::EnableAutolock`], [`Command::RotateUnlockKey`]): the log holds only
//! the sealed key. Every manager that holds the data key keeps its key file as the state says,
//! wrapped with the current unlock key or plain (`sync_protection`, run by
//! [`super::secrets::keep_data_key`] after every applied change).
//!
//! A manager that restarts with a wrapped key file is locked ([`DataKeyStore::get`] is `None`):
//! it neither fetches the key from another manager nor gives its own, and whatever needs the key
//! answers 423 saying to run `shoal cluster unlock`.
//!
//! Rotation while a manager is locked (or down): that manager's file stays wrapped with the key
//! it had, so it is unlocked with the *previous* unlock key (the error says so, naming both
//! keys' fingerprints); once unlocked it rewraps its file with the current key.
//!
//! [`DataKeyStore::get`]: shoal_consensus::sealed::DataKeyStore::get

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use shoal_consensus::autolock::{self, UnlockKey};
use shoal_consensus::sealed::{KeyStatus, SealError};
use shoal_scheduler::{ClusterState, Command};

use super::api::{
    self, AutolockRequest, ErrorBody, UnlockKeyResponse, UnlockRequest, UnlockResponse,
};
use super::remote::Transport;
use super::server::{
    ApiError, ApiResult, Call, ControlState, ReadOptions, WriteResult, cluster, write,
};
use crate::worker::now;

/// The answer of anything that needs the data key on a locked manager (423).
pub(crate) fn locked_error(unlock_key_id: &str) -> ApiError {
    ApiError::new(
        StatusCode::LOCKED,
        format!(
            "this manager is locked: autolock is on and it restarted, so it holds no data key \
             until it is unlocked. Run `shoal cluster unlock` on it and give the unlock key \
             ({unlock_key_id}), or run the command on another manager"
        ),
    )
}

/// A store's error as an answer.
pub(crate) fn seal_error(error: SealError) -> ApiError {
    match error {
        SealError::Locked { unlock_key_id } => locked_error(&unlock_key_id),
        other => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("the data key: {other}"),
        ),
    }
}

/// Refuses a call that did not come on this agent's Unix socket, or that reached an agent that
/// is not a manager.
fn on_a_managers_socket(state: &ControlState, transport: Transport) -> Result<(), ApiError> {
    if transport != Transport::Socket {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "autolock and its unlock key are handled on a manager's Unix socket only (run the \
             command on the manager's machine)",
        ));
    }
    if !state.quorum.is_member() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "this agent is not a manager: run the command on a manager (see `shoal cluster info`)",
        ));
    }
    Ok(())
}

fn response(cluster: &ClusterState, unlock: Option<&UnlockKey>) -> UnlockKeyResponse {
    UnlockKeyResponse {
        autolock: cluster.autolock.is_on(),
        unlock_key: unlock.map(|k| k.to_text().to_string()),
        unlock_key_id: cluster.autolock.unlock_key_id().map(str::to_owned),
        previous_unlock_key_id: cluster.autolock.previous_id.clone(),
    }
}

/// Keeps this manager's key file as the applied state says: wrapped with the current unlock key
/// while autolock is on, plain while it is off. Does nothing unless it holds the key (a locked
/// manager's file stays as it is). Answers whether the file was rewritten.
pub(crate) fn sync_protection(state: &ControlState) -> Result<bool, SealError> {
    let cluster = state.quorum.state();
    let wanted = cluster.autolock.unlock_key.as_ref();
    match (state.data_key.status(), wanted) {
        (KeyStatus::None | KeyStatus::Locked { .. }, _) | (KeyStatus::Plain { .. }, None) => {
            Ok(false)
        }
        (KeyStatus::Wrapped { unlock_key_id, .. }, Some(wanted)) if unlock_key_id == wanted.id => {
            Ok(false)
        }
        (_, None) => state.data_key.protect(None),
        (_, Some(wanted)) => {
            let Some(data_key) = state.data_key.get() else {
                return Ok(false);
            };
            let unlock = autolock::open_unlock_key(&data_key, wanted)?;
            state.data_key.protect(Some(&unlock))
        }
    }
}

/// Turns autolock on (answering the new unlock key: shown once) or off.
#[utoipa::path(
    post,
    path = api::LOCAL_AUTOLOCK,
    tag = "cluster",
    request_body = AutolockRequest,
    responses(
        (status = 200, description = "Autolock as it is now, with the new unlock key when it was turned on", body = UnlockKeyResponse),
        (status = 403, description = "Not on the agent's Unix socket", body = ErrorBody),
        (status = 409, description = "Not a manager, or autolock already on", body = ErrorBody),
        (status = 423, description = "This manager is locked", body = ErrorBody),
        (status = 503, description = "No quorum", body = ErrorBody),
    )
)]
pub(super) async fn set_autolock(
    State(state): State<Arc<ControlState>>,
    transport: Transport,
    call: Call,
    Json(request): Json<AutolockRequest>,
) -> WriteResult<UnlockKeyResponse> {
    on_a_managers_socket(&state, transport)?;
    if !request.enabled {
        let written = write(&state, &call, Command::DisableAutolock { at: now() }).await?;
        let cluster = cluster(&state, at_least(written.index)).await?;
        sync_protection(&state).map_err(seal_error)?;
        tracing::info!("autolock turned off");
        return written.answer(response(&cluster, None));
    }
    let current = cluster(&state, ReadOptions::default()).await?;
    if let Some(id) = current.autolock.unlock_key_id() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!(
                "autolock is already on (unlock key {id}): `shoal cluster unlock-key` shows the \
                 key, `shoal cluster unlock-key --rotate` replaces it"
            ),
        ));
    }
    let data_key = super::secrets::data_key(&state).await?;
    let unlock = UnlockKey::generate().map_err(seal_error)?;
    let sealed = autolock::seal_unlock_key(&data_key, &unlock).map_err(seal_error)?;
    let command = Command::EnableAutolock {
        unlock_key: sealed,
        at: now(),
    };
    let written = write(&state, &call, command).await?;
    let cluster = made_current(&state, written.index, &unlock).await?;
    sync_protection(&state).map_err(seal_error)?;
    tracing::info!(unlock_key_id = %unlock.id(), "autolock turned on");
    written.answer(response(&cluster, Some(&unlock)))
}

fn at_least(index: u64) -> ReadOptions {
    ReadOptions {
        min_index: Some(index),
        ..ReadOptions::default()
    }
}

/// The state once the write at `index` applied here, if `unlock` is the cluster's unlock key
/// then: a repeated request (its first copy applied with another key) must not show a key
/// that nothing is wrapped with.
async fn made_current(
    state: &ControlState,
    index: u64,
    unlock: &UnlockKey,
) -> Result<Arc<ClusterState>, ApiError> {
    let cluster = cluster(state, at_least(index)).await?;
    if cluster.autolock.unlock_key_id() != Some(unlock.id().as_str()) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "the unlock key was set by another request meanwhile: `shoal cluster unlock-key` \
             shows the current one",
        ));
    }
    Ok(cluster)
}

/// The cluster's current unlock key, opened with this manager's data key.
#[utoipa::path(
    get,
    path = api::LOCAL_UNLOCK_KEY,
    tag = "cluster",
    responses(
        (status = 200, description = "The unlock key", body = UnlockKeyResponse),
        (status = 403, description = "Not on the agent's Unix socket", body = ErrorBody),
        (status = 409, description = "Not a manager, or autolock off", body = ErrorBody),
        (status = 423, description = "This manager is locked", body = ErrorBody),
        (status = 503, description = "No quorum", body = ErrorBody),
    )
)]
pub(super) async fn unlock_key(
    State(state): State<Arc<ControlState>>,
    transport: Transport,
) -> ApiResult<UnlockKeyResponse> {
    on_a_managers_socket(&state, transport)?;
    let cluster = cluster(&state, ReadOptions::default()).await?;
    let sealed = autolock_on(&cluster)?;
    let data_key = super::secrets::data_key(&state).await?;
    let unlock = autolock::open_unlock_key(&data_key, sealed).map_err(seal_error)?;
    Ok(Json(response(&cluster, Some(&unlock))))
}

fn autolock_on(
    cluster: &ClusterState,
) -> Result<&shoal_scheduler::autolock::SealedUnlockKey, ApiError> {
    cluster.autolock.unlock_key.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::CONFLICT,
            "autolock is off: there is no unlock key (`shoal cluster update --autolock true` \
             turns it on)",
        )
    })
}

/// Replaces the unlock key with a new one (answered once). Managers rewrap their key files;
/// one that is locked meanwhile is unlocked with the previous key.
#[utoipa::path(
    post,
    path = api::LOCAL_UNLOCK_KEY,
    tag = "cluster",
    responses(
        (status = 200, description = "The new unlock key", body = UnlockKeyResponse),
        (status = 403, description = "Not on the agent's Unix socket", body = ErrorBody),
        (status = 409, description = "Not a manager, or autolock off", body = ErrorBody),
        (status = 423, description = "This manager is locked", body = ErrorBody),
        (status = 503, description = "No quorum", body = ErrorBody),
    )
)]
pub(super) async fn rotate_unlock_key(
    State(state): State<Arc<ControlState>>,
    transport: Transport,
    call: Call,
) -> WriteResult<UnlockKeyResponse> {
    on_a_managers_socket(&state, transport)?;
    autolock_on(&*cluster(&state, ReadOptions::default()).await?)?;
    let data_key = super::secrets::data_key(&state).await?;
    let unlock = UnlockKey::generate().map_err(seal_error)?;
    let sealed = autolock::seal_unlock_key(&data_key, &unlock).map_err(seal_error)?;
    let command = Command::RotateUnlockKey {
        unlock_key: sealed,
        at: now(),
    };
    let written = write(&state, &call, command).await?;
    let cluster = made_current(&state, written.index, &unlock).await?;
    sync_protection(&state).map_err(seal_error)?;
    tracing::info!(unlock_key_id = %unlock.id(), "the unlock key was rotated");
    written.answer(response(&cluster, Some(&unlock)))
}

/// Unlocks this manager with the unlock key: it holds the data key again (and rewraps its file
/// with the current unlock key if that was rotated meanwhile). A wrong key changes nothing.
#[utoipa::path(
    post,
    path = api::LOCAL_UNLOCK,
    tag = "cluster",
    request_body = UnlockRequest,
    responses(
        (status = 200, description = "Unlocked", body = UnlockResponse),
        (status = 400, description = "Not an unlock key", body = ErrorBody),
        (status = 403, description = "Not on the agent's Unix socket, or the wrong key", body = ErrorBody),
        (status = 409, description = "This agent is not locked", body = ErrorBody),
        (status = 422, description = "The key file does not open (altered)", body = ErrorBody),
    )
)]
pub(super) async fn unlock(
    State(state): State<Arc<ControlState>>,
    transport: Transport,
    Json(request): Json<UnlockRequest>,
) -> ApiResult<UnlockResponse> {
    if transport != Transport::Socket {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "a manager is unlocked on its own Unix socket only",
        ));
    }
    let unlock = UnlockKey::parse(&request.unlock_key)
        .map_err(|error| ApiError::new(StatusCode::BAD_REQUEST, error.to_string()))?;
    let data_key = match state.data_key.unlock(&unlock) {
        Ok(key) => key,
        Err(SealError::NotLocked) => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "this agent is not locked: it holds the data key already, or autolock never \
                 locked it",
            ));
        }
        Err(SealError::WrongUnlockKey { given, wanted }) => {
            tracing::warn!(%given, %wanted, "an unlock with the wrong unlock key was refused");
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                wrong_key_message(&state.quorum.state(), &given, &wanted),
            ));
        }
        Err(SealError::Corrupt) => {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "the unlock key is right but this manager's data key file does not open: it \
                 was altered. Move it away and restart the agent: it fetches the key from \
                 another manager",
            ));
        }
        Err(other) => return Err(seal_error(other)),
    };
    let rewrapped = sync_protection(&state).map_err(seal_error)?;
    tracing::info!(key_id = %data_key.id(), rewrapped, "this manager was unlocked");
    Ok(Json(UnlockResponse {
        data_key_id: data_key.id(),
        rewrapped,
    }))
}

/// What a wrong unlock key is told: which key the file needs, and whether it is the one a
/// rotation replaced while this manager was locked.
fn wrong_key_message(cluster: &ClusterState, given: &str, wanted: &str) -> String {
    let mut message =
        format!("wrong unlock key ({given}): this manager's key file needs unlock key {wanted}");
    if cluster.autolock.unlock_key_id() == Some(given) {
        message.push_str(
            ". The key you gave is the cluster's current one: the key was rotated while this \
             manager was locked or down, so give the unlock key from before the rotation; once \
             unlocked, it rewraps its file with the current key",
        );
    } else if cluster.autolock.previous_id.as_deref() == Some(wanted) {
        message.push_str(
            " (the key that the last rotation replaced: this manager was locked or down then)",
        );
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_scheduler::autolock::SealedUnlockKey;
    use shoal_scheduler::{Blob, SealedValue};

    #[test]
    fn a_wrong_key_after_a_rotation_says_to_give_the_previous_one() {
        let mut cluster = ClusterState::default();
        cluster.autolock.unlock_key = Some(SealedUnlockKey {
            id: "unew".into(),
            sealed: SealedValue {
                key_id: "k".into(),
                nonce: Blob(vec![0; 24]),
                ciphertext: Blob(vec![0; 48]),
            },
        });
        cluster.autolock.previous_id = Some("uold".into());
        let current_given = wrong_key_message(&cluster, "unew", "uold");
        assert!(
            current_given.contains("from before the rotation"),
            "{current_given}"
        );
        let other_given = wrong_key_message(&cluster, "ustray", "uold");
        assert!(
            other_given.contains("the last rotation replaced"),
            "{other_given}"
        );
        let plain = wrong_key_message(&ClusterState::default(), "ua", "ub");
        assert_eq!(
            plain,
            "wrong unlock key (ua): this manager's key file needs unlock key ub"
        );
    }
}
