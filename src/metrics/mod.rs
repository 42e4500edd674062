//! Prometheus metrics of `phonefleet run`: one registry holding the controller's view of each
//! rollout (fed by the [`ReconcileObserver`] hooks), the provisioning server's counters (read
//! from [`ServerStats`] at scrape time) and process facts (leader, build).
//!
//! Label values are bounded by the inventory, never by phones or error text: `namespace` and
//! `schedule` (PhoneSchedules), `site` (PhoneSites), `state`, `phase`, `reason`, `result`
//! (fixed sets in the code), `stage` (at most 10 per schedule, validated) and `model` (only on
//! halted models: the inventory's model names, a few dozen at most). The series of a deleted
//! schedule, or of a site a schedule no longer selects, are removed. See `docs/metrics.md`.

pub mod endpoint;
mod exposition;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use kube::ResourceExt;
use kube::runtime::reflector::Store;
use prometheus::{
    Gauge, GaugeVec, Histogram, HistogramOpts, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

use exposition::{Family, Kind};

use crate::api::{PhoneSchedule, PhoneScheduleStatus};
use crate::controller::ReconcileObserver;
use crate::controller::desired::{Phase, phase};
use crate::controller::error::ErrorClass;
use crate::controller::synced::Synced;
use crate::server::{Outcome, ServerStats, SiteStats, UpstreamResult};

/// Phone states of `phonefleet_phones`, as in `status.counts`.
pub const PHONE_STATES: [&str; 4] = ["pending", "in_progress", "upgraded", "failed"];

/// Every phase of `phonefleet_rollout_phase`, so the gauge is one-hot over a fixed set: the
/// controller's [`Phase`] enum, every variant.
pub const PHASES: [&str; Phase::ALL.len()] = {
    let mut names = [""; Phase::ALL.len()];
    let mut i = 0;
    while i < names.len() {
        names[i] = Phase::ALL[i].as_str();
        i += 1;
    }
    names
};

/// Every value [`crate::controller::Error::reason`] returns ([`ErrorClass`], every variant);
/// the error counter starts at zero for each, so `rate()` and alerts have a series before the
/// first error.
pub const RECONCILE_ERROR_REASONS: [&str; ErrorClass::ALL.len()] = {
    let mut names = [""; ErrorClass::ALL.len()];
    let mut i = 0;
    while i < names.len() {
        names[i] = ErrorClass::ALL[i].as_str();
        i += 1;
    }
    names
};

/// Reasons of `phonefleet_downloads_refused_total`.
pub const REFUSAL_REASONS: [&str; 2] = ["busy", "outside_slot"];

/// Reconcile durations: a no-op reconcile takes milliseconds, a first render of a big fleet
/// seconds.
const RECONCILE_BUCKETS: [f64; 13] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 2.5, 5.0, 10.0, 30.0,
];

/// Why the metrics could not be set up or served.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("registering metric: {0}")]
    Register(#[from] prometheus::Error),
    #[error("binding the metrics endpoint {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// Series written for one schedule, so they can all be removed when it goes away.
#[derive(Clone, Debug, Default)]
struct ScheduleSeries {
    /// Per-site rows, written into the exposition at each scrape (see [`exposition`]).
    sites: Vec<SiteRow>,
    /// Stage names of `phonefleet_rollout_stage_phones`.
    stages: BTreeSet<String>,
    stage: Option<String>,
    halted: BTreeSet<String>,
    /// The schedule-level timestamps set now (removed when they become unknown).
    completion: bool,
    next_window: bool,
}

/// One site of a schedule's rollout: the values of its [`CONTROLLER_SITE_FAMILIES`] series.
#[derive(Clone, Debug, PartialEq)]
struct SiteRow {
    site: String,
    /// Phones by state, in the order of [`PHONE_STATES`].
    phones: [u32; 4],
    completion: Option<f64>,
    next_window: Option<f64>,
    window_open: bool,
}

/// A timestamp of a [`SiteRow`] (none: no series, rather than one saying 1970).
type RowTime = fn(&SiteRow) -> Option<f64>;

/// One per-site value of the server's counters.
type ServerValue = fn(&SiteStats) -> f64;

/// The per-(schedule, site) families of the leader, written from [`SiteRow`]s.
pub const CONTROLLER_SITE_FAMILIES: [Family; 4] = [
    Family {
        name: "phonefleet_phones",
        help: "Phones a rollout targets, by site and state (pending, in_progress, upgraded, failed).",
        kind: Kind::Gauge,
        labels: &["namespace", "schedule", "site", "state"],
    },
    Family {
        name: "phonefleet_site_predicted_completion_timestamp_seconds",
        help: "When the site's last phone is predicted to be done (Unix time).",
        kind: Kind::Gauge,
        labels: &SITE,
    },
    Family {
        name: "phonefleet_site_next_window_timestamp_seconds",
        help: "Start of the site's next slot in which some phone may download (Unix time).",
        kind: Kind::Gauge,
        labels: &SITE,
    },
    Family {
        name: "phonefleet_site_window_open",
        help: "1 while some phone of the site is inside its released slot (downloads expected).",
        kind: Kind::Gauge,
        labels: &SITE,
    },
];

/// The per-site families of the provisioning server, written from its [`ServerStats`].
pub const SERVER_SITE_FAMILIES: [Family; 8] = [
    Family {
        name: "phonefleet_downloads_in_flight",
        help: "Firmware downloads holding a token of the site now (this replica).",
        kind: Kind::Gauge,
        labels: &["site"],
    },
    Family {
        name: "phonefleet_downloads_in_flight_peak",
        help: "Most firmware downloads this replica held at once for the site since it started.",
        kind: Kind::Gauge,
        labels: &["site"],
    },
    Family {
        name: "phonefleet_download_cap",
        help: "The site's cap of concurrent firmware downloads, as the server enforces it.",
        kind: Kind::Gauge,
        labels: &["site"],
    },
    Family {
        name: "phonefleet_downloads_started_total",
        help: "Firmware downloads started.",
        kind: Kind::Counter,
        labels: &["site"],
    },
    Family {
        name: "phonefleet_downloads_completed_total",
        help: "Firmware downloads whose last byte was sent.",
        kind: Kind::Counter,
        labels: &["site"],
    },
    Family {
        name: "phonefleet_downloads_dropped_total",
        help: "Firmware downloads that ended early (phone gone, token lost).",
        kind: Kind::Counter,
        labels: &["site"],
    },
    Family {
        name: "phonefleet_downloads_refused_total",
        help: "Firmware requests refused with 503: busy (cap reached) or outside_slot.",
        kind: Kind::Counter,
        labels: &["reason", "site"],
    },
    Family {
        name: "phonefleet_firmware_sent_bytes_total",
        help: "Firmware bytes handed to phones' connections.",
        kind: Kind::Counter,
        labels: &["site"],
    },
];

/// The registry and every metric of the process. Cheap to share behind an [`Arc`].
pub struct Metrics {
    registry: Registry,
    // Controller: one rollout per schedule (per-site series in `series`).
    stage_phones: IntGaugeVec,
    stage: IntGaugeVec,
    stages: IntGaugeVec,
    phase: IntGaugeVec,
    halted_model: IntGaugeVec,
    completion: GaugeVec,
    next_window: GaugeVec,
    reconciles: IntCounterVec,
    reconcile_errors: IntCounterVec,
    reconcile_duration: Histogram,
    // Provisioning server (per-site series written from `server_stats` at scrape time).
    requests: IntCounterVec,
    upstream_requests: IntCounterVec,
    // Process.
    leader: IntGauge,
    ready: IntGauge,
    server_stats: Option<Arc<ServerStats>>,
    series: Mutex<BTreeMap<(String, String), ScheduleSeries>>,
    schedules: Mutex<Option<(Store<PhoneSchedule>, Synced)>>,
    leader_known: AtomicBool,
    is_leader: AtomicBool,
    server_ready: AtomicBool,
    controller_enabled: bool,
}

fn gauge_vec(
    registry: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> prometheus::Result<IntGaugeVec> {
    let v = IntGaugeVec::new(Opts::new(name, help), labels)?;
    registry.register(Box::new(v.clone()))?;
    Ok(v)
}

fn float_vec(
    registry: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> prometheus::Result<GaugeVec> {
    let v = GaugeVec::new(Opts::new(name, help), labels)?;
    registry.register(Box::new(v.clone()))?;
    Ok(v)
}

fn counter_vec(
    registry: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> prometheus::Result<IntCounterVec> {
    let v = IntCounterVec::new(Opts::new(name, help), labels)?;
    registry.register(Box::new(v.clone()))?;
    Ok(v)
}

const SCHEDULE: [&str; 2] = ["namespace", "schedule"];
const SITE: [&str; 3] = ["namespace", "schedule", "site"];

impl Metrics {
    /// Registers every metric. `server_stats` are the provisioning server's counters when it
    /// runs in this process; `controller_enabled` is false for `--no-controller`-like setups
    /// where no reconcile will ever happen (readiness then ignores the controller).
    pub fn new(
        server_stats: Option<Arc<ServerStats>>,
        controller_enabled: bool,
    ) -> Result<Arc<Self>, MetricsError> {
        let r = Registry::new();
        let reconcile_duration = Histogram::with_opts(
            HistogramOpts::new(
                "phonefleet_reconcile_duration_seconds",
                "Time one reconcile of a PhoneSchedule took.",
            )
            .buckets(RECONCILE_BUCKETS.to_vec()),
        )?;
        r.register(Box::new(reconcile_duration.clone()))?;
        let leader = IntGauge::new(
            "phonefleet_leader",
            "1 while this replica holds the leader Lease and reconciles, else 0.",
        )?;
        r.register(Box::new(leader.clone()))?;
        let ready = IntGauge::new(
            "phonefleet_ready",
            "1 while /readyz answers 200 (caches synced, provisioning server indexed).",
        )?;
        r.register(Box::new(ready.clone()))?;
        let build = IntGaugeVec::new(
            Opts::new(
                "phonefleet_build_info",
                "Always 1; the labels say which build runs.",
            ),
            &["version", "simulated_time"],
        )?;
        r.register(Box::new(build.clone()))?;
        build
            .with_label_values(&[
                env!("CARGO_PKG_VERSION"),
                if cfg!(feature = "simulated-time") {
                    "true"
                } else {
                    "false"
                },
            ])
            .set(1);
        let metrics = Metrics {
            stage_phones: gauge_vec(
                &r,
                "phonefleet_rollout_stage_phones",
                "Phones of each rollout stage (all sites), by state (pending, in_progress, upgraded, failed).",
                &["namespace", "schedule", "stage", "state"],
            )?,
            stage: gauge_vec(
                &r,
                "phonefleet_rollout_stage",
                "Index (from 0) of the rollout stage released last; the stage label is its name.",
                &["namespace", "schedule", "stage"],
            )?,
            stages: gauge_vec(
                &r,
                "phonefleet_rollout_stages",
                "Number of stages of the rollout.",
                &SCHEDULE,
            )?,
            phase: gauge_vec(
                &r,
                "phonefleet_rollout_phase",
                "1 for the schedule's current phase, 0 for the others.",
                &["namespace", "schedule", "phase"],
            )?,
            halted_model: gauge_vec(
                &r,
                "phonefleet_rollout_halted_model",
                "1 for each model whose failure ratio halted the rollout.",
                &["namespace", "schedule", "model"],
            )?,
            completion: float_vec(
                &r,
                "phonefleet_rollout_predicted_completion_timestamp_seconds",
                "When the last phone is predicted to be done (Unix time, on the controller's clock).",
                &SCHEDULE,
            )?,
            next_window: float_vec(
                &r,
                "phonefleet_rollout_next_window_timestamp_seconds",
                "Start of the next slot in which some phone may download (Unix time).",
                &SCHEDULE,
            )?,
            reconciles: counter_vec(
                &r,
                "phonefleet_reconciles_total",
                "Reconciles run, failed or not.",
                &SCHEDULE,
            )?,
            reconcile_errors: counter_vec(
                &r,
                "phonefleet_reconcile_errors_total",
                "Reconciles that failed, by bounded reason.",
                &["namespace", "schedule", "reason"],
            )?,
            reconcile_duration,
            requests: counter_vec(
                &r,
                "phonefleet_provisioning_requests_total",
                "Provisioning server requests, by result.",
                &["result"],
            )?,
            upstream_requests: counter_vec(
                &r,
                "phonefleet_upstream_requests_total",
                "Requests to the upstream provisioning server (overlay mode), by result.",
                &["result"],
            )?,
            leader,
            ready,
            registry: r,
            server_stats,
            series: Mutex::new(BTreeMap::new()),
            schedules: Mutex::new(None),
            leader_known: AtomicBool::new(false),
            is_leader: AtomicBool::new(false),
            server_ready: AtomicBool::new(false),
            controller_enabled,
        };
        if let Some(stats) = &metrics.server_stats {
            for outcome in Outcome::ALL {
                metrics.requests.with_label_values(&[outcome.as_str()]);
            }
            for result in UpstreamResult::ALL {
                metrics
                    .upstream_requests
                    .with_label_values(&[result.as_str()]);
            }
            // The server observes this histogram itself; the registry exposes it.
            metrics
                .registry
                .register(Box::new(stats.upstream.latency.clone()))?;
        }
        Ok(Arc::new(metrics))
    }

    /// Records that the provisioning server indexed every rendered config (readiness).
    pub fn set_server_ready(&self, ready: bool) {
        self.server_ready.store(ready, Ordering::SeqCst);
    }

    /// Whether this replica should receive traffic: the provisioning server (if any) has its
    /// index, leadership is known, and a leader's watch caches are synced.
    pub fn is_ready(&self) -> bool {
        let server = self.server_stats.is_none() || self.server_ready.load(Ordering::SeqCst);
        let controller = !self.controller_enabled
            || (self.leader_known.load(Ordering::SeqCst)
                && (!self.is_leader.load(Ordering::SeqCst) || self.caches_synced()));
        server && controller
    }

    fn caches_synced(&self) -> bool {
        let store = self
            .schedules
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        store.is_some_and(|(_, synced)| synced.is_synced())
    }

    /// The Prometheus text exposition of every metric, refreshed from the server's counters
    /// and with the series of deleted schedules dropped.
    pub fn render(&self) -> String {
        self.forget_deleted_schedules();
        self.copy_server_stats();
        self.ready.set(i64::from(self.is_ready()));
        let mut out = TextEncoder::new()
            .encode_to_string(&self.registry.gather())
            .unwrap_or_default();
        self.write_controller_sites(&mut out);
        self.write_server_sites(&mut out);
        out
    }

    /// The leader's per-site families, from the rows of every schedule's last status.
    fn write_controller_sites(&self, out: &mut String) {
        let series = self.series.lock().unwrap_or_else(PoisonError::into_inner);
        if series.values().all(|s| s.sites.is_empty()) {
            return;
        }
        let rows = || {
            series.iter().flat_map(|((ns, name), s)| {
                s.sites
                    .iter()
                    .map(move |row| (ns.as_str(), name.as_str(), row))
            })
        };
        let [phones, completion, next_window, window_open] = &CONTROLLER_SITE_FAMILIES;
        phones.header(out);
        for (ns, name, row) in rows() {
            for (state, n) in PHONE_STATES.iter().zip(row.phones) {
                phones.sample(out, &[ns, name, &row.site, state], f64::from(n));
            }
        }
        let times: [(&Family, RowTime); 2] = [
            (completion, |r| r.completion),
            (next_window, |r| r.next_window),
        ];
        for (family, time) in times {
            if rows().all(|(_, _, row)| time(row).is_none()) {
                continue;
            }
            family.header(out);
            for (ns, name, row) in rows() {
                if let Some(t) = time(row) {
                    family.sample(out, &[ns, name, &row.site], t);
                }
            }
        }
        window_open.header(out);
        for (ns, name, row) in rows() {
            window_open.sample(
                out,
                &[ns, name, &row.site],
                f64::from(u8::from(row.window_open)),
            );
        }
    }

    /// The provisioning server's per-site families, read from its counters now.
    fn write_server_sites(&self, out: &mut String) {
        let Some(stats) = &self.server_stats else {
            return;
        };
        let sites = stats.sites();
        if sites.is_empty() {
            return;
        }
        let [
            in_flight,
            peak,
            cap,
            started,
            completed,
            dropped,
            refused,
            bytes,
        ] = &SERVER_SITE_FAMILIES;
        let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed) as f64;
        let per_site: [(&Family, ServerValue); 7] = [
            (in_flight, |s| f64::from(s.in_flight.load(Ordering::SeqCst))),
            (peak, |s| f64::from(s.peak_in_flight.load(Ordering::SeqCst))),
            (cap, |s| f64::from(s.cap.load(Ordering::Relaxed))),
            (started, |s| {
                s.downloads_started.load(Ordering::Relaxed) as f64
            }),
            (completed, |s| {
                s.downloads_completed.load(Ordering::Relaxed) as f64
            }),
            (dropped, |s| {
                s.downloads_dropped.load(Ordering::Relaxed) as f64
            }),
            (bytes, |s| s.bytes_sent.load(Ordering::Relaxed) as f64),
        ];
        for (family, value) in per_site {
            family.header(out);
            for (site, s) in &sites {
                family.sample(out, &[site], value(s));
            }
        }
        refused.header(out);
        for (site, s) in &sites {
            refused.sample(out, &["busy", site], load(&s.refused_busy));
            refused.sample(out, &["outside_slot", site], load(&s.refused_outside_slot));
        }
    }

    /// The server's request counters (bounded labels) into the registry.
    fn copy_server_stats(&self) {
        let Some(stats) = &self.server_stats else {
            return;
        };
        let bump = |c: prometheus::IntCounter, now: u64| {
            let seen = c.get();
            if now > seen {
                c.inc_by(now - seen);
            }
        };
        for (outcome, n) in stats.outcomes() {
            bump(self.requests.with_label_values(&[outcome.as_str()]), n);
        }
        for (result, n) in stats.upstream.results() {
            bump(
                self.upstream_requests.with_label_values(&[result.as_str()]),
                n,
            );
        }
    }

    /// Drops every series of the schedules the controller's cache no longer holds.
    fn forget_deleted_schedules(&self) {
        let store = self
            .schedules
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let Some((store, synced)) = store else { return };
        if !synced.is_synced() {
            return;
        }
        let live: BTreeSet<(String, String)> = store
            .state()
            .iter()
            .map(|s| (s.namespace().unwrap_or_default(), s.name_any()))
            .collect();
        let gone: Vec<((String, String), ScheduleSeries)> = {
            let mut series = self.series.lock().unwrap_or_else(PoisonError::into_inner);
            let keys: Vec<_> = series
                .keys()
                .filter(|k| !live.contains(*k))
                .cloned()
                .collect();
            keys.into_iter()
                .filter_map(|k| series.remove(&k).map(|v| (k, v)))
                .collect()
        };
        for ((ns, name), s) in gone {
            self.remove_schedule(&ns, &name, &s);
        }
    }

    fn remove_schedule(&self, ns: &str, name: &str, s: &ScheduleSeries) {
        let key = [ns, name];
        for stage in &s.stages {
            self.remove_stage_phones(ns, name, stage);
        }
        if let Some(stage) = &s.stage {
            let _ = self.stage.remove_label_values(&[ns, name, stage]);
        }
        for model in &s.halted {
            let _ = self.halted_model.remove_label_values(&[ns, name, model]);
        }
        for p in PHASES {
            let _ = self.phase.remove_label_values(&[ns, name, p]);
        }
        for reason in RECONCILE_ERROR_REASONS {
            let _ = self
                .reconcile_errors
                .remove_label_values(&[ns, name, reason]);
        }
        let _ = self.stages.remove_label_values(&key);
        let _ = self.completion.remove_label_values(&key);
        let _ = self.next_window.remove_label_values(&key);
        let _ = self.reconciles.remove_label_values(&key);
    }

    fn remove_stage_phones(&self, ns: &str, name: &str, stage: &str) {
        for state in PHONE_STATES {
            let _ = self
                .stage_phones
                .remove_label_values(&[ns, name, stage, state]);
        }
    }

    /// Sets the series of one schedule from the status its reconcile decided.
    fn record_status(&self, schedule: &PhoneSchedule, status: &PhoneScheduleStatus) {
        let ns = schedule.namespace().unwrap_or_default();
        let name = schedule.name_any();
        let mut all = self.series.lock().unwrap_or_else(PoisonError::into_inner);
        let old = all.remove(&(ns.clone(), name.clone())).unwrap_or_default();
        let mut new = ScheduleSeries::default();
        let key = [ns.as_str(), name.as_str()];

        // A site no longer in the status has no row, so no series at the next scrape.
        let seconds = |t: chrono::DateTime<chrono::Utc>| t.timestamp_millis() as f64 / 1000.0;
        new.sites = status
            .sites
            .iter()
            .map(|site| SiteRow {
                site: site.name.clone(),
                phones: [
                    site.phones
                        .saturating_sub(site.upgraded + site.failed + site.in_progress),
                    site.in_progress,
                    site.upgraded,
                    site.failed,
                ],
                completion: site.completion.map(seconds),
                next_window: site.next_window.map(seconds),
                window_open: site.window_open,
            })
            .collect();
        for stage in &status.stages {
            let pending = stage
                .phones
                .saturating_sub(stage.upgraded + stage.failed + stage.in_progress);
            for (state, n) in
                PHONE_STATES
                    .iter()
                    .zip([pending, stage.in_progress, stage.upgraded, stage.failed])
            {
                self.stage_phones
                    .with_label_values(&[ns.as_str(), name.as_str(), stage.name.as_str(), state])
                    .set(i64::from(n));
            }
            new.stages.insert(stage.name.clone());
        }
        for stage in old.stages.difference(&new.stages) {
            self.remove_stage_phones(&ns, &name, stage);
        }

        let current_phase = status.phase.as_deref().unwrap_or(phase::PENDING);
        for p in PHASES {
            self.phase
                .with_label_values(&[&ns, &name, p])
                .set(i64::from(p == current_phase));
        }
        self.stages
            .with_label_values(&key)
            .set(schedule.spec.rollout.stages.len().max(1) as i64);
        if let Some(rollout) = &status.rollout {
            let stage = status
                .stage
                .clone()
                .unwrap_or_else(|| format!("stage-{}", rollout.released_stage + 1));
            self.stage
                .with_label_values(&[&ns, &name, &stage])
                .set(i64::from(rollout.released_stage));
            new.stage = Some(stage);
            new.halted = rollout.halted_models.iter().cloned().collect();
            for model in &new.halted {
                self.halted_model
                    .with_label_values(&[&ns, &name, model])
                    .set(1);
            }
        }
        if let Some(stage) = &old.stage
            && new.stage.as_ref() != Some(stage)
        {
            let _ = self.stage.remove_label_values(&[&ns, &name, stage]);
        }
        for model in old.halted.difference(&new.halted) {
            let _ = self.halted_model.remove_label_values(&[&ns, &name, model]);
        }
        new.completion = set_time(&self.completion, &key, status.predicted_completion);
        new.next_window = set_time(&self.next_window, &key, status.next_window);
        all.insert((ns, name), new);
    }
}

/// Sets a timestamp gauge, or removes it when the time is unknown (a series saying "0" would
/// read as 1970). Returns whether the series exists.
fn set_time(g: &GaugeVec, labels: &[&str], t: Option<chrono::DateTime<chrono::Utc>>) -> bool {
    match t {
        Some(t) => {
            let gauge: Gauge = g.with_label_values(labels);
            gauge.set(t.timestamp_millis() as f64 / 1000.0);
            true
        }
        None => {
            let _ = g.remove_label_values(labels);
            false
        }
    }
}

impl ReconcileObserver for Metrics {
    fn reconciled(&self, schedule: &PhoneSchedule, elapsed: Duration, error: Option<&'static str>) {
        let ns = schedule.namespace().unwrap_or_default();
        let name = schedule.name_any();
        self.reconcile_duration.observe(elapsed.as_secs_f64());
        self.reconciles.with_label_values(&[&ns, &name]).inc();
        for reason in RECONCILE_ERROR_REASONS {
            let c = self
                .reconcile_errors
                .with_label_values(&[&ns, &name, reason]);
            if error == Some(reason) {
                c.inc();
            }
        }
        if let Some(reason) = error.filter(|r| !RECONCILE_ERROR_REASONS.contains(r)) {
            // A reason added to the controller but not here: count it under a catch-all
            // rather than minting a label value nobody alerts on.
            tracing::debug!(reason, "unlisted reconcile error reason");
            self.reconcile_errors
                .with_label_values(&[&ns, &name, "ApiError"])
                .inc();
        }
        self.series
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry((ns, name))
            .or_default();
    }

    fn status(&self, schedule: &PhoneSchedule, status: &PhoneScheduleStatus) {
        self.record_status(schedule, status);
    }

    fn leading(&self, leading: bool) {
        self.leader.set(i64::from(leading));
        self.is_leader.store(leading, Ordering::SeqCst);
        self.leader_known.store(true, Ordering::SeqCst);
    }

    fn watching(&self, schedules: Store<PhoneSchedule>, synced: Synced) {
        *self
            .schedules
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some((schedules, synced));
    }
}

/// Marks the provisioning server ready in `metrics` once `ready()` says so (it never becomes
/// unready again: its index only grows more complete), or gives up when `stop` is cancelled.
pub async fn follow_server_readiness(
    metrics: &Metrics,
    ready: impl Fn() -> bool,
    stop: &tokio_util::sync::CancellationToken,
) {
    while !ready() {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
    }
    metrics.set_server_ready(true);
}

#[cfg(test)]
mod tests;
