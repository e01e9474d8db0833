//! Per-task backoff of failed stop/remove operations: the first retry waits
//! [`FIRST_RETRY`], each further failure doubles the wait up to [`MAX_RETRY`], and a success
//! forgets the task. Pure: the time is an argument.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use shoal_scheduler::TaskId;

/// Wait before the first retry.
pub const FIRST_RETRY: Duration = Duration::from_millis(100);
/// Longest wait between retries.
pub const MAX_RETRY: Duration = Duration::from_secs(5);

/// The wait after the `failures`-th consecutive failure (1-based).
pub fn delay(failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    FIRST_RETRY.saturating_mul(1 << doublings).min(MAX_RETRY)
}

/// The tasks whose last operation failed, and when each may be tried again.
#[derive(Debug, Default)]
pub struct Backoffs {
    tasks: HashMap<TaskId, Retry>,
}

#[derive(Debug, Clone, Copy)]
struct Retry {
    failures: u32,
    not_before: Instant,
}

impl Backoffs {
    /// Records a failure of `task` at `now`; returns when it may be tried again.
    pub fn failed(&mut self, task: TaskId, now: Instant) -> Instant {
        let retry = self.tasks.entry(task).or_insert(Retry {
            failures: 0,
            not_before: now,
        });
        retry.failures = retry.failures.saturating_add(1);
        retry.not_before = now + delay(retry.failures);
        retry.not_before
    }

    /// Forgets `task` (its operation succeeded, or it is no longer this worker's business).
    pub fn clear(&mut self, task: TaskId) {
        self.tasks.remove(&task);
    }

    /// The tasks that must not be tried at `now`.
    pub fn waiting(&self, now: Instant) -> impl Iterator<Item = TaskId> + '_ {
        self.tasks
            .iter()
            .filter(move |(_, r)| r.not_before > now)
            .map(|(task, _)| *task)
    }

    /// The earliest moment a waiting task may be tried again, if any waits.
    pub fn next_due(&self, now: Instant) -> Option<Instant> {
        self.tasks
            .values()
            .map(|r| r.not_before)
            .filter(|at| *at > now)
            .min()
    }

    /// Keeps only the tasks for which `keep` holds.
    pub fn retain(&mut self, mut keep: impl FnMut(&TaskId) -> bool) {
        self.tasks.retain(|task, _| keep(task));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wait_doubles_from_100_ms_up_to_5_s() {
        let waits: Vec<u128> = (1..=9).map(|n| delay(n).as_millis()).collect();
        assert_eq!(waits, [100, 200, 400, 800, 1600, 3200, 5000, 5000, 5000]);
        assert_eq!(delay(u32::MAX), MAX_RETRY);
    }

    #[test]
    fn a_failed_task_waits_and_a_success_forgets_it() {
        let mut backoffs = Backoffs::default();
        let t0 = Instant::now();
        let task = TaskId(7);
        assert_eq!(backoffs.failed(task, t0), t0 + FIRST_RETRY);
        assert_eq!(backoffs.waiting(t0).collect::<Vec<_>>(), [task]);
        assert_eq!(backoffs.next_due(t0), Some(t0 + FIRST_RETRY));
        let t1 = t0 + FIRST_RETRY;
        assert_eq!(backoffs.waiting(t1).count(), 0, "due again");
        assert_eq!(backoffs.next_due(t1), None);
        assert_eq!(backoffs.failed(task, t1), t1 + 2 * FIRST_RETRY, "doubled");
        backoffs.clear(task);
        assert_eq!(backoffs.waiting(t1).count(), 0);
        assert_eq!(backoffs.failed(task, t1), t1 + FIRST_RETRY, "starts over");
    }
}
