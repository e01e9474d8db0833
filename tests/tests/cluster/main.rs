//! Whole-cluster tests: real agents in this process on loopback, the real Docker engine.
//! One test binary, one module per scenario.

mod docker_single;
mod metrics;
mod sim_cluster;
