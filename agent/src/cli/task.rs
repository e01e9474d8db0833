//! `shoal task ...`: one task on its own, named by its id or a unique prefix of it (as
//! `shoal service ps` and `shoal node ps` print them).

use clap::{Args, Subcommand};

use super::ClientOptions;
use super::client::{client, now_ms};
use super::output::{age, print_json};
use crate::control::tasks;
use crate::control::views::TaskDetail;

/// Task commands.
#[derive(Debug, Subcommand)]
pub enum TaskCommand {
    /// Show tasks in full (JSON, as `docker inspect` does), or a summary with --pretty.
    ///
    /// Example: shoal task inspect --pretty t0000000002a
    Inspect(TaskInspectArgs),
}

/// `task inspect`.
#[derive(Debug, Args)]
pub struct TaskInspectArgs {
    /// Task ids or unique id prefixes.
    #[arg(required = true)]
    pub tasks: Vec<String>,
    /// A few lines for people instead of JSON.
    #[arg(long)]
    pub pretty: bool,
    #[command(flatten)]
    client: ClientOptions,
}

/// Runs a task command.
pub async fn run(command: TaskCommand) -> anyhow::Result<()> {
    match command {
        TaskCommand::Inspect(args) => inspect(args).await,
    }
}

/// Prints every task found; one that is not is named on stderr, and the command fails.
async fn inspect(args: TaskInspectArgs) -> anyhow::Result<()> {
    let client = client(&args.client);
    let mut found = Vec::with_capacity(args.tasks.len());
    let mut failed = 0;
    for given in &args.tasks {
        match client.get::<TaskDetail>(&tasks::task(given)).await {
            Ok(detail) => found.push(detail),
            Err(error) => {
                eprintln!("error: {error}");
                failed += 1;
            }
        }
    }
    if args.pretty {
        let now = now_ms();
        found
            .iter()
            .for_each(|detail| print!("{}", pretty(detail, now)));
    } else if !found.is_empty() || failed == 0 {
        print_json(&found)?;
    }
    anyhow::ensure!(
        failed == 0,
        "{failed} of {} tasks could not be shown",
        args.tasks.len()
    );
    Ok(())
}

/// A task in a few lines for people, its times as ages at `now_ms`.
fn pretty(detail: &TaskDetail, now_ms: u64) -> String {
    let task = &detail.task;
    let or_dash = |text: Option<String>| text.unwrap_or_else(|| "-".to_owned());
    let node = task.node.as_ref().map(|id| match &detail.node_hostname {
        Some(host) if host != id.as_str() => format!("{host} ({id})"),
        _ => id.to_string(),
    });
    let service = match &detail.service_name {
        Some(name) => format!("{name} ({})", task.service),
        None => format!("{} (removed)", task.service),
    };
    let image = detail.image.as_ref().map(|image| {
        let current = if detail.current { "current" } else { "old" };
        format!("{image} (spec version {}, {current})", task.spec_version)
    });
    let message = (!task.status.message.is_empty()).then(|| task.status.message.clone());
    format!(
        "ID:             {}\nName:           {}\nService:        {service}\n\
         Image:          {}\nNode:           {}\nDesired state:  {:?}\n\
         State:          {:?} {}\nMessage:        {}\nExit code:      {}\n\
         Container:      {}\nCreated:        {}\n\n",
        detail.id,
        detail.name,
        or_dash(image),
        or_dash(node),
        task.desired,
        task.status.state,
        age(now_ms, task.status.timestamp.0),
        or_dash(message),
        or_dash(task.status.exit_code.map(|code| code.to_string())),
        or_dash(task.status.container_id.clone()),
        age(now_ms, task.created_at.0),
    )
}

#[cfg(test)]
mod tests {
    use shoal_scheduler::{
        DesiredState, NodeId, ServiceId, Task, TaskId, TaskState, TaskStatus, Timestamp, status_at,
    };

    use super::*;

    fn detail(service_name: Option<&str>) -> TaskDetail {
        let task = Task {
            id: TaskId(42),
            service: ServiceId(1),
            slot: Some(1),
            node: Some(NodeId::new("12D3KooWabc")),
            spec_version: 2,
            desired: DesiredState::Shutdown,
            status: failed("exit code 3"),
            created_at: Timestamp(0),
            not_before: Timestamp(0),
        };
        TaskDetail {
            id: task.id.to_string(),
            name: "web.1".into(),
            service_name: service_name.map(str::to_owned),
            image: service_name.map(|_| "web:2".to_owned()),
            node_hostname: Some("host-1".into()),
            current: false,
            task,
        }
    }

    /// A status of a task that failed with exit code 3.
    fn failed(message: &str) -> TaskStatus {
        let mut status = status_at(TaskState::Failed, Timestamp(2_000));
        status.message = message.into();
        status.exit_code = Some(3);
        status
    }

    #[test]
    fn pretty_names_the_service_node_and_why_it_ended() {
        let text = pretty(&detail(Some("web")), 62_000);
        for expected in [
            "ID:             t0000000002a\n",
            "Service:        web (s00000000001)\n",
            "Image:          web:2 (spec version 2, old)\n",
            "Node:           host-1 (12D3KooWabc)\n",
            "State:          Failed 1 minutes ago\n",
            "Message:        exit code 3\n",
            "Exit code:      3\n",
            "Container:      -\n",
        ] {
            assert!(text.contains(expected), "{expected:?} in\n{text}");
        }
        let orphan = pretty(&detail(None), 62_000);
        assert!(
            orphan.contains("Service:        s00000000001 (removed)\n"),
            "{orphan}"
        );
        assert!(orphan.contains("Image:          -\n"), "{orphan}");
    }

    #[test]
    fn task_history_and_filter_flags_parse() {
        use clap::Parser as _;
        for argv in [
            &["shoal", "task", "inspect", "--pretty", "t1", "t2"][..],
            &[
                "shoal",
                "service",
                "ps",
                "-q",
                "--no-trunc",
                "-f",
                "desired-state=running",
                "--filter",
                "node=n1",
                "web",
            ][..],
            &["shoal", "node", "ps", "--running", "--format", "json"][..],
            &["shoal", "node", "ls", "-f", "role=manager"][..],
            &["shoal", "service", "ls", "--filter", "mode=global", "-q"][..],
            &["shoal", "cluster", "update", "--task-history-limit", "3"][..],
        ] {
            crate::cli::Cli::try_parse_from(argv).unwrap_or_else(|e| panic!("{argv:?}: {e}"));
        }
        for argv in [
            &["shoal", "task", "inspect"][..],
            &["shoal", "cluster", "update", "--task-history-limit", "-1"][..],
        ] {
            assert!(crate::cli::Cli::try_parse_from(argv).is_err(), "{argv:?}");
        }
    }
}
