//! The `shoal_raft_*` metric families, updated from openraft's metrics watch.

use shoal_metrics::prometheus_client::encoding::EncodeLabelSet;
use shoal_metrics::prometheus_client::metrics::counter::Counter;
use shoal_metrics::prometheus_client::metrics::family::Family;
use shoal_metrics::prometheus_client::metrics::gauge::Gauge;
use shoal_metrics::prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use shoal_metrics::prometheus_client::registry::Registry;

use crate::types::{RaftId, TypeConfig};

/// Snapshot figures, shared between the state machine (which builds snapshots) and the registry.
#[derive(Clone, Debug)]
pub(crate) struct SnapshotMetrics {
    /// Time to encode and durably store one snapshot.
    pub(crate) duration: Histogram,
    /// Size of the last snapshot built, in bytes.
    pub(crate) size: Gauge,
}

impl Default for SnapshotMetrics {
    fn default() -> Self {
        SnapshotMetrics {
            duration: Histogram::new(exponential_buckets(0.001, 2.0, 16)),
            size: Gauge::default(),
        }
    }
}

/// Latency of committed writes as this agent's callers see them (forwarding included).
pub(crate) fn commit_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.000_25, 2.0, 16))
}

/// Log store figures, shared between the writer thread (which records them) and the registry.
#[derive(Clone, Debug)]
pub(crate) struct LogMetrics {
    /// From handing entries to the log store until they are durable (the fsync'd commit of the
    /// round that carried them, which also covers the wait for that round).
    pub(crate) appends: Histogram,
    /// One durable round of the writer: the redb transaction and its fsync.
    pub(crate) syncs: Histogram,
}

impl Default for LogMetrics {
    fn default() -> Self {
        LogMetrics {
            appends: Histogram::new(exponential_buckets(0.000_05, 2.0, 16)),
            syncs: Histogram::new(exponential_buckets(0.000_05, 2.0, 16)),
        }
    }
}

/// Labels of a refused request.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RefusalLabels {
    /// What was asked: `append`, `vote`, `snapshot`, `write`, `read_index`, `join`, ...
    pub(crate) request: &'static str,
    /// Why it was refused: `not_member`, `other_cluster`, `no_proof`, `unauthorized`, ...
    pub(crate) reason: &'static str,
}

/// Requests this agent refused to another agent (`shoal_raft_refused_total`).
#[derive(Clone, Debug, Default)]
pub(crate) struct Refusals(Family<RefusalLabels, Counter>);

impl Refusals {
    /// Counts one refusal.
    pub(crate) fn count(&self, request: &'static str, reason: &'static str) {
        self.0
            .get_or_create(&RefusalLabels { request, reason })
            .inc();
    }

    /// The family, for the registry.
    pub(crate) fn family(&self) -> Family<RefusalLabels, Counter> {
        self.0.clone()
    }
}

/// The raft families of one agent.
#[derive(Clone, Default)]
pub(crate) struct RaftMetricsFamilies {
    term: Gauge,
    is_leader: Gauge,
    last_log_index: Gauge,
    applied_index: Gauge,
    voters: Gauge,
    leader_changes: Counter,
    last_leader: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl RaftMetricsFamilies {
    /// Registers the families in `registry`.
    pub(crate) fn register(
        registry: &mut Registry,
        snapshots: &SnapshotMetrics,
        commits: &Histogram,
        log: &LogMetrics,
        refusals: &Refusals,
    ) -> RaftMetricsFamilies {
        let m = RaftMetricsFamilies::default();
        registry.register(
            "shoal_raft_refused",
            "Raft, join and forwarded requests refused to another agent, by request and reason",
            shoal_metrics::Declared(refusals.family()),
        );
        registry.register(
            "shoal_raft_commit_seconds",
            "Time from proposing a write on this agent to its applied outcome",
            commits.clone(),
        );
        registry.register(
            "shoal_raft_log_append_seconds",
            "Time from submitting entries to the raft log store until they are flushed to disk",
            log.appends.clone(),
        );
        registry.register(
            "shoal_raft_log_sync_seconds",
            "Time of one durable write round of the raft log (write and fsync)",
            log.syncs.clone(),
        );
        registry.register(
            "shoal_raft_snapshot_seconds",
            "Time to build and durably store a snapshot",
            snapshots.duration.clone(),
        );
        registry.register(
            "shoal_raft_snapshot_bytes",
            "Size of the last snapshot built",
            snapshots.size.clone(),
        );
        registry.register("shoal_raft_term", "Current raft term", m.term.clone());
        registry.register(
            "shoal_raft_is_leader",
            "1 if this agent is the raft leader",
            m.is_leader.clone(),
        );
        registry.register(
            "shoal_raft_last_log_index",
            "Index of the last raft log entry",
            m.last_log_index.clone(),
        );
        registry.register(
            "shoal_raft_applied_index",
            "Index of the last applied entry",
            m.applied_index.clone(),
        );
        registry.register(
            "shoal_raft_voters",
            "Number of raft voters (managers)",
            m.voters.clone(),
        );
        registry.register(
            "shoal_raft_leader_changes",
            "Leader changes seen by this agent",
            m.leader_changes.clone(),
        );
        m
    }

    /// Updates the families from one metrics snapshot.
    pub(crate) fn observe(&self, m: &openraft::RaftMetrics<TypeConfig>, me: RaftId) {
        let clamp = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        self.term.set(clamp(m.current_term));
        self.is_leader.set(i64::from(m.current_leader == Some(me)));
        self.last_log_index
            .set(clamp(m.last_log_index.unwrap_or(0)));
        self.applied_index
            .set(clamp(m.last_applied.as_ref().map(|l| l.index).unwrap_or(0)));
        self.voters.set(clamp(
            m.membership_config.membership().voter_ids().count() as u64
        ));
        let leader = m.current_leader.unwrap_or(0);
        let previous = self
            .last_leader
            .swap(leader, std::sync::atomic::Ordering::Relaxed);
        if previous != leader && leader != 0 {
            self.leader_changes.inc();
        }
    }
}
