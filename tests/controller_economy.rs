//! Economy: a reconcile that changes nothing writes nothing. Proven with the API server's own
//! request counters across a stretch of idle reconciles. Its own test binary, so no other test
//! writes to the (shared) API server while the counters are read.
#![cfg(feature = "simulated-time")]

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::Utc;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, Patch, PatchParams};
use phonefleet::api::PhoneSite;
use phonefleet::clock::Clock;
use support::controller::RunningController;

/// Every (resource, verb) the controller writes with: server-side apply of ConfigMaps and of
/// schedule and site status, deletion of stale ConfigMaps, events. Other actors' writes (the
/// namespace controller, the root CA publisher) use other verbs and are left out.
const CONTROLLER_WRITES: [(&str, &str); 6] = [
    ("configmaps", "APPLY"),
    ("configmaps", "DELETE"),
    ("phoneschedules", "APPLY"),
    ("phonesites", "APPLY"),
    ("events", "POST"),
    ("events", "PATCH"),
];
const IDLE_RECONCILES: usize = 20;

/// `apiserver_request_total` of the controller's kinds of writes, by (resource, verb).
fn writes(cluster: &support::TestCluster) -> BTreeMap<(String, String), f64> {
    let metrics = cluster.kubectl_ok(&["get", "--raw", "/metrics"]);
    let mut out = BTreeMap::new();
    for line in metrics
        .lines()
        .filter(|l| l.starts_with("apiserver_request_total{"))
    {
        let label = |name: &str| {
            line.split(&format!("{name}=\""))
                .nth(1)
                .and_then(|rest| rest.split('"').next())
                .unwrap_or_default()
                .to_owned()
        };
        let (resource, verb) = (label("resource"), label("verb"));
        if CONTROLLER_WRITES.contains(&(resource.as_str(), verb.as_str())) {
            let value: f64 = line
                .rsplit(' ')
                .next()
                .and_then(|v| v.parse().ok())
                .unwrap_or_default();
            *out.entry((resource, verb)).or_default() += value;
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_reconciles_send_no_write_to_the_api_server() {
    let cluster = support::cluster().await;
    cluster.apply_crds().await;
    let ns = cluster.namespace("economy").await;
    let client = cluster.client().await;
    let _fixture = support::fleet::apply_example_fleet(cluster, &ns.name);
    let controller = RunningController::start(
        client.clone(),
        &ns.name,
        Clock::scaled("2026-12-01T12:00:00Z".parse().expect("t"), Utc::now(), 1),
    );
    support::fleet::wait_ready(cluster, &ns.name, "night-rollout").await;
    // Let the controller see its own writes come back and go quiet.
    let mut last = controller.reconciles();
    support::eventually(
        "the controller to go quiet",
        Duration::from_secs(60),
        || {
            let now = controller.reconciles();
            let quiet = now == last;
            last = now;
            async move {
                tokio::time::sleep(Duration::from_millis(500)).await;
                quiet.then_some(())
            }
        },
    )
    .await;

    // Other test binaries' namespaces may still be being torn down (their ConfigMaps and
    // events deleted by the garbage collector): wait, so only this controller could write.
    let namespaces: Api<Namespace> = Api::all(client.clone());
    support::eventually("no namespace terminating", Duration::from_secs(120), || {
        let namespaces = namespaces.clone();
        async move {
            let list = namespaces.list(&Default::default()).await.ok()?;
            list.items
                .iter()
                .all(|n| n.status.as_ref().and_then(|s| s.phase.as_deref()) != Some("Terminating"))
                .then_some(())
        }
    })
    .await;
    let before = writes(cluster);
    let reconciles_before = controller.reconciles();
    // Each label change on a selected site triggers a reconcile of the schedule that changes
    // nothing the schedule depends on.
    let sites: Api<PhoneSite> = Api::namespaced(client.clone(), &ns.name);
    for i in 0..IDLE_RECONCILES {
        let patch = serde_json::json!({"metadata": {"annotations": {"touched": i.to_string()}}});
        sites
            .patch("paris-hq", &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .expect("touch site");
        let target = reconciles_before + i + 1;
        support::eventually("a reconcile for the touch", Duration::from_secs(30), || {
            let n = controller.reconciles();
            async move { (n >= target).then_some(()) }
        })
        .await;
    }
    let after = writes(cluster);
    let reconciles = controller.reconciles() - reconciles_before;
    println!("{reconciles} idle reconciles; controller writes before {before:?} after {after:?}");
    assert!(reconciles >= IDLE_RECONCILES);
    assert_eq!(before, after, "writes by idle reconciles (0 expected)");
    assert_eq!(
        controller
            .counter
            .errors
            .load(std::sync::atomic::Ordering::SeqCst),
        0
    );
    controller.stop().await.expect("clean stop");
    ns.delete().await;
}
