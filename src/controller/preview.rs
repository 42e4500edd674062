//! `phonefleet render`: one phone's file from the manifest an operator would apply, as the
//! provisioning server serves it right after `kubectl apply` at a given instant (no progress
//! reported yet, so only the first stage is released). No cluster involved: the file comes
//! from the controller's own decision function, so it is byte for byte what the controller
//! stores.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use chrono::{DateTime, Utc};

use super::desired::{self, Inputs, PhoneFile};
use crate::core::Mac;
use crate::manifest::{Manifest, ManifestError};
use crate::render::{Format, RenderedFile, ServerUrl};

/// Why a phone's file cannot be rendered from a manifest.
#[derive(Debug, thiserror::Error)]
pub enum OfflineError {
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error("phone {0} is in no PhoneSite the schedule selects")]
    UnknownPhone(Mac),
}

/// The file `mac` fetches at `now` in `format`, or in the format its model reads (the one the
/// controller stores) when `format` is `None`.
pub fn render_phone(
    manifest: &Manifest,
    mac: Mac,
    format: Option<Format>,
    server: &ServerUrl,
    now: DateTime<Utc>,
) -> Result<RenderedFile, OfflineError> {
    // Validation with the manifest's document positions first, for the clearer message.
    let fleet = manifest.fleet()?;
    let (site, phone) = fleet
        .sites
        .iter()
        .find_map(|s| s.phones.iter().find(|p| p.mac == mac).map(|p| (s, p)))
        .ok_or(OfflineError::UnknownPhone(mac))?;
    let model = fleet
        .models
        .get(phone.model.0 as usize)
        .map_or("", String::as_str);

    let schedule = &manifest.schedule.1;
    let schedules = vec![Arc::new(schedule.clone())];
    let namespace =
        |m: &kube::api::ObjectMeta| m.namespace.clone().unwrap_or_else(|| "default".into());
    let sites: Vec<_> = manifest
        .sites
        .iter()
        .filter(|(_, s)| namespace(&s.metadata) == namespace(&schedule.metadata))
        .map(|(_, s)| Arc::new(s.clone()))
        .collect();
    let (progress, previous, existing) = (HashMap::new(), HashMap::new(), BTreeMap::new());
    let decision = desired::compute(&Inputs {
        schedule,
        schedules: &schedules,
        sites: &sites,
        progress: &progress,
        previous_slots: &previous,
        existing_shards: &existing,
        server_url: server,
        now,
        // Offline there is no reconcile to wait for.
        propagation: chrono::Duration::zero(),
    });
    Ok(desired::phone_file(&PhoneFile {
        mac,
        model,
        site,
        check_minutes: decision.check_minutes.get(&site.name).copied().unwrap_or(0),
        slot: decision.slots.get(&mac).copied(),
        firmware: fleet.schedule.firmware.as_ref(),
        provisioning: &fleet.schedule.provisioning,
        server_url: server,
        format: format.unwrap_or_else(|| Format::for_model(model)),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MANIFEST: &str = r#"
apiVersion: phonefleet.io/v1alpha1
kind: PhoneSchedule
metadata: {name: offices, namespace: voice}
spec:
  provisioning:
    weekly: {enabled: true, intervalWeeks: 1, window: {start: "01:00", end: "05:00"}, days: [Mon, Tue, Wed, Thu, Fri]}
  firmware: {version: "1.0.11.23", file: gxp2170fw.bin, models: [GXP2170]}
  rollout: {downloadMinutes: 5, stages: [{percent: 100}]}
---
apiVersion: phonefleet.io/v1alpha1
kind: PhoneSite
metadata: {name: paris-hq, namespace: voice}
spec:
  timeZone: Europe/Paris
  maxConcurrentDownloads: 2
  phones:
  - {mac: "00:0b:82:12:34:56", model: GXP2170}
  - {mac: "00:0b:82:12:34:57", model: GXP1610}
"#;

    fn render(text: &str, mac: &str, format: Option<Format>) -> Result<RenderedFile, OfflineError> {
        let manifest = crate::manifest::parse(text).expect("manifest parses");
        let now = "2026-12-01T12:00:00Z".parse().expect("RFC 3339");
        let server = "http://prov".parse().expect("URL");
        render_phone(&manifest, mac.parse().expect("MAC"), format, &server, now)
    }

    #[test]
    fn a_targeted_phone_gets_its_slot_and_the_firmware() {
        let file = render(MANIFEST, "000b82123456", Some(Format::Text)).expect("renders");
        assert_eq!(file.name, "cfg000b82123456");
        assert!(
            file.body.contains("rollout slot Wed 01:00-"),
            "{}",
            file.body
        );
        assert!(
            file.body.contains("P192 = prov/firmware/paris-hq\n"),
            "{}",
            file.body
        );
        assert!(file.body.contains("P25023 = 0\n"), "{}", file.body);
    }

    #[test]
    fn a_phone_of_another_model_keeps_the_steady_state() {
        let file = render(MANIFEST, "000b82123457", Some(Format::Text)).expect("renders");
        assert!(file.body.contains("steady-state schedule"), "{}", file.body);
        assert!(!file.body.contains("P192"), "{}", file.body);
    }

    #[test]
    fn a_paused_rollout_hands_out_no_slot() {
        let paused = MANIFEST.replace(
            "stages: [{percent: 100}]",
            "stages: [{percent: 100}], paused: true",
        );
        let file = render(&paused, "000b82123456", Some(Format::Text)).expect("renders");
        assert!(file.body.contains("steady-state schedule"), "{}", file.body);
    }

    #[test]
    fn the_models_format_is_the_default() {
        let file = render(MANIFEST, "000b82123456", None).expect("renders");
        assert_eq!(file.name, "cfg000b82123456.xml");
    }

    #[test]
    fn a_phone_outside_the_fleet_is_an_error() {
        let err = render(MANIFEST, "000b82999999", None).expect_err("unknown phone");
        assert!(matches!(err, OfflineError::UnknownPhone(_)), "{err}");
    }
}
