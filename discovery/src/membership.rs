//! The membership view: what each agent announces ([`NodeInfo`]), the members as seen from here
//! ([`Member`]), the typed changes ([`MembershipChange`]) and the pure fold of heartbeats, leaves
//! and liveness evidence into those changes. Time is an argument; nothing here does I/O.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use libp2p::{Multiaddr, PeerId};
use serde::{Deserialize, Serialize};

/// Most addresses carried in one heartbeat.
pub(crate) const MAX_HEARTBEAT_ADDRS: usize = 16;

/// The role an agent plays in the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum NodeRole {
    /// Runs tasks only.
    #[default]
    Worker,
    /// A raft voter (and a worker unless drained).
    Manager,
}

/// This agent's place in raft, as it announces it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum RaftMembership {
    /// Not part of the raft group.
    #[default]
    None,
    /// A non-voting learner.
    Learner,
    /// A voter.
    Voter,
}

/// What an agent announces about its raft state in every heartbeat.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct RaftAnnouncement {
    /// Whether it is a voter, a learner or neither.
    pub membership: RaftMembership,
    /// The leader it knows of, if any (a PeerId in text form).
    pub leader: Option<String>,
    /// The term it knows of.
    pub term: u64,
    /// Whether it holds any cluster state (used by zero-config bootstrap).
    pub initialized: bool,
    /// Whether it holds a worker token: it never forms a cluster nor becomes a manager, so
    /// zero-config bootstrap does not count it among the agents that may initialise one.
    #[serde(default)]
    pub worker_only: bool,
}

/// What an agent announces about itself in every heartbeat.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct NodeInfo {
    /// Host name.
    pub hostname: String,
    /// Worker or manager.
    pub role: NodeRole,
    /// Operator labels (`node.labels.X`).
    pub labels: BTreeMap<String, String>,
    /// Operating system (`linux`).
    pub os: String,
    /// CPU architecture (`x86_64`).
    pub arch: String,
    /// CPU capacity in billionths of a CPU.
    pub nano_cpus: u64,
    /// Memory capacity in bytes.
    pub memory_bytes: u64,
    /// Container runtime (`docker`, `sim`).
    pub runtime: String,
    /// shoal version.
    pub version: String,
    /// The cluster this agent belongs to, once it has one.
    pub cluster_id: Option<String>,
    /// Raft state.
    pub raft: RaftAnnouncement,
}

/// Liveness of a member as seen from here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MemberState {
    /// Heard within the suspect threshold (or vouched for by a probe).
    Alive,
    /// Silent for longer than the suspect threshold; being probed.
    Suspect,
    /// Silent for longer than the dead threshold and no probe vouched for it.
    Dead,
    /// Announced a graceful departure.
    Left,
}

impl MemberState {
    /// Every state, in a fixed order.
    pub const ALL: [MemberState; 4] = [Self::Alive, Self::Suspect, Self::Dead, Self::Left];

    /// A lower-case label for metrics and logs.
    pub fn label(self) -> &'static str {
        match self {
            Self::Alive => "alive",
            Self::Suspect => "suspect",
            Self::Dead => "dead",
            Self::Left => "left",
        }
    }
}

/// One member of the mesh as seen from here.
#[derive(Debug, Clone, PartialEq)]
pub struct Member {
    /// Its node id.
    pub peer_id: PeerId,
    /// Its liveness.
    pub state: MemberState,
    /// What it last announced.
    pub info: NodeInfo,
    /// The addresses it last announced.
    pub addrs: Vec<Multiaddr>,
    /// Sequence number of its last heartbeat.
    pub seq: u64,
    /// When it was last heard from (heartbeat, ping or probe).
    pub last_heard: Instant,
}

/// A change of the membership view.
///
/// Members are boxed: the broadcast of changes allocates all of its slots up front, each the size
/// of this enum, and a member inline (about 370 bytes, twice in `Updated`) made that 0.8 MB of
/// every agent; boxed, a slot is the size of a peer id.
#[derive(Debug, Clone, PartialEq)]
pub enum MembershipChange {
    /// A new member, or one that came back after being dead or gone.
    Joined(Box<Member>),
    /// A member announced different info or addresses.
    Updated {
        /// Before.
        previous: Box<Member>,
        /// After.
        current: Box<Member>,
    },
    /// A member went silent; it is being probed.
    Suspect(PeerId),
    /// A suspect was heard from again.
    Alive(PeerId),
    /// A member is considered crashed or cut off.
    Dead(PeerId),
    /// A member left gracefully.
    Left(PeerId),
}

/// The gossip payload on the heartbeat topic (short-lived: encoded or decoded, then dropped).
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) enum GossipMessage {
    /// "I am alive, this is me": the full announcement, sent at start, whenever what the agent
    /// announces changes, and at a low rate.
    Heartbeat(Heartbeat),
    /// "I am alive, and what I announce has this version": the small periodic heartbeat. A
    /// receiver that does not hold that version asks for it on the probe protocol.
    Beat {
        /// Sequence number (shared with full heartbeats).
        seq: u64,
        /// [`Heartbeat::version`] of what the sender announces.
        version: u64,
    },
    /// "I am leaving", with a sequence number above every heartbeat sent before.
    Leave {
        /// Sequence number.
        seq: u64,
    },
    /// A watcher's rumor: `target` (PeerId bytes) went silent after its heartbeat `seq`. The
    /// target refutes it with any newer heartbeat.
    Rumor {
        /// Suspect or dead.
        rumor: Rumor,
        /// The member it is about (PeerId bytes).
        target: Vec<u8>,
        /// The newest heartbeat sequence number of the target that the watcher held.
        seq: u64,
    },
}

/// What a watcher says about a member it no longer hears. Suspicion is never spread: it stays
/// with the watcher while its probes run, so that one slow link does not alarm everyone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Rumor {
    /// Silent past the dead threshold, and no probe vouched for it.
    Dead,
}

/// One heartbeat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Heartbeat {
    /// Strictly increasing per sender (starts at its start time, so restarts go forward).
    pub seq: u64,
    /// Its addresses as multiaddr bytes.
    pub addrs: Vec<Vec<u8>>,
    /// What it announces.
    pub info: NodeInfo,
}

impl Heartbeat {
    /// A hash of what is announced (addresses and info, not the sequence number): the version a
    /// small [`GossipMessage::Beat`] refers to. A full heartbeat fetched from a third party is
    /// only believed if its version is the one its author signed in a beat.
    pub(crate) fn version(&self) -> u64 {
        version_of(&self.addrs, &self.info)
    }

    pub(crate) fn decoded_addrs(&self) -> Vec<Multiaddr> {
        self.addrs
            .iter()
            .take(MAX_HEARTBEAT_ADDRS)
            .filter_map(|bytes| Multiaddr::try_from(bytes.clone()).ok())
            .collect()
    }
}

/// The version of announced `addrs` and `info` (see [`Heartbeat::version`]).
pub(crate) fn version_of(addrs: &[Vec<u8>], info: &NodeInfo) -> u64 {
    use sha2::{Digest, Sha256};
    // Encoding plain data into a Vec cannot fail; an empty encoding would only make every
    // version mismatch (more fetches), never a wrong match of different infos.
    let bytes = cbor4ii::serde::to_vec(Vec::new(), &(addrs, info)).unwrap_or_default();
    let hash = Sha256::digest(&bytes);
    let mut first = [0u8; 8];
    first.copy_from_slice(&hash[..8]);
    u64::from_be_bytes(first)
}

/// What folding a small beat in produced.
#[derive(Debug, Default)]
pub(crate) struct BeatOutcome {
    pub changes: Vec<MembershipChange>,
    /// The sender announces something we do not hold: fetch its full heartbeat.
    pub fetch: bool,
}

/// Liveness thresholds and bounds of the view.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Thresholds {
    pub suspect_after: Duration,
    pub dead_after: Duration,
    pub forget_after: Duration,
    pub max_members: usize,
}

/// The members as seen from one agent.
#[derive(Debug)]
pub(crate) struct View {
    local: PeerId,
    thresholds: Thresholds,
    members: HashMap<PeerId, Member>,
    /// Version of the announcement held for each member.
    versions: HashMap<PeerId, u64>,
}

/// What one tick of the view produced.
#[derive(Debug, Default)]
pub(crate) struct Tick {
    pub changes: Vec<MembershipChange>,
    /// Members that just became suspect: probe them.
    pub new_suspects: Vec<PeerId>,
    /// Members that this agent just declared dead on its own evidence.
    pub new_dead: Vec<PeerId>,
}

impl View {
    pub(crate) fn new(local: PeerId, thresholds: Thresholds) -> Self {
        Self {
            local,
            thresholds,
            members: HashMap::new(),
            versions: HashMap::new(),
        }
    }

    /// Every member, in PeerId order.
    pub(crate) fn members(&self) -> Vec<Member> {
        let mut all: Vec<Member> = self.members.values().cloned().collect();
        all.sort_by_key(|m| m.peer_id);
        all
    }

    pub(crate) fn get(&self, peer: &PeerId) -> Option<&Member> {
        self.members.get(peer)
    }

    /// Members in `state`, counted.
    pub(crate) fn count(&self, state: MemberState) -> usize {
        self.members.values().filter(|m| m.state == state).count()
    }

    /// Alive members other than `except`.
    pub(crate) fn alive_except(&self, except: &PeerId) -> Vec<PeerId> {
        let mut alive: Vec<PeerId> = self
            .members
            .values()
            .filter(|m| m.state == MemberState::Alive && m.peer_id != *except)
            .map(|m| m.peer_id)
            .collect();
        alive.sort();
        alive
    }

    /// The full heartbeat of a member as held here (to answer a fetch).
    pub(crate) fn heartbeat_of(&self, peer: &PeerId) -> Option<Heartbeat> {
        let m = self.members.get(peer)?;
        Some(Heartbeat {
            seq: m.seq,
            addrs: m.addrs.iter().map(|a| a.to_vec()).collect(),
            info: m.info.clone(),
        })
    }

    /// Folds one small beat in: liveness, and whether the announcement must be fetched.
    pub(crate) fn on_beat(
        &mut self,
        from: PeerId,
        seq: u64,
        version: u64,
        now: Instant,
    ) -> BeatOutcome {
        if from == self.local {
            return BeatOutcome::default();
        }
        let held = self.versions.get(&from) == Some(&version);
        let Some(existing) = self.members.get_mut(&from) else {
            return BeatOutcome {
                changes: Vec::new(),
                fetch: self.members.len() < self.thresholds.max_members,
            };
        };
        if seq <= existing.seq {
            return BeatOutcome::default();
        }
        let previous = existing.state;
        existing.seq = seq;
        existing.last_heard = now;
        existing.state = MemberState::Alive;
        let changes = match previous {
            MemberState::Dead | MemberState::Left => {
                vec![MembershipChange::Joined(Box::new(existing.clone()))]
            }
            MemberState::Suspect => vec![MembershipChange::Alive(from)],
            MemberState::Alive => Vec::new(),
        };
        BeatOutcome {
            changes,
            fetch: !held,
        }
    }

    /// Folds in a full heartbeat fetched (from its author or a third party) after a beat
    /// announced `wanted`. Refused unless its version is `wanted`; liveness is left to beats.
    pub(crate) fn on_fetched(
        &mut self,
        from: PeerId,
        hb: &Heartbeat,
        wanted: u64,
        now: Instant,
    ) -> Vec<MembershipChange> {
        if from == self.local || hb.version() != wanted {
            return Vec::new();
        }
        match self.members.get(&from) {
            Some(m) => {
                let mut hb = hb.clone();
                // Keep the newest sequence number: the fetched copy may be older than the beat.
                hb.seq = hb.seq.max(m.seq);
                let last_heard = m.last_heard;
                let state = m.state;
                let changes = self.apply_info(from, &hb);
                if let Some(m) = self.members.get_mut(&from) {
                    m.last_heard = last_heard;
                    m.state = state;
                }
                changes
            }
            None => self.on_heartbeat(from, hb, now),
        }
    }

    /// Replaces a known member's info and addresses; `Updated` if they changed.
    fn apply_info(&mut self, from: PeerId, hb: &Heartbeat) -> Vec<MembershipChange> {
        let version = hb.version();
        let addrs = hb.decoded_addrs();
        let Some(existing) = self.members.get_mut(&from) else {
            return Vec::new();
        };
        self.versions.insert(from, version);
        let previous = existing.clone();
        existing.seq = hb.seq;
        existing.info = hb.info.clone();
        existing.addrs = addrs;
        if previous.info != existing.info || previous.addrs != existing.addrs {
            vec![MembershipChange::Updated {
                previous: Box::new(previous),
                current: Box::new(existing.clone()),
            }]
        } else {
            Vec::new()
        }
    }

    /// Folds one full heartbeat in.
    pub(crate) fn on_heartbeat(
        &mut self,
        from: PeerId,
        hb: &Heartbeat,
        now: Instant,
    ) -> Vec<MembershipChange> {
        if from == self.local {
            return Vec::new();
        }
        let addrs = hb.decoded_addrs();
        let Some(existing) = self.members.get_mut(&from) else {
            if self.members.len() >= self.thresholds.max_members {
                tracing::warn!(peer = %from, "membership view full; ignoring a new member");
                return Vec::new();
            }
            let member = Member {
                peer_id: from,
                state: MemberState::Alive,
                info: hb.info.clone(),
                addrs,
                seq: hb.seq,
                last_heard: now,
            };
            self.members.insert(from, member.clone());
            self.versions.insert(from, hb.version());
            return vec![MembershipChange::Joined(Box::new(member))];
        };
        if hb.seq <= existing.seq {
            return Vec::new();
        }
        let previous = existing.clone();
        existing.seq = hb.seq;
        existing.last_heard = now;
        existing.state = MemberState::Alive;
        existing.info = hb.info.clone();
        existing.addrs = addrs;
        let current = existing.clone();
        self.versions.insert(from, hb.version());
        match previous.state {
            MemberState::Dead | MemberState::Left => {
                vec![MembershipChange::Joined(Box::new(current))]
            }
            MemberState::Suspect | MemberState::Alive => {
                let mut changes = Vec::new();
                if previous.state == MemberState::Suspect {
                    changes.push(MembershipChange::Alive(from));
                }
                if previous.info != current.info || previous.addrs != current.addrs {
                    changes.push(MembershipChange::Updated {
                        previous: Box::new(previous),
                        current: Box::new(current),
                    });
                }
                changes
            }
        }
    }

    /// Folds a graceful leave in.
    pub(crate) fn on_leave(
        &mut self,
        from: PeerId,
        seq: u64,
        now: Instant,
    ) -> Vec<MembershipChange> {
        match self.members.get_mut(&from) {
            Some(m) if seq > m.seq && m.state != MemberState::Left => {
                m.seq = seq;
                m.state = MemberState::Left;
                m.last_heard = now;
                vec![MembershipChange::Left(from)]
            }
            _ => Vec::new(),
        }
    }

    /// Evidence that `peer` is alive (a ping or a probe answered) without a heartbeat.
    pub(crate) fn on_evidence(&mut self, peer: &PeerId, now: Instant) -> Vec<MembershipChange> {
        match self.members.get_mut(peer) {
            Some(m) if m.state == MemberState::Alive => {
                m.last_heard = m.last_heard.max(now);
                Vec::new()
            }
            Some(m) if m.state == MemberState::Suspect => {
                m.last_heard = now;
                m.state = MemberState::Alive;
                vec![MembershipChange::Alive(*peer)]
            }
            _ => Vec::new(),
        }
    }

    /// A member declared dead here answered a direct question: it is alive (first-hand
    /// evidence; its newer heartbeat follows through gossip).
    pub(crate) fn on_answered(&mut self, peer: &PeerId, now: Instant) -> Vec<MembershipChange> {
        match self.members.get_mut(peer) {
            Some(m) if m.state == MemberState::Dead => {
                m.state = MemberState::Alive;
                m.last_heard = now;
                vec![MembershipChange::Joined(Box::new(m.clone()))]
            }
            _ => Vec::new(),
        }
    }

    /// Peers that are alive or suspect, in PeerId order (the ring's members).
    pub(crate) fn live_peers(&self) -> Vec<PeerId> {
        let mut live: Vec<PeerId> = self
            .members
            .values()
            .filter(|m| matches!(m.state, MemberState::Alive | MemberState::Suspect))
            .map(|m| m.peer_id)
            .collect();
        live.sort_unstable();
        live
    }

    /// Moves every silence clock forward by `pause`: time during which this agent itself could
    /// not listen (its event loop was starved) is no evidence that others went silent.
    pub(crate) fn forgive(&mut self, pause: Duration, now: Instant) {
        for m in self.members.values_mut() {
            if matches!(m.state, MemberState::Alive | MemberState::Suspect) {
                m.last_heard = (m.last_heard + pause).min(now);
            }
        }
    }

    /// Restarts the silence clock of a member this agent starts to watch: until now it was
    /// judged by the slower rules of unwatched members.
    pub(crate) fn start_watching(&mut self, peer: &PeerId, now: Instant) {
        if let Some(m) = self.members.get_mut(peer)
            && m.state == MemberState::Alive
        {
            m.last_heard = m.last_heard.max(now);
        }
    }

    /// Folds in a watcher's rumor that `target` is suspect or dead, as of its heartbeat `seq`.
    /// Ignored when this agent heard a newer heartbeat, or itself watches `target` and heard it
    /// within the suspect threshold (its own evidence is first-hand).
    pub(crate) fn on_rumor(
        &mut self,
        target: PeerId,
        rumor: Rumor,
        seq: u64,
        watched_here: bool,
        now: Instant,
    ) -> Vec<MembershipChange> {
        let suspect_after = self.thresholds.suspect_after;
        let Some(m) = self.members.get_mut(&target) else {
            return Vec::new();
        };
        let fresh = watched_here && now.saturating_duration_since(m.last_heard) < suspect_after;
        if target == self.local || m.seq > seq || fresh {
            return Vec::new();
        }
        match (rumor, m.state) {
            (Rumor::Dead, MemberState::Alive) => {
                m.state = MemberState::Dead;
                vec![
                    MembershipChange::Suspect(target),
                    MembershipChange::Dead(target),
                ]
            }
            (Rumor::Dead, MemberState::Suspect) => {
                m.state = MemberState::Dead;
                vec![MembershipChange::Dead(target)]
            }
            _ => Vec::new(),
        }
    }

    /// Applies the thresholds at `now`, each `stretch` times as long (see `local_health`):
    /// `watched` members (this agent's ring successors) by them, others `slack` later (their
    /// watchers normally speak first).
    pub(crate) fn tick(
        &mut self,
        now: Instant,
        watched: &HashSet<PeerId>,
        slack: Duration,
        stretch: u32,
    ) -> Tick {
        let mut t = self.thresholds;
        t.suspect_after *= stretch.max(1);
        t.dead_after *= stretch.max(1);
        let mut tick = Tick::default();
        let mut forget = Vec::new();
        for m in self.members.values_mut() {
            let silence = now.saturating_duration_since(m.last_heard);
            let watching = watched.contains(&m.peer_id);
            let extra = if watching { Duration::ZERO } else { slack };
            let (suspect_after, dead_after) = (t.suspect_after + extra, t.dead_after + extra);
            match m.state {
                MemberState::Alive if silence >= suspect_after => {
                    m.state = MemberState::Suspect;
                    tick.changes.push(MembershipChange::Suspect(m.peer_id));
                    tick.new_suspects.push(m.peer_id);
                    if silence >= dead_after {
                        m.state = MemberState::Dead;
                        tick.changes.push(MembershipChange::Dead(m.peer_id));
                        tick.new_dead.push(m.peer_id);
                    }
                }
                MemberState::Suspect if silence >= dead_after => {
                    m.state = MemberState::Dead;
                    tick.changes.push(MembershipChange::Dead(m.peer_id));
                    tick.new_dead.push(m.peer_id);
                }
                MemberState::Dead | MemberState::Left if silence >= t.forget_after => {
                    forget.push(m.peer_id);
                }
                _ => {}
            }
        }
        for peer in forget {
            self.members.remove(&peer);
            self.versions.remove(&peer);
        }
        tick
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view() -> View {
        View::new(
            PeerId::random(),
            Thresholds {
                suspect_after: Duration::from_secs(1),
                dead_after: Duration::from_secs(2),
                forget_after: Duration::from_secs(10),
                max_members: 8,
            },
        )
    }

    /// A tick with no member watched and no slack: every member judged by the thresholds.
    fn tick_all(v: &mut View, now: Instant) -> Tick {
        v.tick(now, &HashSet::new(), Duration::ZERO, 1)
    }

    fn hb(seq: u64, host: &str) -> Heartbeat {
        Heartbeat {
            seq,
            addrs: Vec::new(),
            info: NodeInfo {
                hostname: host.to_owned(),
                ..NodeInfo::default()
            },
        }
    }

    #[test]
    fn a_change_is_about_the_size_of_a_peer_id() {
        // Every slot of the change broadcast is this size, allocated when the mesh starts.
        let size = std::mem::size_of::<MembershipChange>();
        assert!(size <= std::mem::size_of::<PeerId>() + 16, "{size} bytes");
    }

    #[test]
    fn join_update_suspect_alive_dead_rejoin() {
        let mut v = view();
        let p = PeerId::random();
        let t0 = Instant::now();
        assert!(matches!(
            v.on_heartbeat(p, &hb(1, "a"), t0)[..],
            [MembershipChange::Joined(_)]
        ));
        assert!(
            v.on_heartbeat(p, &hb(1, "b"), t0).is_empty(),
            "stale seq ignored"
        );
        assert!(
            v.on_heartbeat(p, &hb(2, "a"), t0).is_empty(),
            "same info: no change"
        );
        assert!(matches!(
            v.on_heartbeat(p, &hb(3, "b"), t0)[..],
            [MembershipChange::Updated { .. }]
        ));
        let tick = tick_all(&mut v, t0 + Duration::from_millis(1100));
        assert_eq!(tick.changes, vec![MembershipChange::Suspect(p)]);
        assert_eq!(tick.new_suspects, vec![p]);
        let t1 = t0 + Duration::from_millis(1200);
        assert_eq!(v.on_evidence(&p, t1), vec![MembershipChange::Alive(p)]);
        assert!(
            tick_all(&mut v, t1 + Duration::from_millis(900))
                .changes
                .is_empty()
        );
        let _ = tick_all(&mut v, t1 + Duration::from_millis(1000));
        let tick = tick_all(&mut v, t1 + Duration::from_millis(2000));
        assert_eq!(tick.changes, vec![MembershipChange::Dead(p)]);
        assert!(matches!(
            v.on_heartbeat(p, &hb(4, "b"), t1 + Duration::from_secs(3))[..],
            [MembershipChange::Joined(_)]
        ));
    }

    #[test]
    fn beats_keep_alive_and_ask_for_unknown_versions() {
        let mut v = view();
        let p = PeerId::random();
        let t0 = Instant::now();
        let first = hb(1, "a");
        let out = v.on_beat(p, 1, first.version(), t0);
        assert!(
            out.changes.is_empty() && out.fetch,
            "unknown member: fetch, no Joined yet"
        );
        assert!(
            v.on_fetched(p, &hb(1, "forged"), first.version(), t0)
                .is_empty(),
            "a fetched heartbeat must match the signed version"
        );
        assert!(matches!(
            v.on_fetched(p, &first, first.version(), t0)[..],
            [MembershipChange::Joined(_)]
        ));
        let out = v.on_beat(p, 2, first.version(), t0 + Duration::from_millis(900));
        assert!(
            out.changes.is_empty() && !out.fetch,
            "same version: liveness only"
        );
        assert!(
            tick_all(&mut v, t0 + Duration::from_millis(1500))
                .changes
                .is_empty()
        );
        let renamed = hb(3, "b");
        let out = v.on_beat(p, 3, renamed.version(), t0 + Duration::from_secs(2));
        assert!(out.fetch, "new version: fetch");
        let changes = v.on_fetched(p, &hb(1, "b"), renamed.version(), t0);
        assert!(matches!(changes[..], [MembershipChange::Updated { .. }]));
        assert_eq!(
            v.get(&p).map(|m| m.seq),
            Some(3),
            "sequence never goes back"
        );
        assert!(v.on_beat(p, 3, renamed.version(), t0).changes.is_empty());
    }

    #[test]
    fn leave_then_forget() {
        let mut v = view();
        let p = PeerId::random();
        let t0 = Instant::now();
        let _ = v.on_heartbeat(p, &hb(5, "a"), t0);
        assert!(v.on_leave(p, 5, t0).is_empty(), "a leave must be newer");
        assert_eq!(v.on_leave(p, 6, t0), vec![MembershipChange::Left(p)]);
        assert!(v.on_leave(p, 7, t0).is_empty());
        assert!(
            tick_all(&mut v, t0 + Duration::from_secs(5))
                .changes
                .is_empty()
        );
        let _ = tick_all(&mut v, t0 + Duration::from_secs(11));
        assert!(v.get(&p).is_none());
    }

    #[test]
    fn bounded_and_ignores_self() {
        let mut v = view();
        let me = v.local;
        assert!(v.on_heartbeat(me, &hb(1, "me"), Instant::now()).is_empty());
        for _ in 0..20 {
            let _ = v.on_heartbeat(PeerId::random(), &hb(1, "x"), Instant::now());
        }
        assert_eq!(v.members().len(), 8);
    }

    #[test]
    fn rumors_spread_failures_and_newer_heartbeats_refute_them() {
        let mut v = view();
        let p = PeerId::random();
        let t0 = Instant::now();
        let _ = v.on_heartbeat(p, &hb(5, "a"), t0);
        assert!(
            v.on_rumor(p, Rumor::Dead, 4, false, t0).is_empty(),
            "a rumor older than what we heard is ignored"
        );
        assert!(
            v.on_rumor(p, Rumor::Dead, 5, true, t0).is_empty(),
            "our own fresh evidence beats a rumor"
        );
        assert_eq!(
            v.on_rumor(p, Rumor::Dead, 5, false, t0),
            vec![MembershipChange::Suspect(p), MembershipChange::Dead(p)]
        );
        assert!(v.on_rumor(p, Rumor::Dead, 5, false, t0).is_empty());
        assert!(matches!(
            v.on_heartbeat(p, &hb(6, "a"), t0)[..],
            [MembershipChange::Joined(_)]
        ));
    }

    #[test]
    fn unwatched_members_get_slack() {
        let mut v = view();
        let (watched, other) = (PeerId::random(), PeerId::random());
        let t0 = Instant::now();
        let _ = v.on_heartbeat(watched, &hb(1, "w"), t0);
        let _ = v.on_heartbeat(other, &hb(1, "o"), t0);
        let set: HashSet<PeerId> = [watched].into();
        let slack = Duration::from_secs(5);
        let t = v.tick(t0 + Duration::from_millis(2100), &set, slack, 1);
        assert_eq!(t.new_dead, vec![watched]);
        assert_eq!(v.get(&other).map(|m| m.state), Some(MemberState::Alive));
        let t = v.tick(t0 + Duration::from_millis(7100), &set, slack, 1);
        assert_eq!(t.new_dead, vec![other]);
    }

    #[test]
    fn a_troubled_agent_stretches_its_thresholds() {
        let mut v = view();
        let p = PeerId::random();
        let t0 = Instant::now();
        let _ = v.on_heartbeat(p, &hb(1, "w"), t0);
        let set: HashSet<PeerId> = [p].into();
        let t = v.tick(t0 + Duration::from_millis(2100), &set, Duration::ZERO, 3);
        assert!(t.changes.is_empty(), "3 x 1 s: not even suspect yet");
        let t = v.tick(t0 + Duration::from_millis(3100), &set, Duration::ZERO, 3);
        assert_eq!(t.new_suspects, vec![p]);
        let t = v.tick(t0 + Duration::from_millis(6100), &set, Duration::ZERO, 3);
        assert_eq!(t.new_dead, vec![p]);
    }

    #[test]
    fn a_dead_member_that_answers_is_alive_again() {
        let mut v = view();
        let p = PeerId::random();
        let t0 = Instant::now();
        let _ = v.on_heartbeat(p, &hb(1, "w"), t0);
        let _ = tick_all(&mut v, t0 + Duration::from_millis(2100));
        assert_eq!(v.get(&p).map(|m| m.state), Some(MemberState::Dead));
        let later = t0 + Duration::from_secs(3);
        let changes = v.on_answered(&p, later);
        assert!(matches!(changes.as_slice(), [MembershipChange::Joined(m)] if m.peer_id == p));
        assert!(
            v.on_answered(&p, later).is_empty(),
            "only a dead member comes back"
        );
    }
}
