//! The slots a decision handed out, kept for the next decision of the same schedule: per site,
//! its phones' MACs and slots by position. The next decision reads a site whose phones are
//! unchanged by position, without a lookup by MAC (at a million phones, building and reading a
//! map by MAC was a fifth of an idle reconcile).

use std::collections::HashMap;
use std::sync::OnceLock;

use crate::children::PackedSlot;
use crate::core::{Mac, MacMap, Site};

/// The slots of a decision (see the module documentation).
#[derive(Clone, Debug, Default)]
pub struct DecidedSlots {
    sites: Vec<SiteSlots>,
    /// Site name → index in `sites`.
    by_name: HashMap<String, usize>,
    /// Slots known by MAC only: read back from the shards after a restart.
    loose: MacMap<PackedSlot>,
    /// Every slot by MAC, built the first time a site's phones moved (see [`Self::of_site`]).
    by_mac: OnceLock<MacMap<PackedSlot>>,
}

#[derive(Clone, Debug)]
struct SiteSlots {
    macs: Vec<Mac>,
    slots: Vec<Option<PackedSlot>>,
}

impl DecidedSlots {
    /// Slots known by MAC only.
    pub fn from_map(loose: MacMap<PackedSlot>) -> Self {
        DecidedSlots {
            loose,
            ..DecidedSlots::default()
        }
    }

    /// Adds a site's slots, its phones in the site's order.
    pub(super) fn push_site(&mut self, site: &Site, slots: Vec<Option<PackedSlot>>) {
        self.by_name.insert(site.name.clone(), self.sites.len());
        self.sites.push(SiteSlots {
            macs: site.phones.iter().map(|p| p.mac).collect(),
            slots,
        });
    }

    /// The slots of `site`'s phones by position: read in place when the site lists the same
    /// phones in the same order as when decided, by MAC otherwise.
    pub fn of_site(&self, site: &Site) -> Vec<Option<PackedSlot>> {
        if let Some(same) = self
            .by_name
            .get(&site.name)
            .map(|&i| &self.sites[i])
            .filter(|s| {
                s.macs.len() == site.phones.len()
                    && s.macs.iter().zip(&site.phones).all(|(m, p)| *m == p.mac)
            })
        {
            return same.slots.clone();
        }
        if self.is_empty() {
            return vec![None; site.phones.len()];
        }
        let by_mac = self.by_mac.get_or_init(|| self.to_map());
        site.phones
            .iter()
            .map(|p| by_mac.get(&p.mac).copied())
            .collect()
    }

    /// Every (MAC, slot).
    pub fn iter(&self) -> impl Iterator<Item = (Mac, PackedSlot)> + '_ {
        self.sites
            .iter()
            .flat_map(|s| {
                s.macs
                    .iter()
                    .zip(&s.slots)
                    .filter_map(|(m, slot)| slot.map(|slot| (*m, slot)))
            })
            .chain(self.loose.iter().map(|(m, s)| (*m, *s)))
    }

    /// Every slot.
    pub fn values(&self) -> impl Iterator<Item = PackedSlot> + '_ {
        self.iter().map(|(_, s)| s)
    }

    /// By MAC.
    pub fn to_map(&self) -> MacMap<PackedSlot> {
        self.iter().collect()
    }

    /// The slot of `mac`: a scan (offline previews and tests; decisions read by position).
    pub fn get(&self, mac: &Mac) -> Option<PackedSlot> {
        self.iter().find(|(m, _)| m == mac).map(|(_, s)| s)
    }

    pub fn contains_key(&self, mac: &Mac) -> bool {
        self.get(mac).is_some()
    }

    pub fn len(&self) -> usize {
        self.iter().count()
    }

    pub fn is_empty(&self) -> bool {
        self.loose.is_empty()
            && self
                .sites
                .iter()
                .all(|s| s.slots.iter().all(Option::is_none))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::{ModelId, Phone, PhoneFamily, SiteCap};

    fn site(name: &str, macs: &[u64]) -> Site {
        Site {
            name: name.into(),
            time_zone: chrono_tz::UTC,
            cap: SiteCap::new(1).expect("a cap"),
            uplink_mbps: None,
            phones: macs
                .iter()
                .map(|&m| Phone {
                    mac: Mac::from_u64(m).expect("48 bits"),
                    model: ModelId(0),
                    family: PhoneFamily::Yealink,
                })
                .collect(),
            unplaced_models: Vec::new(),
        }
    }

    fn slot(minute: i64) -> PackedSlot {
        let start = chrono::DateTime::from_timestamp(1_800_000_000 + minute * 60, 0).expect("t");
        PackedSlot::pack(&crate::children::IndexSlot {
            stage: 0,
            start,
            end: start + chrono::Duration::minutes(30),
            held: false,
        })
        .expect("packs")
    }

    #[test]
    fn a_site_is_read_in_place_when_unchanged_and_by_mac_when_its_phones_moved() {
        let mut decided = DecidedSlots::default();
        decided.push_site(
            &site("a", &[1, 2, 3]),
            vec![Some(slot(0)), None, Some(slot(30))],
        );
        decided.push_site(&site("b", &[4]), vec![Some(slot(60))]);
        assert_eq!(
            decided.of_site(&site("a", &[1, 2, 3])),
            [Some(slot(0)), None, Some(slot(30))]
        );
        // Reordered, one phone gone, one moved in from site b, one new.
        assert_eq!(
            decided.of_site(&site("a", &[3, 4, 5])),
            [Some(slot(30)), Some(slot(60)), None]
        );
        assert_eq!(decided.of_site(&site("c", &[1])), [Some(slot(0))]);
        assert_eq!(decided.len(), 3);
        assert_eq!(decided.get(&Mac::from_u64(4).expect("mac")), Some(slot(60)));
        // Read back from shards (by MAC only).
        let loose = DecidedSlots::from_map(decided.to_map());
        assert_eq!(loose.of_site(&site("a", &[2, 3])), [None, Some(slot(30))]);
        assert!(DecidedSlots::default().is_empty());
    }
}
