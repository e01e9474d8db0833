//! `healthcheck` into a shoal [`HealthCheck`].
//!
//! `test` forms: a string (run by the container's shell), `["CMD-SHELL", "cmd"]` (the same),
//! `["CMD", "prog", "arg", ...]` (shoal runs every check through the shell, so the words are
//! quoted back into one shell command: `prog 'arg with space'`), `["NONE"]` or `disable: true`.
//! Unset durations take Docker's defaults: interval 30s, timeout 30s, retries 3, start period 0.
//!
//! shoal cannot switch off an image's own `HEALTHCHECK` nor tune it without a `test`, nor take
//! `start_interval`: those are warnings.

use shoal_scheduler::HealthCheck;

use crate::convert::Ctx;
use crate::error::ComposeError;
use crate::read;
use crate::yaml::{Node, Value};

type Result<T> = std::result::Result<T, ComposeError>;

/// Docker's default interval and timeout.
const DEFAULT_INTERVAL_MS: u64 = 30_000;
const DEFAULT_TIMEOUT_MS: u64 = 30_000;
const DEFAULT_RETRIES: u64 = 3;

enum Test {
    Shell(String),
    None,
}

fn test(node: &Node) -> Result<Test> {
    let words = match &node.value {
        Value::Seq(_) => read::strings(node, "healthcheck.test")?,
        _ => return Ok(Test::Shell(read::string(node, "healthcheck.test")?)),
    };
    let bad = || {
        node.mark.invalid(
            "`healthcheck.test` must be a string, [\"CMD\", prog, args...], [\"CMD-SHELL\", command] or [\"NONE\"]",
        )
    };
    match words.split_first() {
        Some((first, rest)) if first == "NONE" => {
            let _ = rest;
            Ok(Test::None)
        }
        Some((first, rest)) if first == "CMD-SHELL" && !rest.is_empty() => {
            Ok(Test::Shell(rest.join(" ")))
        }
        Some((first, rest)) if first == "CMD" && !rest.is_empty() => {
            shlex::try_join(rest.iter().map(String::as_str))
                .map(Test::Shell)
                .map_err(|_| {
                    node.mark
                        .invalid("`healthcheck.test` has a word with a NUL byte")
                })
        }
        _ => Err(bad()),
    }
}

/// Reads a `healthcheck` mapping.
pub fn healthcheck(ctx: &mut Ctx<'_>, node: &Node) -> Result<Option<HealthCheck>> {
    let mut check = HealthCheck {
        command: String::new(),
        interval_ms: DEFAULT_INTERVAL_MS,
        timeout_ms: DEFAULT_TIMEOUT_MS,
        retries: DEFAULT_RETRIES,
        start_period_ms: 0,
    };
    let mut command = None;
    let mut disabled = false;
    for (key, value) in read::map(node, "healthcheck")? {
        let what = format!("healthcheck.{}", key.name);
        match key.name.as_str() {
            "test" => match test(value)? {
                Test::Shell(c) => command = Some(c),
                Test::None => disabled = true,
            },
            "disable" => disabled |= read::boolean(value, &what)?,
            "interval" => check.interval_ms = read::duration_ms(value, &what)?,
            "timeout" => check.timeout_ms = read::duration_ms(value, &what)?,
            "retries" => check.retries = read::uint(value, &what)?,
            "start_period" => check.start_period_ms = read::duration_ms(value, &what)?,
            "start_interval" => ctx.ignored(&key.mark, &what),
            k if k.starts_with("x-") => {}
            other => return Err(ctx.unknown(&key.mark, "healthcheck", other)),
        }
    }
    if disabled {
        ctx.warn(
            &node.mark,
            "healthcheck",
            "disabling a health check is not supported: an image's own HEALTHCHECK still runs",
        );
        return Ok(None);
    }
    match command {
        Some(command) => {
            check.command = command;
            Ok(Some(check))
        }
        None => {
            ctx.warn(
                &node.mark,
                "healthcheck",
                "without `test` is not supported: the image's own HEALTHCHECK runs unchanged",
            );
            Ok(None)
        }
    }
}
