//! `shoal version` (this binary and the agent it talks to) and `shoal completion SHELL`.

use clap::{Args, CommandFactory as _};
use serde::Serialize;

use super::ClientOptions;
use super::client::client;
use super::output::{Format, print_json};
use crate::control::api::{self, InfoResponse};

/// `shoal version`.
#[derive(Debug, Args)]
pub struct VersionArgs {
    /// Lines for people, or JSON for scripts.
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
    #[command(flatten)]
    client: ClientOptions,
}

/// What `shoal version --format json` prints.
#[derive(Debug, Serialize)]
struct Versions {
    client: &'static str,
    agent: Option<InfoResponse>,
    agent_error: Option<String>,
}

/// Prints the client's version and the agent's (with its node and cluster); an agent that
/// does not answer is said so, and the command fails after printing the client's.
pub async fn version(args: VersionArgs) -> anyhow::Result<()> {
    let answer: Result<InfoResponse, _> = client(&args.client).get(api::INFO).await;
    let versions = Versions {
        client: env!("CARGO_PKG_VERSION"),
        agent_error: answer.as_ref().err().map(ToString::to_string),
        agent: answer.ok(),
    };
    match args.format {
        Format::Json => print_json(&versions)?,
        Format::Table => print_versions(&versions),
    }
    match versions.agent_error {
        Some(error) if args.format == Format::Table => Err(anyhow::anyhow!(error)),
        _ => Ok(()),
    }
}

fn print_versions(versions: &Versions) {
    println!("Client:  shoal {}", versions.client);
    if let Some(agent) = &versions.agent {
        println!("Agent:   shoal {}", agent.version);
        println!(" node:    {}", agent.node_id);
        println!(" runtime: {}", agent.runtime);
        println!(
            " cluster: {}",
            agent.cluster_id.as_deref().unwrap_or("(none yet)")
        );
        let leader = match (&agent.leader, agent.is_leader) {
            (_, true) => "this agent".to_owned(),
            (Some(leader), false) => leader.clone(),
            (None, false) => "(none known)".to_owned(),
        };
        println!(" leader:  {leader}");
    }
}

/// `shoal completion`.
#[derive(Debug, Args)]
pub struct CompletionArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

/// Prints the completion script of `shell` for the whole command line.
///
/// bash: `shoal completion bash > /etc/bash_completion.d/shoal`; zsh: into a directory of
/// `$fpath` as `_shoal`; fish: `~/.config/fish/completions/shoal.fish`.
pub fn completion(args: CompletionArgs) {
    let mut command = super::Cli::command();
    clap_complete::generate(args.shell, &mut command, "shoal", &mut std::io::stdout());
}
