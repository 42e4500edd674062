//! What a phone reads from its configuration file: the provisioning knobs of DESIGN.md §2 and
//! the firmware location, from any of the three formats the renderer writes. The simulator
//! obeys the file, not the plan: that is what makes it a test of the files.

use std::collections::HashMap;

use chrono::Weekday;

use crate::core::{DaySet, LocalTime, LocalWindow};

/// The knobs a phone acts on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PhoneKnobs {
    pub power_on: bool,
    /// Minutes between checks when "Repeatedly" is on.
    pub repeat_minutes: Option<u32>,
    pub weekly: bool,
    pub interval_weeks: u32,
    pub inactivity_minutes: u32,
    pub weekly_window: LocalWindow,
    pub days: DaySet,
    pub flexible: bool,
    pub interval_days: u32,
    pub flexible_window: LocalWindow,
    /// Full URL of the firmware image, when the file points at one.
    pub firmware_url: Option<String>,
}

/// Why a file could not be read as a phone would.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KnobsError {
    #[error("missing or invalid value for {0}")]
    Value(String),
}

/// Grandstream phones append the image name they expect for their model to P192's directory:
/// `gxp2170fw.bin` for a GXP2170.
pub fn grandstream_image(model: &str) -> String {
    format!("{}fw.bin", model.to_ascii_lowercase())
}

/// Reads Grandstream P-values, from `<Pnnn>v</Pnnn>` XML or `Pnnn = v` text.
pub fn parse_pvalues(body: &str, model: &str) -> Result<PhoneKnobs, KnobsError> {
    let mut p: HashMap<u32, String> = HashMap::new();
    if body.contains("<gs_provision") {
        let mut rest = body;
        while let Some(i) = rest.find("<P") {
            rest = &rest[i + 2..];
            let Some(close) = rest.find('>') else { break };
            let Ok(code) = rest[..close].parse::<u32>() else {
                continue;
            };
            let after = &rest[close + 1..];
            let Some(end) = after.find("</P") else { break };
            p.insert(code, unescape(&after[..end]));
            rest = &after[end..];
        }
    } else {
        for line in body.lines() {
            let Some(line) = line.trim().strip_prefix('P') else {
                continue;
            };
            if let Some((code, value)) = line.split_once('=')
                && let Ok(code) = code.trim().parse::<u32>()
            {
                p.insert(code, value.trim().to_owned());
            }
        }
    }
    let num = |code: u32| -> Result<u32, KnobsError> {
        p.get(&code)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| KnobsError::Value(format!("P{code}")))
    };
    let flag = |code: u32| num(code).map(|v| v != 0);
    let window = |first: u32| -> Result<LocalWindow, KnobsError> {
        let t = |h: u32, m: u32| {
            LocalTime::from_minutes(num(h)? * 60 + num(m)?)
                .ok_or_else(|| KnobsError::Value(format!("P{h}/P{m}")))
        };
        Ok(LocalWindow {
            start: t(first, first + 1)?,
            end: t(first + 2, first + 3)?,
        })
    };
    let mut days = DaySet::default();
    for (code, day) in crate::render::DAY_PCODES {
        if flag(code)? {
            days.insert(day);
        }
    }
    let firmware_url = match p.get(&192).filter(|d| !d.is_empty()) {
        Some(dir) => {
            let scheme = if num(212).unwrap_or(1) == 2 {
                "https"
            } else {
                "http"
            };
            Some(format!("{scheme}://{dir}/{}", grandstream_image(model)))
        }
        None => None,
    };
    Ok(PhoneKnobs {
        power_on: flag(25020)?,
        repeat_minutes: if flag(25021)? {
            Some(num(193)?.max(1))
        } else {
            None
        },
        weekly: flag(25022)?,
        interval_weeks: num(25023)?,
        inactivity_minutes: num(25024)?,
        weekly_window: window(25025)?,
        days,
        flexible: flag(25036)?,
        interval_days: num(25037)?.max(1),
        flexible_window: window(25038)?,
        firmware_url,
    })
}

/// Reads Yealink `static.auto_provision.*` keys and `static.firmware.url`.
pub fn parse_yealink(body: &str) -> Result<PhoneKnobs, KnobsError> {
    let kv: HashMap<&str, &str> = body
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim(), v.trim()))
        .collect();
    let key = |k: &str| format!("static.auto_provision.{k}");
    let num = |k: &str| -> Result<u32, KnobsError> {
        kv.get(key(k).as_str())
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| KnobsError::Value(key(k)))
    };
    let time = |k: &str| -> Result<LocalTime, KnobsError> {
        kv.get(key(k).as_str())
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| KnobsError::Value(key(k)))
    };
    let days_text = kv
        .get(key("weekly.dayofweek").as_str())
        .copied()
        .unwrap_or("");
    let mut days = DaySet::default();
    for c in days_text.chars() {
        let day = match c {
            '0' => Weekday::Sun,
            '1' => Weekday::Mon,
            '2' => Weekday::Tue,
            '3' => Weekday::Wed,
            '4' => Weekday::Thu,
            '5' => Weekday::Fri,
            '6' => Weekday::Sat,
            _ => return Err(KnobsError::Value(key("weekly.dayofweek"))),
        };
        days.insert(day);
    }
    Ok(PhoneKnobs {
        power_on: num("power_on")? != 0,
        repeat_minutes: if num("repeat.enable")? != 0 {
            Some(num("repeat.minutes")?.max(1))
        } else {
            None
        },
        weekly: num("weekly.enable")? != 0,
        interval_weeks: num("weekly_upgrade_interval")?,
        inactivity_minutes: num("inactivity_time_expire")?,
        weekly_window: LocalWindow {
            start: time("weekly.begin_time")?,
            end: time("weekly.end_time")?,
        },
        days,
        flexible: num("flexible.enable")? != 0,
        interval_days: num("flexible.interval")?.max(1),
        flexible_window: LocalWindow {
            start: time("flexible.begin_time")?,
            end: time("flexible.end_time")?,
        },
        firmware_url: kv
            .get("static.firmware.url")
            .map(|s| s.to_string())
            .filter(|s| !s.is_empty()),
    })
}

fn unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::{CheckWindow, FlexiblePolicy, Mac, ProvisioningPolicy, WeeklyPolicy};
    use crate::render::{FirmwarePath, Format, PhoneConfig, RolloutSlot, render};

    fn window(a: &str, b: &str) -> LocalWindow {
        LocalWindow {
            start: a.parse().unwrap(),
            end: b.parse().unwrap(),
        }
    }

    fn rendered(format: Format, with_slot: bool) -> String {
        let policy = ProvisioningPolicy {
            power_on: true,
            repeatedly: std::num::NonZeroU32::new(720),
            weekly: WeeklyPolicy {
                enabled: true,
                interval_weeks: 2,
                inactivity_minutes: 15,
                window: window("01:00", "05:00"),
                days: [Weekday::Mon, Weekday::Sat].into_iter().collect(),
            },
            flexible: FlexiblePolicy {
                enabled: true,
                interval_days: 3,
                window: window("22:00", "02:00"),
            },
        };
        let slot = RolloutSlot {
            firmware_version: "2.0".into(),
            firmware: FirmwarePath::new("paris", "gxp2170fw.bin").unwrap(),
            window: CheckWindow {
                weekday: Weekday::Wed,
                window: window("02:30", "02:55"),
            },
        };
        let mac: Mac = "000b82123456".parse().unwrap();
        let phone = PhoneConfig {
            mac,
            model: "GXP2170",
            provisioning: &policy,
            slot: with_slot.then_some(&slot),
        };
        render(&phone, &"http://prov:8080".parse().unwrap(), format).body
    }

    #[test]
    fn every_format_reads_back_the_rendered_steady_state() {
        for format in Format::ALL {
            let body = rendered(format, false);
            let k = match format {
                Format::Yealink => parse_yealink(&body),
                _ => parse_pvalues(&body, "GXP2170"),
            }
            .unwrap();
            assert!(k.power_on && k.weekly && k.flexible, "{format}");
            assert_eq!(k.repeat_minutes, Some(720), "{format}");
            assert_eq!(
                (k.interval_weeks, k.inactivity_minutes),
                (2, 15),
                "{format}"
            );
            assert_eq!(k.weekly_window, window("01:00", "05:00"), "{format}");
            assert_eq!(
                k.days.iter().collect::<Vec<_>>(),
                vec![Weekday::Mon, Weekday::Sat]
            );
            assert_eq!(
                (k.interval_days, k.flexible_window),
                (3, window("22:00", "02:00"))
            );
            assert_eq!(k.firmware_url, None, "{format}");
        }
    }

    #[test]
    fn every_format_reads_back_a_slot_and_its_firmware() {
        for format in Format::ALL {
            let body = rendered(format, true);
            let k = match format {
                Format::Yealink => parse_yealink(&body),
                _ => parse_pvalues(&body, "GXP2170"),
            }
            .unwrap();
            assert_eq!(
                k.days.iter().collect::<Vec<_>>(),
                vec![Weekday::Wed],
                "{format}"
            );
            assert_eq!(k.weekly_window, window("02:30", "02:55"));
            assert!(!k.flexible, "{format}");
            assert_eq!(
                k.firmware_url.as_deref(),
                Some("http://prov:8080/firmware/paris/gxp2170fw.bin"),
                "{format}"
            );
        }
    }

    #[test]
    fn a_truncated_file_is_an_error() {
        assert!(parse_pvalues("P25020 = 1\n", "GXP2170").is_err());
        assert!(parse_yealink("#!version:1.0.0.1\n").is_err());
    }
}
