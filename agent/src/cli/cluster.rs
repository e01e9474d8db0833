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
