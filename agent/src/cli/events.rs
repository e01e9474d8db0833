//! `shoal events`: the cluster's events as they happen (services, tasks, nodes, leaders), from
//! any agent. It follows the stream by asking its agent for the events after the last one it
//! printed, so it resumes where it stopped (`--after`), and it says when it missed some.

use std::time::Duration;

use clap::Args;
use shoal_consensus::events::EventPage;
use shoal_scheduler::events::{Event, EventKind};

use super::ClientOptions;
use super::client::{client, now_ms};
use super::output::Format;
use crate::control::api::{self, EventsQuery, MAX_EVENTS_WAIT_MS};
use crate::control::events::{END, parse_type};

/// `shoal events`.
#[derive(Debug, Args)]
pub struct EventsArgs {
    /// Show the events since this long ago (`30s`, `10m`, `2h`), from what the agent still
    /// holds; without it, only new events.
    #[arg(long, value_name = "DURATION")]
    pub since: Option<String>,
    /// Stop this long from now (`0s`: print the past events --since asks for, then exit).
    #[arg(long, value_name = "DURATION")]
    pub until: Option<String>,
    /// Resume after this cursor: the `index` (or `index.seq`) of the last event seen.
    #[arg(long, value_name = "CURSOR", conflicts_with = "since")]
    pub after: Option<String>,
    /// Only matching events: `type=service|node|task|endpoint|cluster|secret|config`, `name=NAME` (a service, also
    /// for its tasks; a node's hostname; or an id). Repeat for several types.
    #[arg(long, short = 'f', value_name = "KEY=VALUE")]
    pub filter: Vec<String>,
    /// One line per event for people, or one JSON object per line for scripts.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    #[command(flatten)]
    client: ClientOptions,
}

/// The filters as the API takes them.
fn filters(args: &EventsArgs) -> anyhow::Result<(Option<String>, Option<String>)> {
    let mut types = Vec::new();
    let mut name = None;
    for filter in &args.filter {
        match filter.split_once('=') {
            Some(("type", value)) => {
                parse_type(value).map_err(anyhow::Error::msg)?;
                types.push(value.to_owned());
            }
            Some(("name", value)) if !value.is_empty() => {
                if name.replace(value.to_owned()).is_some() {
                    anyhow::bail!("give one name= filter");
                }
            }
            _ => anyhow::bail!(
                "bad filter {filter:?}: use type=service|node|task|endpoint|cluster|secret|config or name=NAME"
            ),
        }
    }
    Ok(((!types.is_empty()).then(|| types.join(",")), name))
}

fn duration_ms(flag: &str, text: &str) -> anyhow::Result<u64> {
    shoal_scheduler::parse::duration_ms(text)
        .map_err(|e| anyhow::anyhow!("--{flag} {text:?}: {e} (for example 30s, 10m, 2h)"))
}

/// Runs the command: prints pages of events until `--until`, or until interrupted.
pub async fn run(args: EventsArgs) -> anyhow::Result<()> {
    let (types, name) = filters(&args)?;
    let now = now_ms();
    let since_ms = match &args.since {
        Some(text) => Some(now.saturating_sub(duration_ms("since", text)?)),
        None => None,
    };
    let until_ms = match &args.until {
        Some(text) => Some(now.saturating_add(duration_ms("until", text)?)),
        None => None,
    };
    if let Some(cursor) = &args.after {
        cursor
            .parse::<shoal_consensus::events::EventCursor>()
            .map_err(anyhow::Error::msg)?;
    }
    let c = client(&args.client);
    let mut after = match (&args.after, since_ms) {
        (Some(cursor), _) => Some(cursor.clone()),
        (None, Some(_)) => None,
        (None, None) => Some(END.to_owned()),
    };
    let mut warned = false;
    loop {
        let left = until_ms.map(|until| until.saturating_sub(now_ms()));
        let wait_ms = left.map_or(MAX_EVENTS_WAIT_MS, |l| l.min(MAX_EVENTS_WAIT_MS));
        let query = EventsQuery {
            after: after.clone(),
            wait_ms: Some(wait_ms),
            limit: None,
            types: types.clone(),
            name: name.clone(),
            since_ms,
        };
        let page: EventPage = c.get(&events_path(&query)?).await?;
        if page.truncated && !warned && args.after.is_some() {
            eprintln!(
                "warning: some events after {} are no longer held by the agent; showing what it has",
                after.as_deref().unwrap_or("the start")
            );
            warned = true;
        }
        for event in &page.events {
            print_event(event, args.format)?;
        }
        after = Some(page.next.to_string());
        if page.more {
            continue; // the agent holds more already: fetch them before stopping
        }
        if until_ms.is_some_and(|u| now_ms() >= u) {
            return Ok(());
        }
        if page.events.is_empty() && wait_ms == 0 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// The request path of a query.
fn events_path(query: &EventsQuery) -> anyhow::Result<String> {
    let encoded = serde_urlencoded::to_string(query)?;
    Ok(format!("{}?{encoded}", api::EVENTS))
}

fn print_event(event: &Event, format: Format) -> anyhow::Result<()> {
    match format {
        Format::Json => println!("{}", serde_json::to_string(event)?),
        Format::Table => println!("{}", event_line(event)),
    }
    Ok(())
}

/// One line for people: time, type, action, subject and what changed.
pub fn event_line(event: &Event) -> String {
    let kind = &event.kind;
    let (action, detail) = describe(kind);
    let id = kind.subject_id();
    let subject = if id.is_empty() {
        kind.subject_name().to_owned()
    } else {
        format!("{id} ({})", kind.subject_name())
    };
    format!(
        "{} {} {action} {subject}{}{detail}  [{}.{}]",
        rfc3339(event.time.0),
        kind.event_type().as_str(),
        if detail.is_empty() { "" } else { ": " },
        event.index,
        event.seq
    )
}

fn describe(kind: &EventKind) -> (&'static str, String) {
    match kind {
        EventKind::ClusterInitialised { .. } => ("init", String::new()),
        EventKind::ClusterSettingsUpdated => ("settings", String::new()),
        EventKind::LeaderElected { term, .. } => ("leader", format!("term {term}")),
        EventKind::ServiceCreated { .. } => ("create", String::new()),
        EventKind::ServiceUpdated { version, .. } => ("update", format!("version {version}")),
        EventKind::ServiceUpdateState { state, message, .. } => {
            let state = format!("{state:?}").to_lowercase();
            ("update-state", join(&state, message))
        }
        EventKind::ServiceRemoved { .. } => ("remove", String::new()),
        EventKind::NodeJoined { .. } => ("join", String::new()),
        EventKind::NodeState { from, to, .. } => {
            ("state", format!("{from:?} -> {to:?}").to_lowercase())
        }
        EventKind::NodeAvailability { availability, .. } => {
            ("availability", format!("{availability:?}").to_lowercase())
        }
        EventKind::NodeRole { role, .. } => ("role", format!("{role:?}").to_lowercase()),
        EventKind::NodeLabels { .. } => ("labels", String::new()),
        EventKind::NodeRemoved { .. } => ("remove", String::new()),
        EventKind::TaskCreated { slot, node, .. } => (
            "create",
            format!("slot {}{}", slot_text(*slot), on_node(node.as_ref())),
        ),
        EventKind::TaskState {
            from,
            to,
            desired,
            node,
            message,
            ..
        } => {
            let change = format!("{from:?} -> {to:?} (desired {desired:?})").to_lowercase();
            ("state", join(&(change + &on_node(node.as_ref())), message))
        }
        EventKind::EndpointAdded { node, .. } => ("add", on_node(node.as_ref()).trim().to_owned()),
        EventKind::EndpointRemoved { node, .. } => {
            ("remove", on_node(node.as_ref()).trim().to_owned())
        }
        EventKind::SecretCreated { .. } | EventKind::ConfigCreated { .. } => {
            ("create", String::new())
        }
        EventKind::SecretRemoved { .. } | EventKind::ConfigRemoved { .. } => {
            ("remove", String::new())
        }
    }
}

fn slot_text(slot: Option<u64>) -> String {
    slot.map_or_else(|| "-".to_owned(), |s| s.to_string())
}

fn on_node(node: Option<&shoal_scheduler::NodeId>) -> String {
    node.map_or_else(String::new, |n| {
        let id = n.to_string();
        format!(" on {}", &id[id.len().saturating_sub(8)..])
    })
}

fn join(head: &str, message: &str) -> String {
    if message.is_empty() {
        head.to_owned()
    } else {
        format!("{head}, {message}")
    }
}

/// Milliseconds since the Unix epoch as `YYYY-MM-DDTHH:MM:SS.mmmZ` (UTC).
pub fn rfc3339(ms: u64) -> String {
    let days = ms / 86_400_000;
    let of_day = ms % 86_400_000;
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        of_day / 3_600_000,
        of_day / 60_000 % 60,
        of_day / 1000 % 60,
        of_day % 1000
    )
}

/// The Gregorian date of a day count since 1970-01-01 (Howard Hinnant's civil algorithm).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_print_as_rfc3339() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(951_782_400_123), "2000-02-29T00:00:00.123Z");
        assert_eq!(rfc3339(1_796_256_000_000), "2026-12-03T00:00:00.000Z");
    }
}
