//! The in-memory index of what the server serves: MAC → phone (site, slot, cap, firmware,
//! shard) and its file, built from the rendered-config ConfigMaps the controller writes (see
//! [`crate::children`] and [`crate::decision`]).
//!
//! A shard holds the controller's decision (a header and one line per phone): a phone's file is
//! rendered on request from it, with the renderer `phonefleet render` uses, and kept in a
//! bounded cache ([`FileCache`]) so a polling fleet does not render each file again. A shard
//! written by an older controller (or a test fixture) holds pre-rendered files and an index
//! instead; those are served as they are.
//!
//! [`Index`] is pure (fed with ConfigMaps, no client) so its rules are unit-tested; [`watch`]
//! keeps it in sync with the API server. Requests read it under a short read lock and clone
//! `Bytes`, so serving a cached file copies nothing.

use std::borrow::Borrow;
use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::{BuildHasher, Hash, RandomState};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use bytes::Bytes;
use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Client, ResourceExt};

use crate::children::{
    COMPONENT_CONFIG, INDEX_KEY, IndexFirmware, IndexPhone, IndexSlot, LABEL_COMPONENT,
    LABEL_MANAGED_BY, LABEL_SCHEDULE, MANAGED_BY, PackedSlot, ShardIndex,
};
use crate::core::{Mac, MacMap, PhoneFamily};
use crate::decision::{
    self, DECISION_KEY, DecidedPhone, DecisionError, PHONES_KEY, RenderContext, ShardHeader,
};
use crate::render::{Format, parse_file_name};
use crate::scope::WatchScope;

/// Default bound of the rendered-file cache: about 40,000 files of ~800 bytes. A miss costs
/// one render from the stored decision, so the cache only has to hold the phones polling now.
pub const DEFAULT_CACHE_BYTES: usize = 32 * 1024 * 1024;

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
pub struct ServedPhone {
    pub mac: Mac,
    pub shard: Arc<ShardMeta>,
    pub model: Arc<str>,
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
    #[error("ConfigMap {0} has neither {DECISION_KEY} nor {INDEX_KEY}")]
    NoIndex(String),
    #[error("ConfigMap {0}: {INDEX_KEY} is not a shard index: {1}")]
    BadIndex(String, serde_json::Error),
    #[error("ConfigMap {0}: {1}")]
    BadDecision(String, DecisionError),
    #[error("ConfigMap {0} speaks for schedule {1} of another namespace")]
    ForeignSchedule(String, String),
    #[error(
        "ConfigMap {0}: phone {1} has a slot the server cannot hold (a start outside 1677-2262, \
         or a length that is not whole seconds)"
    )]
    SlotRange(String, Mac),
}

/// A phone as a shard lists it: 24 bytes (32 with its MAC in the shard's map), so a million
/// fit in a replica's memory.
#[derive(Clone, Copy, Debug)]
struct Listed {
    /// Index into the shard's models.
    model: u32,
    slot: Option<PackedSlot>,
}

/// A shard's number in [`Index`]: what the per-phone map holds instead of the shard's name,
/// 4 bytes instead of a shared string and an enum around it (at a million phones the map has
/// 2²¹ buckets, so each byte of its value is 2 MB).
type ShardNo = u32;

struct Shard {
    /// `namespace/name` of its ConfigMap.
    key: Arc<str>,
    meta: Arc<ShardMeta>,
    /// Tells this version of the shard from earlier ones in the file cache.
    generation: u64,
    /// (model, family) by index; the family only for a decision (files are rendered from it).
    models: Vec<(Arc<str>, Option<PhoneFamily>)>,
    phones: MacMap<Listed>,
    /// How files are rendered: `None` for a shard of pre-rendered files.
    render: Option<RenderContext>,
    /// Pre-rendered files by canonical name (shards without a decision).
    files: HashMap<String, ConfigFile>,
}

/// Which shards hold each key (a MAC, a file name). Almost always one: its number is the
/// key's value in `one`; a key held by two or more shards also has all their numbers in `many`
/// (a tenancy conflict, or two schedules of one namespace for a moment).
struct Holders<K, S> {
    one: HashMap<K, ShardNo, S>,
    many: HashMap<K, Vec<ShardNo>, S>,
}

impl<K: Hash + Eq + Clone, S: BuildHasher + Default> Holders<K, S> {
    fn new() -> Self {
        Holders {
            one: HashMap::default(),
            many: HashMap::default(),
        }
    }

    fn insert(&mut self, key: K, no: ShardNo) {
        if let Some(all) = self.many.get_mut(&key) {
            if !all.contains(&no) {
                all.push(no);
            }
            return;
        }
        match self.one.entry(key) {
            Entry::Occupied(e) => {
                if *e.get() != no {
                    self.many.insert(e.key().clone(), vec![*e.get(), no]);
                }
            }
            Entry::Vacant(e) => {
                e.insert(no);
            }
        }
    }

    /// Removes shard `no` from the holders of `key`.
    fn remove(&mut self, key: &K, no: ShardNo) {
        if let Some(all) = self.many.get_mut(key) {
            all.retain(|n| *n != no);
            match all[..] {
                [] => {
                    self.many.remove(key);
                    self.one.remove(key);
                }
                [last] => {
                    self.many.remove(key);
                    self.one.insert(key.clone(), last);
                }
                _ => {}
            }
            return;
        }
        if self.one.get(key) == Some(&no) {
            self.one.remove(key);
        }
    }

    /// The shards holding `key` (none, one, or several).
    fn of<Q: Hash + Eq + ?Sized>(&self, key: &Q) -> &[ShardNo]
    where
        K: Borrow<Q>,
    {
        match self.many.get(key) {
            Some(all) => all,
            None => self.one.get(key).map_or(&[], std::slice::from_ref),
        }
    }

    fn keys(&self) -> impl Iterator<Item = &K> {
        self.one.keys()
    }

    fn len(&self) -> usize {
        self.one.len()
    }
}

/// Rendered files by (MAC, shard generation), bounded in bytes. Two generations: hits come
/// from `current` or are moved there from `previous`; when `current` holds half the budget it
/// becomes `previous` and the old `previous` is dropped. Files not asked for during a whole
/// generation go, which is what an LRU would drop first, at the cost of a map swap instead of
/// a linked list per entry.
pub struct FileCache {
    budget: usize,
    current: HashMap<(Mac, u64), ConfigFile>,
    current_bytes: usize,
    previous: HashMap<(Mac, u64), ConfigFile>,
    hits: u64,
    misses: u64,
}

impl FileCache {
    /// A cache of at most `budget` bytes of file bodies.
    pub fn new(budget: usize) -> Self {
        Self {
            budget,
            current: HashMap::new(),
            current_bytes: 0,
            previous: HashMap::new(),
            hits: 0,
            misses: 0,
        }
    }

    fn get(&mut self, key: (Mac, u64)) -> Option<ConfigFile> {
        if let Some(file) = self.current.get(&key) {
            self.hits += 1;
            return Some(file.clone());
        }
        let file = self.previous.remove(&key)?;
        self.hits += 1;
        self.put(key, file.clone());
        Some(file)
    }

    fn put(&mut self, key: (Mac, u64), file: ConfigFile) {
        let size = file.body.len();
        if size > self.budget / 2 {
            return;
        }
        if self.current_bytes + size > self.budget / 2 {
            self.previous = std::mem::take(&mut self.current);
            self.current_bytes = 0;
        }
        self.current_bytes += size;
        self.current.insert(key, file);
    }

    /// Bytes of file bodies held (at most the budget).
    pub fn bytes(&self) -> usize {
        self.current_bytes + self.previous.values().map(|f| f.body.len()).sum::<usize>()
    }

    /// Lookups answered from the cache, and renders.
    pub fn hits_and_misses(&self) -> (u64, u64) {
        (self.hits, self.misses)
    }
}

/// File name and MAC lookups over every indexed shard.
///
/// Tenancy (cluster-wide mode): a namespace is a tenant, and a MAC belongs to at most one
/// namespace. When shards of two namespaces list the same MAC, neither is served for it: the
/// phone is in conflict ([`Index::conflicts`], logged and counted) until one namespace lets
/// go — a tenant can never take another's phone by sorting first. Within one namespace (two
/// schedules selecting one site, for a moment until the controller settles it) the shard
/// with the smaller `namespace/name` wins, so every replica serves the same bytes.
pub struct Index {
    /// Shards by number; a number is free (`None`, in `free`) until reused.
    shards: Vec<Option<Shard>>,
    free: Vec<ShardNo>,
    /// Shard key (`namespace/name`) → number.
    numbers: HashMap<Arc<str>, ShardNo>,
    /// Pre-rendered file name → the shards holding it.
    files: Holders<String, RandomState>,
    /// MAC → the shards listing the phone.
    phones: Holders<Mac, foldhash::fast::RandomState>,
    /// MACs listed by shards of more than one namespace, with those namespaces.
    conflicts: BTreeMap<Mac, BTreeSet<String>>,
    next_generation: u64,
    cache: Mutex<FileCache>,
}

impl Default for Index {
    fn default() -> Self {
        Self::with_cache_bytes(DEFAULT_CACHE_BYTES)
    }
}

/// The namespace part of a shard key (`namespace/name`).
fn namespace_of(key: &str) -> &str {
    key.split_once('/').map_or(key, |(ns, _)| ns)
}

impl Index {
    /// An empty index whose rendered-file cache holds at most `bytes`.
    pub fn with_cache_bytes(bytes: usize) -> Self {
        Index {
            shards: Vec::new(),
            free: Vec::new(),
            numbers: HashMap::new(),
            files: Holders::new(),
            phones: Holders::new(),
            conflicts: BTreeMap::new(),
            next_generation: 0,
            cache: Mutex::new(FileCache::new(bytes)),
        }
    }

    /// An index of `maps`.
    pub fn from_maps<'a>(maps: impl IntoIterator<Item = &'a ConfigMap>) -> Self {
        let mut index = Index::default();
        index.extend(maps);
        index
    }

    /// Adds `maps`, skipping (and logging) the ones that cannot be indexed.
    pub fn extend<'a>(&mut self, maps: impl IntoIterator<Item = &'a ConfigMap>) {
        for cm in maps {
            if let Err(e) = self.apply(cm) {
                tracing::warn!(error = %e, "skipping rendered-config ConfigMap");
            }
        }
    }

    /// Adds or replaces the shard held by `cm`.
    pub fn apply(&mut self, cm: &ConfigMap) -> Result<(), IndexError> {
        let key: Arc<str> = shard_key(cm).into();
        let empty = BTreeMap::new();
        let data = cm.data.as_ref().unwrap_or(&empty);
        let namespace = cm.namespace().unwrap_or_default();
        let schedule_uid = cm
            .owner_references()
            .iter()
            .find(|o| o.kind == "PhoneSchedule")
            .map(|o| o.uid.clone());
        let generation = self.next_generation;
        self.next_generation += 1;
        let bad = |e| IndexError::BadDecision(key.to_string(), e);
        let (full_schedule, mut shard) = if let Some(header) = data.get(DECISION_KEY) {
            let header = ShardHeader::parse(header).map_err(bad)?;
            let render = header.render_context().map_err(bad)?;
            let mut phones = MacMap::default();
            let mut unpacked = None;
            let lines = data.get(PHONES_KEY).map_or("", String::as_str);
            decision::decode_phones(header.base, lines, |p| {
                let slot = p.slot.as_ref().map(PackedSlot::pack);
                if slot == Some(None) {
                    unpacked.get_or_insert(p.mac);
                }
                phones.insert(
                    p.mac,
                    Listed {
                        model: p.model,
                        slot: slot.flatten(),
                    },
                );
            })
            .map_err(bad)?;
            if let Some(mac) = unpacked {
                return Err(IndexError::SlotRange(key.to_string(), mac));
            }
            let models = header
                .models
                .iter()
                .map(|m| (Arc::from(m.model.as_str()), Some(m.family)))
                .collect();
            let meta = ShardMeta {
                namespace: namespace.clone(),
                name: cm.name_any(),
                schedule: String::new(),
                schedule_uid,
                site: header.site.clone(),
                cap: header.cap,
                firmware: header.firmware.clone(),
            };
            let shard = Shard {
                key: key.clone(),
                meta: Arc::new(meta),
                generation,
                models,
                phones,
                render: Some(render),
                files: HashMap::new(),
            };
            (header.schedule, shard)
        } else {
            let raw = data
                .get(INDEX_KEY)
                .ok_or_else(|| IndexError::NoIndex(key.to_string()))?;
            let shard_index: ShardIndex =
                serde_json::from_str(raw).map_err(|e| IndexError::BadIndex(key.to_string(), e))?;
            let mut models: Vec<(Arc<str>, Option<PhoneFamily>)> = Vec::new();
            let mut phones = MacMap::default();
            for (mac, IndexPhone { model, slot, .. }) in shard_index.phones {
                let Ok(mac) = mac.parse::<Mac>() else {
                    continue;
                };
                let at = match models.iter().position(|(m, _)| **m == *model) {
                    Some(at) => at,
                    None => {
                        models.push((Arc::from(model.as_str()), None));
                        models.len() - 1
                    }
                };
                let slot = match slot.as_ref().map(PackedSlot::pack) {
                    None => None,
                    Some(Some(packed)) => Some(packed),
                    Some(None) => return Err(IndexError::SlotRange(key.to_string(), mac)),
                };
                phones.insert(
                    mac,
                    Listed {
                        model: at as u32,
                        slot,
                    },
                );
            }
            let mut files = HashMap::new();
            for (name, body) in data {
                let Ok((mac, format)) = parse_file_name(name) else {
                    continue;
                };
                // Requests are looked up by the canonical name, whatever case a key was
                // written in.
                let file = ConfigFile {
                    body: Bytes::from(body.clone()),
                    content_type: format.content_type(),
                };
                files.insert(format.file_name(mac), file);
            }
            let meta = ShardMeta {
                namespace: namespace.clone(),
                name: cm.name_any(),
                schedule: String::new(),
                schedule_uid,
                site: shard_index.site.clone(),
                cap: shard_index.cap,
                firmware: shard_index.firmware.clone(),
            };
            let shard = Shard {
                key: key.clone(),
                meta: Arc::new(meta),
                generation,
                models,
                phones,
                render: None,
                files,
            };
            (shard_index.schedule, shard)
        };
        // A shard speaks for a schedule of its own namespace only.
        if full_schedule
            .split_once('/')
            .is_some_and(|(ns, _)| ns != namespace)
        {
            return Err(IndexError::ForeignSchedule(key.to_string(), full_schedule));
        }
        let schedule = cm.labels().get(LABEL_SCHEDULE).cloned().unwrap_or_else(|| {
            full_schedule
                .rsplit_once('/')
                .map_or(full_schedule.as_str(), |(_, n)| n)
                .to_owned()
        });
        if let Some(meta) = Arc::get_mut(&mut shard.meta) {
            meta.schedule = schedule;
        }
        self.remove(&key);
        // A free number, or a new one (4 billion shards would not fit in memory first).
        let no = self.free.pop().unwrap_or(self.shards.len() as ShardNo);
        for name in shard.files.keys() {
            self.files.insert(name.clone(), no);
        }
        let touched: Vec<Mac> = shard.phones.keys().copied().collect();
        for mac in &touched {
            self.phones.insert(*mac, no);
        }
        self.numbers.insert(key, no);
        match self.shards.get_mut(no as usize) {
            Some(place) => *place = Some(shard),
            None => self.shards.push(Some(shard)),
        }
        self.recheck(touched);
        Ok(())
    }

    /// Forgets the shard `key`; files and phones another shard also holds fall back to it.
    pub fn remove(&mut self, key: &str) {
        let Some(no) = self.numbers.remove(key) else {
            return;
        };
        let Some(old) = self.shards.get_mut(no as usize).and_then(Option::take) else {
            return;
        };
        self.free.push(no);
        for name in old.files.into_keys() {
            self.files.remove(&name, no);
        }
        let touched: Vec<Mac> = old.phones.into_keys().collect();
        for mac in &touched {
            self.phones.remove(mac, no);
        }
        self.recheck(touched);
    }

    fn shard(&self, no: ShardNo) -> Option<&Shard> {
        self.shards.get(no as usize)?.as_ref()
    }

    /// The shard serving a name its `holders` hold: the one with the smallest key, unless they
    /// span several namespaces (a tenancy conflict: nobody).
    fn owner(&self, holders: &[ShardNo]) -> Option<&Shard> {
        if let [one] = holders {
            return self.shard(*one);
        }
        let shards: Vec<&Shard> = holders.iter().filter_map(|n| self.shard(*n)).collect();
        let first = shards.iter().min_by(|a, b| a.key.cmp(&b.key))?;
        let ns = namespace_of(&first.key);
        shards
            .iter()
            .all(|s| namespace_of(&s.key) == ns)
            .then_some(*first)
    }

    /// Updates the conflicts of `macs`, logging each one that starts or ends.
    fn recheck(&mut self, macs: Vec<Mac>) {
        for mac in macs {
            let namespaces = match self.phones.of(&mac) {
                holders @ [_, _, ..] => holders
                    .iter()
                    .filter_map(|n| self.shard(*n))
                    .map(|s| namespace_of(&s.key).to_owned())
                    .collect::<BTreeSet<String>>(),
                // One holder or none: no conflict (and nothing to allocate).
                _ => {
                    if self.conflicts.remove(&mac).is_some() {
                        tracing::info!(phone = %mac, "phone conflict resolved");
                    }
                    continue;
                }
            };
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

    /// The shard serving the phone `mac`, and how it lists it (none while in conflict).
    fn listed(&self, mac: Mac) -> Option<(&Shard, &Listed)> {
        let shard = self.owner(self.phones.of(&mac))?;
        Some((shard, shard.phones.get(&mac)?))
    }

    /// The file a phone requests by `name` (none while its phone is in conflict): rendered
    /// from the decision (or taken from the cache), or pre-rendered.
    pub fn file(&self, name: &str) -> Option<ConfigFile> {
        if let Ok((mac, format)) = parse_file_name(name)
            && let Some((shard, listed)) = self.listed(mac)
            && let Some(render) = &shard.render
        {
            let family = shard.models.get(listed.model as usize)?.1?;
            if Format::of(family) != format {
                return None;
            }
            let key = (mac, shard.generation);
            {
                let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
                if let Some(file) = cache.get(key) {
                    return Some(file);
                }
                cache.misses += 1;
            }
            // Rendered outside the cache's lock, so requests on every worker thread render at
            // once instead of queueing behind one another. Two requests of one phone at the
            // same moment may both render: the same bytes, put twice.
            let rendered = render.render(&DecidedPhone {
                mac,
                model: listed.model,
                slot: listed.slot.map(PackedSlot::unpack),
            })?;
            let file = ConfigFile {
                body: Bytes::from(rendered.body),
                content_type: rendered.content_type,
            };
            self.cache
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .put(key, file.clone());
            return Some(file);
        }
        self.owner(self.files.of(name))?.files.get(name).cloned()
    }

    /// The phone with this MAC (none while it is in conflict).
    pub fn phone(&self, mac: Mac) -> Option<ServedPhone> {
        let (shard, listed) = self.listed(mac)?;
        Some(ServedPhone {
            mac,
            shard: shard.meta.clone(),
            model: shard.models.get(listed.model as usize)?.0.clone(),
            slot: listed.slot.map(PackedSlot::unpack),
        })
    }

    /// Every file served, by name, rendered now (for tests and `kubectl phonefleet`: a whole
    /// fleet's files are never all in memory otherwise).
    pub fn all_files(&self) -> BTreeMap<String, ConfigFile> {
        let mut names: BTreeSet<String> = self.files.keys().cloned().collect();
        for shard in self.shards.iter().flatten() {
            for (mac, listed) in &shard.phones {
                if let Some((_, Some(family))) = shard.models.get(listed.model as usize)
                    && shard.render.is_some()
                {
                    names.insert(Format::of(*family).file_name(*mac));
                }
            }
        }
        names
            .into_iter()
            .filter_map(|name| self.file(&name).map(|f| (name, f)))
            .collect()
    }

    /// Whether shards of several namespaces claim this MAC.
    pub fn in_conflict(&self, mac: Mac) -> bool {
        self.conflicts.contains_key(&mac)
    }

    /// Every MAC claimed by shards of several namespaces, with those namespaces.
    pub fn conflicts(&self) -> &BTreeMap<Mac, BTreeSet<String>> {
        &self.conflicts
    }

    /// Number of pre-rendered files held.
    pub fn files_len(&self) -> usize {
        self.files.len()
    }

    /// Number of phones known.
    pub fn phones_len(&self) -> usize {
        self.phones.len()
    }

    /// The rendered-file cache's bound, in bytes.
    pub fn cache_budget(&self) -> usize {
        self.cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .budget
    }

    /// Bytes held by the rendered-file cache, its hits and its renders.
    pub fn cache_stats(&self) -> (usize, u64, u64) {
        let cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        let (hits, misses) = cache.hits_and_misses();
        (cache.bytes(), hits, misses)
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
                // A fresh index (and cache) with the configured budget: every shard may have
                // changed while the watch was down.
                let budget = index
                    .read()
                    .unwrap_or_else(|e| e.into_inner())
                    .cache_budget();
                let mut fresh = Index::with_cache_bytes(budget);
                fresh.extend(&buffer);
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

    // -- issue #18: decisions, rendered on request --

    fn decision_shard(ns: &str, name: &str, slot: Option<IndexSlot>) -> ConfigMap {
        use crate::decision::{WireModel, WirePolicy};
        let policy = crate::core::ProvisioningPolicy {
            power_on: true,
            repeatedly: None,
            weekly: crate::core::WeeklyPolicy {
                enabled: true,
                interval_weeks: 0,
                inactivity_minutes: 0,
                window: crate::core::LocalWindow {
                    start: "22:00".parse().unwrap(),
                    end: "05:00".parse().unwrap(),
                },
                days: [chrono::Weekday::Sun].into_iter().collect(),
            },
            flexible: crate::core::FlexiblePolicy {
                enabled: false,
                interval_days: 1,
                window: crate::core::LocalWindow {
                    start: "01:00".parse().unwrap(),
                    end: "02:00".parse().unwrap(),
                },
            },
        };
        let header = ShardHeader {
            schedule: format!("{ns}/fw"),
            site: "paris".into(),
            time_zone: "Europe/Paris".into(),
            cap: 3,
            check_minutes: 10,
            server_url: "http://prov.example:8080".into(),
            provisioning: WirePolicy::from(&policy),
            firmware: Some(IndexFirmware {
                version: "2.0".into(),
                file: "fw.bin".into(),
                models: vec![],
            }),
            models: vec![WireModel {
                model: "GXP2170".into(),
                family: PhoneFamily::Grandstream,
            }],
            base: decision::base_of(slot.map(|s| s.start)),
        };
        let phones = [DecidedPhone {
            mac: phone_mac(),
            model: 0,
            slot,
        }];
        let mut cm = ConfigMap::default();
        cm.metadata.name = Some(name.into());
        cm.metadata.namespace = Some(ns.into());
        cm.data = Some(BTreeMap::from([
            (DECISION_KEY.to_owned(), header.to_json()),
            (
                PHONES_KEY.to_owned(),
                decision::encode_phones(header.base, &phones),
            ),
        ]));
        cm
    }

    fn a_slot() -> IndexSlot {
        let start = chrono::DateTime::from_timestamp(1_780_000_000, 0).unwrap();
        IndexSlot {
            stage: 0,
            start,
            end: start + chrono::Duration::minutes(10),
            held: false,
        }
    }

    #[test]
    fn a_decision_is_rendered_on_request_as_the_renderer_renders_it() {
        let cm = decision_shard("voice", "fw-paris-0", Some(a_slot()));
        let index = Index::from_maps([&cm]);
        let served = index.file("cfg000b82123456.xml").expect("rendered");
        let header = ShardHeader::parse(&cm.data.as_ref().unwrap()[DECISION_KEY]).unwrap();
        let expected = header
            .render_context()
            .unwrap()
            .render(&DecidedPhone {
                mac: phone_mac(),
                model: 0,
                slot: Some(a_slot()),
            })
            .unwrap();
        assert_eq!(served.body, Bytes::from(expected.body.clone()));
        assert!(
            expected.body.contains("firmware/paris"),
            "{}",
            expected.body
        );
        assert_eq!(served.content_type, expected.content_type);
        assert!(
            index.file("000b82123456.cfg").is_none(),
            "not its family's name"
        );
        let phone = index.phone(phone_mac()).unwrap();
        assert_eq!((&*phone.model, phone.slot), ("GXP2170", Some(a_slot())));
        assert_eq!(phone.shard.schedule, "fw");
        // A second request is a cache hit with the same bytes.
        assert_eq!(index.file("cfg000b82123456.xml").unwrap(), served);
        let (_, hits, misses) = index.cache_stats();
        assert_eq!((hits, misses), (1, 1));
    }

    #[test]
    fn a_changed_decision_is_never_answered_from_the_cache() {
        let mut index = Index::from_maps([&decision_shard("voice", "fw-paris-0", Some(a_slot()))]);
        let before = index.file("cfg000b82123456.xml").unwrap();
        index
            .apply(&decision_shard("voice", "fw-paris-0", None))
            .unwrap();
        let after = index.file("cfg000b82123456.xml").unwrap();
        assert_ne!(before.body, after.body, "the slot went, the file changes");
        assert!(!String::from_utf8_lossy(&after.body).contains("firmware/"));
    }

    #[test]
    fn a_decision_with_a_slot_the_server_cannot_hold_is_refused_naming_the_phone() {
        let start = chrono::DateTime::from_timestamp(1_780_000_000, 0).unwrap();
        let odd = IndexSlot {
            end: start + chrono::Duration::milliseconds(600_500),
            ..a_slot()
        };
        let mut index = Index::default();
        let err = index
            .apply(&decision_shard("voice", "fw-paris-0", Some(odd)))
            .unwrap_err();
        assert!(matches!(err, IndexError::SlotRange(_, mac) if mac == phone_mac()));
        assert!(err.to_string().contains("voice/fw-paris-0"), "{err}");
        assert!(index.file("cfg000b82123456.xml").is_none());
    }

    #[test]
    fn shard_numbers_are_reused_and_never_mix_shards_up() {
        let mut index = Index::default();
        for round in 0..3 {
            for name in ["fw-paris-0", "fw-paris-1"] {
                index
                    .apply(&decision_shard("voice", name, Some(a_slot())))
                    .unwrap();
            }
            index.remove("voice/fw-paris-0");
            assert_eq!(index.phones_len(), 1, "round {round}");
            let phone = index.phone(phone_mac()).unwrap();
            assert_eq!(phone.shard.name, "fw-paris-1", "round {round}");
            index.remove("voice/fw-paris-1");
            assert!(index.phone(phone_mac()).is_none(), "round {round}");
            assert_eq!(index.phones_len(), 0, "round {round}");
        }
        assert!(
            index.shards.len() <= 2,
            "numbers reused: {}",
            index.shards.len()
        );
    }

    /// What a million phones cost the server: the per-shard bucket and the MAC → shard bucket.
    #[test]
    fn a_phone_costs_the_index_32_and_16_bytes() {
        assert_eq!(std::mem::size_of::<(Mac, Listed)>(), 32);
        assert_eq!(std::mem::size_of::<(Mac, ShardNo)>(), 16);
    }

    #[test]
    fn decisions_of_two_namespaces_are_a_conflict_too() {
        let mut index = Index::from_maps([
            &decision_shard("a-tenant", "fw-paris-0", None),
            &decision_shard("b-tenant", "fw-paris-0", None),
        ]);
        assert!(index.file("cfg000b82123456.xml").is_none());
        assert!(index.in_conflict(phone_mac()));
        index.remove("a-tenant/fw-paris-0");
        assert!(index.file("cfg000b82123456.xml").is_some());
        assert!(!index.in_conflict(phone_mac()));
    }

    #[test]
    fn the_file_cache_stays_within_its_budget() {
        let mut cache = FileCache::new(1000);
        let file = |n: usize| ConfigFile {
            body: Bytes::from(vec![b'x'; n]),
            content_type: "text/plain",
        };
        for i in 0..100u64 {
            cache.put((phone_mac(), i), file(100));
            assert!(cache.bytes() <= 1000, "{} bytes", cache.bytes());
        }
        assert!(cache.get((phone_mac(), 99)).is_some(), "the latest is kept");
        assert!(cache.get((phone_mac(), 0)).is_none(), "the oldest went");
        cache.put((phone_mac(), 1000), file(600));
        assert!(
            cache.get((phone_mac(), 1000)).is_none(),
            "over half the budget: not kept"
        );
    }

    #[test]
    fn a_bad_decision_is_refused() {
        let mut cm = decision_shard("voice", "fw-paris-0", None);
        cm.data
            .as_mut()
            .unwrap()
            .insert(PHONES_KEY.into(), "not a line\n".into());
        assert!(matches!(
            Index::default().apply(&cm),
            Err(IndexError::BadDecision(..))
        ));
    }
}
