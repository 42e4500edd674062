//! What the server last saw from each phone (its last request, reported version, last
//! refusal and why), for `kubectl phonefleet why`: a [`PhoneNote`] per phone, in the notes
//! ConfigMap of its shard (`<shard>-notes`, next to `<shard>-progress`).
//!
//! Notes are not progress: nothing decides on them, so they are last-writer-wins (a JSON merge
//! patch of the changed keys, no precondition) and never take part in the progress merge rule;
//! and they live in ConfigMaps the controller does not watch, so writing one never wakes a
//! reconcile.
//! [`Notes`] is pure; a note is due for writing only when its version or refusal reason
//! changes, or when the written `seen` is older than [`REFRESH`], so a phone polling every
//! minute costs one write per [`REFRESH`] at most.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};

use crate::children::{
    COMPONENT_NOTES, PhoneNote, RefusalNote, RefusalReason, note_key, notes_map_name,
};
use crate::core::{Mac, MacMap};

use super::progress::{FIELD_MANAGER, MapRef, ProgressError};

/// How stale a written `seen` may get before a request rewrites it (on the server's clock).
pub const REFRESH: chrono::Duration = chrono::Duration::minutes(15);

#[derive(Clone, Debug)]
struct Entry {
    map: MapRef,
    note: PhoneNote,
    /// What was last written (or loaded), to decide whether the note is due.
    written: Option<PhoneNote>,
}

/// Every phone's note, and which are due for writing.
#[derive(Debug, Default)]
pub struct Notes {
    phones: MacMap<Entry>,
}

/// Whether `next` differs from what was written enough to be worth a write.
fn due(written: Option<&PhoneNote>, next: &PhoneNote) -> bool {
    let Some(w) = written else {
        return true;
    };
    w.version != next.version
        || w.refusal.map(|r| r.reason) != next.refusal.map(|r| r.reason)
        || next.seen - w.seen >= REFRESH
        || next
            .refusal
            .zip(w.refusal)
            .is_some_and(|(n, w)| n.at - w.at >= REFRESH)
}

impl Notes {
    /// Takes a note read from the API server (at start-up), unless one is already known.
    pub fn load(&mut self, mac: Mac, map: MapRef, note: PhoneNote) {
        self.phones.entry(mac).or_insert(Entry {
            map,
            written: Some(note.clone()),
            note,
        });
    }

    /// A request from the phone reporting `version` (if it said), at `now`.
    pub fn seen(&mut self, mac: Mac, map: &MapRef, version: Option<&str>, now: DateTime<Utc>) {
        self.update(mac, map, now, |note| {
            if let Some(v) = version {
                note.version = Some(v.to_owned());
            }
        });
    }

    /// A refused request from the phone.
    pub fn refused(
        &mut self,
        mac: Mac,
        map: &MapRef,
        version: Option<&str>,
        reason: RefusalReason,
        now: DateTime<Utc>,
    ) {
        self.update(mac, map, now, |note| {
            if let Some(v) = version {
                note.version = Some(v.to_owned());
            }
            note.refusal = Some(RefusalNote { reason, at: now });
        });
    }

    fn update(
        &mut self,
        mac: Mac,
        map: &MapRef,
        now: DateTime<Utc>,
        change: impl FnOnce(&mut PhoneNote),
    ) {
        let entry = self.phones.entry(mac).or_insert_with(|| Entry {
            map: map.clone(),
            note: PhoneNote {
                seen: now,
                version: None,
                refusal: None,
            },
            written: None,
        });
        entry.map = map.clone();
        entry.note.seen = entry.note.seen.max(now);
        change(&mut entry.note);
    }

    /// The latest note of a phone, written or not.
    pub fn get(&self, mac: Mac) -> Option<&PhoneNote> {
        self.phones.get(&mac).map(|e| &e.note)
    }

    /// Notes due for writing, by progress map.
    pub fn pending(&self) -> BTreeMap<MapRef, Vec<(Mac, PhoneNote)>> {
        let mut out: BTreeMap<MapRef, Vec<(Mac, PhoneNote)>> = BTreeMap::new();
        for (mac, e) in &self.phones {
            if due(e.written.as_ref(), &e.note) {
                out.entry(e.map.clone())
                    .or_default()
                    .push((*mac, e.note.clone()));
            }
        }
        out
    }

    /// Records that `note` was written (the phone's note may have moved on since).
    pub fn settle(&mut self, mac: Mac, note: PhoneNote) {
        if let Some(e) = self.phones.get_mut(&mac) {
            e.written = Some(note);
        }
    }
}

/// The notes map of the shard whose progress map is `progress`.
fn notes_map(progress: &MapRef) -> MapRef {
    let shard = progress
        .name
        .strip_suffix("-progress")
        .unwrap_or(&progress.name);
    MapRef {
        name: notes_map_name(shard),
        ..progress.clone()
    }
}

/// Writes the due notes of the phones whose progress map is `progress` (one merge patch of
/// the shard's notes map, created first if missing).
pub async fn flush_map(
    client: &Client,
    progress: &MapRef,
    notes: &[(Mac, PhoneNote)],
    requests: &std::sync::atomic::AtomicU64,
) -> Result<(), ProgressError> {
    let count = || requests.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let map = &notes_map(progress);
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), &map.namespace);
    let write_err = |source| ProgressError::Write {
        namespace: map.namespace.clone(),
        name: map.name.clone(),
        source,
    };
    let data: serde_json::Map<String, serde_json::Value> = notes
        .iter()
        .map(|(mac, note)| {
            let value = serde_json::to_string(note).unwrap_or_default();
            (note_key(*mac), serde_json::Value::String(value))
        })
        .collect();
    let patch = serde_json::json!({ "data": data });
    let pp = PatchParams {
        field_manager: Some(FIELD_MANAGER.to_owned()),
        ..Default::default()
    };
    count();
    match api.patch(&map.name, &pp, &Patch::Merge(&patch)).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => {
            count();
            let apply = PatchParams::apply(FIELD_MANAGER);
            api.patch(
                &map.name,
                &apply,
                &Patch::Apply(super::progress::skeleton(map, COMPONENT_NOTES)),
            )
            .await
            .map_err(write_err)?;
            count();
            api.patch(&map.name, &pp, &Patch::Merge(&patch))
                .await
                .map(|_| ())
                .map_err(write_err)
        }
        Err(e) => Err(write_err(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map() -> MapRef {
        MapRef {
            namespace: "voice".into(),
            name: "fw-paris-0-progress".into(),
            schedule: "fw".into(),
            schedule_uid: None,
            site: "paris".into(),
        }
    }

    fn t(minutes: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).expect("instant")
            + chrono::Duration::minutes(minutes)
    }

    fn flush(notes: &mut Notes) -> usize {
        let pending = notes.pending();
        let mut written = 0;
        for (_, list) in pending {
            for (mac, note) in list {
                notes.settle(mac, note);
                written += 1;
            }
        }
        written
    }

    #[test]
    fn a_phone_polling_every_minute_costs_one_write_per_refresh_interval() {
        let mac = Mac::from_u64(1).expect("mac");
        let mut notes = Notes::default();
        let mut writes = 0;
        for minute in 0..60 {
            notes.refused(
                mac,
                &map(),
                Some("1.0"),
                RefusalReason::BeforeSlot,
                t(minute),
            );
            writes += flush(&mut notes);
        }
        // The first sighting, then one per 15 minutes.
        assert_eq!(writes, 4);
        assert_eq!(
            notes.get(mac).and_then(|n| n.refusal).map(|r| r.at),
            Some(t(59))
        );
    }

    #[test]
    fn a_new_reason_or_version_is_written_at_once() {
        let mac = Mac::from_u64(2).expect("mac");
        let mut notes = Notes::default();
        notes.seen(mac, &map(), Some("1.0"), t(0));
        assert_eq!(flush(&mut notes), 1);
        notes.seen(mac, &map(), Some("1.0"), t(1));
        assert_eq!(flush(&mut notes), 0, "nothing new");
        notes.refused(mac, &map(), Some("1.0"), RefusalReason::SiteBusy, t(2));
        assert_eq!(flush(&mut notes), 1, "a refusal");
        notes.refused(mac, &map(), Some("1.0"), RefusalReason::SlotOver, t(3));
        assert_eq!(flush(&mut notes), 1, "another reason");
        notes.seen(mac, &map(), Some("2.0"), t(4));
        assert_eq!(flush(&mut notes), 1, "another version");
        let note = notes.get(mac).expect("note");
        assert_eq!(note.version.as_deref(), Some("2.0"));
        assert_eq!(
            note.refusal.map(|r| r.reason),
            Some(RefusalReason::SlotOver),
            "the last refusal stays after a success"
        );
    }

    #[test]
    fn a_loaded_note_is_not_rewritten_until_something_changes() {
        let mac = Mac::from_u64(3).expect("mac");
        let mut notes = Notes::default();
        notes.load(
            mac,
            map(),
            PhoneNote {
                seen: t(0),
                version: Some("1.0".into()),
                refusal: None,
            },
        );
        assert_eq!(flush(&mut notes), 0);
        notes.seen(mac, &map(), Some("1.0"), t(5));
        assert_eq!(flush(&mut notes), 0);
        notes.seen(mac, &map(), Some("1.0"), t(15));
        assert_eq!(flush(&mut notes), 1);
    }

    #[test]
    fn notes_are_not_progress_records() {
        let mac = Mac::from_u64(4).expect("mac");
        assert!(note_key(mac).parse::<Mac>().is_err());
    }
}
