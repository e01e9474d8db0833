//! Task status reports from nodes. A report is accepted only if the task is assigned (placed) to the
//! reporting node, the state is one a node may report (Accepted or later), and it moves the task
//! forward; anything else is ignored and counted.

use crate::command::{ApplyError, Outcome};
use crate::model::{ClusterState, NodeId, TaskId, TaskState, TaskStatus};

/// The most reports in one batch.
pub const MAX_REPORTS: usize = 100_000;
/// Longer messages are cut to this many bytes.
pub const MAX_MESSAGE_LEN: usize = 1_024;

/// Applies a batch of reports from `node`.
pub fn report(
    state: &mut ClusterState,
    node: &NodeId,
    reports: &[(TaskId, TaskStatus)],
) -> Result<Outcome, ApplyError> {
    if reports.len() > MAX_REPORTS {
        return Err(ApplyError::Refused(format!(
            "more than {MAX_REPORTS} reports in one batch"
        )));
    }
    let (mut accepted, mut ignored) = (0, 0);
    for (id, status) in reports {
        // Only tasks placed on the reporting node: a global task bound to a node but not yet
        // placed there (no room) is not the node's to run.
        let task = state
            .tasks
            .get_mut(id)
            .filter(|t| t.node.as_ref() == Some(node) && t.status.state >= TaskState::Assigned);
        match task {
            Some(t) if status.state >= TaskState::Accepted && status.state > t.status.state => {
                t.status = bounded(status);
                accepted += 1;
            }
            _ => ignored += 1,
        }
    }
    Ok(Outcome::StatusApplied { accepted, ignored })
}

fn bounded(status: &TaskStatus) -> TaskStatus {
    let mut s = status.clone();
    if s.message.len() > MAX_MESSAGE_LEN {
        let mut cut = MAX_MESSAGE_LEN;
        while !s.message.is_char_boundary(cut) {
            cut -= 1;
        }
        s.message.truncate(cut);
    }
    if s.container_id
        .as_ref()
        .is_some_and(|c| c.len() > MAX_MESSAGE_LEN)
    {
        s.container_id = None;
    }
    s
}
