//! The objects a PhoneSchedule owns, and their wire format: the contract between the controller,
//! which writes rendered configs, and the provisioning server, which serves them and writes
//! progress back.
//!
//! Rendered configs live in ConfigMaps named `<schedule>-<site>-<n>`, one site per ConfigMap and
//! as many shards as keep each under [`MAX_SHARD_BYTES`] (ConfigMap data is capped at 1 MiB by
//! the API server). Each shard carries one file per phone (its name as the phone requests it,
//! the exact bytes served) and an index, [`INDEX_KEY`], telling the server which site, cap,
//! firmware and slot each phone has. Progress from the phones lives in `<shard name>-progress`
//! ConfigMaps (one key per phone), written by the provisioning server; all of them are owned by
//! the schedule, so deleting the schedule removes them.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Label naming the owning PhoneSchedule.
pub const LABEL_SCHEDULE: &str = "phonefleet.io/schedule";
/// Label naming the PhoneSite whose phones a ConfigMap is for.
pub const LABEL_SITE: &str = "phonefleet.io/site";
/// Label telling rendered configs from progress (`rendered-config` | `progress`).
pub const LABEL_COMPONENT: &str = "app.kubernetes.io/component";
/// Standard label marking what phonefleet manages.
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// Value of [`LABEL_MANAGED_BY`].
pub const MANAGED_BY: &str = "phonefleet";
/// [`LABEL_COMPONENT`] of rendered-config ConfigMaps.
pub const COMPONENT_CONFIG: &str = "rendered-config";
/// [`LABEL_COMPONENT`] of progress ConfigMaps.
pub const COMPONENT_PROGRESS: &str = "progress";
/// [`LABEL_COMPONENT`] of phone-note ConfigMaps (see [`PhoneNote`]).
pub const COMPONENT_NOTES: &str = "phone-notes";
/// Annotation holding a hash of a ConfigMap's data, so the controller can tell from metadata
/// alone (without caching every file) whether a shard needs writing.
pub const ANNOTATION_CONTENT_HASH: &str = "phonefleet.io/content-hash";
/// Data key of a shard's index (not a file name any phone requests: phones ask for their MAC).
pub const INDEX_KEY: &str = "phonefleet-index.json";
/// Budget for one shard's data, below the API server's 1 MiB ConfigMap limit with room for
/// metadata and the index.
pub const MAX_SHARD_BYTES: usize = 768 * 1024;

/// What the provisioning server needs to know about the phones of one shard.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ShardIndex {
    /// `namespace/name` of the schedule.
    pub schedule: String,
    pub site: String,
    pub time_zone: String,
    /// Effective cap of concurrent firmware downloads for the site.
    pub cap: u32,
    /// The rollout's firmware, if a rollout is running (not paused, not halted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub firmware: Option<IndexFirmware>,
    /// Phones of this shard by bare lower-case MAC (`000b82123456`).
    pub phones: BTreeMap<String, IndexPhone>,
}

/// The firmware of a running rollout.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct IndexFirmware {
    pub version: String,
    pub file: String,
    /// Models it applies to; empty means all.
    #[serde(default)]
    pub models: Vec<String>,
}

/// One phone in a shard index.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct IndexPhone {
    pub model: String,
    /// Data key of the phone's rendered file in the same ConfigMap.
    pub file: String,
    /// The phone's current slot, when it has one: downloads are allowed only inside it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slot: Option<IndexSlot>,
}

/// A slot, in UTC.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct IndexSlot {
    pub stage: u32,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    /// Announced ahead of its stage's release: the phone learns its window now (so a phone
    /// that re-arms only at the next occurrence is ready when the gate opens), and the
    /// provisioning server refuses its firmware (503 + Retry-After) until the stage is released.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub held: bool,
}

/// A phone's rollout state as learnt from its requests.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[serde(rename_all = "camelCase")]
pub enum PhoneState {
    /// Not yet downloaded the target firmware.
    Pending,
    /// Downloading the image now.
    Downloading,
    /// Downloaded the image; expected back with the new version before a deadline.
    Rebooting,
    /// Came back reporting the target version.
    Upgraded,
    /// Did not come back with the target version in time, or came back with the old one.
    Failed,
}

/// One phone's progress record, the value of its key in a progress ConfigMap.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PhoneProgress {
    pub state: PhoneState,
    /// Last firmware version the phone reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// The target firmware version this record is about.
    pub target: String,
    /// When the phone entered `state`.
    pub since: DateTime<Utc>,
}

/// Why the provisioning server refused a phone's request: a closed set, recorded in the
/// phone's note and written to the access log.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "camelCase")]
pub enum RefusalReason {
    /// Firmware asked for with no slot planned (no rollout for its model, paused or halted).
    NoSlot,
    /// Firmware asked for inside a slot announced ahead whose stage is not released yet.
    StageHeld,
    /// Firmware asked for before the phone's slot.
    BeforeSlot,
    /// Firmware asked for after the phone's slot ended.
    SlotOver,
    /// Every download token of the site is held (the cap).
    SiteBusy,
    /// The phone already holds a download token of its site.
    AlreadyDownloading,
    /// The download tokens could not be read or written (API server).
    TokensUnavailable,
    /// The phone asked for another site's firmware directory.
    WrongSite,
    /// Missing or wrong basic-auth credentials for the phone's site.
    Unauthorized,
    /// The firmware file is not in the firmware directory.
    NoFirmwareFile,
}

impl RefusalReason {
    /// The name used in notes, logs and the plugin's output.
    pub const fn as_str(self) -> &'static str {
        match self {
            RefusalReason::NoSlot => "noSlot",
            RefusalReason::StageHeld => "stageHeld",
            RefusalReason::BeforeSlot => "beforeSlot",
            RefusalReason::SlotOver => "slotOver",
            RefusalReason::SiteBusy => "siteBusy",
            RefusalReason::AlreadyDownloading => "alreadyDownloading",
            RefusalReason::TokensUnavailable => "tokensUnavailable",
            RefusalReason::WrongSite => "wrongSite",
            RefusalReason::Unauthorized => "unauthorized",
            RefusalReason::NoFirmwareFile => "noFirmwareFile",
        }
    }
}

impl std::fmt::Display for RefusalReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A refusal and when it happened.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct RefusalNote {
    pub reason: RefusalReason,
    pub at: DateTime<Utc>,
}

/// What the provisioning server last saw from a phone, under [`note_key`] in the notes
/// ConfigMap of its shard ([`notes_map_name`]). Apart from [`PhoneProgress`] so that it never
/// takes part in the progress merge rule (a note is last-writer-wins), and in a ConfigMap of
/// its own so that a note never wakes the controller, which watches progress. Fixed-size (a version
/// string, two instants, an enum) and written only when something in it changes or `seen` is
/// older than the server's refresh interval, so a polling phone costs a bounded number of
/// writes (docs/provisioning.md, "Phone notes").
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PhoneNote {
    /// The phone's last request (to the refresh interval).
    pub seen: DateTime<Utc>,
    /// The firmware version its last request reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Its last refused request, kept after later successes (`at` tells which came last).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refusal: Option<RefusalNote>,
}

/// Data key of a phone's note in its notes ConfigMap: `<bare mac>.note` (not a MAC, so
/// readers of progress records would skip it too).
pub fn note_key(mac: crate::core::Mac) -> String {
    format!("{}.note", mac.bare())
}

/// Name of shard `n` of a site's rendered configs; a DNS subdomain name as ConfigMaps require.
pub fn config_map_name(schedule: &str, site: &str, shard: usize) -> String {
    let name = format!("{schedule}-{site}-{shard}");
    if name.len() <= 253 {
        return name;
    }
    // Both parts are already valid names; only overlong combinations need shortening, by a
    // stable hash so the name never changes between reconciles.
    let digest = fnv1a(name.as_bytes());
    format!(
        "{}-{digest:016x}-{shard}",
        &schedule[..schedule.len().min(200)]
    )
}

/// Name of the phone-notes ConfigMap that goes with a rendered-config shard.
pub fn notes_map_name(config_map: &str) -> String {
    format!("{config_map}-notes")
}

/// Name of the progress ConfigMap that goes with a rendered-config shard.
pub fn progress_map_name(config_map: &str) -> String {
    format!("{config_map}-progress")
}

/// Splits `(key, bytes)` items, already sorted by key, into consecutive shards of at most
/// `budget` bytes each (an item larger than the budget gets a shard of its own). Sorting by key
/// (the file name, so the MAC) keeps a phone's shard stable while the inventory grows at the
/// end of the range.
pub fn shard_by_size<T>(items: Vec<T>, budget: usize, size: impl Fn(&T) -> usize) -> Vec<Vec<T>> {
    let mut shards: Vec<Vec<T>> = Vec::new();
    let mut used = 0;
    for item in items {
        let bytes = size(&item);
        match shards.last_mut() {
            Some(shard) if used + bytes <= budget => shard.push(item),
            _ => {
                shards.push(vec![item]);
                used = 0;
            }
        }
        used += bytes;
    }
    shards
}

/// A content hash for [`ANNOTATION_CONTENT_HASH`]: FNV-1a over keys and values in order.
pub fn content_hash<'a>(data: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let mut bytes = Vec::new();
    for (k, v) in data {
        bytes.extend_from_slice(k.as_bytes());
        bytes.push(0);
        bytes.extend_from_slice(v.as_bytes());
        bytes.push(0);
    }
    format!("{:016x}", fnv1a(&bytes))
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_respect_the_budget_and_keep_order() {
        let items: Vec<(u32, usize)> = (0..10).map(|i| (i, 300)).collect();
        let shards = shard_by_size(items, 1000, |(_, n)| *n);
        assert_eq!(shards.len(), 4);
        assert!(
            shards
                .iter()
                .all(|s| s.iter().map(|(_, n)| n).sum::<usize>() <= 1000)
        );
        let flat: Vec<u32> = shards.into_iter().flatten().map(|(i, _)| i).collect();
        assert_eq!(flat, (0..10).collect::<Vec<_>>());
    }

    #[test]
    fn an_oversized_item_gets_a_shard_of_its_own() {
        let shards = shard_by_size(vec![10, 5000, 10], 1000, |n| *n);
        assert_eq!(shards, vec![vec![10], vec![5000], vec![10]]);
    }

    #[test]
    fn long_names_are_shortened_stably() {
        let long = "s".repeat(250);
        let a = config_map_name(&long, "site", 3);
        assert!(a.len() <= 253, "{}", a.len());
        assert_eq!(a, config_map_name(&long, "site", 3));
        assert_ne!(a, config_map_name(&long, "other", 3));
        assert_eq!(config_map_name("fw", "paris", 0), "fw-paris-0");
    }

    #[test]
    fn content_hash_changes_with_any_byte() {
        let a = content_hash([("a", "1"), ("b", "2")]);
        assert_eq!(a, content_hash([("a", "1"), ("b", "2")]));
        assert_ne!(a, content_hash([("a", "1"), ("b", "3")]));
        assert_ne!(a, content_hash([("a1", ""), ("b", "2")]));
    }
}
