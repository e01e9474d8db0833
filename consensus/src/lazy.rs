//! [`LazyRaft`]: this agent's openraft instance, started only when the agent takes part in raft.
//!
//! A plain worker (no vote, no log on disk) is no raft member and may never become one, yet a
//! started `openraft::Raft` keeps its core task, its engine's command queue and its timers (about
//! 2 MB, and a wakeup on every tick). So an agent with no raft state keeps the parts (storage,
//! network, config) and starts raft on the first thing that needs it: forming a cluster, or the
//! first raft request a leader sends it (a vote, an append stream, a snapshot: it is being made a
//! learner). Until then its metrics are those of an uninitialised node, which is exactly what a
//! started raft with no state would show.

use std::sync::{Arc, Mutex};

use openraft::RaftMetrics;
use openraft::async_runtime::watch::{Watch, WatchSender};
use openraft::type_config::alias::{WatchOf, WatchReceiverOf, WatchSenderOf};

use crate::error::ConsensusError;
use crate::network::client::NetworkFactory;
use crate::storage::{LogStore, StateMachine};
use crate::types::{Raft, RaftId, TypeConfig};

/// What `Raft::new` takes, kept until raft starts.
pub(crate) struct RaftParts {
    pub(crate) config: Arc<openraft::Config>,
    pub(crate) network: NetworkFactory,
    pub(crate) log: LogStore,
    pub(crate) sm: StateMachine,
}

/// openraft's watch of its metrics.
pub(crate) type MetricsWatch = WatchReceiverOf<TypeConfig, RaftMetrics<TypeConfig>>;

/// This agent's raft: started at once, or on first need (see the module's documentation).
pub(crate) struct LazyRaft {
    id: RaftId,
    raft: tokio::sync::OnceCell<Raft>,
    parts: Mutex<Option<RaftParts>>,
    /// The metrics of a raft that has not started; touched once when it starts, so that a
    /// watcher of these wakes and takes [`LazyRaft::metrics`] again.
    idle: WatchSenderOf<TypeConfig, RaftMetrics<TypeConfig>>,
    idle_rx: MetricsWatch,
}

impl LazyRaft {
    /// A raft to start on first need.
    pub(crate) fn new(id: RaftId, parts: RaftParts) -> LazyRaft {
        let (idle, idle_rx) = WatchOf::<TypeConfig>::channel(RaftMetrics::new_initial(id));
        LazyRaft {
            id,
            raft: tokio::sync::OnceCell::new(),
            parts: Mutex::new(Some(parts)),
            idle,
            idle_rx,
        }
    }

    /// The raft, if it started.
    pub(crate) fn get(&self) -> Option<&Raft> {
        self.raft.get()
    }

    /// Whether raft started.
    pub(crate) fn started(&self) -> bool {
        self.raft.initialized()
    }

    /// The raft, started now if it was not.
    pub(crate) async fn start(&self) -> Result<&Raft, ConsensusError> {
        self.raft
            .get_or_try_init(|| async {
                let parts = self
                    .parts
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .take()
                    .ok_or_else(|| ConsensusError::Raft("raft failed to start before".into()))?;
                tracing::debug!("starting raft");
                Raft::new(self.id, parts.config, parts.network, parts.log, parts.sm)
                    .await
                    .map_err(|e| ConsensusError::Raft(e.to_string()))
            })
            .await
            .inspect(|_| {
                self.idle.send_if_modified(|_| true);
            })
    }

    /// The watch of raft's metrics; those of an uninitialised node until raft starts (then a
    /// watcher of that sees one change, and should take this again).
    pub(crate) fn metrics(&self) -> MetricsWatch {
        match self.raft.get() {
            Some(raft) => raft.metrics(),
            None => self.idle_rx.clone(),
        }
    }

    /// Stops raft if it started; otherwise lets its storage go (raft can no longer start).
    pub(crate) async fn shutdown(&self) {
        drop(self.parts.lock().unwrap_or_else(|p| p.into_inner()).take());
        if let Some(raft) = self.raft.get()
            && let Err(e) = raft.shutdown().await
        {
            tracing::warn!(error = %e, "raft shutdown");
        }
    }

    /// Whether raft holds an initialised state (false while it has not started).
    pub(crate) async fn is_initialized(&self) -> Result<bool, ConsensusError> {
        match self.raft.get() {
            Some(raft) => raft
                .is_initialized()
                .await
                .map_err(|e| ConsensusError::Raft(e.to_string())),
            None => Ok(false),
        }
    }
}
