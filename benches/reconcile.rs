//! One reconcile's decision at fleet scale, without a cluster: `desired::compute` over the
//! fleet `scripts/measure-scale.sh` applies (1,000,000 phones in 10,000 PhoneSites of 100
//! phones, five zones, one schedule selecting all), in the three situations a controller meets:
//!
//! - **first**: nothing written yet (every shard is new), as right after `kubectl apply`;
//! - **idle**: the decision fed back as the cluster's state, nothing changed;
//! - **progress**: as idle, with 1 % of the phones reporting an upgrade.
//!
//! Each is timed against the baseline of the planner alone (`core::plan_rollout` on the same
//! selected fleet) in the same run, and the encoding of every shard (what `apply` sends on the
//! first reconcile) is timed on its own. Peak memory is VmHWM over one decision.
//!
//! Run with `cargo bench --bench reconcile`. `cargo test --all-targets` runs it on a fleet 100
//! times smaller as a smoke test.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use phonefleet::api::{PhoneEntry, PhoneSchedule, PhoneSite, PhoneSiteSpec};
use phonefleet::children::{PhoneProgress, PhoneState};
use phonefleet::controller::desired::{CutMemo, DecidedSlots, Desired, Inputs, compute};
use phonefleet::core::{MacMap, MacSet};
use phonefleet::render::ServerUrl;
use phonefleet::selection::{self, Candidate, CheckedSites};

const SITES: usize = 10_000;
const PHONES_PER_SITE: usize = 100;
const NAMESPACE: &str = "scale";
const ZONES: [&str; 5] = [
    "Europe/Paris",
    "America/New_York",
    "Asia/Tokyo",
    "Australia/Sydney",
    "America/Sao_Paulo",
];

const SCHEDULE: &str = r#"
apiVersion: phonefleet.io/v1alpha1
kind: PhoneSchedule
metadata: {name: bench, namespace: scale, uid: uid-bench, generation: 1}
spec:
  siteSelector: {matchLabels: {fleet: bench}}
  provisioning:
    weekly: {enabled: true, window: {start: "22:00", end: "05:00"}, days: [Sun, Mon, Tue, Wed, Thu, Fri, Sat]}
  firmware: {version: "2.0", file: fw-2.0.bin}
  rollout: {downloadMinutes: 10, stages: [{name: canary, percent: 1}, {name: all, percent: 100}]}
"#;

/// The sites of `scripts/measure-scale.sh`: same names, zones, cap, MACs and models.
fn sites(count: usize) -> Vec<Arc<PhoneSite>> {
    (0..count)
        .map(|s| {
            let phones = (0..PHONES_PER_SITE)
                .map(|p| {
                    let n = s * PHONES_PER_SITE + p;
                    PhoneEntry {
                        mac: format!(
                            "00:0b:{:02x}:{:02x}:{:02x}:{:02x}",
                            (n >> 24) & 255,
                            (n >> 16) & 255,
                            (n >> 8) & 255,
                            n & 255
                        )
                        .into(),
                        model: if n.is_multiple_of(3) {
                            "SIP-T46U"
                        } else {
                            "GXP2170"
                        }
                        .into(),
                        family: None,
                    }
                })
                .collect();
            let mut site = PhoneSite::new(
                &format!("site-{s:05}"),
                PhoneSiteSpec {
                    time_zone: ZONES[s % ZONES.len()].to_owned(),
                    max_concurrent_downloads: 10,
                    uplink_mbps: None,
                    phones,
                },
            );
            site.metadata = ObjectMeta {
                namespace: Some(NAMESPACE.to_owned()),
                uid: Some(format!("uid-site-{s}")),
                resource_version: Some("1".to_owned()),
                labels: Some(BTreeMap::from([("fleet".to_owned(), "bench".to_owned())])),
                ..site.metadata
            };
            Arc::new(site)
        })
        .collect()
}

/// The cluster's state after `desired` was applied, as the next reconcile observes it.
struct World {
    schedule: PhoneSchedule,
    sites: Vec<Arc<PhoneSite>>,
    progress: MacMap<PhoneProgress>,
    previous: DecidedSlots,
    existing: BTreeMap<String, String>,
    now: DateTime<Utc>,
    url: ServerUrl,
    /// As the controller remembers validated sites (each site has a uid and a version).
    checked: CheckedSites,
    /// How each site was cut by the settled decision, as the controller remembers it.
    cuts: CutMemo,
}

impl World {
    /// Decides with `cuts` (a copy of [`World::cuts`], taken before the clock starts).
    fn decide(&self, cuts: &CutMemo) -> Desired {
        let schedules = vec![Arc::new(self.schedule.clone())];
        compute(&Inputs {
            schedule: &self.schedule,
            schedules: &schedules,
            sites: &self.sites,
            checked_sites: Some(&self.checked),
            cut_memo: Some(cuts),
            claimed_elsewhere: &MacMap::default(),
            progress: &self.progress,
            previous_slots: &self.previous,
            existing_shards: &self.existing,
            server_url: &self.url,
            now: self.now,
            propagation: chrono::Duration::zero(),
        })
    }

    fn settle(&mut self, desired: &Desired, cuts: CutMemo) {
        self.cuts = cuts;
        self.existing = desired
            .shards
            .iter()
            .flatten()
            .map(|s| (s.name.clone(), s.hash.clone()))
            .collect();
        self.schedule.status = Some(desired.status.clone());
        self.previous = desired.slots.clone();
    }
}

/// The planner alone on the world's fleet: the baseline every decision is compared with.
fn plan_only(world: &World) -> Duration {
    let candidates: Vec<Candidate<'_>> = world
        .sites
        .iter()
        .map(|site| Candidate {
            document: String::new(),
            site,
            checked: None,
        })
        .collect();
    let selection = selection::select(
        "bench",
        "scale/bench",
        &world.schedule,
        &candidates,
        &|_| None,
    )
    .expect("the bench schedule is valid");
    let started = Instant::now();
    let plan = phonefleet::core::plan_rollout(
        &selection.fleet,
        world.now,
        &MacSet::default(),
        &|_| false,
        &|_| None,
    );
    let took = started.elapsed();
    assert!(!plan.sites.is_empty());
    took
}

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

fn status_kib(field: &str) -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Resets VmHWM to the current RSS (Linux `clear_refs` value 5).
fn reset_peak() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// Times `decide` `runs` times; returns the median, the last decision and the peak RSS growth
/// over one decision in MiB (when the kernel lets the peak be reset).
fn measure(world: &World, runs: usize) -> (Duration, (Desired, CutMemo), Option<f64>) {
    let mut cuts = world.cuts.clone();
    let before = status_kib("VmRSS:");
    let reset = reset_peak();
    let started = Instant::now();
    let mut last = world.decide(&cuts);
    let mut times = vec![started.elapsed()];
    let peak = status_kib("VmHWM:");
    for _ in 1..runs {
        drop(last);
        cuts = world.cuts.clone();
        let started = Instant::now();
        last = world.decide(&cuts);
        times.push(started.elapsed());
    }
    let grew = match (before, peak, reset) {
        (Some(b), Some(p), true) => Some((p - b) / 1024.0),
        _ => None,
    };
    (median(times), (last, cuts), grew)
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let (count, runs) = if full { (SITES, 5) } else { (SITES / 100, 2) };
    let mut world = World {
        schedule: serde_yaml_ng::from_str(SCHEDULE).expect("the bench schedule parses"),
        sites: sites(count),
        progress: MacMap::default(),
        previous: DecidedSlots::default(),
        existing: BTreeMap::new(),
        // A Tuesday noon: every zone's next window is within a day.
        now: "2026-12-01T12:00:00Z".parse().expect("RFC 3339"),
        url: "http://prov.example:8080".parse().expect("url"),
        checked: CheckedSites::default(),
        cuts: CutMemo::default(),
    };
    let phones = count * PHONES_PER_SITE;
    let loaded = status_kib("VmRSS:").map_or(0.0, |k| k / 1024.0);
    println!(
        "fleet: {phones} phones in {count} sites; {loaded:.0} MiB resident with the sites loaded"
    );

    let baseline = median((0..runs).map(|_| plan_only(&world)).collect());
    let report = |what: &str, took: Duration, grew: Option<f64>| {
        println!(
            "{what:>8}: {:>9.1} ms median of {runs}, {:>5.1}x the planner alone ({:.1} ms){}",
            took.as_secs_f64() * 1e3,
            took.as_secs_f64() / baseline.as_secs_f64(),
            baseline.as_secs_f64() * 1e3,
            grew.map_or(String::new(), |g| format!(", peak +{g:.0} MiB"))
        );
    };

    let (took, (first, cuts), grew) = measure(&world, runs);
    report("first", took, grew);
    let shards = first.shards.as_ref().expect("the bench schedule is valid");
    assert_eq!(shards.len(), count, "one shard per site of 100 phones");
    assert!(shards.iter().all(|s| s.changed), "nothing is written yet");
    let started = Instant::now();
    let bytes: usize = shards
        .iter()
        .map(|s| {
            first
                .shard_data(s)
                .iter()
                .map(|(k, v)| k.len() + v.len())
                .sum::<usize>()
        })
        .sum();
    println!(
        "  encode: {:>9.1} ms for {} shards, {bytes} bytes of data ({:.1} B/phone)",
        started.elapsed().as_secs_f64() * 1e3,
        shards.len(),
        bytes as f64 / phones as f64
    );

    world.settle(&first, cuts);
    drop(first);
    let (took, (idle, cuts), grew) = measure(&world, runs);
    report("idle", took, grew);
    let rewritten = idle.shards.iter().flatten().filter(|s| s.changed).count();
    assert_eq!(rewritten, 0, "an idle reconcile rewrites no shard");

    // 1 % of the phones report an upgrade, as a rollout's first stage does.
    world.settle(&idle, cuts);
    drop(idle);
    let since = world.now;
    for (mac, _) in world.previous.iter().take(phones / 100) {
        world.progress.insert(
            mac,
            PhoneProgress {
                state: PhoneState::Upgraded,
                version: Some("2.0".into()),
                target: "2.0".into(),
                since,
            },
        );
    }
    let (took, (progress, _), grew) = measure(&world, runs);
    report("progress", took, grew);
    let counts = progress
        .status
        .counts
        .as_ref()
        .map(|c| c.upgraded)
        .unwrap_or_default();
    assert_eq!(counts as usize, phones / 100, "every report is counted");
}
