//! `phonefleet run` wires the metrics in: two leader-elected replicas on the real control plane
//! each serve `/metrics`, `/healthz` and `/readyz`; exactly one says `phonefleet_leader 1`, and
//! when it is killed the standby says so within the lease (what `PhonefleetNotLeading` reads).
#![cfg(feature = "simulated-time")]

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use support::controller::ControllerProcess;

const WAIT: Duration = Duration::from_secs(60);

/// The metrics address a replica logged (it listens on port 0).
fn metrics_addr(log: &str) -> Option<SocketAddr> {
    let line = log
        .lines()
        .find(|l| l.contains("metrics endpoint listening"))?;
    let start = line.find("Some(")? + "Some(".len();
    let end = start + line[start..].find(')')?;
    line[start..end].parse().ok()
}

/// Status and body of a plain HTTP GET.
fn get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned())?;
    Some((status, body))
}

/// The value of the unlabelled `phonefleet_leader` sample, once served.
fn leader_value(addr: SocketAddr) -> Option<u8> {
    let (200, body) = get(addr, "/metrics")? else {
        return None;
    };
    body.lines()
        .find_map(|l| l.strip_prefix("phonefleet_leader "))
        .and_then(|v| v.trim().parse().ok())
}

fn replica(cluster: &support::TestCluster, ns: &str, identity: &str) -> ControllerProcess {
    ControllerProcess::spawn(
        cluster,
        ns,
        &[
            "--leader-elect",
            "--lease-namespace",
            ns,
            "--lease-duration-seconds",
            "6",
            "--identity",
            identity,
        ],
    )
}

async fn addr_of(p: &ControllerProcess) -> SocketAddr {
    support::eventually("the metrics endpoint to be logged", WAIT, || {
        let log = p.log();
        async move { metrics_addr(&log) }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_replica_of_two_reports_leading_and_the_standby_takes_over() {
    let cluster = support::cluster().await;
    cluster.apply_crds().await;
    let ns = cluster.namespace("metrics-leader").await;
    let mut a = replica(cluster, &ns.name, "replica-a");
    let b = replica(cluster, &ns.name, "replica-b");
    let (addr_a, addr_b) = (addr_of(&a).await, addr_of(&b).await);

    for addr in [addr_a, addr_b] {
        assert_eq!(get(addr, "/healthz").map(|r| r.0), Some(200));
        support::eventually("/readyz to answer 200", WAIT, || async move {
            get(addr, "/readyz").filter(|r| r.0 == 200).map(|_| ())
        })
        .await;
    }
    let (first, second) = support::eventually("exactly one leader", WAIT, || async move {
        match (leader_value(addr_a), leader_value(addr_b)) {
            (Some(x), Some(y)) if x + y == 1 => Some((x, y)),
            _ => None,
        }
    })
    .await;
    // The standby still serves its metrics and is ready (it serves phones).
    let standby = if first == 1 { addr_b } else { addr_a };
    assert_eq!(second + first, 1);
    assert_eq!(get(standby, "/readyz").map(|r| r.0), Some(200));

    if first == 1 {
        a.kill_9();
    } else {
        drop(b);
    }
    support::eventually("the standby to report leading", WAIT, || async move {
        (leader_value(standby) == Some(1)).then_some(())
    })
    .await;
}
