//! Keeps this agent's node record in the cluster state current: written once the agent belongs
//! to a cluster, and again whenever what it reports about itself (addresses, resources, runtime,
//! version) differs from what is recorded. A manager compares with its replica of the state; a
//! worker, which holds none, with what it last wrote (and writes once after every start).

use std::collections::BTreeMap;
use std::time::Duration;

use shoal_consensus::Quorum;
use shoal_discovery::Mesh;
use shoal_scheduler::{
    Availability, Command, Credential, Node, NodeId, NodeRole, NodeState, Platform, Resources,
};

use super::host;
use crate::executor::RuntimeInfo;

/// How long to wait before retrying a failed registration.
const RETRY: Duration = Duration::from_millis(500);
/// How often the record is checked even without a state change.
const RECHECK: Duration = Duration::from_secs(10);

/// What this agent is as a node: its id, runtime, labels and credential.
#[derive(Debug, Clone)]
pub struct SelfDescription {
    /// The node id.
    pub node: NodeId,
    /// Its runtime.
    pub runtime: RuntimeInfo,
    /// Its labels as given on the command line.
    pub labels: BTreeMap<String, String>,
    /// What its token allows.
    pub credential: Credential,
}

/// Runs until the quorum's state watch closes.
pub async fn keep_registered(quorum: Quorum, mesh: Mesh, me: SelfDescription) {
    let mut applied = quorum.watch();
    let mut written: Option<Node> = None;
    loop {
        let wanted = record(&mesh, &me).await;
        let joined = quorum.cluster_id().is_some();
        let stale = if quorum.is_member() {
            let state = quorum.state();
            joined
                && state
                    .nodes
                    .get(&me.node)
                    .is_none_or(|n| differs(n, &wanted))
        } else {
            joined && written.as_ref().is_none_or(|w| differs(w, &wanted))
        };
        if stale {
            match quorum
                .write(Command::UpsertNode {
                    node: wanted.clone(),
                })
                .await
            {
                Ok(Ok(_)) => {
                    tracing::info!(node = %me.node, "node registered in the cluster");
                    written = Some(wanted);
                }
                Ok(Err(error)) => {
                    tracing::warn!(node = %me.node, %error, "node registration refused");
                    written = Some(wanted);
                }
                Err(error) => {
                    tracing::debug!(node = %me.node, %error, "cannot register the node yet; retrying");
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
        || recorded.credential != wanted.credential
}

async fn record(mesh: &Mesh, me: &SelfDescription) -> Node {
    let (node, runtime, labels) = (&me.node, &me.runtime, &me.labels);
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
        credential: me.credential,
    }
}
