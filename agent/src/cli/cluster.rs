//! `shoal cluster ...`: operations on the whole cluster.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use crate::control::cluster_info::{CLUSTER_INFO, ClusterInfo};

/// Cluster commands.
#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Restart a cluster that lost its quorum from this surviving manager's data.
    ///
    /// Run it on one surviving manager while its agent is stopped, then start the agent again:
    /// it comes back as the only manager, with every service and task it knew, and autopilot
    /// promotes other nodes as they rejoin.
    Recover(RecoverArgs),
    /// Create a new cluster secret and print its manager and worker tokens.
    ///
    /// Start every agent with `--token` (or SHOAL_TOKEN): managers with the manager token,
    /// workers with the worker token. Peers without a token cannot even connect, and a worker
    /// token can never make a manager.
    Token,
    /// Change cluster-wide settings.
    Update(UpdateArgs),
    /// Show the cluster: its id, leader and managers, raft term and indexes, the autopilot's
    /// target, node, service and task counts, settings, and the token's fingerprint.
    Info(InfoArgs),
}

/// `cluster info`.
#[derive(Debug, Args)]
pub struct InfoArgs {
    /// `table` for people, `json` for scripts.
    #[arg(long, value_enum, default_value_t = super::output::Format::Table)]
    pub format: super::output::Format,
    #[command(flatten)]
    client: super::ClientOptions,
}

/// `cluster update`.
#[derive(Debug, Args)]
pub struct UpdateArgs {
    /// Let services bind-mount the host's root or a container engine's socket (or a directory
    /// holding one). Off by default: a service may land on any node, and such a mount hands
    /// it that node.
    #[arg(long, value_name = "true|false")]
    pub allow_sensitive_mounts: Option<bool>,
    /// Ended tasks kept per slot (or per node for a global service) as the history that
    /// `shoal service ps` shows; the leader prunes older ones (default 5).
    #[arg(long, value_name = "N")]
    pub task_history_limit: Option<u64>,
    #[command(flatten)]
    client: super::ClientOptions,
}

/// `cluster recover`.
#[derive(Debug, Args)]
pub struct RecoverArgs {
    /// The stopped agent's data dir (default: the usual one).
    #[arg(long, env = "SHOAL_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
}

/// Runs a cluster command.
pub fn run(command: ClusterCommand) -> anyhow::Result<()> {
    match command {
        ClusterCommand::Recover(args) => {
            let dir = args.data_dir.unwrap_or_else(crate::paths::default_data_dir);
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(shoal_consensus::recover(&dir))?;
            println!(
                "recovered: {} is now a single-manager cluster. Start `shoal agent` there; \
                 autopilot promotes other managers as nodes rejoin.",
                dir.display()
            );
            Ok(())
        }
        ClusterCommand::Update(args) => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(update(args))
        }
        ClusterCommand::Info(args) => super::client_runtime()?.block_on(info(args)),
        ClusterCommand::Token => {
            let token = shoal_consensus::Token::generate_manager()?;
            let manager = token.manager_token().unwrap_or_default();
            println!("manager token: {manager}");
            println!("worker token:  {}", token.worker_token());
            println!("Keep them secret: anyone with the manager token can become a manager.");
            Ok(())
        }
    }
}

async fn update(args: UpdateArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.allow_sensitive_mounts.is_some() || args.task_history_limit.is_some(),
        "nothing to change: give a setting, such as --allow-sensitive-mounts true or \
         --task-history-limit 5"
    );
    let request = crate::control::api::ClusterSettingsRequest {
        allow_sensitive_mounts: args.allow_sensitive_mounts,
        task_history_limit: args.task_history_limit,
    };
    let settings: shoal_scheduler::ClusterSettings = super::client::client(&args.client)
        .post(crate::control::api::CLUSTER_SETTINGS, &request)
        .await?;
    println!(
        "cluster updated: sensitive bind mounts {}, task history limit {}",
        if settings.allow_sensitive_mounts {
            "allowed"
        } else {
            "refused"
        },
        settings.task_history_limit
    );
    Ok(())
}

async fn info(args: InfoArgs) -> anyhow::Result<()> {
    let info: ClusterInfo = super::client::client(&args.client)
        .get(CLUSTER_INFO)
        .await?;
    match args.format {
        super::output::Format::Json => super::output::print_json(&info),
        super::output::Format::Table => {
            print!("{}", render_info(&info));
            Ok(())
        }
    }
}

/// `cluster info` for people.
fn render_info(info: &ClusterInfo) -> String {
    let leader = info
        .managers
        .iter()
        .find(|m| m.leader)
        .map(|m| format!("{} ({})", m.hostname, m.id))
        .or_else(|| info.leader.clone())
        .unwrap_or_else(|| "none: no quorum right now".into());
    let mode = match &info.token_fingerprint {
        Some(fingerprint) => format!("closed (token fingerprint {fingerprint})"),
        None => "open: any agent on the LAN may join (see `shoal cluster token`)".into(),
    };
    let rows: Vec<Vec<String>> = info
        .managers
        .iter()
        .map(|m| {
            vec![
                m.hostname.clone(),
                m.id.clone(),
                m.state.clone(),
                if m.leader { "leader" } else { "" }.into(),
            ]
        })
        .collect();
    let managers = super::output::table(&["HOSTNAME", "ID", "STATE", "ROLE"], &rows);
    let n = &info.nodes;
    let mut out = format!(
        "Cluster ID:   {}\nMode:         {mode}\nLeader:       {leader}\n\
         Raft:         term {}, applied index {}, last log index {}\n\
         Managers:     {} (autopilot target {}){}\n",
        info.cluster_id.as_deref().unwrap_or("none yet"),
        info.term,
        info.applied_index,
        info.last_log_index,
        info.managers.len(),
        info.manager_target,
        if info.learners.is_empty() {
            String::new()
        } else {
            format!(", {} catching up", info.learners.len())
        },
    );
    for line in managers.lines() {
        out.push_str(&format!("  {line}\n"));
    }
    out.push_str(&format!(
        "Nodes:        {} ({} ready, {} down, {} unknown)\n\
         Services:     {}\nTasks:        {} running, {} kept in the state\n\
         Settings:     sensitive bind mounts {}\nAnswered by:  {}\n",
        n.total,
        n.ready,
        n.down,
        n.unknown,
        info.services,
        info.tasks_running,
        info.tasks_total,
        if info.settings.allow_sensitive_mounts {
            "allowed"
        } else {
            "refused"
        },
        info.served_by,
    ));
    out
}
