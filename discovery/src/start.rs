//! [`start`]: builds the identity, transport, behaviours and Swarm, starts listening, then moves
//! the Swarm into a spawned [`EventLoop`] and returns the handle.

use std::collections::HashMap;
use std::sync::Once;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, Swarm, gossipsub};
use prometheus_client::registry::Registry;
use tokio::sync::{broadcast, mpsc};

use crate::behaviour::MeshBehaviour;
use crate::config::MeshConfig;
use crate::error::MeshError;
use crate::event_loop::EventLoop;
use crate::handle::Mesh;
use crate::local_health::LocalHealth;
use crate::membership::{NodeInfo, Thresholds, View};
use crate::metrics::MeshMetrics;
use crate::roster::RosterSync;
use crate::streams::StreamLeases;
use crate::{identity, transport};

/// How long `start` waits for its listeners to come up.
const LISTEN_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a connection that no behaviour needs (not a gossip mesh link, no request in flight)
/// stays open. Kademlia queries connect to many peers; without a short timeout every agent would
/// end up connected to every other one, and each connection costs pings, gossip and CPU.
const IDLE_CONNECTION_TIMEOUT: Duration = Duration::from_secs(10);
/// Capacity of the membership change broadcast. tokio's broadcast allocates every slot up front,
/// each the size of a change (members are boxed, so about that of a peer id): 1024 slots take
/// about 0.1 MB. Subscribers take each change at once, and one that lags re-reads the members.
const CHANGES_CAPACITY: usize = 1024;

static OPEN_MODE_WARNING: Once = Once::new();

/// Starts the mesh: the Swarm is moved into a spawned event loop; returns the handle.
/// libp2p's metrics and the `shoal_mesh_*` families are registered in `registry`.
pub async fn start(
    config: MeshConfig,
    info: NodeInfo,
    registry: &mut Registry,
) -> Result<Mesh, MeshError> {
    config.validate()?;
    let keypair = identity::load_or_create(&config.data_dir)?;
    let peer_id = keypair.public().to_peer_id();
    let psk = config.token.as_deref().map(transport::psk_from_token);
    let transport = transport::build(&keypair, psk, config.quic_enabled(), registry)?;
    let behaviour = MeshBehaviour::new(&keypair, &config)?;
    let mut swarm = Swarm::new(
        transport,
        behaviour,
        peer_id,
        libp2p::swarm::Config::with_tokio_executor()
            .with_idle_connection_timeout(IDLE_CONNECTION_TIMEOUT),
    );
    listen(&mut swarm, &config).await?;
    for addr in &config.advertise {
        swarm.add_external_address(addr.clone());
    }
    let topic = gossipsub::IdentTopic::new(format!("/shoal/{}/heartbeat/1", config.cluster));
    swarm
        .behaviour_mut()
        .gossipsub
        .subscribe(&topic)
        .map_err(|e| MeshError::Behaviour {
            behaviour: "gossipsub",
            reason: e.to_string(),
        })?;
    if config.token.is_none() {
        OPEN_MODE_WARNING.call_once(|| {
            tracing::warn!(
                "mesh in OPEN MODE (no --token): anyone on this LAN (loopback, private and \
                 link-local addresses) may join the cluster; set a token to close it"
            );
        });
    }

    let streams = swarm.behaviour().streams.new_control();
    let (commands_tx, commands_rx) = mpsc::channel(config.command_buffer);
    let (changes, _) = broadcast::channel(CHANGES_CAPACITY);
    let leases = StreamLeases::default();
    let metrics = MeshMetrics::register(registry);
    let thresholds = Thresholds {
        suspect_after: config.suspect_after,
        dead_after: config.dead_after,
        forget_after: config.forget_after,
        max_members: config.max_members,
    };
    let mut event_loop = EventLoop {
        swarm,
        keypair,
        command_sender: commands_tx.downgrade(),
        commands: commands_rx,
        changes: changes.clone(),
        view: View::new(peer_id, thresholds),
        topic,
        info,
        seq: start_seq(),
        consumers: HashMap::new(),
        pending: HashMap::new(),
        probes: HashMap::new(),
        metrics: metrics.clone(),
        libp2p_metrics: libp2p::metrics::Metrics::new(registry),
        probe_cursor: 0,
        last_join_attempt: Instant::now(),
        last_top_up: Instant::now(),
        announced: None,
        full_until: Instant::now(),
        fetching: HashMap::new(),
        bootstrapped: false,
        roster: RosterSync::Needed,
        last_tick: Instant::now(),
        ring: Default::default(),
        last_beat: None,
        last_used: HashMap::new(),
        leases: leases.clone(),
        opened: HashMap::new(),
        reconsider: Default::default(),
        last_refuted: None,
        health: LocalHealth::new(Instant::now()),
        config,
    };
    for addr in event_loop.config.join.clone() {
        if let Err(e) = event_loop.dial_seed(addr) {
            tracing::warn!(%e, "cannot dial seed");
        }
    }
    tracing::info!(%peer_id, "mesh started");
    let span = tracing::info_span!("mesh", local = %peer_id);
    let task = tokio::spawn(tracing::Instrument::instrument(event_loop.run(), span));
    Ok(Mesh {
        peer_id,
        commands: commands_tx,
        changes,
        metrics,
        task: task.abort_handle(),
        streams,
        leases,
    })
}

/// Heartbeat sequence numbers start at the start time, so a restarted agent's go forward.
fn start_seq() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX / 2))
        .unwrap_or(0)
}

fn is_quic(addr: &Multiaddr) -> bool {
    addr.iter()
        .any(|p| matches!(p, Protocol::QuicV1 | Protocol::Quic))
}

/// Starts every listener and waits until each has an address.
async fn listen(swarm: &mut Swarm<MeshBehaviour>, config: &MeshConfig) -> Result<(), MeshError> {
    let mut waiting = HashMap::new();
    for addr in &config.listen {
        if is_quic(addr) && !config.quic_enabled() {
            continue;
        }
        let id = swarm
            .listen_on(addr.clone())
            .map_err(|e| MeshError::Listen {
                addr: addr.clone(),
                reason: e.to_string(),
            })?;
        waiting.insert(id, addr.clone());
    }
    let deadline = tokio::time::Instant::now() + LISTEN_TIMEOUT;
    while !waiting.is_empty() {
        let event = tokio::time::timeout_at(deadline, swarm.select_next_some())
            .await
            .map_err(|_| MeshError::Listen {
                addr: waiting
                    .values()
                    .next()
                    .cloned()
                    .unwrap_or_else(Multiaddr::empty),
                reason: "timed out".to_owned(),
            })?;
        match event {
            SwarmEvent::NewListenAddr { listener_id, .. } => {
                waiting.remove(&listener_id);
            }
            SwarmEvent::ListenerClosed {
                listener_id,
                reason,
                ..
            } => {
                if let Some(addr) = waiting.remove(&listener_id) {
                    return Err(MeshError::Listen {
                        addr,
                        reason: format!("{reason:?}"),
                    });
                }
            }
            SwarmEvent::ListenerError { listener_id, error } => {
                if let Some(addr) = waiting.remove(&listener_id) {
                    return Err(MeshError::Listen {
                        addr,
                        reason: error.to_string(),
                    });
                }
            }
            _ => {}
        }
    }
    Ok(())
}
