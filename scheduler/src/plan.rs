//! A `Plan`: what reconciliation and placement decided, applied through raft as one command.

use serde::{Deserialize, Serialize};

/// The orchestrator's decisions for one pass (filled in by the scheduler work).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Plan {}
