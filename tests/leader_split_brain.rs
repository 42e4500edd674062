//! Leader election when the leader's connection to the API server hangs (issue #12 item 8):
//! two replicas compete for one Lease on the real API server, the leader through a TCP proxy
//! that stalls. At no instant may both act as leader.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use phonefleet::controller::leader::{self, LeaseConfig};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use support::proxy::StallingProxy;

fn config(namespace: &str, identity: &str) -> LeaseConfig {
    // client-go's ratios on a short lease: 3 s lease, 2 s renew deadline, 0.4 s retry period.
    LeaseConfig::with_ratios(
        namespace.into(),
        "phonefleet-controller".into(),
        identity.into(),
        Duration::from_secs(3),
    )
}

async fn until(what: &str, rx: &watch::Receiver<bool>, want: bool) {
    let mut rx = rx.clone();
    tokio::time::timeout(Duration::from_secs(30), rx.wait_for(|v| *v == want))
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
        .expect("leader task alive");
}

#[tokio::test]
async fn a_leader_whose_renewals_hang_steps_down_before_a_standby_takes_over() {
    let cluster = support::cluster().await;
    let ns = cluster.namespace("split-brain").await;
    let upstream = StallingProxy::upstream_of(&cluster.kubeconfig).await;
    let proxy = StallingProxy::start(upstream).await;
    let stop = CancellationToken::new();

    let (a_tx, a) = watch::channel(false);
    let a_task = tokio::spawn(leader::run(
        proxy.client(&cluster.kubeconfig).await,
        config(&ns.name, "replica-a"),
        a_tx,
        stop.clone().cancelled_owned(),
    ));
    until("replica a to lead", &a, true).await;
    let (b_tx, b) = watch::channel(false);
    let b_task = tokio::spawn(leader::run(
        cluster.client().await,
        config(&ns.name, "replica-b"),
        b_tx,
        stop.clone().cancelled_owned(),
    ));

    // Watch both flags for the whole test: any instant with both leading is a split brain.
    let both = Arc::new(AtomicBool::new(false));
    let monitor = {
        let (mut a, mut b, both) = (a.clone(), b.clone(), both.clone());
        tokio::spawn(async move {
            loop {
                if *a.borrow_and_update() && *b.borrow_and_update() {
                    both.store(true, Ordering::SeqCst);
                }
                tokio::select! {
                    r = a.changed() => if r.is_err() { return },
                    r = b.changed() => if r.is_err() { return },
                }
            }
        })
    };

    // Replica a's API connection hangs: its renewals neither succeed nor fail.
    proxy.stall();
    until("replica b to take over", &b, true).await;
    assert!(!*a.borrow(), "replica a must have stepped down");
    proxy.resume();
    assert!(
        !both.load(Ordering::SeqCst),
        "both replicas led at the same instant"
    );

    stop.cancel();
    let _ = a_task.await;
    let _ = b_task.await;
    monitor.abort();
    ns.delete().await;
}
