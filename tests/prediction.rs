//! The plan's promise, measured (issue #13 item 4): controller, provisioning server and simulated
//! phones on the real control plane with a compressed clock. The phones run their steady files
//! first; then the operator sets the firmware, and the controller's first
//! `status.predictedCompletion` is held against the instant the last phone came back upgraded
//! (`simulator::SiteSummary::last_upgrade`). The prediction must be within one slot length,
//! earlier or later.
//!
//! Case here: the design page's recommended policy (power-on, no repeated checks, weekly
//! 00:00–05:00 every day, 30 minutes of inactivity), three stages, phones that re-arm only at
//! the next occurrence and a schedule that says so (`reArm: NextOccurrence`). The stages cost no
//! window: later stages' slots are announced ahead and held by the server until released.
//! Figures are printed (`prediction:` lines) and recorded in docs/planner.md.
#![cfg(feature = "simulated-time")]

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use phonefleet::api::{PhoneSchedule, PhoneSite};
use phonefleet::children::{INDEX_KEY, ShardIndex};
use phonefleet::clock::Clock;
use phonefleet::controller::{self, ControllerConfig};
use phonefleet::core::ReArm;
use phonefleet::server::{self, Outcome, ServerConfig, ServerStats};
use phonefleet::simulator::{self, SimConfig};
use support::controller::Counter;
use tokio_util::sync::CancellationToken;

/// Ten simulated minutes per real second: a held phone retries every five simulated minutes
/// for the last quarter hour of its slot, so a stage released up to a minute of real time
/// late still reaches it.
const SCALE: u32 = 600;
const PHONES_PER_SITE: usize = 8;
const FIRMWARE: &str = "fw.bin";

/// Monday 2026-01-05 22:00 UTC: an hour before Paris's night window opens.
fn origin() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 5, 22, 0, 0).unwrap()
}

/// Two sites, two minute-level families: Yealink in UTC, XSTIM in Paris.
fn sites(ns: &str) -> Vec<PhoneSite> {
    [("utc", "UTC", "SIP-T46U", ""), ("paris", "Europe/Paris", "XSTIM", ", family: xstim")]
        .iter()
        .enumerate()
        .map(|(i, (name, zone, model, family))| {
            let mut yaml = format!(
                "apiVersion: phonefleet.io/v1alpha1\nkind: PhoneSite\nmetadata: {{name: {name}, namespace: {ns}, labels: {{predict: \"yes\"}}}}\nspec:\n  timeZone: {zone}\n  maxConcurrentDownloads: 2\n  phones:\n"
            );
            for p in 0..PHONES_PER_SITE {
                yaml.push_str(&format!(
                    "  - {{mac: '00:0b:82:7{i}:00:{p:02x}', model: {model}{family}}}\n"
                ));
            }
            serde_yaml_ng::from_str(&yaml).expect("PhoneSite")
        })
        .collect()
}

/// The recommended policy, three stages, no firmware yet.
fn schedule(ns: &str, re_arm: ReArm) -> PhoneSchedule {
    let re_arm = match re_arm {
        ReArm::AtOnce => "AtOnce",
        ReArm::NextOccurrence => "NextOccurrence",
    };
    serde_yaml_ng::from_str(&format!(
        r#"apiVersion: phonefleet.io/v1alpha1
kind: PhoneSchedule
metadata: {{name: fleet, namespace: {ns}}}
spec:
  siteSelector: {{matchLabels: {{predict: "yes"}}}}
  provisioning:
    powerOn: true
    repeatedly: {{enabled: false}}
    weekly: {{enabled: true, intervalWeeks: 1, inactivityMinutes: 30, window: {{start: "00:00", end: "05:00"}}, days: [Sun, Mon, Tue, Wed, Thu, Fri, Sat]}}
  rollout:
    checkSpreadMinutes: 10
    downloadMinutes: 5
    stages: [{{name: canary, percent: 10}}, {{name: half, percent: 50}}, {{name: all, percent: 100}}]
    successThresholdPercent: 95
    failureThresholdPercent: 50
    reArm: {re_arm}
"#
    ))
    .expect("PhoneSchedule")
}

async fn status(api: &Api<PhoneSchedule>) -> Option<phonefleet::api::PhoneScheduleStatus> {
    api.get("fleet").await.ok()?.status
}

/// The longest slot handed out (end − start), from the shard indexes.
async fn longest_slot(client: &kube::Client, ns: &str) -> Option<chrono::Duration> {
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    let list = cms.list(&ListParams::default()).await.ok()?;
    list.items
        .iter()
        .filter_map(|cm| cm.data.as_ref()?.get(INDEX_KEY))
        .filter_map(|json| serde_json::from_str::<ShardIndex>(json).ok())
        .flat_map(|index| index.phones.into_values())
        .filter_map(|p| p.slot)
        .map(|s| s.end - s.start)
        .max()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_stages_under_next_occurrence_complete_within_a_slot_of_the_first_prediction() {
    let cluster = support::cluster().await;
    cluster.apply_crds().await;
    let ns = cluster.namespace("predict").await;
    let client = cluster.client().await;
    let clock = Clock::scaled(origin(), Utc::now(), SCALE);

    let firmware_dir = tempfile::tempdir().expect("tempdir");
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
            replica_id: "predict".into(),
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
            instance: "predict".into(),
        },
        Arc::new(Counter::default()),
        stop.clone(),
    ));

    let fleet = sites(&ns.name);
    let site_api: Api<PhoneSite> = Api::namespaced(client.clone(), &ns.name);
    for s in &fleet {
        site_api
            .create(&PostParams::default(), s)
            .await
            .expect("create site");
    }
    let api: Api<PhoneSchedule> = Api::namespaced(client.clone(), &ns.name);
    api.create(
        &PostParams::default(),
        &schedule(&ns.name, ReArm::NextOccurrence),
    )
    .await
    .expect("create schedule");
    support::eventually(
        "the steady files served",
        Duration::from_secs(60),
        || async {
            (srv.is_ready()
                && status(&api)
                    .await
                    .and_then(|s| s.observed_generation)
                    .is_some())
            .then_some(())
        },
    )
    .await;

    // The phones boot and fetch their steady files; they re-arm only at the next occurrence.
    let total = fleet.len() * PHONES_PER_SITE;
    let mut sim = SimConfig::new(
        server_url.clone(),
        simulator::sites_from(&fleet).expect("sites"),
    );
    sim.re_arm = Some(ReArm::NextOccurrence);
    // The budget is simulated: far more than the two nights the plan needs (the first is lost
    // to re-arming, the second holds all three stages).
    sim.duration = Duration::from_secs(6 * 24 * 3600);
    sim.stop_when_settled = true;
    let sim_task = tokio::spawn(simulator::run(sim, clock));
    support::eventually(
        "every phone's first fetch",
        Duration::from_secs(60),
        || async { (stats.outcome(Outcome::ConfigServed) >= total as u64).then_some(()) },
    )
    .await;

    // The operator sets the firmware: the first prediction is the promise.
    let patch = serde_json::json!({"spec": {"firmware": {
        "version": "2.0.0", "file": FIRMWARE, "models": ["SIP-T46U", "XSTIM"]
    }}});
    let patched = api
        .patch("fleet", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("set firmware");
    let generation = patched.metadata.generation;
    let set_at = clock.now();
    let predicted =
        support::eventually("the first prediction", Duration::from_secs(60), || async {
            let s = status(&api).await?;
            (s.observed_generation == generation)
                .then_some(s.predicted_completion)
                .flatten()
        })
        .await;
    let slot = support::eventually("slots handed out", Duration::from_secs(60), || async {
        longest_slot(&client, &ns.name).await
    })
    .await;

    let summary = sim_task.await.expect("simulation");
    let upgraded: u32 = summary.sites.values().map(|s| s.upgraded).sum();
    let completed = summary
        .sites
        .values()
        .filter_map(|s| s.last_upgrade)
        .max()
        .expect("a phone upgraded");
    let error = completed - predicted;
    eprintln!(
        "prediction: firmware set {set_at}, predicted {predicted}, completed {completed}, \
         error {} min, slot {} min, upgraded {upgraded}/{total}",
        error.num_minutes(),
        slot.num_minutes()
    );
    assert_eq!(
        upgraded as usize, total,
        "every phone upgraded: {summary:?}"
    );
    assert!(
        error.abs() <= slot,
        "completed {completed}, predicted {predicted}: off by {} min, more than a slot ({} min)",
        error.num_minutes(),
        slot.num_minutes()
    );

    stop.cancel();
    let _ = controller_task.await;
    srv.shutdown().await;
    ns.delete().await;
}
