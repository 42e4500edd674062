//! The provisioning server on its own, outside `phonefleet run`, for the benchmark
//! (`scripts/bench-provisioning.sh`) and for poking at the server by hand.
//!
//! `fixture` renders N phones' files with the real renderer into a directory (what nginx
//! serves) and writes the same files as a rendered-config ConfigMap manifest in the shape of
//! `src/children.rs` (what the server serves once applied). `serve` runs the server against a
//! kubeconfig, like `phonefleet run` does, without the controller.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use k8s_openapi::api::core::v1::ConfigMap;
use phonefleet::children::{
    self, COMPONENT_CONFIG, INDEX_KEY, IndexPhone, LABEL_COMPONENT, LABEL_MANAGED_BY,
    LABEL_SCHEDULE, LABEL_SITE, MANAGED_BY, ShardIndex,
};
use phonefleet::core::{
    DaySet, FlexiblePolicy, LocalWindow, Mac, ProvisioningPolicy, WeeklyPolicy,
};
use phonefleet::render::{self, PhoneConfig};
use phonefleet::server::cli::{ClockArgs, ServerArgs};

// The product binary's allocator and options, so this server is the one `phonefleet run` runs.
phonefleet::global_allocator!();

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

// Parsed once at start: the size of the server flags' variant costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Render N phones' XML files into DIR and DIR/../configmap.yaml.
    Fixture {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        manifest: PathBuf,
        #[arg(long, default_value_t = 500)]
        phones: u32,
        #[arg(long, default_value = "bench")]
        namespace: String,
    },
    /// Run the provisioning server until Ctrl-C.
    Serve {
        /// Namespace to watch (all when absent).
        #[arg(long)]
        namespace: Option<String>,
        #[command(flatten)]
        server: ServerArgs,
        #[command(flatten)]
        clock: ClockArgs,
    },
}

fn window(a: &str, b: &str) -> LocalWindow {
    LocalWindow {
        start: a.parse().expect("HH:MM"),
        end: b.parse().expect("HH:MM"),
    }
}

fn fixture(dir: &PathBuf, manifest: &PathBuf, phones: u32, namespace: &str) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    let policy = ProvisioningPolicy {
        power_on: true,
        repeatedly: None,
        weekly: WeeklyPolicy {
            enabled: true,
            interval_weeks: 1,
            inactivity_minutes: 30,
            window: window("00:00", "05:00"),
            days: DaySet::ALL,
        },
        flexible: FlexiblePolicy {
            enabled: false,
            interval_days: 1,
            window: window("00:00", "00:00"),
        },
    };
    let server = "http://prov.bench:8080".parse()?;
    let mut data = BTreeMap::new();
    let mut index_phones = BTreeMap::new();
    let mut paths = String::new();
    for i in 0..phones {
        let mac = Mac::from_u64(0x000b_8230_0000 + u64::from(i)).context("MAC")?;
        let file = render::render(
            &PhoneConfig {
                mac,
                model: "GXP2170",
                family: phonefleet::core::PhoneFamily::Grandstream,
                provisioning: &policy,
                slot: None,
            },
            &server,
        );
        std::fs::write(dir.join(&file.name), &file.body)?;
        paths.push_str(&format!("/{}\n", file.name));
        index_phones.insert(
            mac.bare().to_string(),
            IndexPhone {
                model: "GXP2170".into(),
                file: file.name.clone(),
                slot: None,
            },
        );
        data.insert(file.name, file.body);
    }
    let index = ShardIndex {
        schedule: format!("{namespace}/bench"),
        site: "bench".into(),
        time_zone: "UTC".into(),
        cap: 1,
        firmware: None,
        phones: index_phones,
    };
    data.insert(INDEX_KEY.into(), serde_json::to_string(&index)?);
    let mut cm = ConfigMap::default();
    cm.metadata.name = Some(children::config_map_name("bench", "bench", 0));
    cm.metadata.namespace = Some(namespace.into());
    cm.metadata.labels = Some(BTreeMap::from([
        (LABEL_COMPONENT.into(), COMPONENT_CONFIG.into()),
        (LABEL_MANAGED_BY.into(), MANAGED_BY.into()),
        (LABEL_SCHEDULE.into(), "bench".into()),
        (LABEL_SITE.into(), "bench".into()),
    ]));
    cm.data = Some(data);
    let mut value = serde_json::to_value(&cm)?;
    value["apiVersion"] = "v1".into();
    value["kind"] = "ConfigMap".into();
    std::fs::write(manifest, serde_json::to_string(&value)?)?;
    std::fs::write(dir.join("../paths.txt"), paths)?;
    Ok(())
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
    match Cli::parse().command {
        Command::Fixture {
            dir,
            manifest,
            phones,
            namespace,
        } => fixture(&dir, &manifest, phones, &namespace),
        Command::Serve {
            namespace,
            server,
            clock,
        } => {
            let rt = tokio::runtime::Runtime::new()?;
            rt.block_on(async move {
                let client = kube::Client::try_default().await?;
                let shutdown = async {
                    let _ = tokio::signal::ctrl_c().await;
                };
                phonefleet::server::serve(
                    server.config(namespace.into()),
                    client,
                    clock.clock(),
                    shutdown,
                )
                .await?;
                Ok(())
            })
        }
    }
}
