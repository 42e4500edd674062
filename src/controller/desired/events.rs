//! Step 8: events — gate decisions, and transitions into states an operator must hear about
//! (once, not on every reconcile).

use super::EventIntent;
use super::excluded_message;
use super::gates::Gates;
use super::vocabulary::{ConditionType, Phase, Reason};
use crate::api::PhoneScheduleStatus;
use crate::controller::gating::GateEvent;
use crate::core::Schedule;
use crate::selection::Excluded;

pub(super) fn collect(
    old: &PhoneScheduleStatus,
    new: &PhoneScheduleStatus,
    schedule: &Schedule,
    gates: &Gates,
    excluded: &[Excluded],
    conflict: Option<&str>,
) -> Vec<EventIntent> {
    let rollout = &schedule.rollout;
    let mut events: Vec<EventIntent> = gates
        .events
        .iter()
        .map(|e| match e {
            GateEvent::StageReleased { stage, upgraded, total } => EventIntent {
                warning: false,
                reason: Reason::StageReleased.as_str(),
                note: format!(
                    "released stage {} ({}) after {upgraded}/{total} phones of the earlier stages upgraded",
                    stage + 1,
                    rollout.stages.get(*stage as usize).map_or("", |s| s.name.as_str())
                ),
            },
            GateEvent::ModelHalted { model, failed, total } => EventIntent {
                warning: true,
                reason: Reason::RolloutHalted.as_str(),
                note: format!(
                    "halted model {model}: {failed}/{total} phones failed, over the {}% threshold",
                    rollout.failure_threshold.get()
                ),
            },
        })
        .collect();
    if let Some(message) = conflict {
        events.extend(transition_event(
            old,
            new,
            Reason::PhoneConflict,
            true,
            message,
        ));
    }
    if let Some(first) = excluded.first() {
        events.extend(transition_event(
            old,
            new,
            first.reason.into(),
            true,
            &excluded_message(excluded),
        ));
    }
    let completed = Some(Phase::Completed.as_str());
    if new.phase.as_deref() == completed && old.phase.as_deref() != completed {
        let total = new.counts.as_ref().map_or(0, |c| c.total);
        events.push(EventIntent {
            warning: false,
            reason: Reason::RolloutComplete.as_str(),
            note: format!(
                "all {total} phones run firmware {}",
                schedule
                    .firmware
                    .as_ref()
                    .map_or("", |f| f.version.as_str())
            ),
        });
    }
    events
}

/// An event when the Degraded condition newly takes `reason` (not on every reconcile).
pub(super) fn transition_event(
    old: &PhoneScheduleStatus,
    new: &PhoneScheduleStatus,
    reason: Reason,
    warning: bool,
    note: &str,
) -> Vec<EventIntent> {
    let had = |s: &PhoneScheduleStatus| {
        s.conditions.iter().any(|c| {
            c.type_ == ConditionType::Degraded.as_str()
                && c.reason == reason.as_str()
                && c.message == note
        })
    };
    if had(new) && !had(old) {
        vec![EventIntent {
            warning,
            reason: reason.as_str(),
            note: note.to_owned(),
        }]
    } else {
        Vec::new()
    }
}
