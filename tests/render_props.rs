//! Properties of the renderer over arbitrary policies and slots: the two minute-level families
//! (XSTIM, Yealink) carry the same knobs, every XSTIM PCODE appears exactly once, a slot always
//! narrows the phone to one day and carries the firmware, a Grandstream file never carries an
//! XSTIM code and never checks outside the operator's policy, and every file name maps back to
//! its phone and format.

use std::collections::BTreeMap;
use std::num::NonZeroU32;

use chrono::Weekday;
use phonefleet::core::family::{GrandstreamMode, grandstream_steady};
use phonefleet::core::{
    CheckWindow, DaySet, FlexiblePolicy, LocalTime, LocalWindow, Mac, PhoneFamily,
    ProvisioningPolicy, WeeklyPolicy,
};
use phonefleet::render::{
    FirmwarePath, Format, PhoneConfig, RolloutSlot, ServerUrl, parse_file_name, render,
};
use proptest::prelude::*;

const WEEK: [Weekday; 7] = [
    Weekday::Sun,
    Weekday::Mon,
    Weekday::Tue,
    Weekday::Wed,
    Weekday::Thu,
    Weekday::Fri,
    Weekday::Sat,
];

fn time() -> impl Strategy<Value = LocalTime> {
    (0u32..1440).prop_map(|m| LocalTime::from_minutes(m).expect("below 24:00"))
}

fn window() -> impl Strategy<Value = LocalWindow> {
    (time(), time()).prop_map(|(start, end)| LocalWindow { start, end })
}

fn days() -> impl Strategy<Value = DaySet> {
    (0u8..128).prop_map(|bits| {
        WEEK.iter()
            .enumerate()
            .filter(|(i, _)| bits & (1 << i) != 0)
            .map(|(_, d)| *d)
            .collect()
    })
}

fn policy() -> impl Strategy<Value = ProvisioningPolicy> {
    (
        any::<bool>(),
        prop::option::of(1u32..=100_000),
        (any::<bool>(), 0u8..=12, 0u8..=120, window(), days()),
        (any::<bool>(), 1u16..=1000, window()),
    )
        .prop_map(|(power_on, repeat, w, f)| ProvisioningPolicy {
            power_on,
            repeatedly: repeat.and_then(NonZeroU32::new),
            weekly: WeeklyPolicy {
                enabled: w.0,
                interval_weeks: w.1,
                inactivity_minutes: w.2,
                window: w.3,
                days: w.4,
            },
            flexible: FlexiblePolicy {
                enabled: f.0,
                interval_days: f.1,
                window: f.2,
            },
        })
}

fn slot() -> impl Strategy<Value = RolloutSlot> {
    (
        0usize..7,
        window(),
        "[a-z0-9]{1,12}",
        "[A-Za-z0-9_][A-Za-z0-9._+-]{0,20}",
    )
        .prop_filter("no '..'", |(_, _, _, file)| !file.contains(".."))
        .prop_map(|(day, window, site, file)| RolloutSlot {
            firmware_version: "1.0".into(),
            firmware: FirmwarePath::new(&site, &file).expect("valid path"),
            window: CheckWindow {
                weekday: WEEK[day],
                window,
            },
        })
}

fn mac() -> impl Strategy<Value = Mac> {
    (0u64..(1 << 48)).prop_map(|bits| Mac::from_u64(bits).expect("48 bits"))
}

/// `<Pnnnn>value</Pnnnn>` elements of the XML format.
fn xml_pvalues(body: &str) -> Vec<(u32, String)> {
    body.lines()
        .map(str::trim)
        .filter(|l| l.starts_with("<P"))
        .map(|l| {
            let (open, rest) = l[2..].split_once('>').expect("<Pnnnn>");
            let (value, _) = rest.split_once("</P").expect("</Pnnnn>");
            (open.parse().expect("PCODE number"), value.to_owned())
        })
        .collect()
}

fn yealink_keys(body: &str) -> BTreeMap<String, String> {
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| {
            let (k, v) = l.split_once(" = ").expect("key = value");
            (k.to_owned(), v.to_owned())
        })
        .collect()
}

fn hhmm(hour: &str, minute: &str) -> String {
    format!(
        "{:02}:{:02}",
        hour.parse::<u32>().expect("hour"),
        minute.parse::<u32>().expect("minute")
    )
}

fn phone<'a>(
    family: PhoneFamily,
    mac: Mac,
    policy: &'a ProvisioningPolicy,
    slot: Option<&'a RolloutSlot>,
) -> PhoneConfig<'a> {
    PhoneConfig {
        mac,
        model: "M1",
        family,
        provisioning: policy,
        slot,
    }
}

/// Yealink's spelling of a window, as the renderer writes it: start == end (the whole day) is
/// never written as begin == end.
fn yealink_window(start: &str, end: &str) -> (String, String) {
    if start != end {
        (start.to_owned(), end.to_owned())
    } else if start == "00:00" {
        (start.to_owned(), "23:59".to_owned())
    } else {
        let t: LocalTime = start.parse().expect("HH:MM");
        (start.to_owned(), t.wrapping_add(1439).to_string())
    }
}

proptest! {
    #[test]
    fn xstim_and_yealink_say_the_same_thing(policy in policy(), slot in prop::option::of(slot()), mac in mac(), https in any::<bool>()) {
        let server: ServerUrl = if https { "https://prov/p" } else { "http://prov" }.parse().expect("URL");
        let xml = render(&phone(PhoneFamily::Xstim, mac, &policy, slot.as_ref()), &server).body;
        let yealink = render(&phone(PhoneFamily::Yealink, mac, &policy, slot.as_ref()), &server).body;

        let p = xml_pvalues(&xml);
        // Ascending, each PCODE once, every seed PCODE present.
        prop_assert!(p.windows(2).all(|w| w[0].0 < w[1].0));
        let map: BTreeMap<u32, String> = p.into_iter().collect();
        for code in 25020..=25041 {
            prop_assert!(map.contains_key(&code), "P{} missing", code);
        }

        let y = yealink_keys(&yealink);
        let flag = |code: u32| map[&code].clone();
        let digits: String = (0..7u32).filter(|d| map[&(25029 + d)] == "1").map(|d| char::from_digit(d, 10).expect("digit")).collect();
        prop_assert_eq!(&y["static.auto_provision.power_on"], &flag(25020));
        prop_assert_eq!(&y["static.auto_provision.repeat.enable"], &flag(25021));
        prop_assert_eq!(&y["static.auto_provision.repeat.minutes"], &flag(193));
        // No day is "no weekly check", said with the switch, never with an empty list.
        let weekly = if digits.is_empty() { "0".to_owned() } else { flag(25022) };
        prop_assert_eq!(&y["static.auto_provision.weekly.enable"], &weekly);
        prop_assert_eq!(&y["static.auto_provision.weekly_upgrade_interval"], &flag(25023));
        prop_assert_eq!(&y["static.auto_provision.inactivity_time_expire"], &flag(25024));
        let (b, e) = yealink_window(&hhmm(&map[&25025], &map[&25026]), &hhmm(&map[&25027], &map[&25028]));
        prop_assert_eq!(&y["static.auto_provision.weekly.begin_time"], &b);
        prop_assert_eq!(&y["static.auto_provision.weekly.end_time"], &e);
        let days = if digits.is_empty() { "0123456".to_owned() } else { digits };
        prop_assert_eq!(&y["static.auto_provision.weekly.dayofweek"], &days);
        prop_assert_eq!(&y["static.auto_provision.flexible.enable"], &flag(25036));
        prop_assert_eq!(&y["static.auto_provision.flexible.interval"], &flag(25037));
        let (b, e) = yealink_window(&hhmm(&map[&25038], &map[&25039]), &hhmm(&map[&25040], &map[&25041]));
        prop_assert_eq!(&y["static.auto_provision.flexible.begin_time"], &b);
        prop_assert_eq!(&y["static.auto_provision.flexible.end_time"], &e);
        prop_assert!(y["static.auto_provision.flexible.begin_time"] != y["static.auto_provision.flexible.end_time"]);
        prop_assert_eq!(y.contains_key("static.firmware.url"), map.contains_key(&192));
    }

    #[test]
    fn a_slot_narrows_an_xstim_phone_to_its_day_and_window(policy in policy(), slot in slot(), mac in mac()) {
        let server: ServerUrl = "http://prov".parse().expect("URL");
        let body = render(&phone(PhoneFamily::Xstim, mac, &policy, Some(&slot)), &server).body;
        let map: BTreeMap<u32, String> = xml_pvalues(&body).into_iter().collect();
        prop_assert_eq!(&map[&25022], "1");
        prop_assert_eq!(&map[&25023], "0");
        // Repeated checks stay as the operator set them: they carry re-planned slots.
        prop_assert_eq!(&map[&25021], if policy.repeatedly.is_some() { "1" } else { "0" });
        prop_assert_eq!(&map[&25036], "0");
        let day = slot.window.weekday.num_days_from_sunday();
        for d in 0..7 {
            prop_assert_eq!(&map[&(25029 + d)], if d == day { "1" } else { "0" });
        }
        let w = slot.window.window;
        prop_assert_eq!(hhmm(&map[&25025], &map[&25026]), w.start.to_string());
        prop_assert_eq!(hhmm(&map[&25027], &map[&25028]), w.end.to_string());
        prop_assert_eq!(&map[&192], &format!("prov/{}", slot.firmware.dir()));
        prop_assert_eq!(&map[&6767], "1");
        prop_assert!(!map.contains_key(&212));
    }

    #[test]
    fn a_grandstream_file_never_carries_xstim_codes_or_checks_outside_the_policy(policy in policy(), hour in 0u32..23, mac in mac(), with_slot in any::<bool>()) {
        let server: ServerUrl = "https://prov".parse().expect("URL");
        let start = LocalTime::from_minutes(hour * 60).expect("hour");
        let slot = RolloutSlot {
            firmware_version: "1.0".into(),
            firmware: FirmwarePath::new("site", "fw.bin").expect("valid path"),
            window: CheckWindow { weekday: Weekday::Tue, window: LocalWindow { start, end: start.wrapping_add(60) } },
        };
        let slot = with_slot.then_some(&slot);
        let body = render(&phone(PhoneFamily::Grandstream, mac, &policy, slot), &server).body;
        let map: BTreeMap<u32, String> = xml_pvalues(&body).into_iter().collect();
        prop_assert!(map.keys().all(|c| !(25000..26000).contains(c)), "{}", body);
        prop_assert!(!map.contains_key(&212));
        let mode: u32 = map[&194].parse().expect("P194");
        if with_slot {
            prop_assert_eq!(mode, 2);
            prop_assert_eq!(&map[&285], &hour.to_string());
            prop_assert_eq!(&map[&8459], &(hour + 1).to_string());
            prop_assert_eq!(&map[&6767], "2");
            prop_assert_eq!(&map[&8375], "0");
        } else {
            prop_assert!(!map.contains_key(&192));
            match grandstream_steady(&policy).0 {
                GrandstreamMode::Off => prop_assert_eq!(mode, 0),
                GrandstreamMode::Every { minutes } => {
                    prop_assert_eq!(mode, 1);
                    prop_assert!((60..=86400).contains(&minutes));
                    prop_assert_eq!(&map[&193], &minutes.to_string());
                }
                GrandstreamMode::Daily { start_hour, end_hour } => {
                    prop_assert_eq!(mode, 2);
                    prop_assert!(start_hour < end_hour && end_hour <= 23);
                    // Never wider than the operator's window: every hour of it is inside.
                    let w = if policy.weekly.enabled { policy.weekly.window } else { policy.flexible.window };
                    for h in start_hour..end_hour {
                        let inside = |m: u32| {
                            let (s, e) = (w.start.minutes(), w.end.minutes());
                            if w.crosses_midnight() { m >= s || m < e || s == e } else { m >= s && m < e }
                        };
                        prop_assert!(inside(h * 60) && inside(h * 60 + 59), "{} in {}", h, w);
                    }
                }
            }
        }
    }

    #[test]
    fn steady_state_hands_out_no_firmware(policy in policy(), mac in mac()) {
        let server: ServerUrl = "http://prov".parse().expect("URL");
        for family in PhoneFamily::ALL {
            let body = render(&phone(family, mac, &policy, None), &server).body;
            prop_assert!(!body.contains("P192") && !body.contains("firmware.url"), "{}", body);
        }
    }

    #[test]
    fn file_names_map_back_to_their_phone_and_format(mac in mac()) {
        for format in Format::ALL {
            let name = format.file_name(mac);
            prop_assert_eq!(parse_file_name(&name), Ok((mac, format)));
            let bare = mac.bare().to_string();
            let upper_hex = name.replace(&bare, &bare.to_uppercase());
            prop_assert_eq!(parse_file_name(&upper_hex), Ok((mac, format)));
        }
    }

    #[test]
    fn only_canonical_shapes_parse(name in prop_oneof!["\\PC{0,40}", "(cfg)?[0-9a-fA-F]{11,13}(\\.xml|\\.cfg)?"]) {
        if let Ok((mac, format)) = parse_file_name(&name) {
            prop_assert_eq!(format.file_name(mac), name.to_ascii_lowercase());
        }
    }
}
