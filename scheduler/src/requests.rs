//! Idempotent writes: the outcomes of the most recent client requests, by request id, so that a
//! write retried after a timeout (its first attempt may have committed) is answered with the
//! first outcome instead of being applied again. A rollback retried this way does not undo
//! itself, and a create retried does not fail with "name in use".
//!
//! The log is part of the replicated state (and of snapshots), bounded by count, and evicts in
//! the order requests were first applied: deterministic on every replica.

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};

use crate::command::{ApplyError, Command, Outcome};
use crate::model::ClusterState;

/// Requests remembered at most. Client writes come at human or script pace; at a thousand
/// writes a second this still covers every retry made within 16 seconds.
pub const REQUEST_LOG_CAPACITY: usize = 16_384;

/// A client-chosen id of one write, the same for each of its retries.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
pub struct RequestId(pub u64);

impl std::fmt::Display for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "r{:016x}", self.0)
    }
}

/// What applying a command answered.
pub type ApplyResult = Result<Outcome, ApplyError>;

/// The outcomes of recent requests, oldest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct RequestLog {
    outcomes: BTreeMap<RequestId, ApplyResult>,
    order: VecDeque<RequestId>,
}

impl RequestLog {
    /// The outcome of `id`, if it was applied recently.
    pub fn get(&self, id: RequestId) -> Option<&ApplyResult> {
        self.outcomes.get(&id)
    }

    /// How many outcomes are remembered.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    fn record(&mut self, id: RequestId, result: ApplyResult) {
        if self.outcomes.insert(id, result).is_none() {
            self.order.push_back(id);
        }
        while self.order.len() > REQUEST_LOG_CAPACITY {
            if let Some(oldest) = self.order.pop_front() {
                self.outcomes.remove(&oldest);
            }
        }
    }
}

impl Command {
    /// Whether a retry of this command could change the state twice or answer differently, so
    /// that writers give it a request id. Plans, status reports, node liveness, registrations
    /// and pruning are idempotent or carry their own preconditions.
    pub fn wants_request_id(&self) -> bool {
        !matches!(
            self,
            Command::ApplyPlan { .. }
                | Command::ReportTaskStatus { .. }
                | Command::SetNodeStates { .. }
                | Command::UpsertNode { .. }
                | Command::PruneTasks { .. }
                | Command::InitCluster { .. }
        )
    }
}

impl ClusterState {
    /// Applies `cmd` once per request id: a request seen before is answered with its recorded
    /// outcome (a refusal included) and changes nothing. Without an id it is [`Self::apply`].
    pub fn apply_request(&mut self, request: Option<RequestId>, cmd: &Command) -> ApplyResult {
        let Some(id) = request else {
            return self.apply(cmd);
        };
        if let Some(done) = self.requests.get(id) {
            return done.clone();
        }
        let result = self.apply(cmd);
        self.requests.record(id, result.clone());
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ServiceId, Timestamp};

    fn create(name: &str) -> Command {
        Command::CreateService {
            spec: crate::synthetic::spec(name, 1),
            at: Timestamp(1),
        }
    }

    #[test]
    fn a_retried_request_is_applied_once_and_answered_alike() {
        let mut state = ClusterState::default();
        let id = Some(RequestId(7));
        let first = state.apply_request(id, &create("web"));
        assert_eq!(first, Ok(Outcome::ServiceCreated(ServiceId(0))));
        let again = state.apply_request(id, &create("web"));
        assert_eq!(again, first, "the retry gets the first answer");
        assert_eq!(state.services.len(), 1);
        // Without an id, or with a new one, the same command is a new write.
        assert!(matches!(
            state.apply_request(Some(RequestId(8)), &create("web")),
            Err(ApplyError::NameInUse(_))
        ));
    }

    #[test]
    fn a_retried_rollback_does_not_undo_itself() {
        let mut state = ClusterState::default();
        state.apply(&create("web")).expect("created");
        let mut spec = crate::synthetic::spec("web", 1);
        spec.image = "v2".into();
        let update = Command::UpdateService {
            id: ServiceId(0),
            expected_revision: 1,
            spec,
            at: Timestamp(2),
        };
        state.apply(&update).expect("updated");
        let rollback = Command::RollbackService {
            id: ServiceId(0),
            at: Timestamp(3),
        };
        let id = Some(RequestId(1));
        state.apply_request(id, &rollback).expect("rolled back");
        let image = state.services[&ServiceId(0)].spec.image.clone();
        state.apply_request(id, &rollback).expect("the same answer");
        assert_eq!(state.services[&ServiceId(0)].spec.image, image);
        assert_ne!(image, "v2");
    }

    #[test]
    fn a_declined_request_stays_declined_whatever_a_late_copy_asks() {
        let mut state = ClusterState::default();
        let id = Some(RequestId(9));
        let decline = Command::Decline {
            reason: crate::command::DeclineReason::NotFound,
            message: "no such service: web".into(),
        };
        let refused = state.apply_request(id, &decline);
        assert!(matches!(refused, Err(ApplyError::Declined { .. })));
        state.apply(&create("web")).expect("created meanwhile");
        // A late copy of the same request resolved the name against the new service.
        let remove = Command::RemoveService {
            id: ServiceId(0),
            at: Timestamp(2),
        };
        assert_eq!(state.apply_request(id, &remove), refused);
        assert_eq!(state.services.len(), 1, "the new service stays");
    }

    #[test]
    fn the_log_is_bounded_and_forgets_the_oldest() {
        let mut state = ClusterState::default();
        let prune = Command::PruneTasks { keep_per_slot: 1 };
        for i in 0..(REQUEST_LOG_CAPACITY as u64 + 10) {
            state
                .apply_request(Some(RequestId(i)), &prune)
                .expect("prune");
        }
        assert_eq!(state.requests.len(), REQUEST_LOG_CAPACITY);
        assert!(state.requests.get(RequestId(0)).is_none());
        assert!(
            state
                .requests
                .get(RequestId(REQUEST_LOG_CAPACITY as u64 + 9))
                .is_some()
        );
    }
}
