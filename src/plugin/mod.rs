//! `kubectl phonefleet`: the operator's commands for a running rollout, as a kubectl plugin.
//!
//! The `phonefleet` binary is the plugin too: installed (or linked) as `kubectl-phonefleet`
//! somewhere on `PATH`, kubectl finds it and runs it with that name, and `main` dispatches on
//! it. Like kubectl, it uses the current kubeconfig context and its namespace unless told
//! otherwise. Every mutating command is a server-side apply of one field (`spec.rollout.paused`)
//! or one annotation (a request the controller carries out once, see
//! [`crate::controller::requests`]), each under a field manager of its own.

mod mutate;
mod plan;
mod status;
mod why;

use std::path::PathBuf;
use std::time::Duration;

use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};

use crate::api::PhoneSchedule;

/// Steers phonefleet rollouts: status, plan, why, pause/resume, retry, unhalt, promote.
#[derive(clap::Parser, Debug)]
#[command(name = "kubectl-phonefleet", bin_name = "kubectl phonefleet", version)]
pub struct PluginCli {
    #[command(flatten)]
    pub target: Target,
    #[command(subcommand)]
    pub command: PluginCommand,
}

/// Which cluster and namespace, as kubectl's own flags.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct Target {
    /// Path to the kubeconfig file (default: KUBECONFIG, then ~/.kube/config).
    #[arg(long, global = true)]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use (default: the current context).
    #[arg(long, global = true)]
    pub context: Option<String>,
    /// Namespace (default: the context's namespace, else `default`).
    #[arg(short = 'n', long, global = true)]
    pub namespace: Option<String>,
    /// Every namespace (`status` without a name only).
    #[arg(short = 'A', long, global = true)]
    pub all_namespaces: bool,
}

/// Output of `status`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum StatusFormat {
    Text,
    Json,
    Yaml,
}

#[derive(clap::Subcommand, Debug)]
pub enum PluginCommand {
    /// Stage, gates, per-site progress, halted models, next window, predicted completion and
    /// the last events of a schedule (of every schedule when no name is given).
    Status {
        schedule: Option<String>,
        #[arg(short = 'o', long = "output", value_enum, default_value = "text")]
        output: StatusFormat,
        /// Print again at every change of the schedule (a watch) until interrupted.
        #[arg(short = 'w', long)]
        watch: bool,
    },
    /// The plan from the cluster's live objects and the phones' recorded progress (phones
    /// already upgraded are left out), as offline `phonefleet plan` prints it.
    Plan {
        schedule: String,
        #[arg(short = 'o', long = "output", value_enum, default_value = "table")]
        output: crate::plan_report::Format,
        /// Plan as of this instant (RFC 3339); default: now.
        #[arg(long)]
        now: Option<chrono::DateTime<chrono::Utc>>,
    },
    /// Why a phone is where it is: site, family, stage, slot (UTC and local), what the
    /// provisioning server last saw from it (request, version, refusal), and the file it is
    /// served now.
    Why {
        mac: crate::core::Mac,
        #[arg(short = 'o', long = "output", value_enum, default_value = "text")]
        output: StatusFormat,
    },
    /// Stop handing out new slots (sets spec.rollout.paused by server-side apply).
    Pause { schedule: String },
    /// Hand out slots again (sets spec.rollout.paused to false by server-side apply).
    Resume { schedule: String },
    /// Plan the failed phones again (all, one model's, or one phone's).
    Retry {
        schedule: String,
        #[arg(long)]
        model: Option<String>,
        #[arg(long)]
        mac: Option<crate::core::Mac>,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Lift a model's halt for the same firmware version; its failures so far are forgiven.
    Unhalt {
        schedule: String,
        #[arg(long)]
        model: String,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Release the next stage now, without waiting for its success gate.
    Promote {
        schedule: String,
        /// Confirm: the next stage's phones start downloading in their slots.
        #[arg(long)]
        yes: bool,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Print a shell completion script for `kubectl-phonefleet`.
    Completion { shell: clap_complete::Shell },
}

/// Whether a request command waits for the controller to carry it out.
#[derive(clap::Args, Debug, Clone)]
pub struct WaitArgs {
    /// Return once the request is written, without waiting for the controller.
    #[arg(long)]
    pub no_wait: bool,
    /// How long to wait for the controller to carry the request out.
    #[arg(long, default_value_t = 60)]
    pub timeout_seconds: u64,
}

/// Errors a user can act on.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    #[error("reading the kubeconfig: {0}")]
    Kubeconfig(#[from] kube::config::KubeconfigError),
    #[error("connecting to the cluster: {0}")]
    Client(#[from] kube::Error),
    #[error("PhoneSchedule {namespace}/{name} not found")]
    NotFound { namespace: String, name: String },
    #[error("{0}")]
    Refused(String),
    #[error("watching the schedule: {0}")]
    Watch(#[from] kube::runtime::watcher::Error),
    #[error(
        "the controller has not carried out request {id} within {seconds} s: is phonefleet running and watching this namespace? (`kubectl phonefleet status` shows status.rollout.requests)"
    )]
    NotCarriedOut { id: String, seconds: u64 },
    #[error(transparent)]
    Report(#[from] crate::plan_report::ReportError),
    #[error(transparent)]
    Manifest(#[from] crate::manifest::ManifestError),
    #[error("writing the output: {0}")]
    Io(#[from] std::io::Error),
    #[error("encoding the output: {0}")]
    Encode(String),
}

/// A client and the namespace to act in.
pub struct Session {
    pub client: Client,
    pub namespace: String,
}

impl Session {
    /// Connects as kubectl would with the same flags.
    pub async fn connect(target: &Target) -> Result<Session, PluginError> {
        let kubeconfig = match &target.kubeconfig {
            Some(path) => Kubeconfig::read_from(path)?,
            None => Kubeconfig::read()?,
        };
        let options = KubeConfigOptions {
            context: target.context.clone(),
            ..KubeConfigOptions::default()
        };
        let config = Config::from_custom_kubeconfig(kubeconfig, &options).await?;
        let namespace = target
            .namespace
            .clone()
            .unwrap_or_else(|| config.default_namespace.clone());
        Ok(Session {
            client: Client::try_from(config)?,
            namespace,
        })
    }

    pub fn schedules(&self) -> Api<PhoneSchedule> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// The schedule `name`, or a plain "not found".
    pub async fn schedule(&self, name: &str) -> Result<PhoneSchedule, PluginError> {
        self.schedules()
            .get_opt(name)
            .await?
            .ok_or_else(|| PluginError::NotFound {
                namespace: self.namespace.clone(),
                name: name.to_owned(),
            })
    }
}

/// Runs one plugin command, writing its output to `out`.
pub async fn run(cli: PluginCli, out: &mut impl std::io::Write) -> Result<(), PluginError> {
    if let PluginCommand::Completion { shell } = cli.command {
        let mut command = <PluginCli as clap::CommandFactory>::command();
        clap_complete::generate(shell, &mut command, "kubectl-phonefleet", out);
        return Ok(());
    }
    let session = Session::connect(&cli.target).await?;
    match cli.command {
        PluginCommand::Status {
            schedule,
            output,
            watch,
        } => {
            status::run(
                &session,
                schedule.as_deref(),
                cli.target.all_namespaces,
                output,
                watch,
                out,
            )
            .await
        }
        PluginCommand::Plan {
            schedule,
            output,
            now,
        } => {
            let now = now.unwrap_or_else(chrono::Utc::now);
            plan::run(&session, &schedule, now, output, out).await
        }
        PluginCommand::Why { mac, output } => {
            why::run(&session, mac, output, chrono::Utc::now(), out).await
        }
        PluginCommand::Pause { schedule } => mutate::paused(&session, &schedule, true, out).await,
        PluginCommand::Resume { schedule } => mutate::paused(&session, &schedule, false, out).await,
        PluginCommand::Retry {
            schedule,
            model,
            mac,
            wait,
        } => mutate::retry(&session, &schedule, model, mac, &wait, out).await,
        PluginCommand::Unhalt {
            schedule,
            model,
            wait,
        } => mutate::unhalt(&session, &schedule, &model, &wait, out).await,
        PluginCommand::Promote {
            schedule,
            yes,
            wait,
        } => mutate::promote(&session, &schedule, yes, &wait, out).await,
        PluginCommand::Completion { .. } => Ok(()),
    }
}

/// Whether the program was started as the kubectl plugin (its file name).
pub fn invoked_as_plugin(argv0: &std::ffi::OsStr) -> bool {
    std::path::Path::new(argv0)
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n == "kubectl-phonefleet" || n == "kubectl-phonefleet.exe")
}

pub(crate) fn wait_timeout(wait: &WaitArgs) -> Duration {
    Duration::from_secs(wait.timeout_seconds)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn the_plugin_is_recognised_by_its_file_name_only() {
        assert!(invoked_as_plugin(
            "/usr/local/bin/kubectl-phonefleet".as_ref()
        ));
        assert!(invoked_as_plugin("kubectl-phonefleet".as_ref()));
        assert!(!invoked_as_plugin("/usr/bin/phonefleet".as_ref()));
        assert!(!invoked_as_plugin("kubectl-phonefleet-old".as_ref()));
    }

    #[test]
    fn kubectl_flags_parse_before_and_after_the_command() {
        let cli = PluginCli::try_parse_from([
            "kubectl-phonefleet",
            "-n",
            "voice",
            "retry",
            "night",
            "--model",
            "GXP2170",
            "--context",
            "prod",
        ])
        .expect("parses");
        assert_eq!(cli.target.namespace.as_deref(), Some("voice"));
        assert_eq!(cli.target.context.as_deref(), Some("prod"));
        assert!(
            matches!(cli.command, PluginCommand::Retry { model: Some(ref m), .. } if m == "GXP2170")
        );
    }

    #[test]
    fn completion_scripts_name_the_commands() {
        let cli = PluginCli::try_parse_from(["kubectl-phonefleet", "completion", "bash"])
            .expect("parses");
        let mut out = Vec::new();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        rt.block_on(run(cli, &mut out)).expect("completion");
        let script = String::from_utf8(out).expect("utf-8");
        for word in ["unhalt", "promote", "--all-namespaces"] {
            assert!(script.contains(word), "{word} missing");
        }
    }
}
