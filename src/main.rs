use clap::{Parser, Subcommand};
use kube::CustomResourceExt;
use phonefleet::api::{PhoneSchedule, PhoneSite};

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
    Crd,
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Crd => {
            for crd in [PhoneSchedule::crd(), PhoneSite::crd()] {
                print!("---\n{}", serde_yaml_ng::to_string(&crd)?);
            }
        }
    }
    Ok(())
}
