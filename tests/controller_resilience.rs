//! The controller under failure: API server restarts, kill -9 and restart, and two replicas
//! with leader election.
#![cfg(feature = "simulated-time")]

mod support;

use support::fleet;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use chrono::Utc;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ListParams};
use phonefleet::api::PhoneSchedule;
use phonefleet::children::LABEL_SCHEDULE;
use phonefleet::clock::Clock;
use support::controller::{ControllerProcess, RunningController};

const WAIT: Duration = Duration::from_secs(90);

/// Name → resourceVersion of the schedule's ConfigMaps, and the schedule's own.
async fn versions(client: &kube::Client, ns: &str) -> BTreeMap<String, String> {
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    let mut out: BTreeMap<String, String> = cms
        .list(&ListParams::default().labels(&format!("{LABEL_SCHEDULE}=night-rollout")))
        .await
        .expect("list")
        .items
        .into_iter()
        .map(|cm| {
            (
                cm.metadata.name.unwrap_or_default(),
                cm.metadata.resource_version.unwrap_or_default(),
            )
        })
        .collect();
    let schedules: Api<PhoneSchedule> = Api::namespaced(client.clone(), ns);
    let s = schedules.get("night-rollout").await.expect("schedule");
    out.insert(
        "phoneschedule".into(),
        s.metadata.resource_version.unwrap_or_default(),
    );
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_controller_recovers_from_an_api_server_restart_without_restarting() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter("info,phonefleet=debug,kube_runtime=debug")
        .try_init();
    let cluster = support::private_cluster().await;
    cluster.apply_crds().await;
    let ns = cluster.namespace("res-api").await;
    let client = cluster.client().await;
    let fixture = fleet::example_fleet(&ns.name);
    cluster.kubectl_ok(&["apply", "-f", fixture.path().to_str().expect("path")]);
    let controller = RunningController::start(
        client.clone(),
        &ns.name,
        Clock::scaled("2026-12-01T12:00:00Z".parse().expect("t"), Utc::now(), 1),
    );
    fleet::wait_ready(&cluster, &ns.name, "night-rollout").await;

    cluster.restart_apiserver();
    let client = cluster.client().await;
    fleet::add_phone(&client, &ns.name, "berlin-shop", "00:0b:82:aa:bb:02").await;
    support::eventually(
        "the edit made after the restart to be rendered",
        WAIT,
        || {
            let (client, ns) = (client.clone(), ns.name.clone());
            async move {
                fleet::served_files(&client, &ns, "night-rollout")
                    .await
                    .contains_key("cfg000b82aabb02.xml")
                    .then_some(())
            }
        },
    )
    .await;
    controller
        .stop()
        .await
        .expect("the same controller is still running");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_and_restart_finds_everything_done_and_rewrites_nothing() {
    let cluster = support::cluster().await;
    cluster.apply_crds().await;
    let ns = cluster.namespace("res-kill").await;
    let client = cluster.client().await;
    let fixture = fleet::example_fleet(&ns.name);
    cluster.kubectl_ok(&["apply", "-f", fixture.path().to_str().expect("path")]);

    let mut first = ControllerProcess::spawn(cluster, &ns.name, &[]);
    fleet::wait_ready(cluster, &ns.name, "night-rollout").await;
    // Let the first controller settle: its own writes come back as watch events.
    support::eventually("an idle reconcile of the first process", WAIT, || {
        let log = first.log();
        async move { log.contains("nothing to write").then_some(()) }
    })
    .await;
    let before = versions(&client, &ns.name).await;
    first.kill_9();

    let second = ControllerProcess::spawn(cluster, &ns.name, &[]);
    support::eventually("the restarted controller to reconcile", WAIT, || {
        let log = second.log();
        async move { log.contains("nothing to write").then_some(()) }
    })
    .await;
    let after = versions(&client, &ns.name).await;
    assert_eq!(
        before, after,
        "no object rewritten after kill -9 and restart"
    );
    assert!(!second.log().contains(" reconciled "), "{}", second.log());
    drop(second);
    ns.delete().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_elect_one_leader_and_the_standby_takes_over_within_the_lease() {
    let cluster = support::cluster().await;
    cluster.apply_crds().await;
    let ns = cluster.namespace("res-lease").await;
    let client = cluster.client().await;
    let fixture = fleet::example_fleet(&ns.name);
    cluster.kubectl_ok(&["apply", "-f", fixture.path().to_str().expect("path")]);
    let lease_args = |id: &'static str| {
        [
            "--leader-elect",
            "--lease-namespace",
            "LEASE_NS",
            "--lease-duration-seconds",
            "4",
            "--identity",
            id,
        ]
    };
    let args = |id: &'static str| -> Vec<String> {
        lease_args(id)
            .iter()
            .map(|a| {
                if *a == "LEASE_NS" {
                    ns.name.clone()
                } else {
                    (*a).to_owned()
                }
            })
            .collect()
    };
    let a_args = args("replica-a");
    let b_args = args("replica-b");
    let a_refs: Vec<&str> = a_args.iter().map(String::as_str).collect();
    let b_refs: Vec<&str> = b_args.iter().map(String::as_str).collect();
    let mut a = ControllerProcess::spawn(cluster, &ns.name, &a_refs);
    let mut b = ControllerProcess::spawn(cluster, &ns.name, &b_refs);

    let leases: Api<Lease> = Api::namespaced(client.clone(), &ns.name);
    let holder = |leases: Api<Lease>| async move {
        leases
            .get_opt("phonefleet-controller")
            .await
            .ok()
            .flatten()
            .and_then(|l| l.spec)
            .and_then(|s| s.holder_identity)
    };
    let leader = support::eventually("a leader", WAIT, || {
        let leases = leases.clone();
        async move { holder(leases).await }
    })
    .await;
    fleet::wait_ready(cluster, &ns.name, "night-rollout").await;
    let (leader_proc, standby_proc, standby) = if leader == "replica-a" {
        (&mut a, &mut b, "replica-b")
    } else {
        (&mut b, &mut a, "replica-a")
    };
    assert!(
        leader_proc
            .log()
            .contains("leading: starting the controller")
    );
    assert!(
        !standby_proc
            .log()
            .contains("leading: starting the controller"),
        "only one replica acts:\n{}",
        standby_proc.log()
    );

    leader_proc.kill_9();
    let killed_at = Instant::now();
    support::eventually("the standby to take the Lease", WAIT, || {
        let leases = leases.clone();
        async move { (holder(leases).await.as_deref() == Some(standby)).then_some(()) }
    })
    .await;
    let failover = killed_at.elapsed();
    println!("failover took {failover:?} with a 4 s lease");
    assert!(
        failover < Duration::from_secs(4 + 2 + 2),
        "failover {failover:?}"
    );
    support::eventually("the new leader to start its controller", WAIT, || {
        let log = standby_proc.log();
        async move {
            log.contains("leading: starting the controller")
                .then_some(())
        }
    })
    .await;
    fleet::add_phone(&client, &ns.name, "berlin-shop", "00:0b:82:aa:bb:03").await;
    support::eventually("the new leader to render an edit", WAIT, || {
        let (client, ns) = (client.clone(), ns.name.clone());
        async move {
            fleet::served_files(&client, &ns, "night-rollout")
                .await
                .contains_key("cfg000b82aabb03.xml")
                .then_some(())
        }
    })
    .await;
    ns.delete().await;
}
