//! Each phone's rollout state, learnt from its requests, and its persistence in the
//! `<shard>-progress` ConfigMaps the controller reads for counts and stage gating.
//!
//! The state machine ([`Tracker`]) is pure. Persistence ([`flush`]) is batched: every tick,
//! each progress ConfigMap with changed phones gets one read and one JSON merge patch of the
//! changed keys only, with a `resourceVersion` precondition. Only changed keys, because a
//! server-side apply by one field manager removes the keys it no longer lists, and each replica
//! knows only the phones it saw; the precondition, because two replicas can see the same phone
//! (behind a load balancer): the merge rule ([`resolve`]) keeps the newer fact and lets an
//! inferred failure (a reboot deadline) stand only if nobody saw the phone since. The
//! ConfigMap itself (labels, owner reference to the schedule) is created by server-side apply
//! with field manager [`FIELD_MANAGER`].

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{ListParams, Patch, PatchParams};
use kube::{Api, Client, ResourceExt};

use crate::children::{
    COMPONENT_PROGRESS, LABEL_COMPONENT, LABEL_MANAGED_BY, LABEL_SCHEDULE, LABEL_SITE, MANAGED_BY,
    PhoneProgress, PhoneState, progress_map_name,
};
use crate::core::{Mac, MacMap};
use crate::scope::WatchScope;

use super::index::ShardMeta;

/// Field manager of every write the provisioning server makes.
pub const FIELD_MANAGER: &str = "phonefleet-server";

/// Where a phone's record lives: the progress ConfigMap of its shard.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MapRef {
    pub namespace: String,
    pub name: String,
    pub schedule: String,
    pub schedule_uid: Option<String>,
    pub site: String,
}

impl MapRef {
    /// The progress map of the shard described by `meta`.
    pub fn of(meta: &ShardMeta) -> Self {
        Self {
            namespace: meta.namespace.clone(),
            name: progress_map_name(&meta.name),
            schedule: meta.schedule.clone(),
            schedule_uid: meta.schedule_uid.clone(),
            site: meta.site.clone(),
        }
    }
}

/// What makes a phone that reports the target version count as `upgraded`
/// (`--upgrade-evidence`). A phone's User-Agent is its own word: anyone who can reach the
/// server can send it, so by default it is believed only with evidence.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum UpgradeEvidence {
    /// Only after a whole-image download of the target by that phone (inside its slot, as
    /// every download is), recorded by this replica or by another one: the strictest rule. A
    /// phone upgraded by other means, or whose download record was lost with a killed
    /// replica, stays not upgraded.
    Download,
    /// As `download`, or once the phone's planned slot has begun: the phone was told to
    /// upgrade, so reporting the target from then on is what the plan expects. Covers phones
    /// whose download another replica served but never recorded (killed with SIGKILL between
    /// the download and the next progress write) and phones upgraded by hand during their
    /// stage. A claim before the phone's slot is ignored.
    #[default]
    Slot,
    /// The phone's word, whenever it comes: for fleets upgraded by other means (another
    /// provisioning server, a technician), where the server only observes.
    ReportedVersion,
}

/// Why a change was made, which decides how it merges with what another replica stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Basis {
    /// Seen in a request (or a download) this replica served.
    Observed,
    /// Inferred from silence (a reboot deadline).
    Inferred,
    /// A phone reports the target version without evidence this replica knows of: it stands
    /// only if the stored record shows a whole-image download (by another replica).
    Claimed,
}

/// A state change not yet written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    /// The record the change started from, as this replica knew it.
    pub prev: Option<PhoneProgress>,
    pub next: PhoneProgress,
    pub basis: Basis,
}

/// What to do with a change, given what the ConfigMap holds now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Resolution {
    Write,
    /// Someone else recorded something newer: take it instead.
    Adopt(PhoneProgress),
    /// A claim without evidence and nothing stored: forget the change.
    Discard,
}

/// Whether `record` shows that the whole target image went out to the phone: it was
/// rebooting into it, or came back from that reboot failed.
fn has_download(record: &PhoneProgress) -> bool {
    matches!(record.state, PhoneState::Rebooting | PhoneState::Failed)
}

/// The merge rule between replicas. A record about an older target is replaced. An observed
/// fact wins unless the stored record is newer. An inferred failure wins only if the stored
/// record is still the one it was inferred from: if another replica saw the phone come back,
/// the phone did not fail. A claimed upgrade wins only over a stored record of a whole-image
/// download of the same target; otherwise what is stored stands.
pub fn resolve(stored: Option<&PhoneProgress>, change: &Change) -> Resolution {
    if change.basis == Basis::Claimed {
        return match stored {
            Some(s) if s.target == change.next.target && has_download(s) => Resolution::Write,
            Some(s) => Resolution::Adopt(s.clone()),
            None => Resolution::Discard,
        };
    }
    let Some(stored) = stored else {
        return Resolution::Write;
    };
    if stored.target != change.next.target {
        return Resolution::Write;
    }
    let write = if change.basis == Basis::Inferred {
        change.prev.as_ref() == Some(stored)
    } else {
        change.next.since >= stored.since
    };
    if write {
        Resolution::Write
    } else {
        Resolution::Adopt(stored.clone())
    }
}

#[derive(Clone, Debug)]
struct Entry {
    map: MapRef,
    record: Option<PhoneProgress>,
    change: Option<Change>,
    /// Bumped at every change, so a flush only clears what it wrote.
    generation: u64,
}

/// The state machine of every phone this replica knows about.
///
/// pending → downloading (first byte of the target image) → rebooting (every byte of it went
/// out to the phone) → upgraded (a request reporting the target version) | failed (back with
/// another version, or not back before the deadline). A dropped download goes back to
/// pending. A phone reporting the target version without such a download is upgraded only as
/// [`UpgradeEvidence`] allows; under `download` (and `slot` before the phone's slot) the claim
/// is checked against the stored record at the next write ([`Basis::Claimed`]), since another
/// replica may have served the download.
#[derive(Debug, Default)]
pub struct Tracker {
    phones: MacMap<Entry>,
    evidence: UpgradeEvidence,
    /// What each phone was last seen doing (kept apart from its record: see [`super::notes`]).
    pub notes: super::notes::Notes,
}

impl Tracker {
    /// A tracker believing reported versions as `evidence` says.
    pub fn new(evidence: UpgradeEvidence) -> Self {
        Self {
            phones: MacMap::default(),
            evidence,
            notes: super::notes::Notes::default(),
        }
    }

    /// Takes a record read from the API server (at start-up), unless one is already known.
    pub fn load(&mut self, mac: Mac, map: MapRef, record: PhoneProgress) {
        self.phones.entry(mac).or_insert(Entry {
            map,
            record: Some(record),
            change: None,
            generation: 0,
        });
    }

    /// The current record of a phone for `target` (`None`: pending, nothing recorded).
    pub fn get(&self, mac: Mac, target: &str) -> Option<&PhoneProgress> {
        self.phones
            .get(&mac)
            .and_then(|e| e.record.as_ref())
            .filter(|r| r.target == target)
    }

    /// The latest record of a phone, whatever its target.
    pub fn latest(&self, mac: Mac) -> Option<&PhoneProgress> {
        self.phones.get(&mac).and_then(|e| e.record.as_ref())
    }

    fn set(&mut self, mac: Mac, map: &MapRef, next: PhoneProgress, basis: Basis) {
        let entry = self.phones.entry(mac).or_insert_with(|| Entry {
            map: map.clone(),
            record: None,
            change: None,
            generation: 0,
        });
        let prev = entry.record.clone();
        entry.map = map.clone();
        entry.change = Some(Change {
            // The base of a chain of unwritten changes is what was last known stored.
            prev: entry.change.take().map_or(prev, |c| c.prev),
            next: next.clone(),
            basis,
        });
        entry.record = Some(next);
        entry.generation += 1;
    }

    fn state(&self, mac: Mac, target: &str) -> PhoneState {
        self.get(mac, target)
            .map_or(PhoneState::Pending, |r| r.state)
    }

    fn record(state: PhoneState, version: &str, target: &str, now: DateTime<Utc>) -> PhoneProgress {
        PhoneProgress {
            state,
            version: Some(version.to_owned()),
            target: target.to_owned(),
            since: now,
        }
    }

    /// A configuration request reporting `version`; `slot_started` when the phone's planned
    /// slot has begun.
    pub fn on_config(
        &mut self,
        mac: Mac,
        map: &MapRef,
        version: &str,
        target: &str,
        slot_started: bool,
        now: DateTime<Utc>,
    ) {
        if version == target {
            self.on_target(mac, map, version, target, slot_started, now);
        } else if self.state(mac, target) == PhoneState::Rebooting {
            // Back from the reboot on another version: the image did not take.
            self.set(
                mac,
                map,
                Self::record(PhoneState::Failed, version, target, now),
                Basis::Observed,
            );
        }
    }

    /// A request reporting the target version: upgraded if this replica sent the phone the
    /// whole image, or if [`UpgradeEvidence`] trusts the report; else a claim for the stored
    /// record to confirm.
    fn on_target(
        &mut self,
        mac: Mac,
        map: &MapRef,
        version: &str,
        target: &str,
        slot_started: bool,
        now: DateTime<Utc>,
    ) {
        let current = self.get(mac, target);
        if current.is_some_and(|r| r.state == PhoneState::Upgraded) {
            return;
        }
        let downloaded = current.is_some_and(has_download);
        let trusted = match self.evidence {
            UpgradeEvidence::Download => false,
            UpgradeEvidence::Slot => slot_started,
            UpgradeEvidence::ReportedVersion => true,
        };
        let basis = if downloaded || trusted {
            Basis::Observed
        } else {
            Basis::Claimed
        };
        self.set(
            mac,
            map,
            Self::record(PhoneState::Upgraded, version, target, now),
            basis,
        );
    }

    /// The first byte of a firmware download went out to a phone reporting `version` (always
    /// inside its slot: downloads are refused outside).
    pub fn on_download_start(
        &mut self,
        mac: Mac,
        map: &MapRef,
        version: &str,
        target: &str,
        now: DateTime<Utc>,
    ) {
        if version == target {
            self.on_target(mac, map, version, target, true, now);
        } else if self.state(mac, target) != PhoneState::Downloading {
            self.set(
                mac,
                map,
                Self::record(PhoneState::Downloading, version, target, now),
                Basis::Observed,
            );
        }
    }

    /// A download ended: `complete` when its last byte went out.
    pub fn on_download_end(
        &mut self,
        mac: Mac,
        map: &MapRef,
        complete: bool,
        target: &str,
        now: DateTime<Utc>,
    ) {
        let Some(current) = self.get(mac, target).cloned() else {
            return;
        };
        if current.state != PhoneState::Downloading {
            return;
        }
        let state = if complete {
            PhoneState::Rebooting
        } else {
            PhoneState::Pending
        };
        let version = current.version.unwrap_or_default();
        self.set(
            mac,
            map,
            Self::record(state, &version, target, now),
            Basis::Observed,
        );
    }

    /// Marks failed every phone rebooting for longer than `deadline`.
    pub fn sweep(&mut self, now: DateTime<Utc>, deadline: chrono::Duration) {
        let overdue: Vec<(Mac, MapRef, PhoneProgress)> = self
            .phones
            .iter()
            .filter_map(|(mac, e)| {
                let r = e.record.as_ref()?;
                (r.state == PhoneState::Rebooting && r.since + deadline <= now)
                    .then(|| (*mac, e.map.clone(), r.clone()))
            })
            .collect();
        for (mac, map, r) in overdue {
            let failed = PhoneProgress {
                state: PhoneState::Failed,
                since: now,
                ..r
            };
            self.set(mac, &map, failed, Basis::Inferred);
        }
    }

    /// Unwritten changes grouped by progress map, with each phone's generation.
    pub fn pending(&self) -> BTreeMap<MapRef, Vec<(Mac, Change, u64)>> {
        let mut out: BTreeMap<MapRef, Vec<(Mac, Change, u64)>> = BTreeMap::new();
        for (mac, e) in &self.phones {
            if let Some(c) = &e.change {
                out.entry(e.map.clone())
                    .or_default()
                    .push((*mac, c.clone(), e.generation));
            }
        }
        out
    }

    /// Records the outcome of a flush for one phone, unless it changed again meanwhile.
    pub fn settle(&mut self, mac: Mac, generation: u64, resolution: &Resolution) {
        let Some(e) = self.phones.get_mut(&mac) else {
            return;
        };
        if e.generation != generation {
            return;
        }
        match resolution {
            Resolution::Write => {}
            Resolution::Adopt(stored) => e.record = Some(stored.clone()),
            Resolution::Discard => e.record = None,
        }
        e.change = None;
    }

    /// Phones per state for `target` (for logs and tests).
    pub fn counts(&self) -> BTreeMap<PhoneState, usize> {
        let mut out = BTreeMap::new();
        for e in self.phones.values() {
            if let Some(r) = &e.record {
                *out.entry(r.state).or_default() += 1;
            }
        }
        out
    }
}

/// Why progress could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum ProgressError {
    #[error("listing progress ConfigMaps: {0}")]
    List(#[source] kube::Error),
    #[error("writing progress ConfigMap {namespace}/{name}: {source}")]
    Write {
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
}

/// Reads every progress ConfigMap of `scope` into `tracker`.
pub async fn load(
    client: &Client,
    scope: &WatchScope,
    tracker: &mut Tracker,
) -> Result<usize, ProgressError> {
    // Progress records and phone notes (in maps of their own, see `notes`).
    let lp = ListParams::default().labels(&format!(
        "{LABEL_COMPONENT} in ({COMPONENT_PROGRESS},{})",
        crate::children::COMPONENT_NOTES
    ));
    let mut items = Vec::new();
    for api in scope.apis::<ConfigMap>(client) {
        items.extend(api.list(&lp).await.map_err(ProgressError::List)?.items);
    }
    let mut loaded = 0;
    for cm in items {
        let labels = cm.labels();
        let map = MapRef {
            namespace: cm.namespace().unwrap_or_default(),
            name: cm.name_any(),
            schedule: labels.get(LABEL_SCHEDULE).cloned().unwrap_or_default(),
            schedule_uid: cm
                .owner_references()
                .iter()
                .find(|o| o.kind == "PhoneSchedule")
                .map(|o| o.uid.clone()),
            site: labels.get(LABEL_SITE).cloned().unwrap_or_default(),
        };
        // A note is kept under its phone's progress map (`notes` derives the notes map).
        let progress_map = MapRef {
            name: cm
                .name_any()
                .strip_suffix("-notes")
                .map_or_else(|| map.name.clone(), progress_map_name),
            ..map.clone()
        };
        for (key, value) in cm.data.iter().flatten() {
            if let Some(mac) = key
                .strip_suffix(".note")
                .and_then(|m| m.parse::<Mac>().ok())
                && let Ok(note) = serde_json::from_str::<crate::children::PhoneNote>(value)
            {
                tracker.notes.load(mac, progress_map.clone(), note);
                continue;
            }
            let (Ok(mac), Ok(record)) = (
                key.parse::<Mac>(),
                serde_json::from_str::<PhoneProgress>(value),
            ) else {
                continue;
            };
            tracker.load(mac, map.clone(), record);
            loaded += 1;
        }
    }
    Ok(loaded)
}

/// Writes one map's changes; returns each phone's resolution. A 409 (someone wrote the map
/// between our read and our patch) is retried with a fresh read.
pub async fn flush_map(
    client: &Client,
    map: &MapRef,
    changes: &[(Mac, Change, u64)],
    requests: &std::sync::atomic::AtomicU64,
) -> Result<Vec<(Mac, u64, Resolution)>, ProgressError> {
    let count = || requests.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), &map.namespace);
    let write_err = |source| ProgressError::Write {
        namespace: map.namespace.clone(),
        name: map.name.clone(),
        source,
    };
    let mut attempts = 0;
    loop {
        attempts += 1;
        count();
        let current = match api.get_opt(&map.name).await.map_err(write_err)? {
            Some(cm) => cm,
            None => {
                count();
                let pp = PatchParams::apply(FIELD_MANAGER);
                api.patch(
                    &map.name,
                    &pp,
                    &Patch::Apply(skeleton(map, COMPONENT_PROGRESS)),
                )
                .await
                .map_err(write_err)?
            }
        };
        let data = current.data.clone().unwrap_or_default();
        let mut patch_data = serde_json::Map::new();
        let mut results = Vec::with_capacity(changes.len());
        for (mac, change, generation) in changes {
            let key = mac.bare().to_string();
            let stored = data
                .get(&key)
                .and_then(|v| serde_json::from_str::<PhoneProgress>(v).ok());
            let resolution = resolve(stored.as_ref(), change);
            if resolution == Resolution::Write {
                let value = serde_json::to_string(&change.next).unwrap_or_default();
                patch_data.insert(key, serde_json::Value::String(value));
            }
            results.push((*mac, *generation, resolution));
        }
        if patch_data.is_empty() {
            return Ok(results);
        }
        let patch = serde_json::json!({
            "metadata": { "resourceVersion": current.resource_version() },
            "data": patch_data,
        });
        let pp = PatchParams {
            field_manager: Some(FIELD_MANAGER.to_owned()),
            ..Default::default()
        };
        count();
        match api.patch(&map.name, &pp, &Patch::Merge(&patch)).await {
            Ok(_) => return Ok(results),
            Err(kube::Error::Api(e)) if e.code == 409 && attempts < 5 => continue,
            Err(e) => return Err(write_err(e)),
        }
    }
}

/// The progress ConfigMap without data: labels and owner, for server-side apply.
pub(super) fn skeleton(map: &MapRef, component: &str) -> ConfigMap {
    let mut cm = ConfigMap::default();
    cm.metadata.name = Some(map.name.clone());
    cm.metadata.namespace = Some(map.namespace.clone());
    cm.metadata.labels = Some(BTreeMap::from([
        (LABEL_COMPONENT.to_owned(), component.to_owned()),
        (LABEL_MANAGED_BY.to_owned(), MANAGED_BY.to_owned()),
        (LABEL_SCHEDULE.to_owned(), map.schedule.clone()),
        (LABEL_SITE.to_owned(), map.site.clone()),
    ]));
    if let Some(uid) = &map.schedule_uid {
        cm.metadata.owner_references = Some(vec![OwnerReference {
            api_version: format!("{}/{}", crate::api::GROUP, crate::api::VERSION),
            kind: "PhoneSchedule".to_owned(),
            name: map.schedule.clone(),
            uid: uid.clone(),
            controller: Some(false),
            block_owner_deletion: Some(false),
        }]);
    }
    let mut value = serde_json::to_value(&cm).unwrap_or_default();
    // Server-side apply needs apiVersion and kind in the body.
    if let Some(obj) = value.as_object_mut() {
        obj.insert("apiVersion".into(), "v1".into());
        obj.insert("kind".into(), "ConfigMap".into());
    }
    serde_json::from_value(value).unwrap_or(cm)
}

/// The default interval between two flushes (real time).
pub const DEFAULT_FLUSH_INTERVAL: Duration = Duration::from_secs(1);

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t(min: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 1, 6, 1, 0, 0).unwrap() + chrono::Duration::minutes(min)
    }

    fn mac() -> Mac {
        "000b82123456".parse().unwrap()
    }

    fn map() -> MapRef {
        MapRef {
            namespace: "voice".into(),
            name: "fw-paris-0-progress".into(),
            schedule: "fw".into(),
            schedule_uid: None,
            site: "paris".into(),
        }
    }

    fn state(tr: &Tracker) -> PhoneState {
        tr.get(mac(), "2.0")
            .map_or(PhoneState::Pending, |r| r.state)
    }

    #[test]
    fn a_full_download_and_a_return_on_the_target_version_is_an_upgrade() {
        let mut tr = Tracker::default();
        tr.on_config(mac(), &map(), "1.0", "2.0", false, t(0));
        assert_eq!(state(&tr), PhoneState::Pending);
        assert!(
            tr.pending().is_empty(),
            "pending is implicit: nothing to write"
        );
        tr.on_download_start(mac(), &map(), "1.0", "2.0", t(1));
        assert_eq!(state(&tr), PhoneState::Downloading);
        tr.on_download_end(mac(), &map(), true, "2.0", t(5));
        assert_eq!(state(&tr), PhoneState::Rebooting);
        tr.on_config(mac(), &map(), "2.0", "2.0", false, t(8));
        assert_eq!(state(&tr), PhoneState::Upgraded);
        let pending = tr.pending();
        let changes = &pending[&map()];
        assert_eq!(changes.len(), 1);
        assert_eq!(
            changes[0].1.prev, None,
            "the chain starts from what was stored"
        );
    }

    #[test]
    fn a_dropped_download_goes_back_to_pending() {
        let mut tr = Tracker::default();
        tr.on_download_start(mac(), &map(), "1.0", "2.0", t(1));
        tr.on_download_end(mac(), &map(), false, "2.0", t(2));
        assert_eq!(state(&tr), PhoneState::Pending);
    }

    #[test]
    fn coming_back_on_the_old_version_is_a_failure() {
        let mut tr = Tracker::default();
        tr.on_download_start(mac(), &map(), "1.0", "2.0", t(1));
        tr.on_download_end(mac(), &map(), true, "2.0", t(5));
        tr.on_config(mac(), &map(), "1.0", "2.0", false, t(9));
        assert_eq!(state(&tr), PhoneState::Failed);
    }

    #[test]
    fn not_coming_back_before_the_deadline_is_a_failure() {
        let mut tr = Tracker::default();
        tr.on_download_start(mac(), &map(), "1.0", "2.0", t(1));
        tr.on_download_end(mac(), &map(), true, "2.0", t(5));
        tr.sweep(t(34), chrono::Duration::minutes(30));
        assert_eq!(state(&tr), PhoneState::Rebooting);
        tr.sweep(t(35), chrono::Duration::minutes(30));
        assert_eq!(state(&tr), PhoneState::Failed);
        // ... and reporting the target later still counts as upgraded.
        tr.on_config(mac(), &map(), "2.0", "2.0", false, t(60));
        assert_eq!(state(&tr), PhoneState::Upgraded);
    }

    #[test]
    fn a_new_target_starts_from_pending() {
        let mut tr = Tracker::default();
        tr.on_config(mac(), &map(), "2.0", "2.0", false, t(0));
        assert_eq!(tr.get(mac(), "3.0"), None);
        tr.on_download_start(mac(), &map(), "2.0", "3.0", t(1));
        assert_eq!(tr.get(mac(), "3.0").unwrap().state, PhoneState::Downloading);
    }

    #[test]
    fn a_settled_flush_does_not_clear_a_newer_change() {
        let mut tr = Tracker::default();
        tr.on_download_start(mac(), &map(), "1.0", "2.0", t(1));
        let (_, _, generation) = tr.pending()[&map()][0].clone();
        tr.on_download_end(mac(), &map(), true, "2.0", t(5));
        tr.settle(mac(), generation, &Resolution::Write);
        assert_eq!(tr.pending()[&map()].len(), 1);
    }

    fn rec(state: PhoneState, since: i64) -> PhoneProgress {
        PhoneProgress {
            state,
            version: Some("1.0".into()),
            target: "2.0".into(),
            since: t(since),
        }
    }

    #[test]
    fn newer_facts_win_and_older_ones_adopt_the_stored_record() {
        let change = Change {
            prev: None,
            next: rec(PhoneState::Downloading, 5),
            basis: Basis::Observed,
        };
        assert_eq!(resolve(None, &change), Resolution::Write);
        assert_eq!(
            resolve(Some(&rec(PhoneState::Pending, 4)), &change),
            Resolution::Write
        );
        let newer = rec(PhoneState::Upgraded, 6);
        assert_eq!(resolve(Some(&newer), &change), Resolution::Adopt(newer));
    }

    #[test]
    fn an_inferred_failure_loses_against_a_phone_seen_by_another_replica() {
        let rebooting = rec(PhoneState::Rebooting, 5);
        let failure = Change {
            prev: Some(rebooting.clone()),
            next: rec(PhoneState::Failed, 40),
            basis: Basis::Inferred,
        };
        assert_eq!(resolve(Some(&rebooting), &failure), Resolution::Write);
        let upgraded = rec(PhoneState::Upgraded, 8);
        assert_eq!(
            resolve(Some(&upgraded), &failure),
            Resolution::Adopt(upgraded)
        );
    }

    #[test]
    fn a_record_about_another_target_is_replaced() {
        let old = PhoneProgress {
            target: "1.5".into(),
            ..rec(PhoneState::Upgraded, 50)
        };
        let change = Change {
            prev: None,
            next: rec(PhoneState::Downloading, 5),
            basis: Basis::Observed,
        };
        assert_eq!(resolve(Some(&old), &change), Resolution::Write);
    }

    // -- issue #12 item 1: "upgraded" follows evidence --

    #[test]
    fn a_claim_of_the_target_without_a_download_is_not_an_upgrade() {
        for evidence in [UpgradeEvidence::Download, UpgradeEvidence::Slot] {
            let mut tr = Tracker::new(evidence);
            // Before the phone's slot, nothing downloaded: a claim, to be checked at the write.
            tr.on_config(mac(), &map(), "2.0", "2.0", false, t(0));
            let pending = tr.pending();
            let (_, change, generation) = &pending[&map()][0];
            assert_eq!(change.basis, Basis::Claimed, "{evidence:?}");
            // Nothing stored: the claim is dropped and the phone is pending again.
            let resolution = resolve(None, change);
            assert_eq!(resolution, Resolution::Discard);
            tr.settle(mac(), *generation, &resolution);
            assert_eq!(state(&tr), PhoneState::Pending, "{evidence:?}");
            // A partial download is no evidence either.
            tr.on_download_start(mac(), &map(), "1.0", "2.0", t(1));
            tr.on_download_end(mac(), &map(), false, "2.0", t(2));
            tr.on_config(mac(), &map(), "2.0", "2.0", false, t(3));
            assert_eq!(tr.pending()[&map()][0].1.basis, Basis::Claimed);
        }
    }

    #[test]
    fn under_download_evidence_only_a_whole_image_makes_an_upgrade() {
        let mut tr = Tracker::new(UpgradeEvidence::Download);
        // Inside its slot, still a claim.
        tr.on_config(mac(), &map(), "2.0", "2.0", true, t(0));
        assert_eq!(tr.pending()[&map()][0].1.basis, Basis::Claimed);
        // Downloading while claiming the target is a claim too.
        tr.on_download_start(mac(), &map(), "2.0", "2.0", t(1));
        assert_eq!(tr.pending()[&map()][0].1.basis, Basis::Claimed);
        let mut tr = Tracker::new(UpgradeEvidence::Download);
        tr.on_download_start(mac(), &map(), "1.0", "2.0", t(1));
        tr.on_download_end(mac(), &map(), true, "2.0", t(5));
        tr.on_config(mac(), &map(), "2.0", "2.0", false, t(8));
        assert_eq!(state(&tr), PhoneState::Upgraded);
        assert_eq!(tr.pending()[&map()][0].1.basis, Basis::Observed);
    }

    #[test]
    fn under_slot_evidence_a_claim_inside_the_slot_is_believed() {
        let mut tr = Tracker::new(UpgradeEvidence::Slot);
        tr.on_config(mac(), &map(), "2.0", "2.0", true, t(0));
        assert_eq!(state(&tr), PhoneState::Upgraded);
        assert_eq!(tr.pending()[&map()][0].1.basis, Basis::Observed);
    }

    #[test]
    fn under_reported_version_the_phones_word_is_enough() {
        let mut tr = Tracker::new(UpgradeEvidence::ReportedVersion);
        tr.on_config(mac(), &map(), "2.0", "2.0", false, t(0));
        assert_eq!(tr.pending()[&map()][0].1.basis, Basis::Observed);
    }

    #[test]
    fn a_claim_stands_on_another_replicas_record_of_a_download() {
        let claim = Change {
            prev: None,
            next: rec(PhoneState::Upgraded, 9),
            basis: Basis::Claimed,
        };
        for evidence in [PhoneState::Rebooting, PhoneState::Failed] {
            assert_eq!(
                resolve(Some(&rec(evidence, 5)), &claim),
                Resolution::Write,
                "{evidence:?}"
            );
        }
        for none in [PhoneState::Pending, PhoneState::Downloading] {
            let stored = rec(none, 5);
            assert_eq!(
                resolve(Some(&stored), &claim),
                Resolution::Adopt(stored),
                "{none:?}"
            );
        }
        let other_target = PhoneProgress {
            target: "1.5".into(),
            ..rec(PhoneState::Rebooting, 5)
        };
        assert_eq!(
            resolve(Some(&other_target), &claim),
            Resolution::Adopt(other_target)
        );
    }
}
