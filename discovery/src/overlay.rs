//! The overlay: who watches whom, who stays connected to whom, and how often each agent beats.
//!
//! Members are placed on a ring in PeerId order. Every agent watches its next `watch` members
//! on the ring (pings them over kept-open connections and declares them suspect or dead), so
//! every member is watched by `watch` others whatever the cluster's size. Everyone else learns
//! a failure from the watchers' signed rumors. Heartbeats on the gossip topic then only carry
//! what members announce, and their period grows with the cluster so that the beats an agent
//! receives per second stay bounded: idle traffic per agent does not grow with the cluster.
//! Pure functions; the event loop applies them.

use std::collections::HashSet;
use std::time::Duration;

use libp2p::PeerId;

/// Beats an agent aims to receive per heartbeat interval, whatever the cluster's size. Beats
/// only announce (and refute rumors): liveness is the watchers' job, so a few are enough, and
/// each one costs every agent a signature check and a few gossip copies.
pub(crate) const BEATS_PER_INTERVAL: usize = 2;

/// The ring neighbours of one agent.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Ring {
    /// The members this agent watches: its next `watch` members on the ring.
    pub watched: Vec<PeerId>,
    /// The members that watch this agent: its previous `watch` members on the ring.
    pub watchers: Vec<PeerId>,
}

impl Ring {
    /// Every neighbour, watched or watcher (the connections worth keeping open).
    pub(crate) fn neighbours(&self) -> HashSet<PeerId> {
        self.watched
            .iter()
            .chain(self.watchers.iter())
            .copied()
            .collect()
    }
}

/// The ring neighbours of `local` among `members` (which may or may not hold `local`).
pub(crate) fn ring(local: PeerId, members: &[PeerId], watch: usize) -> Ring {
    let mut others: Vec<PeerId> = members.iter().copied().filter(|p| *p != local).collect();
    others.sort_unstable();
    others.dedup();
    let n = others.len();
    let k = watch.min(n);
    if k == 0 {
        return Ring::default();
    }
    // The index of the first member after `local` on the ring.
    let after = others.partition_point(|p| *p < local);
    let watched = (0..k).map(|i| others[(after + i) % n]).collect();
    let watchers = (1..=k).map(|i| others[(after + n - i) % n]).collect();
    Ring { watched, watchers }
}

/// How often an agent that knows `members` other members publishes its heartbeat: the base
/// interval up to [`BEATS_PER_INTERVAL`] members, then proportionally longer.
pub(crate) fn beat_period(interval: Duration, members: usize) -> Duration {
    let factor = members.div_ceil(BEATS_PER_INTERVAL).max(1);
    interval * u32::try_from(factor).unwrap_or(u32::MAX)
}

/// `period` spread over 3/4 to 5/4 of itself by `key` (this agent's PeerId mixed with its
/// heartbeat sequence number): agents that joined together would otherwise beat together,
/// and in a large cluster a whole cluster's beats arriving in one second cost every agent a
/// burst of signature checks at once.
pub(crate) fn jittered(period: Duration, local: &PeerId, seq: u64) -> Duration {
    let bytes = local.to_bytes();
    let tail: [u8; 8] = bytes[bytes.len().saturating_sub(8)..]
        .try_into()
        .unwrap_or_default();
    let mixed = (u64::from_le_bytes(tail) ^ seq.wrapping_mul(0x9E37_79B9_7F4A_7C15)) % 512;
    period * 3 / 4 + period.mul_f64(mixed as f64 / 1024.0)
}

/// `candidates` ordered by how much `local` prefers to connect to them: nearest first by the
/// XOR of their PeerId bytes. Every agent ranks the cluster differently, so agents that top
/// up their connections at once spread over the cluster instead of all dialling its lowest
/// PeerIds (which then shed those connections again, above their high-water mark).
pub(crate) fn by_affinity(local: &PeerId, mut candidates: Vec<PeerId>) -> Vec<PeerId> {
    let me = local.to_bytes();
    let distance = |peer: &PeerId| -> Vec<u8> {
        let them = peer.to_bytes();
        let len = me.len().max(them.len());
        (0..len)
            .map(|i| me.get(i).copied().unwrap_or(0) ^ them.get(i).copied().unwrap_or(0))
            .collect()
    };
    candidates.sort_by_cached_key(distance);
    candidates
}

/// Least extra silence allowed to a member this agent does not watch.
pub(crate) const UNWATCHED_SLACK_MIN: Duration = Duration::from_secs(5);

/// How long an agent waits for a member it does not watch before it suspects it on its own:
/// the watchers' rumors normally come first; this is the fallback if they are lost.
pub(crate) fn unwatched_slack(interval: Duration, members: usize) -> Duration {
    (beat_period(interval, members) * 4).max(UNWATCHED_SLACK_MIN)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peers(n: usize) -> Vec<PeerId> {
        let mut all: Vec<PeerId> = (0..n).map(|_| PeerId::random()).collect();
        all.sort_unstable();
        all
    }

    #[test]
    fn every_member_is_watched_by_exactly_k_others() {
        for n in [2, 3, 5, 12, 50] {
            let all = peers(n);
            let k = 3.min(n - 1);
            let mut watchers_of = std::collections::HashMap::<PeerId, usize>::new();
            for p in &all {
                let r = ring(*p, &all, 3);
                assert_eq!(r.watched.len(), k);
                assert!(!r.watched.contains(p));
                for w in r.watched {
                    *watchers_of.entry(w).or_default() += 1;
                }
            }
            assert!(watchers_of.values().all(|c| *c == k), "n = {n}");
            assert_eq!(watchers_of.len(), n);
        }
    }

    #[test]
    fn watchers_are_the_mirror_of_watched() {
        let all = peers(20);
        for p in &all {
            for w in ring(*p, &all, 3).watchers {
                assert!(ring(w, &all, 3).watched.contains(p));
            }
        }
    }

    #[test]
    fn alone_watches_nobody() {
        let me = PeerId::random();
        assert_eq!(ring(me, &[me], 3), Ring::default());
    }

    #[test]
    fn connection_preferences_spread_over_the_cluster() {
        let all = peers(100);
        let mut chosen = std::collections::HashMap::<PeerId, usize>::new();
        for p in &all {
            let others: Vec<PeerId> = all.iter().copied().filter(|q| q != p).collect();
            let ranked = by_affinity(p, others);
            assert_eq!(ranked.len(), 99);
            for q in ranked.into_iter().take(8) {
                *chosen.entry(q).or_default() += 1;
            }
        }
        // 800 first choices over 100 members: nobody is everyone's favourite.
        let most = chosen.values().copied().max().unwrap_or(0);
        assert!(
            most <= 24,
            "one member is the first choice of {most} agents"
        );
        assert!(
            chosen.len() >= 60,
            "only {} members are ever chosen",
            chosen.len()
        );
    }

    #[test]
    fn beats_received_per_interval_stay_bounded() {
        let base = Duration::from_millis(500);
        assert_eq!(beat_period(base, 0), base);
        assert_eq!(beat_period(base, BEATS_PER_INTERVAL), base);
        let jitters: HashSet<Duration> = (0..50)
            .map(|seq| jittered(base, &PeerId::random(), seq))
            .collect();
        assert!(jitters.len() > 40, "spread out");
        assert!(
            jitters
                .iter()
                .all(|j| *j >= base * 3 / 4 && *j < base * 5 / 4)
        );
        assert_eq!(beat_period(base, BEATS_PER_INTERVAL + 1), base * 2);
        for n in [10usize, 50, 200, 1000] {
            let per_interval = n as f64 * base.as_secs_f64() / beat_period(base, n).as_secs_f64();
            assert!(per_interval <= BEATS_PER_INTERVAL as f64, "n = {n}");
        }
    }
}
