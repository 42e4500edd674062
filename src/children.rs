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

/// An [`IndexSlot`] in 16 bytes instead of 32, for the maps that hold one per phone (a
/// decision's slots, the previous decision's, the provisioning server's index): at a million
/// phones each such map is 2²¹ hash buckets, so the slot's size is most of the map's.
///
/// The start is kept to the nanosecond (years 1677–2262) and the length in whole seconds (up to
/// 136 years); slots the planner makes are whole minutes. A slot outside that range has no
/// packed form ([`PackedSlot::pack`] is `None`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PackedSlot {
    /// Unix nanoseconds.
    start: i64,
    /// Seconds.
    length: u32,
    /// The stage plus one (never zero, so `Option<PackedSlot>` is 16 bytes too), with
    /// [`PackedSlot::HELD`] set when held.
    stage: std::num::NonZeroU32,
}

impl PackedSlot {
    const HELD: u32 = 1 << 31;

    /// `slot` in 16 bytes, if it fits (see the type's documentation).
    pub fn pack(slot: &IndexSlot) -> Option<PackedSlot> {
        let start = slot.start.timestamp_nanos_opt()?;
        let length = slot.end.signed_duration_since(slot.start);
        if length.subsec_nanos() != 0 || slot.stage >= Self::HELD - 1 {
            return None;
        }
        Some(PackedSlot {
            start,
            length: u32::try_from(length.num_seconds()).ok()?,
            stage: Self::stage_bits(slot.stage, slot.held)?,
        })
    }

    pub fn unpack(self) -> IndexSlot {
        IndexSlot {
            stage: self.stage(),
            start: self.start(),
            end: self.end(),
            held: self.held(),
        }
    }

    fn stage_bits(stage: u32, held: bool) -> Option<std::num::NonZeroU32> {
        std::num::NonZeroU32::new((stage + 1) | if held { Self::HELD } else { 0 })
    }

    pub fn stage(self) -> u32 {
        (self.stage.get() & !Self::HELD) - 1
    }

    pub fn held(self) -> bool {
        self.stage.get() & Self::HELD != 0
    }

    pub fn start(self) -> DateTime<Utc> {
        DateTime::from_timestamp_nanos(self.start)
    }

    /// The start in Unix nanoseconds. Comparisons over a million slots use these: building a
    /// `DateTime` (a calendar date) per slot was a tenth of a reconcile at that size.
    pub fn start_nanos(self) -> i64 {
        self.start
    }

    /// The end in Unix nanoseconds (see [`PackedSlot::start_nanos`]).
    pub fn end_nanos(self) -> i64 {
        self.start
            .saturating_add(i64::from(self.length).saturating_mul(1_000_000_000))
    }

    pub fn end(self) -> DateTime<Utc> {
        self.start() + chrono::Duration::seconds(i64::from(self.length))
    }

    /// The same slot, held or not.
    pub fn with_held(self, held: bool) -> PackedSlot {
        let stage = self.stage.get() & !Self::HELD | if held { Self::HELD } else { 0 };
        PackedSlot {
            stage: std::num::NonZeroU32::new(stage).unwrap_or(self.stage),
            ..self
        }
    }
}

/// `t` in Unix nanoseconds, for comparing with [`PackedSlot::start_nanos`] and
/// [`PackedSlot::end_nanos`].
pub use crate::core::unix_nanos;

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

    fn slot(start_ns: i64, length: chrono::Duration, stage: u32, held: bool) -> IndexSlot {
        let start = DateTime::from_timestamp_nanos(start_ns);
        IndexSlot {
            stage,
            start,
            end: start + length,
            held,
        }
    }

    proptest::proptest! {
        #[test]
        fn a_slot_packs_and_unpacks_exactly(
            start in i64::MIN..i64::MAX,
            seconds in 0..=i64::from(u32::MAX),
            stage in 0..PackedSlot::HELD - 1,
            held: bool,
        ) {
            let s = slot(start, chrono::Duration::seconds(seconds), stage, held);
            let packed = PackedSlot::pack(&s).expect("in range");
            proptest::prop_assert_eq!(packed.unpack(), s);
            // The nanosecond forms order slots as their times do.
            proptest::prop_assert_eq!(packed.start_nanos(), unix_nanos(s.start));
            proptest::prop_assert_eq!(packed.end_nanos(), unix_nanos(s.end));
            proptest::prop_assert_eq!(
                (packed.stage(), packed.held(), packed.start(), packed.end()),
                (stage, held, s.start, s.end)
            );
            proptest::prop_assert_eq!(packed.with_held(!held).held(), !held);
            proptest::prop_assert_eq!(packed.with_held(!held).stage(), stage);
        }
    }

    #[test]
    fn a_slot_out_of_the_packed_range_has_no_packed_form() {
        let minute = chrono::Duration::minutes(1);
        let at = 1_780_000_000_000_000_000;
        assert!(PackedSlot::pack(&slot(at, minute, 0, false)).is_some());
        // A length that is not whole seconds, negative, or beyond 136 years.
        assert!(
            PackedSlot::pack(&slot(at, chrono::Duration::milliseconds(1_500), 0, false)).is_none()
        );
        assert!(PackedSlot::pack(&slot(at, -minute, 0, false)).is_none());
        assert!(
            PackedSlot::pack(&slot(
                at,
                chrono::Duration::seconds(i64::from(u32::MAX) + 1),
                0,
                false
            ))
            .is_none()
        );
        // A stage that would reach the held bit.
        assert!(PackedSlot::pack(&slot(at, minute, PackedSlot::HELD - 2, true)).is_some());
        assert!(PackedSlot::pack(&slot(at, minute, PackedSlot::HELD - 1, false)).is_none());
        // A start past 2262 (nanoseconds no longer fit in 64 bits).
        let late = DateTime::from_timestamp(10_000_000_000, 0).unwrap();
        let late = IndexSlot {
            stage: 0,
            start: late,
            end: late + minute,
            held: false,
        };
        assert!(PackedSlot::pack(&late).is_none());
    }

    /// The point of the type: a (MAC, slot) bucket of 24 bytes instead of 40.
    #[test]
    fn a_packed_slot_is_16_bytes_with_or_without_a_slot() {
        assert_eq!(std::mem::size_of::<PackedSlot>(), 16);
        assert_eq!(std::mem::size_of::<Option<PackedSlot>>(), 16);
    }

    #[test]
    fn content_hash_changes_with_any_byte() {
        let a = content_hash([("a", "1"), ("b", "2")]);
        assert_eq!(a, content_hash([("a", "1"), ("b", "2")]));
        assert_ne!(a, content_hash([("a", "1"), ("b", "3")]));
        assert_ne!(a, content_hash([("a1", ""), ("b", "2")]));
    }
}
