//! The Helm chart with the real helm (built by tests/cluster/build.sh): lint, template with the
//! default and the all-features values, the schema refusing bad values, and install, upgrade
//! and uninstall on the real API server.

#[path = "helm/common.rs"]
mod common;
mod support;

use std::time::Duration;

use common::{
    EXPECTED_RULES, all_features_values, args, chart_dir, container, flat_rules, helm, helm_ok,
    of_kind, one, template,
};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(60);

fn path(p: &std::path::Path) -> &str {
    p.to_str().expect("utf-8 path")
}

#[test]
fn chart_app_version_is_the_crate_version() {
    let text = std::fs::read_to_string(chart_dir().join("Chart.yaml")).expect("Chart.yaml");
    let chart: Value = serde_yaml_ng::from_str(&text).expect("Chart.yaml parses");
    assert_eq!(chart["apiVersion"], "v2");
    assert_eq!(
        chart["appVersion"],
        env!("CARGO_PKG_VERSION"),
        "Chart.yaml appVersion must be the crate version in Cargo.toml"
    );
}

#[test]
fn chart_crds_are_the_repository_crds_byte_for_byte() {
    let names = |dir: &std::path::Path| {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    let repo = support::repo_root().join("crds");
    let chart = chart_dir().join("crds");
    assert_eq!(
        names(&repo),
        names(&chart),
        "charts/phonefleet/crds/ must hold the files of crds/: run `make generate`"
    );
    for name in names(&repo) {
        assert!(
            std::fs::read(repo.join(&name)).unwrap() == std::fs::read(chart.join(&name)).unwrap(),
            "charts/phonefleet/crds/{name} differs from crds/{name}: run `make generate`"
        );
    }
}

#[tokio::test]
async fn chart_lints_strictly_with_default_and_all_features_values() {
    let cluster = support::cluster().await;
    let chart = chart_dir();
    let out = helm_ok(cluster, &["lint", "--strict", path(&chart)]);
    assert!(out.contains("0 chart(s) failed"), "{out}");
    let out = helm_ok(
        cluster,
        &[
            "lint",
            "--strict",
            path(&chart),
            "-f",
            path(&all_features_values()),
        ],
    );
    assert!(out.contains("0 chart(s) failed"), "{out}");
}

#[tokio::test]
async fn default_values_render_a_hardened_namespaced_controller() {
    let cluster = support::cluster().await;
    let objects = template(cluster, &chart_dir(), "pf", "voice", &[]);

    let deployment = one(&objects, "Deployment");
    assert_eq!(deployment["metadata"]["name"], "pf-phonefleet");
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], "pf-phonefleet");
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    let c = container(&objects);
    let sc = &c["securityContext"];
    assert_eq!(sc["runAsNonRoot"], true);
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]));
    assert_eq!(sc["seccompProfile"]["type"], "RuntimeDefault");
    assert!(c["resources"]["requests"]["cpu"].is_string());
    assert!(c["resources"]["limits"]["memory"].is_string());

    // Probes on the metrics port's health endpoints.
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(c["livenessProbe"]["httpGet"]["port"], "metrics");
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(c["readinessProbe"]["httpGet"]["port"], "metrics");
    let ports: Vec<(String, i64)> = c["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap().to_owned(),
                p["containerPort"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        ports,
        vec![("provisioning".into(), 8080), ("metrics".into(), 9090)]
    );

    // `phonefleet run`, one namespace, leader-elected, downward API for the Lease.
    let a = args(&objects);
    assert_eq!(a[0], "run");
    for expected in [
        "--namespace=voice",
        "--leader-elect",
        "--server-url=http://pf-phonefleet-provisioning.voice.svc",
        "--provisioning-listen=0.0.0.0:8080",
        "--metrics-listen=0.0.0.0:9090",
        "--firmware-dir=/var/lib/phonefleet/firmware",
    ] {
        assert!(a.iter().any(|x| x == expected), "{expected} not in {a:?}");
    }
    let env = c["env"].as_array().unwrap();
    for (name, field) in [
        ("POD_NAME", "metadata.name"),
        ("POD_NAMESPACE", "metadata.namespace"),
    ] {
        let var = env
            .iter()
            .find(|e| e["name"] == name)
            .unwrap_or_else(|| panic!("{name} missing"));
        assert_eq!(var["valueFrom"]["fieldRef"]["fieldPath"], field);
    }

    // RBAC: a Role in the watched namespace with exactly the calls src/ makes.
    // (The only ClusterRoles are the two aggregated into the built-in view and edit roles.)
    assert!(controller_cluster_roles(&objects).is_empty());
    assert_eq!(of_kind(&objects, "ClusterRole").len(), 2);
    assert!(of_kind(&objects, "ClusterRoleBinding").is_empty());
    let role = one(&objects, "Role");
    assert_eq!(role["metadata"]["namespace"], "voice");
    assert_eq!(flat_rules(role), EXPECTED_RULES);
    let binding = one(&objects, "RoleBinding");
    assert_eq!(binding["roleRef"]["name"], role["metadata"]["name"]);
    assert_eq!(
        binding["subjects"],
        json!([{"kind": "ServiceAccount", "name": "pf-phonefleet", "namespace": "voice"}])
    );

    // Services: provisioning 80 -> 8080, metrics 9090.
    let services = of_kind(&objects, "Service");
    let svc = |name: &str| {
        *services
            .iter()
            .find(|s| s["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("Service {name}"))
    };
    let prov = svc("pf-phonefleet-provisioning");
    assert_eq!(prov["spec"]["ports"][0]["port"], 80);
    assert_eq!(prov["spec"]["ports"][0]["targetPort"], "provisioning");
    assert_eq!(
        svc("pf-phonefleet-metrics")["spec"]["ports"][0]["port"],
        9090
    );

    one(&objects, "ServiceAccount");
    assert_eq!(
        one(&objects, "PodDisruptionBudget")["spec"]["maxUnavailable"],
        1
    );
    // Off by default: the Prometheus Operator's kinds.
    assert!(of_kind(&objects, "ServiceMonitor").is_empty());
    assert!(of_kind(&objects, "PrometheusRule").is_empty());
    // Nothing in the chart reads or writes Secrets.
    assert!(of_kind(&objects, "Secret").is_empty());
    check_dashboards(&objects, &chart_dir(), "voice");
}

#[tokio::test]
async fn all_features_values_render_cluster_rbac_monitoring_tls_and_a_firmware_claim() {
    let cluster = support::cluster().await;
    let values = all_features_values();
    let objects = template(cluster, &chart_dir(), "pf", "voice", &["-f", path(&values)]);

    // Cluster scope: ClusterRole with the same rules, no namespace flag, no Role.
    assert!(of_kind(&objects, "Role").is_empty());
    let roles = controller_cluster_roles(&objects);
    assert_eq!(roles.len(), 1, "one ClusterRole for the controller");
    let role = roles[0];
    assert_eq!(flat_rules(role), EXPECTED_RULES);
    let binding = one(&objects, "ClusterRoleBinding");
    assert_eq!(binding["subjects"][0]["namespace"], "voice");
    let a = args(&objects);
    assert!(!a.iter().any(|x| x.starts_with("--namespace")), "{a:?}");
    for expected in [
        "--server-url=https://prov.voice.example.net/prov",
        "--path-prefix=/prov",
        "--download-rate=2000000",
        "--lease-duration-seconds=20",
        "--tls-cert=/etc/phonefleet/tls/tls.crt",
        "--tls-key=/etc/phonefleet/tls/tls.key",
        "--credentials-file=/etc/phonefleet/credentials/credentials",
    ] {
        assert!(a.iter().any(|x| x == expected), "{expected} not in {a:?}");
    }

    let deployment = one(&objects, "Deployment");
    assert_eq!(deployment["spec"]["replicas"], 3);
    let pod = &deployment["spec"]["template"]["spec"];
    assert!(
        container(&objects)["image"]
            .as_str()
            .unwrap()
            .ends_with("@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef")
    );
    let volumes = pod["volumes"].as_array().unwrap();
    let volume = |name: &str| {
        volumes
            .iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("volume {name}"))
    };
    assert_eq!(
        volume("firmware")["persistentVolumeClaim"],
        json!({"claimName": "phonefleet-firmware", "readOnly": true})
    );
    assert_eq!(volume("tls")["secret"]["secretName"], "phonefleet-prov-tls");
    // Hardening is not traded for features.
    assert_eq!(
        container(&objects)["securityContext"]["readOnlyRootFilesystem"],
        true
    );

    let prov = of_kind(&objects, "Service")
        .into_iter()
        .find(|s| s["metadata"]["name"] == "pf-phonefleet-provisioning")
        .unwrap();
    assert_eq!(prov["spec"]["type"], "LoadBalancer");
    assert_eq!(prov["spec"]["externalTrafficPolicy"], "Local");
    assert_eq!(prov["spec"]["ports"][0]["name"], "https");

    let monitor = one(&objects, "ServiceMonitor");
    assert_eq!(
        monitor["metadata"]["labels"]["release"],
        "kube-prometheus-stack"
    );
    assert_eq!(monitor["spec"]["endpoints"][0]["port"], "metrics");
    assert_eq!(monitor["spec"]["endpoints"][0]["path"], "/metrics");
    assert_eq!(
        monitor["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"],
        "metrics"
    );
    assert_eq!(
        one(&objects, "PodDisruptionBudget")["spec"]["minAvailable"],
        2
    );

    // The metrics engineer's files: rendered exactly when they exist.
    let rules = chart_dir().join("rules/phonefleet-rules.yaml");
    let rendered_rules = of_kind(&objects, "PrometheusRule");
    if rules.exists() {
        let file: Value =
            serde_yaml_ng::from_str(&std::fs::read_to_string(&rules).unwrap()).unwrap();
        assert_eq!(rendered_rules.len(), 1);
        assert_eq!(rendered_rules[0]["spec"]["groups"], file["groups"]);
    } else {
        assert!(rendered_rules.is_empty());
    }
    check_dashboards(&objects, &chart_dir(), "monitoring");
}

/// The dashboards ConfigMap holds exactly the chart's dashboards/*.json, byte for byte, with
/// the sidecar label; there is none without dashboards.
fn check_dashboards(objects: &[Value], chart: &std::path::Path, namespace: &str) {
    let mut files: Vec<(String, String)> = std::fs::read_dir(chart.join("dashboards"))
        .map(|d| {
            d.map(|e| e.unwrap().path())
                .filter(|p| p.extension().is_some_and(|x| x == "json"))
                .map(|p| {
                    (
                        p.file_name().unwrap().to_string_lossy().into_owned(),
                        std::fs::read_to_string(&p).unwrap(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    let maps: Vec<&Value> = of_kind(objects, "ConfigMap")
        .into_iter()
        .filter(|c| c["metadata"]["labels"]["grafana_dashboard"] == "1")
        .collect();
    if files.is_empty() {
        assert!(maps.is_empty(), "a dashboards ConfigMap without dashboards");
        return;
    }
    assert_eq!(maps.len(), 1);
    assert_eq!(maps[0]["metadata"]["namespace"], namespace);
    let data = maps[0]["data"].as_object().expect("data");
    let mut keys: Vec<&String> = data.keys().collect();
    keys.sort();
    assert_eq!(
        keys,
        files.iter().map(|(n, _)| n).collect::<Vec<_>>(),
        "one key per dashboard"
    );
    for (name, text) in &files {
        let value: Value = serde_json::from_str(text)
            .unwrap_or_else(|e| panic!("dashboards/{name} is not JSON: {e}"));
        let rendered: Value = serde_json::from_str(data[name].as_str().unwrap()).unwrap();
        assert_eq!(rendered, value, "dashboards/{name} survives templating");
    }
}

#[tokio::test]
async fn dashboards_and_alert_rules_are_templated_from_the_chart_files() {
    // A copy of the chart with fixture files, so the templating is tested whether or not the
    // real dashboards and rules exist yet.
    let cluster = support::cluster().await;
    let dir = tempfile::tempdir().unwrap();
    let chart = dir.path().join("phonefleet");
    copy_dir(&chart_dir(), &chart);
    std::fs::create_dir_all(chart.join("dashboards")).unwrap();
    std::fs::create_dir_all(chart.join("rules")).unwrap();
    let dashboard =
        r#"{"title": "Fixture {{ not a template }}", "panels": [{"expr": "sum(rate(x[5m]))"}]}"#;
    std::fs::write(chart.join("dashboards/fixture.json"), dashboard).unwrap();
    let rules = "groups:\n  - name: fixture\n    rules:\n      - alert: FixtureAlert\n        expr: up == 0\n        for: 5m\n        labels: {severity: page}\n        annotations:\n          summary: \"{{ $labels.instance }} is down\"\n";
    std::fs::write(chart.join("rules/phonefleet-rules.yaml"), rules).unwrap();

    let objects = template(
        cluster,
        &chart,
        "pf",
        "voice",
        &[
            "--set",
            "metrics.prometheusRule.enabled=true",
            "--set",
            "dashboards.label=custom_dashboard",
            "--set",
            "dashboards.labelValue=yes",
        ],
    );
    let map = of_kind(&objects, "ConfigMap")
        .into_iter()
        .find(|c| c["metadata"]["name"] == "pf-phonefleet-dashboards")
        .expect("dashboards ConfigMap");
    assert_eq!(map["metadata"]["labels"]["custom_dashboard"], "yes");
    assert_eq!(map["metadata"]["namespace"], "voice");
    assert_eq!(map["data"]["fixture.json"], dashboard);
    let rule = one(&objects, "PrometheusRule");
    let expected: Value = serde_yaml_ng::from_str(rules).unwrap();
    assert_eq!(rule["spec"]["groups"], expected["groups"]);
    assert_eq!(
        rule["spec"]["groups"][0]["rules"][0]["annotations"]["summary"],
        "{{ $labels.instance }} is down",
        "Prometheus templates pass through Helm untouched"
    );

    // Switched off: neither is rendered.
    let objects = template(
        cluster,
        &chart,
        "pf",
        "voice",
        &["--set", "dashboards.enabled=false"],
    );
    assert!(of_kind(&objects, "PrometheusRule").is_empty());
    assert!(of_kind(&objects, "ConfigMap").is_empty());
}

#[tokio::test]
async fn every_alert_of_the_prometheusrule_carries_its_runbook_url() {
    let cluster = support::cluster().await;
    let base = "https://docs.example.net/phonefleet";
    let objects = template(
        cluster,
        &chart_dir(),
        "pf",
        "voice",
        &[
            "--set",
            "metrics.prometheusRule.enabled=true",
            "--set",
            &format!("metrics.prometheusRule.runbookBaseUrl={base}/"),
        ],
    );
    let rule = one(&objects, "PrometheusRule");
    let runbooks = std::fs::read_to_string(support::repo_root().join("docs/runbooks.md")).unwrap();
    let mut alerts = 0;
    for group in rule["spec"]["groups"].as_array().unwrap() {
        for r in group["rules"].as_array().unwrap() {
            let Some(alert) = r["alert"].as_str() else {
                continue;
            };
            let url = r["annotations"]["runbook_url"].as_str().unwrap_or_default();
            let expected = format!("{base}/docs/runbooks.md#{}", alert.to_lowercase());
            assert_eq!(url, expected, "{alert}");
            assert!(
                runbooks.contains(&format!("\n## {alert}\n")),
                "docs/runbooks.md has no section for {alert}"
            );
            alerts += 1;
        }
    }
    assert!(alerts >= 7, "{alerts} alerts");
}

/// Printer column names of a CRD on the API server.
fn printer_columns(cluster: &support::TestCluster, crd: &str) -> Vec<String> {
    let crd = get_json(cluster, "", &format!("crd/{crd}"));
    crd["spec"]["versions"][0]["additionalPrinterColumns"]
        .as_array()
        .map(|cols| {
            cols.iter()
                .filter_map(|c| c["name"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// The CRD upgrade command of docs/helm.md ("CRDs"), as documented.
fn documented_crd_upgrade() -> Vec<String> {
    let doc = std::fs::read_to_string(support::repo_root().join("docs/helm.md")).unwrap();
    let command = doc
        .split('`')
        .find(|part| part.starts_with("kubectl apply --server-side") && part.contains("crds/"))
        .expect("docs/helm.md documents the CRD upgrade command");
    command.split_whitespace().map(str::to_owned).collect()
}

#[tokio::test]
async fn the_documented_crd_upgrade_path_updates_a_changed_crd_on_helm_upgrade() {
    // A control plane of its own: the test installs an older CRD, which would disturb the
    // tests sharing a cluster.
    let cluster = support::private_cluster().await;
    let ns = cluster.namespace("helm-crd-upgrade").await;
    let crd = "phoneschedules.phonefleet.io";
    // The older chart: its PhoneSchedule CRD has no NEXT WINDOW printer column.
    let dir = tempfile::tempdir().unwrap();
    let old = dir.path().join("phonefleet");
    copy_dir(&chart_dir(), &old);
    let file = old.join(format!("crds/{crd}.yaml"));
    let mut older: Value =
        serde_yaml_ng::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    older["spec"]["versions"][0]["additionalPrinterColumns"]
        .as_array_mut()
        .unwrap()
        .retain(|c| c["name"] != "Next Window");
    std::fs::write(&file, serde_yaml_ng::to_string(&older).unwrap()).unwrap();

    let release = "pf";
    let set_url = "controller.serverUrl=http://prov.example.net";
    helm_ok(
        &cluster,
        &[
            "install",
            release,
            path(&old),
            "-n",
            &ns.name,
            "--set",
            set_url,
        ],
    );
    assert!(!printer_columns(&cluster, crd).contains(&"Next Window".to_owned()));

    // helm upgrade alone leaves the CRD as it was: Helm never upgrades crds/.
    helm_ok(
        &cluster,
        &[
            "upgrade",
            release,
            path(&chart_dir()),
            "-n",
            &ns.name,
            "--set",
            set_url,
        ],
    );
    assert!(
        !printer_columns(&cluster, crd).contains(&"Next Window".to_owned()),
        "Helm upgraded a CRD: the documented step may be unneeded now"
    );

    // The documented path: the chart's CRDs by server-side apply, then helm upgrade.
    let command = documented_crd_upgrade();
    assert_eq!(command[0], "kubectl");
    let mut kubectl = cluster.tool("kubectl");
    kubectl
        .args(&command[1..])
        .current_dir(support::repo_root());
    let out = kubectl.output().expect("kubectl");
    assert!(
        out.status.success(),
        "{command:?}:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    helm_ok(
        &cluster,
        &[
            "upgrade",
            release,
            path(&chart_dir()),
            "-n",
            &ns.name,
            "--set",
            set_url,
        ],
    );
    assert!(
        printer_columns(&cluster, crd).contains(&"Next Window".to_owned()),
        "{:?}",
        printer_columns(&cluster, crd)
    );
    helm_ok(&cluster, &["uninstall", release, "-n", &ns.name]);
    ns.delete().await;
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

#[tokio::test]
async fn watching_another_namespace_puts_the_leader_lease_role_in_the_release_namespace() {
    let cluster = support::cluster().await;
    let objects = template(
        cluster,
        &chart_dir(),
        "pf",
        "phonefleet-system",
        &["--set", "watch.namespace=voice"],
    );
    let roles = of_kind(&objects, "Role");
    assert_eq!(roles.len(), 2);
    let main = roles
        .iter()
        .find(|r| r["metadata"]["namespace"] == "voice")
        .expect("Role in the watched namespace");
    assert_eq!(flat_rules(main), EXPECTED_RULES);
    let lease = roles
        .iter()
        .find(|r| r["metadata"]["namespace"] == "phonefleet-system")
        .expect("Role for the leader Lease in the release namespace");
    assert_eq!(
        flat_rules(lease),
        [
            "coordination.k8s.io/leases:create",
            "coordination.k8s.io/leases:get",
            "coordination.k8s.io/leases:update"
        ]
    );
    assert!(args(&objects).iter().any(|a| a == "--namespace=voice"));
}

/// `watch.scope: Namespaces` (issue #12 item 3): one Role and RoleBinding per listed namespace
/// (no ClusterRole for the controller), the leader Lease's Role in the release namespace, one
/// `--namespace` flag with the list, and the owned-objects policy limited to those namespaces.
#[tokio::test]
async fn watching_a_list_of_namespaces_grants_a_role_in_each_and_nothing_cluster_wide() {
    let cluster = support::cluster().await;
    let objects = template(
        cluster,
        &chart_dir(),
        "pf",
        "phonefleet-system",
        &[
            "--set",
            "watch.scope=Namespaces",
            "--set",
            "watch.namespaces={voice,sales,voice}",
        ],
    );
    assert!(controller_cluster_roles(&objects).is_empty());
    assert!(of_kind(&objects, "ClusterRoleBinding").is_empty());
    let roles = of_kind(&objects, "Role");
    let mut namespaces: Vec<&str> = roles
        .iter()
        .map(|r| r["metadata"]["namespace"].as_str().unwrap())
        .collect();
    namespaces.sort();
    assert_eq!(namespaces, ["phonefleet-system", "sales", "voice"]);
    for ns in ["sales", "voice"] {
        let role = roles
            .iter()
            .find(|r| r["metadata"]["namespace"] == ns)
            .unwrap();
        assert_eq!(flat_rules(role), EXPECTED_RULES);
        let binding = of_kind(&objects, "RoleBinding")
            .into_iter()
            .find(|b| b["metadata"]["namespace"] == ns)
            .expect("a RoleBinding in each watched namespace");
        assert_eq!(binding["roleRef"]["name"], role["metadata"]["name"]);
        assert_eq!(binding["subjects"][0]["namespace"], "phonefleet-system");
    }
    let lease = roles
        .iter()
        .find(|r| r["metadata"]["namespace"] == "phonefleet-system")
        .unwrap();
    assert_eq!(lease["metadata"]["name"], "pf-phonefleet-leader-election");
    let all_args = args(&objects);
    let flags: Vec<&String> = all_args
        .iter()
        .filter(|a| a.starts_with("--namespace"))
        .collect();
    assert_eq!(flags, ["--namespace=sales,voice"]);
    let policy = one(&objects, "ValidatingAdmissionPolicy");
    assert_eq!(
        policy["spec"]["matchConstraints"]["namespaceSelector"]["matchExpressions"][0]["values"],
        serde_json::json!(["phonefleet-system", "sales", "voice"])
    );

    // An empty list is an error naming the value, not a controller watching everything.
    let out = helm(
        cluster,
        &[
            "template",
            "pf",
            chart_dir().to_str().unwrap(),
            "--kube-version",
            common::KUBE_VERSION,
            "--set",
            "watch.scope=Namespaces",
        ],
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("watch.namespaces"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn values_violating_the_schema_fail_naming_the_field() {
    let cluster = support::cluster().await;
    let chart = chart_dir();
    let cases = [
        // A typo is refused, not silently ignored.
        (
            "replicas: 3\n",
            "additional properties 'replicas' not allowed",
        ),
        ("replicaCount: two\n", "/replicaCount"),
        ("watch:\n  scope: Everywhere\n", "/watch/scope"),
        (
            "controller:\n  serverUrl: prov.example.net\n",
            "/controller/serverUrl",
        ),
        (
            "firmware:\n  source: persistentVolumeClaim\n",
            "/firmware/persistentVolumeClaim/claimName",
        ),
        (
            "controller:\n  leaderElection:\n    enabled: yes-please\n",
            "/controller/leaderElection/enabled",
        ),
        (
            "provisioning:\n  service:\n    type: Ingress\n",
            "/provisioning/service/type",
        ),
        ("securityContext: 1\n", "/securityContext"),
        (
            "provisioning:\n  auth:\n    mode: password\n",
            "/provisioning/auth/mode",
        ),
    ];
    let dir = tempfile::tempdir().unwrap();
    for (i, (values, field)) in cases.iter().enumerate() {
        let file = dir.path().join(format!("bad-{i}.yaml"));
        std::fs::write(&file, values).unwrap();
        let out = helm(
            cluster,
            &[
                "template",
                "pf",
                path(&chart),
                "-f",
                path(&file),
                "--kube-version",
                common::KUBE_VERSION,
            ],
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{values:?} was accepted");
        assert!(
            stderr.contains("values don't meet the specifications of the schema"),
            "{values:?}: {stderr}"
        );
        assert!(
            stderr.contains(field),
            "{values:?} should name {field}: {stderr}"
        );
    }
}

#[tokio::test]
async fn install_upgrade_and_uninstall_on_the_api_server_leave_only_the_crds() {
    let cluster = support::cluster().await;
    cluster.apply_crds().await;
    let ns = cluster.namespace("helm-install").await;
    // Unique across test processes sharing the control plane (the ClusterRole is cluster-wide).
    let release = ns.name.replacen("helm-install", "pf", 1);
    let full = format!("{release}-phonefleet");
    let chart = chart_dir();
    let _guard = common::ReleaseGuard {
        cluster,
        release: release.clone(),
        namespace: ns.name.clone(),
    };

    let out = helm_ok(
        cluster,
        &[
            "install",
            &release,
            path(&chart),
            "-n",
            &ns.name,
            "--set",
            "controller.serverUrl=http://prov.example.net",
        ],
    );
    assert!(out.contains("STATUS: deployed"), "{out}");
    assert!(
        out.contains("DHCP option 66"),
        "NOTES tell what to do next:\n{out}"
    );

    // Everything the chart renders is on the API server (no pods run: the control plane has
    // no nodes).
    for object in [
        format!("deployment/{full}"),
        format!("service/{full}-provisioning"),
        format!("service/{full}-metrics"),
        format!("serviceaccount/{full}"),
        format!("role/{full}"),
        format!("rolebinding/{full}"),
        format!("poddisruptionbudget/{full}"),
    ] {
        cluster.kubectl_ok(&["get", "-n", &ns.name, &object]);
    }
    let has_dashboards = std::fs::read_dir(chart.join("dashboards"))
        .is_ok_and(|mut d| d.any(|e| e.unwrap().path().extension().is_some_and(|x| x == "json")));
    if has_dashboards {
        let labels = cluster.kubectl_ok(&[
            "get",
            "-n",
            &ns.name,
            &format!("configmap/{full}-dashboards"),
            "-o",
            "jsonpath={.metadata.labels.grafana_dashboard}",
        ]);
        assert_eq!(labels, "1");
    }
    let deployment = get_json(cluster, &ns.name, &format!("deployment/{full}"));
    assert_eq!(deployment["spec"]["replicas"], 2);
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    assert!(
        container["args"]
            .as_array()
            .unwrap()
            .contains(&json!("--server-url=http://prov.example.net")),
        "{container}"
    );
    // The API server accepted the hardened pod template as rendered.
    assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);

    // Upgrade: more replicas, another URL, and all namespaces (ClusterRole instead of Role).
    helm_ok(
        cluster,
        &[
            "upgrade",
            &release,
            path(&chart),
            "-n",
            &ns.name,
            "--set",
            "controller.serverUrl=http://prov2.example.net",
            "--set",
            "replicaCount=3",
            "--set",
            "watch.scope=Cluster",
        ],
    );
    let deployment = get_json(cluster, &ns.name, &format!("deployment/{full}"));
    assert_eq!(deployment["spec"]["replicas"], 3);
    let args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_array()
        .unwrap()
        .clone();
    assert!(args.contains(&json!("--server-url=http://prov2.example.net")));
    assert!(
        !args
            .iter()
            .any(|a| a.as_str().unwrap().starts_with("--namespace"))
    );
    let role = get_json(cluster, "", &format!("clusterrole/{full}"));
    assert_eq!(flat_rules(&role), EXPECTED_RULES);
    cluster.kubectl_ok(&["get", &format!("clusterrolebinding/{full}")]);
    support::eventually("the Role to be removed by the upgrade", WAIT, || async {
        let out = cluster.kubectl(&["get", "-n", &ns.name, &format!("role/{full}")]);
        (!out.status.success()).then_some(())
    })
    .await;
    let history = helm_ok(cluster, &["history", &release, "-n", &ns.name]);
    assert_eq!(history.lines().count(), 3, "two revisions:\n{history}");

    // Uninstall: nothing of the release is left but the CRDs (kept by Helm's design: deleting
    // them would delete every PhoneSchedule and PhoneSite).
    helm_ok(cluster, &["uninstall", &release, "-n", &ns.name, "--wait"]);
    let selector = format!("app.kubernetes.io/instance={release}");
    support::eventually("the release's objects to be gone", WAIT, || async {
        let left = cluster.kubectl_ok(&[
            "get",
            "-n",
            &ns.name,
            "deployments,replicasets,pods,services,serviceaccounts,roles,rolebindings,poddisruptionbudgets,configmaps,secrets",
            "-l",
            &selector,
            "-o",
            "name",
        ]);
        let cluster_wide = cluster.kubectl_ok(&[
            "get",
            "clusterroles,clusterrolebindings",
            "-l",
            &selector,
            "-o",
            "name",
        ]);
        (left.trim().is_empty() && cluster_wide.trim().is_empty()).then_some(())
    })
    .await;
    // Helm's own release records are gone too.
    let releases = cluster.kubectl_ok(&[
        "get",
        "secrets",
        "-n",
        &ns.name,
        "-l",
        "owner=helm",
        "-o",
        "name",
    ]);
    assert!(releases.trim().is_empty(), "{releases}");
    for crd in ["phoneschedules.phonefleet.io", "phonesites.phonefleet.io"] {
        cluster.kubectl_ok(&["get", "crd", crd]);
    }
    ns.delete().await;
}

fn get_json(cluster: &support::TestCluster, namespace: &str, object: &str) -> Value {
    let mut args = vec!["get", object, "-o", "json"];
    if !namespace.is_empty() {
        args.extend(["-n", namespace]);
    }
    serde_json::from_str(&cluster.kubectl_ok(&args)).expect("kubectl JSON")
}

#[tokio::test]
async fn rendered_arguments_are_accepted_by_phonefleet_run() {
    // clap validates every argument before it acts on a trailing --help: unknown flags and
    // unparsable values (a URL, an address, a number) fail here rather than in a crash-looping
    // pod.
    let cluster = support::cluster().await;
    let values = all_features_values();
    for extra in [
        vec![],
        vec!["-f", path(&values)],
        vec!["--set", "provisioning.auth.mode=digest"],
        vec!["--set", "provisioning.auth.mode=client-cert"],
        vec![
            "--set",
            "provisioning.upstream.url=https://old-prov.example.net/prov",
            "--set",
            "provisioning.upstream.caSecret.name=old-ca",
            "--set",
            "provisioning.upstream.credentialsSecret.name=old-login",
            "--set",
            "provisioning.auth.mode=basic",
        ],
    ] {
        let objects = template(cluster, &chart_dir(), "pf", "voice", &extra);
        let a = args(&objects);
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_phonefleet"))
            .args(&a)
            .arg("--help")
            .output()
            .expect("run phonefleet");
        assert!(
            out.status.success(),
            "phonefleet refuses the chart's arguments {a:?}:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[tokio::test]
async fn every_rendered_object_passes_the_api_servers_validation() {
    // Server-side dry runs: the real API server's schemas and admission judge what each values
    // variant renders (the Prometheus Operator's kinds aside: their CRDs are not installed).
    let cluster = support::cluster().await;
    cluster.apply_crds().await;
    let ns = cluster.namespace("helm-dry-run").await;
    let values = all_features_values();
    let variants: Vec<Vec<&str>> = vec![
        vec![],
        vec!["-f", path(&values), "--set", "dashboards.namespace="],
        vec![
            "--set",
            "firmware.source=configMap",
            "--set",
            "firmware.configMap.name=fw",
        ],
        vec![
            "--set",
            "firmware.source=hostPath",
            "--set",
            "firmware.hostPath.path=/srv/fw",
        ],
        vec![
            "--set",
            "firmware.source=image",
            "--set",
            "firmware.image.reference=registry.example.net/fw:1",
        ],
        vec![
            "--set",
            "firmware.source=none",
            "--set",
            "provisioning.service.type=NodePort",
        ],
    ];
    let dir = tempfile::tempdir().unwrap();
    for (i, extra) in variants.iter().enumerate() {
        let objects: Vec<Value> = template(cluster, &chart_dir(), "pf", &ns.name, extra)
            .into_iter()
            .filter(|o| o["apiVersion"] != "monitoring.coreos.com/v1")
            .collect();
        let file = dir.path().join(format!("variant-{i}.yaml"));
        let docs: Vec<String> = objects
            .iter()
            .map(|o| serde_yaml_ng::to_string(o).unwrap())
            .collect();
        std::fs::write(&file, docs.join("---\n")).unwrap();
        let out = cluster.kubectl(&[
            "apply",
            "--dry-run=server",
            "-n",
            &ns.name,
            "-f",
            path(&file),
        ]);
        assert!(
            out.status.success(),
            "values {extra:?} render objects the API server refuses:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    ns.delete().await;
}

/// ClusterRoles other than those aggregated into the built-in roles.
fn controller_cluster_roles(objects: &[Value]) -> Vec<&Value> {
    of_kind(objects, "ClusterRole")
        .into_iter()
        .filter(|r| {
            r["metadata"]["labels"].as_object().is_none_or(|labels| {
                !labels
                    .keys()
                    .any(|k| k.starts_with("rbac.authorization.k8s.io/aggregate-to-"))
            })
        })
        .collect()
}

#[tokio::test]
async fn conventions_aggregated_roles_extra_volumes_init_containers_relabelings_and_global() {
    let cluster = support::cluster().await;
    let dir = tempfile::tempdir().unwrap();
    let values = dir.path().join("values.yaml");
    std::fs::write(
        &values,
        r#"
global: {imageRegistry: registry.example}
initContainers:
  - name: copy-firmware
    image: busybox
    command: [sh, -c, "cp /src/* /var/lib/phonefleet/firmware/"]
    volumeMounts:
      - {name: firmware, mountPath: /var/lib/phonefleet/firmware}
      - {name: firmware-src, mountPath: /src}
extraVolumes:
  - {name: firmware-src, configMap: {name: fw}}
extraVolumeMounts:
  - {name: firmware-src, mountPath: /src, readOnly: true}
metrics:
  serviceMonitor:
    enabled: true
    relabelings:
      - {sourceLabels: [__meta_kubernetes_pod_node_name], targetLabel: node}
    metricRelabelings:
      - {action: drop, regex: "go_.*", sourceLabels: [__name__]}
"#,
    )
    .unwrap();
    let objects = template(cluster, &chart_dir(), "pf", "voice", &["-f", path(&values)]);

    let pod = &one(&objects, "Deployment")["spec"]["template"]["spec"];
    assert_eq!(pod["initContainers"][0]["name"], "copy-firmware");
    let volumes = pod["volumes"].as_array().unwrap();
    assert!(volumes.iter().any(|v| v["name"] == "firmware-src"));
    assert!(
        volumes.iter().any(|v| v["name"] == "firmware"),
        "the firmware volume stays"
    );
    let mounts = container(&objects)["volumeMounts"].as_array().unwrap();
    assert!(mounts.iter().any(|m| m["mountPath"] == "/src"));

    let endpoint = &one(&objects, "ServiceMonitor")["spec"]["endpoints"][0];
    assert_eq!(endpoint["relabelings"][0]["targetLabel"], "node");
    assert_eq!(endpoint["metricRelabelings"][0]["action"], "drop");

    let label = |role: &Value, key: &str| {
        role["metadata"]["labels"][format!("rbac.authorization.k8s.io/{key}")] == "true"
    };
    let roles = of_kind(&objects, "ClusterRole");
    let view = roles
        .iter()
        .find(|r| label(r, "aggregate-to-view"))
        .expect("view role");
    let edit = roles
        .iter()
        .find(|r| label(r, "aggregate-to-edit"))
        .expect("edit role");
    assert!(label(edit, "aggregate-to-admin"));
    let verbs = |role: &Value| role["rules"][0]["verbs"].as_array().unwrap().clone();
    assert!(!verbs(view).contains(&json!("create")), "view reads only");
    assert!(verbs(edit).contains(&json!("create")));
    assert!(
        !edit["rules"][0]["resources"]
            .as_array()
            .unwrap()
            .contains(&json!("phoneschedules/status")),
        "status is the controller's"
    );

    // Switched off, no aggregated roles.
    let objects = template(
        cluster,
        &chart_dir(),
        "pf",
        "voice",
        &["--set", "rbac.aggregateToDefaultRoles=false"],
    );
    assert!(of_kind(&objects, "ClusterRole").is_empty());
}

#[test]
fn the_chart_readme_lists_every_value() {
    fn leaves(prefix: &str, value: &serde_yaml_ng::Value, out: &mut Vec<String>) {
        match value.as_mapping().filter(|m| !m.is_empty()) {
            Some(map) => {
                for (key, child) in map {
                    let key = key.as_str().expect("string keys");
                    let path = if prefix.is_empty() {
                        key.to_owned()
                    } else {
                        format!("{prefix}.{key}")
                    };
                    leaves(&path, child, out);
                }
            }
            None => out.push(prefix.to_owned()),
        }
    }
    let values: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(&std::fs::read_to_string(chart_dir().join("values.yaml")).unwrap())
            .unwrap();
    let readme = std::fs::read_to_string(chart_dir().join("README.md")).unwrap();
    let mut keys = Vec::new();
    leaves("", &values, &mut keys);
    assert!(keys.len() > 50, "{keys:?}");
    let missing: Vec<&String> = keys
        .iter()
        .filter(|k| !readme.contains(&format!("| `{k}` |")))
        .collect();
    assert!(
        missing.is_empty(),
        "charts/phonefleet/README.md lacks {missing:?}"
    );
}

/// Issue #12 item 4: each authentication mode is one value; the Secrets it needs default to
/// fixed names, mounted by the kubelet (no RBAC on Secrets).
#[tokio::test]
async fn one_value_turns_each_authentication_mode_on() {
    let cluster = support::cluster().await;
    let render = |mode: Option<&str>| {
        let set = mode.map(|m| format!("provisioning.auth.mode={m}"));
        let extra: Vec<&str> = match &set {
            Some(s) => vec!["--set", s.as_str()],
            None => vec![],
        };
        template(cluster, &chart_dir(), "pf", "voice", &extra)
    };
    let secret_volumes = |objects: &[Value]| -> Vec<(String, String)> {
        one(objects, "Deployment")["spec"]["template"]["spec"]["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|v| {
                Some((
                    v["name"].as_str()?.to_owned(),
                    v["secret"]["secretName"].as_str()?.to_owned(),
                ))
            })
            .collect()
    };
    let has = |a: &[String], flag: &str| a.iter().any(|x| x == flag);

    // Default: compatible, no authentication, no Secret mounted.
    let objects = render(None);
    let a = args(&objects);
    assert!(has(&a, "--auth-mode=none"), "{a:?}");
    assert!(has(&a, "--failure-burst=30"), "{a:?}");
    assert!(
        !a.iter().any(|x| x.starts_with("--credentials-file")),
        "{a:?}"
    );
    assert!(secret_volumes(&objects).is_empty());

    for mode in ["basic", "digest"] {
        let objects = render(Some(mode));
        let a = args(&objects);
        assert!(has(&a, &format!("--auth-mode={mode}")), "{a:?}");
        assert!(
            has(
                &a,
                "--credentials-file=/etc/phonefleet/credentials/credentials"
            ),
            "{a:?}"
        );
        assert_eq!(
            secret_volumes(&objects),
            [(
                "credentials".to_owned(),
                "pf-phonefleet-prov-credentials".to_owned()
            )]
        );
    }

    let objects = render(Some("client-cert"));
    let a = args(&objects);
    for flag in [
        "--auth-mode=client-cert",
        "--tls-cert=/etc/phonefleet/tls/tls.crt",
        "--tls-key=/etc/phonefleet/tls/tls.key",
        "--client-ca=/etc/phonefleet/client-ca/ca.crt",
    ] {
        assert!(has(&a, flag), "{flag} not in {a:?}");
    }
    let mut volumes = secret_volumes(&objects);
    volumes.sort();
    assert_eq!(
        volumes,
        [
            (
                "client-ca".to_owned(),
                "pf-phonefleet-prov-client-ca".to_owned()
            ),
            ("tls".to_owned(), "pf-phonefleet-prov-tls".to_owned()),
        ]
    );
    let mounts: Vec<&str> = container(&objects)["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["mountPath"].as_str())
        .collect();
    assert!(mounts.contains(&"/etc/phonefleet/client-ca"), "{mounts:?}");
}

/// Issue #14: the overlay's values become the server's flags, and its Secrets are mounted only
/// when named.
#[tokio::test]
async fn upstream_values_render_the_overlay_flags_and_mounts() {
    let cluster = support::cluster().await;
    let has = |a: &[String], flag: &str| a.iter().any(|x| x == flag);
    let objects = template(cluster, &chart_dir(), "pf", "voice", &[]);
    let a = args(&objects);
    assert!(!a.iter().any(|x| x.starts_with("--upstream")), "{a:?}");
    let objects = template(
        cluster,
        &chart_dir(),
        "pf",
        "voice",
        &[
            "--set",
            "provisioning.upstream.url=https://old-prov.example.net/prov",
            "--set",
            "provisioning.upstream.caSecret.name=old-ca",
            "--set",
            "provisioning.upstream.credentialsSecret.name=old-login",
            "--set",
            "provisioning.auth.mode=basic",
        ],
    );
    let a = args(&objects);
    for flag in [
        "--upstream=https://old-prov.example.net/prov",
        "--upstream-timeout=5",
        "--upstream-max-body-bytes=1048576",
        "--upstream-cache-bytes=33554432",
        "--upstream-max-connections=64",
        "--upstream-ca-file=/etc/phonefleet/upstream-ca/ca.crt",
        "--upstream-credentials-file=/etc/phonefleet/upstream-credentials/credentials",
    ] {
        assert!(has(&a, flag), "{flag} not in {a:?}");
    }
    let spec = &one(&objects, "Deployment")["spec"]["template"]["spec"];
    let secrets: Vec<&str> = spec["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v["secret"]["secretName"].as_str())
        .collect();
    assert!(
        secrets.contains(&"old-ca") && secrets.contains(&"old-login"),
        "{secrets:?}"
    );
    // A URL that is not http(s) is refused by the schema.
    let out = helm(
        cluster,
        &[
            "template",
            "pf",
            chart_dir().to_str().unwrap(),
            "--kube-version",
            common::KUBE_VERSION,
            "--set",
            "provisioning.upstream.url=ftp://old",
        ],
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("upstream"));
}
