//! Tenancy of the provisioning server in cluster-wide mode (issue #12 item 3), against the real
//! local control plane: a MAC belongs to at most one namespace, a conflict is never silently
//! won, and only the controller's own rendered configs are read. Each failed on the code before
//! the fix (the alphabetically first `namespace/name` won; any ConfigMap labelled as a rendered
//! config was served).

mod support;

use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams};
use phonefleet::children;
use phonefleet::render::Format;
use phonefleet::server::{Outcome, ServerConfig, ServerStats};

use support::provisioning::{OLD, TestPhone, fixture, get, http, mac, started, ua};

/// A MAC no other test uses: a cluster-wide server sees every test's namespaces.
fn contested() -> phonefleet::core::Mac {
    mac(0x00c0_ff01)
}

fn shard_name() -> String {
    children::config_map_name("fw", "paris", 0)
}

#[tokio::test]
async fn two_namespaces_claiming_one_phone_are_both_refused_until_one_lets_go() {
    let phone = [TestPhone {
        mac: contested(),
        slot: None,
    }];
    // `tenant-a…` sorts first: before the fix it won the phone.
    let a = fixture("tenant-a", 3, &phone, 1024).await;
    let b = fixture("tenant-b", 3, &phone, 1024).await;
    let cluster_wide = ServerConfig {
        scope: phonefleet::scope::WatchScope::Cluster,
        ..a.config("r1")
    };
    let srv = started(cluster_wide, a.client.clone(), ServerStats::new()).await;
    let http = http();
    let path = format!("/{}", Format::Xml.file_name(contested()));
    let agent = ua(contested(), OLD);
    // Answered exactly as a phone nobody knows.
    let nobody = get(
        &http,
        srv.local_addr(),
        &format!("/{}", Format::Xml.file_name(mac(0x00c0_ffff))),
        &[],
    )
    .await;
    for headers in [vec![], vec![("user-agent", agent.as_str())]] {
        let reply = get(&http, srv.local_addr(), &path, &headers).await;
        assert_eq!(reply.status, 404, "neither namespace wins the phone");
        assert_eq!(
            reply.body, nobody.body,
            "the same answer as an unknown phone"
        );
    }
    // Reported, not silent: the conflict is counted (and logged with both namespaces).
    assert_eq!(srv.stats().outcome(Outcome::Conflict), 2);
    assert_eq!(srv.stats().outcome(Outcome::ConfigServed), 0);

    // Tenant A lets go of the phone: tenant B's file is served.
    Api::<ConfigMap>::namespaced(a.client.clone(), &a.ns.name)
        .delete(&shard_name(), &DeleteParams::default())
        .await
        .expect("delete tenant A's shard");
    let want = b.files[&Format::Xml.file_name(contested())].clone();
    support::eventually(
        "tenant B's file once tenant A let go",
        Duration::from_secs(30),
        || {
            let (http, addr, path) = (http.clone(), srv.local_addr(), path.clone());
            let want = want.clone();
            async move {
                let reply = get(&http, addr, &path, &[]).await;
                (reply.status == 200 && reply.body == want.as_bytes()).then_some(())
            }
        },
    )
    .await;
    srv.shutdown().await;
    a.ns.delete().await;
    b.ns.delete().await;
}

#[tokio::test]
async fn a_config_map_the_controller_did_not_label_as_its_own_is_not_served() {
    let phone = mac(0x00c0_ff02);
    let f = fixture(
        "tenant-forged",
        3,
        &[TestPhone {
            mac: phone,
            slot: None,
        }],
        1024,
    )
    .await;
    // The same shard without the controller's managed-by label: someone else's ConfigMap.
    let patch = serde_json::json!({
        "metadata": {"labels": {children::LABEL_MANAGED_BY: null}}
    });
    Api::<ConfigMap>::namespaced(f.client.clone(), &f.ns.name)
        .patch(
            &shard_name(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
        .expect("strip the label");
    let srv = started(f.config("r1"), f.client.clone(), ServerStats::new()).await;
    let reply = get(
        &http(),
        srv.local_addr(),
        &format!("/{}", Format::Xml.file_name(phone)),
        &[],
    )
    .await;
    assert_eq!(reply.status, 404, "only the controller's rendered configs");
    srv.shutdown().await;
    f.ns.delete().await;
}

/// A server watching a list of namespaces (`--namespace a,b`, the chart's `watch.scope:
/// Namespaces`, so that RBAC can be a Role in each) serves the phones of those namespaces, not
/// those of a namespace outside the list, and follows changes in each after its first sync.
#[tokio::test]
async fn a_server_watching_a_list_of_namespaces_serves_those_and_no_other() {
    let phones: Vec<_> = (0..3).map(|i| mac(0x00c0_ff10 + i)).collect();
    let one = |m| [TestPhone { mac: m, slot: None }];
    let a = fixture("scope-a", 3, &one(phones[0]), 1024).await;
    let b = fixture("scope-b", 3, &one(phones[1]), 1024).await;
    let outside = fixture("scope-c", 3, &one(phones[2]), 1024).await;
    let config = ServerConfig {
        scope: phonefleet::scope::WatchScope::from_list([a.ns.name.clone(), b.ns.name.clone()]),
        ..a.config("r1")
    };
    let srv = started(config, a.client.clone(), ServerStats::new()).await;
    let http = http();
    let path = |m| format!("/{}", Format::Xml.file_name(m));
    for (f, m) in [(&a, phones[0]), (&b, phones[1])] {
        let reply = get(&http, srv.local_addr(), &path(m), &[]).await;
        assert_eq!(reply.status, 200, "{}'s phone", f.ns.name);
        assert_eq!(reply.body, f.files[&Format::Xml.file_name(m)].as_bytes());
    }
    let reply = get(&http, srv.local_addr(), &path(phones[2]), &[]).await;
    assert_eq!(
        reply.status, 404,
        "a namespace outside the list is not served"
    );

    // A change in the second namespace after the first sync reaches the index.
    Api::<ConfigMap>::namespaced(b.client.clone(), &b.ns.name)
        .delete(&shard_name(), &DeleteParams::default())
        .await
        .expect("delete b's shard");
    support::eventually("b's phone gone", Duration::from_secs(30), || {
        let (http, addr, p) = (http.clone(), srv.local_addr(), path(phones[1]));
        async move { (get(&http, addr, &p, &[]).await.status == 404).then_some(()) }
    })
    .await;
    srv.shutdown().await;
    for f in [a, b, outside] {
        f.ns.delete().await;
    }
}
