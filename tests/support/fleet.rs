//! The example fleet in a test namespace, and what tests ask of it: Ready, served files, edits.
#![allow(dead_code)]

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ListParams, Patch, PatchParams};
use phonefleet::api::{PhoneEntry, PhoneSite};
use phonefleet::children::{COMPONENT_CONFIG, LABEL_COMPONENT, LABEL_SCHEDULE};
use phonefleet::server::index::Index;

use super::TestCluster;

/// `examples/fleet.yaml` moved into `namespace`, in a file `kubectl apply -f` can read.
pub fn example_fleet(namespace: &str) -> tempfile::NamedTempFile {
    let text = std::fs::read_to_string(super::repo_root().join("examples/fleet.yaml"))
        .expect("examples/fleet.yaml")
        .replace("namespace: voice", &format!("namespace: {namespace}"));
    let file = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(file.path(), text).expect("write fixture");
    file
}

/// Applies the example fleet to `namespace` with kubectl.
pub fn apply_example_fleet(cluster: &TestCluster, namespace: &str) -> tempfile::NamedTempFile {
    let file = example_fleet(namespace);
    cluster.kubectl_ok(&["apply", "-f", file.path().to_str().expect("utf-8 path")]);
    file
}

/// `kubectl wait --for=condition=Ready` on a schedule, off the async runtime so an in-process
/// controller keeps running meanwhile.
pub async fn wait_ready(cluster: &TestCluster, namespace: &str, schedule: &str) {
    let (kubectl, kubeconfig) = (cluster.bin_dir.join("kubectl"), cluster.kubeconfig.clone());
    let (namespace, target) = (namespace.to_owned(), format!("phoneschedule/{schedule}"));
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(kubectl)
            .env("KUBECONFIG", kubeconfig)
            .args([
                "wait",
                "--for=condition=Ready",
                "--timeout=90s",
                "-n",
                &namespace,
                &target,
            ])
            .output()
            .expect("kubectl wait")
    })
    .await
    .expect("join kubectl wait");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Every file the provisioning server serves from the schedule's rendered-config ConfigMaps,
/// by file name: rendered on request from the stored decision by the server's own index.
pub async fn served_files(
    client: &kube::Client,
    namespace: &str,
    schedule: &str,
) -> BTreeMap<String, String> {
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let maps = cms
        .list(&ListParams::default().labels(&format!(
            "{LABEL_SCHEDULE}={schedule},{LABEL_COMPONENT}={COMPONENT_CONFIG}"
        )))
        .await
        .map(|list| list.items)
        .unwrap_or_default();
    Index::from_maps(&maps)
        .all_files()
        .into_iter()
        .map(|(name, file)| (name, String::from_utf8_lossy(&file.body).into_owned()))
        .collect()
}

/// Adds a GXP2170 phone to a site, as an operator's edit would.
pub async fn add_phone(client: &kube::Client, namespace: &str, site: &str, mac: &str) {
    let sites: Api<PhoneSite> = Api::namespaced(client.clone(), namespace);
    let mut spec = sites.get(site).await.expect("site").spec;
    spec.phones.push(PhoneEntry {
        mac: mac.into(),
        model: "GXP2170".into(),
        family: None,
    });
    sites
        .patch(
            site,
            &PatchParams::apply("test").force(),
            &Patch::Apply(serde_json::json!({
                "apiVersion": "phonefleet.io/v1alpha1",
                "kind": "PhoneSite",
                "spec": spec,
            })),
        )
        .await
        .expect("edit site");
}

/// Shard 0 of `site`'s rendered configs for `schedule`, shaped as the controller writes it
/// (name, labels, controller owner reference), holding `data` (files and index).
pub fn rendered_config_map(
    schedule: &phonefleet::api::PhoneSchedule,
    site: &str,
    data: BTreeMap<String, String>,
) -> ConfigMap {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
    use kube::ResourceExt;
    use phonefleet::children::{
        COMPONENT_CONFIG, LABEL_COMPONENT, LABEL_MANAGED_BY, LABEL_SITE, MANAGED_BY,
    };

    let name = schedule.name_any();
    let mut cm = ConfigMap::default();
    cm.metadata.name = Some(phonefleet::children::config_map_name(&name, site, 0));
    cm.metadata.labels = Some(BTreeMap::from([
        (LABEL_COMPONENT.into(), COMPONENT_CONFIG.into()),
        (LABEL_MANAGED_BY.into(), MANAGED_BY.into()),
        (LABEL_SCHEDULE.into(), name.clone()),
        (LABEL_SITE.into(), site.into()),
    ]));
    cm.metadata.owner_references = Some(vec![OwnerReference {
        api_version: "phonefleet.io/v1alpha1".into(),
        kind: "PhoneSchedule".into(),
        name,
        uid: schedule.uid().expect("schedule uid"),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }]);
    cm.data = Some(data);
    cm
}

/// Asserts that `served` (the file named `name`) is byte for byte what `phonefleet render`
/// prints for `mac` from the manifest at `path` at `now`, with the test controllers' server URL.
pub fn assert_served_as_rendered(path: &str, mac: &str, now: &str, name: &str, served: &str) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_phonefleet"))
        .args(["render", "-f", path, "--mac", mac, "--now", now])
        .args(["--server-url", super::controller::SERVER_URL])
        .output()
        .expect("run phonefleet render");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        served,
        "{name}: served bytes differ from `phonefleet render`"
    );
}
