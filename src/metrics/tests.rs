use super::*;

use chrono::TimeZone;
use kube::runtime::{reflector, watcher};

use crate::api::{RolloutStatus, SiteSummary, StageSummary};

fn schedule(ns: &str, name: &str) -> PhoneSchedule {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "phonefleet.io/v1alpha1", "kind": "PhoneSchedule",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"rollout": {"stages": [{"name": "canary", "percent": 10}, {"name": "all", "percent": 100}]}}
    }))
    .expect("schedule")
}

fn site(name: &str, phones: u32, upgraded: u32, failed: u32, in_progress: u32) -> SiteSummary {
    SiteSummary {
        name: name.into(),
        phones,
        upgraded,
        failed,
        in_progress,
        window_open: true,
        next_window: Some(chrono::Utc.with_ymd_and_hms(2026, 1, 5, 1, 0, 0).unwrap()),
        completion: None,
    }
}

fn halted_status(sites: Vec<SiteSummary>) -> PhoneScheduleStatus {
    PhoneScheduleStatus {
        stages: vec![StageSummary {
            name: "canary".into(),
            phones: 3,
            in_progress: 0,
            upgraded: 2,
            failed: 1,
        }],
        phase: Some(phase::HALTED.into()),
        stage: Some("canary".into()),
        sites,
        rollout: Some(RolloutStatus {
            firmware_version: "2.0".into(),
            released_stage: 0,
            halted_models: vec!["GXP1625".into()],
            ..RolloutStatus::default()
        }),
        ..PhoneScheduleStatus::default()
    }
}

/// The sample lines of `text` whose series name and labels contain every fragment.
fn samples<'a>(text: &'a str, fragments: &[&str]) -> Vec<&'a str> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| fragments.iter().all(|f| l.contains(f)))
        .collect()
}

#[test]
fn a_status_becomes_per_site_state_counts_and_a_one_hot_phase() {
    let m = Metrics::new(None, true).unwrap();
    m.status(
        &schedule("voice", "fw"),
        &halted_status(vec![site("paris", 10, 4, 1, 2)]),
    );
    let text = m.render();
    assert_eq!(
        samples(
            &text,
            &["phonefleet_phones{", "site=\"paris\"", "state=\"pending\""]
        ),
        [
            "phonefleet_phones{namespace=\"voice\",schedule=\"fw\",site=\"paris\",state=\"pending\"} 3"
        ]
    );
    assert_eq!(
        samples(&text, &["phonefleet_rollout_phase{", "} 1"]),
        ["phonefleet_rollout_phase{namespace=\"voice\",phase=\"Halted\",schedule=\"fw\"} 1"]
    );
    assert_eq!(
        samples(&text, &["phonefleet_rollout_phase{"]).len(),
        PHASES.len()
    );
    assert_eq!(
        samples(
            &text,
            &["phonefleet_rollout_halted_model{", "model=\"GXP1625\""]
        )
        .len(),
        1
    );
    assert_eq!(
        samples(
            &text,
            &["phonefleet_site_next_window_timestamp_seconds{", "paris"]
        ),
        [
            "phonefleet_site_next_window_timestamp_seconds{namespace=\"voice\",schedule=\"fw\",site=\"paris\"} 1767574800"
        ]
    );
    assert_eq!(
        samples(
            &text,
            &["phonefleet_rollout_stage_phones{", "state=\"failed\""]
        ),
        [
            "phonefleet_rollout_stage_phones{namespace=\"voice\",schedule=\"fw\",stage=\"canary\",state=\"failed\"} 1"
        ]
    );
    // Unknown predicted completion: no series rather than a 1970 timestamp.
    assert!(samples(&text, &["predicted_completion"]).is_empty());
}

#[test]
fn a_site_no_longer_selected_and_a_resumed_model_lose_their_series() {
    let m = Metrics::new(None, true).unwrap();
    let s = schedule("voice", "fw");
    m.status(
        &s,
        &halted_status(vec![site("paris", 10, 4, 1, 2), site("oslo", 5, 0, 0, 0)]),
    );
    let mut status = halted_status(vec![site("paris", 10, 4, 1, 2)]);
    status.phase = Some(phase::PROGRESSING.into());
    status.rollout.as_mut().unwrap().halted_models.clear();
    status.rollout.as_mut().unwrap().released_stage = 1;
    status.stage = Some("all".into());
    status.stages[0].name = "renamed".into();
    m.status(&s, &status);
    let text = m.render();
    assert!(samples(&text, &["oslo"]).is_empty(), "{text}");
    assert!(samples(&text, &["stage=\"canary\""]).is_empty(), "{text}");
    assert!(samples(&text, &["phonefleet_rollout_halted_model{"]).is_empty());
    assert_eq!(
        samples(&text, &["phonefleet_rollout_stage{"]),
        ["phonefleet_rollout_stage{namespace=\"voice\",schedule=\"fw\",stage=\"all\"} 1"]
    );
}

#[test]
fn a_deleted_schedule_loses_every_series_at_the_next_scrape() {
    let m = Metrics::new(None, true).unwrap();
    let (store, mut writer) = reflector::store::<PhoneSchedule>();
    let keep = schedule("voice", "keep");
    let gone = schedule("voice", "gone");
    writer.apply_watcher_event(&watcher::Event::Init);
    writer.apply_watcher_event(&watcher::Event::InitApply(keep.clone()));
    writer.apply_watcher_event(&watcher::Event::InitApply(gone.clone()));
    writer.apply_watcher_event(&watcher::Event::InitDone);
    let (marker, synced) = crate::controller::synced::channel();
    marker.on_event::<PhoneSchedule>()(&Ok(watcher::Event::InitDone));
    m.watching(store, synced);
    for s in [&keep, &gone] {
        m.reconciled(s, Duration::from_millis(3), Some("Conflict"));
        m.status(s, &halted_status(vec![site("paris", 10, 4, 1, 2)]));
    }
    assert!(!samples(&m.render(), &["schedule=\"gone\""]).is_empty());
    writer.apply_watcher_event(&watcher::Event::Delete(gone));
    let text = m.render();
    assert!(samples(&text, &["schedule=\"gone\""]).is_empty(), "{text}");
    assert!(!samples(&text, &["schedule=\"keep\""]).is_empty());
}

#[test]
fn reconcile_errors_start_at_zero_for_every_reason_and_count_by_reason() {
    let m = Metrics::new(None, true).unwrap();
    let s = schedule("voice", "fw");
    m.reconciled(&s, Duration::from_millis(3), None);
    m.reconciled(&s, Duration::from_millis(3), Some("Conflict"));
    let text = m.render();
    assert_eq!(
        samples(&text, &["phonefleet_reconcile_errors_total{"]).len(),
        RECONCILE_ERROR_REASONS.len()
    );
    assert_eq!(
        samples(&text, &["phonefleet_reconcile_errors_total{", "Conflict"]),
        [
            "phonefleet_reconcile_errors_total{namespace=\"voice\",reason=\"Conflict\",schedule=\"fw\"} 1"
        ]
    );
    assert_eq!(
        samples(&text, &["phonefleet_reconciles_total{"]),
        ["phonefleet_reconciles_total{namespace=\"voice\",schedule=\"fw\"} 2"]
    );
    assert_eq!(
        samples(&text, &["phonefleet_reconcile_duration_seconds_count"]),
        ["phonefleet_reconcile_duration_seconds_count 2"]
    );
}

#[test]
fn every_controller_error_reason_is_a_listed_label() {
    use crate::controller::Error;
    for e in [
        Error::CrdsMissing("x".into()),
        Error::LostLeadership,
        Error::BadIndex {
            name: "x".into(),
            source: serde_json::from_str::<u8>("x").unwrap_err(),
        },
    ] {
        assert!(
            RECONCILE_ERROR_REASONS.contains(&e.reason()),
            "{}",
            e.reason()
        );
    }
}

#[test]
fn server_counters_are_copied_per_site_at_scrape_time() {
    let stats = ServerStats::new();
    let m = Metrics::new(Some(stats.clone()), true).unwrap();
    let paris = stats.site("paris");
    paris.cap.store(3, Ordering::Relaxed);
    paris.enter();
    paris.enter();
    paris.leave();
    paris.bytes_sent.fetch_add(4096, Ordering::Relaxed);
    paris.refused_busy.fetch_add(7, Ordering::Relaxed);
    stats.count(Outcome::Busy);
    let text = m.render();
    for (fragments, want) in [
        (&["phonefleet_downloads_in_flight{", "paris"][..], " 1"),
        (&["phonefleet_downloads_in_flight_peak{", "paris"][..], " 2"),
        (&["phonefleet_download_cap{", "paris"][..], " 3"),
        (
            &["phonefleet_firmware_sent_bytes_total{", "paris"][..],
            " 4096",
        ),
        (
            &["phonefleet_downloads_refused_total{", "reason=\"busy\""][..],
            " 7",
        ),
        (
            &["phonefleet_provisioning_requests_total{", "result=\"busy\""][..],
            " 1",
        ),
    ] {
        let got = samples(&text, fragments);
        assert!(
            got.len() == 1 && got[0].ends_with(want),
            "{fragments:?}: {got:?}"
        );
    }
    // Counters keep counting across scrapes without double counting.
    paris.bytes_sent.fetch_add(4, Ordering::Relaxed);
    let text = m.render();
    assert!(samples(&text, &["phonefleet_firmware_sent_bytes_total{"])[0].ends_with(" 4100"));
    // Every outcome has a series from the start.
    assert_eq!(
        samples(&text, &["phonefleet_provisioning_requests_total{"]).len(),
        Outcome::ALL.len()
    );
}

/// Every family of a scrape, registry or hand-written: `phonefleet_` names, `_total` for and
/// only for counters, one `# TYPE` line per family and its samples right after it.
#[test]
fn every_name_follows_the_conventions() {
    let stats = ServerStats::new();
    let m = Metrics::new(Some(stats.clone()), true).unwrap();
    m.reconciled(&schedule("a", "b"), Duration::from_millis(1), None);
    let mut status = halted_status(vec![site("paris", 10, 4, 1, 2)]);
    status.sites[0].completion = status.sites[0].next_window;
    m.status(&schedule("a", "b"), &status);
    stats.site("paris").enter();
    let text = m.render();
    let mut typed = Vec::new();
    for line in text.lines() {
        if let Some(t) = line.strip_prefix("# TYPE ") {
            let (name, kind) = t.split_once(' ').unwrap();
            assert!(name.starts_with("phonefleet_"), "{name}");
            let counter = kind == "counter";
            assert_eq!(counter, name.ends_with("_total"), "{name}");
            assert!(!name.contains("seconds_total") || counter, "{name}");
            assert!(!typed.contains(&name), "{name} typed twice");
            typed.push(name);
        } else if !line.starts_with('#') {
            let family = typed.last().expect("a sample before any # TYPE");
            let name = line.split(['{', ' ']).next().unwrap();
            let base = [
                family.to_string(),
                format!("{family}_bucket"),
                format!("{family}_sum"),
                format!("{family}_count"),
            ];
            assert!(base.iter().any(|b| b == name), "{name} under {family}");
        }
    }
    for f in CONTROLLER_SITE_FAMILIES.iter().chain(&SERVER_SITE_FAMILIES) {
        assert!(
            typed.contains(&f.name),
            "{} missing from a full scrape",
            f.name
        );
    }
}

#[test]
fn ready_needs_the_server_index_and_a_known_leadership() {
    let m = Metrics::new(Some(ServerStats::new()), true).unwrap();
    let get = |path: &str| {
        let req = Request::builder().uri(path).body(()).unwrap();
        endpoint::respond(&m, &req).status().as_u16()
    };
    assert_eq!(get("/healthz"), 200);
    assert_eq!(get("/readyz"), 503);
    m.set_server_ready(true);
    assert_eq!(get("/readyz"), 503, "leadership still unknown");
    m.leading(false);
    assert_eq!(get("/readyz"), 200, "a standby serving phones is ready");
    m.leading(true);
    assert_eq!(get("/readyz"), 503, "a leader without synced caches is not");
    assert_eq!(get("/metrics"), 200);
    assert_eq!(get("/nope"), 404);
}

use hyper::Request;
