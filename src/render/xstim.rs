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
use super::pvalues::PValues;

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
pub(super) fn render(k: &Knobs<'_>, out: &mut String) {
    let mut p = PValues::start(k, out);
    if let Some(fw) = k.firmware {
        p.text(192, &fw.dir_without_scheme());
    }
    p.number(193, k.repeat_minutes);
    if let Some(fw) = k.firmware {
        p.number(6767, if fw.https() { 2 } else { 1 });
    }
    p.flag(25020, k.power_on);
    p.flag(25021, k.repeat);
    p.flag(25022, k.weekly);
    p.number(25023, k.interval_weeks);
    p.number(25024, k.inactivity_minutes);
    p.window(25025, k.weekly_window);
    for (code, day) in DAY_PCODES {
        p.flag(code, k.days.contains(day));
    }
    p.flag(25036, k.flexible);
    p.number(25037, k.interval_days);
    p.window(25038, k.flexible_window);
    p.finish();
}
