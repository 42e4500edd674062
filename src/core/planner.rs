//! The wave planner: a pure function from a fleet, `now` and the phones already upgraded to
//! a [`Plan`]. See `docs/planner.md` for the rules and the phone behaviour behind them.

use std::collections::{BTreeSet, HashMap};

use chrono::{DateTime, Datelike, Duration, FixedOffset, NaiveDate, Offset, TimeZone, Utc};
use chrono_tz::Tz;

use super::family::{PhoneFamily, ReArm, grandstream_steady};
use super::mac::{Mac, MacSet};
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
pub fn plan(fleet: &Fleet, now: DateTime<Utc>, upgraded: &MacSet) -> Plan {
    let facts = ByMac {
        fleet,
        not_planned: upgraded,
        holds: &|_| false,
        kept: &|_| None,
    };
    plan_with_leads(fleet, now, &facts, &|_, _| Duration::zero())
}

/// What the caller knows of each phone, by position: `site` indexes `fleet.sites`, `phone`
/// that site's `phones`. Positions, not MACs: at a million phones every MAC lookup in a map of
/// the whole fleet is a cache miss, and the controller answers these from per-site arrays.
pub trait PhoneFacts {
    /// Left out of the plan: done, busy, held back, or keeping its slot.
    fn not_planned(&self, site: usize, phone: usize) -> bool;
    /// Holds a slot file it has not finished with (see [`rollout_lead`]).
    fn holds(&self, site: usize, phone: usize) -> bool;
    /// The slot it keeps, which the plan builds around.
    fn kept(&self, site: usize, phone: usize) -> Option<KeptSlot>;
}

/// [`PhoneFacts`] given by MAC (`phonefleet plan`'s upgraded phones, tests).
pub struct ByMac<'a> {
    pub fleet: &'a Fleet,
    pub not_planned: &'a MacSet,
    pub holds: &'a dyn Fn(Mac) -> bool,
    pub kept: &'a dyn Fn(Mac) -> Option<KeptSlot>,
}

impl ByMac<'_> {
    fn mac(&self, site: usize, phone: usize) -> Mac {
        self.fleet.sites[site].phones[phone].mac
    }
}

impl PhoneFacts for ByMac<'_> {
    fn not_planned(&self, site: usize, phone: usize) -> bool {
        !self.not_planned.is_empty() && self.not_planned.contains(&self.mac(site, phone))
    }
    fn holds(&self, site: usize, phone: usize) -> bool {
        (self.holds)(self.mac(site, phone))
    }
    fn kept(&self, site: usize, phone: usize) -> Option<KeptSlot> {
        (self.kept)(self.mac(site, phone))
    }
}

/// A slot a phone already knows and keeps (announced by an earlier decision, or in use). The
/// phone is left out of a new plan, but the plan builds around its slot: the slot holds its
/// share of the site's cap, and its stage ends no earlier than the slot does. Without that a
/// second decision would see the next stage's gate move earlier and re-place phones the first
/// decision placed, so the decision written would not be the decision made again.
///
/// Times are Unix nanoseconds: the planner compares a site's kept slots with each new slot,
/// and at a million phones building calendar dates for them was a tenth of an idle plan.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeptSlot {
    pub stage: u32,
    start: i64,
    end: i64,
}

impl KeptSlot {
    pub fn new(stage: u32, start: DateTime<Utc>, end: DateTime<Utc>) -> Self {
        KeptSlot {
            stage,
            start: unix_nanos(start),
            end: unix_nanos(end),
        }
    }

    /// From Unix nanoseconds (the controller's packed slots hold them).
    pub fn from_nanos(stage: u32, start: i64, end: i64) -> Self {
        KeptSlot { stage, start, end }
    }

    pub fn start(&self) -> DateTime<Utc> {
        DateTime::from_timestamp_nanos(self.start)
    }

    pub fn end(&self) -> DateTime<Utc> {
        DateTime::from_timestamp_nanos(self.end)
    }
}

/// `t` in Unix nanoseconds, saturated outside the years 1677–2262 (no slot is): how the
/// planner's kept slots and the controller's packed slots compare times.
pub fn unix_nanos(t: DateTime<Utc>) -> i64 {
    t.timestamp_nanos_opt().unwrap_or(if t.timestamp() < 0 {
        i64::MIN
    } else {
        i64::MAX
    })
}

/// [`plan`], with no slot of a site starting before `now + lead(site)`: how long its phones
/// may take to fetch their files again and hear of a new slot (the controller's announcement
/// lead, see [`crate::core::family::announcement_lead`]).
pub fn plan_with_leads(
    fleet: &Fleet,
    now: DateTime<Utc>,
    facts: &dyn PhoneFacts,
    lead: &dyn Fn(usize, &Site) -> Duration,
) -> Plan {
    let schedule = &fleet.schedule;
    let rollout = &schedule.rollout;
    let start = rollout.not_before.map_or(now, |nb| nb.max(now));
    let mut warnings = Vec::new();

    // With their index in `fleet.sites`, which `facts` answers by.
    let mut sites: Vec<(usize, &Site)> = fleet.sites.iter().enumerate().collect();
    sites.sort_by(|(_, a), (_, b)| a.name.cmp(&b.name));

    let windows = schedule.provisioning.rollout_windows();
    if sites.is_empty() {
        warnings.push(Warning::NoSites);
    }
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
        .map(|&(index, site)| {
            let mut work =
                SiteWork::new(index, site, schedule, usable_windows, facts, &mut warnings);
            let lead = lead(index, site).max(Duration::zero());
            work.earliest = start + lead;
            work.plan.lead_minutes = u32::try_from(lead.num_minutes()).unwrap_or(u32::MAX);
            work
        })
        .collect();
    if schedule.firmware.is_some() {
        family_warnings(&works, schedule, &mut warnings);
    }
    for (_, site) in &sites {
        if !site.unplaced_models.is_empty() {
            let models: BTreeSet<String> = site
                .unplaced_models
                .iter()
                .map(|p| p.model.clone())
                .collect();
            warnings.push(Warning::NoFamily {
                site: site.name.clone(),
                models: models.into_iter().collect(),
                phones: site.unplaced_models.len() as u32,
            });
        }
    }

    let horizon = Horizon {
        start,
        days: HORIZON_DAYS,
    };
    let mut occurrences = Occurrences::new(usable_windows, &rollout.blackout_dates);
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
            if let Some((first, last)) =
                work.place(index as u32, ranks, gate, &horizon, &mut occurrences)
            {
                summary.start = Some(summary.start.map_or(first, |s: DateTime<Utc>| s.min(first)));
                summary.end = Some(summary.end.map_or(last, |e: DateTime<Utc>| e.max(last)));
            }
        }
        // The controller releases a stage only once the previous one has succeeded everywhere,
        // its kept slots included.
        let kept_end = works.iter().filter_map(|w| w.kept_end(index as u32)).max();
        if let Some(end) = summary.end.into_iter().chain(kept_end).max() {
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

/// The one planning entry point of the product: plans `fleet` as of `now`, leaving out
/// `not_planned`, with each site's [`rollout_lead`] (`holds` says which phones hold a slot
/// file). `phonefleet plan` calls it with nothing held and nothing left out, the controller
/// with what it observed; both therefore agree on a starting rollout.
pub fn plan_rollout(
    fleet: &Fleet,
    now: DateTime<Utc>,
    not_planned: &MacSet,
    holds: &dyn Fn(Mac) -> bool,
    kept: &dyn Fn(Mac) -> Option<KeptSlot>,
) -> Plan {
    plan_rollout_with(
        fleet,
        now,
        &ByMac {
            fleet,
            not_planned,
            holds,
            kept,
        },
    )
}

/// [`plan_rollout`] with the phones' facts given by position (the controller's form).
pub fn plan_rollout_with(fleet: &Fleet, now: DateTime<Utc>, facts: &dyn PhoneFacts) -> Plan {
    let start = fleet
        .schedule
        .rollout
        .not_before
        .map_or(now, |nb| nb.max(now));
    plan_with_leads(fleet, now, facts, &|index, site| {
        rollout_lead(&fleet.schedule, site, start, &|phone| {
            facts.holds(index, phone)
        })
    })
}

/// How long after `start` the first new slot of `site` may begin, the latest of:
///
/// * the site's announcement lead ([`super::family::site_lead`]);
/// * when minute-level phones (XSTIM, Yealink) the firmware applies to have no repeated checks
///   ([`hears_only_at_window_checks`]), the end of the first window occurrence that opens at or
///   after `start`: such a phone fetches its file once per occurrence, at a random time inside
///   it (after its inactivity), so it surely hears of a slot only in an occurrence opening
///   after the slot was planned, and a slot in that same occurrence may come before its check;
/// * when its phones re-arm only at the next occurrence ([`ReArm::NextOccurrence`]), the end
///   of the first window occurrence that ends after they have heard of the slot (that
///   occurrence is lost to the new window).
///
/// Without repeated checks the two window rules give the same occurrence, so both re-arm
/// behaviours plan alike.
pub fn rollout_lead(
    schedule: &Schedule,
    site: &Site,
    start: DateTime<Utc>,
    holds: &dyn Fn(usize) -> bool,
) -> Duration {
    let lead = super::family::site_lead(site, schedule, holds);
    let mut earliest = start + lead;
    if hears_only_at_window_checks(schedule, site)
        && let Some(end) = first_occurrence_end_opening_from(schedule, site.time_zone, start)
    {
        earliest = earliest.max(end);
    }
    if site_re_arm(schedule, site) == ReArm::NextOccurrence
        && let Some(end) = first_occurrence_end_after(schedule, site.time_zone, start + lead)
    {
        earliest = earliest.max(end);
    }
    earliest - start
}

/// Whether some phone of `site` the firmware applies to hears of a new slot only at its check
/// inside a window occurrence: a minute-level family (XSTIM, Yealink) with repeated checks off.
/// (Grandstream phones check daily at their hours or every P193 minutes; their
/// announcement lead already covers it.)
pub fn hears_only_at_window_checks(schedule: &Schedule, site: &Site) -> bool {
    schedule.provisioning.repeatedly.is_none()
        && site.phones.iter().any(|p| {
            matches!(p.family, PhoneFamily::Xstim | PhoneFamily::Yealink)
                && schedule
                    .firmware
                    .as_ref()
                    .is_some_and(|fw| fw.applies_to(p.model))
        })
}

/// The schedule's re-arm setting, or the most conservative of the families the firmware
/// applies to in `site`.
pub fn site_re_arm(schedule: &Schedule, site: &Site) -> ReArm {
    schedule.rollout.re_arm.unwrap_or_else(|| {
        site.phones
            .iter()
            .filter(|p| {
                schedule
                    .firmware
                    .as_ref()
                    .is_some_and(|fw| fw.applies_to(p.model))
            })
            .map(|p| p.family.re_arm())
            .max()
            .unwrap_or(ReArm::AtOnce)
    })
}

/// The end of the first rollout-window occurrence in `tz` that opens at or after `t`,
/// blackout dates aside (a phone checks in no occurrence opening on one, so the rule errs
/// early there; the slots themselves are never placed on them).
fn first_occurrence_end_opening_from(
    schedule: &Schedule,
    tz: Tz,
    t: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    occurrences_near(schedule, tz, t)
        .filter(|o| o.start >= t)
        .map(|o| o.end)
        .min()
}

/// The rollout window's occurrences opening from the local day before `t` to eight days after
/// (one day back for an occurrence crossing midnight, a week and a day ahead for one day a
/// week); none without a usable window.
fn occurrences_near(
    schedule: &Schedule,
    tz: Tz,
    t: DateTime<Utc>,
) -> impl Iterator<Item = Occurrence> {
    let w = schedule
        .provisioning
        .rollout_windows()
        .filter(|w| !w.days.is_empty());
    let today = t.with_timezone(&tz).date_naive();
    (-1..=8)
        .filter_map(move |d| today.checked_add_signed(Duration::days(d)))
        .filter_map(move |date| {
            let w = w?;
            w.days
                .contains(date.weekday())
                .then(|| w.window.occurrence(date, tz))
        })
}

/// The end of the first rollout-window occurrence in `tz` that ends after `t` (the one open
/// at `t`, or the next to open), blackout dates aside (no slot is placed on those anyway).
fn first_occurrence_end_after(
    schedule: &Schedule,
    tz: Tz,
    t: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    occurrences_near(schedule, tz, t)
        .map(|o| o.end)
        .filter(|end| *end > t)
        .min()
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
    let (order, bounds) = stage_order(site, schedule);
    (
        order
            .into_iter()
            .map(|i| site.phones[i as usize].mac)
            .collect(),
        bounds,
    )
}

/// [`stage_ranking`] as positions in `site.phones`.
pub fn stage_order(site: &Site, schedule: &Schedule) -> (Vec<u32>, Vec<usize>) {
    let mut ranked: Vec<(u64, Mac, u32)> = match &schedule.firmware {
        Some(fw) => site
            .phones
            .iter()
            .enumerate()
            .filter(|(_, p)| fw.applies_to(p.model))
            .map(|(i, p)| (p.mac.stable_hash(), p.mac, i as u32))
            .collect(),
        None => Vec::new(),
    };
    ranked.sort_unstable();
    let order: Vec<u32> = ranked.into_iter().map(|(_, _, i)| i).collect();
    let n = order.len();
    let mut bounds = vec![0];
    bounds.extend(
        schedule
            .rollout
            .stages
            .iter()
            .map(|s| (s.percent as usize * n).div_ceil(100).min(n)),
    );
    (order, bounds)
}

/// A site's plan under construction.
struct SiteWork {
    plan: SitePlan,
    /// Windows when the site can be scheduled at all.
    windows: Option<Windows>,
    /// Rank boundaries of the stages in `plan.macs` (which is in hash order until `finish`).
    bounds: Vec<usize>,
    /// No slot starts earlier: the plan's start plus the site's announcement lead.
    earliest: DateTime<Utc>,
    /// The site's kept slots ([`KeptSlot`]), by start.
    kept: Vec<KeptSlot>,
    /// The longest kept slot, to bound the search for kept slots overlapping a new one.
    longest_kept: i64,
}

impl SiteWork {
    fn new(
        index: usize,
        site: &Site,
        schedule: &Schedule,
        windows: Option<Windows>,
        facts: &dyn PhoneFacts,
        warnings: &mut Vec<Warning>,
    ) -> Self {
        let rollout = &schedule.rollout;
        let mut kept: Vec<KeptSlot> = (0..site.phones.len())
            .filter_map(|phone| facts.kept(index, phone))
            .collect();
        kept.sort_unstable_by_key(|k| (k.start, k.end));
        let longest_kept = kept
            .iter()
            .map(|k| k.end.saturating_sub(k.start))
            .max()
            .unwrap_or(0);
        let cap = rollout.cap.map_or(site.cap, |c| c.min(site.cap));
        // The families of the phones the firmware is for decide the slot grid: one family that
        // can only be told whole hours puts the whole site on whole-hour slots, so every slot
        // still holds at most `cap` phones and no two slots overlap.
        let families: BTreeSet<PhoneFamily> = site
            .phones
            .iter()
            .filter(|p| {
                schedule
                    .firmware
                    .as_ref()
                    .is_some_and(|fw| fw.applies_to(p.model))
            })
            .map(|p| p.family)
            .collect();
        let whole_hours = families.iter().any(|f| !f.capabilities().minute_windows);
        let obeys_inactivity = families.iter().any(|f| f.capabilities().inactivity);
        let inactivity = windows
            .filter(|_| obeys_inactivity)
            .map_or(0, |w| w.inactivity_minutes);
        let to_grid = |m: u32| {
            if whole_hours {
                m.div_ceil(60).max(1) * 60
            } else {
                m
            }
        };
        let check_minutes = to_grid(rollout.check_spread_minutes.get() + inactivity);
        let download_minutes = download_minutes(site, schedule, cap, warnings);
        let slot_minutes = to_grid(check_minutes.saturating_add(download_minutes));

        // Stages are assigned over every phone the firmware applies to, upgraded or not, so a
        // phone's stage never changes as others finish; only then are the excluded phones
        // (already upgraded, or held back by the controller) left out of placement.
        let (ranked, all_bounds) = stage_order(site, schedule);
        let applicable = ranked.len();
        let mut macs = Vec::with_capacity(ranked.len());
        let mut bounds = vec![0];
        for stage in all_bounds.windows(2) {
            macs.extend(
                ranked[stage[0]..stage[1]]
                    .iter()
                    .filter(|&&i| !facts.not_planned(index, i as usize))
                    .map(|&i| site.phones[i as usize].mac),
            );
            bounds.push(macs.len());
        }
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
                families: families.into_iter().collect(),
                whole_hours,
                lead_minutes: 0,
                completion: None,
                slots: Vec::new(),
                unplaced: Vec::new(),
                macs,
            },
            windows,
            bounds,
            earliest: DateTime::<Utc>::MIN_UTC,
            kept,
            longest_kept,
        }
    }

    /// When the site's kept slots of `stage` end.
    fn kept_end(&self, stage: u32) -> Option<DateTime<Utc>> {
        self.kept
            .iter()
            .filter(|k| k.stage == stage)
            .map(|k| k.end)
            .max()
            .map(DateTime::from_timestamp_nanos)
    }

    /// How many kept slots overlap `[start, end)`: phones of the site downloading then already.
    fn kept_overlapping(&self, start: DateTime<Utc>, end: DateTime<Utc>) -> usize {
        let (start, end) = (unix_nanos(start), unix_nanos(end));
        let upto = self.kept.partition_point(|k| k.start < end);
        self.kept[..upto]
            .iter()
            .rev()
            .take_while(|k| k.start.saturating_add(self.longest_kept) > start)
            .filter(|k| k.end > start)
            .count()
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
        horizon: &Horizon,
        occurrences: &mut Occurrences,
    ) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
        if ranks.is_empty() {
            return None;
        }
        if self.windows.is_none() {
            self.plan.unplaced.extend_from_slice(&self.plan.macs[ranks]);
            return None;
        }
        let gate = gate.max(self.earliest);
        let whole_hours = self.plan.whole_hours;
        let tz = self.plan.time_zone;
        let cap = self.plan.cap.get() as usize;
        let slot = Duration::minutes(i64::from(self.plan.slot_minutes));
        let check = Duration::minutes(i64::from(self.plan.check_minutes));

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
            if let Some(&Cached {
                mut occ,
                start_offset,
                uniform,
            }) = occurrences.get(tz, date)
            {
                if whole_hours {
                    occ.start = next_whole_hour(tz, occ.start);
                }
                let mut k = if gate > occ.start {
                    ceil_div(gate - occ.start, slot)
                } else {
                    0
                };
                let count = (occ.end - occ.start).num_seconds().max(0) / slot.num_seconds();
                while k < count && next < ranks.end {
                    let start = occ.start + Duration::seconds(slot.num_seconds() * k);
                    let end = start + slot;
                    k += 1;
                    if !uniform && !clean_check_window(tz, start, check) {
                        continue;
                    }
                    if whole_hours && !whole_hour_check_window(tz, start, check) {
                        continue;
                    }
                    let (so, eo) = if uniform {
                        (start_offset, start_offset)
                    } else {
                        (offset_at(tz, start), offset_at(tz, end))
                    };
                    let take = cap
                        .saturating_sub(self.kept_overlapping(start, end))
                        .min(ranks.end - next);
                    if take == 0 {
                        continue;
                    }
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

/// Wall times are already ambiguous in the hour *before* a fall-back (its first pass), while
/// the offset has not changed yet; an occurrence only counts as free of DST effects when the
/// offset stays the same until this long after its end. No fold in the tz database repeats
/// more than a day of wall time.
const FOLD_LOOKAHEAD: Duration = Duration::hours(24);

/// Window occurrences by zone and local date, shared by every site of a zone: the window,
/// days and blackout dates are the schedule's, so ten thousand sites in forty zones resolve
/// local times forty times per date, not ten thousand.
struct Occurrences<'a> {
    windows: Option<Windows>,
    blackout: &'a BTreeSet<NaiveDate>,
    cache: HashMap<(Tz, NaiveDate), Option<Cached>>,
}

/// An occurrence with the UTC offsets it spans.
#[derive(Clone, Copy)]
struct Cached {
    occ: Occurrence,
    start_offset: FixedOffset,
    /// Same offset from the start to a day past the end: no DST change inside and none just
    /// after, so every slot shares `start_offset` and no wall time in it is repeated.
    uniform: bool,
}

impl<'a> Occurrences<'a> {
    fn new(windows: Option<Windows>, blackout: &'a BTreeSet<NaiveDate>) -> Self {
        Self {
            windows,
            blackout,
            cache: HashMap::new(),
        }
    }

    /// The occurrence opening on `date` in `tz`, if a window opens that day.
    fn get(&mut self, tz: Tz, date: NaiveDate) -> Option<&Cached> {
        let (windows, blackout) = (self.windows?, self.blackout);
        self.cache
            .entry((tz, date))
            .or_insert_with(|| {
                let opens =
                    |d: NaiveDate| windows.days.contains(d.weekday()) && !blackout.contains(&d);
                opens(date).then(|| {
                    let occ = occurrence(windows, date, tz, &opens);
                    let start_offset = offset_at(tz, occ.start);
                    Cached {
                        occ,
                        start_offset,
                        uniform: start_offset == offset_at(tz, occ.end + FOLD_LOOKAHEAD),
                    }
                })
            })
            .as_ref()
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

/// The first instant at or after `t` that is a whole hour of local time.
fn next_whole_hour(tz: Tz, t: DateTime<Utc>) -> DateTime<Utc> {
    use chrono::Timelike;
    let local = t.with_timezone(&tz);
    let past = i64::from(local.minute()) * 60 + i64::from(local.second());
    if past == 0 && local.nanosecond() == 0 {
        t
    } else {
        t + Duration::seconds(3600 - past)
    }
}

/// Whether a whole-hour family can be told the check window `[start, start + check]`: it
/// starts on a whole local hour and ends on one no later than 23:00 of the same day (the end
/// hour is 0–23 and a window past midnight is not documented).
fn whole_hour_check_window(tz: Tz, start: DateTime<Utc>, check: Duration) -> bool {
    use chrono::Timelike;
    let (a, b) = (start.with_timezone(&tz), (start + check).with_timezone(&tz));
    a.minute() == 0 && b.minute() == 0 && a.date_naive() == b.date_naive() && b.hour() <= 23
}

/// One warning per narrowing of the steady state for a family some planned site holds.
fn family_warnings(works: &[SiteWork], schedule: &Schedule, warnings: &mut Vec<Warning>) {
    let present: BTreeSet<PhoneFamily> = works
        .iter()
        .flat_map(|w| w.plan.families.iter().copied())
        .collect();
    if present.contains(&PhoneFamily::Grandstream) {
        let (_, narrowings) = grandstream_steady(&schedule.provisioning);
        warnings.extend(narrowings.into_iter().map(|n| Warning::FamilyConstraint {
            family: n.family,
            detail: n.detail,
        }));
        if let Some(site) = works
            .iter()
            .find(|w| w.plan.whole_hours && w.plan.phones > 0)
        {
            warnings.push(Warning::FamilyConstraint {
                family: PhoneFamily::Grandstream,
                detail: format!(
                    "check windows are whole hours: sites with Grandstream phones (e.g. {}) plan {}-min slots of whole local hours",
                    site.plan.name, site.plan.slot_minutes
                ),
            });
        }
    }
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::num::NonZeroU32;

    use chrono::Weekday;

    use super::*;
    use crate::core::policy::*;
    use crate::core::window::{DaySet, LocalWindow};

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn window(start: &str, end: &str) -> LocalWindow {
        LocalWindow {
            start: start.parse().unwrap(),
            end: end.parse().unwrap(),
        }
    }

    fn site(name: &str, tz: Tz, cap: u32, phones: u64) -> Site {
        Site {
            name: name.into(),
            time_zone: tz,
            cap: SiteCap::new(cap).unwrap(),
            uplink_mbps: None,
            phones: (1..=phones)
                .map(|m| Phone {
                    mac: Mac::from_u64(0x000b_8200_0000 + m).unwrap(),
                    model: ModelId(0),
                    family: PhoneFamily::Xstim,
                })
                .collect(),
            unplaced_models: Vec::new(),
        }
    }

    /// Weekly 01:00–03:00 every day, 10 min spread + 20 min download: 30-minute slots.
    fn fleet(sites: Vec<Site>) -> Fleet {
        Fleet {
            schedule: Schedule {
                name: "voice/test".into(),
                provisioning: ProvisioningPolicy {
                    power_on: true,
                    repeatedly: None,
                    weekly: WeeklyPolicy {
                        enabled: true,
                        interval_weeks: 1,
                        inactivity_minutes: 0,
                        window: window("01:00", "03:00"),
                        days: DaySet::ALL,
                    },
                    flexible: FlexiblePolicy {
                        enabled: false,
                        interval_days: 1,
                        window: window("00:00", "05:00"),
                    },
                },
                firmware: Some(FirmwareTarget {
                    version: "1.2".into(),
                    file: "fw.bin".into(),
                    size_bytes: None,
                    models: None,
                }),
                rollout: RolloutPolicy {
                    cap: None,
                    download_minutes: NonZeroU32::new(20),
                    check_spread_minutes: NonZeroU32::new(10).unwrap(),
                    stages: vec![StagePolicy {
                        name: "all".into(),
                        percent: 100,
                    }],
                    success_threshold: Percent::new(95).unwrap(),
                    failure_threshold: Percent::new(5).unwrap(),
                    not_before: None,
                    deadline: None,
                    blackout_dates: BTreeSet::new(),
                    paused: false,
                    re_arm: None,
                },
            },
            sites,
            models: vec!["GXP2170".into()],
        }
    }

    fn run(f: &Fleet, now: &str) -> Plan {
        plan(f, t(now), &MacSet::default())
    }

    fn starts(p: &SitePlan) -> Vec<(String, u32)> {
        p.slots
            .iter()
            .map(|s| (s.start.format("%m-%d %H:%M").to_string(), s.len()))
            .collect()
    }

    fn with_family(mut site: Site, family: PhoneFamily, every: u64) -> Site {
        for (i, p) in site.phones.iter_mut().enumerate() {
            if (i as u64).is_multiple_of(every) {
                p.family = family;
            }
        }
        site
    }

    #[test]
    fn a_grandstream_site_plans_whole_local_hours_that_hold_check_and_download() {
        // Kolkata is UTC+05:30: whole local hours are not whole UTC hours.
        let tz: Tz = "Asia/Kolkata".parse().unwrap();
        let mut f = fleet(vec![with_family(
            site("gs", tz, 2, 5),
            PhoneFamily::Grandstream,
            1,
        )]);
        f.schedule.provisioning.weekly.window = window("01:10", "05:40");
        let p = run(&f, "2026-06-01T00:00:00Z");
        let s = &p.sites[0];
        assert!(s.whole_hours);
        assert_eq!(s.families, [PhoneFamily::Grandstream]);
        // 10 min spread → a one-hour check window; + 20 min download → two-hour slots.
        assert_eq!((s.check_minutes, s.slot_minutes), (60, 120));
        for slot in &s.slots {
            use chrono::Timelike;
            assert_eq!(slot.local_start.minute(), 0, "{}", slot.local_start);
            assert!(slot.local_start.hour() >= 2 && slot.local_end.hour() <= 5);
            assert!(slot.len() <= 2);
        }
        assert!(s.slots.windows(2).all(|w| w[0].end <= w[1].start));
        assert_eq!(s.slots.iter().map(Slot::len).sum::<u32>(), 5);
        assert!(
            p.warnings
                .iter()
                .any(|w| matches!(w, Warning::FamilyConstraint { .. })),
            "{:?}",
            p.warnings
        );
    }

    #[test]
    fn one_grandstream_phone_puts_its_whole_site_on_whole_hours() {
        let f = fleet(vec![
            with_family(
                site("mixed", chrono_tz::UTC, 2, 6),
                PhoneFamily::Grandstream,
                3,
            ),
            with_family(
                site("yealink", chrono_tz::UTC, 2, 6),
                PhoneFamily::Yealink,
                1,
            ),
        ]);
        let p = run(&f, "2026-06-01T00:00:00Z");
        assert!(p.sites[0].whole_hours && !p.sites[1].whole_hours);
        assert_eq!(
            p.sites[0].family_constraint(),
            "xstim+grandstream: whole-hour slots"
        );
        assert_eq!(p.sites[1].slot_minutes, 30);
    }

    #[test]
    fn a_whole_hour_check_window_never_ends_past_23_00() {
        let mut f = fleet(vec![with_family(
            site("late", chrono_tz::UTC, 1, 3),
            PhoneFamily::Grandstream,
            1,
        )]);
        f.schedule.provisioning.weekly.window = window("21:00", "03:00");
        let p = run(&f, "2026-06-01T00:00:00Z");
        for slot in &p.sites[0].slots {
            use chrono::Timelike;
            let h = slot.local_start.hour();
            assert!(h < 23 && h != 23, "{}", slot.local_start);
        }
    }

    /// Phones with repeated checks every 5 minutes, told their slot at 01:10 inside the
    /// 01:00–03:00 window: re-arming at once they use it the same night; re-arming at the next
    /// occurrence that night is lost.
    #[test]
    fn re_arming_at_the_next_occurrence_loses_the_window_open_when_phones_hear() {
        let mut f = fleet(vec![site("a", chrono_tz::UTC, 2, 5)]);
        f.schedule.provisioning.repeatedly = NonZeroU32::new(5);
        let now = t("2026-06-01T01:10:00Z");
        let at_once = plan_rollout(&f, now, &MacSet::default(), &|_| false, &|_| None);
        assert_eq!(at_once.sites[0].slots[0].start, t("2026-06-01T01:30:00Z"));
        f.schedule.rollout.re_arm = Some(ReArm::NextOccurrence);
        let next = plan_rollout(&f, now, &MacSet::default(), &|_| false, &|_| None);
        assert_eq!(next.sites[0].slots[0].start, t("2026-06-02T01:00:00Z"));
        assert_eq!(at_once.completion, Some(t("2026-06-01T03:00:00Z")));
        assert_eq!(next.completion, Some(t("2026-06-02T02:30:00Z")));
        // Heard before the night's window opens: that occurrence is the one lost.
        let noon = plan_rollout(
            &f,
            t("2026-06-01T12:00:00Z"),
            &MacSet::default(),
            &|_| false,
            &|_| None,
        );
        assert_eq!(noon.sites[0].slots[0].start, t("2026-06-03T01:00:00Z"));
    }

    /// Without repeated checks a minute-level phone fetches its file once per occurrence, at a
    /// random time inside it: the first slot follows the first occurrence opening after `now`,
    /// under either re-arm behaviour.
    #[test]
    fn without_repeated_checks_the_first_occurrence_is_for_hearing() {
        let first = |f: &Fleet, now: &str| {
            let p = plan_rollout(f, t(now), &MacSet::default(), &|_| false, &|_| None);
            (p.sites[0].slots[0].start, p.completion)
        };
        let mut f = fleet(vec![site("a", chrono_tz::UTC, 2, 5)]);
        assert!(hears_only_at_window_checks(&f.schedule, &f.sites[0]));
        // Before the night's window: it is heard in, the next night used.
        let expected = (t("2026-06-02T01:00:00Z"), Some(t("2026-06-02T02:30:00Z")));
        assert_eq!(first(&f, "2026-06-01T00:30:00Z"), expected);
        assert_eq!(first(&f, "2026-05-31T12:00:00Z"), expected);
        // Inside it: the phones may have made their one check already; the next night is
        // for hearing.
        assert_eq!(
            first(&f, "2026-06-01T01:10:00Z").0,
            t("2026-06-03T01:00:00Z")
        );
        f.schedule.rollout.re_arm = Some(ReArm::NextOccurrence);
        assert_eq!(first(&f, "2026-06-01T00:30:00Z"), expected);
        f.schedule.rollout.re_arm = Some(ReArm::AtOnce);
        // Repeated checks carry the slot within one interval.
        f.schedule.provisioning.repeatedly = NonZeroU32::new(60);
        assert!(!hears_only_at_window_checks(&f.schedule, &f.sites[0]));
        assert_eq!(
            first(&f, "2026-06-01T00:30:00Z").0,
            t("2026-06-01T01:30:00Z")
        );
        // Only Saturday and Sunday: heard on Saturday, used on Sunday.
        f.schedule.provisioning.repeatedly = None;
        f.schedule.provisioning.weekly.days = [Weekday::Sat, Weekday::Sun].into_iter().collect();
        // Wednesday 2026-06-03.
        assert_eq!(
            first(&f, "2026-06-03T12:00:00Z").0,
            t("2026-06-07T01:00:00Z")
        );
    }

    /// A kept slot holds its share of the cap, and its stage ends no earlier than it does.
    #[test]
    fn a_plan_builds_around_kept_slots() {
        let mut f = fleet(vec![site("a", chrono_tz::UTC, 1, 4)]);
        f.schedule.provisioning.repeatedly = NonZeroU32::new(5);
        f.schedule.rollout.stages = vec![
            StagePolicy {
                name: "canary".into(),
                percent: 50,
            },
            StagePolicy {
                name: "all".into(),
                percent: 100,
            },
        ];
        let (ranked, bounds) = stage_ranking(&f.sites[0], &f.schedule);
        assert_eq!(bounds, vec![0, 2, 4]);
        let now = t("2026-06-01T00:00:00Z");
        let kept_mac = ranked[0];
        let kept = |mac: Mac, start: &str, end: &str| {
            (mac == kept_mac).then(|| KeptSlot::new(0, t(start), t(end)))
        };
        let slot_of = |p: &Plan, mac: Mac| {
            p.sites[0]
                .slots_with_phones()
                .find(|(_, macs)| macs.contains(&mac))
                .map(|(s, _)| s.start)
        };
        let left_out: MacSet = [kept_mac].into_iter().collect();
        // The kept canary slot is the first of the night: the other canary phone (cap 1) gets
        // the next one.
        let p = plan_rollout(&f, now, &left_out, &|_| false, &|m| {
            kept(m, "2026-06-01T01:00:00Z", "2026-06-01T01:30:00Z")
        });
        assert_eq!(slot_of(&p, ranked[1]), Some(t("2026-06-01T01:30:00Z")));
        assert_eq!(slot_of(&p, ranked[2]), Some(t("2026-06-01T02:00:00Z")));
        // Kept two nights ahead: the next stage waits for it.
        let p = plan_rollout(&f, now, &left_out, &|_| false, &|m| {
            kept(m, "2026-06-03T01:00:00Z", "2026-06-03T01:30:00Z")
        });
        assert_eq!(slot_of(&p, ranked[1]), Some(t("2026-06-01T01:00:00Z")));
        assert_eq!(slot_of(&p, ranked[2]), Some(t("2026-06-03T01:30:00Z")));
        assert_eq!(slot_of(&p, ranked[3]), Some(t("2026-06-03T02:00:00Z")));
    }

    #[test]
    fn a_grandstream_site_keeps_its_daily_lead() {
        let f = fleet(vec![with_family(
            site("a", chrono_tz::UTC, 2, 4),
            PhoneFamily::Grandstream,
            1,
        )]);
        assert!(!hears_only_at_window_checks(&f.schedule, &f.sites[0]));
        let now = t("2026-06-01T00:30:00Z");
        assert_eq!(
            rollout_lead(&f.schedule, &f.sites[0], now, &|_| false),
            Duration::minutes(25 * 60)
        );
    }

    #[test]
    fn the_schedule_setting_overrides_the_families_assumption() {
        let mut f = fleet(vec![site("a", chrono_tz::UTC, 2, 5)]);
        f.schedule.provisioning.repeatedly = NonZeroU32::new(5);
        assert_eq!(site_re_arm(&f.schedule, &f.sites[0]), ReArm::AtOnce);
        f.schedule.rollout.re_arm = Some(ReArm::NextOccurrence);
        assert_eq!(site_re_arm(&f.schedule, &f.sites[0]), ReArm::NextOccurrence);
        // A schedule that re-arms at once gains nothing over the plain lead.
        f.schedule.rollout.re_arm = Some(ReArm::AtOnce);
        let now = t("2026-06-01T01:10:00Z");
        assert_eq!(
            rollout_lead(&f.schedule, &f.sites[0], now, &|_| false),
            Duration::minutes(5)
        );
    }

    #[test]
    fn no_slot_starts_before_the_sites_announcement_lead() {
        let f = fleet(vec![site("a", chrono_tz::UTC, 2, 4)]);
        let now = t("2026-06-01T00:00:00Z");
        let none = MacSet::default();
        let facts = ByMac {
            fleet: &f,
            not_planned: &none,
            holds: &|_| false,
            kept: &|_| None,
        };
        let p = plan_with_leads(&f, now, &facts, &|_, _| Duration::hours(25));
        let first = p.sites[0].slots[0].start;
        assert_eq!(first, t("2026-06-02T01:00:00Z"));
        assert_eq!(p.sites[0].lead_minutes, 25 * 60);
    }

    #[test]
    fn fills_grid_slots_with_at_most_cap_phones() {
        let p = run(
            &fleet(vec![site("a", chrono_tz::UTC, 2, 5)]),
            "2026-06-01T00:00:00Z",
        );
        let s = &p.sites[0];
        assert_eq!(s.slot_minutes, 30);
        assert_eq!(
            starts(s),
            [
                ("06-01 01:00".into(), 2),
                ("06-01 01:30".into(), 2),
                ("06-01 02:00".into(), 1)
            ]
        );
        assert_eq!(s.completion, Some(t("2026-06-01T02:30:00Z")));
        assert_eq!(p.completion, s.completion);
        assert!(p.warnings.is_empty(), "{:?}", p.warnings);
    }

    #[test]
    fn first_slot_is_the_next_grid_slot_after_now() {
        let p = run(
            &fleet(vec![site("a", chrono_tz::UTC, 2, 5)]),
            "2026-06-01T01:10:00Z",
        );
        assert_eq!(
            starts(&p.sites[0]),
            [
                ("06-01 01:30".into(), 2),
                ("06-01 02:00".into(), 2),
                ("06-01 02:30".into(), 1)
            ]
        );
    }

    #[test]
    fn not_before_holds_slots_back() {
        let mut f = fleet(vec![site("a", chrono_tz::UTC, 5, 1)]);
        f.schedule.rollout.not_before = Some(t("2026-06-03T00:00:00Z"));
        let p = run(&f, "2026-06-01T00:00:00Z");
        assert_eq!(starts(&p.sites[0]), [("06-03 01:00".into(), 1)]);
        assert_eq!(p.start, t("2026-06-03T00:00:00Z"));
    }

    #[test]
    fn window_shorter_than_a_slot_is_named_and_its_phones_unplaced() {
        let mut f = fleet(vec![site("kiosk", chrono_tz::UTC, 2, 3)]);
        f.schedule.provisioning.weekly.window = window("00:00", "00:20");
        f.schedule.rollout.download_minutes = NonZeroU32::new(25);
        let p = run(&f, "2026-06-01T00:00:00Z");
        assert_eq!(p.sites[0].unplaced.len(), 3);
        assert_eq!(p.completion, None);
        let texts: Vec<String> = p.warnings.iter().map(ToString::to_string).collect();
        assert!(
            texts.iter().any(|w| w
                .starts_with("site kiosk: window 00:00–00:20 is shorter than one slot of 35 min")),
            "{texts:?}"
        );
    }

    #[test]
    fn a_canary_gets_at_least_one_phone_per_site() {
        let mut f = fleet(vec![
            site("a", chrono_tz::UTC, 3, 7),
            site("b", chrono_tz::UTC, 3, 150),
        ]);
        f.schedule.rollout.stages = vec![
            StagePolicy {
                name: "canary".into(),
                percent: 1,
            },
            StagePolicy {
                name: "all".into(),
                percent: 100,
            },
        ];
        let p = run(&f, "2026-06-01T00:00:00Z");
        assert_eq!(p.stages[0].phones, 1 + 2, "ceil(1% of 7) + ceil(1% of 150)");
        assert_eq!(p.stages[1].phones, 6 + 148);
    }

    #[test]
    fn next_stage_waits_for_the_fleet_wide_end_of_the_previous() {
        // Tokyo's night comes first; its second stage must wait for New York's canary.
        let mut f = fleet(vec![
            site("tokyo", chrono_tz::Asia::Tokyo, 1, 4),
            site("new-york", chrono_tz::America::New_York, 1, 4),
        ]);
        f.schedule.rollout.stages = vec![
            StagePolicy {
                name: "canary".into(),
                percent: 25,
            },
            StagePolicy {
                name: "all".into(),
                percent: 100,
            },
        ];
        let p = run(&f, "2026-06-01T15:00:00Z");
        let canary_end = p.stages[0].end.unwrap();
        assert_eq!(
            canary_end,
            t("2026-06-02T05:30:00Z"),
            "New York 01:00–01:30 EDT"
        );
        for s in &p.sites {
            for slot in s.slots.iter().filter(|s| s.stage == 1) {
                assert!(
                    slot.start >= canary_end,
                    "{} starts {} before the canary ended",
                    s.name,
                    slot.start
                );
            }
        }
        assert_eq!(
            p.sites[1].slots[0].start,
            t("2026-06-01T16:00:00Z"),
            "Tokyo's canary"
        );
        assert_eq!(
            p.sites[1].slots[1].start,
            t("2026-06-02T16:00:00Z"),
            "Tokyo's next night"
        );
    }

    #[test]
    fn blackout_dates_and_days_are_skipped() {
        let mut f = fleet(vec![site("a", chrono_tz::UTC, 4, 1)]);
        f.schedule.provisioning.weekly.days = [Weekday::Mon, Weekday::Wed].into_iter().collect();
        f.schedule.rollout.blackout_dates = ["2026-06-01".parse().unwrap()].into();
        // 2026-06-01 is a Monday, blacked out; Wednesday the 3rd is next.
        let p = run(&f, "2026-05-31T12:00:00Z");
        assert_eq!(starts(&p.sites[0]), [("06-03 01:00".into(), 1)]);
    }

    #[test]
    fn download_time_comes_from_size_and_shared_uplink() {
        let mut s = site("a", chrono_tz::UTC, 3, 1);
        s.uplink_mbps = NonZeroU32::new(10);
        let mut f = fleet(vec![s, site("b", chrono_tz::UTC, 3, 1)]);
        f.schedule.rollout.download_minutes = None;
        f.schedule.firmware.as_mut().unwrap().size_bytes = Some(40 * 1024 * 1024);
        let p = run(&f, "2026-06-01T00:00:00Z");
        // 335,544,320 bits over 10 Mbit/s shared by 3 downloads: 100.7 s → 2 min.
        assert_eq!(p.sites[0].download_minutes, 2);
        assert_eq!(p.sites[1].download_minutes, DEFAULT_DOWNLOAD_MINUTES);
        assert!(p.warnings.contains(&Warning::NoUplink {
            site: "b".into(),
            minutes: 15
        }));
    }

    #[test]
    fn no_firmware_is_the_steady_state() {
        let mut f = fleet(vec![site("a", chrono_tz::UTC, 2, 5)]);
        f.schedule.firmware = None;
        let p = run(&f, "2026-06-01T00:00:00Z");
        assert!(p.sites[0].slots.is_empty());
        assert_eq!(p.completion, None);
        assert_eq!(p.warnings, [Warning::NoFirmware]);
    }

    #[test]
    fn a_selector_matching_no_site_is_reported() {
        let p = run(&fleet(vec![]), "2026-06-01T00:00:00Z");
        assert_eq!(p.warnings, [Warning::NoSites]);
        assert_eq!(p.completion, None);
    }

    #[test]
    fn paused_rollouts_are_planned_and_flagged() {
        let mut f = fleet(vec![site("a", chrono_tz::UTC, 2, 5)]);
        f.schedule.rollout.paused = true;
        let p = run(&f, "2026-06-01T00:00:00Z");
        assert!(p.paused);
        assert_eq!(p.sites[0].slots.len(), 3);
        assert!(p.warnings.contains(&Warning::Paused));
    }

    #[test]
    fn a_missed_deadline_is_reported() {
        let mut f = fleet(vec![site("a", chrono_tz::UTC, 1, 10)]);
        f.schedule.rollout.deadline = Some(t("2026-06-02T00:00:00Z"));
        let p = run(&f, "2026-06-01T00:00:00Z");
        assert_eq!(
            p.warnings,
            [Warning::DeadlineMissed {
                deadline: t("2026-06-02T00:00:00Z"),
                completion: Some(t("2026-06-03T02:00:00Z"))
            }]
        );
    }

    #[test]
    fn the_horizon_bounds_the_search() {
        // One 30-minute slot a week for one phone at a time: 58 slots in 400 days.
        let mut f = fleet(vec![site("a", chrono_tz::UTC, 1, 100)]);
        f.schedule.provisioning.weekly.window = window("01:00", "01:30");
        f.schedule.provisioning.weekly.days = [Weekday::Mon].into_iter().collect();
        let p = run(&f, "2026-06-01T00:00:00Z");
        assert_eq!(p.sites[0].slots.len(), 58);
        assert_eq!(p.sites[0].unplaced.len(), 42);
        assert!(p.warnings.contains(&Warning::Unplaced {
            site: "a".into(),
            phones: 42,
            horizon_days: HORIZON_DAYS
        }));
    }

    #[test]
    fn without_weekly_or_flexible_nothing_is_scheduled() {
        let mut f = fleet(vec![site("a", chrono_tz::UTC, 2, 5)]);
        f.schedule.provisioning.weekly.enabled = false;
        let p = run(&f, "2026-06-01T00:00:00Z");
        assert_eq!(p.sites[0].unplaced.len(), 5);
        assert_eq!(p.warnings, [Warning::NoWindows]);
    }

    #[test]
    fn flexible_window_opens_every_day() {
        let mut f = fleet(vec![site("a", chrono_tz::UTC, 1, 2)]);
        f.schedule.provisioning.weekly.enabled = false;
        f.schedule.provisioning.flexible = FlexiblePolicy {
            enabled: true,
            interval_days: 3,
            window: window("23:00", "23:30"),
        };
        let p = run(&f, "2026-06-01T00:00:00Z");
        assert_eq!(
            starts(&p.sites[0]),
            [("06-01 23:00".into(), 1), ("06-02 23:00".into(), 1)]
        );
    }

    #[test]
    fn slots_skip_a_check_window_the_phone_could_read_twice() {
        // Berlin falls back at 03:00 CEST on 2026-10-25: 02:00–03:00 happens twice. A
        // 02:00–04:00 window's grid slots whose check window is in that hour are not used.
        let mut f = fleet(vec![site("berlin", chrono_tz::Europe::Berlin, 1, 3)]);
        f.schedule.provisioning.weekly.window = window("02:00", "04:00");
        let p = run(&f, "2026-10-24T12:00:00Z");
        let local: Vec<String> = p.sites[0]
            .slots
            .iter()
            .map(|s| s.local_start.to_rfc3339())
            .collect();
        assert_eq!(
            local,
            [
                "2026-10-25T03:00:00+01:00",
                "2026-10-25T03:30:00+01:00",
                "2026-10-26T02:00:00+01:00"
            ]
        );
    }

    #[test]
    fn the_hour_before_a_fall_back_is_already_ambiguous() {
        // St. John's falls back at 02:00 NDT on Sunday 2026-11-01 (04:30Z): 01:00–02:00
        // happens twice. Saturday's whole-day window from 01:30 is cut at Sunday's 01:30
        // (first pass, 04:00Z), before the change, so its offset never changes; yet its last
        // grid slot, 01:00 NDT, is a wall time the phone sees twice and must not be used.
        let mut f = fleet(vec![site("stjohns", chrono_tz::America::St_Johns, 1, 48)]);
        f.schedule.provisioning.weekly.window = window("01:30", "01:30");
        f.schedule.provisioning.weekly.days = [Weekday::Sat, Weekday::Sun].into_iter().collect();
        let p = run(&f, "2026-10-31T03:00:00Z");
        let local: Vec<String> = p.sites[0]
            .slots
            .iter()
            .map(|s| s.local_start.to_rfc3339())
            .collect();
        assert_eq!(local.len(), 48);
        assert_eq!(local[46], "2026-11-01T00:30:00-02:30");
        assert_eq!(
            local[47], "2026-11-01T02:00:00-03:30",
            "01:00–01:59 skipped in both passes"
        );
    }

    #[test]
    fn check_window_is_the_slot_start_on_its_local_weekday() {
        let f = fleet(vec![site("syd", chrono_tz::Australia::Sydney, 1, 1)]);
        let p = run(&f, "2026-06-01T00:00:00Z");
        let slot = &p.sites[0].slots[0];
        let cw = slot.check_window();
        // 01:00 AEST on Tuesday 2 June is 15:00Z on Monday 1 June.
        assert_eq!(slot.start, t("2026-06-01T15:00:00Z"));
        assert_eq!(cw.weekday, Weekday::Tue);
        assert_eq!(cw.window, window("01:00", "01:10"));
    }
}
