//! The crate's tests: one test binary, one module per concern.

mod storage_suite;
