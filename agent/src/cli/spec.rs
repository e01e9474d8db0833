//! The flags that describe a service (shared by `service create` and `service update`), and their
//! translation into a [`ServiceSpec`]. Values are parsed by `shoal_scheduler::parse`, so the daemon
//! and the client agree on every format.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use shoal_scheduler::parse;
use shoal_scheduler::{
    FailureAction, FileRef, HealthCheck, ObjectKind, ResourceRequirements, Resources,
    RestartCondition, RestartPolicy, ServiceMode, ServiceSpec, Strategy, UpdateConfig, UpdateOrder,
};

/// Parses a duration such as `500ms`, `10s` or `1m30s`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    parse::duration_ms(text)
        .map(Duration::from_millis)
        .map_err(|e| e.to_string())
}

/// Everything `service create` accepts about what to run and how.
#[derive(Debug, Args)]
pub struct SpecArgs {
    /// The service's name (unique in the cluster).
    #[arg(long)]
    pub name: String,
    /// The image to run, e.g. `nginx:alpine`.
    pub image: String,
    /// The command and its arguments (default: the image's).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub args: Vec<String>,
    /// Override the image's entrypoint.
    #[arg(long)]
    pub entrypoint: Option<String>,
    /// Number of tasks (replicated mode).
    #[arg(long, default_value_t = 1)]
    pub replicas: u64,
    /// `replicated` (default) or `global` (one task on every eligible node).
    #[arg(long, default_value = "replicated", value_parser = ["replicated", "global"])]
    pub mode: String,
    /// Environment variables `KEY=VALUE` (repeatable).
    #[arg(short, long = "env")]
    pub env: Vec<String>,
    /// The containers' hostname (default: the container's short id).
    #[arg(long)]
    pub hostname: Option<String>,
    /// Run the command as `USER`, `UID`, `USER:GROUP` or `UID:GID` (default: the image's).
    #[arg(short, long)]
    pub user: Option<String>,
    /// The command's working directory, an absolute path (default: the image's).
    #[arg(short, long)]
    pub workdir: Option<String>,
    /// Service labels `KEY=VALUE` (repeatable).
    #[arg(short, long = "label")]
    pub labels: Vec<String>,
    /// Placement constraints, e.g. `node.labels.zone==eu` or `node.role!=manager` (repeatable).
    #[arg(long = "constraint")]
    pub constraints: Vec<String>,
    /// Placement preferences, e.g. `spread=node.labels.zone` (repeatable).
    #[arg(long = "placement-pref")]
    pub preferences: Vec<String>,
    /// `spread` (default) or `binpack`.
    #[arg(long, default_value = "spread", value_parser = ["spread", "binpack"])]
    pub placement_strategy: String,
    /// At most this many tasks on one node (0 = unlimited).
    #[arg(long, default_value_t = 0)]
    pub replicas_max_per_node: u64,
    /// Publish a port: `8080:80`, `8080:80/udp`, or `mode=host,published=8080,target=80`.
    #[arg(short, long = "publish")]
    pub publish: Vec<String>,
    /// Mount: `type=bind,source=/data,target=/data[,readonly]` (also volume, tmpfs).
    #[arg(long = "mount")]
    pub mounts: Vec<String>,
    /// Give each task a secret as a file: `NAME`, or
    /// `source=NAME,target=PATH,uid=N,gid=N,mode=0400` (repeatable). By default at
    /// `/run/secrets/NAME`, mode 0400; create it first with `shoal secret create`.
    #[arg(long = "secret", value_name = "SECRET")]
    pub secrets: Vec<String>,
    /// Give each task a config as a file: `NAME`, or
    /// `source=NAME,target=PATH,uid=N,gid=N,mode=0444` (repeatable). By default at `/NAME`,
    /// mode 0444; create it first with `shoal config create`.
    #[arg(long = "config", value_name = "CONFIG")]
    pub configs: Vec<String>,
    /// CPUs reserved for each task, e.g. `0.5`.
    #[arg(long)]
    pub reserve_cpu: Option<String>,
    /// Memory reserved for each task, e.g. `256MiB`.
    #[arg(long)]
    pub reserve_memory: Option<String>,
    /// CPU limit of each task.
    #[arg(long)]
    pub limit_cpu: Option<String>,
    /// Memory limit of each task.
    #[arg(long)]
    pub limit_memory: Option<String>,
    /// Restart when a task ends: `none`, `on-failure` or `any`.
    #[arg(long, default_value = "any", value_parser = ["none", "on-failure", "any"])]
    pub restart_condition: String,
    /// Wait between a task's end and its restart.
    #[arg(long, default_value = "0s")]
    pub restart_delay: String,
    /// Give up after this many restarts (0 = never give up).
    #[arg(long, default_value_t = 0)]
    pub restart_max_attempts: u64,
    /// Window in which restarts are counted (0s = forever).
    #[arg(long, default_value = "0s")]
    pub restart_window: String,
    /// Tasks updated at once (0 = all).
    #[arg(long, default_value_t = 1)]
    pub update_parallelism: u64,
    /// Wait between update batches.
    #[arg(long, default_value = "0s")]
    pub update_delay: String,
    /// `stop-first` or `start-first`.
    #[arg(long, default_value = "stop-first", value_parser = ["stop-first", "start-first"])]
    pub update_order: String,
    /// On too many failures: `pause`, `continue` or `rollback`.
    #[arg(long, default_value = "pause", value_parser = ["pause", "continue", "rollback"])]
    pub update_failure_action: String,
    /// How long each updated task is watched for failure.
    #[arg(long, default_value = "5s")]
    pub update_monitor: String,
    /// Share of updated tasks that may fail (0 to 1).
    #[arg(long, default_value_t = 0.0)]
    pub update_max_failure_ratio: f64,
    /// Health check command, run with the container's shell.
    #[arg(long)]
    pub health_cmd: Option<String>,
    /// Time between health checks.
    #[arg(long, default_value = "5s")]
    pub health_interval: String,
    /// A check that runs longer fails.
    #[arg(long, default_value = "3s")]
    pub health_timeout: String,
    /// Consecutive failures that make a task unhealthy.
    #[arg(long, default_value_t = 3)]
    pub health_retries: u64,
    /// Failures in this period after start do not count.
    #[arg(long, default_value = "0s")]
    pub health_start_period: String,
    /// Time between the stop signal and a kill.
    #[arg(long, default_value = "10s")]
    pub stop_grace_period: String,
    /// The rollback policy (`--rollback-*`; each one not given is the update policy's).
    #[command(flatten)]
    pub rollback: super::update::RollbackPolicyArgs,
}

impl SpecArgs {
    /// The spec these flags describe; every bad value is reported with the flag that carried it.
    pub fn to_spec(&self) -> anyhow::Result<ServiceSpec> {
        let mode = match self.mode.as_str() {
            "global" => ServiceMode::Global,
            _ => ServiceMode::Replicated {
                replicas: self.replicas,
            },
        };
        let update = UpdateConfig {
            parallelism: self.update_parallelism,
            delay_ms: millis("--update-delay", &self.update_delay)?,
            order: if self.update_order == "start-first" {
                UpdateOrder::StartFirst
            } else {
                UpdateOrder::StopFirst
            },
            failure_action: match self.update_failure_action.as_str() {
                "continue" => FailureAction::Continue,
                "rollback" => FailureAction::Rollback,
                _ => FailureAction::Pause,
            },
            monitor_ms: millis("--update-monitor", &self.update_monitor)?,
            max_failure_permille: ratio_permille(self.update_max_failure_ratio)?,
        };
        Ok(ServiceSpec {
            name: self.name.clone(),
            image: self.image.clone(),
            command: self.entrypoint.iter().cloned().collect(),
            args: self.args.clone(),
            env: self.env.clone(),
            mode,
            constraints: self
                .constraints
                .iter()
                .map(|c| parse::constraint(c).with_context(|| format!("--constraint {c:?}")))
                .collect::<anyhow::Result<_>>()?,
            preferences: self
                .preferences
                .iter()
                .map(|p| parse::preference(p).with_context(|| format!("--placement-pref {p:?}")))
                .collect::<anyhow::Result<_>>()?,
            strategy: if self.placement_strategy == "binpack" {
                Strategy::Binpack
            } else {
                Strategy::Spread
            },
            max_replicas_per_node: self.replicas_max_per_node,
            resources: self.resources()?,
            restart: RestartPolicy {
                condition: match self.restart_condition.as_str() {
                    "none" => RestartCondition::None,
                    "on-failure" => RestartCondition::OnFailure,
                    _ => RestartCondition::Any,
                },
                delay_ms: millis("--restart-delay", &self.restart_delay)?,
                max_attempts: self.restart_max_attempts,
                window_ms: millis("--restart-window", &self.restart_window)?,
            },
            update,
            rollback: self.rollback.apply_to(update)?,
            health: self.health()?,
            ports: self
                .publish
                .iter()
                .map(|p| parse::port(p).with_context(|| format!("--publish {p:?}")))
                .collect::<anyhow::Result<_>>()?,
            mounts: self
                .mounts
                .iter()
                .map(|m| parse::mount(m).with_context(|| format!("--mount {m:?}")))
                .collect::<anyhow::Result<_>>()?,
            labels: key_values("--label", &self.labels)?,
            stop_grace_ms: millis("--stop-grace-period", &self.stop_grace_period)?,
            force_update: 0,
            secrets: file_refs(ObjectKind::Secret, "--secret", &self.secrets)?,
            configs: file_refs(ObjectKind::Config, "--config", &self.configs)?,
            hostname: self.hostname.clone(),
            user: self.user.clone(),
            working_dir: self.workdir.clone(),
        })
    }

    fn resources(&self) -> anyhow::Result<ResourceRequirements> {
        let cpus = |flag: &str, value: &Option<String>| -> anyhow::Result<u64> {
            value.as_deref().map_or(Ok(0), |v| {
                parse::cpus(v).with_context(|| format!("{flag} {v:?}"))
            })
        };
        let bytes = |flag: &str, value: &Option<String>| -> anyhow::Result<u64> {
            value.as_deref().map_or(Ok(0), |v| {
                parse::size(v).with_context(|| format!("{flag} {v:?}"))
            })
        };
        Ok(ResourceRequirements {
            reservations: Resources {
                nano_cpus: cpus("--reserve-cpu", &self.reserve_cpu)?,
                memory_bytes: bytes("--reserve-memory", &self.reserve_memory)?,
            },
            limits: Resources {
                nano_cpus: cpus("--limit-cpu", &self.limit_cpu)?,
                memory_bytes: bytes("--limit-memory", &self.limit_memory)?,
            },
        })
    }

    fn health(&self) -> anyhow::Result<Option<HealthCheck>> {
        let Some(command) = &self.health_cmd else {
            return Ok(None);
        };
        Ok(Some(HealthCheck {
            command: command.clone(),
            interval_ms: millis("--health-interval", &self.health_interval)?,
            timeout_ms: millis("--health-timeout", &self.health_timeout)?,
            retries: self.health_retries,
            start_period_ms: millis("--health-start-period", &self.health_start_period)?,
        }))
    }
}

/// Parses `--secret` or `--config` values (one reference per source name: a second one for the
/// same name replaces the first).
pub fn file_refs(kind: ObjectKind, flag: &str, given: &[String]) -> anyhow::Result<Vec<FileRef>> {
    let mut refs: Vec<FileRef> = Vec::with_capacity(given.len());
    for text in given {
        let added = parse::file_ref(kind, text).with_context(|| format!("{flag} {text:?}"))?;
        refs.retain(|r| r.source != added.source);
        refs.push(added);
    }
    Ok(refs)
}

fn millis(flag: &str, text: &str) -> anyhow::Result<u64> {
    parse::duration_ms(text).with_context(|| format!("{flag} {text:?}"))
}

fn ratio_permille(ratio: f64) -> anyhow::Result<u32> {
    anyhow::ensure!(
        (0.0..=1.0).contains(&ratio),
        "--update-max-failure-ratio must be between 0 and 1, got {ratio}"
    );
    Ok((ratio * 1000.0).round() as u32)
}

fn key_values(flag: &str, pairs: &[String]) -> anyhow::Result<BTreeMap<String, String>> {
    pairs
        .iter()
        .map(|pair| match pair.split_once('=') {
            Some((key, value)) if !key.is_empty() => Ok((key.to_string(), value.to_string())),
            None if !pair.is_empty() => Ok((pair.clone(), String::new())),
            _ => anyhow::bail!("{flag} {pair:?}: expected KEY=VALUE"),
        })
        .collect()
}
