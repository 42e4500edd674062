//! What a phone reads from its configuration file, family by family, following the vendor's
//! documented rules (docs/phones.md) rather than what the renderer meant: an XSTIM phone reads
//! the P250xx PCODEs, a Yealink phone its `static.*` keys (an end equal to the begin is "at the
//! begin time"), a Grandstream phone P194 and its whole-hour window (one check a day at a
//! random minute), and only upgrades unattended when P8375 = 0 and P238 does not skip the
//! firmware check. The simulator obeys the file, not the plan: that is what makes it a test of
//! the files.

use std::collections::HashMap;

use chrono::Weekday;

use crate::core::{DaySet, LocalTime, LocalWindow};

/// The knobs a phone acts on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PhoneKnobs {
    pub power_on: bool,
    /// Minutes between checks when "Repeatedly" is on (Grandstream: P194 = 1).
    pub repeat_minutes: Option<u32>,
    pub weekly: bool,
    pub interval_weeks: u32,
    pub inactivity_minutes: u32,
    pub weekly_window: LocalWindow,
    pub days: DaySet,
    pub flexible: bool,
    pub interval_days: u32,
    pub flexible_window: LocalWindow,
    /// Grandstream P194 = 2: one check a day inside these whole hours.
    pub daily: Option<DailyHours>,
    /// Full URL of the firmware image, when the file points at one the phone will install
    /// unattended.
    pub firmware_url: Option<String>,
}

/// Grandstream's daily check: `[start_hour:00, end_hour:00)`, at a random minute of it when
/// randomized (P8458 = 1), else at the start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DailyHours {
    pub start_hour: u32,
    pub end_hour: u32,
    pub random: bool,
}

impl PhoneKnobs {
    /// No scheduled check at all (only boots).
    fn idle(power_on: bool) -> Self {
        let zero = LocalTime::of(chrono::NaiveTime::MIN);
        let midnight = LocalWindow {
            start: zero,
            end: zero,
        };
        PhoneKnobs {
            power_on,
            repeat_minutes: None,
            weekly: false,
            interval_weeks: 0,
            inactivity_minutes: 0,
            weekly_window: midnight,
            days: DaySet::default(),
            flexible: false,
            interval_days: 1,
            flexible_window: midnight,
            daily: None,
            firmware_url: None,
        }
    }
}

/// Why a file could not be read as a phone would.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KnobsError {
    #[error("missing or invalid value for {0}")]
    Value(String),
}

/// Grandstream phones append the image name they expect for their model to P192's directory:
/// `gxp2170fw.bin` for a GXP2170 (the simulator's convention; the real name is undocumented).
pub fn grandstream_image(model: &str) -> String {
    format!("{}fw.bin", model.to_ascii_lowercase())
}

/// The `<Pnnn>v</Pnnn>` values of a `<gs_provision>` file.
fn pvalues(body: &str) -> Result<HashMap<u32, String>, KnobsError> {
    if !body.contains("<gs_provision") {
        return Err(KnobsError::Value("<gs_provision>".into()));
    }
    let mut p: HashMap<u32, String> = HashMap::new();
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
    Ok(p)
}

struct Codes(HashMap<u32, String>);

impl Codes {
    fn num(&self, code: u32) -> Result<u32, KnobsError> {
        self.0
            .get(&code)
            .and_then(|v| v.trim().parse().ok())
            .ok_or_else(|| KnobsError::Value(format!("P{code}")))
    }

    fn flag(&self, code: u32) -> Result<bool, KnobsError> {
        self.num(code).map(|v| v != 0)
    }

    /// P192 directory with P6767's scheme and the model's image name.
    fn firmware(&self, model: &str) -> Option<String> {
        let dir = self.0.get(&192).filter(|d| !d.is_empty())?;
        let scheme = if self.num(6767).unwrap_or(1) == 2 {
            "https"
        } else {
            "http"
        };
        Some(format!("{scheme}://{dir}/{}", grandstream_image(model)))
    }
}

/// Reads XSTIM's PCODEs (P25020–P25041, P193, P192/P6767) from `<gs_provision>` XML.
pub fn parse_xstim(body: &str, model: &str) -> Result<PhoneKnobs, KnobsError> {
    let p = Codes(pvalues(body)?);
    let window = |first: u32| -> Result<LocalWindow, KnobsError> {
        let t = |h: u32, m: u32| {
            LocalTime::from_minutes(p.num(h)? * 60 + p.num(m)?)
                .ok_or_else(|| KnobsError::Value(format!("P{h}/P{m}")))
        };
        Ok(LocalWindow {
            start: t(first, first + 1)?,
            end: t(first + 2, first + 3)?,
        })
    };
    let mut days = DaySet::default();
    for (code, day) in crate::render::DAY_PCODES {
        if p.flag(code)? {
            days.insert(day);
        }
    }
    Ok(PhoneKnobs {
        power_on: p.flag(25020)?,
        repeat_minutes: if p.flag(25021)? {
            Some(p.num(193)?.max(1))
        } else {
            None
        },
        weekly: p.flag(25022)?,
        interval_weeks: p.num(25023)?,
        inactivity_minutes: p.num(25024)?,
        weekly_window: window(25025)?,
        days,
        flexible: p.flag(25036)?,
        interval_days: p.num(25037)?.max(1),
        flexible_window: window(25038)?,
        daily: None,
        firmware_url: p.firmware(model),
    })
}

/// Reads Grandstream's P194 schedule and firmware keys as the templates document them. Any
/// P250xx code is ignored, as a Grandstream phone would.
pub fn parse_grandstream(body: &str, model: &str) -> Result<PhoneKnobs, KnobsError> {
    let p = Codes(pvalues(body)?);
    // Grandstream phones provision at boot; there is no switch for it.
    let mut k = PhoneKnobs::idle(true);
    match p.num(194)? {
        0 => {}
        1 => {
            // P193's documented range is 60–86400.
            k.repeat_minutes = Some(p.num(193)?.clamp(60, 86400));
        }
        2 => {
            let start_hour = p.num(285)?;
            let end_hour = p.num(8459)?;
            if start_hour > 23 || end_hour > 23 {
                return Err(KnobsError::Value("P285/P8459".into()));
            }
            k.daily = Some(DailyHours {
                start_hour,
                end_hour,
                random: p.num(8458).unwrap_or(0) == 1,
            });
        }
        _ => return Err(KnobsError::Value("P194".into())),
    }
    // Unattended only without the confirmation prompt (P8375 defaults to 1, "Yes"), and not
    // when the firmware check is skipped (P238 = 2).
    let unattended = p.num(8375).unwrap_or(1) == 0 && p.num(238).unwrap_or(0) != 2;
    k.firmware_url = p.firmware(model).filter(|_| unattended);
    Ok(k)
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
    // Yealink: an end equal to the begin is "at the begin time" (a one-minute window here).
    let window = |begin: &str, end: &str| -> Result<LocalWindow, KnobsError> {
        let (start, end) = (time(begin)?, time(end)?);
        Ok(LocalWindow {
            start,
            end: if end == start {
                start.wrapping_add(1)
            } else {
                end
            },
        })
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
        weekly_window: window("weekly.begin_time", "weekly.end_time")?,
        days,
        flexible: num("flexible.enable")? != 0,
        interval_days: num("flexible.interval")?.max(1),
        flexible_window: window("flexible.begin_time", "flexible.end_time")?,
        daily: None,
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
    use crate::core::{
        CheckWindow, FlexiblePolicy, Mac, PhoneFamily, ProvisioningPolicy, WeeklyPolicy,
    };
    use crate::render::{FirmwarePath, PhoneConfig, RolloutSlot, render};

    fn window(a: &str, b: &str) -> LocalWindow {
        LocalWindow {
            start: a.parse().unwrap(),
            end: b.parse().unwrap(),
        }
    }

    fn policy() -> ProvisioningPolicy {
        ProvisioningPolicy {
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
        }
    }

    fn rendered(family: PhoneFamily, policy: &ProvisioningPolicy, slot: Option<&str>) -> String {
        let slot = slot.map(|start| RolloutSlot {
            firmware_version: "2.0".into(),
            firmware: FirmwarePath::new("paris", "gxp2170fw.bin").unwrap(),
            window: CheckWindow {
                weekday: Weekday::Wed,
                window: LocalWindow {
                    start: start.parse().unwrap(),
                    end: start.parse::<LocalTime>().unwrap().wrapping_add(60),
                },
            },
        });
        let mac: Mac = "000b82123456".parse().unwrap();
        let phone = PhoneConfig {
            mac,
            model: "GXP2170",
            family,
            provisioning: policy,
            slot: slot.as_ref(),
        };
        render(&phone, &"http://prov:8080".parse().unwrap()).body
    }

    fn parse(family: PhoneFamily, body: &str) -> PhoneKnobs {
        match family {
            PhoneFamily::Xstim => parse_xstim(body, "GXP2170"),
            PhoneFamily::Yealink => parse_yealink(body),
            PhoneFamily::Grandstream => parse_grandstream(body, "GXP2170"),
        }
        .unwrap()
    }

    #[test]
    fn minute_families_read_back_the_rendered_steady_state() {
        for family in [PhoneFamily::Xstim, PhoneFamily::Yealink] {
            let k = parse(family, &rendered(family, &policy(), None));
            assert!(k.power_on && k.weekly && k.flexible, "{family}");
            assert_eq!(k.repeat_minutes, Some(720), "{family}");
            assert_eq!((k.interval_weeks, k.inactivity_minutes), (2, 15));
            assert_eq!(k.weekly_window, window("01:00", "05:00"), "{family}");
            assert_eq!(
                k.days.iter().collect::<Vec<_>>(),
                vec![Weekday::Mon, Weekday::Sat]
            );
            assert_eq!(
                (k.interval_days, k.flexible_window),
                (3, window("22:00", "02:00"))
            );
            assert_eq!(k.firmware_url, None, "{family}");
        }
    }

    #[test]
    fn minute_families_read_back_a_slot_and_its_firmware() {
        for family in [PhoneFamily::Xstim, PhoneFamily::Yealink] {
            let k = parse(family, &rendered(family, &policy(), Some("02:00")));
            assert_eq!(k.days.iter().collect::<Vec<_>>(), vec![Weekday::Wed]);
            assert_eq!(k.weekly_window, window("02:00", "03:00"));
            assert!(!k.flexible, "{family}");
            assert_eq!(
                k.firmware_url.as_deref(),
                Some("http://prov:8080/firmware/paris/gxp2170fw.bin"),
                "{family}"
            );
        }
    }

    #[test]
    fn a_grandstream_slot_is_a_daily_whole_hour_check_with_unattended_firmware() {
        let k = parse(
            PhoneFamily::Grandstream,
            &rendered(PhoneFamily::Grandstream, &policy(), Some("02:00")),
        );
        assert_eq!(
            k.daily,
            Some(DailyHours {
                start_hour: 2,
                end_hour: 3,
                random: true
            })
        );
        assert_eq!(k.repeat_minutes, None, "P194 is one mode");
        assert_eq!(
            k.firmware_url.as_deref(),
            Some("http://prov:8080/firmware/paris/gxp2170fw.bin")
        );
    }

    #[test]
    fn a_grandstream_phone_ignores_xstim_codes() {
        let xstim = rendered(PhoneFamily::Xstim, &policy(), Some("02:00"));
        assert!(
            parse_grandstream(&xstim, "GXP2170").is_err(),
            "no P194: a Grandstream phone has no schedule from XSTIM codes"
        );
    }

    #[test]
    fn a_grandstream_phone_asks_before_upgrading_unless_p8375_is_0() {
        let body = rendered(PhoneFamily::Grandstream, &policy(), Some("02:00"))
            .replace("<P8375>0</P8375>", "");
        assert_eq!(
            parse_grandstream(&body, "GXP2170").unwrap().firmware_url,
            None
        );
    }

    #[test]
    fn yealink_reads_begin_equal_to_end_as_the_begin_time() {
        let body = rendered(PhoneFamily::Yealink, &policy(), None)
            .replace("flexible.end_time = 02:00", "flexible.end_time = 22:00");
        let k = parse_yealink(&body).unwrap();
        assert_eq!(k.flexible_window, window("22:00", "22:01"));
    }

    #[test]
    fn a_truncated_file_is_an_error() {
        assert!(parse_xstim("<gs_provision><P25020>1</P25020>", "GXP2170").is_err());
        assert!(parse_grandstream("P194 = 2\n", "GXP2170").is_err());
        assert!(parse_yealink("#!version:1.0.0.1\n").is_err());
    }
}
