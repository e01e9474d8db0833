//! Keeps this agent's node record in the cluster state current: written once the agent belongs
//! to a cluster, and again whenever what it reports about itself (addresses, resources, runtime,
//! version) differs from what is recorded.

use std::collections::BTreeMap;
use std::time::Duration;

use shoal_consensus::Quorum;
use shoal_discovery::Mesh;
use shoal_scheduler::{
    Availability, Command, Node, NodeId, NodeRole, NodeState, Platform, Resources,
};

use super::host;
use crate::executor::RuntimeInfo;

/// How long to wait before retrying a failed registration.
const RETRY: Duration = Duration::from_millis(500);
/// How often the record is checked even without a state change.
const RECHECK: Duration = Duration::from_secs(10);

/// Runs until the quorum's state watch closes.
pub async fn keep_registered(
    quorum: Quorum,
    mesh: Mesh,
    node: NodeId,
    runtime: RuntimeInfo,
    labels: BTreeMap<String, String>,
) {
    let mut applied = quorum.watch();
    loop {
        let wanted = record(&mesh, &node, &runtime, &labels).await;
        let state = quorum.state();
        let stale = state.cluster_id.is_some()
            && state.nodes.get(&node).is_none_or(|n| differs(n, &wanted));
        drop(state);
        if stale {
            match quorum.write(Command::UpsertNode { node: wanted }).await {
                Ok(Ok(_)) => tracing::info!(%node, "node registered in the cluster"),
                Ok(Err(error)) => tracing::warn!(%node, %error, "node registration refused"),
                Err(error) => {
                    tracing::debug!(%node, %error, "cannot register the node yet; retrying");
                    tokio::time::sleep(RETRY).await;
                    continue;
                }
            }
        }
        tokio::select! {
            changed = applied.changed() => if changed.is_err() { return },
            _ = tokio::time::sleep(RECHECK) => {}
        }
    }
}

/// Whether the recorded node differs in what the agent itself reports.
fn differs(recorded: &Node, wanted: &Node) -> bool {
    recorded.hostname != wanted.hostname
        || recorded.addresses != wanted.addresses
        || recorded.total != wanted.total
        || recorded.runtime != wanted.runtime
        || recorded.platform != wanted.platform
        || recorded.version != wanted.version
}

async fn record(
    mesh: &Mesh,
    node: &NodeId,
    runtime: &RuntimeInfo,
    labels: &BTreeMap<String, String>,
) -> Node {
    let addresses = mesh
        .listen_addrs()
        .await
        .unwrap_or_default()
        .iter()
        .map(|a| a.to_string())
        .collect();
    Node {
        id: node.clone(),
        hostname: host::hostname(),
        addresses,
        role: NodeRole::Worker,
        availability: Availability::Active,
        state: NodeState::Ready,
        labels: labels.clone(),
        platform: Platform {
            os: runtime.os.clone(),
            arch: runtime.arch.clone(),
        },
        total: runtime.total(),
        reserved: Resources::default(),
        runtime: runtime.runtime,
        version: env!("CARGO_PKG_VERSION").into(),
    }
}
