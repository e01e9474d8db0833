//! `shoal node ...`: list, inspect and change the cluster's nodes: availability (drain for
//! maintenance), labels, the manager role, removal. A node is named by its id, its hostname or
//! a unique prefix of its id.

use clap::{Args, Subcommand};
use shoal_consensus::MANAGER_LABEL;
use shoal_scheduler::{Availability, Node};

use super::ClientOptions;
use super::client::client;
use super::output::{Format, TaskListArgs, print_json, print_listing};
use crate::control::api::{self, UpdateNodeRequest};
use crate::control::filters::{self, NodeFilter};
use crate::control::views::{NodeRow, TaskRow};

/// Node commands.
#[derive(Debug, Subcommand)]
pub enum NodeCommand {
    /// List the nodes of the cluster.
    #[command(alias = "list")]
    Ls(NodeListArgs),
    /// Show one or more nodes in full (JSON), or a summary with --pretty.
    Inspect(NodeInspectArgs),
    /// Change a node's availability or labels.
    ///
    /// `--availability drain` moves its tasks to other nodes (as many at a time as each
    /// service's update parallelism) and gives it no new ones; `pause` keeps its tasks but gives
    /// it no new ones; `active` puts it back to work.
    Update(NodeUpdateArgs),
    /// List the tasks placed on a node (this agent's node by default), each slot's history
    /// indented under its task as `service ps` shows it.
    Ps(NodePsArgs),
    /// Let a node be a manager again.
    ///
    /// Autopilot keeps the number of managers at its target (3 or 5); a promoted node
    /// becomes one of them when a manager's seat is free or held by a node that steps down.
    Promote(NodeNamesArgs),
    /// Ask a manager to step down.
    ///
    /// Autopilot moves its vote to another eligible node, one change at a time so that the
    /// managers never lose their quorum; a leader hands over its leadership first.
    Demote(NodeNamesArgs),
    /// Remove nodes from the cluster.
    ///
    /// A node that is not down needs --force (its tasks are lost and replaced elsewhere);
    /// a manager must be demoted first.
    #[command(alias = "remove")]
    Rm(NodeRemoveArgs),
}

/// `node inspect`.
#[derive(Debug, Args)]
pub struct NodeInspectArgs {
    /// Node ids, hostnames or id prefixes; `self` is this agent's node.
    #[arg(required = true)]
    pub nodes: Vec<String>,
    /// A few lines for people instead of JSON.
    #[arg(long)]
    pub pretty: bool,
    #[command(flatten)]
    client: ClientOptions,
}

/// `node update`.
#[derive(Debug, Args)]
pub struct NodeUpdateArgs {
    /// The node: id, hostname, id prefix, or `self`.
    pub node: String,
    /// active, pause or drain.
    #[arg(long, value_enum)]
    pub availability: Option<AvailabilityArg>,
    /// Add or change a label, `key=value` (repeatable).
    #[arg(long = "label-add", value_parser = parse_label)]
    pub label_add: Vec<(String, String)>,
    /// Remove a label by its key (repeatable).
    #[arg(long = "label-rm")]
    pub label_rm: Vec<String>,
    #[command(flatten)]
    client: ClientOptions,
}

/// A node's availability, as the CLI spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AvailabilityArg {
    /// Runs tasks and gets new ones.
    Active,
    /// Keeps its tasks, gets no new ones.
    Pause,
    /// Its tasks move away; gets no new ones.
    Drain,
}

impl From<AvailabilityArg> for Availability {
    fn from(arg: AvailabilityArg) -> Availability {
        match arg {
            AvailabilityArg::Active => Availability::Active,
            AvailabilityArg::Pause => Availability::Pause,
            AvailabilityArg::Drain => Availability::Drain,
        }
    }
}

/// `node ps`.
#[derive(Debug, Args)]
pub struct NodePsArgs {
    /// The node: id, hostname, id prefix, or `self` (the default).
    #[arg(default_value = "self")]
    pub node: String,
    /// Which tasks, and how they are printed.
    #[command(flatten)]
    pub tasks: TaskListArgs,
    #[command(flatten)]
    client: ClientOptions,
}

/// `node promote`, `node demote`.
#[derive(Debug, Args)]
pub struct NodeNamesArgs {
    /// Node ids, hostnames or id prefixes; `self` is this agent's node.
    #[arg(required = true)]
    pub nodes: Vec<String>,
    #[command(flatten)]
    client: ClientOptions,
}

/// `node rm`.
#[derive(Debug, Args)]
pub struct NodeRemoveArgs {
    /// Node ids, hostnames or id prefixes; `self` is this agent's node.
    #[arg(required = true)]
    pub nodes: Vec<String>,
    /// Remove a node that is not down.
    #[arg(short, long)]
    pub force: bool,
    #[command(flatten)]
    client: ClientOptions,
}

/// Parses `key=value`.
fn parse_label(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_owned(), value.to_owned())),
        _ => Err(format!("{text:?} is not key=value")),
    }
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
    /// Only matching nodes: `name=PREFIX` (of the hostname), `id=PREFIX`,
    /// `role=manager|worker`, `availability=active|pause|drain`, `label=KEY[=VALUE]`. A key
    /// repeated matches any of its values; different keys must all match.
    #[arg(short, long, value_name = "KEY=VALUE")]
    pub filter: Vec<String>,
    #[command(flatten)]
    client: ClientOptions,
}

/// Runs a node command.
pub async fn run(command: NodeCommand) -> anyhow::Result<()> {
    match command {
        NodeCommand::Ls(args) => list(args).await,
        NodeCommand::Inspect(args) => inspect(args).await,
        NodeCommand::Update(args) => update(args).await,
        NodeCommand::Ps(args) => ps(args).await,
        NodeCommand::Promote(args) => set_manager_label(args, true).await,
        NodeCommand::Demote(args) => set_manager_label(args, false).await,
        NodeCommand::Rm(args) => remove(args).await,
    }
}

/// The node a user means: `self` is the agent the CLI talks to.
async fn resolve(options: &ClientOptions, given: &str) -> anyhow::Result<String> {
    if given != "self" {
        return Ok(given.to_owned());
    }
    let info: api::InfoResponse = client(options).get(api::INFO).await?;
    Ok(info.node_id)
}

async fn inspect(args: NodeInspectArgs) -> anyhow::Result<()> {
    let mut nodes = Vec::with_capacity(args.nodes.len());
    for given in &args.nodes {
        let name = resolve(&args.client, given).await?;
        let node: Node = client(&args.client).get(&api::node(&name)).await?;
        nodes.push(node);
    }
    if !args.pretty {
        return print_json(&nodes);
    }
    for node in &nodes {
        print!("{}", pretty(node));
    }
    Ok(())
}

/// A node in a few lines for people.
fn pretty(node: &Node) -> String {
    let labels: Vec<String> = node
        .labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    format!(
        "ID:            {}\nHostname:      {}\nState:         {:?}\nAvailability:  {:?}\n\
         Role:          {:?}\nLabels:        {}\nPlatform:      {} {}\n\
         Resources:     {:.2} CPUs, {} MiB memory ({:.2} CPUs, {} MiB reserved)\n\
         Runtime:       {:?}\nVersion:       {}\n\n",
        node.id,
        node.hostname,
        node.state,
        node.availability,
        node.role,
        if labels.is_empty() {
            "-".to_owned()
        } else {
            labels.join(", ")
        },
        node.platform.os,
        node.platform.arch,
        node.total.nano_cpus as f64 / 1e9,
        node.total.memory_bytes >> 20,
        node.reserved.nano_cpus as f64 / 1e9,
        node.reserved.memory_bytes >> 20,
        node.runtime,
        node.version,
    )
}

async fn update(args: NodeUpdateArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.availability.is_some() || !args.label_add.is_empty() || !args.label_rm.is_empty(),
        "nothing to change: give --availability, --label-add or --label-rm"
    );
    let name = resolve(&args.client, &args.node).await?;
    let request = UpdateNodeRequest {
        availability: args.availability.map(Availability::from),
        labels_set: args.label_add,
        labels_remove: args.label_rm,
    };
    let id: String = client(&args.client)
        .post(&api::node_update(&name), &request)
        .await?;
    println!("{id}");
    if args.availability == Some(AvailabilityArg::Drain) {
        println!("its tasks are moving to other nodes: follow them with `shoal node ps {id}`");
    }
    Ok(())
}

async fn ps(args: NodePsArgs) -> anyhow::Result<()> {
    let query = args.tasks.query()?;
    let name = resolve(&args.client, &args.node).await?;
    let path = format!("{}{query}", api::node_tasks(&name));
    let rows: Vec<TaskRow> = client(&args.client).get(&path).await?;
    args.tasks.print(&rows)
}

/// Promotes (clears the step-down label) or demotes (sets it) each node.
async fn set_manager_label(args: NodeNamesArgs, manager: bool) -> anyhow::Result<()> {
    for given in &args.nodes {
        let name = resolve(&args.client, given).await?;
        let request = if manager {
            UpdateNodeRequest {
                labels_remove: vec![MANAGER_LABEL.to_owned()],
                ..UpdateNodeRequest::default()
            }
        } else {
            UpdateNodeRequest {
                labels_set: vec![(MANAGER_LABEL.to_owned(), "false".to_owned())],
                ..UpdateNodeRequest::default()
            }
        };
        let id: String = client(&args.client)
            .post(&api::node_update(&name), &request)
            .await?;
        if manager {
            println!("{id} may be a manager: autopilot makes it one when a seat is free");
        } else {
            println!(
                "{id} steps down: autopilot moves its vote to another eligible node \
                 (it stays a manager while none can take it)"
            );
        }
    }
    Ok(())
}

async fn remove(args: NodeRemoveArgs) -> anyhow::Result<()> {
    let client = client(&args.client);
    let mut failed = 0;
    for given in &args.nodes {
        let name = resolve(&args.client, given).await?;
        let path = format!("{}?force={}", api::node(&name), args.force);
        match client.delete::<String>(&path).await {
            Ok(id) => println!("{id}"),
            Err(error) => {
                eprintln!("error: {given}: {error}");
                failed += 1;
            }
        }
    }
    anyhow::ensure!(
        failed == 0,
        "{failed} of {} nodes could not be removed",
        args.nodes.len()
    );
    Ok(())
}

async fn list(args: NodeListArgs) -> anyhow::Result<()> {
    NodeFilter::parse(&args.filter)?;
    let info: api::InfoResponse = client(&args.client).get(api::INFO).await?;
    let path = format!("{}{}", api::NODES, filters::query(&args.filter));
    let rows: Vec<NodeRow> = client(&args.client).get(&path).await?;
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
