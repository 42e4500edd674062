//! Leader election on a `coordination.k8s.io/v1` Lease, so several controller replicas can run
//! and exactly one acts.
//!
//! The holder renews the Lease every `renew_every`; a candidate takes it over only once
//! `renewTime + leaseDurationSeconds` has passed, with the Lease's resourceVersion as a
//! precondition so two candidates can never both win. A leader that cannot renew before its
//! lease runs out steps down (the caller then exits and is restarted), and a leader that shuts
//! down gracefully releases the Lease so a standby takes over at once.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};
use tokio::sync::watch;

/// How a replica competes for leadership.
#[derive(Clone, Debug)]
pub struct LeaseConfig {
    pub namespace: String,
    pub name: String,
    /// This replica's identity, written as the Lease holder (pod name in a cluster).
    pub identity: String,
    pub lease_duration: Duration,
    pub renew_every: Duration,
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
    let mut last_renewal: Option<tokio::time::Instant> = None;
    loop {
        let result = try_acquire_or_renew(&api, &config).await;
        let is_leader = match result {
            Ok(Attempt::Leading) => {
                last_renewal = Some(tokio::time::Instant::now());
                true
            }
            Ok(Attempt::Following) => false,
            Err(e) => {
                tracing::warn!(error = %e, "leader election attempt failed");
                // Keep leading only while the lease we last renewed is still ours for sure.
                last_renewal.is_some_and(|t| t.elapsed() < config.lease_duration)
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
        tokio::select! {
            () = &mut shutdown => break,
            () = tokio::time::sleep(config.renew_every) => {}
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
) -> Result<Attempt, LeaderError> {
    let now = Timestamp::now();
    let existing = api
        .get_opt(&config.name)
        .await
        .map_err(|e| lease_error(config, e))?;
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
    } else if holder.is_empty() || expired(&spec, now) {
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

fn expired(spec: &LeaseSpec, now: Timestamp) -> bool {
    let Some(renewed) = spec.renew_time.as_ref() else {
        return true;
    };
    let duration = i64::from(spec.lease_duration_seconds.unwrap_or(0).max(0));
    renewed.0.as_second().saturating_add(duration) < now.as_second()
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

    fn spec(renewed_secs_ago: i64, duration: i32, now: Timestamp) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some("other".into()),
            lease_duration_seconds: Some(duration),
            renew_time: Some(MicroTime(
                Timestamp::from_second(now.as_second() - renewed_secs_ago).unwrap(),
            )),
            ..LeaseSpec::default()
        }
    }

    #[test]
    fn a_lease_renewed_within_its_duration_is_not_expired() {
        let now = Timestamp::from_second(1_000_000).unwrap();
        assert!(!expired(&spec(10, 15, now), now));
        assert!(expired(&spec(16, 15, now), now));
    }

    #[test]
    fn a_lease_never_renewed_is_expired() {
        let now = Timestamp::from_second(1_000_000).unwrap();
        assert!(expired(&LeaseSpec::default(), now));
    }
}
