//! The cluster's recent events on this agent: a bounded ring filled as the state machine applies
//! the log (see [`shoal_scheduler::events`]) and with the leader changes this agent sees.
//!
//! Events are ordered by their cursor (log index, then place within the index) and are read
//! after a cursor, so a client resumes where it stopped on any manager. The ring keeps the
//! newest [`EVENT_RING_CAPACITY`] events; a reader whose cursor is older than what the ring
//! still holds (or than the snapshot this agent started from) is told that it missed some.

use std::collections::VecDeque;
use std::fmt;
use std::str::FromStr;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use shoal_scheduler::events::Event;
use tokio::sync::watch;

/// How many events an agent keeps (about 200 bytes each).
pub const EVENT_RING_CAPACITY: usize = 8192;

/// Where a reader is in the event stream: after the event at `index.seq`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct EventCursor {
    /// The log index.
    pub index: u64,
    /// The place among that index's events.
    pub seq: u32,
}

impl EventCursor {
    /// The cursor of `event` (reading after it skips it).
    pub fn of(event: &Event) -> Self {
        EventCursor {
            index: event.index,
            seq: event.seq,
        }
    }

    /// After every event of log index `index` (and of the indexes before it).
    pub fn after_index(index: u64) -> Self {
        EventCursor {
            index,
            seq: u32::MAX,
        }
    }
}

impl fmt::Display for EventCursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.seq == u32::MAX {
            write!(f, "{}", self.index)
        } else {
            write!(f, "{}.{}", self.index, self.seq)
        }
    }
}

impl FromStr for EventCursor {
    type Err = String;

    /// `N` (after every event of index N) or `N.K` (after the K-th event of index N).
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || format!("bad event cursor {text:?}: want an index N or N.K");
        match text.split_once('.') {
            None => Ok(EventCursor::after_index(text.parse().map_err(|_| bad())?)),
            Some((index, seq)) => Ok(EventCursor {
                index: index.parse().map_err(|_| bad())?,
                seq: seq.parse().map_err(|_| bad())?,
            }),
        }
    }
}

/// A page of events read after a cursor.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EventPage {
    /// The events, oldest first.
    pub events: Vec<Event>,
    /// The cursor to read after next time (the last event's, or the one given if none).
    pub next: EventCursor,
    /// Whether events between the given cursor and the first returned were dropped (the ring
    /// overflowed, or this agent started from a snapshot past the cursor).
    pub truncated: bool,
    /// Whether more events after `next` are held already (ask again at once).
    #[serde(default)]
    pub more: bool,
}

struct Ring {
    events: VecDeque<Event>,
    /// Every event at or before this cursor is unknown here.
    horizon: Option<EventCursor>,
}

/// The ring and a watch that counts what was pushed.
pub(crate) struct EventLog {
    ring: Mutex<Ring>,
    pushed: watch::Sender<u64>,
}

impl EventLog {
    pub(crate) fn new() -> Self {
        EventLog {
            ring: Mutex::new(Ring {
                events: VecDeque::new(),
                horizon: None,
            }),
            pushed: watch::channel(0).0,
        }
    }

    fn ring(&self) -> std::sync::MutexGuard<'_, Ring> {
        match self.ring.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// Appends events (in cursor order, after every event already held).
    pub(crate) fn push(&self, events: impl IntoIterator<Item = Event>) {
        let mut count = 0;
        {
            let mut ring = self.ring();
            for event in events {
                if ring.events.len() == EVENT_RING_CAPACITY
                    && let Some(dropped) = ring.events.pop_front()
                {
                    ring.horizon = Some(EventCursor::of(&dropped));
                }
                ring.events.push_back(event);
                count += 1;
            }
        }
        if count > 0 {
            self.pushed.send_modify(|n| *n += count);
        }
    }

    /// Pushes an event that is not from the log (a leader change) at applied index `index`,
    /// after that index's own events.
    pub(crate) fn push_local(&self, index: u64, mut event: Event) {
        event.index = index;
        event.seq = {
            let ring = self.ring();
            match ring.events.back() {
                Some(last) if last.index == index => last.seq.saturating_add(1),
                _ => 0,
            }
        };
        self.push([event]);
    }

    /// Forgets every event up to log index `index`: this agent's state now starts from a
    /// snapshot there, and the events before it were never applied here.
    pub(crate) fn start_after(&self, index: u64) {
        let mut ring = self.ring();
        let horizon = EventCursor::after_index(index);
        ring.events.retain(|e| EventCursor::of(e) > horizon);
        if ring.horizon.is_none_or(|h| h < horizon) {
            ring.horizon = Some(horizon);
        }
    }

    /// Up to `limit` events after `after`.
    pub(crate) fn page(&self, after: EventCursor, limit: usize) -> EventPage {
        let ring = self.ring();
        let start = ring.events.partition_point(|e| EventCursor::of(e) <= after);
        let events: Vec<Event> = ring.events.range(start..).take(limit).cloned().collect();
        EventPage {
            more: start + events.len() < ring.events.len(),
            next: events.last().map_or(after, EventCursor::of),
            truncated: ring.horizon.is_some_and(|h| after < h),
            events,
        }
    }

    /// The cursor after the newest event held (reading after it waits for new events).
    pub(crate) fn end(&self) -> EventCursor {
        let ring = self.ring();
        ring.events
            .back()
            .map(EventCursor::of)
            .or(ring.horizon)
            .unwrap_or_default()
    }

    /// A watch that changes whenever events are pushed.
    pub(crate) fn subscribe(&self) -> watch::Receiver<u64> {
        self.pushed.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use shoal_scheduler::Timestamp;
    use shoal_scheduler::events::EventKind;

    use super::*;

    fn event(index: u64, seq: u32) -> Event {
        Event {
            index,
            seq,
            time: Timestamp(index),
            kind: EventKind::ClusterSettingsUpdated,
        }
    }

    #[test]
    fn pages_resume_after_a_cursor_and_say_what_was_dropped() {
        let log = EventLog::new();
        log.push((1..=3).flat_map(|i| [event(i, 0), event(i, 1)]));
        let page = log.page(EventCursor::after_index(1), 3);
        let got: Vec<_> = page.events.iter().map(|e| (e.index, e.seq)).collect();
        assert_eq!(got, [(2, 0), (2, 1), (3, 0)]);
        assert_eq!(page.next.to_string(), "3.0");
        assert!(!page.truncated && page.more);
        let rest = log.page(page.next, 10);
        assert_eq!(rest.events.len(), 1);
        assert_eq!(log.page(rest.next, 10).events, []);
        log.push_local(3, event(0, 0));
        let leader = log.page(rest.next, 10);
        assert_eq!((leader.events[0].index, leader.events[0].seq), (3, 2));
        assert_eq!(log.end(), EventCursor { index: 3, seq: 2 });
        log.start_after(2);
        assert!(log.page(EventCursor::default(), 10).truncated);
        assert!(!log.page(EventCursor::after_index(2), 10).truncated);
    }

    #[test]
    fn the_ring_is_bounded() {
        let log = EventLog::new();
        let total = u64::try_from(EVENT_RING_CAPACITY).unwrap_or(0) + 10;
        log.push((1..=total).map(|i| event(i, 0)));
        let page = log.page(EventCursor::default(), usize::MAX);
        assert_eq!(page.events.len(), EVENT_RING_CAPACITY);
        assert!(page.truncated);
        assert_eq!(page.events[0].index, 11);
    }

    #[test]
    fn cursors_parse_and_print() {
        for text in ["7", "7.3"] {
            let c: EventCursor = text.parse().unwrap_or_default();
            assert_eq!(c.to_string(), text);
        }
        for bad in ["", "x", "1.", "1.2.3", "-1"] {
            assert!(bad.parse::<EventCursor>().is_err(), "{bad}");
        }
    }
}
