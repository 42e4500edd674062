//! Runs the phonefleet controller inside the test process, scoped to one namespace, with a
//! clock the test chooses, and counts its reconciles.
#![allow(dead_code)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use phonefleet::api::{PhoneSchedule, PhoneScheduleStatus};
use phonefleet::clock::Clock;
use phonefleet::controller::{self, ControllerConfig, ReconcileObserver};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Base URL the test controllers write into the phones' files.
pub const SERVER_URL: &str = "http://prov.test:8080";

/// Counts reconciles.
#[derive(Default)]
pub struct Counter {
    pub reconciles: AtomicUsize,
    pub errors: AtomicUsize,
}

impl ReconcileObserver for Counter {
    fn reconciled(&self, _: &PhoneSchedule, _: Duration, error: Option<&'static str>) {
        self.reconciles.fetch_add(1, Ordering::SeqCst);
        if error.is_some() {
            self.errors.fetch_add(1, Ordering::SeqCst);
        }
    }
    fn status(&self, _: &PhoneSchedule, _: &PhoneScheduleStatus) {}
}

/// A controller running in this process.
pub struct RunningController {
    pub counter: Arc<Counter>,
    token: CancellationToken,
    task: JoinHandle<Result<(), controller::Error>>,
}

impl RunningController {
    /// Starts a controller watching `namespace` only.
    pub fn start(client: kube::Client, namespace: &str, clock: Clock) -> Self {
        let counter = Arc::new(Counter::default());
        let token = CancellationToken::new();
        let config = ControllerConfig {
            scope: phonefleet::scope::WatchScope::namespace(namespace.to_owned()),
            server_url: SERVER_URL.parse().expect("server URL"),
            lease: None,
            instance: format!("test-{namespace}"),
        };
        let task = tokio::spawn(controller::run(
            client,
            clock,
            config,
            counter.clone(),
            token.clone(),
        ));
        RunningController {
            counter,
            token,
            task,
        }
    }

    pub fn reconciles(&self) -> usize {
        self.counter.reconciles.load(Ordering::SeqCst)
    }

    /// Stops it gracefully and returns how its run ended.
    pub async fn stop(self) -> Result<(), controller::Error> {
        self.token.cancel();
        self.task.await.expect("controller task")
    }
}

/// `phonefleet run` as a child process (for kill -9 and multi-replica tests), logging to a
/// file the test can poll.
pub struct ControllerProcess {
    pub child: std::process::Child,
    pub log: std::path::PathBuf,
}

impl ControllerProcess {
    /// Starts `phonefleet run --namespace NS` plus `extra` arguments against `cluster`.
    pub fn spawn(cluster: &super::TestCluster, namespace: &str, extra: &[&str]) -> Self {
        static SEQ: AtomicUsize = AtomicUsize::new(0);
        let log = std::env::temp_dir().join(format!(
            "phonefleet-run-{}-{}.log",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::SeqCst)
        ));
        let file = std::fs::File::create(&log).expect("log file");
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_phonefleet"))
            .args(["run", "--namespace", namespace, "--server-url", SERVER_URL])
            .args(["--provisioning-listen", "127.0.0.1:0"])
            // Several replicas run side by side: no fixed metrics port.
            .args(["--metrics-listen", "127.0.0.1:0"])
            .args(extra)
            .env("KUBECONFIG", &cluster.kubeconfig)
            .env("RUST_LOG", "info,phonefleet=debug,kube=warn")
            .env("NO_COLOR", "1")
            .stdout(file.try_clone().expect("log"))
            .stderr(file)
            .spawn()
            .expect("spawn phonefleet run");
        ControllerProcess { child, log }
    }

    /// The log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Kills the process with SIGKILL, as a node failure would.
    pub fn kill_9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ControllerProcess {
    fn drop(&mut self) {
        self.kill_9();
        let _ = std::fs::remove_file(&self.log);
    }
}
