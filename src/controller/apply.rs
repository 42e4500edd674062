//! Apply: hand the decision to the API server. Only what differs is sent: unchanged shards and
//! an unchanged status cost no request, so an idle reconcile writes nothing.

use std::collections::BTreeMap;

use futures::StreamExt;

use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder};
use kube::{Resource, ResourceExt};
use serde_json::json;

use super::desired::{Desired, Shard};
use super::error::{Error, api};
use crate::api::PhoneSchedule;
use crate::children::{
    ANNOTATION_CONTENT_HASH, COMPONENT_CONFIG, LABEL_COMPONENT, LABEL_MANAGED_BY, LABEL_SCHEDULE,
    LABEL_SITE, MANAGED_BY,
};

/// The one field manager of everything the controller writes.
pub const FIELD_MANAGER: &str = "phonefleet-controller";

/// Counts of what one apply sent, for logs and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Written {
    pub shards: usize,
    pub deleted: usize,
    pub status: bool,
    pub events: usize,
}

fn owner_reference(schedule: &PhoneSchedule) -> Option<OwnerReference> {
    schedule.controller_owner_ref(&())
}

fn shard_object(
    schedule: &PhoneSchedule,
    shard: &Shard,
    data: &BTreeMap<String, String>,
) -> serde_json::Value {
    json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": shard.name,
            "namespace": schedule.namespace(),
            "labels": {
                LABEL_SCHEDULE: schedule.name_any(),
                LABEL_SITE: shard.site,
                LABEL_COMPONENT: COMPONENT_CONFIG,
                LABEL_MANAGED_BY: MANAGED_BY,
            },
            "annotations": { ANNOTATION_CONTENT_HASH: shard.hash },
            "ownerReferences": owner_reference(schedule).into_iter().collect::<Vec<_>>(),
        },
        "data": data,
    })
}

/// Writes one shard, encoded now.
async fn write_shard(
    configmaps: &Api<ConfigMap>,
    params: &PatchParams,
    schedule: &PhoneSchedule,
    desired: &Desired,
    shard: &Shard,
) -> Result<(), Error> {
    let data = desired.shard_data(shard);
    let object = shard_object(schedule, shard, &data);
    configmaps
        .patch(&shard.name, params, &Patch::Apply(&object))
        .await
        .map_err(api(format!(
            "applying ConfigMap {}/{}",
            schedule.namespace().unwrap_or_default(),
            shard.name
        )))?;
    Ok(())
}

/// Shard writes sent at once.
const SHARD_WRITES_IN_FLIGHT: usize = 8;

/// Sends the differences between `desired` and what the schedule and its children hold.
pub async fn apply(
    client: &kube::Client,
    recorder: &Recorder,
    schedule: &PhoneSchedule,
    desired: &Desired,
) -> Result<Written, Error> {
    let ns = schedule.namespace().unwrap_or_default();
    let configmaps: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let mut written = Written::default();

    // A few writes in flight: a fleet of 10,000 sites written one shard at a time spends
    // minutes waiting on round trips. Each shard is encoded only when its write starts.
    let writes: Vec<_> = desired
        .shards
        .iter()
        .flatten()
        .filter(|s| s.changed)
        .map(|shard| write_shard(&configmaps, &params, schedule, desired, shard))
        .collect();
    let writes = futures::stream::iter(writes).buffer_unordered(SHARD_WRITES_IN_FLIGHT);
    let mut writes = std::pin::pin!(writes);
    while let Some(result) = writes.next().await {
        result?;
        written.shards += 1;
    }
    for name in &desired.stale {
        match configmaps.delete(name, &DeleteParams::background()).await {
            Ok(_) => written.deleted += 1,
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(api(format!("deleting stale ConfigMap {ns}/{name}"))(e)),
        }
    }

    let status = super::desired::status::bounded(&desired.status);
    if schedule.status.as_ref() != Some(&*status) {
        let schedules: Api<PhoneSchedule> = Api::namespaced(client.clone(), &ns);
        let patch = json!({
            "apiVersion": PhoneSchedule::api_version(&()),
            "kind": PhoneSchedule::kind(&()),
            "status": &*status,
        });
        schedules
            .patch_status(&schedule.name_any(), &params, &Patch::Apply(&patch))
            .await
            .map_err(api(format!(
                "writing status of PhoneSchedule {ns}/{}",
                schedule.name_any()
            )))?;
        written.status = true;
    }

    let reference = schedule.object_ref(&());
    for intent in &desired.events {
        let event = Event {
            type_: if intent.warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: intent.reason.to_owned(),
            note: Some(intent.note.clone()),
            action: "Reconcile".to_owned(),
            secondary: None,
        };
        // An event that cannot be written is not worth failing the reconcile for.
        if let Err(e) = recorder.publish(&event, &reference).await {
            tracing::warn!(error = %e, reason = intent.reason, "could not publish event");
        } else {
            written.events += 1;
        }
    }
    Ok(written)
}
