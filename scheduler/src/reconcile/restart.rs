//! The restart policy: whether, and when, a task that ended is replaced.
//!
//! - `none`: never; `on-failure`: unless it completed (exit 0); `any`: always.
//! - `delay`: the replacement starts `delay` after the task ended (it is created at once,
//!   placed and prepared, with desired state Ready, and moved to Running when the time comes).
//! - `max_attempts` within `window`: the slot's tasks of the current version that ended within
//!   the window (all of them if the window is 0) are counted; once there are more than
//!   `max_attempts`, the slot is left alone until the window lets older ends drop out.
//!
//! A task lost with its node (Orphaned) is always replaced at once and never counts: it did not
//! fail.

use crate::model::{RestartCondition, RestartPolicy, Task, TaskState, Timestamp};

/// What happens to a task that ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Replace it; the replacement starts at this time.
    At(Timestamp),
    /// Leave the slot as is; a later pass may decide otherwise at `retry_at`.
    Never {
        /// When the restart window lets a restart happen again, if ever.
        retry_at: Option<Timestamp>,
    },
}

/// Decides for `ended`, given all tasks of its slot (`history`) and the service `version`.
pub fn decide(
    policy: &RestartPolicy,
    ended: &Task,
    history: &[&Task],
    version: u64,
    now: Timestamp,
) -> Decision {
    let wanted = match policy.condition {
        RestartCondition::None => false,
        RestartCondition::OnFailure => ended.status.state != TaskState::Complete,
        RestartCondition::Any => true,
    };
    if !wanted {
        return Decision::Never { retry_at: None };
    }
    if policy.max_attempts > 0 {
        let counted = counted_ends(policy, history, version, now);
        if counted.len() as u64 > policy.max_attempts {
            let retry_at = (policy.window_ms > 0).then(|| {
                let oldest = counted.iter().min().copied().unwrap_or(now);
                oldest.plus_millis(policy.window_ms + 1)
            });
            return Decision::Never { retry_at };
        }
    }
    Decision::At(ended.status.timestamp.plus_millis(policy.delay_ms))
}

/// End times of the slot's tasks of `version` that ended (not lost) within the window.
fn counted_ends(
    policy: &RestartPolicy,
    history: &[&Task],
    version: u64,
    now: Timestamp,
) -> Vec<Timestamp> {
    history
        .iter()
        .filter(|t| t.spec_version == version && t.status.state.is_terminal())
        .filter(|t| t.status.state != TaskState::Orphaned)
        // Stopped on purpose (scaled down, replaced): not a failure.
        .filter(|t| t.status.state != TaskState::Shutdown || t.is_live())
        .map(|t| t.status.timestamp)
        .filter(|&end| policy.window_ms == 0 || now.millis_since(end) <= policy.window_ms)
        .collect()
}
