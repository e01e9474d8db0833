//! The roster at join: with heartbeats seconds apart, a joiner still sees every member at once
//! (from its first peer's roster), and the members see the joiner at once (its heartbeat rode
//! on the roster question and is handed on in later rosters).

use std::time::Duration;

use super::{addr, agent, eventually, in_state};
use crate::{MemberState, MeshConfig};

/// Heartbeats so rare that nobody could learn a joiner from them within the test's limits.
fn slow_beats(c: &mut MeshConfig) {
    c.heartbeat_interval = Duration::from_secs(6);
    c.suspect_after = Duration::from_secs(15);
    c.dead_after = Duration::from_secs(30);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_joiner_learns_every_member_from_its_first_peer() -> anyhow::Result<()> {
    const MEMBERS: usize = 6;
    let seed = agent(&[], slow_beats).await?;
    let seed_addr = addr(&seed).await?;
    let mut agents = vec![seed];
    for _ in 1..MEMBERS {
        agents.push(agent(std::slice::from_ref(&seed_addr), slow_beats).await?);
    }
    // Each joiner asked the seed, which knew every earlier joiner: the last one knows everyone.
    let last = agents[MEMBERS - 1].mesh.clone();
    let complete = eventually(Duration::from_secs(2), || {
        let mesh = last.clone();
        async move { in_state(&mesh, MemberState::Alive).await.len() == MEMBERS - 1 }
    })
    .await;
    assert!(complete, "the last joiner's view is incomplete");

    // A late joiner learns everyone, and the seed learns it, well before any next heartbeat.
    let late = agent(std::slice::from_ref(&seed_addr), slow_beats).await?;
    let late_id = late.mesh.local_peer_id();
    let mesh = late.mesh.clone();
    let complete = eventually(Duration::from_secs(2), || {
        let mesh = mesh.clone();
        async move { in_state(&mesh, MemberState::Alive).await.len() == MEMBERS }
    })
    .await;
    assert!(complete, "the late joiner's view is incomplete");
    let seed_mesh = agents[0].mesh.clone();
    let seen = eventually(Duration::from_secs(1), || {
        let mesh = seed_mesh.clone();
        async move { in_state(&mesh, MemberState::Alive).await.contains(&late_id) }
    })
    .await;
    assert!(seen, "the seed did not learn the joiner from its question");

    for a in agents.iter().chain(std::iter::once(&late)) {
        let _ = a.mesh.shutdown().await;
    }
    Ok(())
}
