//! Phone families: which vendor's provisioning keys a phone obeys, and what those keys can
//! express. A phone only obeys its own vendor's names, so every rendered file, every planned
//! slot and every simulated phone starts from the phone's family. See `docs/phones.md` for the
//! vendor documents behind every rule here.

use std::fmt;
use std::str::FromStr;

use chrono::Duration;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::policy::ProvisioningPolicy;
use super::window::{LocalTime, LocalWindow};

/// Whose provisioning keys a phone reads: `xstim`, `yealink` or `grandstream`. Left out, the
/// phone's model decides (Yealink `SIP-…`, `T…`, `CP…`, `VP…`, `W…`, `AX…`; Grandstream
/// `GXP21xx`, `GRP261x`; see docs/phones.md); XSTIM phones and other models need it, and a
/// phone no family places gets no file.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum PhoneFamily {
    /// eMetrotel XSTIM: the custom PCODEs P25020–P25041 of the design page.
    Xstim,
    /// Yealink: `static.auto_provision.*` keys in `<mac>.cfg`.
    Yealink,
    /// Grandstream: P194 "Automatic Upgrade" with whole-hour windows, in `cfg<mac>.xml`.
    Grandstream,
}

/// When a phone starts obeying a check window it has just fetched. No vendor documents it
/// (docs/planner.md, "Re-arming"): each family's value is an assumption, and a schedule can ask
/// for the conservative one (`spec.rollout.reArm: NextOccurrence`).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
pub enum ReArm {
    /// At its next check inside the new window, even in the occurrence open (or opening
    /// later) when it fetched the file.
    AtOnce,
    /// Only from the occurrence after the one open or next to open when it fetched the file:
    /// that occurrence is lost to the new window (a day with daily windows, up to a week with
    /// weekly ones).
    NextOccurrence,
}

/// What a family's schedule keys can say, as the planner needs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Capabilities {
    /// Check windows are written to the minute (`false`: whole hours only).
    pub minute_windows: bool,
    /// The phone can wait until it has been idle inside the window.
    pub inactivity: bool,
    /// An every-N-days ("flexible") mode exists.
    pub flexible: bool,
    /// Repeated checks can run alongside a windowed mode (Grandstream's P194 is one mode).
    pub repeat_with_window: bool,
}

/// Why a model names no family.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FamilyError {
    #[error("unknown phone family '{0}': expected xstim, yealink or grandstream")]
    Unknown(String),
}

impl PhoneFamily {
    /// When the family applies a new check window (an assumption for every family: no vendor
    /// says; docs/planner.md, "Re-arming").
    pub fn re_arm(self) -> ReArm {
        match self {
            // The simulator's phone and the design page: the narrowed window is used the same
            // day. Yealink's guide says its flexible-mode check time is computed again after
            // a provisioning and at every reboot, which fits, but says nothing of weekly mode.
            PhoneFamily::Xstim | PhoneFamily::Yealink => ReArm::AtOnce,
            // A slot file sets "daily at hour" (P194 = 2); when the phone schedules its next
            // daily check from the new hours is undocumented. Assumed at once, like the others.
            PhoneFamily::Grandstream => ReArm::AtOnce,
        }
    }

    /// Every family, in a fixed order (metrics and docs iterate it).
    pub const ALL: [PhoneFamily; 3] = [
        PhoneFamily::Xstim,
        PhoneFamily::Yealink,
        PhoneFamily::Grandstream,
    ];

    /// The lower-case name used in the CRD, metrics and docs.
    pub fn name(self) -> &'static str {
        match self {
            PhoneFamily::Xstim => "xstim",
            PhoneFamily::Yealink => "yealink",
            PhoneFamily::Grandstream => "grandstream",
        }
    }

    pub fn capabilities(self) -> Capabilities {
        match self {
            PhoneFamily::Xstim | PhoneFamily::Yealink => Capabilities {
                minute_windows: true,
                inactivity: true,
                flexible: true,
                repeat_with_window: true,
            },
            PhoneFamily::Grandstream => Capabilities {
                minute_windows: false,
                inactivity: false,
                flexible: false,
                repeat_with_window: false,
            },
        }
    }

    /// The family of a model from its name, by the documented prefix table (`docs/phones.md`,
    /// "Which family a model belongs to"). `None` when no vendor document places the model:
    /// such phones need `spec.phones[].family`, and are reported and left out otherwise.
    ///
    /// Yealink: `SIP-…`, and `T`, `CP`, `VP`, `W`, `AX` followed by a digit (Yealink's model
    /// names, research §3.7). Grandstream: only the lines whose templates document P194:
    /// GXP21xx and GRP261x (research §1.1–1.3b). Other Grandstream lines (HT80x and GXW42xx use
    /// P22296; GVC uses P250xx numbers for other settings; the rest is unchecked) and every
    /// XSTIM phone (no model names are documented) are not guessed.
    pub fn for_model(model: &str) -> Option<PhoneFamily> {
        let m = model.trim().to_ascii_uppercase();
        let digit_after = |prefix: &str| {
            m.strip_prefix(prefix)
                .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_digit()))
        };
        if (m.starts_with("SIP-") && m.len() > 4)
            || ["T", "CP", "VP", "W", "AX"].into_iter().any(digit_after)
        {
            return Some(PhoneFamily::Yealink);
        }
        let four_digits = |prefix: &str| {
            m.strip_prefix(prefix).is_some_and(|rest| {
                rest.len() >= 2 && rest.bytes().take(2).all(|b| b.is_ascii_digit())
            })
        };
        if four_digits("GXP21") || m.starts_with("GRP261") {
            return Some(PhoneFamily::Grandstream);
        }
        None
    }

    /// The family of a phone: the inventory's explicit one, else the model's.
    pub fn resolve(model: &str, explicit: Option<PhoneFamily>) -> Option<PhoneFamily> {
        explicit.or_else(|| Self::for_model(model))
    }
}

impl fmt::Display for PhoneFamily {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for PhoneFamily {
    type Err = FamilyError;

    fn from_str(s: &str) -> Result<Self, FamilyError> {
        PhoneFamily::ALL
            .into_iter()
            .find(|f| f.name() == s)
            .ok_or_else(|| FamilyError::Unknown(s.to_owned()))
    }
}

/// Grandstream P193's documented range, minutes.
pub const GRANDSTREAM_MIN_INTERVAL: u32 = 60;
pub const GRANDSTREAM_MAX_INTERVAL: u32 = 86400;

/// Grandstream P194 "Automatic Upgrade": one mode at a time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GrandstreamMode {
    /// 0: no scheduled check (the phone still provisions when it boots).
    Off,
    /// 1: every P193 minutes.
    Every { minutes: u32 },
    /// 2: every day, once inside `[P285:00, P8459:00)` (a random minute with P8458 = 1).
    Daily { start_hour: u32, end_hour: u32 },
}

impl GrandstreamMode {
    /// The P194 value.
    pub fn code(self) -> u32 {
        match self {
            GrandstreamMode::Off => 0,
            GrandstreamMode::Every { .. } => 1,
            GrandstreamMode::Daily { .. } => 2,
        }
    }
}

/// How the operator's steady-state policy was narrowed for a family that cannot say it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Narrowing {
    pub family: PhoneFamily,
    /// What was narrowed and to what, for the operator.
    pub detail: String,
}

/// The Grandstream steady-state schedule for `p`, and every way it differs from `p`.
///
/// Never widened: a Grandstream phone never checks at a time the policy does not allow.
/// Repeated checks win over windows (P194 is one mode, and repeated checks are what carries a
/// new slot to the phone); an interval under 60 minutes becomes 60 (fewer checks); a weekly
/// window becomes the whole hours inside it, daily, only when every day is selected every
/// week (P286's day numbering is undocumented, and it holds one day); flexible every 1 day is
/// daily; anything else is P194 = 0. The inactivity requirement cannot be expressed at all:
/// the phone checks at its random minute whether idle or not (reported).
pub fn grandstream_steady(p: &ProvisioningPolicy) -> (GrandstreamMode, Vec<Narrowing>) {
    let mut notes = Vec::new();
    let mut note = |detail: String| {
        notes.push(Narrowing {
            family: PhoneFamily::Grandstream,
            detail,
        })
    };
    let windowed = p.weekly.enabled || p.flexible.enabled;
    if let Some(m) = p.repeatedly {
        let minutes = m
            .get()
            .clamp(GRANDSTREAM_MIN_INTERVAL, GRANDSTREAM_MAX_INTERVAL);
        if minutes != m.get() {
            note(format!(
                "repeatedly every {} min is outside P193's 60-86400: checks every {minutes} min",
                m.get()
            ));
        }
        if windowed {
            note(
                "P194 holds one mode: repeated checks are kept, the weekly/flexible window is dropped"
                    .to_owned(),
            );
        }
        return (GrandstreamMode::Every { minutes }, notes);
    }
    let daily = |w: LocalWindow, what: &str, note: &mut dyn FnMut(String)| match whole_hours_inside(
        w,
    ) {
        Some((start_hour, end_hour)) => {
            if start_hour * 60 != w.start.minutes() || end_hour * 60 != w.end.minutes() {
                note(format!(
                    "{what} window {w} is not whole hours: checks {start_hour:02}:00-{end_hour:02}:00"
                ));
            }
            GrandstreamMode::Daily {
                start_hour,
                end_hour,
            }
        }
        None => {
            note(format!(
                "{what} window {w} holds no whole hour before midnight: no scheduled check (P194 = 0)"
            ));
            GrandstreamMode::Off
        }
    };
    if p.weekly.enabled {
        if p.weekly.inactivity_minutes > 0 {
            note(format!(
                "no inactivity setting: checks at a random minute of the window even when not idle for {} min",
                p.weekly.inactivity_minutes
            ));
        }
        let every_day = p.weekly.days == super::window::DaySet::ALL && p.weekly.interval_weeks == 0;
        if !every_day {
            note(
                "weekly days other than every day of every week cannot be written (P286 holds one day, numbering undocumented): no scheduled check (P194 = 0)"
                    .to_owned(),
            );
            return (GrandstreamMode::Off, notes);
        }
        return (daily(p.weekly.window, "weekly", &mut note), notes);
    }
    if p.flexible.enabled {
        if p.flexible.interval_days != 1 {
            note(format!(
                "no every-N-days mode: flexible every {} days gets no scheduled check (P194 = 0)",
                p.flexible.interval_days
            ));
            return (GrandstreamMode::Off, notes);
        }
        return (daily(p.flexible.window, "flexible", &mut note), notes);
    }
    (GrandstreamMode::Off, notes)
}

/// The longest run of whole hours inside `w` that does not cross midnight, as
/// `(start_hour, end_hour)` with `end_hour <= 23` (P8459's range; a window ending at midnight
/// would be end < start, which no Grandstream document defines).
pub fn whole_hours_inside(w: LocalWindow) -> Option<(u32, u32)> {
    let start = w.start.minutes().div_ceil(60);
    let parts: Vec<(u32, u32)> = if w.crosses_midnight() {
        // [start, 24:00) and [00:00, end).
        vec![(start, 23), (0, w.end.minutes() / 60)]
    } else {
        vec![(start, (w.end.minutes() / 60).min(23))]
    };
    parts
        .into_iter()
        .filter(|(s, e)| e > s)
        .max_by_key(|(s, e)| (e - s, std::cmp::Reverse(*s)))
}

/// How long after a change the phones of `family` are sure to have fetched their file again,
/// hence the earliest a newly planned slot may start. Minute-level families keep the
/// operator's repeated checks inside slots, so they hear within one interval; without them, a
/// phone holding a slot file checks only on its slot's weekday (the file narrows its window
/// to that day), so it hears within a week and its check window, and a phone on its steady
/// file hears at its check in the next window occurrence (lead 0 here:
/// [`crate::core::planner::rollout_lead`] adds the occurrence). A Grandstream phone holding a
/// slot file checks daily at its slot's hours, so it hears within a day and its check window.
/// `check_minutes` is the check window of the phone's slot file.
pub fn announcement_lead(
    family: PhoneFamily,
    p: &ProvisioningPolicy,
    holds_slot_file: bool,
    check_minutes: u32,
) -> Duration {
    let repeat = i64::from(p.repeatedly.map_or(0, |m| m.get()));
    match family {
        PhoneFamily::Xstim | PhoneFamily::Yealink if repeat == 0 && holds_slot_file => {
            Duration::minutes(7 * 24 * 60 + i64::from(check_minutes))
        }
        PhoneFamily::Xstim | PhoneFamily::Yealink => Duration::minutes(repeat),
        PhoneFamily::Grandstream if holds_slot_file => {
            Duration::minutes(24 * 60 + i64::from(check_minutes))
        }
        PhoneFamily::Grandstream => match grandstream_steady(p).0 {
            GrandstreamMode::Every { minutes } => Duration::minutes(i64::from(minutes)),
            GrandstreamMode::Daily { .. } => Duration::minutes(24 * 60 + 60),
            // Only a boot would bring the file: plan as for a daily check.
            GrandstreamMode::Off => Duration::minutes(24 * 60 + 60),
        },
    }
}

/// The lead of `site` under `schedule`: the longest of its phones' leads, over the phones the
/// firmware applies to (the others are never told a slot), `holds(i)` saying whether the phone
/// holds a slot file it has not finished with. A site with no such phone gets the minute-level
/// lead (it gets no slot anyway). The controller, `phonefleet plan` and the metrics all plan
/// with this one function (through [`crate::core::planner::plan_rollout`]), so a preview and
/// the controller's first decision use the same lead by construction.
pub fn site_lead(
    site: &super::Site,
    schedule: &super::Schedule,
    holds: &dyn Fn(usize) -> bool,
) -> Duration {
    // A lead depends only on the family and on whether the phone holds a slot file: worked
    // out once per site, not per phone (at a million phones the per-phone work of
    // `grandstream_steady` was a tenth of a reconcile).
    let leads = FamilyLeads::of(schedule);
    let longest = leads.longest();
    let mut lead: Option<Duration> = None;
    for (i, p) in site.phones.iter().enumerate().filter(|(_, p)| {
        schedule
            .firmware
            .as_ref()
            .is_some_and(|fw| fw.applies_to(p.model))
    }) {
        let this = leads.get(p.family, holds(i));
        let max = lead.map_or(this, |l| l.max(this));
        lead = Some(max);
        if max == longest {
            break;
        }
    }
    lead.unwrap_or_else(|| announcement_lead(PhoneFamily::Xstim, &schedule.provisioning, false, 0))
}

/// [`announcement_lead`] of each family, holding a slot file or not, under one schedule.
struct FamilyLeads([[Duration; 2]; 3]);

impl FamilyLeads {
    fn of(schedule: &super::Schedule) -> Self {
        let lead = |family: PhoneFamily, holds: bool| {
            let check = match family {
                PhoneFamily::Grandstream => grandstream_check_minutes(schedule),
                PhoneFamily::Xstim | PhoneFamily::Yealink => minute_check_minutes(schedule),
            };
            announcement_lead(family, &schedule.provisioning, holds, check)
        };
        FamilyLeads(
            [
                PhoneFamily::Xstim,
                PhoneFamily::Yealink,
                PhoneFamily::Grandstream,
            ]
            .map(|f| [lead(f, false), lead(f, true)]),
        )
    }

    fn get(&self, family: PhoneFamily, holds: bool) -> Duration {
        let row = match family {
            PhoneFamily::Xstim => 0,
            PhoneFamily::Yealink => 1,
            PhoneFamily::Grandstream => 2,
        };
        self.0[row][usize::from(holds)]
    }

    /// The longest lead of any phone: a site reaching it needs no further look.
    fn longest(&self) -> Duration {
        self.0
            .iter()
            .flatten()
            .copied()
            .max()
            .unwrap_or_else(Duration::zero)
    }
}

/// The lead of a site whose phones hold no slot file yet (a rollout starting).
pub fn fresh_site_lead(site: &super::Site, schedule: &super::Schedule) -> Duration {
    site_lead(site, schedule, &|_| false)
}

/// The check window a minute-level (XSTIM, Yealink) slot gets: the check spread and the
/// inactivity (the planner's `spread`).
pub fn minute_check_minutes(schedule: &super::Schedule) -> u32 {
    let inactivity = schedule
        .provisioning
        .rollout_windows()
        .map_or(0, |w| w.inactivity_minutes);
    schedule.rollout.check_spread_minutes.get() + inactivity
}

/// The check window a Grandstream slot gets: the schedule's check spread in whole hours (the
/// planner's whole-hour grid; Grandstream has no inactivity setting).
pub fn grandstream_check_minutes(schedule: &super::Schedule) -> u32 {
    let inactivity = schedule
        .provisioning
        .rollout_windows()
        .map_or(0, |w| w.inactivity_minutes);
    (schedule.rollout.check_spread_minutes.get() + inactivity)
        .div_ceil(60)
        .max(1)
        * 60
}

/// The check window `[start_hour:00, end_hour:00)` a Grandstream slot file writes for a slot
/// whose check window starts at `start` and lasts `check_minutes` (whole hours by planning).
pub fn grandstream_slot_hours(start: LocalTime, check_minutes: u32) -> (u32, u32) {
    let start_hour = start.hour();
    (
        start_hour,
        (start_hour + check_minutes.div_ceil(60)).min(23),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::{DaySet, FlexiblePolicy, WeeklyPolicy};
    use std::num::NonZeroU32;

    fn w(s: &str, e: &str) -> LocalWindow {
        LocalWindow {
            start: s.parse().expect("HH:MM"),
            end: e.parse().expect("HH:MM"),
        }
    }

    fn policy() -> ProvisioningPolicy {
        ProvisioningPolicy {
            power_on: true,
            repeatedly: None,
            weekly: WeeklyPolicy {
                enabled: true,
                interval_weeks: 0,
                inactivity_minutes: 0,
                window: w("01:00", "05:00"),
                days: DaySet::ALL,
            },
            flexible: FlexiblePolicy {
                enabled: false,
                interval_days: 30,
                window: w("02:00", "02:00"),
            },
        }
    }

    #[test]
    fn yealink_and_documented_grandstream_models_are_placed_by_name() {
        for m in ["SIP-T46U", "T54W", "t46s", "CP920", "VP59", "W60B", "AX83H"] {
            assert_eq!(PhoneFamily::for_model(m), Some(PhoneFamily::Yealink), "{m}");
        }
        for m in ["GXP2170", "gxp2135", "GRP2614", "GRP2612W"] {
            assert_eq!(
                PhoneFamily::for_model(m),
                Some(PhoneFamily::Grandstream),
                "{m}"
            );
        }
    }

    #[test]
    fn undocumented_and_other_key_models_are_not_guessed() {
        for m in [
            "", "HT802", "GXW4216", "GVC3210", "DP750", "GXP1628", "WP820", "XSTIM", "Tx", "SIP-",
        ] {
            assert_eq!(PhoneFamily::for_model(m), None, "{m:?}");
        }
    }

    #[test]
    fn an_explicit_family_wins_over_the_model() {
        assert_eq!(
            PhoneFamily::resolve("GXP2170", Some(PhoneFamily::Xstim)),
            Some(PhoneFamily::Xstim)
        );
        assert_eq!(
            PhoneFamily::resolve("HT802", None),
            None,
            "no guess without an explicit family"
        );
    }

    #[test]
    fn families_parse_from_their_names() {
        for f in PhoneFamily::ALL {
            assert_eq!(f.name().parse::<PhoneFamily>(), Ok(f));
        }
        assert!("polycom".parse::<PhoneFamily>().is_err());
    }

    #[test]
    fn an_every_day_weekly_window_is_daily_in_whole_hours() {
        let (mode, notes) = grandstream_steady(&policy());
        assert_eq!(
            mode,
            GrandstreamMode::Daily {
                start_hour: 1,
                end_hour: 5
            }
        );
        assert!(notes.is_empty(), "{notes:?}");
    }

    #[test]
    fn a_minute_window_is_narrowed_to_the_whole_hours_inside_it() {
        let mut p = policy();
        p.weekly.window = w("01:10", "03:40");
        let (mode, notes) = grandstream_steady(&p);
        assert_eq!(
            mode,
            GrandstreamMode::Daily {
                start_hour: 2,
                end_hour: 3
            }
        );
        assert_eq!(notes.len(), 1);
        p.weekly.window = w("01:10", "01:40");
        assert_eq!(grandstream_steady(&p).0, GrandstreamMode::Off);
    }

    #[test]
    fn some_days_only_are_never_widened_to_every_day() {
        let mut p = policy();
        p.weekly.days = [chrono::Weekday::Mon, chrono::Weekday::Tue]
            .into_iter()
            .collect();
        let (mode, notes) = grandstream_steady(&p);
        assert_eq!(mode, GrandstreamMode::Off);
        assert!(notes[0].detail.contains("P286"));
    }

    #[test]
    fn repeated_checks_win_and_keep_to_p193s_range() {
        let mut p = policy();
        p.repeatedly = NonZeroU32::new(30);
        let (mode, notes) = grandstream_steady(&p);
        assert_eq!(mode, GrandstreamMode::Every { minutes: 60 });
        assert_eq!(notes.len(), 2, "{notes:?}");
    }

    #[test]
    fn inactivity_is_reported_as_unexpressible() {
        let mut p = policy();
        p.weekly.inactivity_minutes = 30;
        let (_, notes) = grandstream_steady(&p);
        assert!(notes[0].detail.contains("inactivity"));
    }

    #[test]
    fn whole_hours_never_cross_midnight() {
        assert_eq!(whole_hours_inside(w("22:00", "02:00")), Some((0, 2)));
        assert_eq!(whole_hours_inside(w("21:00", "01:30")), Some((21, 23)));
        assert_eq!(whole_hours_inside(w("00:00", "00:00")), Some((0, 23)));
        assert_eq!(whole_hours_inside(w("23:10", "23:50")), None);
    }

    #[test]
    fn a_grandstream_phone_holding_a_slot_file_hears_within_a_day() {
        let mut p = policy();
        p.repeatedly = NonZeroU32::new(30);
        assert_eq!(
            announcement_lead(PhoneFamily::Grandstream, &p, false, 60),
            Duration::minutes(60)
        );
        assert_eq!(
            announcement_lead(PhoneFamily::Grandstream, &p, true, 60),
            Duration::minutes(25 * 60)
        );
        assert_eq!(
            announcement_lead(PhoneFamily::Yealink, &p, true, 60),
            Duration::minutes(30)
        );
    }

    #[test]
    fn a_minute_level_phone_without_repeated_checks_holding_a_slot_file_hears_within_a_week() {
        let p = policy();
        for family in [PhoneFamily::Xstim, PhoneFamily::Yealink] {
            assert_eq!(announcement_lead(family, &p, false, 40), Duration::zero());
            assert_eq!(
                announcement_lead(family, &p, true, 40),
                Duration::minutes(7 * 24 * 60 + 40)
            );
        }
    }
}
