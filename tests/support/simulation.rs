//! Compressed-clock tests that do not depend on the machine's speed.
//!
//! A compressed clock runs at a fixed ratio to real time whatever the machine is doing, so a
//! test that gives a rollout N *real* seconds is a different test on a loaded machine: each slow
//! reconcile costs simulated minutes, and the same rollout needs more simulated time. So:
//!
//! - the **budget is simulated time**: `phonefleet simulate` runs for a generous number of
//!   simulated hours (several times what the plan predicts), and that run *is* the deadline;
//! - the test **waits on outcomes**, not on the clock: it polls the cluster until what it waits
//!   for has happened, and fails only when the simulator has used up its simulated budget
//!   ([`until_simulated`]);
//! - then it **ends the simulation** ([`SimulatorProcess::stop`], SIGTERM) and reads what the
//!   phones counted. On an idle machine the test takes as long as the rollout needs; on a
//!   loaded one it takes longer, and passes all the same.
//!
//! The controller also adds its own measured reconcile time to the slot lead
//! (`desired::Inputs::propagation`), so a slow decision never hands out slots already past.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

/// `phonefleet simulate` as a child process, ended by SIGTERM or by its simulated budget.
pub struct SimulatorProcess {
    /// `None` once [`SimulatorProcess::stop`] has collected it.
    child: Option<Child>,
}

impl SimulatorProcess {
    /// Starts `phonefleet simulate --server URL -n NS --kubeconfig K ARGS…`; `args` carry the
    /// clock flags, `--hours` (the simulated budget) and the scenario.
    pub fn start(kubeconfig: &Path, namespace: &str, server: &str, args: &[String]) -> Self {
        let child = Command::new(env!("CARGO_BIN_EXE_phonefleet"))
            .args(["simulate", "--server", server, "-n", namespace])
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn phonefleet simulate");
        SimulatorProcess { child: Some(child) }
    }

    /// Whether the simulation is still going (its simulated budget is not used up).
    pub fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Ends the simulation (SIGTERM: the phones stop where they are and the simulator still
    /// prints its summary) and returns the summary.
    pub fn stop(mut self) -> Value {
        let child = self.child.take().expect("a simulator not yet stopped");
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        Self::summary(child)
    }

    /// The summary of a simulation that ended by itself (`--until-settled` or its budget):
    /// poll [`SimulatorProcess::running`] first, this blocks until the process exits.
    pub fn finished(mut self) -> Value {
        Self::summary(self.child.take().expect("a simulator not yet collected"))
    }

    fn summary(child: Child) -> Value {
        let out = child
            .wait_with_output()
            .expect("wait for phonefleet simulate");
        assert!(out.status.success(), "phonefleet simulate failed");
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "no JSON summary ({e}): {}",
                String::from_utf8_lossy(&out.stdout)
            )
        })
    }
}

impl Drop for SimulatorProcess {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Polls `check` every 200 ms until it returns `Some`, or panics naming `what` once the
/// simulator has used up its simulated budget without it happening.
pub async fn until_simulated<T, F, Fut>(what: &str, sim: &mut SimulatorProcess, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    loop {
        if let Some(value) = check().await {
            return value;
        }
        if !sim.running() {
            // What the phones counted (errors above all) tells a slow run from a broken one.
            let summary = sim
                .child
                .take()
                .map(|c| SimulatorProcess::summary(c).to_string())
                .unwrap_or_default();
            panic!("the simulation used up its simulated budget before {what}; summary: {summary}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until the provisioning server at `base` serves every phone of `sites` its file, before
/// the phones boot. A phone whose boot-time fetch finds no file keeps its factory schedule and
/// does not check again before its next window, and on a loaded machine the controller's first
/// decision can land well after the server's `/readyz` (ready once its index has synced,
/// possibly before anything was written to it). The probes come from 127.0.0.2, so the 404s
/// they may meet count against that address's failure limit, not the phones' (127.0.0.1); the
/// server counts them as requests like any other.
pub async fn wait_until_served(
    base: &str,
    sites: &[phonefleet::simulator::SimSite],
    timeout: Duration,
) {
    use http_body_util::{BodyExt, Empty};
    use hyper_util::client::legacy::Client;
    use hyper_util::client::legacy::connect::HttpConnector;
    use hyper_util::rt::TokioExecutor;

    let mut connector = HttpConnector::new();
    connector.set_local_address(Some(std::net::Ipv4Addr::new(127, 0, 0, 2).into()));
    let http: Client<_, Empty<bytes::Bytes>> =
        Client::builder(TokioExecutor::new()).build(connector);
    let files: Vec<String> = sites
        .iter()
        .flat_map(|s| &s.phones)
        .filter_map(|p| {
            p.family
                .map(|f| phonefleet::render::Format::of(f).file_name(p.mac))
        })
        .collect();
    super::eventually("the server to serve every phone's file", timeout, || {
        let (http, files) = (http.clone(), &files);
        async move {
            for file in files {
                let uri = format!("{base}/{file}").parse().ok()?;
                let resp = tokio::time::timeout(Duration::from_secs(10), http.get(uri))
                    .await
                    .ok()?
                    .ok()?;
                if !resp.status().is_success() {
                    return None;
                }
                resp.into_body().collect().await.ok()?;
            }
            Some(())
        }
    })
    .await;
}
