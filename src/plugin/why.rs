//! `kubectl phonefleet why MAC`: everything about one phone's rollout in one place: its site,
//! family, stage and slot (UTC and the site's local time), what the provisioning server last
//! saw from it (its note: last request, version, last refusal and why), its progress record,
//! and the file it is served now.
//!
//! The file is found the way the provisioning server finds it: the rendered-config ConfigMaps
//! are read into the server's own [`Index`], and the answer is the index's bytes for the file
//! name the phone requests, so what is printed is what the server would answer.

use std::io::Write;

use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::ListParams;
use kube::{Api, ResourceExt};
use serde::Serialize;

use super::{PluginError, Session, StatusFormat};
use crate::api::PhoneSite;
use crate::children::{
    COMPONENT_CONFIG, INDEX_KEY, LABEL_COMPONENT, LABEL_MANAGED_BY, MANAGED_BY, PhoneNote,
    PhoneProgress, PhoneState, RefusalReason, ShardIndex, note_key, notes_map_name,
    progress_map_name,
};
use crate::core::{Mac, PhoneFamily};
use crate::decision::{DECISION_KEY, ShardHeader};
use crate::render::Format;
use crate::server::index::Index;

/// A slot in UTC and in the site's time zone.
#[derive(Serialize, Debug, Clone, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct SlotReport {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    /// RFC 3339 in the site's time zone.
    pub start_local: String,
    pub end_local: String,
    /// Announced ahead of its stage's release: the server holds the firmware back until then.
    pub held: bool,
}

/// The file the server answers the phone with.
#[derive(Serialize, Debug, Clone, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct FileReport {
    pub name: String,
    pub content_type: String,
    /// The exact bytes served (the renderer's output is UTF-8 text).
    pub body: String,
}

/// Everything `why` says about one phone.
#[derive(Serialize, Debug, Clone, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct WhyReport {
    pub mac: Mac,
    pub namespace: String,
    pub schedule: String,
    pub site: String,
    pub time_zone: String,
    pub model: String,
    /// The inventory's family, else the model's; none when neither places it.
    pub family: Option<PhoneFamily>,
    /// The firmware version the rollout takes this phone's model to (none: no rollout for it
    /// now: no firmware, paused, halted, complete, or another model's firmware).
    pub target: Option<String>,
    /// The phone's stage, when it has a slot.
    pub stage: Option<u32>,
    /// The schedule's last released stage.
    pub released_stage: Option<u32>,
    pub slot: Option<SlotReport>,
    /// Its progress record (state towards `target`, since when).
    pub progress: Option<PhoneProgress>,
    /// What the provisioning server last saw from it.
    pub last_seen: Option<PhoneNote>,
    pub file: Option<FileReport>,
    /// One sentence: why the phone is where it is.
    pub verdict: String,
}

pub async fn run(
    session: &Session,
    mac: Mac,
    output: StatusFormat,
    now: DateTime<Utc>,
    out: &mut impl Write,
) -> Result<(), PluginError> {
    let report = report(session, mac, now).await?;
    match output {
        StatusFormat::Json => {
            let text = serde_json::to_string_pretty(&report)
                .map_err(|e| PluginError::Encode(e.to_string()))?;
            writeln!(out, "{text}")?;
        }
        StatusFormat::Yaml => {
            let text = serde_yaml_ng::to_string(&report)
                .map_err(|e| PluginError::Encode(e.to_string()))?;
            write!(out, "{text}")?;
        }
        StatusFormat::Text => write_text(&report, out)?,
    }
    Ok(())
}

async fn report(session: &Session, mac: Mac, now: DateTime<Utc>) -> Result<WhyReport, PluginError> {
    let maps: Api<ConfigMap> = Api::namespaced(session.client.clone(), &session.namespace);
    let rendered = maps
        .list(&ListParams::default().labels(&format!(
            "{LABEL_COMPONENT}={COMPONENT_CONFIG},{LABEL_MANAGED_BY}={MANAGED_BY}"
        )))
        .await?
        .items;
    let index = Index::from_maps(&rendered);
    let Some(phone) = index.phone(mac) else {
        let why = if index.in_conflict(mac) {
            "it is listed by schedules of several namespaces, and served to none"
        } else {
            "no schedule of this namespace has rendered a file for it (is it in a PhoneSite a \
             PhoneSchedule selects, with a model a family places?)"
        };
        return Err(PluginError::Refused(format!(
            "phone {mac} in namespace {}: {why}",
            session.namespace
        )));
    };
    let shard = &phone.shard;
    let data = rendered
        .iter()
        .find(|cm| cm.name_any() == shard.name)
        .and_then(|cm| cm.data.as_ref());
    let time_zone = data
        .and_then(|d| d.get(DECISION_KEY))
        .and_then(|header| ShardHeader::parse(header).ok())
        .map(|header| header.time_zone)
        .or_else(|| {
            data.and_then(|d| d.get(INDEX_KEY))
                .and_then(|index| serde_json::from_str::<ShardIndex>(index).ok())
                .map(|index| index.time_zone)
        })
        .unwrap_or_else(|| "UTC".to_owned());
    let file = Format::ALL.into_iter().find_map(|format| {
        let name = format.file_name(mac);
        let file = index.file(&name)?;
        Some(FileReport {
            name,
            content_type: file.content_type.to_owned(),
            body: String::from_utf8_lossy(&file.body).into_owned(),
        })
    });
    let progress = maps
        .get_opt(&progress_map_name(&shard.name))
        .await?
        .and_then(|cm| cm.data?.remove(&mac.bare().to_string()))
        .and_then(|v| serde_json::from_str::<PhoneProgress>(&v).ok());
    let last_seen = maps
        .get_opt(&notes_map_name(&shard.name))
        .await?
        .and_then(|cm| cm.data?.remove(&note_key(mac)))
        .and_then(|v| serde_json::from_str::<PhoneNote>(&v).ok());
    let sites: Api<PhoneSite> = Api::namespaced(session.client.clone(), &session.namespace);
    let explicit = sites
        .get_opt(&shard.site)
        .await?
        .and_then(|site| {
            site.spec
                .phones
                .into_iter()
                .find(|p| p.mac.parse::<Mac>().is_ok_and(|m| m == mac))
        })
        .and_then(|p| p.family);
    let released_stage = session
        .schedules()
        .get_opt(&shard.schedule)
        .await?
        .and_then(|s| s.status?.rollout)
        .map(|r| r.released_stage);
    let tz: Option<chrono_tz::Tz> = time_zone.parse().ok();
    let local = |t: DateTime<Utc>| match tz {
        Some(tz) => t.with_timezone(&tz).to_rfc3339(),
        None => t.to_rfc3339(),
    };
    let target = shard.target_for(&phone.model).map(|f| f.version.clone());
    let progress = progress.filter(|p| target.as_ref().is_some_and(|t| *t == p.target));
    let mut report = WhyReport {
        mac,
        namespace: shard.namespace.clone(),
        schedule: shard.schedule.clone(),
        site: shard.site.clone(),
        time_zone,
        family: PhoneFamily::resolve(&phone.model, explicit),
        model: phone.model.to_string(),
        target,
        stage: phone.slot.map(|s| s.stage),
        released_stage,
        slot: phone.slot.map(|s| SlotReport {
            start: s.start,
            end: s.end,
            start_local: local(s.start),
            end_local: local(s.end),
            held: s.held,
        }),
        progress,
        last_seen,
        file,
        verdict: String::new(),
    };
    report.verdict = verdict(&report, now);
    Ok(report)
}

/// Why the phone is where it is, from the report alone (pure).
pub fn verdict(r: &WhyReport, now: DateTime<Utc>) -> String {
    let Some(target) = &r.target else {
        return "no rollout for this phone now: the schedule has no firmware for its model, or \
                the rollout is paused, halted or complete (kubectl phonefleet status)"
            .to_owned();
    };
    if let Some(p) = &r.progress {
        match p.state {
            PhoneState::Upgraded => return format!("upgraded to {target} at {}", p.since),
            PhoneState::Failed => {
                return format!(
                    "failed at {}: it came back on {} or not before the reboot deadline; it gets \
                     no new slot until `kubectl phonefleet retry {} --mac {}`",
                    p.since,
                    p.version.as_deref().unwrap_or("another version"),
                    r.schedule,
                    r.mac
                );
            }
            PhoneState::Downloading => return format!("downloading {target} since {}", p.since),
            PhoneState::Rebooting => {
                return format!("downloaded {target} at {}, expected back on it", p.since);
            }
            PhoneState::Pending => {}
        }
    }
    let refusal = r.last_seen.as_ref().and_then(|n| n.refusal);
    let Some(seen) = &r.last_seen else {
        return "the provisioning server has never seen this phone: is its provisioning URL \
                (DHCP option 66/43 or its settings) pointing at phonefleet, and does it reach it?"
            .to_owned();
    };
    let Some(slot) = &r.slot else {
        return format!(
            "no slot yet: the rollout is paused or its model halted (released stage: {}), or its \
             site's windows leave no room before the horizon; last seen {}",
            r.released_stage
                .map_or_else(|| "none".to_owned(), |s| s.to_string()),
            seen.seen
        );
    };
    if slot.held && now < slot.end {
        return format!(
            "its slot is announced, {} ({} local), but its stage is not released yet (released \
             stage: {}): the server holds its firmware back until the gate opens, and a slot \
             that passes unreleased is planned again; last seen {}",
            slot.start,
            slot.start_local,
            r.released_stage
                .map_or_else(|| "none".to_owned(), |s| s.to_string()),
            seen.seen
        );
    }
    if now < slot.start {
        return format!(
            "waiting for its slot, {} ({} local); last seen {}",
            slot.start, slot.start_local, seen.seen
        );
    }
    match refusal {
        Some(refusal) if refusal.at >= slot.start => format!(
            "in or past its slot, but its last firmware request was refused at {}: {}",
            refusal.at,
            explain(refusal.reason)
        ),
        _ if now >= slot.end => format!(
            "its slot ended at {} without a download: the phone did not ask for the firmware \
             in its window (check its clock and that the file below reached it); the controller \
             plans it again",
            slot.end
        ),
        _ => format!(
            "inside its slot until {}; it should ask for the firmware at its next check",
            slot.end
        ),
    }
}

/// What a refusal reason means for the operator.
fn explain(reason: RefusalReason) -> &'static str {
    match reason {
        RefusalReason::NoSlot => "no slot was planned for it then",
        RefusalReason::StageHeld => {
            "its slot is announced but its stage is not released yet (it retries inside the slot)"
        }
        RefusalReason::BeforeSlot => "it asked before its slot (is its clock right?)",
        RefusalReason::SlotOver => "it asked after its slot ended",
        RefusalReason::SiteBusy => "every download token of its site was held (the site's cap)",
        RefusalReason::AlreadyDownloading => "it was already downloading",
        RefusalReason::TokensUnavailable => {
            "download tokens could not be taken (API server trouble)"
        }
        RefusalReason::WrongSite => "it asked for another site's firmware directory",
        RefusalReason::Unauthorized => "its credentials for the site were missing or wrong",
        RefusalReason::NoFirmwareFile => "the firmware file is not in the firmware directory",
    }
}

fn write_text(r: &WhyReport, out: &mut impl Write) -> std::io::Result<()> {
    let or_none = |v: Option<String>| v.unwrap_or_else(|| "none".to_owned());
    writeln!(out, "phone:        {}", r.mac)?;
    writeln!(
        out,
        "model:        {} (family {})",
        r.model,
        or_none(r.family.map(|f| f.to_string()))
    )?;
    writeln!(out, "schedule:     {}/{}", r.namespace, r.schedule)?;
    writeln!(out, "site:         {} ({})", r.site, r.time_zone)?;
    writeln!(out, "target:       {}", or_none(r.target.clone()))?;
    writeln!(
        out,
        "stage:        {} (released stage: {})",
        or_none(r.stage.map(|s| s.to_string())),
        or_none(r.released_stage.map(|s| s.to_string()))
    )?;
    match &r.slot {
        Some(s) => {
            let held = if s.held {
                " (held: stage not released)"
            } else {
                ""
            };
            writeln!(out, "slot:         {} .. {} UTC{held}", s.start, s.end)?;
            writeln!(out, "slot (local): {} .. {}", s.start_local, s.end_local)?;
        }
        None => writeln!(out, "slot:         none")?,
    }
    match &r.progress {
        Some(p) => writeln!(out, "progress:     {:?} since {}", p.state, p.since)?,
        None => writeln!(out, "progress:     pending (nothing recorded)")?,
    }
    match &r.last_seen {
        Some(n) => {
            writeln!(
                out,
                "last seen:    {} reporting {}",
                n.seen,
                or_none(n.version.clone())
            )?;
            match n.refusal {
                Some(f) => writeln!(
                    out,
                    "last refusal: {} at {}: {}",
                    f.reason,
                    f.at,
                    explain(f.reason)
                )?,
                None => writeln!(out, "last refusal: none")?,
            }
        }
        None => writeln!(out, "last seen:    never")?,
    }
    writeln!(out, "verdict:      {}", r.verdict)?;
    match &r.file {
        Some(f) => {
            writeln!(
                out,
                "file:         {} ({}, {} bytes), as served:",
                f.name,
                f.content_type,
                f.body.len()
            )?;
            write!(out, "{}", f.body)?;
            if !f.body.ends_with('\n') {
                writeln!(out)?;
            }
        }
        None => writeln!(out, "file:         none")?,
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(h: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).expect("instant") + chrono::Duration::hours(h)
    }

    fn report() -> WhyReport {
        WhyReport {
            mac: Mac::from_u64(0x000b_8200_0001).expect("mac"),
            namespace: "voice".into(),
            schedule: "fw".into(),
            site: "paris".into(),
            time_zone: "Europe/Paris".into(),
            model: "GXP2170".into(),
            family: Some(PhoneFamily::Grandstream),
            target: Some("2.0.0".into()),
            stage: Some(0),
            released_stage: Some(0),
            slot: Some(SlotReport {
                start: at(0),
                end: at(2),
                start_local: String::new(),
                end_local: String::new(),
                held: false,
            }),
            progress: None,
            last_seen: Some(PhoneNote {
                seen: at(-1),
                version: Some("1.0.0".into()),
                refusal: None,
            }),
            file: None,
            verdict: String::new(),
        }
    }

    #[test]
    fn the_verdict_names_the_cause() {
        let mut r = report();
        assert!(verdict(&r, at(-1)).starts_with("waiting for its slot"));
        let mut held = r.clone();
        if let Some(slot) = held.slot.as_mut() {
            slot.held = true;
        }
        assert!(
            verdict(&held, at(1)).contains("stage is not released yet"),
            "{}",
            verdict(&held, at(1))
        );
        r.last_seen = Some(PhoneNote {
            seen: at(1),
            version: Some("1.0.0".into()),
            refusal: Some(crate::children::RefusalNote {
                reason: RefusalReason::SiteBusy,
                at: at(1),
            }),
        });
        let v = verdict(&r, at(1));
        assert!(v.contains("cap"), "{v}");
        r.last_seen = None;
        assert!(verdict(&r, at(1)).contains("never seen"));
        r.target = None;
        assert!(verdict(&r, at(1)).starts_with("no rollout"));
    }
}
