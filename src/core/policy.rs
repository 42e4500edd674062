//! Checked domain types the planner works with. Built from the wire types by
//! [`crate::validate`]; every value here is already in range.

use std::collections::BTreeSet;
use std::num::NonZeroU32;

use chrono::{DateTime, NaiveDate, Utc};
use chrono_tz::Tz;

use super::family::PhoneFamily;
use super::mac::Mac;
use super::window::{DaySet, LocalWindow};

/// Most phones of a site downloading at once. Zero would mean "never", which no site wants,
/// so it cannot be built.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SiteCap(NonZeroU32);

impl SiteCap {
    pub fn new(cap: u32) -> Option<Self> {
        NonZeroU32::new(cap).map(Self)
    }

    pub fn get(self) -> u32 {
        self.0.get()
    }
}

/// A percentage 0–100.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Percent(u8);

impl Percent {
    pub fn new(p: u32) -> Option<Self> {
        (p <= 100).then_some(Self(p as u8))
    }

    pub fn get(self) -> u32 {
        u32::from(self.0)
    }
}

/// An interned phone model (`GXP2170`, …), so phones carry a small integer instead of a string.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ModelId(pub u32);

/// One phone of a site's inventory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Phone {
    pub mac: Mac,
    pub model: ModelId,
    /// Whose keys the phone obeys: from `spec.phones[].family` or the model table.
    pub family: PhoneFamily,
}

/// A phone of the inventory that no family places: left out of the plan and the files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnplacedPhone {
    pub mac: Mac,
    pub model: String,
}

/// A site: its zone, its cap and its phones (MACs unique within the site).
#[derive(Clone, Debug, PartialEq)]
pub struct Site {
    pub name: String,
    pub time_zone: Tz,
    pub cap: SiteCap,
    pub uplink_mbps: Option<NonZeroU32>,
    pub phones: Vec<Phone>,
    /// Phones whose model no family places and that name none: reported, never guessed.
    pub unplaced_models: Vec<UnplacedPhone>,
}

/// The weekly knobs (P25022–P25035).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WeeklyPolicy {
    pub enabled: bool,
    /// 0–12.
    pub interval_weeks: u8,
    /// 0–120.
    pub inactivity_minutes: u8,
    pub window: LocalWindow,
    pub days: DaySet,
}

/// The flexible knobs (P25036–P25041).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlexiblePolicy {
    pub enabled: bool,
    /// 1–1000.
    pub interval_days: u16,
    pub window: LocalWindow,
}

/// The phone's provisioning settings, checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProvisioningPolicy {
    pub power_on: bool,
    /// Minutes between checks when "Repeatedly" is on.
    pub repeatedly: Option<NonZeroU32>,
    pub weekly: WeeklyPolicy,
    pub flexible: FlexiblePolicy,
}

/// Where and when firmware may be downloaded, as the planner reads the provisioning knobs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Windows {
    pub window: LocalWindow,
    pub days: DaySet,
    /// Minutes a phone must be idle inside the window before it checks.
    pub inactivity_minutes: u32,
}

impl ProvisioningPolicy {
    /// The windows firmware can be scheduled in: the weekly window on its days when weekly is
    /// on, else the flexible window every day, else none (phones would only check at power-on
    /// or at a fixed interval, which no plan controls).
    pub fn rollout_windows(&self) -> Option<Windows> {
        if self.weekly.enabled {
            Some(Windows {
                window: self.weekly.window,
                days: self.weekly.days,
                inactivity_minutes: u32::from(self.weekly.inactivity_minutes),
            })
        } else if self.flexible.enabled {
            Some(Windows {
                window: self.flexible.window,
                days: DaySet::ALL,
                inactivity_minutes: 0,
            })
        } else {
            None
        }
    }
}

/// The firmware a rollout installs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FirmwareTarget {
    pub version: String,
    pub file: String,
    pub size_bytes: Option<u64>,
    /// Models it is for; `None` is every model.
    pub models: Option<BTreeSet<ModelId>>,
}

impl FirmwareTarget {
    pub fn applies_to(&self, model: ModelId) -> bool {
        self.models.as_ref().is_none_or(|m| m.contains(&model))
    }
}

/// One rollout stage: a cumulative percent of each site's phones.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StagePolicy {
    pub name: String,
    /// 1–100, strictly increasing over the stages, the last one 100.
    pub percent: u32,
}

/// Rollout pacing and gates, checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RolloutPolicy {
    pub cap: Option<SiteCap>,
    pub download_minutes: Option<NonZeroU32>,
    /// Minutes of the phone's own random check window inside a slot (≥ 1).
    pub check_spread_minutes: NonZeroU32,
    /// Never empty; percents strictly increasing, the last one 100.
    pub stages: Vec<StagePolicy>,
    pub success_threshold: Percent,
    pub failure_threshold: Percent,
    pub not_before: Option<DateTime<Utc>>,
    pub deadline: Option<DateTime<Utc>>,
    pub blackout_dates: BTreeSet<NaiveDate>,
    pub paused: bool,
    /// When phones apply a new check window; `None`: each family's own ([`PhoneFamily::re_arm`]).
    pub re_arm: Option<super::family::ReArm>,
}

/// A schedule, checked: what the planner needs from a PhoneSchedule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Schedule {
    /// `namespace/name`, for messages and output.
    pub name: String,
    pub provisioning: ProvisioningPolicy,
    pub firmware: Option<FirmwareTarget>,
    pub rollout: RolloutPolicy,
}

/// Everything the planner plans over: one schedule and the sites it selects, plus the model
/// names behind the [`ModelId`]s.
#[derive(Clone, Debug, PartialEq)]
pub struct Fleet {
    pub schedule: Schedule,
    /// Sorted by name, names unique.
    pub sites: Vec<Site>,
    pub models: Vec<String>,
}
