//! Step 9: when to decide again — the next slot opening (phones to release) or closing
//! (missed phones to re-plan), or the next planned slot; never while inactive.

use chrono::{DateTime, Utc};

use super::kept::Assigned;
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
    slots
        .iter()
        .flat_map(|s| [s.start(), s.end()])
        .chain(
            plan.sites
                .iter()
                .flat_map(|s| s.slots.iter().map(|s| s.start)),
        )
        .filter(|t| *t > now)
        .min()
}
