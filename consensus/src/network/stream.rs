//! Streaming AppendEntries to one follower (openraft's `stream_append`).
//!
//! Requests that carry entries go one at a time: each starts where the follower's log is known
//! to end, so it must be acknowledged before the next one is sent.
//!
//! A request without entries only tells the follower a new commit index. It starts at the same,
//! acknowledged position as whatever comes next, so it never holds back the next request, and it
//! waits up to [`COMMIT_HOLD`] for one: under load a write follows every commit, and the commit
//! then rides on that write's request instead of costing a round trip of its own (half the
//! messages with one client). Such a merged request answers for the held one too: same starting
//! position, same verdict. An idle cluster tells its followers about a commit [`COMMIT_HOLD`]
//! later (the leader's own reads and writes never wait for it).
//!
//! Responses are yielded in request order, as openraft requires.

use std::collections::VecDeque;
use std::future::Future;
use std::time::Duration;

use futures::stream::{FuturesOrdered, StreamExt};
use openraft::base::{BoxFuture, BoxStream};
use openraft::errors::{NetworkError, RPCError};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, StreamAppendError, StreamAppendResult,
};
use tokio::time::Instant;

use crate::types::{LogId, TypeConfig};

/// How long a commit-only request waits for a request to ride on.
pub(crate) const COMMIT_HOLD: Duration = Duration::from_millis(2);
/// Requests in flight at most (one with entries, the rest commit-only).
const MAX_INFLIGHT: usize = 4;

/// One stream item: the result of one request.
type Item = Result<StreamAppendResult<TypeConfig>, RPCError<TypeConfig>>;
type Request = AppendEntriesRequest<TypeConfig>;

/// A commit-only request waiting for company.
struct Held {
    request: Request,
    /// Earlier commit-only requests it replaced, each still owed an answer.
    replaced: usize,
    until: Instant,
}

/// The answers one sent request owes, and whether the stream may go on after them.
struct Outcome {
    carried_entries: bool,
    items: Vec<Item>,
    go_on: bool,
}

struct State<'s, S> {
    input: S,
    input_done: bool,
    held: Option<Held>,
    inflight: FuturesOrdered<BoxFuture<'s, Outcome>>,
    /// Requests with entries in flight (0 or 1).
    with_entries: usize,
    ready: VecDeque<Item>,
    stopped: bool,
}

/// Turns `input` into a stream of results, sending each request with `call`.
pub(crate) fn append_stream<'s, S, F, Fut>(input: S, call: F) -> BoxStream<'s, Item>
where
    S: futures::Stream<Item = Request> + Send + Unpin + 'static,
    F: Fn(Request) -> Fut + Send + Sync + 's,
    Fut: Future<Output = Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>>>
        + Send
        + 's,
{
    let state = State {
        input,
        input_done: false,
        held: None,
        inflight: FuturesOrdered::new(),
        with_entries: 0,
        ready: VecDeque::new(),
        stopped: false,
    };
    let stream = futures::stream::unfold((state, call), |(mut st, call)| async move {
        let item = next(&mut st, &call).await?;
        Some((item, (st, call)))
    });
    Box::pin(stream)
}

async fn next<'s, S, F, Fut>(st: &mut State<'s, S>, call: &F) -> Option<Item>
where
    S: futures::Stream<Item = Request> + Send + Unpin + 'static,
    F: Fn(Request) -> Fut + Send + Sync + 's,
    Fut: Future<Output = Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>>>
        + Send
        + 's,
{
    loop {
        if let Some(item) = st.ready.pop_front() {
            return Some(item);
        }
        if st.stopped {
            return None;
        }
        if st.input_done
            && let Some(held) = st.held.take()
        {
            send(st, call, held.request, held.replaced);
        }
        let may_take = !st.input_done && st.with_entries == 0 && st.inflight.len() < MAX_INFLIGHT;
        if st.inflight.is_empty() && st.held.is_none() && !may_take {
            return None;
        }
        let hold_until = st.held.as_ref().map(|h| h.until);
        tokio::select! {
            biased;
            Some(outcome) = st.inflight.next(), if !st.inflight.is_empty() => {
                if outcome.carried_entries {
                    st.with_entries = st.with_entries.saturating_sub(1);
                }
                st.stopped = !outcome.go_on;
                st.ready.extend(outcome.items);
            }
            req = st.input.next(), if may_take => match req {
                Some(req) => take(st, call, req),
                None => st.input_done = true,
            },
            _ = sleep_until(hold_until), if hold_until.is_some() => {
                if let Some(held) = st.held.take() {
                    send(st, call, held.request, held.replaced);
                }
            }
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    if let Some(at) = at {
        tokio::time::sleep_until(at).await;
    }
}

/// Takes one request from openraft: holds a commit-only one, sends the others (with whatever
/// commit-only request they can answer for).
fn take<'s, S, F, Fut>(st: &mut State<'s, S>, call: &F, req: Request)
where
    F: Fn(Request) -> Fut + Send + Sync + 's,
    Fut: Future<Output = Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>>>
        + Send
        + 's,
{
    let mut owed = 0;
    if let Some(held) = st.held.take() {
        if held.request.prev_log_id == req.prev_log_id {
            owed = held.replaced + 1;
        } else {
            // Not the same starting point: the held request cannot be answered by this one.
            send(st, call, held.request, held.replaced);
        }
    }
    // Taken only with no entries in flight, so a commit-only request starts at an acknowledged
    // position: whatever follows may overtake it.
    if req.entries.is_empty() {
        st.held = Some(Held {
            request: req,
            replaced: owed,
            until: Instant::now() + COMMIT_HOLD,
        });
    } else {
        send(st, call, req, owed);
    }
}

/// Sends `req`; its answer also answers `owed` earlier commit-only requests (same start).
fn send<'s, S, F, Fut>(st: &mut State<'s, S>, call: &F, req: Request, owed: usize)
where
    F: Fn(Request) -> Fut + Send + Sync + 's,
    Fut: Future<Output = Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>>>
        + Send
        + 's,
{
    let prev = req.prev_log_id;
    let last = req.entries.last().map(|e| e.log_id).or(prev);
    let carried_entries = !req.entries.is_empty();
    if carried_entries {
        st.with_entries += 1;
    }
    let reply = call(req);
    st.inflight.push_back(Box::pin(async move {
        let (item, go_on) = match reply.await {
            Ok(resp) => judge(resp, prev, last),
            Err(e) => (Err(e), false),
        };
        let mut items = Vec::with_capacity(owed + 1);
        for _ in 0..owed {
            items.push(match &item {
                // The owed requests ended at `prev`, where this one started.
                Ok(Ok(_)) => Ok(Ok(prev)),
                other => clone_item(other),
            });
        }
        items.push(item);
        Outcome {
            carried_entries,
            items,
            go_on,
        }
    }));
}

fn clone_item(item: &Item) -> Item {
    match item {
        Ok(r) => Ok(r.clone()),
        Err(e) => Err(RPCError::Network(NetworkError::from_string(e.to_string()))),
    }
}

/// What one response means for openraft, and whether to go on streaming.
fn judge(
    resp: AppendEntriesResponse<TypeConfig>,
    prev: Option<LogId>,
    last: Option<LogId>,
) -> (Item, bool) {
    match resp {
        AppendEntriesResponse::Success => (Ok(Ok(last)), true),
        // Only part was taken: what follows would not start where the follower ends.
        AppendEntriesResponse::PartialSuccess(matched) => {
            let complete = matched == last;
            (Ok(Ok(matched)), complete)
        }
        AppendEntriesResponse::Conflict => match prev {
            Some(prev) => (Ok(Err(StreamAppendError::Conflict(prev))), false),
            None => (
                Err(RPCError::Network(NetworkError::from_string(
                    "conflict reported for a request that starts at the log's beginning",
                ))),
                false,
            ),
        },
        AppendEntriesResponse::HigherVote(vote) => {
            (Ok(Err(StreamAppendError::HigherVote(vote))), false)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use futures::channel::mpsc;
    use openraft::EntryPayload;
    use openraft::vote::RaftLeaderIdExt;

    use super::*;
    use crate::types::{Entry, Vote};

    type Leader = <TypeConfig as openraft::RaftTypeConfig>::LeaderId;

    fn log_id(index: u64) -> LogId {
        LogId::new(Leader::new_committed(1, 1), index)
    }

    /// A request starting after `prev` with entries `prev+1..=last` and commit `commit`.
    fn request(prev: u64, last: u64, commit: u64) -> Request {
        AppendEntriesRequest {
            vote: Vote::new_committed(1, 1),
            prev_log_id: Some(log_id(prev)),
            leader_commit: Some(log_id(commit)),
            entries: (prev + 1..=last)
                .map(|i| Entry {
                    log_id: log_id(i),
                    payload: EntryPayload::Blank,
                })
                .collect(),
        }
    }

    /// What the fake follower saw: (prev, entries, commit) per request, and the most requests
    /// it had in hand at once.
    #[derive(Default)]
    struct Seen {
        requests: Vec<(u64, usize, u64)>,
        busy: usize,
        most_busy: usize,
    }

    fn follower(
        seen: Arc<Mutex<Seen>>,
        delay: Duration,
        answer: AppendEntriesResponse<TypeConfig>,
    ) -> impl Fn(
        Request,
    ) -> BoxFuture<
        'static,
        Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>>,
    > + Send
    + Sync {
        move |req: Request| {
            let seen = seen.clone();
            let answer = answer.clone();
            Box::pin(async move {
                {
                    let mut s = seen.lock().unwrap_or_else(|p| p.into_inner());
                    s.requests.push((
                        req.prev_log_id.map(|l| l.index).unwrap_or(0),
                        req.entries.len(),
                        req.leader_commit.map(|l| l.index).unwrap_or(0),
                    ));
                    s.busy += 1;
                    s.most_busy = s.most_busy.max(s.busy);
                }
                tokio::time::sleep(delay).await;
                seen.lock().unwrap_or_else(|p| p.into_inner()).busy -= 1;
                Ok(answer)
            })
        }
    }

    fn matched(items: &[Item]) -> Vec<Option<u64>> {
        items
            .iter()
            .map(|i| match i {
                Ok(Ok(m)) => Some(m.map(|l| l.index).unwrap_or(0)),
                _ => None,
            })
            .collect()
    }

    #[tokio::test]
    async fn a_commit_rides_on_the_next_entries() {
        let seen = Arc::new(Mutex::new(Seen::default()));
        let (tx, rx) = mpsc::unbounded();
        let call = follower(
            seen.clone(),
            Duration::from_millis(1),
            AppendEntriesResponse::Success,
        );
        let mut out = append_stream(rx, call);
        let _ = tx.unbounded_send(request(0, 5, 0));
        let first = out.next().await.into_iter().collect::<Vec<_>>();
        assert_eq!(matched(&first), vec![Some(5)]);
        // The commit of 5, then at once the next write: one request carries both.
        let _ = tx.unbounded_send(request(5, 5, 5));
        let _ = tx.unbounded_send(request(5, 6, 5));
        let a = out.next().await.into_iter().collect::<Vec<_>>();
        let b = out.next().await.into_iter().collect::<Vec<_>>();
        assert_eq!(
            matched(&a),
            vec![Some(5)],
            "the commit-only request matched its start"
        );
        assert_eq!(matched(&b), vec![Some(6)]);
        // A lone commit is sent after the hold.
        let _ = tx.unbounded_send(request(6, 6, 6));
        let c = out.next().await.into_iter().collect::<Vec<_>>();
        assert_eq!(matched(&c), vec![Some(6)]);
        drop(tx);
        assert!(out.next().await.is_none());
        let s = seen.lock().unwrap_or_else(|p| p.into_inner());
        assert_eq!(s.requests, vec![(0, 5, 0), (5, 1, 5), (6, 0, 6)]);
    }

    #[tokio::test]
    async fn entries_go_one_request_at_a_time() {
        let seen = Arc::new(Mutex::new(Seen::default()));
        let (tx, rx) = mpsc::unbounded();
        let call = follower(
            seen.clone(),
            Duration::from_millis(5),
            AppendEntriesResponse::Success,
        );
        let mut out = append_stream(rx, call);
        for (prev, last) in [(0, 2), (2, 4), (4, 6)] {
            let _ = tx.unbounded_send(request(prev, last, 0));
        }
        drop(tx);
        let items: Vec<Item> = out.by_ref().collect().await;
        assert_eq!(matched(&items), vec![Some(2), Some(4), Some(6)]);
        assert_eq!(seen.lock().unwrap_or_else(|p| p.into_inner()).most_busy, 1);
    }

    #[tokio::test]
    async fn a_conflict_answers_the_held_commit_too_and_ends_the_stream() {
        let seen = Arc::new(Mutex::new(Seen::default()));
        let (tx, rx) = mpsc::unbounded();
        let call = follower(
            seen.clone(),
            Duration::from_millis(1),
            AppendEntriesResponse::Conflict,
        );
        let mut out = append_stream(rx, call);
        let _ = tx.unbounded_send(request(3, 3, 3));
        let _ = tx.unbounded_send(request(3, 4, 3));
        let _ = tx.unbounded_send(request(4, 5, 3));
        let items: Vec<Item> = out.by_ref().collect().await;
        assert_eq!(items.len(), 2, "{items:?}");
        for item in &items {
            assert!(
                matches!(item, Ok(Err(StreamAppendError::Conflict(l))) if l.index == 3),
                "{item:?}"
            );
        }
        assert_eq!(
            seen.lock()
                .unwrap_or_else(|p| p.into_inner())
                .requests
                .len(),
            1
        );
    }
}
