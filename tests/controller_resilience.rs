//! The controller under failure: API server restarts, kill -9 and restart, and two replicas
//! with leader election.
#![cfg(feature = "simulated-time")]

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use chrono::Utc;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ListParams, Patch, PatchParams};
use phonefleet::api::{PhoneSchedule, PhoneSite};
use phonefleet::children::LABEL_SCHEDULE;
use phonefleet::clock::Clock;
use support::controller::{ControllerProcess, RunningController};

const WAIT: Duration = Duration::from_secs(90);

fn example_fleet(namespace: &str) -> tempfile::NamedTempFile {
    let text = std::fs::read_to_string(support::repo_root().join("examples/fleet.yaml"))
        .expect("examples/fleet.yaml")
        .replace("namespace: voice", &format!("namespace: {namespace}"));
    let file = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(file.path(), text).expect("write fixture");
    file
}

async fn wait_ready(cluster: &support::TestCluster, ns: &str) {
    let (kubectl, kubeconfig, ns) = (
        cluster.bin_dir.join("kubectl"),
        cluster.kubeconfig.clone(),
        ns.to_owned(),
    );
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(kubectl)
            .env("KUBECONFIG", kubeconfig)
            .args(["wait", "--for=condition=Ready", "--timeout=90s", "-n", &ns])
            .arg("phoneschedule/night-rollout")
            .output()
            .expect("kubectl wait")
    })
    .await
    .expect("join");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

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

async fn add_phone(client: &kube::Client, ns: &str, mac: &str) {
    let sites: Api<PhoneSite> = Api::namespaced(client.clone(), ns);
    let mut site = sites.get("berlin-shop").await.expect("site");
    site.spec.phones.push(phonefleet::api::PhoneEntry {
        mac: mac.into(),
        model: "GXP2170".into(),
    });
    sites
        .patch(
            "berlin-shop",
            &PatchParams::apply("test").force(),
            &Patch::Apply(serde_json::json!({
                "apiVersion": "phonefleet.io/v1alpha1",
                "kind": "PhoneSite",
                "spec": site.spec,
            })),
        )
        .await
        .expect("edit site");
}

async fn serves(client: &kube::Client, ns: &str, file: &str) -> bool {
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    cms.list(&ListParams::default().labels(&format!("{LABEL_SCHEDULE}=night-rollout")))
        .await
        .map(|l| {
            l.items
                .iter()
                .any(|cm| cm.data.as_ref().is_some_and(|d| d.contains_key(file)))
        })
        .unwrap_or(false)
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
    let fixture = example_fleet(&ns.name);
    cluster.kubectl_ok(&["apply", "-f", fixture.path().to_str().expect("path")]);
    let controller = RunningController::start(
        client.clone(),
        &ns.name,
        Clock::scaled("2026-12-01T12:00:00Z".parse().expect("t"), Utc::now(), 1),
    );
    wait_ready(&cluster, &ns.name).await;

    cluster.restart_apiserver();
    let client = cluster.client().await;
    add_phone(&client, &ns.name, "00:0b:82:aa:bb:02").await;
    support::eventually(
        "the edit made after the restart to be rendered",
        WAIT,
        || {
            let (client, ns) = (client.clone(), ns.name.clone());
            async move {
                serves(&client, &ns, "cfg000b82aabb02.xml")
                    .await
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
    let fixture = example_fleet(&ns.name);
    cluster.kubectl_ok(&["apply", "-f", fixture.path().to_str().expect("path")]);

    let mut first = ControllerProcess::spawn(cluster, &ns.name, &[]);
    wait_ready(cluster, &ns.name).await;
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
    let fixture = example_fleet(&ns.name);
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
    wait_ready(cluster, &ns.name).await;
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
    add_phone(&client, &ns.name, "00:0b:82:aa:bb:03").await;
    support::eventually("the new leader to render an edit", WAIT, || {
        let (client, ns) = (client.clone(), ns.name.clone());
        async move {
            serves(&client, &ns, "cfg000b82aabb03.xml")
                .await
                .then_some(())
        }
    })
    .await;
    ns.delete().await;
}
