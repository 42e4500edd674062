//! Yealink: `static.auto_provision.*` keys and `static.firmware.url` in `<mac>.cfg`, first line
//! `#!version:1.0.0.1` (Yealink Administrator's Guide, "Auto Provision"; docs/phones.md).

use std::fmt::Write;

use super::Knobs;
use crate::core::{LocalTime, LocalWindow};

/// Every key a Yealink file can carry (docs/phones.md lists each one).
pub const YEALINK_KEYS: [&str; 14] = [
    "static.auto_provision.power_on",
    "static.auto_provision.repeat.enable",
    "static.auto_provision.repeat.minutes",
    "static.auto_provision.weekly.enable",
    "static.auto_provision.weekly_upgrade_interval",
    "static.auto_provision.inactivity_time_expire",
    "static.auto_provision.weekly.begin_time",
    "static.auto_provision.weekly.end_time",
    "static.auto_provision.weekly.dayofweek",
    "static.auto_provision.flexible.enable",
    "static.auto_provision.flexible.interval",
    "static.auto_provision.flexible.begin_time",
    "static.auto_provision.flexible.end_time",
    "static.firmware.url",
];

/// Yealink's default for `weekly.dayofweek` (every day), written when weekly is off for want
/// of days: an empty value may leave the previous one in place.
const ALL_DAYS: &str = "0123456";

/// The file. Yealink numbers the days 0 (Sunday) to 6 (Saturday) and lists the selected ones
/// as one string of digits, e.g. `0123456`.
pub(super) fn render(k: &Knobs) -> String {
    let flag = |b: bool| u32::from(b);
    let mut days: String = k
        .days
        .iter()
        .map(|d| char::from(b'0' + d.num_days_from_sunday() as u8))
        .collect();
    // No day selected means no weekly check: say so with the switch, never with an empty list.
    let weekly = k.weekly && !days.is_empty();
    if days.is_empty() {
        days = ALL_DAYS.to_owned();
    }
    let weekly_window = explicit(k.weekly_window);
    let flexible_window = explicit(k.flexible_window);
    let mut out = String::from("#!version:1.0.0.1\n");
    let _ = writeln!(out, "## {}", k.comment);
    let mut kv = |key: &str, value: &dyn std::fmt::Display| {
        let _ = writeln!(out, "{key} = {value}");
    };
    kv("static.auto_provision.power_on", &flag(k.power_on));
    kv("static.auto_provision.repeat.enable", &flag(k.repeat));
    kv("static.auto_provision.repeat.minutes", &k.repeat_minutes);
    kv("static.auto_provision.weekly.enable", &flag(weekly));
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
        &weekly_window.start,
    );
    kv("static.auto_provision.weekly.end_time", &weekly_window.end);
    kv("static.auto_provision.weekly.dayofweek", &days);
    kv("static.auto_provision.flexible.enable", &flag(k.flexible));
    kv("static.auto_provision.flexible.interval", &k.interval_days);
    kv(
        "static.auto_provision.flexible.begin_time",
        &flexible_window.start,
    );
    kv(
        "static.auto_provision.flexible.end_time",
        &flexible_window.end,
    );
    if let Some(fw) = &k.firmware {
        kv("static.firmware.url", &fw.url);
    }
    out
}

/// The window as Yealink reads it. phonefleet's start == end is the whole day, but Yealink
/// documents an end equal to the begin as "at the begin time": the whole day is written as
/// 00:00–23:59, or, starting later, as ending one minute before the start on the next day
/// (an end before the begin "ends in the next day").
pub(super) fn explicit(w: LocalWindow) -> LocalWindow {
    if w.start != w.end {
        return w;
    }
    let end = if w.start.minutes() == 0 {
        LocalTime::from_minutes(23 * 60 + 59).unwrap_or(w.end)
    } else {
        w.start.wrapping_add(24 * 60 - 1)
    };
    LocalWindow {
        start: w.start,
        end,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(s: &str, e: &str) -> LocalWindow {
        LocalWindow {
            start: s.parse().expect("HH:MM"),
            end: e.parse().expect("HH:MM"),
        }
    }

    #[test]
    fn a_whole_day_is_never_written_as_begin_equal_to_end() {
        assert_eq!(explicit(w("00:00", "00:00")), w("00:00", "23:59"));
        assert_eq!(explicit(w("02:00", "02:00")), w("02:00", "01:59"));
        assert_eq!(explicit(w("01:00", "05:00")), w("01:00", "05:00"));
    }
}
