//! The wave planner: a pure function from a fleet, `now` and the phones already upgraded to
//! a [`Plan`]. See `docs/planner.md` for the rules and the phone behaviour behind them.

use std::collections::HashSet;

use chrono::{DateTime, Datelike, Duration, FixedOffset, NaiveDate, Offset, TimeZone, Utc};
use chrono_tz::Tz;

use super::mac::Mac;
use super::plan::{Plan, SitePlan, Slot, StageSummary, Warning};
use super::policy::{Fleet, Schedule, Site, SiteCap, Windows};
use super::window::{Occurrence, add_days};

/// How far ahead slots are searched, in days from the plan's start. A year and a month covers
/// a weekly window on a single day with yearly blackout dates; beyond it a plan is not useful
/// and the phones left over are reported instead of searched for forever.
pub const HORIZON_DAYS: u32 = 400;

/// Download minutes assumed when neither the schedule nor the firmware size and the site's
/// uplink say.
pub const DEFAULT_DOWNLOAD_MINUTES: u32 = 15;

/// Plans the rollout of `fleet.schedule` over `fleet.sites` as seen at `now`, leaving out the
/// phones in `upgraded`. Pure: same arguments, same plan.
pub fn plan(fleet: &Fleet, now: DateTime<Utc>, upgraded: &HashSet<Mac>) -> Plan {
    let schedule = &fleet.schedule;
    let rollout = &schedule.rollout;
    let start = rollout.not_before.map_or(now, |nb| nb.max(now));
    let mut warnings = Vec::new();

    let mut sites: Vec<&Site> = fleet.sites.iter().collect();
    sites.sort_by(|a, b| a.name.cmp(&b.name));

    let windows = schedule.provisioning.rollout_windows();
    if schedule.firmware.is_none() {
        warnings.push(Warning::NoFirmware);
    } else {
        if rollout.paused {
            warnings.push(Warning::Paused);
        }
        match windows {
            None => warnings.push(Warning::NoWindows),
            Some(w) if w.days.is_empty() => warnings.push(Warning::NoDays),
            Some(_) => {}
        }
        if let Some(minutes) = schedule.provisioning.repeatedly {
            warnings.push(Warning::Repeatedly {
                minutes: minutes.get(),
            });
        }
        if rollout.download_minutes.is_none()
            && schedule
                .firmware
                .as_ref()
                .is_some_and(|f| f.size_bytes.is_none())
        {
            warnings.push(Warning::DefaultDownloadTime {
                minutes: DEFAULT_DOWNLOAD_MINUTES,
            });
        }
    }
    let usable_windows = windows.filter(|w| !w.days.is_empty());

    let mut works: Vec<SiteWork> = sites
        .iter()
        .map(|site| SiteWork::new(site, schedule, usable_windows, upgraded, &mut warnings))
        .collect();

    let horizon = Horizon {
        start,
        days: HORIZON_DAYS,
    };
    let mut gate = start;
    let mut stages = Vec::with_capacity(rollout.stages.len());
    for (index, stage) in rollout.stages.iter().enumerate() {
        let mut summary = StageSummary {
            name: stage.name.clone(),
            percent: stage.percent,
            phones: 0,
            start: None,
            end: None,
        };
        for work in &mut works {
            let ranks = work.stage_ranks(index);
            summary.phones += ranks.len() as u64;
            if let Some((first, last)) = work.place(index as u32, ranks, gate, schedule, &horizon) {
                summary.start = Some(summary.start.map_or(first, |s: DateTime<Utc>| s.min(first)));
                summary.end = Some(summary.end.map_or(last, |e: DateTime<Utc>| e.max(last)));
            }
        }
        // The controller releases a stage only once the previous one has succeeded everywhere.
        if let Some(end) = summary.end {
            gate = gate.max(end);
        }
        stages.push(summary);
    }

    for work in &works {
        // Sites without usable windows already have a warning saying why.
        if work.windows.is_some() && !work.plan.unplaced.is_empty() {
            warnings.push(Warning::Unplaced {
                site: work.plan.name.clone(),
                phones: work.plan.unplaced.len() as u32,
                horizon_days: HORIZON_DAYS,
            });
        }
    }
    let site_plans: Vec<SitePlan> = works.into_iter().map(SiteWork::finish).collect();
    let needing: u64 = site_plans.iter().map(|s| u64::from(s.phones)).sum();
    let all_placed = site_plans.iter().all(|s| s.unplaced.is_empty());
    let completion = if needing > 0 && all_placed {
        site_plans.iter().filter_map(|s| s.completion).max()
    } else {
        None
    };
    if let Some(deadline) = rollout.deadline
        && needing > 0
        && completion.is_none_or(|c| c > deadline)
    {
        warnings.push(Warning::DeadlineMissed {
            deadline,
            completion,
        });
    }

    Plan {
        schedule: schedule.name.clone(),
        now,
        start,
        firmware: schedule.firmware.as_ref().map(|f| f.version.clone()),
        paused: rollout.paused,
        completion,
        stages,
        warnings,
        sites: site_plans,
    }
}

/// The dates searched: local dates from the plan start up to `days` later.
struct Horizon {
    start: DateTime<Utc>,
    days: u32,
}

impl Horizon {
    fn last_date(&self, tz: Tz) -> NaiveDate {
        add_days(
            self.start.with_timezone(&tz).date_naive(),
            u64::from(self.days),
        )
    }
}

/// The stage of every phone of `site` that `schedule`'s firmware applies to: phones in stable
/// hash order, and stage `i` holding ranks `bounds[i]..bounds[i + 1]`. Stage `i` takes ranks
/// `[ceil(p_{i-1}·n/100), ceil(p_i·n/100))`: a canary of any percent gets at least one phone,
/// and a phone keeps its stage as the inventory grows.
pub fn stage_ranking(site: &Site, schedule: &Schedule) -> (Vec<Mac>, Vec<usize>) {
    let mut ranked: Vec<(u64, Mac)> = match &schedule.firmware {
        Some(fw) => site
            .phones
            .iter()
            .filter(|p| fw.applies_to(p.model))
            .map(|p| (p.mac.stable_hash(), p.mac))
            .collect(),
        None => Vec::new(),
    };
    ranked.sort_unstable();
    let macs: Vec<Mac> = ranked.into_iter().map(|(_, m)| m).collect();
    let n = macs.len();
    let mut bounds = vec![0];
    bounds.extend(
        schedule
            .rollout
            .stages
            .iter()
            .map(|s| (s.percent as usize * n).div_ceil(100).min(n)),
    );
    (macs, bounds)
}

/// A site's plan under construction.
struct SiteWork {
    plan: SitePlan,
    /// Windows when the site can be scheduled at all.
    windows: Option<Windows>,
    /// Rank boundaries of the stages in `plan.macs` (which is in hash order until `finish`).
    bounds: Vec<usize>,
}

impl SiteWork {
    fn new(
        site: &Site,
        schedule: &Schedule,
        windows: Option<Windows>,
        upgraded: &HashSet<Mac>,
        warnings: &mut Vec<Warning>,
    ) -> Self {
        let rollout = &schedule.rollout;
        let cap = rollout.cap.map_or(site.cap, |c| c.min(site.cap));
        let inactivity = windows.map_or(0, |w| w.inactivity_minutes);
        let check_minutes = rollout.check_spread_minutes.get() + inactivity;
        let download_minutes = download_minutes(site, schedule, cap, warnings);
        let slot_minutes = check_minutes.saturating_add(download_minutes);

        // Stages are assigned over every phone the firmware applies to, upgraded or not, so a
        // phone's stage never changes as others finish; only then are the excluded phones
        // (already upgraded, or held back by the controller) left out of placement.
        let (ranked, all_bounds) = stage_ranking(site, schedule);
        let applicable = ranked.len();
        let (macs, bounds) = if upgraded.is_empty() {
            (ranked, all_bounds)
        } else {
            let mut macs = Vec::with_capacity(ranked.len());
            let mut bounds = vec![0];
            for stage in all_bounds.windows(2) {
                macs.extend(
                    ranked[stage[0]..stage[1]]
                        .iter()
                        .filter(|m| !upgraded.contains(m)),
                );
                bounds.push(macs.len());
            }
            (macs, bounds)
        };
        let n = macs.len();

        // Warn when the firmware applies to no phone of the site, not when all are done.
        if schedule.firmware.is_some() && applicable == 0 {
            warnings.push(Warning::NoPhones {
                site: site.name.clone(),
            });
        }
        let windows = windows.filter(|w| {
            let fits = w.window.minutes() >= slot_minutes;
            if !fits && n > 0 {
                warnings.push(Warning::WindowShorterThanSlot {
                    site: site.name.clone(),
                    window: w.window,
                    slot_minutes,
                });
            }
            fits
        });

        SiteWork {
            plan: SitePlan {
                name: site.name.clone(),
                time_zone: site.time_zone,
                cap,
                inventory: site.phones.len() as u32,
                phones: n as u32,
                check_minutes,
                download_minutes,
                slot_minutes,
                completion: None,
                slots: Vec::new(),
                unplaced: Vec::new(),
                macs,
            },
            windows,
            bounds,
        }
    }

    fn stage_ranks(&self, stage: usize) -> std::ops::Range<usize> {
        self.bounds[stage]..self.bounds[stage + 1]
    }

    /// Puts the phones of `ranks` into the earliest free grid slots starting at or after
    /// `gate`, `cap` per slot; returns the first start and last end used.
    fn place(
        &mut self,
        stage: u32,
        ranks: std::ops::Range<usize>,
        gate: DateTime<Utc>,
        schedule: &Schedule,
        horizon: &Horizon,
    ) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
        if ranks.is_empty() {
            return None;
        }
        let Some(windows) = self.windows else {
            self.plan.unplaced.extend_from_slice(&self.plan.macs[ranks]);
            return None;
        };
        let tz = self.plan.time_zone;
        let cap = self.plan.cap.get() as usize;
        let slot = Duration::minutes(i64::from(self.plan.slot_minutes));
        let check = Duration::minutes(i64::from(self.plan.check_minutes));
        let blackout = &schedule.rollout.blackout_dates;
        let opens =
            |date: NaiveDate| windows.days.contains(date.weekday()) && !blackout.contains(&date);

        let mut next = ranks.start;
        let mut used: Option<(DateTime<Utc>, DateTime<Utc>)> = None;
        // An occurrence that opened the day before may still be open at the gate.
        let mut date = gate
            .with_timezone(&tz)
            .date_naive()
            .pred_opt()
            .unwrap_or(NaiveDate::MIN);
        let last_date = horizon.last_date(tz);
        while next < ranks.end && date <= last_date {
            if opens(date) {
                let occ = occurrence(windows, date, tz, &opens);
                let mut k = if gate > occ.start {
                    ceil_div(gate - occ.start, slot)
                } else {
                    0
                };
                let count = (occ.end - occ.start).num_seconds() / slot.num_seconds();
                let start_offset = offset_at(tz, occ.start);
                let uniform = start_offset == offset_at(tz, occ.end);
                while k < count && next < ranks.end {
                    let start = occ.start + Duration::seconds(slot.num_seconds() * k);
                    let end = start + slot;
                    k += 1;
                    if !uniform && !clean_check_window(tz, start, check) {
                        continue;
                    }
                    let (so, eo) = if uniform {
                        (start_offset, start_offset)
                    } else {
                        (offset_at(tz, start), offset_at(tz, end))
                    };
                    let take = cap.min(ranks.end - next);
                    self.plan.slots.push(Slot {
                        stage,
                        start,
                        end,
                        local_start: start.with_timezone(&so),
                        local_end: end.with_timezone(&eo),
                        window_date: date,
                        check_minutes: self.plan.check_minutes,
                        phones: next as u32..(next + take) as u32,
                    });
                    next += take;
                    used = Some(used.map_or((start, end), |(f, _)| (f, end)));
                }
            }
            date = match date.succ_opt() {
                Some(d) => d,
                None => break,
            };
        }
        self.plan
            .unplaced
            .extend_from_slice(&self.plan.macs[next..ranks.end]);
        used
    }

    fn finish(mut self) -> SitePlan {
        for slot in &self.plan.slots {
            let r = slot.phones.start as usize..slot.phones.end as usize;
            self.plan.macs[r].sort_unstable();
        }
        self.plan.unplaced.sort_unstable();
        if self.plan.phones > 0 && self.plan.unplaced.is_empty() {
            self.plan.completion = self.plan.slots.last().map(|s| s.end);
        }
        self.plan
    }
}

/// The occurrence opening on `date`, cut short where the next day's occurrence opens: with a
/// whole-day window and a start in a repeated hour the two would otherwise overlap, and slots
/// of both could then run at once.
fn occurrence(
    windows: Windows,
    date: NaiveDate,
    tz: Tz,
    opens: &impl Fn(NaiveDate) -> bool,
) -> Occurrence {
    let mut occ = windows.window.occurrence(date, tz);
    if windows.window.crosses_midnight()
        && let Some(next) = date.succ_opt().filter(|d| opens(*d))
    {
        let next_start = windows.window.occurrence(next, tz).start;
        occ.end = occ.end.min(next_start);
    }
    if occ.end < occ.start {
        occ.end = occ.start;
    }
    occ
}

/// Whether a phone told to check between the local times of `[start, start + check]` reads
/// them unambiguously: no DST change inside and neither end in a repeated hour. Otherwise the
/// phone's wall clock could match its window twice or never, so such a slot is skipped.
pub(crate) fn clean_check_window(tz: Tz, start: DateTime<Utc>, check: Duration) -> bool {
    let end = start + check;
    let (a, b) = (start.with_timezone(&tz), end.with_timezone(&tz));
    a.offset().fix() == b.offset().fix()
        && tz.from_local_datetime(&a.naive_local()).single().is_some()
        && tz.from_local_datetime(&b.naive_local()).single().is_some()
}

fn offset_at(tz: Tz, t: DateTime<Utc>) -> FixedOffset {
    tz.offset_from_utc_datetime(&t.naive_utc()).fix()
}

fn ceil_div(a: Duration, b: Duration) -> i64 {
    let (a, b) = (a.num_seconds(), b.num_seconds());
    (a + b - 1).div_euclid(b)
}

/// Minutes one download takes at a site: the schedule's figure, else the firmware size over
/// the site's uplink shared by `cap` downloads, else a default (with a warning).
fn download_minutes(
    site: &Site,
    schedule: &Schedule,
    cap: SiteCap,
    warnings: &mut Vec<Warning>,
) -> u32 {
    if let Some(m) = schedule.rollout.download_minutes {
        return m.get();
    }
    let Some(size) = schedule.firmware.as_ref().and_then(|f| f.size_bytes) else {
        return DEFAULT_DOWNLOAD_MINUTES;
    };
    match site.uplink_mbps {
        Some(mbps) => {
            let bits = u128::from(size) * 8 * u128::from(cap.get());
            let per_minute = u128::from(mbps.get()) * 1_000_000 * 60;
            u32::try_from(bits.div_ceil(per_minute))
                .unwrap_or(u32::MAX)
                .max(1)
        }
        None => {
            warnings.push(Warning::NoUplink {
                site: site.name.clone(),
                minutes: DEFAULT_DOWNLOAD_MINUTES,
            });
            DEFAULT_DOWNLOAD_MINUTES
        }
    }
}
