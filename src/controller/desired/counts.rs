//! Step 6: the numbers of the status — phones by state, per stage and per site, the next
//! window and the predicted completion.

use chrono::{DateTime, Utc};

use super::gates::Gates;
use super::kept::{Assigned, Kept};
use super::members::{Member, Members};
use crate::api::{PhoneCounts, SiteSummary, StageSummary};
use crate::children::{PhoneState, unix_nanos};
use crate::core::{Fleet, Plan};

/// Phones by state, over every member.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Tally {
    pub total: u32,
    pub upgraded: u32,
    pub failed: u32,
    pub in_progress: u32,
    /// Not upgraded and of a model not halted: what the rollout still has to do.
    pub remaining: u32,
}

impl Tally {
    /// One pass over the members (a million at scale: a pass per figure cost ~10 ms each).
    pub fn of(members: &Members, gates: &Gates) -> Tally {
        let mut tally = Tally::default();
        for m in members.iter() {
            tally.add(m);
            if !m.is(PhoneState::Upgraded) && !gates.is_halted(m.model) {
                tally.remaining += 1;
            }
        }
        tally
    }

    /// Counts `m` in total, upgraded, failed and in progress (not in remaining).
    fn add(&mut self, m: &Member) {
        self.total += 1;
        if m.is(PhoneState::Upgraded) {
            self.upgraded += 1;
        } else if m.is(PhoneState::Failed) {
            self.failed += 1;
        } else if m.busy() {
            self.in_progress += 1;
        }
    }

    pub fn phone_counts(&self) -> PhoneCounts {
        PhoneCounts {
            total: self.total,
            pending: self.total - self.upgraded - self.failed - self.in_progress,
            in_progress: self.in_progress,
            upgraded: self.upgraded,
            failed: self.failed,
        }
    }
}

/// Everything counted for the status.
#[derive(Clone, Debug)]
pub(super) struct Counts {
    pub tally: Tally,
    pub stages: Vec<StageSummary>,
    pub sites: Vec<SiteSummary>,
    pub next_window: Option<DateTime<Utc>>,
    pub completion: Option<DateTime<Utc>>,
}

/// What the counts are taken over.
pub(super) struct Decided<'a> {
    pub fleet: &'a Fleet,
    pub members: &'a Members,
    pub gates: &'a Gates,
    pub kept: &'a Kept<'a>,
    pub plan: &'a Plan,
    pub slots: &'a Assigned,
    pub now: DateTime<Utc>,
}

pub(super) fn count(d: &Decided<'_>) -> Counts {
    let tally = Tally::of(d.members, d.gates);
    let firmware = d.fleet.schedule.firmware.is_some();
    let now_nanos = unix_nanos(d.now);
    let next_window = d
        .slots
        .iter()
        .map(|s| s.start_nanos())
        .filter(|s| *s > now_nanos)
        .min()
        .map(DateTime::from_timestamp_nanos)
        .or_else(|| {
            d.plan
                .sites
                .iter()
                .flat_map(|s| s.slots.iter())
                .map(|s| s.start)
                .filter(|s| *s > d.now)
                .min()
        })
        .filter(|_| d.gates.active && tally.remaining > 0);
    let completion = if firmware && tally.remaining > 0 {
        latest(
            d.plan.completion,
            d.kept
                .kept_slots()
                .map(|(_, s)| s.end_nanos())
                .max()
                .map(DateTime::from_timestamp_nanos),
        )
    } else {
        None
    };
    Counts {
        tally,
        stages: if firmware {
            stage_summaries(d)
        } else {
            Vec::new()
        },
        sites: site_summaries(d),
        next_window,
        completion,
    }
}

fn stage_summaries(d: &Decided<'_>) -> Vec<StageSummary> {
    let stages = &d.fleet.schedule.rollout.stages;
    let mut tallies = vec![Tally::default(); stages.len()];
    for m in d.members.iter() {
        if let Some(t) = tallies.get_mut(m.stage as usize) {
            t.add(m);
        }
    }
    stages
        .iter()
        .zip(tallies)
        .map(|(stage, t)| StageSummary {
            name: stage.name.clone(),
            phones: t.total,
            in_progress: t.in_progress,
            upgraded: t.upgraded,
            failed: t.failed,
        })
        .collect()
}

fn site_summaries(d: &Decided<'_>) -> Vec<SiteSummary> {
    let now = d.now;
    let now_nanos = unix_nanos(now);
    d.fleet
        .sites
        .iter()
        .zip(&d.members.by_site)
        .zip(&d.plan.sites)
        .enumerate()
        .map(|(index, ((site, members), site_plan))| {
            let mut summary = SiteSummary {
                name: site.name.clone(),
                phones: members.len() as u32,
                ..SiteSummary::default()
            };
            let mut pending = false;
            let mut next_window: Option<i64> = None;
            let mut kept_end: Option<i64> = None;
            // One pass over the site's members, each phone's slot read once by position.
            for m in members {
                if m.is(PhoneState::Upgraded) {
                    summary.upgraded += 1;
                } else if !d.gates.is_halted(m.model) {
                    pending = true;
                }
                if m.is(PhoneState::Failed) {
                    summary.failed += 1;
                }
                if m.busy() {
                    summary.in_progress += 1;
                }
                let phone = m.phone as usize;
                if let Some(s) = d.slots.get(index, phone) {
                    let (start, end) = (s.start_nanos(), s.end_nanos());
                    summary.window_open |= !s.held() && start <= now_nanos && now_nanos < end;
                    if start > now_nanos {
                        next_window = Some(next_window.map_or(start, |n| n.min(start)));
                    }
                }
                if let Some(s) = d.kept.kept(index, phone) {
                    let end = s.end_nanos();
                    kept_end = Some(kept_end.map_or(end, |e| e.max(end)));
                }
            }
            summary.next_window = next_window
                .map(DateTime::from_timestamp_nanos)
                .into_iter()
                .chain(site_plan.slots.iter().map(|s| s.start))
                .filter(|s| *s > now)
                .min()
                .filter(|_| d.gates.active && pending);
            summary.completion = latest(
                site_plan.completion,
                kept_end.map(DateTime::from_timestamp_nanos),
            );
            summary
        })
        .collect()
}

fn latest(a: Option<DateTime<Utc>>, b: Option<DateTime<Utc>>) -> Option<DateTime<Utc>> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}
