//! `shoal service logs SERVICE|TASK`: the output of a service's tasks on every node, each line
//! labelled `service.slot.task@node`, stdout to stdout and stderr to stderr. A node that is
//! gone is named in a warning and the rest is printed: the command never hangs on it.

use std::collections::HashMap;
use std::time::Duration;

use clap::Args;

use super::ClientOptions;
use super::client::{client, now_ms};
use crate::control::api::{self, LogsQuery};
use crate::control::logs::{ServiceLogLine, ServiceLogs};
use crate::executor::LogStream;

/// How often `--follow` asks for new lines.
const FOLLOW_EVERY: Duration = Duration::from_secs(1);
/// How far back each `--follow` round looks (engines' clocks may lag a little); lines seen
/// already are not printed again.
const FOLLOW_OVERLAP_SECS: u64 = 10;

/// `service logs`.
#[derive(Debug, Args)]
pub struct LogsArgs {
    /// The service (name or id), or one task (its id or a unique prefix).
    pub target: String,
    /// Keep printing new lines as they are written.
    #[arg(short, long)]
    pub follow: bool,
    /// Only the last N lines of each task (`all` for everything the engine holds).
    #[arg(long, short = 'n', default_value = "all", value_parser = parse_tail)]
    pub tail: Tail,
    /// Only lines written in the last DURATION (`30s`, `10m`, `2h`).
    #[arg(long, value_name = "DURATION")]
    pub since: Option<String>,
    /// Print each line's time.
    #[arg(short, long)]
    pub timestamps: bool,
    /// Leave the task id out of each line's label.
    #[arg(long)]
    pub no_task_ids: bool,
    #[command(flatten)]
    client: ClientOptions,
}

/// How many of each task's last lines to show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tail(pub Option<usize>);

fn parse_tail(text: &str) -> Result<Tail, String> {
    if text == "all" {
        return Ok(Tail(None));
    }
    text.parse()
        .map(|n| Tail(Some(n)))
        .map_err(|_| format!("--tail {text:?}: give a number of lines, or `all`"))
}

/// Runs the command.
pub async fn run(args: LogsArgs) -> anyhow::Result<()> {
    let since_secs = match &args.since {
        Some(text) => {
            let ago = shoal_scheduler::parse::duration_ms(text)
                .map_err(|e| anyhow::anyhow!("--since {text:?}: {e} (for example 30s, 10m)"))?;
            Some(now_ms().saturating_sub(ago) / 1000)
        }
        None => None,
    };
    let c = client(&args.client);
    let path = api::service_logs(&args.target);
    let mut query = LogsQuery {
        tail: args.tail.0,
        since_secs,
        task: None,
    };
    let mut seen = SeenLines::default();
    let mut warned: Vec<String> = Vec::new();
    loop {
        let started = now_ms() / 1000;
        let url = format!("{path}?{}", serde_urlencoded::to_string(&query)?);
        let logs: ServiceLogs = c.get(&url).await?;
        for warning in &logs.warnings {
            if !warned.contains(warning) {
                eprintln!("warning: {warning}");
                warned.push(warning.clone());
            }
        }
        for line in logs.lines.iter().filter(|l| seen.first_time(l)) {
            print_line(line, &args);
        }
        if !args.follow {
            return Ok(());
        }
        query.tail = None;
        query.since_secs = Some(started.saturating_sub(FOLLOW_OVERLAP_SECS));
        seen.forget_before(query.since_secs.unwrap_or(0));
        tokio::time::sleep(FOLLOW_EVERY).await;
    }
}

/// Lines printed already (while following, rounds overlap), with the round's clock second.
#[derive(Default)]
struct SeenLines {
    lines: HashMap<(u64, String, String), u64>,
}

impl SeenLines {
    fn first_time(&mut self, line: &ServiceLogLine) -> bool {
        let key = (line.task.0, line.line.time.clone(), line.line.text.clone());
        self.lines.insert(key, now_ms() / 1000).is_none()
    }

    fn forget_before(&mut self, secs: u64) {
        self.lines.retain(|_, at| *at + FOLLOW_OVERLAP_SECS >= secs);
    }
}

fn print_line(line: &ServiceLogLine, args: &LogsArgs) {
    let text = format_line(line, args.timestamps, args.no_task_ids);
    match line.line.stream {
        LogStream::Stdout => println!("{text}"),
        LogStream::Stderr => eprintln!("{text}"),
    }
}

/// `web.1.t00000000002@host    | text`, with the time first when asked.
pub fn format_line(line: &ServiceLogLine, timestamps: bool, no_task_ids: bool) -> String {
    let slot = line.slot.map_or_else(String::new, |s| format!(".{s}"));
    let task = if no_task_ids {
        String::new()
    } else {
        format!(".{}", line.task)
    };
    let time = if timestamps {
        format!("{} ", line.line.time)
    } else {
        String::new()
    };
    format!(
        "{time}{}{slot}{task}@{}    | {}",
        line.service, line.node, line.line.text
    )
}
