//! The chart on a real node: `helm install` with the image built here (scripts/build-image.sh,
//! loaded into the node's containerd, `pullPolicy: Never`), the Pod scheduled, started by the
//! kubelet through containerd and runc, probes passing; checked as it runs (uid, read-only root
//! filesystem, no capabilities, its own ServiceAccount), phones reaching the provisioning
//! Service through its NodePort, and uninstall leaving the CRDs and the user's objects.
//!
//! Needs root and the node's Debian packages (containerd, runc, containernetworking-plugins,
//! iptables, gcc): `support::node_cluster` starts the control plane with PHONEFLEET_NODE=1.

#[path = "helm/common.rs"]
mod common;
mod support;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::{chart_dir, helm_ok};
use serde_json::Value;
use support::TestCluster;
use support::simulation::SimulatorProcess;

const READY: Duration = Duration::from_secs(180);

/// Values of node-up.sh's `node/env` (NODE_IP, CONTAINERD_ADDRESS, …).
fn node_env(cluster: &TestCluster) -> BTreeMap<String, String> {
    let path = cluster.kubeconfig.parent().unwrap().join("node/env");
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{path:?}: {e}"))
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// Builds the image and loads it into the node's containerd, once per test process.
fn load_image(cluster: &TestCluster) {
    static LOADED: OnceLock<()> = OnceLock::new();
    LOADED.get_or_init(|| {
        let start = Instant::now();
        let out = Command::new("bash")
            .arg(support::repo_root().join("scripts/build-image.sh"))
            .output()
            .expect("run build-image.sh");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        let archive = stdout
            .lines()
            .last()
            .unwrap()
            .rsplit(' ')
            .next()
            .unwrap()
            .to_owned();
        let built = start.elapsed();
        let out = Command::new("bash")
            .arg(support::repo_root().join("tests/cluster/load-image.sh"))
            .arg(cluster.kubeconfig.parent().unwrap())
            .arg(&archive)
            .output()
            .expect("run load-image.sh");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        eprintln!(
            "image built in {built:.1?}, loaded in {:.1?}",
            start.elapsed() - built
        );
    });
}

/// A NodePort for this test process (30000-32767, kube-proxy's default range).
fn node_port(seq: u32) -> u16 {
    30000 + ((std::process::id() * 7 + seq * 131) % 2700) as u16
}

fn kubectl_json(cluster: &TestCluster, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.extend(["-o", "json"]);
    serde_json::from_str(&cluster.kubectl_ok(&all)).expect("kubectl -o json")
}

/// The release's pods.
fn pods(cluster: &TestCluster, ns: &str, release: &str) -> Vec<Value> {
    kubectl_json(
        cluster,
        &[
            "get",
            "pods",
            "-n",
            ns,
            "-l",
            &format!("app.kubernetes.io/instance={release}"),
        ],
    )["items"]
        .as_array()
        .unwrap()
        .clone()
}

fn is_ready(pod: &Value) -> bool {
    pod["metadata"]["deletionTimestamp"].is_null()
        && pod["status"]["conditions"].as_array().is_some_and(|c| {
            c.iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
}

/// Waits until `n` pods of the release are Ready (and no other pod of it exists).
async fn wait_pods_ready(cluster: &TestCluster, ns: &str, release: &str, n: usize) -> Vec<Value> {
    support::eventually(&format!("{n} Ready pod(s) of {release}"), READY, || async {
        let pods = pods(cluster, ns, release);
        (pods.len() == n && pods.iter().all(is_ready)).then_some(pods)
    })
    .await
}

/// User-Agent of the example fleet's phone 00:0b:82:a5:4d:ca.
const EXAMPLE_PHONE_AGENT: &str = "Grandstream Model HW GXP2170 SW 1.0.0.1 DevId 000b82a54dca";

/// HTTP GET over plain TCP as the example fleet's phone: (status, body).
fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, Vec<u8>)> {
    http_request(addr, path, Some(EXAMPLE_PHONE_AGENT))
}

/// HTTP GET with no User-Agent: the server serves a file without counting it as the phone's
/// check (its progress and version stay the phone's own).
fn http_get_anonymous(addr: SocketAddr, path: &str) -> Option<(u16, Vec<u8>)> {
    http_request(addr, path, None)
}

fn http_request(addr: SocketAddr, path: &str, agent: Option<&str>) -> Option<(u16, Vec<u8>)> {
    let mut conn = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    conn.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let agent = agent.map_or(String::new(), |a| format!("User-Agent: {a}\r\n"));
    write!(
        conn,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\n{agent}Connection: close\r\n\r\n"
    )
    .ok()?;
    let mut reply = Vec::new();
    conn.read_to_end(&mut reply).ok()?;
    let split = reply.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&reply[..split]);
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, reply[split + 4..].to_vec()))
}

/// The host PID of a running container, from the node's containerd.
fn container_pid(cluster: &TestCluster, container_id: &str) -> u32 {
    let env = node_env(cluster);
    let out = Command::new("ctr")
        .args([
            "--address",
            &env["CONTAINERD_ADDRESS"],
            "-n",
            "k8s.io",
            "tasks",
            "ls",
        ])
        .output()
        .expect("ctr tasks ls");
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.first() == Some(&container_id) && f.get(2) == Some(&"RUNNING"))
                .then(|| f[1].parse().unwrap())
        })
        .unwrap_or_else(|| panic!("no running task {container_id}:\n{text}"))
}

fn proc_status_field(pid: u32, field: &str) -> String {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

struct Release<'a> {
    cluster: &'a TestCluster,
    name: String,
    ns: String,
    uninstalled: bool,
}

impl Drop for Release<'_> {
    fn drop(&mut self) {
        if !self.uninstalled {
            let _ = common::helm(
                self.cluster,
                &["uninstall", &self.name, "-n", &self.ns, "--wait"],
            );
        }
    }
}

#[tokio::test]
async fn helm_install_runs_a_ready_hardened_pod_that_phones_reach_and_uninstall_cleans_up() {
    let cluster = support::node_cluster().await;
    cluster.apply_crds().await;
    load_image(cluster);
    let env = node_env(cluster);
    let node_ip = env["NODE_IP"].clone();
    let ns = cluster.namespace("node").await;
    let release = ns.name.replacen("node", "pf", 1);
    let port = node_port(0);
    let server_url = format!("http://{node_ip}:{port}");

    // The user's objects first: the example fleet, in the watched namespace.
    let _fleet = support::fleet::apply_example_fleet(cluster, &ns.name);

    let chart = chart_dir();
    let start = Instant::now();
    let mut rel = Release {
        cluster,
        name: release.clone(),
        ns: ns.name.clone(),
        uninstalled: false,
    };
    helm_ok(
        cluster,
        &[
            "install",
            &release,
            chart.to_str().unwrap(),
            "-n",
            &ns.name,
            "--set",
            "replicaCount=1",
            // The image is in the node's store; never pulled.
            "--set",
            "image.pullPolicy=Never",
            "--set",
            "provisioning.service.type=NodePort",
            "--set",
            &format!("provisioning.service.nodePort={port}"),
            "--set",
            &format!("controller.serverUrl={server_url}"),
        ],
    );
    let ready = wait_pods_ready(cluster, &ns.name, &release, 1).await;
    eprintln!("helm install -> pod Ready in {:.1?}", start.elapsed());
    let pod = &ready[0];
    let spec = &pod["spec"];
    assert_eq!(spec["nodeName"], env["NODE_NAME"].as_str());
    assert_eq!(
        spec["containers"][0]["image"],
        format!("phonefleet:{}", env!("CARGO_PKG_VERSION"))
    );
    let status = &pod["status"]["containerStatuses"][0];
    assert_eq!(status["ready"], true, "{status}");
    assert_eq!(status["restartCount"], 0, "{status}");

    // As it runs: uid/gid 65532, no capabilities, no new privileges, seccomp filtering, and a
    // read-only root filesystem (read off the process on the host).
    let id = status["containerID"]
        .as_str()
        .unwrap()
        .strip_prefix("containerd://")
        .expect("a containerd container");
    let pid = container_pid(cluster, id);
    assert_eq!(proc_status_field(pid, "Uid"), "65532 65532 65532 65532");
    assert_eq!(proc_status_field(pid, "Gid"), "65532 65532 65532 65532");
    assert_eq!(proc_status_field(pid, "CapEff"), "0000000000000000");
    assert_eq!(proc_status_field(pid, "CapPrm"), "0000000000000000");
    assert_eq!(proc_status_field(pid, "NoNewPrivs"), "1");
    assert_eq!(proc_status_field(pid, "Seccomp"), "2");
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap();
    assert!(exe.ends_with("usr/local/bin/phonefleet"), "{exe:?}");
    let mountinfo = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).unwrap();
    let root = mountinfo
        .lines()
        .find(|l| l.split(' ').nth(4) == Some("/"))
        .expect("a root mount");
    let options: Vec<&str> = root.split(' ').nth(5).unwrap().split(',').collect();
    assert!(
        options.contains(&"ro"),
        "root filesystem mounted {options:?}"
    );

    // Its only credentials: its own ServiceAccount's projected token (no kubeconfig, no other
    // Secret); with them it reconciles the fleet, which needs its RBAC.
    let sa = format!("{release}-phonefleet");
    assert_eq!(spec["serviceAccountName"], sa.as_str());
    let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    let environ: Vec<String> = environ
        .split(|b| *b == 0)
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .collect();
    assert!(
        !environ.iter().any(|v| v.starts_with("KUBECONFIG=")),
        "{environ:?}"
    );
    assert!(
        environ
            .iter()
            .any(|v| v == "KUBERNETES_SERVICE_HOST=10.96.0.1"),
        "{environ:?}"
    );
    for volume in spec["volumes"].as_array().unwrap() {
        assert!(volume["secret"].is_null(), "a Secret volume: {volume}");
        if let Some(sources) = volume["projected"]["sources"].as_array() {
            for s in sources {
                assert!(s["secret"].is_null(), "a projected Secret: {s}");
            }
        }
    }
    support::fleet::wait_ready(cluster, &ns.name, "night-rollout").await;

    // A phone outside the cluster reaches the provisioning Service through the NodePort and
    // gets exactly its rendered file.
    let client = cluster.client().await;
    let files = support::fleet::served_files(&client, &ns.name, "night-rollout").await;
    let name = "cfg000b82a54dca.xml";
    let expected = files
        .get(name)
        .unwrap_or_else(|| panic!("{name} in {:?}", files.keys()));
    let addr: SocketAddr = format!("{node_ip}:{port}").parse().unwrap();
    let (code, body) = support::eventually("the config through the NodePort", READY, || async {
        http_get(addr, &format!("/{name}")).filter(|(code, _)| *code == 200)
    })
    .await;
    assert_eq!(code, 200);
    assert_eq!(String::from_utf8_lossy(&body), expected.as_str());
    let args = spec["containers"][0]["args"].as_array().unwrap();
    assert!(
        args.iter()
            .any(|a| a == &Value::from(format!("--server-url={server_url}"))),
        "firmware URLs point phones at the NodePort: {args:?}"
    );

    // Uninstall: the pods stop (on the node too), the chart's objects go; the CRDs, the fleet
    // and the controller's status stay.
    let start = Instant::now();
    helm_ok(cluster, &["uninstall", &release, "-n", &ns.name, "--wait"]);
    rel.uninstalled = true;
    support::eventually("the release's pods to be gone", READY, || async {
        pods(cluster, &ns.name, &release).is_empty().then_some(())
    })
    .await;
    support::eventually("the container to stop on the node", READY, || async {
        (!std::path::Path::new(&format!("/proc/{pid}")).exists()).then_some(())
    })
    .await;
    eprintln!("helm uninstall -> pod gone in {:.1?}", start.elapsed());
    let left = cluster.kubectl_ok(&[
        "get",
        "all,configmaps,serviceaccounts,roles,rolebindings,poddisruptionbudgets,leases",
        "-n",
        &ns.name,
        "-l",
        &format!("app.kubernetes.io/instance={release}"),
        "-o",
        "name",
    ]);
    assert_eq!(left.trim(), "", "left by helm uninstall:\n{left}");
    let crds = cluster.kubectl_ok(&["get", "crd", "-o", "name"]);
    assert!(crds.contains("phoneschedules.phonefleet.io"), "{crds}");
    assert!(crds.contains("phonesites.phonefleet.io"), "{crds}");
    let sites = cluster.kubectl_ok(&["get", "phonesites", "-n", &ns.name, "-o", "name"]);
    assert_eq!(sites.lines().count(), 6, "{sites}");
    cluster.kubectl_ok(&["get", "phoneschedule", "night-rollout", "-n", &ns.name]);
    ns.delete().await;
}

/// Holder of the release's leader Lease.
fn leader(cluster: &TestCluster, ns: &str) -> Option<String> {
    let out = cluster.kubectl(&[
        "get",
        "lease",
        "phonefleet-controller",
        "-n",
        ns,
        "-o",
        "jsonpath={.spec.holderIdentity}",
    ]);
    let holder = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    (out.status.success() && !holder.is_empty()).then_some(holder)
}

#[tokio::test]
async fn upgraded_to_two_replicas_both_serve_phones_one_leads_and_a_deleted_leader_is_replaced() {
    let cluster = support::node_cluster().await;
    cluster.apply_crds().await;
    load_image(cluster);
    let env = node_env(cluster);
    let ns = cluster.namespace("node2").await;
    let release = ns.name.replacen("node2", "pf", 1);
    let port = node_port(1);
    let server_url = format!("http://{}:{port}", env["NODE_IP"]);
    let _fleet = support::fleet::apply_example_fleet(cluster, &ns.name);
    let chart = chart_dir();
    let _rel = Release {
        cluster,
        name: release.clone(),
        ns: ns.name.clone(),
        uninstalled: false,
    };
    helm_ok(
        cluster,
        &[
            "install",
            &release,
            chart.to_str().unwrap(),
            "-n",
            &ns.name,
            "--set",
            "replicaCount=1",
            "--set",
            "image.pullPolicy=Never",
            "--set",
            "provisioning.service.type=NodePort",
            "--set",
            &format!("provisioning.service.nodePort={port}"),
            "--set",
            &format!("controller.serverUrl={server_url}"),
        ],
    );
    wait_pods_ready(cluster, &ns.name, &release, 1).await;
    support::fleet::wait_ready(cluster, &ns.name, "night-rollout").await;

    let start = Instant::now();
    helm_ok(
        cluster,
        &[
            "upgrade",
            &release,
            chart.to_str().unwrap(),
            "-n",
            &ns.name,
            "--reuse-values",
            "--set",
            "replicaCount=2",
        ],
    );
    let pods = wait_pods_ready(cluster, &ns.name, &release, 2).await;
    eprintln!(
        "helm upgrade to 2 replicas -> both Ready in {:.1?}",
        start.elapsed()
    );
    let names: Vec<String> = pods
        .iter()
        .map(|p| p["metadata"]["name"].as_str().unwrap().to_owned())
        .collect();

    // Both serve phones (straight to each pod's IP on the node's pod network): the same file.
    let client = cluster.client().await;
    let files = support::fleet::served_files(&client, &ns.name, "night-rollout").await;
    let name = "cfg000b82a54dca.xml";
    let expected = files.get(name).expect("a rendered file").clone();
    for pod in &pods {
        let ip = pod["status"]["podIP"].as_str().unwrap();
        let addr: SocketAddr = format!("{ip}:8080").parse().unwrap();
        let (_, body) = support::eventually(&format!("{name} from pod {ip}"), READY, || async {
            http_get(addr, &format!("/{name}")).filter(|(code, _)| *code == 200)
        })
        .await;
        assert_eq!(String::from_utf8_lossy(&body), expected, "pod {ip}");
    }
    // One leads.
    let first = support::eventually("a leader among the pods", READY, || async {
        leader(cluster, &ns.name).filter(|h| names.contains(h))
    })
    .await;

    // The leader's pod deleted: the Deployment replaces it and another pod takes the Lease;
    // phones are served through the Service all along.
    let start = Instant::now();
    cluster.kubectl_ok(&["delete", "pod", &first, "-n", &ns.name, "--wait=false"]);
    let addr: SocketAddr = format!("{}:{port}", env["NODE_IP"]).parse().unwrap();
    let mut served = 0;
    let next = support::eventually("another pod to lead", READY, || {
        if http_get(addr, &format!("/{name}")).is_some_and(|(c, _)| c == 200) {
            served += 1;
        }
        let holder = leader(cluster, &ns.name).filter(|h| *h != first);
        async move { holder }
    })
    .await;
    eprintln!(
        "leader pod deleted -> {next} leads after {:.1?}",
        start.elapsed()
    );
    // Requests that kube-proxy still sent to the deleted pod fail until it drops the endpoint
    // (a phone retries at its next check); the Service must serve again without waiting for a
    // new pod.
    if served == 0 {
        support::eventually(
            "a config served through the Service after the hand-over",
            READY,
            || async {
                http_get(addr, &format!("/{name}"))
                    .filter(|(code, _)| *code == 200)
                    .map(|_| ())
            },
        )
        .await;
    }
    let pods = wait_pods_ready(cluster, &ns.name, &release, 2).await;
    assert!(
        pods.iter().any(|p| p["metadata"]["name"] == next.as_str()),
        "the new leader {next} is one of the release's Ready pods"
    );
    // Still reconciling: a new phone gets its file from the new leader.
    support::fleet::add_phone(&client, &ns.name, "paris-hq", "00:0b:82:00:99:01").await;
    support::eventually("the added phone's file", READY, || async {
        support::fleet::served_files(&client, &ns.name, "night-rollout")
            .await
            .contains_key("cfg000b82009901.xml")
            .then_some(())
    })
    .await;
    helm_ok(cluster, &["uninstall", &release, "-n", &ns.name, "--wait"]);
    ns.delete().await;
}

const ROLLOUT_SITES: [(&str, u32); 3] = [("north", 30), ("south", 40), ("west", 50)];
const PHONES_PER_SITE: usize = 100;

/// A fleet that rolls out in a few real minutes (the release image has no compressed clock):
/// phones check every minute, one-minute download slots, one stage. The phones are XSTIM
/// (`family: xstim`): minute-level windows; Grandstream's whole-hour slots and daily checks
/// would need hours of real time (docs/planner.md).
fn rollout_fleet(namespace: &str) -> String {
    let mut out = format!(
        r#"apiVersion: phonefleet.io/v1alpha1
kind: PhoneSchedule
metadata: {{name: now, namespace: {namespace}}}
spec:
  siteSelector: {{matchLabels: {{rollout: "yes"}}}}
  provisioning:
    powerOn: true
    repeatedly: {{enabled: true, everyMinutes: 1}}
    weekly: {{enabled: true, window: {{start: "00:00", end: "00:00"}}, days: [Sun, Mon, Tue, Wed, Thu, Fri, Sat]}}
  firmware: {{version: 2.0.0, file: gxp2170fw.bin, sizeBytes: 20480, models: [GXP2170]}}
  rollout:
    downloadMinutes: 1
    checkSpreadMinutes: 1
    stages: [{{name: everyone, percent: 100}}]
"#
    );
    for (i, (site, cap)) in ROLLOUT_SITES.iter().enumerate() {
        out.push_str(&format!(
            "---\napiVersion: phonefleet.io/v1alpha1\nkind: PhoneSite\nmetadata: {{name: {site}, namespace: {namespace}, labels: {{rollout: \"yes\"}}}}\nspec:\n  timeZone: UTC\n  maxConcurrentDownloads: {cap}\n  phones:\n"
        ));
        for p in 0..PHONES_PER_SITE {
            out.push_str(&format!(
                "  - {{mac: '00:0b:82:{i:02x}:{:02x}:{:02x}', model: GXP2170, family: xstim}}\n",
                p / 256,
                p % 256
            ));
        }
    }
    out
}

#[tokio::test]
async fn phones_outside_the_cluster_complete_a_rollout_through_the_node_port_across_a_leader_deletion()
 {
    let cluster = support::node_cluster().await;
    cluster.apply_crds().await;
    load_image(cluster);
    let env = node_env(cluster);
    let ns = cluster.namespace("node3").await;
    let release = ns.name.replacen("node3", "pf", 1);
    let port = node_port(2);
    let server_url = format!("http://{}:{port}", env["NODE_IP"]);

    // Firmware from a ConfigMap (the chart's `firmware.source: configMap`).
    let dir = tempfile::tempdir().unwrap();
    let fw = dir.path().join("gxp2170fw.bin");
    std::fs::write(&fw, phonefleet::simulator::firmware_image("2.0.0", 20480)).unwrap();
    cluster.kubectl_ok(&[
        "create",
        "configmap",
        "firmware",
        "-n",
        &ns.name,
        &format!("--from-file={}", fw.display()),
    ]);
    let fleet = dir.path().join("fleet.yaml");
    std::fs::write(&fleet, rollout_fleet(&ns.name)).unwrap();
    cluster.kubectl_ok(&["apply", "-f", fleet.to_str().unwrap()]);
    let chart = chart_dir();
    let _rel = Release {
        cluster,
        name: release.clone(),
        ns: ns.name.clone(),
        uninstalled: false,
    };
    helm_ok(
        cluster,
        &[
            "install",
            &release,
            chart.to_str().unwrap(),
            "-n",
            &ns.name,
            "--set",
            "replicaCount=2",
            "--set",
            "image.pullPolicy=Never",
            "--set",
            "provisioning.service.type=NodePort",
            "--set",
            &format!("provisioning.service.nodePort={port}"),
            "--set",
            &format!("controller.serverUrl={server_url}"),
            "--set",
            "firmware.source=configMap",
            "--set",
            "firmware.configMap.name=firmware",
            "--set",
            "provisioning.tokenLeaseSeconds=5",
        ],
    );
    wait_pods_ready(cluster, &ns.name, &release, 2).await;
    support::fleet::wait_ready(cluster, &ns.name, "now").await;

    // Before any phone boots, the path it takes must be live: every replica serves the
    // phones' files (its index has the rendered ConfigMaps) and kube-proxy routes the NodePort
    // to a replica. A phone's power-on check is its only one until its file tells it when to
    // check again, so a phone that boots while the Service still has no endpoint (kube-proxy
    // rejects the connection) or reaches a replica whose index lags (404) never checks again.
    let client = cluster.client().await;
    let files = support::fleet::served_files(&client, &ns.name, "now").await;
    let pod_ips: Vec<String> = pods(cluster, &ns.name, &release)
        .iter()
        .map(|p| p["status"]["podIP"].as_str().unwrap().to_owned())
        .collect();
    for (i, _) in ROLLOUT_SITES.iter().enumerate() {
        let name = format!("cfg000b82{i:02x}0000.xml");
        let expected = files
            .get(&name)
            .unwrap_or_else(|| panic!("{name} in {:?}", files.keys()));
        for ip in &pod_ips {
            let addr: SocketAddr = format!("{ip}:8080").parse().unwrap();
            let (_, body) =
                support::eventually(&format!("{name} from pod {ip}"), READY, || async {
                    http_get_anonymous(addr, &format!("/{name}")).filter(|(c, _)| *c == 200)
                })
                .await;
            assert_eq!(
                String::from_utf8_lossy(&body),
                expected.as_str(),
                "pod {ip}"
            );
        }
    }
    let node_port_addr: SocketAddr = format!("{}:{port}", env["NODE_IP"]).parse().unwrap();
    support::eventually("the NodePort to reach a replica", READY, || async {
        http_get_anonymous(node_port_addr, "/healthz").filter(|(c, _)| *c == 200)
    })
    .await;

    // The phones, on the real clock, through the NodePort; killed if the test fails.
    let start = Instant::now();
    let sim_args: Vec<String> = [
        "--hours",
        "0.25",
        "--until-settled",
        "--seed",
        "5",
        "--reboot-minutes",
        "1",
    ]
    .map(String::from)
    .to_vec();
    let mut sim = SimulatorProcess::start(&cluster.kubeconfig, &ns.name, &server_url, &sim_args);

    // Mid-rollout (some phones upgraded, not all), the leader's pod is deleted.
    let total = ROLLOUT_SITES.len() * PHONES_PER_SITE;
    let progress = |cluster: &TestCluster| {
        let out = cluster.kubectl(&[
            "get",
            "phoneschedule/now",
            "-n",
            &ns.name,
            "-o",
            "jsonpath={.status.progress}",
        ]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.split_once('/')
            .and_then(|(done, _)| done.parse::<usize>().ok())
            .unwrap_or(0)
    };
    let leader_pod = support::eventually("phones upgrading", Duration::from_secs(600), || {
        let done = progress(cluster);
        let holder = leader(cluster, &ns.name);
        async move { holder.filter(|_| done > 0 && done < total) }
    })
    .await;
    eprintln!(
        "deleting leader {leader_pod} at {}/{total} after {:.1?}",
        progress(cluster),
        start.elapsed()
    );
    cluster.kubectl_ok(&["delete", "pod", &leader_pod, "-n", &ns.name, "--wait=false"]);
    support::eventually("another pod to lead", READY, || {
        let holder = leader(cluster, &ns.name).filter(|h| *h != leader_pod);
        async move { holder }
    })
    .await;

    // The simulator ends by itself once every phone has reported the new version (or after
    // its quarter of an hour).
    while sim.running() {
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let summary = sim.finished();
    eprintln!("rollout settled after {:.1?}", start.elapsed());
    for (site, cap) in ROLLOUT_SITES {
        let s = &summary["sites"][site];
        assert_eq!(s["phones"], PHONES_PER_SITE, "{site}: {s}");
        assert_eq!(
            s["upgraded"], PHONES_PER_SITE,
            "{site}: every phone upgraded: {s}"
        );
        assert_eq!(s["failed"], 0, "{site}: {s}");
        assert!(
            s["peakConcurrentDownloads"].as_u64().unwrap() <= u64::from(cap),
            "{site}: over its cap of {cap}: {s}"
        );
        assert_eq!(
            s["downloadsCompleted"], PHONES_PER_SITE,
            "{site}: no phone downloaded twice: {s}"
        );
    }
    // The controller (the new leader) reports it from the progress the servers wrote.
    support::eventually(
        "the schedule to report every phone upgraded",
        READY,
        || async { (progress(cluster) == total).then_some(()) },
    )
    .await;
    helm_ok(cluster, &["uninstall", &release, "-n", &ns.name, "--wait"]);
    ns.delete().await;
}
