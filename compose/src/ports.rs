//! `ports`, short and long form, into shoal [`PortSpec`]s.
//!
//! Short: `"80"`, `"8080:80"`, `"8080:80/udp"`, `"127.0.0.1:8080:80"`, `"[::1]:8080:80"`,
//! ranges `"9000-9001:9000-9001"` (one spec per port), a bare number `80`. Long: `target`,
//! `published` (a number, a string, or a range), `protocol`, `mode` (`ingress`, `host`),
//! `host_ip`, `name`, `app_protocol`.
//!
//! What shoal does differently, each a warning: a host IP is not honoured (the port is
//! published on every address of the node); a port with no published port is not given a
//! random one (the target stays reachable on the service network only); a range of published
//! ports for one target publishes the first.

use shoal_scheduler::{PortProtocol, PortSpec};

use crate::convert::Ctx;
use crate::error::ComposeError;
use crate::read;
use crate::yaml::{Node, Value};

type Result<T> = std::result::Result<T, ComposeError>;

/// All the ports of one `ports` entry.
pub fn port(ctx: &mut Ctx<'_>, node: &Node) -> Result<Vec<PortSpec>> {
    match &node.value {
        Value::Map(_) => long(ctx, node),
        _ => short(ctx, node),
    }
}

fn bad(node: &Node, text: &str, why: &str) -> ComposeError {
    node.mark.invalid(format!(
        "invalid port {text:?} in `ports`: {why} (expected e.g. \"8080:80\", \"127.0.0.1:53:53/udp\" or \"9000-9001:9000-9001\")"
    ))
}

fn number(node: &Node, text: &str, s: &str) -> Result<u16> {
    match s.trim().parse::<u16>() {
        Ok(p) if p > 0 => Ok(p),
        _ => Err(bad(node, text, "a port is a number from 1 to 65535")),
    }
}

/// `9000-9001` or `9000` into an inclusive range.
fn range(node: &Node, text: &str, s: &str) -> Result<(u16, u16)> {
    match s.split_once('-') {
        Some((a, b)) => {
            let (a, b) = (number(node, text, a)?, number(node, text, b)?);
            if a > b {
                return Err(bad(node, text, "a range goes from low to high"));
            }
            Ok((a, b))
        }
        None => {
            let p = number(node, text, s)?;
            Ok((p, p))
        }
    }
}

fn protocol(node: &Node, text: &str, s: &str) -> Result<PortProtocol> {
    match s.trim().to_ascii_lowercase().as_str() {
        "tcp" => Ok(PortProtocol::Tcp),
        "udp" => Ok(PortProtocol::Udp),
        "sctp" => Err(bad(node, text, "shoal publishes tcp and udp only")),
        _ => Err(bad(node, text, "the protocol is tcp or udp")),
    }
}

fn short(ctx: &mut Ctx<'_>, node: &Node) -> Result<Vec<PortSpec>> {
    let text = read::string(node, "ports[]")?;
    let (ports, proto) = text.split_once('/').unwrap_or((&text, "tcp"));
    let protocol = protocol(node, &text, proto)?;
    // `[ipv6]:published:target`, `ip:published:target`, `published:target` or `target`.
    let (host_ip, rest) = match ports.strip_prefix('[') {
        Some(v6) => {
            let (ip, rest) = v6
                .split_once(']')
                .ok_or_else(|| bad(node, &text, "unclosed `[` around an IPv6 address"))?;
            let rest = rest
                .strip_prefix(':')
                .ok_or_else(|| bad(node, &text, "expected `:` after the IPv6 address"))?;
            (Some(ip), rest)
        }
        None => (None, ports),
    };
    let parts: Vec<&str> = rest.split(':').collect();
    let (host_ip, published, target) = match (host_ip, parts.as_slice()) {
        (None, [target]) => (None, None, *target),
        (None, [published, target]) => (None, Some(*published), *target),
        (None, [ip, published, target]) => (Some(*ip), Some(*published), *target),
        (Some(ip), [published, target]) => (Some(ip), Some(*published), *target),
        _ => {
            return Err(bad(
                node,
                &text,
                "too many `:` (write an IPv6 address in brackets)",
            ));
        }
    };
    if let Some(ip) = host_ip.filter(|ip| !ip.is_empty()) {
        ctx.warn(
            &node.mark,
            "ports",
            format!(
                "host IP {ip} is not supported: the port is published on every address of the node"
            ),
        );
    }
    let published = published.filter(|p| !p.is_empty());
    expand(ctx, node, &text, target, published, protocol, false)
}

fn expand(
    ctx: &mut Ctx<'_>,
    node: &Node,
    text: &str,
    target: &str,
    published: Option<&str>,
    protocol: PortProtocol,
    host_mode: bool,
) -> Result<Vec<PortSpec>> {
    let (t0, t1) = range(node, text, target)?;
    let spec = |target, published| PortSpec {
        target,
        published,
        protocol,
        host_mode,
    };
    let Some(published) = published else {
        ctx.warn(
            &node.mark,
            "ports",
            format!("{text:?} has no published port and shoal picks none: the port is reachable on the service network only (use `expose` for that, or publish one)"),
        );
        return Ok((t0..=t1).map(|t| spec(t, 0)).collect());
    };
    let (p0, p1) = range(node, text, published)?;
    if t0 == t1 && p0 != p1 {
        ctx.warn(
            &node.mark,
            "ports",
            format!("{text:?}: a range of published ports for one target is not supported: {p0} is published"),
        );
        return Ok(vec![spec(t0, p0)]);
    }
    if p1 - p0 != t1 - t0 {
        return Err(bad(
            node,
            text,
            "the published and target ranges differ in length",
        ));
    }
    Ok((0..=t1 - t0).map(|i| spec(t0 + i, p0 + i)).collect())
}

fn long(ctx: &mut Ctx<'_>, node: &Node) -> Result<Vec<PortSpec>> {
    let mut target = None;
    let mut published = None;
    let mut protocol_text = None;
    let mut host_mode = false;
    for (key, value) in read::map(node, "ports[]")? {
        let what = format!("ports[].{}", key.name);
        match key.name.as_str() {
            "target" => target = Some(read::string(value, &what)?),
            "published" => published = read::opt_string(value, &what)?,
            "protocol" => protocol_text = Some(read::string(value, &what)?),
            "mode" => {
                host_mode = match read::string(value, &what)?.as_str() {
                    "host" => true,
                    "ingress" => false,
                    other => {
                        return Err(value
                            .mark
                            .invalid(format!("`{what}` is host or ingress, not {other:?}")));
                    }
                }
            }
            "host_ip" => {
                let ip = read::string(value, &what)?;
                ctx.warn(
                    &key.mark,
                    &what,
                    format!("host IP {ip} is not supported: the port is published on every address of the node"),
                );
            }
            "name" | "app_protocol" => {}
            k if k.starts_with("x-") => {}
            other => return Err(ctx.unknown(&key.mark, "ports[]", other)),
        }
    }
    let Some(target) = target else {
        return Err(node.mark.invalid("a port in the long form needs `target`"));
    };
    let protocol = protocol(node, &target, protocol_text.as_deref().unwrap_or("tcp"))?;
    let text = match &published {
        Some(p) => format!("{p}:{target}"),
        None => target.clone(),
    };
    expand(
        ctx,
        node,
        &text,
        &target,
        published.as_deref(),
        protocol,
        host_mode,
    )
}
