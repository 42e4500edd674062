//! Step 5: every phone's file, cut into rendered-config ConfigMaps (shards) under the
//! ConfigMap size limit. Only one shard's files are held at a time: the decision keeps what it
//! needs to render a shard again ([`Desired::shard_data`]), so a 100,000-phone fleet is never in
//! memory all at once.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::{Desired, PhoneFile, phone_file};
use crate::children::{
    self, INDEX_KEY, IndexFirmware, IndexPhone, IndexSlot, MAX_SHARD_BYTES, ShardIndex,
};
use crate::core::{Fleet, Mac, Plan};
use crate::render::{self, Format, ServerUrl};

/// Index bytes budgeted per phone when cutting shards (a phone's index entry is ~120 bytes).
const INDEX_BYTES_PER_PHONE: usize = 200;

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

/// How one site's files are laid out: its phones in MAC order, with what their files need.
#[derive(Clone, Debug)]
struct SiteFiles {
    site: usize,
    check_minutes: u32,
    cap: u32,
    order: Vec<usize>,
}

/// What any shard can be rendered again from.
#[derive(Clone, Debug)]
pub struct Rendering {
    fleet: Fleet,
    schedule: String,
    server_url: ServerUrl,
    firmware: Option<IndexFirmware>,
    sites: Vec<SiteFiles>,
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

/// Renders every phone's file and cuts each site's files into shards of at most
/// [`MAX_SHARD_BYTES`], in MAC order.
pub(super) fn cut(
    fleet: &Fleet,
    plan: &Plan,
    slots: &HashMap<Mac, IndexSlot>,
    target: &Target<'_>,
) -> Cut {
    let firmware = fleet.schedule.firmware.as_ref().filter(|_| target.active);
    let mut rendering = Rendering {
        schedule: target.schedule.clone(),
        server_url: target.server_url.clone(),
        firmware: firmware.map(|fw| IndexFirmware {
            version: fw.version.clone(),
            file: fw.file.clone(),
            models: fw
                .models
                .iter()
                .flatten()
                .map(|id| fleet.models[id.0 as usize].clone())
                .collect(),
        }),
        sites: Vec::with_capacity(fleet.sites.len()),
        fleet: Fleet {
            schedule: fleet.schedule.clone(),
            sites: Vec::new(),
            models: fleet.models.clone(),
        },
    };
    let mut shards = Vec::new();
    let mut check_minutes = BTreeMap::new();
    for (index, (site, site_plan)) in fleet.sites.iter().zip(&plan.sites).enumerate() {
        let mut order: Vec<usize> = (0..site.phones.len()).collect();
        order.sort_by_key(|&i| site.phones[i].mac);
        let files = SiteFiles {
            site: index,
            check_minutes: site_plan.check_minutes,
            cap: site_plan.cap.get(),
            order,
        };
        check_minutes.insert(site.name.clone(), files.check_minutes);
        cut_site(fleet, &rendering, slots, &files, target, &mut shards);
        rendering.sites.push(files);
    }
    rendering.fleet.sites = fleet.sites.clone();
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

/// Cuts one site's files into shards, appended to `shards`.
fn cut_site(
    fleet: &Fleet,
    rendering: &Rendering,
    slots: &HashMap<Mac, IndexSlot>,
    files: &SiteFiles,
    target: &Target<'_>,
    shards: &mut Vec<Shard>,
) {
    let site = &fleet.sites[files.site];
    let mut push = |range: std::ops::Range<usize>, entries: Vec<(String, String)>| {
        let number = shards.iter().filter(|s| s.site == site.name).count();
        let name = children::config_map_name(target.schedule_name, &site.name, number);
        let hash = children::content_hash(entries.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        let changed = target.existing.get(&name) != Some(&hash);
        shards.push(Shard {
            name,
            site: site.name.clone(),
            hash,
            changed,
            files: files.site,
            phones: range,
        });
    };
    let (mut start, mut used) = (0, 0);
    let mut current: Vec<(String, String)> = Vec::new();
    for pos in 0..files.order.len() {
        let (_, file, _) = render_entry(fleet, rendering, slots, files, pos);
        let size = file.name.len() + file.body.len() + INDEX_BYTES_PER_PHONE;
        if pos > start && used + size > MAX_SHARD_BYTES {
            current.push(index_entry(fleet, rendering, slots, files, start..pos));
            push(start..pos, std::mem::take(&mut current));
            start = pos;
            used = 0;
        }
        used += size;
        current.push((file.name, file.body));
    }
    if start < files.order.len() {
        let end = files.order.len();
        current.push(index_entry(fleet, rendering, slots, files, start..end));
        push(start..end, current);
    }
}

/// The phone at `pos` of a site's MAC order: its bare MAC, its file and its index entry.
fn render_entry(
    fleet: &Fleet,
    r: &Rendering,
    slots: &HashMap<Mac, IndexSlot>,
    files: &SiteFiles,
    pos: usize,
) -> (String, render::RenderedFile, IndexPhone) {
    let site = &fleet.sites[files.site];
    let phone = &site.phones[files.order[pos]];
    let model = fleet.models[phone.model.0 as usize].as_str();
    let slot = slots.get(&phone.mac).copied();
    let file = phone_file(&PhoneFile {
        family: phone.family,
        mac: phone.mac,
        model,
        site,
        check_minutes: files.check_minutes,
        slot,
        firmware: fleet.schedule.firmware.as_ref(),
        provisioning: &fleet.schedule.provisioning,
        server_url: &r.server_url,
    });
    let entry = IndexPhone {
        model: model.to_owned(),
        file: file.name.clone(),
        slot,
    };
    (phone.mac.bare().to_string(), file, entry)
}

/// The index of the phones at `range` of a site's MAC order, as a data entry.
fn index_entry(
    fleet: &Fleet,
    r: &Rendering,
    slots: &HashMap<Mac, IndexSlot>,
    files: &SiteFiles,
    range: std::ops::Range<usize>,
) -> (String, String) {
    let site = &fleet.sites[files.site];
    let index = ShardIndex {
        schedule: r.schedule.clone(),
        site: site.name.clone(),
        time_zone: site.time_zone.name().to_owned(),
        cap: files.cap,
        firmware: r.firmware.clone(),
        phones: range
            .map(|pos| {
                let phone = &site.phones[files.order[pos]];
                let model = fleet.models[phone.model.0 as usize].clone();
                let file = Format::of(phone.family).file_name(phone.mac);
                let slot = slots.get(&phone.mac).copied();
                (
                    phone.mac.bare().to_string(),
                    IndexPhone { model, file, slot },
                )
            })
            .collect(),
    };
    // Serialising plain structs with string keys cannot fail.
    (
        INDEX_KEY.to_owned(),
        serde_json::to_string(&index).unwrap_or_default(),
    )
}

impl Desired {
    /// The files and index of `shard`, rendered again (the decision keeps only their hash).
    pub fn shard_data(&self, shard: &Shard) -> BTreeMap<String, String> {
        let Some(r) = &self.rendering else {
            return BTreeMap::new();
        };
        let files = &r.sites[shard.files];
        let mut data: BTreeMap<String, String> = shard
            .phones
            .clone()
            .map(|pos| {
                let (_, file, _) = render_entry(&r.fleet, r, &self.slots, files, pos);
                (file.name, file.body)
            })
            .collect();
        let (key, index) = index_entry(&r.fleet, r, &self.slots, files, shard.phones.clone());
        data.insert(key, index);
        data
    }
}
