//! Append streams between real members: a session that ends cleanly leaves its stream for the
//! next one, and a session that ends in a refusal does not.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use openraft::raft::{AppendEntriesRequest, StreamAppendError};
use tempfile::TempDir;

use super::harness::*;
use crate::network::append_lane::{AppendLane, IdleLane, returning_lane};
use crate::network::stream::append_stream;

/// Runs one session of `requests` over the idle lane (or a new one) and returns what matched.
async fn session(
    idle: &IdleLane,
    open: impl std::future::Future<Output = AppendLane>,
    requests: Vec<AppendEntriesRequest<crate::types::TypeConfig>>,
) -> (bool, Vec<String>) {
    let reused = idle.take();
    let was_reused = reused.is_some();
    let lane = Arc::new(match reused {
        Some(lane) => lane,
        None => open.await,
    });
    let sending = lane.clone();
    let input = futures::stream::iter(requests);
    let results = append_stream(input, move |rpc| sending.send(rpc));
    let answers = returning_lane(results, lane, idle)
        .map(|r| match r {
            Ok(Ok(matched)) => format!("matched {matched:?}"),
            Ok(Err(StreamAppendError::HigherVote(_))) => "higher vote".to_owned(),
            Ok(Err(e)) => format!("refused: {e}"),
            Err(e) => format!("failed: {e}"),
        })
        .collect()
        .await;
    (was_reused, answers)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_session_leaves_its_stream_for_the_next() {
    let _serial = serial().await;
    let root = TempDir::new().unwrap_or_else(|e| panic!("{e}"));
    let agents = cluster(root.path(), 3, 3, |_| {}).await;
    let leader = leader_index(&agents).unwrap_or_else(|| panic!("no leader"));
    let follower = (leader + 1) % agents.len();
    let from = &agents[leader];
    let status = from.quorum.status();
    let to = agents[follower].quorum.peer_id();
    let cluster_id = from.quorum.cluster_id();
    let leader = from.quorum.peer_id();
    let heartbeat = |term| heartbeat(term, &leader);
    let open = || async {
        AppendLane::open(
            &from.mesh,
            to,
            cluster_id.clone(),
            None,
            Duration::from_secs(5),
        )
        .await
        .unwrap_or_else(|e| panic!("open: {e}"))
    };
    let idle = IdleLane::default();

    let (reused, answers) = session(&idle, open(), vec![heartbeat(status.term)]).await;
    assert!(!reused);
    assert_eq!(answers, ["matched None"]);
    let (reused, answers) = session(&idle, open(), vec![heartbeat(status.term); 3]).await;
    assert!(reused, "the first session's stream was not kept");
    assert_eq!(answers, ["matched None"; 3]);
    // A stale leader's request is answered with the newer vote: that stream is not kept.
    let (reused, answers) = session(&idle, open(), vec![heartbeat(0)]).await;
    assert!(reused);
    assert_eq!(answers, ["higher vote"]);
    assert!(
        idle.take().is_none(),
        "a stream that saw a refusal was kept"
    );
    for a in agents {
        a.kill().await;
    }
}
