//! The alert rules file is valid (`promtool check rules`) and its unit tests pass
//! (`promtool test rules tests/prometheus/*.test.yaml`). promtool comes with the `prometheus`
//! Debian package, which `.ci/run` installs; without it these tests fail, saying so.

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn promtool(args: &[&str], dir: &Path) -> String {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run promtool ({e}): install the `prometheus` Debian package (.ci/run does)"
            )
        });
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {args:?} failed:\n{text}");
    text
}

#[test]
fn the_rules_file_is_valid_and_has_every_alert_of_the_issue() {
    let rules = repo().join("charts/phonefleet/rules/phonefleet-rules.yaml");
    let out = promtool(&["check", "rules", rules.to_str().unwrap()], repo());
    assert!(out.contains("SUCCESS"), "{out}");
    let text = std::fs::read_to_string(&rules).unwrap();
    for alert in [
        "PhonefleetRolloutHalted",
        "PhonefleetRolloutStalled",
        "PhonefleetSiteOverCap",
        "PhonefleetDown",
        "PhonefleetTargetDown",
        "PhonefleetNotLeading",
        "PhonefleetReconcileErrors",
    ] {
        assert!(
            text.contains(&format!("alert: {alert}\n")),
            "{alert} missing"
        );
    }
}

#[test]
fn the_rule_unit_tests_pass() {
    let dir = repo().join("tests/prometheus");
    let tests: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".test.yaml"))
        .collect();
    assert!(!tests.is_empty(), "no rule tests in {}", dir.display());
    for test in tests {
        let name = test.file_name().unwrap().to_str().unwrap().to_owned();
        let out = promtool(&["test", "rules", &name], &dir);
        assert!(out.contains("SUCCESS"), "{out}");
    }
}
