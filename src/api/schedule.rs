use chrono::{DateTime, Utc};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// When the phones of the selected sites may provision, which firmware they should run, and
/// how a firmware change is rolled out.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "phonefleet.io",
    version = "v1alpha1",
    kind = "PhoneSchedule",
    plural = "phoneschedules",
    shortname = "psched",
    category = "phonefleet",
    namespaced,
    status = "PhoneScheduleStatus"
)]
#[serde(rename_all = "camelCase")]
pub struct PhoneScheduleSpec {
    /// Which PhoneSites of this namespace the schedule applies to (label selector). An empty
    /// selector selects every site of the namespace.
    #[serde(default)]
    pub site_selector: LabelSelector,
    /// The phone's own provisioning settings (the "Scheduled Auto Provision" page of the
    /// phone's web UI); rendered into every phone's configuration file.
    #[serde(default)]
    pub provisioning: Provisioning,
    /// Firmware the phones should run. Setting or changing it starts a rollout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub firmware: Option<Firmware>,
    /// How a firmware change is spread over time and stopped if it goes wrong.
    #[serde(default)]
    pub rollout: Rollout,
}

/// The phone's provisioning knobs, named as on the phone's web UI.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Provisioning {
    /// Check for configuration and firmware at every boot (P25020).
    #[serde(default = "default_true")]
    pub power_on: bool,
    /// Check at a fixed interval of minutes, at any time of day (P25021).
    #[serde(default)]
    pub repeatedly: Repeatedly,
    /// Check weekly inside a time window on chosen days (P25022–P25035).
    #[serde(default)]
    pub weekly: Weekly,
    /// Check every N days inside a time window (P25036–P25041).
    #[serde(default)]
    pub flexible: Flexible,
}

impl Default for Provisioning {
    fn default() -> Self {
        Self {
            power_on: true,
            repeatedly: Repeatedly::default(),
            weekly: Weekly::default(),
            flexible: Flexible::default(),
        }
    }
}

/// "Repeatedly" provisioning: a check every `everyMinutes`, whatever the time.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Repeatedly {
    /// Turn repeated checks on (P25021).
    #[serde(default)]
    pub enabled: bool,
    /// Minutes between two checks ("Check for upgrade every"; the phone's default is 10080,
    /// one week).
    #[serde(default = "default_every_minutes")]
    pub every_minutes: u32,
}

impl Default for Repeatedly {
    fn default() -> Self {
        Self {
            enabled: false,
            every_minutes: default_every_minutes(),
        }
    }
}

/// "Schedule Provisioning by Weeks".
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Weekly {
    /// Turn weekly scheduled provisioning on (P25022).
    #[serde(default)]
    pub enabled: bool,
    /// Weekly Upgrade Interval (P25023): 0 checks on every selected day of every week; N
    /// checks on one of the selected days every N weeks.
    #[serde(default)]
    pub interval_weeks: u32,
    /// Inactivity Time Expire (P25024): 0 checks at a random time inside the window; N checks
    /// only once the phone has been idle for N minutes inside the window.
    #[serde(default)]
    pub inactivity_minutes: u32,
    /// The local time window (P25025–P25028). An end earlier than the start crosses
    /// midnight; an end equal to the start means the whole day.
    #[serde(default)]
    pub window: TimeWindow,
    /// Days on which the window opens (P25029 Sunday … P25035 Saturday). A window that
    /// crosses midnight belongs to the day it opens on.
    #[serde(default)]
    pub days: Vec<Weekday>,
}

impl Default for Weekly {
    fn default() -> Self {
        Self {
            enabled: false,
            interval_weeks: 1,
            inactivity_minutes: 0,
            window: TimeWindow::default(),
            days: Vec::new(),
        }
    }
}

/// "Schedule Provisioning by Days".
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Flexible {
    /// Turn flexible auto provisioning on (P25036).
    #[serde(default)]
    pub enabled: bool,
    /// Flexible Interval Days (P25037): the period in days; the phone picks its day inside the
    /// period from its MAC.
    #[serde(default = "default_interval_days")]
    pub interval_days: u32,
    /// Flexible Time (P25038–P25041): the phone picks a random time in it at every boot.
    #[serde(default)]
    pub window: TimeWindow,
}

impl Default for Flexible {
    fn default() -> Self {
        Self {
            enabled: false,
            interval_days: default_interval_days(),
            window: TimeWindow::default(),
        }
    }
}

/// A local time-of-day window, `HH:MM` to `HH:MM` in the site's time zone.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TimeWindow {
    /// Local time at which the window opens, `HH:MM` (24-hour clock).
    pub start: String,
    /// Local time at which the window closes, `HH:MM`; earlier than `start` crosses midnight,
    /// equal to `start` is the whole day.
    pub end: String,
}

impl Default for TimeWindow {
    fn default() -> Self {
        Self {
            start: "00:00".into(),
            end: "05:00".into(),
        }
    }
}

/// Day of the week, as the phone's "Day of Week" check boxes.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, JsonSchema)]
pub enum Weekday {
    Sun,
    Mon,
    Tue,
    Wed,
    Thu,
    Fri,
    Sat,
}

/// The firmware phones should run.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Firmware {
    /// Version string the phones report once upgraded (as in their User-Agent).
    pub version: String,
    /// File name of the firmware image, served by the provisioning server.
    pub file: String,
    /// Size of the image in bytes; with a site's `uplinkMbps` it gives the download time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_bytes: Option<u64>,
    /// Models this firmware is for; empty means every model of the selected sites.
    #[serde(default)]
    pub models: Vec<String>,
}

/// How a firmware change spreads: stages, pacing, and when to stop.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct Rollout {
    /// Cap on concurrent downloads per site for this rollout; the effective cap of a site is
    /// the smaller of this and the site's own `maxConcurrentDownloads`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrent_downloads: Option<u32>,
    /// Minutes one firmware download takes. When unset it is derived from the firmware's
    /// `sizeBytes` and the site's `uplinkMbps` (the link shared by `cap` downloads).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub download_minutes: Option<u32>,
    /// Minutes a phone's own check window lasts inside its slot (the phone checks at a random
    /// time in it). Default 10. The phone's inactivity requirement is added on top.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check_spread_minutes: Option<u32>,
    /// Cumulative stages, e.g. 1 % (canary), 10 %, 100 %. Empty means one stage of 100 %.
    #[serde(default)]
    pub stages: Vec<Stage>,
    /// Percent of a stage's phones that must come back upgraded before the next stage is
    /// released. Default 95.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success_threshold_percent: Option<u32>,
    /// Percent of a stage's phones failing that halts the rollout. Default 5.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_threshold_percent: Option<u32>,
    /// No firmware download before this instant (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_before: Option<DateTime<Utc>>,
    /// The rollout should be complete by this instant (RFC 3339); a plan that cannot meet it
    /// is reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<DateTime<Utc>>,
    /// Local dates (`YYYY-MM-DD`, in each site's zone) on which no window opens, e.g. public
    /// holidays or trading peaks.
    #[serde(default)]
    pub blackout_dates: Vec<String>,
    /// Stop handing out new slots; phones already upgraded stay upgraded.
    #[serde(default)]
    pub paused: bool,
}

/// One rollout stage.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Stage {
    /// Name shown in status and metrics (default `stage-N`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Cumulative percent of each site's phones upgraded by the end of this stage (1–100);
    /// the last stage must be 100.
    pub percent: u32,
}

/// What the controller observed and decided; written only by phonefleet.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PhoneScheduleStatus {
    /// The spec generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// One word for humans: Pending, Idle, Progressing, Paused, Halted, Completed or Invalid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// Name of the stage currently released.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage: Option<String>,
    /// `upgraded/total` phones, for `kubectl get`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<String>,
    /// Phone counts by state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub counts: Option<PhoneCounts>,
    /// Start of the next slot or window in which some phone may download.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_window: Option<DateTime<Utc>>,
    /// When the last phone is predicted to be done, from the current plan.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub predicted_completion: Option<DateTime<Utc>>,
    /// Per-site summary (one entry per site, never per phone).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sites: Vec<SiteSummary>,
    /// Standard conditions: Ready, Progressing, Degraded.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// Phone counts by rollout state.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PhoneCounts {
    pub total: u32,
    pub pending: u32,
    pub in_progress: u32,
    pub upgraded: u32,
    pub failed: u32,
}

/// Rollout summary of one site.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SiteSummary {
    pub name: String,
    pub phones: u32,
    pub upgraded: u32,
    pub failed: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion: Option<DateTime<Utc>>,
}

fn default_true() -> bool {
    true
}
fn default_every_minutes() -> u32 {
    10080
}
fn default_interval_days() -> u32 {
    1
}
