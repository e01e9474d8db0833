//! `shoal secret ...` and `shoal config ...`: create, list, inspect and remove the cluster's
//! secrets and configs. Both are immutable; a new value is a new object under a new name, then
//! `shoal service update --secret-rm OLD --secret-add source=NEW,target=NAME SERVICE`.
//!
//! A secret's value goes to the agent once, when it is created, and is never shown again (not by
//! `inspect`, not by `ls`). A config's value is shown by `config inspect --data` only.

use std::io::Read as _;

use anyhow::Context as _;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use clap::{Args, Subcommand};
use shoal_scheduler::ObjectKind;
use shoal_scheduler::secrets::MAX_VALUE_BYTES;
use zeroize::Zeroizing;

use super::ClientOptions;
use super::client::{client, now_ms};
use super::output::{Format, age, print_json, print_listing};
use crate::control::api::{
    self, ConfigView, CreateObjectRequest, CreateObjectResponse, SecretView,
};

/// `secret` and `config` commands.
#[derive(Debug, Subcommand)]
pub enum ObjectCommand {
    /// Create one from a file, or from standard input with `-`.
    Create(CreateArgs),
    /// List them (never a secret's value).
    #[command(alias = "list")]
    Ls(ListArgs),
    /// Show their metadata as JSON (never a secret's value; a config's with `--data`).
    Inspect(InspectArgs),
    /// Remove them (refused while a service refers to one: the error names the services).
    #[command(alias = "remove")]
    Rm(RemoveArgs),
}

/// `create`.
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Its name: letters, digits, `-`, `_` and `.`, unique among its kind.
    pub name: String,
    /// The file holding the value (at most 500 KiB), or `-` for standard input.
    pub file: String,
    /// A label, `KEY=VALUE` (repeatable).
    #[arg(short, long = "label")]
    pub labels: Vec<String>,
    #[command(flatten)]
    client: ClientOptions,
}

/// `ls`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Table for people, JSON for scripts.
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
    /// Print only ids.
    #[arg(short, long)]
    pub quiet: bool,
    #[command(flatten)]
    client: ClientOptions,
}

/// `inspect`.
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// Names, ids or unique id prefixes.
    #[arg(required = true)]
    pub names: Vec<String>,
    /// Print the value of a config instead of its metadata (one config; never for a secret).
    #[arg(long)]
    pub data: bool,
    #[command(flatten)]
    client: ClientOptions,
}

/// `rm`.
#[derive(Debug, Args)]
pub struct RemoveArgs {
    /// Names, ids or unique id prefixes.
    #[arg(required = true)]
    pub names: Vec<String>,
    #[command(flatten)]
    client: ClientOptions,
}

/// Runs a `secret` or `config` command.
pub async fn run(kind: ObjectKind, command: ObjectCommand) -> anyhow::Result<()> {
    match command {
        ObjectCommand::Create(args) => create(kind, args).await,
        ObjectCommand::Ls(args) => list(kind, args).await,
        ObjectCommand::Inspect(args) => inspect(kind, args).await,
        ObjectCommand::Rm(args) => remove(kind, args).await,
    }
}

/// The API path of every secret or every config.
pub(super) fn collection(kind: ObjectKind) -> &'static str {
    match kind {
        ObjectKind::Secret => api::SECRETS,
        ObjectKind::Config => api::CONFIGS,
    }
}

/// The API path of one secret or config.
pub(super) fn one(kind: ObjectKind, name: &str) -> String {
    match kind {
        ObjectKind::Secret => api::secret(name),
        ObjectKind::Config => api::config(name),
    }
}

/// Reads at most one byte more than a value may hold, so that a larger one is refused without
/// reading it all.
pub(super) fn read_value(kind: ObjectKind, file: &str) -> anyhow::Result<Zeroizing<Vec<u8>>> {
    let mut value = Zeroizing::new(Vec::new());
    let limit = MAX_VALUE_BYTES as u64 + 1;
    if file == "-" {
        std::io::stdin()
            .lock()
            .take(limit)
            .read_to_end(&mut value)
            .context("cannot read standard input")?;
    } else {
        std::fs::File::open(file)
            .and_then(|f| f.take(limit).read_to_end(&mut value))
            .with_context(|| format!("cannot read {file}"))?;
    }
    anyhow::ensure!(
        value.len() <= MAX_VALUE_BYTES,
        "{file}: a {kind} holds at most {} KiB",
        MAX_VALUE_BYTES / 1024
    );
    Ok(value)
}

async fn create(kind: ObjectKind, args: CreateArgs) -> anyhow::Result<()> {
    let value = read_value(kind, &args.file)?;
    let mut labels = std::collections::BTreeMap::new();
    for pair in &args.labels {
        match pair.split_once('=') {
            Some((key, value)) if !key.is_empty() => {
                labels.insert(key.to_owned(), value.to_owned());
            }
            None if !pair.is_empty() => {
                labels.insert(pair.clone(), String::new());
            }
            _ => anyhow::bail!("--label {pair:?}: expected KEY=VALUE"),
        }
    }
    let request = CreateObjectRequest {
        name: args.name,
        labels,
        data: BASE64.encode(value.as_slice()),
    };
    drop(value);
    let request = Zeroizing::new(request);
    let created: CreateObjectResponse = client(&args.client)
        .post(collection(kind), &*request)
        .await?;
    println!("{}", created.id);
    Ok(())
}

impl zeroize::Zeroize for CreateObjectRequest {
    fn zeroize(&mut self) {
        self.data.zeroize();
    }
}

async fn list(kind: ObjectKind, args: ListArgs) -> anyhow::Result<()> {
    let client = client(&args.client);
    let now = now_ms();
    let services = |names: &[String]| {
        if names.is_empty() {
            "-".to_owned()
        } else {
            names.join(",")
        }
    };
    match kind {
        ObjectKind::Secret => {
            let rows: Vec<SecretView> = client.get(api::SECRETS).await?;
            print_listing(
                &rows,
                args.format,
                args.quiet,
                |row| row.id.clone(),
                &["ID", "NAME", "CREATED", "SERVICES"],
                |row| {
                    vec![
                        row.id.clone(),
                        row.name.clone(),
                        age(now, row.created_at_ms),
                        services(&row.services),
                    ]
                },
            )
        }
        ObjectKind::Config => {
            let rows: Vec<ConfigView> = client.get(api::CONFIGS).await?;
            print_listing(
                &rows,
                args.format,
                args.quiet,
                |row| row.id.clone(),
                &["ID", "NAME", "SIZE", "CREATED", "SERVICES"],
                |row| {
                    vec![
                        row.id.clone(),
                        row.name.clone(),
                        row.size.to_string(),
                        age(now, row.created_at_ms),
                        services(&row.services),
                    ]
                },
            )
        }
    }
}

async fn inspect(kind: ObjectKind, args: InspectArgs) -> anyhow::Result<()> {
    let client = client(&args.client);
    if args.data {
        anyhow::ensure!(
            kind == ObjectKind::Config,
            "a secret's value is never shown: only the tasks of the services given it see it"
        );
        anyhow::ensure!(
            args.names.len() == 1,
            "--data prints the value of one config: give one name"
        );
        let config: ConfigView = client.get(&api::config(&args.names[0])).await?;
        let value = BASE64
            .decode(config.data.unwrap_or_default())
            .context("the agent answered a config whose data is not base64")?;
        use std::io::Write as _;
        std::io::stdout().write_all(&value)?;
        return Ok(());
    }
    match kind {
        ObjectKind::Secret => {
            let mut shown = Vec::with_capacity(args.names.len());
            for name in &args.names {
                shown.push(client.get::<SecretView>(&one(kind, name)).await?);
            }
            print_json(&shown)
        }
        ObjectKind::Config => {
            let mut shown = Vec::with_capacity(args.names.len());
            for name in &args.names {
                let mut config: ConfigView = client.get(&one(kind, name)).await?;
                config.data = None;
                shown.push(config);
            }
            print_json(&shown)
        }
    }
}

async fn remove(kind: ObjectKind, args: RemoveArgs) -> anyhow::Result<()> {
    let client = client(&args.client);
    let mut failed = 0;
    for name in &args.names {
        match client.delete::<String>(&one(kind, name)).await {
            Ok(id) => println!("{id}"),
            Err(error) => {
                eprintln!("error: {name}: {error}");
                failed += 1;
            }
        }
    }
    anyhow::ensure!(
        failed == 0,
        "{failed} of {} {kind}s could not be removed",
        args.names.len()
    );
    Ok(())
}
