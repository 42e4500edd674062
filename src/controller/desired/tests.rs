//! The controller's decisions, one behaviour per test, on inline YAML fixtures.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::*;
use crate::children::PackedSlot;
use crate::children::{self, PhoneProgress, PhoneState};
use crate::core::MacMap;
use serde::Deserialize;

const SCHEDULE: &str = r#"
apiVersion: phonefleet.io/v1alpha1
kind: PhoneSchedule
metadata: {name: fw, namespace: voice, uid: uid-fw, generation: 3}
spec:
  siteSelector: {matchLabels: {region: eu}}
  provisioning:
    weekly: {enabled: true, window: {start: "01:00", end: "05:00"}, days: [Sun, Mon, Tue, Wed, Thu, Fri, Sat]}
  firmware: {version: "2.0", file: fw-2.0.bin, models: [GXP2170, SIP-T46U]}
  rollout:
    downloadMinutes: 20
    checkSpreadMinutes: 10
    stages: [{name: canary, percent: 10}, {name: all, percent: 100}]
    successThresholdPercent: 90
    failureThresholdPercent: 20
"#;

fn schedule(yaml: &str) -> PhoneSchedule {
    serde_yaml_ng::from_str(yaml).expect("fixture schedule")
}

fn site(name: &str, zone: &str, cap: u32, phones: u32, models: &[&str]) -> PhoneSite {
    let phones: Vec<String> = (0..phones)
        .map(|i| {
            format!(
                "{{mac: \"00:0b:82:{:02x}:{:02x}:{:02x}\", model: {}}}",
                name.len(),
                i / 256,
                i % 256,
                models[i as usize % models.len()]
            )
        })
        .collect();
    serde_yaml_ng::from_str(&format!(
        "apiVersion: phonefleet.io/v1alpha1\nkind: PhoneSite\nmetadata: {{name: {name}, namespace: voice, labels: {{region: eu}}}}\nspec: {{timeZone: {zone}, maxConcurrentDownloads: {cap}, phones: [{}]}}",
        phones.join(", ")
    ))
    .expect("fixture site")
}

fn at(s: &str) -> DateTime<Utc> {
    s.parse().expect("fixture time")
}

/// A world to decide in, with defaults the tests override.
struct World {
    schedule: PhoneSchedule,
    others: Vec<Arc<PhoneSchedule>>,
    sites: Vec<Arc<PhoneSite>>,
    progress: MacMap<PhoneProgress>,
    previous: DecidedSlots,
    existing: BTreeMap<String, String>,
    claimed_elsewhere: MacMap<Vec<String>>,
    now: DateTime<Utc>,
    propagation: Duration,
    /// Sites validated by earlier decisions, as the controller remembers them (`None`:
    /// validated in the fleet's model table directly, as `phonefleet plan` does).
    checked: Option<selection::CheckedSites>,
    /// Sites cut by earlier decisions, as the controller remembers them (`None`: every site
    /// cut each time).
    cuts: Option<CutMemo>,
}

impl World {
    fn new() -> Self {
        World {
            schedule: schedule(SCHEDULE),
            others: Vec::new(),
            sites: vec![Arc::new(site(
                "paris",
                "Europe/Paris",
                2,
                20,
                &["GXP2170", "SIP-T46U"],
            ))],
            progress: MacMap::default(),
            previous: DecidedSlots::default(),
            existing: BTreeMap::new(),
            claimed_elsewhere: MacMap::default(),
            now: at("2026-12-01T12:00:00Z"),
            propagation: Duration::zero(),
            checked: Some(selection::CheckedSites::default()),
            cuts: Some(CutMemo::default()),
        }
    }

    fn decide(&self) -> Desired {
        let mut schedules = self.others.clone();
        schedules.push(Arc::new(self.schedule.clone()));
        let url: ServerUrl = "http://prov.example:8080".parse().expect("url");
        compute(&Inputs {
            schedule: &self.schedule,
            schedules: &schedules,
            sites: &self.sites,
            checked_sites: self.checked.as_ref(),
            cut_memo: self.cuts.as_ref(),
            claimed_elsewhere: &self.claimed_elsewhere,
            progress: &self.progress,
            previous_slots: &self.previous,
            existing_shards: &self.existing,
            server_url: &url,
            now: self.now,
            propagation: self.propagation,
        })
    }

    /// Feeds a decision back as the cluster's state, as the next reconcile would see it.
    fn settle(&mut self, desired: &Desired) {
        self.existing = desired
            .shards
            .iter()
            .flatten()
            .map(|s| (s.name.clone(), s.hash.clone()))
            .collect();
        self.schedule.status = Some(desired.status.clone());
        self.previous = desired.slots.clone();
    }

    fn report(&mut self, mac: Mac, state: PhoneState) {
        self.progress.insert(
            mac,
            PhoneProgress {
                state,
                version: None,
                target: "2.0".into(),
                since: self.now,
            },
        );
    }
}

fn condition<'a>(status: &'a PhoneScheduleStatus, type_: &str) -> &'a Condition {
    status
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .expect("condition present")
}

/// The shards' ConfigMaps as the controller writes them.
fn shard_maps(desired: &Desired) -> Vec<k8s_openapi::api::core::v1::ConfigMap> {
    desired
        .shards
        .iter()
        .flatten()
        .map(|s| {
            let mut cm = k8s_openapi::api::core::v1::ConfigMap::default();
            cm.metadata.name = Some(s.name.clone());
            cm.metadata.namespace = Some("voice".into());
            cm.data = Some(desired.shard_data(s));
            cm
        })
        .collect()
}

/// Every file the provisioning server serves from the decision, rendered on request.
fn files(desired: &Desired) -> BTreeMap<String, String> {
    crate::server::index::Index::from_maps(&shard_maps(desired))
        .all_files()
        .into_iter()
        .map(|(name, f)| (name, String::from_utf8(f.body.to_vec()).expect("utf-8")))
        .collect()
}

/// The phones whose slot is released (not held for a later stage), in MAC order.
fn released(d: &Desired) -> Vec<Mac> {
    let mut macs: Vec<Mac> = d
        .slots
        .iter()
        .filter(|(_, s)| !s.held())
        .map(|(m, _)| m)
        .collect();
    macs.sort();
    macs
}

#[test]
fn only_the_released_canary_may_download_and_every_phone_gets_a_file() {
    let d = World::new().decide();
    let files = files(&d);
    assert_eq!(files.len(), 20, "one file per phone");
    let released: Vec<_> = d.slots.values().filter(|s| !s.held()).collect();
    assert_eq!(released.len(), 2, "10 % of 20 phones form the canary");
    assert!(released.iter().all(|s| s.stage() == 0));
    assert_eq!(d.slots.len(), 20, "later stages are announced, held");
    assert_eq!(d.status.phase.as_deref(), Some(phase::PROGRESSING));
    assert_eq!(d.status.stage.as_deref(), Some("canary"));
    assert_eq!(condition(&d.status, condition::READY).status, "True");
    let with_firmware = files
        .iter()
        .filter(|(_, body)| body.contains("firmware/paris"))
        .count();
    assert_eq!(
        with_firmware, 20,
        "slotted phones are pointed at the firmware (held ones are refused until released)"
    );
}

#[test]
fn a_second_decision_on_the_written_state_changes_nothing() {
    let mut world = World::new();
    let first = world.decide();
    world.settle(&first);
    let second = world.decide();
    assert!(
        second.shards.iter().flatten().all(|s| !s.changed),
        "no shard to write"
    );
    assert!(second.stale.is_empty());
    assert_eq!(second.status, first.status, "status equal: no status write");
    assert!(second.events.is_empty());
}

#[test]
fn slots_never_put_more_than_the_cap_of_a_site_at_once() {
    let mut world = World::new();
    world.sites = vec![Arc::new(site(
        "paris",
        "Europe/Paris",
        3,
        200,
        &["GXP2170"],
    ))];
    let mut s = world.schedule.clone();
    s.spec.rollout.stages.clear();
    world.schedule = s;
    let d = world.decide();
    assert_eq!(d.slots.len(), 200);
    let mut starts: BTreeMap<DateTime<Utc>, usize> = BTreeMap::new();
    for slot in d.slots.values() {
        *starts.entry(slot.start()).or_default() += 1;
    }
    assert!(starts.values().all(|n| *n <= 3), "{starts:?}");
}

#[test]
fn a_phone_inside_its_slot_keeps_it_when_others_finish() {
    let mut world = World::new();
    let first = world.decide();
    world.settle(&first);
    let mac = released(&first)[0];
    let slot = first.slots.get(&mac).expect("a slot");
    let other = released(&first)[1];
    world.now = slot.start() + Duration::minutes(3);
    world.report(other, PhoneState::Upgraded);
    let second = world.decide();
    assert_eq!(second.slots.get(&mac), Some(slot));
}

#[test]
fn a_phone_that_missed_its_slot_gets_a_later_one() {
    let mut world = World::new();
    let first = world.decide();
    world.settle(&first);
    let mac = released(&first)[0];
    let slot = first.slots.get(&mac).expect("a slot");
    world.now = slot.end() + Duration::minutes(1);
    let second = world.decide();
    let again = second.slots.get(&mac).expect("re-planned");
    assert!(again.start() >= world.now, "{again:?} after {}", world.now);
}

#[test]
fn canary_success_releases_the_next_stage_with_an_event() {
    let mut world = World::new();
    let first = world.decide();
    world.settle(&first);
    for mac in released(&first) {
        world.report(mac, PhoneState::Upgraded);
    }
    let second = world.decide();
    assert_eq!(second.status.stage.as_deref(), Some("all"));
    assert_eq!(
        second.status.rollout.as_ref().map(|r| r.released_stage),
        Some(1)
    );
    assert!(
        second
            .events
            .iter()
            .any(|e| e.reason == reason::STAGE_RELEASED)
    );
    assert_eq!(
        released(&second).len(),
        18,
        "the 18 remaining phones are released"
    );
    assert_eq!(second.status.counts.as_ref().map(|c| c.upgraded), Some(2));
}

#[test]
fn a_failing_model_halts_with_a_warning_and_gets_no_slots() {
    let mut world = World::new();
    let first = world.decide();
    world.settle(&first);
    for mac in released(&first) {
        world.report(mac, PhoneState::Failed);
    }
    let second = world.decide();
    assert_eq!(second.status.phase.as_deref(), Some(phase::HALTED));
    assert_eq!(
        condition(&second.status, condition::DEGRADED).reason,
        reason::ROLLOUT_HALTED
    );
    assert!(
        second
            .events
            .iter()
            .any(|e| e.warning && e.reason == reason::ROLLOUT_HALTED)
    );
    let halted = &second
        .status
        .rollout
        .as_ref()
        .expect("rollout")
        .halted_models;
    assert!(!halted.is_empty());
    let site = &world.sites[0];
    for phone in &site.spec.phones {
        let mac: Mac = phone.mac.parse().expect("mac");
        if halted.iter().any(|m| *m == phone.model) {
            assert!(
                !second.slots.contains_key(&mac),
                "{} of a halted model",
                phone.mac
            );
        }
    }
}

#[test]
fn the_older_schedule_keeps_a_contested_site() {
    let mut world = World::new();
    let mut older = schedule(SCHEDULE);
    older.metadata.name = Some("older".into());
    older.metadata.uid = Some("uid-older".into());
    older.metadata.creation_timestamp = Some(Time(to_timestamp(at("2026-01-01T00:00:00Z"))));
    world.schedule.metadata.creation_timestamp =
        Some(Time(to_timestamp(at("2026-06-01T00:00:00Z"))));
    world.others.push(Arc::new(older));
    let d = world.decide();
    let degraded = condition(&d.status, condition::DEGRADED);
    assert_eq!(degraded.reason, reason::SITE_CONFLICT);
    assert!(degraded.message.contains("older"), "{}", degraded.message);
    assert!(
        d.shards.as_ref().is_some_and(Vec::is_empty),
        "no files for a site it lost"
    );
    assert!(d.events.iter().any(|e| e.reason == reason::SITE_CONFLICT));
}

/// Issue #12 item 3: a phone another namespace claims too is served to neither; the schedule
/// says so in its Degraded condition and once in an event, and stops saying so when it ends.
#[test]
fn a_phone_another_namespace_claims_too_is_a_condition_and_one_event() {
    let mut world = World::new();
    let contested: Mac = "00:0b:82:05:00:03".parse().unwrap();
    world
        .claimed_elsewhere
        .insert(contested, vec!["tenant-b".into()]);
    let d = world.decide();
    let degraded = condition(&d.status, condition::DEGRADED);
    assert_eq!(degraded.status, "True");
    assert_eq!(degraded.reason, reason::PHONE_CONFLICT);
    assert!(
        degraded.message.contains("tenant-b") && degraded.message.contains(&contested.to_string()),
        "{}",
        degraded.message
    );
    let events: Vec<_> = d
        .events
        .iter()
        .filter(|e| e.reason == reason::PHONE_CONFLICT)
        .collect();
    assert_eq!(events.len(), 1);
    assert!(events[0].warning);
    // The next reconcile with the same conflict: no second event.
    world.schedule.status = Some(d.status.clone());
    let again = world.decide();
    assert!(
        !again
            .events
            .iter()
            .any(|e| e.reason == reason::PHONE_CONFLICT)
    );
    // Resolved: Degraded clears.
    world.claimed_elsewhere.clear();
    world.schedule.status = Some(again.status.clone());
    let resolved = world.decide();
    let degraded = condition(&resolved.status, condition::DEGRADED);
    assert_eq!(degraded.status, "False");
    // A MAC of no site of this schedule changes nothing.
    world.claimed_elsewhere.insert(
        "00:aa:00:00:00:01".parse().unwrap(),
        vec!["tenant-b".into()],
    );
    assert_eq!(
        condition(&world.decide().status, condition::DEGRADED).status,
        "False"
    );
}

#[test]
fn an_unknown_zone_is_reported_and_the_other_sites_go_on() {
    let mut world = World::new();
    world.sites.push(Arc::new(site(
        "mars",
        "Mars/Olympus_Mons",
        2,
        5,
        &["GXP2170"],
    )));
    let d = world.decide();
    let degraded = condition(&d.status, condition::DEGRADED);
    assert_eq!(degraded.reason, reason::INVALID_SITE);
    assert!(
        degraded.message.contains("spec.timeZone"),
        "{}",
        degraded.message
    );
    assert!(degraded.message.contains("Mars/Olympus_Mons"));
    assert_eq!(d.status.sites.len(), 1, "paris still planned");
}

#[test]
fn a_selector_that_matches_nothing_is_not_ready() {
    let mut world = World::new();
    world.schedule.spec.site_selector.match_labels =
        Some([("region".to_owned(), "mars".to_owned())].into());
    let d = world.decide();
    let ready = condition(&d.status, condition::READY);
    assert_eq!(ready.status, "False");
    assert_eq!(ready.reason, reason::NO_MATCHING_SITES);
    assert_eq!(d.status.phase.as_deref(), Some(phase::PENDING));
}

#[test]
fn a_paused_rollout_hands_out_no_slot_and_no_firmware() {
    let mut world = World::new();
    world.schedule.spec.rollout.paused = true;
    let d = world.decide();
    assert!(d.slots.is_empty());
    assert!(files(&d).values().all(|b| !b.contains("firmware/paris")));
    assert_eq!(d.status.phase.as_deref(), Some(phase::PAUSED));
}

#[test]
fn upgraded_phones_are_not_planned_again() {
    let mut world = World::new();
    let first = world.decide();
    world.settle(&first);
    let done: Vec<Mac> = released(&first);
    for mac in &done {
        world.report(*mac, PhoneState::Upgraded);
    }
    world.now += Duration::days(2);
    let later = world.decide();
    for mac in &done {
        assert!(!later.slots.contains_key(mac));
    }
}

#[test]
fn a_big_site_is_cut_into_shards_under_the_configmap_limit_with_every_phone_once() {
    // 16 to 30 bytes a phone: 60,000 phones need more than one 768 KiB shard.
    const PHONES: u32 = 60_000;
    let mut world = World::new();
    world.sites = vec![Arc::new(site(
        "big",
        "Europe/Paris",
        5,
        PHONES,
        &["GXP2170", "SIP-T46U"],
    ))];
    let d = world.decide();
    let shards = d.shards.as_ref().expect("shards");
    assert!(shards.len() > 1, "{} shards", shards.len());
    let mut phones = 0;
    for shard in shards {
        let data = d.shard_data(shard);
        let bytes: usize = data.iter().map(|(k, v)| k.len() + v.len()).sum();
        assert!(bytes < 1024 * 1024, "{} is {bytes} bytes", shard.name);
        assert_eq!(
            children::content_hash(data.iter().map(|(k, v)| (k.as_str(), v.as_str()))),
            shard.hash,
            "the hash covers exactly the data written"
        );
        let header = crate::decision::ShardHeader::parse(&data[crate::decision::DECISION_KEY])
            .expect("header");
        crate::decision::decode_phones(header.base, &data[crate::decision::PHONES_KEY], |_| {
            phones += 1
        })
        .expect("phone lines");
    }
    assert_eq!(phones, PHONES as usize);
    let index = crate::server::index::Index::from_maps(&shard_maps(&d));
    assert_eq!(index.phones_len(), PHONES as usize, "every phone once");
}

#[test]
fn removed_sites_leave_stale_shards_to_delete() {
    let mut world = World::new();
    let first = world.decide();
    world.settle(&first);
    world.sites.clear();
    let d = world.decide();
    assert_eq!(d.stale, vec!["fw-paris-0".to_owned()]);
}

#[test]
fn an_invalid_spec_keeps_the_children_and_says_why() {
    let mut world = World::new();
    world.schedule.spec.provisioning.weekly.window.start = "25:00".into();
    let d = world.decide();
    assert!(d.shards.is_none(), "children left as they are");
    let ready = condition(&d.status, condition::READY);
    assert_eq!(ready.reason, reason::INVALID_SPEC);
    assert!(
        ready
            .message
            .contains("spec.provisioning.weekly.window.start"),
        "{}",
        ready.message
    );
}

#[test]
fn status_counts_phones_per_stage_and_per_site_by_state() {
    let mut world = World::new();
    let first = world.decide();
    world.settle(&first);
    let canary: Vec<Mac> = released(&first);
    world.report(canary[0], PhoneState::Downloading);
    world.report(canary[1], PhoneState::Upgraded);
    let second = world.decide();
    let stages = &second.status.stages;
    assert_eq!(
        stages.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(),
        ["canary", "all"]
    );
    assert_eq!(stages.iter().map(|s| s.phones).sum::<u32>(), 20);
    assert_eq!((stages[0].in_progress, stages[0].upgraded), (1, 1));
    assert_eq!((stages[1].in_progress, stages[1].upgraded), (0, 0));
    let paris = &second.status.sites[0];
    assert_eq!((paris.in_progress, paris.upgraded), (1, 1));
    // Canary slots lie ahead or are open now: either way the site has a window to show.
    assert!(paris.window_open || paris.next_window.is_some_and(|t| t > world.now));
}

#[test]
fn with_repeated_checks_new_slots_leave_phones_time_to_hear_of_them() {
    let mut world = World::new();
    world.schedule.spec.provisioning.repeatedly.enabled = true;
    world.schedule.spec.provisioning.repeatedly.every_minutes = 60;
    world.now = at("2026-12-01T00:55:00Z"); // 01:55 in Paris, inside the 01:00-05:00 window
    let d = world.decide();
    assert!(!d.slots.is_empty());
    for slot in d.slots.values() {
        assert!(
            slot.start() >= world.now + Duration::minutes(60),
            "{slot:?}"
        );
    }
}

#[test]
fn a_slow_decision_hands_out_no_slot_that_starts_before_it_lands() {
    let mut world = World::new();
    world.schedule.spec.provisioning.repeatedly.enabled = true;
    world.schedule.spec.provisioning.repeatedly.every_minutes = 30;
    world.now = at("2026-12-01T00:05:00Z"); // 01:05 in Paris, inside the 01:00-05:00 window
    // The last reconcile took 50 minutes of this clock (a compressed clock on a loaded machine).
    world.propagation = Duration::minutes(50);
    let d = world.decide();
    assert!(!d.slots.is_empty());
    for slot in d.slots.values() {
        assert!(
            slot.start() >= world.now + Duration::minutes(30 + 50),
            "{slot:?} starts before the decision reaches the phones and they hear of it"
        );
    }
}

#[test]
fn an_announced_slot_is_kept_until_it_is_over() {
    let mut world = World::new();
    world.schedule.spec.provisioning.repeatedly.enabled = true;
    world.schedule.spec.provisioning.repeatedly.every_minutes = 60;
    let first = world.decide();
    world.settle(&first);
    let mac = released(&first)[0];
    let slot = first.slots.get(&mac).expect("a slot");
    // Half an hour before it starts, a re-plan would put it an hour out: it stays.
    world.now = slot.start() - Duration::minutes(30);
    let second = world.decide();
    assert_eq!(second.slots.get(&mac), Some(slot));
}

#[test]
fn a_model_no_family_places_gets_no_file_and_is_reported_with_its_site() {
    let mut world = World::new();
    world.sites = vec![Arc::new(site(
        "paris",
        "Europe/Paris",
        2,
        20,
        &["GXP2170", "HT802"],
    ))];
    let d = world.decide();
    let files = files(&d);
    assert_eq!(files.len(), 10, "only the GXP2170s get files");
    assert!(files.keys().all(|n| n.ends_with(".xml")));
    let degraded = condition(&d.status, condition::DEGRADED);
    assert_eq!(
        (degraded.status.as_str(), degraded.reason.as_str()),
        ("True", reason::UNKNOWN_MODEL)
    );
    assert!(
        degraded.message.contains("'HT802'") && degraded.message.contains("voice/paris"),
        "{}",
        degraded.message
    );
    assert!(
        d.events
            .iter()
            .any(|e| e.warning && e.reason == reason::UNKNOWN_MODEL),
        "{:?}",
        d.events
    );
    assert_eq!(condition(&d.status, condition::READY).status, "True");
}

#[test]
fn grandstream_phones_get_p194_in_whole_hours_and_never_an_xstim_code() {
    let d = World::new().decide();
    let files = files(&d);
    let slotted: Vec<&String> = files
        .values()
        .filter(|b| b.contains("GXP2170") && b.contains("rollout slot"))
        .collect();
    assert!(!slotted.is_empty());
    for body in files.values().filter(|b| b.contains("(GXP2170)")) {
        assert!(!body.contains("<P250"), "{body}");
        assert!(body.contains("<P194>"), "{body}");
    }
    for body in slotted {
        for want in ["<P194>2</P194>", "<P6767>1</P6767>", "<P8375>0</P8375>"] {
            assert!(body.contains(want), "{want}: {body}");
        }
    }
}

#[test]
fn a_grandstream_phone_that_missed_its_slot_gets_one_after_its_next_daily_check() {
    let mut world = World::new();
    world.sites = vec![Arc::new(site("paris", "Europe/Paris", 2, 20, &["GXP2170"]))];
    let first = world.decide();
    world.settle(&first);
    let mac = released(&first)[0];
    let slot = first.slots.get(&mac).expect("a slot");
    // Its file says "daily at the slot's hours": it hears of a new slot at most a day and an
    // hour later, so the new slot starts no sooner.
    world.now = slot.end() + Duration::minutes(1);
    let second = world.decide();
    let again = second.slots.get(&mac).expect("re-planned");
    assert!(
        again.start() >= world.now + Duration::hours(25),
        "{again:?} after {}",
        world.now
    );
}

#[test]
fn yealink_phones_hear_of_a_new_slot_within_their_repeat_interval() {
    let mut world = World::new();
    world.sites = vec![Arc::new(site(
        "paris",
        "Europe/Paris",
        2,
        20,
        &["SIP-T46U"],
    ))];
    world.schedule.spec.provisioning.repeatedly.enabled = true;
    world.schedule.spec.provisioning.repeatedly.every_minutes = 60;
    let first = world.decide();
    world.settle(&first);
    let mac = released(&first)[0];
    let slot = first.slots.get(&mac).expect("a slot");
    world.now = slot.end() + Duration::minutes(1);
    let second = world.decide();
    let again = second.slots.get(&mac).expect("re-planned");
    assert!(again.start() < world.now + Duration::hours(25), "{again:?}");
}

#[test]
fn a_yealink_phone_without_repeated_checks_that_missed_its_slot_gets_one_after_its_next_weekly_check()
 {
    let mut world = World::new();
    world.sites = vec![Arc::new(site(
        "paris",
        "Europe/Paris",
        2,
        20,
        &["SIP-T46U"],
    ))];
    let first = world.decide();
    world.settle(&first);
    let mac = released(&first)[0];
    let slot = first.slots.get(&mac).expect("a slot");
    // Its slot file checks on the slot's weekday only: it hears of a new slot a week later.
    world.now = slot.end() + Duration::minutes(1);
    let second = world.decide();
    let again = second.slots.get(&mac).expect("re-planned");
    assert!(
        again.start() >= world.now + Duration::days(7),
        "{again:?} after {}",
        world.now
    );
    // The others keep the slots they were told.
    for (m, s) in first.slots.iter() {
        if m != mac && s.end() > world.now {
            assert_eq!(second.slots.get(&m), Some(s), "{m}");
        }
    }
}

fn annotate(world: &mut World, key: &str, value: serde_json::Value) {
    world
        .schedule
        .metadata
        .annotations
        .get_or_insert_with(Default::default)
        .insert(key.to_owned(), value.to_string());
}

#[test]
fn unhalt_lifts_the_halt_forgives_the_failures_and_replans_the_phones() {
    let mut world = World::new();
    let first = world.decide();
    world.settle(&first);
    let failed: Vec<Mac> = released(&first);
    for &mac in &failed {
        world.report(mac, PhoneState::Failed);
    }
    let halted = world.decide();
    world.settle(&halted);
    let models = halted
        .status
        .rollout
        .clone()
        .expect("rollout")
        .halted_models;
    assert!(!models.is_empty());

    // A retry alone forgives the failures but keeps the halt.
    world.now += Duration::minutes(1);
    annotate(
        &mut world,
        super::super::requests::ANNOTATION_RETRY,
        serde_json::json!({"id": "r1", "version": "2.0"}),
    );
    let retried = world.decide();
    world.settle(&retried);
    assert_eq!(retried.status.counts.as_ref().map(|c| c.failed), Some(0));
    assert_eq!(
        retried
            .status
            .rollout
            .as_ref()
            .expect("rollout")
            .halted_models,
        models
    );
    assert!(retried.events.iter().any(|e| e.reason == "RetryRequested"));

    for model in &models {
        annotate(
            &mut world,
            super::super::requests::ANNOTATION_UNHALT,
            serde_json::json!({"id": format!("u-{model}"), "version": "2.0", "model": model}),
        );
        let unhalted = world.decide();
        world.settle(&unhalted);
        assert!(unhalted.events.iter().any(|e| e.reason == "ModelUnhalted"));
    }
    let after = world.decide();
    let rollout = after.status.rollout.as_ref().expect("rollout");
    assert!(rollout.halted_models.is_empty(), "{rollout:?}");
    assert_eq!(after.status.phase.as_deref(), Some(phase::PROGRESSING));
    for mac in &failed {
        assert!(after.slots.contains_key(mac), "{mac} planned again");
    }
    // Carried out once: deciding again changes nothing and publishes nothing.
    assert!(after.events.is_empty(), "{:?}", after.events);

    // A new failure after the requests counts again.
    world.settle(&after);
    world.now += Duration::minutes(1);
    world.report(failed[0], PhoneState::Failed);
    let again = world.decide();
    assert_eq!(again.status.counts.as_ref().map(|c| c.failed), Some(1));
}

#[test]
fn promote_releases_the_next_stage_before_its_gate() {
    let mut world = World::new();
    let first = world.decide();
    world.settle(&first);
    assert_eq!(
        first
            .status
            .rollout
            .as_ref()
            .expect("rollout")
            .released_stage,
        0
    );
    annotate(
        &mut world,
        super::super::requests::ANNOTATION_PROMOTE,
        serde_json::json!({"id": "p1", "version": "2.0", "stage": 1}),
    );
    let promoted = world.decide();
    assert_eq!(
        promoted
            .status
            .rollout
            .as_ref()
            .expect("rollout")
            .released_stage,
        1
    );
    assert_eq!(promoted.status.stage.as_deref(), Some("all"));
    assert!(promoted.events.iter().any(|e| e.reason == "StagePromoted"));
    assert!(
        released(&promoted).len() > released(&first).len(),
        "stage 2 phones are released"
    );
    // A request about another version is ignored.
    let mut stale = World::new();
    annotate(
        &mut stale,
        super::super::requests::ANNOTATION_PROMOTE,
        serde_json::json!({"id": "p1", "version": "1.0", "stage": 1}),
    );
    let ignored = stale.decide();
    assert_eq!(
        ignored
            .status
            .rollout
            .as_ref()
            .expect("rollout")
            .released_stage,
        0
    );
}

#[path = "step_tests.rs"]
mod steps;

/// The example fleet (weekly windows on five nights, no repeated checks, XSTIM, Yealink and
/// Grandstream phones in three stages): the decision written is the decision made again, so
/// the controller serves what `phonefleet render` prints.
#[test]
fn the_example_fleets_second_decision_is_its_first() {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/fleet.yaml"))
        .expect("examples/fleet.yaml");
    let mut world = World::new();
    world.sites.clear();
    for doc in serde_yaml_ng::Deserializer::from_str(&text) {
        let value = serde_yaml_ng::Value::deserialize(doc).expect("yaml");
        match value.get("kind").and_then(|k| k.as_str()) {
            Some("PhoneSchedule") => {
                world.schedule = serde_yaml_ng::from_value(value).expect("schedule");
                world.schedule.metadata.uid = Some("uid".into());
            }
            Some("PhoneSite") => world
                .sites
                .push(Arc::new(serde_yaml_ng::from_value(value).expect("site"))),
            _ => {}
        }
    }
    let first = world.decide();
    world.settle(&first);
    world.now += Duration::seconds(2);
    let second = world.decide();
    let mut moved: Vec<String> = first
        .slots
        .iter()
        .filter(|(mac, slot)| second.slots.get(mac) != Some(*slot))
        .map(|(mac, slot)| format!("{mac}: {slot:?} -> {:?}", second.slots.get(&mac)))
        .collect();
    moved.sort();
    assert!(
        moved.is_empty(),
        "{} moved:\n{}",
        moved.len(),
        moved.join("\n")
    );
}

/// `site` with the uid and version the API server gives it.
fn versioned(mut site: PhoneSite, version: &str) -> PhoneSite {
    site.metadata.uid = Some(format!("uid-{}", site.name_any()));
    site.metadata.resource_version = Some(version.to_owned());
    site
}

#[test]
fn remembered_site_validations_decide_exactly_as_validating_each_time() {
    let mut remembered = World::new();
    // Models named in different orders by two sites, one phone no family places, and a site
    // that fails validation: the fleet's model ids and the exclusions must not move.
    remembered.sites = vec![
        Arc::new(versioned(
            site(
                "lyon",
                "Europe/Paris",
                2,
                12,
                &["SIP-T46U", "GXP2170", "X-1"],
            ),
            "7",
        )),
        Arc::new(versioned(
            site("paris", "Europe/Paris", 2, 20, &["GXP2170", "SIP-T46U"]),
            "8",
        )),
        Arc::new(versioned(
            site("rome", "Mars/Olympus", 2, 4, &["GXP2170"]),
            "9",
        )),
    ];
    let mut direct = World::new();
    direct.sites = remembered.sites.clone();
    direct.checked = None;
    let key = |d: &Desired| {
        let shards: Vec<(String, String)> = d
            .shards
            .iter()
            .flatten()
            .map(|s| (s.name.clone(), s.hash.clone()))
            .collect();
        let mut slots: Vec<(Mac, PackedSlot)> = d.slots.iter().collect();
        slots.sort_by_key(|(m, _)| *m);
        (format!("{:?}", d.status), shards, slots)
    };
    let want = key(&direct.decide());
    assert_eq!(
        key(&remembered.decide()),
        want,
        "first: validated and remembered"
    );
    let memo = remembered.checked.as_ref().expect("a memo");
    assert_eq!(
        memo.len(),
        3,
        "every versioned site is remembered, the invalid one too"
    );
    assert_eq!(key(&remembered.decide()), want, "second: from memory");
    // A new version of a site is validated again: its phones change the decision.
    remembered.sites[1] = Arc::new(versioned(
        site("paris", "Europe/Paris", 2, 10, &["GXP2170"]),
        "10",
    ));
    direct.sites = remembered.sites.clone();
    assert_eq!(key(&remembered.decide()), key(&direct.decide()));
}

#[test]
fn remembered_cuts_give_the_shards_cutting_every_site_gives() {
    let mut remembered = World::new();
    remembered.sites = vec![
        Arc::new(site(
            "lyon",
            "Europe/Paris",
            2,
            12,
            &["SIP-T46U", "GXP2170"],
        )),
        Arc::new(site(
            "paris",
            "Europe/Paris",
            2,
            20,
            &["GXP2170", "SIP-T46U"],
        )),
        // More than one shard (as in the big-site test above).
        Arc::new(site(
            "big",
            "America/New_York",
            3,
            60_000,
            &["GXP2170", "SIP-T46U"],
        )),
    ];
    let mut direct = World::new();
    direct.sites = remembered.sites.clone();
    direct.cuts = None;
    // Everything the apply step reads: the shards (names, hashes, changed, phones), their
    // data, the stale ones.
    let same = |step: &str, r: &Desired, d: &Desired| {
        assert_eq!(r.shards, d.shards, "{step}: shards");
        for (a, b) in r.shards.iter().flatten().zip(d.shards.iter().flatten()) {
            assert_eq!(
                r.shard_data(a),
                d.shard_data(b),
                "{step}: data of {}",
                a.name
            );
        }
        assert_eq!(r.stale, d.stale, "{step}: stale");
    };
    let step = |name: &str, r: &mut World, d: &mut World| {
        let (a, b) = (r.decide(), d.decide());
        same(name, &a, &b);
        r.settle(&a);
        d.settle(&b);
        a
    };
    let first = step("first", &mut remembered, &mut direct);
    assert!(
        first
            .shards
            .iter()
            .flatten()
            .filter(|s| s.site == "big")
            .count()
            > 1
    );
    let memo = remembered.cuts.as_ref().expect("a memo");
    assert_eq!(memo.sites(), 3);
    step("unchanged", &mut remembered, &mut direct);
    // The canary upgrades: its phones' lines lose their slots.
    for mac in released(&first) {
        remembered.report(mac, PhoneState::Upgraded);
        direct.report(mac, PhoneState::Upgraded);
    }
    let reported = step("canary reported", &mut remembered, &mut direct);
    assert!(
        reported.shards.iter().flatten().any(|s| s.changed),
        "some site is cut again"
    );
    // Same MACs, the models named in the other order: only the header changes.
    remembered.sites[0] = Arc::new(site(
        "lyon",
        "Europe/Paris",
        2,
        12,
        &["GXP2170", "SIP-T46U"],
    ));
    direct.sites = remembered.sites.clone();
    step(
        "models named in the other order",
        &mut remembered,
        &mut direct,
    );
    // Same MACs and header, one phone in three of another model: only lines change.
    remembered.sites[0] = Arc::new(site(
        "lyon",
        "Europe/Paris",
        2,
        12,
        &["GXP2170", "SIP-T46U", "SIP-T46U"],
    ));
    direct.sites = remembered.sites.clone();
    step("models changed", &mut remembered, &mut direct);
    // A day later (new slots everywhere); a removed site's shard is stale and forgotten.
    remembered.sites.remove(1);
    direct.sites = remembered.sites.clone();
    remembered.now += Duration::hours(30);
    direct.now = remembered.now;
    let later = step("a day later, one site fewer", &mut remembered, &mut direct);
    assert_eq!(later.stale, vec!["fw-paris-0".to_owned()]);
    assert_eq!(remembered.cuts.as_ref().map(CutMemo::sites), Some(2));
}
