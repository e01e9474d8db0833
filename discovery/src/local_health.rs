//! Local health, after Lifeguard (Dadgar et al., 2018): how far this agent trusts its own
//! sense of time.
//!
//! A watcher judges its members by how long they stay silent. When the watcher itself is slow
//! (its event loop starved, its echoes late from several members at once, or others accusing
//! it), that
//! silence is as likely its own fault as theirs, and the deaths it would declare are mostly
//! false; each false death costs the whole cluster a rumor, a refutation and two view changes,
//! which slows everyone further. So every sign of local trouble raises a score, the score falls
//! back by one each [`RECOVER_EVERY`], and the watched thresholds stretch by `1 + score`. A
//! healthy agent (score 0) judges by the configured thresholds.
//!
//! A watcher pings the same few members all the time, so one member that really died makes
//! every one of its echoes late: that says nothing about the watcher, and must not slow the
//! detection of that death. Late echoes count as trouble only while [`LATE_PEERS`] different
//! members are late within one [`RECOVER_EVERY`].

use std::time::{Duration, Instant};

use libp2p::PeerId;

/// The score at most: the thresholds stretch at most this plus one times.
pub(crate) const MAX_SCORE: u32 = 8;
/// The score falls by one per this much time.
pub(crate) const RECOVER_EVERY: Duration = Duration::from_secs(1);
/// Different members whose echoes are late at once before it counts as this agent's trouble.
pub(crate) const LATE_PEERS: usize = 2;
/// Late members remembered at most (a watcher watches only a few).
const LATE_REMEMBERED: usize = 8;

/// Signs that this agent itself is slow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Trouble {
    /// Echoes of several watched members did not come back in time.
    LateEchoes,
    /// This agent's event loop was starved.
    Starved,
    /// Another agent declared this one dead while it was alive.
    Accused,
}

impl Trouble {
    fn weight(self) -> u32 {
        match self {
            Trouble::LateEchoes | Trouble::Starved => 1,
            Trouble::Accused => 2,
        }
    }
}

/// The local health score.
#[derive(Debug, Clone)]
pub(crate) struct LocalHealth {
    score: u32,
    since: Instant,
    /// The members whose echo was late lately, and when.
    late: Vec<(PeerId, Instant)>,
}

impl LocalHealth {
    /// A healthy agent at `now`.
    pub(crate) fn new(now: Instant) -> Self {
        Self {
            score: 0,
            since: now,
            late: Vec::new(),
        }
    }

    /// Records that `peer`'s echo did not come back in time: trouble once [`LATE_PEERS`]
    /// different members were late within one [`RECOVER_EVERY`].
    pub(crate) fn late_echo(&mut self, peer: PeerId, now: Instant) {
        self.late
            .retain(|(p, at)| *p != peer && now.saturating_duration_since(*at) < RECOVER_EVERY);
        if self.late.len() >= LATE_REMEMBERED {
            self.late.remove(0);
        }
        self.late.push((peer, now));
        if self.late.len() >= LATE_PEERS {
            self.trouble(Trouble::LateEchoes, now);
        }
    }

    /// Records a sign of trouble at `now`.
    pub(crate) fn trouble(&mut self, trouble: Trouble, now: Instant) {
        self.recover(now);
        self.score = (self.score + trouble.weight()).min(MAX_SCORE);
        self.since = now;
    }

    /// Lets the score fall by one per [`RECOVER_EVERY`] since the last change.
    pub(crate) fn recover(&mut self, now: Instant) {
        let steps = now.saturating_duration_since(self.since).as_millis()
            / RECOVER_EVERY.as_millis().max(1);
        let steps = u32::try_from(steps).unwrap_or(u32::MAX);
        if steps > 0 {
            self.score = self.score.saturating_sub(steps);
            self.since = now;
        }
    }

    /// How many times the configured thresholds the watched members get at the moment.
    pub(crate) fn stretch(&self) -> u32 {
        1 + self.score
    }

    /// The current score (0 = healthy).
    pub(crate) fn score(&self) -> u32 {
        self.score
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_healthy_agent_judges_by_the_thresholds() {
        let health = LocalHealth::new(Instant::now());
        assert_eq!(health.stretch(), 1);
    }

    #[test]
    fn trouble_stretches_the_thresholds_up_to_a_bound_and_heals_with_time() {
        let t0 = Instant::now();
        let mut health = LocalHealth::new(t0);
        health.trouble(Trouble::LateEchoes, t0);
        health.trouble(Trouble::Accused, t0);
        assert_eq!(health.stretch(), 4);
        for _ in 0..20 {
            health.trouble(Trouble::Starved, t0);
        }
        assert_eq!(health.score(), MAX_SCORE);
        health.recover(t0 + RECOVER_EVERY * 3);
        assert_eq!(health.score(), MAX_SCORE - 3);
        health.recover(t0 + RECOVER_EVERY * 60);
        assert_eq!(health.stretch(), 1);
    }

    #[test]
    fn one_dead_member_is_no_trouble_but_several_late_ones_are() {
        let t0 = Instant::now();
        let mut health = LocalHealth::new(t0);
        let (dead, other) = (PeerId::random(), PeerId::random());
        for i in 0..20 {
            health.late_echo(dead, t0 + RECOVER_EVERY / 2 * i);
        }
        assert_eq!(health.stretch(), 1, "one member late, however often");
        let now = t0 + RECOVER_EVERY * 10;
        health.late_echo(other, now);
        assert_eq!(health.score(), 1, "two members late within a second");
        health.late_echo(dead, now + RECOVER_EVERY * 3);
        health.recover(now + RECOVER_EVERY * 3);
        assert_eq!(health.score(), 0, "the other is no longer late");
    }

    #[test]
    fn recovery_counts_only_whole_periods() {
        let t0 = Instant::now();
        let mut health = LocalHealth::new(t0);
        health.trouble(Trouble::LateEchoes, t0);
        for i in 1..10 {
            health.recover(t0 + RECOVER_EVERY / 2 * i / 5);
        }
        assert_eq!(health.score(), 1, "half periods add up to nothing");
    }
}
