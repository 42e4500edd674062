//! Step 9: when to decide again — the next slot opening (phones to release) or closing
//! (missed phones to re-plan), or the next planned slot; never while inactive.

use chrono::{DateTime, Utc};

use super::kept::Assigned;
use crate::children::unix_nanos;
use crate::core::Plan;

pub(super) fn next(
    slots: &Assigned,
    plan: &Plan,
    now: DateTime<Utc>,
    active: bool,
) -> Option<DateTime<Utc>> {
    if !active {
        return None;
    }
    let now_nanos = unix_nanos(now);
    let slot_bound = slots
        .iter()
        .flat_map(|s| [s.start_nanos(), s.end_nanos()])
        .filter(|t| *t > now_nanos)
        .min()
        .map(DateTime::from_timestamp_nanos);
    slot_bound
        .into_iter()
        .chain(
            plan.sites
                .iter()
                .flat_map(|s| s.slots.iter().map(|s| s.start)),
        )
        .filter(|t| *t > now)
        .min()
}
