//! The CRDs against the real API server: every manifest of `tests/invalid/` is refused with a
//! message naming the offending field, every manifest of `tests/valid/` is accepted by client-
//! and server-side apply and reads back with the same spec, and `kubectl explain` and `kubectl
//! get` show what the types document.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use phonefleet::api::{PhoneScheduleSpec, PhoneSiteSpec};
use serde::Deserialize;
use serde_json::Value;

fn yaml_files(dir: &str) -> Vec<PathBuf> {
    let dir = support::repo_root().join(dir);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

/// The `# expect: <field path>` line of an invalid manifest.
fn expected_field(path: &Path) -> String {
    let text = std::fs::read_to_string(path).expect("read manifest");
    text.lines()
        .find_map(|l| l.strip_prefix("# expect: "))
        .unwrap_or_else(|| panic!("{} has no '# expect: <field>' line", path.display()))
        .trim()
        .to_owned()
}

fn documents(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).expect("read manifest");
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|doc| Value::deserialize(doc).expect("YAML document"))
        .filter(|v| !v.is_null())
        .collect()
}

#[test]
fn the_invalid_corpus_is_large_enough() {
    let files = yaml_files("tests/invalid");
    assert!(files.len() >= 30, "only {} invalid manifests", files.len());
    for file in &files {
        assert_eq!(
            documents(file).len(),
            1,
            "{}: one object per file",
            file.display()
        );
        expected_field(file);
    }
}

#[tokio::test]
async fn invalid_manifests_are_refused_naming_the_field() {
    let cluster = support::cluster().await;
    cluster.apply_crds().await;
    let ns = cluster.namespace("crd-invalid").await;
    let mut failures = Vec::new();
    for file in yaml_files("tests/invalid") {
        let field = expected_field(&file);
        let path = file.to_str().expect("utf-8 path");
        let out = cluster.kubectl(&["apply", "-f", path, "-n", &ns.name]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        if out.status.success() {
            failures.push(format!(
                "{path}: accepted, expected a refusal naming {field}"
            ));
        } else if !stderr.contains(&field) {
            failures.push(format!("{path}: refused without naming {field}:\n{stderr}"));
        }
    }
    ns.delete().await;
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The valid manifests: `tests/valid/` and the operator examples of `examples/`.
fn valid_manifests() -> Vec<PathBuf> {
    let mut files = yaml_files("tests/valid");
    files.extend(yaml_files("examples"));
    files
}

/// Applies every valid manifest with `apply_args` (moved into the test's namespace), then
/// reads each object back and compares its spec, read as the controller reads it (API-server
/// defaults are the serde defaults).
async fn valid_manifests_round_trip(apply_args: &[&str], prefix: &str) {
    let cluster = support::cluster().await;
    cluster.apply_crds().await;
    let ns = cluster.namespace(prefix).await;
    let scratch = tempfile::tempdir().expect("temp dir");
    for file in valid_manifests() {
        let label = file.display().to_string();
        let mut docs = documents(&file);
        let mut yaml = String::new();
        for doc in &mut docs {
            doc["metadata"]["namespace"] = Value::String(ns.name.clone());
            yaml.push_str("---\n");
            yaml.push_str(&serde_yaml_ng::to_string(doc).expect("YAML"));
        }
        let moved = scratch.path().join(file.file_name().expect("file name"));
        std::fs::write(&moved, yaml).expect("write manifest");
        let path = moved.to_str().expect("utf-8 path");
        let mut args = vec!["apply", "-f", path];
        args.extend_from_slice(apply_args);
        cluster.kubectl_ok(&args);
        for doc in &docs {
            let kind = doc["kind"].as_str().expect("kind");
            let name = doc["metadata"]["name"].as_str().expect("metadata.name");
            let got: Value = serde_json::from_str(
                &cluster.kubectl_ok(&["get", kind, name, "-n", &ns.name, "-o", "json"]),
            )
            .expect("kubectl get -o json");
            let (want, got) = (doc["spec"].clone(), got["spec"].clone());
            match kind {
                "PhoneSchedule" => assert_eq!(
                    serde_json::from_value::<PhoneScheduleSpec>(got).expect("stored spec"),
                    serde_json::from_value::<PhoneScheduleSpec>(want).expect("applied spec"),
                    "{label}: {name}"
                ),
                "PhoneSite" => assert_eq!(
                    serde_json::from_value::<PhoneSiteSpec>(got).expect("stored spec"),
                    serde_json::from_value::<PhoneSiteSpec>(want).expect("applied spec"),
                    "{label}: {name}"
                ),
                other => panic!("{label}: unexpected kind {other}"),
            }
        }
        // Applying the same file again changes nothing.
        let again = cluster.kubectl_ok(&args);
        assert!(
            !again.contains("configured"),
            "{label}: re-apply changed something:\n{again}"
        );
    }
    ns.delete().await;
}

#[tokio::test]
async fn valid_manifests_round_trip_through_client_side_apply() {
    valid_manifests_round_trip(&[], "crd-csa").await;
}

#[tokio::test]
async fn valid_manifests_round_trip_through_server_side_apply() {
    valid_manifests_round_trip(&["--server-side", "--field-manager", "operator"], "crd-ssa").await;
}

#[tokio::test]
async fn kubectl_explain_teaches_the_fields() {
    let cluster = support::cluster().await;
    cluster.apply_crds().await;
    // The API server publishes a new CRD's OpenAPI a moment after it is Established.
    let out = support::eventually("kubectl explain", Duration::from_secs(30), || async {
        let out = cluster.kubectl(&["explain", "phoneschedule.spec"]);
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    })
    .await;
    for text in [
        "When the phones of the selected sites may provision",
        "siteSelector",
        "Setting or changing it starts a rollout",
    ] {
        assert!(
            out.contains(text),
            "explain phoneschedule.spec lacks {text:?}:\n{out}"
        );
    }
    let interval = cluster.kubectl_ok(&[
        "explain",
        "phoneschedule.spec.provisioning.weekly.intervalWeeks",
    ]);
    assert!(interval.contains("P25023"), "{interval}");
    let mac = cluster.kubectl_ok(&["explain", "phonesite.spec.phones.mac"]);
    assert!(mac.contains("12 hex digits"), "{mac}");
}

#[tokio::test]
async fn kubectl_get_shows_the_printer_columns() {
    let cluster = support::cluster().await;
    cluster.apply_crds().await;
    let ns = cluster.namespace("crd-get").await;
    let path = support::repo_root().join("tests/valid/office-fleet.yaml");
    cluster.kubectl_ok(&["apply", "-f", path.to_str().expect("utf-8"), "-n", &ns.name]);
    let schedules = cluster.kubectl_ok(&["get", "psched", "-n", &ns.name]);
    let header = schedules.lines().next().unwrap_or_default();
    for column in ["NAME", "PHASE", "STAGE", "UPGRADED", "NEXT WINDOW", "AGE"] {
        assert!(
            header.contains(column),
            "psched lacks {column}:\n{schedules}"
        );
    }
    let sites = cluster.kubectl_ok(&["get", "psite", "-n", &ns.name]);
    let header = sites.lines().next().unwrap_or_default();
    for column in ["ZONE", "PHONES", "CAP", "AGE"] {
        assert!(header.contains(column), "psite lacks {column}:\n{sites}");
    }
    assert!(sites.contains("Europe/Paris"), "{sites}");
    // The category lists both kinds at once.
    let all = cluster.kubectl_ok(&["get", "phonefleet", "-n", &ns.name, "-o", "name"]);
    assert!(
        all.contains("phoneschedule.phonefleet.io/offices")
            && all.contains("phonesite.phonefleet.io/paris-hq"),
        "{all}"
    );
    ns.delete().await;
}
