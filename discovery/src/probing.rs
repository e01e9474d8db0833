//! Probing: the event loop's questions to other agents on the probe protocol, and its answers
//! to theirs. A suspect is pinged directly and through a few others; a member declared dead
//! here is asked again for a while (see `reconsider`); a full heartbeat announced by a beat is
//! fetched from the peer that forwarded it. The roster exchange at join (see `roster`) rides
//! on the same protocol.

use std::time::{Duration, Instant};

use libp2p::request_response::{self, OutboundRequestId};
use libp2p::{Multiaddr, PeerId};

use crate::codec::Frame;
use crate::event_loop::{EventLoop, RrEvent, malformed_request, malformed_response};
use crate::local_health::Trouble;
use crate::membership::MemberState;
use crate::metrics::{Direction, TrafficKind};
use crate::probe::{self, ProbePurpose, ProbeRequest, ProbeResponse};
use crate::reconsider::RECONSIDER_EVERY;

/// A fetch of a member's full heartbeat is not repeated sooner than this.
const FETCH_RETRY: Duration = Duration::from_millis(300);

impl EventLoop {
    /// Asks `via` (the peer that forwarded the beat, so a connected one) for `target`'s full
    /// heartbeat; its answer is believed only if it has the version `target` signed.
    pub(crate) fn fetch_heartbeat(
        &mut self,
        target: PeerId,
        version: u64,
        via: PeerId,
        now: Instant,
    ) {
        if self
            .fetching
            .get(&target)
            .is_some_and(|since| now.saturating_duration_since(*since) < FETCH_RETRY)
        {
            return;
        }
        if self.fetching.len() >= self.config.max_members {
            self.fetching
                .retain(|_, since| now.saturating_duration_since(*since) < FETCH_RETRY);
        }
        self.fetching.insert(target, now);
        let question = ProbeRequest::InfoOf(target.to_bytes());
        self.ask_connected(via, &question, ProbePurpose::Fetch { target, version });
    }

    /// Sends a probe `question` to `peer` (connected, so no address is needed), and remembers
    /// why, for its answer.
    pub(crate) fn ask_connected(
        &mut self,
        peer: PeerId,
        question: &ProbeRequest,
        purpose: ProbePurpose,
    ) {
        self.send_probe(peer, probe::encode(question), purpose, Vec::new());
    }

    /// Sends an encoded probe question to `peer` (dialling `addrs` if not connected), counts it,
    /// and remembers why it was asked, for its answer.
    fn send_probe(
        &mut self,
        peer: PeerId,
        question: Vec<u8>,
        purpose: ProbePurpose,
        addrs: Vec<Multiaddr>,
    ) {
        self.metrics
            .message(TrafficKind::Probe, Direction::Out, question.len());
        let id = self
            .swarm
            .behaviour_mut()
            .probe
            .send_request_with_addresses(&peer, Frame::Data(question), addrs);
        self.probes.insert(id, purpose);
    }

    /// Asks the members this agent declared dead whether they are alive after all.
    pub(crate) fn reconsider_the_dead(&mut self, now: Instant) {
        let view = &self.view;
        let ask = self.reconsider.due(now, |peer| {
            view.get(peer).is_some_and(|m| m.state == MemberState::Dead)
        });
        let question = probe::encode(&ProbeRequest::Refute);
        for peer in ask {
            let addrs = self.known_addrs(&peer);
            self.send_probe(
                peer,
                question.clone(),
                ProbePurpose::Reconsider(peer),
                addrs,
            );
        }
    }

    /// Answers a peer that declared this agent dead yet reaches it: a newer heartbeat revives
    /// this agent everywhere (published at most once per [`RECONSIDER_EVERY`]).
    pub(crate) fn refute_on_request(&mut self, asker: PeerId) -> ProbeResponse {
        let now = Instant::now();
        let recent = self
            .last_refuted
            .is_some_and(|at| now.saturating_duration_since(at) < RECONSIDER_EVERY);
        if !recent {
            tracing::info!(%asker, "refuting a death on request");
            self.health.trouble(Trouble::Accused, now);
            self.last_refuted = Some(now);
            self.publish_heartbeat();
        }
        ProbeResponse::Ack
    }

    /// Pings a suspect directly and asks a few others whether they hear it.
    pub(crate) fn probe(&mut self, target: PeerId) {
        let ping = probe::encode(&ProbeRequest::Ping);
        let addrs = self.known_addrs(&target);
        if !self.swarm.is_connected(&target) {
            tracing::trace!(target: "shoal_discovery::dial", peer = %target, reason = "probe", "dialling");
        }
        self.send_probe(target, ping, ProbePurpose::Direct(target), addrs);
        let mut helpers = self.view.alive_except(&target);
        helpers.sort_by_key(|p| !self.swarm.is_connected(p));
        let connected = helpers
            .iter()
            .filter(|p| self.swarm.is_connected(p))
            .count();
        let pool = if connected > 0 {
            connected
        } else {
            helpers.len()
        };
        let ask = self.config.indirect_probes.min(pool);
        let question = probe::encode(&ProbeRequest::DoYouHear(target.to_bytes()));
        for i in 0..ask {
            let helper = helpers[(self.probe_cursor + i) % pool];
            self.send_probe(
                helper,
                question.clone(),
                ProbePurpose::Indirect(target),
                Vec::new(),
            );
        }
        self.probe_cursor = self.probe_cursor.wrapping_add(ask);
    }

    pub(crate) fn on_probe_event(&mut self, event: RrEvent) {
        match event {
            request_response::Event::Message { peer, message, .. } => match message {
                request_response::Message::Request {
                    request: Frame::Data(payload),
                    channel,
                    ..
                } => self.answer_probe(peer, &payload, channel),
                request_response::Message::Request {
                    request: Frame::Rejected(reason),
                    ..
                } => self.reject_peer(peer, "probe_malformed", &reason),
                request_response::Message::Response {
                    request_id,
                    response,
                } => {
                    self.metrics
                        .message(TrafficKind::Probe, Direction::In, response.len());
                    let Some(answer) = probe::decode::<ProbeResponse>(&response) else {
                        self.probes.remove(&request_id);
                        self.reject_peer(peer, "probe_malformed", &"undecodable response");
                        return;
                    };
                    self.on_probe_answer(peer, request_id, Some(answer));
                }
            },
            request_response::Event::OutboundFailure {
                peer,
                request_id,
                error,
                ..
            } => {
                if let Some(e) = malformed_response(&error) {
                    self.reject_peer(peer, "probe_malformed", e);
                }
                self.on_probe_answer(peer, request_id, None);
            }
            request_response::Event::InboundFailure { peer, error, .. } => {
                if let Some(e) = malformed_request(&error) {
                    self.reject_peer(peer, "probe_malformed", e);
                }
            }
            request_response::Event::ResponseSent { .. } => {}
        }
    }

    pub(crate) fn answer_probe(
        &mut self,
        peer: PeerId,
        request: &[u8],
        channel: request_response::ResponseChannel<Vec<u8>>,
    ) {
        self.metrics
            .message(TrafficKind::Probe, Direction::In, request.len());
        let question = probe::decode::<ProbeRequest>(request);
        let answer = match question {
            Some(ProbeRequest::Ping) => ProbeResponse::Ack,
            Some(ProbeRequest::Refute) => self.refute_on_request(peer),
            Some(ProbeRequest::Roster(heartbeat)) => {
                self.answer_roster(peer, &heartbeat, channel);
                return;
            }
            Some(ProbeRequest::InfoOf(bytes)) => {
                let Ok(target) = PeerId::from_bytes(&bytes) else {
                    self.reject_peer(peer, "probe_malformed", &"bad peer id");
                    return;
                };
                let held = if target == *self.swarm.local_peer_id() {
                    Some(self.local_heartbeat())
                } else {
                    self.view.heartbeat_of(&target)
                };
                ProbeResponse::Info(held.map(Box::new))
            }
            Some(ProbeRequest::DoYouHear(bytes)) => {
                let Ok(target) = PeerId::from_bytes(&bytes) else {
                    self.reject_peer(peer, "probe_malformed", &"bad peer id");
                    return;
                };
                if target == *self.swarm.local_peer_id() {
                    ProbeResponse::Heard
                } else if self.view.get(&target).is_some() || self.swarm.is_connected(&target) {
                    // Vouch only with fresh evidence: answering from our own view would hand
                    // the asker a heartbeat up to `suspect_after` old as if it were new, and
                    // delay the death of a crashed node by that much.
                    let ping = probe::encode(&ProbeRequest::Ping);
                    let addrs = self.known_addrs(&target);
                    let id = self
                        .swarm
                        .behaviour_mut()
                        .probe
                        .send_request_with_addresses(&target, Frame::Data(ping), addrs);
                    self.probes
                        .insert(id, ProbePurpose::Relay { target, channel });
                    return;
                } else {
                    ProbeResponse::NotHeard
                }
            }
            None => {
                self.reject_peer(peer, "probe_malformed", &"undecodable request");
                return;
            }
        };
        self.respond_probe(channel, answer);
    }

    pub(crate) fn respond_probe(
        &mut self,
        channel: request_response::ResponseChannel<Vec<u8>>,
        answer: ProbeResponse,
    ) {
        let bytes = probe::encode(&answer);
        self.metrics
            .message(TrafficKind::Probe, Direction::Out, bytes.len());
        let _ = self
            .swarm
            .behaviour_mut()
            .probe
            .send_response(channel, bytes);
    }

    pub(crate) fn on_probe_answer(
        &mut self,
        peer: PeerId,
        id: OutboundRequestId,
        answer: Option<ProbeResponse>,
    ) {
        let Some(purpose) = self.probes.remove(&id) else {
            return;
        };
        match (purpose, answer) {
            (ProbePurpose::Direct(target), Some(ProbeResponse::Ack))
            | (ProbePurpose::Indirect(target), Some(ProbeResponse::Heard)) => self.evidence(target),
            (ProbePurpose::Relay { target, channel }, Some(ProbeResponse::Ack)) => {
                self.evidence(target);
                self.respond_probe(channel, ProbeResponse::Heard);
            }
            (ProbePurpose::Relay { channel, .. }, _) => {
                self.respond_probe(channel, ProbeResponse::NotHeard)
            }
            (ProbePurpose::Roster, Some(ProbeResponse::Roster(roster))) => {
                self.on_roster(peer, roster)
            }
            (ProbePurpose::Roster, _) => self.roster_failed(),
            (ProbePurpose::Reconsider(target), Some(ProbeResponse::Ack)) => {
                tracing::debug!(peer = %target, "a member declared dead here answered");
                let changes = self.view.on_answered(&target, Instant::now());
                self.emit(changes);
            }
            (ProbePurpose::Fetch { target, version }, Some(ProbeResponse::Info(Some(hb)))) => {
                let changes = self.view.on_fetched(target, &hb, version, Instant::now());
                if !changes.is_empty() {
                    self.fetching.remove(&target);
                    self.learn_addrs(target, hb.decoded_addrs(), false);
                }
                self.emit(changes);
            }
            _ => {}
        }
    }
}
