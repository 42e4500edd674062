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
    ANNOTATION_CONTENT_HASH, INDEX_KEY, LABEL_SCHEDULE, PackedSlot, PhoneProgress, ShardIndex,
};
use crate::core::{Mac, MacMap, MacSet};
use crate::decision::{self, DECISION_KEY, PHONES_KEY, ShardHeader};
use crate::selector::Selector;

/// The caches the controller watches.
#[derive(Clone)]
pub struct Caches {
    pub schedules: Store<PhoneSchedule>,
    pub sites: Store<PhoneSite>,
    /// Rendered-config ConfigMaps, metadata only: the files stay out of the controller's memory.
    pub shards: Store<PartialObjectMeta<ConfigMap>>,
    pub progress: Store<ConfigMap>,
    /// Whether sites, shards and progress have completed their first list (see `synced`).
    pub synced: Vec<super::synced::Synced>,
    /// Progress records already parsed, per ConfigMap version (see [`ParsedProgress`]).
    pub parsed: ParsedProgress,
}

/// The records of each progress ConfigMap, parsed once per resourceVersion: during a rollout
/// a reconcile reads every phone's progress, but only the maps written since the last one
/// changed, so JSON is parsed for those only.
#[derive(Clone, Default)]
pub struct ParsedProgress {
    maps: Arc<std::sync::Mutex<HashMap<String, (String, Records)>>>,
}

/// One progress ConfigMap's records, parsed.
type Records = Arc<Vec<(Mac, PhoneProgress)>>;

impl ParsedProgress {
    /// The records of `cm`, parsed now or remembered from its current version.
    fn records(&self, cm: &ConfigMap) -> Arc<Vec<(Mac, PhoneProgress)>> {
        let key = format!("{}/{}", cm.namespace().unwrap_or_default(), cm.name_any());
        let version = cm.resource_version().unwrap_or_default();
        let mut maps = self
            .maps
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((v, records)) = maps.get(&key)
            && *v == version
            && !version.is_empty()
        {
            return records.clone();
        }
        let mut records = Vec::new();
        for (k, value) in cm.data.iter().flatten() {
            match (
                k.parse::<Mac>(),
                serde_json::from_str::<PhoneProgress>(value),
            ) {
                (Ok(mac), Ok(record)) => records.push((mac, record)),
                _ => {
                    tracing::warn!(configmap = %cm.name_any(), key = k, "ignoring an unreadable progress record");
                }
            }
        }
        let records = Arc::new(records);
        maps.insert(key, (version, records.clone()));
        records
    }

    /// Forgets maps that are no longer in `live` (deleted ConfigMaps).
    fn retain(&self, live: &std::collections::HashSet<String>) {
        self.maps
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .retain(|k, _| live.contains(k));
    }
}

/// What one reconcile looks at.
pub struct Observed {
    pub schedules: Vec<Arc<PhoneSchedule>>,
    pub sites: Vec<Arc<PhoneSite>>,
    pub progress: MacMap<PhoneProgress>,
    pub existing_shards: BTreeMap<String, String>,
    /// MACs of this namespace's sites that schedules of other namespaces select too.
    pub claimed_elsewhere: MacMap<Vec<String>>,
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
    let mut progress: MacMap<PhoneProgress> = MacMap::default();
    let all_progress = caches.progress.state();
    caches.parsed.retain(
        &all_progress
            .iter()
            .map(|cm| format!("{}/{}", cm.namespace().unwrap_or_default(), cm.name_any()))
            .collect(),
    );
    for cm in all_progress {
        if !owned_by(&cm.metadata, schedule) {
            continue;
        }
        for (mac, record) in caches.parsed.records(&cm).iter() {
            // A phone moved between shards may have records in two maps: the newest counts.
            match progress.get(mac) {
                Some(existing) if existing.since >= record.since => {}
                _ => {
                    progress.insert(*mac, record.clone());
                }
            }
        }
    }
    let claimed_elsewhere = claimed_elsewhere(caches, ns.as_deref());
    Observed {
        schedules,
        sites,
        progress,
        existing_shards,
        claimed_elsewhere,
    }
}

/// MACs listed by PhoneSites of other namespaces that a (live) schedule of their namespace
/// selects, with those namespaces: what the provisioning server sees as claimed twice. Only
/// in cluster-wide mode do the caches hold other namespaces. Linear in the watched sites;
/// filtered to the MACs of `namespace`'s own sites, so the map stays as small as the conflict.
fn claimed_elsewhere(caches: &Caches, namespace: Option<&str>) -> MacMap<Vec<String>> {
    let sites = caches.sites.state();
    if sites.iter().all(|s| s.namespace().as_deref() == namespace) {
        return MacMap::default();
    }
    let ours: MacSet = sites
        .iter()
        .filter(|s| s.namespace().as_deref() == namespace)
        .flat_map(|s| s.spec.phones.iter())
        .filter_map(|p| p.mac.parse::<Mac>().ok())
        .collect();
    let schedules = caches.schedules.state();
    let mut claimed: MacMap<Vec<String>> = MacMap::default();
    for site in sites
        .iter()
        .filter(|s| s.namespace().as_deref() != namespace)
    {
        let site_ns = site.namespace();
        let selected = schedules.iter().any(|s| {
            s.namespace() == site_ns
                && s.metadata.deletion_timestamp.is_none()
                && Selector::parse(&s.spec.site_selector)
                    .is_ok_and(|sel| sel.matches(site.labels()))
        });
        if !selected {
            continue;
        }
        let other = site_ns.unwrap_or_default();
        for mac in site
            .spec
            .phones
            .iter()
            .filter_map(|p| p.mac.parse::<Mac>().ok())
        {
            if ours.contains(&mac) {
                let list = claimed.entry(mac).or_default();
                if !list.contains(&other) {
                    list.push(other.clone());
                    list.sort();
                }
            }
        }
    }
    claimed
}

/// The slots the phones were last given, read back from the shards' indexes. Needed once per
/// schedule after a controller start; afterwards the controller remembers what it wrote.
pub async fn load_slots(
    configmaps: &Api<ConfigMap>,
    shard_names: impl Iterator<Item = &String>,
) -> Result<MacMap<PackedSlot>, Error> {
    let mut slots = MacMap::default();
    for name in shard_names {
        let Some(cm) = configmaps
            .get_opt(name)
            .await
            .map_err(api(format!("reading ConfigMap {name}")))?
        else {
            continue;
        };
        let data = cm.data.unwrap_or_default();
        if let (Some(header), Some(lines)) = (data.get(DECISION_KEY), data.get(PHONES_KEY)) {
            let bad = |source| Error::BadDecision {
                name: name.clone(),
                source,
            };
            let header = ShardHeader::parse(header).map_err(bad)?;
            decision::decode_phones(header.base, lines, |p| {
                // A slot without a packed form (not one the planner makes) is dropped: the
                // phone is planned again.
                if let Some(slot) = p.slot.as_ref().and_then(PackedSlot::pack) {
                    slots.insert(p.mac, slot);
                }
            })
            .map_err(bad)?;
            continue;
        }
        // A shard an older controller wrote (rendered files and an index).
        let Some(index) = data.get(INDEX_KEY) else {
            continue;
        };
        let index: ShardIndex = serde_json::from_str(index).map_err(|source| Error::BadIndex {
            name: name.clone(),
            source,
        })?;
        for (mac, phone) in index.phones {
            if let (Ok(mac), Some(slot)) = (
                mac.parse::<Mac>(),
                phone.slot.as_ref().and_then(PackedSlot::pack),
            ) {
                slots.insert(mac, slot);
            }
        }
    }
    Ok(slots)
}
