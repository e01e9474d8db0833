//! `shoal service ...`: create, list, inspect, scale, update, roll back and remove services.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::{Args, Subcommand};
use shoal_scheduler::{DesiredState, ServiceId, TaskState};

use super::ClientOptions;
use super::client::client;
use super::output::{Format, TaskListArgs, print_json, print_listing};
use super::spec::SpecArgs;
use crate::control::api::{self, CreateServiceRequest, CreateServiceResponse, ScaleRequest};
use crate::control::filters::{self, ServiceFilter};
use crate::control::views::{ServiceRow, TaskRow};

/// Service commands.
#[derive(Debug, Subcommand)]
pub enum ServiceCommand {
    /// Create a service and wait until its tasks run (unless --detach).
    ///
    /// Example: shoal service create --name web --replicas 3 -p 8080:80 nginx:alpine
    Create(Box<CreateArgs>),
    /// List services.
    #[command(alias = "list")]
    Ls(ListArgs),
    /// List the tasks of a service: each slot's task, with its history (the tasks it
    /// replaced, newest first) indented under it.
    ///
    /// Example: shoal service ps --filter desired-state=running web
    Ps(PsArgs),
    /// Show a service's full record as JSON.
    Inspect(NameArgs),
    /// Change the number of replicas of services: `shoal service scale web=5 api=2`.
    Scale(ScaleArgs),
    /// Remove services; their containers are stopped and removed.
    #[command(alias = "remove")]
    Rm(RemoveArgs),
    /// Change a service: only what the flags name changes, rolled out under its update policy
    /// with progress until it converged (unless --detach).
    ///
    /// Example: shoal service update --image nginx:1.27 --update-parallelism 2 web
    Update(Box<super::update::UpdateArgs>),
    /// Go back to the spec before the last update, under the rollback policy.
    Rollback(super::update::RollbackArgs),
    /// Print the output of a service's tasks (or of one task), from every node.
    ///
    /// Each line is labelled `service.slot.task@node`; stderr lines go to stderr. A node that
    /// is down or does not answer within 5 s is named in a warning and the others' lines are
    /// printed. Example: shoal service logs -f --tail 20 web
    Logs(super::logs::LogsArgs),
}

/// `service create`.
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// What to run.
    #[command(flatten)]
    pub spec: SpecArgs,
    /// Return as soon as the service is created instead of waiting for its tasks to run.
    #[arg(short, long)]
    pub detach: bool,
    /// Print only the service id.
    #[arg(short, long)]
    pub quiet: bool,
    /// Give up waiting after this long (the service stays).
    #[arg(long, default_value = "120s", value_parser = super::spec::parse_duration)]
    pub timeout: Duration,
    #[command(flatten)]
    client: ClientOptions,
}

/// `service ls`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Table for people, JSON for scripts.
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
    /// Print only service ids.
    #[arg(short, long)]
    pub quiet: bool,
    /// Only matching services: `name=PREFIX`, `id=PREFIX`, `label=KEY[=VALUE]`,
    /// `mode=replicated|global`. A key repeated matches any of its values; different keys
    /// must all match.
    #[arg(short, long, value_name = "KEY=VALUE")]
    pub filter: Vec<String>,
    #[command(flatten)]
    client: ClientOptions,
}

/// `service ps`.
#[derive(Debug, Args)]
pub struct PsArgs {
    /// The service's name, id or unique id prefix.
    pub service: String,
    /// Which tasks, and how they are printed.
    #[command(flatten)]
    pub tasks: TaskListArgs,
    #[command(flatten)]
    client: ClientOptions,
}

/// Commands that name one service.
#[derive(Debug, Args)]
pub struct NameArgs {
    /// The service's name, id or unique id prefix.
    pub service: String,
    #[command(flatten)]
    client: ClientOptions,
}

/// `service scale`.
#[derive(Debug, Args)]
pub struct ScaleArgs {
    /// `SERVICE=REPLICAS` pairs.
    #[arg(required = true, value_parser = parse_scale)]
    pub targets: Vec<(String, u64)>,
    /// Return without waiting for convergence.
    #[arg(short, long)]
    pub detach: bool,
    #[command(flatten)]
    client: ClientOptions,
}

/// `service rm`.
#[derive(Debug, Args)]
pub struct RemoveArgs {
    /// Services' names, ids or unique id prefixes.
    #[arg(required = true)]
    pub services: Vec<String>,
    #[command(flatten)]
    client: ClientOptions,
}

fn parse_scale(text: &str) -> Result<(String, u64), String> {
    let (name, replicas) = text
        .split_once('=')
        .ok_or_else(|| format!("expected SERVICE=REPLICAS, got {text:?}"))?;
    let replicas = replicas
        .parse()
        .map_err(|_| format!("replicas must be a whole number, got {replicas:?} in {text:?}"))?;
    Ok((name.to_string(), replicas))
}

/// Runs a service command.
pub async fn run(command: ServiceCommand) -> anyhow::Result<()> {
    match command {
        ServiceCommand::Create(args) => create(*args).await,
        ServiceCommand::Ls(args) => list(args).await,
        ServiceCommand::Ps(args) => ps(args).await,
        ServiceCommand::Inspect(args) => inspect(args).await,
        ServiceCommand::Scale(args) => scale(args).await,
        ServiceCommand::Rm(args) => remove(args).await,
        ServiceCommand::Update(args) => super::update::update(*args).await,
        ServiceCommand::Rollback(args) => super::update::rollback(args).await,
        ServiceCommand::Logs(args) => super::logs::run(args).await,
    }
}

async fn create(args: CreateArgs) -> anyhow::Result<()> {
    let spec = args.spec.to_spec()?;
    let name = spec.name.clone();
    let client = client(&args.client);
    let created: CreateServiceResponse = client
        .post(api::SERVICES, &CreateServiceRequest { spec })
        .await?;
    if args.quiet {
        println!("{}", created.id);
    } else {
        println!("{} created as {}", name, created.id);
    }
    if !shoal_net::dns::is_dns_label(&name) {
        eprintln!(
            "warning: {name:?} is not a DNS name (letters, digits and -): tasks cannot reach the \
             service by name, only by its virtual address; use a name like {:?}",
            name.replace(['_', '.'], "-")
        );
    }
    if args.detach {
        return Ok(());
    }
    wait_converged(&args.client, &name, args.timeout, !args.quiet).await
}

/// Polls the service's tasks until as many run as are wanted, printing progress.
pub(super) async fn wait_converged(
    options: &ClientOptions,
    name: &str,
    timeout: Duration,
    show_progress: bool,
) -> anyhow::Result<()> {
    let client = client(options);
    let started = Instant::now();
    let mut last_line = String::new();
    loop {
        let polled = async {
            let row = find_row(&client, name).await?;
            let tasks: Vec<TaskRow> = client.get(&api::service_tasks(name)).await?;
            anyhow::Ok((row, tasks))
        };
        let (row, tasks) = match polled.await {
            Ok(polled) => polled,
            // A busy or briefly leaderless cluster: the service exists, keep waiting.
            Err(error) if is_transient(&error) && started.elapsed() < timeout => {
                if show_progress {
                    println!("waiting for the cluster to answer: {error:#}");
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
                continue;
            }
            Err(error) => return Err(error),
        };
        let line = progress_line(&row, &tasks);
        if show_progress && line != last_line {
            println!("{line}");
            last_line = line;
        }
        if row.update.as_deref() == Some("paused") {
            anyhow::bail!(
                "the update of {name} paused after too many failed tasks: see `shoal service ps \
                 {name}`, then `shoal service update` it again or `shoal service rollback {name}`"
            );
        }
        if row.running == row.desired && tasks_settled(&tasks) {
            if show_progress {
                println!(
                    "verify: service {name} converged in {:.1}s",
                    started.elapsed().as_secs_f64()
                );
            }
            return Ok(());
        }
        if started.elapsed() > timeout {
            anyhow::bail!(
                "service {name} did not converge within {timeout:?} ({}/{} running); \
                 it stays created: see `shoal service ps {name}`",
                row.running,
                row.desired
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Whether a failed poll is worth another try: the agent answered that the cluster could not
/// serve it just now.
fn is_transient(error: &anyhow::Error) -> bool {
    matches!(
        error.downcast_ref::<crate::control::client::ClientError>(),
        Some(crate::control::client::ClientError::Api { status, .. })
            if *status == hyper::StatusCode::SERVICE_UNAVAILABLE
    )
}

/// No task that should stop is still running.
/// Whether nothing is left to do: every task told to stop has stopped, and every other one
/// runs the current spec (right after an update is accepted, the old tasks still run and are
/// all there is, which is not convergence).
fn tasks_settled(tasks: &[TaskRow]) -> bool {
    tasks.iter().all(|task| {
        if task.desired == DesiredState::Shutdown {
            task.state.is_terminal()
        } else {
            task.current
        }
    })
}

fn progress_line(row: &ServiceRow, tasks: &[TaskRow]) -> String {
    let mut counts: BTreeMap<TaskState, u64> = BTreeMap::new();
    for task in tasks.iter().filter(|t| t.desired != DesiredState::Shutdown) {
        *counts.entry(task.state).or_default() += 1;
    }
    let detail: Vec<String> = counts
        .iter()
        .map(|(state, n)| format!("{n} {state:?}").to_lowercase())
        .collect();
    let problem = tasks
        .iter()
        .filter(|t| t.desired != DesiredState::Shutdown && !t.message.is_empty())
        .filter(|t| {
            matches!(
                t.state,
                TaskState::Pending | TaskState::Rejected | TaskState::Failed
            )
        })
        .map(|t| format!(" — {}: {}", t.name, t.message))
        .next()
        .unwrap_or_default();
    format!(
        "overall progress: {}/{} running ({}){problem}",
        row.running,
        row.desired,
        detail.join(", ")
    )
}

/// The `service ls` row of the service `name` names (its name, id or unique id prefix).
async fn find_row(
    client: &crate::control::client::ControlClient,
    name: &str,
) -> anyhow::Result<ServiceRow> {
    let rows: Vec<ServiceRow> = client.get(api::SERVICES).await?;
    if let Some(row) = rows
        .iter()
        .find(|row| row.name == name || row.id.to_string() == name)
    {
        return Ok(row.clone());
    }
    let service: shoal_scheduler::Service = client.get(&api::service(name)).await?;
    rows.into_iter()
        .find(|row| row.id == service.id)
        .with_context(|| format!("no such service: {name}"))
}

async fn list(args: ListArgs) -> anyhow::Result<()> {
    ServiceFilter::parse(&args.filter)?;
    let path = format!("{}{}", api::SERVICES, filters::query(&args.filter));
    let rows: Vec<ServiceRow> = client(&args.client).get(&path).await?;
    print_services(&rows, args.format, args.quiet)
}

/// The `service ls` listing of `rows` (also `stack services`).
pub(super) fn print_services(
    rows: &[ServiceRow],
    format: Format,
    quiet: bool,
) -> anyhow::Result<()> {
    let headers = ["ID", "NAME", "MODE", "REPLICAS", "IMAGE", "PORTS"];
    print_listing(
        rows,
        format,
        quiet,
        |row| row.id.to_string(),
        &headers,
        |row| {
            vec![
                row.id.to_string(),
                row.name.clone(),
                row.mode.clone(),
                format!("{}/{}", row.running, row.desired),
                row.image.clone(),
                row.ports.clone(),
            ]
        },
    )
}

async fn ps(args: PsArgs) -> anyhow::Result<()> {
    let path = format!(
        "{}{}",
        api::service_tasks(&args.service),
        args.tasks.query()?
    );
    let rows: Vec<TaskRow> = client(&args.client).get(&path).await?;
    args.tasks.print(&rows)
}

async fn inspect(args: NameArgs) -> anyhow::Result<()> {
    let service: serde_json::Value = client(&args.client)
        .get(&api::service(&args.service))
        .await?;
    print_json(&service)
}

async fn scale(args: ScaleArgs) -> anyhow::Result<()> {
    let client = client(&args.client);
    for (name, replicas) in &args.targets {
        let _: ServiceId = client
            .post(
                &api::service_scale(name),
                &ScaleRequest {
                    replicas: *replicas,
                },
            )
            .await?;
        println!("{name} scaled to {replicas}");
    }
    if !args.detach {
        for (name, _) in &args.targets {
            wait_converged(&args.client, name, Duration::from_secs(120), true).await?;
        }
    }
    Ok(())
}

async fn remove(args: RemoveArgs) -> anyhow::Result<()> {
    let client = client(&args.client);
    let mut failed = 0;
    for name in &args.services {
        match client.delete::<ServiceId>(&api::service(name)).await {
            Ok(_) => println!("{name}"),
            Err(error) => {
                eprintln!("error: {name}: {error}");
                failed += 1;
            }
        }
    }
    anyhow::ensure!(
        failed == 0,
        "{failed} of {} services could not be removed",
        args.services.len()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use shoal_scheduler::Timestamp;

    use super::*;

    fn row(desired: DesiredState, state: TaskState, current: bool) -> TaskRow {
        TaskRow {
            id: "t".into(),
            name: "web.1".into(),
            image: "web:1".into(),
            node: "n".into(),
            desired,
            state,
            since: Timestamp(0),
            message: String::new(),
            exit_code: None,
            current,
        }
    }

    #[test]
    fn old_tasks_that_still_run_are_not_convergence() {
        let running_old = row(DesiredState::Running, TaskState::Running, false);
        let running_new = row(DesiredState::Running, TaskState::Running, true);
        let stopping = row(DesiredState::Shutdown, TaskState::Running, false);
        let stopped = row(DesiredState::Shutdown, TaskState::Shutdown, false);
        assert!(!tasks_settled(std::slice::from_ref(&running_old)));
        assert!(!tasks_settled(&[running_new.clone(), stopping]));
        assert!(tasks_settled(&[running_new, stopped]));
    }
}
