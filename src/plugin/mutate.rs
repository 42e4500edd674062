//! The mutating commands: pause/resume (one spec field) and requests (one annotation each),
//! all by server-side apply, each under its own field manager so that one never removes what
//! another wrote (server-side apply drops the fields a manager stops sending).

use std::io::Write;

use kube::ResourceExt;
use kube::api::{Patch, PatchParams};
use serde_json::json;

use super::{PluginError, Session, WaitArgs, wait_timeout};
use crate::api::{PhoneSchedule, RequestKind};
use crate::controller::requests::{self, Request};
use crate::core::Mac;

/// Field manager of `pause` and `resume`.
pub const MANAGER_PAUSE: &str = "kubectl-phonefleet";

fn manager(kind: RequestKind) -> &'static str {
    match kind {
        RequestKind::Retry => "kubectl-phonefleet-retry",
        RequestKind::Unhalt => "kubectl-phonefleet-unhalt",
        RequestKind::Promote => "kubectl-phonefleet-promote",
    }
}

/// Sets `spec.rollout.paused`. The field is taken over from whoever set it before (`--force`
/// semantics): the operator asked for it; see docs/operating.md for GitOps.
pub async fn paused(
    session: &Session,
    name: &str,
    paused: bool,
    out: &mut impl Write,
) -> Result<(), PluginError> {
    // Apply creates what does not exist: make sure the schedule does.
    session.schedule(name).await?;
    let patch = json!({
        "apiVersion": "phonefleet.io/v1alpha1",
        "kind": "PhoneSchedule",
        "metadata": {"name": name},
        "spec": {"rollout": {"paused": paused}},
    });
    session
        .schedules()
        .patch(
            name,
            &PatchParams::apply(MANAGER_PAUSE).force(),
            &Patch::Apply(&patch),
        )
        .await?;
    writeln!(
        out,
        "phoneschedule.phonefleet.io/{name} {}",
        if paused { "paused" } else { "resumed" }
    )?;
    Ok(())
}

/// A new request id: the instant, unique enough for a human at a keyboard.
fn request_id() -> String {
    chrono::Utc::now().format("%Y%m%dT%H%M%S%.9fZ").to_string()
}

/// The firmware version of the spec, or a refusal.
fn version(schedule: &PhoneSchedule) -> Result<String, PluginError> {
    schedule
        .spec
        .firmware
        .as_ref()
        .map(|f| f.version.clone())
        .ok_or_else(|| {
            PluginError::Refused(format!(
                "PhoneSchedule {} has no spec.firmware: there is no rollout to steer",
                schedule.name_any()
            ))
        })
}

/// Writes the request annotation and, unless told not to, waits (by a watch) until the
/// controller records it in status.
async fn request(
    session: &Session,
    name: &str,
    kind: RequestKind,
    request: Request,
    wait: &WaitArgs,
    out: &mut impl Write,
) -> Result<(), PluginError> {
    let value = serde_json::to_string(&request).map_err(|e| PluginError::Encode(e.to_string()))?;
    let patch = json!({
        "apiVersion": "phonefleet.io/v1alpha1",
        "kind": "PhoneSchedule",
        "metadata": {"name": name, "annotations": {requests::annotation(kind): value}},
    });
    session
        .schedules()
        .patch(
            name,
            &PatchParams::apply(manager(kind)).force(),
            &Patch::Apply(&patch),
        )
        .await?;
    writeln!(out, "{kind:?} request {} written", request.id)?;
    if wait.no_wait {
        return Ok(());
    }
    let id = request.id.clone();
    let done = crate::live::until(session.schedules(), name, wait_timeout(wait), |s| {
        s.status
            .as_ref()
            .and_then(|st| st.rollout.as_ref())
            .and_then(|r| r.requests.iter().find(|h| h.kind == kind && h.id == id))
            .cloned()
    })
    .await?;
    match done {
        Some(handled) => {
            writeln!(
                out,
                "carried out by the controller at {}",
                crate::plan_report::utc(handled.at)
            )?;
            Ok(())
        }
        None => Err(PluginError::NotCarriedOut {
            id: request.id,
            seconds: wait.timeout_seconds,
        }),
    }
}

pub async fn retry(
    session: &Session,
    name: &str,
    model: Option<String>,
    mac: Option<Mac>,
    wait: &WaitArgs,
    out: &mut impl Write,
) -> Result<(), PluginError> {
    let schedule = session.schedule(name).await?;
    let version = version(&schedule)?;
    let r = Request {
        id: request_id(),
        version,
        model,
        mac: mac.map(|m| m.to_string()),
        stage: None,
    };
    request(session, name, RequestKind::Retry, r, wait, out).await
}

pub async fn unhalt(
    session: &Session,
    name: &str,
    model: &str,
    wait: &WaitArgs,
    out: &mut impl Write,
) -> Result<(), PluginError> {
    let schedule = session.schedule(name).await?;
    let version = version(&schedule)?;
    let rollout = schedule.status.as_ref().and_then(|s| s.rollout.clone());
    let Some(rollout) = rollout.filter(|r| r.halted_models.iter().any(|m| m == model)) else {
        return Err(PluginError::Refused(format!(
            "model {model} is not halted in PhoneSchedule {name}"
        )));
    };
    if rollout.firmware_version != version {
        return Err(PluginError::Refused(format!(
            "the halt of {model} is about firmware {}, but spec.firmware is {version} now: a new version is not halted",
            rollout.firmware_version
        )));
    }
    let r = Request {
        id: request_id(),
        version,
        model: Some(model.to_owned()),
        mac: None,
        stage: None,
    };
    request(session, name, RequestKind::Unhalt, r, wait, out).await
}

pub async fn promote(
    session: &Session,
    name: &str,
    yes: bool,
    wait: &WaitArgs,
    out: &mut impl Write,
) -> Result<(), PluginError> {
    let schedule = session.schedule(name).await?;
    let version = version(&schedule)?;
    let stages = schedule.spec.rollout.stages.len().max(1) as u32;
    let released = schedule
        .status
        .as_ref()
        .and_then(|s| s.rollout.as_ref())
        .filter(|r| r.firmware_version == version)
        .map_or(0, |r| r.released_stage);
    let next = released + 1;
    if next >= stages {
        return Err(PluginError::Refused(format!(
            "every stage of PhoneSchedule {name} is released already"
        )));
    }
    let label = schedule
        .spec
        .rollout
        .stages
        .get(next as usize)
        .and_then(|s| s.name.clone())
        .unwrap_or_else(|| format!("stage-{}", next + 1));
    if !yes {
        return Err(PluginError::Refused(format!(
            "this releases stage {} ({label}) of PhoneSchedule {name} now, before its gate: run again with --yes",
            next + 1
        )));
    }
    let r = Request {
        id: request_id(),
        version,
        model: None,
        mac: None,
        stage: Some(next),
    };
    request(session, name, RequestKind::Promote, r, wait, out).await
}
