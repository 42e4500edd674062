//! The controller: reconciles PhoneSchedules into rendered-config ConfigMaps, rollout gates and
//! status, as a pipeline — observe (watch caches) → decide ([`desired::compute`], pure) → apply
//! (only the differences) — woken by changes to schedules, sites, children and progress, and at
//! the next slot boundary.

pub mod apply;
pub mod desired;
pub mod error;
pub mod gating;
pub mod leader;
pub mod observe;
pub mod pace;
pub mod preview;
pub mod requests;
pub mod site_status;
pub mod synced;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ListParams};
use kube::core::PartialObjectMeta;
use kube::runtime::controller::Action;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{Controller, WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

pub use error::Error;

use crate::api::{PhoneSchedule, PhoneSite};
use crate::children::{
    COMPONENT_CONFIG, COMPONENT_PROGRESS, LABEL_COMPONENT, LABEL_MANAGED_BY, MANAGED_BY,
};
use crate::clock::Clock;
use crate::core::{Mac, MacSet};
use crate::render::ServerUrl;
use crate::scope::WatchScope;
use crate::selector::Selector;
use observe::Caches;

/// Site statuses written at once (see `run`).
const SITE_STATUS_WRITES_IN_FLIGHT: u16 = 8;

/// Longest sleep between two reconciles of a schedule with a rollout in flight, as a safety
/// net under the boundary-driven wake-ups.
const MAX_REQUEUE: Duration = Duration::from_secs(3600);
/// Retry delay after a failed reconcile.
const ERROR_REQUEUE: Duration = Duration::from_secs(5);

/// Retry delays for the watches: exponential from 250 ms, capped at 5 s, back to the start once
/// a retry succeeds. kube's default caps at 30 s and resets only after two quiet minutes, which
/// after an API server restart (a burst of connection errors, then "too old resource version"
/// while the new server's watch cache fills) leaves the controller deaf for minutes.
#[derive(Clone, Debug)]
pub struct WatchBackoff {
    next: Duration,
}

impl Default for WatchBackoff {
    fn default() -> Self {
        WatchBackoff {
            next: Duration::from_millis(250),
        }
    }
}

impl Iterator for WatchBackoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let delay = self.next;
        self.next = (self.next * 2).min(Duration::from_secs(5));
        Some(delay)
    }
}

impl kube::runtime::utils::Backoff for WatchBackoff {
    fn reset(&mut self) {
        *self = WatchBackoff::default();
    }
}

/// How the controller runs.
#[derive(Clone, Debug)]
pub struct ControllerConfig {
    /// The namespaces watched: one, a list, or all.
    pub scope: WatchScope,
    /// Base URL phones use to reach the provisioning server (written into their files).
    pub server_url: ServerUrl,
    /// Compete for leadership on this Lease; `None` runs as the only replica.
    pub lease: Option<leader::LeaseConfig>,
    /// Name this replica reports events under.
    pub instance: String,
}

/// Shared state of the reconcilers.
pub struct Context {
    pub client: Client,
    pub clock: Clock,
    pub config: ControllerConfig,
    pub caches: Caches,
    recorder: Recorder,
    /// Last slots written per schedule uid (see [`observe::load_slots`]). Shared, not copied:
    /// at a million phones a copy per reconcile costs tens of megabytes and milliseconds.
    slots: Mutex<HashMap<String, Arc<desired::DecidedSlots>>>,
    /// How long the last reconcile of each schedule uid took on the controller's clock, from
    /// reading `now` to the end of its writes (see [`desired::Inputs::propagation`]).
    propagation: Mutex<HashMap<String, chrono::Duration>>,
    /// Observers of each reconcile (metrics, tests).
    pub observer: Arc<dyn ReconcileObserver>,
    /// When each schedule last reconciled, to pace child-triggered reconciles.
    pace: pace::Pace,
    /// Each PhoneSite's validation, per version (see [`crate::selection::CheckedSites`]).
    checked_sites: crate::selection::CheckedSites,
    /// How each schedule's sites were cut into shards (see [`desired::CutMemo`]).
    cut_memo: desired::CutMemo,
}

/// Hooks called around reconciles, so metrics stay out of the pipeline.
pub trait ReconcileObserver: Send + Sync {
    /// A reconcile finished; `error` is the bounded reason on failure.
    fn reconciled(
        &self,
        _schedule: &PhoneSchedule,
        _elapsed: Duration,
        _error: Option<&'static str>,
    ) {
    }
    /// The status the reconcile decided (written or not).
    fn status(&self, _schedule: &PhoneSchedule, _status: &crate::api::PhoneScheduleStatus) {}
    /// Whether this replica leads now; called once at start and on every change.
    fn leading(&self, _leading: bool) {}
    /// The controller's schedule cache, once it starts: lets an observer forget the schedules
    /// that were deleted (no reconcile runs for those) and tell when the caches are synced.
    fn watching(&self, _schedules: Store<PhoneSchedule>, _synced: synced::Synced) {}
}

/// An observer that does nothing.
pub struct NoObserver;
impl ReconcileObserver for NoObserver {}

/// Fails with a plain message when the CRDs are missing (the most common first-run mistake).
pub async fn check_crds(client: &Client, scope: &WatchScope) -> Result<(), Error> {
    let probe = ListParams::default().limit(1);
    let mut results = Vec::new();
    for (schedules, sites) in scope
        .apis::<PhoneSchedule>(client)
        .into_iter()
        .zip(scope.apis::<PhoneSite>(client))
    {
        results.push(schedules.list(&probe).await.map(|_| ()));
        results.push(sites.list(&probe).await.map(|_| ()));
    }
    for result in results {
        match result {
            Ok(()) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {
                return Err(Error::CrdsMissing(e.message));
            }
            Err(e) => return Err(error::api("checking that the CRDs are installed")(e)),
        }
    }
    Ok(())
}

/// Runs the controller until `shutdown` is cancelled (Ok) or leadership is lost (Err).
pub async fn run(
    client: Client,
    clock: Clock,
    config: ControllerConfig,
    observer: Arc<dyn ReconcileObserver>,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    check_crds(&client, &config.scope).await?;

    let (leading_tx, mut leading) = watch::channel(config.lease.is_none());
    {
        // Tell the observer the leadership now and on every change (the leader gauge).
        let (observer, mut leading) = (observer.clone(), leading.clone());
        observer.leading(*leading.borrow_and_update());
        tokio::spawn(async move {
            while leading.changed().await.is_ok() {
                observer.leading(*leading.borrow_and_update());
            }
        });
    }
    let stop_leading = CancellationToken::new();
    let leader_task = config.lease.clone().map(|lease| {
        let (client, stop) = (client.clone(), stop_leading.clone());
        tokio::spawn(
            async move { leader::run(client, lease, leading_tx, stop.cancelled_owned()).await },
        )
    });
    if config.lease.is_some() {
        tracing::info!("waiting to become leader");
        tokio::select! {
            () = shutdown.cancelled() => {
                stop_leading.cancel();
                if let Some(task) = leader_task { let _ = task.await; }
                return Ok(());
            }
            _ = async { leading.wait_for(|l| *l).await.is_ok() } => {}
        }
        tracing::info!("leading: starting the controller");
    }

    // Stop when asked to, or as soon as this replica stops leading.
    let stop = CancellationToken::new();
    let lost = Arc::new(std::sync::atomic::AtomicBool::new(false));
    {
        let (stop, shutdown, lost) = (stop.clone(), shutdown.clone(), lost.clone());
        let mut leading = leading.clone();
        let elected = config.lease.is_some();
        tokio::spawn(async move {
            let lost_lease = async {
                if elected && leading.wait_for(|l| !*l).await.is_ok() {
                    return;
                }
                // Not elected (the only replica), or the elector is gone: nothing to lose.
                std::future::pending::<()>().await;
            };
            tokio::select! {
                () = shutdown.cancelled() => {}
                () = lost_lease => lost.store(true, std::sync::atomic::Ordering::SeqCst),
            }
            stop.cancel();
        });
    }

    let scope = config.scope.clone();
    let managed = format!("{LABEL_MANAGED_BY}={MANAGED_BY}");
    // Readiness of each cache, for any number of waiters (see `synced`).
    let (sites_marker, sites_synced) = synced::channel();
    let (shards_marker, shards_synced) = synced::channel();
    let (progress_marker, progress_synced) = synced::channel();
    let (schedules_marker, schedules_synced) = synced::channel();
    let (sites, sites_writer) = reflector::store();
    // One PhoneSite cache for both controllers: every site event also wakes the site-status
    // controller, which reads the same cache (a second watch would hold a second copy of
    // every phone).
    let (site_events, site_refs) = futures::channel::mpsc::unbounded();
    let site_stream = reflector::reflector(
        sites_writer,
        scope.watcher::<PhoneSite>(&client, watcher::Config::default()),
    )
    .inspect(sites_marker.on_event())
    .backoff(WatchBackoff::default())
    .touched_objects()
    .inspect(move |site| {
        if let Ok(site) = site {
            // The receiver lives as long as the site-status controller; after it, nothing waits.
            let _ = site_events.unbounded_send(ObjectRef::from_obj(site));
        }
    });
    let (shards, shards_writer) = reflector::store();
    let shard_stream = reflector::reflector(
        shards_writer,
        scope.watcher::<PartialObjectMeta<ConfigMap>>(
            &client,
            watcher::Config::default()
                .labels(&format!("{LABEL_COMPONENT}={COMPONENT_CONFIG},{managed}")),
        ),
    )
    .inspect(shards_marker.on_event())
    .backoff(WatchBackoff::default())
    .touched_objects();
    let (progress, progress_writer) = reflector::store();
    let progress_stream = reflector::reflector(
        progress_writer,
        scope.watcher::<ConfigMap>(
            &client,
            watcher::Config::default().labels(&format!("{LABEL_COMPONENT}={COMPONENT_PROGRESS}")),
        ),
    )
    .inspect(progress_marker.on_event())
    .backoff(WatchBackoff::default())
    .touched_objects();

    let (schedules, schedules_writer) = reflector::store();
    let schedule_stream = reflector::reflector(
        schedules_writer,
        scope.watcher::<PhoneSchedule>(&client, watcher::Config::default()),
    )
    .inspect(schedules_marker.on_event())
    .backoff(WatchBackoff::default())
    .applied_objects();
    let controller = Controller::for_stream(schedule_stream, schedules.clone());
    observer.watching(schedules.clone(), schedules_synced);
    let ctx = Arc::new(Context {
        recorder: Recorder::new(
            client.clone(),
            Reporter {
                controller: "phonefleet".into(),
                instance: Some(config.instance.clone()),
            },
        ),
        client,
        clock,
        config,
        caches: Caches {
            schedules: schedules.clone(),
            sites,
            shards,
            progress,
            synced: vec![sites_synced, shards_synced, progress_synced],
            parsed: observe::ParsedProgress::default(),
        },
        slots: Mutex::new(HashMap::new()),
        propagation: Mutex::new(HashMap::new()),
        observer,
        pace: pace::Pace::default(),
        checked_sites: crate::selection::CheckedSites::default(),
        cut_memo: desired::CutMemo::default(),
    });
    // Site status: woken by the site events of the one site watch, reading its cache.
    let site_statuses = Controller::for_stream(
        futures::stream::empty::<Result<PhoneSite, watcher::Error>>(),
        ctx.caches.sites.clone(),
    )
    .reconcile_on(site_refs)
    // A few status writes in flight: at start every site is due at once, and 10,000
    // concurrent patches time out in the API server (504s and refused connections, measured
    // at 1,000,000 phones) before the schedule's own reconcile gets a turn.
    .with_config(
        kube::runtime::controller::Config::default().concurrency(SITE_STATUS_WRITES_IN_FLIGHT),
    )
    .trigger_backoff(WatchBackoff::default())
    .graceful_shutdown_on(stop.clone().cancelled_owned())
    .run(reconcile_site, error_policy_site, ctx.clone())
    .for_each(|_| async {});
    let sites_cache = ctx.caches.sites.clone();
    let shards_cache = ctx.caches.shards.clone();
    let schedules_loop = controller
        .trigger_backoff(WatchBackoff::default())
        // Progress and the controller's own shard writes wake the owning schedule, paced
        // (see `pace`): a rollout's stream of progress batches into few reconciles.
        .reconcile_on(pace::paced(
            futures::stream::select(
                shard_stream.filter_map(|r| async move { r.ok().map(|o| owners(&o)) }),
                progress_stream.filter_map(|r| async move { r.ok().map(|o| owners(&o)) }),
            )
            .flat_map(futures::stream::iter),
            ctx.pace.clone(),
        ))
        .watches_stream(site_stream, move |site| {
            let mut refs = schedules_selecting(&schedules, &shards_cache, &site);
            refs.extend(schedules_sharing_phones(&schedules, &sites_cache, &site));
            refs
        })
        .graceful_shutdown_on(stop.cancelled_owned())
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "reconcile failed");
            }
        });
    futures::join!(schedules_loop, site_statuses);

    stop_leading.cancel();
    if let Some(task) = leader_task {
        let _ = task.await;
    }
    if lost.load(std::sync::atomic::Ordering::SeqCst) {
        return Err(Error::LostLeadership);
    }
    Ok(())
}

/// The schedules a site change concerns: those selecting it now, and those that had it (in
/// their status, or with a shard of it: a status lists at most
/// `desired::status::MAX_STATUS_SITES` sites).
fn schedules_selecting(
    schedules: &Store<PhoneSchedule>,
    shards: &Store<PartialObjectMeta<ConfigMap>>,
    site: &PhoneSite,
) -> Vec<ObjectRef<PhoneSchedule>> {
    let name = site.name_any();
    // Only a schedule that no longer selects the site needs the shard scan; done once.
    let mut with_shards: Option<std::collections::HashSet<String>> = None;
    schedules
        .state()
        .iter()
        .filter(|s| s.namespace() == site.namespace())
        .filter(|s| {
            if Selector::parse(&s.spec.site_selector).is_ok_and(|sel| sel.matches(site.labels())) {
                return true;
            }
            if s.status
                .as_ref()
                .is_some_and(|st| st.sites.iter().any(|x| x.name == name))
            {
                return true;
            }
            with_shards
                .get_or_insert_with(|| {
                    shards
                        .state()
                        .iter()
                        .filter(|m| {
                            m.namespace() == site.namespace()
                                && m.labels().get(crate::children::LABEL_SITE) == Some(&name)
                        })
                        .filter_map(|m| m.labels().get(crate::children::LABEL_SCHEDULE).cloned())
                        .collect()
                })
                .contains(&s.name_any())
        })
        .map(|s| ObjectRef::from_obj(s.as_ref()))
        .collect()
}

/// The schedules of other namespaces a site change may put in or out of a phone conflict
/// (cluster-wide mode, see [`observe::Observed::claimed_elsewhere`]): those already reporting
/// one (it may have ended), and those whose sites list a MAC of this site. Linear in the
/// watched sites' phones; nothing in single-namespace mode.
fn schedules_sharing_phones(
    schedules: &Store<PhoneSchedule>,
    sites: &Store<PhoneSite>,
    site: &PhoneSite,
) -> Vec<ObjectRef<PhoneSchedule>> {
    let ns = site.namespace();
    let all_schedules = schedules.state();
    if all_schedules.iter().all(|s| s.namespace() == ns) {
        return Vec::new();
    }
    let macs: MacSet = site
        .spec
        .phones
        .iter()
        .filter_map(|p| p.mac.parse().ok())
        .collect();
    let all_sites = sites.state();
    all_schedules
        .iter()
        .filter(|s| s.namespace() != ns)
        .filter(|s| {
            let reporting = s.status.as_ref().is_some_and(|st| {
                st.conditions
                    .iter()
                    .any(|c| c.reason == desired::reason::PHONE_CONFLICT)
            });
            reporting
                || Selector::parse(&s.spec.site_selector).is_ok_and(|sel| {
                    all_sites
                        .iter()
                        .filter(|x| x.namespace() == s.namespace() && sel.matches(x.labels()))
                        .flat_map(|x| x.spec.phones.iter())
                        .any(|p| p.mac.parse::<Mac>().is_ok_and(|m| macs.contains(&m)))
                })
        })
        .map(|s| ObjectRef::from_obj(s.as_ref()))
        .collect()
}

async fn reconcile(schedule: Arc<PhoneSchedule>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = std::time::Instant::now();
    tracing::debug!(schedule = %format!("{}/{}", schedule.namespace().unwrap_or_default(), schedule.name_any()), "reconciling");
    let result = reconcile_inner(&schedule, &ctx).await;
    ctx.observer.reconciled(
        &schedule,
        started.elapsed(),
        result.as_ref().err().map(Error::reason),
    );
    ctx.pace.finished(
        ObjectRef::from_obj(schedule.as_ref()),
        std::time::Instant::now(),
        started.elapsed(),
    );
    result
}

/// The PhoneSchedules owning `child` (its owner references of that kind).
fn owners<K: kube::Resource>(child: &K) -> Vec<ObjectRef<PhoneSchedule>> {
    let ns = child.meta().namespace.clone();
    child
        .owner_references()
        .iter()
        .filter(|o| o.kind == "PhoneSchedule" && o.api_version.starts_with("phonefleet.io/"))
        .map(|o| {
            let r = ObjectRef::new(&o.name);
            match &ns {
                Some(ns) => r.within(ns),
                None => r,
            }
        })
        .collect()
}

async fn reconcile_inner(schedule: &PhoneSchedule, ctx: &Context) -> Result<Action, Error> {
    // The decision needs complete caches: a half-filled shard cache would rewrite everything.
    // Not `Store::wait_until_ready`: of concurrent reconciles awaiting it only one would wake.
    if !synced::all(&ctx.caches.synced).await {
        return Ok(Action::requeue(ERROR_REQUEUE));
    }
    if schedule.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let uid = schedule.uid().unwrap_or_default();
    let ns = schedule.namespace().unwrap_or_default();
    let observed = observe::observe(&ctx.caches, schedule);
    // Forget the validation of deleted sites (every namespace's: the memo is shared).
    let live: std::collections::HashSet<String> = ctx
        .caches
        .sites
        .state()
        .iter()
        .filter_map(|s| s.uid())
        .collect();
    ctx.checked_sites.retain(|uid| live.contains(uid));
    // Forget the cuts and slots of deleted schedules.
    let schedules = ctx.caches.schedules.state();
    let names: std::collections::HashSet<String> = schedules
        .iter()
        .map(|s| format!("{}/{}", s.namespace().unwrap_or_default(), s.name_any()))
        .collect();
    let uids: std::collections::HashSet<String> =
        schedules.iter().filter_map(|s| s.uid()).collect();
    ctx.cut_memo.retain(|key| names.contains(key));
    if let Ok(mut slots) = ctx.slots.lock() {
        slots.retain(|uid, _| uids.contains(uid));
    }

    let cached = ctx.slots.lock().ok().and_then(|m| m.get(&uid).cloned());
    let previous_slots = match cached {
        Some(slots) => slots,
        None => {
            let configmaps: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &ns);
            Arc::new(desired::DecidedSlots::from_map(
                observe::load_slots(&configmaps, observed.existing_shards.keys()).await?,
            ))
        }
    };

    let now = ctx.clock.now();
    let propagation = ctx
        .propagation
        .lock()
        .ok()
        .and_then(|m| m.get(&uid).copied())
        .unwrap_or_else(chrono::Duration::zero);
    let inputs = desired::Inputs {
        schedule,
        schedules: &observed.schedules,
        sites: &observed.sites,
        checked_sites: Some(&ctx.checked_sites),
        cut_memo: Some(&ctx.cut_memo),
        claimed_elsewhere: &observed.claimed_elsewhere,
        progress: &observed.progress,
        previous_slots: &previous_slots,
        existing_shards: &observed.existing_shards,
        server_url: &ctx.config.server_url,
        now,
        propagation,
    };
    let desired = desired::compute(&inputs);
    ctx.observer.status(schedule, &desired.status);

    let written = apply::apply(&ctx.client, &ctx.recorder, schedule, &desired).await?;
    // Decide + write, on the controller's clock: the next decision's slots start after it.
    let took = ctx.clock.now() - now;
    if written == apply::Written::default() {
        tracing::debug!(schedule = %format!("{ns}/{}", schedule.name_any()), "reconciled: nothing to write");
    } else {
        tracing::info!(
            schedule = %format!("{ns}/{}", schedule.name_any()),
            shards = written.shards,
            deleted = written.deleted,
            status = written.status,
            events = written.events,
            took_seconds = took.num_milliseconds() as f64 / 1000.0,
            "reconciled"
        );
    }
    if let Ok(mut memory) = ctx.propagation.lock() {
        // The larger of this reconcile and a decayed memory of slower ones: one quick
        // reconcile (nothing to write) must not make the next slow one hand out past slots.
        let decayed = memory.get(&uid).map_or(took, |p| *p * 3 / 4);
        memory.insert(uid.clone(), took.max(decayed));
    }
    if let Ok(mut slots) = ctx.slots.lock() {
        slots.insert(uid, Arc::new(desired.slots));
    }
    Ok(match desired.wake_at {
        Some(at) => Action::requeue(ctx.clock.to_real(desired::until(now, at)).min(MAX_REQUEUE)),
        None => Action::await_change(),
    })
}

/// Writes a PhoneSite's status when it differs from what the site's spec says.
async fn reconcile_site(site: Arc<PhoneSite>, ctx: Arc<Context>) -> Result<Action, Error> {
    let desired = site_status::compute(&site, ctx.clock.now());
    if site.status.as_ref() != Some(&desired) {
        let ns = site.namespace().unwrap_or_default();
        let sites: Api<PhoneSite> = Api::namespaced(ctx.client.clone(), &ns);
        let patch = serde_json::json!({
            "apiVersion": "phonefleet.io/v1alpha1",
            "kind": "PhoneSite",
            "status": desired,
        });
        sites
            .patch_status(
                &site.name_any(),
                &kube::api::PatchParams::apply(apply::FIELD_MANAGER).force(),
                &kube::api::Patch::Apply(&patch),
            )
            .await
            .map_err(error::api(format!(
                "writing status of PhoneSite {ns}/{}",
                site.name_any()
            )))?;
    }
    Ok(Action::await_change())
}

fn error_policy_site(site: Arc<PhoneSite>, error: &Error, _ctx: Arc<Context>) -> Action {
    tracing::warn!(site = %site.name_any(), reason = error.reason(), error = %error, "site status not written; retrying");
    Action::requeue(ERROR_REQUEUE)
}

fn error_policy(schedule: Arc<PhoneSchedule>, error: &Error, _ctx: Arc<Context>) -> Action {
    tracing::warn!(
        schedule = %schedule.name_any(),
        reason = error.reason(),
        error = %error,
        "reconcile failed; retrying"
    );
    Action::requeue(ERROR_REQUEUE)
}
