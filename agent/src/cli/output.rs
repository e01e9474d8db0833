//! Output for people (aligned tables) and for scripts (`--format json`).

use std::fmt::Write as _;

use serde::Serialize;
use shoal_scheduler::TaskState;

use super::client::now_ms;
use crate::control::views::TaskRow;

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

/// Prints tasks as `service ps` and `node ps` show them: a table with their age and, for
/// those that did not run, why; or JSON.
pub fn print_tasks(rows: &[TaskRow], format: Format) -> anyhow::Result<()> {
    if format == Format::Json {
        return print_json(&rows);
    }
    let now = now_ms();
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|row| {
            let current = format!("{:?} {}", row.state, age(now, row.since.0));
            let error = match row.state {
                TaskState::Failed
                | TaskState::Rejected
                | TaskState::Orphaned
                | TaskState::Pending => row.message.clone(),
                _ => String::new(),
            };
            vec![
                row.id.clone(),
                row.name.clone(),
                row.image.clone(),
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
    print!("{}", table(&headers, &cells));
    Ok(())
}

#[cfg(test)]
mod tests {
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
}
