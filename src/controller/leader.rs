//! Leader election on a `coordination.k8s.io/v1` Lease, so several controller replicas can run
//! and exactly one acts.
//!
//! As client-go's leader election does: the holder renews the Lease every `renew_every` (the
//! retry period); a leader whose renewal has not succeeded within `renew_deadline` of the start
//! of its last successful one steps down at once, even while a call hangs (the API client has
//! no read timeout), and the caller stops acting (it exits and is restarted). A candidate takes
//! the Lease over only once it has seen the Lease's resourceVersion unchanged for the lease
//! duration on its own monotonic clock — never by comparing the holder's `renewTime` with the
//! local wall clock, which skewed clocks get wrong — and with the resourceVersion it read as a
//! precondition, so two candidates can never both win. Since `renew_deadline` is shorter than
//! the lease duration, a stalled leader has stepped down before anyone may take over. A leader
//! that shuts down gracefully releases the Lease so a standby takes over at once.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};
use tokio::sync::watch;
use tokio::time::Instant;

/// How a replica competes for leadership.
#[derive(Clone, Debug)]
pub struct LeaseConfig {
    pub namespace: String,
    pub name: String,
    /// This replica's identity, written as the Lease holder (pod name in a cluster).
    pub identity: String,
    pub lease_duration: Duration,
    /// A leader not renewed within this (counted from the start of its last successful
    /// renewal) steps down; shorter than `lease_duration`.
    pub renew_deadline: Duration,
    pub renew_every: Duration,
}

impl LeaseConfig {
    /// client-go's defaults scaled to `lease_duration`: 15 s lease, 10 s renew deadline,
    /// 2 s retry period.
    pub fn with_ratios(
        namespace: String,
        name: String,
        identity: String,
        lease_duration: Duration,
    ) -> Self {
        Self {
            namespace,
            name,
            identity,
            lease_duration,
            renew_deadline: lease_duration * 2 / 3,
            renew_every: (lease_duration * 2 / 15).max(Duration::from_millis(100)),
        }
    }
}

/// What a candidate has seen of the Lease: its resourceVersion and since when (local
/// monotonic clock). The holder is presumed alive until that record stays the same for the
/// lease duration.
#[derive(Debug, Default)]
struct Observed {
    version: Option<String>,
    since: Option<Instant>,
}

impl Observed {
    fn observe(&mut self, version: Option<&str>, now: Instant) {
        if self.since.is_none() || self.version.as_deref() != version {
            self.version = version.map(str::to_owned);
            self.since = Some(now);
        }
    }

    /// Whether the record observed has not changed for `duration`.
    fn unchanged_for(&self, duration: Duration, now: Instant) -> bool {
        self.since
            .is_some_and(|since| now.saturating_duration_since(since) >= duration)
    }
}

/// Errors talking to the API server about the Lease.
#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    #[error("reading or writing Lease {namespace}/{name}: {source}")]
    Api {
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
}

/// Outcome of one attempt to acquire or renew.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Attempt {
    Leading,
    Following,
}

/// Tries to hold the Lease forever; `leading` reports whether this replica currently leads.
/// Returns when `shutdown` resolves, after releasing the Lease if it held it.
pub async fn run(
    client: Client,
    config: LeaseConfig,
    leading: watch::Sender<bool>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let api: Api<Lease> = Api::namespaced(client, &config.namespace);
    tokio::pin!(shutdown);
    // Start of the last successful renewal: the Lease was written no earlier than that.
    let mut last_renewal: Option<Instant> = None;
    let mut observed = Observed::default();
    loop {
        let started = Instant::now();
        // A leader must be renewed by its deadline; a candidate's attempt gets as long.
        let deadline = last_renewal.unwrap_or(started) + config.renew_deadline;
        let attempt = try_acquire_or_renew(&api, &config, &mut observed);
        let result = tokio::select! {
            result = attempt => Some(result),
            () = tokio::time::sleep_until(deadline) => None,
        };
        let is_leader = match result {
            Some(Ok(Attempt::Leading)) => {
                last_renewal = Some(started);
                true
            }
            Some(Ok(Attempt::Following)) => false,
            Some(Err(e)) => {
                tracing::warn!(error = %e, "leader election attempt failed");
                // Keep leading only until the renew deadline.
                last_renewal.is_some_and(|t| t.elapsed() < config.renew_deadline)
            }
            None => {
                tracing::warn!(
                    deadline_secs = config.renew_deadline.as_secs_f64(),
                    "leader election attempt did not finish before the renew deadline"
                );
                false
            }
        };
        if !is_leader {
            last_renewal = None;
        }
        leading.send_if_modified(|was| {
            let changed = *was != is_leader;
            if changed {
                tracing::info!(identity = %config.identity, leading = is_leader, "leadership changed");
            }
            *was = is_leader;
            changed
        });
        // While leading, never sleep past the renew deadline.
        let next = match last_renewal {
            Some(t) => (started + config.renew_every).min(t + config.renew_deadline),
            None => started + config.renew_every,
        };
        tokio::select! {
            () = &mut shutdown => break,
            () = tokio::time::sleep_until(next) => {}
        }
    }
    if *leading.borrow() {
        if let Err(e) = release(&api, &config).await {
            tracing::warn!(error = %e, "could not release the leader Lease");
        }
        leading.send_replace(false);
    }
}

fn lease_error(config: &LeaseConfig, source: kube::Error) -> LeaderError {
    LeaderError::Api {
        namespace: config.namespace.clone(),
        name: config.name.clone(),
        source,
    }
}

async fn try_acquire_or_renew(
    api: &Api<Lease>,
    config: &LeaseConfig,
    observed: &mut Observed,
) -> Result<Attempt, LeaderError> {
    let now = Timestamp::now();
    let existing = api
        .get_opt(&config.name)
        .await
        .map_err(|e| lease_error(config, e))?;
    if let Some(lease) = &existing {
        observed.observe(lease.metadata.resource_version.as_deref(), Instant::now());
    }
    let Some(mut lease) = existing else {
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(config.name.clone()),
                namespace: Some(config.namespace.clone()),
                ..ObjectMeta::default()
            },
            spec: Some(held_spec(config, now, now, 0)),
        };
        return match api.create(&PostParams::default(), &lease).await {
            Ok(_) => Ok(Attempt::Leading),
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(Attempt::Following),
            Err(e) => Err(lease_error(config, e)),
        };
    };
    let spec = lease.spec.clone().unwrap_or_default();
    let holder = spec.holder_identity.as_deref().unwrap_or("");
    let transitions = spec.lease_transitions.unwrap_or(0);
    let new_spec = if holder == config.identity {
        let acquired = spec.acquire_time.map_or(now, |t| t.0);
        held_spec(config, acquired, now, transitions)
    } else if holder.is_empty() || expired(&spec, observed, config) {
        held_spec(config, now, now, transitions + 1)
    } else {
        return Ok(Attempt::Following);
    };
    lease.spec = Some(new_spec);
    // replace() sends the resourceVersion we read: a concurrent winner makes this fail with 409.
    match api
        .replace(&config.name, &PostParams::default(), &lease)
        .await
    {
        Ok(_) => Ok(Attempt::Leading),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(Attempt::Following),
        Err(e) => Err(lease_error(config, e)),
    }
}

fn held_spec(
    config: &LeaseConfig,
    acquired: Timestamp,
    now: Timestamp,
    transitions: i32,
) -> LeaseSpec {
    LeaseSpec {
        holder_identity: Some(config.identity.clone()),
        lease_duration_seconds: Some(config.lease_duration.as_secs().max(1) as i32),
        acquire_time: Some(MicroTime(acquired)),
        renew_time: Some(MicroTime(now)),
        lease_transitions: Some(transitions),
        ..LeaseSpec::default()
    }
}

/// Whether the holder's lease has run out: its record unchanged for its lease duration (the
/// holder's own `leaseDurationSeconds`, else ours) on this replica's monotonic clock.
fn expired(spec: &LeaseSpec, observed: &Observed, config: &LeaseConfig) -> bool {
    let duration = spec
        .lease_duration_seconds
        .and_then(|s| u64::try_from(s).ok())
        .map_or(config.lease_duration, Duration::from_secs);
    observed.unchanged_for(duration, Instant::now())
}

async fn release(api: &Api<Lease>, config: &LeaseConfig) -> Result<(), LeaderError> {
    let Some(mut lease) = api
        .get_opt(&config.name)
        .await
        .map_err(|e| lease_error(config, e))?
    else {
        return Ok(());
    };
    let Some(spec) = lease.spec.as_mut() else {
        return Ok(());
    };
    if spec.holder_identity.as_deref() != Some(config.identity.as_str()) {
        return Ok(());
    }
    spec.holder_identity = None;
    spec.acquire_time = None;
    spec.renew_time = None;
    api.replace(&config.name, &PostParams::default(), &lease)
        .await
        .map_err(|e| lease_error(config, e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_is_expired_only_once_unchanged_for_the_lease_duration() {
        let start = Instant::now();
        let lease = Duration::from_secs(15);
        let mut seen = Observed::default();
        assert!(!seen.unchanged_for(lease, start), "nothing seen yet");
        seen.observe(Some("7"), start);
        assert!(!seen.unchanged_for(lease, start + Duration::from_secs(14)));
        // A renewal (new resourceVersion) restarts the count, whatever its renewTime says.
        seen.observe(Some("8"), start + Duration::from_secs(14));
        assert!(!seen.unchanged_for(lease, start + Duration::from_secs(20)));
        seen.observe(Some("8"), start + Duration::from_secs(20));
        assert!(seen.unchanged_for(lease, start + Duration::from_secs(29)));
    }

    #[test]
    fn client_go_ratios_put_the_renew_deadline_inside_the_lease() {
        let c = LeaseConfig::with_ratios(
            "ns".into(),
            "l".into(),
            "me".into(),
            Duration::from_secs(15),
        );
        assert_eq!(c.renew_deadline, Duration::from_secs(10));
        assert_eq!(c.renew_every, Duration::from_secs(2));
    }
}
