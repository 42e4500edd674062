//! The plan's promise, measured (issue #13 item 4): controller, provisioning server and simulated
//! phones on the real control plane with a compressed clock. The phones run their steady files
//! first; then, at a fixed simulated instant, the operator sets the firmware, and the
//! controller's first `status.predictedCompletion` (once the schedule is Ready for the new
//! generation) is held against the instant the last phone came back upgraded
//! (`simulator::SiteSummary::last_upgrade`). The prediction must be within one slot length,
//! earlier or later; `phonefleet plan` at the same instant must print the same completion.
//!
//! Cases (docs/planner.md, "Prediction error, measured"), each under both re-arm behaviours
//! (schedule `reArm` and simulated phones alike):
//!
//! * (a) the design page's recommended policy (power-on, no repeated checks, weekly 00:00–05:00
//!   every day, 30 minutes of inactivity), one stage;
//! * (b) the same, three stages (10/50/100 %): no more than one window occurrence after (a);
//! * (c) repeated checks every 60 minutes, three stages;
//! * (d) windows on Saturday and Sunday only, three stages, the firmware set on a Friday;
//! * (e) the recommended policy, one stage, 10 % of the phones busy when their window opens
//!   (the simulator's `busy_fraction`): held to the busy-phone rule of docs/planner.md.
//!
//! All cases run at once, each in its own namespace with its own clock, provisioning server,
//! controller and simulated phones (three sites in three zones, a few phones each), on one
//! control plane. Every wait is on simulated time or on an outcome, never a real-second
//! deadline that load could break (tests/support/simulation.rs); the setup steps before the
//! firmware is set have generous real timeouts and measure nothing.
//!
//! Load can still move a case off its script: the setup runs on the compressed clock, so a slow
//! machine can reach the case's instant late (the firmware then lands inside a window, and the
//! case measures a different scenario), and a slow first reconcile can miss the window's opening.
//! Either is detected on the simulated clock and the case is run again from scratch at half the
//! clock speed (`attempts`), so a loaded machine gets a slower clock rather than a failure.
#![cfg(feature = "simulated-time")]

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use phonefleet::api::{PhoneSchedule, PhoneScheduleStatus, PhoneSite};
use phonefleet::clock::Clock;
use phonefleet::controller::{self, ControllerConfig};
use phonefleet::core::ReArm;
use phonefleet::server::{self, Outcome, ServerConfig, ServerStats};
use phonefleet::simulator::{self, SimConfig, Summary};
use support::controller::Counter;
use tokio_util::sync::CancellationToken;

/// Ten simulated minutes per real second at the first attempt. A stage is released by a reconcile after the previous
/// one's last report: in these fleets some 40 simulated minutes (4 s real) before its first
/// slot opens, and a held phone still retries every five simulated minutes inside its slot, so
/// a slow reconcile costs retries, not the slot. Nothing else here races the clock.
const SCALE: u32 = 600;
const FIRMWARE: &str = "fw.bin";
/// Simulated time the phones run on their steady files before the firmware is set (the setup
/// of nine cases at once must fit in it: 18 s real).
const LEAD_IN: chrono::Duration = chrono::Duration::hours(3);
/// Setup steps (nothing measured): real time allowed.
const SETUP: Duration = Duration::from_secs(300);
/// The controller's first decision for the firmware must be out this long (simulated) after the
/// firmware is set: the first window opens 2 h 30 min after `monday()`, 11 h after `friday()`.
const READY_WITHIN: chrono::Duration = chrono::Duration::hours(2);
/// Attempts per case; each at half the previous clock speed.
const ATTEMPTS: u32 = 4;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Policy {
    /// Weekly 00:00–05:00 every day, inactivity 30 min, no repeated checks.
    Recommended,
    /// The same with repeated checks every 60 minutes.
    Repeated60,
    /// The recommended policy on Saturday and Sunday only.
    Weekend,
}

#[derive(Clone, Copy, Debug)]
struct Case {
    name: &'static str,
    policy: Policy,
    three_stages: bool,
    re_arm: ReArm,
    busy: f64,
    phones_per_site: usize,
    set_at: DateTime<Utc>,
}

/// Monday 2026-01-05 20:30 UTC: two and a half hours before the first night window opens
/// (Paris, 23:00 UTC), so the controller's first decision and `phonefleet plan` see the same
/// occurrences, with or without an hour of repeated-check lead.
fn monday() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 5, 20, 30, 0).unwrap()
}

/// Friday 2026-01-09 12:00 UTC: a weekday, the first weekend window opens that night.
fn friday() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 9, 12, 0, 0).unwrap()
}

fn cases() -> Vec<Case> {
    let mut out = Vec::new();
    for re_arm in [ReArm::AtOnce, ReArm::NextOccurrence] {
        let case = |name, policy, three_stages, set_at| Case {
            name,
            policy,
            three_stages,
            re_arm,
            busy: 0.0,
            phones_per_site: 4,
            set_at,
        };
        out.push(case("a", Policy::Recommended, false, monday()));
        out.push(case("b", Policy::Recommended, true, monday()));
        out.push(case("c", Policy::Repeated60, true, monday()));
        out.push(case("d", Policy::Weekend, true, friday()));
    }
    out.push(Case {
        name: "e",
        policy: Policy::Recommended,
        three_stages: false,
        re_arm: ReArm::AtOnce,
        busy: 0.1,
        phones_per_site: 8,
        set_at: monday(),
    });
    out
}

/// Three sites in three zones, two minute-level families: Paris (XSTIM, UTC+1 in winter),
/// Lagos (Yealink, UTC+1, no DST) and London (Yealink, UTC+0). Their night windows overlap
/// enough for three stages to fit in one night (gated fleet-wide: with a zone two hours away
/// the last stage of the easternmost site spills to the next occurrence, a week later with
/// weekend windows). MACs carry the case's number: no phone is in two namespaces.
fn sites_yaml(ns: &str, case: usize, phones: usize) -> Vec<String> {
    [
        ("paris", "Europe/Paris", "XSTIM", ", family: xstim"),
        ("lagos", "Africa/Lagos", "SIP-T46U", ""),
        ("london", "Europe/London", "SIP-T46U", ""),
    ]
    .iter()
    .enumerate()
    .map(|(i, (name, zone, model, family))| {
        let mut yaml = format!(
            "apiVersion: phonefleet.io/v1alpha1\nkind: PhoneSite\nmetadata: {{name: {name}, namespace: {ns}, labels: {{predict: \"yes\"}}}}\nspec:\n  timeZone: {zone}\n  maxConcurrentDownloads: 2\n  phones:\n"
        );
        for p in 0..phones {
            yaml.push_str(&format!(
                "  - {{mac: '00:0b:82:{case:02x}:{i:02x}:{p:02x}', model: {model}{family}}}\n"
            ));
        }
        yaml
    })
    .collect()
}

/// The case's schedule; with `firmware`, as the operator's patch leaves it.
fn schedule_yaml(ns: &str, case: &Case, firmware: bool) -> String {
    let repeatedly = match case.policy {
        Policy::Repeated60 => "{enabled: true, everyMinutes: 60}",
        Policy::Recommended | Policy::Weekend => "{enabled: false}",
    };
    let days = match case.policy {
        Policy::Weekend => "[Sat, Sun]",
        Policy::Recommended | Policy::Repeated60 => "[Sun, Mon, Tue, Wed, Thu, Fri, Sat]",
    };
    let stages = if case.three_stages {
        "[{name: canary, percent: 10}, {name: half, percent: 50}, {name: all, percent: 100}]"
    } else {
        "[{name: all, percent: 100}]"
    };
    let re_arm = match case.re_arm {
        ReArm::AtOnce => "AtOnce",
        ReArm::NextOccurrence => "NextOccurrence",
    };
    let firmware = if firmware {
        format!("  firmware: {{version: \"2.0.0\", file: {FIRMWARE}, models: [SIP-T46U, XSTIM]}}\n")
    } else {
        String::new()
    };
    format!(
        r#"apiVersion: phonefleet.io/v1alpha1
kind: PhoneSchedule
metadata: {{name: fleet, namespace: {ns}}}
spec:
  siteSelector: {{matchLabels: {{predict: "yes"}}}}
  provisioning:
    powerOn: true
    repeatedly: {repeatedly}
    weekly: {{enabled: true, intervalWeeks: 1, inactivityMinutes: 30, window: {{start: "00:00", end: "05:00"}}, days: {days}}}
{firmware}  rollout:
    checkSpreadMinutes: 10
    downloadMinutes: 5
    stages: {stages}
    successThresholdPercent: 95
    failureThresholdPercent: 50
    reArm: {re_arm}
"#
    )
}

/// `phonefleet plan -o json` on `manifest` at `now`: (completion, longest slot).
async fn offline_plan(manifest: String, now: DateTime<Utc>) -> (DateTime<Utc>, chrono::Duration) {
    let file = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(file.path(), manifest).expect("write manifest");
    let path = file.path().to_path_buf();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_phonefleet"))
            .args(["plan", "--now", &now.to_rfc3339(), "-o", "json", "-f"])
            .arg(&path)
            .output()
            .expect("run phonefleet plan")
    })
    .await
    .expect("join phonefleet plan");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON plan");
    let completion = json["completion"]
        .as_str()
        .expect("a completion")
        .parse()
        .expect("RFC 3339");
    let slot = json["sites"]
        .as_array()
        .expect("sites")
        .iter()
        .filter_map(|s| s["slotMinutes"].as_i64())
        .max()
        .expect("a slot length");
    (completion, chrono::Duration::minutes(slot))
}

/// What one case measured.
#[derive(Debug)]
struct Measured {
    case: Case,
    /// When the firmware was set (simulated).
    set_at: DateTime<Utc>,
    /// `phonefleet plan`'s completion at `set_at`.
    plan: DateTime<Utc>,
    slot: chrono::Duration,
    /// The controller's `predictedCompletion` once Ready for the firmware's generation.
    predicted: DateTime<Utc>,
    /// The last upgrade seen by the phones.
    completed: Option<DateTime<Utc>>,
    /// `predictedCompletion` when the simulation ended.
    last_prediction: Option<DateTime<Utc>>,
    upgraded: u32,
    total: u32,
    summary: Summary,
}

impl Measured {
    fn error(&self) -> Option<chrono::Duration> {
        self.completed.map(|c| c - self.predicted)
    }

    fn line(&self) -> String {
        format!(
            "prediction: case ({}) {:?}, busy {}, firmware set {}, plan {}, predicted {}, \
             completed {}, error {} min, slot {} min, upgraded {}/{}, last prediction {}, \
             busy checks delayed {}, windows missed busy {}",
            self.case.name,
            self.case.re_arm,
            self.case.busy,
            self.set_at,
            self.plan,
            self.predicted,
            self.completed.map_or("never".into(), |c| c.to_string()),
            self.error()
                .map_or("-".into(), |e| e.num_minutes().to_string()),
            self.slot.num_minutes(),
            self.upgraded,
            self.total,
            self.last_prediction
                .map_or("none".into(), |c| c.to_string()),
            self.summary
                .sites
                .values()
                .map(|s| s.busy_delayed_checks)
                .sum::<u64>(),
            self.summary
                .sites
                .values()
                .map(|s| s.busy_missed_windows)
                .sum::<u64>(),
        )
    }
}

async fn status(api: &Api<PhoneSchedule>) -> Option<PhoneScheduleStatus> {
    api.get("fleet").await.ok()?.status
}

fn ready(s: &PhoneScheduleStatus) -> bool {
    s.conditions
        .iter()
        .any(|c| c.type_ == "Ready" && c.status == "True")
}

/// Runs one case until an attempt keeps to its script, each attempt at half the clock speed
/// of the one before.
async fn attempts(index: usize, case: Case) -> Measured {
    let mut scale = SCALE;
    for attempt in 1..=ATTEMPTS {
        match run_case(index, case, scale).await {
            Ok(measured) => return measured,
            Err(why) if attempt < ATTEMPTS => {
                eprintln!(
                    "prediction: case ({}) {:?}, attempt {attempt} at {scale}x: {why}; again at {}x",
                    case.name,
                    case.re_arm,
                    scale / 2
                );
                scale /= 2;
            }
            Err(why) => panic!(
                "case ({}) {:?}: {ATTEMPTS} attempts, the last at {scale}x: {why}",
                case.name, case.re_arm
            ),
        }
    }
    unreachable!("the last attempt returns or panics")
}

/// Runs one case end to end at `scale` and returns what it measured, or why the machine's load
/// moved the case off its script (nothing is measured then).
async fn run_case(index: usize, case: Case, scale: u32) -> Result<Measured, String> {
    let cluster = support::cluster().await;
    let ns = cluster.namespace(&format!("predict-{}", case.name)).await;
    let client = cluster.client().await;
    let clock = Clock::scaled(case.set_at - LEAD_IN, Utc::now(), scale);

    let firmware_dir = tempfile::tempdir().expect("tempdir");
    // The simulated XSTIM phone appends its model's image name to P192, as Grandstream phones
    // do (`simulator::knobs::grandstream_image`).
    for image in [FIRMWARE, "xstimfw.bin"] {
        std::fs::write(
            firmware_dir.path().join(image),
            simulator::firmware_image("2.0.0", 16 * 1024),
        )
        .expect("firmware");
    }
    let stats = ServerStats::new();
    let srv = server::start_with_stats(
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            scope: phonefleet::scope::WatchScope::namespace(ns.name.clone()),
            firmware_dir: Some(firmware_dir.path().to_path_buf()),
            replica_id: format!("predict-{}", case.name),
            flush_interval: Duration::from_millis(200),
            ..ServerConfig::default()
        },
        client.clone(),
        clock,
        stats.clone(),
    )
    .await
    .expect("provisioning server");
    let server_url = format!("http://{}", srv.local_addr());
    let stop = CancellationToken::new();
    let controller_task = tokio::spawn(controller::run(
        client.clone(),
        clock,
        ControllerConfig {
            scope: phonefleet::scope::WatchScope::namespace(ns.name.clone()),
            server_url: server_url.parse().expect("URL"),
            lease: None,
            instance: format!("predict-{}", case.name),
        },
        Arc::new(Counter::default()),
        stop.clone(),
    ));

    let site_docs = sites_yaml(&ns.name, index, case.phones_per_site);
    let fleet: Vec<PhoneSite> = site_docs
        .iter()
        .map(|y| serde_yaml_ng::from_str(y).expect("PhoneSite"))
        .collect();
    let site_api: Api<PhoneSite> = Api::namespaced(client.clone(), &ns.name);
    for s in &fleet {
        site_api
            .create(&PostParams::default(), s)
            .await
            .expect("create site");
    }
    let api: Api<PhoneSchedule> = Api::namespaced(client.clone(), &ns.name);
    let steady: PhoneSchedule =
        serde_yaml_ng::from_str(&schedule_yaml(&ns.name, &case, false)).expect("PhoneSchedule");
    api.create(&PostParams::default(), &steady)
        .await
        .expect("create schedule");
    support::eventually("the steady files served", SETUP, || async {
        (srv.is_ready()
            && status(&api)
                .await
                .and_then(|s| s.observed_generation)
                .is_some())
        .then_some(())
    })
    .await;

    // The phones boot and fetch their steady files.
    let total = (fleet.len() * case.phones_per_site) as u32;
    let sim_sites = simulator::sites_from(&fleet).expect("sites");
    support::simulation::wait_until_served(&server_url, &sim_sites, SETUP).await;
    let probed = stats.outcome(Outcome::ConfigServed);
    let mut sim = SimConfig::new(server_url.clone(), sim_sites);
    sim.re_arm = Some(case.re_arm);
    sim.busy_fraction = case.busy;
    sim.seed = 13;
    // The budget is simulated and far beyond every case's completion; the test ends the run
    // earlier (below), on simulated time.
    sim.duration = Duration::from_secs(14 * 24 * 3600);
    sim.stop_when_settled = true;
    let sim_stop = CancellationToken::new();
    let sim_task = tokio::spawn(simulator::run_until(sim, clock, {
        let t = sim_stop.clone();
        async move { t.cancelled().await }
    }));
    support::eventually("every phone's first fetch", SETUP, || async {
        (stats.outcome(Outcome::ConfigServed) >= probed + u64::from(total)).then_some(())
    })
    .await;

    // The operator sets the firmware at the case's instant, unless the setup overran it.
    macro_rules! abandon {
        ($($why:tt)*) => {{
            let why = format!($($why)*);
            sim_stop.cancel();
            let _ = sim_task.await;
            stop.cancel();
            let _ = controller_task.await;
            srv.shutdown().await;
            ns.delete().await;
            return Err(why);
        }};
    }
    if clock.now() > case.set_at {
        abandon!(
            "the setup overran the firmware's instant by {} min",
            (clock.now() - case.set_at).num_minutes()
        );
    }
    while clock.now() < case.set_at {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let patch = serde_json::json!({"spec": {"firmware": {
        "version": "2.0.0", "file": FIRMWARE, "models": ["SIP-T46U", "XSTIM"]
    }}});
    let patched = api
        .patch("fleet", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("set firmware");
    let set_at = clock.now();
    let generation = patched.metadata.generation;
    let manifest = std::iter::once(schedule_yaml(&ns.name, &case, true))
        .chain(site_docs)
        .collect::<Vec<_>>()
        .join("---\n");
    let (plan, slot) = offline_plan(manifest, set_at).await;
    // Waits on an outcome while the phones run, on simulated time: the first decision must be
    // out before the first window opens.
    let predicted = loop {
        if let Some(s) = status(&api).await
            && s.observed_generation == generation
            && ready(&s)
            && let Some(p) = s.predicted_completion
        {
            break p;
        }
        assert!(
            !sim_task.is_finished(),
            "case ({}): the simulation ended before the first prediction",
            case.name
        );
        if clock.now() > set_at + READY_WITHIN {
            abandon!(
                "no decision for the firmware within {} min of setting it",
                READY_WITHIN.num_minutes()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    eprintln!(
        "prediction: case ({}) {:?}: firmware set {set_at}, plan {plan}, predicted {predicted}",
        case.name, case.re_arm
    );
    // The simulation ends when every phone is upgraded, or, on simulated time, a day after the
    // prediction (two hours for the busy case: a phone that missed its slot is re-planned when
    // the slot ends, a week later without repeated checks).
    let give_up = predicted
        + if case.busy > 0.0 {
            chrono::Duration::hours(2)
        } else {
            chrono::Duration::days(1)
        };
    while !sim_task.is_finished() && clock.now() < give_up {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let last_prediction = status(&api).await.and_then(|s| s.predicted_completion);
    sim_stop.cancel();
    let summary = sim_task.await.expect("simulation");
    let upgraded: u32 = summary.sites.values().map(|s| s.upgraded).sum();
    let completed = summary.sites.values().filter_map(|s| s.last_upgrade).max();

    stop.cancel();
    let _ = controller_task.await;
    srv.shutdown().await;
    ns.delete().await;
    let measured = Measured {
        case,
        set_at,
        plan,
        slot,
        predicted,
        completed,
        last_prediction,
        upgraded,
        total,
        summary,
    };
    eprintln!("{}", measured.line());
    Ok(measured)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn completions_fall_within_a_slot_of_the_first_prediction() {
    let cluster = support::cluster().await;
    cluster.apply_crds().await;
    // Every case starts now (collected, not a lazy iterator), and they run side by side.
    let runs: Vec<_> = cases()
        .into_iter()
        .enumerate()
        .map(|(i, case)| tokio::spawn(attempts(i, case)))
        .collect();
    let mut measured = Vec::new();
    for run in runs {
        measured.push(run.await.expect("case"));
    }

    let mut failures = Vec::new();
    for m in &measured {
        let name = format!("({}) {:?}", m.case.name, m.case.re_arm);
        if m.plan != m.predicted {
            failures.push(format!(
                "{name}: `phonefleet plan` at {} printed {}, the controller predicted {}",
                m.set_at, m.plan, m.predicted
            ));
        }
        let Some(completed) = m.completed else {
            failures.push(format!("{name}: no phone upgraded: {:?}", m.summary));
            continue;
        };
        if m.case.busy == 0.0 {
            if m.upgraded != m.total {
                failures.push(format!(
                    "{name}: {}/{} upgraded: {:?}",
                    m.upgraded, m.total, m.summary
                ));
            }
            if (completed - m.predicted).abs() > m.slot {
                failures.push(format!(
                    "{name}: completed {completed}, predicted {}: off by {} min, more than a slot ({} min)",
                    m.predicted,
                    (completed - m.predicted).num_minutes(),
                    m.slot.num_minutes()
                ));
            }
            continue;
        }
        // The busy-phone rule (docs/planner.md): the phones idle at their slots keep the first
        // prediction; a phone that missed its slot is re-planned once the slot has ended, at
        // its next check: a week later, since its slot file checks on the slot's weekday only.
        if completed > m.predicted + m.slot {
            failures.push(format!(
                "{name}: the last phone upgraded at {completed}, after the prediction {} and a slot",
                m.predicted
            ));
        }
        if m.upgraded == m.total {
            if (completed - m.predicted).abs() > m.slot {
                failures.push(format!(
                    "{name}: nobody missed, yet completed {completed} vs predicted {}",
                    m.predicted
                ));
            }
        } else if m
            .last_prediction
            .is_none_or(|p| p < m.predicted + chrono::Duration::days(7))
        {
            failures.push(format!(
                "{name}: {} phones missed their slot, but the prediction did not move a week: {:?}",
                m.total - m.upgraded,
                m.last_prediction
            ));
        }
    }
    // (b) costs at most one window occurrence (a day) over (a), under each behaviour.
    for re_arm in [ReArm::AtOnce, ReArm::NextOccurrence] {
        let done = |name: &str| {
            measured
                .iter()
                .find(|m| m.case.name == name && m.case.re_arm == re_arm && m.case.busy == 0.0)
                .and_then(|m| m.completed)
        };
        if let (Some(a), Some(b)) = (done("a"), done("b"))
            && b - a > chrono::Duration::days(1)
        {
            failures.push(format!(
                "{re_arm:?}: three stages completed {b}, more than a window occurrence after one stage ({a})"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
