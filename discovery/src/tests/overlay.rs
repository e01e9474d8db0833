//! The overlay at work: connections stay bounded when the cluster outgrows the high-water
//! mark, and a crash that only its ring watchers can see is learned by everyone else from
//! their rumor.

use std::time::{Duration, Instant};

use super::{eventually, in_state, joined_agents};
use crate::MemberState;

#[tokio::test(flavor = "multi_thread")]
async fn connections_stay_bounded_and_rumors_spread_a_crash() -> anyhow::Result<()> {
    const AGENTS: usize = 16;
    let tweak = |c: &mut crate::MeshConfig| {
        c.target_peers = 4;
        c.peers_high_water = 6;
    };
    let mut agents = joined_agents(AGENTS, tweak, Duration::from_secs(10)).await?;

    // The seed was dialled by everyone; once the new-connection grace is over it keeps only its
    // ring neighbours, its gossip mesh links and what it uses, never the full mesh.
    let seed_mesh = agents[0].mesh.clone();
    let pruned = eventually(Duration::from_secs(15), || {
        let mesh = seed_mesh.clone();
        async move {
            mesh.connected_peers()
                .await
                .is_ok_and(|p| p.len() < AGENTS - 3)
        }
    })
    .await;
    let connected = seed_mesh.connected_peers().await?.len();
    assert!(pruned, "the seed still has {connected} connections");

    // Crash one agent: everyone, watcher or not, sees it dead within dead_after + 1 s.
    let victim = agents.remove(5);
    let victim_id = victim.mesh.local_peer_id();
    victim.mesh.kill();
    let deadline = Instant::now() + Duration::from_secs(3);
    for a in &agents {
        let mesh = a.mesh.clone();
        let left = deadline.saturating_duration_since(Instant::now());
        let dead = eventually(left, || {
            let mesh = mesh.clone();
            async move {
                in_state(&mesh, MemberState::Dead)
                    .await
                    .contains(&victim_id)
            }
        })
        .await;
        assert!(dead, "{} did not see the crash", a.mesh.local_peer_id());
    }
    // And nobody else was taken for dead on the way.
    for a in &agents {
        let alive = in_state(&a.mesh, MemberState::Alive).await.len();
        assert_eq!(alive, AGENTS - 2, "{}", a.mesh.local_peer_id());
    }
    for a in &agents {
        let _ = a.mesh.shutdown().await;
    }
    Ok(())
}
