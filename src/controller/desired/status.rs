//! Step 7: the phase and the three conditions, and with the counts the whole status.

use std::borrow::Cow;

use chrono::{DateTime, Utc};

use super::counts::Counts;
use super::gates::Gates;
use super::vocabulary::{ConditionType, Phase, Reason};
use super::{cond, excluded_message, halted_message};
use crate::api::{PhoneScheduleStatus, SiteSummary};
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
        sites_omitted: None,
        stages: counts.stages,
        rollout: gates.rollout.clone(),
        conditions: conditions(old, verdicts, now),
    }
}

/// Most sites a status written to the API lists. A site's summary is ~160 bytes of JSON, and
/// etcd refuses a request over 1.5 MiB: at 10,000 sites every status write failed with
/// "request is too large" (scripts/measure-scale.sh at 1,000,000 phones).
pub const MAX_STATUS_SITES: usize = 1000;

/// The status as written to the API: at most [`MAX_STATUS_SITES`] sites, still by name, chosen
/// by what an operator looks for first (phones downloading, phones failed, unfinished sites by
/// their next window), with `sitesOmitted` counting the rest. The decided status, with every
/// site, is what the metrics see.
pub fn bounded(status: &PhoneScheduleStatus) -> Cow<'_, PhoneScheduleStatus> {
    if status.sites.len() <= MAX_STATUS_SITES {
        return Cow::Borrowed(status);
    }
    let interest = |s: &SiteSummary| {
        (
            s.in_progress == 0,
            s.failed == 0,
            s.upgraded + s.failed >= s.phones,
            s.next_window.is_none(),
            s.next_window,
        )
    };
    let mut order: Vec<usize> = (0..status.sites.len()).collect();
    order.sort_by_key(|&i| interest(&status.sites[i]));
    let mut keep = vec![false; status.sites.len()];
    for &i in &order[..MAX_STATUS_SITES] {
        keep[i] = true;
    }
    let mut out = status.clone();
    out.sites = status
        .sites
        .iter()
        .zip(keep)
        .filter(|(_, k)| *k)
        .map(|(s, _)| s.clone())
        .collect();
    out.sites_omitted = Some((status.sites.len() - MAX_STATUS_SITES) as u32);
    Cow::Owned(out)
}

#[cfg(test)]
mod bounded_tests {
    use super::*;

    fn site(i: usize, in_progress: u32, failed: u32, upgraded: u32) -> SiteSummary {
        SiteSummary {
            name: format!("site-{i:05}"),
            phones: 10,
            upgraded,
            failed,
            in_progress,
            window_open: in_progress > 0,
            next_window: (upgraded + failed < 10)
                .then(|| DateTime::from_timestamp(1_800_000_000 + i as i64 * 60, 0).expect("time")),
            completion: None,
        }
    }

    #[test]
    fn a_status_within_the_limit_is_written_as_decided() {
        let status = PhoneScheduleStatus {
            sites: (0..MAX_STATUS_SITES).map(|i| site(i, 0, 0, 0)).collect(),
            ..Default::default()
        };
        assert!(matches!(bounded(&status), Cow::Borrowed(_)));
    }

    #[test]
    fn beyond_the_limit_busy_and_failing_sites_are_kept_the_rest_by_next_window_and_counted() {
        let n = MAX_STATUS_SITES * 10;
        let mut sites: Vec<SiteSummary> = (0..n).map(|i| site(i, 0, 0, 10)).collect();
        // Done sites everywhere; unfinished ones at the end of the name order, busy and
        // failing ones among them.
        for (i, s) in sites.iter_mut().enumerate().skip(n - 2 * MAX_STATUS_SITES) {
            *s = site(i, 0, 0, 0);
        }
        sites[n - 1] = site(n - 1, 3, 0, 0);
        sites[n - 2] = site(n - 2, 0, 2, 5);
        let status = PhoneScheduleStatus {
            sites,
            ..Default::default()
        };
        let written = bounded(&status);
        assert_eq!(written.sites.len(), MAX_STATUS_SITES);
        assert_eq!(written.sites_omitted, Some((n - MAX_STATUS_SITES) as u32));
        let names: Vec<&str> = written.sites.iter().map(|s| s.name.as_str()).collect();
        assert!(names.windows(2).all(|w| w[0] < w[1]), "still by name");
        assert!(
            names.contains(&format!("site-{:05}", n - 1).as_str()),
            "downloading kept"
        );
        assert!(
            names.contains(&format!("site-{:05}", n - 2).as_str()),
            "failing kept"
        );
        // The rest are the unfinished sites with the earliest next windows.
        let first_unfinished = n - 2 * MAX_STATUS_SITES;
        assert_eq!(written.sites[0].name, format!("site-{first_unfinished:05}"));
        assert!(written.sites.iter().all(|s| s.upgraded < 10));
        // Small enough for etcd with room to spare.
        let bytes = serde_json::to_vec(&*written).expect("JSON").len();
        assert!(bytes < 512 * 1024, "{bytes} B");
    }
}
