//! The orchestration loop: on every change of the cluster state it debounces briefly, runs the
//! scheduler's reconcile and placement on a snapshot, and commits the resulting plan. A plan the
//! state machine finds stale is simply recomputed on the next pass. Timed work (restart delays,
//! update delays, monitor periods) wakes it at the time the plan names.

use std::time::Duration;

use shoal_consensus::Quorum;
use shoal_metrics::AgentMetrics;
use shoal_metrics::agent::{PlanLabels, PlanResult};
use shoal_scheduler::{ApplyError, Command, Timestamp};
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

/// Runs passes until the state watch closes.
pub async fn run(quorum: Quorum, metrics: AgentMetrics) {
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
        drop(state);
        if !plan.is_empty() {
            let placed = plan.placed_count();
            metrics.scheduler_unplaceable_tasks.set(unplaceable(&plan));
            let result = quorum.write(Command::ApplyPlan { plan, at }).await;
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
                    tracing::debug!(placed, "plan committed");
                    continue;
                }
                Ok(Err(ApplyError::Stale(reason))) => {
                    tracing::debug!(%reason, "plan was stale; recomputing");
                    continue;
                }
                Ok(Err(error)) => tracing::warn!(%error, "plan refused"),
                Err(error) => {
                    tracing::warn!(%error, "cannot commit plan");
                    tokio::time::sleep(WRITE_RETRY).await;
                }
            }
        }
        if !wait_for_change(&mut applied, wake_at).await {
            return;
        }
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
