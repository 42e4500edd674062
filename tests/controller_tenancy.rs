//! A phone claimed by two namespaces (issue #12 item 3), seen by a controller watching a list
//! of namespaces on the real API server: each schedule whose sites list the MAC gets
//! `Degraded=True, reason PhoneConflict` and a Warning event, and the condition clears when one
//! side lets go. Before, the conflict was only a log line and a request counter of the
//! provisioning server. A third namespace, outside the list, claims the phone too and is
//! neither reconciled nor counted.

mod support;

use std::time::Duration;

use k8s_openapi::api::events::v1::Event;
use kube::Api;
use kube::api::{ListParams, Patch, PatchParams};
use phonefleet::api::{PhoneSchedule, PhoneSite};
use phonefleet::clock::Clock;
use phonefleet::controller::desired::{condition, reason};
use phonefleet::controller::{self, ControllerConfig, NoObserver};
use tokio_util::sync::CancellationToken;

const CONTESTED: &str = "00:0b:82:c0:ff:01";

async fn tenant(client: &kube::Client, ns: &str, own_mac: &str) {
    let sites: Api<PhoneSite> = Api::namespaced(client.clone(), ns);
    let site = serde_json::json!({
        "apiVersion": "phonefleet.io/v1alpha1",
        "kind": "PhoneSite",
        "metadata": {"name": "office", "labels": {"tenancy": "test"}},
        "spec": {
            "timeZone": "Europe/Paris",
            "maxConcurrentDownloads": 2,
            "phones": [
                {"mac": CONTESTED, "model": "GXP2170"},
                {"mac": own_mac, "model": "GXP2170"},
            ],
        },
    });
    sites
        .patch(
            "office",
            &PatchParams::apply("test").force(),
            &Patch::Apply(site),
        )
        .await
        .expect("create site");
    let schedules: Api<PhoneSchedule> = Api::namespaced(client.clone(), ns);
    let schedule = serde_json::json!({
        "apiVersion": "phonefleet.io/v1alpha1",
        "kind": "PhoneSchedule",
        "metadata": {"name": "fw"},
        "spec": {"siteSelector": {"matchLabels": {"tenancy": "test"}}},
    });
    schedules
        .patch(
            "fw",
            &PatchParams::apply("test").force(),
            &Patch::Apply(schedule),
        )
        .await
        .expect("create schedule");
}

/// The Degraded condition's (status, reason, message) of `ns/fw`.
async fn degraded(client: &kube::Client, ns: &str) -> Option<(String, String, String)> {
    let s = Api::<PhoneSchedule>::namespaced(client.clone(), ns)
        .get("fw")
        .await
        .ok()?;
    let c = s
        .status?
        .conditions
        .into_iter()
        .find(|c| c.type_ == condition::DEGRADED)?;
    Some((c.status, c.reason, c.message))
}

#[tokio::test]
async fn a_phone_claimed_by_two_namespaces_is_a_condition_and_an_event_on_both() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let cluster = support::cluster().await;
    cluster.apply_crds().await;
    let client = cluster.client().await;
    let a = cluster.namespace("tenancy-a").await;
    let b = cluster.namespace("tenancy-b").await;
    let outside = cluster.namespace("tenancy-c").await;
    tenant(&client, &a.name, "00:0b:82:c0:ff:0a").await;
    tenant(&client, &b.name, "00:0b:82:c0:ff:0b").await;
    tenant(&client, &outside.name, "00:0b:82:c0:ff:0c").await;

    let token = CancellationToken::new();
    let task = tokio::spawn(controller::run(
        client.clone(),
        Clock::System,
        ControllerConfig {
            scope: phonefleet::scope::WatchScope::from_list([a.name.clone(), b.name.clone()]),
            server_url: support::controller::SERVER_URL.parse().expect("URL"),
            lease: None,
            instance: "test-tenancy".into(),
        },
        std::sync::Arc::new(NoObserver),
        token.clone(),
    ));

    for (ns, other) in [(&a.name, &b.name), (&b.name, &a.name)] {
        eprintln!("checking {ns}");
        let (status, _, message) = support::eventually(
            "Degraded=True, PhoneConflict",
            Duration::from_secs(60),
            || {
                let client = client.clone();
                let ns = ns.clone();
                async move {
                    degraded(&client, &ns)
                        .await
                        .filter(|(_, r, _)| r == reason::PHONE_CONFLICT)
                }
            },
        )
        .await;
        assert_eq!(status, "True");
        assert!(
            message.contains(other.as_str()) && message.contains(CONTESTED),
            "{message}"
        );
        assert!(
            !message.contains(outside.name.as_str()),
            "an unwatched namespace counts: {message}"
        );
        let events =
            support::eventually("the PhoneConflict event", Duration::from_secs(30), || {
                let client = client.clone();
                let ns = ns.clone();
                async move {
                    let list = Api::<Event>::namespaced(client, &ns)
                        .list(&ListParams::default())
                        .await
                        .ok()?;
                    let found: Vec<Event> = list
                        .items
                        .into_iter()
                        .filter(|e| e.reason.as_deref() == Some(reason::PHONE_CONFLICT))
                        .collect();
                    (!found.is_empty()).then_some(found)
                }
            })
            .await;
        assert_eq!(events[0].type_.as_deref(), Some("Warning"));
    }

    // Tenant B lets go of the phone (an edit of its site): A's condition clears.
    let b_site = serde_json::json!({
        "apiVersion": "phonefleet.io/v1alpha1",
        "kind": "PhoneSite",
        "metadata": {"name": "office", "labels": {"tenancy": "test"}},
        "spec": {
            "timeZone": "Europe/Paris",
            "maxConcurrentDownloads": 2,
            "phones": [{"mac": "00:0b:82:c0:ff:0b", "model": "GXP2170"}],
        },
    });
    Api::<PhoneSite>::namespaced(client.clone(), &b.name)
        .patch(
            "office",
            &PatchParams::apply("test").force(),
            &Patch::Apply(b_site),
        )
        .await
        .expect("edit B's site");
    support::eventually("A no longer degraded", Duration::from_secs(60), || {
        let client = client.clone();
        let ns = a.name.clone();
        async move {
            degraded(&client, &ns)
                .await
                .filter(|(s, _, _)| s == "False")
        }
    })
    .await;

    // The namespace outside the list was never reconciled.
    let unwatched = Api::<PhoneSchedule>::namespaced(client.clone(), &outside.name)
        .get("fw")
        .await
        .expect("read the unwatched schedule");
    assert!(unwatched.status.is_none(), "{:?}", unwatched.status);

    token.cancel();
    task.await
        .expect("controller task")
        .expect("controller ran");
    a.delete().await;
    b.delete().await;
    outside.delete().await;
}
