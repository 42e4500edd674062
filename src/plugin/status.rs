//! `kubectl phonefleet status`: one schedule's rollout at a glance, from its status and its
//! last events.

use std::fmt::Write as _;
use std::io::Write;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Event;
use kube::api::ListParams;
use kube::{Api, ResourceExt};
use serde::Serialize;

use super::{PluginError, Session, StatusFormat};
use crate::api::{PhoneSchedule, PhoneScheduleStatus};
use crate::plan_report::utc;

/// Events shown.
const LAST_EVENTS: usize = 10;

/// What `status -o json|yaml` prints.
#[derive(Serialize, Debug)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub namespace: String,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub firmware: Option<String>,
    pub paused: bool,
    pub status: PhoneScheduleStatus,
    pub events: Vec<EventLine>,
}

#[derive(Serialize, Debug)]
#[serde(rename_all = "camelCase")]
pub struct EventLine {
    pub time: String,
    #[serde(rename = "type")]
    pub type_: String,
    pub reason: String,
    pub message: String,
}

pub async fn run(
    session: &Session,
    name: Option<&str>,
    all_namespaces: bool,
    format: StatusFormat,
    watch: bool,
    out: &mut impl Write,
) -> Result<(), PluginError> {
    let schedules: Vec<PhoneSchedule> = match name {
        Some(name) => vec![session.schedule(name).await?],
        None if all_namespaces => {
            Api::<PhoneSchedule>::all(session.client.clone())
                .list(&ListParams::default())
                .await?
                .items
        }
        None => {
            session
                .schedules()
                .list(&ListParams::default())
                .await?
                .items
        }
    };
    let mut reports = Vec::new();
    for schedule in &schedules {
        reports.push(report(session, schedule).await?);
    }
    print(&reports, format, name.is_some(), out)?;
    if let (true, Some(name)) = (watch, name) {
        let versions = crate::live::schedule_versions(session.schedules(), name);
        futures::pin_mut!(versions);
        // The first version is the one just printed.
        let mut last = schedules.first().and_then(|s| s.status.clone());
        while let Some(schedule) = versions.next().await {
            let schedule = schedule?;
            if schedule.status != last {
                last = schedule.status.clone();
                print(&[report(session, &schedule).await?], format, true, out)?;
            }
        }
    }
    Ok(())
}

fn print(
    reports: &[Report],
    format: StatusFormat,
    one: bool,
    out: &mut impl Write,
) -> Result<(), PluginError> {
    let encode = |e: &dyn std::fmt::Display| PluginError::Encode(e.to_string());
    match format {
        StatusFormat::Json if one => {
            serde_json::to_writer_pretty(&mut *out, &reports[0]).map_err(|e| encode(&e))?;
            writeln!(out)?;
        }
        StatusFormat::Json => {
            serde_json::to_writer_pretty(&mut *out, reports).map_err(|e| encode(&e))?;
            writeln!(out)?;
        }
        StatusFormat::Yaml if one => {
            out.write_all(
                serde_yaml_ng::to_string(&reports[0])
                    .map_err(|e| encode(&e))?
                    .as_bytes(),
            )?;
        }
        StatusFormat::Yaml => out.write_all(
            serde_yaml_ng::to_string(reports)
                .map_err(|e| encode(&e))?
                .as_bytes(),
        )?,
        StatusFormat::Text => {
            for r in reports {
                out.write_all(text(r, chrono::Utc::now()).as_bytes())?;
            }
        }
    }
    Ok(out.flush()?)
}

async fn report(session: &Session, schedule: &PhoneSchedule) -> Result<Report, PluginError> {
    let namespace = schedule.namespace().unwrap_or_default();
    let name = schedule.name_any();
    let events: Api<Event> = Api::namespaced(session.client.clone(), &namespace);
    let mut items = events
        .list(&ListParams::default().fields(&format!(
            "involvedObject.kind=PhoneSchedule,involvedObject.name={name}"
        )))
        .await?
        .items;
    let time = |e: &Event| {
        e.last_timestamp
            .as_ref()
            .map(|t| t.0)
            .or_else(|| e.event_time.as_ref().map(|t| t.0))
            .or_else(|| e.metadata.creation_timestamp.as_ref().map(|t| t.0))
    };
    items.sort_by_key(|e| time(e));
    let events = items
        .iter()
        .rev()
        .take(LAST_EVENTS)
        .rev()
        .map(|e| EventLine {
            time: time(e).map(|t| t.to_string()).unwrap_or_default(),
            type_: e.type_.clone().unwrap_or_default(),
            reason: e.reason.clone().unwrap_or_default(),
            message: e.message.clone().unwrap_or_default(),
        })
        .collect();
    Ok(Report {
        namespace,
        name,
        firmware: schedule.spec.firmware.as_ref().map(|f| f.version.clone()),
        paused: schedule.spec.rollout.paused,
        status: schedule.status.clone().unwrap_or_default(),
        events,
    })
}

fn when(t: Option<chrono::DateTime<chrono::Utc>>, now: chrono::DateTime<chrono::Utc>) -> String {
    match t {
        None => "-".to_owned(),
        Some(t) if t >= now => format!("{} (in {})", utc(t), span(t - now)),
        Some(t) => format!("{} ({} ago)", utc(t), span(now - t)),
    }
}

/// A duration as kubectl writes ages: `3d4h`, `5h12m`, `7m`.
pub fn span(d: chrono::Duration) -> String {
    let minutes = d.num_minutes().max(0);
    let (days, hours, mins) = (minutes / 1440, minutes / 60 % 24, minutes % 60);
    if days > 0 {
        format!("{days}d{hours}h")
    } else if hours > 0 {
        format!("{hours}h{mins}m")
    } else {
        format!("{mins}m")
    }
}

/// The text report of one schedule.
pub fn text(r: &Report, now: chrono::DateTime<chrono::Utc>) -> String {
    let s = &r.status;
    let mut o = String::new();
    let counts = s.counts.clone().unwrap_or_default();
    let _ = writeln!(o, "PhoneSchedule {}/{}", r.namespace, r.name);
    let _ = writeln!(
        o,
        "  phase:       {}{}",
        s.phase.as_deref().unwrap_or("-"),
        if r.paused {
            " (spec.rollout.paused)"
        } else {
            ""
        }
    );
    let _ = writeln!(
        o,
        "  firmware:    {}",
        r.firmware.as_deref().unwrap_or("none")
    );
    let _ = writeln!(o, "  stage:       {}", s.stage.as_deref().unwrap_or("-"));
    let _ = writeln!(
        o,
        "  phones:      {} upgraded of {}, {} in progress, {} failed, {} pending",
        counts.upgraded, counts.total, counts.in_progress, counts.failed, counts.pending
    );
    let halted = s
        .rollout
        .as_ref()
        .map(|r| r.halted_models.join(", "))
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "none".to_owned());
    let _ = writeln!(o, "  halted:      {halted}");
    let _ = writeln!(o, "  next window: {}", when(s.next_window, now));
    let _ = writeln!(o, "  completion:  {}", when(s.predicted_completion, now));
    if !s.stages.is_empty() {
        let released = s.rollout.as_ref().map_or(0, |r| r.released_stage as usize);
        let _ = writeln!(o, "  gates:");
        let _ = writeln!(
            o,
            "    {:<14} {:>8} {:>7} {:>9} {:>7}  GATE",
            "STAGE", "PHONES", "ACTIVE", "UPGRADED", "FAILED"
        );
        for (i, st) in s.stages.iter().enumerate() {
            let _ = writeln!(
                o,
                "    {:<14} {:>8} {:>7} {:>9} {:>7}  {}",
                st.name,
                st.phones,
                st.in_progress,
                st.upgraded,
                st.failed,
                if i <= released { "released" } else { "closed" }
            );
        }
    }
    if !s.sites.is_empty() {
        let _ = writeln!(o, "  sites:");
        let _ = writeln!(
            o,
            "    {:<16} {:>7} {:>9} {:>7} {:>7}  {:<6} NEXT WINDOW",
            "SITE", "PHONES", "UPGRADED", "ACTIVE", "FAILED", "WINDOW"
        );
        for site in &s.sites {
            let _ = writeln!(
                o,
                "    {:<16} {:>7} {:>9} {:>7} {:>7}  {:<6} {}",
                site.name,
                site.phones,
                site.upgraded,
                site.in_progress,
                site.failed,
                if site.window_open { "open" } else { "closed" },
                site.next_window.map_or_else(|| "-".to_owned(), utc)
            );
        }
    }
    if let Some(rollout) = s.rollout.as_ref().filter(|r| !r.requests.is_empty()) {
        let _ = writeln!(o, "  requests carried out:");
        for h in &rollout.requests {
            let _ = writeln!(
                o,
                "    {} {:?} {}{}{}",
                utc(h.at),
                h.kind,
                h.id,
                h.model
                    .as_deref()
                    .map(|m| format!(" model={m}"))
                    .unwrap_or_default(),
                h.mac
                    .as_deref()
                    .map(|m| format!(" mac={m}"))
                    .unwrap_or_default()
            );
        }
    }
    for c in &s.conditions {
        let _ = writeln!(
            o,
            "  condition {}={} ({}): {}",
            c.type_, c.status, c.reason, c.message
        );
    }
    if !r.events.is_empty() {
        let _ = writeln!(o, "  events:");
        for e in &r.events {
            let _ = writeln!(o, "    {} {} {}: {}", e.time, e.type_, e.reason, e.message);
        }
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_read_like_kubectl_ages() {
        assert_eq!(span(chrono::Duration::minutes(7)), "7m");
        assert_eq!(span(chrono::Duration::minutes(312)), "5h12m");
        assert_eq!(span(chrono::Duration::minutes(3 * 1440 + 250)), "3d4h");
    }
}
