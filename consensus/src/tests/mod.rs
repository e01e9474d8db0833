//! The crate's tests: one test binary, one module per concern.

mod append;
mod cluster;
mod harness;
mod load;
mod membership;
mod security;
mod storage_suite;
