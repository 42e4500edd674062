//! The scale benchmark's code path (`scripts/measure-scale.sh`, issue #18) at a size `make test`
//! can afford: 20,000 phones in 200 PhoneSites (the benchmark's generator: five zones on three
//! continents, two families), one schedule selecting all, the controller in this process. What
//! it asserts does not depend on the machine's speed: the decision the controller keeps in the
//! API stays within the benchmark's budget of 50 bytes per phone (metadata included), every
//! phone is served a file, and what is served is byte for byte what `phonefleet render` prints.
#![cfg(feature = "simulated-time")]

mod support;

use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ListParams};
use phonefleet::children::{COMPONENT_CONFIG, LABEL_COMPONENT};
use phonefleet::clock::Clock;
use phonefleet::core::{Mac, PhoneFamily};
use phonefleet::render::Format;
use support::controller::RunningController;
use support::fleet;

const SITES: usize = 200;
const PER_SITE: usize = 100;
/// The target of issue #18 (≤ 50 MB at 1,000,000 phones), per phone.
const BYTES_PER_PHONE: usize = 50;
const ORIGIN: &str = "2026-12-01T12:00:00Z";

/// The benchmark's fleet (scripts/measure-scale.sh): `site-NNNNN` with `PER_SITE` phones each,
/// every third a Yealink SIP-T46U, the rest Grandstream GXP2170; and its schedule.
fn manifest(ns: &str) -> String {
    let zones = [
        "Europe/Paris",
        "America/New_York",
        "Asia/Tokyo",
        "Australia/Sydney",
        "America/Sao_Paulo",
    ];
    let mut out = format!(
        r#"apiVersion: phonefleet.io/v1alpha1
kind: PhoneSchedule
metadata: {{name: bench, namespace: {ns}}}
spec:
  siteSelector: {{matchLabels: {{fleet: bench}}}}
  provisioning:
    weekly: {{enabled: true, window: {{start: "22:00", end: "05:00"}}, days: [Sun, Mon, Tue, Wed, Thu, Fri, Sat]}}
  firmware: {{version: "2.0", file: fw-2.0.bin}}
  rollout: {{downloadMinutes: 10, stages: [{{name: canary, percent: 1}}, {{name: all, percent: 100}}]}}
"#
    );
    for s in 0..SITES {
        out.push_str(&format!(
            "---\napiVersion: phonefleet.io/v1alpha1\nkind: PhoneSite\nmetadata: {{name: site-{s:05}, namespace: {ns}, labels: {{fleet: bench}}}}\nspec:\n  timeZone: {}\n  maxConcurrentDownloads: 10\n  phones:\n",
            zones[s % zones.len()]
        ));
        for p in 0..PER_SITE {
            let n = s * PER_SITE + p;
            let model = if n.is_multiple_of(3) {
                "SIP-T46U"
            } else {
                "GXP2170"
            };
            out.push_str(&format!(
                "  - {{mac: '00:0b:{:02x}:{:02x}:{:02x}:{:02x}', model: {model}}}\n",
                (n >> 24) & 255,
                (n >> 16) & 255,
                (n >> 8) & 255,
                n & 255
            ));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_thousand_phones_keep_their_decision_within_fifty_bytes_each_and_are_served_what_render_prints()
 {
    let cluster = support::cluster().await;
    cluster.apply_crds().await;
    let ns = cluster.namespace("scale").await;
    let client = cluster.client().await;
    let file = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(file.path(), manifest(&ns.name)).expect("write manifest");
    let path = file.path().to_str().expect("utf-8 path");
    cluster.kubectl_ok(&["apply", "--server-side", "-f", path]);
    let origin: DateTime<Utc> = ORIGIN.parse().expect("origin");
    let controller = RunningController::start(
        client.clone(),
        &ns.name,
        Clock::scaled(origin, Utc::now(), 1),
    );
    fleet::wait_ready(cluster, &ns.name, "bench").await;

    // What the controller keeps in the API: its decision ConfigMaps as stored (JSON, metadata
    // and managedFields included).
    let maps: Api<ConfigMap> = Api::namespaced(client.clone(), &ns.name);
    let decisions = maps
        .list(&ListParams::default().labels(&format!("{LABEL_COMPONENT}={COMPONENT_CONFIG}")))
        .await
        .expect("list decisions")
        .items;
    let bytes: usize = decisions
        .iter()
        .map(|cm| serde_json::to_vec(cm).expect("JSON").len())
        .sum();
    let phones = SITES * PER_SITE;
    eprintln!(
        "scale: {bytes} B in {} decision ConfigMaps for {phones} phones = {:.1} B/phone",
        decisions.len(),
        bytes as f64 / phones as f64
    );
    assert!(
        bytes <= BYTES_PER_PHONE * phones,
        "{bytes} B in {} ConfigMaps for {phones} phones: {:.1} B/phone, over {BYTES_PER_PHONE}",
        decisions.len(),
        bytes as f64 / phones as f64
    );

    // Every phone is served, and a sample across sites, zones and both families is served
    // exactly what `phonefleet render` prints for it.
    let files = fleet::served_files(&client, &ns.name, "bench").await;
    assert_eq!(files.len(), phones, "one file per phone");
    for n in (0..phones).step_by(phones / 12 + 1).chain([phones - 1]) {
        let mac: Mac = format!(
            "00:0b:{:02x}:{:02x}:{:02x}:{:02x}",
            (n >> 24) & 255,
            (n >> 16) & 255,
            (n >> 8) & 255,
            n & 255
        )
        .parse()
        .expect("mac");
        let model = if n.is_multiple_of(3) {
            "SIP-T46U"
        } else {
            "GXP2170"
        };
        let family = PhoneFamily::resolve(model, None).expect("a family places the model");
        let name = Format::of(family).file_name(mac);
        let served = files
            .get(&name)
            .unwrap_or_else(|| panic!("{name} is served"));
        fleet::assert_served_as_rendered(path, &mac.to_string(), ORIGIN, &name, served);
    }
    controller.stop().await.expect("clean stop");
    ns.delete().await;
}
