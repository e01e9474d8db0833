//! The command line: `shoal agent` runs the daemon; every other command is a docker-like client of
//! an agent's control socket.

mod agent;
mod bench;
mod client;
mod cluster;
mod node;
mod output;
mod service;
mod spec;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

pub use agent::AgentArgs;

/// shoal: a peer-to-peer container orchestrator.
///
/// Run `shoal agent` on every machine: agents find each other on a LAN with no configuration
/// (or from one `--join` multiaddr in a cloud), elect managers, and run services as Docker
/// containers. Every other command talks to the local agent.
#[derive(Debug, Parser)]
#[command(name = "shoal", version, propagate_version = true)]
pub struct Cli {
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// Top-level commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the agent daemon on this machine.
    Agent(Box<AgentArgs>),
    /// Manage services: create, list, inspect, scale, update, remove.
    #[command(subcommand)]
    Service(Box<service::ServiceCommand>),
    /// Inspect and manage the cluster's nodes.
    #[command(subcommand)]
    Node(node::NodeCommand),
    /// Cluster-wide operations.
    #[command(subcommand)]
    Cluster(cluster::ClusterCommand),
    /// Run a benchmark and print its figures (the last line is JSON).
    #[command(subcommand)]
    Bench(bench::BenchCommand),
}

/// Options shared by every client command: which agent to talk to.
#[derive(Debug, Clone, clap::Args)]
pub struct ClientOptions {
    /// The agent's data dir; its control socket is `<data-dir>/shoal.sock`.
    #[arg(long, env = "SHOAL_DATA_DIR", global = true)]
    pub data_dir: Option<PathBuf>,
    /// The control socket to use (overrides --data-dir).
    #[arg(long, env = "SHOAL_SOCKET", global = true)]
    pub socket: Option<PathBuf>,
}

impl ClientOptions {
    /// The socket path these options point at.
    pub fn socket_path(&self) -> PathBuf {
        match (&self.socket, &self.data_dir) {
            (Some(socket), _) => socket.clone(),
            (None, Some(dir)) => crate::paths::control_socket(dir),
            (None, None) => crate::paths::control_socket(&crate::paths::default_data_dir()),
        }
    }
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Agent(args) => agent::run(*args),
        Command::Service(command) => client_runtime()?.block_on(service::run(*command)),
        Command::Node(command) => client_runtime()?.block_on(node::run(command)),
        Command::Cluster(command) => cluster::run(command),
        Command::Bench(command) => bench::run(command),
    }
}

/// A small runtime for client commands.
fn client_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}
