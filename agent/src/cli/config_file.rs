//! `shoal agent --config FILE`: the agent's flags from a TOML file, layered under the environment
//! and the command line (a flag given on the command line wins over its `SHOAL_*` variable, which
//! wins over the file, which wins over the built-in default).
//!
//! The file's keys are the agent's long flag names, in snake_case or kebab-case
//! (`metrics_addr = "127.0.0.1:9464"`, `join = ["/ip4/…"]`, `no_mdns = true`). Its values go
//! through the same parsers as the flags, so a file can say nothing a flag could not. This module
//! owns the layering (which file value applies) and `--print-config` (the effective settings, each
//! with where it came from).

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::parser::ValueSource;
use clap::{ArgAction, ArgMatches, CommandFactory};

use super::Cli;

/// The subcommand whose flags a config file may set.
const AGENT: &str = "agent";
/// Flags that a config file cannot set: the file itself, and what only makes sense once.
const NOT_IN_FILE: [&str; 4] = ["config", "print-config", "help", "version"];
/// The key a file may not hold: a secret belongs in its own owner-only file.
const TOKEN_KEY: &str = "token";
/// A config file larger than this is refused (it is a handful of settings).
const MAX_FILE_BYTES: u64 = 256 * 1024;

/// Why a config file could not be applied. Nothing starts when it cannot.
#[derive(Debug, thiserror::Error)]
pub enum ConfigFileError {
    /// The file could not be read.
    #[error("config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// What reading it said.
        source: std::io::Error,
    },
    /// The file is too large to be a config file.
    #[error(
        "config file {path}: {size} bytes, more than a config file holds (at most {MAX_FILE_BYTES})"
    )]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its size.
        size: u64,
    },
    /// The file is not valid TOML.
    #[error("config file {path} is not valid TOML: {message}")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// The parser's message, with line and column.
        message: String,
    },
    /// A key that is no flag of `shoal agent`.
    #[error("config file {path}: unknown key `{key}`; the keys are `shoal agent`'s flags: {known}")]
    UnknownKey {
        /// The file.
        path: PathBuf,
        /// The key.
        key: String,
        /// The keys it may hold.
        known: String,
    },
    /// A value of a type the flag cannot take.
    #[error("config file {path}: `{key}` {expected}")]
    BadValue {
        /// The file.
        path: PathBuf,
        /// The key.
        key: String,
        /// What the key takes.
        expected: String,
    },
    /// The cluster token written into the file.
    #[error(
        "config file {path}: `token` is not read from a config file; put the token in an \
         owner-only file of its own and give its path as `token_file`, or set SHOAL_TOKEN"
    )]
    TokenInFile {
        /// The file.
        path: PathBuf,
    },
}

/// A command line with a config file's settings added, and which flags they set.
#[derive(Debug, Clone, Default)]
pub struct Layered {
    /// The arguments to parse: the process's, then the file's.
    pub argv: Vec<OsString>,
    /// The ids of the agent flags the file set.
    pub from_file: BTreeSet<String>,
    /// The file, if one was read.
    pub file: Option<PathBuf>,
}

/// Adds the settings of `shoal agent --config FILE` (or `SHOAL_CONFIG`) to `argv`, for every
/// flag that neither the command line nor the environment gave. A command line that does not
/// parse, or is not `shoal agent`, comes back unchanged: the real parse reports its errors.
pub fn layer(argv: Vec<OsString>) -> Result<Layered, ConfigFileError> {
    let unchanged = |argv| Layered {
        argv,
        ..Layered::default()
    };
    let Ok(matches) = Cli::command().try_get_matches_from(&argv) else {
        return Ok(unchanged(argv));
    };
    let Some((AGENT, agent)) = matches.subcommand() else {
        return Ok(unchanged(argv));
    };
    let Some(path) = agent.get_one::<PathBuf>("config").cloned() else {
        return Ok(unchanged(argv));
    };
    let table = read_table(&path)?;
    let (extra, from_file) = file_arguments(&path, &table, agent)?;
    let mut argv = argv;
    argv.extend(extra);
    Ok(Layered {
        argv,
        from_file,
        file: Some(path),
    })
}

fn read_table(path: &Path) -> Result<toml::Table, ConfigFileError> {
    let read = |source| ConfigFileError::Read {
        path: path.to_path_buf(),
        source,
    };
    let size = std::fs::metadata(path).map_err(read)?.len();
    if size > MAX_FILE_BYTES {
        return Err(ConfigFileError::TooLarge {
            path: path.to_path_buf(),
            size,
        });
    }
    let text = std::fs::read_to_string(path).map_err(read)?;
    text.parse::<toml::Table>()
        .map_err(|error| ConfigFileError::Syntax {
            path: path.to_path_buf(),
            message: error.to_string().trim().to_string(),
        })
}

/// The flags (as arguments) that the file's `table` adds, and their ids.
fn file_arguments(
    path: &Path,
    table: &toml::Table,
    given: &ArgMatches,
) -> Result<(Vec<OsString>, BTreeSet<String>), ConfigFileError> {
    let command = agent_command();
    let mut extra = Vec::new();
    let mut from_file = BTreeSet::new();
    for (key, value) in table {
        let long = key.replace('_', "-");
        if long == TOKEN_KEY {
            return Err(ConfigFileError::TokenInFile {
                path: path.to_path_buf(),
            });
        }
        let arg = settable_args(&command)
            .find(|arg| arg.get_long() == Some(long.as_str()))
            .ok_or_else(|| ConfigFileError::UnknownKey {
                path: path.to_path_buf(),
                key: key.clone(),
                known: known_keys(&command),
            })?;
        let id = arg.get_id().as_str();
        if matches!(
            given.value_source(id),
            Some(ValueSource::CommandLine | ValueSource::EnvVariable)
        ) {
            continue;
        }
        let bad = |expected: &str| ConfigFileError::BadValue {
            path: path.to_path_buf(),
            key: key.clone(),
            expected: expected.to_string(),
        };
        extra.extend(flag_arguments(&long, arg.get_action(), value).map_err(bad)?);
        from_file.insert(id.to_string());
    }
    Ok((extra, from_file))
}

/// `--long=value` arguments for one file value.
fn flag_arguments(
    long: &str,
    action: &ArgAction,
    value: &toml::Value,
) -> Result<Vec<OsString>, &'static str> {
    let flag = |text: String| OsString::from(format!("--{long}={text}"));
    match action {
        ArgAction::SetTrue => match value {
            toml::Value::Boolean(true) => Ok(vec![OsString::from(format!("--{long}"))]),
            toml::Value::Boolean(false) => Ok(Vec::new()),
            _ => Err("takes true or false"),
        },
        ArgAction::Append => match value {
            toml::Value::Array(items) => items.iter().map(|item| scalar(item).map(flag)).collect(),
            single => Ok(vec![flag(scalar(single)?)]),
        },
        _ => Ok(vec![flag(scalar(value)?)]),
    }
}

/// A scalar TOML value as the text a flag would be given.
fn scalar(value: &toml::Value) -> Result<String, &'static str> {
    match value {
        toml::Value::String(text) => Ok(text.clone()),
        toml::Value::Integer(number) => Ok(number.to_string()),
        toml::Value::Float(number) => Ok(number.to_string()),
        toml::Value::Boolean(flag) => Ok(flag.to_string()),
        _ => Err("takes a string, a number, or (for a repeatable flag) an array of them"),
    }
}

/// `shoal agent`'s command definition.
fn agent_command() -> clap::Command {
    let mut cli = Cli::command();
    cli.build();
    cli.find_subcommand(AGENT)
        .cloned()
        .unwrap_or_else(|| clap::Command::new(AGENT))
}

/// The agent's flags that a file may set.
fn settable_args(command: &clap::Command) -> impl Iterator<Item = &clap::Arg> {
    command.get_arguments().filter(|arg| {
        arg.get_long()
            .is_some_and(|long| !NOT_IN_FILE.contains(&long) && long != TOKEN_KEY)
    })
}

fn known_keys(command: &clap::Command) -> String {
    settable_args(command)
        .filter_map(clap::Arg::get_long)
        .map(|long| long.replace('-', "_"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The effective agent settings as a config file (TOML, snake_case keys), each line followed by
/// where its value came from. The token is never printed, only whether one is set.
pub fn render_effective(agent: &ArgMatches, layered: &Layered) -> String {
    let command = agent_command();
    let mut out =
        String::from("# shoal agent: the effective settings (flags > SHOAL_* > file > default)\n");
    if let Some(file) = &layered.file {
        out.push_str(&format!("# config file: {}\n", file.display()));
    }
    for arg in command.get_arguments() {
        let Some(long) = arg.get_long() else { continue };
        if NOT_IN_FILE.contains(&long) {
            continue;
        }
        let id = arg.get_id().as_str();
        let source = source_of(agent, id, layered, arg);
        let key = long.replace('-', "_");
        if long == TOKEN_KEY {
            let set = agent.value_source(id).is_some();
            out.push_str(&format!(
                "# token: {} (never printed)\n",
                if set { source } else { "not set".into() }
            ));
            continue;
        }
        match render_value(agent, id, arg.get_action()) {
            Some(value) => out.push_str(&format!("{key} = {value}  # {source}\n")),
            None => out.push_str(&format!("# {key} is not set\n")),
        }
    }
    out
}

fn source_of(agent: &ArgMatches, id: &str, layered: &Layered, arg: &clap::Arg) -> String {
    if layered.from_file.contains(id) {
        return "config file".into();
    }
    match agent.value_source(id) {
        Some(ValueSource::CommandLine) => "command line".into(),
        Some(ValueSource::EnvVariable) => arg
            .get_env()
            .map(|name| format!("environment ({})", name.to_string_lossy()))
            .unwrap_or_else(|| "environment".into()),
        _ => "default".into(),
    }
}

/// A flag's effective value as TOML: booleans and numbers bare, text quoted, repeatable flags
/// as arrays.
fn render_value(agent: &ArgMatches, id: &str, action: &ArgAction) -> Option<String> {
    if matches!(action, ArgAction::SetTrue) {
        return Some(agent.get_flag(id).to_string());
    }
    let raw: Vec<String> = agent
        .get_raw(id)?
        .map(|value| value.to_string_lossy().into_owned())
        .collect();
    let one = |text: &String| match text.parse::<i64>() {
        Ok(number) => number.to_string(),
        Err(_) => toml::Value::String(text.clone()).to_string(),
    };
    match action {
        ArgAction::Append => Some(format!(
            "[{}]",
            raw.iter().map(one).collect::<Vec<_>>().join(", ")
        )),
        _ => raw.first().map(one),
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use clap::{FromArgMatches as _, Parser as _};

    use super::*;

    fn file(text: &str) -> tempfile::NamedTempFile {
        let mut file = tempfile::NamedTempFile::new().expect("temp file");
        file.write_all(text.as_bytes()).expect("write");
        file
    }

    fn argv(words: &[&str]) -> Vec<OsString> {
        words.iter().map(OsString::from).collect()
    }

    fn agent_args(layered: &Layered) -> super::super::AgentArgs {
        let matches = Cli::command()
            .try_get_matches_from(&layered.argv)
            .expect("parses");
        let cli = Cli::from_arg_matches(&matches).expect("typed");
        match cli.command {
            super::super::Command::Agent(args) => *args,
            other => panic!("not the agent: {other:?}"),
        }
    }

    #[test]
    fn file_values_apply_under_the_command_line() {
        let config = file(
            "metrics_addr = \"127.0.0.1:9999\"\nmanagers = 5\nno-mdns = true\n\
             join = [\"/ip4/10.0.0.5/tcp/7946\"]\nlabel = [\"zone=eu\", \"disk=ssd\"]\n",
        );
        let path = config.path().to_str().expect("utf-8 path");
        let layered = layer(argv(&[
            "shoal",
            "agent",
            "--config",
            path,
            "--managers",
            "3",
        ]))
        .expect("layered");
        let args = agent_args(&layered);
        assert_eq!(args.managers, 3, "the command line wins");
        assert_eq!(args.metrics_addr, "127.0.0.1:9999");
        assert!(args.no_mdns);
        assert_eq!(args.join, vec!["/ip4/10.0.0.5/tcp/7946".to_string()]);
        assert_eq!(args.labels, vec!["zone=eu".to_string(), "disk=ssd".into()]);
        assert!(layered.from_file.contains("metrics_addr"));
        assert!(!layered.from_file.contains("managers"));
    }

    #[test]
    fn bad_files_say_what_is_wrong() {
        let cases = [
            ("nosuch = 1\n", "unknown key `nosuch`"),
            ("token = \"SHOAL1-x\"\n", "token_file"),
            ("no_mdns = \"yes\"\n", "takes true or false"),
            ("join = [[1]]\n", "takes a string"),
            ("managers = \n", "not valid TOML"),
        ];
        for (text, expected) in cases {
            let config = file(text);
            let path = config.path().to_str().expect("utf-8 path");
            let error = layer(argv(&["shoal", "agent", "--config", path]))
                .expect_err(text)
                .to_string();
            assert!(error.contains(expected), "{text:?}: {error}");
        }
        let missing = layer(argv(&[
            "shoal",
            "agent",
            "--config",
            "/nonexistent/shoal.toml",
        ]));
        assert!(missing.is_err_and(|e| e.to_string().contains("/nonexistent/shoal.toml")));
    }

    #[test]
    fn a_value_the_flag_refuses_is_refused_as_the_flag_would() {
        let config = file("managers = \"many\"\n");
        let path = config.path().to_str().expect("utf-8 path");
        let layered = layer(argv(&["shoal", "agent", "--config", path])).expect("layered");
        let parsed = Cli::command().try_get_matches_from(&layered.argv);
        assert!(parsed.is_err_and(|e| e.to_string().contains("many")));
    }

    #[test]
    fn the_systemd_unit_runs_a_valid_command_line() {
        let unit = include_str!("../../../contrib/shoal.service");
        let exec = unit
            .lines()
            .find_map(|line| line.strip_prefix("ExecStart="))
            .expect("an ExecStart line");
        let mut words: Vec<&str> = exec.split_whitespace().collect();
        assert!(words[0].ends_with("/shoal"), "{exec}");
        words[0] = "shoal";
        let parsed = Cli::try_parse_from(&words);
        assert!(parsed.is_ok(), "{exec}: {parsed:?}");
    }

    #[test]
    fn other_commands_pass_through() {
        let words = argv(&["shoal", "service", "ls"]);
        assert_eq!(layer(words.clone()).expect("unchanged").argv, words);
    }

    #[test]
    fn print_config_shows_every_setting_and_its_source_but_never_the_token() {
        let config = file("metrics_addr = \"127.0.0.1:9999\"\n");
        let path = config.path().to_str().expect("utf-8 path");
        let layered = layer(argv(&[
            "shoal",
            "agent",
            "--config",
            path,
            "--managers",
            "5",
            "--token",
            "SHOAL1-secret",
            "--print-config",
        ]))
        .expect("layered");
        let matches = Cli::command()
            .try_get_matches_from(&layered.argv)
            .expect("parses");
        let (_, agent) = matches.subcommand().expect("agent");
        let text = render_effective(agent, &layered);
        assert!(
            text.contains("metrics_addr = \"127.0.0.1:9999\"  # config file"),
            "{text}"
        );
        assert!(text.contains("managers = 5  # command line"), "{text}");
        assert!(text.contains("down_grace = \"2s\"  # default"), "{text}");
        assert!(
            text.contains("# token: command line (never printed)"),
            "{text}"
        );
        assert!(!text.contains("secret"), "{text}");
        // What it prints is itself a config file.
        let printed: toml::Table = text.parse().expect("TOML");
        assert_eq!(printed["managers"].as_integer(), Some(5));
    }
}
