//! Golden files: the exact bytes served for every format, in steady state and inside a rollout
//! slot. A change to a phone's file is a change to the fleet's behaviour, so it must show up in
//! review as a diff of `tests/golden/`. Regenerate with `UPDATE_GOLDEN=1 cargo test --test
//! render_golden`.

use std::num::NonZeroU32;
use std::path::PathBuf;

use chrono::Weekday;
use phonefleet::core::{
    CheckWindow, DaySet, FlexiblePolicy, LocalWindow, Mac, ProvisioningPolicy, WeeklyPolicy,
};
use phonefleet::render::{FirmwarePath, Format, PhoneConfig, RolloutSlot, ServerUrl, render};

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

struct Case {
    name: &'static str,
    policy: ProvisioningPolicy,
    server: &'static str,
    slot: Option<RolloutSlot>,
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "steady",
            policy: office_policy(),
            server: "http://prov.voice.example:8080",
            slot: None,
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
                    window: window("01:10", "01:40"),
                },
            }),
        },
        Case {
            name: "steady-flexible",
            policy: shop_policy(),
            server: "https://prov.voice.example/phones/",
            slot: None,
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
        for format in Format::ALL {
            let phone = PhoneConfig {
                mac: mac(),
                model: "GXP2170",
                provisioning: &case.policy,
                slot: case.slot.as_ref(),
            };
            let file = render(&phone, &server, format);
            let path = root.join(case.name).join(&file.name);
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
        for format in Format::ALL {
            let phone = PhoneConfig {
                mac: mac(),
                model: "GXP2170",
                provisioning: &case.policy,
                slot: case.slot.as_ref(),
            };
            assert_eq!(
                render(&phone, &server, format),
                render(&phone, &server, format)
            );
        }
    }
}
