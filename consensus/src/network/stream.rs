//! Streaming AppendEntries to one follower (openraft's `stream_append`) over an ordered
//! transport ([`super::append_lane`]).
//!
//! Up to [`MAX_INFLIGHT`] requests are in flight: each starts where the one before it ends, and
//! the follower takes them in the order sent, so a new write need not wait for the previous
//! round trip.
//!
//! A request without entries only tells the follower a new commit index. It waits up to
//! [`COMMIT_HOLD`] for a request that starts at the same position: under load a write follows
//! every commit, and the commit then rides on that write's request instead of costing a message
//! of its own (half the messages with one client). Such a merged request answers for the held one
//! too: same starting position, same verdict. An idle cluster tells its followers about a commit
//! [`COMMIT_HOLD`] later (the leader's own reads and writes never wait for it).
//!
//! Results are yielded in request order, as openraft requires; the stream ends after the first
//! failure, conflict or partial match.

use std::collections::VecDeque;
use std::future::Future;
use std::time::Duration;

use futures::stream::{FuturesOrdered, StreamExt};
use openraft::base::{BoxFuture, BoxStream};
use openraft::errors::{NetworkError, RPCError};
use openraft::raft::{AppendEntriesRequest, StreamAppendResult};
use tokio::time::Instant;

use crate::types::{LogId, TypeConfig};

/// How long a commit-only request waits for a request to ride on.
pub(crate) const COMMIT_HOLD: Duration = Duration::from_millis(2);
/// Requests in flight at most.
pub(crate) const MAX_INFLIGHT: usize = 8;
const _: () = assert!(MAX_INFLIGHT < super::append_lane::LANE_QUEUE);

/// One stream item: the result of one request.
type Item = Result<StreamAppendResult<TypeConfig>, RPCError<TypeConfig>>;
type Request = AppendEntriesRequest<TypeConfig>;
/// The follower's answer to one request.
type Reply = Result<StreamAppendResult<TypeConfig>, RPCError<TypeConfig>>;

/// Sends one request to the follower: any `Fn(Request) -> impl Future<Output = Reply>`.
pub(crate) trait Sender<'s>: Send + Sync + 's {
    /// The pending answer.
    type Answer: Future<Output = Reply> + Send + 's;
    /// Sends `req`.
    fn send(&self, req: Request) -> Self::Answer;
}

impl<'s, F, Fut> Sender<'s> for F
where
    F: Fn(Request) -> Fut + Send + Sync + 's,
    Fut: Future<Output = Reply> + Send + 's,
{
    type Answer = Fut;

    fn send(&self, req: Request) -> Fut {
        self(req)
    }
}

/// A commit-only request waiting for company.
struct Held {
    request: Request,
    /// Earlier commit-only requests it replaced, each still owed an answer.
    replaced: usize,
    until: Instant,
}

/// The answers one sent request owes, and whether the stream may go on after them.
struct Outcome {
    items: Vec<Item>,
    go_on: bool,
}

struct State<'s, S, C> {
    input: S,
    call: C,
    input_done: bool,
    held: Option<Held>,
    inflight: FuturesOrdered<BoxFuture<'s, Outcome>>,
    ready: VecDeque<Item>,
    stopped: bool,
}

/// Turns `input` into a stream of results, sending each request with `call`.
pub(crate) fn append_stream<'s, S>(input: S, call: impl Sender<'s>) -> BoxStream<'s, Item>
where
    S: futures::Stream<Item = Request> + Send + Unpin + 'static,
{
    let state = State {
        input,
        call,
        input_done: false,
        held: None,
        inflight: FuturesOrdered::new(),
        ready: VecDeque::new(),
        stopped: false,
    };
    let stream = futures::stream::unfold(state, |mut st| async move {
        let item = st.next().await?;
        Some((item, st))
    });
    Box::pin(stream)
}

impl<'s, S, C> State<'s, S, C>
where
    S: futures::Stream<Item = Request> + Send + Unpin + 'static,
    C: Sender<'s>,
{
    async fn next(&mut self) -> Option<Item> {
        loop {
            if let Some(item) = self.ready.pop_front() {
                return Some(item);
            }
            if self.stopped {
                return None;
            }
            if self.input_done {
                self.release_held();
            }
            let may_take = !self.input_done && self.inflight.len() < MAX_INFLIGHT;
            if self.inflight.is_empty() && self.held.is_none() && !may_take {
                return None;
            }
            let hold_until = self.held.as_ref().map(|h| h.until);
            tokio::select! {
                biased;
                Some(outcome) = self.inflight.next(), if !self.inflight.is_empty() => {
                    self.stopped = !outcome.go_on;
                    self.ready.extend(outcome.items);
                }
                req = self.input.next(), if may_take => match req {
                    Some(req) => self.take(req),
                    None => self.input_done = true,
                },
                _ = sleep_until(hold_until), if hold_until.is_some() => self.release_held(),
            }
        }
    }

    /// Sends the held commit-only request, if any.
    fn release_held(&mut self) {
        if let Some(held) = self.held.take() {
            self.send(held.request, held.replaced);
        }
    }

    /// Takes one request from openraft: holds a commit-only one, sends the others (with whatever
    /// commit-only request they can answer for).
    fn take(&mut self, req: Request) {
        let mut owed = 0;
        match self.held.take() {
            Some(held) if held.request.prev_log_id == req.prev_log_id => owed = held.replaced + 1,
            // Not the same starting point: the held request cannot be answered by this one.
            Some(held) => self.send(held.request, held.replaced),
            None => {}
        }
        if req.entries.is_empty() {
            self.held = Some(Held {
                request: req,
                replaced: owed,
                until: Instant::now() + COMMIT_HOLD,
            });
        } else {
            self.send(req, owed);
        }
    }

    /// Sends `req`; its answer also answers `owed` earlier commit-only requests (same start).
    fn send(&mut self, req: Request, owed: usize) {
        let prev = req.prev_log_id;
        let last = ends_at(&req);
        let reply = self.call.send(req);
        self.inflight.push_back(Box::pin(async move {
            let (item, go_on) = judge(reply.await, last);
            let mut items = Vec::with_capacity(owed + 1);
            for _ in 0..owed {
                items.push(match &item {
                    // The owed requests ended at `prev`, where this one started.
                    Ok(Ok(_)) => Ok(Ok(prev)),
                    other => clone_item(other),
                });
            }
            items.push(item);
            Outcome { items, go_on }
        }));
    }
}

async fn sleep_until(at: Option<Instant>) {
    if let Some(at) = at {
        tokio::time::sleep_until(at).await;
    }
}

fn clone_item(item: &Item) -> Item {
    match item {
        Ok(r) => Ok(r.clone()),
        Err(e) => Err(RPCError::Network(NetworkError::from_string(e.to_string()))),
    }
}

/// Where the follower's log ends once it took `req`: its last entry, or where it starts.
pub(crate) fn ends_at(req: &Request) -> Option<LogId> {
    req.entries.last().map(|e| e.log_id).or(req.prev_log_id)
}

/// What one answer means for openraft, and whether to go on streaming: only after a full match
/// does the next request start where the follower's log ends.
fn judge(reply: Reply, last: Option<LogId>) -> (Item, bool) {
    let go_on = matches!(&reply, Ok(Ok(matched)) if *matched == last);
    (reply, go_on)
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex, MutexGuard};

    use futures::channel::mpsc;
    use openraft::EntryPayload;
    use openraft::vote::RaftLeaderIdExt;

    use super::*;
    use crate::types::{Entry, Vote};
    use openraft::raft::StreamAppendError;

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

    /// How the fake follower answers.
    #[derive(Clone, Copy)]
    enum Answer {
        /// Matches the whole request.
        Success,
        /// Matches only up to this index.
        Partial(u64),
        /// Reports a conflict at the request's start.
        Conflict,
    }

    impl Answer {
        fn to(self, req: &Request) -> Reply {
            let last = ends_at(req);
            Ok(match self {
                Answer::Success => Ok(last),
                Answer::Partial(index) => Ok(Some(log_id(index))),
                Answer::Conflict => Err(StreamAppendError::Conflict(
                    req.prev_log_id.unwrap_or(log_id(0)),
                )),
            })
        }
    }

    /// A stream over a fake follower that answers every request with `answer` after `delay`.
    struct Fake {
        seen: Arc<Mutex<Seen>>,
        tx: Option<mpsc::UnboundedSender<Request>>,
        out: BoxStream<'static, Item>,
    }

    impl Fake {
        fn start(delay: Duration, answer: Answer) -> Fake {
            let seen = Arc::new(Mutex::new(Seen::default()));
            let (tx, rx) = mpsc::unbounded();
            let follower = seen.clone();
            let out = append_stream(rx, move |req: Request| {
                let seen = follower.clone();
                let reply = answer.to(&req);
                async move {
                    seen_by(&seen).receive(&req);
                    tokio::time::sleep(delay).await;
                    seen_by(&seen).busy -= 1;
                    reply
                }
            });
            Fake {
                seen,
                tx: Some(tx),
                out,
            }
        }

        /// Hands openraft's next request to the stream.
        fn push(&self, prev: u64, last: u64, commit: u64) {
            if let Some(tx) = &self.tx {
                let _ = tx.unbounded_send(request(prev, last, commit));
            }
        }

        /// What the next stream item matched (empty at the end of the stream).
        async fn next(&mut self) -> Vec<Option<u64>> {
            matched(&self.out.next().await.into_iter().collect::<Vec<_>>())
        }

        /// Ends the input and collects the rest of the stream.
        async fn finish(&mut self) -> Vec<Item> {
            self.tx = None;
            self.out.by_ref().collect().await
        }

        fn seen(&self) -> MutexGuard<'_, Seen> {
            seen_by(&self.seen)
        }
    }

    fn seen_by(seen: &Mutex<Seen>) -> MutexGuard<'_, Seen> {
        seen.lock().unwrap_or_else(|p| p.into_inner())
    }

    impl Seen {
        fn receive(&mut self, req: &Request) {
            self.requests.push((
                req.prev_log_id.map(|l| l.index).unwrap_or(0),
                req.entries.len(),
                req.leader_commit.map(|l| l.index).unwrap_or(0),
            ));
            self.busy += 1;
            self.most_busy = self.most_busy.max(self.busy);
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

    const FAST: Duration = Duration::from_millis(1);

    #[tokio::test]
    async fn a_commit_rides_on_the_next_entries() {
        let mut fake = Fake::start(FAST, Answer::Success);
        fake.push(0, 5, 0);
        assert_eq!(fake.next().await, vec![Some(5)]);
        // The commit of 5, then at once the next write: one request carries both.
        fake.push(5, 5, 5);
        fake.push(5, 6, 5);
        assert_eq!(
            fake.next().await,
            vec![Some(5)],
            "the commit-only request matched its start"
        );
        assert_eq!(fake.next().await, vec![Some(6)]);
        // A lone commit is sent after the hold.
        fake.push(6, 6, 6);
        assert_eq!(fake.next().await, vec![Some(6)]);
        assert!(fake.finish().await.is_empty());
        assert_eq!(fake.seen().requests, vec![(0, 5, 0), (5, 1, 5), (6, 0, 6)]);
    }

    #[tokio::test]
    async fn entries_are_pipelined_and_answered_in_order() {
        let mut fake = Fake::start(Duration::from_millis(5), Answer::Success);
        for (prev, last) in [(0, 2), (2, 4), (4, 6)] {
            fake.push(prev, last, 0);
        }
        let items = fake.finish().await;
        assert_eq!(matched(&items), vec![Some(2), Some(4), Some(6)]);
        assert_eq!(
            fake.seen().most_busy,
            3,
            "all three were in flight together"
        );
    }

    #[tokio::test]
    async fn in_flight_requests_are_bounded() {
        let mut fake = Fake::start(Duration::from_millis(5), Answer::Success);
        for i in 0..20 {
            fake.push(i, i + 1, 0);
        }
        let items = fake.finish().await;
        assert_eq!(items.len(), 20);
        assert_eq!(fake.seen().most_busy, MAX_INFLIGHT);
    }

    #[tokio::test]
    async fn a_partial_match_ends_the_stream_after_its_answer() {
        let mut fake = Fake::start(FAST, Answer::Partial(1));
        fake.push(0, 2, 0);
        let items = fake.finish().await;
        assert_eq!(matched(&items), vec![Some(1)]);
    }

    #[tokio::test]
    async fn a_conflict_answers_the_held_commit_too_and_ends_the_stream() {
        let mut fake = Fake::start(FAST, Answer::Conflict);
        fake.push(3, 3, 3);
        fake.push(3, 4, 3);
        fake.push(4, 5, 3);
        let items = fake.finish().await;
        assert_eq!(items.len(), 2, "{items:?}");
        for item in &items {
            assert!(
                matches!(item, Ok(Err(StreamAppendError::Conflict(l))) if l.index == 3),
                "{item:?}"
            );
        }
        // The merged request and the one pipelined behind it; nothing after the conflict.
        assert_eq!(fake.seen().requests.len(), 2);
    }
}
