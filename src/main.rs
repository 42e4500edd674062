use std::path::PathBuf;

phonefleet::global_allocator!();

use anyhow::Context;
use clap::{CommandFactory, Parser, Subcommand};

/// Schedules auto-provisioning and firmware rollouts for fleets of IP desk phones.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

// Parsed once at start; `run`'s flags make its variant large, which costs nothing here.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Run the controller (leader-elected with --leader-elect) against the current kubeconfig
    /// or in-cluster credentials, until SIGTERM.
    Run(phonefleet::run::RunArgs),
    /// Show live per-site progress bars of a PhoneSchedule's rollout (from its status).
    Progress(phonefleet::progress::ProgressArgs),
    /// Simulate a fleet of phones against a provisioning server over HTTP; prints a JSON
    /// summary per site (see docs/provisioning.md).
    Simulate(phonefleet::simulator::cli::SimulateArgs),
    /// Print the CustomResourceDefinitions as YAML (for `kubectl apply -f -`).
    Crd {
        /// Write one file per CRD into this directory instead (`crds/` in the repository).
        #[arg(long)]
        out_dir: Option<PathBuf>,
    },
    /// Preview a rollout offline: which phones of which site download when, from the same
    /// YAML you would `kubectl apply` (one PhoneSchedule and its PhoneSites). Needs no cluster.
    Plan {
        /// Multi-document YAML with one PhoneSchedule and the PhoneSites it may select.
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
        /// Plan as of this instant (RFC 3339, e.g. 2026-12-01T08:00:00Z); default: now.
        #[arg(long)]
        now: Option<chrono::DateTime<chrono::Utc>>,
        /// Output: a table, the JSON plan, or an SVG timeline.
        #[arg(short = 'o', long = "output", value_enum, default_value = "table")]
        output: phonefleet::plan_report::Format,
    },
    /// Print one phone's configuration file exactly as the provisioning server serves it,
    /// from the same YAML you would `kubectl apply`. Needs no cluster.
    Render {
        /// Multi-document YAML with one PhoneSchedule and the PhoneSites it may select.
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
        /// The phone's MAC address (any of 000b82123456, 00:0b:82:12:34:56, 00-0B-82-12-34-56).
        #[arg(long)]
        mac: phonefleet::core::Mac,
        /// Render as of this instant (RFC 3339, e.g. 2026-12-01T08:00:00Z); default: now.
        #[arg(long)]
        now: Option<chrono::DateTime<chrono::Utc>>,
        /// Base URL under which the provisioning server serves `firmware/<site>/<file>`.
        #[arg(
            long,
            env = "PHONEFLEET_SERVER_URL",
            default_value = "http://phonefleet-provisioning"
        )]
        server_url: phonefleet::render::ServerUrl,
    },
    /// Print a shell completion script for `phonefleet`. Installed or linked as
    /// `kubectl-phonefleet`, the same binary is the kubectl plugin (`kubectl phonefleet
    /// completion bash` for its own script); see docs/operating.md.
    Completion { shell: clap_complete::Shell },
}

fn main() -> anyhow::Result<()> {
    // kubectl runs plugins by their file name: `kubectl phonefleet …` → `kubectl-phonefleet …`.
    if std::env::args_os()
        .next()
        .is_some_and(|argv0| phonefleet::plugin::invoked_as_plugin(&argv0))
    {
        let cli = phonefleet::plugin::PluginCli::parse();
        let mut out = std::io::stdout().lock();
        return Ok(
            tokio::runtime::Runtime::new()?.block_on(phonefleet::plugin::run(cli, &mut out))?
        );
    }
    match Cli::parse().command {
        Command::Completion { shell } => {
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "phonefleet",
                &mut std::io::stdout(),
            );
        }
        Command::Run(args) => {
            phonefleet::run::init_logs(args.log_format);
            tokio::runtime::Runtime::new()?.block_on(phonefleet::run::run(args))?;
        }
        Command::Progress(args) => {
            tokio::runtime::Runtime::new()?.block_on(phonefleet::progress::run(args))?;
        }
        Command::Simulate(args) => {
            tokio::runtime::Runtime::new()?.block_on(phonefleet::simulator::cli::simulate(args))?;
        }
        Command::Crd { out_dir } => {
            for crd in phonefleet::api::crds() {
                let yaml = phonefleet::api::crd_yaml(&crd)?;
                match &out_dir {
                    Some(dir) => {
                        let path = dir.join(phonefleet::api::crd_file_name(&crd));
                        std::fs::write(&path, yaml)
                            .with_context(|| format!("writing {}", path.display()))?;
                    }
                    None => print!("---\n{yaml}"),
                }
            }
        }
        Command::Plan { file, now, output } => {
            let now = now.unwrap_or_else(chrono::Utc::now);
            phonefleet::plan_report::run(&file, now, output, &mut std::io::stdout().lock())?;
        }
        Command::Render {
            file,
            mac,
            now,
            server_url,
        } => {
            let manifest = phonefleet::manifest::load(&file)?;
            let now = now.unwrap_or_else(chrono::Utc::now);
            let rendered =
                phonefleet::controller::preview::render_phone(&manifest, mac, &server_url, now)?;
            print!("{}", rendered.body);
        }
    }
    Ok(())
}
