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
use super::pvalues::PValues;
use crate::core::ProvisioningPolicy;
use crate::core::family::{GrandstreamMode, grandstream_slot_hours, grandstream_steady};

/// Every code a Grandstream file can carry (docs/phones.md lists each one).
pub const GRANDSTREAM_KEYS: [&str; 9] = [
    "P192", "P193", "P194", "P238", "P285", "P6767", "P8375", "P8458", "P8459",
];

/// The file.
pub(super) fn render(k: &Knobs<'_>, policy: &ProvisioningPolicy, out: &mut String) {
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
    let daily = match mode {
        GrandstreamMode::Daily {
            start_hour,
            end_hour,
        } => Some((start_hour, end_hour)),
        _ => None,
    };
    let mut p = PValues::start(k, out);
    if let Some(fw) = k.firmware {
        p.text(192, &fw.dir_without_scheme());
    }
    p.number(193, interval);
    p.number(194, mode.code());
    if k.firmware.is_some() {
        p.number(238, 0);
    }
    if let Some((start, _)) = daily {
        p.number(285, start);
    }
    if let Some(fw) = k.firmware {
        p.number(6767, if fw.https() { 2 } else { 1 });
        p.number(8375, 0);
    }
    if let Some((_, end)) = daily {
        p.number(8458, 1);
        p.number(8459, end);
    }
    p.finish();
}
