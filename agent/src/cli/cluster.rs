//! `shoal cluster ...`: operations on the whole cluster.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use shoal_scheduler::join_keys::JoinRole;

use crate::control::api::{
    ApiTokenResponse, AutolockRequest, DataKeyState, LOCAL_AUTOLOCK, LOCAL_UNLOCK,
    LOCAL_UNLOCK_KEY, UnlockKeyResponse, UnlockRequest, UnlockResponse,
};
use crate::control::cluster_info::{CLUSTER_INFO, ClusterInfo};
use crate::control::join_tokens::{
    JOIN_TOKENS, JoinTokens, ROTATE_JOIN_TOKEN, RoleToken, RotateRequest,
};

/// Cluster commands.
#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Restart a cluster that lost its quorum from this surviving manager's data.
    ///
    /// Run it on one surviving manager while its agent is stopped, then start the agent again:
    /// it comes back as the only manager, with every service and task it knew, and autopilot
    /// promotes other nodes as they rejoin.
    Recover(RecoverArgs),
    /// Print the token a new worker (or with --manager, a new manager) must present to join,
    /// rotate it, or create a new cluster secret.
    ///
    /// On a manager of a closed cluster, `shoal cluster token` prints the worker join token and
    /// `--manager` the manager's. `--rotate` replaces it: agents that already joined keep their
    /// place, new agents must present the new token, and the old one is still accepted for
    /// `--grace` (default 1h), then refused.
    ///
    /// `--new` creates the secret of a new closed cluster and prints both tokens: start every
    /// agent with SHOAL_TOKEN (or --token-file), managers with the manager token, workers with
    /// the worker token. Peers without a token cannot even connect, and a worker token can
    /// never make a manager.
    Token(TokenArgs),
    /// Change cluster-wide settings, autolock among them.
    ///
    /// `--autolock true` keeps the cluster's data key (which seals secrets) on every manager's
    /// disk only wrapped with an unlock key, printed once: a manager that restarts then stays
    /// locked, serving nothing that needs the key, until `shoal cluster unlock` is given the
    /// key. Store the key safely: with every manager locked, the cluster's secrets cannot be
    /// read or written until one of them is unlocked.
    Update(UpdateArgs),
    /// Unlock this manager (autolock) with the unlock key, read from the terminal, from standard
    /// input, or with --key-file from a file (never from the command line).
    Unlock(UnlockArgs),
    /// Print the cluster's current unlock key (autolock), or with --rotate replace it.
    ///
    /// On a manager's machine only. After a rotation every manager rewraps its key file with
    /// the new key; a manager that was locked or down during the rotation is unlocked with the
    /// previous key (so keep it until every manager has been unlocked or is running), and then
    /// rewraps its file with the new one.
    UnlockKey(UnlockKeyArgs),
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

/// `cluster token`.
#[derive(Debug, Args)]
pub struct TokenArgs {
    /// The manager token instead of the worker token.
    #[arg(long)]
    pub manager: bool,
    /// Replace the token: new agents must present the new one.
    #[arg(long, conflicts_with = "new")]
    pub rotate: bool,
    /// With --rotate: how long the replaced token is still accepted (0s: refused at once).
    #[arg(long, default_value = "1h", value_parser = super::spec::parse_duration, requires = "rotate")]
    pub grace: std::time::Duration,
    /// Print only the token.
    #[arg(short, long)]
    pub quiet: bool,
    /// Create the secret of a new closed cluster (no agent needed) and print both its tokens.
    #[arg(long, conflicts_with = "manager")]
    pub new: bool,
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
    /// Keep the data key on managers' disks wrapped with an unlock key (printed once), so that
    /// a restarted manager stays locked until `shoal cluster unlock`. On a manager only.
    #[arg(long, value_name = "true|false")]
    pub autolock: Option<bool>,
    #[command(flatten)]
    client: super::ClientOptions,
}

/// `cluster unlock`.
#[derive(Debug, Args)]
pub struct UnlockArgs {
    /// Read the unlock key from this file instead of the terminal or standard input.
    #[arg(long, value_name = "FILE")]
    pub key_file: Option<PathBuf>,
    #[command(flatten)]
    client: super::ClientOptions,
}

/// `cluster unlock-key`.
#[derive(Debug, Args)]
pub struct UnlockKeyArgs {
    /// Replace the unlock key with a new one (printed once).
    #[arg(long)]
    pub rotate: bool,
    /// Print only the key.
    #[arg(short, long)]
    pub quiet: bool,
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
        ClusterCommand::Unlock(args) => {
            let key = read_unlock_key(args.key_file.as_deref())?;
            super::client_runtime()?.block_on(unlock(&args.client, key))
        }
        ClusterCommand::UnlockKey(args) => super::client_runtime()?.block_on(unlock_key(args)),
        ClusterCommand::Token(args) if args.new => new_secret(args.quiet),
        ClusterCommand::Token(args) => super::client_runtime()?.block_on(token(args)),
    }
}

async fn update(args: UpdateArgs) -> anyhow::Result<()> {
    let settings_given = args.allow_sensitive_mounts.is_some() || args.task_history_limit.is_some();
    anyhow::ensure!(
        settings_given || args.autolock.is_some(),
        "nothing to change: give a setting, such as --allow-sensitive-mounts true, \
         --task-history-limit 5 or --autolock true"
    );
    if let Some(enabled) = args.autolock {
        let answer: UnlockKeyResponse = super::client::client(&args.client)
            .post(LOCAL_AUTOLOCK, &AutolockRequest { enabled })
            .await?;
        print!("{}", describe_autolock(&answer, false));
        if !settings_given {
            return Ok(());
        }
    }
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
    let client = super::client::client(&args.client);
    let info: ClusterInfo = client.get(CLUSTER_INFO).await?;
    // This agent's TCP API and its token: answered on the agent's own socket only.
    let api: Option<ApiTokenResponse> = client
        .get::<ApiTokenResponse>(crate::control::api::API_TOKEN)
        .await
        .ok()
        .filter(|answer| answer.addr.is_some());
    match args.format {
        super::output::Format::Json => {
            let mut json = serde_json::to_value(&info)?;
            if let Some(api) = &api {
                json["api"] = serde_json::to_value(api)?;
            }
            super::output::print_json(&json)
        }
        super::output::Format::Table => {
            print!("{}", render_info(&info));
            if let Some(ApiTokenResponse {
                token,
                addr: Some(addr),
            }) = api
            {
                println!("API (TCP):    tcp://{addr}, bearer token {token}");
            }
            Ok(())
        }
    }
}

/// What `cluster update --autolock` and `cluster unlock-key` tell people. `rotated`: the key
/// shown was just made by a rotation.
fn describe_autolock(answer: &UnlockKeyResponse, rotated: bool) -> String {
    let Some(key) = answer.unlock_key.as_deref().filter(|_| answer.autolock) else {
        return "Autolock is off: managers keep the data key in plain in their data dirs, and a \
                restarted manager needs no unlock key.\n"
            .into();
    };
    let id = answer.unlock_key_id.as_deref().unwrap_or("?");
    let mut out = if rotated {
        format!("The unlock key was rotated. The new unlock key ({id}):\n\n    {key}\n\n")
    } else {
        format!(
            "Autolock is on. To unlock a manager after it restarts, run `shoal cluster unlock` on \
             it and give it this key ({id}):\n\n    {key}\n\n"
        )
    };
    out.push_str(
        "Store it in a password manager or a vault: it is shown once here (a running manager \
         can show it again with `shoal cluster unlock-key`). Without it, a restarted manager \
         cannot read or write the cluster's secrets.\n",
    );
    if let Some(previous) = answer.previous_unlock_key_id.as_deref().filter(|_| rotated) {
        out.push_str(&format!(
            "\nKeep the previous key ({previous}) until every manager runs unlocked: a manager \
             that was locked or down during the rotation is unlocked with it.\n"
        ));
    }
    out
}

/// The unlock key from `file`, else from the terminal (a prompt, echo off) or standard input.
fn read_unlock_key(file: Option<&std::path::Path>) -> anyhow::Result<zeroize::Zeroizing<String>> {
    use std::io::{BufRead as _, IsTerminal as _, Read as _};
    let mut text = zeroize::Zeroizing::new(String::new());
    if let Some(file) = file {
        std::fs::File::open(file)
            .and_then(|mut f| f.read_to_string(&mut text))
            .map_err(|e| {
                anyhow::anyhow!("cannot read the unlock key from {}: {e}", file.display())
            })?;
    } else if std::io::stdin().is_terminal() {
        eprint!("Unlock key: ");
        let echo_off = set_echo(false);
        let read = std::io::stdin().lock().read_line(&mut text);
        if echo_off {
            set_echo(true);
            eprintln!();
        }
        read?;
    } else {
        std::io::stdin().read_to_string(&mut text)?;
    }
    anyhow::ensure!(
        !text.trim().is_empty(),
        "no unlock key given: type it at the prompt, pipe it in, or use --key-file"
    );
    Ok(text)
}

/// Turns the terminal's echo on or off with `stty` (best effort: where it fails the key is
/// echoed). Answers whether it worked.
fn set_echo(on: bool) -> bool {
    std::process::Command::new("stty")
        .arg(if on { "echo" } else { "-echo" })
        .stdin(std::process::Stdio::inherit())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// `cluster unlock`: gives this machine's manager the unlock key.
async fn unlock(
    client: &super::ClientOptions,
    key: zeroize::Zeroizing<String>,
) -> anyhow::Result<()> {
    let request = UnlockRequest {
        unlock_key: key.trim().to_owned(),
    };
    let answer: UnlockResponse = super::client::client(client)
        .post(LOCAL_UNLOCK, &request)
        .await?;
    println!(
        "unlocked: this manager holds the cluster's data key ({}) again{}",
        answer.data_key_id,
        if answer.rewrapped {
            ", and rewrapped its key file with the cluster's current unlock key"
        } else {
            ""
        }
    );
    Ok(())
}

/// `cluster unlock-key [--rotate]`: asks this machine's manager.
async fn unlock_key(args: UnlockKeyArgs) -> anyhow::Result<()> {
    let client = super::client::client(&args.client);
    let answer: UnlockKeyResponse = if args.rotate {
        client
            .post(LOCAL_UNLOCK_KEY, &serde_json::json!({}))
            .await?
    } else {
        client.get(LOCAL_UNLOCK_KEY).await?
    };
    match (&answer.unlock_key, args.quiet) {
        (Some(key), true) => println!("{key}"),
        (_, _) if !args.rotate => {
            let id = answer.unlock_key_id.as_deref().unwrap_or("?");
            let key = answer.unlock_key.as_deref().unwrap_or("?");
            println!("The cluster's unlock key ({id}):\n\n    {key}\n");
        }
        _ => print!("{}", describe_autolock(&answer, true)),
    }
    Ok(())
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
         Managers:     {} (the autopilot keeps {}{}){}\n",
        info.cluster_id.as_deref().unwrap_or("none yet"),
        info.term,
        info.applied_index,
        info.last_log_index,
        info.managers.len(),
        info.manager_target,
        if info.nodes.total < info.manager_target {
            ", fewer while the cluster has fewer nodes"
        } else {
            ""
        },
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
         Settings:     sensitive bind mounts {}, task history {} per slot\n\
         Autolock:     {}\nAnswered by:  {}\n",
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
        info.settings.task_history_limit,
        describe_lock(info),
        info.served_by,
    ));
    out
}

/// The autolock line of `cluster info`.
fn describe_lock(info: &ClusterInfo) -> String {
    let mut out = match &info.unlock_key_id {
        Some(id) => format!("on (unlock key {id})"),
        None => "off".to_owned(),
    };
    if info.data_key == DataKeyState::Locked {
        out.push_str(
            "; the answering manager is LOCKED: it cannot read or write secrets until \
             `shoal cluster unlock` is run on it",
        );
    }
    out
}

/// `cluster token --new`: a new cluster secret, made here.
fn new_secret(quiet: bool) -> anyhow::Result<()> {
    let token = shoal_consensus::Token::generate_manager()?;
    let manager = token.manager_token().unwrap_or_default();
    if quiet {
        println!("{manager}\n{}", token.worker_token());
        return Ok(());
    }
    println!("manager token: {manager}");
    println!("worker token:  {}", token.worker_token());
    println!("Keep them secret: anyone with the manager token can become a manager.");
    Ok(())
}

/// `cluster token [--manager] [--rotate]`: asks this machine's manager.
async fn token(args: TokenArgs) -> anyhow::Result<()> {
    let role = if args.manager {
        JoinRole::Manager
    } else {
        JoinRole::Worker
    };
    let client = super::client::client(&args.client);
    let tokens: JoinTokens = if args.rotate {
        let grace_ms = u64::try_from(args.grace.as_millis()).unwrap_or(u64::MAX);
        client
            .post(ROTATE_JOIN_TOKEN, &RotateRequest { role, grace_ms })
            .await?
    } else {
        client.get(JOIN_TOKENS).await?
    };
    let shown = match role {
        JoinRole::Worker => &tokens.worker,
        JoinRole::Manager => &tokens.manager,
    };
    if args.quiet {
        println!("{}", shown.token);
        return Ok(());
    }
    print!(
        "{}",
        describe_token(role, shown, args.rotate.then_some(args.grace))
    );
    Ok(())
}

/// What `cluster token` tells people about one role's token.
fn describe_token(
    role: JoinRole,
    shown: &RoleToken,
    rotated_with_grace: Option<std::time::Duration>,
) -> String {
    let mut out = String::new();
    if let Some(grace) = rotated_with_grace {
        out.push_str(&format!(
            "The {} join token was rotated. Agents that already joined keep working; the old \
             token admits new agents for {} more, then is refused.\n\n",
            role.name(),
            span(grace),
        ));
    }
    out.push_str(&format!(
        "To add a {} to this cluster, start its agent with this token in SHOAL_TOKEN (or a \
         file given to --token-file):\n\n    {}\n",
        role.name(),
        shown.token
    ));
    if let Some(until) = shown.previous_valid_until_ms {
        let left = until.saturating_sub(super::client::now_ms());
        out.push_str(&format!(
            "\nThe token it replaced is accepted for {} more.\n",
            span(std::time::Duration::from_millis(left))
        ));
    }
    out
}

/// `45 seconds`, `59 minutes`, `2 hours`: a span for people.
fn span(duration: std::time::Duration) -> String {
    let seconds = duration.as_secs();
    let (n, unit) = match seconds {
        0..=119 => (seconds, "second"),
        120..=7_199 => (seconds / 60, "minute"),
        7_200..=172_799 => (seconds / 3_600, "hour"),
        _ => (seconds / 86_400, "day"),
    };
    format!("{n} {unit}{}", if n == 1 { "" } else { "s" })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn autolock_shows_its_key_once_with_what_to_do() {
        let on = UnlockKeyResponse {
            autolock: true,
            unlock_key: Some("SHOALKEY-1-ABC".into()),
            unlock_key_id: Some("u1".into()),
            previous_unlock_key_id: None,
        };
        let text = describe_autolock(&on, false);
        assert!(text.contains("    SHOALKEY-1-ABC\n"), "{text}");
        assert!(text.contains("shoal cluster unlock"), "{text}");
        assert!(text.contains("Store it"), "{text}");
        let rotated = UnlockKeyResponse {
            previous_unlock_key_id: Some("u0".into()),
            ..on.clone()
        };
        let text = describe_autolock(&rotated, true);
        assert!(
            text.contains("rotated") && text.contains("previous key (u0)"),
            "{text}"
        );
        let off = UnlockKeyResponse {
            autolock: false,
            unlock_key: None,
            unlock_key_id: None,
            previous_unlock_key_id: None,
        };
        assert!(describe_autolock(&off, false).starts_with("Autolock is off"));
    }

    #[test]
    fn cluster_info_says_when_the_answering_manager_is_locked() {
        let mut info: ClusterInfo = serde_json::from_value(serde_json::json!({
            "cluster_id": "c", "served_by": "me", "leader": null, "term": 1,
            "applied_index": 1, "last_log_index": 1, "managers": [], "learners": [],
            "manager_target": 1, "nodes": {"total": 1, "ready": 1, "down": 0, "unknown": 0},
            "services": 0, "tasks_running": 0, "tasks_total": 0,
            "settings": {"allow_sensitive_mounts": false}, "mode": "open",
            "token_fingerprint": null
        }))
        .expect("an answer from before autolock");
        assert_eq!(describe_lock(&info), "off");
        info.unlock_key_id = Some("u1".into());
        info.data_key = DataKeyState::Locked;
        let text = render_info(&info);
        assert!(
            text.contains("Autolock:     on (unlock key u1); the answering manager is LOCKED"),
            "{text}"
        );
    }

    #[test]
    fn a_rotation_says_how_long_the_old_token_lasts() {
        let shown = RoleToken {
            token: "SHOAL1-x-Wy".into(),
            rotations: 1,
            rotated_at_ms: Some(0),
            previous_valid_until_ms: None,
        };
        let text = describe_token(
            JoinRole::Worker,
            &shown,
            Some(std::time::Duration::from_secs(3_600)),
        );
        assert!(text.contains("for 60 minutes more"), "{text}");
        assert!(text.contains("    SHOAL1-x-Wy\n"), "{text}");
        assert_eq!(span(std::time::Duration::from_secs(1)), "1 second");
        assert_eq!(span(std::time::Duration::from_secs(86_400 * 3)), "3 days");
    }
}
