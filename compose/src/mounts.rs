//! A service's `volumes` (short and long form) and `tmpfs` into shoal [`MountSpec`]s.
//!
//! Short: `name:/path[:ro]` (a volume declared at the top level), `./dir:/path`, `../dir:/path`,
//! `~/dir:/path`, `/abs:/path[:ro]` (binds), `/path` (an anonymous volume). Long: `type`
//! (`volume`, `bind`, `tmpfs`), `source`, `target`, `read_only`, and the per-type options.
//!
//! A relative bind source is resolved against the project directory (the first file's), `~`
//! against `HOME`. A named volume's source becomes the volume's name in the cluster
//! (`STACK_NAME` unless external or named). Options shoal's mounts cannot carry (SELinux
//! relabelling, propagation, `nocopy`, `subpath`, tmpfs size and mode) are warnings.

use std::path::{Component, Path, PathBuf};

use shoal_scheduler::{MountKind, MountSpec};

use crate::convert::Ctx;
use crate::error::ComposeError;
use crate::read;
use crate::yaml::{Node, Value};

type Result<T> = std::result::Result<T, ComposeError>;

/// One `volumes` entry.
pub fn volume(ctx: &mut Ctx<'_>, node: &Node) -> Result<MountSpec> {
    match &node.value {
        Value::Map(_) => long(ctx, node),
        _ => short(ctx, node),
    }
}

/// One `tmpfs` path (`/run` or `/run:size=64m`).
pub fn tmpfs(ctx: &mut Ctx<'_>, node: &Node) -> Result<MountSpec> {
    let text = read::string(node, "tmpfs[]")?;
    let (target, options) = text.split_once(':').unwrap_or((&text, ""));
    if !options.is_empty() {
        ctx.warn(
            &node.mark,
            "tmpfs",
            format!("options {options:?} are not supported: the tmpfs has the engine's defaults"),
        );
    }
    check_target(node, target)?;
    Ok(MountSpec {
        kind: MountKind::Tmpfs,
        source: String::new(),
        target: target.to_string(),
        read_only: false,
    })
}

fn check_target(node: &Node, target: &str) -> Result<()> {
    if target.starts_with('/') {
        Ok(())
    } else {
        Err(node.mark.invalid(format!(
            "a mount's target must be an absolute path in the container, not {target:?}"
        )))
    }
}

fn is_path(source: &str) -> bool {
    source.starts_with('/') || source.starts_with('.') || source.starts_with('~')
}

fn short(ctx: &mut Ctx<'_>, node: &Node) -> Result<MountSpec> {
    let text = read::string(node, "volumes[]")?;
    let parts: Vec<&str> = text.split(':').collect();
    let (source, target, options) = match parts.as_slice() {
        [target] => ("", *target, ""),
        [source, target] => (*source, *target, ""),
        [source, target, options] => (*source, *target, *options),
        _ => {
            return Err(node.mark.invalid(format!(
                "invalid volume {text:?}: expected SOURCE:TARGET[:OPTIONS] or TARGET"
            )));
        }
    };
    check_target(node, target)?;
    let mut read_only = false;
    for option in options.split(',').filter(|o| !o.is_empty()) {
        match option {
            "ro" => read_only = true,
            "rw" | "cached" | "delegated" | "consistent" => {}
            "z" | "Z" => ctx.warn(
                &node.mark,
                "volumes",
                format!("{text:?}: SELinux relabelling ({option}) is not supported"),
            ),
            "nocopy" => ctx.warn(
                &node.mark,
                "volumes",
                format!("{text:?}: nocopy is not supported: a new volume is filled from the image"),
            ),
            "shared" | "rshared" | "slave" | "rslave" | "private" | "rprivate" => ctx.warn(
                &node.mark,
                "volumes",
                format!("{text:?}: bind propagation {option} is not supported"),
            ),
            other => {
                return Err(node.mark.invalid(format!(
                    "invalid volume {text:?}: unknown option {other:?} (expected ro, rw, z, Z, nocopy, ...)"
                )));
            }
        }
    }
    let (kind, source) = if source.is_empty() {
        (MountKind::Volume, String::new())
    } else if is_path(source) {
        (MountKind::Bind, ctx.host_path(source))
    } else {
        (MountKind::Volume, ctx.volume_name(node, source)?)
    };
    Ok(MountSpec {
        kind,
        source,
        target: target.to_string(),
        read_only,
    })
}

fn long(ctx: &mut Ctx<'_>, node: &Node) -> Result<MountSpec> {
    let entries = read::map(node, "volumes[]")?;
    let kind_node = node
        .get("type")
        .ok_or_else(|| node.mark.invalid("a volume in the long form needs `type`"))?;
    let kind = match read::string(kind_node, "volumes[].type")?.as_str() {
        "volume" => MountKind::Volume,
        "bind" => MountKind::Bind,
        "tmpfs" => MountKind::Tmpfs,
        other @ ("npipe" | "cluster" | "image") => {
            return Err(kind_node.mark.invalid(format!(
                "volume type {other} is not supported by shoal (volume, bind and tmpfs are)"
            )));
        }
        other => {
            return Err(kind_node.mark.invalid(format!(
                "`volumes[].type` is volume, bind or tmpfs, not {other:?}"
            )));
        }
    };
    let mut source = String::new();
    let mut target = None;
    let mut read_only = false;
    for (key, value) in entries {
        let what = format!("volumes[].{}", key.name);
        match key.name.as_str() {
            "type" | "consistency" => {}
            "source" => source = read::opt_string(value, &what)?.unwrap_or_default(),
            "target" => target = Some(read::string(value, &what)?),
            "read_only" => read_only = read::boolean(value, &what)?,
            "bind" | "volume" | "tmpfs" => {
                for (option, v) in read::opt_map(value, &what)? {
                    let what = format!("{what}.{}", option.name);
                    match option.name.as_str() {
                        "create_host_path" => {
                            if !read::boolean(v, &what)? {
                                ctx.warn(&option.mark, &what, "false is not supported: the engine creates a missing host path");
                            }
                        }
                        "propagation" | "selinux" | "nocopy" | "subpath" | "size" | "mode" => {
                            ctx.ignored(&option.mark, &what);
                        }
                        k if k.starts_with("x-") => {}
                        other => return Err(ctx.unknown(&option.mark, &what, other)),
                    }
                }
            }
            k if k.starts_with("x-") => {}
            other => return Err(ctx.unknown(&key.mark, "volumes[]", other)),
        }
    }
    let target = target.ok_or_else(|| {
        node.mark
            .invalid("a volume in the long form needs `target`")
    })?;
    check_target(node, &target)?;
    let source = match kind {
        MountKind::Bind if source.is_empty() => {
            return Err(node.mark.invalid("a bind mount needs `source`"));
        }
        MountKind::Bind => ctx.host_path(&source),
        MountKind::Volume if source.is_empty() => source,
        MountKind::Volume => ctx.volume_name(node, &source)?,
        MountKind::Tmpfs => String::new(),
    };
    Ok(MountSpec {
        kind,
        source,
        target,
        read_only,
    })
}

/// `base/rel` with `.` and `..` resolved lexically.
pub fn join_clean(base: &Path, rel: &str) -> PathBuf {
    let mut out = PathBuf::new();
    for component in base.join(rel).components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other.as_os_str()),
        }
    }
    out
}
