//! Step 3: which phones keep the slot they were given, and which stay out of the new plan.
//!
//! A phone learns a new slot only when it next fetches its file: slots handed out now start no
//! earlier than the site's announcement lead ahead (one "repeatedly" interval for the
//! minute-level families; a day and the check window for a Grandstream phone that holds a slot
//! file, since it then checks daily), plus the time a decision takes to reach the server
//! (`Inputs::propagation`). A slot already announced (starting before that) is kept, so the
//! phones that know it are not moved under their feet; so is the slot of a phone mid-download
//! or rebooting.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};

use super::gates::Gates;
use super::members::Members;
use crate::children::{IndexSlot, PackedSlot, unix_nanos};
use crate::core::{self, Fleet, Mac, MacMap, PhoneFacts};

/// Flags of a phone in [`SiteKept::flags`].
const HOLDING: u8 = 1;
const KEEPING: u8 = 2;
const NOT_PLANNED: u8 = 4;

/// What the previous decision's slots become, per site of the fleet and per phone of the
/// site, by position: at a million phones each pass over maps keyed by MAC was a second of
/// cache misses, so the previous slots are looked up once and everything else is read in
/// order.
#[derive(Clone, Debug)]
pub(super) struct Kept<'a> {
    fleet: &'a Fleet,
    sites: Vec<SiteKept>,
}

/// One site's phones, in the order of its `phones`.
#[derive(Clone, Debug, Default)]
struct SiteKept {
    /// The slot each phone was last given.
    previous: Vec<Option<PackedSlot>>,
    /// [`HOLDING`]: holds a slot file it has not finished with (longer lead for Grandstream);
    /// [`KEEPING`]: keeps its previous slot as it is; [`NOT_PLANNED`]: left out of the new
    /// plan (done, failed, halted, busy, or keeping its slot).
    flags: Vec<u8>,
}

impl<'a> Kept<'a> {
    /// Nothing kept, nothing left out; `previous` read by position.
    #[cfg(test)]
    pub fn none(fleet: &'a Fleet, previous: &MacMap<PackedSlot>) -> Self {
        Kept {
            fleet,
            sites: fleet
                .sites
                .iter()
                .map(|site| SiteKept {
                    previous: site
                        .phones
                        .iter()
                        .map(|p| previous.get(&p.mac).copied())
                        .collect(),
                    flags: vec![0; site.phones.len()],
                })
                .collect(),
        }
    }

    /// Where `mac` is (tests name phones by MAC).
    #[cfg(test)]
    fn position(&self, mac: Mac) -> (usize, usize) {
        self.fleet
            .sites
            .iter()
            .enumerate()
            .find_map(|(s, site)| {
                site.phones
                    .iter()
                    .position(|p| p.mac == mac)
                    .map(|i| (s, i))
            })
            .expect("a phone of the fleet")
    }

    /// `mac` keeps its previous slot (and stays out of the plan).
    #[cfg(test)]
    pub fn keep(&mut self, mac: Mac) {
        let (s, i) = self.position(mac);
        self.sites[s].flags[i] |= KEEPING | NOT_PLANNED;
    }

    /// `mac` stays out of the plan.
    #[cfg(test)]
    pub fn leave_out(&mut self, mac: Mac) {
        let (s, i) = self.position(mac);
        self.sites[s].flags[i] |= NOT_PLANNED;
    }

    /// Whether `mac` holds a slot file.
    #[cfg(test)]
    pub fn holds_mac(&self, mac: Mac) -> bool {
        let (s, i) = self.position(mac);
        self.sites[s].flags[i] & HOLDING != 0
    }

    /// The phones left out of the plan, by MAC.
    #[cfg(test)]
    pub fn not_planned_macs(&self) -> crate::core::MacSet {
        self.phones()
            .filter(|&(s, i, _)| self.sites[s].flags[i] & NOT_PLANNED != 0)
            .map(|(_, _, mac)| mac)
            .collect()
    }

    /// Every phone: site, position, MAC.
    fn phones(&self) -> impl Iterator<Item = (usize, usize, Mac)> + '_ {
        self.fleet.sites.iter().enumerate().flat_map(|(s, site)| {
            site.phones
                .iter()
                .enumerate()
                .map(move |(i, p)| (s, i, p.mac))
        })
    }

    fn flags(&self, site: usize, phone: usize) -> u8 {
        self.sites
            .get(site)
            .and_then(|s| s.flags.get(phone))
            .copied()
            .unwrap_or(0)
    }

    /// The slot the phone at `phone` of site `site` keeps, if it keeps one.
    pub fn kept(&self, site: usize, phone: usize) -> Option<PackedSlot> {
        if self.flags(site, phone) & KEEPING != 0 {
            self.sites[site].previous[phone]
        } else {
            None
        }
    }

    /// Every kept slot, with its phone.
    pub fn kept_slots(&self) -> impl Iterator<Item = (Mac, PackedSlot)> + '_ {
        self.phones()
            .filter_map(|(s, i, mac)| self.kept(s, i).map(|slot| (mac, slot)))
    }
}

impl PhoneFacts for Kept<'_> {
    fn not_planned(&self, site: usize, phone: usize) -> bool {
        self.flags(site, phone) & NOT_PLANNED != 0
    }

    fn holds(&self, site: usize, phone: usize) -> bool {
        self.flags(site, phone) & HOLDING != 0
    }

    fn kept(&self, site: usize, phone: usize) -> Option<core::KeptSlot> {
        Kept::kept(self, site, phone)
            .map(|s| core::KeptSlot::from_nanos(s.stage(), s.start_nanos(), s.end_nanos()))
    }
}

/// Decides, for every member, whether its previous slot (in `previous`) is kept.
pub(super) fn keep<'a>(
    fleet: &'a Fleet,
    members: &Members,
    gates: &Gates,
    previous: &super::DecidedSlots,
    now: DateTime<Utc>,
    propagation: Duration,
) -> Kept<'a> {
    let propagation = propagation.max(Duration::zero());
    let mut sites = Vec::with_capacity(fleet.sites.len());
    for (site, site_members) in fleet.sites.iter().zip(&members.by_site) {
        // In place when the site's phones are as decided, by MAC otherwise.
        let previous = previous.of_site(site);
        let mut flags = vec![0u8; site.phones.len()];
        for m in site_members {
            if !m.done() && previous[m.phone as usize].is_some() {
                flags[m.phone as usize] |= HOLDING;
            }
        }
        let lead =
            core::planner::rollout_lead(&fleet.schedule, site, now, &|i| flags[i] & HOLDING != 0);
        // New slots of this site start at `plan_from` at the earliest.
        let plan_from = (now + lead + propagation).max(now + Duration::seconds(1));
        let (plan_from, now) = (unix_nanos(plan_from), unix_nanos(now));
        for m in site_members {
            let i = m.phone as usize;
            if m.done() || gates.is_halted(m.model) {
                flags[i] |= NOT_PLANNED;
                continue;
            }
            match previous[i] {
                Some(prev)
                    if gates.active
                        && (m.busy()
                            || (prev.start_nanos() < plan_from && now < prev.end_nanos())) =>
                {
                    flags[i] |= KEEPING | NOT_PLANNED;
                }
                _ if m.busy() => {
                    flags[i] |= NOT_PLANNED;
                }
                _ => {}
            }
        }
        sites.push(SiteKept { previous, flags });
    }
    Kept { fleet, sites }
}

/// The slot of each phone, per site of the fleet, per phone of the site (by position).
#[derive(Clone, Debug, Default)]
pub(super) struct Assigned {
    sites: Vec<Vec<Option<PackedSlot>>>,
}

impl Assigned {
    /// The slots of `map` laid out over `fleet`.
    #[cfg(test)]
    pub fn from_map(fleet: &Fleet, map: &MacMap<PackedSlot>) -> Self {
        Assigned {
            sites: fleet
                .sites
                .iter()
                .map(|s| s.phones.iter().map(|p| map.get(&p.mac).copied()).collect())
                .collect(),
        }
    }

    /// The slot of the phone at `phone` of site `site`.
    pub fn get(&self, site: usize, phone: usize) -> Option<PackedSlot> {
        self.sites
            .get(site)
            .and_then(|s| s.get(phone))
            .copied()
            .flatten()
    }

    /// The slots of site `site`, in its phones' order (empty when it has none).
    pub fn of_site(&self, site: usize) -> &[Option<PackedSlot>] {
        self.sites.get(site).map_or(&[], Vec::as_slice)
    }

    /// Every slot.
    pub fn iter(&self) -> impl Iterator<Item = PackedSlot> + '_ {
        self.sites.iter().flatten().filter_map(|s| *s)
    }

    /// By MAC (tests).
    #[cfg(test)]
    pub fn to_map(&self, fleet: &Fleet) -> MacMap<PackedSlot> {
        self.clone().decided(fleet).to_map()
    }

    /// As the next decision reads them ([`super::Inputs::previous_slots`]).
    pub fn decided(self, fleet: &Fleet) -> super::DecidedSlots {
        let mut decided = super::DecidedSlots::default();
        let mut sites = self.sites.into_iter();
        for site in &fleet.sites {
            let slots = sites
                .next()
                .unwrap_or_else(|| vec![None; site.phones.len()]);
            decided.push_site(site, slots);
        }
        decided
    }
}

/// The slots rendered into the files: kept ones and every planned one; none while the rollout
/// is inactive (no firmware, or paused). Slots of stages not yet released are announced
/// *held*: phones learn them ahead of the gate, so a stage does not cost the window a phone
/// needs to hear of its slot (docs/planner.md, "Re-arming"), and the server holds their
/// firmware back until the stage is released. A held slot that passes unreleased is planned
/// again like a missed one.
pub(super) fn assign(kept: &Kept<'_>, plan: &core::Plan, gates: &Gates) -> Assigned {
    if !gates.active {
        return Assigned::default();
    }
    let held = |stage: u32| stage > gates.released;
    let mut sites: Vec<Vec<Option<PackedSlot>>> = kept
        .sites
        .iter()
        .enumerate()
        .map(|(s, site)| {
            (0..site.flags.len())
                .map(|i| {
                    kept.kept(s, i)
                        .map(|slot| slot.with_held(held(slot.stage())))
                })
                .collect()
        })
        .collect();
    // The plan leaves kept phones out, so it cannot see that a kept slot of an earlier stage
    // ends after a held slot it placed: such a slot would open before its stage can be
    // released. It is not announced (the phone keeps its steady file) until a plan places it
    // after every earlier stage's slots.
    // The latest end of the kept slots of each stage, read once: asked per planned slot, a
    // scan of every kept slot would cost slots × kept phones.
    let mut kept_end: BTreeMap<u32, i64> = BTreeMap::new();
    for slot in sites.iter().flatten().flatten() {
        let end = kept_end.entry(slot.stage()).or_insert(slot.end_nanos());
        *end = (*end).max(slot.end_nanos());
    }
    let kept_gate = |stage: u32| kept_end.range(..stage).map(|(_, end)| *end).max();
    // The plan's sites are the fleet's, in the same (name) order.
    for ((site_plan, site), slots) in plan.sites.iter().zip(&kept.fleet.sites).zip(&mut sites) {
        if site_plan.slots.is_empty() {
            continue;
        }
        // Where each MAC sits in the site: a map of one site, small enough to stay in cache.
        let position: MacMap<u32> = site
            .phones
            .iter()
            .enumerate()
            .map(|(i, p)| (p.mac, i as u32))
            .collect();
        for (slot, macs) in site_plan.slots_with_phones() {
            if held(slot.stage)
                && kept_gate(slot.stage).is_some_and(|gate| unix_nanos(slot.start) < gate)
            {
                continue;
            }
            // Planner slots are whole minutes of this century, so they always pack; one that
            // did not would leave its phones unannounced until the next plan.
            let Some(packed) = PackedSlot::pack(&IndexSlot {
                stage: slot.stage,
                start: slot.start,
                end: slot.end,
                held: held(slot.stage),
            }) else {
                continue;
            };
            for mac in macs {
                if let Some(&i) = position.get(mac) {
                    slots[i as usize] = Some(packed);
                }
            }
        }
    }
    Assigned { sites }
}
