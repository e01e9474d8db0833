//! The orchestration loop: on every change of the cluster state it debounces briefly, runs the
//! scheduler's reconcile and placement on a snapshot, and commits the resulting plan. A plan the
//! state machine finds stale is simply recomputed on the next pass. Timed work (restart delays,
//! update delays, monitor periods) wakes it at the time the plan names.
//!
//! A large plan (a scale to 100,000 replicas) is committed in pieces under the command size
//! limit ([`Plan::into_pieces`](shoal_scheduler::Plan::into_pieces)), one after the other, so
//! a big reconciliation converges instead of being refused whole. A new leader decides nothing
//! until its state holds an entry of its own term.
//!
//! Task history stays bounded: when a pass finds tasks beyond the cluster's
//! `task_history_limit` ([`prune::due`], a pure function of the state), the loop commits a
//! `PruneTasks`, and every replica forgets the same tasks when it applies it.

use std::time::Duration;

use shoal_consensus::Quorum;
use shoal_metrics::AgentMetrics;
use shoal_metrics::agent::{PlanLabels, PlanResult};
use shoal_scheduler::apply::prune;
use shoal_scheduler::{ApplyError, Command, Plan, Timestamp};
use tokio::time::Instant;

use crate::worker::now;

/// Quiet time that ends a burst of changes.
const DEBOUNCE: Duration = Duration::from_millis(10);
/// Longest a burst may delay a pass.
const MAX_DELAY: Duration = Duration::from_millis(100);
/// Pause after a failed write before trying again.
const WRITE_RETRY: Duration = Duration::from_millis(100);
/// A pass runs at least this often, whatever happens.
const MAX_IDLE: Duration = Duration::from_secs(2);
/// What the items of one plan piece may add up to: half the command limit, as the items'
/// sizes are upper bounds and the plan has a little more around them.
pub const PLAN_PIECE_BYTES: usize = shoal_consensus::limits::MAX_COMMAND_BYTES / 2;
/// How long the loop waits at a time for a new leader's state to catch up.
const READY_WAIT: Duration = Duration::from_secs(5);

/// Runs passes until the state watch closes.
pub async fn run(quorum: Quorum, metrics: AgentMetrics) {
    while !quorum.ready_as_leader(READY_WAIT).await {
        if !quorum.is_leader() {
            return;
        }
    }
    let mut applied = quorum.watch();
    loop {
        let state = quorum.state();
        let at = now();
        let started = std::time::Instant::now();
        let plan = shoal_scheduler::reconcile::reconcile(&state, at);
        metrics
            .scheduler_pass_seconds
            .observe(started.elapsed().as_secs_f64());
        crate::leader::gauges::update(&metrics, &state);
        let wake_at: Option<Timestamp> = plan.wake_at;
        let prune_due = prune::due(&state);
        drop(state);
        let committed = if plan.is_empty() {
            None
        } else {
            metrics.scheduler_unplaceable_tasks.set(unplaceable(&plan));
            Some(commit(&quorum, &metrics, plan, at).await)
        };
        if let Some(command) = prune_due {
            prune_history(&quorum, command).await;
        }
        match committed {
            Some(Committed::All | Committed::Stale) => continue,
            Some(Committed::Failed) => tokio::time::sleep(WRITE_RETRY).await,
            Some(Committed::Refused) | None => {}
        }
        if !wait_for_change(&mut applied, wake_at).await {
            return;
        }
    }
}

/// How committing a plan went.
enum Committed {
    /// Every piece.
    All,
    /// A piece was stale: recompute at once (the pieces before it stay, each valid alone).
    Stale,
    /// A piece was refused for another reason.
    Refused,
    /// A write failed (no quorum, timeout): retry after a pause.
    Failed,
}

/// Commits `plan` in pieces under the command size limit, one after the other.
async fn commit(quorum: &Quorum, metrics: &AgentMetrics, plan: Plan, at: Timestamp) -> Committed {
    let pieces = plan.into_pieces(PLAN_PIECE_BYTES);
    let count = pieces.len();
    for piece in pieces {
        let placed = piece.placed_count();
        let result = quorum.write(Command::ApplyPlan { plan: piece, at }).await;
        let outcome = match &result {
            Ok(Ok(_)) => PlanResult::Committed,
            Ok(Err(ApplyError::Stale(_))) => PlanResult::Stale,
            _ => PlanResult::Failed,
        };
        metrics
            .scheduler_plans
            .get_or_create(&PlanLabels { result: outcome })
            .inc();
        match result {
            Ok(Ok(_)) => {
                metrics.scheduler_placements.inc_by(placed as u64);
                tracing::debug!(placed, pieces = count, "plan committed");
            }
            Ok(Err(ApplyError::Stale(reason))) => {
                tracing::debug!(%reason, "plan was stale; recomputing");
                return Committed::Stale;
            }
            Ok(Err(error)) => {
                tracing::warn!(%error, "plan refused");
                return Committed::Refused;
            }
            Err(error) => {
                tracing::warn!(%error, "cannot commit plan");
                return Committed::Failed;
            }
        }
    }
    Committed::All
}

/// Commits the prune a pass found due. A failed one is simply found due again by a later pass.
async fn prune_history(quorum: &Quorum, command: Command) {
    match quorum.write(command).await {
        Ok(Ok(_)) => tracing::debug!("task history pruned"),
        Ok(Err(error)) => tracing::warn!(%error, "task history prune refused"),
        Err(error) => tracing::debug!(%error, "cannot prune task history now"),
    }
}

/// Tasks of the plan that stay without a node.
fn unplaceable(plan: &shoal_scheduler::Plan) -> i64 {
    (plan.creates.iter().filter(|c| !c.assigned).count() + plan.messages.len()) as i64
}

/// Waits for a state change (then debounces) or for `wake_at`. False when the watch closed.
async fn wait_for_change(
    applied: &mut tokio::sync::watch::Receiver<shoal_consensus::AppliedState>,
    wake_at: Option<Timestamp>,
) -> bool {
    let idle = match wake_at {
        Some(at) => Duration::from_millis(at.millis_since(now())).min(MAX_IDLE),
        None => MAX_IDLE,
    };
    tokio::select! {
        changed = applied.changed() => {
            if changed.is_err() {
                return false;
            }
        }
        _ = tokio::time::sleep(idle) => return true,
    }
    let deadline = Instant::now() + MAX_DELAY;
    loop {
        let quiet = tokio::time::sleep(DEBOUNCE);
        tokio::select! {
            changed = applied.changed() => {
                if changed.is_err() {
                    return false;
                }
                if Instant::now() >= deadline {
                    return true;
                }
            }
            _ = quiet => return true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_scheduler::synthetic::{self, ClusterShape};

    /// A scale to 100,000 replicas is one plan far above the command limit; each of its pieces
    /// encodes under it.
    #[test]
    fn every_piece_of_a_huge_plan_fits_a_command() {
        let mut state = synthetic::cluster(&ClusterShape::new(200, 3));
        synthetic::create_service(&mut state, synthetic::spec("big", 100_000), Timestamp(0))
            .expect("created");
        let plan = shoal_scheduler::reconcile::reconcile(&state, Timestamp(1));
        let whole = shoal_consensus::codec::encode(&Command::ApplyPlan {
            plan: plan.clone(),
            at: Timestamp(1),
        })
        .expect("encodes")
        .len();
        assert!(
            whole > shoal_consensus::limits::MAX_COMMAND_BYTES,
            "{whole} bytes"
        );
        let pieces = plan.into_pieces(PLAN_PIECE_BYTES);
        assert!(pieces.len() > 1);
        for piece in pieces {
            let bytes = shoal_consensus::codec::encode(&Command::ApplyPlan {
                plan: piece,
                at: Timestamp(1),
            })
            .expect("encodes")
            .len();
            assert!(
                bytes <= shoal_consensus::limits::MAX_COMMAND_BYTES,
                "{bytes} bytes"
            );
        }
    }
}
