//! Helpers shared by the Helm tests: run helm against the test control plane, parse rendered
//! manifests, find objects.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Output;

use serde::Deserialize;
use serde_json::Value;

use crate::support::{self, TestCluster};

/// The Kubernetes version of the test control plane, for `helm template --kube-version`.
pub const KUBE_VERSION: &str = "1.37.2";

/// The chart under test.
pub fn chart_dir() -> PathBuf {
    support::repo_root().join("charts/phonefleet")
}

/// The values file that switches every optional feature on.
pub fn all_features_values() -> PathBuf {
    chart_dir().join("ci/all-features-values.yaml")
}

/// Runs helm with `args`; returns the output, successful or not.
pub fn helm(cluster: &TestCluster, args: &[&str]) -> Output {
    cluster.tool("helm").args(args).output().expect("run helm")
}

/// Runs helm and asserts success; returns stdout.
pub fn helm_ok(cluster: &TestCluster, args: &[&str]) -> String {
    let out = helm(cluster, args);
    assert!(
        out.status.success(),
        "helm {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Every document of a multi-document YAML stream (empty documents dropped).
pub fn parse_documents(yaml: &str) -> Vec<Value> {
    serde_yaml_ng::Deserializer::from_str(yaml)
        .map(|doc| Value::deserialize(doc).expect("rendered YAML parses"))
        .filter(|v| !v.is_null())
        .collect()
}

/// `helm template` of `chart` as release `release` in `namespace` with extra `args`, parsed.
pub fn template(
    cluster: &TestCluster,
    chart: &Path,
    release: &str,
    namespace: &str,
    args: &[&str],
) -> Vec<Value> {
    let chart = chart.to_str().expect("utf-8 path");
    // The chart's kubeVersion constraint needs the cluster's version: `helm template` assumes
    // an old default otherwise.
    let mut all = vec![
        "template",
        release,
        chart,
        "--namespace",
        namespace,
        "--kube-version",
        KUBE_VERSION,
    ];
    all.extend_from_slice(args);
    parse_documents(&helm_ok(cluster, &all))
}

/// The objects of `kind`.
pub fn of_kind<'a>(objects: &'a [Value], kind: &str) -> Vec<&'a Value> {
    objects.iter().filter(|o| o["kind"] == kind).collect()
}

/// The one object of `kind`; panics when there is not exactly one.
pub fn one<'a>(objects: &'a [Value], kind: &str) -> &'a Value {
    let found = of_kind(objects, kind);
    assert_eq!(
        found.len(),
        1,
        "expected exactly one {kind}, rendered {}",
        found.len()
    );
    found[0]
}

/// The container `phonefleet` of the Deployment.
pub fn container(objects: &[Value]) -> &Value {
    one(objects, "Deployment")["spec"]["template"]["spec"]["containers"]
        .as_array()
        .expect("containers")
        .iter()
        .find(|c| c["name"] == "phonefleet")
        .expect("container phonefleet")
}

/// The container's arguments as strings.
pub fn args(objects: &[Value]) -> Vec<String> {
    container(objects)["args"]
        .as_array()
        .expect("args")
        .iter()
        .map(|a| a.as_str().expect("string arg").to_owned())
        .collect()
}

/// RBAC rules flattened to sorted `group/resource:verb` strings.
pub fn flat_rules(role: &Value) -> Vec<String> {
    let mut out = Vec::new();
    for rule in role["rules"].as_array().expect("rules") {
        for group in rule["apiGroups"].as_array().expect("apiGroups") {
            for resource in rule["resources"].as_array().expect("resources") {
                for verb in rule["verbs"].as_array().expect("verbs") {
                    out.push(format!(
                        "{}/{}:{}",
                        group.as_str().unwrap(),
                        resource.as_str().unwrap(),
                        verb.as_str().unwrap()
                    ));
                }
            }
        }
    }
    out.sort();
    out
}

/// Exactly the API access `phonefleet run` needs in a watched namespace (docs/helm.md).
pub const EXPECTED_RULES: &[&str] = &[
    "/configmaps:create",
    "/configmaps:delete",
    "/configmaps:get",
    "/configmaps:list",
    "/configmaps:patch",
    "/configmaps:watch",
    "coordination.k8s.io/leases:create",
    "coordination.k8s.io/leases:get",
    "coordination.k8s.io/leases:list",
    "coordination.k8s.io/leases:update",
    "coordination.k8s.io/leases:watch",
    "events.k8s.io/events:create",
    "events.k8s.io/events:patch",
    "phonefleet.io/phoneschedules/status:patch",
    "phonefleet.io/phoneschedules:list",
    "phonefleet.io/phoneschedules:watch",
    "phonefleet.io/phonesites/status:patch",
    "phonefleet.io/phonesites:list",
    "phonefleet.io/phonesites:watch",
];

/// Uninstalls a release when dropped, so a failing test leaves no cluster-wide objects
/// (ClusterRole, ClusterRoleBinding) behind; namespace deletion takes care of the rest.
pub struct ReleaseGuard<'a> {
    pub cluster: &'a TestCluster,
    pub release: String,
    pub namespace: String,
}

impl Drop for ReleaseGuard<'_> {
    fn drop(&mut self) {
        let _ = helm(
            self.cluster,
            &[
                "uninstall",
                &self.release,
                "-n",
                &self.namespace,
                "--ignore-not-found",
            ],
        );
    }
}
