//! `phonefleet simulate`: flags and wiring (the behaviour is in [`super`]).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, Utc};

use crate::core::ReArm;
use crate::server::cli::ClockArgs;

use super::{SimConfig, run_until, sites_from_cluster, sites_from_manifest};

/// Flags of `phonefleet simulate`.
#[derive(clap::Args, Clone, Debug)]
pub struct SimulateArgs {
    /// Base URL of the provisioning server as phones reach it (e.g. `http://127.0.0.1:8080`).
    #[arg(long)]
    pub server: String,
    /// PhoneSites from this manifest (multi-document YAML) instead of the cluster.
    #[arg(short = 'f', long = "filename")]
    pub file: Option<PathBuf>,
    /// Namespace whose PhoneSites to simulate (with the current kubeconfig).
    #[arg(short, long, default_value = "default")]
    pub namespace: String,
    /// Kubeconfig to read PhoneSites with (default: KUBECONFIG or ~/.kube/config).
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// Seed of every random choice of the phones.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Firmware version every phone runs at the start.
    #[arg(long, default_value = "1.0.0")]
    pub initial_version: String,
    /// A model whose new firmware never comes back after the reboot (repeatable).
    #[arg(long = "fail-model")]
    pub fail_models: Vec<String>,
    /// Simulated hours to run.
    #[arg(long, default_value_t = 168.0)]
    pub hours: f64,
    /// End early once every phone is upgraded or dead.
    #[arg(long)]
    pub until_settled: bool,
    /// Phones boot at random within this many simulated minutes from the start (0: a storm).
    #[arg(long, default_value_t = 0)]
    pub boot_spread_minutes: u64,
    /// `SITE=RFC3339`: every phone of SITE reboots at that simulated instant (repeatable).
    #[arg(long = "power-cut", value_parser = parse_power_cut)]
    pub power_cuts: Vec<(String, DateTime<Utc>)>,
    /// Simulated minutes a phone takes to flash and reboot.
    #[arg(long, default_value_t = 2)]
    pub reboot_minutes: u64,
    /// Chance (0–1) that a phone is in use when its window opens.
    #[arg(long, default_value_t = 0.0)]
    pub busy_fraction: f64,
    /// When phones obey a window they have just fetched: `at-once` or `next-occurrence`
    /// (default: each family's own, docs/planner.md "Re-arming").
    #[arg(long, value_parser = parse_re_arm)]
    pub re_arm: Option<ReArm>,
    #[command(flatten)]
    pub clock: ClockArgs,
}

fn parse_re_arm(s: &str) -> Result<ReArm, String> {
    match s {
        "at-once" | "AtOnce" => Ok(ReArm::AtOnce),
        "next-occurrence" | "NextOccurrence" => Ok(ReArm::NextOccurrence),
        other => Err(format!("'{other}': expected at-once or next-occurrence")),
    }
}

fn parse_power_cut(s: &str) -> Result<(String, DateTime<Utc>), String> {
    let (site, when) = s
        .split_once('=')
        .ok_or_else(|| format!("'{s}': expected SITE=RFC3339"))?;
    let when = DateTime::parse_from_rfc3339(when)
        .map_err(|e| format!("'{when}': {e}"))?
        .with_timezone(&Utc);
    Ok((site.to_owned(), when))
}

/// Runs the simulation and prints its JSON summary on stdout (also when ended by a signal).
pub async fn simulate(args: SimulateArgs) -> anyhow::Result<()> {
    let sites = match &args.file {
        Some(path) => {
            let yaml = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            sites_from_manifest(&yaml)?
        }
        None => {
            let client = match &args.kubeconfig {
                Some(path) => {
                    let kubeconfig = kube::config::Kubeconfig::read_from(path)?;
                    let config =
                        kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
                            .await?;
                    kube::Client::try_from(config)?
                }
                None => kube::Client::try_default().await?,
            };
            sites_from_cluster(client, &args.namespace).await?
        }
    };
    anyhow::ensure!(!sites.is_empty(), "no PhoneSite to simulate");
    let mut config = SimConfig::new(args.server.clone(), sites);
    config.seed = args.seed;
    config.initial_version = args.initial_version.clone();
    config.fail_models = args.fail_models.clone();
    config.duration = Duration::from_secs_f64(args.hours.max(0.0) * 3600.0);
    config.stop_when_settled = args.until_settled;
    config.boot_spread = Duration::from_secs(args.boot_spread_minutes * 60);
    config.power_cuts = args.power_cuts.clone();
    config.reboot_time = Duration::from_secs(args.reboot_minutes * 60);
    config.busy_fraction = args.busy_fraction;
    config.re_arm = args.re_arm;
    // SIGTERM or Ctrl-C ends the simulation early and still prints what the phones counted.
    let stop = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    };
    let summary = run_until(config, args.clock.clock(), stop).await;
    println!("{}", serde_json::to_string_pretty(&summary)?);
    Ok(())
}
