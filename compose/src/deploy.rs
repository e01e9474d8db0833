//! A service's `deploy` section: mode and replicas, placement, resources, restart, update and
//! rollback policies, labels, endpoint mode.
//!
//! Values: `cpus` is a number or a string (`0.5`, `"2"`); `memory` is bytes or a size with a
//! suffix (`512M`, `1g`, `256MiB`); durations are `10s`, `1m30s`, `500ms`, or Go's `1.5s`;
//! `max_failure_ratio` is 0 to 1. The rollback policy starts from the update policy, so a
//! `rollback_config` key that is not set is the `update_config`'s (as `shoal service create`
//! does).

use std::collections::BTreeMap;

use shoal_scheduler::parse;
use shoal_scheduler::{
    FailureAction, ResourceRequirements, Resources, ServiceMode, ServiceSpec, UpdateConfig,
    UpdateOrder,
};

use crate::convert::Ctx;
use crate::error::ComposeError;
use crate::read;
use crate::yaml::Node;

type Result<T> = std::result::Result<T, ComposeError>;

/// What `deploy` sets, on top of the spec the rest of the service built.
#[derive(Default)]
pub struct Deploy {
    /// `deploy.labels`.
    pub labels: BTreeMap<String, String>,
    /// Whether `resources` was given (it wins over the service-level `cpus`, `mem_limit`).
    pub resources: bool,
    /// Whether `restart_policy` was given (it wins over `restart`).
    pub restart: bool,
    /// Whether `replicas` was given (it wins over `scale`).
    pub replicas: bool,
}

/// Reads `deploy` into `spec`.
pub fn deploy(ctx: &mut Ctx<'_>, node: &Node, spec: &mut ServiceSpec) -> Result<Deploy> {
    let mut out = Deploy::default();
    let mut global = false;
    let mut replicas = None;
    let mut rollback = None;
    for (key, value) in read::opt_map(node, "deploy")? {
        let what = format!("deploy.{}", key.name);
        match key.name.as_str() {
            "mode" => match read::string(value, &what)?.as_str() {
                "replicated" => global = false,
                "global" => global = true,
                job @ ("replicated-job" | "global-job") => {
                    global = job == "global-job";
                    ctx.warn(
                        &value.mark,
                        &what,
                        format!("{job} is not supported: it runs as a service whose tasks are restarted by the restart policy"),
                    );
                }
                other => {
                    return Err(value
                        .mark
                        .invalid(format!("`{what}` is replicated or global, not {other:?}")));
                }
            },
            "replicas" => replicas = Some((read::uint(value, &what)?, value)),
            "labels" => {
                for (k, v) in read::key_values(value, &what)? {
                    out.labels.insert(k, v.unwrap_or_default());
                }
            }
            "placement" => placement(ctx, value, spec)?,
            "resources" => {
                spec.resources = resources(ctx, value)?;
                out.resources = true;
            }
            "restart_policy" => {
                restart_policy(ctx, value, spec)?;
                out.restart = true;
            }
            "update_config" => spec.update = update_config(ctx, value, &what, spec.update)?,
            "rollback_config" => rollback = Some(value),
            "endpoint_mode" => match read::string(value, &what)?.as_str() {
                "vip" => {}
                "dnsrr" => ctx.warn(
                    &value.mark,
                    &what,
                    "dnsrr is not supported: the service gets a virtual IP (vip)",
                ),
                other => {
                    return Err(value
                        .mark
                        .invalid(format!("`{what}` is vip or dnsrr, not {other:?}")));
                }
            },
            k if k.starts_with("x-") => {}
            other => return Err(ctx.unknown(&key.mark, "deploy", other)),
        }
    }
    // The rollback policy inherits what it does not set from the update policy.
    spec.rollback = match rollback {
        Some(node) => update_config(ctx, node, "deploy.rollback_config", spec.update)?,
        None => spec.update,
    };
    if spec.rollback.failure_action == FailureAction::Rollback && rollback.is_some() {
        return Err(rollback
            .map(|n| {
                n.mark
                    .invalid("`deploy.rollback_config.failure_action` is pause or continue")
            })
            .unwrap_or_else(|| node.mark.invalid("bad rollback_config")));
    }
    if global {
        if let Some((_, n)) = replicas {
            return Err(n
                .mark
                .invalid("`deploy.replicas` cannot be set with `deploy.mode: global`"));
        }
        spec.mode = ServiceMode::Global;
    } else if let Some((n, _)) = replicas {
        spec.mode = ServiceMode::Replicated { replicas: n };
        out.replicas = true;
    }
    Ok(out)
}

fn placement(ctx: &mut Ctx<'_>, node: &Node, spec: &mut ServiceSpec) -> Result<()> {
    for (key, value) in read::opt_map(node, "deploy.placement")? {
        let what = format!("deploy.placement.{}", key.name);
        match key.name.as_str() {
            "constraints" => {
                for item in read::seq(value, &what)? {
                    let text = read::string(item, &what)?;
                    let c = parse::constraint(&text)
                        .map_err(|e| item.mark.invalid(format!("`{what}`: {e}")))?;
                    spec.constraints.push(c);
                }
            }
            "preferences" => {
                for item in read::seq(value, &what)? {
                    for (k, v) in read::map(item, &what)? {
                        if k.name != "spread" {
                            return Err(ctx.unknown(&k.mark, &what, &k.name));
                        }
                        let label = read::string(v, &format!("{what}[].spread"))?;
                        let p = parse::preference(&format!("spread={label}"))
                            .map_err(|e| v.mark.invalid(format!("`{what}`: {e}")))?;
                        spec.preferences.push(p);
                    }
                }
            }
            "max_replicas_per_node" => spec.max_replicas_per_node = read::uint(value, &what)?,
            k if k.starts_with("x-") => {}
            other => return Err(ctx.unknown(&key.mark, "deploy.placement", other)),
        }
    }
    Ok(())
}

/// A number of CPUs, written as a number or a string.
pub fn cpus(node: &Node, what: &str) -> Result<u64> {
    let text = read::string(node, what)?;
    parse::cpus(&text).map_err(|e| node.mark.invalid(format!("`{what}`: {e}")))
}

/// A memory size: a number of bytes, or a size such as `512M` or `1g`.
pub fn memory(node: &Node, what: &str) -> Result<u64> {
    let text = read::string(node, what)?;
    parse::size(&text).map_err(|e| node.mark.invalid(format!("`{what}`: {e}")))
}

fn resources(ctx: &mut Ctx<'_>, node: &Node) -> Result<ResourceRequirements> {
    let mut out = ResourceRequirements::default();
    for (key, value) in read::opt_map(node, "deploy.resources")? {
        let what = format!("deploy.resources.{}", key.name);
        let target = match key.name.as_str() {
            "limits" => &mut out.limits,
            "reservations" => &mut out.reservations,
            k if k.starts_with("x-") => continue,
            other => return Err(ctx.unknown(&key.mark, "deploy.resources", other)),
        };
        *target = amounts(ctx, value, &what)?;
    }
    Ok(out)
}

fn amounts(ctx: &mut Ctx<'_>, node: &Node, what: &str) -> Result<Resources> {
    let mut out = Resources::default();
    for (key, value) in read::opt_map(node, what)? {
        let what = format!("{what}.{}", key.name);
        match key.name.as_str() {
            "cpus" => out.nano_cpus = cpus(value, &what)?,
            "memory" => out.memory_bytes = memory(value, &what)?,
            "pids" | "devices" | "generic_resources" => ctx.ignored(&key.mark, &what),
            k if k.starts_with("x-") => {}
            other => {
                return Err(ctx.unknown(
                    &key.mark,
                    what.rsplit_once('.').map_or("", |w| w.0),
                    other,
                ));
            }
        }
    }
    Ok(out)
}

fn restart_policy(ctx: &mut Ctx<'_>, node: &Node, spec: &mut ServiceSpec) -> Result<()> {
    for (key, value) in read::opt_map(node, "deploy.restart_policy")? {
        let what = format!("deploy.restart_policy.{}", key.name);
        match key.name.as_str() {
            "condition" => {
                let text = read::string(value, &what)?;
                spec.restart.condition = parse::restart_condition(&text)
                    .map_err(|e| value.mark.invalid(format!("`{what}`: {e}")))?;
            }
            "delay" => spec.restart.delay_ms = read::duration_ms(value, &what)?,
            "max_attempts" => spec.restart.max_attempts = read::uint(value, &what)?,
            "window" => spec.restart.window_ms = read::duration_ms(value, &what)?,
            k if k.starts_with("x-") => {}
            other => return Err(ctx.unknown(&key.mark, "deploy.restart_policy", other)),
        }
    }
    Ok(())
}

fn update_config(
    ctx: &mut Ctx<'_>,
    node: &Node,
    what: &str,
    mut out: UpdateConfig,
) -> Result<UpdateConfig> {
    for (key, value) in read::opt_map(node, what)? {
        let what = format!("{what}.{}", key.name);
        match key.name.as_str() {
            "parallelism" => out.parallelism = read::uint(value, &what)?,
            "delay" => out.delay_ms = read::duration_ms(value, &what)?,
            "monitor" => out.monitor_ms = read::duration_ms(value, &what)?,
            "failure_action" => {
                out.failure_action = match read::string(value, &what)?.as_str() {
                    "pause" => FailureAction::Pause,
                    "continue" => FailureAction::Continue,
                    "rollback" => FailureAction::Rollback,
                    other => {
                        return Err(value.mark.invalid(format!(
                            "`{what}` is pause, continue or rollback, not {other:?}"
                        )));
                    }
                }
            }
            "order" => {
                out.order = match read::string(value, &what)?.as_str() {
                    "stop-first" => UpdateOrder::StopFirst,
                    "start-first" => UpdateOrder::StartFirst,
                    other => {
                        return Err(value.mark.invalid(format!(
                            "`{what}` is stop-first or start-first, not {other:?}"
                        )));
                    }
                }
            }
            "max_failure_ratio" => {
                let ratio = read::float(value, &what)?;
                if !(0.0..=1.0).contains(&ratio) {
                    return Err(value
                        .mark
                        .invalid(format!("`{what}` must be between 0 and 1, not {ratio}")));
                }
                out.max_failure_permille = (ratio * 1000.0).round() as u32;
            }
            k if k.starts_with("x-") => {}
            other => {
                let parent = what.rsplit_once('.').map_or("", |w| w.0).to_string();
                return Err(ctx.unknown(&key.mark, &parent, other));
            }
        }
    }
    Ok(out)
}
