//! Which sites a schedule plans: its selector applied to the PhoneSites of its namespace, each
//! validated, the ones it may not use left out with a reason. The controller and the offline
//! commands (`phonefleet plan`, `phonefleet render`) both build their [`Fleet`] here, so they
//! select and validate the same sites by construction.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

use kube::ResourceExt;

use crate::api::{PhoneSchedule, PhoneSite};
use crate::core::{Fleet, MacMap, Site, UnplacedPhone};
use crate::selector::{Selector, SelectorError};
use crate::validate::{self, CheckedSite, ModelTable, ValidationError};

/// Why a selected site is (in part) left out of the plan: a fixed set, shown as condition and
/// event reasons.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Exclusion {
    /// An older schedule selects the site too and keeps it.
    SiteConflict,
    /// The site fails validation, or repeats a phone of a site before it (by name).
    InvalidSite,
    /// Some phones belong to no phone family; the site is planned without them.
    UnknownModel,
}

impl Exclusion {
    /// The reason as conditions, events and metrics name it.
    pub fn as_str(self) -> &'static str {
        match self {
            Exclusion::SiteConflict => "SiteConflict",
            Exclusion::InvalidSite => "InvalidSite",
            Exclusion::UnknownModel => "UnknownModel",
        }
    }

    /// Whether the whole site is left out (not only some of its phones).
    pub fn drops_site(self) -> bool {
        !matches!(self, Exclusion::UnknownModel)
    }
}

impl fmt::Display for Exclusion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A selected site the schedule may not use (or not all of), and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Excluded {
    pub site: String,
    pub reason: Exclusion,
    pub message: String,
}

/// A schedule that cannot be planned at all: the controller's `InvalidSpec`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InvalidSchedule {
    #[error("spec.siteSelector.{0}")]
    Selector(#[from] SelectorError),
    #[error(transparent)]
    Spec(#[from] ValidationError),
}

/// The fleet a schedule plans, and the sites left out of it.
#[derive(Clone, Debug)]
pub struct Selection {
    pub fleet: Fleet,
    /// In site-name order; empty when every selected site is planned whole.
    pub excluded: Vec<Excluded>,
}

/// One PhoneSite offered to the selection, with the label its messages name it by (e.g.
/// `PhoneSite voice/paris`, or `document 3 (PhoneSite voice/paris)` in a manifest).
pub struct Candidate<'a> {
    pub document: String,
    pub site: &'a PhoneSite,
    /// The site already validated (see [`CheckedSites`]); validated here when `None`.
    pub checked: Option<Checked>,
}

/// A site's validation, as remembered.
pub type Checked = Arc<Result<CheckedSite, ValidationError>>;

/// Each PhoneSite's validation, remembered per object version: a site changes rarely, but
/// every reconcile of a schedule selecting it validated it again (at a million phones, parsing
/// every MAC was the largest step of an idle reconcile). Keyed by uid; an object without a
/// uid or resourceVersion (a manifest, a test) is validated each time.
#[derive(Default)]
pub struct CheckedSites {
    memo: Mutex<HashMap<String, (String, Checked)>>,
}

impl CheckedSites {
    /// The validation of `site` (labelled `document`), remembered or done now.
    pub fn check(&self, document: &str, site: &PhoneSite) -> Checked {
        let validate = || Arc::new(validate::site_alone(document, &site.name_any(), &site.spec));
        let (Some(uid), Some(version)) = (site.uid(), site.resource_version()) else {
            return validate();
        };
        let mut memo = self.memo.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((v, checked)) = memo.get(&uid)
            && *v == version
        {
            return checked.clone();
        }
        let checked = validate();
        memo.insert(uid, (version, checked.clone()));
        checked
    }

    /// Forgets the sites whose uid `live` no longer holds (deleted PhoneSites).
    pub fn retain(&self, live: impl Fn(&str) -> bool) {
        self.memo
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|uid, _| live(uid));
    }

    /// How many sites are remembered.
    pub fn len(&self) -> usize {
        self.memo
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Selects and validates the fleet of `schedule` (labelled `document`, named `full_name` =
/// `namespace/name`) among `candidates` (the PhoneSites of its namespace). `claimed_by(site)`
/// names an older schedule that keeps the site, if any. Sites are taken in name order: of two
/// sites listing one phone, the later is left out (`InvalidSite`); an invalid site is left out
/// and the others go on. Only an invalid schedule fails the whole selection.
pub fn select(
    document: &str,
    full_name: &str,
    schedule: &PhoneSchedule,
    candidates: &[Candidate<'_>],
    claimed_by: &dyn Fn(&PhoneSite) -> Option<String>,
) -> Result<Selection, InvalidSchedule> {
    let selector = Selector::parse(&schedule.spec.site_selector)?;
    let mut models = ModelTable::default();
    let checked = validate::schedule(document, full_name, &schedule.spec, &mut models)?;

    let mut selected: Vec<&Candidate<'_>> = candidates
        .iter()
        .filter(|c| selector.matches(c.site.labels()))
        .collect();
    selected.sort_by_key(|c| c.site.name_any());

    let mut excluded = Vec::new();
    let mut sites: Vec<Site> = Vec::new();
    // Which of `sites` lists each MAC (an index, not the name: a million phones, one map).
    let phones: usize = selected.iter().map(|c| c.site.spec.phones.len()).sum();
    let mut owner_of_mac: MacMap<u32> =
        MacMap::with_capacity_and_hasher(phones, Default::default());
    for candidate in selected {
        let site_name = candidate.site.name_any();
        if let Some(winner) = claimed_by(candidate.site) {
            excluded.push(Excluded {
                message: format!(
                    "site {site_name} is already scheduled by the older PhoneSchedule {winner}"
                ),
                site: site_name,
                reason: Exclusion::SiteConflict,
            });
            continue;
        }
        let validated = match &candidate.checked {
            Some(checked) => match checked.as_ref() {
                Ok(site) => Ok(site.in_table(&mut models)),
                Err(e) => Err(e.clone()),
            },
            None => validate::site(
                &candidate.document,
                &site_name,
                &candidate.site.spec,
                &mut models,
            ),
        };
        let checked_site = match validated {
            Ok(s) => s,
            Err(e) => {
                excluded.push(Excluded {
                    site: site_name,
                    reason: Exclusion::InvalidSite,
                    message: e.to_string(),
                });
                continue;
            }
        };
        // The rendered file of a phone is named after its MAC: two sites cannot both own it.
        let clash = checked_site.phones.iter().find_map(|p| {
            owner_of_mac
                .get(&p.mac)
                .map(|&other| (p.mac, sites[other as usize].name.clone()))
        });
        if let Some((mac, other)) = clash {
            excluded.push(Excluded {
                message: format!("phone {mac} of site {site_name} is already in site {other}"),
                site: site_name,
                reason: Exclusion::InvalidSite,
            });
            continue;
        }
        let index = sites.len() as u32;
        for p in &checked_site.phones {
            owner_of_mac.insert(p.mac, index);
        }
        if let Some(message) =
            unknown_models_message(&candidate.document, &checked_site.unplaced_models)
        {
            // Reported, and the site planned without those phones: never guessed.
            excluded.push(Excluded {
                site: site_name.clone(),
                reason: Exclusion::UnknownModel,
                message,
            });
        }
        sites.push(checked_site);
    }
    Ok(Selection {
        fleet: Fleet {
            schedule: checked,
            sites,
            models: models.into_names(),
        },
        excluded,
    })
}

/// What to tell the operator about phones no family places: every model, its phones, the site.
pub fn unknown_models_message(document: &str, unplaced: &[UnplacedPhone]) -> Option<String> {
    if unplaced.is_empty() {
        return None;
    }
    let mut by_model: std::collections::BTreeMap<&str, Vec<String>> = Default::default();
    for p in unplaced {
        by_model
            .entry(p.model.as_str())
            .or_default()
            .push(p.mac.to_string());
    }
    let models: Vec<String> = by_model
        .iter()
        .map(|(model, macs)| format!("model '{model}' ({})", macs.join(", ")))
        .collect();
    Some(format!(
        "{document}: {} in no phone family (see docs/phones.md); set spec.phones[].family to xstim, yealink or grandstream; left out of the plan and served no file",
        models.join("; ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn site(version: &str, phones: &str) -> PhoneSite {
        let mut site: PhoneSite = serde_yaml_ng::from_str(&format!(
            "apiVersion: phonefleet.io/v1alpha1\nkind: PhoneSite\nmetadata: {{name: paris, namespace: voice}}\nspec: {{timeZone: Europe/Paris, maxConcurrentDownloads: 2, phones: [{phones}]}}"
        ))
        .expect("fixture site");
        site.metadata.uid = Some("uid-paris".into());
        site.metadata.resource_version = Some(version.into());
        site
    }

    #[test]
    fn a_site_is_validated_once_per_version_and_forgotten_once_deleted() {
        let memo = CheckedSites::default();
        let one = site("1", "{mac: '00:0b:82:00:00:01', model: GXP2170}");
        let first = memo.check("PhoneSite voice/paris", &one);
        let again = memo.check("PhoneSite voice/paris", &one);
        assert!(Arc::ptr_eq(&first, &again), "same version: remembered");
        // A new version that is invalid: validated again, and the error names the field.
        let two = site("2", "{mac: 'not-a-mac', model: GXP2170}");
        let second = memo.check("PhoneSite voice/paris", &two);
        let error = second.as_ref().as_ref().expect_err("an invalid MAC");
        assert_eq!(error.field, "spec.phones[0].mac");
        assert_eq!(memo.len(), 1, "one entry per site");
        // Without a version (a manifest's object) nothing is remembered.
        let mut bare = one.clone();
        bare.metadata.resource_version = None;
        let a = memo.check("doc", &bare);
        assert!(!Arc::ptr_eq(&a, &memo.check("doc", &bare)));
        memo.retain(|uid| uid != "uid-paris");
        assert!(memo.is_empty(), "a deleted site is forgotten");
    }
}
