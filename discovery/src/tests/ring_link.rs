//! `RingLinks` alone on two bare Swarms: a watcher pings only the member it watches, the
//! watched member only echoes, and a kept link stays open past the idle timeout until it is
//! released.

use std::collections::HashSet;
use std::time::Duration;

use futures::StreamExt;
use libp2p::identity::Keypair;
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, PeerId, Swarm};
use prometheus_client::registry::Registry;

use crate::ring_link::{LinkEvent, RingLinks};

const INTERVAL: Duration = Duration::from_millis(100);
const IDLE: Duration = Duration::from_millis(300);

fn swarm() -> anyhow::Result<Swarm<RingLinks>> {
    let keypair = Keypair::generate_ed25519();
    let transport = crate::transport::build(&keypair, None, false, &mut Registry::default())?;
    Ok(Swarm::new(
        transport,
        RingLinks::new(INTERVAL, Duration::from_secs(1)),
        keypair.public().to_peer_id(),
        libp2p::swarm::Config::with_tokio_executor().with_idle_connection_timeout(IDLE),
    ))
}

/// What each side saw while both swarms ran for `span`.
#[derive(Default)]
struct Seen {
    watcher_pings: usize,
    watched_pings: usize,
    closed: bool,
}

async fn run_both(a: &mut Swarm<RingLinks>, b: &mut Swarm<RingLinks>, span: Duration) -> Seen {
    let mut seen = Seen::default();
    let deadline = tokio::time::sleep(span);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            _ = &mut deadline => return seen,
            event = a.select_next_some() => match event {
                SwarmEvent::Behaviour(LinkEvent { result, .. }) => {
                    assert!(result.is_ok(), "ping failed: {result:?}");
                    seen.watcher_pings += 1;
                }
                SwarmEvent::ConnectionClosed { .. } => seen.closed = true,
                _ => {}
            },
            event = b.select_next_some() => if let SwarmEvent::Behaviour(_) = event {
                seen.watched_pings += 1;
            },
        }
    }
}

#[tokio::test]
async fn only_the_watcher_pings_and_a_kept_link_outlives_the_idle_timeout() -> anyhow::Result<()> {
    let mut a = swarm()?;
    let mut b = swarm()?;
    b.listen_on("/ip4/127.0.0.1/tcp/0".parse::<Multiaddr>()?)?;
    let addr = loop {
        if let SwarmEvent::NewListenAddr { address, .. } = b.select_next_some().await {
            break address;
        }
    };
    let b_id: PeerId = *b.local_peer_id();
    let a_id: PeerId = *a.local_peer_id();
    // `a` watches `b`; both keep the link (each end closes a connection it does not keep).
    a.behaviour_mut()
        .set_links(HashSet::from([b_id]), HashSet::from([b_id]));
    b.behaviour_mut()
        .set_links(HashSet::from([a_id]), HashSet::new());
    a.dial(addr)?;

    let seen = run_both(&mut a, &mut b, Duration::from_secs(1)).await;
    assert!(
        seen.watcher_pings >= 4,
        "{} pings in 1 s",
        seen.watcher_pings
    );
    assert_eq!(seen.watched_pings, 0, "the watched member pings nobody");
    assert!(!seen.closed, "a kept link outlives the idle timeout");
    assert!(a.is_connected(&b_id));

    a.behaviour_mut().set_links(HashSet::new(), HashSet::new());
    b.behaviour_mut().set_links(HashSet::new(), HashSet::new());
    let seen = run_both(&mut a, &mut b, IDLE * 4).await;
    assert!(
        seen.watcher_pings <= 1,
        "{} pings after release",
        seen.watcher_pings
    );
    assert!(seen.closed, "a released link idles out");
    Ok(())
}
