//! shoal's manager quorum: openraft over the mesh, a durable redb log and state machine,
//! zero-config bootstrap, join, and autopilot.

pub mod codec;
pub mod limits;
pub mod storage;
pub mod types;

#[cfg(test)]
mod tests;
