//! The merged, interpolated tree into a [`Stack`]: the top-level objects first (so services can
//! be checked against them), then each service into a shoal [`ServiceSpec`].
//!
//! Every key of a service is handled in exactly one arm of [`service`]: mapped to shoal, kept in
//! the [`StackService`] for the deployer, accepted as a no-op (`expose`: every port of a task is
//! reachable on the service network), a warning (valid Compose that shoal does not do), or an
//! error (not a Compose key at all). Keys starting with `x-` are extensions and are skipped
//! everywhere.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use shoal_scheduler::secrets::FileRef;
use shoal_scheduler::{
    ResourceRequirements, RestartCondition, RestartPolicy, ServiceMode, ServiceSpec,
};

use crate::deploy;
use crate::env::{Environment, parse_env_file};
use crate::error::{ComposeError, Location};
use crate::health;
use crate::model::{
    Condition, Dependency, FileMount, FileObject, FileSource, Network, STACK_NAMESPACE_LABEL,
    Stack, StackService, Volume,
};
use crate::mounts::{self, join_clean};
use crate::ports;
use crate::read;
use crate::warnings::Warnings;
use crate::yaml::{Mark, Node};

type Result<T> = std::result::Result<T, ComposeError>;

/// Service keys that are valid Compose but that shoal does not apply: each is a warning.
const UNSUPPORTED_SERVICE_KEYS: &[&str] = &[
    "annotations",
    "attach",
    "blkio_config",
    "cap_add",
    "cap_drop",
    "cgroup",
    "cgroup_parent",
    "container_name",
    "cpu_count",
    "cpu_percent",
    "cpu_period",
    "cpu_quota",
    "cpu_rt_period",
    "cpu_rt_runtime",
    "cpu_shares",
    "cpuset",
    "credential_spec",
    "develop",
    "device_cgroup_rules",
    "devices",
    "dns",
    "dns_opt",
    "dns_search",
    "domainname",
    "extends",
    "external_links",
    "extra_hosts",
    "gpus",
    "group_add",
    "init",
    "ipc",
    "isolation",
    "label_file",
    "links",
    "logging",
    "mac_address",
    "memswap_limit",
    "mem_swappiness",
    "models",
    "oom_kill_disable",
    "oom_score_adj",
    "pid",
    "pids_limit",
    "platform",
    "post_start",
    "pre_stop",
    "privileged",
    "profiles",
    "provider",
    "pull_policy",
    "read_only",
    "runtime",
    "security_opt",
    "shm_size",
    "stdin_open",
    "stop_signal",
    "storage_opt",
    "sysctls",
    "tty",
    "ulimits",
    "use_api_socket",
    "userns_mode",
    "uts",
    "volumes_from",
];

/// What the readers share while one stack is converted.
pub struct Ctx<'a> {
    /// The stack's name.
    pub stack: &'a str,
    /// Relative paths are resolved against it: the first file's directory.
    pub project_dir: &'a Path,
    /// Variables for `environment` entries without a value and for `~`.
    pub env: &'a Environment,
    /// The service being read, for warnings and errors.
    pub service: Option<String>,
    /// Warnings so far.
    warnings: Warnings,
    volumes: BTreeMap<String, Volume>,
    service_names: BTreeSet<String>,
}

impl Ctx<'_> {
    /// A warning about `key` in the current service.
    pub fn warn(&mut self, mark: &Mark, key: &str, message: impl Into<String>) {
        self.warnings
            .add(mark, self.service.as_deref(), key, message);
    }

    /// A warning that `key` is not supported and ignored.
    pub fn ignored(&mut self, mark: &Mark, key: &str) {
        self.warnings.ignored(mark, self.service.as_deref(), key);
    }

    /// The error for a key that Compose does not have.
    pub fn unknown(&self, mark: &Mark, parent: &str, key: &str) -> ComposeError {
        let place = match (&self.service, parent) {
            (Some(s), "") => format!("in service {s:?}"),
            (Some(s), p) => format!("in `{p}` of service {s:?}"),
            (None, "") => "at the top level".to_string(),
            (None, p) => format!("in `{p}`"),
        };
        mark.invalid(format!(
            "unknown key `{key}` {place}: not a Compose key (extensions start with `x-`)"
        ))
    }

    /// A bind source on the host: relative to the project directory, `~` to `HOME`.
    pub fn host_path(&self, source: &str) -> String {
        let path = if let Some(rest) = source.strip_prefix('~') {
            let home = self.env.get("HOME").unwrap_or("/");
            join_clean(Path::new(home), rest.trim_start_matches('/'))
        } else {
            join_clean(self.project_dir, source)
        };
        path.display().to_string()
    }

    /// The cluster name of the stack volume `name`, which must be declared at the top level.
    pub fn volume_name(&self, node: &Node, name: &str) -> Result<String> {
        match self.volumes.get(name) {
            Some(v) => Ok(v.name.clone()),
            None => Err(node.mark.invalid(format!(
                "service {:?} uses volume {name:?}, which is not declared under the top-level `volumes`",
                self.service.as_deref().unwrap_or("")
            ))),
        }
    }

    fn check_dependency(&self, node: &Node, service: &str) -> Result<()> {
        if self.service_names.contains(service) {
            return Ok(());
        }
        Err(node.mark.invalid(format!(
            "service {:?} depends on {service:?}, which is not a service of this stack",
            self.service.as_deref().unwrap_or("")
        )))
    }

    fn scoped(&self, name: &str) -> String {
        format!("{}_{name}", self.stack)
    }
}

/// Converts a merged, interpolated root into a stack.
pub fn stack(
    stack_name: &str,
    root: &Node,
    project_dir: &Path,
    env: &Environment,
) -> Result<Stack> {
    let entries = root.as_map().ok_or_else(|| {
        root.mark.invalid(format!(
            "not a Compose file: the top level must be a mapping with a `services` key, not {}",
            root.kind()
        ))
    })?;
    let mut ctx = Ctx {
        stack: stack_name,
        project_dir,
        env,
        service: None,
        warnings: Warnings::default(),
        volumes: BTreeMap::new(),
        service_names: BTreeSet::new(),
    };
    let mut out = Stack {
        name: stack_name.to_string(),
        services: Vec::new(),
        secrets: BTreeMap::new(),
        configs: BTreeMap::new(),
        volumes: BTreeMap::new(),
        networks: BTreeMap::new(),
        warnings: Vec::new(),
    };
    let mut services = None;
    for (key, value) in entries {
        match key.name.as_str() {
            "version" | "name" => {}
            "services" => services = Some((key, value)),
            "volumes" => {
                for (k, v) in read::opt_map(value, "volumes")? {
                    out.volumes
                        .insert(k.name.clone(), volume(&mut ctx, &k.name, v)?);
                }
            }
            "networks" => {
                for (k, v) in read::opt_map(value, "networks")? {
                    out.networks
                        .insert(k.name.clone(), network(&mut ctx, &k.name, v)?);
                }
            }
            "secrets" => {
                for (k, v) in read::opt_map(value, "secrets")? {
                    out.secrets.insert(
                        k.name.clone(),
                        file_object(&mut ctx, "secrets", &k.name, v)?,
                    );
                }
            }
            "configs" => {
                for (k, v) in read::opt_map(value, "configs")? {
                    out.configs.insert(
                        k.name.clone(),
                        file_object(&mut ctx, "configs", &k.name, v)?,
                    );
                }
            }
            "include" => ctx.ignored(&key.mark, "include"),
            "models" => ctx.ignored(&key.mark, "models"),
            k if k.starts_with("x-") => {}
            other => return Err(ctx.unknown(&key.mark, "", other)),
        }
    }
    ctx.volumes = out.volumes.clone();
    let Some((services_key, services)) = services else {
        return Err(root
            .mark
            .invalid("not a Compose file: there is no `services` key at the top level"));
    };
    let services = read::map(services, "services")?;
    if services.is_empty() {
        return Err(services_key.mark.invalid("`services` is empty"));
    }
    ctx.service_names = services.iter().map(|(k, _)| k.name.clone()).collect();
    for (key, value) in services {
        check_service_name(&key.name, &key.mark)?;
        ctx.service = Some(key.name.clone());
        let s = service(&mut ctx, &out, &key.name, value)?;
        shoal_scheduler::apply::service::validate(&s.spec).map_err(|e| {
            key.mark.invalid(format!(
                "service {:?} is not valid for shoal: {e}",
                key.name
            ))
        })?;
        out.services.push(s);
    }
    ctx.service = None;
    out.services.sort_by(|a, b| a.name.cmp(&b.name));
    crate::depends::start_order(&out)?;
    out.warnings = ctx.warnings.list;
    Ok(out)
}

fn check_service_name(name: &str, mark: &Mark) -> Result<()> {
    let ok = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(mark.invalid(format!(
            "service name {name:?} must be letters, digits, '-', '_' or '.', starting with a letter or digit"
        )))
    }
}

fn labels(node: &Node, what: &str) -> Result<BTreeMap<String, String>> {
    Ok(read::key_values(node, what)?
        .into_iter()
        .map(|(k, v)| (k, v.unwrap_or_default()))
        .collect())
}

/// `external: true` (or the legacy `external: {name: x}`): the external name, if external.
fn external(node: &Node, what: &str, fallback: &str) -> Result<Option<String>> {
    if node.as_map().is_some() {
        let name = node
            .get("name")
            .map(|n| read::string(n, what))
            .transpose()?;
        return Ok(Some(name.unwrap_or_else(|| fallback.to_string())));
    }
    Ok(read::boolean(node, what)?.then(|| fallback.to_string()))
}

fn volume(ctx: &mut Ctx<'_>, name: &str, node: &Node) -> Result<Volume> {
    let mut out = Volume {
        name: ctx.scoped(name),
        external: false,
        driver: None,
        driver_opts: BTreeMap::new(),
        labels: BTreeMap::new(),
    };
    let mut own_name = None;
    let mut external_name = None;
    for (key, value) in read::opt_map(node, &format!("volumes.{name}"))? {
        let what = format!("volumes.{name}.{}", key.name);
        match key.name.as_str() {
            "name" => own_name = Some(read::string(value, &what)?),
            "external" => {
                external_name = external(value, &what, name)?;
                out.external = external_name.is_some();
            }
            "driver" => out.driver = read::opt_string(value, &what)?,
            "driver_opts" => out.driver_opts = labels(value, &what)?,
            "labels" => out.labels = labels(value, &what)?,
            k if k.starts_with("x-") => {}
            other => return Err(ctx.unknown(&key.mark, &format!("volumes.{name}"), other)),
        }
    }
    out.name = object_name(out.name, name, own_name, external_name, out.external);
    Ok(out)
}

/// The cluster's name of a top-level object called `name` in the file: an external one's is its
/// own `name:`, else the name its `external:` gives, else `name`; a stack's own is its `name:`,
/// else `scoped` (`STACK_NAME`).
fn object_name(
    scoped: String,
    name: &str,
    own_name: Option<String>,
    external_name: Option<String>,
    external: bool,
) -> String {
    if external {
        own_name
            .or(external_name)
            .unwrap_or_else(|| name.to_string())
    } else {
        own_name.unwrap_or(scoped)
    }
}

fn network(ctx: &mut Ctx<'_>, name: &str, node: &Node) -> Result<Network> {
    let mut out = Network {
        name: ctx.scoped(name),
        external: false,
        driver: None,
        internal: false,
        attachable: false,
        labels: BTreeMap::new(),
    };
    let mut own_name = None;
    let mut external_name = None;
    for (key, value) in read::opt_map(node, &format!("networks.{name}"))? {
        let what = format!("networks.{name}.{}", key.name);
        match key.name.as_str() {
            "name" => own_name = Some(read::string(value, &what)?),
            "external" => {
                external_name = external(value, &what, name)?;
                out.external = external_name.is_some();
            }
            "driver" => {
                out.driver = read::opt_string(value, &what)?;
                if out.driver.as_deref().is_some_and(|d| d != "overlay") {
                    ctx.warn(
                        &value.mark,
                        &what,
                        "is not supported: services of the stack share shoal's service network",
                    );
                }
            }
            "internal" => out.internal = read::boolean(value, &what)?,
            "attachable" => out.attachable = read::boolean(value, &what)?,
            "labels" => out.labels = labels(value, &what)?,
            "driver_opts" | "ipam" | "enable_ipv4" | "enable_ipv6" => {
                ctx.ignored(&key.mark, &what);
            }
            k if k.starts_with("x-") => {}
            other => return Err(ctx.unknown(&key.mark, &format!("networks.{name}"), other)),
        }
    }
    out.name = object_name(out.name, name, own_name, external_name, out.external);
    Ok(out)
}

fn file_object(ctx: &mut Ctx<'_>, kind: &str, name: &str, node: &Node) -> Result<FileObject> {
    let mut source = None;
    let mut own_name = None;
    let mut external_name = None;
    let mut labels_out = BTreeMap::new();
    let mut set = |s: FileSource, mark: &Mark| -> Result<()> {
        if source.replace(s).is_some() {
            return Err(mark.invalid(format!(
                "`{kind}.{name}` takes one of file, external, environment{}",
                if kind == "configs" { " or content" } else { "" }
            )));
        }
        Ok(())
    };
    for (key, value) in read::map(node, &format!("{kind}.{name}"))? {
        let what = format!("{kind}.{name}.{}", key.name);
        match key.name.as_str() {
            "file" => {
                let file = read::string(value, &what)?;
                set(
                    FileSource::File(join_clean(ctx.project_dir, &file)),
                    &key.mark,
                )?;
            }
            "external" => {
                if let Some(n) = external(value, &what, name)? {
                    set(FileSource::External, &key.mark)?;
                    external_name = Some(n);
                }
            }
            "environment" => set(
                FileSource::Environment(read::string(value, &what)?),
                &key.mark,
            )?,
            "content" if kind == "configs" => {
                set(FileSource::Content(read::string(value, &what)?), &key.mark)?;
            }
            "name" => own_name = Some(read::string(value, &what)?),
            "labels" => labels_out = labels(value, &what)?,
            "driver" | "driver_opts" | "template_driver" => ctx.ignored(&key.mark, &what),
            k if k.starts_with("x-") => {}
            other => return Err(ctx.unknown(&key.mark, &format!("{kind}.{name}"), other)),
        }
    }
    let Some(source) = source else {
        return Err(node.mark.invalid(format!(
            "`{kind}.{name}` needs one of file, external, environment{}",
            if kind == "configs" { " or content" } else { "" }
        )));
    };
    let external = source == FileSource::External;
    Ok(FileObject {
        name: object_name(ctx.scoped(name), name, own_name, external_name, external),
        source,
        labels: labels_out,
    })
}

/// A fresh spec with Compose's defaults (one replica, restart on any exit, Docker's 10 s stop
/// grace, shoal's default update policy).
fn default_spec(name: String) -> ServiceSpec {
    ServiceSpec::new(name, String::new())
}

/// Service-level settings that `deploy` overrides when it sets the same thing.
#[derive(Default)]
struct Fallbacks {
    restart: Option<RestartPolicy>,
    replicas: Option<u64>,
    resources: ResourceRequirements,
}

fn service(ctx: &mut Ctx<'_>, stack: &Stack, name: &str, node: &Node) -> Result<StackService> {
    let entries = read::map(node, &format!("services.{name}"))?;
    let mut spec = default_spec(ctx.scoped(name));
    let mut out = StackService {
        name: name.to_string(),
        spec: default_spec(String::new()),
        depends_on: Vec::new(),
        secrets: Vec::new(),
        configs: Vec::new(),
        networks: Vec::new(),
    };
    let mut env_files: Vec<(String, bool, Mark)> = Vec::new();
    let mut environment: Vec<(String, Option<String>)> = Vec::new();
    let mut labels_out = BTreeMap::new();
    let mut fallbacks = Fallbacks::default();
    let mut deployed = deploy::Deploy::default();
    let mut image_mark = None;
    let mut build = None;
    for (key, value) in entries {
        let k = key.name.as_str();
        match k {
            "image" => {
                spec.image = read::string(value, k)?;
                image_mark = Some(value.mark.clone());
            }
            "command" => spec.args = read::command(value, k)?,
            "entrypoint" => spec.command = read::command(value, k)?,
            "environment" => environment.extend(read::key_values(value, k)?),
            "env_file" => env_files = env_file_list(value)?,
            "labels" => labels_out.extend(labels(value, k)?),
            "ports" => {
                for item in read::seq(value, k)? {
                    spec.ports.extend(ports::port(ctx, item)?);
                }
            }
            "expose" => {}
            "volumes" => {
                for item in read::seq(value, k)? {
                    spec.mounts.push(mounts::volume(ctx, item)?);
                }
            }
            "tmpfs" => {
                let items = match &value.value {
                    crate::yaml::Value::Seq(items) => items.iter().collect::<Vec<_>>(),
                    _ => vec![value],
                };
                for item in items {
                    spec.mounts.push(mounts::tmpfs(ctx, item)?);
                }
            }
            "secrets" => {
                (out.secrets, spec.secrets) = file_mounts(ctx, value, "secrets", &stack.secrets)?;
            }
            "configs" => {
                (out.configs, spec.configs) = file_mounts(ctx, value, "configs", &stack.configs)?;
            }
            "healthcheck" => spec.health = health::healthcheck(ctx, value)?,
            "hostname" => spec.hostname = read::opt_string(value, k)?,
            "user" => spec.user = read::opt_string(value, k)?,
            "working_dir" => spec.working_dir = read::opt_string(value, k)?,
            "deploy" => deployed = deploy::deploy(ctx, value, &mut spec)?,
            "depends_on" => out.depends_on = depends_on(ctx, value)?,
            "networks" => out.networks = service_networks(ctx, value, &stack.networks)?,
            "network_mode" => {
                let mode = read::string(value, k)?;
                ctx.warn(
                    &key.mark,
                    k,
                    format!("{mode:?} is not supported: the service is on shoal's service network"),
                );
            }
            "stop_grace_period" => spec.stop_grace_ms = read::duration_ms(value, k)?,
            "restart" => fallbacks.restart = Some(restart(value)?),
            "scale" => fallbacks.replicas = Some(read::uint(value, k)?),
            "cpus" => fallbacks.resources.limits.nano_cpus = deploy::cpus(value, k)?,
            "mem_limit" => fallbacks.resources.limits.memory_bytes = deploy::memory(value, k)?,
            "mem_reservation" => {
                fallbacks.resources.reservations.memory_bytes = deploy::memory(value, k)?;
            }
            "build" => build = Some(key.mark.clone()),
            k if k.starts_with("x-") => {}
            k if UNSUPPORTED_SERVICE_KEYS.contains(&k) => ctx.ignored(&key.mark, k),
            other => return Err(ctx.unknown(&key.mark, "", other)),
        }
    }
    if let Some(mark) = build {
        if image_mark.is_none() {
            return Err(mark.invalid(format!(
                "service {name:?} has `build` and no `image`: shoal does not build images (build and push it, then name it in `image`)"
            )));
        }
        ctx.warn(
            &mark,
            "build",
            "is not supported: the `image` is run as it is",
        );
    }
    if spec.image.is_empty() {
        return Err(node
            .mark
            .invalid(format!("service {name:?} has no `image`")));
    }
    if !deployed.resources {
        spec.resources = fallbacks.resources;
    }
    if !deployed.restart
        && let Some(r) = fallbacks.restart
    {
        spec.restart = r;
    }
    if !deployed.replicas
        && let (Some(n), ServiceMode::Replicated { .. }) = (fallbacks.replicas, spec.mode)
    {
        spec.mode = ServiceMode::Replicated { replicas: n };
    }
    spec.env = service_env(ctx, env_files, environment)?;
    labels_out.extend(deployed.labels);
    labels_out.insert(STACK_NAMESPACE_LABEL.to_string(), ctx.stack.to_string());
    spec.labels = labels_out;
    out.spec = spec;
    Ok(out)
}

/// `restart: no | always | on-failure[:N] | unless-stopped`.
fn restart(node: &Node) -> Result<RestartPolicy> {
    let text = read::string(node, "restart")?;
    let (condition, max) = match text.split_once(':') {
        Some(("on-failure", n)) => (
            RestartCondition::OnFailure,
            n.parse().map_err(|_| {
                node.mark
                    .invalid(format!("`restart`: on-failure:N takes a number, not {n:?}"))
            })?,
        ),
        _ => match text.as_str() {
            "no" | "false" => (RestartCondition::None, 0),
            "always" | "unless-stopped" => (RestartCondition::Any, 0),
            "on-failure" => (RestartCondition::OnFailure, 0),
            other => {
                return Err(node.mark.invalid(format!(
                    "`restart` is no, always, on-failure[:N] or unless-stopped, not {other:?}"
                )));
            }
        },
    };
    Ok(RestartPolicy {
        condition,
        max_attempts: max,
        ..RestartPolicy::default()
    })
}

/// `env_file`: a path, a list of paths, or a list of `{path, required}`.
fn env_file_list(node: &Node) -> Result<Vec<(String, bool, Mark)>> {
    let items: Vec<&Node> = match &node.value {
        crate::yaml::Value::Seq(items) => items.iter().collect(),
        _ => vec![node],
    };
    items
        .into_iter()
        .map(|item| {
            if item.as_map().is_some() {
                let path = item
                    .get("path")
                    .ok_or_else(|| item.mark.invalid("an `env_file` entry needs `path`"))?;
                let required = item
                    .get("required")
                    .map(|r| read::boolean(r, "env_file[].required"))
                    .transpose()?
                    .unwrap_or(true);
                if let Some((k, _)) = item.as_map().and_then(|m| {
                    m.iter()
                        .find(|(k, _)| !matches!(k.name.as_str(), "path" | "required" | "format"))
                }) {
                    return Err(k
                        .mark
                        .invalid(format!("unknown key `{}` in `env_file`", k.name)));
                }
                Ok((
                    read::string(path, "env_file[].path")?,
                    required,
                    item.mark.clone(),
                ))
            } else {
                Ok((read::string(item, "env_file")?, true, item.mark.clone()))
            }
        })
        .collect()
}

/// The env of a service: its env files in order, then `environment` over them. An entry with
/// no value takes the variable from the environment, or is left out when that has none.
fn service_env(
    ctx: &Ctx<'_>,
    env_files: Vec<(String, bool, Mark)>,
    environment: Vec<(String, Option<String>)>,
) -> Result<Vec<String>> {
    let mut vars: Vec<(String, String)> = Vec::new();
    fn put(vars: &mut Vec<(String, String)>, k: String, v: String) {
        vars.retain(|(name, _)| *name != k);
        vars.push((k, v));
    }
    for (file, required, mark) in env_files {
        let path: PathBuf = join_clean(ctx.project_dir, &file);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => continue,
            Err(source) => return Err(ComposeError::Io { path, source }),
        };
        let parsed =
            parse_env_file(&text, ctx.env).map_err(|(line, message)| ComposeError::Invalid {
                at: Location {
                    file: path.display().to_string(),
                    line,
                    column: 1,
                },
                message: format!("{message} (env_file named at {mark})"),
            })?;
        for (k, v) in parsed {
            put(&mut vars, k, v);
        }
    }
    for (k, v) in environment {
        match v.or_else(|| ctx.env.get(&k).map(str::to_string)) {
            Some(v) => put(&mut vars, k, v),
            None => vars.retain(|(name, _)| *name != k),
        }
    }
    Ok(vars.into_iter().map(|(k, v)| format!("{k}={v}")).collect())
}

/// A service's `secrets` or `configs`: short (`- name`) or long (`source`, `target`, `uid`,
/// `gid`, `mode`); as the file says them, and as the spec's references to the cluster's
/// objects (named as the stack names them, with numeric owners).
fn file_mounts(
    ctx: &mut Ctx<'_>,
    node: &Node,
    kind: &str,
    declared: &BTreeMap<String, FileObject>,
) -> Result<(Vec<FileMount>, Vec<FileRef>)> {
    let mut out = Vec::new();
    let mut refs = Vec::new();
    for item in read::seq(node, kind)? {
        let (source, mut m) = if item.as_map().is_some() {
            let source = item.get("source").ok_or_else(|| {
                item.mark
                    .invalid(format!("a `{kind}` entry needs `source`"))
            })?;
            let source = read::string(source, &format!("{kind}[].source"))?;
            let mut m = FileMount {
                source: source.clone(),
                target: String::new(),
                uid: "0".into(),
                gid: "0".into(),
                mode: 0o444,
            };
            for (key, value) in read::map(item, kind)? {
                let what = format!("{kind}[].{}", key.name);
                match key.name.as_str() {
                    "source" => {}
                    "target" => m.target = read::string(value, &what)?,
                    "uid" => m.uid = read::string(value, &what)?,
                    "gid" => m.gid = read::string(value, &what)?,
                    "mode" => m.mode = read::mode(value, &what)?,
                    k if k.starts_with("x-") => {}
                    other => return Err(ctx.unknown(&key.mark, kind, other)),
                }
            }
            (source, m)
        } else {
            let source = read::string(item, &format!("{kind}[]"))?;
            let m = FileMount {
                source: source.clone(),
                target: String::new(),
                uid: "0".into(),
                gid: "0".into(),
                mode: 0o444,
            };
            (source, m)
        };
        let Some(object) = declared.get(&source) else {
            return Err(item.mark.invalid(format!(
                "service {:?} uses {} {source:?}, which is not declared under the top-level `{kind}`",
                ctx.service.as_deref().unwrap_or(""),
                &kind[..kind.len() - 1]
            )));
        };
        m.target = match (kind, m.target.as_str()) {
            ("secrets", "") => format!("/run/secrets/{source}"),
            ("secrets", t) if !t.starts_with('/') => format!("/run/secrets/{t}"),
            (_, "") => format!("/{source}"),
            (_, t) if !t.starts_with('/') => format!("/{t}"),
            (_, t) => t.to_string(),
        };
        let id = |text: &str, what: &str| {
            text.parse::<u32>().map_err(|_| {
                item.mark.invalid(format!(
                    "{kind}[].{what} {text:?} must be a numeric id (shoal does not look names up in the image)"
                ))
            })
        };
        refs.push(FileRef {
            source: object.name.clone(),
            target: m.target.clone(),
            uid: id(&m.uid, "uid")?,
            gid: id(&m.gid, "gid")?,
            mode: m.mode,
        });
        out.push(m);
    }
    Ok((out, refs))
}

/// `depends_on`: a list of names (condition `service_started`) or a mapping of names to
/// `{condition, required, restart}`.
fn depends_on(ctx: &mut Ctx<'_>, node: &Node) -> Result<Vec<Dependency>> {
    let mut out = Vec::new();
    if let crate::yaml::Value::Seq(items) = &node.value {
        for item in items {
            let service = read::string(item, "depends_on[]")?;
            ctx.check_dependency(item, &service)?;
            out.push(Dependency {
                service,
                condition: Condition::Started,
                required: true,
            });
        }
        return Ok(out);
    }
    for (name, value) in read::map(node, "depends_on")? {
        let mut d = Dependency {
            service: name.name.clone(),
            condition: Condition::Started,
            required: true,
        };
        for (key, v) in read::opt_map(value, "depends_on")? {
            let what = format!("depends_on.{}.{}", name.name, key.name);
            match key.name.as_str() {
                "condition" => {
                    d.condition = match read::string(v, &what)?.as_str() {
                        "service_started" => Condition::Started,
                        "service_healthy" => Condition::Healthy,
                        "service_completed_successfully" => Condition::CompletedSuccessfully,
                        other => {
                            return Err(v.mark.invalid(format!(
                                "`{what}` is service_started, service_healthy or service_completed_successfully, not {other:?}"
                            )));
                        }
                    }
                }
                "required" => d.required = read::boolean(v, &what)?,
                "restart" => {
                    if read::boolean(v, &what)? {
                        ctx.warn(
                            &key.mark,
                            &what,
                            "is not supported: dependents are not restarted when this service is updated",
                        );
                    }
                }
                k if k.starts_with("x-") => {}
                other => {
                    return Err(ctx.unknown(
                        &key.mark,
                        &format!("depends_on.{}", name.name),
                        other,
                    ));
                }
            }
        }
        if d.required {
            ctx.check_dependency(value, &d.service)?;
            out.push(d);
        } else if ctx.service_names.contains(&d.service) {
            out.push(d);
        }
    }
    Ok(out)
}

/// A service's `networks`: a list of names or a mapping of names to options.
fn service_networks(
    ctx: &mut Ctx<'_>,
    node: &Node,
    declared: &BTreeMap<String, Network>,
) -> Result<Vec<String>> {
    let names: Vec<(String, &Node)> = match &node.value {
        crate::yaml::Value::Seq(items) => items
            .iter()
            .map(|i| Ok((read::string(i, "networks[]")?, i)))
            .collect::<Result<_>>()?,
        _ => {
            let mut names = Vec::new();
            for (k, v) in read::map(node, "networks")? {
                for (option, _) in read::opt_map(v, &format!("networks.{}", k.name))? {
                    let what = format!("networks.{}.{}", k.name, option.name);
                    match option.name.as_str() {
                        "aliases" => ctx.warn(
                            &option.mark,
                            &what,
                            "is not supported: the service is reached by its name only",
                        ),
                        "ipv4_address" | "ipv6_address" | "link_local_ips" | "mac_address"
                        | "driver_opts" | "priority" | "gw_priority" | "interface_name" => {
                            ctx.ignored(&option.mark, &what);
                        }
                        o if o.starts_with("x-") => {}
                        other => {
                            return Err(ctx.unknown(
                                &option.mark,
                                &format!("networks.{}", k.name),
                                other,
                            ));
                        }
                    }
                }
                names.push((k.name.clone(), v));
            }
            names
        }
    };
    names
        .into_iter()
        .map(|(name, n)| {
            if name == "default" || declared.contains_key(&name) {
                Ok(name)
            } else {
                Err(n.mark.invalid(format!(
                    "service {:?} uses network {name:?}, which is not declared under the top-level `networks`",
                    ctx.service.as_deref().unwrap_or("")
                )))
            }
        })
        .collect()
}
