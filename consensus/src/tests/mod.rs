//! The crate's tests: one test binary, one module per concern.

mod cluster;
mod harness;
mod security;
mod storage_suite;
