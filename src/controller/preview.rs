//! `phonefleet render`: one phone's file from the manifest an operator would apply, as the
//! provisioning server serves it right after `kubectl apply` at a given instant (no progress
//! reported yet, so only the first stage is released). No cluster involved: the file comes
//! from the controller's own decision function, so it is byte for byte what the controller
//! stores.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};

use super::desired::{self, Desired, Inputs, PhoneFile};
use crate::core::{Mac, MacMap};
use crate::manifest::{Manifest, ManifestError};
use crate::render::{RenderedFile, ServerUrl};

/// Why a phone's file cannot be rendered from a manifest.
#[derive(Debug, thiserror::Error)]
pub enum OfflineError {
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error("phone {0} is in no PhoneSite the schedule selects")]
    UnknownPhone(Mac),
    /// No family places the phone's model: it is served no file.
    #[error("{0}")]
    NoFamily(String),
}

/// The file `mac` fetches at `now`, in its family's keys (the one the controller stores).
pub fn render_phone(
    manifest: &Manifest,
    mac: Mac,
    server: &ServerUrl,
    now: DateTime<Utc>,
) -> Result<RenderedFile, OfflineError> {
    // Validation with the manifest's document positions first, for the clearer message.
    let fleet = manifest.fleet()?;
    if let Some(site) = fleet
        .sites
        .iter()
        .find(|s| s.unplaced_models.iter().any(|p| p.mac == mac))
    {
        let unplaced: Vec<_> = site
            .unplaced_models
            .iter()
            .filter(|p| p.mac == mac)
            .cloned()
            .collect();
        let doc = format!("PhoneSite {}", site.name);
        return Err(OfflineError::NoFamily(
            desired::unknown_models_message(&doc, &unplaced).unwrap_or_default(),
        ));
    }
    let (site, phone) = fleet
        .sites
        .iter()
        .find_map(|s| s.phones.iter().find(|p| p.mac == mac).map(|p| (s, p)))
        .ok_or(OfflineError::UnknownPhone(mac))?;
    let model = fleet
        .models
        .get(phone.model.0 as usize)
        .map_or("", String::as_str);

    let decision = first_decision(manifest, server, now);
    Ok(desired::phone_file(&PhoneFile {
        mac,
        model,
        family: phone.family,
        site: &site.name,
        time_zone: site.time_zone,
        check_minutes: decision.check_minutes.get(&site.name).copied().unwrap_or(0),
        slot: decision.slots.get(&mac).map(|s| s.unpack()),
        firmware: fleet.schedule.firmware.as_ref(),
        provisioning: &fleet.schedule.provisioning,
        server_url: server,
    }))
}

/// The controller's first decision on the manifest's schedule at `now`, as right after
/// `kubectl apply`: no progress, no slot handed out yet, no reconcile to wait for.
pub fn first_decision(manifest: &Manifest, server: &ServerUrl, now: DateTime<Utc>) -> Desired {
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
    let (progress, previous, existing) = (
        MacMap::default(),
        desired::DecidedSlots::default(),
        BTreeMap::new(),
    );
    let claimed_elsewhere = MacMap::default();
    desired::compute(&Inputs {
        schedule,
        schedules: &schedules,
        sites: &sites,
        // One decision: nothing to remember sites for.
        checked_sites: None,
        cut_memo: None,
        claimed_elsewhere: &claimed_elsewhere,
        progress: &progress,
        previous_slots: &previous,
        existing_shards: &existing,
        server_url: server,
        now,
        // Offline there is no reconcile to wait for.
        propagation: chrono::Duration::zero(),
    })
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
  - {mac: "00:0b:82:12:34:57", model: GXP1610, family: xstim}
  - {mac: "00:0b:82:12:34:58", model: HT802}
"#;

    fn render(text: &str, mac: &str) -> Result<RenderedFile, OfflineError> {
        let manifest = crate::manifest::parse(text).expect("manifest parses");
        let now = "2026-12-01T12:00:00Z".parse().expect("RFC 3339");
        let server = "http://prov".parse().expect("URL");
        render_phone(&manifest, mac.parse().expect("MAC"), &server, now)
    }

    #[test]
    fn a_targeted_grandstream_phone_gets_its_whole_hour_slot_and_the_firmware() {
        let file = render(MANIFEST, "000b82123456").expect("renders");
        assert_eq!(file.name, "cfg000b82123456.xml");
        // Tuesday noon; Mon–Fri cannot be said to a Grandstream phone (P194 = 0 in the steady
        // state), so it may hear of a slot only a day later: Thursday, not Wednesday, 01:00.
        assert!(
            file.body.contains("rollout slot Thu 01:00-02:00"),
            "{}",
            file.body
        );
        for want in [
            "<P192>prov/firmware/paris-hq</P192>",
            "<P194>2</P194>",
            "<P285>1</P285>",
            "<P8459>2</P8459>",
            "<P6767>1</P6767>",
            "<P8375>0</P8375>",
        ] {
            assert!(file.body.contains(want), "{want}\n{}", file.body);
        }
        assert!(!file.body.contains("<P250"), "{}", file.body);
    }

    #[test]
    fn a_phone_of_another_model_keeps_the_steady_state_in_its_familys_codes() {
        let file = render(MANIFEST, "000b82123457").expect("renders");
        assert!(file.body.contains("steady-state schedule"), "{}", file.body);
        assert!(file.body.contains("<P25022>1</P25022>"), "{}", file.body);
        assert!(!file.body.contains("P192"), "{}", file.body);
    }

    #[test]
    fn a_paused_rollout_hands_out_no_slot() {
        let paused = MANIFEST.replace(
            "stages: [{percent: 100}]",
            "stages: [{percent: 100}], paused: true",
        );
        let file = render(&paused, "000b82123456").expect("renders");
        assert!(file.body.contains("steady-state schedule"), "{}", file.body);
    }

    #[test]
    fn a_model_no_family_places_gets_no_file_and_a_message_naming_it() {
        let err = render(MANIFEST, "000b82123458").expect_err("no family");
        let text = err.to_string();
        assert!(
            text.contains("HT802") && text.contains("paris-hq"),
            "{text}"
        );
    }

    #[test]
    fn a_phone_outside_the_fleet_is_an_error() {
        let err = render(MANIFEST, "000b82999999").expect_err("unknown phone");
        assert!(matches!(err, OfflineError::UnknownPhone(_)), "{err}");
    }

    /// XSTIM phones on repeated checks every 30 minutes get the firmware; the site's
    /// Grandstream phones do not, so they must not lengthen its lead (they did in the offline
    /// plan, which took every phone's family: a day later than the controller).
    const MIXED: &str = r#"
apiVersion: phonefleet.io/v1alpha1
kind: PhoneSchedule
metadata: {name: offices, namespace: voice}
spec:
  provisioning:
    repeatedly: {enabled: true, everyMinutes: 30}
    weekly: {enabled: true, window: {start: "12:00", end: "18:00"}, days: [Mon, Tue, Wed, Thu, Fri]}
  firmware: {version: "2.0", file: x.bin, models: [GXP1610]}
  rollout: {downloadMinutes: 5, stages: [{percent: 10}, {percent: 100}]}
---
apiVersion: phonefleet.io/v1alpha1
kind: PhoneSite
metadata: {name: paris-hq, namespace: voice}
spec:
  timeZone: Europe/Paris
  maxConcurrentDownloads: 2
  phones:
  - {mac: "00:0b:82:12:34:56", model: GXP2170}
  - {mac: "00:0b:82:12:34:57", model: GXP1610, family: xstim}
  - {mac: "00:0b:82:12:34:58", model: GXP1610, family: xstim}
  - {mac: "00:0b:82:12:34:59", model: GXP1610, family: xstim}
  - {mac: "00:0b:82:12:34:5a", model: GXP1610, family: xstim}
  - {mac: "00:0b:82:12:34:5b", model: GXP1610, family: xstim}
"#;

    #[test]
    fn the_offline_plan_predicts_what_the_controller_first_decides() {
        let manifest = crate::manifest::parse(MIXED).expect("manifest parses");
        let server: ServerUrl = "http://prov".parse().expect("URL");
        // Tuesday, inside and just before the window; with repeated checks on.
        for now in [
            "2026-12-01T12:00:00Z",
            "2026-12-01T10:50:00Z",
            "2026-12-05T09:00:00Z",
        ] {
            let now: DateTime<Utc> = now.parse().expect("RFC 3339");
            let plan = crate::plan_report::plan_manifest(&manifest, now).expect("plans");
            let decision = first_decision(&manifest, &server, now);
            assert!(plan.completion.is_some(), "{now}: {plan:?}");
            assert_eq!(
                plan.completion, decision.status.predicted_completion,
                "{now}: plan and controller disagree"
            );
            // Within the day for the minute-level phones: the Grandstream phone is not told.
            assert!(
                plan.completion
                    .is_some_and(|c| c - now < chrono::Duration::days(4)),
                "{now}: {:?}",
                plan.completion
            );
        }
    }

    /// Issue #18: the decision the controller stores, rendered by the provisioning server's
    /// index, is byte for byte what `phonefleet render` prints for every phone of the example.
    #[test]
    fn the_stored_decision_renders_what_render_prints() {
        let text = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/fleet.yaml"),
        )
        .expect("examples/fleet.yaml");
        let manifest = crate::manifest::parse(&text).expect("manifest parses");
        let now = "2026-12-01T12:00:00Z".parse().expect("RFC 3339");
        let server: ServerUrl = "http://prov.test:8080".parse().expect("URL");
        let decision = first_decision(&manifest, &server, now);
        let maps: Vec<k8s_openapi::api::core::v1::ConfigMap> = decision
            .shards
            .iter()
            .flatten()
            .map(|s| {
                let mut cm = k8s_openapi::api::core::v1::ConfigMap::default();
                cm.metadata.name = Some(s.name.clone());
                cm.metadata.namespace = Some("voice".into());
                cm.data = Some(decision.shard_data(s));
                cm
            })
            .collect();
        let served = crate::server::index::Index::from_maps(&maps).all_files();
        assert!(served.len() > 100, "{} files", served.len());
        for (name, file) in &served {
            let (mac, _) = crate::render::parse_file_name(name).expect("file name");
            let printed = render_phone(&manifest, mac, &server, now).expect("renders");
            assert_eq!(
                String::from_utf8_lossy(&file.body),
                printed.body,
                "{name}: served bytes differ from `phonefleet render`"
            );
        }
    }
}
