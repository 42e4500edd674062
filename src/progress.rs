//! `phonefleet progress`: live per-site progress bars of a PhoneSchedule's rollout, from its
//! status (what `kubectl get phoneschedules -w` shows, one bar per site).

use std::collections::BTreeMap;
use std::time::Duration;

use futures::StreamExt;

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use kube::{Api, Client};

use crate::api::{PhoneSchedule, PhoneScheduleStatus};

/// Options of `phonefleet progress`.
#[derive(clap::Args, Debug, Clone)]
pub struct ProgressArgs {
    /// Namespace of the PhoneSchedule.
    #[arg(short = 'n', long, default_value = "default")]
    pub namespace: String,
    /// Name of the PhoneSchedule.
    pub schedule: String,
    /// Stop once no phone is pending or in progress any more (completed, or halted).
    #[arg(long)]
    pub until_settled: bool,
    /// Stop after this many seconds at the latest.
    #[arg(long, default_value_t = 3600)]
    pub timeout_seconds: u64,
}

/// Draws the bars until the rollout settles (with `--until_settled`) or the timeout. The
/// schedule is watched: the bars move when its status changes, without polling.
pub async fn run(args: ProgressArgs) -> anyhow::Result<()> {
    let api: Api<PhoneSchedule> = Api::namespaced(Client::try_default().await?, &args.namespace);
    // Fail plainly on a missing schedule (a watch would wait for it to appear).
    api.get(&args.schedule).await?;
    let bars = MultiProgress::new();
    let style =
        ProgressStyle::with_template("{prefix:>14} [{bar:40.green/red}] {pos:>5}/{len:<5} {msg}")?
            .progress_chars("=> ");
    let header = bars.add(ProgressBar::new_spinner());
    let mut by_site: BTreeMap<String, ProgressBar> = BTreeMap::new();
    let versions = crate::live::schedule_versions(api, &args.schedule);
    futures::pin_mut!(versions);
    let deadline = tokio::time::sleep(Duration::from_secs(args.timeout_seconds));
    tokio::pin!(deadline);
    loop {
        let schedule = tokio::select! {
            () = &mut deadline => break,
            next = versions.next() => match next {
                Some(schedule) => schedule?,
                None => break,
            },
        };
        let status: PhoneScheduleStatus = schedule.status.unwrap_or_default();
        header.set_message(summary_line(&status));
        header.tick();
        for site in &status.sites {
            let bar = by_site.entry(site.name.clone()).or_insert_with(|| {
                let bar = bars.add(ProgressBar::new(u64::from(site.phones)));
                bar.set_style(style.clone());
                bar.set_prefix(site.name.clone());
                bar
            });
            bar.set_length(u64::from(site.phones));
            bar.set_position(u64::from(site.upgraded));
            bar.set_message(if site.failed > 0 {
                format!("{} failed", site.failed)
            } else {
                String::new()
            });
        }
        if args.until_settled && settled(&status) {
            break;
        }
    }
    for bar in by_site.values() {
        bar.abandon();
    }
    header.abandon();
    Ok(())
}

/// No phone pending or in progress any more (completed), or halted with nothing left to do.
pub fn settled(status: &PhoneScheduleStatus) -> bool {
    let done = status.counts.as_ref().is_some_and(|c| {
        c.pending + c.in_progress == 0 || status.phase.as_deref() == Some("Completed")
    });
    let halted_done = status.phase.as_deref() == Some("Halted")
        && status.counts.as_ref().is_none_or(|c| c.in_progress == 0)
        && status.next_window.is_none();
    done || halted_done
}

pub fn summary_line(status: &PhoneScheduleStatus) -> String {
    let counts = status.counts.clone().unwrap_or_default();
    format!(
        "phase {} · stage {} · upgraded {}/{} · in progress {} · failed {}{}",
        status.phase.as_deref().unwrap_or("-"),
        status.stage.as_deref().unwrap_or("-"),
        counts.upgraded,
        counts.total,
        counts.in_progress,
        counts.failed,
        status
            .rollout
            .as_ref()
            .filter(|r| !r.halted_models.is_empty())
            .map(|r| format!(" · halted: {}", r.halted_models.join(", ")))
            .unwrap_or_default()
    )
}
