//! Properties of the wave planner over random fleets, zones, windows, days and dates around
//! DST transitions. The checks use their own time arithmetic (chrono directly, minute-stepping
//! over DST gaps) rather than the planner's, so a shared mistake cannot hide.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::num::NonZeroU32;

use chrono::{
    DateTime, Datelike, Duration, LocalResult, NaiveDate, NaiveDateTime, NaiveTime, TimeZone,
    Timelike, Utc, Weekday,
};
use chrono_tz::Tz;
use phonefleet::core::{
    DaySet, FirmwareTarget, Fleet, FlexiblePolicy, LocalTime, LocalWindow, Mac, MacMap, MacSet,
    ModelId, Percent, Phone, PhoneFamily, Plan, ProvisioningPolicy, RolloutPolicy, Schedule, Site,
    SiteCap, StagePolicy, WeeklyPolicy, plan,
};
use phonefleet::plan_report::to_json;
use proptest::prelude::*;

/// Zones with northern and southern DST, half-hour and 45-minute offsets, a 30-minute DST
/// shift (Lord Howe) and none at all.
const ZONES: [Tz; 10] = [
    chrono_tz::Europe::Berlin,
    chrono_tz::America::New_York,
    chrono_tz::Australia::Sydney,
    chrono_tz::Australia::Lord_Howe,
    chrono_tz::Pacific::Chatham,
    chrono_tz::America::St_Johns,
    chrono_tz::Asia::Kathmandu,
    chrono_tz::America::Sao_Paulo,
    chrono_tz::Europe::London,
    chrono_tz::UTC,
];

/// Dates of DST transitions in 2026 across the zones above.
const TRANSITIONS: [&str; 8] = [
    "2026-03-08",
    "2026-03-29",
    "2026-04-05",
    "2026-09-27",
    "2026-10-04",
    "2026-10-25",
    "2026-11-01",
    "2026-06-15",
];

#[derive(Clone, Debug)]
struct Case {
    fleet: Fleet,
    now: DateTime<Utc>,
}

fn window() -> impl Strategy<Value = LocalWindow> {
    // Quarter hours most of the time so windows often meet DST transitions exactly.
    // Whole-day windows (start == end) get their own share of cases.
    let minute = prop_oneof![3 => (0u32..96).prop_map(|q| q * 15), 1 => 0u32..1440];
    let time = |m: u32| LocalTime::from_minutes(m).unwrap();
    prop_oneof![
        6 => (minute.clone(), minute.clone()).prop_map(move |(s, e)| LocalWindow { start: time(s), end: time(e) }),
        1 => minute.prop_map(move |m| LocalWindow { start: time(m), end: time(m) }),
    ]
}

fn stages() -> impl Strategy<Value = Vec<StagePolicy>> {
    proptest::collection::btree_set(1u32..100, 0..3).prop_map(|set| {
        set.into_iter()
            .chain([100])
            .enumerate()
            .map(|(i, percent)| StagePolicy {
                name: format!("stage-{}", i + 1),
                percent,
            })
            .collect()
    })
}

fn site(index: usize) -> impl Strategy<Value = Site> {
    (
        0..ZONES.len(),
        1u32..6,
        proptest::collection::btree_set(0u64..1 << 48, 0..30),
    )
        .prop_map(move |(zone, cap, macs)| Site {
            name: format!("site-{index:02}"),
            time_zone: ZONES[zone],
            cap: SiteCap::new(cap).unwrap(),
            uplink_mbps: None,
            phones: macs
                .into_iter()
                .map(|m| Phone {
                    mac: Mac::from_u64(m).unwrap(),
                    model: ModelId(0),
                    family: PhoneFamily::Xstim,
                })
                .collect(),
            unplaced_models: Vec::new(),
        })
}

fn case() -> impl Strategy<Value = Case> {
    let sites = (1usize..4).prop_flat_map(|n| (0..n).map(site).collect::<Vec<_>>());
    let when = (0..TRANSITIONS.len(), -3i64..2, 0i64..1440).prop_map(|(t, days, minute)| {
        let date: NaiveDate = TRANSITIONS[t].parse().unwrap();
        date.and_time(NaiveTime::MIN).and_utc() + Duration::days(days) + Duration::minutes(minute)
    });
    let policy = (
        window(),
        1u8..128,
        any::<bool>(),
        0u32..=120,
        1u32..=30,
        1u32..=90,
        stages(),
        proptest::option::of(0i64..3 * 1440),
        proptest::collection::btree_set(0i64..20, 0..4),
        proptest::option::of(1u32..4),
    );
    (sites, when, policy).prop_map(
        |(
            sites,
            now,
            (
                window,
                days,
                weekly,
                inactivity,
                spread,
                download,
                stages,
                not_before,
                blackout,
                rollout_cap,
            ),
        )| {
            let days: DaySet = [
                Weekday::Mon,
                Weekday::Tue,
                Weekday::Wed,
                Weekday::Thu,
                Weekday::Fri,
                Weekday::Sat,
                Weekday::Sun,
            ]
            .into_iter()
            .enumerate()
            .filter(|(i, _)| days & (1 << i) != 0)
            .map(|(_, d)| d)
            .collect();
            let today = now.date_naive();
            let schedule = Schedule {
                name: "voice/prop".into(),
                provisioning: ProvisioningPolicy {
                    power_on: true,
                    repeatedly: None,
                    weekly: WeeklyPolicy {
                        enabled: weekly,
                        interval_weeks: 1,
                        inactivity_minutes: inactivity as u8,
                        window,
                        days,
                    },
                    flexible: FlexiblePolicy {
                        enabled: !weekly,
                        interval_days: 1,
                        window,
                    },
                },
                firmware: Some(FirmwareTarget {
                    version: "2.0".into(),
                    file: "fw.bin".into(),
                    size_bytes: None,
                    models: None,
                }),
                rollout: RolloutPolicy {
                    cap: rollout_cap.and_then(SiteCap::new),
                    download_minutes: NonZeroU32::new(download),
                    check_spread_minutes: NonZeroU32::new(spread).unwrap(),
                    stages,
                    success_threshold: Percent::new(95).unwrap(),
                    failure_threshold: Percent::new(5).unwrap(),
                    not_before: not_before.map(|m| now + Duration::minutes(m)),
                    deadline: None,
                    blackout_dates: blackout
                        .into_iter()
                        .map(|d| today + Duration::days(d))
                        .collect(),
                    paused: false,
                    re_arm: None,
                },
            };
            Case {
                fleet: Fleet {
                    schedule,
                    sites,
                    models: vec!["GXP2170".into()],
                },
                now,
            }
        },
    )
}

/// The effective window policy, read independently of the planner.
struct Allowed {
    window: LocalWindow,
    days: DaySet,
    blackout: BTreeSet<NaiveDate>,
}

impl Allowed {
    fn of(s: &Schedule) -> Self {
        let p = &s.provisioning;
        let (window, days) = if p.weekly.enabled {
            (p.weekly.window, p.weekly.days)
        } else {
            (p.flexible.window, DaySet::ALL)
        };
        Allowed {
            window,
            days,
            blackout: s.rollout.blackout_dates.clone(),
        }
    }

    fn opens(&self, d: NaiveDate) -> bool {
        self.days.contains(d.weekday()) && !self.blackout.contains(&d)
    }

    /// The occurrence opening on `d`: start earliest, end latest, gaps to the first minute
    /// after them, cut at the next day's opening.
    fn occurrence(&self, tz: Tz, d: NaiveDate) -> (DateTime<Utc>, DateTime<Utc>) {
        let at = |date: NaiveDate, t: LocalTime| {
            date.and_time(NaiveTime::from_hms_opt(t.hour(), t.minute(), 0).unwrap())
        };
        let crosses = self.window.end <= self.window.start;
        let end_date = if crosses { d.succ_opt().unwrap() } else { d };
        let start = instant(tz, at(d, self.window.start), false);
        let mut end = instant(tz, at(end_date, self.window.end), true);
        if crosses && self.opens(d.succ_opt().unwrap()) {
            end = end.min(instant(
                tz,
                at(d.succ_opt().unwrap(), self.window.start),
                false,
            ));
        }
        (start, end.max(start))
    }
}

fn instant(tz: Tz, mut local: NaiveDateTime, latest: bool) -> DateTime<Utc> {
    loop {
        match tz.from_local_datetime(&local) {
            LocalResult::Single(t) => return t.with_timezone(&Utc),
            LocalResult::Ambiguous(a, b) => {
                let (a, b) = (a.with_timezone(&Utc), b.with_timezone(&Utc));
                return if latest { a.max(b) } else { a.min(b) };
            }
            LocalResult::None => local += Duration::minutes(1),
        }
    }
}

/// A phone's check window `[start, start + check]` reads the same on its wall clock.
fn clean(tz: Tz, start: DateTime<Utc>, check: Duration) -> bool {
    let unambiguous = |t: DateTime<Utc>| {
        let wall = t.with_timezone(&tz).naive_local();
        matches!(tz.from_local_datetime(&wall), LocalResult::Single(_))
    };
    let (a, b) = (start.with_timezone(&tz), (start + check).with_timezone(&tz));
    a.offset().to_string() == b.offset().to_string()
        && unambiguous(start)
        && unambiguous(start + check)
}

fn check_plan(case: &Case, plan: &Plan) -> Result<(), TestCaseError> {
    let fleet = &case.fleet;
    let allowed = Allowed::of(&fleet.schedule);
    let earliest = fleet
        .schedule
        .rollout
        .not_before
        .map_or(case.now, |nb| nb.max(case.now));
    let sites: HashMap<&str, &Site> = fleet.sites.iter().map(|s| (s.name.as_str(), s)).collect();
    let mut stage_ends: Vec<Option<DateTime<Utc>>> =
        vec![None; fleet.schedule.rollout.stages.len()];
    let mut stage_starts: Vec<Option<DateTime<Utc>>> =
        vec![None; fleet.schedule.rollout.stages.len()];

    let names: Vec<&str> = plan.sites.iter().map(|s| s.name.as_str()).collect();
    let mut sorted = names.clone();
    sorted.sort();
    prop_assert_eq!(names, sorted, "sites sorted by name");

    for sp in &plan.sites {
        let site = sites[sp.name.as_str()];
        let tz = site.time_zone;
        let cap = sp.cap.get();
        let rollout_cap = fleet.schedule.rollout.cap;
        prop_assert_eq!(cap, rollout_cap.map_or(site.cap, |c| c.min(site.cap)).get());

        // Every phone in exactly one slot, or reported unplaced.
        let mut seen = HashSet::new();
        for (slot, phones) in sp.slots_with_phones() {
            prop_assert!(
                !phones.is_empty() && phones.len() as u32 <= cap,
                "slot of {} phones, cap {}",
                phones.len(),
                cap
            );
            prop_assert!(
                phones.windows(2).all(|w| w[0] < w[1]),
                "phones sorted inside a slot"
            );
            for m in phones {
                prop_assert!(seen.insert(*m), "{} placed twice", m);
            }
            prop_assert_eq!(
                slot.end - slot.start,
                Duration::minutes(i64::from(sp.slot_minutes))
            );
        }
        for m in &sp.unplaced {
            prop_assert!(seen.insert(*m), "{} both placed and unplaced", m);
        }
        let all: HashSet<Mac> = site.phones.iter().map(|p| p.mac).collect();
        prop_assert_eq!(&seen, &all);
        let fits = allowed.window.minutes() >= sp.slot_minutes && !allowed.days.is_empty();
        prop_assert_eq!(
            sp.unplaced.is_empty(),
            fits || all.is_empty(),
            "unplaced only when no slot fits"
        );

        // Slots never overlap, so at no instant are more than `cap` phones downloading, and
        // the stages of a site run in order.
        for w in sp.slots.windows(2) {
            prop_assert!(
                w[0].end <= w[1].start,
                "slots overlap: {:?} {:?}",
                w[0],
                w[1]
            );
            prop_assert!(w[0].stage <= w[1].stage, "stages out of order");
        }

        for slot in &sp.slots {
            // Local and UTC agree.
            prop_assert_eq!(
                slot.local_start,
                slot.start.with_timezone(&tz).fixed_offset()
            );
            prop_assert_eq!(slot.local_end, slot.end.with_timezone(&tz).fixed_offset());
            // After now and notBefore, on an allowed date, inside that date's occurrence.
            prop_assert!(slot.start >= earliest);
            let d = slot.window_date;
            prop_assert!(allowed.opens(d), "slot on {} which does not open", d);
            let (os, oe) = allowed.occurrence(tz, d);
            prop_assert!(
                os <= slot.start && slot.end <= oe,
                "slot {:?} outside occurrence {}..{}",
                slot,
                os,
                oe
            );
            prop_assert!(clean(
                tz,
                slot.start,
                Duration::minutes(i64::from(sp.check_minutes))
            ));
            let cw = slot.check_window();
            prop_assert_eq!(cw.weekday, slot.local_start.weekday());
            prop_assert_eq!(cw.window.minutes(), sp.check_minutes);

            let s = slot.stage as usize;
            stage_ends[s] = Some(stage_ends[s].map_or(slot.end, |e| e.max(slot.end)));
            stage_starts[s] = Some(stage_starts[s].map_or(slot.start, |e| e.min(slot.start)));
        }
    }
    // Stage s+1 starts nowhere before stage s has ended everywhere.
    let mut gate: Option<DateTime<Utc>> = None;
    for (start, end) in stage_starts.iter().zip(&stage_ends) {
        if let (Some(g), Some(s)) = (gate, start) {
            prop_assert!(
                *s >= g,
                "stage starts at {} before the previous ended at {}",
                s,
                g
            );
        }
        if end.is_some() {
            gate = gate.max(*end);
        }
    }
    Ok(())
}

/// For a single stage, the earliest possible completion of `n` phones: walk the grid slots of
/// every occurrence from the first usable one, `cap` phones each.
fn lower_bound(
    case: &Case,
    site: &Site,
    slot_minutes: u32,
    check_minutes: u32,
    cap: u32,
) -> Option<DateTime<Utc>> {
    let allowed = Allowed::of(&case.fleet.schedule);
    let earliest = case
        .fleet
        .schedule
        .rollout
        .not_before
        .map_or(case.now, |nb| nb.max(case.now));
    let tz = site.time_zone;
    let p = Duration::minutes(i64::from(slot_minutes));
    let mut left = site.phones.len() as i64;
    if left == 0 {
        return None;
    }
    let mut d = earliest.with_timezone(&tz).date_naive().pred_opt()?;
    for _ in 0..500 {
        if allowed.opens(d) {
            let (os, oe) = allowed.occurrence(tz, d);
            let mut s = os;
            while s + p <= oe {
                if s >= earliest && clean(tz, s, Duration::minutes(i64::from(check_minutes))) {
                    left -= i64::from(cap);
                    if left <= 0 {
                        return Some(s + p);
                    }
                }
                s += p;
            }
        }
        d = d.succ_opt()?;
    }
    None
}

/// 256 cases by default (the suite stays well under a minute in debug); `PROPTEST_CASES=N`
/// runs more.
fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn plans_keep_every_promise(case in case()) {
        let p = plan(&case.fleet, case.now, &MacSet::default());
        check_plan(&case, &p)?;
    }

    #[test]
    fn sites_with_grandstream_phones_keep_the_cap_on_whole_local_hours(mut case in case(), every in 1usize..4) {
        for site in &mut case.fleet.sites {
            for (i, p) in site.phones.iter_mut().enumerate() {
                if i % every == 0 {
                    p.family = PhoneFamily::Grandstream;
                }
            }
        }
        let allowed = Allowed::of(&case.fleet.schedule);
        let earliest = case.fleet.schedule.rollout.not_before.map_or(case.now, |nb| nb.max(case.now));
        let p = plan(&case.fleet, case.now, &MacSet::default());
        for sp in &p.sites {
            let tz = sp.time_zone;
            let has_grandstream = case.fleet.sites.iter().find(|s| s.name == sp.name).unwrap()
                .phones.iter().any(|p| p.family == PhoneFamily::Grandstream);
            prop_assert_eq!(sp.whole_hours, has_grandstream);
            if !sp.whole_hours {
                continue;
            }
            prop_assert!(sp.check_minutes % 60 == 0 && sp.slot_minutes % 60 == 0);
            prop_assert!(sp.slot_minutes >= sp.check_minutes + sp.download_minutes);
            for w in sp.slots.windows(2) {
                prop_assert!(w[0].end <= w[1].start, "slots overlap: {:?} {:?}", w[0], w[1]);
            }
            for (slot, phones) in sp.slots_with_phones() {
                prop_assert!(phones.len() as u32 <= sp.cap.get());
                prop_assert!(slot.start >= earliest);
                let (a, b) = (
                    slot.start.with_timezone(&tz),
                    (slot.start + Duration::minutes(i64::from(sp.check_minutes))).with_timezone(&tz),
                );
                // P285/P8459: whole local hours, the end no later than 23:00 of the same day.
                prop_assert_eq!((a.minute(), a.second()), (0, 0), "{}", a);
                prop_assert_eq!(b.minute(), 0, "{}", b);
                prop_assert!(a.date_naive() == b.date_naive() && b.hour() <= 23, "{} {}", a, b);
                let (os, oe) = allowed.occurrence(tz, slot.window_date);
                prop_assert!(os <= slot.start && slot.end <= oe, "{:?} outside {}..{}", slot, os, oe);
            }
        }
    }

    #[test]
    fn same_input_gives_byte_identical_json(case in case()) {
        let a = to_json(&plan(&case.fleet, case.now, &MacSet::default())).unwrap();
        let mut reversed = case.fleet.clone();
        reversed.sites.reverse();
        for s in &mut reversed.sites {
            s.phones.reverse();
        }
        let b = to_json(&plan(&reversed, case.now, &MacSet::default())).unwrap();
        prop_assert_eq!(a, b);
    }

    #[test]
    fn single_stage_completion_is_the_lower_bound(mut case in case()) {
        case.fleet.schedule.rollout.stages = vec![StagePolicy { name: "all".into(), percent: 100 }];
        let p = plan(&case.fleet, case.now, &MacSet::default());
        for sp in &p.sites {
            let site = case.fleet.sites.iter().find(|s| s.name == sp.name).unwrap();
            let fits = Allowed::of(&case.fleet.schedule).window.minutes() >= sp.slot_minutes;
            let bound = if fits { lower_bound(&case, site, sp.slot_minutes, sp.check_minutes, sp.cap.get()) } else { None };
            prop_assert_eq!(sp.completion, bound, "site {}", sp.name);
        }
    }

    #[test]
    fn upgraded_phones_are_left_out_and_others_keep_their_stage(case in case(), pick in any::<u64>()) {
        let full = plan(&case.fleet, case.now, &MacSet::default());
        let upgraded: MacSet = case.fleet.sites.iter().flat_map(|s| &s.phones)
            .filter(|p| (p.mac.as_u64() ^ pick) % 3 == 0).map(|p| p.mac).collect();
        let partial = plan(&case.fleet, case.now, &upgraded);
        let stage_of = |p: &Plan| -> MacMap<u32> {
            p.sites.iter().flat_map(|s| s.slots_with_phones().flat_map(|(slot, ms)| ms.iter().map(move |m| (*m, slot.stage)))).collect()
        };
        let (a, b) = (stage_of(&full), stage_of(&partial));
        for (mac, stage) in &b {
            prop_assert!(!upgraded.contains(mac));
            prop_assert_eq!(a.get(mac), Some(stage));
        }
    }
}
