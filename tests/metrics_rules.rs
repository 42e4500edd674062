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

/// GitHub's anchors of a Markdown file's headings: lower case, punctuation dropped, spaces
/// as hyphens.
fn anchors(markdown: &str) -> Vec<String> {
    markdown
        .lines()
        .filter(|l| l.starts_with('#'))
        .map(|l| {
            l.trim_start_matches('#')
                .trim()
                .to_lowercase()
                .chars()
                .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
                .map(|c| if c == ' ' { '-' } else { c })
                .collect()
        })
        .collect()
}

/// Every YAML file of the repository holding alerting rules (`groups[].rules[].alert`).
fn rules_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if path.is_dir() {
            if !name.starts_with('.') && name != "target" {
                rules_files(&path, out);
            }
        } else if name.ends_with(".yaml") || name.ends_with(".yml") {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            let has_alerts = serde_yaml_ng::from_str::<serde_yaml_ng::Value>(&text)
                .ok()
                .and_then(|v| v.get("groups")?.as_sequence().cloned())
                .is_some_and(|groups| {
                    groups.iter().any(|g| {
                        g.get("rules")
                            .and_then(|r| r.as_sequence())
                            .is_some_and(|r| r.iter().any(|r| r.get("alert").is_some()))
                    })
                });
            if has_alerts {
                out.push(path);
            }
        }
    }
}

#[test]
fn every_alert_links_a_runbook_section_that_exists() {
    let runbooks = std::fs::read_to_string(repo().join("docs/runbooks.md")).unwrap();
    let sections = anchors(&runbooks);
    let mut files = Vec::new();
    rules_files(repo(), &mut files);
    assert!(
        files
            .iter()
            .any(|f| f.ends_with("charts/phonefleet/rules/phonefleet-rules.yaml")),
        "{files:?}"
    );
    let mut checked = 0;
    for file in files {
        let rules: serde_yaml_ng::Value =
            serde_yaml_ng::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
        for group in rules["groups"].as_sequence().unwrap() {
            for rule in group["rules"].as_sequence().unwrap() {
                let Some(alert) = rule.get("alert").and_then(|a| a.as_str()) else {
                    continue;
                };
                let url = rule["annotations"]["runbook_url"]
                    .as_str()
                    .unwrap_or_else(|| panic!("{alert} ({}) has no runbook_url", file.display()));
                let anchor = url
                    .strip_prefix("docs/runbooks.md#")
                    .unwrap_or_else(|| panic!("{alert}: {url} is not docs/runbooks.md#<anchor>"));
                assert!(
                    sections.iter().any(|s| s == anchor),
                    "{alert}: docs/runbooks.md has no section #{anchor}"
                );
                checked += 1;
            }
        }
    }
    assert!(checked >= 7, "{checked} alerts");
}
