//! Join-token rotation: which rotation of each role's join token the cluster accepts now, and
//! until when the one before it is still accepted (its grace).
//!
//! A join token proves its holder may join as a worker or a manager. Rotating one changes what
//! new joiners must present; nodes that already joined keep their place (they are known by their
//! authenticated PeerId). A rotation is a random nonce, chosen by the manager that handles the
//! request (randomness never happens here) and mixed with the cluster secret by the managers to
//! derive the token; the nonce alone gives nothing. The nonce is kept only in the managers'
//! replicated state; it is never shown by a view, an event or `Debug`.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::Timestamp;

/// The role a join token grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum JoinRole {
    /// Runs tasks; can never become a manager.
    Worker,
    /// May be promoted to manager by the autopilot.
    Manager,
}

impl JoinRole {
    /// `worker` or `manager`.
    pub fn name(self) -> &'static str {
        match self {
            JoinRole::Worker => "worker",
            JoinRole::Manager => "manager",
        }
    }
}

/// A rotation's nonce. `Debug` never shows it.
#[derive(Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinNonce(pub [u8; 32]);

impl fmt::Debug for JoinNonce {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("JoinNonce(..)")
    }
}

/// One role's accepted join tokens.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinKey {
    /// The current rotation's nonce; `None` is the cluster's original token.
    pub current: Option<JoinNonce>,
    /// How many times this role's token was rotated.
    pub rotations: u64,
    /// When it was last rotated.
    pub rotated_at: Option<Timestamp>,
    /// The rotation before the current one, still accepted until its deadline.
    pub previous: Option<PreviousJoinKey>,
}

/// A replaced rotation in its grace period.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreviousJoinKey {
    /// Its nonce (`None`: the original token).
    pub nonce: Option<JoinNonce>,
    /// Joiners presenting it are refused from this time on.
    pub valid_until: Timestamp,
}

/// Both roles' join keys, part of the replicated state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinKeys {
    /// The worker token's.
    pub worker: JoinKey,
    /// The manager token's.
    pub manager: JoinKey,
}

impl JoinKeys {
    /// The key of `role`.
    pub fn of(&self, role: JoinRole) -> &JoinKey {
        match role {
            JoinRole::Worker => &self.worker,
            JoinRole::Manager => &self.manager,
        }
    }

    /// Replaces `role`'s token by the rotation `nonce` at `at`; the token it replaces is still
    /// accepted for `grace_ms` (zero: refused at once).
    pub fn rotate(&mut self, role: JoinRole, nonce: JoinNonce, grace_ms: u64, at: Timestamp) {
        let key = match role {
            JoinRole::Worker => &mut self.worker,
            JoinRole::Manager => &mut self.manager,
        };
        key.previous = Some(PreviousJoinKey {
            nonce: key.current,
            valid_until: at.plus_millis(grace_ms),
        });
        key.current = Some(nonce);
        key.rotations += 1;
        key.rotated_at = Some(at);
    }

    /// The nonces a joiner of `role` may present at `now`: the current one, and the previous
    /// one while its grace lasts.
    pub fn accepted(&self, role: JoinRole, now: Timestamp) -> Vec<Option<JoinNonce>> {
        let key = self.of(role);
        let mut accepted = vec![key.current];
        if let Some(previous) = &key.previous
            && now < previous.valid_until
        {
            accepted.push(previous.nonce);
        }
        accepted
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_old_token_lasts_its_grace_and_no_longer() {
        let mut keys = JoinKeys::default();
        assert_eq!(keys.accepted(JoinRole::Worker, Timestamp(0)), vec![None]);
        let first = JoinNonce([1; 32]);
        keys.rotate(JoinRole::Worker, first, 1_000, Timestamp(10_000));
        assert_eq!(
            keys.accepted(JoinRole::Worker, Timestamp(10_999)),
            vec![Some(first), None]
        );
        assert_eq!(
            keys.accepted(JoinRole::Worker, Timestamp(11_000)),
            vec![Some(first)]
        );
        // The manager token is untouched by a worker rotation.
        assert_eq!(
            keys.accepted(JoinRole::Manager, Timestamp(11_000)),
            vec![None]
        );
        let second = JoinNonce([2; 32]);
        keys.rotate(JoinRole::Worker, second, 0, Timestamp(20_000));
        assert_eq!(
            keys.accepted(JoinRole::Worker, Timestamp(20_000)),
            vec![Some(second)]
        );
        assert_eq!(keys.worker.rotations, 2);
    }

    #[test]
    fn debug_never_shows_a_nonce() {
        let mut keys = JoinKeys::default();
        keys.rotate(JoinRole::Manager, JoinNonce([0xab; 32]), 5, Timestamp(1));
        let shown = format!("{keys:?}");
        assert!(
            !shown.contains("171") && !shown.contains("ab, ab"),
            "{shown}"
        );
    }
}
