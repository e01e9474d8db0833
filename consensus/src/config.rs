//! [`QuorumConfig`]: data dir, timing, bootstrap, autopilot and token settings, with LAN and test
//! defaults, and its translation into openraft's `Config`.

use std::path::PathBuf;
use std::time::Duration;

use openraft::SnapshotPolicy;
use shoal_discovery::NodeInfo;

use crate::error::ConsensusError;
use crate::limits::MAX_PAYLOAD_ENTRIES;

/// Raft timing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RaftTiming {
    /// Leader heartbeat interval.
    pub heartbeat: Duration,
    /// Lower bound of the randomised election timeout.
    pub election_min: Duration,
    /// Upper bound of the randomised election timeout (also the leader lease).
    pub election_max: Duration,
}

impl RaftTiming {
    /// LAN defaults: heartbeat 50 ms, election 150–250 ms.
    ///
    /// A follower that stops hearing the leader starts a pre-vote after the leader lease
    /// (`election_max`) plus its random election timeout, and the others grant it only once their
    /// own lease ran out: failover takes about `election_max` + `election_min`..`election_max` +
    /// a few round trips (`shoal bench failover`: median about 0.5 s; 0.54–0.6 s with 300 ms).
    /// A spurious election needs a follower to miss 8 heartbeats in a row and another to miss 5;
    /// with every core busy none was seen (`shoal bench raft --busy-threads N` counts them, and
    /// a test holds the term steady under load).
    pub const LAN: RaftTiming = RaftTiming {
        heartbeat: Duration::from_millis(50),
        election_min: Duration::from_millis(150),
        election_max: Duration::from_millis(250),
    };
}

/// Configuration of one agent's part of the quorum.
#[derive(Debug, Clone)]
pub struct QuorumConfig {
    /// Directory of the raft database (`raft.redb`); created if missing.
    pub data_dir: PathBuf,
    /// What this agent announces in the mesh; the quorum fills in `cluster_id` and `raft`.
    pub node_info: NodeInfo,
    /// The multiaddrs this agent can be reached at (recorded in the raft membership and the node).
    pub advertise_addrs: Vec<String>,
    /// Raft timing.
    pub timing: RaftTiming,
    /// Compact the log into a snapshot after this many entries.
    pub snapshot_after_entries: u64,
    /// Entries already in a snapshot that are kept in the log (to catch up followers without one).
    pub keep_after_snapshot: u64,
    /// Zero-config bootstrap: listen this long for other agents before deciding.
    pub bootstrap_window: Duration,
    /// Whether the agent was given peers to join (`--join`). It then never forms a cluster
    /// alone: it keeps listening, up to `join_timeout`, for a cluster or for agents to form one
    /// with.
    pub join_given: bool,
    /// Wait for this many agents (including this one) and initialise with all as voters.
    pub bootstrap_expect: Option<usize>,
    /// Give up waiting for `bootstrap_expect` agents after this long.
    pub bootstrap_expect_timeout: Duration,
    /// Target number of managers (1, 3, 5 or 7; never even).
    pub target_managers: usize,
    /// The cluster token (a manager or worker token); None is open mode.
    pub token: Option<String>,
    /// How long a write waits for a leader and for its commit.
    pub write_timeout: Duration,
    /// How long a joiner keeps asking the cluster it heard to let it in.
    pub join_timeout: Duration,
    /// Autopilot: how often it runs on the leader.
    pub autopilot_interval: Duration,
    /// Autopilot: how long a manager must be dead before it is removed.
    pub dead_manager_grace: Duration,
    /// Whether the autopilot runs at all.
    pub autopilot: bool,
}

impl QuorumConfig {
    /// Production defaults.
    pub fn new(data_dir: impl Into<PathBuf>, node_info: NodeInfo) -> QuorumConfig {
        QuorumConfig {
            data_dir: data_dir.into(),
            node_info,
            advertise_addrs: Vec::new(),
            timing: RaftTiming::LAN,
            snapshot_after_entries: 10_000,
            keep_after_snapshot: 1_000,
            bootstrap_window: Duration::from_millis(1500),
            join_given: false,
            bootstrap_expect: None,
            bootstrap_expect_timeout: Duration::from_secs(300),
            target_managers: 3,
            token: None,
            write_timeout: Duration::from_secs(5),
            join_timeout: Duration::from_secs(60),
            autopilot_interval: Duration::from_millis(500),
            dead_manager_grace: Duration::from_secs(5),
            autopilot: true,
        }
    }

    /// Test defaults: a short bootstrap window and grace, and timing relaxed for unoptimised
    /// builds running several agents on a small machine.
    pub fn for_tests(data_dir: impl Into<PathBuf>, node_info: NodeInfo) -> QuorumConfig {
        QuorumConfig {
            timing: RaftTiming {
                heartbeat: Duration::from_millis(100),
                election_min: Duration::from_millis(400),
                election_max: Duration::from_millis(800),
            },
            bootstrap_window: Duration::from_millis(400),
            dead_manager_grace: Duration::from_millis(1500),
            autopilot_interval: Duration::from_millis(200),
            ..QuorumConfig::new(data_dir, node_info)
        }
    }

    /// Checks the configuration.
    pub fn validate(&self) -> Result<(), ConsensusError> {
        let bad = |m: &str| Err(ConsensusError::Config(m.to_owned()));
        if self.target_managers == 0
            || self.target_managers.is_multiple_of(2)
            || self.target_managers > 7
        {
            return bad("target managers must be 1, 3, 5 or 7");
        }
        if self.bootstrap_expect == Some(0) {
            return bad("bootstrap_expect must be at least 1");
        }
        let t = self.timing;
        if t.heartbeat.is_zero()
            || t.election_min <= t.heartbeat * 2
            || t.election_max <= t.election_min
        {
            return bad("need 0 < 2 x heartbeat < election_min < election_max");
        }
        if self.snapshot_after_entries == 0 {
            return bad("snapshot_after_entries must be positive");
        }
        Ok(())
    }

    /// openraft's configuration for these settings.
    pub(crate) fn raft_config(&self) -> Result<openraft::Config, ConsensusError> {
        let ms = |d: Duration| d.as_millis().min(u128::from(u64::MAX)) as u64;
        let config = openraft::Config {
            cluster_name: "shoal".to_owned(),
            heartbeat_interval: ms(self.timing.heartbeat),
            election_timeout_min: ms(self.timing.election_min),
            election_timeout_max: ms(self.timing.election_max),
            install_snapshot_timeout: 30_000,
            max_payload_entries: MAX_PAYLOAD_ENTRIES,
            replication_lag_threshold: self.snapshot_after_entries.saturating_mul(2),
            snapshot_policy: SnapshotPolicy::LogsSinceLast(self.snapshot_after_entries),
            max_in_snapshot_log_to_keep: self.keep_after_snapshot,
            purge_batch_size: 64,
            backoff: "50ms 100ms ...500ms".to_owned(),
            enable_pre_vote: Some(true),
            ..Default::default()
        };
        config
            .validate()
            .map_err(|e| ConsensusError::Config(e.to_string()))
    }
}
