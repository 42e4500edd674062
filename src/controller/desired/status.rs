//! Step 7: the phase and the three conditions, and with the counts the whole status.

use chrono::{DateTime, Utc};

use super::counts::Counts;
use super::gates::Gates;
use super::vocabulary::{ConditionType, Phase, Reason};
use super::{cond, excluded_message, halted_message};
use crate::api::PhoneScheduleStatus;
use crate::core::Fleet;
use crate::selection::Excluded;

/// A condition's value as decided: status, reason, message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Verdict {
    pub status: bool,
    pub reason: Reason,
    pub message: String,
}

fn verdict(status: bool, reason: Reason, message: impl Into<String>) -> Verdict {
    Verdict {
        status,
        reason,
        message: message.into(),
    }
}

/// The phase, in order of precedence.
pub(super) fn phase(fleet: &Fleet, gates: &Gates, counts: &Counts) -> Phase {
    if fleet.sites.is_empty() {
        Phase::Pending
    } else if fleet.schedule.firmware.is_none() {
        Phase::Idle
    } else if !gates.halted.is_empty() {
        Phase::Halted
    } else if counts.tally.remaining == 0 {
        Phase::Completed
    } else if fleet.schedule.rollout.paused {
        Phase::Paused
    } else {
        Phase::Progressing
    }
}

/// Ready: every selected site has its files (false when no site is selected).
pub(super) fn ready(fleet: &Fleet, excluded: &[Excluded]) -> Verdict {
    if fleet.sites.is_empty() {
        let message = if excluded.is_empty() {
            "the siteSelector matches no PhoneSite in this namespace".to_owned()
        } else {
            excluded_message(excluded)
        };
        return verdict(false, Reason::NoMatchingSites, message);
    }
    let phones: usize = fleet.sites.iter().map(|s| s.phones.len()).sum();
    let sites = fleet.sites.len();
    verdict(
        true,
        Reason::Reconciled,
        format!("{phones} phones in {sites} sites have their files"),
    )
}

/// Progressing: the rollout is handing out slots.
pub(super) fn progressing(phase: Phase, fleet: &Fleet, gates: &Gates, counts: &Counts) -> Verdict {
    let rollout = &fleet.schedule.rollout;
    let t = counts.tally;
    match phase {
        Phase::Progressing => verdict(
            true,
            Reason::RolloutProgressing,
            format!(
                "stage {} of {} released; {}/{} upgraded",
                gates.released + 1,
                rollout.stages.len(),
                t.upgraded,
                t.total
            ),
        ),
        Phase::Paused => verdict(false, Reason::RolloutPaused, "spec.rollout.paused is true"),
        Phase::Completed => verdict(
            false,
            Reason::RolloutComplete,
            format!("{}/{} upgraded", t.upgraded, t.total),
        ),
        Phase::Halted => verdict(
            t.remaining > 0 && !rollout.paused,
            Reason::RolloutHalted,
            halted_message(&gates.halted),
        ),
        Phase::Idle => verdict(
            false,
            Reason::NoFirmware,
            "no firmware set: steady-state configs only",
        ),
        Phase::Pending | Phase::Invalid => verdict(false, Reason::NoMatchingSites, "no sites"),
    }
}

/// Degraded: a halt, phones another namespace claims too, or sites (or phones) left out.
pub(super) fn degraded(gates: &Gates, excluded: &[Excluded], conflict: Option<&str>) -> Verdict {
    if !gates.halted.is_empty() {
        verdict(true, Reason::RolloutHalted, halted_message(&gates.halted))
    } else if let Some(message) = conflict {
        verdict(true, Reason::PhoneConflict, message)
    } else if let Some(first) = excluded.first() {
        verdict(true, first.reason.into(), excluded_message(excluded))
    } else {
        verdict(
            false,
            Reason::AsExpected,
            "no conflicts, invalid sites or halts",
        )
    }
}

/// The conditions, in their fixed order, keeping unchanged transition times from `old`.
pub(super) fn conditions(
    old: &PhoneScheduleStatus,
    verdicts: [(ConditionType, Verdict); 3],
    now: DateTime<Utc>,
) -> Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
    verdicts
        .into_iter()
        .map(|(type_, v)| {
            cond(
                &old.conditions,
                type_.as_str(),
                v.status,
                v.reason.as_str(),
                &v.message,
                now,
            )
        })
        .collect()
}

/// The whole status.
#[allow(clippy::too_many_arguments)] // one input per pipeline step that decides a part of it
pub(super) fn build(
    old: &PhoneScheduleStatus,
    generation: Option<i64>,
    fleet: &Fleet,
    excluded: &[Excluded],
    conflict: Option<&str>,
    gates: &Gates,
    counts: Counts,
    now: DateTime<Utc>,
) -> PhoneScheduleStatus {
    let phase = phase(fleet, gates, &counts);
    let verdicts = [
        (ConditionType::Ready, ready(fleet, excluded)),
        (
            ConditionType::Progressing,
            progressing(phase, fleet, gates, &counts),
        ),
        (ConditionType::Degraded, degraded(gates, excluded, conflict)),
    ];
    let rollout = &fleet.schedule.rollout;
    let t = counts.tally;
    PhoneScheduleStatus {
        observed_generation: generation,
        phase: Some(phase.as_str().to_owned()),
        stage: gates
            .rollout
            .as_ref()
            .and_then(|s| rollout.stages.get(s.released_stage as usize))
            .map(|s| s.name.clone()),
        progress: fleet
            .schedule
            .firmware
            .as_ref()
            .map(|_| format!("{}/{}", t.upgraded, t.total)),
        counts: Some(t.phone_counts()),
        next_window: counts.next_window,
        predicted_completion: counts.completion,
        sites: counts.sites,
        stages: counts.stages,
        rollout: gates.rollout.clone(),
        conditions: conditions(old, verdicts, now),
    }
}
