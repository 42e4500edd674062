//! The JSON contract of `phonefleet plan -o json` (see docs/planner.md).

use std::io::Write;

use serde::Serialize;

use super::{local, utc};
use crate::core::mac::Mac;
use crate::core::plan::{Plan, SitePlan, Slot};

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct JsonPlan<'a> {
    schedule: &'a str,
    now: String,
    completion: Option<String>,
    warnings: Vec<String>,
    sites: Vec<JsonSite<'a>>,
    start: String,
    firmware: Option<&'a str>,
    paused: bool,
    stages: Vec<JsonStage<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct JsonStage<'a> {
    name: &'a str,
    percent: u32,
    phones: u64,
    start: Option<String>,
    end: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct JsonSite<'a> {
    name: &'a str,
    time_zone: &'a str,
    cap: u32,
    phones: u32,
    slot_minutes: u32,
    completion: Option<String>,
    slots: Vec<JsonSlot<'a>>,
    inventory: u32,
    check_minutes: u32,
    download_minutes: u32,
    unplaced: &'a [Mac],
    /// Families of the phones the firmware is for.
    families: Vec<&'static str>,
    /// Slots are whole local hours (a family present can only be told whole hours).
    whole_hour_slots: bool,
    /// No slot starts sooner after `now`: how long the site's phones take to hear of one.
    lead_minutes: u32,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct JsonSlot<'a> {
    stage: u32,
    start: String,
    end: String,
    local_start: String,
    local_end: String,
    phones: &'a [Mac],
    check_window: JsonCheckWindow,
}

/// The narrowed window the renderer gives the slot's phones.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct JsonCheckWindow {
    day: String,
    start: String,
    end: String,
}

fn slot<'a>(site: &'a SitePlan, s: &'a Slot) -> JsonSlot<'a> {
    let cw = s.check_window();
    JsonSlot {
        stage: s.stage,
        start: utc(s.start),
        end: utc(s.end),
        local_start: local(s.local_start),
        local_end: local(s.local_end),
        phones: site.phones_of(s),
        check_window: JsonCheckWindow {
            day: cw.weekday.to_string(),
            start: cw.window.start.to_string(),
            end: cw.window.end.to_string(),
        },
    }
}

fn document(plan: &Plan) -> JsonPlan<'_> {
    JsonPlan {
        schedule: &plan.schedule,
        now: utc(plan.now),
        completion: plan.completion.map(utc),
        warnings: plan.warnings.iter().map(ToString::to_string).collect(),
        sites: plan
            .sites
            .iter()
            .map(|site| JsonSite {
                name: &site.name,
                time_zone: site.time_zone.name(),
                cap: site.cap.get(),
                phones: site.phones,
                slot_minutes: site.slot_minutes,
                completion: site.completion.map(utc),
                slots: site.slots.iter().map(|s| slot(site, s)).collect(),
                inventory: site.inventory,
                check_minutes: site.check_minutes,
                download_minutes: site.download_minutes,
                unplaced: &site.unplaced,
                families: site.families.iter().map(|f| f.name()).collect(),
                whole_hour_slots: site.whole_hours,
                lead_minutes: site.lead_minutes,
            })
            .collect(),
        start: utc(plan.start),
        firmware: plan.firmware.as_deref(),
        paused: plan.paused,
        stages: plan
            .stages
            .iter()
            .map(|s| JsonStage {
                name: &s.name,
                percent: s.percent,
                phones: s.phones,
                start: s.start.map(utc),
                end: s.end.map(utc),
            })
            .collect(),
    }
}

/// Writes the plan as pretty-printed JSON. Same plan, same bytes.
pub fn write_json(plan: &Plan, out: impl Write) -> Result<(), serde_json::Error> {
    let mut out = std::io::BufWriter::new(out);
    serde_json::to_writer_pretty(&mut out, &document(plan))?;
    out.write_all(b"\n").map_err(serde_json::Error::io)?;
    out.flush().map_err(serde_json::Error::io)
}

/// The plan as a JSON string.
pub fn to_json(plan: &Plan) -> Result<String, serde_json::Error> {
    let mut buf = Vec::new();
    write_json(plan, &mut buf)?;
    Ok(String::from_utf8_lossy(&buf).into_owned())
}
