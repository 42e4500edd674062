//! `phonefleet plan` as an operator runs it: the built binary on the shipped example fleet.

use std::path::Path;
use std::process::{Command, Output};

const NOW: &str = "2026-11-30T12:00:00Z";

fn example() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples/fleet.yaml")
        .display()
        .to_string()
}

fn plan(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_phonefleet"))
        .arg("plan")
        .args(args)
        .env_remove("RUST_BACKTRACE")
        .output()
        .expect("the phonefleet binary runs")
}

fn stdout(out: &Output) -> String {
    assert!(
        out.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

#[test]
fn table_lists_every_selected_site_and_the_fleet_completion() {
    let text = stdout(&plan(&["-f", &example(), "--now", NOW]));
    for site in ["berlin-shop", "new-york", "paris-hq", "sao-paulo", "sydney"] {
        assert!(text.contains(site), "{site} missing:\n{text}");
    }
    assert!(
        !text.contains("lab "),
        "the lab site is not selected:\n{text}"
    );
    assert!(
        text.contains("Fleet: 173 phones, 0 unplaced, completion 2026-12-"),
        "{text}"
    );
    // Every selected site has Grandstream phones: whole-hour slots, shown per site.
    assert!(
        text.contains("xstim+yealink+grandstream: whole-hour slots"),
        "{text}"
    );
    assert!(text.contains("canary"), "{text}");
}

#[test]
fn json_follows_the_contract_and_is_reproducible() {
    let out = stdout(&plan(&["-f", &example(), "--now", NOW, "-o", "json"]));
    assert_eq!(
        out,
        stdout(&plan(&["-f", &example(), "--now", NOW, "-o", "json"]))
    );
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["schedule"], "voice/night-rollout");
    assert_eq!(v["now"], NOW);
    assert!(v["completion"].as_str().unwrap().ends_with('Z'));
    // Only the Grandstream family's constraints: Sun-Thu, inactivity and minute windows
    // cannot be said with P194, and its sites plan whole hours.
    let warnings = v["warnings"].as_array().unwrap();
    assert!(!warnings.is_empty());
    for w in warnings {
        assert!(
            w.as_str().unwrap().starts_with("grandstream phones: "),
            "{w}"
        );
    }
    let sites = v["sites"].as_array().unwrap();
    let names: Vec<&str> = sites.iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        ["berlin-shop", "new-york", "paris-hq", "sao-paulo", "sydney"]
    );
    let sydney = &sites[4];
    assert_eq!(sydney["timeZone"], "Australia/Sydney");
    assert_eq!(
        sydney["families"],
        serde_json::json!(["yealink", "grandstream"])
    );
    assert_eq!(sydney["wholeHourSlots"], true);
    assert_eq!(sydney["cap"], 3);
    let slot = &sydney["slots"][0];
    for key in ["stage", "start", "end", "localStart", "localEnd", "phones"] {
        assert!(!slot[key].is_null(), "slot.{key} missing");
    }
    assert!(
        slot["localStart"].as_str().unwrap().ends_with("+11:00"),
        "{slot}"
    );
    let placed: usize = sites
        .iter()
        .flat_map(|s| s["slots"].as_array().unwrap())
        .map(|s| s["phones"].as_array().unwrap().len())
        .sum();
    assert_eq!(placed, 173);
}

#[test]
fn svg_is_a_timeline_with_a_row_per_site() {
    let svg = stdout(&plan(&["-f", &example(), "--now", NOW, "-o", "svg"]));
    assert!(svg.starts_with("<svg"), "{}", &svg[..80.min(svg.len())]);
    assert!(svg.trim_end().ends_with("</svg>"));
    for site in ["berlin-shop", "new-york", "paris-hq", "sao-paulo", "sydney"] {
        assert!(svg.contains(site), "{site} missing");
    }
    assert!(svg.contains("<rect"), "slots are drawn as bars");
}

#[test]
fn a_bad_mac_is_reported_with_document_field_and_value() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.yaml");
    let text = std::fs::read_to_string(example())
        .unwrap()
        .replacen("00:0b:82:", "00:0b:8g:", 1);
    std::fs::write(&path, text).unwrap();
    let out = plan(&["-f", path.to_str().unwrap(), "--now", NOW]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("(PhoneSite voice/paris-hq): spec.phones[0].mac: \"00:0b:8g:"),
        "{err}"
    );
    assert!(err.contains("not a MAC address"), "{err}");
}

#[test]
fn an_unknown_kind_is_reported_with_its_document_number() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kind.yaml");
    let mut text = std::fs::read_to_string(example()).unwrap();
    text.push_str(
        "---\napiVersion: phonefleet.io/v1alpha1\nkind: PhoneSit\nmetadata: {name: typo}\n",
    );
    std::fs::write(&path, text).unwrap();
    let err = String::from_utf8_lossy(&plan(&["-f", path.to_str().unwrap()]).stderr).into_owned();
    assert!(
        err.contains("document 8: unknown kind \"PhoneSit\""),
        "{err}"
    );
}

#[test]
fn an_unreadable_file_is_named() {
    let out = plan(&["-f", "/nonexistent/fleet.yaml"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/fleet.yaml"));
}

/// Every manifest the API server refuses (`tests/invalid/`, each naming the field it expects
/// in a `# expect:` line) is refused offline too, naming the same field. PhoneSite files get a
/// schedule put in front, since `plan` needs one.
#[test]
fn the_invalid_corpus_is_refused_naming_the_same_field() {
    const SCHEDULE: &str = "apiVersion: phonefleet.io/v1alpha1
kind: PhoneSchedule
metadata: {name: preview}
spec:
  provisioning: {weekly: {enabled: true, days: [Mon]}}
---
";
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/invalid");
    let tmp = tempfile::tempdir().unwrap();
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let Some(expect) = text.lines().find_map(|l| l.strip_prefix("# expect: ")) else {
            continue;
        };
        let text = if text.contains("kind: PhoneSchedule") {
            text.clone()
        } else {
            format!("{SCHEDULE}{text}")
        };
        let file = tmp.path().join(path.file_name().unwrap());
        std::fs::write(&file, &text).unwrap();
        let out = plan(&["-f", file.to_str().unwrap(), "--now", NOW]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{} was accepted", path.display());
        assert!(
            err.contains(expect.trim()),
            "{}: expected {expect:?} in {err}",
            path.display()
        );
        checked += 1;
    }
    assert!(checked >= 40, "only {checked} files in the corpus");
}
