//! The chart's RBAC is sufficient and minimal, shown with its own ServiceAccount: the chart is
//! installed with helm, a token for its ServiceAccount comes from the TokenRequest API, and
//! `phonefleet run` (out of cluster: the control plane has no nodes) runs with that token and
//! the arguments the chart's Deployment gives it. A small fleet is rolled out to completion
//! through the provisioning server by the phone simulator on a compressed clock. Then the same
//! identity is refused Secrets, Pods, other namespaces and the CRDs.
#![cfg(feature = "simulated-time")]

#[path = "helm/common.rs"]
mod common;
mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use chrono::{SecondsFormat, Utc};
use common::{chart_dir, helm_ok, parse_documents};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(90);
/// Simulated start: a Monday 00:00 UTC, inside the schedule's 00:00-06:00 window.
const ORIGIN: &str = "2026-01-05T00:00:00Z";
/// Two simulated minutes per real second: the plan's 33 minutes take about 17 s, with room for
/// a loaded machine (a phone that misses its slot only gets another one much later).
const SCALE: &str = "120";

fn fleet(namespace: &str) -> String {
    format!(
        r#"apiVersion: phonefleet.io/v1alpha1
kind: PhoneSchedule
metadata:
  name: night
  namespace: {namespace}
spec:
  siteSelector: {{}}
  provisioning:
    powerOn: true
    # Repeated checks carry a slot to the phones within ten minutes; without them a phone
    # hears of a slot only at its one check in a window occurrence, and the plan waits for
    # that occurrence to end (docs/planner.md, "Announcement lead").
    repeatedly: {{enabled: true, everyMinutes: 10}}
    weekly:
      enabled: true
      intervalWeeks: 1
      inactivityMinutes: 0
      window: {{start: "00:00", end: "06:00"}}
      days: [Sun, Mon, Tue, Wed, Thu, Fri, Sat]
    flexible: {{enabled: false}}
  firmware:
    version: 2.0.0
    file: gxp2170fw.bin
    sizeBytes: 20480
    models: [GXP2170]
  rollout:
    stages:
      - {{name: everyone, percent: 100}}
---
# XSTIM phones (minute-level windows) keep this RBAC test's night short; whole-hour
# Grandstream planning is covered by e2e_rollout.
apiVersion: phonefleet.io/v1alpha1
kind: PhoneSite
metadata:
  name: lab
  namespace: {namespace}
spec:
  timeZone: UTC
  maxConcurrentDownloads: 2
  uplinkMbps: 100
  phones:
    - {{mac: "00:0b:82:00:00:01", model: GXP2170, family: xstim}}
    - {{mac: "00:0b:82:00:00:02", model: GXP2170, family: xstim}}
    - {{mac: "00:0b:82:00:00:03", model: GXP2170, family: xstim}}
    - {{mac: "00:0b:82:00:00:04", model: GXP2170, family: xstim}}
"#
    )
}

/// A kubeconfig for `token`, with the server and CA of the admin kubeconfig.
fn token_kubeconfig(admin: &Path, token: &str, namespace: &str, out: &Path) {
    let text = std::fs::read_to_string(admin).expect("admin kubeconfig");
    let admin: Value = serde_yaml_ng::from_str(&text).expect("kubeconfig parses");
    let cluster = &admin["clusters"][0]["cluster"];
    let server = cluster["server"].as_str().expect("server");
    let ca = cluster["certificate-authority"]
        .as_str()
        .expect("certificate-authority file");
    let config = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "test", "cluster": {"server": server, "certificate-authority": ca}}],
        "users": [{"name": "phonefleet", "user": {"token": token}}],
        "contexts": [{"name": "phonefleet", "context": {"cluster": "test", "user": "phonefleet", "namespace": namespace}}],
        "current-context": "phonefleet",
    });
    std::fs::write(out, serde_yaml_ng::to_string(&config).unwrap()).expect("write kubeconfig");
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// Status code of `GET path` on `addr`, if it answered.
fn http_status(addr: SocketAddr, path: &str) -> Option<u16> {
    let mut conn = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    conn.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        conn,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut reply = String::new();
    conn.read_to_string(&mut reply).ok()?;
    reply.split_whitespace().nth(1)?.parse().ok()
}

/// `phonefleet run` killed when dropped.
struct Controller {
    child: Child,
    log: PathBuf,
}

impl Controller {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// "yes" or "no" from `kubectl auth can-i` as `user` (impersonated by the admin).
fn can_i(cluster: &support::TestCluster, user: &str, args: &[&str]) -> String {
    let mut all = vec!["auth", "can-i", "--as", user];
    all.extend_from_slice(args);
    let out = cluster.kubectl(&all);
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[tokio::test]
async fn the_charts_service_account_runs_a_rollout_to_completion_and_nothing_more() {
    let cluster = support::cluster().await;
    cluster.apply_crds().await;
    let ns = cluster.namespace("helm-rbac").await;
    let other = cluster.namespace("helm-rbac-other").await;
    let release = ns.name.replacen("helm-rbac", "pf", 1);
    let sa = format!("{release}-phonefleet");
    let user = format!("system:serviceaccount:{}:{sa}", ns.name);

    // The chart as an operator installs it: one namespace, leader election on.
    let chart = chart_dir();
    let _guard = common::ReleaseGuard {
        cluster,
        release: release.clone(),
        namespace: ns.name.clone(),
    };
    // Without the aggregated ClusterRoles: they would change the built-in roles under
    // `users_of_the_builtin_edit_and_view_roles_can_use_the_crds`, which runs beside it.
    helm_ok(
        cluster,
        &[
            "install",
            &release,
            chart.to_str().unwrap(),
            "-n",
            &ns.name,
            "--set",
            "rbac.aggregateToDefaultRoles=false",
        ],
    );
    let manifest = helm_ok(cluster, &["get", "manifest", &release, "-n", &ns.name]);
    let objects = parse_documents(&manifest);
    let deployment = common::one(&objects, "Deployment");
    let chart_args: Vec<String> = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_owned())
        .collect();

    // A token for the chart's ServiceAccount from the TokenRequest API.
    let token = cluster.kubectl_ok(&["create", "token", &sa, "-n", &ns.name, "--duration=1h"]);
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("sa.kubeconfig");
    token_kubeconfig(&cluster.kubeconfig, token.trim(), &ns.name, &kubeconfig);
    let as_sa = |args: &[&str]| {
        cluster
            .tool("kubectl")
            .env("KUBECONFIG", &kubeconfig)
            .args(args)
            .output()
            .expect("kubectl")
    };
    let whoami = as_sa(&[
        "auth",
        "whoami",
        "-o",
        "jsonpath={.status.userInfo.username}",
    ]);
    assert_eq!(String::from_utf8_lossy(&whoami.stdout), user);

    // Firmware the simulated phones flash (their image name comes from their model).
    let firmware = dir.path().join("firmware");
    std::fs::create_dir_all(&firmware).unwrap();
    std::fs::write(
        firmware.join("gxp2170fw.bin"),
        phonefleet::simulator::firmware_image("2.0.0", 20 * 1024),
    )
    .unwrap();

    // `phonefleet run` with the chart's arguments; what differs out of cluster is where it
    // listens, the URL phones use, the firmware directory, and the downward API's variables.
    let port = free_port();
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let server_url = format!("http://{addr}");
    let local = [
        "--server-url",
        "--provisioning-listen",
        "--metrics-listen",
        "--firmware-dir",
    ];
    let mut run_args: Vec<String> = chart_args
        .into_iter()
        .filter(|a| !local.iter().any(|l| a.starts_with(l)))
        .collect();
    assert_eq!(run_args[0], "run");
    assert!(run_args.contains(&format!("--namespace={}", ns.name)));
    assert!(run_args.contains(&"--leader-elect".to_owned()));
    run_args.extend([
        format!("--server-url={server_url}"),
        format!("--provisioning-listen={addr}"),
        format!("--firmware-dir={}", firmware.display()),
    ]);
    // The probes' endpoints, on the port the chart points them at.
    let metrics: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    run_args.push(format!("--metrics-listen={metrics}"));
    let real_origin = Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true);
    let clock = [
        format!("--time-origin={ORIGIN}"),
        format!("--time-scale={SCALE}"),
        format!("--time-real-origin={real_origin}"),
    ];
    let log = dir.path().join("run.log");
    let file = std::fs::File::create(&log).unwrap();
    let controller = Controller {
        child: Command::new(env!("CARGO_BIN_EXE_phonefleet"))
            .args(&run_args)
            .args(&clock)
            .env("KUBECONFIG", &kubeconfig)
            .env("POD_NAMESPACE", &ns.name)
            .env("POD_NAME", format!("{release}-0"))
            .env("RUST_LOG", "info,kube=warn")
            .env("NO_COLOR", "1")
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .expect("spawn phonefleet run"),
        log,
    };
    support::eventually("the provisioning server to be ready", WAIT, || async {
        (http_status(addr, "/readyz") == Some(200)).then_some(())
    })
    .await;
    for path in ["/healthz", "/readyz", "/metrics"] {
        support::eventually(&format!("{path} on the metrics port"), WAIT, || async {
            (http_status(metrics, path) == Some(200)).then_some(())
        })
        .await;
    }

    // A fleet, applied by the operator (admin); the controller acts with the chart's rights.
    let fleet_file = dir.path().join("fleet.yaml");
    std::fs::write(&fleet_file, fleet(&ns.name)).unwrap();
    cluster.kubectl_ok(&["apply", "-f", fleet_file.to_str().unwrap()]);
    let (kubectl, admin, namespace) = (
        cluster.bin_dir.join("kubectl"),
        cluster.kubeconfig.clone(),
        ns.name.clone(),
    );
    let wait = tokio::task::spawn_blocking(move || {
        Command::new(kubectl)
            .env("KUBECONFIG", admin)
            .args([
                "wait",
                "--for=condition=Ready",
                "--timeout=90s",
                "-n",
                &namespace,
            ])
            .arg("phoneschedule/night")
            .output()
            .expect("kubectl wait")
    })
    .await
    .unwrap();
    assert!(
        wait.status.success(),
        "schedule not Ready: {}\ncontroller log:\n{}",
        String::from_utf8_lossy(&wait.stderr),
        controller.log()
    );
    let configs = cluster.kubectl_ok(&[
        "get",
        "configmaps",
        "-n",
        &ns.name,
        "-l",
        "app.kubernetes.io/component=rendered-config",
        "-o",
        "name",
    ]);
    assert!(!configs.trim().is_empty(), "no rendered-config ConfigMap");
    support::eventually("phones' configs to be served", WAIT, || async {
        (http_status(addr, "/cfg000b82000001.xml") == Some(200)).then_some(())
    })
    .await;

    // The phones: boot at once, fetch their files, download inside their slots, reboot.
    let (admin, namespace, url) = (cluster.kubeconfig.clone(), ns.name.clone(), server_url);
    let sim = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_phonefleet"))
            .args(["simulate", "--server", &url, "-n", &namespace])
            .arg("--kubeconfig")
            .arg(&admin)
            // A simulated budget far past the plan; the run ends once every phone settled.
            .args(["--hours", "48", "--until-settled", "--seed", "3"])
            .args(&clock)
            .stderr(Stdio::inherit())
            .output()
            .expect("phonefleet simulate")
    })
    .await
    .unwrap();
    assert!(
        sim.status.success(),
        "simulate failed\n{}",
        controller.log()
    );
    let summary: Value = serde_json::from_slice(&sim.stdout).unwrap_or_else(|e| {
        panic!(
            "simulate printed no JSON ({e}): {}",
            String::from_utf8_lossy(&sim.stdout)
        )
    });
    let site = &summary["sites"]["lab"];
    assert_eq!(site["upgraded"], 4, "{summary}\n{}", controller.log());
    assert_eq!(site["failed"], 0, "{summary}");
    assert!(
        site["peakConcurrentDownloads"].as_u64().unwrap() <= 2,
        "{summary}"
    );

    // The controller read the progress the server wrote and reports the rollout done.
    support::eventually("the schedule to report 4/4 upgraded", WAIT, || async {
        let out = cluster.kubectl(&[
            "get",
            "phoneschedule/night",
            "-n",
            &ns.name,
            "-o",
            "jsonpath={.status.progress}",
        ]);
        (String::from_utf8_lossy(&out.stdout) == "4/4").then_some(())
    })
    .await;
    let log = controller.log();
    assert!(
        !log.to_lowercase().contains("forbidden"),
        "some call was refused by RBAC:\n{log}"
    );
    // The leader Lease and download tokens were written with the chart's rights.
    let lease = cluster.kubectl_ok(&[
        "get",
        "lease/phonefleet-controller",
        "-n",
        &ns.name,
        "-o",
        "jsonpath={.spec.holderIdentity}",
    ]);
    assert_eq!(lease, format!("{release}-0"));
    let tokens = cluster.kubectl_ok(&[
        "get",
        "leases",
        "-n",
        &ns.name,
        "-l",
        "phonefleet.io/site=lab",
        "-o",
        "name",
    ]);
    assert!(!tokens.trim().is_empty(), "no download token Lease");

    // Minimal: what it needs, and nothing else.
    let n = ns.name.as_str();
    for (args, expected) in [
        (vec!["create", "configmaps", "-n", n], "yes"),
        (vec!["patch", "configmaps", "-n", n], "yes"),
        (
            vec![
                "patch",
                "phoneschedules.phonefleet.io",
                "--subresource=status",
                "-n",
                n,
            ],
            "yes",
        ),
        (vec!["update", "leases.coordination.k8s.io", "-n", n], "yes"),
        (vec!["get", "secrets", "-n", n], "no"),
        (vec!["list", "secrets", "-n", n], "no"),
        (vec!["list", "pods", "-n", n], "no"),
        (vec!["create", "pods", "-n", n], "no"),
        (vec!["get", "configmaps", "-n", &other.name], "no"),
        (vec!["list", "configmaps", "--all-namespaces"], "no"),
        (
            vec!["update", "leases.coordination.k8s.io", "-n", &other.name],
            "no",
        ),
        (vec!["patch", "phoneschedules.phonefleet.io", "-n", n], "no"),
        (
            vec!["delete", "phoneschedules.phonefleet.io", "-n", n],
            "no",
        ),
        (vec!["create", "phonesites.phonefleet.io", "-n", n], "no"),
        (
            vec!["delete", "customresourcedefinitions.apiextensions.k8s.io"],
            "no",
        ),
        (
            vec!["create", "roles.rbac.authorization.k8s.io", "-n", n],
            "no",
        ),
        (vec!["create", "serviceaccounts/token", "-n", n], "no"),
    ] {
        assert_eq!(can_i(cluster, &user, &args), expected, "can-i {args:?}");
    }
    // And the token itself is refused where it matters.
    for args in [
        vec!["get", "secrets", "-n", n],
        vec!["get", "configmaps", "-n", &other.name],
        vec!["delete", "crd", "phoneschedules.phonefleet.io"],
    ] {
        let out = as_sa(&args);
        assert!(!out.status.success(), "{args:?} was allowed");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("Forbidden"),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    drop(controller);
    helm_ok(cluster, &["uninstall", &release, "-n", &ns.name]);
    ns.delete().await;
    other.delete().await;
}

/// Users bound only to Kubernetes' built-in roles can use the CRDs once the chart is installed:
/// `edit` creates a PhoneSchedule, `view` reads but does not write.
#[tokio::test]
async fn users_of_the_builtin_edit_and_view_roles_can_use_the_crds() {
    let cluster = support::cluster().await;
    cluster.apply_crds().await;
    let ns = cluster.namespace("helm-agg").await;
    let release = ns.name.replacen("helm-agg", "pfagg", 1);
    let (editor, viewer) = (format!("{release}-alice"), format!("{release}-bob"));
    let n = ns.name.as_str();
    cluster.kubectl_ok(&[
        "create",
        "rolebinding",
        "editor",
        "--clusterrole=edit",
        "--user",
        &editor,
        "-n",
        n,
    ]);
    cluster.kubectl_ok(&[
        "create",
        "rolebinding",
        "viewer",
        "--clusterrole=view",
        "--user",
        &viewer,
        "-n",
        n,
    ]);
    let create = ["create", "phoneschedules.phonefleet.io", "-n", n];
    // Without the chart, the built-in roles know nothing of phonefleet.io.
    assert_eq!(can_i(cluster, &editor, &create), "no");

    let chart = chart_dir();
    let _guard = common::ReleaseGuard {
        cluster,
        release: release.clone(),
        namespace: ns.name.clone(),
    };
    helm_ok(
        cluster,
        &["install", &release, chart.to_str().unwrap(), "-n", n],
    );
    // The aggregation controller copies the rules into the built-in roles shortly after.
    support::eventually(
        "edit may create PhoneSchedules",
        Duration::from_secs(60),
        || async { (can_i(cluster, &editor, &create) == "yes").then_some(()) },
    )
    .await;
    support::eventually(
        "view may list PhoneSites",
        Duration::from_secs(60),
        || async {
            (can_i(
                cluster,
                &viewer,
                &["list", "phonesites.phonefleet.io", "-n", n],
            ) == "yes")
                .then_some(())
        },
    )
    .await;
    assert_eq!(can_i(cluster, &viewer, &create), "no", "view reads only");
    assert_eq!(
        can_i(
            cluster,
            &editor,
            &[
                "patch",
                "phoneschedules.phonefleet.io",
                "--subresource=status",
                "-n",
                n
            ]
        ),
        "no",
        "status is the controller's"
    );

    // And really creates one, impersonated.
    let path = support::repo_root().join("tests/valid/office-fleet.yaml");
    let out = cluster.kubectl(&[
        "apply",
        "--as",
        &editor,
        "-n",
        n,
        "-f",
        path.to_str().expect("utf-8"),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listed = cluster.kubectl(&["get", "psched", "--as", &viewer, "-n", n, "-o", "name"]);
    assert!(
        String::from_utf8_lossy(&listed.stdout).contains("phoneschedule.phonefleet.io/offices"),
        "{}",
        String::from_utf8_lossy(&listed.stderr)
    );
    drop(_guard);
    ns.delete().await;
}

/// A ConfigMap manifest in `namespace`, labelled as phonefleet's when `owned`.
fn configmap_yaml(name: &str, namespace: &str, owned: bool) -> String {
    let labels = if owned {
        "\n  labels:\n    app.kubernetes.io/managed-by: phonefleet\n    app.kubernetes.io/component: rendered-config"
    } else {
        ""
    };
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n  namespace: {namespace}{labels}\ndata:\n  a: b\n"
    )
}

/// Cluster scope grants ConfigMap and Lease writes in every namespace; the chart's owned-objects
/// admission policy narrows them to what phonefleet manages (issue #12 item 3): its
/// ServiceAccount cannot change or delete a tenant's ConfigMaps or Leases, and a tenant who may
/// write ConfigMaps cannot forge a rendered config (which the server would serve) nor take over
/// one of phonefleet's. Before the policy, every refusal below was allowed.
#[tokio::test]
async fn in_cluster_scope_the_service_account_writes_only_phonefleets_objects_and_nobody_forges_them()
 {
    let cluster = support::cluster().await;
    cluster.apply_crds().await;
    let ns = cluster.namespace("helm-vap").await;
    let tenant = cluster.namespace("helm-vap-tenant").await;
    let release = ns.name.replacen("helm-vap", "pfvap", 1);
    let sa = format!("{release}-phonefleet");
    // Other tests of this binary share the API server: the policy covers this test's namespaces
    // only (in production, scope Cluster covers every namespace).
    for n in [&ns.name, &tenant.name] {
        cluster.kubectl_ok(&["label", "ns", n, &format!("phonefleet-test/vap={release}")]);
    }
    let chart = chart_dir();
    let _guard = common::ReleaseGuard {
        cluster,
        release: release.clone(),
        namespace: ns.name.clone(),
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
            "watch.scope=Cluster",
            "--set",
            &format!(
                "rbac.ownedObjectsPolicy.namespaceSelector.matchLabels.phonefleet-test/vap={release}"
            ),
            // The aggregated ClusterRoles would change the built-in roles under the other test.
            "--set",
            "rbac.aggregateToDefaultRoles=false",
        ],
    );
    let token = cluster.kubectl_ok(&["create", "token", &sa, "-n", &ns.name, "--duration=1h"]);
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("sa.kubeconfig");
    token_kubeconfig(&cluster.kubeconfig, token.trim(), &ns.name, &kubeconfig);
    let t = tenant.name.as_str();

    // A tenant's own objects, and a user who may edit that namespace (the built-in edit role).
    let write = |name: &str, owned: bool| {
        let path = dir.path().join(format!("{name}-{owned}.yaml"));
        std::fs::write(&path, configmap_yaml(name, t, owned)).unwrap();
        path
    };
    let plain = write("app-settings", false);
    cluster.kubectl_ok(&["apply", "-f", plain.to_str().unwrap()]);
    let lease = dir.path().join("lease.yaml");
    std::fs::write(
        &lease,
        format!("apiVersion: coordination.k8s.io/v1\nkind: Lease\nmetadata:\n  name: tenant-lock\n  namespace: {t}\nspec:\n  holderIdentity: tenant\n"),
    )
    .unwrap();
    cluster.kubectl_ok(&["apply", "-f", lease.to_str().unwrap()]);
    let user = format!("{release}-mallory");
    cluster.kubectl_ok(&[
        "create",
        "rolebinding",
        "mallory",
        "--clusterrole=edit",
        "--user",
        &user,
        "-n",
        t,
    ]);

    // Runs kubectl as the chart's ServiceAccount (`Some`) or impersonating the tenant's user.
    let run = |as_sa: bool, args: &[&str]| {
        let mut cmd = cluster.tool("kubectl");
        if as_sa {
            cmd.env("KUBECONFIG", &kubeconfig);
        } else {
            cmd.args(["--as", &user]);
        }
        let out = cmd.args(args).output().expect("kubectl");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let refused = |as_sa: bool, args: &[&str]| {
        // RBAC allows each of these; the refusal must come from the policy.
        let (ok, err) = run(as_sa, args);
        assert!(
            !ok && err.contains("managed-by=phonefleet"),
            "{args:?} as {} not refused by the policy: {err}",
            if as_sa { "phonefleet" } else { "tenant" }
        );
    };
    let allowed = |as_sa: bool, args: &[&str]| {
        let (ok, err) = run(as_sa, args);
        assert!(
            ok,
            "{args:?} as {}: {err}",
            if as_sa { "phonefleet" } else { "tenant" }
        );
    };

    // The API server enforces a new policy once its informers have it (about a second).
    support::eventually("the policy to be enforced", WAIT, || async {
        let (ok, err) = run(
            true,
            &["create", "configmap", "probe", "-n", t, "--dry-run=server"],
        );
        (!ok && err.contains("managed-by=phonefleet")).then_some(())
    })
    .await;

    // The ServiceAccount: RBAC allows all of these in Cluster scope; the policy refuses them.
    let merge = r#"{"data":{"a":"changed"}}"#;
    refused(
        true,
        &[
            "patch",
            "configmap",
            "app-settings",
            "-n",
            t,
            "--type=merge",
            "-p",
            merge,
        ],
    );
    refused(true, &["delete", "configmap", "app-settings", "-n", t]);
    refused(true, &["create", "configmap", "stray", "-n", t]);
    // Leases: the ServiceAccount may update (replace), as its token code does.
    std::fs::write(
        &lease,
        format!("apiVersion: coordination.k8s.io/v1\nkind: Lease\nmetadata:\n  name: tenant-lock\n  namespace: {t}\nspec:\n  holderIdentity: phonefleet\n"),
    )
    .unwrap();
    refused(true, &["replace", "-f", lease.to_str().unwrap()]);
    // ... and allows what phonefleet writes: labelled objects, created, changed and deleted.
    let owned = write("rendered", true);
    allowed(
        true,
        &[
            "apply",
            "--server-side",
            "--field-manager=phonefleet",
            "-f",
            owned.to_str().unwrap(),
        ],
    );
    allowed(
        true,
        &[
            "patch",
            "configmap",
            "rendered",
            "-n",
            t,
            "--type=merge",
            "-p",
            merge,
        ],
    );
    // Dropping the label would turn it into an object phonefleet may not write.
    refused(
        true,
        &[
            "label",
            "configmap",
            "rendered",
            "-n",
            t,
            "app.kubernetes.io/managed-by-",
        ],
    );

    // The tenant: may edit its own ConfigMaps, but not forge or take over phonefleet's.
    allowed(
        false,
        &[
            "patch",
            "configmap",
            "app-settings",
            "-n",
            t,
            "--type=merge",
            "-p",
            merge,
        ],
    );
    let forged = write("forged", true);
    refused(false, &["apply", "-f", forged.to_str().unwrap()]);
    refused(
        false,
        &[
            "label",
            "configmap",
            "app-settings",
            "-n",
            t,
            "app.kubernetes.io/managed-by=phonefleet",
        ],
    );
    refused(
        false,
        &[
            "patch",
            "configmap",
            "rendered",
            "-n",
            t,
            "--type=merge",
            "-p",
            merge,
        ],
    );
    // Deleting stays allowed (phonefleet writes its objects again).
    allowed(false, &["delete", "configmap", "rendered", "-n", t]);
    // The tenant's own data is untouched by all of the above.
    let data = cluster.kubectl_ok(&[
        "get",
        "configmap",
        "app-settings",
        "-n",
        t,
        "-o",
        "jsonpath={.data.a}",
    ]);
    assert_eq!(data, "changed");

    drop(_guard);
    ns.delete().await;
    tenant.delete().await;
}
