//! The roster exchange at join: a joiner's first connected peer hands it every member it holds
//! alive, so that the joiner's view is complete in one round trip instead of after every
//! member's next heartbeat (which, in a large cluster, comes seconds apart). The joiner's own
//! heartbeat rides on the question, first-hand over the authenticated connection, so the peer
//! can hand it on to the next joiners at once.
//!
//! A roster is hearsay: it only adds members the joiner does not know yet. Their liveness is
//! then judged like anyone's: by their heartbeats, their watchers and the watchers' rumors.

use std::time::{Duration, Instant};

use libp2p::PeerId;
use libp2p::request_response::ResponseChannel;

use crate::event_loop::EventLoop;
use crate::membership::{Heartbeat, View};
use crate::probe::{self, ProbePurpose, ProbeRequest, ProbeResponse, RosterEntry};
use crate::protocol::PROBE_MAX_RESPONSE_BYTES;

/// A roster question without an answer is asked again (of another peer) after this.
const ROSTER_RETRY: Duration = Duration::from_secs(1);
/// After a roster that taught something, another peer is asked this much later: agents that
/// join together each hold only part of the cluster at first.
const ROSTER_REPEAT: Duration = Duration::from_millis(500);
/// Rosters asked at most, one round after another while each teaches something.
const ROSTER_ROUNDS: u8 = 4;
/// Room left in a response for the encoding around the entries.
const ROSTER_SLACK_BYTES: usize = 1024;

/// Where this agent is in its roster rounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RosterSync {
    /// Not asked yet, or the last question failed.
    Needed,
    /// Asked at this instant, in this round (counted from 1).
    Asked { at: Instant, round: u8 },
    /// Round `round` answered at `at`; `taught` whether it added members.
    Received {
        at: Instant,
        round: u8,
        taught: bool,
    },
}

impl RosterSync {
    /// Whether a (next) question is due at `now`, and which round it is.
    fn due(self, now: Instant) -> Option<u8> {
        let since = |at: Instant| now.saturating_duration_since(at);
        match self {
            Self::Needed => Some(1),
            Self::Asked { at, round } => (since(at) >= ROSTER_RETRY).then_some(round),
            Self::Received { at, round, taught } => {
                (taught && round < ROSTER_ROUNDS && since(at) >= ROSTER_REPEAT).then_some(round + 1)
            }
        }
    }
}

/// The roster `view` gives `asker`: `local` first, then the members held alive other than the
/// asker, as many as fit in a probe response.
pub(crate) fn roster_for(asker: &PeerId, local: RosterEntry, view: &View) -> Vec<RosterEntry> {
    let budget = PROBE_MAX_RESPONSE_BYTES - ROSTER_SLACK_BYTES;
    let mut used = 0;
    let mut roster = Vec::new();
    let others = view.alive_except(asker).into_iter().filter_map(|peer| {
        view.heartbeat_of(&peer).map(|heartbeat| RosterEntry {
            peer: peer.to_bytes(),
            heartbeat,
        })
    });
    for entry in std::iter::once(local).chain(others) {
        let size = probe::encode(&entry).len();
        if used + size > budget {
            break;
        }
        used += size;
        roster.push(entry);
    }
    roster
}

impl EventLoop {
    /// Asks `peer` for its roster when a question is due (see [`RosterSync`]).
    pub(crate) fn ask_roster(&mut self, peer: PeerId, now: Instant) {
        let Some(round) = self.roster.due(now) else {
            return;
        };
        let question = ProbeRequest::Roster(Box::new(self.local_heartbeat()));
        self.ask_connected(peer, &question, ProbePurpose::Roster);
        self.roster = RosterSync::Asked { at: now, round };
    }

    /// Asks the next connected peer (in turn) when a question is due.
    pub(crate) fn retry_roster(&mut self, now: Instant) {
        if self.roster.due(now).is_none() {
            return;
        }
        let connected: Vec<PeerId> = self.swarm.connected_peers().copied().collect();
        if connected.is_empty() {
            return;
        }
        let peer = connected[self.probe_cursor % connected.len()];
        self.probe_cursor = self.probe_cursor.wrapping_add(1);
        self.ask_roster(peer, now);
    }

    /// A roster question failed: ask someone else when due.
    pub(crate) fn roster_failed(&mut self) {
        if let RosterSync::Asked { round, .. } = self.roster {
            self.roster = if round <= 1 {
                RosterSync::Needed
            } else {
                RosterSync::Received {
                    at: Instant::now(),
                    round: round - 1,
                    taught: true,
                }
            };
        }
    }

    /// Folds the joiner's own heartbeat in, then answers with this agent's roster.
    pub(crate) fn answer_roster(
        &mut self,
        asker: PeerId,
        heartbeat: &Heartbeat,
        channel: ResponseChannel<Vec<u8>>,
    ) {
        let changes = self.view.on_heartbeat(asker, heartbeat, Instant::now());
        if !changes.is_empty() {
            self.learn_addrs(asker, heartbeat.decoded_addrs(), false);
        }
        self.emit(changes);
        let local = RosterEntry {
            peer: self.swarm.local_peer_id().to_bytes(),
            heartbeat: self.local_heartbeat(),
        };
        let roster = roster_for(&asker, local, &self.view);
        self.respond_probe(channel, ProbeResponse::Roster(roster));
    }

    /// Folds a received roster in: the members not known yet join.
    pub(crate) fn on_roster(&mut self, from: PeerId, roster: Vec<RosterEntry>) {
        let now = Instant::now();
        let round = match self.roster {
            RosterSync::Asked { round, .. } => round,
            _ => 1,
        };
        let local = *self.swarm.local_peer_id();
        let mut joined = 0;
        for entry in roster {
            let Ok(peer) = PeerId::from_bytes(&entry.peer) else {
                self.reject_peer(from, "probe_malformed", &"bad peer id in a roster");
                return;
            };
            if peer == local || self.view.get(&peer).is_some() {
                continue;
            }
            let changes = self.view.on_heartbeat(peer, &entry.heartbeat, now);
            if !changes.is_empty() {
                joined += 1;
                self.learn_addrs(peer, entry.heartbeat.decoded_addrs(), false);
            }
            self.emit(changes);
        }
        self.roster = RosterSync::Received {
            at: now,
            round,
            taught: joined > 0,
        };
        tracing::debug!(%from, round, joined, "roster received");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::membership::{NodeInfo, Thresholds};

    fn heartbeat(host: &str) -> Heartbeat {
        Heartbeat {
            seq: 1,
            addrs: Vec::new(),
            info: NodeInfo {
                hostname: host.to_owned(),
                ..NodeInfo::default()
            },
        }
    }

    fn view_of(local: PeerId, members: usize, hostname_len: usize) -> View {
        let mut view = View::new(
            local,
            Thresholds {
                suspect_after: Duration::from_secs(1),
                dead_after: Duration::from_secs(2),
                forget_after: Duration::from_secs(300),
                max_members: 10_000,
            },
        );
        for i in 0..members {
            let host = format!("{i:0>hostname_len$}");
            view.on_heartbeat(PeerId::random(), &heartbeat(&host), Instant::now());
        }
        view
    }

    fn entry(peer: PeerId) -> RosterEntry {
        RosterEntry {
            peer: peer.to_bytes(),
            heartbeat: heartbeat("local"),
        }
    }

    #[test]
    fn a_roster_holds_the_responder_and_every_alive_member_but_the_asker() {
        let local = PeerId::random();
        let view = view_of(local, 20, 8);
        let asker = view.alive_except(&local)[3];
        let roster = roster_for(&asker, entry(local), &view);
        assert_eq!(roster.len(), 20, "the responder and 19 others");
        assert_eq!(roster[0].peer, local.to_bytes());
        assert!(roster.iter().all(|e| e.peer != asker.to_bytes()));
    }

    #[test]
    fn rounds_repeat_while_they_teach_and_stop_at_the_limit() {
        let t0 = Instant::now();
        assert_eq!(RosterSync::Needed.due(t0), Some(1));
        let asked = RosterSync::Asked { at: t0, round: 1 };
        assert_eq!(asked.due(t0), None, "an answer is awaited");
        assert_eq!(
            asked.due(t0 + ROSTER_RETRY),
            Some(1),
            "unanswered: asked again"
        );
        let taught = |round, taught| RosterSync::Received {
            at: t0,
            round,
            taught,
        };
        assert_eq!(taught(1, true).due(t0), None, "not at once");
        assert_eq!(taught(1, true).due(t0 + ROSTER_REPEAT), Some(2));
        assert_eq!(
            taught(2, false).due(t0 + ROSTER_REPEAT * 9),
            None,
            "nothing new: done"
        );
        let last = taught(ROSTER_ROUNDS, true);
        assert_eq!(last.due(t0 + ROSTER_REPEAT * 9), None, "the last round");
    }

    #[test]
    fn a_roster_fits_in_one_probe_response() {
        let local = PeerId::random();
        let view = view_of(local, 400, 1000);
        let roster = roster_for(&PeerId::random(), entry(local), &view);
        assert!(roster.len() < 400, "truncated to fit");
        let response = probe::encode(&ProbeResponse::Roster(roster));
        assert!(response.len() <= PROBE_MAX_RESPONSE_BYTES);
    }
}
