//! The controller's decision, as a pure function: from what was observed (the schedule, the
//! sites of its namespace, the phones' progress, what the cluster already holds) and `now`, the
//! desired children, status, events and next wake-up. No I/O and no clock here, so every rule
//! of the reconcile is a unit test.
//!
//! [`compute`] selects the fleet ([`crate::selection::select`], shared with `phonefleet plan`
//! and `phonefleet render`), then runs the pipeline of [`decide`], one module per step:
//!
//! | step | module | result |
//! |---|---|---|
//! | 1. members | [`members`] | every phone the firmware applies to, its stage and state |
//! | 2. gates | [`gates`] | released stage, halted models, gate events |
//! | 3. kept slots | [`kept`] | announced slots kept, phones left out of the plan |
//! | 4. plan | [`crate::core::plan_rollout`], [`kept::assign`] | the plan; the slots of released stages |
//! | 5. shards | [`shards`] | the rendered-config ConfigMaps, stale ones |
//! | 6. counts | [`counts`] | phones by state, stage and site; next window; completion |
//! | 7. status | [`status`] | phase and conditions |
//! | 8. events | [`events`] | gate decisions and transitions |
//! | 9. wake-up | [`wake`] | the next boundary |

mod counts;
mod events;
mod gates;
mod kept;
mod members;
mod shards;
pub mod slots;
pub(super) mod status;
pub mod vocabulary;
mod wake;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;

use crate::api::{PhoneSchedule, PhoneScheduleStatus, PhoneSite};
use crate::children::PhoneProgress;
use crate::core::{self, Fleet, Mac, MacMap};
use crate::render::ServerUrl;
pub use crate::render::phone::{PhoneFile, check_window, phone_file};
use crate::selection::{self, Candidate, Excluded, Selection};
use crate::selector::Selector;

pub use crate::selection::unknown_models_message;
pub use shards::{CutMemo, Rendering, Shard};
pub use slots::DecidedSlots;
pub use vocabulary::{ConditionType, Phase, Reason, condition, phase, reason};

/// Everything the decision depends on.
pub struct Inputs<'a> {
    pub schedule: &'a PhoneSchedule,
    /// PhoneSchedules of the same namespace (this one included), for site conflicts.
    pub schedules: &'a [Arc<PhoneSchedule>],
    /// PhoneSites of the same namespace.
    pub sites: &'a [Arc<PhoneSite>],
    /// Sites validated by earlier decisions, per version (`None`: validate each site now).
    pub checked_sites: Option<&'a selection::CheckedSites>,
    /// Sites cut into shards by earlier decisions (`None`: cut each site now).
    pub cut_memo: Option<&'a CutMemo>,
    /// MACs that schedules of other namespaces also select, with those namespaces (sorted):
    /// the provisioning server serves such a phone to no namespace (cluster-wide mode).
    pub claimed_elsewhere: &'a MacMap<Vec<String>>,
    /// Latest progress per phone, from the provisioning server.
    pub progress: &'a MacMap<PhoneProgress>,
    /// The slots the phones were last given (so a phone inside its slot keeps it).
    pub previous_slots: &'a DecidedSlots,
    /// Rendered-config ConfigMaps the schedule owns now: name → content hash.
    pub existing_shards: &'a BTreeMap<String, String>,
    /// Base URL phones use to reach the provisioning server.
    pub server_url: &'a ServerUrl,
    pub now: DateTime<Utc>,
    /// How long this controller's decisions take to reach the provisioning server (the last
    /// reconcile's compute + apply, on the controller's clock). New slots start at least this
    /// much later than the announcement lead alone says: a decision that lands after its first
    /// slots began would hand phones slots they can no longer use (the next decision would move
    /// them again), which is how a slow reconcile stalled a rollout under a compressed clock.
    pub propagation: Duration,
}

/// An event to publish on the schedule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventIntent {
    pub warning: bool,
    pub reason: &'static str,
    pub note: String,
}

/// The decision.
#[derive(Clone, Debug)]
pub struct Desired {
    /// `None` when the spec is invalid: the children are left as they are (phones keep being
    /// served their last good files) until the operator fixes the spec.
    pub shards: Option<Vec<Shard>>,
    /// What the shards' content is rendered from ([`Desired::shard_data`]).
    rendering: Option<Rendering>,
    /// Owned shards that should no longer exist.
    pub stale: Vec<String>,
    pub status: PhoneScheduleStatus,
    pub events: Vec<EventIntent>,
    /// When the next slot or window boundary makes the decision change, if ever.
    pub wake_at: Option<DateTime<Utc>>,
    /// The slots rendered into the phones' files.
    pub slots: DecidedSlots,
    /// Minutes of each site's check window inside a slot.
    pub check_minutes: BTreeMap<String, u32>,
}

/// Decides. See the module documentation.
pub fn compute(inputs: &Inputs<'_>) -> Desired {
    let schedule = inputs.schedule;
    let old = schedule.status.clone().unwrap_or_default();
    let namespace = schedule.namespace().unwrap_or_default();
    let full_name = format!("{namespace}/{}", schedule.name_any());
    let document = format!("PhoneSchedule {full_name}");

    // The selection `phonefleet plan` and `phonefleet render` make too.
    let candidates: Vec<Candidate<'_>> = inputs
        .sites
        .iter()
        .map(|site| {
            let document = format!("PhoneSite {namespace}/{}", site.name_any());
            Candidate {
                checked: inputs.checked_sites.map(|memo| memo.check(&document, site)),
                document,
                site,
            }
        })
        .collect();
    let claimed_by = |site: &PhoneSite| older_claimant(inputs, site);
    match selection::select(&document, &full_name, schedule, &candidates, &claimed_by) {
        Ok(Selection { fleet, excluded }) => decide(inputs, &old, fleet, excluded),
        Err(e) => invalid_spec(inputs, &old, e.to_string()),
    }
}

/// How many phones of the selected sites other namespaces also claim, and which (the first
/// few): `None` without conflict. The same text goes into the condition and the event.
fn conflict_message(fleet: &Fleet, claimed_elsewhere: &MacMap<Vec<String>>) -> Option<String> {
    if claimed_elsewhere.is_empty() {
        return None;
    }
    let mut conflicts: Vec<(Mac, &Vec<String>)> = fleet
        .sites
        .iter()
        .flat_map(|s| s.phones.iter())
        .filter_map(|p| claimed_elsewhere.get(&p.mac).map(|ns| (p.mac, ns)))
        .collect();
    if conflicts.is_empty() {
        return None;
    }
    conflicts.sort();
    const SHOWN: usize = 5;
    let namespaces: BTreeSet<&str> = conflicts
        .iter()
        .flat_map(|(_, ns)| ns.iter().map(String::as_str))
        .collect();
    let shown: Vec<String> = conflicts
        .iter()
        .take(SHOWN)
        .map(|(mac, _)| mac.to_string())
        .collect();
    let more = conflicts.len().saturating_sub(SHOWN);
    let more = if more > 0 {
        format!(" and {more} more")
    } else {
        String::new()
    };
    Some(format!(
        "{} phones are also claimed by namespace(s) {} and served to neither: {}{more}",
        conflicts.len(),
        namespaces.into_iter().collect::<Vec<_>>().join(", "),
        shown.join(", ")
    ))
}

/// The older schedule (by creation time, then name) that also selects `site`, if any.
fn older_claimant(inputs: &Inputs<'_>, site: &PhoneSite) -> Option<String> {
    let me = inputs.schedule;
    let key = |s: &PhoneSchedule| {
        (
            s.metadata.creation_timestamp.clone().map(|t| t.0),
            s.name_any(),
        )
    };
    inputs
        .schedules
        .iter()
        .filter(|other| other.uid() != me.uid() && other.metadata.deletion_timestamp.is_none())
        .filter(|other| key(other) < key(me))
        .filter(|other| {
            Selector::parse(&other.spec.site_selector).is_ok_and(|s| s.matches(site.labels()))
        })
        .map(|other| other.name_any())
        .min()
}

fn invalid_spec(inputs: &Inputs<'_>, old: &PhoneScheduleStatus, message: String) -> Desired {
    let now = inputs.now;
    let mut status = old.clone();
    status.observed_generation = inputs.schedule.metadata.generation;
    status.phase = Some(Phase::Invalid.as_str().into());
    status.conditions = [
        (ConditionType::Ready, false, message.as_str()),
        (ConditionType::Progressing, false, "the spec is invalid"),
        (ConditionType::Degraded, true, message.as_str()),
    ]
    .into_iter()
    .map(|(type_, value, text)| {
        cond(
            &old.conditions,
            type_.as_str(),
            value,
            Reason::InvalidSpec.as_str(),
            text,
            now,
        )
    })
    .collect();
    let events = events::transition_event(old, &status, Reason::InvalidSpec, true, &message);
    Desired {
        shards: None,
        rendering: None,
        stale: Vec::new(),
        status,
        events,
        wake_at: None,
        slots: inputs.previous_slots.clone(),
        check_minutes: BTreeMap::new(),
    }
}

/// The pipeline, step by step (see the module documentation).
fn decide(
    inputs: &Inputs<'_>,
    old: &PhoneScheduleStatus,
    fleet: Fleet,
    excluded: Vec<Excluded>,
) -> Desired {
    let now = inputs.now;
    // Operator requests (retry, unhalt, promote) for this firmware version.
    let requests = fleet.schedule.firmware.as_ref().map(|fw| {
        crate::controller::requests::take(
            inputs.schedule.annotations(),
            &fw.version,
            old.rollout.as_ref(),
            now,
        )
    });
    let members = members::of_fleet(&fleet, inputs.progress, requests.as_ref());
    let gates = gates::evaluate(
        &fleet.schedule,
        &fleet.models,
        old.rollout.as_ref(),
        &members,
        requests.as_ref(),
    );
    let kept = kept::keep(
        &fleet,
        &members,
        &gates,
        inputs.previous_slots,
        now,
        inputs.propagation,
    );
    let plan = core::plan_rollout_with(&fleet, now, &kept);
    let slots = kept::assign(&kept, &plan, &gates);
    let schedule_name = inputs.schedule.name_any();
    let cut = shards::cut(
        &fleet,
        &plan,
        &slots,
        &shards::Target {
            schedule: format!(
                "{}/{schedule_name}",
                inputs.schedule.namespace().unwrap_or_default()
            ),
            schedule_name: &schedule_name,
            server_url: inputs.server_url,
            active: gates.active,
            existing: inputs.existing_shards,
            memo: inputs.cut_memo,
        },
    );
    let counts = counts::count(&counts::Decided {
        fleet: &fleet,
        members: &members,
        gates: &gates,
        kept: &kept,
        plan: &plan,
        slots: &slots,
        now,
    });
    let generation = inputs.schedule.metadata.generation;
    let conflict = conflict_message(&fleet, inputs.claimed_elsewhere);
    let status = status::build(
        old,
        generation,
        &fleet,
        &excluded,
        conflict.as_deref(),
        &gates,
        counts,
        now,
    );
    let mut events = events::collect(
        old,
        &status,
        &fleet.schedule,
        &gates,
        &excluded,
        conflict.as_deref(),
    );
    events.extend(
        gates
            .request_events
            .iter()
            .map(|(reason, note)| EventIntent {
                warning: false,
                reason,
                note: note.clone(),
            }),
    );
    let wake_at = wake::next(&slots, &plan, now, gates.active);
    let slots = slots.decided(&fleet);
    Desired {
        shards: Some(cut.shards),
        rendering: Some(cut.rendering.keep(fleet)),
        stale: cut.stale,
        status,
        events,
        wake_at,
        slots,
        check_minutes: cut.check_minutes,
    }
}

fn halted_message(halted: &BTreeSet<String>) -> String {
    let models: Vec<&str> = halted.iter().map(String::as_str).collect();
    format!(
        "rollout halted for model(s) {}: failure threshold crossed; change spec.firmware to resume",
        models.join(", ")
    )
}

fn excluded_message(excluded: &[Excluded]) -> String {
    excluded
        .iter()
        .map(|e| e.message.as_str())
        .collect::<Vec<_>>()
        .join("; ")
}
/// A condition, keeping the old transition time when nothing about it changed (so an
/// unchanged status compares equal and is not written).
pub(crate) fn cond(
    old: &[Condition],
    type_: &str,
    status: bool,
    reason: &str,
    message: &str,
    now: DateTime<Utc>,
) -> Condition {
    let status = if status { "True" } else { "False" }.to_owned();
    let previous = old.iter().find(|c| c.type_ == type_);
    let last_transition_time = match previous {
        Some(p) if p.status == status => p.last_transition_time.clone(),
        _ => Time(to_timestamp(now)),
    };
    Condition {
        type_: type_.to_owned(),
        status,
        reason: reason.to_owned(),
        message: message.to_owned(),
        last_transition_time,
        observed_generation: None,
    }
}

/// chrono → jiff, at the edge between schedule arithmetic and API timestamps.
pub fn to_timestamp(t: DateTime<Utc>) -> Timestamp {
    Timestamp::new(t.timestamp(), t.timestamp_subsec_nanos() as i32)
        .unwrap_or(Timestamp::UNIX_EPOCH)
}

/// Duration from `now` to `at`, at least one second.
pub fn until(now: DateTime<Utc>, at: DateTime<Utc>) -> std::time::Duration {
    (at - now)
        .max(Duration::seconds(1))
        .to_std()
        .unwrap_or(std::time::Duration::from_secs(1))
}
#[cfg(test)]
mod tests;
