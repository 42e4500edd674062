//! Nothing the operator writes makes `phonefleet plan` panic: the example fleet with one value
//! replaced by something random either plans or is refused with an error.

use chrono::{DateTime, Utc};
use phonefleet::manifest;
use phonefleet::plan_report::{to_json, to_svg, to_table};
use proptest::prelude::*;

const EXAMPLE: &str = include_str!("../examples/fleet.yaml");

/// Values an operator might mistype, and some hostile ones.
fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        Just("0".to_owned()),
        Just("-1".to_owned()),
        Just("4294967296".to_owned()),
        Just("18446744073709551616".to_owned()),
        Just("\"24:00\"".to_owned()),
        Just("\"23:59\"".to_owned()),
        Just("\"00:00\"".to_owned()),
        Just("[]".to_owned()),
        Just("{}".to_owned()),
        Just("null".to_owned()),
        Just("\"9999-12-31T23:59:59Z\"".to_owned()),
        Just("\"Etc/GMT+12\"".to_owned()),
        Just("\"Pacific/Kiritimati\"".to_owned()),
        Just("1000000".to_owned()),
        "[a-zA-Z0-9:/ _.-]{0,16}".prop_map(|s| format!("{s:?}")),
        (0u64..5000).prop_map(|n| n.to_string()),
    ]
}

proptest! {
    // 200 cases by default; `PROPTEST_CASES=N` runs more.
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(200),
        ..ProptestConfig::default()
    })]

    #[test]
    fn a_mangled_manifest_plans_or_is_refused_without_panicking(
        line in 0usize..330,
        v in value(),
        hours in 0i64..24 * 400,
    ) {
        let lines: Vec<&str> = EXAMPLE.lines().collect();
        let line = line % lines.len();
        let mut mangled: Vec<String> = lines.iter().map(|l| (*l).to_owned()).collect();
        // Replace the value after the first `key:` on the line, keeping the YAML shape.
        if let Some(i) = mangled[line].find(": ") {
            let key = mangled[line][..i + 2].to_owned();
            mangled[line] = format!("{key}{v}");
        }
        let text = mangled.join("\n");
        let now: DateTime<Utc> = "2026-11-30T12:00:00Z".parse().unwrap();
        let now = now + chrono::Duration::hours(hours);
        if let Ok(fleet) = manifest::parse(&text).and_then(|m| m.fleet()) {
            let plan = phonefleet::core::plan(&fleet, now, &phonefleet::core::MacSet::default());
            to_table(&plan);
            to_json(&plan).unwrap();
            to_svg(&plan).unwrap();
        }
    }
}
