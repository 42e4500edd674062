//! `phonefleet render`: one phone's file from the manifest an operator would apply, as the
//! provisioning server would serve it at a given instant. No cluster involved: the plan is
//! computed by the same planner the controller runs.

use std::collections::HashSet;

use chrono::{DateTime, Utc};

use super::{FirmwarePath, Format, PhoneConfig, RenderError, RenderedFile, RolloutSlot, ServerUrl};
use crate::core::{self, Mac};
use crate::manifest::{Manifest, ManifestError};

/// Why a phone's file cannot be rendered from a manifest.
#[derive(Debug, thiserror::Error)]
pub enum OfflineError {
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error("phone {0} is in no PhoneSite the schedule selects")]
    UnknownPhone(Mac),
    #[error(transparent)]
    Render(#[from] RenderError),
}

/// The file `mac` fetches at `now` in `format`, or in the format its model reads when `format`
/// is `None`.
///
/// Nothing is upgraded yet as far as a manifest can tell, and a stage is taken as released
/// when the plan reaches it: this is the file the phone gets once its stage is released. A
/// paused rollout hands out no slot, so paused phones get their steady-state file.
pub fn render_phone(
    manifest: &Manifest,
    mac: Mac,
    format: Option<Format>,
    server: &ServerUrl,
    now: DateTime<Utc>,
) -> Result<RenderedFile, OfflineError> {
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

    let plan = core::plan(&fleet, now, &HashSet::new());
    let slot = match (&fleet.schedule.firmware, plan.paused) {
        (Some(firmware), false) => plan
            .sites
            .iter()
            .filter(|s| s.name == site.name)
            .flat_map(|s| s.slots_with_phones())
            .find(|(_, phones)| phones.binary_search(&mac).is_ok())
            .map(|(slot, _)| -> Result<RolloutSlot, RenderError> {
                Ok(RolloutSlot {
                    firmware_version: firmware.version.clone(),
                    firmware: FirmwarePath::new(&site.name, &firmware.file)?,
                    window: slot.check_window(),
                })
            })
            .transpose()?,
        _ => None,
    };
    let phone = PhoneConfig {
        mac,
        model,
        provisioning: &fleet.schedule.provisioning,
        slot: slot.as_ref(),
    };
    Ok(super::render(
        &phone,
        server,
        format.unwrap_or_else(|| Format::for_model(model)),
    ))
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
