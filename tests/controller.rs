//! The controller on the real control plane: from `kubectl apply` to Ready, rendered files
//! byte for byte as `phonefleet render` prints them, re-planning on edits, garbage collection,
//! conflicts and bad input reported as conditions.
#![cfg(feature = "simulated-time")]

mod support;

use support::fleet;

use std::time::Duration;

use chrono::{DateTime, Utc};
use kube::api::Api;
use phonefleet::api::{PhoneSchedule, PhoneSite};
use phonefleet::clock::Clock;
use phonefleet::core::Mac;
use phonefleet::render::Format;
use support::controller::RunningController;

const ORIGIN: &str = "2026-12-01T12:00:00Z";
const WAIT: Duration = Duration::from_secs(60);

fn origin() -> DateTime<Utc> {
    ORIGIN.parse().expect("origin")
}

/// A clock frozen in effect at ORIGIN (real speed from there), so plans are reproducible.
fn clock() -> Clock {
    Clock::scaled(origin(), Utc::now(), 1)
}

async fn status_of(
    client: &kube::Client,
    ns: &str,
    name: &str,
) -> phonefleet::api::PhoneScheduleStatus {
    let api: Api<PhoneSchedule> = Api::namespaced(client.clone(), ns);
    api.get(name)
        .await
        .expect("get schedule")
        .status
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn applied_fleet_becomes_ready_and_serves_exactly_what_render_prints() {
    let cluster = support::cluster().await;
    cluster.apply_crds().await;
    let ns = cluster.namespace("ctl-ready").await;
    let client = cluster.client().await;
    let fixture = fleet::example_fleet(&ns.name);
    let path = fixture.path().to_str().expect("utf-8 path");
    cluster.kubectl_ok(&["apply", "-f", path]);
    let controller = RunningController::start(client.clone(), &ns.name, clock());
    fleet::wait_ready(cluster, &ns.name, "night-rollout").await;

    let files = fleet::served_files(&client, &ns.name, "night-rollout").await;
    let sites: Api<PhoneSite> = Api::namespaced(client.clone(), &ns.name);
    let status = status_of(&client, &ns.name, "night-rollout").await;
    let mut compared = 0;
    for site in status.sites.iter().map(|s| s.name.clone()) {
        let site = sites.get(&site).await.expect("site");
        for phone in &site.spec.phones {
            let mac: Mac = phone.mac.parse().expect("mac");
            let Some(family) = phonefleet::core::PhoneFamily::resolve(&phone.model, phone.family)
            else {
                continue;
            };
            let name = Format::of(family).file_name(mac);
            let served = files
                .get(&name)
                .unwrap_or_else(|| panic!("{name} is served"));
            fleet::assert_served_as_rendered(path, &phone.mac, ORIGIN, &name, served);
            compared += 1;
        }
    }
    assert!(compared >= 150, "compared {compared} phones");
    assert_eq!(
        files.len(),
        compared,
        "no file for a phone outside the selected sites"
    );
    assert_eq!(status.phase.as_deref(), Some("Progressing"));
    let printed = cluster.kubectl_ok(&["get", "psched", "-n", &ns.name]);
    assert!(
        printed.contains("Progressing") && printed.contains("canary"),
        "{printed}"
    );
    controller.stop().await.expect("clean stop");
    ns.delete().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adding_phones_to_a_site_renders_their_files() {
    let cluster = support::cluster().await;
    cluster.apply_crds().await;
    let ns = cluster.namespace("ctl-edit").await;
    let client = cluster.client().await;
    let fixture = fleet::example_fleet(&ns.name);
    cluster.kubectl_ok(&["apply", "-f", fixture.path().to_str().expect("path")]);
    let controller = RunningController::start(client.clone(), &ns.name, clock());
    fleet::wait_ready(cluster, &ns.name, "night-rollout").await;

    fleet::add_phone(&client, &ns.name, "berlin-shop", "00:0b:82:aa:bb:01").await;
    support::eventually("the new phone's file", WAIT, || {
        let (client, ns) = (client.clone(), ns.name.clone());
        async move {
            fleet::served_files(&client, &ns, "night-rollout")
                .await
                .contains_key("cfg000b82aabb01.xml")
                .then_some(())
        }
    })
    .await;
    controller.stop().await.expect("clean stop");
    ns.delete().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_the_schedule_garbage_collects_its_configmaps() {
    let cluster = support::cluster().await;
    cluster.apply_crds().await;
    let ns = cluster.namespace("ctl-gc").await;
    let client = cluster.client().await;
    let fixture = fleet::example_fleet(&ns.name);
    cluster.kubectl_ok(&["apply", "-f", fixture.path().to_str().expect("path")]);
    let controller = RunningController::start(client.clone(), &ns.name, clock());
    fleet::wait_ready(cluster, &ns.name, "night-rollout").await;
    assert!(
        !fleet::served_files(&client, &ns.name, "night-rollout")
            .await
            .is_empty()
    );

    cluster.kubectl_ok(&["delete", "-n", &ns.name, "phoneschedule/night-rollout"]);
    support::eventually("the ConfigMaps to be garbage collected", WAIT, || {
        let (client, ns) = (client.clone(), ns.name.clone());
        async move {
            fleet::served_files(&client, &ns, "night-rollout")
                .await
                .is_empty()
                .then_some(())
        }
    })
    .await;
    controller.stop().await.expect("clean stop");
    ns.delete().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_newer_of_two_schedules_on_one_site_reports_the_conflict() {
    let cluster = support::cluster().await;
    cluster.apply_crds().await;
    let ns = cluster.namespace("ctl-conflict").await;
    let client = cluster.client().await;
    let fixture = fleet::example_fleet(&ns.name);
    cluster.kubectl_ok(&["apply", "-f", fixture.path().to_str().expect("path")]);
    let controller = RunningController::start(client.clone(), &ns.name, clock());
    fleet::wait_ready(cluster, &ns.name, "night-rollout").await;

    let second = format!(
        "apiVersion: phonefleet.io/v1alpha1\nkind: PhoneSchedule\nmetadata: {{name: second, namespace: {}}}\nspec:\n  siteSelector: {{matchLabels: {{region: emea}}}}\n  provisioning:\n    weekly: {{enabled: true, window: {{start: '01:00', end: '05:00'}}, days: [Sat]}}\n",
        ns.name
    );
    let file = tempfile::NamedTempFile::new().expect("temp");
    std::fs::write(file.path(), second).expect("write");
    cluster.kubectl_ok(&["apply", "-f", file.path().to_str().expect("path")]);
    let status = support::eventually("a SiteConflict condition", WAIT, || {
        let (client, ns) = (client.clone(), ns.name.clone());
        async move {
            let status = status_of(&client, &ns, "second").await;
            status
                .conditions
                .iter()
                .any(|c| c.type_ == "Degraded" && c.reason == "SiteConflict")
                .then_some(status)
        }
    })
    .await;
    let message = &status
        .conditions
        .iter()
        .find(|c| c.type_ == "Degraded")
        .expect("Degraded")
        .message;
    assert!(message.contains("night-rollout"), "{message}");
    let events = cluster.kubectl_ok(&["get", "events", "-n", &ns.name, "-o", "wide"]);
    assert!(events.contains("SiteConflict"), "{events}");
    // The older schedule still serves its sites.
    let first = status_of(&client, &ns.name, "night-rollout").await;
    assert!(first.sites.iter().any(|s| s.name == "paris-hq"));
    controller.stop().await.expect("clean stop");
    ns.delete().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_time_zone_is_a_condition_not_a_crash() {
    let cluster = support::cluster().await;
    cluster.apply_crds().await;
    let ns = cluster.namespace("ctl-zone").await;
    let client = cluster.client().await;
    let fixture = fleet::example_fleet(&ns.name);
    let text = std::fs::read_to_string(fixture.path())
        .expect("fixture")
        .replacen("timeZone: Europe/Berlin", "timeZone: Europe/Atlantis", 1);
    std::fs::write(fixture.path(), text).expect("write");
    cluster.kubectl_ok(&["apply", "-f", fixture.path().to_str().expect("path")]);
    let controller = RunningController::start(client.clone(), &ns.name, clock());
    let status = support::eventually("an InvalidSite condition", WAIT, || {
        let (client, ns) = (client.clone(), ns.name.clone());
        async move {
            let status = status_of(&client, &ns, "night-rollout").await;
            status
                .conditions
                .iter()
                .any(|c| c.type_ == "Degraded" && c.reason == "InvalidSite")
                .then_some(status)
        }
    })
    .await;
    let degraded = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Degraded")
        .expect("cond");
    assert!(
        degraded.message.contains("Europe/Atlantis"),
        "{}",
        degraded.message
    );
    assert!(status.sites.iter().all(|s| s.name != "berlin-shop"));
    assert!(
        status.sites.iter().any(|s| s.name == "paris-hq"),
        "the others go on"
    );
    fleet::wait_ready(cluster, &ns.name, "night-rollout").await;
    // The site itself says why, and every site shows its phone count.
    let sites: Api<PhoneSite> = Api::namespaced(client.clone(), &ns.name);
    support::eventually("the site's Valid=False condition", WAIT, || {
        let sites = sites.clone();
        async move {
            let status = sites.get("berlin-shop").await.ok()?.status?;
            let valid = status.conditions.iter().find(|c| c.type_ == "Valid")?;
            (valid.status == "False" && valid.message.contains("Europe/Atlantis")).then_some(())
        }
    })
    .await;
    let printed = cluster.kubectl_ok(&["get", "phonesites", "-n", &ns.name, "paris-hq"]);
    let count = sites
        .get("paris-hq")
        .await
        .expect("site")
        .spec
        .phones
        .len()
        .to_string();
    assert!(
        printed
            .lines()
            .nth(1)
            .is_some_and(|l| l.split_whitespace().any(|w| w == count)),
        "{printed}"
    );
    controller
        .stop()
        .await
        .expect("the controller is still running and stops cleanly");
    ns.delete().await;
}
