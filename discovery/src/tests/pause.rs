//! An agent whose whole runtime stops (a stopped process, a VM stall) for longer than the dead
//! threshold is declared dead by everyone, and is alive again in every view soon after it
//! resumes: it refutes the rumor it then hears, and its watchers ask it again on their own.

use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::{Agent, addr, agent, eventually, in_state};
use crate::{MemberState, Multiaddr};

/// An agent on a runtime of its own, on a thread of its own, and a way to stop that thread.
struct Pausable {
    agent: Agent,
    pause: mpsc::Sender<Duration>,
    _thread: std::thread::JoinHandle<()>,
}

/// Starts an agent on its own single-threaded runtime. A pause blocks that thread, so that the
/// agent's event loop and every one of its connections stop at once, as in a stopped process.
fn pausable(join: Multiaddr) -> anyhow::Result<Pausable> {
    let (started_tx, started_rx) = std::sync::mpsc::channel();
    let (pause, mut pauses) = mpsc::channel::<Duration>(1);
    let thread = std::thread::spawn(move || {
        let runtime = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(runtime) => runtime,
            Err(e) => {
                let _ = started_tx.send(Err(anyhow::Error::from(e)));
                return;
            }
        };
        runtime.block_on(async move {
            let _ = started_tx.send(agent(&[join], |_| {}).await);
            while let Some(span) = pauses.recv().await {
                std::thread::sleep(span);
            }
        });
    });
    let agent = started_rx
        .recv_timeout(Duration::from_secs(10))
        .map_err(|e| anyhow::anyhow!("the pausable agent did not start: {e}"))??;
    Ok(Pausable {
        agent,
        pause,
        _thread: thread,
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn a_paused_agent_is_declared_dead_and_comes_back_everywhere() -> anyhow::Result<()> {
    let seed = agent(&[], |_| {}).await?;
    let seed_addr = addr(&seed).await?;
    let mut others = vec![seed];
    for _ in 0..4 {
        others.push(agent(std::slice::from_ref(&seed_addr), |_| {}).await?);
    }
    let paused = pausable(seed_addr)?;
    let target = paused.agent.mesh.local_peer_id();
    let all_see = |state: MemberState, limit: Duration| {
        let meshes: Vec<_> = others.iter().map(|a| a.mesh.clone()).collect();
        async move {
            for mesh in meshes {
                let seen = eventually(limit, || {
                    let mesh = mesh.clone();
                    async move { in_state(&mesh, state).await.contains(&target) }
                })
                .await;
                if !seen {
                    return false;
                }
            }
            true
        }
    };
    assert!(
        all_see(MemberState::Alive, Duration::from_secs(8)).await,
        "every agent sees the pausable one alive"
    );

    let paused_at = Instant::now();
    paused.pause.send(Duration::from_secs(4)).await?;
    assert!(
        all_see(MemberState::Dead, Duration::from_secs(4)).await,
        "a silent agent is declared dead everywhere"
    );
    assert!(
        all_see(MemberState::Alive, Duration::from_secs(6)).await,
        "a resumed agent is alive again everywhere"
    );
    eprintln!(
        "paused 4 s; alive again everywhere {:?} after the pause began",
        paused_at.elapsed()
    );
    drop(paused.pause);
    paused.agent.mesh.kill();
    Ok(())
}
