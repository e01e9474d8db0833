//! The [`EventLoop`]: the one owner of the libp2p Swarm. It executes the handle's commands,
//! folds swarm events into the membership view, publishes heartbeats and runs liveness probes.
//! It never awaits another subsystem: inbound requests go to their consumer with `try_send`,
//! and responses come back as commands.

use std::collections::{HashMap, HashSet};
use std::io;
use std::time::{Duration, Instant};

use futures::StreamExt;
use libp2p::metrics::Recorder;
use libp2p::multiaddr::Protocol;
use libp2p::request_response::{self, InboundFailure, OutboundFailure, OutboundRequestId};
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, PeerId, Swarm, gossipsub, identify, kad, mdns, ping};
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::address_filter::allowed_in_open_mode;
use crate::behaviour::{MeshBehaviour, MeshBehaviourEvent};
use crate::codec::Frame;
use crate::config::MeshConfig;
use crate::envelope::{self, EnvelopeError};
use crate::error::{MeshError, RequestError};
use crate::handle::{Command, InboundRequest, Responder};
use crate::local_health::{LocalHealth, Trouble};
use crate::membership::{
    GossipMessage, Heartbeat, MAX_HEARTBEAT_ADDRS, MemberState, MembershipChange, NodeInfo, Rumor,
    View,
};
use crate::metrics::{Direction, MeshMetrics, TrafficKind};
use crate::overlay::{self, Ring};
use crate::probe::{self, ProbePurpose};
use crate::protocol::ShoalProtocol;
use crate::reconsider::Reconsider;
use crate::ring_link::LinkFailure;
use crate::roster::RosterSync;
use crate::streams::StreamLeases;

/// How often thresholds are checked.
const TICK: Duration = Duration::from_millis(100);
/// A full heartbeat goes out at least this often (beats in between carry only its version).
const FULL_HEARTBEAT_EVERY: Duration = Duration::from_secs(30);
/// After a start or a change of what is announced, heartbeats stay full this long, so that peers
/// whose gossip links were still forming get the announcement without having to fetch it.
pub(crate) const FULL_AFTER_CHANGE: Duration = Duration::from_secs(3);

type Reply = oneshot::Sender<Result<Vec<u8>, RequestError>>;
pub(crate) type RrEvent = request_response::Event<Frame, Vec<u8>>;

/// Owns the Swarm and everything only the Swarm's owner may touch.
pub(crate) struct EventLoop {
    pub(crate) swarm: Swarm<MeshBehaviour>,
    /// Signs this agent's gossip (see `envelope`).
    pub(crate) keypair: libp2p::identity::Keypair,
    pub(crate) config: MeshConfig,
    pub(crate) commands: mpsc::Receiver<Command>,
    /// For responders; weak, so that dropping every handle ends the loop.
    pub(crate) command_sender: mpsc::WeakSender<Command>,
    pub(crate) changes: broadcast::Sender<MembershipChange>,
    pub(crate) view: View,
    pub(crate) topic: gossipsub::IdentTopic,
    pub(crate) info: NodeInfo,
    pub(crate) seq: u64,
    pub(crate) consumers: HashMap<ShoalProtocol, mpsc::Sender<InboundRequest>>,
    pub(crate) pending: HashMap<(ShoalProtocol, OutboundRequestId), Reply>,
    pub(crate) probes: HashMap<OutboundRequestId, ProbePurpose>,
    pub(crate) metrics: MeshMetrics,
    pub(crate) libp2p_metrics: libp2p::metrics::Metrics,
    pub(crate) probe_cursor: usize,
    pub(crate) last_join_attempt: Instant,
    pub(crate) last_top_up: Instant,
    /// Version of the last full heartbeat published, and when.
    pub(crate) announced: Option<(u64, Instant)>,
    /// Heartbeats are full until then (see [`FULL_AFTER_CHANGE`]).
    pub(crate) full_until: Instant,
    /// Members whose full heartbeat is being fetched, since when (bounded by the view's size).
    pub(crate) fetching: HashMap<PeerId, Instant>,
    pub(crate) bootstrapped: bool,
    /// Whether this agent still needs a joiner's roster (see `roster`).
    pub(crate) roster: RosterSync,
    pub(crate) last_tick: Instant,
    /// This agent's ring neighbours (see `overlay`).
    pub(crate) ring: Ring,
    /// When the last heartbeat went out.
    pub(crate) last_beat: Option<Instant>,
    /// When each peer last exchanged a shoal request with us (bounded by the connections).
    pub(crate) last_used: HashMap<PeerId, Instant>,
    /// The peers with a stream open (raft append lanes, proxied connections): in use, whatever
    /// `last_used` says.
    pub(crate) leases: StreamLeases,
    /// When the newest connection to each peer opened (bounded by the connections).
    pub(crate) opened: HashMap<PeerId, Instant>,
    /// Members this agent declared dead itself, asked again for a while (see `reconsider`).
    pub(crate) reconsider: Reconsider,
    /// When this agent last refuted a death on request.
    pub(crate) last_refuted: Option<Instant>,
    /// How far this agent trusts its own sense of time (see `local_health`).
    pub(crate) health: LocalHealth,
}

impl EventLoop {
    /// Runs until shutdown (or until every handle is dropped).
    pub(crate) async fn run(mut self) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut heartbeat = tokio::time::interval(self.config.heartbeat_interval);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                event = self.swarm.select_next_some() => self.on_swarm_event(event),
                command = self.commands.recv() => match command {
                    Some(Command::Shutdown { reply }) => {
                        self.leave().await;
                        let _ = reply.send(());
                        return;
                    }
                    Some(command) => self.on_command(command),
                    None => {
                        self.leave().await;
                        return;
                    }
                },
                _ = heartbeat.tick() => self.on_heartbeat_tick(),
                _ = tick.tick() => self.on_tick(),
            }
        }
    }

    /// Announces Left and lets it go out before the connections close.
    async fn leave(&mut self) {
        self.seq += 1;
        let message = GossipMessage::Leave { seq: self.seq };
        self.publish(&message);
        let linger = tokio::time::sleep(self.config.shutdown_linger);
        tokio::pin!(linger);
        loop {
            tokio::select! {
                _ = &mut linger => break,
                event = self.swarm.select_next_some() => self.on_swarm_event(event),
            }
        }
        let peers: Vec<PeerId> = self.swarm.connected_peers().copied().collect();
        for peer in peers {
            let _ = self.swarm.disconnect_peer_id(peer);
        }
        tracing::info!(peer = %self.swarm.local_peer_id(), "mesh stopped");
    }

    fn on_command(&mut self, command: Command) {
        match command {
            Command::Request {
                peer,
                protocol,
                payload,
                reply,
            } => self.send_request(peer, protocol, payload, reply),
            Command::Respond {
                protocol,
                channel,
                payload,
            } => self.send_response(protocol, channel, payload),
            Command::Serve { protocol, reply } => {
                let answer = if self
                    .consumers
                    .get(&protocol)
                    .is_some_and(|tx| !tx.is_closed())
                {
                    Err(MeshError::AlreadyServed(protocol))
                } else {
                    let (tx, rx) = mpsc::channel(self.config.inbound_buffer);
                    self.consumers.insert(protocol, tx);
                    Ok(rx)
                };
                let _ = reply.send(answer);
            }
            Command::Members { reply } => {
                let _ = reply.send(self.view.members());
            }
            Command::SetLocalInfo { info, reply } => {
                let changed = self.info != info;
                self.info = info;
                if changed {
                    self.publish_heartbeat();
                }
                let _ = reply.send(());
            }
            Command::Dial { addr, reply } => {
                let answer = self.dial_addr(addr);
                let _ = reply.send(answer);
            }
            Command::ListenAddrs { reply } => {
                let local = *self.swarm.local_peer_id();
                let addrs = self
                    .swarm
                    .listeners()
                    .map(|a| a.clone().with(Protocol::P2p(local)))
                    .collect();
                let _ = reply.send(addrs);
            }
            Command::ConnectedPeers { reply } => {
                let _ = reply.send(self.swarm.connected_peers().copied().collect());
            }
            Command::Shutdown { reply } => {
                // Handled in `run`; unreachable here, answer anyway.
                let _ = reply.send(());
            }
        }
    }

    pub(crate) fn dial_seed(&mut self, addr: Multiaddr) -> Result<(), MeshError> {
        self.dial_addr(addr)
    }

    pub(crate) fn dial_addr(&mut self, addr: Multiaddr) -> Result<(), MeshError> {
        if self.config.token.is_none() && !allowed_in_open_mode(&addr) {
            return Err(MeshError::Dial {
                addr,
                reason: "not a loopback, private or link-local address (open mode)".to_owned(),
            });
        }
        if let Some(Protocol::P2p(peer)) = addr.iter().last() {
            let bare: Multiaddr = addr
                .iter()
                .filter(|p| !matches!(p, Protocol::P2p(_)))
                .collect();
            self.swarm.behaviour_mut().kad.add_address(&peer, bare);
        }
        self.swarm.dial(addr.clone()).map_err(|e| MeshError::Dial {
            addr,
            reason: e.to_string(),
        })
    }

    pub(crate) fn known_addrs(&self, peer: &PeerId) -> Vec<Multiaddr> {
        self.view
            .get(peer)
            .map(|m| m.addrs.clone())
            .unwrap_or_default()
    }

    fn send_request(
        &mut self,
        peer: PeerId,
        protocol: ShoalProtocol,
        payload: Vec<u8>,
        reply: Reply,
    ) {
        if peer == *self.swarm.local_peer_id() {
            let _ = reply.send(Err(RequestError::Unreachable(
                "cannot request self".to_owned(),
            )));
            return;
        }
        self.metrics
            .message(protocol.into(), Direction::Out, payload.len());
        self.last_used.insert(peer, Instant::now());
        let addrs = self.known_addrs(&peer);
        let id = self
            .swarm
            .behaviour_mut()
            .rr(protocol)
            .send_request_with_addresses(&peer, Frame::Data(payload), addrs);
        self.pending.insert((protocol, id), reply);
    }

    fn send_response(
        &mut self,
        protocol: ShoalProtocol,
        channel: request_response::ResponseChannel<Vec<u8>>,
        payload: Vec<u8>,
    ) {
        let limit = protocol.max_response_bytes();
        if payload.len() > limit {
            tracing::warn!(%protocol, size = payload.len(), limit, "response too large; not sent");
            return;
        }
        let size = payload.len();
        if self
            .swarm
            .behaviour_mut()
            .rr(protocol)
            .send_response(channel, payload)
            .is_ok()
        {
            self.metrics.message(protocol.into(), Direction::Out, size);
        } else {
            tracing::debug!(%protocol, "response after the request was gone");
        }
    }

    fn on_swarm_event(&mut self, event: SwarmEvent<MeshBehaviourEvent>) {
        self.libp2p_metrics.record(&event);
        match event {
            SwarmEvent::Behaviour(event) => self.on_behaviour_event(event),
            SwarmEvent::ConnectionEstablished { peer_id, .. } => {
                self.opened.insert(peer_id, Instant::now());
                self.ask_roster(peer_id, Instant::now());
                if self.ring.watched.contains(&peer_id) {
                    // Judge a watched member from the moment its pings can flow.
                    self.view.start_watching(&peer_id, Instant::now());
                }
                self.metrics
                    .set_connected(self.swarm.connected_peers().count());
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                num_established,
                ..
            } => {
                if num_established == 0 {
                    self.last_used.remove(&peer_id);
                    self.opened.remove(&peer_id);
                }
                self.metrics
                    .set_connected(self.swarm.connected_peers().count());
            }
            SwarmEvent::IncomingConnectionError {
                send_back_addr,
                error,
                ..
            } => {
                tracing::debug!(%send_back_addr, %error, "inbound connection failed");
            }
            SwarmEvent::OutgoingConnectionError { peer_id, error, .. } => {
                tracing::debug!(?peer_id, %error, "outbound connection failed");
            }
            _ => {}
        }
    }

    fn on_behaviour_event(&mut self, event: MeshBehaviourEvent) {
        match event {
            MeshBehaviourEvent::Limits(never) | MeshBehaviourEvent::Filter(never) => match never {},
            MeshBehaviourEvent::Links(event) => match event.result {
                Ok(_) => self.evidence(event.peer),
                Err(failure) => {
                    tracing::debug!(peer = %event.peer, %failure, "link ping failed");
                    if matches!(failure, LinkFailure::Timeout) {
                        self.health.late_echo(event.peer, Instant::now());
                    }
                }
            },
            MeshBehaviourEvent::Identify(event) => {
                self.libp2p_metrics.record(&event);
                if let identify::Event::Received { peer_id, info, .. } = event {
                    // Not for Kademlia: its table holds only the seeds and mDNS finds. Every
                    // insertion into a table under 20 entries starts a bootstrap query whose
                    // dials fed more insertions: one run of 50 agents kept opening 6
                    // connections per agent per second that way, long after convergence.
                    // Joiners learn the members from rosters and gossip instead.
                    self.learn_addrs(peer_id, info.listen_addrs, false);
                }
            }
            MeshBehaviourEvent::Ping(event) => {
                self.libp2p_metrics.record(&event);
                if event.result.is_ok() {
                    self.evidence(event.peer);
                }
                let _: &ping::Event = &event;
            }
            MeshBehaviourEvent::Kad(event) => {
                self.libp2p_metrics.record(&event);
                // Kademlia's routing updates are not dialled: its own queries connect, and
                // `top_up_connections` keeps this agent at `target_peers` at a bounded pace.
                let _: &kad::Event = &event;
            }
            MeshBehaviourEvent::Mdns(mdns::Event::Discovered(found)) => {
                for (peer, addr) in found {
                    self.learn_addrs(peer, vec![addr], true);
                    self.maybe_connect(peer, "mdns");
                }
            }
            MeshBehaviourEvent::Mdns(mdns::Event::Expired(_)) => {}
            MeshBehaviourEvent::Gossipsub(event) => {
                self.libp2p_metrics.record(&event);
                if let gossipsub::Event::Message {
                    propagation_source,
                    message_id,
                    message,
                } = event
                {
                    // The forwarding peer just spoke to us over its own connection.
                    self.evidence(propagation_source);
                    let verdict = self.on_gossip(propagation_source, message);
                    self.swarm
                        .behaviour_mut()
                        .gossipsub
                        .report_message_validation_result(
                            &message_id,
                            &propagation_source,
                            verdict,
                        );
                }
            }
            MeshBehaviourEvent::Raft(event) => self.on_rr_event(ShoalProtocol::Raft, event),
            MeshBehaviourEvent::Dispatch(event) => self.on_rr_event(ShoalProtocol::Dispatch, event),
            MeshBehaviourEvent::Control(event) => self.on_rr_event(ShoalProtocol::Control, event),
            MeshBehaviourEvent::Probe(event) => self.on_probe_event(event),
            MeshBehaviourEvent::Streams(()) => {}
        }
    }

    /// Folds one distinct gossip message in; the verdict decides whether gossipsub forwards it.
    fn on_gossip(
        &mut self,
        via: PeerId,
        message: gossipsub::Message,
    ) -> gossipsub::MessageAcceptance {
        let size = message.data.len();
        self.metrics
            .message(TrafficKind::Gossip, Direction::In, size);
        let (source, body) = match envelope::open(&message.data) {
            Ok(opened) => opened,
            Err(e) => {
                let reason = match e {
                    EnvelopeError::Malformed => "gossip_malformed",
                    EnvelopeError::BadSignature => "gossip_bad_signature",
                };
                self.metrics.rejected(reason);
                tracing::warn!(reason, size, "gossip message rejected");
                return gossipsub::MessageAcceptance::Reject;
            }
        };
        if source == *self.swarm.local_peer_id() {
            return gossipsub::MessageAcceptance::Ignore;
        }
        let now = Instant::now();
        let changes = match probe::decode::<GossipMessage>(&body) {
            Some(GossipMessage::Heartbeat(hb)) => {
                let changes = self.view.on_heartbeat(source, &hb, now);
                let learned = changes.iter().any(|c| {
                    matches!(
                        c,
                        MembershipChange::Joined(_) | MembershipChange::Updated { .. }
                    )
                });
                if learned {
                    // Not dialled here: a burst of new members would all pass the
                    // `target_peers` check before any dial completes.
                    self.learn_addrs(source, hb.decoded_addrs(), false);
                }
                changes
            }
            Some(GossipMessage::Beat { seq, version }) => {
                let outcome = self.view.on_beat(source, seq, version, now);
                if outcome.fetch {
                    self.fetch_heartbeat(source, version, via, now);
                }
                outcome.changes
            }
            Some(GossipMessage::Leave { seq }) => self.view.on_leave(source, seq, now),
            Some(GossipMessage::Rumor { rumor, target, seq }) => {
                return self.on_rumor(source, rumor, &target, seq, now);
            }
            None => {
                self.metrics.rejected("gossip_malformed");
                tracing::warn!(peer = %source, size, "malformed heartbeat ignored");
                return gossipsub::MessageAcceptance::Reject;
            }
        };
        self.emit(changes);
        gossipsub::MessageAcceptance::Accept
    }

    /// Folds a watcher's rumor in; a rumor about this agent is refuted at once with a newer
    /// heartbeat. Only rumors that changed something here are forwarded.
    fn on_rumor(
        &mut self,
        accuser: PeerId,
        rumor: Rumor,
        target: &[u8],
        seq: u64,
        now: Instant,
    ) -> gossipsub::MessageAcceptance {
        let Ok(target) = PeerId::from_bytes(target) else {
            self.metrics.rejected("gossip_malformed");
            tracing::warn!(peer = %accuser, "rumor about a malformed peer id ignored");
            return gossipsub::MessageAcceptance::Reject;
        };
        if target == *self.swarm.local_peer_id() {
            tracing::info!(%accuser, ?rumor, "refuting a rumor about this agent");
            self.health.trouble(Trouble::Accused, now);
            self.publish_heartbeat();
            return gossipsub::MessageAcceptance::Ignore;
        }
        let watched = self.ring.watched.contains(&target);
        let changes = self.view.on_rumor(target, rumor, seq, watched, now);
        if changes.is_empty() {
            return gossipsub::MessageAcceptance::Ignore;
        }
        tracing::debug!(%accuser, %target, ?rumor, "rumor accepted");
        self.emit(changes);
        gossipsub::MessageAcceptance::Accept
    }

    /// Tells everyone that a member this agent watches went silent.
    fn spread_rumor(&mut self, rumor: Rumor, target: PeerId) {
        let seq = self.view.get(&target).map_or(0, |m| m.seq);
        let message = GossipMessage::Rumor {
            rumor,
            target: target.to_bytes(),
            seq,
        };
        self.publish(&message);
    }

    pub(crate) fn evidence(&mut self, peer: PeerId) {
        let changes = self.view.on_evidence(&peer, Instant::now());
        self.emit(changes);
    }

    pub(crate) fn emit(&mut self, changes: Vec<MembershipChange>) {
        if changes.is_empty() {
            return;
        }
        for change in changes {
            match &change {
                MembershipChange::Joined(m) => tracing::debug!(peer = %m.peer_id, "member joined"),
                MembershipChange::Dead(p) => tracing::info!(peer = %p, "member dead"),
                MembershipChange::Left(p) => tracing::info!(peer = %p, "member left"),
                MembershipChange::Suspect(p) => tracing::debug!(
                    peer = %p,
                    watched = self.ring.watched.contains(p),
                    connected = self.swarm.is_connected(p),
                    "member suspect"
                ),
                _ => {}
            }
            // No subscriber is fine: the view stays authoritative.
            let _ = self.changes.send(change);
        }
        for state in MemberState::ALL {
            self.metrics.set_peers(state, self.view.count(state));
        }
    }

    fn publish(&mut self, message: &GossipMessage) {
        let Some(data) = envelope::seal(&self.keypair, probe::encode(message)) else {
            tracing::warn!("cannot sign a gossip message");
            return;
        };
        let size = data.len();
        match self
            .swarm
            .behaviour_mut()
            .gossipsub
            .publish(self.topic.clone(), data)
        {
            Ok(_) => self
                .metrics
                .message(TrafficKind::Gossip, Direction::Out, size),
            Err(gossipsub::PublishError::NoPeersSubscribedToTopic) => {}
            Err(e) => tracing::debug!(%e, "heartbeat not published"),
        }
    }

    /// Publishes the heartbeat when its period is up: the base interval in small clusters,
    /// longer in large ones (see `overlay::beat_period`), and every interval for a while after
    /// what this agent announces changed.
    fn on_heartbeat_tick(&mut self) {
        let now = Instant::now();
        let members = self.view.count(MemberState::Alive) + self.view.count(MemberState::Suspect);
        let period = overlay::jittered(
            overlay::beat_period(self.config.heartbeat_interval, members),
            self.swarm.local_peer_id(),
            self.seq,
        );
        // Ticks are not exact: a beat is due a little before the full period has passed.
        let due = self.last_beat.is_none_or(|at| {
            now.saturating_duration_since(at) + self.config.heartbeat_interval / 4 >= period
        });
        if due || now < self.full_until {
            self.publish_heartbeat();
        }
    }

    /// Publishes a small beat, or the full heartbeat when what we announce changed or the last
    /// full one is old.
    pub(crate) fn publish_heartbeat(&mut self) {
        self.seq += 1;
        let heartbeat = self.local_heartbeat();
        let version = heartbeat.version();
        let now = Instant::now();
        let changed = self
            .announced
            .is_none_or(|(announced, _)| announced != version);
        if changed {
            self.full_until = now + FULL_AFTER_CHANGE;
        }
        let stale = self
            .announced
            .is_none_or(|(_, at)| now.saturating_duration_since(at) >= FULL_HEARTBEAT_EVERY);
        let full = changed || stale || now < self.full_until;
        self.last_beat = Some(now);
        let message = if full {
            self.announced = Some((version, now));
            GossipMessage::Heartbeat(heartbeat)
        } else {
            GossipMessage::Beat {
                seq: self.seq,
                version,
            }
        };
        self.publish(&message);
    }

    /// What this agent announces, with its current sequence number.
    pub(crate) fn local_heartbeat(&self) -> Heartbeat {
        Heartbeat {
            seq: self.seq,
            addrs: self.announced_addrs().iter().map(|a| a.to_vec()).collect(),
            info: self.info.clone(),
        }
    }

    /// The advertise addresses if set, else the concrete listen addresses.
    fn announced_addrs(&self) -> Vec<Multiaddr> {
        let mut addrs: Vec<Multiaddr> = if self.config.advertise.is_empty() {
            self.swarm.listeners().cloned().collect()
        } else {
            self.config.advertise.clone()
        };
        addrs.truncate(MAX_HEARTBEAT_ADDRS);
        addrs
    }

    fn on_tick(&mut self) {
        let now = Instant::now();
        let gap = now.saturating_duration_since(self.last_tick);
        self.last_tick = now;
        if gap > TICK * 2 {
            self.view.forgive(gap - TICK, now);
            self.health.trouble(Trouble::Starved, now);
        }
        self.health.recover(now);
        if gap > TICK * 5 {
            tracing::warn!(?gap, "mesh event loop was starved");
        }
        self.update_ring(now);
        let watched: HashSet<PeerId> = self.ring.watched.iter().copied().collect();
        let members = self.view.count(MemberState::Alive) + self.view.count(MemberState::Suspect);
        let slack = overlay::unwatched_slack(self.config.heartbeat_interval, members);
        let tick = self.view.tick(now, &watched, slack, self.health.stretch());
        // A watcher's suspicion stays local while its probes run: only a death that no probe
        // vouched against is spread.
        for suspect in tick.new_suspects {
            self.probe(suspect);
        }
        for dead in tick.new_dead {
            if watched.contains(&dead) {
                tracing::debug!(peer = %dead, connected = self.swarm.is_connected(&dead),
                    local_health = self.health.score(),
                    "a watched member went silent and no probe vouched for it");
                self.spread_rumor(Rumor::Dead, dead);
                self.reconsider
                    .declared_dead(dead, now, self.config.max_members);
            }
        }
        self.emit(tick.changes);
        self.reconsider_the_dead(now);
        self.retry_roster(now);
        self.rejoin_if_alone();
        self.top_up_connections(now);
    }

    pub(crate) fn reject_peer(
        &mut self,
        peer: PeerId,
        reason: &'static str,
        detail: &dyn std::fmt::Display,
    ) {
        self.metrics.rejected(reason);
        tracing::warn!(%peer, reason, %detail, "misbehaving peer disconnected");
        let _ = self.swarm.disconnect_peer_id(peer);
    }

    fn on_rr_event(&mut self, protocol: ShoalProtocol, event: RrEvent) {
        match event {
            request_response::Event::Message { peer, message, .. } => match message {
                request_response::Message::Request {
                    request: Frame::Data(payload),
                    channel,
                    ..
                } => self.deliver(protocol, peer, payload, channel),
                request_response::Message::Request {
                    request: Frame::Rejected(reason),
                    ..
                } => self.reject_peer(peer, "request_malformed", &reason),
                request_response::Message::Response {
                    request_id,
                    response,
                } => {
                    self.metrics
                        .message(protocol.into(), Direction::In, response.len());
                    if let Some(reply) = self.pending.remove(&(protocol, request_id)) {
                        let _ = reply.send(Ok(response));
                    }
                }
            },
            request_response::Event::OutboundFailure {
                peer,
                request_id,
                error,
                ..
            } => {
                if let Some(e) = malformed_response(&error) {
                    self.reject_peer(peer, "response_malformed", e);
                }
                if let Some(reply) = self.pending.remove(&(protocol, request_id)) {
                    let _ = reply.send(Err(classify(error)));
                }
            }
            request_response::Event::InboundFailure { peer, error, .. } => {
                match malformed_request(&error) {
                    Some(e) => self.reject_peer(peer, "request_malformed", e),
                    None => tracing::debug!(%peer, %protocol, %error, "inbound request failed"),
                }
            }
            request_response::Event::ResponseSent { .. } => {}
        }
    }

    /// Hands an inbound request to its consumer without waiting.
    fn deliver(
        &mut self,
        protocol: ShoalProtocol,
        peer: PeerId,
        payload: Vec<u8>,
        channel: request_response::ResponseChannel<Vec<u8>>,
    ) {
        self.metrics
            .message(protocol.into(), Direction::In, payload.len());
        self.last_used.insert(peer, Instant::now());
        let (Some(consumer), Some(commands)) =
            (self.consumers.get(&protocol), self.command_sender.upgrade())
        else {
            self.metrics.rejected("unserved");
            tracing::debug!(%peer, %protocol, "no consumer; request dropped");
            return;
        };
        let request = InboundRequest {
            peer,
            protocol,
            payload,
            responder: Responder { channel, commands },
        };
        if let Err(e) = consumer.try_send(request) {
            let reason = match e {
                mpsc::error::TrySendError::Full(_) => "overloaded",
                mpsc::error::TrySendError::Closed(_) => "unserved",
            };
            self.metrics.rejected(reason);
            tracing::debug!(%peer, %protocol, reason, "request dropped");
        }
    }
}

/// A malformed inbound exchange. The codec already turns malformed, truncated and oversized
/// requests into [`Frame::Rejected`]; an end of file here is a remote that gave up (its request
/// timed out, or its connection closed), which is no misbehaviour.
fn is_malformed(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::InvalidData
}

/// The error of a failed inbound exchange, if it says the peer sent a malformed request.
pub(crate) fn malformed_request(error: &InboundFailure) -> Option<&io::Error> {
    match error {
        InboundFailure::Io(e) if is_malformed(e) => Some(e),
        _ => None,
    }
}

/// The error of a failed outbound exchange, if it says the peer sent a malformed response.
pub(crate) fn malformed_response(error: &OutboundFailure) -> Option<&io::Error> {
    match error {
        OutboundFailure::Io(e) if is_malformed(e) => Some(e),
        _ => None,
    }
}

/// Maps a libp2p failure to the handle's error.
fn classify(error: OutboundFailure) -> RequestError {
    match error {
        OutboundFailure::DialFailure => RequestError::Unreachable("dial failed".to_owned()),
        OutboundFailure::Timeout => RequestError::Timeout,
        OutboundFailure::ConnectionClosed => {
            RequestError::Remote("connection closed before the response".to_owned())
        }
        OutboundFailure::UnsupportedProtocols => {
            RequestError::Remote("the peer does not speak this protocol".to_owned())
        }
        OutboundFailure::Io(e) => RequestError::Remote(e.to_string()),
    }
}
