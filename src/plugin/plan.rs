//! `kubectl phonefleet plan`: offline `phonefleet plan` fed with the cluster's live objects
//! (the schedule and its namespace's sites) and the phones' recorded progress.

use std::io::Write;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::ListParams;
use kube::{Api, ResourceExt};

use super::{PluginError, Session};
use crate::api::PhoneSite;
use crate::children::{
    COMPONENT_PROGRESS, LABEL_COMPONENT, LABEL_SCHEDULE, PhoneProgress, PhoneState,
};
use crate::core::{Mac, MacSet};
use crate::manifest::Manifest;
use crate::plan_report::{self, Format};

pub async fn run(
    session: &Session,
    name: &str,
    now: chrono::DateTime<chrono::Utc>,
    format: Format,
    out: &mut impl Write,
) -> Result<(), PluginError> {
    let schedule = session.schedule(name).await?;
    let sites: Api<PhoneSite> = Api::namespaced(session.client.clone(), &session.namespace);
    let sites = sites.list(&ListParams::default()).await?.items;
    let label = |kind: &str, n: String| format!("{kind} {}/{n}", session.namespace);
    let manifest = Manifest {
        schedule: (
            label("PhoneSchedule", schedule.name_any()),
            schedule.clone(),
        ),
        sites: sites
            .into_iter()
            .map(|s| (label("PhoneSite", s.name_any()), s))
            .collect(),
    };
    let fleet = manifest.fleet()?;
    let done = match schedule.spec.firmware.as_ref() {
        Some(fw) => upgraded(session, &schedule, &fw.version).await?,
        None => MacSet::default(),
    };
    plan_report::write_fleet(&fleet, now, format, &done, out)?;
    Ok(())
}

/// Phones recorded upgraded to `version` in the schedule's progress ConfigMaps.
async fn upgraded(
    session: &Session,
    schedule: &crate::api::PhoneSchedule,
    version: &str,
) -> Result<MacSet, PluginError> {
    let maps: Api<ConfigMap> = Api::namespaced(session.client.clone(), &session.namespace);
    let selector = format!(
        "{LABEL_COMPONENT}={COMPONENT_PROGRESS},{LABEL_SCHEDULE}={}",
        schedule.name_any()
    );
    let uid = schedule.uid();
    let mut done = MacSet::default();
    for cm in maps
        .list(&ListParams::default().labels(&selector))
        .await?
        .items
    {
        let owned = cm
            .owner_references()
            .iter()
            .any(|o| Some(&o.uid) == uid.as_ref());
        if !owned {
            continue;
        }
        for (key, value) in cm.data.iter().flatten() {
            if let (Ok(mac), Ok(record)) = (
                key.parse::<Mac>(),
                serde_json::from_str::<PhoneProgress>(value),
            ) && record.target == version
                && record.state == PhoneState::Upgraded
            {
                done.insert(mac);
            }
        }
    }
    Ok(done)
}
