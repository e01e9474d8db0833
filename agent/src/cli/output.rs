//! Output for people (aligned tables) and for scripts (`--format json`).

use std::fmt::Write as _;

use serde::Serialize;
use shoal_scheduler::TaskState;

use super::client::now_ms;
use crate::control::filters::{self, TaskFilter};
use crate::control::views::{TaskRow, history_names};

/// How a command prints its result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Format {
    /// An aligned table.
    #[default]
    Table,
    /// JSON, for scripts.
    Json,
}

/// Prints `value` as pretty JSON.
pub fn print_json<T: Serialize>(value: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// Renders rows under headers, columns padded to their widest cell.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let header_cells: Vec<String> = headers.iter().map(|h| h.to_string()).collect();
    for row in std::iter::once(&header_cells).chain(rows) {
        let mut line = String::new();
        for (i, (cell, width)) in row.iter().zip(&widths).enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                let _ = write!(line, "{cell:<width$}   ");
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// Prints a listing the way every `ls` command does: only ids with `--quiet`, JSON with
/// `--format json`, otherwise a table of `cells` under `headers`.
pub fn print_listing<T: Serialize>(
    rows: &[T],
    format: Format,
    quiet: bool,
    id: impl Fn(&T) -> String,
    headers: &[&str],
    cells: impl Fn(&T) -> Vec<String>,
) -> anyhow::Result<()> {
    if quiet {
        rows.iter().for_each(|row| println!("{}", id(row)));
        return Ok(());
    }
    if format == Format::Json {
        return print_json(&rows);
    }
    let cells: Vec<Vec<String>> = rows.iter().map(cells).collect();
    print!("{}", table(headers, &cells));
    Ok(())
}

/// `3 seconds ago`-style age of a timestamp.
pub fn age(now_ms: u64, then_ms: u64) -> String {
    let seconds = now_ms.saturating_sub(then_ms) / 1000;
    match seconds {
        0 => "just now".into(),
        1..=59 => format!("{seconds} seconds ago"),
        60..=3599 => format!("{} minutes ago", seconds / 60),
        3600..=86_399 => format!("{} hours ago", seconds / 3600),
        _ => format!("{} days ago", seconds / 86_400),
    }
}

/// How `service ps` and `node ps` choose and print tasks.
#[derive(Debug, Clone, clap::Args)]
pub struct TaskListArgs {
    /// Only matching tasks: `desired-state=running|shutdown|accepted`, `node=NODE` (id,
    /// hostname or id prefix), `id=PREFIX`. A key repeated matches any of its values; different
    /// keys must all match.
    #[arg(short, long, value_name = "KEY=VALUE")]
    pub filter: Vec<String>,
    /// Only tasks that are meant to run: the same as `--filter desired-state=running --filter
    /// desired-state=accepted`.
    #[arg(long)]
    pub running: bool,
    /// Print only the tasks' ids.
    #[arg(short, long)]
    pub quiet: bool,
    /// Show ids, images and errors in full.
    #[arg(long)]
    pub no_trunc: bool,
    /// Table for people, JSON for scripts.
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
}

impl TaskListArgs {
    /// The query string that asks the agent for these tasks; a bad filter fails here, before
    /// anything is sent.
    pub fn query(&self) -> anyhow::Result<String> {
        let mut filters = self.filter.clone();
        if self.running {
            filters.extend(["desired-state=running", "desired-state=accepted"].map(String::from));
        }
        TaskFilter::parse(&filters)?;
        Ok(filters::query(&filters))
    }

    /// Prints `rows`: their ids with `--quiet`, JSON with `--format json`, otherwise a table
    /// that shows each slot's history under its task.
    pub fn print(&self, rows: &[TaskRow]) -> anyhow::Result<()> {
        if self.quiet {
            for row in rows {
                println!("{}", shorten(&row.id, ID_WIDTH, self.no_trunc));
            }
            return Ok(());
        }
        if self.format == Format::Json {
            return print_json(&rows);
        }
        print!("{}", render_tasks(rows, self.no_trunc, now_ms()));
        Ok(())
    }
}

/// Widest id a table shows without `--no-trunc` (docker's 12).
const ID_WIDTH: usize = 12;
/// Widest error a table shows without `--no-trunc`.
const ERROR_WIDTH: usize = 40;

/// `text`, cut to `width` characters (the last one `…`) unless `full`.
fn shorten(text: &str, width: usize, full: bool) -> String {
    if full || text.chars().count() <= width {
        return text.to_owned();
    }
    let mut cut: String = text.chars().take(width.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

/// An image as a table shows it: without its digest unless `full`.
fn image_text(image: &str, full: bool) -> &str {
    match image.split_once('@') {
        Some((name, _digest)) if !full => name,
        _ => image,
    }
}

/// The table of `service ps` and `node ps` at time `now_ms`: each slot's history under its
/// task, as ` \_ name` ([`history_names`]); why a task did not run in ERROR.
pub fn render_tasks(rows: &[TaskRow], no_trunc: bool, now_ms: u64) -> String {
    let cells: Vec<Vec<String>> = rows
        .iter()
        .zip(history_names(rows))
        .map(|(row, name)| {
            let current = format!("{:?} {}", row.state, age(now_ms, row.since.0));
            let error = match row.state {
                TaskState::Failed
                | TaskState::Rejected
                | TaskState::Orphaned
                | TaskState::Pending => shorten(&row.message, ERROR_WIDTH, no_trunc),
                _ => String::new(),
            };
            vec![
                shorten(&row.id, ID_WIDTH, no_trunc),
                name,
                image_text(&row.image, no_trunc).to_owned(),
                row.node.clone(),
                format!("{:?}", row.desired),
                current,
                error,
            ]
        })
        .collect();
    let headers = [
        "ID",
        "NAME",
        "IMAGE",
        "NODE",
        "DESIRED STATE",
        "CURRENT STATE",
        "ERROR",
    ];
    table(&headers, &cells)
}

#[cfg(test)]
mod tests {
    use shoal_scheduler::{DesiredState, Timestamp};

    use super::*;

    #[test]
    fn table_pads_columns_to_the_widest_cell() {
        let text = table(
            &["ID", "NAME"],
            &[
                vec!["a".into(), "web".into()],
                vec!["long-id".into(), "x".into()],
            ],
        );
        assert_eq!(text, "ID        NAME\na         web\nlong-id   x\n");
    }

    #[test]
    fn ages_read_like_docker() {
        assert_eq!(age(10_000, 10_000), "just now");
        assert_eq!(age(75_000, 10_000), "1 minutes ago");
        assert_eq!(age(4_000_000, 0), "1 hours ago");
    }

    fn row(id: &str, name: &str, desired: DesiredState, state: TaskState) -> TaskRow {
        TaskRow {
            id: id.into(),
            name: name.into(),
            image: "web:2@sha256:abcdef".into(),
            node: "n1".into(),
            desired,
            state,
            since: Timestamp(0),
            message: String::new(),
            exit_code: None,
            current: true,
        }
    }

    #[test]
    fn a_slots_history_is_indented_under_its_task() {
        let mut failed = row(
            "t00000000003",
            "web.1",
            DesiredState::Shutdown,
            TaskState::Failed,
        );
        failed.message = "exit code 1: the container stopped on its own, too soon".into();
        let rows = [
            row(
                "t00000000005",
                "web.1",
                DesiredState::Running,
                TaskState::Running,
            ),
            failed,
            row(
                "t00000000004",
                "web.2",
                DesiredState::Running,
                TaskState::Running,
            ),
        ];
        let text = render_tasks(&rows, false, 1_000);
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines[1].starts_with("t00000000005   web.1       web:2 "),
            "{text}"
        );
        assert!(
            lines[2].starts_with("t00000000003    \\_ web.1   web:2 "),
            "{text}"
        );
        assert!(
            lines[3].starts_with("t00000000004   web.2       web:2 "),
            "{text}"
        );
        assert!(
            lines[2].ends_with("exit code 1: the container stopped on i…"),
            "{text}"
        );
        let full = render_tasks(&rows, true, 1_000);
        assert!(full.contains("web:2@sha256:abcdef"), "{full}");
        assert!(full.contains("stopped on its own, too soon"), "{full}");
    }

    #[test]
    fn ps_filters_are_checked_before_they_are_sent() {
        let args = |filter: &[&str], running: bool| TaskListArgs {
            filter: filter.iter().map(|f| f.to_string()).collect(),
            running,
            quiet: false,
            no_trunc: false,
            format: Format::Table,
        };
        assert_eq!(args(&[], false).query().expect("no filter"), "");
        assert_eq!(
            args(&["node=n1"], true).query().expect("valid"),
            "?filter=node%3Dn1&filter=desired-state%3Drunning&filter=desired-state%3Daccepted"
        );
        let bad = args(&["desired-state=gone"], false).query();
        assert!(format!("{:#}", bad.expect_err("refused")).contains("running, shutdown, accepted"));
    }

    #[test]
    fn shortening_keeps_short_text_and_marks_a_cut() {
        assert_eq!(shorten("abc", 3, false), "abc");
        assert_eq!(shorten("abcd", 3, false), "ab…");
        assert_eq!(shorten("abcd", 3, true), "abcd");
        assert_eq!(image_text("a:1@sha256:00", false), "a:1");
    }
}
