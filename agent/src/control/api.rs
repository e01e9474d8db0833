//! Bodies of the control API. Paths are constants so that the server and the client agree.

use serde::{Deserialize, Serialize};
use shoal_scheduler::{Availability, ServiceId, ServiceSpec};
use utoipa::{IntoParams, ToSchema};

/// The response header of a write: the raft log index it committed at. A read with
/// `?min_index=N` on any manager answers from a state that includes it.
pub const INDEX_HEADER: &str = "x-shoal-index";

/// `GET` cluster and agent facts.
pub const INFO: &str = "/v1/info";
/// `GET` list, `POST` create.
pub const SERVICES: &str = "/v1/services";
/// `GET` the services and the tasks that take their connections (the service network's
/// input on agents without a replica of the state).
pub const ENDPOINTS: &str = "/v1/endpoints";
/// `GET` list of nodes.
pub const NODES: &str = "/v1/nodes";
/// `GET` a page of cluster events ([`EventsQuery`]; answers a
/// [`shoal_consensus::events::EventPage`]).
pub const EVENTS: &str = "/v1/events";
/// `GET` the cluster's settings, `POST` [`ClusterSettingsRequest`] to change them.
pub const CLUSTER_SETTINGS: &str = "/v1/cluster/settings";
/// `GET` the OpenAPI document of this API (every route, its parameters and bodies).
pub const OPENAPI: &str = "/v1/openapi.json";
/// `GET` the TCP API's bearer token ([`ApiTokenResponse`]): on the Unix socket only, refused
/// over TCP and to other agents.
pub const API_TOKEN: &str = "/v1/api-token";

/// The path of one service (`GET` inspect, `DELETE` remove).
pub fn service(name: &str) -> String {
    format!("{SERVICES}/{name}")
}

/// The path of a service's logs (`GET` [`LogsQuery`], answers a
/// [`super::logs::ServiceLogs`]).
pub fn service_logs(name: &str) -> String {
    format!("{SERVICES}/{name}/logs")
}

/// Paths under this prefix are about the agent that serves them (never forwarded to a manager).
pub const LOCAL_PREFIX: &str = "/v1/local/";
/// `GET` the output of tasks this node runs ([`super::logs::LocalLogsQuery`]); a manager gathers
/// a service's logs from its nodes with it.
pub const LOCAL_LOGS: &str = "/v1/local/logs";

/// The path of a service's tasks (`GET`).
pub fn service_tasks(name: &str) -> String {
    format!("{SERVICES}/{name}/tasks")
}

/// The path that scales a service (`POST` [`ScaleRequest`]).
pub fn service_scale(name: &str) -> String {
    format!("{SERVICES}/{name}/scale")
}

/// The path that replaces a service's spec (`POST` [`UpdateServiceRequest`]).
pub fn service_update(name: &str) -> String {
    format!("{SERVICES}/{name}/update")
}

/// The path that rolls a service back (`POST`).
pub fn service_rollback(name: &str) -> String {
    format!("{SERVICES}/{name}/rollback")
}

/// Body of `POST /v1/services`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CreateServiceRequest {
    /// The desired state (the scheduler's `ServiceSpec`).
    #[schema(value_type = Object)]
    pub spec: ServiceSpec,
}

/// Answer to a created service.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CreateServiceResponse {
    /// The new service's id.
    #[schema(value_type = u64)]
    pub id: ServiceId,
}

/// The path of one node, by id, hostname or unique id prefix (`GET` inspect, `DELETE`
/// remove, `?force=true` for a node that is not down).
pub fn node(name: &str) -> String {
    format!("{NODES}/{name}")
}

/// The path of the tasks placed on a node (`GET`).
pub fn node_tasks(name: &str) -> String {
    format!("{NODES}/{name}/tasks")
}

/// The path that changes a node's availability and labels (`POST` [`UpdateNodeRequest`]).
pub fn node_update(name: &str) -> String {
    format!("{NODES}/{name}/update")
}

/// Body of `POST /v1/nodes/{node}/update`: what to change (absent fields stay).
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct UpdateNodeRequest {
    /// `active`, `pause` (keeps its tasks, gets no new ones) or `drain` (its tasks move away).
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub availability: Option<Availability>,
    /// Labels to set, `[name, value]` pairs.
    #[serde(default)]
    #[schema(value_type = Vec<Vec<String>>)]
    pub labels_set: Vec<(String, String)>,
    /// Labels to remove.
    #[serde(default)]
    pub labels_remove: Vec<String>,
}

/// Query of `DELETE /v1/nodes/{node}`.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RemoveNodeQuery {
    /// Remove a node that is not down (its tasks are lost and replaced elsewhere).
    #[serde(default)]
    pub force: bool,
}

/// Body of a scale request.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ScaleRequest {
    /// The new number of replicas.
    pub replicas: u64,
}

/// Body of an update request.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct UpdateServiceRequest {
    /// The new spec (the scheduler's `ServiceSpec`).
    #[schema(value_type = Object)]
    pub spec: ServiceSpec,
    /// The service's `revision` the client based it on (from inspect): the update is refused
    /// as stale (409) when the service changed meanwhile, a scale included.
    #[serde(alias = "expected_version")]
    pub expected_revision: u64,
}

/// An error answer: what went wrong and, where it helps, what to do next. Every error the API
/// answers has this body, whatever its status.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    /// The message for the user.
    pub error: String,
}

/// Facts about the cluster as this agent sees them.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct InfoResponse {
    /// This agent's node id.
    pub node_id: String,
    /// The cluster id, once joined.
    pub cluster_id: Option<String>,
    /// The current raft leader, if known.
    pub leader: Option<String>,
    /// Whether this agent is the leader.
    pub is_leader: bool,
    /// This agent's container runtime (`docker`, `sim`, `none`).
    pub runtime: String,
    /// The shoal version.
    pub version: String,
    /// How this agent holds the cluster's data key: `locked` when autolock is on and it waits
    /// for `shoal cluster unlock`.
    #[serde(default)]
    pub data_key: DataKeyState,
}

/// Body of `POST /v1/cluster/settings`: the settings to change (absent ones stay).
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct ClusterSettingsRequest {
    /// Whether services may bind-mount the host's root or a container engine's socket.
    #[serde(default)]
    pub allow_sensitive_mounts: Option<bool>,
    /// Ended tasks kept per slot as history (older ones are pruned by the leader).
    #[serde(default)]
    pub task_history_limit: Option<u64>,
}

/// The longest an events call waits for a matching event (below the mesh's request timeout, so
/// that a forwarded call is answered before it is given up).
pub const MAX_EVENTS_WAIT_MS: u64 = 5_000;
/// The most events one call answers.
pub const MAX_EVENTS_PAGE: usize = 2_000;

/// Query of `GET /v1/events`: what to read, and how long to wait for it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventsQuery {
    /// Read after this cursor (`N` or `N.K`, a page's `next`; `end` for new events only); from
    /// the oldest event held if absent.
    #[serde(default)]
    pub after: Option<String>,
    /// Wait up to this long (milliseconds, at most [`MAX_EVENTS_WAIT_MS`]) for a matching event.
    #[serde(default)]
    pub wait_ms: Option<u64>,
    /// At most this many events (at most [`MAX_EVENTS_PAGE`]).
    #[serde(default)]
    pub limit: Option<usize>,
    /// Only these types, comma-separated (`service`, `node`, `task`, `endpoint`, `cluster`,
    /// `secret`, `config`).
    #[serde(default, rename = "type")]
    pub types: Option<String>,
    /// Only events about this name (a service, also for its tasks; a node's hostname) or id.
    #[serde(default)]
    pub name: Option<String>,
    /// Only events at or after this time (milliseconds since the Unix epoch).
    #[serde(default)]
    pub since_ms: Option<u64>,
}

/// Query of a service's logs.
#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LogsQuery {
    /// The last this many lines of each task (all it holds, up to the executor's bound, if
    /// absent).
    #[serde(default)]
    pub tail: Option<usize>,
    /// Only lines written at or after this time (seconds since the Unix epoch).
    #[serde(default)]
    pub since_secs: Option<u64>,
    /// Only this task of the service (its id or a unique prefix).
    #[serde(default)]
    pub task: Option<String>,
}

/// Answer of [`API_TOKEN`]: what a remote client presents, and where.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ApiTokenResponse {
    /// The bearer token of the TCP API (a secret: `Authorization: Bearer <token>`).
    pub token: String,
    /// The address the TCP API listens on (`HOST:PORT`), if this agent serves it.
    pub addr: Option<String>,
}

/// `GET` list of secrets (metadata only), `POST` [`CreateObjectRequest`] to create one.
pub const SECRETS: &str = "/v1/secrets";
/// `GET` list of configs, `POST` [`CreateObjectRequest`] to create one.
pub const CONFIGS: &str = "/v1/configs";
/// `GET` the cluster's data key ([`DataKeyResponse`]): answered only to another manager of the
/// cluster over the authenticated mesh (a manager fetches it from the leader before it seals
/// its first secret), never on a socket.
pub const LOCAL_DATA_KEY: &str = "/v1/local/data-key";
/// `POST` [`AutolockRequest`]: turn autolock on (answers the new unlock key, once) or off. On
/// a manager's Unix socket only.
pub const LOCAL_AUTOLOCK: &str = "/v1/local/autolock";
/// `GET` the current unlock key ([`UnlockKeyResponse`]); `POST` rotates it (answers the new
/// one). On a manager's Unix socket only.
pub const LOCAL_UNLOCK_KEY: &str = "/v1/local/unlock-key";
/// `POST` [`UnlockRequest`]: unlock this manager (autolock) with the unlock key. On its Unix
/// socket only.
pub const LOCAL_UNLOCK: &str = "/v1/local/unlock";
/// The largest body of a secret or config creation: the value (at most
/// `shoal_scheduler::secrets::MAX_VALUE_BYTES`) in base64, its name and labels.
pub const MAX_OBJECT_BODY_BYTES: usize =
    shoal_scheduler::secrets::MAX_VALUE_BYTES * 4 / 3 + 128 * 1024;

/// The path of one secret, by name, id or unique id prefix (`GET` inspect, `DELETE` remove).
pub fn secret(name: &str) -> String {
    format!("{SECRETS}/{name}")
}

/// The path that compares a value with secret `name`'s (`POST` [`CompareValueRequest`],
/// answered [`CompareValueResponse`]).
pub fn secret_compare(name: &str) -> String {
    format!("{SECRETS}/{name}/compare")
}

/// The path of one config, by name, id or unique id prefix (`GET` inspect, `DELETE` remove).
pub fn config(name: &str) -> String {
    format!("{CONFIGS}/{name}")
}

/// Body of `POST /v1/secrets` and `POST /v1/configs`. `Debug` never shows the value.
#[derive(Clone, Serialize, Deserialize, ToSchema)]
pub struct CreateObjectRequest {
    /// Its name: 1 to 63 letters, digits, `-`, `_` or `.`, unique among its kind.
    pub name: String,
    /// Its labels.
    #[serde(default)]
    pub labels: std::collections::BTreeMap<String, String>,
    /// The value, base64 (standard alphabet, padded), at most 500 KiB once decoded.
    pub data: String,
}

impl std::fmt::Debug for CreateObjectRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreateObjectRequest")
            .field("name", &self.name)
            .field("labels", &self.labels)
            .field("data", &"<redacted>")
            .finish()
    }
}

/// Body of a secret's comparison: whether a value is the one the secret holds. `Debug` never
/// shows the value.
#[derive(Clone, Serialize, Deserialize, ToSchema)]
pub struct CompareValueRequest {
    /// The value, base64 (standard alphabet, padded), at most 500 KiB once decoded.
    pub data: String,
}

impl std::fmt::Debug for CompareValueRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompareValueRequest")
            .field("data", &"<redacted>")
            .finish()
    }
}

/// Answer to a secret's comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CompareValueResponse {
    /// Whether the secret holds exactly the value given.
    pub same: bool,
}

/// Answer to a created secret or config.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CreateObjectResponse {
    /// The new object's id (`x…` for a secret, `c…` for a config).
    pub id: String,
}

/// A secret as the API shows it: metadata only, never the value.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SecretView {
    /// Its id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// Its labels.
    pub labels: std::collections::BTreeMap<String, String>,
    /// When it was created (milliseconds since the Unix epoch).
    pub created_at_ms: u64,
    /// The fingerprint of the data key that sealed it.
    pub key_id: String,
    /// The services whose spec (or rollback spec) refers to it.
    pub services: Vec<String>,
}

/// A config as the API shows it; `data` only on inspect.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ConfigView {
    /// Its id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// Its labels.
    pub labels: std::collections::BTreeMap<String, String>,
    /// When it was created (milliseconds since the Unix epoch).
    pub created_at_ms: u64,
    /// Its size in bytes.
    pub size: usize,
    /// The services whose spec (or rollback spec) refers to it.
    pub services: Vec<String>,
    /// The value, base64 (inspect only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
}

/// Body of [`LOCAL_AUTOLOCK`].
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AutolockRequest {
    /// On or off.
    pub enabled: bool,
}

/// Answer of [`LOCAL_AUTOLOCK`] and of [`LOCAL_UNLOCK_KEY`]. `Debug` never shows the key.
#[derive(Clone, Serialize, Deserialize, ToSchema)]
pub struct UnlockKeyResponse {
    /// Whether autolock is on.
    pub autolock: bool,
    /// The unlock key (`SHOALKEY-1-...`) while autolock is on: shown when it is made, and to
    /// a manager's owner who asks for it.
    pub unlock_key: Option<String>,
    /// The unlock key's fingerprint (safe to show).
    pub unlock_key_id: Option<String>,
    /// The fingerprint of the unlock key the last rotation replaced.
    pub previous_unlock_key_id: Option<String>,
}

impl std::fmt::Debug for UnlockKeyResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UnlockKeyResponse")
            .field("autolock", &self.autolock)
            .field("unlock_key_id", &self.unlock_key_id)
            .field("previous_unlock_key_id", &self.previous_unlock_key_id)
            .finish_non_exhaustive()
    }
}

/// Body of [`LOCAL_UNLOCK`]. `Debug` never shows the key.
#[derive(Clone, Serialize, Deserialize, ToSchema)]
pub struct UnlockRequest {
    /// The unlock key, `SHOALKEY-1-...`.
    pub unlock_key: String,
}

impl std::fmt::Debug for UnlockRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("UnlockRequest(<redacted>)")
    }
}

/// Answer of [`LOCAL_UNLOCK`].
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct UnlockResponse {
    /// The fingerprint of the data key this manager now holds.
    pub data_key_id: String,
    /// Whether this manager rewrapped its key file with the cluster's current unlock key (the
    /// key was rotated while it was locked).
    pub rewrapped: bool,
}

/// How an agent holds the cluster's data key (in [`InfoResponse`] and `shoal cluster info`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DataKeyState {
    /// It holds no key (a worker, or a cluster without secrets yet).
    #[default]
    None,
    /// It holds the key, in plain on its disk (autolock off).
    Plain,
    /// It holds the key, wrapped with the unlock key on its disk (autolock on).
    Wrapped,
    /// It is locked: it holds no key until `shoal cluster unlock` is given the unlock key.
    Locked,
}

impl DataKeyState {
    /// The state of `status`.
    pub fn of(status: &shoal_consensus::sealed::KeyStatus) -> DataKeyState {
        use shoal_consensus::sealed::KeyStatus;
        match status {
            KeyStatus::None => DataKeyState::None,
            KeyStatus::Plain { .. } => DataKeyState::Plain,
            KeyStatus::Wrapped { .. } => DataKeyState::Wrapped,
            KeyStatus::Locked { .. } => DataKeyState::Locked,
        }
    }

    /// Its name, as the JSON says it.
    pub fn as_str(self) -> &'static str {
        match self {
            DataKeyState::None => "none",
            DataKeyState::Plain => "plain",
            DataKeyState::Wrapped => "wrapped",
            DataKeyState::Locked => "locked",
        }
    }
}

/// Answer of [`LOCAL_DATA_KEY`]. `Debug` never shows the key.
#[derive(Clone, Serialize, Deserialize, ToSchema)]
pub struct DataKeyResponse {
    /// The key's fingerprint.
    pub key_id: String,
    /// The key, 64 hex digits.
    pub key: String,
}

impl std::fmt::Debug for DataKeyResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DataKeyResponse({} <redacted>)", self.key_id)
    }
}
