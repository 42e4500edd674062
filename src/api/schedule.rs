use chrono::{DateTime, Utc};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// `HH:MM` on a 24-hour clock, as the phone's hour and minute PCODEs accept.
pub const HHMM_PATTERN: &str = "^([01][0-9]|2[0-3]):[0-5][0-9]$";
/// A local calendar date, `YYYY-MM-DD`.
pub const DATE_PATTERN: &str = "^[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])$";
/// A firmware file name the provisioning server can serve from one directory: no path.
pub const FILE_NAME_PATTERN: &str = "^[A-Za-z0-9_][A-Za-z0-9._+-]*$";

/// When the phones of the selected sites may provision, which firmware they should run, and
/// how a firmware change is rolled out.
// Each `printcolumn(...)` repeats `type_`; clippy takes the repeats for duplicates.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "phonefleet.io",
    version = "v1alpha1",
    kind = "PhoneSchedule",
    plural = "phoneschedules",
    shortname = "psched",
    category = "phonefleet",
    namespaced,
    status = "PhoneScheduleStatus",
    doc = "When the phones of the selected PhoneSites check for configuration and firmware, \
           which firmware they should run, and how a firmware change is rolled out in stages \
           without exceeding any site's download cap.",
    printcolumn(
        name = "Phase",
        type_ = "string",
        json_path = ".status.phase",
        description = "Pending, Idle, Progressing, Paused, Halted, Completed or Invalid"
    ),
    printcolumn(
        name = "Stage",
        type_ = "string",
        json_path = ".status.stage",
        description = "Rollout stage currently released"
    ),
    printcolumn(
        name = "Upgraded",
        type_ = "string",
        json_path = ".status.progress",
        description = "Phones upgraded / phones targeted"
    ),
    // A `date` column is rendered as the age of a past instant and as `<invalid>` for a future
    // one, and the next window is nearly always in the future: the RFC 3339 string reads well
    // without the controller rewriting a relative text every minute.
    printcolumn(
        name = "Next Window",
        type_ = "string",
        json_path = ".status.nextWindow",
        description = "Start of the next slot or window in which a phone may download (UTC)"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
// A rollout only moves inside the provisioning windows: without one there is no time at which
// the planner may place a download.
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "!has(self.firmware) || (has(self.provisioning) && ((has(self.provisioning.weekly) && has(self.provisioning.weekly.enabled) && self.provisioning.weekly.enabled) || (has(self.provisioning.flexible) && has(self.provisioning.flexible.enabled) && self.provisioning.flexible.enabled)))",
    "message": "a firmware rollout needs provisioning.weekly or provisioning.flexible enabled: their windows are when phones may download",
    "fieldPath": ".firmware",
    "reason": "FieldValueInvalid"
}]))]
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
    /// one week). At least 1.
    #[serde(default = "default_every_minutes")]
    #[schemars(range(min = 1))]
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
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "!has(self.enabled) || !self.enabled || (has(self.days) && size(self.days) > 0)",
    "message": "weekly provisioning is enabled but no day is selected: list at least one of Sun, Mon, Tue, Wed, Thu, Fri, Sat",
    "fieldPath": ".days",
    "reason": "FieldValueRequired"
}]))]
pub struct Weekly {
    /// Turn weekly scheduled provisioning on (P25022).
    #[serde(default)]
    pub enabled: bool,
    /// Weekly Upgrade Interval (P25023): 0 checks on every selected day of every week; N
    /// checks on one of the selected days every N weeks. 0–12.
    #[serde(default)]
    #[schemars(range(min = 0, max = 12))]
    pub interval_weeks: u32,
    /// Inactivity Time Expire (P25024): 0 checks at a random time inside the window; N checks
    /// only once the phone has been idle for N minutes inside the window. 0–120.
    #[serde(default)]
    #[schemars(range(min = 0, max = 120))]
    pub inactivity_minutes: u32,
    /// The local time window (P25025–P25028). An end earlier than the start crosses
    /// midnight; an end equal to the start means the whole day.
    #[serde(default)]
    pub window: TimeWindow,
    /// Days on which the window opens (P25029 Sunday … P25035 Saturday). A window that
    /// crosses midnight belongs to the day it opens on. Each day at most once.
    #[serde(default)]
    #[schemars(length(max = 7), extend("x-kubernetes-list-type" = "set"))]
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
    /// period from its MAC. 1–1000.
    #[serde(default = "default_interval_days")]
    #[schemars(range(min = 1, max = 1000))]
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
    /// Local time at which the window opens, `HH:MM` (24-hour clock, `00:00`–`23:59`).
    #[schemars(regex(pattern = HHMM_PATTERN))]
    pub start: String,
    /// Local time at which the window closes, `HH:MM`; earlier than `start` crosses midnight,
    /// equal to `start` is the whole day.
    #[schemars(regex(pattern = HHMM_PATTERN))]
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
#[derive(
    Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, JsonSchema,
)]
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
    #[schemars(length(min = 1, max = 64))]
    pub version: String,
    /// File name of the firmware image (a plain name such as `gxp2170fw.bin`, no directory),
    /// served by the provisioning server under `firmware/<site>/`.
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = FILE_NAME_PATTERN),
        extend("x-kubernetes-validations" = [{
            "rule": "!self.contains('..')",
            "message": "firmware file must be a plain file name: no '/' and no '..'"
        }])
    )]
    pub file: String,
    /// Size of the image in bytes; with a site's `uplinkMbps` it gives the download time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub size_bytes: Option<u64>,
    /// Models this firmware is for; empty means every model of the selected sites.
    #[serde(default)]
    #[schemars(
        length(max = 64),
        inner(length(min = 1, max = 64)),
        extend("x-kubernetes-list-type" = "set")
    )]
    pub models: Vec<String>,
}

/// How a firmware change spreads: stages, pacing, and when to stop.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "!has(self.stages) || (self.stages.all(s, self.stages.exists_one(t, t.percent == s.percent)) && self.stages.map(s, s.percent).isSorted())",
        "message": "stage percents must be strictly increasing (they are cumulative), e.g. 1, 10, 100",
        "fieldPath": ".stages",
        "reason": "FieldValueInvalid"
    },
    {
        "rule": "!has(self.stages) || size(self.stages) == 0 || self.stages[size(self.stages) - 1].percent == 100",
        "message": "the last stage must be 100 percent, or no phone beyond it would ever be upgraded",
        "fieldPath": ".stages",
        "reason": "FieldValueInvalid"
    },
    {
        "rule": "!has(self.stages) || self.stages.all(s, !has(s.name) || self.stages.exists_one(t, has(t.name) && t.name == s.name))",
        "message": "stage names must be unique: status, events and metrics name stages",
        "fieldPath": ".stages",
        "reason": "FieldValueInvalid"
    },
    {
        "rule": "!has(self.notBefore) || !has(self.deadline) || self.deadline > self.notBefore",
        "message": "deadline must be after notBefore",
        "fieldPath": ".deadline",
        "reason": "FieldValueInvalid"
    }
]))]
pub struct Rollout {
    /// Cap on concurrent downloads per site for this rollout; the effective cap of a site is
    /// the smaller of this and the site's own `maxConcurrentDownloads`. At least 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_concurrent_downloads: Option<u32>,
    /// Minutes one firmware download takes. When unset it is derived from the firmware's
    /// `sizeBytes` and the site's `uplinkMbps` (the link shared by `cap` downloads).
    /// At least 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub download_minutes: Option<u32>,
    /// Minutes a phone's own check window lasts inside its slot (the phone checks at a random
    /// time in it). Default 10, at least 1. The phone's inactivity requirement is added on
    /// top.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub check_spread_minutes: Option<u32>,
    /// Cumulative stages, e.g. 1 % (canary), 10 %, 100 %: percents strictly increasing, the
    /// last one 100. Empty means one stage of 100 %. At most 10 stages.
    #[serde(default)]
    #[schemars(length(max = 10))]
    pub stages: Vec<Stage>,
    /// Percent of a stage's phones that must come back upgraded before the next stage is
    /// released. Default 95; 0–100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100))]
    pub success_threshold_percent: Option<u32>,
    /// Percent of a stage's phones failing that halts the rollout. Default 5; 0–100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100))]
    pub failure_threshold_percent: Option<u32>,
    /// No firmware download before this instant (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_before: Option<DateTime<Utc>>,
    /// The rollout should be complete by this instant (RFC 3339), after `notBefore`; a plan
    /// that cannot meet it is reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<DateTime<Utc>>,
    /// Local dates (`YYYY-MM-DD`, in each site's zone) on which no window opens, e.g. public
    /// holidays or trading peaks. Each date at most once, at most 366.
    #[serde(default)]
    #[schemars(
        length(max = 366),
        inner(regex(pattern = DATE_PATTERN)),
        extend("x-kubernetes-list-type" = "set")
    )]
    pub blackout_dates: Vec<String>,
    /// Stop handing out new slots; phones already upgraded stay upgraded.
    #[serde(default)]
    pub paused: bool,
    /// When phones start obeying a new check window: `AtOnce` (inside the window open or
    /// opening when they fetch the file) or `NextOccurrence` (only from the window after that,
    /// the conservative choice: every announcement then costs one window). Unset: each phone
    /// family's assumed behaviour (all `AtOnce`; no vendor documents it, see docs/planner.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub re_arm: Option<crate::core::family::ReArm>,
}

/// One rollout stage.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Stage {
    /// Name shown in status and metrics (default `stage-N`); unique among the stages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    pub name: Option<String>,
    /// Cumulative percent of each site's phones upgraded by the end of this stage (1–100);
    /// the last stage must be 100.
    #[schemars(range(min = 1, max = 100))]
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
    /// Per-site summary (one entry per site, never per phone), by name. At most 1,000 sites:
    /// beyond that the sites with phones downloading or failed, then those whose next window
    /// comes first, are listed, and `sitesOmitted` counts the rest (the metrics have every site).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sites: Vec<SiteSummary>,
    /// Sites of the rollout left out of `sites` to keep the object within the API server's
    /// size limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sites_omitted: Option<u32>,
    /// Per-stage summary of the rollout, in stage order (at most 10).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stages: Vec<StageSummary>,
    /// Where the rollout of the current firmware stands; the controller's memory of released
    /// stages and halted models, so a restart or upgrade of phonefleet redoes nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<RolloutStatus>,
    /// Standard conditions: Ready, Progressing, Degraded.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}

/// The gate state of the rollout of one firmware version.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RolloutStatus {
    /// The firmware version this state is about; a new version starts again at the first
    /// stage.
    pub firmware_version: String,
    /// Index (from 0) of the last stage released.
    pub released_stage: u32,
    /// Models whose failure ratio crossed the threshold: their phones get no more slots until
    /// the firmware changes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub halted_models: Vec<String>,
    /// Operator requests (`kubectl phonefleet retry|unhalt|promote`, see docs/operating.md)
    /// carried out for this version, oldest first, at most 20: failures recorded before a
    /// retry or an unhalt no longer count, and a request is never carried out twice.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 20))]
    pub requests: Vec<HandledRequest>,
}

/// What an operator can ask of the controller through an annotation of the PhoneSchedule.
#[derive(
    Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, JsonSchema,
)]
pub enum RequestKind {
    /// Plan failed phones again (annotation `phonefleet.io/retry`).
    Retry,
    /// Lift a model's halt for the same firmware version (annotation `phonefleet.io/unhalt`).
    Unhalt,
    /// Release a stage now, without waiting for the success threshold (annotation
    /// `phonefleet.io/promote`).
    Promote,
}

/// An operator request the controller carried out.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HandledRequest {
    pub kind: RequestKind,
    /// The request's id, as written in the annotation.
    #[schemars(length(max = 64))]
    pub id: String,
    /// When the controller carried it out; failures recorded up to then are forgiven.
    pub at: DateTime<Utc>,
    /// The model it was limited to, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// The phone it was limited to, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    /// The stage index (from 0) a promotion released.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage: Option<u32>,
}

/// Phone counts by rollout state.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PhoneCounts {
    /// Phones the rollout targets.
    pub total: u32,
    /// Phones without a released slot yet.
    pub pending: u32,
    /// Phones inside their slot, not yet seen on the new firmware.
    pub in_progress: u32,
    /// Phones seen running the target firmware.
    pub upgraded: u32,
    /// Phones that missed their slot or came back on the old firmware.
    pub failed: u32,
}

/// Rollout summary of one stage, over every site.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StageSummary {
    /// Name of the stage.
    pub name: String,
    /// Phones the stage holds.
    pub phones: u32,
    /// Phones of the stage downloading or rebooting now.
    pub in_progress: u32,
    /// Phones of the stage seen running the target firmware.
    pub upgraded: u32,
    /// Phones of the stage that failed.
    pub failed: u32,
}

/// Rollout summary of one site.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SiteSummary {
    /// Name of the PhoneSite.
    pub name: String,
    /// Phones of the site the rollout targets.
    pub phones: u32,
    /// Phones of the site seen running the target firmware.
    pub upgraded: u32,
    /// Phones of the site that failed.
    pub failed: u32,
    /// Phones of the site downloading or rebooting now.
    #[serde(default)]
    pub in_progress: u32,
    /// Whether some phone of the site is inside its released slot now (downloads may happen).
    #[serde(default)]
    pub window_open: bool,
    /// Start of the site's next slot in which some phone may download.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_window: Option<DateTime<Utc>>,
    /// When the site's last phone is predicted to be done.
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
