//! Linearizability checking of recorded client histories, and the model of shoal's service
//! registry that the chaos tests check their histories against. This module owns the checker
//! ([`check`]), the history it reads ([`Operation`], [`Outcome`]), the sequential
//! specification it checks against ([`Model`]), its answer ([`Verdict`]), and the registry's
//! specification ([`RegistryModel`], [`RegistryInput`], [`RegistryOutput`]).
//!
//! # What is checked
//!
//! A history is linearizable when some total order of its operations both respects real time
//! (an operation that returned before another was called comes first) and, replayed through the
//! sequential model, gives every answer the clients saw. An operation whose client got no
//! answer ([`Outcome::Unknown`]) may have taken effect at any time after its call, or never.
//!
//! # How
//!
//! The search is Wing & Gong's, with Lowe's "just-in-time linearization" and memoization:
//!
//! 1. [`Model::partition`] splits the history into parts checked apart (for the registry: one
//!    per service name). This is sound when the model is P-compositional, and it shrinks the
//!    search exponentially.
//! 2. Each operation of a part becomes a call event and a return event, sorted by time into a
//!    doubly linked list. An unknown outcome returns at infinity.
//! 3. Walking the list from its head: at a call, try to linearize that operation now. If the
//!    model accepts its answer from the current state and the pair (set of linearized
//!    operations, new state) was never seen before, push (operation, previous state) on a
//!    stack, lift the operation's two events out of the list and restart from the head. At a
//!    return, that operation had to be linearized already, so undo the latest choice: pop the
//!    stack, put its events back where they were (dancing links), restore the state, and go on
//!    from the event after the undone call. A return met with an empty stack means no order
//!    explains the answers. (Each walk first tries only the calls of operations with a known
//!    answer; when it meets a return it walks again for those with an unknown outcome, and only
//!    then undoes.)
//! 4. Once every operation with a known answer is linearized, the part is linearizable: the
//!    operations left had unknown outcomes and are taken never to have happened (or to have
//!    happened after everything, where nothing observed them).
//!
//! The cache of configurations explored is what keeps the search tractable: two paths that
//! linearized the same operations into the same state have the same future, so only the first
//! is explored. Unknown outcomes make it coarser: a path that reaches the same state with the
//! same known answers linearized but a superset of the unknown ones is cut too, since it has no
//! way on that the other lacks (an unknown operation need never be linearized); trying known
//! answers first makes the paths with fewer unknown operations come first. For the same reason
//! an unknown operation that would leave the state as it is (a read, a refused write) is never
//! linearized.
//!
//! Unknown outcomes are still what makes the search expensive: each one that would change the
//! state stays a choice until the end of its part, so proving a part with many of them not
//! linearizable can take time exponential in their number (proving one linearizable is
//! usually quick, as the first orders tried tend to fit). The budget bounds that.
//!
//! Equal timestamps: a return at time `t` comes before a call only when `t` is strictly
//! earlier than the call. At equal times the call sorts first, so the two operations count as
//! concurrent: clocks are coarse, and this way a tie can never produce a false
//! [`Verdict::NotLinearizable`]. A return recorded earlier than its own call is taken to be at
//! the call.
//!
//! The search is deterministic. It reads the wall clock when it starts a part and every few
//! thousand steps after, and gives up with [`Verdict::Inconclusive`] once the budget is spent.

use std::collections::{BTreeMap, HashMap};
use std::fmt::{Debug, Write as _};
use std::hash::Hash;
use std::time::{Duration, Instant};

/// One operation of a recorded history, as a client saw it.
#[derive(Debug, Clone)]
pub struct Operation<I, O> {
    /// Which client issued it (for printing only).
    pub client: usize,
    /// What the client asked.
    pub input: I,
    /// When the request was sent, since the history's start.
    pub call: Duration,
    /// What came back.
    pub outcome: Outcome<O>,
}

/// What a client got back for an operation.
#[derive(Debug, Clone)]
pub enum Outcome<O> {
    /// The client got this answer at `at`.
    Returned {
        /// The answer.
        output: O,
        /// When it arrived, since the history's start.
        at: Duration,
    },
    /// The client got no answer (a timeout, a connection cut): the operation may have taken
    /// effect at any time after its call, or never.
    Unknown,
}

impl<O> Outcome<O> {
    /// The answer, if one came.
    fn output(&self) -> Option<&O> {
        match self {
            Outcome::Returned { output, .. } => Some(output),
            Outcome::Unknown => None,
        }
    }
}

/// A sequential specification: what one copy of the system answers, one operation at a time.
pub trait Model {
    /// The state of the specification (of one part, see [`Model::partition`]).
    type State: Clone + Eq + Hash + Debug;
    /// What a client asks.
    type Input: Debug;
    /// What a client gets back.
    type Output: Debug;

    /// The state before any operation.
    fn init(&self) -> Self::State;

    /// The state after `input` applied to `state` answered `output` (None: the answer is
    /// unknown, so any answer the model allows), or None when the model cannot answer `output`
    /// from `state`.
    fn step(
        &self,
        state: &Self::State,
        input: &Self::Input,
        output: Option<&Self::Output>,
    ) -> Option<Self::State>;

    /// Splits a history into independent parts checked apart (P-compositionality), as indices
    /// into it; by default one part holding every operation.
    fn partition(&self, history: &[Operation<Self::Input, Self::Output>]) -> Vec<Vec<usize>> {
        vec![(0..history.len()).collect()]
    }
}

/// What [`check`] found.
#[derive(Debug)]
pub enum Verdict {
    /// Some order of the operations explains every answer.
    Linearizable,
    /// No order explains the part's answers; `explanation` lists the part's operations
    /// (client, input, call, outcome) in call order and the longest prefix that could be
    /// linearized.
    NotLinearizable {
        /// The failing part and how far the search got, for a human.
        explanation: String,
    },
    /// The search gave up after `budget` (too many states); neither proven nor refuted.
    Inconclusive {
        /// Which parts were left undecided, for a human.
        explanation: String,
    },
}

/// Checks whether `history` is linearizable with respect to `model`, spending at most about
/// `budget` of wall-clock time. Parts are checked in the order [`Model::partition`] gives; the
/// first part found not linearizable is the one explained.
pub fn check<M: Model>(
    model: &M,
    history: &[Operation<M::Input, M::Output>],
    budget: Duration,
) -> Verdict {
    let deadline = Instant::now().checked_add(budget);
    let parts = model.partition(history);
    let mut undecided = Vec::new();
    for (number, part) in parts.iter().enumerate() {
        let ops: Vec<&Operation<M::Input, M::Output>> = part.iter().map(|&i| &history[i]).collect();
        match Search::new(model, &ops).run(deadline) {
            PartResult::Linearizable => {}
            PartResult::Refuted { prefix, state } => {
                let explanation = explain_refuted(part, &ops, &prefix, &state);
                return Verdict::NotLinearizable { explanation };
            }
            PartResult::GaveUp {
                steps,
                configurations,
            } => {
                undecided.push(explain_undecided(number, &ops, steps, configurations));
            }
        }
    }
    if undecided.is_empty() {
        return Verdict::Linearizable;
    }
    let explanation = format!(
        "gave up after {budget:?}; {} of {} parts undecided:\n  {}",
        undecided.len(),
        parts.len(),
        undecided.join("\n  ")
    );
    Verdict::Inconclusive { explanation }
}

/// How often (in search steps) the wall clock is read.
const BUDGET_CHECK_EVERY: u64 = 4096;
/// The list's head sentinel.
const HEAD: usize = 0;
/// "No node": the end of the list.
const NIL: usize = usize::MAX;

/// One event of the list: an operation's call or return.
struct Node {
    /// The operation, as an index into the part.
    op: usize,
    /// A call (else a return).
    call: bool,
    /// The node of the operation's other event.
    partner: usize,
    prev: usize,
    next: usize,
}

/// The doubly linked list of call and return events, in time order, after a head sentinel.
struct Events {
    nodes: Vec<Node>,
}

impl Events {
    /// The list of the events of operations called and returned at `times` (call, return).
    fn build(times: &[(Duration, Duration)]) -> Events {
        // (time, returns after calls at equal times, operation): calls first on ties.
        let mut order: Vec<(Duration, bool, usize)> = Vec::with_capacity(2 * times.len());
        for (op, &(call, ret)) in times.iter().enumerate() {
            order.push((call, false, op));
            order.push((ret.max(call), true, op));
        }
        order.sort_unstable();
        let sentinel = Node {
            op: NIL,
            call: false,
            partner: NIL,
            prev: NIL,
            next: NIL,
        };
        let mut nodes = vec![sentinel];
        let mut node_of_call = vec![NIL; times.len()];
        for (position, &(_, is_return, op)) in order.iter().enumerate() {
            let index = position + 1;
            let next = if index == order.len() { NIL } else { index + 1 };
            let mut node = Node {
                op,
                call: !is_return,
                partner: NIL,
                prev: index - 1,
                next,
            };
            if is_return {
                node.partner = node_of_call[op];
                nodes[node.partner].partner = index;
            } else {
                node_of_call[op] = index;
            }
            nodes.push(node);
        }
        nodes[HEAD].next = if order.is_empty() { NIL } else { 1 };
        Events { nodes }
    }

    /// The first event still in the list.
    fn first(&self) -> usize {
        self.nodes[HEAD].next
    }

    /// Takes the operation of the call `call` (both its events) out of the list.
    fn lift(&mut self, call: usize) {
        self.unlink(call);
        self.unlink(self.nodes[call].partner);
    }

    /// Puts back what the latest [`Events::lift`] of `call` took out.
    fn unlift(&mut self, call: usize) {
        self.relink(self.nodes[call].partner);
        self.relink(call);
    }

    fn unlink(&mut self, index: usize) {
        let Node { prev, next, .. } = self.nodes[index];
        self.nodes[prev].next = next;
        if next != NIL {
            self.nodes[next].prev = prev;
        }
    }

    /// Undoes [`Events::unlink`]: the node still knows its old neighbours.
    fn relink(&mut self, index: usize) {
        let Node { prev, next, .. } = self.nodes[index];
        self.nodes[prev].next = index;
        if next != NIL {
            self.nodes[next].prev = index;
        }
    }
}

/// A set of operations of a part, one bit each.
#[derive(Clone, PartialEq, Eq, Hash)]
struct Bitset(Vec<u64>);

impl Bitset {
    fn new(len: usize) -> Bitset {
        Bitset(vec![0; len.div_ceil(64)])
    }

    fn set(&mut self, bit: usize) {
        self.0[bit / 64] |= 1 << (bit % 64);
    }

    fn clear(&mut self, bit: usize) {
        self.0[bit / 64] &= !(1 << (bit % 64));
    }

    /// Every bit of `self` is in `other` (of the same length).
    fn is_subset(&self, other: &Bitset) -> bool {
        self.0.iter().zip(&other.0).all(|(a, b)| a & !b == 0)
    }
}

/// The configurations the search explored. A configuration is the operations with a known
/// answer linearized, the state, and the operations with an unknown outcome linearized; kept
/// per (known, state) as the unknown sets, none a superset of another.
struct Visited<S> {
    unknown_sets: HashMap<(Bitset, S), Vec<Bitset>>,
    configurations: usize,
}

impl<S: Clone + Eq + Hash> Visited<S> {
    fn new() -> Self {
        Visited {
            unknown_sets: HashMap::new(),
            configurations: 0,
        }
    }

    /// Records a configuration unless one at least as free was explored (same known set and
    /// state, a subset of its unknown set linearized: every way on from here is open there
    /// too); says whether it was recorded.
    fn insert(&mut self, known: &Bitset, state: &S, unknown: &Bitset) -> bool {
        let sets = self
            .unknown_sets
            .entry((known.clone(), state.clone()))
            .or_default();
        if sets.iter().any(|seen| seen.is_subset(unknown)) {
            return false;
        }
        sets.retain(|seen| !unknown.is_subset(seen));
        sets.push(unknown.clone());
        self.configurations += 1;
        true
    }
}

/// Where a scan of the list stands: at `entry`, trying the calls of operations with a known
/// answer, or (`unknown`), once those ran out, the calls of those with an unknown outcome.
/// Trying the known ones first reaches configurations with fewer unknown operations
/// linearized first, which then cut the rest (see [`Visited`]).
#[derive(Clone, Copy)]
struct Cursor {
    entry: usize,
    unknown: bool,
}

/// A choice to undo: where the scan linearized a call, and the state before it.
struct Frame<S> {
    at: Cursor,
    state: S,
}

/// How the search of one part ended.
enum PartResult<S> {
    Linearizable,
    /// No order works; the longest linearizable prefix found (operations of the part, in
    /// order) and the state after it.
    Refuted {
        prefix: Vec<usize>,
        state: S,
    },
    GaveUp {
        steps: u64,
        configurations: usize,
    },
}

/// The search of one part.
struct Search<'a, M: Model> {
    model: &'a M,
    ops: &'a [&'a Operation<M::Input, M::Output>],
    events: Events,
    /// Operations with a known answer linearized.
    known: Bitset,
    /// Operations with an unknown outcome linearized.
    unknown: Bitset,
    state: M::State,
    stack: Vec<Frame<M::State>>,
    visited: Visited<M::State>,
    /// Operations with a known answer not linearized yet.
    known_left: usize,
    /// Operations with an unknown outcome not linearized yet.
    unknown_left: usize,
    /// The longest linearization found, and the state after it.
    best: (Vec<usize>, M::State),
}

impl<'a, M: Model> Search<'a, M> {
    fn new(model: &'a M, ops: &'a [&'a Operation<M::Input, M::Output>]) -> Self {
        let times: Vec<(Duration, Duration)> =
            ops.iter().map(|op| (op.call, returned_at(op))).collect();
        let known_left = ops
            .iter()
            .filter(|op| op.outcome.output().is_some())
            .count();
        let unknown_left = ops.len() - known_left;
        let state = model.init();
        Search {
            model,
            ops,
            events: Events::build(&times),
            known: Bitset::new(ops.len()),
            unknown: Bitset::new(ops.len()),
            best: (Vec::new(), state.clone()),
            state,
            stack: Vec::new(),
            visited: Visited::new(),
            known_left,
            unknown_left,
        }
    }

    fn run(mut self, deadline: Option<Instant>) -> PartResult<M::State> {
        let mut cursor = self.restart();
        let mut steps: u64 = 0;
        while self.known_left > 0 {
            if steps.is_multiple_of(BUDGET_CHECK_EVERY)
                && deadline.is_some_and(|d| Instant::now() >= d)
            {
                return PartResult::GaveUp {
                    steps,
                    configurations: self.visited.configurations,
                };
            }
            steps += 1;
            match self.advance(cursor) {
                Some(next) => cursor = next,
                None => {
                    let (prefix, state) = self.best;
                    return PartResult::Refuted { prefix, state };
                }
            }
        }
        PartResult::Linearizable
    }

    /// One step of the scan at `cursor`: where it goes on, or None when no order is left.
    fn advance(&mut self, cursor: Cursor) -> Option<Cursor> {
        let Cursor { entry, unknown } = cursor;
        if entry != NIL && self.events.nodes[entry].call {
            if self.is_unknown(entry) == unknown && self.try_linearize(cursor) {
                return Some(self.restart());
            }
            let entry = self.events.nodes[entry].next;
            return Some(Cursor { entry, unknown });
        }
        if !unknown && self.unknown_left > 0 {
            let entry = self.events.first();
            return Some(Cursor {
                entry,
                unknown: true,
            });
        }
        self.backtrack()
    }

    /// A scan from the head of the list.
    fn restart(&self) -> Cursor {
        let entry = self.events.first();
        Cursor {
            entry,
            unknown: false,
        }
    }

    /// The operation of the event `entry` has an unknown outcome.
    fn is_unknown(&self, entry: usize) -> bool {
        self.ops[self.events.nodes[entry].op]
            .outcome
            .output()
            .is_none()
    }

    /// Linearizes the operation of the call at `at` now if the model allows it and that leads
    /// somewhere new; says whether it did.
    fn try_linearize(&mut self, at: Cursor) -> bool {
        let call = at.entry;
        let op = self.events.nodes[call].op;
        let operation = self.ops[op];
        let output = operation.outcome.output();
        let Some(next) = self.model.step(&self.state, &operation.input, output) else {
            return false;
        };
        if output.is_none() && next == self.state {
            // Dominated: leaving an unanswered no-op out keeps every option this branch has.
            return false;
        }
        self.taken(op).set(op);
        if !self.visited.insert(&self.known, &next, &self.unknown) {
            self.taken(op).clear(op);
            return false;
        }
        let state = std::mem::replace(&mut self.state, next);
        self.stack.push(Frame { at, state });
        self.events.lift(call);
        *self.left(op) -= 1;
        self.remember_if_longest();
        true
    }

    /// Undoes the latest choice; where to go on scanning, or None when there is none to undo.
    fn backtrack(&mut self) -> Option<Cursor> {
        let Frame { at, state } = self.stack.pop()?;
        let op = self.events.nodes[at.entry].op;
        self.taken(op).clear(op);
        *self.left(op) += 1;
        self.state = state;
        self.events.unlift(at.entry);
        let entry = self.events.nodes[at.entry].next;
        Some(Cursor { entry, ..at })
    }

    /// The count of operations not linearized yet that `op` belongs to.
    fn left(&mut self, op: usize) -> &mut usize {
        if self.ops[op].outcome.output().is_some() {
            &mut self.known_left
        } else {
            &mut self.unknown_left
        }
    }

    /// The set `op` goes in once linearized.
    fn taken(&mut self, op: usize) -> &mut Bitset {
        if self.ops[op].outcome.output().is_some() {
            &mut self.known
        } else {
            &mut self.unknown
        }
    }

    fn remember_if_longest(&mut self) {
        if self.stack.len() > self.best.0.len() {
            let prefix = self
                .stack
                .iter()
                .map(|frame| self.events.nodes[frame.at.entry].op)
                .collect();
            self.best = (prefix, self.state.clone());
        }
    }
}

/// When `op` returned; infinity (`Duration::MAX`) when unknown.
fn returned_at<I, O>(op: &Operation<I, O>) -> Duration {
    match op.outcome {
        Outcome::Returned { at, .. } => at,
        Outcome::Unknown => Duration::MAX,
    }
}

/// One line about part `number` (of `ops`), given up after `steps` and `configurations`.
fn explain_undecided<I: Debug, O>(
    number: usize,
    ops: &[&Operation<I, O>],
    steps: u64,
    configurations: usize,
) -> String {
    let first = ops.iter().min_by_key(|op| op.call).map(|op| &op.input);
    let part = format!(
        "part {number} ({} operations, the first {first:?})",
        ops.len()
    );
    if steps == 0 {
        format!("{part}: not started, the budget was spent")
    } else {
        format!("{part}: {steps} steps, {configurations} configurations explored")
    }
}

/// The explanation of a refuted part: its operations (`indices` into the history) in call
/// order, then the longest linearizable `prefix` and the `state` after it.
fn explain_refuted<I: Debug, O: Debug, S: Debug>(
    indices: &[usize],
    ops: &[&Operation<I, O>],
    prefix: &[usize],
    state: &S,
) -> String {
    let mut by_call: Vec<usize> = (0..ops.len()).collect();
    by_call.sort_by_key(|&op| (ops[op].call, op));
    let mut text = format!(
        "no order explains these {} operations (history index, in call order):\n",
        ops.len()
    );
    for op in by_call {
        let _ = writeln!(text, "  {}", describe(indices[op], ops[op]));
    }
    let _ = writeln!(
        text,
        "longest linearizable prefix ({} of {}):",
        prefix.len(),
        ops.len()
    );
    for &op in prefix {
        let _ = writeln!(
            text,
            "  #{} {:?} -> {}",
            indices[op],
            ops[op].input,
            answer(ops[op])
        );
    }
    let _ = write!(text, "state after it: {state:?}");
    text
}

/// One line about an operation: `#index client c: input, called at t -> answer`.
fn describe<I: Debug, O: Debug>(index: usize, op: &Operation<I, O>) -> String {
    format!(
        "#{index} client {}: {:?}, called at {:?} -> {}",
        op.client,
        op.input,
        op.call,
        answer(op)
    )
}

fn answer<I, O: Debug>(op: &Operation<I, O>) -> String {
    match &op.outcome {
        Outcome::Returned { output, at } => format!("{output:?} at {at:?}"),
        Outcome::Unknown => "unknown".to_owned(),
    }
}

/// An operation on shoal's service registry, as a client issues it through the CLI or the API.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RegistryInput {
    /// Creates a service.
    Create {
        /// The service's name.
        name: String,
        /// How many tasks it should run.
        replicas: u32,
        /// What they run.
        image: String,
    },
    /// Changes a service's image.
    Update {
        /// The service's name.
        name: String,
        /// The new image.
        image: String,
    },
    /// Sets a service's replica count.
    Scale {
        /// The service's name.
        name: String,
        /// The new count.
        replicas: u32,
    },
    /// Removes a service.
    Remove {
        /// The service's name.
        name: String,
    },
    /// Reads a service (a linearizable read).
    Inspect {
        /// The service's name.
        name: String,
    },
}

impl RegistryInput {
    /// The name of the service the operation is about.
    pub fn name(&self) -> &str {
        match self {
            RegistryInput::Create { name, .. }
            | RegistryInput::Update { name, .. }
            | RegistryInput::Scale { name, .. }
            | RegistryInput::Remove { name }
            | RegistryInput::Inspect { name } => name,
        }
    }
}

/// What a registry operation answers.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RegistryOutput {
    /// A write acknowledged.
    Done,
    /// Create refused: the name is taken.
    Exists,
    /// Update, scale, remove or inspect of a missing name.
    NotFound,
    /// Update refused because it changes nothing (same image).
    Unchanged,
    /// Inspect's answer.
    Found {
        /// The service's replica count.
        replicas: u32,
        /// The service's image.
        image: String,
    },
}

/// The sequential specification of shoal's service registry. Services are independent, so a
/// history is partitioned by service name and a part's state is one service: `None` when
/// absent, else `Some((replicas, image))`.
#[derive(Debug, Clone, Copy, Default)]
pub struct RegistryModel;

impl RegistryModel {
    /// What `input` answers from `state`, and the state after it.
    pub fn apply(
        state: &Option<(u32, String)>,
        input: &RegistryInput,
    ) -> (RegistryOutput, Option<(u32, String)>) {
        match state {
            None => Self::apply_to_absent(input),
            Some((replicas, image)) => Self::apply_to_present(*replicas, image, input),
        }
    }

    fn apply_to_absent(input: &RegistryInput) -> (RegistryOutput, Option<(u32, String)>) {
        match input {
            RegistryInput::Create {
                replicas, image, ..
            } => (RegistryOutput::Done, Some((*replicas, image.clone()))),
            _ => (RegistryOutput::NotFound, None),
        }
    }

    fn apply_to_present(
        replicas: u32,
        image: &str,
        input: &RegistryInput,
    ) -> (RegistryOutput, Option<(u32, String)>) {
        use RegistryOutput::{Done, Exists, Found, Unchanged};
        let same = Some((replicas, image.to_owned()));
        match input {
            RegistryInput::Create { .. } => (Exists, same),
            RegistryInput::Update { image: new, .. } if new == image => (Unchanged, same),
            RegistryInput::Update { image: new, .. } => (Done, Some((replicas, new.clone()))),
            RegistryInput::Scale { replicas: new, .. } => (Done, Some((*new, image.to_owned()))),
            RegistryInput::Remove { .. } => (Done, None),
            RegistryInput::Inspect { .. } => {
                let image = image.to_owned();
                (Found { replicas, image }, same)
            }
        }
    }
}

impl Model for RegistryModel {
    type State = Option<(u32, String)>;
    type Input = RegistryInput;
    type Output = RegistryOutput;

    fn init(&self) -> Self::State {
        None
    }

    fn step(
        &self,
        state: &Self::State,
        input: &RegistryInput,
        output: Option<&RegistryOutput>,
    ) -> Option<Self::State> {
        let (answer, next) = RegistryModel::apply(state, input);
        match output {
            Some(seen) if *seen != answer => None,
            _ => Some(next),
        }
    }

    /// One part per service name, in name order.
    fn partition(&self, history: &[Operation<RegistryInput, RegistryOutput>]) -> Vec<Vec<usize>> {
        let mut parts: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        for (index, op) in history.iter().enumerate() {
            parts.entry(op.input.name()).or_default().push(index);
        }
        parts.into_values().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type RegistryOp = Operation<RegistryInput, RegistryOutput>;

    const BUDGET: Duration = Duration::from_secs(30);

    fn ms(millis: u64) -> Duration {
        Duration::from_millis(millis)
    }

    fn returned<I, O>(client: usize, input: I, call: u64, at: u64, output: O) -> Operation<I, O> {
        let outcome = Outcome::Returned { output, at: ms(at) };
        Operation {
            client,
            input,
            call: ms(call),
            outcome,
        }
    }

    fn unknown<I, O>(client: usize, input: I, call: u64) -> Operation<I, O> {
        Operation {
            client,
            input,
            call: ms(call),
            outcome: Outcome::Unknown,
        }
    }

    fn create(name: &str, replicas: u32, image: &str) -> RegistryInput {
        RegistryInput::Create {
            name: name.into(),
            replicas,
            image: image.into(),
        }
    }

    fn update(name: &str, image: &str) -> RegistryInput {
        RegistryInput::Update {
            name: name.into(),
            image: image.into(),
        }
    }

    fn scale(name: &str, replicas: u32) -> RegistryInput {
        RegistryInput::Scale {
            name: name.into(),
            replicas,
        }
    }

    fn remove(name: &str) -> RegistryInput {
        RegistryInput::Remove { name: name.into() }
    }

    fn inspect(name: &str) -> RegistryInput {
        RegistryInput::Inspect { name: name.into() }
    }

    fn found(replicas: u32, image: &str) -> RegistryOutput {
        RegistryOutput::Found {
            replicas,
            image: image.into(),
        }
    }

    fn check_registry(history: &[RegistryOp]) -> Verdict {
        check(&RegistryModel, history, BUDGET)
    }

    #[track_caller]
    fn assert_linearizable(verdict: Verdict) {
        assert!(matches!(verdict, Verdict::Linearizable), "{verdict:?}");
    }

    /// Asserts the verdict refutes and returns its explanation.
    #[track_caller]
    fn assert_refuted(verdict: Verdict) -> String {
        match verdict {
            Verdict::NotLinearizable { explanation } => explanation,
            other => panic!("expected NotLinearizable, got {other:?}"),
        }
    }

    #[test]
    fn empty_history_is_linearizable() {
        assert_linearizable(check_registry(&[]));
    }

    #[test]
    fn sequential_history_is_linearizable() {
        use RegistryOutput::{Done, Exists, NotFound, Unchanged};
        let history = vec![
            returned(0, inspect("web"), 0, 1, NotFound),
            returned(0, create("web", 2, "nginx:1"), 2, 3, Done),
            returned(1, create("web", 5, "nginx:2"), 4, 5, Exists),
            returned(1, update("web", "nginx:1"), 6, 7, Unchanged),
            returned(2, update("web", "nginx:2"), 8, 9, Done),
            returned(2, scale("web", 3), 10, 11, Done),
            returned(0, scale("web", 3), 12, 13, Done),
            returned(0, inspect("web"), 14, 15, found(3, "nginx:2")),
            returned(1, remove("web"), 16, 17, Done),
            returned(1, remove("web"), 18, 19, NotFound),
            returned(2, scale("web", 1), 20, 21, NotFound),
            returned(2, update("web", "x"), 22, 23, NotFound),
            returned(0, inspect("web"), 24, 25, NotFound),
        ];
        assert_linearizable(check_registry(&history));
    }

    #[test]
    fn read_of_a_value_never_written_is_not_linearizable() {
        let history = vec![
            returned(0, create("web", 2, "nginx:1"), 0, 10, RegistryOutput::Done),
            returned(1, inspect("web"), 5, 15, found(2, "nginx:9")),
        ];
        let explanation = assert_refuted(check_registry(&history));
        assert!(explanation.contains("nginx:9"), "{explanation}");
        assert!(
            explanation.contains("longest linearizable prefix (1 of 2)"),
            "{explanation}"
        );
    }

    #[test]
    fn stale_read_after_an_acknowledged_write_is_not_linearizable() {
        let history = vec![
            returned(0, create("web", 2, "nginx:1"), 0, 1, RegistryOutput::Done),
            returned(0, update("web", "nginx:2"), 2, 4, RegistryOutput::Done),
            returned(1, inspect("web"), 5, 6, found(2, "nginx:1")),
        ];
        assert_refuted(check_registry(&history));
    }

    #[test]
    fn concurrent_read_may_see_the_old_or_the_new_value() {
        for seen in ["nginx:1", "nginx:2"] {
            let history = vec![
                returned(0, create("web", 2, "nginx:1"), 0, 1, RegistryOutput::Done),
                returned(0, update("web", "nginx:2"), 2, 10, RegistryOutput::Done),
                returned(1, inspect("web"), 3, 9, found(2, seen)),
            ];
            assert_linearizable(check_registry(&history));
        }
    }

    #[test]
    fn touching_intervals_count_as_concurrent() {
        // The update returned at 5 and the read was called at 5: either may have come first.
        let history = vec![
            returned(0, create("web", 2, "nginx:1"), 0, 1, RegistryOutput::Done),
            returned(0, update("web", "nginx:2"), 2, 5, RegistryOutput::Done),
            returned(1, inspect("web"), 5, 6, found(2, "nginx:1")),
        ];
        assert_linearizable(check_registry(&history));
    }

    #[test]
    fn unknown_create_seen_later_is_linearizable() {
        let history = vec![
            unknown(0, create("web", 2, "nginx:1"), 0),
            returned(1, inspect("web"), 50, 51, found(2, "nginx:1")),
        ];
        assert_linearizable(check_registry(&history));
    }

    #[test]
    fn unknown_create_never_seen_is_linearizable() {
        let history = vec![
            unknown(0, create("web", 2, "nginx:1"), 0),
            returned(1, inspect("web"), 50, 51, RegistryOutput::NotFound),
            returned(1, inspect("web"), 60, 61, RegistryOutput::NotFound),
        ];
        assert_linearizable(check_registry(&history));
    }

    #[test]
    fn unknown_create_cannot_take_effect_before_its_call() {
        let history = vec![
            returned(1, inspect("web"), 0, 1, found(2, "nginx:1")),
            unknown(0, create("web", 2, "nginx:1"), 5),
        ];
        assert_refuted(check_registry(&history));
    }

    #[test]
    fn paths_through_different_unknown_operations_are_kept_apart() {
        use RegistryOutput::{Done, NotFound, Unchanged};
        // Either unknown create leads to the same state once the update of 31-34 is linearized,
        // but only the path through the second create can explain the "Unchanged" that returns
        // at 48: the search must not take the first path's failure for the second's.
        let history = vec![
            returned(0, update("web", "redis:7"), 0, 48, Unchanged),
            unknown(1, create("web", 3, "nginx:2"), 1),
            unknown(2, create("web", 3, "redis:7"), 7),
            returned(1, update("web", "nginx:1"), 31, 34, Done),
            unknown(1, remove("web"), 34),
            returned(0, inspect("web"), 58, 85, NotFound),
        ];
        assert_linearizable(check_registry(&history));
    }

    #[test]
    fn lost_acknowledged_write_is_not_linearizable() {
        let history = vec![
            returned(0, create("web", 2, "nginx:1"), 0, 10, RegistryOutput::Done),
            returned(1, scale("api", 2), 11, 12, RegistryOutput::NotFound),
            returned(1, inspect("web"), 20, 21, RegistryOutput::NotFound),
        ];
        let explanation = assert_refuted(check_registry(&history));
        assert!(explanation.contains("#2 client 1"), "{explanation}");
        assert!(
            !explanation.contains("api"),
            "only the failing part: {explanation}"
        );
    }

    #[test]
    fn registry_partitions_by_name() {
        let history = vec![
            returned(0, create("b", 1, "i"), 0, 1, RegistryOutput::Done),
            returned(0, create("a", 1, "i"), 2, 3, RegistryOutput::Done),
            returned(0, inspect("b"), 4, 5, found(1, "i")),
        ];
        assert_eq!(RegistryModel.partition(&history), vec![vec![1], vec![0, 2]]);
    }

    /// A single integer register: the textbook example.
    struct Register;

    #[derive(Debug)]
    enum RegisterInput {
        Write(i32),
        Read,
    }

    impl Model for Register {
        type State = i32;
        type Input = RegisterInput;
        type Output = i32;

        fn init(&self) -> i32 {
            0
        }

        fn step(&self, state: &i32, input: &RegisterInput, output: Option<&i32>) -> Option<i32> {
            match input {
                RegisterInput::Write(value) => Some(*value),
                RegisterInput::Read => output.is_none_or(|seen| seen == state).then_some(*state),
            }
        }
    }

    #[test]
    fn register_with_overlapping_operations_only_one_order_explains() {
        use RegisterInput::{Read, Write};
        // Two writes overlap each other and two reads; only write 1, read 1, write 2, read 2 (the
        // reverse of the call order of the writes) fits every answer and real time.
        let history = vec![
            returned(0, Write(2), 0, 100, 0),
            returned(1, Write(1), 10, 30, 0),
            returned(2, Read, 20, 40, 1),
            returned(2, Read, 110, 120, 2),
        ];
        assert_linearizable(check(&Register, &history, BUDGET));
        // Reading 1 after 2 contradicts the only order: refuted.
        let mut history = history;
        history.push(returned(1, Read, 130, 140, 1));
        let explanation = assert_refuted(check(&Register, &history, BUDGET));
        assert!(
            explanation.contains("longest linearizable prefix (4 of 5)"),
            "{explanation}"
        );
    }

    #[test]
    fn register_classic_reads_of_old_and_new_value() {
        use RegisterInput::{Read, Write};
        // C0 writes 100 over [0, 100]; C1 reads 100 over [25, 75]; C2 reads 0 over [30, 60]:
        // read 0, write, read 100.
        let ok = vec![
            returned(0, Write(100), 0, 100, 0),
            returned(1, Read, 25, 75, 100),
            returned(2, Read, 30, 60, 0),
        ];
        assert_linearizable(check(&Register, &ok, BUDGET));
        // C2 now reads 0 after C1's read of 100 returned.
        let bad = vec![
            returned(0, Write(100), 0, 100, 0),
            returned(1, Read, 25, 75, 100),
            returned(2, Read, 80, 90, 0),
        ];
        assert_refuted(check(&Register, &bad, BUDGET));
    }

    /// splitmix64: a tiny seeded generator for reproducible random histories.
    struct SplitMix64(u64);

    impl SplitMix64 {
        fn next_u64(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        }

        /// Uniform in `0..n` (n > 0), near enough.
        fn below(&mut self, n: u64) -> u64 {
            self.next_u64() % n
        }

        fn percent(&mut self, chance: u64) -> bool {
            self.below(100) < chance
        }
    }

    /// The shape of a generated history.
    struct Workload {
        clients: usize,
        names: u64,
        ops: usize,
        /// Chance (%) that an answer is replaced by Unknown.
        unknown_percent: u64,
        /// Longest time an operation takes, in µs.
        max_latency: u64,
        /// Longest pause of a client between operations, in µs.
        max_pause: u64,
    }

    const IMAGES: [&str; 3] = ["nginx:1", "nginx:2", "redis:7"];

    fn random_input(rng: &mut SplitMix64, names: u64) -> RegistryInput {
        let name = format!("svc-{}", rng.below(names));
        let image = IMAGES[rng.below(IMAGES.len() as u64) as usize];
        let replicas = rng.below(4) as u32;
        match rng.below(10) {
            0 | 1 => create(&name, replicas, image),
            2 | 3 => update(&name, image),
            4 | 5 => scale(&name, replicas),
            6 => remove(&name),
            _ => inspect(&name),
        }
    }

    /// One operation in time: when it was called, took effect and returned, in µs.
    struct Timed {
        client: usize,
        input: RegistryInput,
        call: u64,
        effect: u64,
        ret: u64,
    }

    /// Clients issuing operations one at a time, each taking effect at a random instant
    /// between its call and its return.
    fn timed_operations(rng: &mut SplitMix64, workload: &Workload) -> Vec<Timed> {
        let mut free_at: Vec<u64> = (0..workload.clients).map(|_| rng.below(10)).collect();
        let mut timed = Vec::with_capacity(workload.ops);
        for _ in 0..workload.ops {
            let client = (0..workload.clients)
                .min_by_key(|&c| (free_at[c], c))
                .unwrap_or(0);
            let call = free_at[client];
            let latency = 1 + rng.below(workload.max_latency);
            let effect = call + rng.below(latency + 1);
            let ret = call + latency;
            free_at[client] = ret + rng.below(workload.max_pause + 1);
            let input = random_input(rng, workload.names);
            timed.push(Timed {
                client,
                input,
                call,
                effect,
                ret,
            });
        }
        timed
    }

    /// A history that is linearizable by construction: the operations answer as the model does
    /// when run in the order of their effect instants, each inside its call-return interval.
    fn linearizable_history(seed: u64, workload: &Workload) -> Vec<RegistryOp> {
        let mut rng = SplitMix64(seed);
        let timed = timed_operations(&mut rng, workload);
        let mut by_effect: Vec<usize> = (0..timed.len()).collect();
        by_effect.sort_by_key(|&i| (timed[i].effect, i));
        let mut services: BTreeMap<String, Option<(u32, String)>> = BTreeMap::new();
        let mut outputs = vec![RegistryOutput::Done; timed.len()];
        for i in by_effect {
            let state = services
                .entry(timed[i].input.name().to_owned())
                .or_default();
            let (output, next) = RegistryModel::apply(state, &timed[i].input);
            *state = next;
            outputs[i] = output;
        }
        timed
            .into_iter()
            .zip(outputs)
            .map(|(t, output)| {
                let outcome = if rng.percent(workload.unknown_percent) {
                    Outcome::Unknown
                } else {
                    Outcome::Returned {
                        output,
                        at: Duration::from_micros(t.ret),
                    }
                };
                Operation {
                    client: t.client,
                    input: t.input,
                    call: Duration::from_micros(t.call),
                    outcome,
                }
            })
            .collect()
    }

    /// Makes one answered Inspect (picked by `rng`) see an image nothing ever wrote; false when
    /// the history has none.
    fn corrupt_one_read(history: &mut [RegistryOp], rng: &mut SplitMix64) -> bool {
        let reads: Vec<usize> = (0..history.len())
            .filter(|&i| matches!(history[i].input, RegistryInput::Inspect { .. }))
            .filter(|&i| history[i].outcome.output().is_some())
            .collect();
        if reads.is_empty() {
            return false;
        }
        let victim = reads[rng.below(reads.len() as u64) as usize];
        if let Outcome::Returned { output, .. } = &mut history[victim].outcome {
            *output = found(1, "never:written");
        }
        true
    }

    #[test]
    fn random_linearizable_histories_pass_and_one_corrupted_read_fails() {
        let workload = Workload {
            clients: 3,
            names: 4,
            ops: 300,
            unknown_percent: 10,
            max_latency: 400,
            max_pause: 100,
        };
        for seed in 1..=20 {
            let mut history = linearizable_history(seed, &workload);
            let verdict = check_registry(&history);
            assert!(
                matches!(verdict, Verdict::Linearizable),
                "seed {seed}: {verdict:?}"
            );
            let mut rng = SplitMix64(seed ^ 0x00C0_FFEE);
            assert!(
                corrupt_one_read(&mut history, &mut rng),
                "seed {seed}: no read"
            );
            let verdict = check_registry(&history);
            let explanation = assert_refuted(verdict);
            assert!(
                explanation.contains("never:written"),
                "seed {seed}: {explanation}"
            );
        }
    }

    /// Whether some order of the operations left in `rest` fits real time and the answers
    /// from `state`, by trying every one: the checker's reference on small histories.
    fn brute_force(
        history: &[RegistryOp],
        rest: &mut Vec<usize>,
        state: &Option<(u32, String)>,
    ) -> bool {
        if rest.iter().all(|&i| history[i].outcome.output().is_none()) {
            return true;
        }
        for position in 0..rest.len() {
            let op = &history[rest[position]];
            let must_wait = rest.iter().any(|&r| returned_at(&history[r]) < op.call);
            let Some(next) = (!must_wait)
                .then(|| RegistryModel.step(state, &op.input, op.outcome.output()))
                .flatten()
            else {
                continue;
            };
            let taken = rest.remove(position);
            let found = brute_force(history, rest, &next);
            rest.insert(position, taken);
            if found {
                return true;
            }
        }
        false
    }

    /// A small history of one service: random operations and intervals, answers from a
    /// sequential run with some changed at random, some unknown.
    fn small_history(rng: &mut SplitMix64) -> Vec<RegistryOp> {
        let outputs = [
            RegistryOutput::Done,
            RegistryOutput::Exists,
            RegistryOutput::NotFound,
            RegistryOutput::Unchanged,
            found(1, "nginx:1"),
            found(2, "nginx:2"),
        ];
        let workload = Workload {
            clients: 3,
            names: 1,
            ops: 2 + rng.below(8) as usize,
            unknown_percent: 30,
            max_latency: 60,
            max_pause: 10,
        };
        let mut history = linearizable_history(rng.next_u64(), &workload);
        for op in &mut history {
            if let Outcome::Returned { output, .. } = &mut op.outcome
                && rng.percent(15)
            {
                *output = outputs[rng.below(outputs.len() as u64) as usize].clone();
            }
        }
        history
    }

    #[test]
    fn checker_agrees_with_brute_force_on_small_histories() {
        let mut rng = SplitMix64(42);
        let mut refuted = 0;
        for case in 0..3000 {
            let history = small_history(&mut rng);
            let mut all: Vec<usize> = (0..history.len()).collect();
            let expected = brute_force(&history, &mut all, &None);
            let verdict = check_registry(&history);
            let got = match &verdict {
                Verdict::Linearizable => true,
                Verdict::NotLinearizable { .. } => false,
                Verdict::Inconclusive { .. } => panic!("case {case}: {verdict:?}"),
            };
            assert_eq!(got, expected, "case {case}: {history:#?}\n{verdict:?}");
            refuted += usize::from(!expected);
        }
        assert!(
            (300..2700).contains(&refuted),
            "{refuted} of 3000 refuted: too one-sided"
        );
    }

    #[test]
    fn random_histories_without_unknowns_or_overlap_pass() {
        let workload = Workload {
            clients: 1,
            names: 2,
            ops: 200,
            unknown_percent: 0,
            max_latency: 10,
            max_pause: 10,
        };
        for seed in 100..110 {
            assert_linearizable(check_registry(&linearizable_history(seed, &workload)));
        }
    }

    #[test]
    fn two_thousand_overlapping_operations_are_checked_quickly() {
        let workload = Workload {
            clients: 5,
            names: 8,
            ops: 2000,
            unknown_percent: 2,
            max_latency: 1000,
            max_pause: 20,
        };
        let history = linearizable_history(7, &workload);
        let started = Instant::now();
        let verdict = check_registry(&history);
        let elapsed = started.elapsed();
        println!(
            "checked {} operations over 8 names in {elapsed:?}",
            history.len()
        );
        assert_linearizable(verdict);
        assert!(elapsed < Duration::from_secs(5), "took {elapsed:?}");
    }

    #[test]
    fn exhausted_budget_is_inconclusive() {
        let workload = Workload {
            clients: 5,
            names: 1,
            ops: 2000,
            unknown_percent: 5,
            max_latency: 1000,
            max_pause: 20,
        };
        let history = linearizable_history(11, &workload);
        let verdict = check(&RegistryModel, &history, Duration::ZERO);
        let Verdict::Inconclusive { explanation } = verdict else {
            panic!("expected Inconclusive, got {verdict:?}");
        };
        assert!(
            explanation.contains("1 of 1 parts undecided"),
            "{explanation}"
        );
    }
}
