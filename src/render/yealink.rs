//! Yealink: `static.auto_provision.*` keys and `static.firmware.url` in `<mac>.cfg`, first line
//! `#!version:1.0.0.1` (Yealink Administrator's Guide, "Auto Provision"; docs/phones.md).

use super::{Knobs, push_time, push_u32};
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
pub(super) fn render(k: &Knobs<'_>, out: &mut String) {
    let mut days = [0u8; 7];
    let mut n = 0;
    for day in k.days.iter() {
        days[n] = b'0' + day.num_days_from_sunday() as u8;
        n += 1;
    }
    let weekly = k.weekly && n > 0;
    let days = match std::str::from_utf8(&days[..n]) {
        Ok(days) if n > 0 => days,
        _ => ALL_DAYS,
    };
    let weekly_window = explicit(k.weekly_window);
    let flexible_window = explicit(k.flexible_window);
    out.push_str("#!version:1.0.0.1\n## ");
    k.write_comment(out);
    out.push('\n');
    let mut kv = |key: &str, value: Value<'_>| {
        out.push_str(key);
        out.push_str(" = ");
        match value {
            Value::Number(n) => push_u32(out, n),
            Value::Time(t) => push_time(out, t),
            Value::Text(pieces) => pieces.iter().for_each(|p| out.push_str(p)),
        }
        out.push('\n');
    };
    let flag = |b: bool| Value::Number(u32::from(b));
    kv("static.auto_provision.power_on", flag(k.power_on));
    kv("static.auto_provision.repeat.enable", flag(k.repeat));
    kv(
        "static.auto_provision.repeat.minutes",
        Value::Number(k.repeat_minutes),
    );
    kv("static.auto_provision.weekly.enable", flag(weekly));
    kv(
        "static.auto_provision.weekly_upgrade_interval",
        Value::Number(k.interval_weeks),
    );
    kv(
        "static.auto_provision.inactivity_time_expire",
        Value::Number(k.inactivity_minutes),
    );
    kv(
        "static.auto_provision.weekly.begin_time",
        Value::Time(weekly_window.start),
    );
    kv(
        "static.auto_provision.weekly.end_time",
        Value::Time(weekly_window.end),
    );
    kv(
        "static.auto_provision.weekly.dayofweek",
        Value::Text(&[days]),
    );
    kv("static.auto_provision.flexible.enable", flag(k.flexible));
    kv(
        "static.auto_provision.flexible.interval",
        Value::Number(k.interval_days),
    );
    kv(
        "static.auto_provision.flexible.begin_time",
        Value::Time(flexible_window.start),
    );
    kv(
        "static.auto_provision.flexible.end_time",
        Value::Time(flexible_window.end),
    );
    if let Some(fw) = k.firmware {
        kv("static.firmware.url", Value::Text(&fw.url()));
    }
}

/// A value as the file spells it.
enum Value<'a> {
    Number(u32),
    /// `HH:MM`.
    Time(LocalTime),
    /// Written as is, one piece after the other.
    Text(&'a [&'a str]),
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
