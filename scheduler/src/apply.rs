//! How each `Command` changes a `ClusterState`.

use crate::command::{ApplyError, Command, Outcome};
use crate::model::ClusterState;

/// Applies `cmd` to `state`; see [`ClusterState::apply`].
pub(crate) fn apply(_state: &mut ClusterState, _cmd: &Command) -> Result<Outcome, ApplyError> {
    Err(ApplyError::Refused("not built yet".into()))
}
