//! `shoal cluster ...`: operations on the whole cluster.

use std::path::PathBuf;

use clap::{Args, Subcommand};

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
}

/// `cluster update`.
#[derive(Debug, Args)]
pub struct UpdateArgs {
    /// Let services bind-mount the host's root or a container engine's socket (or a directory
    /// holding one). Off by default: a service may land on any node, and such a mount hands
    /// it that node.
    #[arg(long, value_name = "true|false")]
    pub allow_sensitive_mounts: Option<bool>,
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
        args.allow_sensitive_mounts.is_some(),
        "nothing to change: give a setting, such as --allow-sensitive-mounts true"
    );
    let request = crate::control::api::ClusterSettingsRequest {
        allow_sensitive_mounts: args.allow_sensitive_mounts,
    };
    let settings: shoal_scheduler::ClusterSettings = super::client::client(&args.client)
        .post(crate::control::api::CLUSTER_SETTINGS, &request)
        .await?;
    println!(
        "cluster updated: sensitive bind mounts {}",
        if settings.allow_sensitive_mounts {
            "allowed"
        } else {
            "refused"
        }
    );
    Ok(())
}
