//! Whole-cluster tests: real agents in this process on loopback, the real Docker engine.
//! One test binary, one module per scenario.

mod docker_single;
mod liveness;
mod metrics;
mod no_runtime;
mod sim_cluster;
