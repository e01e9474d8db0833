//! `shoal service update` and `shoal service rollback`: a change to a service's spec, rolled out
//! under its update policy (or back under its rollback policy), followed with progress until it
//! converged. The changes are applied to the service's current spec by a pure function, so that
//! only what the flags name changes.

use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use shoal_scheduler::{
    FailureAction, FileRef, ObjectKind, Service, ServiceId, ServiceMode, ServiceSpec, UpdateConfig,
    UpdateOrder, parse,
};

use super::ClientOptions;
use super::client::client;
use super::service::wait_converged;
use super::spec::parse_duration;
use crate::control::api::{self, UpdateServiceRequest};

/// `service update`.
#[derive(Debug, Args)]
pub struct UpdateArgs {
    /// The service: name or id.
    pub service: String,
    /// The image to run.
    #[arg(long)]
    pub image: Option<String>,
    /// Number of tasks (replicated services).
    #[arg(long)]
    pub replicas: Option<u64>,
    /// Add or change an environment variable, `KEY=VALUE` (repeatable).
    #[arg(long = "env-add")]
    pub env_add: Vec<String>,
    /// Remove an environment variable by its key (repeatable).
    #[arg(long = "env-rm")]
    pub env_rm: Vec<String>,
    /// Add or change a service label, `KEY=VALUE` (repeatable).
    #[arg(long = "label-add")]
    pub label_add: Vec<String>,
    /// Remove a service label by its key (repeatable).
    #[arg(long = "label-rm")]
    pub label_rm: Vec<String>,
    /// Publish a port, as `--publish` of `create` (repeatable).
    #[arg(long = "publish-add")]
    pub publish_add: Vec<String>,
    /// Stop publishing a port: `8080` or `8080/udp` (repeatable).
    #[arg(long = "publish-rm")]
    pub publish_rm: Vec<String>,
    /// Add a placement constraint, as `--constraint` of `create` (repeatable).
    #[arg(long = "constraint-add")]
    pub constraint_add: Vec<String>,
    /// Remove a placement constraint, written as it was added (repeatable).
    #[arg(long = "constraint-rm")]
    pub constraint_rm: Vec<String>,
    /// Add a mount, as `--mount` of `create` (repeatable).
    #[arg(long = "mount-add")]
    pub mount_add: Vec<String>,
    /// Remove a mount by its target path (repeatable).
    #[arg(long = "mount-rm")]
    pub mount_rm: Vec<String>,
    /// Give each task a secret, as `--secret` of `create` (repeatable). Rotation: remove the old
    /// one and add the new one at the same target:
    /// `--secret-rm db-v1 --secret-add source=db-v2,target=db`.
    #[arg(long = "secret-add", value_name = "SECRET")]
    pub secret_add: Vec<String>,
    /// Stop giving a secret to the tasks, by its name (repeatable).
    #[arg(long = "secret-rm", value_name = "NAME")]
    pub secret_rm: Vec<String>,
    /// Give each task a config, as `--config` of `create` (repeatable).
    #[arg(long = "config-add", value_name = "CONFIG")]
    pub config_add: Vec<String>,
    /// Stop giving a config to the tasks, by its name (repeatable).
    #[arg(long = "config-rm", value_name = "NAME")]
    pub config_rm: Vec<String>,
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
    /// Time between the stop signal and a kill.
    #[arg(long)]
    pub stop_grace_period: Option<String>,
    /// The containers' hostname (`""`: back to the default, the container's short id).
    #[arg(long)]
    pub hostname: Option<String>,
    /// Run the command as `USER`, `UID`, `USER:GROUP` or `UID:GID` (`""`: the image's).
    #[arg(short, long)]
    pub user: Option<String>,
    /// The command's working directory, an absolute path (`""`: the image's).
    #[arg(short, long)]
    pub workdir: Option<String>,
    /// How this and later updates roll out.
    #[command(flatten)]
    pub update: UpdatePolicyArgs,
    /// How a rollback rolls out.
    #[command(flatten)]
    pub rollback: RollbackPolicyArgs,
    /// Replace every task even if the spec did not change (a restart, paced like an update).
    #[arg(long)]
    pub force: bool,
    /// Return once the update is accepted instead of waiting for it to converge.
    #[arg(short, long)]
    pub detach: bool,
    /// Give up waiting after this long (the update goes on).
    #[arg(long, default_value = "120s", value_parser = parse_duration)]
    pub timeout: Duration,
    #[command(flatten)]
    client: ClientOptions,
}

/// `--update-*`: the update policy, each flag changing only its own field.
#[derive(Debug, Default, Args)]
pub struct UpdatePolicyArgs {
    /// Tasks updated at once (0 = all).
    #[arg(id = "update-parallelism", long = "update-parallelism")]
    pub parallelism: Option<u64>,
    /// Wait between updated tasks.
    #[arg(id = "update-delay", long = "update-delay")]
    pub delay: Option<String>,
    /// `stop-first` or `start-first`.
    #[arg(id = "update-order", long = "update-order", value_parser = ["stop-first", "start-first"])]
    pub order: Option<String>,
    /// On too many failures: `pause`, `continue` or `rollback`.
    #[arg(id = "update-failure-action", long = "update-failure-action", value_parser = ["pause", "continue", "rollback"])]
    pub failure_action: Option<String>,
    /// How long each updated task is watched for failure.
    #[arg(id = "update-monitor", long = "update-monitor")]
    pub monitor: Option<String>,
    /// Share of updated tasks that may fail (0 to 1).
    #[arg(id = "update-max-failure-ratio", long = "update-max-failure-ratio")]
    pub max_failure_ratio: Option<f64>,
}

/// `--rollback-*`: the rollback policy, a policy of its own.
#[derive(Debug, Default, Args)]
pub struct RollbackPolicyArgs {
    /// Tasks rolled back at once (0 = all).
    #[arg(id = "rollback-parallelism", long = "rollback-parallelism")]
    pub parallelism: Option<u64>,
    /// Wait between rolled back tasks.
    #[arg(id = "rollback-delay", long = "rollback-delay")]
    pub delay: Option<String>,
    /// `stop-first` or `start-first`.
    #[arg(id = "rollback-order", long = "rollback-order", value_parser = ["stop-first", "start-first"])]
    pub order: Option<String>,
    /// On too many failures during a rollback: `pause` or `continue`.
    #[arg(id = "rollback-failure-action", long = "rollback-failure-action", value_parser = ["pause", "continue"])]
    pub failure_action: Option<String>,
    /// How long each rolled back task is watched for failure.
    #[arg(id = "rollback-monitor", long = "rollback-monitor")]
    pub monitor: Option<String>,
    /// Share of rolled back tasks that may fail (0 to 1).
    #[arg(id = "rollback-max-failure-ratio", long = "rollback-max-failure-ratio")]
    pub max_failure_ratio: Option<f64>,
}

/// The fields of one policy's flags, whichever prefix they carry.
struct PolicyFlags<'a> {
    prefix: &'a str,
    parallelism: Option<u64>,
    delay: Option<&'a str>,
    order: Option<&'a str>,
    failure_action: Option<&'a str>,
    monitor: Option<&'a str>,
    max_failure_ratio: Option<f64>,
}

impl UpdatePolicyArgs {
    fn flags(&self) -> PolicyFlags<'_> {
        PolicyFlags {
            prefix: "--update",
            parallelism: self.parallelism,
            delay: self.delay.as_deref(),
            order: self.order.as_deref(),
            failure_action: self.failure_action.as_deref(),
            monitor: self.monitor.as_deref(),
            max_failure_ratio: self.max_failure_ratio,
        }
    }
}

impl RollbackPolicyArgs {
    fn flags(&self) -> PolicyFlags<'_> {
        PolicyFlags {
            prefix: "--rollback",
            parallelism: self.parallelism,
            delay: self.delay.as_deref(),
            order: self.order.as_deref(),
            failure_action: self.failure_action.as_deref(),
            monitor: self.monitor.as_deref(),
            max_failure_ratio: self.max_failure_ratio,
        }
    }

    /// Whether any rollback flag was given.
    pub fn any(&self) -> bool {
        let f = self.flags();
        f.parallelism.is_some()
            || f.delay.is_some()
            || f.order.is_some()
            || f.failure_action.is_some()
            || f.monitor.is_some()
            || f.max_failure_ratio.is_some()
    }

    /// The rollback policy: `base` with the fields these flags name.
    pub fn apply_to(&self, base: UpdateConfig) -> anyhow::Result<UpdateConfig> {
        self.flags().apply(base)
    }
}

impl PolicyFlags<'_> {
    /// `policy` with the fields these flags name changed.
    fn apply(&self, mut policy: UpdateConfig) -> anyhow::Result<UpdateConfig> {
        let millis = |name: &str, text: &str| {
            parse::duration_ms(text).with_context(|| format!("{}-{name} {text:?}", self.prefix))
        };
        if let Some(parallelism) = self.parallelism {
            policy.parallelism = parallelism;
        }
        if let Some(delay) = self.delay {
            policy.delay_ms = millis("delay", delay)?;
        }
        if let Some(order) = self.order {
            policy.order = match order {
                "start-first" => UpdateOrder::StartFirst,
                _ => UpdateOrder::StopFirst,
            };
        }
        if let Some(action) = self.failure_action {
            policy.failure_action = match action {
                "continue" => FailureAction::Continue,
                "rollback" => FailureAction::Rollback,
                _ => FailureAction::Pause,
            };
        }
        if let Some(monitor) = self.monitor {
            policy.monitor_ms = millis("monitor", monitor)?;
        }
        if let Some(ratio) = self.max_failure_ratio {
            anyhow::ensure!(
                (0.0..=1.0).contains(&ratio),
                "{}-max-failure-ratio must be between 0 and 1, got {ratio}",
                self.prefix
            );
            policy.max_failure_permille = (ratio * 1000.0).round() as u32;
        }
        Ok(policy)
    }
}

/// The spec `current` becomes under `args`; an error names the flag whose value is bad, or
/// says that nothing would change.
pub fn updated_spec(current: &ServiceSpec, args: &UpdateArgs) -> anyhow::Result<ServiceSpec> {
    let mut spec = current.clone();
    if let Some(image) = &args.image {
        spec.image.clone_from(image);
    }
    if let Some(replicas) = args.replicas {
        anyhow::ensure!(
            spec.replicas().is_some(),
            "{} is a global service: --replicas does not apply",
            spec.name
        );
        spec.mode = ServiceMode::Replicated { replicas };
    }
    edit_env(&mut spec.env, &args.env_add, &args.env_rm)?;
    for pair in &args.label_add {
        let (key, value) = key_value("--label-add", pair)?;
        spec.labels.insert(key, value);
    }
    for key in &args.label_rm {
        spec.labels.remove(key);
    }
    edit_ports(&mut spec, &args.publish_add, &args.publish_rm)?;
    for text in &args.constraint_rm {
        let gone = parse::constraint(text).with_context(|| format!("--constraint-rm {text:?}"))?;
        spec.constraints.retain(|c| *c != gone);
    }
    for text in &args.constraint_add {
        let added =
            parse::constraint(text).with_context(|| format!("--constraint-add {text:?}"))?;
        if !spec.constraints.contains(&added) {
            spec.constraints.push(added);
        }
    }
    spec.mounts.retain(|m| !args.mount_rm.contains(&m.target));
    for text in &args.mount_add {
        let added = parse::mount(text).with_context(|| format!("--mount-add {text:?}"))?;
        spec.mounts.retain(|m| m.target != added.target);
        spec.mounts.push(added);
    }
    edit_file_refs(
        &mut spec.secrets,
        ObjectKind::Secret,
        "--secret-add",
        &args.secret_add,
        &args.secret_rm,
    )?;
    edit_file_refs(
        &mut spec.configs,
        ObjectKind::Config,
        "--config-add",
        &args.config_add,
        &args.config_rm,
    )?;
    edit_resources(&mut spec, args)?;
    let unless_empty = |v: &String| Some(v.clone()).filter(|v| !v.is_empty());
    if let Some(hostname) = &args.hostname {
        spec.hostname = unless_empty(hostname);
    }
    if let Some(user) = &args.user {
        spec.user = unless_empty(user);
    }
    if let Some(dir) = &args.workdir {
        spec.working_dir = unless_empty(dir);
    }
    if let Some(grace) = &args.stop_grace_period {
        spec.stop_grace_ms =
            parse::duration_ms(grace).with_context(|| format!("--stop-grace-period {grace:?}"))?;
    }
    spec.update = args.update.flags().apply(spec.update)?;
    spec.rollback = args.rollback.apply_to(spec.rollback)?;
    if args.force {
        spec.force_update = spec.force_update.wrapping_add(1);
    }
    anyhow::ensure!(
        spec != *current,
        "nothing to change: give a flag that changes the service, or --force to replace its tasks"
    );
    Ok(spec)
}

/// Removes the references to the names in `remove`, then adds (or replaces, by source name or
/// target) the ones in `add`.
fn edit_file_refs(
    refs: &mut Vec<FileRef>,
    kind: ObjectKind,
    flag: &str,
    add: &[String],
    remove: &[String],
) -> anyhow::Result<()> {
    for name in remove {
        let before = refs.len();
        refs.retain(|r| r.source != *name);
        anyhow::ensure!(
            refs.len() < before,
            "--{kind}-rm {name}: the service has no {kind} {name} (see `shoal service inspect`)"
        );
    }
    for added in super::spec::file_refs(kind, flag, add)? {
        refs.retain(|r| r.source != added.source && r.target != added.target);
        refs.push(added);
    }
    Ok(())
}

fn key_value(flag: &str, pair: &str) -> anyhow::Result<(String, String)> {
    match pair.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_owned(), value.to_owned())),
        _ => anyhow::bail!("{flag} {pair:?}: expected KEY=VALUE"),
    }
}

/// Environment entries are `KEY=VALUE`: an added key replaces the entry of the same key.
fn edit_env(env: &mut Vec<String>, add: &[String], remove: &[String]) -> anyhow::Result<()> {
    let key_of = |entry: &str| entry.split_once('=').map_or(entry, |(k, _)| k).to_owned();
    env.retain(|entry| !remove.contains(&key_of(entry)));
    for entry in add {
        let (key, _) = key_value("--env-add", entry)?;
        env.retain(|existing| key_of(existing) != key);
        env.push(entry.clone());
    }
    Ok(())
}

/// `--publish-rm 8080` removes the ports published on 8080 (any protocol), `8080/udp` only
/// the UDP one; an added port replaces one published on the same port and protocol.
fn edit_ports(spec: &mut ServiceSpec, add: &[String], remove: &[String]) -> anyhow::Result<()> {
    for text in remove {
        let (port, protocol) = match text.split_once('/') {
            Some((port, protocol)) => (port, Some(protocol)),
            None => (text.as_str(), None),
        };
        let port: u16 = port
            .parse()
            .with_context(|| format!("--publish-rm {text:?}: expected a port such as 8080"))?;
        spec.ports.retain(|p| {
            let same_protocol =
                protocol.is_none_or(|want| format!("{:?}", p.protocol).eq_ignore_ascii_case(want));
            !(p.published == port && same_protocol)
        });
    }
    for text in add {
        let added = parse::port(text).with_context(|| format!("--publish-add {text:?}"))?;
        spec.ports
            .retain(|p| !(p.published == added.published && p.protocol == added.protocol));
        spec.ports.push(added);
    }
    Ok(())
}

fn edit_resources(spec: &mut ServiceSpec, args: &UpdateArgs) -> anyhow::Result<()> {
    let resources = &mut spec.resources;
    let cpus =
        |flag: &str, value: &str| parse::cpus(value).with_context(|| format!("{flag} {value:?}"));
    let bytes =
        |flag: &str, value: &str| parse::size(value).with_context(|| format!("{flag} {value:?}"));
    if let Some(v) = &args.reserve_cpu {
        resources.reservations.nano_cpus = cpus("--reserve-cpu", v)?;
    }
    if let Some(v) = &args.reserve_memory {
        resources.reservations.memory_bytes = bytes("--reserve-memory", v)?;
    }
    if let Some(v) = &args.limit_cpu {
        resources.limits.nano_cpus = cpus("--limit-cpu", v)?;
    }
    if let Some(v) = &args.limit_memory {
        resources.limits.memory_bytes = bytes("--limit-memory", v)?;
    }
    Ok(())
}

/// Runs `service update`.
pub async fn update(args: UpdateArgs) -> anyhow::Result<()> {
    let client = client(&args.client);
    let service: Service = client.get(&api::service(&args.service)).await?;
    let spec = updated_spec(&service.spec, &args)?;
    let name = spec.name.clone();
    let request = UpdateServiceRequest {
        spec,
        expected_revision: service.revision,
    };
    let _: ServiceId = client
        .post(&api::service_update(&args.service), &request)
        .await?;
    println!("{name} updated to version {}", service.version + 1);
    if args.detach {
        return Ok(());
    }
    wait_converged(&args.client, &name, args.timeout, true).await
}

/// `service rollback`.
#[derive(Debug, Args)]
pub struct RollbackArgs {
    /// The service: name or id.
    pub service: String,
    /// Return once the rollback is accepted instead of waiting for it to converge.
    #[arg(short, long)]
    pub detach: bool,
    /// Give up waiting after this long (the rollback goes on).
    #[arg(long, default_value = "120s", value_parser = parse_duration)]
    pub timeout: Duration,
    #[command(flatten)]
    client: ClientOptions,
}

/// Runs `service rollback`: back to the spec before the last update, under the rollback policy.
pub async fn rollback(args: RollbackArgs) -> anyhow::Result<()> {
    let client = client(&args.client);
    let _: ServiceId = client
        .post(&api::service_rollback(&args.service), &())
        .await?;
    println!("{}: rolling back to the previous spec", args.service);
    if args.detach {
        return Ok(());
    }
    wait_converged(&args.client, &args.service, args.timeout, true).await
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Wrapper {
        #[command(flatten)]
        update: UpdateArgs,
    }

    fn args(flags: &[&str]) -> UpdateArgs {
        let argv = ["update"].iter().chain(flags).chain(&["web"]).copied();
        Wrapper::try_parse_from(argv).expect("flags parse").update
    }

    fn current() -> ServiceSpec {
        let mut spec = shoal_scheduler::synthetic::spec("web", 3);
        spec.env = vec!["A=1".into(), "B=2".into()];
        spec.ports = vec![parse::port("8080:80").expect("port")];
        spec
    }

    #[test]
    fn flags_change_only_what_they_name() {
        let spec = updated_spec(
            &current(),
            &args(&[
                "--image",
                "web:2",
                "--env-add",
                "A=9",
                "--env-rm",
                "B",
                "--label-add",
                "tier=front",
                "--publish-rm",
                "8080",
                "--publish-add",
                "9090:90",
                "--constraint-add",
                "node.labels.zone==eu",
                "--rollback-parallelism",
                "4",
            ]),
        )
        .expect("a change");
        assert_eq!(spec.image, "web:2");
        assert_eq!(spec.env, vec!["A=9".to_owned()]);
        assert_eq!(spec.labels.get("tier").map(String::as_str), Some("front"));
        assert_eq!(spec.ports.len(), 1);
        assert_eq!(spec.ports[0].published, 9090);
        assert_eq!(spec.constraints.len(), 1);
        assert_eq!(spec.rollback.parallelism, 4);
        assert_eq!(
            spec.update,
            current().update,
            "the update policy is untouched"
        );
        assert_eq!(spec.replicas(), Some(3));
    }

    #[test]
    fn nothing_to_change_is_an_error_and_force_replaces() {
        let same = updated_spec(&current(), &args(&["--image", &current().image]));
        let why = same.expect_err("no change").to_string();
        assert!(why.contains("nothing to change"), "{why}");
        let forced = updated_spec(&current(), &args(&["--force"])).expect("forced");
        assert_eq!(forced.force_update, current().force_update + 1);
    }

    #[test]
    fn bad_values_name_their_flag() {
        for (flags, flag) in [
            (&["--env-add", "novalue"][..], "--env-add"),
            (&["--publish-rm", "http"][..], "--publish-rm"),
            (&["--update-delay", "soon"][..], "--update-delay"),
            (
                &["--rollback-max-failure-ratio", "2"][..],
                "--rollback-max-failure-ratio",
            ),
            (&["--constraint-add", "zone"][..], "--constraint-add"),
        ] {
            let why = format!(
                "{:#}",
                updated_spec(&current(), &args(flags)).expect_err("bad")
            );
            assert!(why.contains(flag), "{flags:?}: {why}");
        }
    }

    #[test]
    fn secrets_rotate_by_removing_the_old_and_adding_the_new_at_its_target() {
        let mut before = current();
        before.secrets = vec![shoal_scheduler::FileRef {
            target: "/run/secrets/db".into(),
            ..shoal_scheduler::FileRef::secret("db-v1")
        }];
        before.configs = vec![shoal_scheduler::FileRef::config("site")];
        let spec = updated_spec(
            &before,
            &args(&[
                "--secret-rm",
                "db-v1",
                "--secret-add",
                "source=db-v2,target=db,mode=0440",
                "--config-rm",
                "site",
                "--config-add",
                "site-v2",
            ]),
        )
        .expect("a change");
        assert_eq!(spec.secrets.len(), 1);
        assert_eq!(spec.secrets[0].source, "db-v2");
        assert_eq!(spec.secrets[0].target, "/run/secrets/db");
        assert_eq!(spec.secrets[0].mode, 0o440);
        assert_eq!(
            spec.configs,
            vec![shoal_scheduler::FileRef::config("site-v2")]
        );
        let missing = updated_spec(&before, &args(&["--secret-rm", "nope"]))
            .expect_err("no such secret on the service");
        assert!(
            missing.to_string().contains("has no secret nope"),
            "{missing}"
        );
    }
}
