//! The command line: `shoal agent` runs the daemon; every other command is a docker-like client of
//! an agent's control socket.

mod agent;
mod bench;
mod client;
mod cluster;
pub mod config_file;
mod events;
mod logs;
mod man;
mod node;
mod output;
mod secret;
mod service;
mod spec;
mod stack;
mod stack_files;
mod task;
mod update;
mod version;

use std::path::PathBuf;

use clap::{CommandFactory as _, FromArgMatches as _, Parser, Subcommand};

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
    /// Deploy whole applications from Compose files: deploy, ls, services, ps, rm.
    #[command(subcommand)]
    Stack(stack::StackCommand),
    /// Inspect tasks, by id or unique id prefix.
    #[command(subcommand)]
    Task(task::TaskCommand),
    /// Cluster-wide operations.
    #[command(subcommand)]
    Cluster(cluster::ClusterCommand),
    /// Manage secrets: values that services' tasks see as files (in `/run/secrets` by
    /// default), encrypted at rest, never shown again once created.
    #[command(subcommand)]
    Secret(secret::ObjectCommand),
    /// Manage configs: values that services' tasks see as files (at `/NAME` by default).
    #[command(subcommand)]
    Config(secret::ObjectCommand),
    /// Follow the cluster's events: services, tasks, nodes and leaders, as they happen.
    ///
    /// `shoal events --since 10m --until 0s` prints what happened in the last ten minutes and
    /// exits; `--filter type=task --filter name=web` follows the tasks of `web`. Each line ends
    /// with its cursor: `--after CURSOR` resumes there, on this agent or any other.
    Events(events::EventsArgs),
    /// Show the version of this binary and of the agent it talks to.
    Version(version::VersionArgs),
    /// Print a shell completion script: `shoal completion bash > /etc/bash_completion.d/shoal`.
    Completion(version::CompletionArgs),
    /// Write the manual pages (`shoal.1`, `shoal-service-create.1`, ...) into a directory.
    Man(man::ManArgs),
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
    /// Talk to the agent at `tcp://HOST:PORT` (one started with `--api-addr`) instead of the
    /// local socket; `unix://PATH` names a socket.
    #[arg(long, env = "SHOAL_HOST", global = true, value_name = "tcp://HOST:PORT", value_parser = client::parse_host)]
    pub host: Option<client::Host>,
    /// The API token of the agent at --host (prefer SHOAL_API_TOKEN or --api-token-file: a
    /// value on the command line shows in `ps`).
    #[arg(long, env = "SHOAL_API_TOKEN", global = true, hide_env_values = true, value_parser = client::parse_secret)]
    pub api_token: Option<client::Secret>,
    /// A file holding the API token of the agent at --host (wins over --api-token).
    #[arg(long, env = "SHOAL_API_TOKEN_FILE", global = true, value_name = "FILE", value_parser = client::read_secret)]
    pub api_token_file: Option<client::Secret>,
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
        Command::Task(command) => client_runtime()?.block_on(task::run(command)),
        Command::Stack(command) => client_runtime()?.block_on(stack::run(command)),
        Command::Cluster(command) => cluster::run(command),
        Command::Secret(command) => {
            client_runtime()?.block_on(secret::run(shoal_scheduler::ObjectKind::Secret, command))
        }
        Command::Config(command) => {
            client_runtime()?.block_on(secret::run(shoal_scheduler::ObjectKind::Config, command))
        }
        Command::Events(args) => client_runtime()?.block_on(events::run(args)),
        Command::Version(args) => client_runtime()?.block_on(version::version(args)),
        Command::Completion(args) => {
            version::completion(args);
            Ok(())
        }
        Command::Man(args) => man::write_pages(&args),
        Command::Bench(command) => bench::run(command),
    }
}

/// Parses the process's command line, with `shoal agent --config FILE` layered under its flags
/// and environment. Help, version and usage errors print and exit, as clap does.
pub fn parse() -> Result<Cli, config_file::ConfigFileError> {
    let layered = config_file::layer(std::env::args_os().collect())?;
    let matches = Cli::command().get_matches_from(&layered.argv);
    let mut cli = Cli::from_arg_matches(&matches).unwrap_or_else(|error| error.exit());
    if let (Command::Agent(args), Some((_, agent))) = (&mut cli.command, matches.subcommand())
        && args.print_config
    {
        args.effective_config = Some(config_file::render_effective(agent, &layered));
    }
    Ok(cli)
}

/// A small runtime for client commands.
fn client_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    use super::*;

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn completions_cover_the_commands() {
        let mut script = Vec::new();
        clap_complete::generate(
            clap_complete::Shell::Bash,
            &mut Cli::command(),
            "shoal",
            &mut script,
        );
        let script = String::from_utf8_lossy(&script);
        for word in ["service", "logs", "events", "--update-parallelism", "drain"] {
            assert!(script.contains(word), "bash completion lacks {word}");
        }
    }

    #[test]
    fn service_update_and_node_commands_parse() {
        for argv in [
            &[
                "shoal", "service", "update", "--image", "a:2", "--force", "web",
            ][..],
            &[
                "shoal",
                "service",
                "update",
                "--rollback-parallelism",
                "2",
                "web",
            ][..],
            &["shoal", "service", "rollback", "--detach", "web"][..],
            &["shoal", "node", "update", "--availability", "drain", "n1"][..],
            &["shoal", "node", "rm", "--force", "n1", "n2"][..],
            &["shoal", "node", "ps"][..],
            &["shoal", "secret", "create", "--label", "a=b", "db", "-"][..],
            &["shoal", "secret", "ls", "--format", "json"][..],
            &["shoal", "config", "inspect", "--data", "site"][..],
            &["shoal", "config", "rm", "a", "b"][..],
            &[
                "shoal",
                "service",
                "create",
                "--name",
                "w",
                "--secret",
                "db",
                "--config",
                "source=site,target=/etc/site",
                "img",
            ][..],
            &[
                "shoal",
                "service",
                "update",
                "--secret-rm",
                "a",
                "--secret-add",
                "b",
                "w",
            ][..],
            &[
                "shoal",
                "events",
                "--since",
                "5m",
                "--until",
                "0s",
                "-f",
                "type=task",
            ][..],
            &[
                "shoal", "service", "logs", "-f", "-n", "5", "--since", "1m", "web",
            ][..],
        ] {
            Cli::try_parse_from(argv).unwrap_or_else(|e| panic!("{argv:?}: {e}"));
        }
        assert!(
            Cli::try_parse_from(["shoal", "node", "update", "--availability", "off", "n1"])
                .is_err()
        );
    }
}
