//! A power-on storm against a process with few file descriptors (issue #12 item 5): the
//! provisioning server and the metrics endpoint run in a child process under `ulimit -n 128`
//! (this test binary re-run with an environment variable), and the test floods the
//! provisioning port with connections that never send a request.

mod support;

use std::process::Stdio;
use std::time::Duration;

use kube::config::{KubeConfigOptions, Kubeconfig};
use phonefleet::clock::Clock;
use phonefleet::metrics::{Metrics, endpoint::Endpoint};
use phonefleet::server::{self, ServerStats};
use tokio::io::{AsyncBufReadExt, BufReader};

use support::provisioning::{OLD, firmware_path, fixture, get, http, mac, phones_in_slot, ua};

/// Set in the child: `<kubeconfig> <namespace> <firmware dir>`.
const CHILD: &str = "PHONEFLEET_EXHAUSTION_CHILD";
/// The child's descriptor limit (soft and hard).
const NOFILE: u32 = 128;
/// Connections in the flood: well over the limit, under the accept queue (1024).
const FLOOD: usize = 400;

/// The child's part (does nothing in a normal run): a provisioning server and a metrics
/// endpoint; prints `PORTS <provisioning> <metrics>` once ready, runs until stdin closes.
#[tokio::test]
async fn child_serves_under_a_low_descriptor_limit() {
    let Ok(spec) = std::env::var(CHILD) else {
        return;
    };
    let parts: Vec<&str> = spec.split(' ').collect();
    let [kubeconfig, namespace, firmware_dir] = parts[..] else {
        panic!("{CHILD}={spec}: expected three words");
    };
    let kubeconfig = Kubeconfig::read_from(kubeconfig).expect("read kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("client config");
    let client = kube::Client::try_from(config).expect("client");
    let stats = ServerStats::new();
    let config = server::ServerConfig {
        listen: ([127, 0, 0, 1], 0).into(),
        scope: phonefleet::scope::WatchScope::namespace(namespace.to_owned()),
        firmware_dir: Some(firmware_dir.into()),
        replica_id: "flooded".into(),
        // Flood connections stay open for the whole test (until the 60 s idle timeout).
        header_read_timeout: None,
        ..server::ServerConfig::default()
    };
    let srv = server::start_with_stats(config, client, Clock::System, stats.clone())
        .await
        .expect("server starts");
    let metrics = Metrics::new(Some(stats), false).expect("metrics");
    let endpoint = Endpoint::bind(([127, 0, 0, 1], 0).into(), metrics)
        .await
        .expect("metrics endpoint");
    let metrics_addr = endpoint.local_addr().expect("metrics address");
    tokio::spawn(endpoint.serve(std::future::pending()));
    support::eventually("the index to sync", Duration::from_secs(30), || {
        let ready = srv.is_ready();
        async move { ready.then_some(()) }
    })
    .await;
    println!("PORTS {} {}", srv.local_addr(), metrics_addr);
    tokio::task::spawn_blocking(|| {
        use std::io::Read;
        let mut buf = [0u8; 64];
        while std::io::stdin().read(&mut buf).is_ok_and(|n| n > 0) {}
    })
    .await
    .expect("stdin watcher");
    srv.abort();
}

#[tokio::test]
async fn a_connection_flood_under_a_low_descriptor_limit_leaves_health_and_downloads_working() {
    if std::env::var_os(CHILD).is_some() {
        return;
    }
    let f = fixture("exhaust", 3, &phones_in_slot(1), 4096).await;
    let cluster = support::cluster().await;
    let exe = std::env::current_exe().expect("test binary");
    let mut child = tokio::process::Command::new("bash")
        .arg("-c")
        .arg(format!("ulimit -n {NOFILE} && exec \"$0\" \"$@\""))
        .arg(exe)
        .args([
            "--exact",
            "child_serves_under_a_low_descriptor_limit",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(
            CHILD,
            format!(
                "{} {} {}",
                cluster.kubeconfig.display(),
                f.ns.name,
                f.firmware_dir.path().display()
            ),
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start the child");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let (prov, metrics) = loop {
        let line = lines
            .next_line()
            .await
            .expect("child output")
            .expect("the child printed its ports before ending");
        // libtest prints the test's name on the same line first.
        if let Some((_, ports)) = line.split_once("PORTS ") {
            let (a, b) = ports.split_once(' ').expect("two addresses");
            break (
                a.parse::<std::net::SocketAddr>().expect("address"),
                b.parse::<std::net::SocketAddr>().expect("address"),
            );
        }
    };

    // The storm: connections that never send a request, held open.
    let mut flood = Vec::new();
    for _ in 0..FLOOD {
        match tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(prov))
            .await
        {
            Ok(Ok(conn)) => flood.push(conn),
            _ => break,
        }
    }
    assert!(
        flood.len() > NOFILE as usize,
        "the flood ({}) exceeds the descriptor limit",
        flood.len()
    );
    let http = http();
    support::eventually(
        "/healthz to answer during the flood",
        Duration::from_secs(30),
        || {
            let http = http.clone();
            async move {
                let reply = tokio::time::timeout(
                    Duration::from_secs(2),
                    get(&http, metrics, "/healthz", &[]),
                )
                .await
                .ok()?;
                (reply.status == 200).then_some(())
            }
        },
    )
    .await;

    // Once the storm passes, phones download again (the API client still works).
    drop(flood);
    let agent = ua(mac(0), OLD);
    support::eventually(
        "a firmware download after the flood",
        Duration::from_secs(60),
        || {
            let (http, agent) = (http.clone(), agent.clone());
            async move {
                let reply = tokio::time::timeout(
                    Duration::from_secs(5),
                    get(&http, prov, &firmware_path(), &[("user-agent", &agent)]),
                )
                .await
                .ok()?;
                (reply.status == 200).then_some(reply.body.len())
            }
        },
    )
    .await;
    drop(child.stdin.take());
    let _ = tokio::time::timeout(Duration::from_secs(10), child.wait()).await;
    f.ns.delete().await;
}
