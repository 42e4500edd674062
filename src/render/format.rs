//! The three spellings of [`Knobs`]. Keys are written in a fixed order and every schedule knob
//! is always written, so a file fully determines the phone's schedule: nothing a previous file
//! set can linger.

use std::fmt::Write;

use chrono::Weekday;

use super::Knobs;
use crate::core::LocalWindow;

/// Grandstream's "Day of Week" boxes, P25029 (Sunday) to P25035 (Saturday).
pub const DAY_PCODES: [(u32, Weekday); 7] = [
    (25029, Weekday::Sun),
    (25030, Weekday::Mon),
    (25031, Weekday::Tue),
    (25032, Weekday::Wed),
    (25033, Weekday::Thu),
    (25034, Weekday::Fri),
    (25035, Weekday::Sat),
];

/// The P-values of a file, in ascending PCODE order.
///
/// Firmware location (only inside a slot): P192 "Firmware Server Path" (host and directory,
/// no scheme; the phone appends the image name it expects for its model) and P212 "Upgrade
/// Via" (1 HTTP, 2 HTTPS). P193 is "Automatic Upgrade Check Interval" in minutes, the seed's
/// "Check for upgrade every", which the seed lists without a PCODE.
fn pvalues(k: &Knobs) -> Vec<(u32, String)> {
    let flag = |b: bool| u32::from(b).to_string();
    let mut p: Vec<(u32, String)> = Vec::with_capacity(30);
    if let Some(fw) = &k.firmware {
        p.push((192, fw.dir_without_scheme.clone()));
    }
    p.push((193, k.repeat_minutes.to_string()));
    if let Some(fw) = &k.firmware {
        p.push((212, if fw.https { "2" } else { "1" }.to_owned()));
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
    p
}

/// Start hour, start minute, end hour, end minute at four consecutive PCODEs.
fn push_window(p: &mut Vec<(u32, String)>, first: u32, w: LocalWindow) {
    p.push((first, w.start.hour().to_string()));
    p.push((first + 1, w.start.minute().to_string()));
    p.push((first + 2, w.end.hour().to_string()));
    p.push((first + 3, w.end.minute().to_string()));
}

/// `<gs_provision>` XML, as Grandstream phones fetch `cfg<mac>.xml`.
pub(super) fn xml(k: &Knobs) -> String {
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(out, "<!-- {} -->", k.comment);
    out.push_str("<gs_provision version=\"1\">\n");
    let _ = writeln!(out, "  <mac>{}</mac>", k.mac.bare());
    out.push_str("  <config version=\"1\">\n");
    for (code, value) in pvalues(k) {
        let _ = writeln!(out, "    <P{code}>{}</P{code}>", xml_escape(&value));
    }
    out.push_str("  </config>\n</gs_provision>\n");
    out
}

/// `Pnnnn = value` lines, as in Grandstream's text configuration template.
pub(super) fn text(k: &Knobs) -> String {
    let mut out = format!("# {}\n", k.comment);
    for (code, value) in pvalues(k) {
        let _ = writeln!(out, "P{code} = {value}");
    }
    out
}

/// Yealink `static.auto_provision.*` keys. Yealink numbers the days 0 (Sunday) to 6
/// (Saturday) and lists the selected ones as one string of digits, e.g. `0123456`.
pub(super) fn yealink(k: &Knobs) -> String {
    let flag = |b: bool| u32::from(b);
    let days: String = k
        .days
        .iter()
        .map(|d| char::from(b'0' + d.num_days_from_sunday() as u8))
        .collect();
    let mut out = String::from("#!version:1.0.0.1\n");
    let _ = writeln!(out, "## {}", k.comment);
    let mut kv = |key: &str, value: &dyn std::fmt::Display| {
        let _ = writeln!(out, "{key} = {value}");
    };
    kv("static.auto_provision.power_on", &flag(k.power_on));
    kv("static.auto_provision.repeat.enable", &flag(k.repeat));
    kv("static.auto_provision.repeat.minutes", &k.repeat_minutes);
    kv("static.auto_provision.weekly.enable", &flag(k.weekly));
    kv(
        "static.auto_provision.weekly_upgrade_interval",
        &k.interval_weeks,
    );
    kv(
        "static.auto_provision.inactivity_time_expire",
        &k.inactivity_minutes,
    );
    kv(
        "static.auto_provision.weekly.begin_time",
        &k.weekly_window.start,
    );
    kv(
        "static.auto_provision.weekly.end_time",
        &k.weekly_window.end,
    );
    kv("static.auto_provision.weekly.dayofweek", &days);
    kv("static.auto_provision.flexible.enable", &flag(k.flexible));
    kv("static.auto_provision.flexible.interval", &k.interval_days);
    kv(
        "static.auto_provision.flexible.begin_time",
        &k.flexible_window.start,
    );
    kv(
        "static.auto_provision.flexible.end_time",
        &k.flexible_window.end,
    );
    if let Some(fw) = &k.firmware {
        kv("static.firmware.url", &fw.url);
    }
    out
}

fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}
