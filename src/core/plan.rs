//! What the planner decides: per site, the slots in which its phones may download.

use std::fmt;
use std::ops::Range;

use chrono::{DateTime, Datelike, FixedOffset, NaiveDate, Utc, Weekday};
use chrono_tz::Tz;

use super::family::PhoneFamily;
use super::mac::Mac;
use super::policy::SiteCap;
use super::window::{LocalTime, LocalWindow};

/// A rollout plan for one schedule at one `now`.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// `namespace/name` of the schedule.
    pub schedule: String,
    pub now: DateTime<Utc>,
    /// No slot starts before this: the later of `now` and `rollout.notBefore`.
    pub start: DateTime<Utc>,
    /// Version being rolled out; `None` is the steady state (no slots).
    pub firmware: Option<String>,
    /// The rollout is paused: the plan shows what would happen once resumed.
    pub paused: bool,
    /// End of the last slot, when every phone that needs the firmware has one.
    pub completion: Option<DateTime<Utc>>,
    pub stages: Vec<StageSummary>,
    pub warnings: Vec<Warning>,
    /// Sorted by name.
    pub sites: Vec<SitePlan>,
}

impl Plan {
    /// Phones that need the firmware, over all sites.
    pub fn phones(&self) -> u64 {
        self.sites.iter().map(|s| u64::from(s.phones)).sum()
    }

    /// Phones without a slot (see the warnings for why).
    pub fn unplaced(&self) -> u64 {
        self.sites.iter().map(|s| s.unplaced.len() as u64).sum()
    }
}

/// One stage over the whole fleet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StageSummary {
    pub name: String,
    /// Cumulative percent of each site's phones.
    pub percent: u32,
    /// Phones assigned to this stage (placed or not).
    pub phones: u64,
    /// First slot start and last slot end of the stage; the next stage starts after `end`.
    pub start: Option<DateTime<Utc>>,
    pub end: Option<DateTime<Utc>>,
}

/// The plan of one site.
#[derive(Clone, Debug, PartialEq)]
pub struct SitePlan {
    pub name: String,
    pub time_zone: Tz,
    /// Effective cap: the smaller of the site's and the rollout's.
    pub cap: SiteCap,
    /// Phones in the site's inventory.
    pub inventory: u32,
    /// Phones that need the firmware (placed + unplaced).
    pub phones: u32,
    /// The phone's check window inside a slot: check spread plus inactivity requirement.
    pub check_minutes: u32,
    pub download_minutes: u32,
    /// `check_minutes + download_minutes` (whole hours on a whole-hour grid): how long a
    /// slot's phones may be downloading.
    pub slot_minutes: u32,
    /// Families of the phones the firmware is for, sorted.
    pub families: Vec<PhoneFamily>,
    /// Slots start on whole local hours and last whole hours, because a family present
    /// (Grandstream) can only be told whole-hour check windows.
    pub whole_hours: bool,
    /// No slot starts earlier than this many minutes after the plan's start: the time the
    /// site's phones may take to hear of a new slot.
    pub lead_minutes: u32,
    /// End of the site's last slot, when all its phones are placed.
    pub completion: Option<DateTime<Utc>>,
    /// Sorted by start; never overlapping.
    pub slots: Vec<Slot>,
    /// Phones that need the firmware but got no slot, sorted.
    pub unplaced: Vec<Mac>,
    /// Backing store of the slots' phones (each slot indexes a range of it).
    pub(crate) macs: Vec<Mac>,
}

impl SitePlan {
    /// The family constraint the site was planned under, for the plan's outputs: its families
    /// and whether slots are whole hours, e.g. `grandstream+yealink: whole-hour slots`.
    pub fn family_constraint(&self) -> String {
        if self.families.is_empty() {
            return "-".to_owned();
        }
        let names: Vec<&str> = self.families.iter().map(|f| f.name()).collect();
        let grid = if self.whole_hours {
            "whole-hour slots"
        } else {
            "minute slots"
        };
        format!("{}: {grid}", names.join("+"))
    }

    /// The phones of `slot` (a slot of this site), sorted by MAC.
    pub fn phones_of(&self, slot: &Slot) -> &[Mac] {
        &self.macs[slot.phones.start as usize..slot.phones.end as usize]
    }

    /// Each slot with its phones.
    pub fn slots_with_phones(&self) -> impl Iterator<Item = (&Slot, &[Mac])> {
        self.slots.iter().map(|s| (s, self.phones_of(s)))
    }
}

/// An interval during which at most `cap` phones of a site may be downloading: they check
/// within the first `check_minutes` and have `download_minutes` after that to finish.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Slot {
    /// Index into [`Plan::stages`].
    pub stage: u32,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    /// `start` in the site's local time.
    pub local_start: DateTime<FixedOffset>,
    /// `end` in the site's local time.
    pub local_end: DateTime<FixedOffset>,
    /// Local date on which the window occurrence holding this slot opens.
    pub window_date: NaiveDate,
    pub check_minutes: u32,
    pub(crate) phones: Range<u32>,
}

impl Slot {
    /// Number of phones in the slot.
    pub fn len(&self) -> u32 {
        self.phones.end - self.phones.start
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The narrowed window a renderer gives this slot's phones: they check on this weekday
    /// between these local times, so the phones themselves keep to the slot.
    pub fn check_window(&self) -> CheckWindow {
        let start = LocalTime::of(self.local_start.time());
        CheckWindow {
            weekday: self.local_start.weekday(),
            window: LocalWindow {
                start,
                end: start.wrapping_add(self.check_minutes),
            },
        }
    }
}

/// A phone's own check window for its slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CheckWindow {
    pub weekday: Weekday,
    pub window: LocalWindow,
}

/// Something the operator should know about a plan. A fixed set of kinds, so the controller
/// can turn them into event reasons and metric labels.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Warning {
    NoSites,
    NoFirmware,
    Paused,
    NoWindows,
    NoDays,
    Repeatedly {
        minutes: u32,
    },
    DefaultDownloadTime {
        minutes: u32,
    },
    NoUplink {
        site: String,
        minutes: u32,
    },
    WindowShorterThanSlot {
        site: String,
        window: LocalWindow,
        slot_minutes: u32,
    },
    NoPhones {
        site: String,
    },
    Unplaced {
        site: String,
        phones: u32,
        horizon_days: u32,
    },
    DeadlineMissed {
        deadline: DateTime<Utc>,
        completion: Option<DateTime<Utc>>,
    },
    /// Phones whose model no family places: left out of the plan and served no file.
    NoFamily {
        site: String,
        models: Vec<String>,
        phones: u32,
    },
    /// A family cannot say the operator's policy exactly: what its phones do instead.
    FamilyConstraint {
        family: PhoneFamily,
        detail: String,
    },
}

impl Warning {
    /// A stable CamelCase reason, for events and metric labels.
    pub fn reason(&self) -> &'static str {
        match self {
            Warning::NoSites => "NoSites",
            Warning::NoFirmware => "NoFirmware",
            Warning::Paused => "Paused",
            Warning::NoWindows => "NoWindows",
            Warning::NoDays => "NoDays",
            Warning::Repeatedly { .. } => "Repeatedly",
            Warning::DefaultDownloadTime { .. } => "DefaultDownloadTime",
            Warning::NoUplink { .. } => "NoUplink",
            Warning::WindowShorterThanSlot { .. } => "WindowShorterThanSlot",
            Warning::NoPhones { .. } => "NoPhones",
            Warning::Unplaced { .. } => "Unplaced",
            Warning::DeadlineMissed { .. } => "DeadlineMissed",
            Warning::NoFamily { .. } => "NoFamily",
            Warning::FamilyConstraint { .. } => "FamilyConstraint",
        }
    }
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rfc = |t: &DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        match self {
            Warning::NoSites => f.write_str(
                "the site selector matches no PhoneSite of the schedule's namespace",
            ),
            Warning::NoFirmware => f.write_str(
                "no firmware set: steady state, nothing to roll out (phones only get their configuration)",
            ),
            Warning::Paused => f.write_str(
                "rollout is paused: no slot is released until it is resumed; the plan shows what would happen then",
            ),
            Warning::NoWindows => f.write_str(
                "neither weekly nor flexible provisioning is enabled: firmware cannot be scheduled (phones would only check at power-on or at a fixed interval)",
            ),
            Warning::NoDays => f.write_str(
                "weekly provisioning has no days selected: firmware cannot be scheduled",
            ),
            Warning::Repeatedly { minutes } => write!(
                f,
                "repeatedly is on: phones also check every {minutes} min at any time, outside their slots; only the provisioning server's run-time cap holds those downloads"
            ),
            Warning::DefaultDownloadTime { minutes } => write!(
                f,
                "neither rollout.downloadMinutes nor firmware.sizeBytes is set: assuming {minutes} min per download"
            ),
            Warning::NoUplink { site, minutes } => write!(
                f,
                "site {site}: no uplinkMbps to derive the download time from firmware.sizeBytes: assuming {minutes} min per download"
            ),
            Warning::WindowShorterThanSlot { site, window, slot_minutes } => write!(
                f,
                "site {site}: window {window} is shorter than one slot of {slot_minutes} min; its phones are not placed"
            ),
            Warning::NoPhones { site } => {
                write!(f, "site {site}: no phone needs this firmware")
            }
            Warning::Unplaced { site, phones, horizon_days } => write!(
                f,
                "site {site}: {phones} phones could not be placed within {horizon_days} days"
            ),
            Warning::DeadlineMissed { deadline, completion: Some(c) } => write!(
                f,
                "deadline {} cannot be met: predicted completion {}",
                rfc(deadline),
                rfc(c)
            ),
            Warning::DeadlineMissed { deadline, completion: None } => write!(
                f,
                "deadline {} cannot be met: some phones cannot be placed at all",
                rfc(deadline)
            ),
            Warning::NoFamily { site, models, phones } => write!(
                f,
                "site {site}: {phones} phones of model(s) {} belong to no phone family: left out, no file (set spec.phones[].family)",
                models.join(", ")
            ),
            Warning::FamilyConstraint { family, detail } => write!(f, "{family} phones: {detail}"),
        }
    }
}
