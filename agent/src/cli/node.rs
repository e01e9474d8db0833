//! `shoal node ...`: list and inspect the cluster's nodes.

use clap::{Args, Subcommand};

use super::ClientOptions;
use super::client::client;
use super::output::{Format, print_listing};
use crate::control::api;
use crate::control::views::NodeRow;

/// Node commands.
#[derive(Debug, Subcommand)]
pub enum NodeCommand {
    /// List the nodes of the cluster.
    #[command(alias = "list")]
    Ls(NodeListArgs),
}

/// `node ls`.
#[derive(Debug, Args)]
pub struct NodeListArgs {
    /// Table for people, JSON for scripts.
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
    /// Print only node ids.
    #[arg(short, long)]
    pub quiet: bool,
    #[command(flatten)]
    client: ClientOptions,
}

/// Runs a node command.
pub async fn run(command: NodeCommand) -> anyhow::Result<()> {
    match command {
        NodeCommand::Ls(args) => list(args).await,
    }
}

async fn list(args: NodeListArgs) -> anyhow::Result<()> {
    let info: api::InfoResponse = client(&args.client).get(api::INFO).await?;
    let rows: Vec<NodeRow> = client(&args.client).get(api::NODES).await?;
    let headers = [
        "ID",
        "HOSTNAME",
        "STATUS",
        "AVAILABILITY",
        "ROLE",
        "RUNTIME",
        "TASKS",
        "VERSION",
    ];
    print_listing(
        &rows,
        args.format,
        args.quiet,
        |row| row.id.to_string(),
        &headers,
        |row| {
            let me = if row.id.as_str() == info.node_id {
                " *"
            } else {
                ""
            };
            let leader = if info.leader.as_deref() == Some(row.id.as_str()) {
                " leader"
            } else {
                ""
            };
            vec![
                format!("{}{me}", row.id),
                row.hostname.clone(),
                row.state.clone(),
                row.availability.clone(),
                format!("{}{leader}", row.role),
                row.runtime.clone(),
                row.tasks.to_string(),
                row.version.clone(),
            ]
        },
    )
}
