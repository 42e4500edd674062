//! Observe: gather, from the watch caches (and, once after a restart, from the cluster), what
//! the decision for one schedule depends on.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::Api;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::Store;
use kube::{Resource, ResourceExt};

use super::error::{Error, api};
use crate::api::{PhoneSchedule, PhoneSite};
use crate::children::{
    ANNOTATION_CONTENT_HASH, INDEX_KEY, IndexSlot, LABEL_SCHEDULE, PhoneProgress, ShardIndex,
};
use crate::core::Mac;

/// The caches the controller watches.
#[derive(Clone)]
pub struct Caches {
    pub schedules: Store<PhoneSchedule>,
    pub sites: Store<PhoneSite>,
    /// Rendered-config ConfigMaps, metadata only: the files stay out of the controller's memory.
    pub shards: Store<PartialObjectMeta<ConfigMap>>,
    pub progress: Store<ConfigMap>,
}

/// What one reconcile looks at.
pub struct Observed {
    pub schedules: Vec<Arc<PhoneSchedule>>,
    pub sites: Vec<Arc<PhoneSite>>,
    pub progress: HashMap<Mac, PhoneProgress>,
    pub existing_shards: BTreeMap<String, String>,
}

fn owned_by(meta: &kube::api::ObjectMeta, schedule: &PhoneSchedule) -> bool {
    let uid = schedule.meta().uid.as_deref();
    meta.namespace == schedule.namespace()
        && meta
            .labels
            .as_ref()
            .and_then(|l| l.get(LABEL_SCHEDULE))
            .is_some_and(|s| *s == schedule.name_any())
        && meta
            .owner_references
            .iter()
            .flatten()
            .any(|o| Some(o.uid.as_str()) == uid)
}

/// Reads the caches for `schedule`.
pub fn observe(caches: &Caches, schedule: &PhoneSchedule) -> Observed {
    let ns = schedule.namespace();
    let schedules = caches
        .schedules
        .state()
        .into_iter()
        .filter(|s| s.namespace() == ns)
        .collect();
    let sites = caches
        .sites
        .state()
        .into_iter()
        .filter(|s| s.namespace() == ns)
        .collect();
    let existing_shards = caches
        .shards
        .state()
        .iter()
        .filter(|cm| owned_by(&cm.metadata, schedule))
        .map(|cm| {
            let hash = cm
                .annotations()
                .get(ANNOTATION_CONTENT_HASH)
                .cloned()
                .unwrap_or_default();
            (cm.name_any(), hash)
        })
        .collect();
    let mut progress: HashMap<Mac, PhoneProgress> = HashMap::new();
    for cm in caches.progress.state() {
        if !owned_by(&cm.metadata, schedule) {
            continue;
        }
        for (key, value) in cm.data.iter().flatten() {
            let (Ok(mac), Ok(record)) = (
                key.parse::<Mac>(),
                serde_json::from_str::<PhoneProgress>(value),
            ) else {
                tracing::warn!(configmap = %cm.name_any(), key, "ignoring an unreadable progress record");
                continue;
            };
            // A phone moved between shards may have records in two maps: the newest counts.
            match progress.get(&mac) {
                Some(existing) if existing.since >= record.since => {}
                _ => {
                    progress.insert(mac, record);
                }
            }
        }
    }
    Observed {
        schedules,
        sites,
        progress,
        existing_shards,
    }
}

/// The slots the phones were last given, read back from the shards' indexes. Needed once per
/// schedule after a controller start; afterwards the controller remembers what it wrote.
pub async fn load_slots(
    configmaps: &Api<ConfigMap>,
    shard_names: impl Iterator<Item = &String>,
) -> Result<HashMap<Mac, IndexSlot>, Error> {
    let mut slots = HashMap::new();
    for name in shard_names {
        let Some(cm) = configmaps
            .get_opt(name)
            .await
            .map_err(api(format!("reading ConfigMap {name}")))?
        else {
            continue;
        };
        let Some(index) = cm.data.as_ref().and_then(|d| d.get(INDEX_KEY)) else {
            continue;
        };
        let index: ShardIndex = serde_json::from_str(index).map_err(|source| Error::BadIndex {
            name: name.clone(),
            source,
        })?;
        for (mac, phone) in index.phones {
            if let (Ok(mac), Some(slot)) = (mac.parse::<Mac>(), phone.slot) {
                slots.insert(mac, slot);
            }
        }
    }
    Ok(slots)
}
