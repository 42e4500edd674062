//! Golden files: the exact bytes served to every phone family, in steady state and inside a
//! rollout slot, under `tests/golden/<family>/`. A change to a phone's file is a change to the
//! fleet's behaviour, so it must show up in review as a diff of `tests/golden/`. Regenerate
//! with `UPDATE_GOLDEN=1 cargo test --test render_golden`. Also: every key a renderer writes
//! is documented in docs/phones.md, and no family ever gets another family's codes.

use std::num::NonZeroU32;
use std::path::PathBuf;

use chrono::Weekday;
use phonefleet::core::{
    CheckWindow, DaySet, FlexiblePolicy, LocalWindow, Mac, PhoneFamily, ProvisioningPolicy,
    WeeklyPolicy,
};
use phonefleet::render::{
    FirmwarePath, GRANDSTREAM_KEYS, PhoneConfig, RolloutSlot, ServerUrl, XSTIM_KEYS, YEALINK_KEYS,
    render,
};

fn window(start: &str, end: &str) -> LocalWindow {
    LocalWindow {
        start: start.parse().expect("HH:MM"),
        end: end.parse().expect("HH:MM"),
    }
}

fn mac() -> Mac {
    "00:0B:82:12:34:56".parse().expect("valid MAC")
}

/// The seed's recommended settings: power-on checks, weekly 00:00–05:00 on working days,
/// 30 minutes of inactivity, no repeated or flexible checks.
fn office_policy() -> ProvisioningPolicy {
    ProvisioningPolicy {
        power_on: true,
        repeatedly: None,
        weekly: WeeklyPolicy {
            enabled: true,
            interval_weeks: 1,
            inactivity_minutes: 30,
            window: window("00:00", "05:00"),
            days: [
                Weekday::Mon,
                Weekday::Tue,
                Weekday::Wed,
                Weekday::Thu,
                Weekday::Fri,
            ]
            .into_iter()
            .collect(),
        },
        flexible: FlexiblePolicy {
            enabled: false,
            interval_days: 1,
            window: window("00:00", "00:00"),
        },
    }
}

/// A shop that checks every 3 days between 22:00 and 02:00 and every 6 hours, weekly off.
fn shop_policy() -> ProvisioningPolicy {
    ProvisioningPolicy {
        power_on: false,
        repeatedly: NonZeroU32::new(360),
        weekly: WeeklyPolicy {
            enabled: false,
            interval_weeks: 0,
            inactivity_minutes: 0,
            window: window("00:00", "05:00"),
            days: DaySet::default(),
        },
        flexible: FlexiblePolicy {
            enabled: true,
            interval_days: 3,
            window: window("22:00", "02:00"),
        },
    }
}

/// Every day 01:00–05:00, every week, no inactivity: a policy Grandstream can say exactly.
fn nightly_policy() -> ProvisioningPolicy {
    let mut p = office_policy();
    p.weekly.interval_weeks = 0;
    p.weekly.inactivity_minutes = 0;
    p.weekly.window = window("01:00", "05:00");
    p.weekly.days = DaySet::ALL;
    p
}

struct Case {
    name: &'static str,
    policy: ProvisioningPolicy,
    server: &'static str,
    slot: Option<RolloutSlot>,
    /// Minute-level slots are planned only for the families that can be told minutes.
    minute_slot: bool,
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "steady",
            policy: office_policy(),
            server: "http://prov.voice.example:8080",
            slot: None,
            minute_slot: false,
        },
        Case {
            name: "steady-nightly",
            policy: nightly_policy(),
            server: "http://prov.voice.example:8080",
            slot: None,
            minute_slot: false,
        },
        Case {
            name: "slot",
            policy: office_policy(),
            server: "http://prov.voice.example:8080",
            slot: Some(RolloutSlot {
                firmware_version: "1.0.11.23".into(),
                firmware: FirmwarePath::new("paris-hq", "gxp2170fw.bin").expect("valid path"),
                window: CheckWindow {
                    weekday: Weekday::Tue,
                    window: window("01:00", "02:00"),
                },
            }),
            minute_slot: false,
        },
        Case {
            name: "slot-minutes",
            policy: office_policy(),
            server: "http://prov.voice.example:8080",
            slot: Some(RolloutSlot {
                firmware_version: "1.0.11.23".into(),
                firmware: FirmwarePath::new("paris-hq", "gxp2170fw.bin").expect("valid path"),
                window: CheckWindow {
                    weekday: Weekday::Tue,
                    window: window("01:10", "01:40"),
                },
            }),
            minute_slot: true,
        },
        Case {
            name: "steady-flexible",
            policy: shop_policy(),
            server: "https://prov.voice.example/phones/",
            slot: None,
            minute_slot: false,
        },
        Case {
            name: "slot-across-midnight",
            policy: shop_policy(),
            server: "https://prov.voice.example/phones/",
            slot: Some(RolloutSlot {
                firmware_version: "86.85.0.20".into(),
                firmware: FirmwarePath::new("shop-14", "T46U-86.85.0.20.rom").expect("valid path"),
                window: CheckWindow {
                    weekday: Weekday::Sat,
                    window: window("23:50", "00:05"),
                },
            }),
            minute_slot: true,
        },
    ]
}

#[test]
fn rendered_files_match_the_golden_files() {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some_and(|v| v == "1");
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let mut stale = Vec::new();
    for case in cases() {
        let server: ServerUrl = case.server.parse().expect("valid server URL");
        for family in families_for(&case) {
            let phone = phone(family, &case);
            let file = render(&phone, &server);
            let path = root.join(family.name()).join(case.name).join(&file.name);
            if update {
                std::fs::create_dir_all(path.parent().expect("has a parent")).expect("mkdir");
                std::fs::write(&path, &file.body).expect("write golden file");
                continue;
            }
            let golden = std::fs::read_to_string(&path).unwrap_or_default();
            if golden != file.body {
                stale.push(format!(
                    "{}:\n--- golden\n{golden}\n--- rendered\n{}",
                    path.display(),
                    file.body
                ));
            }
        }
    }
    assert!(
        stale.is_empty(),
        "rendered files differ from tests/golden (if the change is intended, rerun with \
         UPDATE_GOLDEN=1 and review the diff):\n{}",
        stale.join("\n")
    );
}

#[test]
fn rendering_is_deterministic() {
    let server: ServerUrl = "http://prov".parse().expect("valid server URL");
    for case in cases() {
        for family in families_for(&case) {
            let phone = phone(family, &case);
            assert_eq!(render(&phone, &server), render(&phone, &server));
        }
    }
}

fn families_for(case: &Case) -> Vec<PhoneFamily> {
    PhoneFamily::ALL
        .into_iter()
        .filter(|f| !case.minute_slot || f.capabilities().minute_windows)
        .collect()
}

fn phone(family: PhoneFamily, case: &Case) -> PhoneConfig<'_> {
    PhoneConfig {
        mac: mac(),
        model: match family {
            PhoneFamily::Xstim => "XSTIM-4",
            PhoneFamily::Yealink => "SIP-T46U",
            PhoneFamily::Grandstream => "GXP2170",
        },
        family,
        provisioning: &case.policy,
        slot: case.slot.as_ref(),
    }
}

/// The keys of a rendered file: `Pnnn` of `<Pnnn>` elements, or `key` of `key = value` lines.
fn keys_of(body: &str) -> Vec<String> {
    let mut keys = Vec::new();
    for line in body.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("<P")
            && let Some(end) = rest.find('>')
        {
            keys.push(format!("P{}", &rest[..end]));
        } else if !line.starts_with('#')
            && let Some((key, _)) = line.split_once(" = ")
        {
            keys.push(key.to_owned());
        }
    }
    keys
}

#[test]
fn every_key_written_is_one_its_family_declares() {
    let server: ServerUrl = "https://prov".parse().expect("valid server URL");
    for case in cases() {
        for family in families_for(&case) {
            let declared: &[&str] = match family {
                PhoneFamily::Xstim => &XSTIM_KEYS,
                PhoneFamily::Yealink => &YEALINK_KEYS,
                PhoneFamily::Grandstream => &GRANDSTREAM_KEYS,
            };
            for key in keys_of(&render(&phone(family, &case), &server).body) {
                assert!(
                    declared.contains(&key.as_str()),
                    "{family} ({}) writes {key}, not in its key table",
                    case.name
                );
            }
        }
    }
}

#[test]
fn every_key_a_renderer_can_write_is_documented_in_docs_phones_md() {
    let doc =
        std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs/phones.md"))
            .expect("docs/phones.md");
    for key in XSTIM_KEYS
        .iter()
        .chain(&YEALINK_KEYS)
        .chain(&GRANDSTREAM_KEYS)
    {
        // A table row that starts with the key in backquotes.
        assert!(
            doc.contains(&format!("| `{key}` |")),
            "{key} is written by a renderer but has no row in docs/phones.md"
        );
    }
}

#[test]
fn grandstream_files_never_carry_xstim_codes_and_always_say_how_to_upgrade() {
    let server: ServerUrl = "https://prov".parse().expect("valid server URL");
    for case in cases() {
        if case.minute_slot {
            continue;
        }
        let body = render(&phone(PhoneFamily::Grandstream, &case), &server).body;
        assert!(!body.contains("<P250"), "{}: {body}", case.name);
        assert!(body.contains("<P194>"), "{}: {body}", case.name);
        if case.slot.is_some() {
            for want in ["<P6767>2</P6767>", "<P8375>0</P8375>", "<P238>0</P238>"] {
                assert!(body.contains(want), "{}: {want} in {body}", case.name);
            }
            assert!(!body.contains("<P212>"), "{}: {body}", case.name);
        }
    }
}

#[test]
fn xstim_files_carry_the_design_pages_pcodes() {
    let server: ServerUrl = "https://prov".parse().expect("valid server URL");
    let body = render(&phone(PhoneFamily::Xstim, &cases()[0]), &server).body;
    for code in 25020..=25041 {
        assert!(body.contains(&format!("<P{code}>")), "P{code}: {body}");
    }
}
