//! `shoal stack`: whole applications from Compose files. `deploy` reads the files (with
//! `shoal-compose`), compares each service with what the cluster runs, and creates, updates or
//! (with `--prune`) removes services, in `depends_on` order: a service is created or updated
//! only once the services it depends on run (healthy, where they have a health check: a task
//! only reports running once healthy). A stack's services are named `STACK_SERVICE` and carry
//! the label `io.shoal.stack.namespace=STACK`, which `ls`, `services`, `ps` and `rm` read.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::{Args, Subcommand};
use shoal_compose::{
    ComposeFile, Condition, Environment, LoadOptions, STACK_NAMESPACE_LABEL, Stack, StackService,
};
use shoal_scheduler::{Service, ServiceId};

use super::ClientOptions;
use super::client::client;
use super::output::{Format, TaskListArgs, print_listing, table};
use super::stack_files::{self, ObjectChange};
use crate::control::api::{
    self, CreateServiceRequest, CreateServiceResponse, UpdateServiceRequest,
};
use crate::control::client::ControlClient;
use crate::control::views::{ServiceRow, TaskRow};

/// `shoal stack ...`.
#[derive(Debug, Subcommand)]
pub enum StackCommand {
    /// Deploy a stack from Compose files, or bring a deployed one up to date.
    ///
    /// `shoal stack deploy -c compose.yaml shop` creates `shop_web`, `shop_db`, ... in
    /// `depends_on` order; run again after editing the file, it updates only the services whose
    /// spec changed. Several `-c` files merge in order (later ones override). Variables come
    /// from the environment, then from `.env` beside the first file. Keys shoal does not apply
    /// are warned about (`--strict` refuses them); a file with an error deploys nothing.
    Deploy(DeployArgs),
    /// List the stacks and how many services each has.
    Ls(LsArgs),
    /// List a stack's services.
    Services(ServicesArgs),
    /// List a stack's tasks.
    Ps(PsArgs),
    /// Remove a stack's services, and the secrets and configs it made.
    Rm(RmArgs),
}

/// Flags of `shoal stack deploy`.
#[derive(Debug, Args)]
pub struct DeployArgs {
    /// A Compose file (repeat to merge several, in order; `-` is not accepted).
    #[arg(
        short = 'c',
        long = "compose-file",
        value_name = "FILE",
        required = true
    )]
    pub files: Vec<PathBuf>,
    /// Refuse keys shoal does not apply instead of warning about them.
    #[arg(long)]
    pub strict: bool,
    /// Remove the stack's services that the files no longer have.
    #[arg(long)]
    pub prune: bool,
    /// Print what would change, and change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Return once every service is created or updated, without waiting for them to run (a
    /// service that others depend on is still waited for before they are created).
    #[arg(short, long)]
    pub detach: bool,
    /// How long to wait for each service to run.
    #[arg(long, default_value = "5m", value_parser = super::spec::parse_duration)]
    pub timeout: Duration,
    /// The stack's name (letters, digits, - and _; it prefixes its services' names).
    pub name: String,
    #[command(flatten)]
    client: ClientOptions,
}

/// Flags of `shoal stack ls`.
#[derive(Debug, Args)]
pub struct LsArgs {
    /// A table for people, or JSON for scripts.
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
    #[command(flatten)]
    client: ClientOptions,
}

/// Flags of `shoal stack services`.
#[derive(Debug, Args)]
pub struct ServicesArgs {
    /// The stack.
    pub name: String,
    /// A table for people, or JSON for scripts.
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
    /// Only the ids.
    #[arg(short, long)]
    pub quiet: bool,
    #[command(flatten)]
    client: ClientOptions,
}

/// Flags of `shoal stack ps`.
#[derive(Debug, Args)]
pub struct PsArgs {
    /// The stack.
    pub name: String,
    /// Which tasks, and how they are printed.
    #[command(flatten)]
    pub tasks: TaskListArgs,
    #[command(flatten)]
    client: ClientOptions,
}

/// Flags of `shoal stack rm`.
#[derive(Debug, Args)]
pub struct RmArgs {
    /// The stacks.
    #[arg(required = true)]
    pub names: Vec<String>,
    #[command(flatten)]
    client: ClientOptions,
}

/// Runs a stack command.
pub async fn run(command: StackCommand) -> anyhow::Result<()> {
    match command {
        StackCommand::Deploy(args) => deploy(args).await,
        StackCommand::Ls(args) => list(args).await,
        StackCommand::Services(args) => services(args).await,
        StackCommand::Ps(args) => ps(args).await,
        StackCommand::Rm(args) => remove(args).await,
    }
}

/// What deploying does to one service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// It is not in the cluster yet.
    Create,
    /// Its spec differs from the cluster's (the revision the update is based on).
    Update(u64),
    /// The cluster runs it as the file says.
    Unchanged,
}

impl Change {
    fn verb(self) -> &'static str {
        match self {
            Change::Create => "create",
            Change::Update(_) => "update",
            Change::Unchanged => "unchanged",
        }
    }
}

/// What a deploy does: each service of the file in start order with its change, then the
/// stack's services the file no longer has.
#[derive(Debug)]
pub struct DeployPlan<'s> {
    /// The file's services, in `depends_on` order.
    pub steps: Vec<(&'s StackService, Change)>,
    /// The stack's services in the cluster that the file does not name (by cluster name).
    pub gone: Vec<String>,
}

/// The plan of deploying `stack` onto the stack's services the cluster has (`deployed`).
pub fn plan<'s>(stack: &'s Stack, deployed: &[Service]) -> anyhow::Result<DeployPlan<'s>> {
    let by_name: BTreeMap<&str, &Service> =
        deployed.iter().map(|s| (s.spec.name.as_str(), s)).collect();
    let steps = stack
        .start_order()?
        .into_iter()
        .map(|service| {
            let change = match by_name.get(service.spec.name.as_str()) {
                None => Change::Create,
                Some(current) if current.spec == service.spec => Change::Unchanged,
                Some(current) => Change::Update(current.revision),
            };
            (service, change)
        })
        .collect();
    let named: BTreeSet<&str> = stack
        .services
        .iter()
        .map(|s| s.spec.name.as_str())
        .collect();
    let gone = deployed
        .iter()
        .map(|s| s.spec.name.clone())
        .filter(|name| !named.contains(name.as_str()))
        .collect();
    Ok(DeployPlan { steps, gone })
}

async fn deploy(args: DeployArgs) -> anyhow::Result<()> {
    let (stack, env) = read_stack(&args)?;
    for warning in &stack.warnings {
        eprintln!("warning: {warning}");
    }
    let client = client(&args.client);
    let deployed = stack_services(&client, &stack.name).await?;
    let plan = plan(&stack, &deployed)?;
    let mut objects = stack_files::plan(&client, &stack, &env).await?;
    for step in &objects {
        let verb = match step.change {
            ObjectChange::Create => "create",
            ObjectChange::Keep => "keep",
            ObjectChange::External => "use",
        };
        println!("{verb:<9} {} {}", step.kind, step.object.name);
    }
    for (service, change) in &plan.steps {
        println!("{:<9} {}", change.verb(), service.spec.name);
    }
    for name in &plan.gone {
        let verb = if args.prune { "remove" } else { "keep" };
        println!(
            "{verb:<9} {name} (no longer in the file{})",
            if args.prune {
                ""
            } else {
                "; --prune removes it"
            }
        );
    }
    if args.dry_run {
        println!("dry run: nothing changed");
        return Ok(());
    }
    let started = Instant::now();
    stack_files::create(&client, &stack, &mut objects).await?;
    let mut changed = Vec::new();
    for (service, change) in &plan.steps {
        wait_for_dependencies(&args, &stack, service).await?;
        apply_change(&client, service, *change).await?;
        if *change != Change::Unchanged {
            changed.push(service.spec.name.as_str());
        }
    }
    if args.prune {
        for name in &plan.gone {
            let _: ServiceId = client.delete(&api::service(name)).await?;
            println!("removed {name}");
        }
    }
    if !args.detach && !changed.is_empty() {
        println!("waiting for {} to run", changed.join(", "));
        let waits = changed
            .iter()
            .map(|name| super::service::wait_converged(&args.client, name, args.timeout, false));
        for (name, outcome) in changed.iter().zip(futures::future::join_all(waits).await) {
            outcome.with_context(|| format!("{name} did not run"))?;
        }
    }
    println!(
        "stack {} deployed in {:.1}s",
        stack.name,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Reads and checks the files: nothing is deployed from files with an error. The variables
/// they were read with come along (secrets and configs may take their value from one).
fn read_stack(args: &DeployArgs) -> anyhow::Result<(Stack, Environment)> {
    let files = args
        .files
        .iter()
        .map(ComposeFile::read)
        .collect::<Result<Vec<_>, _>>()?;
    let first = files.first().context("give at least one -c FILE")?;
    let env = Environment::for_project(&shoal_compose::project_dir(&first.path))?;
    let stack = shoal_compose::load(
        &args.name,
        &files,
        &env,
        &LoadOptions {
            strict: args.strict,
        },
    )?;
    Ok((stack, env))
}

/// Waits until every service `service` depends on runs.
async fn wait_for_dependencies(
    args: &DeployArgs,
    stack: &Stack,
    service: &StackService,
) -> anyhow::Result<()> {
    for dependency in &service.depends_on {
        let Some(on) = stack.services.iter().find(|s| s.name == dependency.service) else {
            continue;
        };
        if dependency.condition == Condition::CompletedSuccessfully {
            anyhow::bail!(
                "service {} waits for {} to complete successfully, which shoal cannot do yet \
                 (a service's tasks are restarted, not run once): use service_started or \
                 service_healthy",
                service.name,
                on.name
            );
        }
        println!("{} waits for {} to run", service.spec.name, on.spec.name);
        super::service::wait_converged(&args.client, &on.spec.name, args.timeout, false)
            .await
            .with_context(|| format!("{} waits for {}", service.name, on.name))?;
    }
    Ok(())
}

async fn apply_change(
    client: &ControlClient,
    service: &StackService,
    change: Change,
) -> anyhow::Result<()> {
    let name = &service.spec.name;
    match change {
        Change::Create => {
            let created: CreateServiceResponse = client
                .post(
                    api::SERVICES,
                    &CreateServiceRequest {
                        spec: service.spec.clone(),
                    },
                )
                .await
                .with_context(|| format!("creating {name}"))?;
            println!("{name} created as {}", created.id);
        }
        Change::Update(revision) => {
            let _: ServiceId = client
                .post(
                    &api::service_update(name),
                    &UpdateServiceRequest {
                        spec: service.spec.clone(),
                        expected_revision: revision,
                    },
                )
                .await
                .with_context(|| format!("updating {name}"))?;
            println!("{name} updated");
        }
        Change::Unchanged => {}
    }
    Ok(())
}

/// The stack's services in the cluster, whole.
async fn stack_services(client: &ControlClient, stack: &str) -> anyhow::Result<Vec<Service>> {
    let mut services = Vec::new();
    for row in stack_rows(client, stack).await? {
        services.push(client.get(&api::service(&row.id.to_string())).await?);
    }
    Ok(services)
}

/// The `service ls` rows of the stack's services.
async fn stack_rows(client: &ControlClient, stack: &str) -> anyhow::Result<Vec<ServiceRow>> {
    let filter = format!("label={STACK_NAMESPACE_LABEL}={stack}");
    let path = format!(
        "{}{}",
        api::SERVICES,
        crate::control::filters::query(&[filter])
    );
    Ok(client.get(&path).await?)
}

/// One line of `shoal stack ls`.
#[derive(Debug, serde::Serialize)]
struct StackRow {
    name: String,
    services: usize,
}

async fn list(args: LsArgs) -> anyhow::Result<()> {
    let rows: Vec<ServiceRow> = client(&args.client).get(api::SERVICES).await?;
    let mut stacks: BTreeMap<String, usize> = BTreeMap::new();
    for stack in rows.iter().filter_map(|r| r.stack.clone()) {
        *stacks.entry(stack).or_default() += 1;
    }
    let rows: Vec<StackRow> = stacks
        .into_iter()
        .map(|(name, services)| StackRow { name, services })
        .collect();
    print_listing(
        &rows,
        args.format,
        false,
        |row| row.name.clone(),
        &["NAME", "SERVICES"],
        |row| vec![row.name.clone(), row.services.to_string()],
    )
}

async fn services(args: ServicesArgs) -> anyhow::Result<()> {
    let rows = stack_rows(&client(&args.client), &args.name).await?;
    if rows.is_empty() && args.format == Format::Table && !args.quiet {
        eprintln!("nothing found in stack: {}", args.name);
        return Ok(());
    }
    super::service::print_services(&rows, args.format, args.quiet)
}

async fn ps(args: PsArgs) -> anyhow::Result<()> {
    let client = client(&args.client);
    let query = args.tasks.query()?;
    let mut tasks: Vec<TaskRow> = Vec::new();
    for row in stack_rows(&client, &args.name).await? {
        let path = format!("{}{query}", api::service_tasks(&row.id.to_string()));
        tasks.extend(client.get::<Vec<TaskRow>>(&path).await?);
    }
    args.tasks.print(&tasks)
}

async fn remove(args: RmArgs) -> anyhow::Result<()> {
    let client = client(&args.client);
    let mut failed = Vec::new();
    for stack in &args.names {
        let rows = stack_rows(&client, stack).await?;
        for row in &rows {
            match client
                .delete::<ServiceId>(&api::service(&row.id.to_string()))
                .await
            {
                Ok(_) => println!("removing service {}", row.name),
                Err(error) => failed.push(format!("{}: {error}", row.name)),
            }
        }
        let objects_failed = stack_files::remove(&client, stack).await?;
        if rows.is_empty() && objects_failed.is_empty() {
            eprintln!("no services left in stack: {stack}");
        }
        failed.extend(objects_failed);
    }
    anyhow::ensure!(
        failed.is_empty(),
        "some parts of the stack could not be removed:\n{}",
        table(
            &["PART: ERROR"],
            &failed.into_iter().map(|f| vec![f]).collect::<Vec<_>>()
        )
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use shoal_compose::{ComposeFile, Environment, LoadOptions};
    use shoal_scheduler::Timestamp;

    use super::*;

    const FILE: &str = r#"
services:
  web:
    image: shoal-test/busybox:latest
    command: ["httpd", "-f", "-p", "80"]
    depends_on:
      api:
        condition: service_healthy
  api:
    image: shoal-test/busybox:latest
    command: ["sleep", "3600"]
    healthcheck:
      test: ["CMD", "true"]
  old-name:
    image: shoal-test/busybox:latest
"#;

    fn stack(text: &str) -> Stack {
        shoal_compose::load(
            "shop",
            &[ComposeFile::new("compose.yaml", text)],
            &Environment::empty(),
            &LoadOptions::default(),
        )
        .expect("a valid file")
    }

    /// The cluster's services after creating `stack`'s, each at the revision the state gives.
    fn deployed(stack: &Stack) -> Vec<Service> {
        let mut state = shoal_scheduler::synthetic::cluster(
            &shoal_scheduler::synthetic::ClusterShape::new(1, 1),
        );
        for service in &stack.services {
            shoal_scheduler::synthetic::create_service(
                &mut state,
                service.spec.clone(),
                Timestamp(0),
            )
            .expect("a valid spec");
        }
        state.services.values().cloned().collect()
    }

    #[test]
    fn a_deploy_creates_what_is_missing_updates_what_changed_and_finds_what_is_gone() {
        let first = stack(FILE);
        let plan_of_new = plan(&first, &[]).expect("a plan");
        let order: Vec<&str> = plan_of_new
            .steps
            .iter()
            .map(|(s, _)| s.name.as_str())
            .collect();
        let position = |name: &str| order.iter().position(|n| *n == name).expect("planned");
        assert!(position("api") < position("web"), "{order:?}");
        assert!(plan_of_new.steps.iter().all(|(_, c)| *c == Change::Create));

        let running = deployed(&first);
        let edited = stack(
            &FILE
                .replace("sleep\", \"3600", "sleep\", \"7200")
                .replace("  old-name:\n    image: shoal-test/busybox:latest\n", ""),
        );
        let again = plan(&edited, &running).expect("a plan");
        let changes: BTreeMap<&str, Change> = again
            .steps
            .iter()
            .map(|(s, c)| (s.name.as_str(), *c))
            .collect();
        let api_revision = running
            .iter()
            .find(|s| s.spec.name == "shop_api")
            .map(|s| s.revision)
            .expect("api");
        assert_eq!(changes["api"], Change::Update(api_revision));
        assert_eq!(changes["web"], Change::Unchanged);
        assert_eq!(again.gone, vec!["shop_old-name".to_owned()]);
    }
}
