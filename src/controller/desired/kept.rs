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
use crate::children::{IndexSlot, PackedSlot};
use crate::core::{self, Fleet, Mac, MacMap, MacSet};

/// What the previous decision's slots become.
#[derive(Clone, Debug)]
pub(super) struct Kept<'a> {
    /// The previous decision's slots: a kept slot is read from there, not copied (a second
    /// map of a million slots was the largest single allocation of a decision).
    previous: &'a MacMap<PackedSlot>,
    /// Phones keeping their previous slot as it is.
    keeping: MacSet,
    /// Phones the new plan leaves out: done, failed, halted, busy, or keeping their slot.
    pub not_planned: MacSet,
    /// Phones holding a slot file they have not finished with (longer lead for Grandstream).
    pub holding: MacSet,
}

impl<'a> Kept<'a> {
    /// Nothing kept, nothing left out.
    #[cfg(test)]
    pub fn none(previous: &'a MacMap<PackedSlot>) -> Self {
        Kept {
            previous,
            keeping: MacSet::default(),
            not_planned: MacSet::default(),
            holding: MacSet::default(),
        }
    }

    /// `mac` keeps its slot in `previous` (and stays out of the plan).
    pub fn keep(&mut self, mac: Mac) {
        self.keeping.insert(mac);
        self.not_planned.insert(mac);
    }

    pub fn holds(&self, mac: Mac) -> bool {
        self.holding.contains(&mac)
    }

    /// The slot `mac` keeps, if it keeps one.
    pub fn kept(&self, mac: &Mac) -> Option<PackedSlot> {
        if self.keeping.contains(mac) {
            self.previous.get(mac).copied()
        } else {
            None
        }
    }

    /// Every kept slot.
    pub fn kept_slots(&self) -> impl Iterator<Item = (Mac, PackedSlot)> + '_ {
        self.keeping
            .iter()
            .filter_map(|mac| self.previous.get(mac).map(|s| (*mac, *s)))
    }

    /// The slot `mac` keeps, for the planner to build around.
    pub fn slot(&self, mac: Mac) -> Option<core::KeptSlot> {
        self.kept(&mac).map(|s| core::KeptSlot {
            stage: s.stage(),
            start: s.start(),
            end: s.end(),
        })
    }
}

/// Decides, for every member, whether its previous slot (in `previous`) is kept.
pub(super) fn keep<'a>(
    fleet: &Fleet,
    members: &Members<'_>,
    gates: &Gates,
    previous: &'a MacMap<PackedSlot>,
    now: DateTime<Utc>,
    propagation: Duration,
) -> Kept<'a> {
    let holding: MacSet = members
        .iter()
        .filter(|m| !m.done() && previous.contains_key(&m.mac))
        .map(|m| m.mac)
        .collect();
    let propagation = propagation.max(Duration::zero());
    let phones = members.by_site.iter().map(Vec::len).sum();
    let mut kept = Kept {
        previous,
        keeping: MacSet::with_capacity_and_hasher(previous.len().min(phones), Default::default()),
        not_planned: MacSet::with_capacity_and_hasher(phones, Default::default()),
        holding: MacSet::default(),
    };
    for (site, site_members) in fleet.sites.iter().zip(&members.by_site) {
        let lead =
            core::planner::rollout_lead(&fleet.schedule, site, now, &|mac| holding.contains(&mac));
        // New slots of this site start at `plan_from` at the earliest.
        let plan_from = (now + lead + propagation).max(now + Duration::seconds(1));
        for m in site_members {
            if m.done() || gates.is_halted(m.model) {
                kept.not_planned.insert(m.mac);
                continue;
            }
            match previous.get(&m.mac) {
                Some(prev)
                    if gates.active
                        && (m.busy() || (prev.start() < plan_from && now < prev.end())) =>
                {
                    kept.keep(m.mac);
                }
                _ if m.busy() => {
                    kept.not_planned.insert(m.mac);
                }
                _ => {}
            }
        }
    }
    kept.holding = holding;
    kept
}

/// The slots rendered into the files: kept ones and every planned one; none while the rollout
/// is inactive (no firmware, or paused). Slots of stages not yet released are announced
/// *held*: phones learn them ahead of the gate, so a stage does not cost the window a phone
/// needs to hear of its slot (docs/planner.md, "Re-arming"), and the server holds their
/// firmware back until the stage is released. A held slot that passes unreleased is planned
/// again like a missed one.
pub(super) fn assign(kept: &Kept<'_>, plan: &core::Plan, gates: &Gates) -> MacMap<PackedSlot> {
    if !gates.active {
        return MacMap::default();
    }
    let planned: usize = plan.sites.iter().map(|s| s.macs.len()).sum();
    let mut slots: MacMap<PackedSlot> =
        MacMap::with_capacity_and_hasher(kept.keeping.len() + planned, Default::default());
    let held = |stage: u32| stage > gates.released;
    slots.extend(
        kept.kept_slots()
            .map(|(m, s)| (m, s.with_held(held(s.stage())))),
    );
    // The plan leaves kept phones out, so it cannot see that a kept slot of an earlier stage
    // ends after a held slot it placed: such a slot would open before its stage can be
    // released. It is not announced (the phone keeps its steady file) until a plan places it
    // after every earlier stage's slots.
    // The latest end of the kept slots of each stage, read once: asked per planned slot, a
    // scan of every kept slot would cost slots × kept phones.
    let mut kept_end: BTreeMap<u32, DateTime<Utc>> = BTreeMap::new();
    for (_, s) in kept.kept_slots() {
        let end = kept_end.entry(s.stage()).or_insert(s.end());
        *end = (*end).max(s.end());
    }
    let kept_gate = |stage: u32| kept_end.range(..stage).map(|(_, end)| *end).max();
    for site_plan in &plan.sites {
        for (slot, macs) in site_plan.slots_with_phones() {
            if held(slot.stage) && kept_gate(slot.stage).is_some_and(|gate| slot.start < gate) {
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
            for &mac in macs {
                slots.insert(mac, packed);
            }
        }
    }
    slots
}
