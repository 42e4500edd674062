use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

/// Schedules auto-provisioning and firmware rollouts for fleets of IP desk phones.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the CustomResourceDefinitions as YAML (for `kubectl apply -f -`).
    Crd {
        /// Write one file per CRD into this directory instead (`crds/` in the repository).
        #[arg(long)]
        out_dir: Option<PathBuf>,
    },
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
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
    }
    Ok(())
}
