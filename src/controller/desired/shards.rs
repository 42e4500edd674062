//! Step 5: every phone's decision (model, slot), cut into rendered-config ConfigMaps (shards)
//! under the ConfigMap size limit: a header per site ([`ShardHeader`]: what rendering needs
//! once) and one short line per phone ([`crate::decision`]). The provisioning server renders
//! the files on request from it; nothing here renders a file. Only one shard's lines are held
//! at a time: the decision keeps what it needs to write a shard again ([`Desired::shard_data`]).

use std::collections::hash_map::RandomState;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::{Mutex, PoisonError};

use super::Desired;
use super::kept::Assigned;
use crate::children::{self, IndexFirmware, MAX_SHARD_BYTES, PackedSlot};
use crate::core::{Fleet, Plan};
use crate::decision::{
    self, DECISION_KEY, DecidedPhone, PHONES_KEY, ShardHeader, WireModel, WirePolicy,
};
use crate::render::ServerUrl;

/// One rendered-config ConfigMap as it should be.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Shard {
    pub name: String,
    pub site: String,
    /// Hash of the content, stored in the ConfigMap's annotation.
    pub hash: String,
    /// Whether the cluster's copy differs (by hash): only changed shards are written.
    pub changed: bool,
    /// Which [`SiteFiles`] and which phones of it (positions in its MAC order).
    files: usize,
    phones: std::ops::Range<usize>,
}

/// How one site's decision is laid out: its header, and its phones in MAC order with the
/// index of their (model, family) in the header.
#[derive(Clone, Debug)]
struct SiteFiles {
    site: usize,
    header: ShardHeader,
    order: Vec<(usize, u32)>,
}

/// What any shard can be written again from.
#[derive(Clone, Debug)]
pub struct Rendering {
    /// The decision's fleet, moved in once every step has read it ([`Rendering::keep`]): a
    /// copy would cost a second fleet (a million phones) per reconcile.
    fleet: Option<Fleet>,
    sites: Vec<SiteFiles>,
}

impl Rendering {
    /// Takes the fleet the shards were cut from.
    pub(super) fn keep(self, fleet: Fleet) -> Self {
        Rendering {
            fleet: Some(fleet),
            ..self
        }
    }
}

/// The shards of a decision.
#[derive(Clone, Debug)]
pub(super) struct Cut {
    pub shards: Vec<Shard>,
    pub rendering: Rendering,
    /// Owned shards that should no longer exist.
    pub stale: Vec<String>,
    /// Minutes of each site's check window inside a slot.
    pub check_minutes: BTreeMap<String, u32>,
}

/// What the cut needs besides the fleet, the plan and the slots.
pub(super) struct Target<'a> {
    /// `namespace/name` of the schedule, and its bare name (the shards' name prefix).
    pub schedule: String,
    pub schedule_name: &'a str,
    pub server_url: &'a ServerUrl,
    /// Firmware is handed out (firmware set and not paused).
    pub active: bool,
    /// Rendered-config ConfigMaps the schedule owns now: name → content hash.
    pub existing: &'a BTreeMap<String, String>,
    /// Sites cut by earlier decisions (`None`: cut every site now).
    pub memo: Option<&'a CutMemo>,
}

/// How each site was cut by earlier decisions, by a fingerprint of everything its shards are
/// written from (header, shard name prefix, and per phone in MAC order its MAC, model and
/// slot). During a rollout most sites' decisions do not change between reconciles, yet each
/// reconcile wrote and hashed every phone line again (at a million phones, ~36 MB of text):
/// a remembered site is fingerprinted instead, several times cheaper, and its shards'
/// names, hashes and phone ranges are taken from the memo.
///
/// The fingerprint is a keyed SipHash (std's `RandomState`, a random key per process), so
/// two different decisions of a site share a fingerprint with probability 2⁻⁶⁴ whatever the
/// input, like two different shard contents sharing a content hash.
pub struct CutMemo {
    key: RandomState,
    /// Schedule (`namespace/name`) → site → how it was cut last.
    schedules: Mutex<HashMap<String, HashMap<String, SiteCut>>>,
}

/// One site's shards as last cut.
#[derive(Clone)]
struct SiteCut {
    fingerprint: u64,
    shards: Vec<(String, String, std::ops::Range<usize>)>,
}

impl Default for CutMemo {
    fn default() -> Self {
        CutMemo {
            key: RandomState::new(),
            schedules: Mutex::default(),
        }
    }
}

/// A copy with the same key, so what one remembers the other recognises (the benchmark
/// starts each timed decision from the same memory).
impl Clone for CutMemo {
    fn clone(&self) -> Self {
        CutMemo {
            key: self.key.clone(),
            schedules: Mutex::new(
                self.schedules
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .clone(),
            ),
        }
    }
}

impl CutMemo {
    /// Forgets the schedules (`namespace/name`) that `live` no longer holds.
    pub fn retain(&self, live: impl Fn(&str) -> bool) {
        self.schedules
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|schedule, _| live(schedule));
    }

    /// How many sites are remembered, over all schedules.
    pub fn sites(&self) -> usize {
        self.schedules
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .map(HashMap::len)
            .sum()
    }

    /// Takes what `schedule`'s last cut left (the cut puts back what it cuts now).
    fn take(&self, schedule: &str) -> HashMap<String, SiteCut> {
        self.schedules
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(schedule)
            .unwrap_or_default()
    }

    fn put(&self, schedule: String, sites: HashMap<String, SiteCut>) {
        self.schedules
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(schedule, sites);
    }

    /// The fingerprint of what `files`' shards are written from.
    fn fingerprint(
        &self,
        fleet: &Fleet,
        slot_of: &SlotOf<'_>,
        files: &SiteFiles,
        header: &str,
        schedule_name: &str,
    ) -> u64 {
        let mut h = self.key.build_hasher();
        header.hash(&mut h);
        schedule_name.hash(&mut h);
        let phones = &fleet.sites[files.site].phones;
        for &(i, model) in &files.order {
            phones[i].mac.hash(&mut h);
            model.hash(&mut h);
            slot_of(i).hash(&mut h);
        }
        h.finish()
    }
}

/// Cuts each site's decision into shards of at most [`MAX_SHARD_BYTES`], in MAC order.
pub(super) fn cut(fleet: &Fleet, plan: &Plan, slots: &Assigned, target: &Target<'_>) -> Cut {
    let firmware = fleet
        .schedule
        .firmware
        .as_ref()
        .filter(|_| target.active)
        .map(|fw| IndexFirmware {
            version: fw.version.clone(),
            file: fw.file.clone(),
            models: fw
                .models
                .iter()
                .flatten()
                .map(|id| fleet.models[id.0 as usize].clone())
                .collect(),
        });
    let provisioning = WirePolicy::from(&fleet.schedule.provisioning);
    let mut rendering = Rendering {
        sites: Vec::with_capacity(fleet.sites.len()),
        fleet: None,
    };
    let mut shards = Vec::new();
    let mut check_minutes = BTreeMap::new();
    let mut remembered = target
        .memo
        .map(|m| m.take(&target.schedule))
        .unwrap_or_default();
    let mut cut_now = HashMap::new();
    for (index, (site, site_plan)) in fleet.sites.iter().zip(&plan.sites).enumerate() {
        // A site has a handful of (model, family) pairs: found by id, named once each.
        let mut seen: Vec<(u32, crate::core::PhoneFamily)> = Vec::new();
        let mut models: Vec<WireModel> = Vec::new();
        let mut order: Vec<(usize, u32)> = Vec::with_capacity(site.phones.len());
        for (i, phone) in site.phones.iter().enumerate() {
            let key = (phone.model.0, phone.family);
            let at = match seen.iter().position(|k| *k == key) {
                Some(at) => at,
                None => {
                    seen.push(key);
                    models.push(WireModel {
                        model: fleet.models[phone.model.0 as usize].clone(),
                        family: phone.family,
                    });
                    models.len() - 1
                }
            };
            order.push((i, at as u32));
        }
        order.sort_by_key(|&(i, _)| site.phones[i].mac);
        let header = ShardHeader {
            schedule: target.schedule.clone(),
            site: site.name.clone(),
            time_zone: site.time_zone.name().to_owned(),
            cap: site_plan.cap.get(),
            check_minutes: site_plan.check_minutes,
            server_url: target.server_url.to_string(),
            provisioning: provisioning.clone(),
            firmware: firmware.clone(),
            models,
            base: decision::base_of(
                slots
                    .of_site(index)
                    .iter()
                    .flatten()
                    .map(|s| s.start_nanos())
                    .min()
                    .map(chrono::DateTime::from_timestamp_nanos),
            ),
        };
        let files = SiteFiles {
            site: index,
            header,
            order,
        };
        check_minutes.insert(site.name.clone(), site_plan.check_minutes);
        let slot_of = |i| slots.get(index, i);
        let header = files.header.to_json();
        let fingerprint = target
            .memo
            .map(|m| m.fingerprint(fleet, &slot_of, &files, &header, target.schedule_name));
        let first = shards.len();
        match (fingerprint, remembered.remove(&site.name)) {
            (Some(print), Some(last)) if last.fingerprint == print => {
                shards.extend(last.shards.iter().map(|(name, hash, phones)| Shard {
                    changed: target.existing.get(name) != Some(hash),
                    name: name.clone(),
                    site: site.name.clone(),
                    hash: hash.clone(),
                    files: index,
                    phones: phones.clone(),
                }));
                cut_now.insert(site.name.clone(), last);
            }
            _ => {
                cut_site(fleet, &slot_of, &files, &header, target, &mut shards);
                if let Some(fingerprint) = fingerprint {
                    let cut = shards[first..]
                        .iter()
                        .map(|s| (s.name.clone(), s.hash.clone(), s.phones.clone()))
                        .collect();
                    cut_now.insert(
                        site.name.clone(),
                        SiteCut {
                            fingerprint,
                            shards: cut,
                        },
                    );
                }
            }
        }
        rendering.sites.push(files);
    }
    if let Some(memo) = target.memo {
        memo.put(target.schedule.clone(), cut_now);
    }
    let names: BTreeSet<&str> = shards.iter().map(|s| s.name.as_str()).collect();
    let stale = target
        .existing
        .keys()
        .filter(|n| !names.contains(n.as_str()))
        .cloned()
        .collect();
    Cut {
        shards,
        rendering,
        stale,
        check_minutes,
    }
}

/// The slot of the phone at a position of the site's `phones`.
type SlotOf<'a> = dyn Fn(usize) -> Option<PackedSlot> + 'a;

/// The decision of the phone at `pos` of a site's MAC order.
fn decided(fleet: &Fleet, slot_of: &SlotOf<'_>, files: &SiteFiles, pos: usize) -> DecidedPhone {
    let (i, model) = files.order[pos];
    DecidedPhone {
        mac: fleet.sites[files.site].phones[i].mac,
        model,
        slot: slot_of(i).map(|s| s.unpack()),
    }
}

/// Cuts one site's phone lines into shards, appended to `shards`.
fn cut_site(
    fleet: &Fleet,
    slot_of: &SlotOf<'_>,
    files: &SiteFiles,
    header: &str,
    target: &Target<'_>,
    shards: &mut Vec<Shard>,
) {
    let site = &fleet.sites[files.site].name;
    let budget = MAX_SHARD_BYTES.saturating_sub(header.len());
    let mut push = |range: std::ops::Range<usize>, lines: &str| {
        let number = shards.iter().rev().take_while(|s| s.site == *site).count();
        let name = children::config_map_name(target.schedule_name, site, number);
        let hash = children::content_hash([(DECISION_KEY, header), (PHONES_KEY, lines)]);
        let changed = target.existing.get(&name) != Some(&hash);
        shards.push(Shard {
            name,
            site: site.clone(),
            hash,
            changed,
            files: files.site,
            phones: range,
        });
    };
    let mut start = 0;
    let mut lines = String::new();
    let mut line = String::new();
    for pos in 0..files.order.len() {
        line.clear();
        decision::encode_phone(
            files.header.base,
            &decided(fleet, slot_of, files, pos),
            &mut line,
        );
        if pos > start && lines.len() + line.len() > budget {
            push(start..pos, &lines);
            lines.clear();
            start = pos;
        }
        lines.push_str(&line);
    }
    if start < files.order.len() {
        push(start..files.order.len(), &lines);
    }
}

impl Desired {
    /// The header and phone lines of `shard`, written again (the decision keeps only their
    /// hash).
    pub fn shard_data(&self, shard: &Shard) -> BTreeMap<String, String> {
        let Some((r, fleet)) = self
            .rendering
            .as_ref()
            .and_then(|r| r.fleet.as_ref().map(|f| (r, f)))
        else {
            return BTreeMap::new();
        };
        let files = &r.sites[shard.files];
        let site_slots = self.slots.of_site(&fleet.sites[files.site]);
        let slot_of = |i: usize| site_slots.get(i).copied().flatten();
        let mut lines = String::new();
        for pos in shard.phones.clone() {
            decision::encode_phone(
                files.header.base,
                &decided(fleet, &slot_of, files, pos),
                &mut lines,
            );
        }
        BTreeMap::from([
            (DECISION_KEY.to_owned(), files.header.to_json()),
            (PHONES_KEY.to_owned(), lines),
        ])
    }
}
