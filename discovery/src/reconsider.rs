//! Second chances for the members this agent itself declared dead.
//!
//! A watcher that declares a watched member dead can be wrong: its own event loop, or the
//! member's, may have been starved past the thresholds while both were alive. The rumor it
//! spreads is refuted by the member as soon as the member hears it. But a rumor that the others
//! drop (they hold a newer heartbeat than the accuser did, so they do not forward it) never
//! reaches the member, and the accuser would hold a live member dead until that member's next
//! heartbeat, which in a large cluster comes only every few tens of seconds. So the accuser keeps
//! asking the member directly, once every [`RECONSIDER_EVERY`] for [`RECONSIDER_FOR`]; a member
//! that answers is alive here at once, and publishes a newer heartbeat that revives it in every
//! other view too. (Serf keeps reconnecting to failed members for the same reason.)

use std::collections::HashMap;
use std::time::{Duration, Instant};

use libp2p::PeerId;

/// How often a member declared dead here is asked again.
pub(crate) const RECONSIDER_EVERY: Duration = Duration::from_secs(1);
/// How long after its death a member is asked again.
pub(crate) const RECONSIDER_FOR: Duration = Duration::from_secs(30);

/// When each member declared dead here is to be asked next, and until when.
#[derive(Debug, Default)]
pub(crate) struct Reconsider {
    due: HashMap<PeerId, Schedule>,
}

#[derive(Debug, Clone, Copy)]
struct Schedule {
    next: Instant,
    until: Instant,
}

impl Reconsider {
    /// Remembers that this agent declared `peer` dead at `now` (at most `max` are remembered:
    /// the oldest deaths make room).
    pub(crate) fn declared_dead(&mut self, peer: PeerId, now: Instant, max: usize) {
        if self.due.len() >= max.max(1) && !self.due.contains_key(&peer) {
            let oldest = self
                .due
                .iter()
                .min_by_key(|(_, s)| s.until)
                .map(|(p, _)| *p);
            if let Some(oldest) = oldest {
                self.due.remove(&oldest);
            }
        }
        let schedule = Schedule {
            next: now + RECONSIDER_EVERY,
            until: now + RECONSIDER_FOR,
        };
        self.due.insert(peer, schedule);
    }

    /// The members to ask at `now`. Members no longer dead here (`still_dead` says) and members
    /// whose time is up are forgotten.
    pub(crate) fn due(
        &mut self,
        now: Instant,
        still_dead: impl Fn(&PeerId) -> bool,
    ) -> Vec<PeerId> {
        self.due
            .retain(|peer, schedule| now < schedule.until && still_dead(peer));
        let mut ask = Vec::new();
        for (peer, schedule) in &mut self.due {
            if now >= schedule.next {
                schedule.next = now + RECONSIDER_EVERY;
                ask.push(*peer);
            }
        }
        ask
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dead_member_is_asked_every_second_for_a_while() {
        let mut r = Reconsider::default();
        let t0 = Instant::now();
        let p = PeerId::random();
        r.declared_dead(p, t0, 16);
        assert!(r.due(t0, |_| true).is_empty(), "not before a second");
        assert_eq!(r.due(t0 + RECONSIDER_EVERY, |_| true), vec![p]);
        assert!(
            r.due(t0 + RECONSIDER_EVERY, |_| true).is_empty(),
            "once per second"
        );
        assert_eq!(r.due(t0 + RECONSIDER_EVERY * 2, |_| true), vec![p]);
        assert!(
            r.due(t0 + RECONSIDER_FOR, |_| true).is_empty(),
            "time is up"
        );
        assert!(r.due.is_empty());
    }

    #[test]
    fn a_revived_member_is_forgotten_and_the_schedule_is_bounded() {
        let mut r = Reconsider::default();
        let t0 = Instant::now();
        let peers: Vec<PeerId> = (0..5).map(|_| PeerId::random()).collect();
        for (i, p) in peers.iter().enumerate() {
            r.declared_dead(*p, t0 + Duration::from_millis(i as u64), 3);
        }
        assert_eq!(r.due.len(), 3, "bounded");
        assert!(r.due.contains_key(&peers[4]) && !r.due.contains_key(&peers[0]));
        let later = t0 + RECONSIDER_EVERY * 2;
        let asked = r.due(later, |p| *p != peers[4]);
        assert_eq!(asked.len(), 2);
        assert!(!r.due.contains_key(&peers[4]), "revived, so forgotten");
    }
}
