//! Proof that the local control plane is a real one: the behaviour later tests rely on
//! (storage, CRDs, kubectl, garbage collection, namespace deletion) really happens.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::runtime::wait::{await_condition, conditions};

fn config_map(name: &str, data: &[(&str, &str)]) -> ConfigMap {
    let mut cm = ConfigMap::default();
    cm.metadata.name = Some(name.into());
    cm.data = Some(
        data.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<BTreeMap<_, _>>(),
    );
    cm
}

#[tokio::test]
async fn api_server_is_a_real_kubernetes_release() {
    let cluster = support::cluster().await;
    let version = cluster.client().await.apiserver_version().await.unwrap();
    println!("kube-apiserver {}", version.git_version);
    assert_eq!(version.major, "1");
    assert!(version.git_version.starts_with("v1.3"), "{version:?}");
}

#[tokio::test]
async fn config_map_round_trips_through_etcd() {
    let cluster = support::cluster().await;
    let ns = cluster.namespace("proof-cm").await;
    let api: Api<ConfigMap> = Api::namespaced(cluster.client().await, &ns.name);
    api.create(
        &PostParams::default(),
        &config_map("phones", &[("count", "400")]),
    )
    .await
    .unwrap();
    let read = api.get("phones").await.unwrap();
    assert_eq!(read.data.unwrap()["count"], "400");
    assert!(read.metadata.uid.is_some(), "the server assigns a uid");
    ns.delete().await;
}

#[tokio::test]
async fn crd_is_established_and_serves_custom_resources() {
    let cluster = support::cluster().await;
    let client = cluster.client().await;
    let crd: CustomResourceDefinition = serde_yaml_ng::from_str(
        r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: probes.proof.phonefleet.io}
spec:
  group: proof.phonefleet.io
  scope: Namespaced
  names: {kind: Probe, plural: probes, singular: probe}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            properties:
              answer: {type: integer, minimum: 0}
"#,
    )
    .unwrap();
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    match crds.create(&PostParams::default(), &crd).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => panic!("create CRD: {e}"),
    }
    tokio::time::timeout(
        Duration::from_secs(30),
        await_condition(
            crds,
            "probes.proof.phonefleet.io",
            conditions::is_crd_established(),
        ),
    )
    .await
    .expect("CRD established within 30s")
    .unwrap();

    let ns = cluster.namespace("proof-crd").await;
    let gvk = GroupVersionKind::gvk("proof.phonefleet.io", "v1", "Probe");
    let resource = ApiResource::from_gvk_with_plural(&gvk, "probes");
    let api: Api<DynamicObject> = Api::namespaced_with(client, &ns.name, &resource);
    let probe =
        DynamicObject::new("p1", &resource).data(serde_json::json!({"spec": {"answer": 42}}));
    api.create(&PostParams::default(), &probe).await.unwrap();
    let bad = DynamicObject::new("p2", &resource).data(serde_json::json!({"spec": {"answer": -1}}));
    let err = api.create(&PostParams::default(), &bad).await.unwrap_err();
    assert!(
        err.to_string().contains("spec.answer"),
        "schema enforced: {err}"
    );
    let listed = api.list(&ListParams::default()).await.unwrap();
    let names: Vec<_> = listed
        .items
        .iter()
        .filter_map(|o| o.metadata.name.clone())
        .collect();
    assert_eq!(names, ["p1"]);
    ns.delete().await;
}

#[tokio::test]
async fn kubectl_talks_to_the_same_server() {
    let cluster = support::cluster().await;
    let ns = cluster.namespace("proof-kubectl").await;
    let api: Api<ConfigMap> = Api::namespaced(cluster.client().await, &ns.name);
    api.create(&PostParams::default(), &config_map("made-by-kube-rs", &[]))
        .await
        .unwrap();
    let out = cluster.kubectl_ok(&["get", "configmaps", "-n", &ns.name, "-o", "name"]);
    assert!(
        out.lines().any(|l| l == "configmap/made-by-kube-rs"),
        "{out}"
    );
    let version = cluster.kubectl_ok(&["version", "-o", "json"]);
    assert!(version.contains("\"serverVersion\""), "{version}");
    ns.delete().await;
}

#[tokio::test]
async fn garbage_collector_deletes_children_of_a_deleted_owner() {
    let cluster = support::cluster().await;
    let ns = cluster.namespace("proof-gc").await;
    let api: Api<ConfigMap> = Api::namespaced(cluster.client().await, &ns.name);
    let owner = api
        .create(&PostParams::default(), &config_map("owner", &[]))
        .await
        .unwrap();
    let mut child = config_map("child", &[]);
    child.metadata.owner_references = Some(vec![OwnerReference {
        api_version: "v1".into(),
        kind: "ConfigMap".into(),
        name: "owner".into(),
        uid: owner.metadata.uid.clone().unwrap(),
        ..Default::default()
    }]);
    api.create(&PostParams::default(), &child).await.unwrap();
    api.delete("owner", &DeleteParams::background())
        .await
        .unwrap();
    support::eventually(
        "the child to be garbage collected",
        Duration::from_secs(60),
        || {
            let api = api.clone();
            async move { api.get_opt("child").await.unwrap().is_none().then_some(()) }
        },
    )
    .await;
    ns.delete().await;
}

#[tokio::test]
async fn namespace_deletion_completes_with_content_inside() {
    let cluster = support::cluster().await;
    let ns = cluster.namespace("proof-nsdel").await;
    let client = cluster.client().await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns.name);
    cms.create(&PostParams::default(), &config_map("content", &[]))
        .await
        .unwrap();
    let name = ns.name.clone();
    ns.delete().await;
    let namespaces: Api<Namespace> = Api::all(client);
    support::eventually("the namespace to be gone", Duration::from_secs(60), || {
        let (namespaces, name) = (namespaces.clone(), name.clone());
        async move {
            namespaces
                .get_opt(&name)
                .await
                .unwrap()
                .is_none()
                .then_some(())
        }
    })
    .await;
}
