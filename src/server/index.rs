//! The in-memory index of rendered configs: file name → bytes, MAC → phone (site, slot, cap,
//! firmware, shard), built from the rendered-config ConfigMaps the controller writes (see
//! [`crate::children`]).
//!
//! [`Index`] is pure (fed with ConfigMaps, no client) so its rules are unit-tested; [`watch`]
//! keeps it in sync with the API server. Requests read it under a short read lock and clone
//! `Bytes`, so serving a file copies nothing.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, RwLock};

use bytes::Bytes;
use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Client, ResourceExt};

use crate::children::{
    COMPONENT_CONFIG, INDEX_KEY, IndexFirmware, IndexPhone, IndexSlot, LABEL_COMPONENT,
    LABEL_MANAGED_BY, LABEL_SCHEDULE, MANAGED_BY, ShardIndex,
};
use crate::core::Mac;
use crate::render::parse_file_name;
use crate::scope::WatchScope;

/// What one shard says about all its phones.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardMeta {
    pub namespace: String,
    /// The rendered-config ConfigMap's name.
    pub name: String,
    /// Name of the owning PhoneSchedule (same namespace).
    pub schedule: String,
    /// UID of the owning PhoneSchedule, from the ConfigMap's owner references: progress
    /// ConfigMaps get the same owner so they go when the schedule goes.
    pub schedule_uid: Option<String>,
    pub site: String,
    pub cap: u32,
    pub firmware: Option<IndexFirmware>,
}

impl ShardMeta {
    /// The rollout's firmware if it applies to `model`.
    pub fn target_for(&self, model: &str) -> Option<&IndexFirmware> {
        self.firmware
            .as_ref()
            .filter(|f| f.models.is_empty() || f.models.iter().any(|m| m == model))
    }
}

/// One phone as the server knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PhoneEntry {
    pub mac: Mac,
    pub shard: Arc<ShardMeta>,
    pub model: String,
    pub slot: Option<IndexSlot>,
}

/// A file as served.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigFile {
    pub body: Bytes,
    pub content_type: &'static str,
}

/// Why a rendered-config ConfigMap could not be indexed (it is skipped, and logged).
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("ConfigMap {0} has no {INDEX_KEY} key")]
    NoIndex(String),
    #[error("ConfigMap {0}: {INDEX_KEY} is not a shard index: {1}")]
    BadIndex(String, serde_json::Error),
    #[error("ConfigMap {0} speaks for schedule {1} of another namespace")]
    ForeignSchedule(String, String),
}

struct Shard {
    files: HashMap<String, ConfigFile>,
    phones: HashMap<Mac, PhoneEntry>,
}

/// File name and MAC lookups over every indexed shard.
///
/// Tenancy (cluster-wide mode): a namespace is a tenant, and a MAC belongs to at most one
/// namespace. When shards of two namespaces list the same MAC, neither is served for it: the
/// phone is in conflict ([`Index::conflicts`], logged and counted) until one namespace lets
/// go — a tenant can never take another's phone by sorting first. Within one namespace (two
/// schedules selecting one site, for a moment until the controller settles it) the shard
/// with the smaller `namespace/name` wins, so every replica serves the same bytes.
#[derive(Default)]
pub struct Index {
    shards: HashMap<Arc<str>, Shard>,
    /// File name → the shards holding it.
    files: HashMap<String, BTreeSet<Arc<str>>>,
    /// MAC → the shards listing the phone.
    phones: HashMap<Mac, BTreeSet<Arc<str>>>,
    /// MACs listed by shards of more than one namespace, with those namespaces.
    conflicts: BTreeMap<Mac, BTreeSet<String>>,
}

/// The namespace part of a shard key (`namespace/name`).
fn namespace_of(key: &str) -> &str {
    key.split_once('/').map_or(key, |(ns, _)| ns)
}

/// The shard serving a name held by `holders`: the smallest key, unless the holders span
/// several namespaces (a tenancy conflict: nobody).
fn owner(holders: &BTreeSet<Arc<str>>) -> Option<&Arc<str>> {
    let first = holders.first()?;
    let ns = namespace_of(first);
    holders
        .iter()
        .all(|k| namespace_of(k) == ns)
        .then_some(first)
}

impl Index {
    /// An index of `maps`.
    pub fn from_maps<'a>(maps: impl IntoIterator<Item = &'a ConfigMap>) -> Self {
        let mut index = Index::default();
        for cm in maps {
            if let Err(e) = index.apply(cm) {
                tracing::warn!(error = %e, "skipping rendered-config ConfigMap");
            }
        }
        index
    }

    /// Adds or replaces the shard held by `cm`.
    pub fn apply(&mut self, cm: &ConfigMap) -> Result<(), IndexError> {
        let key: Arc<str> = shard_key(cm).into();
        let data = cm.data.clone().unwrap_or_default();
        let raw = data
            .get(INDEX_KEY)
            .ok_or_else(|| IndexError::NoIndex(key.to_string()))?;
        let shard_index: ShardIndex =
            serde_json::from_str(raw).map_err(|e| IndexError::BadIndex(key.to_string(), e))?;
        let namespace = cm.namespace().unwrap_or_default();
        // A shard speaks for a schedule of its own namespace only.
        if shard_index
            .schedule
            .split_once('/')
            .is_some_and(|(ns, _)| ns != namespace)
        {
            return Err(IndexError::ForeignSchedule(
                key.to_string(),
                shard_index.schedule.clone(),
            ));
        }
        self.remove(&key);
        let schedule = cm.labels().get(LABEL_SCHEDULE).cloned().unwrap_or_else(|| {
            let s = &shard_index.schedule;
            s.rsplit_once('/').map_or(s.as_str(), |(_, n)| n).to_owned()
        });
        let schedule_uid = cm
            .owner_references()
            .iter()
            .find(|o| o.kind == "PhoneSchedule")
            .map(|o| o.uid.clone());
        let meta = Arc::new(ShardMeta {
            namespace,
            name: cm.name_any(),
            schedule,
            schedule_uid,
            site: shard_index.site.clone(),
            cap: shard_index.cap,
            firmware: shard_index.firmware.clone(),
        });
        let mut shard = Shard {
            files: HashMap::new(),
            phones: HashMap::new(),
        };
        for (name, body) in data {
            let Ok((mac, format)) = parse_file_name(&name) else {
                continue;
            };
            // Requests are looked up by the canonical name, whatever case a key was written in.
            let name = format.file_name(mac);
            let file = ConfigFile {
                body: Bytes::from(body),
                content_type: format.content_type(),
            };
            self.files
                .entry(name.clone())
                .or_default()
                .insert(key.clone());
            shard.files.insert(name, file);
        }
        let mut touched = Vec::new();
        for (mac, IndexPhone { model, slot, .. }) in shard_index.phones {
            let Ok(mac) = mac.parse::<Mac>() else {
                continue;
            };
            let entry = PhoneEntry {
                mac,
                shard: meta.clone(),
                model,
                slot,
            };
            self.phones.entry(mac).or_default().insert(key.clone());
            shard.phones.insert(mac, entry);
            touched.push(mac);
        }
        self.shards.insert(key, shard);
        self.recheck(touched);
        Ok(())
    }

    /// Forgets the shard `key`; files and phones another shard also holds fall back to it.
    pub fn remove(&mut self, key: &str) {
        let Some(old) = self.shards.remove(key) else {
            return;
        };
        for name in old.files.into_keys() {
            if let Some(holders) = self.files.get_mut(&name) {
                holders.remove(key);
                if holders.is_empty() {
                    self.files.remove(&name);
                }
            }
        }
        let touched: Vec<Mac> = old.phones.into_keys().collect();
        for mac in &touched {
            if let Some(holders) = self.phones.get_mut(mac) {
                holders.remove(key);
                if holders.is_empty() {
                    self.phones.remove(mac);
                }
            }
        }
        self.recheck(touched);
    }

    /// Updates the conflicts of `macs`, logging each one that starts or ends.
    fn recheck(&mut self, macs: Vec<Mac>) {
        for mac in macs {
            let namespaces: BTreeSet<String> = self
                .phones
                .get(&mac)
                .into_iter()
                .flatten()
                .map(|k| namespace_of(k).to_owned())
                .collect();
            if namespaces.len() > 1 {
                if self.conflicts.get(&mac) != Some(&namespaces) {
                    tracing::warn!(
                        phone = %mac,
                        namespaces = ?namespaces,
                        "phone claimed by schedules of several namespaces: serving it to none until one lets go"
                    );
                }
                self.conflicts.insert(mac, namespaces);
            } else if self.conflicts.remove(&mac).is_some() {
                tracing::info!(phone = %mac, "phone conflict resolved");
            }
        }
    }

    /// The file a phone requests by `name` (none while its phone is in conflict).
    pub fn file(&self, name: &str) -> Option<ConfigFile> {
        let key = owner(self.files.get(name)?)?;
        self.shards.get(key)?.files.get(name).cloned()
    }

    /// The phone with this MAC (none while it is in conflict).
    pub fn phone(&self, mac: Mac) -> Option<PhoneEntry> {
        let key = owner(self.phones.get(&mac)?)?;
        self.shards.get(key)?.phones.get(&mac).cloned()
    }

    /// Whether shards of several namespaces claim this MAC.
    pub fn in_conflict(&self, mac: Mac) -> bool {
        self.conflicts.contains_key(&mac)
    }

    /// Every MAC claimed by shards of several namespaces, with those namespaces.
    pub fn conflicts(&self) -> &BTreeMap<Mac, BTreeSet<String>> {
        &self.conflicts
    }

    /// Number of files served.
    pub fn files_len(&self) -> usize {
        self.files.len()
    }

    /// Number of phones known.
    pub fn phones_len(&self) -> usize {
        self.phones.len()
    }
}

fn shard_key(cm: &ConfigMap) -> String {
    format!("{}/{}", cm.namespace().unwrap_or_default(), cm.name_any())
}

/// The index shared between the watch task and the request handlers.
pub type SharedIndex = Arc<RwLock<Index>>;

/// Keeps `index` in sync with the rendered-config ConfigMaps of `scope`; calls `on_synced`
/// after every complete (re)list. Runs until dropped.
pub async fn watch(
    client: Client,
    scope: WatchScope,
    index: SharedIndex,
    on_synced: impl Fn() + Send + 'static,
) {
    let config =
        // Only the controller's own rendered configs (its labels), never any ConfigMap.
        watcher::Config::default().labels(&format!(
            "{LABEL_COMPONENT}={COMPONENT_CONFIG},{LABEL_MANAGED_BY}={MANAGED_BY}"
        ));
    let mut events = scope
        .watcher::<ConfigMap>(&client, config)
        .default_backoff()
        .boxed();
    let mut buffer: Vec<ConfigMap> = Vec::new();
    while let Some(event) = events.next().await {
        let event = match event {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(error = %e, "rendered-config watch failed; retrying");
                continue;
            }
        };
        match event {
            Event::Init => buffer.clear(),
            Event::InitApply(cm) => buffer.push(cm),
            Event::InitDone => {
                let fresh = Index::from_maps(&buffer);
                buffer.clear();
                *index.write().unwrap_or_else(|e| e.into_inner()) = fresh;
                on_synced();
            }
            Event::Apply(cm) => {
                let mut guard = index.write().unwrap_or_else(|e| e.into_inner());
                if let Err(e) = guard.apply(&cm) {
                    tracing::warn!(error = %e, "skipping rendered-config ConfigMap");
                    guard.remove(&shard_key(&cm));
                }
            }
            Event::Delete(cm) => {
                index
                    .write()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&shard_key(&cm));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

    use crate::children::ShardIndex;

    fn shard(name: &str, body: &str, slot: Option<IndexSlot>) -> ConfigMap {
        shard_in("voice", name, body, slot)
    }

    fn shard_in(ns: &str, name: &str, body: &str, slot: Option<IndexSlot>) -> ConfigMap {
        let index = ShardIndex {
            schedule: format!("{ns}/fw"),
            site: "paris".into(),
            time_zone: "Europe/Paris".into(),
            cap: 3,
            firmware: Some(IndexFirmware {
                version: "2.0".into(),
                file: "fw.bin".into(),
                models: vec!["GXP2170".into()],
            }),
            phones: BTreeMap::from([(
                "000b82123456".to_owned(),
                IndexPhone {
                    model: "GXP2170".into(),
                    file: "cfg000b82123456.xml".into(),
                    slot,
                },
            )]),
        };
        let mut cm = ConfigMap::default();
        cm.metadata.name = Some(name.into());
        cm.metadata.namespace = Some(ns.into());
        cm.metadata.owner_references = Some(vec![OwnerReference {
            api_version: "phonefleet.io/v1alpha1".into(),
            kind: "PhoneSchedule".into(),
            name: "fw".into(),
            uid: "uid-1".into(),
            ..Default::default()
        }]);
        cm.data = Some(BTreeMap::from([
            (INDEX_KEY.to_owned(), serde_json::to_string(&index).unwrap()),
            ("cfg000b82123456.xml".to_owned(), body.to_owned()),
        ]));
        cm
    }

    #[test]
    fn serves_files_and_knows_phones_of_a_shard() {
        let index = Index::from_maps([&shard("fw-paris-0", "<xml/>", None)]);
        let file = index.file("cfg000b82123456.xml").unwrap();
        assert_eq!(file.body, Bytes::from_static(b"<xml/>"));
        assert_eq!(file.content_type, "application/xml; charset=utf-8");
        assert!(
            index.file(INDEX_KEY).is_none(),
            "the index is not a served file"
        );
        let phone = index.phone("000b82123456".parse().unwrap()).unwrap();
        assert_eq!(phone.shard.site, "paris");
        assert_eq!(phone.shard.schedule, "fw");
        assert_eq!(phone.shard.schedule_uid.as_deref(), Some("uid-1"));
        assert!(phone.shard.target_for("GXP2170").is_some());
        assert!(phone.shard.target_for("SIP-T46U").is_none());
    }

    #[test]
    fn a_new_version_of_a_shard_replaces_the_old_one() {
        let mut index = Index::from_maps([&shard("fw-paris-0", "old", None)]);
        index.apply(&shard("fw-paris-0", "new", None)).unwrap();
        assert_eq!(index.file("cfg000b82123456.xml").unwrap().body, "new");
        index.remove("voice/fw-paris-0");
        assert!(index.file("cfg000b82123456.xml").is_none());
        assert!(index.phone("000b82123456".parse().unwrap()).is_none());
    }

    #[test]
    fn the_smaller_shard_name_wins_a_conflict() {
        let index = Index::from_maps([
            &shard("b-paris-0", "b", None),
            &shard("a-paris-0", "a", None),
        ]);
        assert_eq!(index.file("cfg000b82123456.xml").unwrap().body, "a");
    }

    #[test]
    fn removing_the_winner_of_a_conflict_falls_back_to_the_other_shard() {
        let mut index = Index::from_maps([
            &shard("b-paris-0", "b", None),
            &shard("a-paris-0", "a", None),
        ]);
        index.remove("voice/a-paris-0");
        assert_eq!(index.file("cfg000b82123456.xml").unwrap().body, "b");
        assert_eq!(
            index
                .phone("000b82123456".parse().unwrap())
                .unwrap()
                .shard
                .name,
            "b-paris-0"
        );
    }

    #[test]
    fn a_shard_without_a_valid_index_is_refused() {
        let mut cm = shard("fw-paris-0", "x", None);
        cm.data
            .as_mut()
            .unwrap()
            .insert(INDEX_KEY.into(), "{".into());
        assert!(Index::default().apply(&cm).is_err());
        cm.data.as_mut().unwrap().remove(INDEX_KEY);
        assert!(Index::default().apply(&cm).is_err());
    }

    // -- issue #12 item 3: tenancy --

    fn phone_mac() -> Mac {
        "000b82123456".parse().unwrap()
    }

    #[test]
    fn two_namespaces_claiming_one_phone_are_both_refused_and_reported() {
        let mut index = Index::from_maps([
            &shard_in("b-tenant", "fw-paris-0", "b", None),
            &shard_in("a-tenant", "fw-paris-0", "a", None),
        ]);
        assert!(index.file("cfg000b82123456.xml").is_none(), "neither wins");
        assert!(index.phone(phone_mac()).is_none());
        assert!(index.in_conflict(phone_mac()));
        assert_eq!(
            index.conflicts()[&phone_mac()],
            BTreeSet::from(["a-tenant".to_owned(), "b-tenant".to_owned()])
        );
        // One namespace lets go: the other one's phone is served again.
        index.remove("a-tenant/fw-paris-0");
        assert_eq!(index.file("cfg000b82123456.xml").unwrap().body, "b");
        assert_eq!(
            index.phone(phone_mac()).unwrap().shard.namespace,
            "b-tenant"
        );
        assert!(index.conflicts().is_empty());
    }

    #[test]
    fn a_shard_speaking_for_another_namespaces_schedule_is_refused() {
        let mut cm = shard_in("a-tenant", "fw-paris-0", "x", None);
        cm.metadata.namespace = Some("b-tenant".into());
        assert!(matches!(
            Index::default().apply(&cm),
            Err(IndexError::ForeignSchedule(..))
        ));
    }
}
