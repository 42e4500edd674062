//! PhoneSite status: the phone count (for `kubectl get phonesites`) and a `Valid` condition
//! naming what the API server could not check (an unknown time zone, one MAC in two spellings).
//! Decided purely; written only when it differs.

use chrono::{DateTime, Utc};
use kube::ResourceExt;

use super::desired::{cond, unknown_models_message};
use crate::api::{PhoneSite, PhoneSiteStatus};
use crate::validate::{self, ModelTable};

/// Condition type on PhoneSites.
pub const VALID: &str = "Valid";
/// Condition type: every phone belongs to a phone family (else some get no file).
pub const FAMILIES_KNOWN: &str = "FamiliesKnown";

/// The status `site` should have at `now` (transition times kept when nothing changed).
pub fn compute(site: &PhoneSite, now: DateTime<Utc>) -> PhoneSiteStatus {
    let old = site.status.clone().unwrap_or_default();
    let document = format!(
        "PhoneSite {}/{}",
        site.namespace().unwrap_or_default(),
        site.name_any()
    );
    let phones = site.spec.phones.len() as u32;
    let checked = validate::site(
        &document,
        &site.name_any(),
        &site.spec,
        &mut ModelTable::default(),
    );
    let families = match checked
        .as_ref()
        .ok()
        .and_then(|s| unknown_models_message(&document, &s.unplaced_models))
    {
        Some(message) => cond(
            &old.conditions,
            FAMILIES_KNOWN,
            false,
            "UnknownModel",
            &message,
            now,
        ),
        None => cond(
            &old.conditions,
            FAMILIES_KNOWN,
            true,
            "FamiliesKnown",
            "every phone belongs to a phone family",
            now,
        ),
    };
    let valid = match checked {
        Ok(_) => cond(
            &old.conditions,
            VALID,
            true,
            "Valid",
            &format!("{phones} phones"),
            now,
        ),
        Err(e) => cond(
            &old.conditions,
            VALID,
            false,
            "InvalidSite",
            &e.to_string(),
            now,
        ),
    };
    PhoneSiteStatus {
        observed_generation: site.metadata.generation,
        phone_count: Some(phones),
        conditions: vec![valid, families],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn site(zone: &str) -> PhoneSite {
        serde_yaml_ng::from_str(&format!(
            "apiVersion: phonefleet.io/v1alpha1\nkind: PhoneSite\nmetadata: {{name: paris, namespace: voice, generation: 2}}\nspec: {{timeZone: {zone}, maxConcurrentDownloads: 2, phones: [{{mac: '00:0b:82:00:00:01', model: GXP2170}}, {{mac: '00:0b:82:00:00:02', model: GXP2170}}]}}"
        ))
        .expect("fixture")
    }

    fn now() -> DateTime<Utc> {
        "2026-12-01T12:00:00Z".parse().expect("time")
    }

    #[test]
    fn a_valid_site_reports_its_phone_count() {
        let status = compute(&site("Europe/Paris"), now());
        assert_eq!(status.phone_count, Some(2));
        assert_eq!(status.observed_generation, Some(2));
        assert_eq!(status.conditions[0].status, "True");
    }

    #[test]
    fn an_unknown_zone_makes_the_site_invalid_with_the_field_named() {
        let status = compute(&site("Europe/Atlantis"), now());
        let valid = &status.conditions[0];
        assert_eq!(
            (valid.status.as_str(), valid.reason.as_str()),
            ("False", "InvalidSite")
        );
        assert!(valid.message.contains("spec.timeZone"), "{}", valid.message);
    }

    #[test]
    fn a_model_no_family_places_is_named_with_its_site() {
        let mut s = site("Europe/Paris");
        s.spec.phones[1].model = "HT802".into();
        let status = compute(&s, now());
        let families = &status.conditions[1];
        assert_eq!(
            (
                families.type_.as_str(),
                families.status.as_str(),
                families.reason.as_str()
            ),
            (FAMILIES_KNOWN, "False", "UnknownModel")
        );
        assert!(
            families.message.contains("HT802") && families.message.contains("voice/paris"),
            "{}",
            families.message
        );
        assert_eq!(status.conditions[0].status, "True", "still a valid site");
    }

    #[test]
    fn an_unchanged_site_gets_an_identical_status() {
        let mut s = site("Europe/Paris");
        s.status = Some(compute(&s, now()));
        let later = now() + chrono::Duration::hours(1);
        assert_eq!(
            Some(compute(&s, later)),
            s.status,
            "no write for an unchanged site"
        );
    }
}
