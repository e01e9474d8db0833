//! The secrets' and configs' routes: create, list, inspect, remove; and the route by which a
//! manager fetches the cluster's data key from another manager.
//!
//! A secret's value is sealed here, on the manager that takes the call, with the cluster's data
//! key ([`shoal_consensus::sealed`]) before its command is proposed: the raft log, snapshots
//! and every replica hold only ciphertext. No answer, error or log line carries a value.
//!
//! The data key: the leader creates it when first needed and keeps it in its data dir; another
//! manager that needs it asks the leader ([`api::LOCAL_DATA_KEY`], over the mesh, answered only
//! to managers of the cluster) and keeps it too, and every manager fetches a copy as soon as the
//! cluster holds a secret ([`keep_data_key`]). See [`data_key`].
//!
//! Autolock ([`super::autolock`]): a manager that restarted with its key file wrapped is locked.
//! It neither fetches the key from another manager (a stolen disk with the node's identity must
//! not get it that way) nor gives its own, and everything here that needs the key answers 423
//! until `shoal cluster unlock`.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::StatusCode;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use shoal_consensus::sealed::{self, DataKey, KeyStatus};
use shoal_scheduler::apply::secrets::services_using;
use shoal_scheduler::authz::Origin;
use shoal_scheduler::secrets::MAX_VALUE_BYTES;
use shoal_scheduler::{Blob, ClusterState, Command, Config, NodeId, ObjectKind, Outcome, Secret};
use subtle::ConstantTimeEq as _;
use zeroize::Zeroizing;

use super::api::{
    self, CompareValueRequest, CompareValueResponse, ConfigView, CreateObjectRequest,
    CreateObjectResponse, DataKeyResponse, ErrorBody, SecretView,
};
use super::forward::{self, Caller};
use super::server::{
    ApiError, ApiResult, Call, ControlState, Declined, ReadOptions, WriteResult, Written, cluster,
    decline, write,
};
use super::views;
use crate::worker::now;
use shoal_discovery::PeerId;

fn secret_view(state: &ClusterState, secret: &Secret) -> SecretView {
    SecretView {
        id: secret.id.to_string(),
        name: secret.name.clone(),
        labels: secret.labels.clone(),
        created_at_ms: secret.created_at.0,
        key_id: secret.sealed.key_id.clone(),
        services: services_using(state, ObjectKind::Secret, &secret.name),
    }
}

fn config_view(state: &ClusterState, config: &Config, with_data: bool) -> ConfigView {
    ConfigView {
        id: config.id.to_string(),
        name: config.name.clone(),
        labels: config.labels.clone(),
        created_at_ms: config.created_at.0,
        size: config.data.len(),
        services: services_using(state, ObjectKind::Config, &config.name),
        data: with_data.then(|| BASE64.encode(config.data.as_slice())),
    }
}

/// The value of a creation, decoded and bounded. The decoded bytes are zeroed when dropped.
fn decode_value(kind: ObjectKind, data: &str) -> Result<Zeroizing<Vec<u8>>, ApiError> {
    let value = BASE64
        .decode(data.trim())
        .map(Zeroizing::new)
        .map_err(|_| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("the {kind}'s data is not base64 (standard alphabet, padded)"),
            )
        })?;
    if value.len() > MAX_VALUE_BYTES {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "a {kind} holds at most {} KiB, this one is {} bytes",
                MAX_VALUE_BYTES / 1024,
                value.len()
            ),
        ));
    }
    Ok(value)
}

/// The secrets, metadata only, in name order.
#[utoipa::path(
    get,
    path = api::SECRETS,
    tag = "secrets",
    params(ReadOptions),
    responses(
        (status = 200, description = "The secrets (never their values)", body = [SecretView]),
        (status = 503, description = "No quorum", body = ErrorBody),
    )
)]
pub(super) async fn list_secrets(
    State(state): State<Arc<ControlState>>,
    Query(read): Query<ReadOptions>,
) -> ApiResult<Vec<SecretView>> {
    let cluster = cluster(&state, read).await?;
    let mut rows: Vec<SecretView> = cluster
        .secrets
        .values()
        .map(|s| secret_view(&cluster, s))
        .collect();
    rows.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(Json(rows))
}

/// Creates a secret: its value is sealed with the cluster's data key before it is written.
#[utoipa::path(
    post,
    path = api::SECRETS,
    tag = "secrets",
    request_body = CreateObjectRequest,
    responses(
        (status = 200, description = "The new secret's id; its log index in `x-shoal-index`", body = CreateObjectResponse),
        (status = 400, description = "A bad name, labels or data", body = ErrorBody),
        (status = 403, description = "A forwarded write the caller may not make", body = ErrorBody),
        (status = 409, description = "A secret of that name exists", body = ErrorBody),
        (status = 413, description = "A value larger than 500 KiB", body = ErrorBody),
        (status = 503, description = "No quorum, or no data key could be had from the leader", body = ErrorBody),
    )
)]
pub(super) async fn create_secret(
    State(state): State<Arc<ControlState>>,
    call: Call,
    Json(request): Json<CreateObjectRequest>,
) -> WriteResult<CreateObjectResponse> {
    let value = decode_value(ObjectKind::Secret, &request.data)?;
    drop(request.data);
    let key = data_key(&state).await?;
    let sealed = sealed::seal_secret(&key, &request.name, &value).map_err(|error| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("the secret could not be sealed: {error}"),
        )
    })?;
    drop(value);
    let command = Command::CreateSecret {
        name: request.name,
        labels: request.labels,
        sealed,
        at: now(),
    };
    created(&write(&state, &call, command).await?, ObjectKind::Secret)
}

/// One secret's metadata (never its value).
#[utoipa::path(
    get,
    path = "/v1/secrets/{name}",
    tag = "secrets",
    params(("name" = String, Path, description = "The secret's name, id or unique id prefix"), ReadOptions),
    responses(
        (status = 200, description = "The secret's metadata", body = SecretView),
        (status = 404, description = "No such secret", body = ErrorBody),
        (status = 503, description = "No quorum", body = ErrorBody),
    )
)]
pub(super) async fn inspect_secret(
    State(state): State<Arc<ControlState>>,
    UrlPath(name): UrlPath<String>,
    Query(read): Query<ReadOptions>,
) -> ApiResult<SecretView> {
    let cluster = cluster(&state, read).await?;
    let secret = views::find_secret(&cluster, &name)?;
    Ok(Json(secret_view(&cluster, secret)))
}

/// Whether secret `name` holds exactly the value given: what `shoal stack deploy` asks before it
/// keeps a secret it made, so that a changed value is refused instead of silently ignored. The
/// value is opened here, compared in constant time and dropped; the answer is one bit. Only a
/// manager's callers may ask (a worker's socket owner could otherwise test guesses at secrets
/// its node is never given).
#[utoipa::path(
    post,
    path = "/v1/secrets/{name}/compare",
    tag = "secrets",
    params(("name" = String, Path, description = "The secret's name, id or unique id prefix")),
    request_body = CompareValueRequest,
    responses(
        (status = 200, description = "Whether the values are the same", body = CompareValueResponse),
        (status = 400, description = "Data that is not base64", body = ErrorBody),
        (status = 403, description = "Forwarded by a node that joined with a worker token", body = ErrorBody),
        (status = 404, description = "No such secret", body = ErrorBody),
        (status = 413, description = "A value larger than 500 KiB", body = ErrorBody),
        (status = 423, description = "This manager is locked (autolock)", body = ErrorBody),
        (status = 503, description = "No quorum, or no data key could be had", body = ErrorBody),
    )
)]
pub(super) async fn compare_secret(
    State(state): State<Arc<ControlState>>,
    UrlPath(name): UrlPath<String>,
    call: Call,
    Json(request): Json<CompareValueRequest>,
) -> ApiResult<CompareValueResponse> {
    only_managers_compare(&state, &call)?;
    let given = decode_value(ObjectKind::Secret, &request.data)?;
    drop(request.data);
    let cluster = cluster(&state, ReadOptions::default()).await?;
    let secret = views::find_secret(&cluster, &name)?;
    let key = data_key(&state).await?;
    let held = sealed::open_secret(&key, &secret.name, &secret.sealed).map_err(|error| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("secret {} could not be opened: {error}", secret.name),
        )
    })?;
    // Slices of different lengths compare unequal.
    let same = bool::from(held.as_slice().ct_eq(given.as_slice()));
    Ok(Json(CompareValueResponse { same }))
}

/// Refuses a comparison forwarded by a node that joined with a worker token.
fn only_managers_compare(state: &ControlState, call: &Call) -> Result<(), ApiError> {
    let Caller::Peer(peer) = call.caller() else {
        return Ok(());
    };
    let node = NodeId::new(peer.to_string());
    match Origin::of_node(&state.quorum.state(), &node) {
        Some(Origin::Manager) => Ok(()),
        _ => {
            state
                .metrics
                .refused("control", "secret_compare", "not_a_manager");
            Err(ApiError::new(
                StatusCode::FORBIDDEN,
                format!(
                    "node {peer} joined with a worker token: comparing a secret's value is for \
                     managers (run it on a manager)"
                ),
            ))
        }
    }
}

/// Removes a secret no service refers to.
#[utoipa::path(
    delete,
    path = "/v1/secrets/{name}",
    tag = "secrets",
    params(("name" = String, Path, description = "The secret's name, id or unique id prefix")),
    responses(
        (status = 200, description = "The removed secret's id; its log index in `x-shoal-index`", body = String, content_type = "application/json"),
        (status = 403, description = "A forwarded write the caller may not make", body = ErrorBody),
        (status = 404, description = "No such secret", body = ErrorBody),
        (status = 422, description = "In use by services (the error names them)", body = ErrorBody),
        (status = 503, description = "No quorum", body = ErrorBody),
    )
)]
pub(super) async fn remove_secret(
    State(state): State<Arc<ControlState>>,
    UrlPath(name): UrlPath<String>,
    call: Call,
) -> WriteResult<String> {
    let found = {
        let cluster = cluster(&state, ReadOptions::default()).await?;
        views::find_secret(&cluster, &name).map(|s| s.id)
    };
    let id = match found {
        Ok(id) => id,
        Err(missing) => return decline_for_object(&state, &call, missing.into()).await,
    };
    write(&state, &call, Command::RemoveSecret { id, at: now() })
        .await?
        .answer(id.to_string())
}

/// The configs, without their data, in name order.
#[utoipa::path(
    get,
    path = api::CONFIGS,
    tag = "secrets",
    params(ReadOptions),
    responses(
        (status = 200, description = "The configs (without their data)", body = [ConfigView]),
        (status = 503, description = "No quorum", body = ErrorBody),
    )
)]
pub(super) async fn list_configs(
    State(state): State<Arc<ControlState>>,
    Query(read): Query<ReadOptions>,
) -> ApiResult<Vec<ConfigView>> {
    let cluster = cluster(&state, read).await?;
    let mut rows: Vec<ConfigView> = cluster
        .configs
        .values()
        .map(|c| config_view(&cluster, c, false))
        .collect();
    rows.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(Json(rows))
}

/// Creates a config.
#[utoipa::path(
    post,
    path = api::CONFIGS,
    tag = "secrets",
    request_body = CreateObjectRequest,
    responses(
        (status = 200, description = "The new config's id; its log index in `x-shoal-index`", body = CreateObjectResponse),
        (status = 400, description = "A bad name, labels or data", body = ErrorBody),
        (status = 403, description = "A forwarded write the caller may not make", body = ErrorBody),
        (status = 409, description = "A config of that name exists", body = ErrorBody),
        (status = 413, description = "A value larger than 500 KiB", body = ErrorBody),
        (status = 503, description = "No quorum", body = ErrorBody),
    )
)]
pub(super) async fn create_config(
    State(state): State<Arc<ControlState>>,
    call: Call,
    Json(request): Json<CreateObjectRequest>,
) -> WriteResult<CreateObjectResponse> {
    let value = decode_value(ObjectKind::Config, &request.data)?;
    let command = Command::CreateConfig {
        name: request.name,
        labels: request.labels,
        data: Blob(value.to_vec()),
        at: now(),
    };
    created(&write(&state, &call, command).await?, ObjectKind::Config)
}

/// The answer to the creation of a secret or config: the new one's id.
fn created(written: &Written, kind: ObjectKind) -> WriteResult<CreateObjectResponse> {
    let id = match (kind, &written.outcome) {
        (ObjectKind::Secret, Outcome::SecretCreated(id)) => id.to_string(),
        (ObjectKind::Config, Outcome::ConfigCreated(id)) => id.to_string(),
        _ => {
            return Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("unexpected outcome of a {kind}'s creation"),
            ));
        }
    };
    written.answer(CreateObjectResponse { id })
}

/// One config, its data included (base64).
#[utoipa::path(
    get,
    path = "/v1/configs/{name}",
    tag = "secrets",
    params(("name" = String, Path, description = "The config's name, id or unique id prefix"), ReadOptions),
    responses(
        (status = 200, description = "The config with its data", body = ConfigView),
        (status = 404, description = "No such config", body = ErrorBody),
        (status = 503, description = "No quorum", body = ErrorBody),
    )
)]
pub(super) async fn inspect_config(
    State(state): State<Arc<ControlState>>,
    UrlPath(name): UrlPath<String>,
    Query(read): Query<ReadOptions>,
) -> ApiResult<ConfigView> {
    let cluster = cluster(&state, read).await?;
    let config = views::find_config(&cluster, &name)?;
    Ok(Json(config_view(&cluster, config, true)))
}

/// Removes a config no service refers to.
#[utoipa::path(
    delete,
    path = "/v1/configs/{name}",
    tag = "secrets",
    params(("name" = String, Path, description = "The config's name, id or unique id prefix")),
    responses(
        (status = 200, description = "The removed config's id; its log index in `x-shoal-index`", body = String, content_type = "application/json"),
        (status = 403, description = "A forwarded write the caller may not make", body = ErrorBody),
        (status = 404, description = "No such config", body = ErrorBody),
        (status = 422, description = "In use by services (the error names them)", body = ErrorBody),
        (status = 503, description = "No quorum", body = ErrorBody),
    )
)]
pub(super) async fn remove_config(
    State(state): State<Arc<ControlState>>,
    UrlPath(name): UrlPath<String>,
    call: Call,
) -> WriteResult<String> {
    let found = {
        let cluster = cluster(&state, ReadOptions::default()).await?;
        views::find_config(&cluster, &name).map(|c| c.id)
    };
    let id = match found {
        Ok(id) => id,
        Err(missing) => return decline_for_object(&state, &call, missing.into()).await,
    };
    write(&state, &call, Command::RemoveConfig { id, at: now() })
        .await?
        .answer(id.to_string())
}

/// Declines a removal ([`decline`]): a copy of it that applied first answers with the id it
/// removed.
async fn decline_for_object(
    state: &ControlState,
    call: &Call,
    declined: Declined,
) -> WriteResult<String> {
    decline(state, call, declined, |first| match first {
        Outcome::SecretRemoved(id) => Some(id.to_string()),
        Outcome::ConfigRemoved(id) => Some(id.to_string()),
        _ => None,
    })
    .await
}

/// The key id the cluster's secrets (or its unlock key) are sealed with, if it holds any.
fn sealed_with(cluster: &ClusterState) -> Option<String> {
    cluster
        .secrets
        .values()
        .next()
        .map(|s| s.sealed.key_id.clone())
        .or_else(|| {
            let unlock = cluster.autolock.unlock_key.as_ref()?;
            Some(unlock.sealed.key_id.clone())
        })
}

/// The cluster's data key, for this manager to seal with: the one it holds; else another
/// manager's (the leader first), fetched over the mesh and kept; else, on the leader of a
/// cluster that holds no secret yet, a new one. A leader never makes a new key while secrets
/// sealed with another exist: they would no longer open. A locked manager (autolock) answers
/// 423 and fetches nothing.
pub(crate) async fn data_key(state: &ControlState) -> Result<DataKey, ApiError> {
    let internal = super::autolock::seal_error;
    if let Some(key) = state.data_key.get() {
        return Ok(key);
    }
    if let KeyStatus::Locked { unlock_key_id, .. } = state.data_key.status() {
        return Err(super::autolock::locked_error(&unlock_key_id));
    }
    let wanted = sealed_with(&state.quorum.state());
    let leader = *state.quorum.leader().borrow();
    let me = state.quorum.peer_id();
    let mut managers = state.quorum.known_managers();
    managers.sort_by_key(|m| Some(*m) != leader);
    let mut last = String::from("no other manager known");
    for manager in managers.into_iter().filter(|m| *m != me) {
        match fetch_key(state, manager).await {
            Ok(key) if wanted.as_ref().is_none_or(|id| *id == key.id()) => {
                install(state, &key).map_err(internal)?;
                return Ok(key);
            }
            Ok(key) => last = format!("{manager} holds key {}, not {wanted:?}", key.id()),
            Err(why) => last = format!("{manager}: {why}"),
        }
    }
    if leader == Some(me) && wanted.is_none() {
        return state.data_key.get_or_create().map_err(internal);
    }
    Err(ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        format!(
            "this manager holds no data key and could not get the cluster's ({last}); retry, or \
             run the command on a manager that holds it"
        ),
    ))
}

/// Keeps `key`, fetched from another manager, as the state says: wrapped with the unlock key
/// while autolock is on (so that it never rests on disk in plain then).
fn install(state: &ControlState, key: &DataKey) -> Result<(), sealed::SealError> {
    if let Some(sealed_unlock) = state.quorum.state().autolock.unlock_key.as_ref() {
        let unlock = shoal_consensus::autolock::open_unlock_key(key, sealed_unlock)?;
        state.data_key.protect(Some(&unlock))?;
    }
    state.data_key.install(key.clone())
}

/// Asks `manager` for the data key ([`api::LOCAL_DATA_KEY`]).
async fn fetch_key(state: &ControlState, manager: PeerId) -> Result<DataKey, String> {
    let answer = forward::call_node(state, manager, api::LOCAL_DATA_KEY).await?;
    if answer.status != 200 {
        return Err(serde_json::from_slice::<ErrorBody>(&answer.body)
            .map(|e| e.error)
            .unwrap_or_else(|_| format!("status {}", answer.status)));
    }
    let response: DataKeyResponse =
        serde_json::from_slice(&answer.body).map_err(|_| "a malformed answer".to_owned())?;
    let key = parse_key(&response.key).ok_or_else(|| "a malformed key".to_owned())?;
    if key.id() != response.key_id {
        return Err("a key that does not match its id".into());
    }
    Ok(key)
}

/// Keeps this manager's copy of the data key: once the cluster holds a secret (or autolock is
/// on), a manager without the key fetches it from another, so that the key outlives the manager
/// that made it; and a manager holding it keeps its key file wrapped or plain as the cluster's
/// autolock says (`autolock::sync_protection`). A locked manager fetches nothing: it
/// says so once, and waits for `shoal cluster unlock`. Runs as long as the agent.
pub async fn keep_data_key(state: ControlState) {
    let mut applied = state.quorum.watch();
    let mut said_locked = false;
    // The unlock key id (or none: autolock off) the key file was last kept for, so that an
    // applied entry that changes nothing about autolock costs a comparison.
    let mut synced: Option<Option<String>> = None;
    loop {
        if state.data_key.is_locked() {
            if !said_locked && let KeyStatus::Locked { unlock_key_id, .. } = state.data_key.status()
            {
                tracing::warn!(
                    %unlock_key_id,
                    "this manager is LOCKED (autolock): it holds no data key, so secrets cannot \
                     be created or given to tasks here, and it will not fetch the key from \
                     other managers. Run `shoal cluster unlock` with the unlock key"
                );
                said_locked = true;
            }
        } else if state.data_key.holds_key() {
            let wanted = state
                .quorum
                .state()
                .autolock
                .unlock_key_id()
                .map(str::to_owned);
            if synced.as_ref() != Some(&wanted) {
                match super::autolock::sync_protection(&state) {
                    Ok(_) => synced = Some(wanted),
                    Err(error) => {
                        tracing::warn!(%error, "could not keep the data key file as autolock says")
                    }
                }
            }
        } else {
            let needed = state.quorum.is_member() && sealed_with(&state.quorum.state()).is_some();
            if needed && let Err(error) = data_key(&state).await {
                tracing::debug!(?error, "no copy of the data key yet; retrying");
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                continue;
            }
        }
        // A locked manager is unlocked by a call, not by an applied entry: look again now and
        // then as well.
        let wait = tokio::time::sleep(std::time::Duration::from_secs(5));
        tokio::select! {
            changed = applied.changed() => if changed.is_err() { return },
            () = wait => {}
        }
    }
}

fn parse_key(hex: &str) -> Option<DataKey> {
    let hex = Zeroizing::new(hex.trim().to_owned());
    if hex.len() != 64 {
        return None;
    }
    let mut bytes = Zeroizing::new([0u8; 32]);
    for (i, byte) in bytes.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(DataKey::from_bytes(*bytes))
}

/// The cluster's data key, to another manager of the cluster (over the mesh) only. On the
/// leader, created if it is the first time anyone needs it.
#[utoipa::path(
    get,
    path = api::LOCAL_DATA_KEY,
    tag = "cluster",
    responses(
        (status = 200, description = "The key (`DataKeyResponse`)", body = Object),
        (status = 403, description = "Asked on a socket, or by an agent that is not a manager", body = ErrorBody),
        (status = 409, description = "This manager holds no key and is not the leader", body = ErrorBody),
        (status = 423, description = "This manager is locked (autolock)", body = ErrorBody),
    )
)]
pub(super) async fn local_data_key(
    State(state): State<Arc<ControlState>>,
    call: Call,
) -> ApiResult<DataKeyResponse> {
    let Caller::Peer(peer) = call.caller() else {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "the data key is given to other managers over the mesh only",
        ));
    };
    if !state.quorum.known_managers().contains(&peer) {
        state
            .metrics
            .refused("control", "data_key", "not_a_manager");
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!("{peer} is not a manager of this cluster"),
        ));
    }
    if let KeyStatus::Locked { unlock_key_id, .. } = state.data_key.status() {
        state.metrics.refused("control", "data_key", "locked");
        return Err(super::autolock::locked_error(&unlock_key_id));
    }
    let is_leader =
        state.quorum.leader().borrow().map(|l| l.to_string()) == Some(state.node_id.clone());
    let fresh = sealed_with(&state.quorum.state()).is_none();
    let key = match state.data_key.get() {
        Some(key) => key,
        None if is_leader && fresh => state.data_key.get_or_create().map_err(|error| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("the data key: {error}"),
            )
        })?,
        None => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "this manager holds no data key: ask another",
            ));
        }
    };
    tracing::info!(%peer, key_id = %key.id(), "gave the cluster's data key to a manager");
    let hex: String = key
        .expose_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Ok(Json(DataKeyResponse {
        key_id: key.id(),
        key: hex,
    }))
}
