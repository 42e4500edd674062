//! Grandstream: P194 "Automatic Upgrade" and its hour window, and the firmware server, in
//! `<gs_provision>` XML as `cfg<mac>.xml` (Grandstream's configuration template for
//! GXP21xx 1.0.11.16 and GRP261x 1.0.5.15, "Maintenance/Upgrade and Provisioning";
//! docs/phones.md). Never an XSTIM P250xx code: on Grandstream devices those numbers are
//! unrelated settings, or nothing.
//!
//! P194 holds one mode. A slot file uses mode 2, daily inside `[P285:00, P8459:00)` at a
//! random minute (P8458 = 1), the slot's whole hours: P194 = 3 would need P286, whose day
//! numbering no Grandstream document states. Checking daily also means a phone that missed its
//! slot hears of the next one within a day; on other days its firmware request is refused by
//! the provisioning server. The steady state is the operator's policy narrowed by
//! [`grandstream_steady`]: never a check the policy does not allow.

use super::Knobs;
use super::pvalues::xml;
use crate::core::ProvisioningPolicy;
use crate::core::family::{GrandstreamMode, grandstream_slot_hours, grandstream_steady};

/// Every code a Grandstream file can carry (docs/phones.md lists each one).
pub const GRANDSTREAM_KEYS: [&str; 9] = [
    "P192", "P193", "P194", "P238", "P285", "P6767", "P8375", "P8458", "P8459",
];

/// The file.
pub(super) fn render(k: &Knobs, policy: &ProvisioningPolicy) -> String {
    let (steady, _) = grandstream_steady(policy);
    let mode = match k.slot {
        Some(slot) => {
            let (start_hour, end_hour) =
                grandstream_slot_hours(slot.window.start, slot.window.minutes());
            GrandstreamMode::Daily {
                start_hour,
                end_hour,
            }
        }
        None => steady,
    };
    let interval = match steady {
        GrandstreamMode::Every { minutes } => minutes,
        _ => super::DEFAULT_REPEAT_MINUTES,
    };
    let mut p: Vec<(u32, String)> = Vec::with_capacity(10);
    if let Some(fw) = &k.firmware {
        // Host and directory without scheme; the phone appends its own image name.
        p.push((192, fw.dir_without_scheme.clone()));
    }
    p.push((193, interval.to_string()));
    p.push((194, mode.code().to_string()));
    if k.firmware.is_some() {
        // 0: always check for new firmware, so the new image is fetched even though the
        // prefix and postfix (P232/P233, left empty) do not change.
        p.push((238, "0".to_owned()));
    }
    let daily = match mode {
        GrandstreamMode::Daily {
            start_hour,
            end_hour,
        } => Some((start_hour, end_hour)),
        _ => None,
    };
    if let Some((start, _)) = daily {
        p.push((285, start.to_string()));
    }
    if let Some(fw) = &k.firmware {
        // Firmware Upgrade Via: 1 HTTP, 2 HTTPS (P212 is the config protocol on this firmware).
        p.push((6767, if fw.https { "2" } else { "1" }.to_owned()));
        // No confirmation prompt: an unattended rollout cannot wait for a user.
        p.push((8375, "0".to_owned()));
    }
    if let Some((_, end)) = daily {
        // Randomized: each phone checks at its own minute of the window.
        p.push((8458, "1".to_owned()));
        p.push((8459, end.to_string()));
    }
    xml(&k.comment, k.mac, &p)
}
