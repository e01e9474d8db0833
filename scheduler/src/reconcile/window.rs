//! The sliding window of a rolling update: how many outdated slots may begin their replacement
//! now. Pure arithmetic on what the update looks like at this instant.
//!
//! An update with parallelism `P` has `P` lanes. A lane is busy while its replacement is in flight
//! (the new task does not run yet: it waits for its stop-first predecessor, is being placed or
//! prepared, or starts and is not healthy yet), and then for `delay` after the new task started
//! running. Every free lane takes the next outdated slot at once, so there are never more than
//! `P` replacements in flight and no lane waits for the others, unlike lockstep batches.

use crate::model::Timestamp;

/// What the window allows now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Admission {
    /// Replacements that may begin now.
    pub start: usize,
    /// When a lane frees up by itself (the `delay` after a start ends), if one is cooling down.
    pub wake_at: Option<Timestamp>,
}

/// The lanes of an update with `parallelism` (0 = all at once, no limit).
pub fn lanes(parallelism: u64) -> usize {
    if parallelism == 0 {
        usize::MAX
    } else {
        usize::try_from(parallelism).unwrap_or(usize::MAX)
    }
}

/// How many replacements may begin at `now`: `in_flight` replacements are under way, and new
/// tasks of the update started running at `started` (a lane stays busy for `delay_ms` after
/// each).
pub fn admit(
    parallelism: u64,
    delay_ms: u64,
    in_flight: usize,
    started: &[Timestamp],
    now: Timestamp,
) -> Admission {
    let cooling_until: Vec<Timestamp> = started
        .iter()
        .map(|s| s.plus_millis(delay_ms))
        .filter(|end| *end > now)
        .collect();
    let busy = in_flight.saturating_add(cooling_until.len());
    Admission {
        start: lanes(parallelism).saturating_sub(busy),
        wake_at: cooling_until.into_iter().min(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_lanes_take_slots_at_once() {
        let a = admit(5, 0, 3, &[Timestamp(1), Timestamp(2)], Timestamp(10));
        assert_eq!(
            a,
            Admission {
                start: 2,
                wake_at: None
            }
        );
        assert_eq!(admit(5, 0, 5, &[], Timestamp(10)).start, 0);
        assert_eq!(
            admit(5, 0, 7, &[], Timestamp(10)).start,
            0,
            "restarts may overfill"
        );
    }

    #[test]
    fn a_lane_rests_for_the_delay_after_its_task_started() {
        let a = admit(2, 100, 1, &[Timestamp(50), Timestamp(5)], Timestamp(120));
        assert_eq!(
            a,
            Admission {
                start: 0,
                wake_at: Some(Timestamp(150))
            }
        );
        let a = admit(2, 100, 0, &[Timestamp(50), Timestamp(5)], Timestamp(120));
        assert_eq!(a.start, 1);
        assert_eq!(admit(2, 100, 0, &[Timestamp(50)], Timestamp(150)).start, 2);
    }

    #[test]
    fn parallelism_zero_is_unbounded() {
        assert_eq!(lanes(0), usize::MAX);
        assert!(admit(0, 0, 1_000, &[], Timestamp(0)).start > 1_000_000);
    }
}
