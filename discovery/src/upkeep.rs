//! Connection upkeep: which peers this agent stays connected to. Addresses learned from
//! heartbeats, Kademlia and identify go to the swarm (filtered in open mode); ring neighbours are
//! always dialled, other alive members while below `target_peers`; idle connections above
//! `peers_high_water` are closed, least recently used first; an agent left alone dials its seeds
//! again.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::{Multiaddr, PeerId};

use crate::address_filter::allowed_in_open_mode;
use crate::event_loop::EventLoop;
use crate::overlay;

/// How often an agent with fewer connections than it aims for dials more known members.
const TOP_UP_EVERY: Duration = Duration::from_secs(1);
/// A connection this young is never closed for being unused.
const NEW_CONNECTION_GRACE: Duration = Duration::from_secs(5);
/// How often seeds are dialled again while no peer is connected.
const REJOIN_EVERY: Duration = Duration::from_secs(2);

impl EventLoop {
    /// Records addresses of `peer` (filtered in open mode) for dialing and, when `for_kad`, for
    /// Kademlia. Members learned from gossip are not fed to Kademlia: while its routing table
    /// holds fewer than 20 peers every insertion starts a bootstrap query, and those queries
    /// would connect every agent to every other one.
    pub(crate) fn learn_addrs(&mut self, peer: PeerId, addrs: Vec<Multiaddr>, for_kad: bool) {
        let open = self.config.token.is_none();
        for addr in addrs {
            if open && !allowed_in_open_mode(&addr) {
                continue;
            }
            if for_kad && self.kad_wants(&peer) {
                self.swarm
                    .behaviour_mut()
                    .kad
                    .add_address(&peer, addr.clone());
            }
            self.swarm.add_peer_address(peer, addr);
        }
        if !self.bootstrapped && self.swarm.behaviour_mut().kad.bootstrap().is_ok() {
            self.bootstrapped = true;
        }
    }

    /// Whether Kademlia's routing table should learn `peer`: it already holds it, or holds fewer
    /// than `target_peers` entries (a small table is enough to answer a newcomer's lookup).
    fn kad_wants(&mut self, peer: &PeerId) -> bool {
        let kad = &mut self.swarm.behaviour_mut().kad;
        let mut entries = 0;
        for bucket in kad.kbuckets() {
            if bucket.iter().any(|e| e.node.key.preimage() == peer) {
                return true;
            }
            entries += bucket.num_entries();
        }
        entries < self.config.target_peers
    }

    /// Dials `peer` while this agent has fewer connections than it aims for.
    pub(crate) fn maybe_connect(&mut self, peer: PeerId, reason: &'static str) {
        if self.swarm.connected_peers().count() < self.config.target_peers {
            self.connect(peer, reason);
        }
    }

    /// Dials `peer` unless connected or being dialled already.
    pub(crate) fn connect(&mut self, peer: PeerId, reason: &'static str) {
        if peer == *self.swarm.local_peer_id() || self.swarm.is_connected(&peer) {
            return;
        }
        tracing::trace!(target: "shoal_discovery::dial", %peer, reason, "dialling");
        // One address at a time: the same address known twice (from the heartbeat and from
        // Kademlia) would otherwise be dialled twice at once, and the loser's half-done
        // handshake costs both ends.
        let opts = DialOpts::peer_id(peer)
            .condition(PeerCondition::DisconnectedAndNotDialing)
            .addresses(self.known_addrs(&peer))
            .extend_addresses_through_behaviour()
            .override_dial_concurrency_factor(std::num::NonZeroU8::MIN)
            .build();
        if let Err(e) = self.swarm.dial(opts) {
            tracing::trace!(%peer, %e, "dial skipped");
        }
    }

    /// Closes the connections nobody uses (no request lately, no stream open) while above
    /// `peers_high_water`, least recently used first. Gossipsub's and ping's long-lived streams would otherwise keep every connection
    /// ever made open, and each costs pings, gossip and CPU.
    pub(crate) fn prune_connections(&mut self, now: Instant) {
        let connected: Vec<PeerId> = self.swarm.connected_peers().copied().collect();
        let excess = connected.len().saturating_sub(self.config.peers_high_water);
        if excess == 0 {
            return;
        }
        let in_use = self.config.request_timeout * 3;
        let neighbours = self.ring.neighbours();
        let gossip: HashSet<PeerId> = self
            .swarm
            .behaviour()
            .gossipsub
            .all_mesh_peers()
            .copied()
            .collect();
        let mut idle: Vec<(Option<Instant>, PeerId)> = connected
            .into_iter()
            .filter(|p| !neighbours.contains(p) && !gossip.contains(p) && !self.leases.held(p))
            .filter(|p| {
                // A joiner needs a moment to learn the others through its first connection.
                self.opened
                    .get(p)
                    .is_none_or(|at| now.saturating_duration_since(*at) >= NEW_CONNECTION_GRACE)
            })
            .map(|p| (self.last_used.get(&p).copied(), p))
            .filter(|(used, _)| used.is_none_or(|at| now.saturating_duration_since(at) >= in_use))
            .collect();
        idle.sort();
        for (_, peer) in idle.into_iter().take(excess) {
            tracing::trace!(%peer, "closing an unused connection");
            let _ = self.swarm.disconnect_peer_id(peer);
        }
    }

    /// Recomputes the ring neighbours from the view: a member this agent starts to watch gets a
    /// fresh silence clock, the neighbours' connections are kept open, and missing ones dialled.
    pub(crate) fn update_ring(&mut self, now: Instant) {
        let local = *self.swarm.local_peer_id();
        let ring = overlay::ring(local, &self.view.live_peers(), self.config.watchers);
        if ring == self.ring {
            return;
        }
        for peer in ring
            .watched
            .iter()
            .filter(|p| !self.ring.watched.contains(p))
        {
            self.view.start_watching(peer, now);
        }
        self.ring = ring;
        let neighbours = self.ring.neighbours();
        for peer in &neighbours {
            self.connect(*peer, "new ring neighbour");
        }
        let watched = self.ring.watched.iter().copied().collect();
        self.swarm
            .behaviour_mut()
            .links
            .set_links(neighbours, watched);
    }

    /// Dials alive members we are not connected to: ring neighbours always, others while below
    /// `target_peers` (idle connections close, and gossip needs a few links per agent).
    pub(crate) fn top_up_connections(&mut self, now: Instant) {
        if now.saturating_duration_since(self.last_top_up) < TOP_UP_EVERY {
            return;
        }
        self.last_top_up = now;
        self.prune_connections(now);
        for peer in self.ring.neighbours() {
            self.connect(peer, "ring neighbour");
        }
        let connected = self.swarm.connected_peers().count();
        let missing = self.config.target_peers.saturating_sub(connected);
        if missing == 0 {
            return;
        }
        let local = *self.swarm.local_peer_id();
        let unconnected: Vec<PeerId> = self
            .view
            .alive_except(&local)
            .into_iter()
            .filter(|p| !self.swarm.is_connected(p))
            .collect();
        let candidates = overlay::by_affinity(&local, unconnected);
        if candidates.is_empty() {
            return;
        }
        let start = self.probe_cursor % candidates.len();
        for peer in candidates
            .iter()
            .cycle()
            .skip(start)
            .take(missing.min(candidates.len()))
        {
            self.maybe_connect(*peer, "top-up");
        }
        self.probe_cursor = self.probe_cursor.wrapping_add(missing);
    }

    pub(crate) fn rejoin_if_alone(&mut self) {
        if self.config.join.is_empty()
            || self.swarm.connected_peers().next().is_some()
            || self.last_join_attempt.elapsed() < REJOIN_EVERY
        {
            return;
        }
        self.last_join_attempt = Instant::now();
        for addr in self.config.join.clone() {
            if let Err(e) = self.dial_addr(addr) {
                tracing::debug!(%e, "seed dial failed");
            }
        }
    }
}
