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
            namespace: Some(namespace.to_owned()),
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
