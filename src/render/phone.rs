//! One phone's file from a decision: the function the controller's `phonefleet render`, the
//! provisioning server (rendering on request from the decision the controller stores, see
//! [`crate::decision`]) and the tests all call, so what an operator previews is byte for byte
//! what the phone is served.

use chrono::{DateTime, Utc};
use chrono_tz::Tz;

use super::{FirmwarePath, PhoneConfig, RenderedFile, RolloutSlot, ServerUrl, render};
use crate::children::IndexSlot;
use crate::core::{self, CheckWindow, LocalTime, LocalWindow, Mac};

/// Everything one phone's file depends on, once the decision is taken.
pub struct PhoneFile<'a> {
    pub mac: Mac,
    pub model: &'a str,
    pub family: core::PhoneFamily,
    /// The PhoneSite's name (the firmware directory) and time zone (the slot's local window).
    pub site: &'a str,
    pub time_zone: Tz,
    pub check_minutes: u32,
    pub slot: Option<IndexSlot>,
    /// Only its version and file are used, and only with a slot.
    pub firmware: Option<&'a core::FirmwareTarget>,
    pub provisioning: &'a core::ProvisioningPolicy,
    pub server_url: &'a ServerUrl,
}

/// Renders one phone's file: with its slot's window and the firmware location when it has a
/// slot, the steady-state policy otherwise.
pub fn phone_file(p: &PhoneFile<'_>) -> RenderedFile {
    let rollout_slot = match (p.slot, p.firmware) {
        (Some(slot), Some(fw)) => {
            FirmwarePath::new(p.site, &fw.file)
                .ok()
                .map(|path| RolloutSlot {
                    firmware_version: fw.version.clone(),
                    firmware: path,
                    window: check_window(slot.start, p.time_zone, p.check_minutes),
                })
        }
        _ => None,
    };
    render(
        &PhoneConfig {
            mac: p.mac,
            model: p.model,
            family: p.family,
            provisioning: p.provisioning,
            slot: rollout_slot.as_ref(),
        },
        p.server_url,
    )
}

/// The local check window of a slot starting at `start`: the slot's weekday and its first
/// `check_minutes` minutes, as the phone's file states them.
pub fn check_window(start: DateTime<Utc>, tz: Tz, check_minutes: u32) -> CheckWindow {
    use chrono::Datelike;
    let local = start.with_timezone(&tz);
    let begin = LocalTime::of(local.time());
    CheckWindow {
        weekday: local.weekday(),
        window: LocalWindow {
            start: begin,
            end: begin.wrapping_add(check_minutes),
        },
    }
}
