//! The one boundary between the API's wire types and the scheduling core: every string the
//! operator wrote is parsed here, once, into a checked type, and every refusal names the
//! document, the field path and the value.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::num::NonZeroU32;

use chrono::NaiveDate;
use chrono_tz::Tz;

use crate::api;
use crate::core::mac::{Mac, MacError};
use crate::core::policy::{
    FirmwareTarget, FlexiblePolicy, ModelId, Percent, Phone, ProvisioningPolicy, RolloutPolicy,
    Schedule, Site, SiteCap, StagePolicy, UnplacedPhone, WeeklyPolicy,
};
use crate::core::window::{DaySet, LocalTime, LocalTimeError, LocalWindow};
use crate::core::{MacMap, PhoneFamily};

/// Check spread used when the schedule does not set one: long enough that a slot's phones do
/// not all check in the same minute.
pub const DEFAULT_CHECK_SPREAD_MINUTES: u32 = 10;
pub const DEFAULT_SUCCESS_THRESHOLD: u32 = 95;
pub const DEFAULT_FAILURE_THRESHOLD: u32 = 5;
/// Most rollout stages, as the CRD allows: each becomes a status entry and a metric label.
pub const MAX_STAGES: usize = 10;

/// A value the core cannot accept, with where it was written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{document}: {field}: {value} {reason}")]
pub struct ValidationError {
    /// The object, e.g. `PhoneSite voice/paris`, with its position in a file when known.
    pub document: String,
    /// Path of the field, e.g. `spec.phones[3].mac`.
    pub field: String,
    /// The value as written (strings quoted).
    pub value: String,
    pub reason: Reason,
}

/// Why a value was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Reason {
    #[error("is not a MAC address: {0}")]
    Mac(#[from] MacError),
    #[error("is the same MAC as {0}")]
    DuplicateMac(String),
    #[error("is not a time of day: {0}")]
    Time(#[from] LocalTimeError),
    #[error("is not a known IANA time zone (e.g. Europe/Paris)")]
    UnknownZone,
    #[error("is out of range {min}–{max}")]
    OutOfRange { min: u64, max: u64 },
    #[error("must be at least {0}")]
    AtLeast(u64),
    #[error("is listed twice")]
    Twice,
    #[error("has more than {0} entries")]
    TooMany(usize),
    #[error("must list at least one day when weekly provisioning is enabled")]
    NoDays,
    #[error(
        "needs provisioning.weekly or provisioning.flexible enabled: their windows are when phones may download"
    )]
    NoWindow,
    #[error(
        "must be a plain file name: letters, digits, '.', '_', '+', '-', not starting with '.' or '-', no '..'"
    )]
    FileName,
    #[error("is not a YYYY-MM-DD date")]
    Date,
    #[error("is not above the previous stage's percent (stages are cumulative)")]
    StageNotIncreasing,
    #[error("is the last stage's percent and must be 100, or phones beyond it are never upgraded")]
    LastStageNot100,
    #[error("must not be empty")]
    Empty,
    #[error("is not after rollout.notBefore")]
    DeadlineBeforeNotBefore,
}

/// Interns phone model names so the core handles small integers.
#[derive(Debug, Default, Clone)]
pub struct ModelTable {
    names: Vec<String>,
    /// foldhash, as `MacMap`: looked up once per phone of every selection.
    ids: HashMap<String, ModelId, foldhash::fast::RandomState>,
}

impl ModelTable {
    pub fn intern(&mut self, name: &str) -> ModelId {
        if let Some(&id) = self.ids.get(name) {
            return id;
        }
        let id = ModelId(self.names.len() as u32);
        self.names.push(name.to_owned());
        self.ids.insert(name.to_owned(), id);
        id
    }

    /// Model names indexed by [`ModelId`].
    pub fn into_names(self) -> Vec<String> {
        self.names
    }
}

/// Converts a PhoneSchedule's spec. `name` is `namespace/name`; `document` labels errors.
pub fn schedule(
    document: &str,
    name: &str,
    spec: &api::PhoneScheduleSpec,
    models: &mut ModelTable,
) -> Result<Schedule, ValidationError> {
    let at = At { document };
    let provisioning = provisioning(&at, &spec.provisioning)?;
    let firmware = spec
        .firmware
        .as_ref()
        .map(|fw| firmware(&at, fw, models))
        .transpose()?;
    if firmware.is_some() && provisioning.rollout_windows().is_none() {
        return Err(at.err("spec.firmware", "(set)", Reason::NoWindow));
    }
    Ok(Schedule {
        name: name.to_owned(),
        provisioning,
        firmware,
        rollout: rollout(&at, &spec.rollout)?,
    })
}

/// Converts a PhoneSite's spec. MACs are compared after parsing, so one phone written as
/// `00:0b:82:12:34:56` and as `000B82123456` is caught.
pub fn site(
    document: &str,
    name: &str,
    spec: &api::PhoneSiteSpec,
    models: &mut ModelTable,
) -> Result<Site, ValidationError> {
    let at = At { document };
    let time_zone: Tz = spec
        .time_zone
        .parse()
        .map_err(|_| at.err("spec.timeZone", quote(&spec.time_zone), Reason::UnknownZone))?;
    let cap = SiteCap::new(spec.max_concurrent_downloads).ok_or_else(|| {
        at.err(
            "spec.maxConcurrentDownloads",
            spec.max_concurrent_downloads,
            Reason::AtLeast(1),
        )
    })?;
    let uplink_mbps = spec
        .uplink_mbps
        .map(|m| NonZeroU32::new(m).ok_or_else(|| at.err("spec.uplinkMbps", m, Reason::AtLeast(1))))
        .transpose()?;
    let mut seen: MacMap<usize> =
        MacMap::with_capacity_and_hasher(spec.phones.len(), Default::default());
    let mut phones = Vec::with_capacity(spec.phones.len());
    let mut unplaced_models = Vec::new();
    for (i, entry) in spec.phones.iter().enumerate() {
        let field = || format!("spec.phones[{i}].mac");
        let mac: Mac = entry
            .mac
            .parse()
            .map_err(|e| at.err(field(), quote(&entry.mac), Reason::Mac(e)))?;
        if let Some(first) = seen.insert(mac, i) {
            return Err(at.err(
                field(),
                quote(&entry.mac),
                Reason::DuplicateMac(format!("spec.phones[{first}].mac")),
            ));
        }
        if entry.model.is_empty() {
            return Err(at.err(format!("spec.phones[{i}].model"), quote(""), Reason::Empty));
        }
        match PhoneFamily::resolve(&entry.model, entry.family) {
            Some(family) => phones.push(Phone {
                mac,
                model: models.intern(&entry.model),
                family,
            }),
            None => unplaced_models.push(UnplacedPhone {
                mac,
                model: entry.model.to_string(),
            }),
        }
    }
    Ok(Site {
        name: name.to_owned(),
        time_zone,
        cap,
        uplink_mbps,
        phones,
        unplaced_models,
    })
}

/// A site validated on its own, its phones' model ids local to it ([`CheckedSite::models`]):
/// what the controller remembers per PhoneSite version, so an unchanged site is not parsed
/// and validated again on every reconcile (a million MACs at the largest fleets).
#[derive(Clone, Debug, PartialEq)]
pub struct CheckedSite {
    site: Site,
    /// The site's model names, indexed by its phones' (local) model ids.
    models: Vec<String>,
}

/// [`site`] with a model table of the site's own.
pub fn site_alone(
    document: &str,
    name: &str,
    spec: &api::PhoneSiteSpec,
) -> Result<CheckedSite, ValidationError> {
    let mut models = ModelTable::default();
    let site = site(document, name, spec, &mut models)?;
    Ok(CheckedSite {
        site,
        models: models.into_names(),
    })
}

impl CheckedSite {
    /// The site with its model ids in `models`, the fleet's table: the same ids, in the same
    /// order, as [`site`] would have given with that table.
    pub fn in_table(&self, models: &mut ModelTable) -> Site {
        let ids: Vec<ModelId> = self.models.iter().map(|m| models.intern(m)).collect();
        let mut site = self.site.clone();
        for phone in &mut site.phones {
            phone.model = ids[phone.model.0 as usize];
        }
        site
    }
}

/// Where errors are reported.
struct At<'a> {
    document: &'a str,
}

impl At<'_> {
    fn err(
        &self,
        field: impl Into<String>,
        value: impl fmt::Display,
        reason: Reason,
    ) -> ValidationError {
        ValidationError {
            document: self.document.to_owned(),
            field: field.into(),
            value: value.to_string(),
            reason,
        }
    }

    fn range(&self, field: &str, value: u32, min: u32, max: u32) -> Result<u32, ValidationError> {
        if (min..=max).contains(&value) {
            Ok(value)
        } else if max == u32::MAX {
            Err(self.err(field, value, Reason::AtLeast(min.into())))
        } else {
            Err(self.err(
                field,
                value,
                Reason::OutOfRange {
                    min: min.into(),
                    max: max.into(),
                },
            ))
        }
    }

    fn time(&self, field: &str, value: &str) -> Result<LocalTime, ValidationError> {
        value
            .parse()
            .map_err(|e| self.err(field, quote(value), Reason::Time(e)))
    }

    fn window(&self, field: &str, w: &api::TimeWindow) -> Result<LocalWindow, ValidationError> {
        Ok(LocalWindow {
            start: self.time(&format!("{field}.start"), &w.start)?,
            end: self.time(&format!("{field}.end"), &w.end)?,
        })
    }
}

fn quote(s: &str) -> String {
    format!("{s:?}")
}

fn provisioning(at: &At, p: &api::Provisioning) -> Result<ProvisioningPolicy, ValidationError> {
    let every = at.range(
        "spec.provisioning.repeatedly.everyMinutes",
        p.repeatedly.every_minutes,
        1,
        u32::MAX,
    )?;
    let w = &p.weekly;
    let weekly = WeeklyPolicy {
        enabled: w.enabled,
        interval_weeks: at.range(
            "spec.provisioning.weekly.intervalWeeks",
            w.interval_weeks,
            0,
            12,
        )? as u8,
        inactivity_minutes: at.range(
            "spec.provisioning.weekly.inactivityMinutes",
            w.inactivity_minutes,
            0,
            120,
        )? as u8,
        window: at.window("spec.provisioning.weekly.window", &w.window)?,
        days: days(at, w.enabled, &w.days)?,
    };
    let f = &p.flexible;
    let flexible = FlexiblePolicy {
        enabled: f.enabled,
        interval_days: at.range(
            "spec.provisioning.flexible.intervalDays",
            f.interval_days,
            1,
            1000,
        )? as u16,
        window: at.window("spec.provisioning.flexible.window", &f.window)?,
    };
    Ok(ProvisioningPolicy {
        power_on: p.power_on,
        repeatedly: p
            .repeatedly
            .enabled
            .then(|| NonZeroU32::new(every))
            .flatten(),
        weekly,
        flexible,
    })
}

/// The phone has one check box per day: a day listed twice is a mistake, as the API says.
fn days(at: &At, enabled: bool, list: &[api::Weekday]) -> Result<DaySet, ValidationError> {
    if enabled && list.is_empty() {
        return Err(at.err("spec.provisioning.weekly.days", "[]", Reason::NoDays));
    }
    let mut set = DaySet::default();
    for (i, &d) in list.iter().enumerate() {
        let day = weekday(d);
        if set.contains(day) {
            return Err(at.err(
                format!("spec.provisioning.weekly.days[{i}]"),
                format!("{d:?}"),
                Reason::Twice,
            ));
        }
        set.insert(day);
    }
    Ok(set)
}

fn weekday(d: api::Weekday) -> chrono::Weekday {
    use chrono::Weekday as W;
    match d {
        api::Weekday::Sun => W::Sun,
        api::Weekday::Mon => W::Mon,
        api::Weekday::Tue => W::Tue,
        api::Weekday::Wed => W::Wed,
        api::Weekday::Thu => W::Thu,
        api::Weekday::Fri => W::Fri,
        api::Weekday::Sat => W::Sat,
    }
}

fn firmware(
    at: &At,
    fw: &api::Firmware,
    models: &mut ModelTable,
) -> Result<FirmwareTarget, ValidationError> {
    if fw.version.is_empty() {
        return Err(at.err("spec.firmware.version", quote(""), Reason::Empty));
    }
    if fw.file.is_empty() {
        return Err(at.err("spec.firmware.file", quote(""), Reason::Empty));
    }
    // The provisioning server serves the file from one directory: no path may escape it.
    let plain = fw
        .file
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "._+-".contains(c))
        && !fw.file.starts_with(['.', '-'])
        && !fw.file.contains("..");
    if !plain {
        return Err(at.err("spec.firmware.file", quote(&fw.file), Reason::FileName));
    }
    if let Some(size) = fw.size_bytes
        && size == 0
    {
        return Err(at.err("spec.firmware.sizeBytes", 0, Reason::AtLeast(1)));
    }
    let mut set = BTreeSet::new();
    for (i, m) in fw.models.iter().enumerate() {
        if m.is_empty() {
            return Err(at.err(
                format!("spec.firmware.models[{i}]"),
                quote(""),
                Reason::Empty,
            ));
        }
        set.insert(models.intern(m));
    }
    Ok(FirmwareTarget {
        version: fw.version.clone(),
        file: fw.file.clone(),
        size_bytes: fw.size_bytes,
        models: (!set.is_empty()).then_some(set),
    })
}

fn rollout(at: &At, r: &api::Rollout) -> Result<RolloutPolicy, ValidationError> {
    let positive = |field: &str, v: Option<u32>| -> Result<Option<NonZeroU32>, ValidationError> {
        v.map(|v| NonZeroU32::new(v).ok_or_else(|| at.err(field, v, Reason::AtLeast(1))))
            .transpose()
    };
    let cap = positive(
        "spec.rollout.maxConcurrentDownloads",
        r.max_concurrent_downloads,
    )?
    .and_then(|c| SiteCap::new(c.get()));
    let download_minutes = positive("spec.rollout.downloadMinutes", r.download_minutes)?;
    let spread = positive("spec.rollout.checkSpreadMinutes", r.check_spread_minutes)?
        .unwrap_or(NonZeroU32::MIN.saturating_add(DEFAULT_CHECK_SPREAD_MINUTES - 1));
    // A check window and a download both fit in a day, or no window could hold a slot.
    at.range("spec.rollout.checkSpreadMinutes", spread.get(), 1, 1440)?;

    if r.stages.len() > MAX_STAGES {
        return Err(at.err(
            "spec.rollout.stages",
            format!("{} stages", r.stages.len()),
            Reason::TooMany(MAX_STAGES),
        ));
    }
    let mut stages = Vec::with_capacity(r.stages.len().max(1));
    let mut previous = 0;
    for (i, s) in r.stages.iter().enumerate() {
        let field = format!("spec.rollout.stages[{i}].percent");
        at.range(&field, s.percent, 1, 100)?;
        if s.percent <= previous {
            return Err(at.err(field, s.percent, Reason::StageNotIncreasing));
        }
        if i + 1 == r.stages.len() && s.percent != 100 {
            return Err(at.err(field, s.percent, Reason::LastStageNot100));
        }
        previous = s.percent;
        let name = s.name.clone().unwrap_or_else(|| format!("stage-{}", i + 1));
        // Stage names label status, events and metrics: two stages cannot share one.
        if stages.iter().any(|st: &StagePolicy| st.name == name) {
            return Err(at.err(
                format!("spec.rollout.stages[{i}].name"),
                quote(&name),
                Reason::Twice,
            ));
        }
        stages.push(StagePolicy {
            name,
            percent: s.percent,
        });
    }
    if stages.is_empty() {
        stages.push(StagePolicy {
            name: "stage-1".into(),
            percent: 100,
        });
    }

    let threshold =
        |field: &str, v: Option<u32>, default: u32| -> Result<Percent, ValidationError> {
            let v = v.unwrap_or(default);
            Percent::new(v).ok_or_else(|| at.err(field, v, Reason::OutOfRange { min: 0, max: 100 }))
        };
    let success_threshold = threshold(
        "spec.rollout.successThresholdPercent",
        r.success_threshold_percent,
        DEFAULT_SUCCESS_THRESHOLD,
    )?;
    let failure_threshold = threshold(
        "spec.rollout.failureThresholdPercent",
        r.failure_threshold_percent,
        DEFAULT_FAILURE_THRESHOLD,
    )?;

    if let (Some(nb), Some(dl)) = (r.not_before, r.deadline)
        && dl <= nb
    {
        return Err(at.err(
            "spec.rollout.deadline",
            dl.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            Reason::DeadlineBeforeNotBefore,
        ));
    }

    let mut blackout_dates = BTreeSet::new();
    for (i, d) in r.blackout_dates.iter().enumerate() {
        let date = NaiveDate::parse_from_str(d, "%Y-%m-%d")
            .ok()
            .filter(|_| d.len() == 10)
            .ok_or_else(|| {
                at.err(
                    format!("spec.rollout.blackoutDates[{i}]"),
                    quote(d),
                    Reason::Date,
                )
            })?;
        if !blackout_dates.insert(date) {
            return Err(at.err(
                format!("spec.rollout.blackoutDates[{i}]"),
                quote(d),
                Reason::Twice,
            ));
        }
    }

    Ok(RolloutPolicy {
        cap,
        download_minutes,
        check_spread_minutes: spread,
        stages,
        success_threshold,
        failure_threshold,
        not_before: r.not_before,
        deadline: r.deadline,
        blackout_dates,
        paused: r.paused,
        re_arm: r.re_arm,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn site_spec(zone: &str, cap: u32, macs: &[&str]) -> api::PhoneSiteSpec {
        api::PhoneSiteSpec {
            time_zone: zone.into(),
            max_concurrent_downloads: cap,
            uplink_mbps: None,
            phones: macs
                .iter()
                .map(|m| api::PhoneEntry {
                    mac: (*m).into(),
                    model: "GXP2170".into(),
                    family: None,
                })
                .collect(),
        }
    }

    fn site_err(spec: &api::PhoneSiteSpec) -> String {
        site(
            "PhoneSite voice/paris",
            "paris",
            spec,
            &mut ModelTable::default(),
        )
        .unwrap_err()
        .to_string()
    }

    fn schedule_err(edit: impl FnOnce(&mut api::PhoneScheduleSpec)) -> String {
        let mut spec: api::PhoneScheduleSpec = serde_json::from_str("{}").unwrap();
        edit(&mut spec);
        schedule(
            "PhoneSchedule voice/s",
            "voice/s",
            &spec,
            &mut ModelTable::default(),
        )
        .unwrap_err()
        .to_string()
    }

    #[test]
    fn accepts_a_good_site() {
        let spec = site_spec("Europe/Paris", 4, &["00:0b:82:00:00:01", "000b82000002"]);
        let s = site("d", "paris", &spec, &mut ModelTable::default()).unwrap();
        assert_eq!(s.phones.len(), 2);
        assert_eq!(s.cap.get(), 4);
    }

    #[test]
    fn malformed_mac_names_document_field_and_value() {
        let spec = site_spec(
            "Europe/Paris",
            4,
            &["00:0b:82:00:00:01", "00:0b:82:00:00:0z"],
        );
        assert_eq!(
            site_err(&spec),
            "PhoneSite voice/paris: spec.phones[1].mac: \"00:0b:82:00:00:0z\" is not a MAC address: 'z' is not a hex digit"
        );
    }

    #[test]
    fn same_mac_in_two_spellings_is_a_duplicate() {
        let spec = site_spec("Europe/Paris", 4, &["00:0b:82:00:00:01", "000B82000001"]);
        assert_eq!(
            site_err(&spec),
            "PhoneSite voice/paris: spec.phones[1].mac: \"000B82000001\" is the same MAC as spec.phones[0].mac"
        );
    }

    #[test]
    fn unknown_zone_and_zero_cap_are_refused() {
        assert!(
            site_err(&site_spec("Europe/Atlantis", 4, &[]))
                .contains("spec.timeZone: \"Europe/Atlantis\"")
        );
        assert!(
            site_err(&site_spec("UTC", 0, &[]))
                .contains("spec.maxConcurrentDownloads: 0 must be at least 1")
        );
    }

    #[test]
    fn out_of_range_knobs_are_refused() {
        let e = schedule_err(|s| s.provisioning.weekly.interval_weeks = 13);
        assert!(
            e.contains("spec.provisioning.weekly.intervalWeeks: 13 is out of range 0–12"),
            "{e}"
        );
        let e = schedule_err(|s| s.provisioning.weekly.inactivity_minutes = 121);
        assert!(
            e.contains("spec.provisioning.weekly.inactivityMinutes: 121"),
            "{e}"
        );
        let e = schedule_err(|s| s.provisioning.flexible.interval_days = 0);
        assert!(
            e.contains("spec.provisioning.flexible.intervalDays: 0"),
            "{e}"
        );
        let e = schedule_err(|s| s.provisioning.flexible.interval_days = 1001);
        assert!(
            e.contains("spec.provisioning.flexible.intervalDays: 1001"),
            "{e}"
        );
        let e = schedule_err(|s| s.rollout.max_concurrent_downloads = Some(0));
        assert!(e.contains("spec.rollout.maxConcurrentDownloads: 0"), "{e}");
        let e = schedule_err(|s| s.rollout.success_threshold_percent = Some(101));
        assert!(
            e.contains("spec.rollout.successThresholdPercent: 101"),
            "{e}"
        );
    }

    #[test]
    fn bad_times_name_the_window_field() {
        let e = schedule_err(|s| s.provisioning.weekly.window.start = "24:00".into());
        assert!(
            e.contains("spec.provisioning.weekly.window.start: \"24:00\""),
            "{e}"
        );
        let e = schedule_err(|s| s.provisioning.flexible.window.end = "7:5".into());
        assert!(
            e.contains("spec.provisioning.flexible.window.end: \"7:5\""),
            "{e}"
        );
    }

    #[test]
    fn stages_must_increase_and_end_at_100() {
        let stage = |p| api::Stage {
            name: None,
            percent: p,
        };
        let e = schedule_err(|s| s.rollout.stages = vec![stage(10), stage(10), stage(100)]);
        assert!(
            e.contains("spec.rollout.stages[1].percent: 10 is not above"),
            "{e}"
        );
        let e = schedule_err(|s| s.rollout.stages = vec![stage(1), stage(50)]);
        assert!(
            e.contains("spec.rollout.stages[1].percent: 50 is the last stage"),
            "{e}"
        );
        let e = schedule_err(|s| s.rollout.stages = vec![stage(0), stage(100)]);
        assert!(
            e.contains("spec.rollout.stages[0].percent: 0 is out of range 1–100"),
            "{e}"
        );
    }

    #[test]
    fn duplicates_are_refused_where_the_api_refuses_them() {
        let e = schedule_err(|s| {
            s.provisioning.weekly.days = vec![api::Weekday::Mon, api::Weekday::Mon]
        });
        assert!(
            e.contains("spec.provisioning.weekly.days[1]: Mon is listed twice"),
            "{e}"
        );
        let e = schedule_err(|s| {
            s.rollout.blackout_dates = vec!["2026-12-25".into(), "2026-12-25".into()]
        });
        assert!(
            e.contains("spec.rollout.blackoutDates[1]: \"2026-12-25\" is listed twice"),
            "{e}"
        );
        let stage = |n: &str, p| api::Stage {
            name: Some(n.into()),
            percent: p,
        };
        let e = schedule_err(|s| s.rollout.stages = vec![stage("a", 10), stage("a", 100)]);
        assert!(
            e.contains("spec.rollout.stages[1].name: \"a\" is listed twice"),
            "{e}"
        );
    }

    #[test]
    fn firmware_file_must_stay_in_its_directory() {
        for bad in ["../etc/passwd", "fw/1.bin", ".hidden", "a..b", "-x"] {
            let e = schedule_err(|s| {
                s.firmware = Some(api::Firmware {
                    version: "1".into(),
                    file: bad.into(),
                    size_bytes: None,
                    models: vec![],
                })
            });
            assert!(
                e.contains("spec.firmware.file:") && e.contains("plain file name"),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn firmware_needs_a_window_and_weekly_needs_a_day() {
        let e = schedule_err(|s| {
            s.firmware = Some(api::Firmware {
                version: "1".into(),
                file: "fw.bin".into(),
                size_bytes: None,
                models: vec![],
            })
        });
        assert!(
            e.contains("spec.firmware: (set) needs provisioning.weekly"),
            "{e}"
        );
        let e = schedule_err(|s| s.provisioning.weekly.enabled = true);
        assert!(
            e.contains("spec.provisioning.weekly.days: [] must list at least one day"),
            "{e}"
        );
    }

    #[test]
    fn zero_where_at_least_one_is_needed_says_so() {
        let e = schedule_err(|s| s.rollout.check_spread_minutes = Some(0));
        assert!(
            e.ends_with("spec.rollout.checkSpreadMinutes: 0 must be at least 1"),
            "{e}"
        );
    }

    #[test]
    fn blackout_dates_must_be_dates() {
        let e = schedule_err(|s| {
            s.rollout.blackout_dates = vec!["2026-12-25".into(), "2026-13-01".into()]
        });
        assert!(
            e.contains("spec.rollout.blackoutDates[1]: \"2026-13-01\" is not a YYYY-MM-DD date"),
            "{e}"
        );
    }

    #[test]
    fn defaults_give_one_full_stage_and_documented_thresholds() {
        let spec: api::PhoneScheduleSpec = serde_json::from_str("{}").unwrap();
        let s = schedule("d", "ns/s", &spec, &mut ModelTable::default()).unwrap();
        assert_eq!(
            s.rollout.stages,
            vec![StagePolicy {
                name: "stage-1".into(),
                percent: 100
            }]
        );
        assert_eq!(
            s.rollout.check_spread_minutes.get(),
            DEFAULT_CHECK_SPREAD_MINUTES
        );
        assert_eq!(s.rollout.success_threshold.get(), 95);
        assert_eq!(s.rollout.failure_threshold.get(), 5);
    }
}
