//! Bodies of the control API. Paths are constants so that the server and the client agree.

use serde::{Deserialize, Serialize};
use shoal_scheduler::{ServiceId, ServiceSpec};

/// `GET` cluster and agent facts.
pub const INFO: &str = "/v1/info";
/// `GET` list, `POST` create.
pub const SERVICES: &str = "/v1/services";
/// `GET` list of nodes.
pub const NODES: &str = "/v1/nodes";

/// The path of one service (`GET` inspect, `DELETE` remove).
pub fn service(name: &str) -> String {
    format!("{SERVICES}/{name}")
}

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
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CreateServiceRequest {
    /// The desired state.
    pub spec: ServiceSpec,
}

/// Answer to a created service.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CreateServiceResponse {
    /// The new service's id.
    pub id: ServiceId,
}

/// Body of a scale request.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ScaleRequest {
    /// The new number of replicas.
    pub replicas: u64,
}

/// Body of an update request.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UpdateServiceRequest {
    /// The new spec.
    pub spec: ServiceSpec,
    /// The version the client based it on (from inspect).
    pub expected_version: u64,
}

/// An error answer: what went wrong and, where it helps, what to do next.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorBody {
    /// The message for the user.
    pub error: String,
}

/// Facts about the cluster as this agent sees them.
#[derive(Debug, Clone, Serialize, Deserialize)]
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
}
