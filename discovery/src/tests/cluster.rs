//! Twelve agents through one seed: convergence, crash detection, graceful leave, metrics.

use std::time::{Duration, Instant};

use super::{addr, agent, eventually, exposition, in_state};
use crate::{MemberState, MembershipChange};

#[tokio::test(flavor = "multi_thread")]
async fn twelve_agents_converge_detect_a_crash_and_see_a_leave() -> anyhow::Result<()> {
    let seed = agent(&[], |_| {}).await?;
    let seed_addr = addr(&seed).await?;
    let mut agents = vec![seed];
    for _ in 0..11 {
        agents.push(agent(std::slice::from_ref(&seed_addr), |_| {}).await?);
    }
    let started = Instant::now();
    for a in &agents {
        let mesh = a.mesh.clone();
        let converged = eventually(Duration::from_secs(8), || {
            let mesh = mesh.clone();
            async move { in_state(&mesh, MemberState::Alive).await.len() == 11 }
        })
        .await;
        if !converged {
            for b in &agents {
                eprintln!(
                    "{}: alive {} suspect {} dead {} connected {} traffic {:?}",
                    b.mesh.local_peer_id(),
                    in_state(&b.mesh, MemberState::Alive).await.len(),
                    in_state(&b.mesh, MemberState::Suspect).await.len(),
                    in_state(&b.mesh, MemberState::Dead).await.len(),
                    b.mesh.connected_peers().await?.len(),
                    b.mesh.traffic(),
                );
            }
        }
        assert!(
            converged,
            "{} does not see 11 alive peers",
            a.mesh.local_peer_id()
        );
    }
    eprintln!("12 agents converged in {:?}", started.elapsed());

    // Each sees the others' announced info.
    let members = agents[3].mesh.members().await?;
    assert!(members.iter().all(|m| m.info.hostname.starts_with("host-")));
    assert!(members.iter().all(|m| !m.addrs.is_empty()));

    // Metrics: our families and libp2p's are in the agent's registry.
    let text = exposition(&agents[1].registry);
    assert!(
        text.contains("shoal_mesh_peers{state=\"alive\"} 11"),
        "{text}"
    );
    assert!(
        text.contains("shoal_mesh_messages_total{protocol=\"gossip\",direction=\"in\"}"),
        "{text}"
    );
    assert!(text.contains("libp2p_"));

    // Crash: no Left is sent; everyone must declare it Dead within dead_after + 1 s.
    let mut watchers: Vec<_> = agents.iter().map(|a| a.mesh.subscribe()).collect();
    let victim = agents.remove(5);
    let victim_id = victim.mesh.local_peer_id();
    watchers.remove(5);
    let killed_at = Instant::now();
    victim.mesh.kill();
    let limit = Duration::from_secs(3);
    for a in &agents {
        let mesh = a.mesh.clone();
        let dead = eventually(limit.saturating_sub(killed_at.elapsed()), || {
            let mesh = mesh.clone();
            async move {
                in_state(&mesh, MemberState::Dead)
                    .await
                    .contains(&victim_id)
            }
        })
        .await;
        assert!(
            dead,
            "{} did not mark the crashed agent dead within 3 s",
            a.mesh.local_peer_id()
        );
    }
    eprintln!("crash detected everywhere after {:?}", killed_at.elapsed());
    for w in &mut watchers {
        let mut saw_dead = false;
        while let Ok(change) = w.try_recv() {
            assert_ne!(
                change,
                MembershipChange::Left(victim_id),
                "a crash is not a leave"
            );
            saw_dead |= change == MembershipChange::Dead(victim_id);
        }
        assert!(saw_dead, "Dead was not broadcast");
    }

    // Graceful: Left everywhere well before the suspect threshold.
    let leaver = agents.remove(2);
    let leaver_id = leaver.mesh.local_peer_id();
    let left_at = Instant::now();
    leaver.mesh.shutdown().await?;
    for a in &agents {
        let mesh = a.mesh.clone();
        let left = eventually(
            Duration::from_millis(900).saturating_sub(left_at.elapsed()),
            || {
                let mesh = mesh.clone();
                async move {
                    in_state(&mesh, MemberState::Left)
                        .await
                        .contains(&leaver_id)
                }
            },
        )
        .await;
        assert!(
            left,
            "{} did not see the graceful Left at once",
            a.mesh.local_peer_id()
        );
    }
    eprintln!("leave seen everywhere after {:?}", left_at.elapsed());
    assert!(
        leaver.mesh.members().await.is_err(),
        "a stopped mesh answers Closed"
    );

    // The survivors stay alive to each other.
    let alive = in_state(&agents[0].mesh, MemberState::Alive).await;
    assert_eq!(alive.len(), agents.len() - 1);
    for a in &agents {
        a.mesh.shutdown().await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn identity_survives_a_restart_and_updates_are_seen() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut registry = prometheus_client::registry::Registry::default();
    let cfg = super::config(&dir, &[]);
    let first = crate::start(cfg.clone(), crate::NodeInfo::default(), &mut registry).await?;
    let id = first.local_peer_id();
    first.shutdown().await?;
    let mut registry = prometheus_client::registry::Registry::default();
    let second = crate::start(cfg, crate::NodeInfo::default(), &mut registry).await?;
    assert_eq!(second.local_peer_id(), id);

    let other = agent(&[addr_of(&second).await?], |_| {}).await?;
    let mut changes = other.mesh.subscribe();
    let info = crate::NodeInfo {
        hostname: "renamed".to_owned(),
        ..crate::NodeInfo::default()
    };
    second.set_local_info(info).await?;
    let updated = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match changes.recv().await {
                Ok(MembershipChange::Updated { current, .. })
                    if current.peer_id == id && current.info.hostname == "renamed" =>
                {
                    return true;
                }
                Ok(MembershipChange::Joined(m))
                    if m.peer_id == id && m.info.hostname == "renamed" =>
                {
                    return true;
                }
                Ok(_) => {}
                Err(_) => return false,
            }
        }
    })
    .await;
    assert_eq!(updated.ok(), Some(true));
    second.shutdown().await?;
    other.mesh.shutdown().await?;
    Ok(())
}

async fn addr_of(mesh: &crate::Mesh) -> anyhow::Result<crate::Multiaddr> {
    mesh.listen_addrs()
        .await?
        .into_iter()
        .next()
        .ok_or_else(|| anyhow::anyhow!("no listen address"))
}
