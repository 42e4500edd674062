//! Step 5: every phone's decision (model, slot), cut into rendered-config ConfigMaps (shards)
//! under the ConfigMap size limit: a header per site ([`ShardHeader`]: what rendering needs
//! once) and one short line per phone ([`crate::decision`]). The provisioning server renders
//! the files on request from it; nothing here renders a file. Only one shard's lines are held
//! at a time: the decision keeps what it needs to write a shard again ([`Desired::shard_data`]).

use std::collections::{BTreeMap, BTreeSet};

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
        cut_site(fleet, &|i| slots.get(index, i), &files, target, &mut shards);
        rendering.sites.push(files);
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
    target: &Target<'_>,
    shards: &mut Vec<Shard>,
) {
    let site = &fleet.sites[files.site].name;
    let header = files.header.to_json();
    let budget = MAX_SHARD_BYTES.saturating_sub(header.len());
    let mut push = |range: std::ops::Range<usize>, lines: &str| {
        let number = shards.iter().rev().take_while(|s| s.site == *site).count();
        let name = children::config_map_name(target.schedule_name, site, number);
        let hash = children::content_hash([(DECISION_KEY, header.as_str()), (PHONES_KEY, lines)]);
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
