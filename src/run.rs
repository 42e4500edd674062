//! `phonefleet run`: the long-running process. Every replica serves phones (the provisioning
//! server scales out behind a Service); only the replica holding the leader Lease reconciles.
//! SIGTERM stops both gracefully.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::controller::{self, ControllerConfig, leader::LeaseConfig};
use crate::metrics::{Metrics, endpoint::Endpoint};
use crate::render::ServerUrl;
use crate::scope::WatchScope;
use crate::server::{
    self,
    cli::{ClockArgs, ServerArgs},
};

/// Options of `phonefleet run`.
#[derive(clap::Args, Debug, Clone)]
pub struct RunArgs {
    /// Watch PhoneSchedules and PhoneSites of these namespaces only (repeat the flag or
    /// separate with commas; default: all namespaces). A list lets RBAC be one Role per
    /// namespace instead of a ClusterRole.
    #[arg(long, env = "PHONEFLEET_NAMESPACE", value_delimiter = ',')]
    pub namespace: Vec<String>,
    /// Base URL phones use to reach the provisioning server; written into their files.
    #[arg(
        long,
        env = "PHONEFLEET_SERVER_URL",
        default_value = "http://phonefleet-provisioning"
    )]
    pub server_url: ServerUrl,
    /// Compete for a Lease so that only one of several replicas acts.
    #[arg(long, env = "PHONEFLEET_LEADER_ELECT")]
    pub leader_elect: bool,
    /// Namespace of the leader Lease.
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    pub lease_namespace: String,
    /// Name of the leader Lease.
    #[arg(long, default_value = "phonefleet-controller")]
    pub lease_name: String,
    /// Lease duration: how long a dead leader keeps the lease before a standby takes over.
    #[arg(long, default_value_t = 15)]
    pub lease_duration_seconds: u64,
    /// This replica's identity (pod name in a cluster).
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
    /// Do not run the provisioning server in this process (controller only).
    #[arg(long)]
    pub no_provisioning_server: bool,
    /// Address of the metrics and health endpoint (`/metrics`, `/healthz`, `/readyz`).
    #[arg(
        long,
        env = "PHONEFLEET_METRICS_LISTEN",
        default_value = "0.0.0.0:9090"
    )]
    pub metrics_listen: std::net::SocketAddr,
    /// Log lines as text for people, or one JSON object per line for log pipelines.
    #[arg(
        long,
        env = "PHONEFLEET_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    pub log_format: LogFormat,
    #[command(flatten)]
    pub server: ServerArgs,
    #[command(flatten)]
    pub clock: ClockArgs,
}

/// Format of the log lines.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// Installs the global log subscriber: `RUST_LOG` filters (default `info,kube=warn`).
pub fn init_logs(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "info,kube=warn".into());
    use tracing_subscriber::util::SubscriberInitExt;
    // try_init also forwards the `log` records of dependencies, as `init` did.
    if let Err(e) = log_subscriber(format, filter, std::io::stdout).try_init() {
        eprintln!("logging is already set up: {e}");
    }
}

/// The subscriber `--log-format` asks for, writing to `writer` (standard output in
/// `phonefleet run`; a buffer in tests of what is logged, such as the access log).
pub fn log_subscriber<W>(
    format: LogFormat,
    filter: tracing_subscriber::EnvFilter,
    writer: W,
) -> Box<dyn tracing::Subscriber + Send + Sync>
where
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    match format {
        LogFormat::Text => Box::new(builder.finish()),
        // Fields at the top level, next to level, target and timestamp: what Loki, Elastic or
        // Cloud Logging index without a parser.
        LogFormat::Json => Box::new(builder.json().flatten_event(true).finish()),
    }
}

impl RunArgs {
    fn identity(&self) -> String {
        self.identity.clone().unwrap_or_else(|| {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_owned())
                .unwrap_or_else(|_| "phonefleet".into());
            format!("{host}-{}", std::process::id())
        })
    }
}

/// Cancels the token on SIGTERM or Ctrl-C.
pub fn shutdown_on_signals() -> CancellationToken {
    let token = CancellationToken::new();
    let trigger = token.clone();
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        {
            let mut term =
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot listen for SIGTERM");
                        let _ = ctrl_c.await;
                        trigger.cancel();
                        return;
                    }
                };
            tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
            }
        }
        #[cfg(not(unix))]
        let _ = ctrl_c.await;
        tracing::info!("shutting down");
        trigger.cancel();
    });
    token
}

/// Runs until a signal arrives (Ok) or something fails or leadership is lost (Err).
pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    // A power-on storm needs descriptors: take all the hard limit allows.
    match server::limits::raise_nofile_limit() {
        Ok(limit) => tracing::info!(limit, "open file limit"),
        Err(e) => tracing::warn!(error = %e, "cannot raise the open file limit"),
    }
    let client = kube::Client::try_default().await?;
    let clock = args.clock.clock();
    let identity = args.identity();
    let shutdown = shutdown_on_signals();

    let stats = (!args.no_provisioning_server).then(server::ServerStats::new);
    let metrics = Metrics::new(stats.clone(), true)?;
    let endpoint = Endpoint::bind(args.metrics_listen, metrics.clone()).await?;
    tracing::info!(addr = ?endpoint.local_addr(), "metrics endpoint listening");
    tokio::spawn(endpoint.serve(shutdown.clone().cancelled_owned()));

    let server_task = stats.map(|stats| {
        let mut config = args.server.config(args.scope());
        config.replica_id = identity.clone();
        let (client, stop, metrics) = (client.clone(), shutdown.clone(), metrics.clone());
        tokio::spawn(async move {
            let handle = server::start_with_stats(config, client, clock, stats).await?;
            crate::metrics::follow_server_readiness(&metrics, || handle.is_ready(), &stop).await;
            stop.cancelled().await;
            handle.shutdown().await;
            Ok::<(), server::ServerError>(())
        })
    });

    let config = ControllerConfig {
        scope: args.scope(),
        server_url: args.server_url.clone(),
        // client-go's ratios: a 15 s lease, a 10 s renew deadline, a 2 s retry period.
        lease: args.leader_elect.then(|| {
            LeaseConfig::with_ratios(
                args.lease_namespace.clone(),
                args.lease_name.clone(),
                identity.clone(),
                Duration::from_secs(args.lease_duration_seconds.max(3)),
            )
        }),
        instance: identity,
    };
    let controller_result =
        controller::run(client, clock, config, metrics.clone(), shutdown.clone()).await;
    // However the controller ended, the process is going down: let the server drain.
    shutdown.cancel();
    if let Some(task) = server_task {
        task.await??;
    }
    controller_result?;
    Ok(())
}

impl RunArgs {
    /// The namespaces `--namespace` names; all of them when it is absent.
    pub fn scope(&self) -> WatchScope {
        WatchScope::from_list(self.namespace.clone())
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        run: RunArgs,
    }

    fn scope(args: &[&str]) -> WatchScope {
        let mut argv = vec!["phonefleet"];
        argv.extend(args);
        Cli::try_parse_from(argv).expect("arguments").run.scope()
    }

    #[test]
    fn namespace_takes_one_a_comma_list_or_repeats_and_none_means_all() {
        assert_eq!(
            scope(&["--namespace", "voice"]),
            WatchScope::namespace("voice")
        );
        let both = WatchScope::from_list(["sales", "voice"]);
        assert_eq!(scope(&["--namespace=voice,sales"]), both);
        assert_eq!(
            scope(&["--namespace", "voice", "--namespace", "sales"]),
            both
        );
        if std::env::var_os("PHONEFLEET_NAMESPACE").is_none() {
            assert_eq!(scope(&[]), WatchScope::Cluster);
        }
    }
}
