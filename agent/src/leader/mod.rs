//! Leader duties: what runs only while this agent is the raft leader — the orchestration loop,
//! the dispatcher and the report batcher. [`supervise`] starts them when leadership is gained
//! and stops them when it is lost.

pub mod gauges;
pub mod orchestrator;

use std::time::Duration;

use shoal_consensus::Quorum;
use shoal_discovery::{Mesh, PeerId};
use shoal_scheduler::NodeId;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::dispatch::dispatcher::{self, DispatcherContext};
use crate::dispatch::leader_link::LocalLeader;
use crate::dispatch::reports;
use crate::worker::WorkerHandle;

/// What the leader duties need.
#[derive(Clone)]
pub struct LeaderContext {
    /// This agent's node id.
    pub local: NodeId,
    /// The raft handle.
    pub quorum: Quorum,
    /// The mesh.
    pub mesh: Mesh,
    /// This agent's worker, if it runs tasks.
    pub local_worker: Option<WorkerHandle>,
    /// Heartbeat silence after which a node may be marked down.
    pub down_grace: Duration,
    /// The agent's metric families.
    pub metrics: shoal_metrics::AgentMetrics,
}

/// Follows leadership: while this agent leads, runs the duties and publishes their intake on
/// `local` (so this agent's own worker reports without the network). Returns when the leader
/// watch closes.
pub async fn supervise(
    context: LeaderContext,
    mut leader: watch::Receiver<Option<PeerId>>,
    local: watch::Sender<Option<LocalLeader>>,
) {
    let me = context.mesh.local_peer_id();
    let mut duties: Option<JoinSet<()>> = None;
    loop {
        let leading = *leader.borrow_and_update() == Some(me);
        match (leading, duties.is_some()) {
            (true, false) => {
                tracing::info!("this agent is now the leader: starting orchestration and dispatch");
                duties = Some(start_duties(&context, &local));
            }
            (false, true) => {
                tracing::info!("this agent is no longer the leader: stopping its leader duties");
                local.send_replace(None);
                duties = None;
            }
            _ => {}
        }
        if leader.changed().await.is_err() {
            break;
        }
    }
    local.send_replace(None);
}

/// Starts the orchestrator, dispatcher and batcher; dropping the set stops them.
fn start_duties(
    context: &LeaderContext,
    local: &watch::Sender<Option<LocalLeader>>,
) -> JoinSet<()> {
    let mut duties = JoinSet::new();
    let (report_queue, report_intake) = reports::channel();
    let (heartbeat_queue, heartbeat_intake) = dispatcher::heartbeat_channel();
    duties.spawn(reports::run(
        context.quorum.clone(),
        report_intake,
        context.metrics.clone(),
    ));
    duties.spawn(dispatcher::run(
        DispatcherContext {
            local: context.local.clone(),
            quorum: context.quorum.clone(),
            mesh: context.mesh.clone(),
            local_worker: context.local_worker.clone(),
            down_grace: context.down_grace,
            metrics: context.metrics.clone(),
        },
        heartbeat_intake,
    ));
    duties.spawn(orchestrator::run(
        context.quorum.clone(),
        context.metrics.clone(),
    ));
    local.send_replace(Some(LocalLeader {
        reports: report_queue,
        heartbeats: heartbeat_queue,
    }));
    duties
}
