//! Each step of the decision pipeline on its own, fed with a fleet selected from the fixtures
//! of the parent tests.

use crate::core::{MacMap, MacSet};
use std::collections::BTreeMap;

use chrono::Duration;

use super::*;
use crate::children::{IndexSlot, PackedSlot, PhoneState};
use crate::controller::desired::{
    counts, events, gates, kept, members, shards, status, vocabulary::Phase, wake,
};

/// The plan of `fleet` leaving out the phones `k` leaves out (nothing held, nothing kept).
fn plan_leaving_out(
    fleet: &Fleet,
    now: chrono::DateTime<chrono::Utc>,
    k: &kept::Kept<'_>,
) -> core::Plan {
    core::plan_rollout(fleet, now, &k.not_planned_macs(), &|_| false, &|_| None)
}

fn fleet_of(world: &World) -> Fleet {
    let candidates: Vec<Candidate<'_>> = world
        .sites
        .iter()
        .map(|s| Candidate {
            document: format!("PhoneSite voice/{}", s.name_any()),
            site: s,
            checked: None,
        })
        .collect();
    selection::select("s", "voice/fw", &world.schedule, &candidates, &|_| None)
        .expect("valid fixture")
        .fleet
}

fn slot(start: &str, minutes: i64) -> PackedSlot {
    PackedSlot::pack(&IndexSlot {
        stage: 0,
        start: at(start),
        end: at(start) + Duration::minutes(minutes),
        held: false,
    })
    .expect("a slot of whole minutes packs")
}

#[test]
fn members_are_staged_by_rank_and_only_progress_towards_this_version_counts() {
    let mut world = World::new();
    let fleet = fleet_of(&world);
    let first = members::of_fleet(&fleet, &world.progress, None);
    let per_stage = |m: &members::Members, s: u32| m.iter().filter(|x| x.stage == s).count() as u32;
    // 10 % of 20 phones, rounded up: 2 canaries.
    assert_eq!((per_stage(&first, 0), per_stage(&first, 1)), (2, 18));
    let (a, b) = (first.by_site[0][0].mac, first.by_site[0][1].mac);
    world.report(a, PhoneState::Upgraded);
    world.report(b, PhoneState::Downloading);
    world.progress.get_mut(&b).expect("reported").target = "1.0".into();
    let m = members::of_fleet(&fleet, &world.progress, None);
    assert_eq!(m.by_site[0][0].state, Some(PhoneState::Upgraded));
    assert!(m.by_site[0][0].done());
    assert_eq!(
        m.by_site[0][1].state, None,
        "progress towards another version"
    );
}

#[test]
fn gates_hand_out_slots_only_with_firmware_and_not_paused() {
    let world = World::new();
    let fleet = fleet_of(&world);
    let m = members::of_fleet(&fleet, &world.progress, None);
    let g = gates::evaluate(&fleet.schedule, &fleet.models, None, &m, None);
    assert!(g.active && g.halted.is_empty());
    assert_eq!(g.released, 0);
    let mut paused = fleet.schedule.clone();
    paused.rollout.paused = true;
    assert!(!gates::evaluate(&paused, &fleet.models, None, &m, None).active);
    let mut idle = fleet.schedule.clone();
    idle.firmware = None;
    let g = gates::evaluate(
        &idle,
        &fleet.models,
        None,
        &members::Members::default(),
        None,
    );
    assert!(!g.active && g.rollout.is_none());
}

#[test]
fn kept_slots_are_the_announced_and_the_busy_ones() {
    let mut world = World::new();
    let fleet = fleet_of(&world);
    let macs: Vec<Mac> = members::of_fleet(&fleet, &world.progress, None)
        .iter()
        .map(|m| m.mac)
        .collect();
    let (busy, announced, far, done) = (macs[0], macs[1], macs[2], macs[3]);
    world.report(busy, PhoneState::Downloading);
    world.report(done, PhoneState::Upgraded);
    let previous: MacMap<PackedSlot> = [
        // Started and ended before now, but the phone is still downloading.
        (busy, slot("2026-12-01T10:00:00Z", 30)),
        // Inside the lead: announced.
        (announced, slot("2026-12-01T12:00:00Z", 30)),
        // Beyond the site's lead (a week and the check window: its Yealink phones hold slot
        // files and have no repeated checks): re-planned.
        (far, slot("2026-12-09T01:00:00Z", 30)),
        (done, slot("2026-12-01T11:50:00Z", 30)),
    ]
    .into_iter()
    .collect();
    let m = members::of_fleet(&fleet, &world.progress, None);
    let g = gates::evaluate(&fleet.schedule, &fleet.models, None, &m, None);
    let previous = DecidedSlots::from_map(previous);
    let k = kept::keep(&fleet, &m, &g, &previous, world.now, Duration::zero());
    let kept: MacSet = k.kept_slots().map(|(mac, _)| mac).collect();
    assert_eq!(kept, MacSet::from_iter([busy, announced]));
    let not_planned = k.not_planned_macs();
    assert!(not_planned.contains(&done) && !not_planned.contains(&far));
    assert!(
        k.holds_mac(far) && !k.holds_mac(done),
        "a done phone holds nothing"
    );
}

#[test]
fn every_planned_phone_gets_a_slot_held_beyond_the_released_stage_and_none_when_inactive() {
    let world = World::new();
    let fleet = fleet_of(&world);
    let m = members::of_fleet(&fleet, &world.progress, None);
    let g = gates::evaluate(&fleet.schedule, &fleet.models, None, &m, None);
    let none = MacMap::default();
    let k = kept::Kept::none(&fleet, &none);
    let plan = plan_leaving_out(&fleet, world.now, &k);
    let slots = kept::assign(&k, &plan, &g).to_map(&fleet);
    assert_eq!(slots.len(), 20, "every phone is announced its slot");
    let released: Vec<_> = slots.values().filter(|s| !s.held()).collect();
    assert_eq!(released.len(), 2, "the canaries only are released");
    assert!(released.iter().all(|s| s.stage() == 0));
    assert!(slots.values().all(|s| s.held() == (s.stage() > 0)));
    let promoted = gates::Gates {
        released: 1,
        ..g.clone()
    };
    assert!(
        kept::assign(&k, &plan, &promoted)
            .iter()
            .all(|s| s.held() == (s.stage() > 1)),
        "a release lifts the hold of its stage's slots"
    );
    let inactive = gates::Gates {
        active: false,
        ..g.clone()
    };
    assert_eq!(kept::assign(&k, &plan, &inactive).iter().count(), 0);
}

#[test]
fn a_held_slot_before_a_kept_earlier_stage_ends_is_not_announced() {
    let world = World::new();
    let fleet = fleet_of(&world);
    let m = members::of_fleet(&fleet, &world.progress, None);
    let g = gates::evaluate(&fleet.schedule, &fleet.models, None, &m, None);
    let none = MacMap::default();
    let first = kept::assign(
        &kept::Kept::none(&fleet, &none),
        &core::plan_rollout(&fleet, world.now, &MacSet::default(), &|_| false, &|_| None),
        &g,
    )
    .to_map(&fleet);
    let (&canary, &slot) = first
        .iter()
        .filter(|(_, s)| s.stage() == 0)
        .min_by_key(|(m, _)| **m)
        .expect("a canary");
    // The canary keeps a slot that ends after every slot the plan gives the next stage
    // (the plan, leaving it out, places that stage from the lead on).
    let late = PackedSlot::pack(&IndexSlot {
        end: slot.end() + Duration::days(30),
        ..slot.unpack()
    })
    .expect("whole minutes");
    let previous: MacMap<PackedSlot> = [(canary, late)].into_iter().collect();
    let mut k = kept::Kept::none(&fleet, &previous);
    k.keep(canary);
    let plan = plan_leaving_out(&fleet, world.now, &k);
    let slots = kept::assign(&k, &plan, &g).to_map(&fleet);
    assert!(
        slots.values().all(|s| s.stage() == 0),
        "no later stage is announced before the kept canary's end: {slots:?}"
    );
    assert_eq!(slots.get(&canary), Some(&late));
}

#[test]
fn shards_are_rewritten_only_when_their_hash_changed_and_strays_are_stale() {
    let world = World::new();
    let fleet = fleet_of(&world);
    let plan = core::plan_rollout(&fleet, world.now, &MacSet::default(), &|_| false, &|_| None);
    let url: ServerUrl = "http://prov".parse().expect("url");
    let cut_with = |existing: &BTreeMap<String, String>| {
        shards::cut(
            &fleet,
            &plan,
            &kept::Assigned::default(),
            &shards::Target {
                schedule: "voice/fw".into(),
                schedule_name: "fw",
                server_url: &url,
                active: true,
                existing,
                memo: None,
            },
        )
    };
    let first = cut_with(&BTreeMap::new());
    assert!(first.shards.iter().all(|s| s.changed));
    let mut existing: BTreeMap<String, String> = first
        .shards
        .iter()
        .map(|s| (s.name.clone(), s.hash.clone()))
        .collect();
    existing.insert("fw-gone-0".into(), "x".into());
    let second = cut_with(&existing);
    assert!(second.shards.iter().all(|s| !s.changed));
    assert_eq!(second.stale, ["fw-gone-0"]);
    assert_eq!(second.check_minutes.get("paris"), Some(&60));
}

#[test]
fn counts_add_up_and_completion_covers_kept_slots() {
    let mut world = World::new();
    let fleet = fleet_of(&world);
    let macs: Vec<Mac> = members::of_fleet(&fleet, &world.progress, None)
        .iter()
        .map(|m| m.mac)
        .collect();
    // The failure is in the second stage (not released): no halt.
    world.report(macs[0], PhoneState::Upgraded);
    world.report(macs[10], PhoneState::Failed);
    world.report(macs[2], PhoneState::Rebooting);
    let m = members::of_fleet(&fleet, &world.progress, None);
    let g = gates::evaluate(&fleet.schedule, &fleet.models, None, &m, None);
    let late = slot("2027-06-01T01:00:00Z", 30);
    let previous: MacMap<PackedSlot> = [(macs[2], late)].into_iter().collect();
    let mut k = kept::Kept::none(&fleet, &previous);
    k.keep(macs[2]);
    k.leave_out(macs[0]);
    k.leave_out(macs[10]);
    let plan = plan_leaving_out(&fleet, world.now, &k);
    let slots = kept::assign(&k, &plan, &g);
    let c = counts::count(&counts::Decided {
        fleet: &fleet,
        members: &m,
        gates: &g,
        kept: &k,
        plan: &plan,
        slots: &slots,
        now: world.now,
    });
    let p = c.tally.phone_counts();
    assert_eq!(
        (p.total, p.upgraded, p.failed, p.in_progress, p.pending),
        (20, 1, 1, 1, 17)
    );
    assert_eq!(c.tally.remaining, 19);
    assert_eq!(
        c.completion,
        Some(late.end()),
        "a kept slot later than the plan"
    );
    assert_eq!(c.stages.iter().map(|s| s.phones).sum::<u32>(), 20);
    assert_eq!(c.sites[0].completion, Some(late.end()));
}

#[test]
fn status_phase_follows_its_precedence_and_degraded_names_the_first_cause() {
    let world = World::new();
    let fleet = fleet_of(&world);
    let m = members::of_fleet(&fleet, &world.progress, None);
    let mut g = gates::evaluate(&fleet.schedule, &fleet.models, None, &m, None);
    let none = MacMap::default();
    let k = kept::Kept::none(&fleet, &none);
    let plan = plan_leaving_out(&fleet, world.now, &k);
    let slots = kept::assign(&k, &plan, &g);
    let decided = counts::Decided {
        fleet: &fleet,
        members: &m,
        gates: &g,
        kept: &k,
        plan: &plan,
        slots: &slots,
        now: world.now,
    };
    let mut c = counts::count(&decided);
    assert_eq!(status::phase(&fleet, &g, &c), Phase::Progressing);
    c.tally.remaining = 0;
    assert_eq!(status::phase(&fleet, &g, &c), Phase::Completed);
    g.halted.insert("GXP2170".into());
    assert_eq!(
        status::phase(&fleet, &g, &c),
        Phase::Halted,
        "a halt outranks completion"
    );
    let excluded = [Excluded {
        site: "x".into(),
        reason: selection::Exclusion::InvalidSite,
        message: "bad".into(),
    }];
    assert_eq!(
        status::degraded(&g, &excluded, Some("conflict")).reason,
        Reason::RolloutHalted
    );
    g.halted.clear();
    // A phone conflict outranks left-out sites.
    assert_eq!(
        status::degraded(&g, &excluded, Some("conflict")).reason,
        Reason::PhoneConflict
    );
    let v = status::degraded(&g, &excluded, None);
    assert_eq!(
        (v.status, v.reason, v.message.as_str()),
        (true, Reason::InvalidSite, "bad")
    );
    assert!(!status::degraded(&g, &[], None).status);
}

#[test]
fn the_completion_event_is_published_once() {
    let world = World::new();
    let fleet = fleet_of(&world);
    let g = gates::evaluate(
        &fleet.schedule,
        &fleet.models,
        None,
        &members::Members::default(),
        None,
    );
    let mut new = PhoneScheduleStatus {
        phase: Some(Phase::Completed.as_str().into()),
        ..Default::default()
    };
    new.counts = Some(crate::api::PhoneCounts {
        total: 20,
        upgraded: 20,
        ..Default::default()
    });
    let old = PhoneScheduleStatus::default();
    let complete = |old: &PhoneScheduleStatus| -> Vec<EventIntent> {
        events::collect(old, &new, &fleet.schedule, &g, &[], None)
            .into_iter()
            .filter(|e| e.reason == Reason::RolloutComplete.as_str())
            .collect()
    };
    let first = complete(&old);
    assert_eq!(first.len(), 1);
    assert!(
        first[0].note.contains("all 20 phones run firmware 2.0"),
        "{}",
        first[0].note
    );
    assert!(
        complete(&new).is_empty(),
        "already Completed: no second event"
    );
}

#[test]
fn wake_up_is_the_next_boundary_and_never_while_inactive() {
    let world = World::new();
    let fleet = fleet_of(&world);
    let plan = core::plan_rollout(&fleet, world.now, &MacSet::default(), &|_| false, &|_| None);
    // A slot that opened before now: its end is the next boundary, before any planned start.
    let open = slot("2026-12-01T11:50:00Z", 30);
    let slots: MacMap<PackedSlot> = [(fleet.sites[0].phones[0].mac, open)].into_iter().collect();
    let slots = kept::Assigned::from_map(&fleet, &slots);
    assert_eq!(wake::next(&slots, &plan, world.now, true), Some(open.end()));
    assert_eq!(wake::next(&slots, &plan, world.now, false), None);
    let first_planned = plan.sites[0].slots.first().map(|s| s.start);
    assert_eq!(
        wake::next(&kept::Assigned::default(), &plan, world.now, true),
        first_planned
    );
}
