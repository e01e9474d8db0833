//! How each [`Command`] changes a [`ClusterState`]. Every handler validates first (reading the
//! state only) and mutates after, so a refused command changes nothing.
//!
//! # Layout
//! - [`service`]: create, update, roll back and remove services; spec validation.
//! - [`node`]: nodes joining, changing, going down and leaving.
//! - [`status`]: task status reports from nodes.
//! - [`plan`]: the orchestrator's plans, with their preconditions.
//! - [`prune`]: bounded task history.
//! - [`secrets`]: secrets and configs, and services' references to them.

pub mod node;
pub mod plan;
pub mod prune;
pub mod secrets;
pub mod service;
pub mod status;

use crate::command::{ApplyError, Command, Outcome};
use crate::model::ClusterState;

/// Applies `cmd` to `state`; see [`ClusterState::apply`].
pub(crate) fn apply(state: &mut ClusterState, cmd: &Command) -> Result<Outcome, ApplyError> {
    match cmd {
        Command::InitCluster { cluster_id } => match &state.cluster_id {
            Some(id) => Err(ApplyError::AlreadyInitialised(id.clone())),
            None => {
                state.cluster_id = Some(cluster_id.clone());
                Ok(Outcome::Done)
            }
        },
        Command::CreateService { spec, at } => service::create(state, spec, *at),
        Command::UpdateService {
            id,
            expected_revision,
            spec,
            at,
        } => service::update(state, *id, *expected_revision, spec, *at),
        Command::RollbackService { id, at } => service::rollback(state, *id, *at, None),
        Command::RemoveService { id, at: _ } => service::remove(state, *id),
        Command::UpsertNode { node } => node::upsert(state, node),
        Command::UpdateNode {
            id,
            availability,
            role,
            labels_set,
            labels_remove,
        } => node::update(state, id, *availability, *role, labels_set, labels_remove),
        Command::SetNodeStates { changes, at } => node::set_states(state, changes, *at),
        Command::RemoveNode { id, force, at } => node::remove(state, id, *force, *at),
        Command::ApplyPlan { plan, at } => plan::apply(state, plan, *at),
        Command::ReportTaskStatus { node, reports } => status::report(state, node, reports),
        Command::PruneTasks { keep_per_slot } => Ok(prune::prune(state, *keep_per_slot)),
        Command::RotateJoinToken {
            role,
            nonce,
            grace_ms,
            at,
        } => {
            state.join_keys.rotate(*role, *nonce, *grace_ms, *at);
            Ok(Outcome::Done)
        }
        Command::UpdateClusterSettings {
            allow_sensitive_mounts,
            task_history_limit,
        } => {
            if let Some(allow) = allow_sensitive_mounts {
                state.settings.allow_sensitive_mounts = *allow;
            }
            if let Some(limit) = task_history_limit {
                state.settings.task_history_limit = *limit;
            }
            Ok(Outcome::Done)
        }
        Command::CreateSecret {
            name,
            labels,
            sealed,
            at,
        } => secrets::create_secret(state, name, labels, sealed, *at),
        Command::RemoveSecret { id, at: _ } => secrets::remove_secret(state, *id),
        Command::CreateConfig {
            name,
            labels,
            data,
            at,
        } => secrets::create_config(state, name, labels, data, *at),
        Command::RemoveConfig { id, at: _ } => secrets::remove_config(state, *id),
        Command::EnableAutolock { unlock_key, at } => {
            crate::autolock::enable(state, unlock_key, *at)
        }
        Command::DisableAutolock { at } => crate::autolock::disable(state, *at),
        Command::RotateUnlockKey { unlock_key, at } => {
            crate::autolock::rotate(state, unlock_key, *at)
        }
        Command::Decline { reason, message } => Err(ApplyError::Declined {
            reason: *reason,
            message: message.clone(),
        }),
    }
}

#[cfg(test)]
mod tests;
