//! Parsers for what users type, in the habits of the `docker` CLI: constraints, sizes, CPUs,
//! durations, placement preferences, ports and restart conditions. Every error names the bad
//! input and says what was expected.

use std::fmt;

use crate::model::{
    Constraint, ConstraintKey, ConstraintOp, MountKind, MountSpec, PlacementPreference,
    PortProtocol, PortSpec, RestartCondition,
};

/// Why a user-supplied value was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// A constraint is malformed.
    #[error(
        "invalid constraint {input:?}: {reason} (expected e.g. node.labels.zone==eu or node.role!=manager)"
    )]
    Constraint {
        /// What was given.
        input: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// A size is malformed.
    #[error(
        "invalid size {0:?} (expected a number of bytes with an optional suffix b, k, m, g, KiB, MiB, GiB, e.g. 512MiB)"
    )]
    Size(String),
    /// A CPU amount is malformed.
    #[error("invalid cpus {0:?} (expected a positive decimal number of CPUs, e.g. 0.5 or 2)")]
    Cpus(String),
    /// A duration is malformed.
    #[error("invalid duration {0:?} (expected e.g. 500ms, 10s, 1m30s, 2h)")]
    Duration(String),
    /// A placement preference is malformed.
    #[error("invalid placement preference {0:?} (expected spread=node.labels.<name>)")]
    Preference(String),
    /// A port is malformed.
    #[error(
        "invalid port {input:?}: {reason} (expected [published:]target[/tcp|/udp] or mode=host,target=80,published=8080,protocol=tcp)"
    )]
    Port {
        /// What was given.
        input: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// A mount is malformed.
    #[error(
        "invalid mount {input:?}: {reason} (expected type=bind|volume|tmpfs,source=...,target=/path[,readonly])"
    )]
    Mount {
        /// What was given.
        input: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// A restart condition is unknown.
    #[error("invalid restart condition {0:?} (expected none, on-failure or any)")]
    RestartCondition(String),
    /// A secret or config reference is malformed.
    #[error(
        "invalid {kind} {input:?}: {reason} (expected NAME or source=NAME[,target=PATH][,uid=N][,gid=N][,mode=0400])"
    )]
    FileRef {
        /// Secret or config.
        kind: crate::secrets::ObjectKind,
        /// What was given.
        input: String,
        /// What is wrong.
        reason: &'static str,
    },
}

/// Parses `node.labels.zone==eu`, `node.role!=manager`, `node.id==...`, `node.hostname==...`,
/// `node.platform.os==linux`, `node.platform.arch==x86_64`.
pub fn constraint(input: &str) -> Result<Constraint, ParseError> {
    let err = |reason| ParseError::Constraint {
        input: input.to_string(),
        reason,
    };
    let (lhs, op, rhs) = if let Some((l, r)) = input.split_once("==") {
        (l, ConstraintOp::Eq, r)
    } else if let Some((l, r)) = input.split_once("!=") {
        (l, ConstraintOp::Ne, r)
    } else {
        return Err(err("no == or != operator"));
    };
    let (lhs, value) = (lhs.trim(), rhs.trim());
    if value.is_empty() {
        return Err(err("empty value"));
    }
    if value.contains("==") || value.contains("!=") {
        return Err(err("more than one operator"));
    }
    let key = match lhs {
        "node.id" => ConstraintKey::NodeId,
        "node.hostname" => ConstraintKey::Hostname,
        "node.role" => ConstraintKey::Role,
        "node.platform.os" => ConstraintKey::PlatformOs,
        "node.platform.arch" => ConstraintKey::PlatformArch,
        _ => match lhs.strip_prefix("node.labels.") {
            Some(label) if !label.is_empty() => ConstraintKey::Label(label.to_string()),
            Some(_) => return Err(err("empty label name")),
            None => return Err(err("unknown attribute")),
        },
    };
    if key == ConstraintKey::Role && !matches!(value, "manager" | "worker") {
        return Err(err("node.role is manager or worker"));
    }
    Ok(Constraint {
        key,
        op,
        value: value.to_string(),
    })
}

impl fmt::Display for Constraint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let key = match &self.key {
            ConstraintKey::NodeId => "node.id",
            ConstraintKey::Hostname => "node.hostname",
            ConstraintKey::Role => "node.role",
            ConstraintKey::PlatformOs => "node.platform.os",
            ConstraintKey::PlatformArch => "node.platform.arch",
            ConstraintKey::Label(l) => return write_label(f, l, self.op, &self.value),
        };
        write!(f, "{key}{}{}", op_str(self.op), self.value)
    }
}

fn write_label(f: &mut fmt::Formatter<'_>, l: &str, op: ConstraintOp, v: &str) -> fmt::Result {
    write!(f, "node.labels.{l}{}{v}", op_str(op))
}

fn op_str(op: ConstraintOp) -> &'static str {
    match op {
        ConstraintOp::Eq => "==",
        ConstraintOp::Ne => "!=",
    }
}

/// Splits `123.5MiB` into the number and the suffix.
fn split_number(input: &str) -> (&str, &str) {
    let end = input
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(input.len());
    input.split_at(end)
}

/// Parses a size in bytes: plain bytes, or with a suffix `b`, `k`/`kb`/`KiB`, `m`/`mb`/`MiB`,
/// `g`/`gb`/`GiB`, `t`/`TiB` (binary multiples, as Docker reads them; case-insensitive).
pub fn size(input: &str) -> Result<u64, ParseError> {
    let err = || ParseError::Size(input.to_string());
    let (num, suffix) = split_number(input.trim());
    let mult: u64 = match suffix.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        _ => return Err(err()),
    };
    decimal_times(num, mult).ok_or_else(err)
}

/// `num * mult` for a decimal `num` with up to 9 fraction digits, exactly and checked.
fn decimal_times(num: &str, mult: u64) -> Option<u64> {
    let (int, frac) = num.split_once('.').unwrap_or((num, ""));
    if int.is_empty() && frac.is_empty() || frac.len() > 9 || frac.contains('.') {
        return None;
    }
    let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if !all_digits(int) || !all_digits(frac) {
        return None;
    }
    let int: u128 = if int.is_empty() { 0 } else { int.parse().ok()? };
    let scale = 10u128.pow(frac.len() as u32);
    let frac: u128 = if frac.is_empty() {
        0
    } else {
        frac.parse().ok()?
    };
    let total = (int * scale + frac).checked_mul(u128::from(mult))? / scale;
    u64::try_from(total).ok()
}

/// Parses a CPU amount (`0.5`, `2`) into nano-CPUs.
pub fn cpus(input: &str) -> Result<u64, ParseError> {
    match decimal_times(input.trim(), 1_000_000_000) {
        Some(n) if n > 0 => Ok(n),
        _ => Err(ParseError::Cpus(input.to_string())),
    }
}

/// Parses a duration into milliseconds: a sequence of `<integer><unit>` with units `ms`, `s`,
/// `m`, `h` (`500ms`, `10s`, `1m30s`, `2h`). `0` alone is zero.
pub fn duration_ms(input: &str) -> Result<u64, ParseError> {
    let err = || ParseError::Duration(input.to_string());
    let mut rest = input.trim();
    if rest == "0" {
        return Ok(0);
    }
    if rest.is_empty() {
        return Err(err());
    }
    let mut total: u64 = 0;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(err)?;
        let value: u64 = rest[..digits].parse().map_err(|_| err())?;
        let after = &rest[digits..];
        let unit_len = after
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(after.len());
        let mult = match &after[..unit_len] {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            _ => return Err(err()),
        };
        total = value
            .checked_mul(mult)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(err)?;
        rest = &after[unit_len..];
    }
    Ok(total)
}

/// Parses a mount in Docker's `--mount` form: `type=bind,source=/data,target=/data,readonly`
/// (also `volume` and `tmpfs`; `src`, `dst`, `destination` and `ro` are accepted).
pub fn mount(input: &str) -> Result<MountSpec, ParseError> {
    let err = |reason| ParseError::Mount {
        input: input.to_string(),
        reason,
    };
    let mut spec = MountSpec {
        kind: MountKind::Volume,
        source: String::new(),
        target: String::new(),
        read_only: false,
    };
    for field in input.split(',').map(str::trim).filter(|f| !f.is_empty()) {
        let (key, value) = field.split_once('=').unwrap_or((field, "true"));
        match key {
            "type" => {
                spec.kind = match value {
                    "bind" => MountKind::Bind,
                    "volume" => MountKind::Volume,
                    "tmpfs" => MountKind::Tmpfs,
                    _ => return Err(err("type is bind, volume or tmpfs")),
                }
            }
            "source" | "src" => spec.source = value.to_string(),
            "target" | "dst" | "destination" => spec.target = value.to_string(),
            "readonly" | "ro" => spec.read_only = matches!(value, "true" | "1"),
            _ => return Err(err("options are type, source, target and readonly")),
        }
    }
    if !spec.target.starts_with('/') {
        return Err(err("target must be an absolute path"));
    }
    if spec.kind != MountKind::Tmpfs && spec.source.is_empty() {
        return Err(err("bind and volume mounts need a source"));
    }
    if spec.kind == MountKind::Bind && !spec.source.starts_with('/') {
        return Err(err("a bind mount's source must be an absolute path"));
    }
    Ok(spec)
}

/// Parses a service's reference to a secret or config, as `--secret` and `--config` take it:
/// `NAME`, or `source=NAME,target=PATH,uid=N,gid=N,mode=0440` (every field but the source
/// optional; `src`, `dst` accepted). A secret's relative target is under `/run/secrets/`, a
/// config's under `/`; the mode is octal (0400 for secrets, 0444 for configs by default).
pub fn file_ref(
    kind: crate::secrets::ObjectKind,
    input: &str,
) -> Result<crate::secrets::FileRef, ParseError> {
    use crate::secrets::{FileRef, ObjectKind, SECRETS_DIR};
    let err = |reason| ParseError::FileRef {
        kind,
        input: input.to_string(),
        reason,
    };
    let input_trimmed = input.trim();
    let (mut source, mut target, mut uid, mut gid, mut mode) = (None, None, None, None, None);
    if !input_trimmed.contains('=') {
        source = Some(input_trimmed.to_owned());
    } else {
        for field in input_trimmed
            .split(',')
            .map(str::trim)
            .filter(|f| !f.is_empty())
        {
            let Some((key, value)) = field.split_once('=') else {
                return Err(err("every option is KEY=VALUE"));
            };
            match key {
                "source" | "src" => source = Some(value.to_owned()),
                "target" | "dst" | "destination" => target = Some(value.to_owned()),
                "uid" => uid = Some(value.parse::<u32>().map_err(|_| err("uid is a number"))?),
                "gid" => gid = Some(value.parse::<u32>().map_err(|_| err("gid is a number"))?),
                "mode" => {
                    mode = Some(
                        u32::from_str_radix(value.trim_start_matches("0o"), 8)
                            .ok()
                            .filter(|m| *m <= 0o777)
                            .ok_or_else(|| err("mode is octal permission bits, e.g. 0440"))?,
                    )
                }
                _ => return Err(err("options are source, target, uid, gid and mode")),
            }
        }
    }
    let source = source
        .filter(|s| !s.is_empty())
        .ok_or_else(|| err("a source name is needed"))?;
    let mut reference = match kind {
        ObjectKind::Secret => FileRef::secret(&source),
        ObjectKind::Config => FileRef::config(&source),
    };
    if let Some(target) = target.filter(|t| !t.is_empty()) {
        reference.target = match (kind, target.starts_with('/')) {
            (_, true) => target,
            (ObjectKind::Secret, false) => format!("{SECRETS_DIR}/{target}"),
            (ObjectKind::Config, false) => format!("/{target}"),
        };
    }
    reference.uid = uid.unwrap_or(0);
    reference.gid = gid.unwrap_or(0);
    if let Some(mode) = mode {
        reference.mode = mode;
    }
    Ok(reference)
}

/// Parses `spread=node.labels.zone`.
pub fn preference(input: &str) -> Result<PlacementPreference, ParseError> {
    let label = input
        .trim()
        .strip_prefix("spread=")
        .and_then(|k| k.strip_prefix("node.labels."));
    match label {
        Some(l) if !l.is_empty() => Ok(PlacementPreference::SpreadOverLabel(l.to_string())),
        _ => Err(ParseError::Preference(input.to_string())),
    }
}

/// Parses a published port: the short form `8080:80/tcp`, `80`, `53:53/udp` (ingress mode) or
/// the long form `mode=host,target=80,published=8080,protocol=tcp`.
pub fn port(input: &str) -> Result<PortSpec, ParseError> {
    if input.contains('=') {
        port_long(input)
    } else {
        port_short(input)
    }
}

fn port_err(input: &str, reason: &'static str) -> ParseError {
    ParseError::Port {
        input: input.to_string(),
        reason,
    }
}

fn port_number(input: &str, s: &str) -> Result<u16, ParseError> {
    match s.trim().parse::<u16>() {
        Ok(p) if p > 0 => Ok(p),
        _ => Err(port_err(input, "a port is a number from 1 to 65535")),
    }
}

fn protocol(input: &str, s: &str) -> Result<PortProtocol, ParseError> {
    match s.trim().to_ascii_lowercase().as_str() {
        "tcp" => Ok(PortProtocol::Tcp),
        "udp" => Ok(PortProtocol::Udp),
        _ => Err(port_err(input, "protocol is tcp or udp")),
    }
}

fn port_short(input: &str) -> Result<PortSpec, ParseError> {
    let (ports, proto) = input.split_once('/').unwrap_or((input, "tcp"));
    let protocol = protocol(input, proto)?;
    let (published, target) = match ports.split_once(':') {
        Some((p, t)) => (port_number(input, p)?, port_number(input, t)?),
        None => (0, port_number(input, ports)?),
    };
    Ok(PortSpec {
        target,
        published,
        protocol,
        host_mode: false,
    })
}

fn port_long(input: &str) -> Result<PortSpec, ParseError> {
    let mut spec = PortSpec {
        target: 0,
        published: 0,
        protocol: PortProtocol::Tcp,
        host_mode: false,
    };
    for field in input.split(',') {
        let (k, v) = field
            .split_once('=')
            .ok_or_else(|| port_err(input, "fields are key=value"))?;
        match k.trim() {
            "mode" => {
                spec.host_mode = match v.trim() {
                    "host" => true,
                    "ingress" => false,
                    _ => return Err(port_err(input, "mode is host or ingress")),
                }
            }
            "target" => spec.target = port_number(input, v)?,
            "published" => spec.published = port_number(input, v)?,
            "protocol" => spec.protocol = protocol(input, v)?,
            _ => return Err(port_err(input, "unknown field")),
        }
    }
    if spec.target == 0 {
        return Err(port_err(input, "target is required"));
    }
    Ok(spec)
}

/// Parses `none`, `on-failure` or `any`.
pub fn restart_condition(input: &str) -> Result<RestartCondition, ParseError> {
    match input.trim() {
        "none" => Ok(RestartCondition::None),
        "on-failure" => Ok(RestartCondition::OnFailure),
        "any" => Ok(RestartCondition::Any),
        _ => Err(ParseError::RestartCondition(input.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mounts_parse_in_dockers_form() {
        let bind = mount("type=bind,source=/data,target=/srv,readonly").expect("bind");
        assert_eq!(
            bind,
            MountSpec {
                kind: MountKind::Bind,
                source: "/data".into(),
                target: "/srv".into(),
                read_only: true
            }
        );
        let volume = mount("src=cache,dst=/cache").expect("volume by default");
        assert_eq!(volume.kind, MountKind::Volume);
        assert_eq!(mount("type=tmpfs,target=/tmp").expect("tmpfs").source, "");
        for (text, why) in [
            ("type=nfs,source=a,target=/b", "type is"),
            ("type=bind,source=rel,target=/b", "absolute"),
            ("type=volume,target=/b", "need a source"),
            ("type=bind,source=/a,target=b", "target must be"),
            ("colour=red,target=/b", "options are"),
        ] {
            let error = mount(text).expect_err(text).to_string();
            assert!(error.contains(why), "{text}: {error}");
        }
    }

    #[test]
    fn constraints_parse_and_print_back() {
        for text in [
            "node.labels.zone==eu",
            "node.role!=manager",
            "node.hostname==h1",
            "node.platform.arch==x86_64",
            "node.id==abc",
            "node.platform.os!=windows",
        ] {
            assert_eq!(constraint(text).expect(text).to_string(), text);
        }
        let c = constraint(" node.labels.zone == eu ").expect("spaces");
        assert_eq!(c.key, ConstraintKey::Label("zone".into()));
        assert_eq!(c.op, ConstraintOp::Eq);
    }

    #[test]
    fn bad_constraints_say_why() {
        for (text, why) in [
            ("node.labels.zone=eu", "no == or != operator"),
            ("node.labels.==eu", "empty label name"),
            ("node.color==red", "unknown attribute"),
            ("node.role==boss", "node.role is manager or worker"),
            ("node.labels.a==", "empty value"),
        ] {
            let err = constraint(text).expect_err(text);
            assert_eq!(
                err,
                ParseError::Constraint {
                    input: text.into(),
                    reason: why
                }
            );
            assert!(err.to_string().contains(text));
        }
    }

    #[test]
    fn sizes() {
        for (text, bytes) in [
            ("512MiB", 512 << 20),
            ("1g", 1 << 30),
            ("100m", 100 << 20),
            ("4096", 4096),
            ("10b", 10),
            ("1.5k", 1536),
            ("2GiB", 2 << 30),
            ("1KiB", 1024),
        ] {
            assert_eq!(size(text), Ok(bytes), "{text}");
        }
        for text in ["", "12x", "MiB", "1..5m", "-1", "99999999999999999999g"] {
            assert_eq!(size(text), Err(ParseError::Size(text.into())), "{text}");
        }
    }

    #[test]
    fn cpus_are_nano_cpus() {
        assert_eq!(cpus("0.5"), Ok(500_000_000));
        assert_eq!(cpus("2"), Ok(2_000_000_000));
        assert_eq!(cpus("0.001"), Ok(1_000_000));
        for text in ["0", "", "abc", "1.2.3", "-1"] {
            assert_eq!(cpus(text), Err(ParseError::Cpus(text.into())), "{text}");
        }
    }

    #[test]
    fn durations() {
        for (text, ms) in [
            ("500ms", 500),
            ("10s", 10_000),
            ("1m30s", 90_000),
            ("2h", 7_200_000),
            ("0", 0),
            ("1h1m1s1ms", 3_661_001),
        ] {
            assert_eq!(duration_ms(text), Ok(ms), "{text}");
        }
        for text in ["", "10", "5x", "s", "1.5s", "10sm"] {
            assert_eq!(
                duration_ms(text),
                Err(ParseError::Duration(text.into())),
                "{text}"
            );
        }
    }

    #[test]
    fn preferences() {
        assert_eq!(
            preference("spread=node.labels.zone"),
            Ok(PlacementPreference::SpreadOverLabel("zone".into()))
        );
        for text in [
            "spread=zone",
            "binpack=node.labels.zone",
            "spread=node.labels.",
        ] {
            assert!(preference(text).is_err(), "{text}");
        }
    }

    #[test]
    fn ports() {
        let p = port("8080:80/tcp").expect("short");
        assert_eq!(
            (p.published, p.target, p.protocol, p.host_mode),
            (8080, 80, PortProtocol::Tcp, false)
        );
        let p = port("53:53/udp").expect("udp");
        assert_eq!(p.protocol, PortProtocol::Udp);
        let p = port("80").expect("target only");
        assert_eq!((p.published, p.target), (0, 80));
        let p = port("mode=host,target=80,published=8080").expect("long");
        assert_eq!((p.published, p.target, p.host_mode), (8080, 80, true));
        for text in [
            "0:80",
            "80/sctp",
            "70000",
            "mode=host,published=80",
            "mode=bridge,target=80",
            "a:b",
        ] {
            let err = port(text).expect_err(text);
            assert!(err.to_string().contains(text), "{err}");
        }
    }

    #[test]
    fn restart_conditions() {
        assert_eq!(
            restart_condition("on-failure"),
            Ok(RestartCondition::OnFailure)
        );
        assert_eq!(restart_condition("any"), Ok(RestartCondition::Any));
        assert_eq!(restart_condition("none"), Ok(RestartCondition::None));
        assert_eq!(
            restart_condition("always"),
            Err(ParseError::RestartCondition("always".into()))
        );
    }

    #[test]
    fn secret_and_config_references() {
        use crate::secrets::{FileRef, ObjectKind};
        assert_eq!(
            file_ref(ObjectKind::Secret, "db").expect("parses"),
            FileRef::secret("db")
        );
        let full = file_ref(
            ObjectKind::Secret,
            "source=db,target=password,uid=1000,gid=50,mode=0440",
        )
        .expect("parses");
        assert_eq!(full.target, "/run/secrets/password");
        assert_eq!((full.uid, full.gid, full.mode), (1000, 50, 0o440));
        let config =
            file_ref(ObjectKind::Config, "src=site,dst=/etc/nginx/nginx.conf").expect("parses");
        assert_eq!(config.target, "/etc/nginx/nginx.conf");
        assert_eq!(config.mode, 0o444);
        assert_eq!(
            file_ref(ObjectKind::Config, "source=site,target=site.conf")
                .expect("parses")
                .target,
            "/site.conf"
        );
        for bad in [
            "",
            "target=/x",
            "source=db,mode=999",
            "source=db,uid=me",
            "source=db,colour=red",
            "source=db,flag",
        ] {
            let error = file_ref(ObjectKind::Secret, bad).expect_err(bad);
            assert!(error.to_string().contains("source=NAME"), "{bad}: {error}");
        }
    }
}
