//! eMetrotel XSTIM: the custom PCODEs of "XSTIM - Scheduled Auto Provision and Firmware
//! Updates" (the design page), in `<gs_provision>` XML as `cfg<mac>.xml`.
//!
//! Assumptions, all listed in docs/phones.md: the file name and XML form (the page sends to an
//! unavailable "No Touch Cloud Provisioning" page), P25036 for the Flexible switch (the one
//! free number between P25035 and P25037), P193 for "Check for upgrade every" (the page shows
//! no PCODE; P193 is the Grandstream code of the same label), P192/P6767 for the firmware
//! location, 1/0 for Yes/No, and a start equal to the end meaning the whole day.

use chrono::Weekday;

use super::Knobs;
use super::pvalues::{flag, push_window, xml};

/// XSTIM's "Day of Week" boxes, P25029 (Sunday) to P25035 (Saturday).
pub const DAY_PCODES: [(u32, Weekday); 7] = [
    (25029, Weekday::Sun),
    (25030, Weekday::Mon),
    (25031, Weekday::Tue),
    (25032, Weekday::Wed),
    (25033, Weekday::Thu),
    (25034, Weekday::Fri),
    (25035, Weekday::Sat),
];

/// Every code an XSTIM file can carry (docs/phones.md lists each one).
pub const XSTIM_KEYS: [&str; 25] = [
    "P192", "P193", "P6767", "P25020", "P25021", "P25022", "P25023", "P25024", "P25025", "P25026",
    "P25027", "P25028", "P25029", "P25030", "P25031", "P25032", "P25033", "P25034", "P25035",
    "P25036", "P25037", "P25038", "P25039", "P25040", "P25041",
];

/// The file, every schedule code always written so nothing a previous file set can linger.
pub(super) fn render(k: &Knobs) -> String {
    let mut p: Vec<(u32, String)> = Vec::with_capacity(30);
    if let Some(fw) = &k.firmware {
        p.push((192, fw.dir_without_scheme.clone()));
    }
    p.push((193, k.repeat_minutes.to_string()));
    if let Some(fw) = &k.firmware {
        p.push((6767, if fw.https { "2" } else { "1" }.to_owned()));
    }
    p.push((25020, flag(k.power_on)));
    p.push((25021, flag(k.repeat)));
    p.push((25022, flag(k.weekly)));
    p.push((25023, k.interval_weeks.to_string()));
    p.push((25024, k.inactivity_minutes.to_string()));
    push_window(&mut p, 25025, k.weekly_window);
    for (code, day) in DAY_PCODES {
        p.push((code, flag(k.days.contains(day))));
    }
    p.push((25036, flag(k.flexible)));
    p.push((25037, k.interval_days.to_string()));
    push_window(&mut p, 25038, k.flexible_window);
    xml(&k.comment, k.mac, &p)
}
