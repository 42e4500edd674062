//! The controller's decision, as a pure function: from what was observed (the schedule, the
//! sites of its namespace, the phones' progress, what the cluster already holds) and `now`, the
//! desired children, status, events and next wake-up. No I/O and no clock here, so every rule
//! of the reconcile is a unit test.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use chrono_tz::Tz;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;

use crate::api::{
    PhoneCounts, PhoneSchedule, PhoneScheduleStatus, PhoneSite, SiteSummary, StageSummary,
};
use crate::children::{
    self, INDEX_KEY, IndexFirmware, IndexPhone, IndexSlot, MAX_SHARD_BYTES, PhoneProgress,
    PhoneState, ShardIndex,
};
use crate::controller::gating::{self, GateEvent, GatePolicy, GatedPhone};
use crate::core::{self, CheckWindow, Fleet, LocalTime, LocalWindow, Mac, Site, stage_ranking};
use crate::render::{self, FirmwarePath, Format, PhoneConfig, RolloutSlot, ServerUrl};
use crate::selector::Selector;
use crate::validate::{self, ModelTable};

/// Condition types, as `kubectl wait --for=condition=…` names them.
pub mod condition {
    pub const READY: &str = "Ready";
    pub const PROGRESSING: &str = "Progressing";
    pub const DEGRADED: &str = "Degraded";
}

/// Condition and event reasons: a fixed set, so they can label metrics.
pub mod reason {
    pub const RECONCILED: &str = "Reconciled";
    pub const INVALID_SPEC: &str = "InvalidSpec";
    pub const NO_MATCHING_SITES: &str = "NoMatchingSites";
    pub const NO_FIRMWARE: &str = "NoFirmware";
    pub const ROLLOUT_PROGRESSING: &str = "RolloutProgressing";
    pub const ROLLOUT_PAUSED: &str = "RolloutPaused";
    pub const ROLLOUT_COMPLETE: &str = "RolloutComplete";
    pub const ROLLOUT_HALTED: &str = "RolloutHalted";
    pub const STAGE_RELEASED: &str = "StageReleased";
    pub const SITE_CONFLICT: &str = "SiteConflict";
    pub const INVALID_SITE: &str = "InvalidSite";
    pub const UNKNOWN_MODEL: &str = "UnknownModel";
    pub const AS_EXPECTED: &str = "AsExpected";
}

/// Phases shown in `kubectl get phoneschedules`.
pub mod phase {
    pub const INVALID: &str = "Invalid";
    pub const PENDING: &str = "Pending";
    pub const IDLE: &str = "Idle";
    pub const PAUSED: &str = "Paused";
    pub const HALTED: &str = "Halted";
    pub const PROGRESSING: &str = "Progressing";
    pub const COMPLETED: &str = "Completed";
}

/// Everything the decision depends on.
pub struct Inputs<'a> {
    pub schedule: &'a PhoneSchedule,
    /// PhoneSchedules of the same namespace (this one included), for site conflicts.
    pub schedules: &'a [Arc<PhoneSchedule>],
    /// PhoneSites of the same namespace.
    pub sites: &'a [Arc<PhoneSite>],
    /// Latest progress per phone, from the provisioning server.
    pub progress: &'a HashMap<Mac, PhoneProgress>,
    /// The slots the phones were last given (so a phone inside its slot keeps it).
    pub previous_slots: &'a HashMap<Mac, IndexSlot>,
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

/// One rendered-config ConfigMap as it should be.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Shard {
    pub name: String,
    pub site: String,
    /// Hash of the content, stored in the ConfigMap's annotation.
    pub hash: String,
    /// Whether the cluster's copy differs (by hash): only changed shards are written.
    pub changed: bool,
    /// Which [`SiteFiles`] and which phones of it (positions in its MAC order).
    files: usize,
    phones: std::ops::Range<usize>,
}

/// Index bytes budgeted per phone when cutting shards (a phone's index entry is ~120 bytes).
const INDEX_BYTES_PER_PHONE: usize = 200;

/// How one site's files are laid out: its phones in MAC order, with what their files need.
#[derive(Clone, Debug)]
struct SiteFiles {
    site: usize,
    check_minutes: u32,
    cap: u32,
    order: Vec<usize>,
}

/// What any shard can be rendered again from.
#[derive(Clone, Debug)]
pub struct Rendering {
    fleet: Fleet,
    schedule: String,
    server_url: ServerUrl,
    firmware: Option<IndexFirmware>,
    sites: Vec<SiteFiles>,
}

fn shards_of_site(shards: &[Shard], site: &str) -> usize {
    shards.iter().filter(|s| s.site == site).count()
}

/// The phone at `pos` of a site's MAC order: its bare MAC, its file and its index entry.
fn render_entry(
    fleet: &Fleet,
    r: &Rendering,
    slots: &HashMap<Mac, IndexSlot>,
    files: &SiteFiles,
    pos: usize,
) -> (String, render::RenderedFile, IndexPhone) {
    let site = &fleet.sites[files.site];
    let phone = &site.phones[files.order[pos]];
    let model = fleet.models[phone.model.0 as usize].as_str();
    let slot = slots.get(&phone.mac).copied();
    let file = phone_file(&PhoneFile {
        family: phone.family,
        mac: phone.mac,
        model,
        site,
        check_minutes: files.check_minutes,
        slot,
        firmware: fleet.schedule.firmware.as_ref(),
        provisioning: &fleet.schedule.provisioning,
        server_url: &r.server_url,
    });
    let entry = IndexPhone {
        model: model.to_owned(),
        file: file.name.clone(),
        slot,
    };
    (phone.mac.bare().to_string(), file, entry)
}

/// The index of the phones at `range` of a site's MAC order, as a data entry.
fn index_entry(
    fleet: &Fleet,
    r: &Rendering,
    slots: &HashMap<Mac, IndexSlot>,
    files: &SiteFiles,
    range: std::ops::Range<usize>,
) -> (String, String) {
    let site = &fleet.sites[files.site];
    let index = ShardIndex {
        schedule: r.schedule.clone(),
        site: site.name.clone(),
        time_zone: site.time_zone.name().to_owned(),
        cap: files.cap,
        firmware: r.firmware.clone(),
        phones: range
            .map(|pos| {
                let phone = &site.phones[files.order[pos]];
                let model = fleet.models[phone.model.0 as usize].clone();
                let file = Format::of(phone.family).file_name(phone.mac);
                let slot = slots.get(&phone.mac).copied();
                (
                    phone.mac.bare().to_string(),
                    IndexPhone { model, file, slot },
                )
            })
            .collect(),
    };
    // Serialising plain structs with string keys cannot fail.
    (
        INDEX_KEY.to_owned(),
        serde_json::to_string(&index).unwrap_or_default(),
    )
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
    pub slots: HashMap<Mac, IndexSlot>,
    /// Minutes of each site's check window inside a slot.
    pub check_minutes: BTreeMap<String, u32>,
}

/// A site this schedule may not use, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Excluded {
    site: String,
    reason: &'static str,
    message: String,
}

/// Decides. See the module documentation.
pub fn compute(inputs: &Inputs<'_>) -> Desired {
    let schedule = inputs.schedule;
    let old = schedule.status.clone().unwrap_or_default();
    let namespace = schedule.namespace().unwrap_or_default();
    let full_name = format!("{namespace}/{}", schedule.name_any());
    let document = format!("PhoneSchedule {full_name}");

    let invalid = |message: String| invalid_spec(inputs, &old, message);
    let selector = match Selector::parse(&schedule.spec.site_selector) {
        Ok(s) => s,
        Err(e) => return invalid(format!("spec.siteSelector.{e}")),
    };
    let mut models = ModelTable::default();
    let checked = match validate::schedule(&document, &full_name, &schedule.spec, &mut models) {
        Ok(s) => s,
        Err(e) => return invalid(e.to_string()),
    };

    // Sites: selected, not claimed by an older schedule, valid, and no MAC in two sites.
    let mut excluded: Vec<Excluded> = Vec::new();
    let mut sites: Vec<(Site, &PhoneSite)> = Vec::new();
    let mut owner_of_mac: HashMap<Mac, String> = HashMap::new();
    let mut selected: Vec<&PhoneSite> = inputs
        .sites
        .iter()
        .map(Arc::as_ref)
        .filter(|s| selector.matches(s.labels()))
        .collect();
    selected.sort_by_key(|s| s.name_any());
    for site in selected {
        let site_name = site.name_any();
        if let Some(winner) = older_claimant(inputs, site) {
            excluded.push(Excluded {
                message: format!(
                    "site {site_name} is already scheduled by the older PhoneSchedule {winner}"
                ),
                site: site_name,
                reason: reason::SITE_CONFLICT,
            });
            continue;
        }
        let doc = format!("PhoneSite {namespace}/{site_name}");
        match validate::site(&doc, &site_name, &site.spec, &mut models) {
            Err(e) => excluded.push(Excluded {
                site: site_name,
                reason: reason::INVALID_SITE,
                message: e.to_string(),
            }),
            Ok(checked_site) => {
                let clash = checked_site
                    .phones
                    .iter()
                    .find_map(|p| owner_of_mac.get(&p.mac).map(|other| (p.mac, other.clone())));
                if let Some((mac, other)) = clash {
                    excluded.push(Excluded {
                        message: format!(
                            "phone {mac} of site {site_name} is already in site {other}"
                        ),
                        site: site_name,
                        reason: reason::INVALID_SITE,
                    });
                    continue;
                }
                for p in &checked_site.phones {
                    owner_of_mac.insert(p.mac, site_name.clone());
                }
                if let Some(message) = unknown_models_message(&doc, &checked_site.unplaced_models) {
                    // Reported, and the site planned without those phones: never guessed.
                    excluded.push(Excluded {
                        site: site_name.clone(),
                        reason: reason::UNKNOWN_MODEL,
                        message,
                    });
                }
                sites.push((checked_site, site));
            }
        }
    }
    let fleet = Fleet {
        schedule: checked,
        sites: sites.iter().map(|(s, _)| s.clone()).collect(),
        models: models.into_names(),
    };
    decide(inputs, &old, fleet, excluded)
}

/// What to tell the operator about phones no family places: every model, its phones, the site.
pub fn unknown_models_message(document: &str, unplaced: &[core::UnplacedPhone]) -> Option<String> {
    if unplaced.is_empty() {
        return None;
    }
    let mut by_model: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for p in unplaced {
        by_model
            .entry(p.model.as_str())
            .or_default()
            .push(p.mac.to_string());
    }
    let models: Vec<String> = by_model
        .iter()
        .map(|(model, macs)| format!("model '{model}' ({})", macs.join(", ")))
        .collect();
    Some(format!(
        "{document}: {} in no phone family (see docs/phones.md); set spec.phones[].family to xstim, yealink or grandstream; left out of the plan and served no file",
        models.join("; ")
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
    status.phase = Some(phase::INVALID.into());
    let conditions = vec![
        cond(
            &old.conditions,
            condition::READY,
            false,
            reason::INVALID_SPEC,
            &message,
            now,
        ),
        cond(
            &old.conditions,
            condition::PROGRESSING,
            false,
            reason::INVALID_SPEC,
            "the spec is invalid",
            now,
        ),
        cond(
            &old.conditions,
            condition::DEGRADED,
            true,
            reason::INVALID_SPEC,
            &message,
            now,
        ),
    ];
    status.conditions = conditions;
    let events = transition_event(old, &status, reason::INVALID_SPEC, true, &message);
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

/// A phone taking part in the rollout, with what decides its file.
struct Member<'a> {
    mac: Mac,
    model: &'a str,
    stage: u32,
    state: Option<PhoneState>,
}

fn decide(
    inputs: &Inputs<'_>,
    old: &PhoneScheduleStatus,
    fleet: Fleet,
    excluded: Vec<Excluded>,
) -> Desired {
    let now = inputs.now;
    let schedule = &fleet.schedule;
    let firmware = schedule.firmware.as_ref();
    let rollout = &schedule.rollout;

    // Operator requests (retry, unhalt, promote) for this version: failures they forgive
    // count as not yet upgraded, so those phones are planned again.
    let requests = firmware.map(|fw| {
        super::requests::take(
            inputs.schedule.annotations(),
            &fw.version,
            old.rollout.as_ref(),
            now,
        )
    });

    // Who takes part, in which stage, and what the server has seen of them.
    let mut members_by_site: Vec<Vec<Member<'_>>> = Vec::with_capacity(fleet.sites.len());
    for site in &fleet.sites {
        let model_of: HashMap<Mac, &str> = site
            .phones
            .iter()
            .map(|p| (p.mac, fleet.models[p.model.0 as usize].as_str()))
            .collect();
        let (macs, bounds) = stage_ranking(site, schedule);
        let mut members = Vec::with_capacity(macs.len());
        for (stage, range) in bounds.windows(2).enumerate() {
            for &mac in &macs[range[0]..range[1]] {
                let model = model_of.get(&mac).copied().unwrap_or_default();
                let state = firmware.and_then(|fw| {
                    inputs
                        .progress
                        .get(&mac)
                        .filter(|p| p.target == fw.version)
                        .filter(|p| {
                            p.state != PhoneState::Failed
                                || !requests
                                    .as_ref()
                                    .is_some_and(|r| r.forgives(mac, model, p.since))
                        })
                        .map(|p| p.state)
                });
                members.push(Member {
                    mac,
                    model,
                    stage: stage as u32,
                    state,
                });
            }
        }
        members_by_site.push(members);
    }

    // Gates.
    let mut request_events: Vec<(&'static str, String)> = Vec::new();
    let (rollout_state, gate_events) = match firmware {
        Some(fw) => {
            let gated: Vec<GatedPhone<'_>> = members_by_site
                .iter()
                .flatten()
                .map(|m| GatedPhone {
                    mac: m.mac,
                    model: m.model,
                    stage: m.stage,
                    state: m.state,
                })
                .collect();
            let policy = GatePolicy {
                stages: rollout.stages.len() as u32,
                success: rollout.success_threshold,
                failure: rollout.failure_threshold,
                paused: rollout.paused,
            };
            let previous = match &requests {
                Some(r) => r.unhalted(old.rollout.as_ref()),
                None => old.rollout.clone(),
            };
            let (mut state, events) =
                gating::evaluate(&fw.version, previous.as_ref(), &gated, policy);
            if let Some(r) = &requests {
                let names: Vec<String> = rollout.stages.iter().map(|s| s.name.clone()).collect();
                let was_halted = old
                    .rollout
                    .as_ref()
                    .filter(|o| o.firmware_version == fw.version)
                    .map(|o| o.halted_models.clone())
                    .unwrap_or_default();
                request_events = r.finish(&mut state, &names, &was_halted);
            }
            (Some(state), events)
        }
        None => (None, Vec::new()),
    };
    let halted: BTreeSet<&str> = rollout_state
        .iter()
        .flat_map(|s| s.halted_models.iter().map(String::as_str))
        .collect();
    let released = rollout_state.as_ref().map_or(0, |s| s.released_stage);
    let active = firmware.is_some() && !rollout.paused;

    // A phone learns a new slot only when it next fetches its file: slots handed out now start
    // no earlier than the site's announcement lead ahead (one "repeatedly" interval for the
    // minute-level families; a day and the check window for a Grandstream phone that holds a
    // slot file, since it then checks daily), and a slot already announced (starting before
    // that) is kept, so the phones that know it are not moved under their feet.
    let site_lead: HashMap<&str, Duration> = fleet
        .sites
        .iter()
        .zip(&members_by_site)
        .map(|(site, members)| {
            let family_of: HashMap<Mac, core::PhoneFamily> =
                site.phones.iter().map(|p| (p.mac, p.family)).collect();
            let check = grandstream_check_minutes(schedule);
            let lead = members
                .iter()
                .filter_map(|m| family_of.get(&m.mac).map(|f| (m, *f)))
                .map(|(m, family)| {
                    let done = matches!(m.state, Some(PhoneState::Upgraded | PhoneState::Failed));
                    let holds = !done && inputs.previous_slots.contains_key(&m.mac);
                    core::family::announcement_lead(family, &schedule.provisioning, holds, check)
                })
                .max()
                .unwrap_or_else(|| {
                    core::family::announcement_lead(
                        core::PhoneFamily::Xstim,
                        &schedule.provisioning,
                        false,
                        0,
                    )
                });
            (site.name.as_str(), lead)
        })
        .collect();
    // Plus the time a decision takes to reach the server (see `Inputs::propagation`).
    let propagation = inputs.propagation.max(Duration::zero());
    let plan_from_of =
        |site: &str| now + site_lead.get(site).copied().unwrap_or_default() + propagation;
    let site_of: HashMap<Mac, &str> = fleet
        .sites
        .iter()
        .flat_map(|s| s.phones.iter().map(move |p| (p.mac, s.name.as_str())))
        .collect();

    // Phones keeping the slot they have (announced, inside it, or mid-download/reboot) and
    // phones out of the plan (done, failed, halted, or keeping their slot).
    let mut kept: HashMap<Mac, IndexSlot> = HashMap::new();
    let mut not_planned: HashSet<Mac> = HashSet::new();
    for m in members_by_site.iter().flatten() {
        let busy = matches!(
            m.state,
            Some(PhoneState::Downloading | PhoneState::Rebooting)
        );
        let done = matches!(m.state, Some(PhoneState::Upgraded | PhoneState::Failed));
        if done || halted.contains(m.model) {
            not_planned.insert(m.mac);
            continue;
        }
        let plan_from = plan_from_of(site_of.get(&m.mac).copied().unwrap_or_default());
        if let Some(prev) = inputs.previous_slots.get(&m.mac)
            && active
            && (busy || (prev.start < plan_from.max(now + Duration::seconds(1)) && now < prev.end))
        {
            kept.insert(m.mac, *prev);
            not_planned.insert(m.mac);
        } else if busy {
            not_planned.insert(m.mac);
        }
    }
    let plan = core::plan_with_leads(&fleet, now, &not_planned, &|site| {
        site_lead
            .get(site.name.as_str())
            .copied()
            .unwrap_or_default()
    });

    // The slots rendered: kept ones, and planned ones of released stages.
    let mut slots: HashMap<Mac, IndexSlot> = HashMap::new();
    if active {
        slots.extend(kept.iter().map(|(m, s)| (*m, *s)));
        for site_plan in &plan.sites {
            for (slot, macs) in site_plan.slots_with_phones() {
                if slot.stage <= released {
                    for &mac in macs {
                        slots.insert(
                            mac,
                            IndexSlot {
                                stage: slot.stage,
                                start: slot.start,
                                end: slot.end,
                            },
                        );
                    }
                }
            }
        }
    }

    // Render every phone's file and cut each site's files into shards. Only one shard's files
    // are held at a time: the decision keeps what it needs to render a shard again
    // ([`Desired::shard_data`]), so a 100,000-phone fleet is never in memory all at once.
    let mut shards = Vec::new();
    let mut check_minutes_by_site = BTreeMap::new();
    let mut desired_names = BTreeSet::new();
    let schedule_name = inputs.schedule.name_any();
    let mut rendering = Rendering {
        schedule: format!(
            "{}/{schedule_name}",
            inputs.schedule.namespace().unwrap_or_default()
        ),
        server_url: inputs.server_url.clone(),
        firmware: firmware.filter(|_| active).map(|fw| IndexFirmware {
            version: fw.version.clone(),
            file: fw.file.clone(),
            models: fw
                .models
                .iter()
                .flatten()
                .map(|id| fleet.models[id.0 as usize].clone())
                .collect(),
        }),
        sites: Vec::with_capacity(fleet.sites.len()),
        fleet: Fleet {
            schedule: fleet.schedule.clone(),
            sites: Vec::new(),
            models: fleet.models.clone(),
        },
    };
    for (index, (site, site_plan)) in fleet.sites.iter().zip(&plan.sites).enumerate() {
        let mut order: Vec<usize> = (0..site.phones.len()).collect();
        order.sort_by_key(|&i| site.phones[i].mac);
        let files = SiteFiles {
            site: index,
            check_minutes: site_plan.check_minutes,
            cap: site_plan.cap.get(),
            order,
        };
        check_minutes_by_site.insert(site.name.clone(), files.check_minutes);
        let mut cut = |range: std::ops::Range<usize>,
                       entries: Vec<(String, String)>,
                       shards: &mut Vec<Shard>| {
            let name = children::config_map_name(
                &schedule_name,
                &site.name,
                shards_of_site(shards, &site.name),
            );
            let hash =
                children::content_hash(entries.iter().map(|(k, v)| (k.as_str(), v.as_str())));
            let changed = inputs.existing_shards.get(&name) != Some(&hash);
            desired_names.insert(name.clone());
            shards.push(Shard {
                name,
                site: site.name.clone(),
                hash,
                changed,
                files: index,
                phones: range,
            });
        };
        let mut start = 0;
        let mut used = 0;
        let mut current: Vec<(String, String)> = Vec::new();
        for pos in 0..files.order.len() {
            let (_, file, _) = render_entry(&fleet, &rendering, &slots, &files, pos);
            let size = file.name.len() + file.body.len() + INDEX_BYTES_PER_PHONE;
            if pos > start && used + size > MAX_SHARD_BYTES {
                current.push(index_entry(&fleet, &rendering, &slots, &files, start..pos));
                cut(start..pos, std::mem::take(&mut current), &mut shards);
                start = pos;
                used = 0;
            }
            used += size;
            current.push((file.name, file.body));
        }
        if start < files.order.len() {
            current.push(index_entry(
                &fleet,
                &rendering,
                &slots,
                &files,
                start..files.order.len(),
            ));
            cut(start..files.order.len(), current, &mut shards);
        }
        rendering.sites.push(files);
    }
    rendering.fleet.sites = fleet.sites.clone();
    let stale = inputs
        .existing_shards
        .keys()
        .filter(|n| !desired_names.contains(*n))
        .cloned()
        .collect();

    // Status.
    let members: Vec<&Member<'_>> = members_by_site.iter().flatten().collect();
    let count = |f: &dyn Fn(&Member<'_>) -> bool| members.iter().filter(|m| f(m)).count() as u32;
    let upgraded = count(&|m| m.state == Some(PhoneState::Upgraded));
    let failed = count(&|m| m.state == Some(PhoneState::Failed));
    let in_progress = count(&|m| {
        matches!(
            m.state,
            Some(PhoneState::Downloading | PhoneState::Rebooting)
        )
    });
    let total = members.len() as u32;
    let remaining = count(&|m| m.state != Some(PhoneState::Upgraded) && !halted.contains(m.model));

    let stage_summaries: Vec<StageSummary> = if firmware.is_some() {
        rollout
            .stages
            .iter()
            .enumerate()
            .map(|(i, stage)| {
                let of_stage = || members.iter().filter(move |m| m.stage == i as u32);
                let with = |state: &[PhoneState]| {
                    of_stage()
                        .filter(|m| m.state.is_some_and(|s| state.contains(&s)))
                        .count() as u32
                };
                StageSummary {
                    name: stage.name.clone(),
                    phones: of_stage().count() as u32,
                    in_progress: with(&[PhoneState::Downloading, PhoneState::Rebooting]),
                    upgraded: with(&[PhoneState::Upgraded]),
                    failed: with(&[PhoneState::Failed]),
                }
            })
            .collect()
    } else {
        Vec::new()
    };

    let site_summaries: Vec<SiteSummary> = fleet
        .sites
        .iter()
        .zip(&members_by_site)
        .zip(&plan.sites)
        .map(|((site, members), site_plan)| SiteSummary {
            name: site.name.clone(),
            phones: members.len() as u32,
            upgraded: members
                .iter()
                .filter(|m| m.state == Some(PhoneState::Upgraded))
                .count() as u32,
            failed: members
                .iter()
                .filter(|m| m.state == Some(PhoneState::Failed))
                .count() as u32,
            in_progress: members
                .iter()
                .filter(|m| {
                    matches!(
                        m.state,
                        Some(PhoneState::Downloading | PhoneState::Rebooting)
                    )
                })
                .count() as u32,
            window_open: members
                .iter()
                .filter_map(|m| slots.get(&m.mac))
                .any(|s| s.start <= now && now < s.end),
            next_window: members
                .iter()
                .filter_map(|m| slots.get(&m.mac))
                .map(|s| s.start)
                .chain(site_plan.slots.iter().map(|s| s.start))
                .filter(|s| *s > now)
                .min()
                .filter(|_| {
                    active
                        && members.iter().any(|m| {
                            m.state != Some(PhoneState::Upgraded) && !halted.contains(m.model)
                        })
                }),
            completion: latest(
                site_plan.completion,
                members
                    .iter()
                    .filter_map(|m| kept.get(&m.mac))
                    .map(|s| s.end)
                    .max(),
            ),
        })
        .collect();

    let next_window = slots
        .values()
        .map(|s| s.start)
        .filter(|s| *s > now)
        .min()
        .or_else(|| {
            plan.sites
                .iter()
                .flat_map(|s| s.slots.iter())
                .map(|s| s.start)
                .filter(|s| *s > now)
                .min()
        })
        .filter(|_| active && remaining > 0);
    let completion = if firmware.is_some() && remaining > 0 {
        latest(plan.completion, kept.values().map(|s| s.end).max())
    } else {
        None
    };

    let phase_now = if fleet.sites.is_empty() {
        phase::PENDING
    } else if firmware.is_none() {
        phase::IDLE
    } else if !halted.is_empty() {
        phase::HALTED
    } else if remaining == 0 {
        phase::COMPLETED
    } else if rollout.paused {
        phase::PAUSED
    } else {
        phase::PROGRESSING
    };

    let phone_count: usize = fleet.sites.iter().map(|s| s.phones.len()).sum();
    let ready = if fleet.sites.is_empty() {
        let message = if excluded.is_empty() {
            "the siteSelector matches no PhoneSite in this namespace".to_owned()
        } else {
            excluded_message(&excluded)
        };
        (false, reason::NO_MATCHING_SITES, message)
    } else {
        (
            true,
            reason::RECONCILED,
            format!(
                "{phone_count} phones in {} sites have their files",
                fleet.sites.len()
            ),
        )
    };
    let progressing = match phase_now {
        phase::PROGRESSING => (
            true,
            reason::ROLLOUT_PROGRESSING,
            format!(
                "stage {} of {} released; {upgraded}/{total} upgraded",
                released + 1,
                rollout.stages.len()
            ),
        ),
        phase::PAUSED => (
            false,
            reason::ROLLOUT_PAUSED,
            "spec.rollout.paused is true".to_owned(),
        ),
        phase::COMPLETED => (
            false,
            reason::ROLLOUT_COMPLETE,
            format!("{upgraded}/{total} upgraded"),
        ),
        phase::HALTED => (
            remaining > 0 && !rollout.paused,
            reason::ROLLOUT_HALTED,
            halted_message(&halted),
        ),
        phase::IDLE => (
            false,
            reason::NO_FIRMWARE,
            "no firmware set: steady-state configs only".to_owned(),
        ),
        _ => (false, reason::NO_MATCHING_SITES, "no sites".to_owned()),
    };
    let degraded = if !halted.is_empty() {
        (true, reason::ROLLOUT_HALTED, halted_message(&halted))
    } else if let Some(first) = excluded.first() {
        (true, first.reason, excluded_message(&excluded))
    } else {
        (
            false,
            reason::AS_EXPECTED,
            "no conflicts, invalid sites or halts".to_owned(),
        )
    };

    let stage_name = rollout_state
        .as_ref()
        .and_then(|s| rollout.stages.get(s.released_stage as usize))
        .map(|s| s.name.clone());
    let status = PhoneScheduleStatus {
        observed_generation: inputs.schedule.metadata.generation,
        phase: Some(phase_now.to_owned()),
        stage: stage_name,
        progress: firmware.map(|_| format!("{upgraded}/{total}")),
        counts: Some(PhoneCounts {
            total,
            pending: total - upgraded - failed - in_progress,
            in_progress,
            upgraded,
            failed,
        }),
        next_window,
        predicted_completion: completion,
        sites: site_summaries,
        stages: stage_summaries,
        rollout: rollout_state,
        conditions: vec![
            cond(
                &old.conditions,
                condition::READY,
                ready.0,
                ready.1,
                &ready.2,
                now,
            ),
            cond(
                &old.conditions,
                condition::PROGRESSING,
                progressing.0,
                progressing.1,
                &progressing.2,
                now,
            ),
            cond(
                &old.conditions,
                condition::DEGRADED,
                degraded.0,
                degraded.1,
                &degraded.2,
                now,
            ),
        ],
    };

    // Events: gate decisions, and transitions into states an operator must hear about.
    let mut events: Vec<EventIntent> = gate_events
        .iter()
        .map(|e| match e {
            GateEvent::StageReleased { stage, upgraded, total } => EventIntent {
                warning: false,
                reason: reason::STAGE_RELEASED,
                note: format!(
                    "released stage {} ({}) after {upgraded}/{total} phones of the earlier stages upgraded",
                    stage + 1,
                    rollout.stages.get(*stage as usize).map_or("", |s| s.name.as_str())
                ),
            },
            GateEvent::ModelHalted { model, failed, total } => EventIntent {
                warning: true,
                reason: reason::ROLLOUT_HALTED,
                note: format!(
                    "halted model {model}: {failed}/{total} phones failed, over the {}% threshold",
                    rollout.failure_threshold.get()
                ),
            },
        })
        .collect();
    events.extend(
        request_events
            .into_iter()
            .map(|(reason, note)| EventIntent {
                warning: false,
                reason,
                note,
            }),
    );
    if let Some(first) = excluded.first() {
        events.extend(transition_event(
            old,
            &status,
            first.reason,
            true,
            &excluded_message(&excluded),
        ));
    }
    if phase_now == phase::COMPLETED && old.phase.as_deref() != Some(phase::COMPLETED) {
        events.push(EventIntent {
            warning: false,
            reason: reason::ROLLOUT_COMPLETE,
            note: format!(
                "all {total} phones run firmware {}",
                firmware.map_or("", |f| f.version.as_str())
            ),
        });
    }

    // Wake at the next boundary: a slot opening (phones to release) or closing (missed phones
    // to re-plan).
    let wake_at = slots
        .values()
        .flat_map(|s| [s.start, s.end])
        .chain(
            plan.sites
                .iter()
                .flat_map(|s| s.slots.iter().map(|s| s.start)),
        )
        .filter(|t| *t > now)
        .min()
        .filter(|_| active);

    Desired {
        shards: Some(shards),
        rendering: Some(rendering),
        stale,
        status,
        events,
        wake_at,
        slots,
        check_minutes: check_minutes_by_site,
    }
}

impl Desired {
    /// The files and index of `shard`, rendered again (the decision keeps only their hash).
    pub fn shard_data(&self, shard: &Shard) -> BTreeMap<String, String> {
        let Some(r) = &self.rendering else {
            return BTreeMap::new();
        };
        let files = &r.sites[shard.files];
        let mut data: BTreeMap<String, String> = shard
            .phones
            .clone()
            .map(|pos| {
                let (_, file, _) = render_entry(&r.fleet, r, &self.slots, files, pos);
                (file.name, file.body)
            })
            .collect();
        let (key, index) = index_entry(&r.fleet, r, &self.slots, files, shard.phones.clone());
        data.insert(key, index);
        data
    }
}

/// Everything one phone's file depends on, once the decision is taken.
pub struct PhoneFile<'a> {
    pub mac: Mac,
    pub model: &'a str,
    pub family: core::PhoneFamily,
    pub site: &'a Site,
    pub check_minutes: u32,
    pub slot: Option<IndexSlot>,
    pub firmware: Option<&'a core::FirmwareTarget>,
    pub provisioning: &'a core::ProvisioningPolicy,
    pub server_url: &'a ServerUrl,
}

/// Renders one phone's file: with its slot's window and the firmware location when it has a
/// slot, the steady-state policy otherwise. The controller and `phonefleet render` both call
/// this, so what an operator previews is byte for byte what the phone is served.
pub fn phone_file(p: &PhoneFile<'_>) -> render::RenderedFile {
    let rollout_slot = match (p.slot, p.firmware) {
        (Some(slot), Some(fw)) => {
            FirmwarePath::new(&p.site.name, &fw.file)
                .ok()
                .map(|path| RolloutSlot {
                    firmware_version: fw.version.clone(),
                    firmware: path,
                    window: check_window(slot.start, p.site.time_zone, p.check_minutes),
                })
        }
        _ => None,
    };
    render::render(
        &PhoneConfig {
            mac: p.mac,
            model: p.model,
            family: p.family,
            provisioning: p.provisioning,
            slot: rollout_slot.as_ref(),
        },
        p.server_url,
    )
}

/// The check window a Grandstream slot gets: the schedule's check spread in whole hours (the
/// planner's whole-hour grid; Grandstream has no inactivity setting).
fn grandstream_check_minutes(schedule: &core::Schedule) -> u32 {
    let inactivity = schedule
        .provisioning
        .rollout_windows()
        .map_or(0, |w| w.inactivity_minutes);
    (schedule.rollout.check_spread_minutes.get() + inactivity)
        .div_ceil(60)
        .max(1)
        * 60
}

fn latest(a: Option<DateTime<Utc>>, b: Option<DateTime<Utc>>) -> Option<DateTime<Utc>> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

fn halted_message(halted: &BTreeSet<&str>) -> String {
    let models: Vec<&str> = halted.iter().copied().collect();
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

/// An event when the Degraded condition newly takes `reason` (not on every reconcile).
fn transition_event(
    old: &PhoneScheduleStatus,
    new: &PhoneScheduleStatus,
    reason: &'static str,
    warning: bool,
    note: &str,
) -> Vec<EventIntent> {
    let had = |s: &PhoneScheduleStatus| {
        s.conditions
            .iter()
            .any(|c| c.type_ == condition::DEGRADED && c.reason == reason && c.message == note)
    };
    if had(new) && !had(old) {
        vec![EventIntent {
            warning,
            reason,
            note: note.to_owned(),
        }]
    } else {
        Vec::new()
    }
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

/// The local check window of a slot starting at `start`: the slot's weekday and its first
/// `check_minutes` minutes, as the phone's file states them.
pub fn check_window(start: DateTime<Utc>, tz: Tz, check_minutes: u32) -> CheckWindow {
    use chrono::Datelike;
    let local = start.with_timezone(&tz);
    let begin = LocalTime::of(local.time());
    CheckWindow {
        weekday: local.weekday(),
        window: LocalWindow {
            start: begin,
            end: begin.wrapping_add(check_minutes),
        },
    }
}

/// Duration from `now` to `at`, at least one second.
pub fn until(now: DateTime<Utc>, at: DateTime<Utc>) -> std::time::Duration {
    (at - now)
        .max(Duration::seconds(1))
        .to_std()
        .unwrap_or(std::time::Duration::from_secs(1))
}

#[cfg(test)]
#[path = "desired_tests.rs"]
mod tests;
