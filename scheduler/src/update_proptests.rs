//! Property tests of rolling updates: random services, update policies and orders in which the
//! nodes report their containers stopped and started. The window holds at every pass, stop-first
//! keeps enough tasks serving, start-first never serves fewer than the replicas, and the update
//! completes once the nodes catch up.

use proptest::prelude::*;
use proptest::strategy::Strategy;

use crate::model::*;
use crate::proptests::settled;
use crate::reconcile::window::lanes;
use crate::testkit::{pass, report, running_then_updated};

/// The policy under test: `(replicas, parallelism, delay_ms, start_first, monitor_ms)`.
type Policy = (u64, u64, u64, bool, u64);

fn policies() -> impl Strategy<Value = Policy> {
    (
        1..12u64,
        0..5u64,
        prop::sample::select(vec![0u64, 0, 25]),
        any::<bool>(),
        0..20u64,
    )
}

/// Between two passes: which of the tasks that can move do move (one bit each), and how many
/// milliseconds pass.
type Step = (u64, u64);

fn steps() -> impl Strategy<Value = Vec<Step>> {
    prop::collection::vec((any::<u64>(), 0..15u64), 0..60)
}

/// A running service of `replicas` under `policy`, then updated at time 10.
fn updating(policy: Policy) -> (ClusterState, ServiceId) {
    let (replicas, parallelism, delay_ms, start_first, monitor_ms) = policy;
    let mut spec = crate::synthetic::spec("web", replicas);
    spec.update = UpdateConfig {
        parallelism,
        delay_ms,
        order: if start_first {
            UpdateOrder::StartFirst
        } else {
            UpdateOrder::StopFirst
        },
        monitor_ms,
        ..UpdateConfig::default()
    };
    running_then_updated(3, spec)
}

/// The nodes catch up on the tasks picked by `mask`: a task told to stop reports Shutdown, a
/// task told to run reports Running.
fn progress(state: &mut ClusterState, mask: u64, now: u64) {
    let movable: Vec<(TaskId, TaskState)> = state
        .tasks
        .values()
        .filter(|t| t.holds_resources())
        .filter_map(|t| match t.desired {
            DesiredState::Shutdown => Some((t.id, TaskState::Shutdown)),
            DesiredState::Running if t.status.state < TaskState::Running => {
                Some((t.id, TaskState::Running))
            }
            _ => None,
        })
        .collect();
    for (i, (task, to)) in movable.into_iter().enumerate() {
        if mask & (1 << (i % 64)) != 0 {
            report(state, task, to, now);
        }
    }
}

/// Checks what must hold after every pass of the update.
fn check(
    state: &ClusterState,
    id: ServiceId,
    policy: Policy,
    now: u64,
) -> Result<(), TestCaseError> {
    let (replicas, parallelism, _, start_first, _) = policy;
    let tasks: Vec<&Task> = state.tasks.values().filter(|t| t.service == id).collect();
    let in_flight = tasks
        .iter()
        .filter(|t| t.spec_version == 2 && t.is_live() && t.status.state < TaskState::Running)
        .count();
    prop_assert!(
        in_flight <= lanes(parallelism),
        "{} replacements in flight with parallelism {}",
        in_flight,
        parallelism
    );
    let serving = tasks
        .iter()
        .filter(|t| t.status.state == TaskState::Running)
        .count() as u64;
    let least = if start_first {
        replicas
    } else {
        replicas.saturating_sub(lanes(parallelism) as u64)
    };
    prop_assert!(
        serving >= least,
        "{} tasks serve, at least {} expected",
        serving,
        least
    );
    settled(state, now)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    /// Random update policies and random orders of the nodes' reports.
    #[test]
    fn rolling_updates_keep_the_window_and_complete(policy in policies(), steps in steps()) {
        let (mut state, id) = updating(policy);
        let mut now = 10;
        for (mask, elapsed) in steps {
            pass(&mut state, now);
            check(&state, id, policy, now)?;
            now += elapsed;
            progress(&mut state, mask, now);
        }
        // The nodes catch up with everything from here on.
        for _ in 0..200 {
            pass(&mut state, now);
            check(&state, id, policy, now)?;
            now += 5;
            progress(&mut state, u64::MAX, now);
        }
        let svc = &state.services[&id];
        prop_assert_eq!(svc.update_status.as_ref().map(|u| u.state), Some(UpdateState::Completed));
        let live: Vec<&Task> = state.tasks.values().filter(|t| t.service == id && t.is_live()).collect();
        prop_assert_eq!(live.len() as u64, policy.0);
        prop_assert!(live.iter().all(|t| t.spec_version == 2 && t.status.state == TaskState::Running));
    }
}
