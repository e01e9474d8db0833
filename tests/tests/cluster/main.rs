//! Whole-cluster tests: real agents in this process on loopback, the real Docker engine.
//! One test binary, one module per scenario.

mod api;
mod autolock;
mod chaos;
mod cli_update;
mod cluster_info;
mod containers;
mod docker_single;
mod events;
mod history;
mod liveness;
mod logs;
mod metrics;
mod no_runtime;
mod nodes;
mod nodes_cluster;
mod nodes_network;
mod nodes_partition;
mod nodes_recover;
mod nodes_roles;
mod scale;
mod secrets;
mod service_network;
mod sim_cluster;
mod stack;
mod task_files;
mod tcp_api;
mod tokens;
mod web_view;
mod workers;
