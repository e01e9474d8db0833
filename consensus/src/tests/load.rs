//! A busy machine: with every core taken by spinning threads, three managers on the LAN timing
//! defaults keep their leader and term while writes flow.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use shoal_scheduler::{Command, NodeId, NodeState, Timestamp};
use tempfile::TempDir;

use super::harness::*;
use crate::RaftTiming;

/// How long the cores stay busy while writes flow.
const LOAD: Duration = Duration::from_secs(5);
/// Writes at most during [`LOAD`] (the loop is bounded by both).
const MAX_WRITES: u64 = 20_000;

/// Spinning threads, one per core, stopped and joined on drop.
struct Spinners {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<u64>>,
}

impl Spinners {
    fn one_per_core() -> Spinners {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..cores)
            .map(|_| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let mut rounds = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        rounds = std::hint::black_box(rounds.wrapping_add(1));
                    }
                    rounds
                })
            })
            .collect();
        Spinners { stop, threads }
    }
}

impl Drop for Spinners {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// A write whose state stays small: a status change of an absent node (committed and applied
/// either way; the state machine refuses it).
fn tick(seq: u64) -> Command {
    Command::SetNodeStates {
        changes: vec![(NodeId::new("load-probe"), NodeState::Ready)],
        at: Timestamp(seq),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_cores_cause_no_spurious_election() {
    let _serial = serial().await;
    let root = TempDir::new().unwrap_or_else(|e| panic!("{e}"));
    let agents = cluster(root.path(), 3, 3, |c| c.timing = RaftTiming::LAN).await;
    let leader = leader_index(&agents).unwrap_or_else(|| panic!("no leader"));
    let leader_peer = agents[leader].quorum.peer_id();
    for a in &agents {
        let q = a.quorum.clone();
        eventually("leader known", Duration::from_secs(10), || {
            *q.leader().borrow() == Some(leader_peer)
        })
        .await;
    }
    let terms: Vec<u64> = agents.iter().map(|a| a.quorum.status().term).collect();

    let spinners = Spinners::one_per_core();
    let started = Instant::now();
    let mut writes = 0u64;
    while started.elapsed() < LOAD && writes < MAX_WRITES {
        // Every agent writes in turn: followers forward to the leader.
        let q = &agents[(writes % 3) as usize].quorum;
        if let Err(e) = q.write(tick(writes)).await {
            panic!("write {writes} under load: {e}");
        }
        writes += 1;
    }
    drop(spinners);

    for (a, before) in agents.iter().zip(&terms) {
        let status = a.quorum.status();
        assert_eq!(
            status.term,
            *before,
            "the term changed under CPU load ({writes} writes in {:?})",
            started.elapsed()
        );
        assert_eq!(status.leader, Some(leader_peer), "the leader changed");
    }
    // Debug builds on a loaded machine manage a few dozen; what matters is that writes flowed
    // through the whole window.
    assert!(writes >= 10, "only {writes} writes in {LOAD:?} under load");
    for a in agents {
        a.kill().await;
    }
}
