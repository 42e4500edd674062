//! The planner at fleet scale: 1,000,000 phones over 10,000 sites in 40 zones, against the
//! baseline of sorting the same phone records by (site, MAC). Prints the ratio of the two
//! medians and the peak memory of one plan. Run with `cargo bench --bench planner`.

use std::collections::BTreeSet;
use std::hint::black_box;
use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use criterion::{BatchSize, Criterion};
use phonefleet::core::{
    DaySet, FirmwareTarget, Fleet, FlexiblePolicy, LocalWindow, Mac, ModelId, Percent, Phone,
    PhoneFamily, ProvisioningPolicy, RolloutPolicy, Schedule, Site, SiteCap, StagePolicy,
    WeeklyPolicy, plan,
};

const SITES: usize = 10_000;
const PHONES: usize = 1_000_000;
const ZONES: [&str; 40] = [
    "Europe/Paris",
    "Europe/Berlin",
    "Europe/London",
    "Europe/Madrid",
    "Europe/Rome",
    "Europe/Warsaw",
    "Europe/Helsinki",
    "Europe/Athens",
    "Europe/Istanbul",
    "Europe/Moscow",
    "America/New_York",
    "America/Chicago",
    "America/Denver",
    "America/Los_Angeles",
    "America/Phoenix",
    "America/Anchorage",
    "America/Halifax",
    "America/St_Johns",
    "America/Mexico_City",
    "America/Bogota",
    "America/Sao_Paulo",
    "America/Santiago",
    "America/Argentina/Buenos_Aires",
    "Pacific/Honolulu",
    "Pacific/Auckland",
    "Pacific/Chatham",
    "Australia/Sydney",
    "Australia/Adelaide",
    "Australia/Perth",
    "Australia/Lord_Howe",
    "Asia/Tokyo",
    "Asia/Seoul",
    "Asia/Shanghai",
    "Asia/Singapore",
    "Asia/Kolkata",
    "Asia/Kathmandu",
    "Asia/Dubai",
    "Asia/Tehran",
    "Africa/Johannesburg",
    "Africa/Cairo",
];

/// SplitMix64: a fixed, seedable generator so every run plans the same fleet.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn fleet(site_count: usize) -> Fleet {
    let mut rng = Rng(42);
    let zones: Vec<Tz> = ZONES
        .iter()
        .map(|z| z.parse().expect("known zone"))
        .collect();
    let mut sites = Vec::with_capacity(site_count);
    let mut spread = 0;
    for i in 0..site_count {
        // 40 to 160 phones a site, in pairs that add up to 200, so the fleet is exactly 1M.
        if i % 2 == 0 {
            spread = rng.below(61) as usize;
        }
        let n = if i % 2 == 0 {
            100 + spread
        } else {
            100 - spread
        };
        let phones = (0..n)
            .map(|_| Phone {
                mac: Mac::from_u64(rng.next() >> 16).expect("48 bits"),
                model: ModelId(rng.below(4) as u32),
                family: PhoneFamily::Xstim,
            })
            .collect();
        sites.push(Site {
            name: format!("site-{i:05}"),
            time_zone: zones[i % zones.len()],
            cap: SiteCap::new(2 + rng.below(15) as u32).expect("non-zero"),
            uplink_mbps: NonZeroU32::new(10 + rng.below(190) as u32),
            phones,
            unplaced_models: Vec::new(),
        });
    }
    let window = |s: &str, e: &str| LocalWindow {
        start: s.parse().expect("HH:MM"),
        end: e.parse().expect("HH:MM"),
    };
    let schedule = Schedule {
        name: "bench/fleet".into(),
        provisioning: ProvisioningPolicy {
            power_on: true,
            repeatedly: None,
            weekly: WeeklyPolicy {
                enabled: true,
                interval_weeks: 1,
                inactivity_minutes: 30,
                window: window("22:00", "05:00"),
                days: DaySet::ALL,
            },
            flexible: FlexiblePolicy {
                enabled: false,
                interval_days: 1,
                window: window("00:00", "05:00"),
            },
        },
        firmware: Some(FirmwareTarget {
            version: "1.0.11.23".into(),
            file: "fw.bin".into(),
            size_bytes: Some(40 * 1024 * 1024),
            models: Some([ModelId(0), ModelId(1), ModelId(2), ModelId(3)].into()),
        }),
        rollout: RolloutPolicy {
            cap: None,
            download_minutes: None,
            check_spread_minutes: NonZeroU32::new(10).expect("non-zero"),
            stages: [(1, "canary"), (10, "early"), (100, "everyone")]
                .map(|(percent, name)| StagePolicy {
                    name: name.into(),
                    percent,
                })
                .into(),
            success_threshold: Percent::new(95).expect("percent"),
            failure_threshold: Percent::new(5).expect("percent"),
            not_before: None,
            deadline: None,
            blackout_dates: BTreeSet::from(["2026-12-25".parse().expect("date")]),
            paused: false,
            re_arm: None,
        },
    };
    Fleet {
        schedule,
        sites,
        models: ["GXP2170", "GRP2614", "SIP-T46U", "SIP-T54W"]
            .map(String::from)
            .into(),
    }
}

/// The phone records a plan starts from: site index and phone (MAC and model).
type Record = (u32, Phone);

fn records(fleet: &Fleet) -> Vec<Record> {
    // Interleave sites so the sort has real work, as an unsorted export would.
    let mut rng = Rng(7);
    let mut out: Vec<Record> = fleet
        .sites
        .iter()
        .enumerate()
        .flat_map(|(i, s)| s.phones.iter().map(move |p| (i as u32, *p)))
        .collect();
    for i in (1..out.len()).rev() {
        out.swap(i, rng.below(i as u64 + 1) as usize);
    }
    out
}

fn sort_records(records: &mut [Record]) {
    records.sort_unstable_by_key(|(site, phone)| (*site, phone.mac));
}

fn median(mut f: impl FnMut() -> Duration, runs: usize) -> Duration {
    let mut times: Vec<Duration> = (0..runs).map(|_| f()).collect();
    times.sort();
    times[runs / 2]
}

/// Peak resident memory (VmHWM) in MiB since the last reset.
fn peak_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

fn rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// Resets VmHWM to the current RSS (Linux `clear_refs` value 5).
fn reset_peak() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

fn main() {
    let now: DateTime<Utc> = "2026-11-30T12:00:00Z".parse().expect("RFC 3339");
    // `cargo bench` passes --bench; `cargo test --all-targets` runs this as a smoke test on a
    // fleet 50 times smaller, in the debug profile.
    let full = std::env::args().any(|a| a == "--bench");
    let scale = if full { 1 } else { 50 };
    let fleet = fleet(SITES / scale);
    let upgraded = phonefleet::core::MacSet::default();
    let input = records(&fleet);
    assert_eq!(input.len(), PHONES / scale);

    // Peak memory of one plan, measured before criterion allocates anything of its own.
    let before = rss_mib();
    let reset = reset_peak();
    let p = plan(&fleet, now, &upgraded);
    let peak = peak_mib();
    let placed: u64 = p
        .sites
        .iter()
        .flat_map(|s| &s.slots)
        .map(|s| u64::from(s.len()))
        .sum();
    println!(
        "fleet: {} phones, {} sites, {} zones; plan: {} slots, {} phones placed, completion {:?}, {} warnings",
        input.len(),
        fleet.sites.len(),
        ZONES.len(),
        p.sites.iter().map(|s| s.slots.len()).sum::<usize>(),
        placed,
        p.completion,
        p.warnings.len()
    );
    let mut reasons = std::collections::BTreeMap::new();
    for w in &p.warnings {
        *reasons.entry(w.reason()).or_insert(0) += 1;
    }
    println!("warnings by reason: {reasons:?}");
    drop(p);
    match (before, peak, reset) {
        (Some(b), Some(h), true) => println!(
            "memory: {b:.0} MiB resident with the fleet loaded; peak during one plan {h:.0} MiB (+{:.0} MiB)",
            h - b
        ),
        _ => println!("memory: /proc/self/status or clear_refs unavailable"),
    }

    let mut c = Criterion::default()
        .sample_size(10)
        .measurement_time(Duration::from_secs(15))
        .warm_up_time(Duration::from_secs(2))
        .configure_from_args();
    let mut group = c.benchmark_group(format!(
        "{} phones, {} sites, {} zones",
        input.len(),
        fleet.sites.len(),
        ZONES.len()
    ));
    group.bench_function("plan", |b| {
        b.iter_with_large_drop(|| plan(black_box(&fleet), now, &upgraded))
    });
    group.bench_function("sort by (site, MAC)", |b| {
        b.iter_batched_ref(
            || input.clone(),
            |r| sort_records(black_box(r)),
            BatchSize::LargeInput,
        )
    });
    group.finish();

    // The same two medians measured back to back, for the ratio the targets are set on.
    let runs = if full { 9 } else { 1 };
    let plan_t = median(
        || {
            let t = Instant::now();
            let p = plan(black_box(&fleet), now, &upgraded);
            let d = t.elapsed();
            drop(p);
            d
        },
        runs,
    );
    let sort_t = median(
        || {
            let mut r = input.clone();
            let t = Instant::now();
            sort_records(black_box(&mut r));
            t.elapsed()
        },
        runs,
    );
    println!(
        "median of {runs}: plan {:.1} ms, sort {:.1} ms, ratio plan/sort {:.2} (targets: plan <= 1000 ms, ratio <= 3)",
        plan_t.as_secs_f64() * 1e3,
        sort_t.as_secs_f64() * 1e3,
        plan_t.as_secs_f64() / sort_t.as_secs_f64()
    );
    c.final_summary();
}
