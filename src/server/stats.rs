//! Counters the provisioning server keeps for the metrics endpoint and for tests.
//!
//! Every label set is bounded: request outcomes are a fixed enum, sites are the inventory's
//! site names. Counters are atomics, so the request path never waits on a lock to count.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

/// What became of a request: the label of the request counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Outcome {
    /// A configuration file was served.
    ConfigServed,
    /// The path is not a phone configuration file name (or tries to leave its directory).
    NotAConfigFile,
    /// A well-formed configuration file name for a MAC no schedule knows.
    UnknownPhone,
    /// A firmware download started (200 or 206).
    FirmwareServed,
    /// Firmware asked for a file the firmware directory does not hold, or for a malformed path.
    FirmwareNotFound,
    /// Firmware refused because every download token of the site is held (503).
    Busy,
    /// Firmware refused because the phone is outside its planned slot, or has none (503).
    OutsideSlot,
    /// Malformed request: User-Agent, MAC or Range (400, 416).
    BadRequest,
    /// The User-Agent's MAC is not the path's, or the phone asked for another site's firmware.
    Forbidden,
    /// Missing or wrong credentials or client certificate (401, or 403 under mutual TLS;
    /// in an authenticated mode also unknown and conflicting phones, answered alike).
    Unauthorized,
    /// URI longer than the limit (414).
    UriTooLong,
    /// Not GET or HEAD (405).
    MethodNotAllowed,
    /// A download token could not be taken because the API server failed (503).
    TokenError,
    /// Health and readiness probes.
    Health,
    /// The phone is claimed by schedules of several namespaces: served to none (answered
    /// exactly as an unknown phone, 404).
    Conflict,
    /// The source made too many failed requests recently (429, see `server::ratelimit`).
    RateLimited,
    /// Overlay mode: passed to the upstream, its answer streamed back (any status).
    Proxied,
    /// A conditional request for a (merged) configuration file that did not change (304).
    NotModified,
    /// Overlay mode: the upstream failed and no last good answer could stand in (502).
    UpstreamFailed,
    /// Overlay mode: the request came from a phonefleet overlay (508): the upstream points
    /// back at phonefleet.
    LoopDetected,
}

impl Outcome {
    /// Every outcome, in a fixed order.
    pub const ALL: [Outcome; 20] = [
        Outcome::ConfigServed,
        Outcome::NotAConfigFile,
        Outcome::UnknownPhone,
        Outcome::FirmwareServed,
        Outcome::FirmwareNotFound,
        Outcome::Busy,
        Outcome::OutsideSlot,
        Outcome::BadRequest,
        Outcome::Forbidden,
        Outcome::Unauthorized,
        Outcome::UriTooLong,
        Outcome::MethodNotAllowed,
        Outcome::TokenError,
        Outcome::Health,
        Outcome::Conflict,
        Outcome::RateLimited,
        Outcome::Proxied,
        Outcome::NotModified,
        Outcome::UpstreamFailed,
        Outcome::LoopDetected,
    ];

    /// The metric label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::ConfigServed => "config_served",
            Outcome::NotAConfigFile => "not_a_config_file",
            Outcome::UnknownPhone => "unknown_phone",
            Outcome::FirmwareServed => "firmware_served",
            Outcome::FirmwareNotFound => "firmware_not_found",
            Outcome::Busy => "busy",
            Outcome::OutsideSlot => "outside_slot",
            Outcome::BadRequest => "bad_request",
            Outcome::Forbidden => "forbidden",
            Outcome::Unauthorized => "unauthorized",
            Outcome::UriTooLong => "uri_too_long",
            Outcome::MethodNotAllowed => "method_not_allowed",
            Outcome::TokenError => "token_error",
            Outcome::Health => "health",
            Outcome::Conflict => "conflict",
            Outcome::RateLimited => "rate_limited",
            Outcome::Proxied => "proxied",
            Outcome::NotModified => "not_modified",
            Outcome::UpstreamFailed => "upstream_failed",
            Outcome::LoopDetected => "loop_detected",
        }
    }

    fn index(self) -> usize {
        Outcome::ALL.iter().position(|o| *o == self).unwrap_or(0)
    }
}

/// What one request to the upstream provisioning server (overlay mode) gave: the label of
/// the upstream request counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum UpstreamResult {
    /// 2xx (for a merged file: 200, merged).
    Ok,
    /// 304 (phonefleet's revalidation of a cached file, or a phone's conditional request).
    NotModified,
    /// 404.
    NotFound,
    /// 401, 403 or 407: passed back to the phone unchanged.
    Refused,
    /// Any other 1xx, 3xx or 4xx, passed back unchanged.
    OtherStatus,
    /// 5xx (508 aside).
    ServerError,
    /// No (whole) answer within the timeout.
    Timeout,
    /// Connection, TLS or protocol failure.
    Unreachable,
    /// An answer to merge above the size limit.
    TooLarge,
    /// A per-phone file the merge could not read (binary, encrypted, broken XML): passed
    /// back unmerged.
    Unmergeable,
    /// 508 Loop Detected: the upstream leads back to a phonefleet overlay.
    Loop,
}

impl UpstreamResult {
    pub const ALL: [UpstreamResult; 11] = [
        UpstreamResult::Ok,
        UpstreamResult::NotModified,
        UpstreamResult::NotFound,
        UpstreamResult::Refused,
        UpstreamResult::OtherStatus,
        UpstreamResult::ServerError,
        UpstreamResult::Timeout,
        UpstreamResult::Unreachable,
        UpstreamResult::TooLarge,
        UpstreamResult::Unmergeable,
        UpstreamResult::Loop,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            UpstreamResult::Ok => "ok",
            UpstreamResult::NotModified => "not_modified",
            UpstreamResult::NotFound => "not_found",
            UpstreamResult::Refused => "refused",
            UpstreamResult::OtherStatus => "other_status",
            UpstreamResult::ServerError => "server_error",
            UpstreamResult::Timeout => "timeout",
            UpstreamResult::Unreachable => "unreachable",
            UpstreamResult::TooLarge => "too_large",
            UpstreamResult::Unmergeable => "unmergeable",
            UpstreamResult::Loop => "loop",
        }
    }

    /// The result an upstream status means.
    pub fn of_status(status: http::StatusCode) -> Self {
        match status.as_u16() {
            304 => UpstreamResult::NotModified,
            404 => UpstreamResult::NotFound,
            401 | 403 | 407 => UpstreamResult::Refused,
            508 => UpstreamResult::Loop,
            s if (200..300).contains(&s) => UpstreamResult::Ok,
            s if s >= 500 => UpstreamResult::ServerError,
            _ => UpstreamResult::OtherStatus,
        }
    }

    fn index(self) -> usize {
        UpstreamResult::ALL
            .iter()
            .position(|o| *o == self)
            .unwrap_or(0)
    }
}

/// Upper bounds (seconds) of the upstream latency histogram's buckets.
pub const UPSTREAM_BUCKETS: [f64; 11] = [
    0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// Name of the upstream latency histogram (registered by the metrics module).
pub const UPSTREAM_LATENCY_METRIC: &str = "phonefleet_upstream_request_duration_seconds";

/// Upstream requests by result and their latency (time to the answer's headers for proxied
/// requests, to the whole body for merged files).
pub struct UpstreamStats {
    results: [AtomicU64; UpstreamResult::ALL.len()],
    /// Observed on the request path; the metrics endpoint registers this same histogram.
    pub latency: prometheus::Histogram,
}

impl Default for UpstreamStats {
    fn default() -> Self {
        let opts = prometheus::HistogramOpts::new(
            UPSTREAM_LATENCY_METRIC,
            "Time the upstream provisioning server took to answer (overlay mode).",
        )
        .buckets(UPSTREAM_BUCKETS.to_vec());
        Self {
            results: Default::default(),
            // Valid by construction (a static name and increasing buckets).
            latency: prometheus::Histogram::with_opts(opts)
                .expect("static histogram options are valid"),
        }
    }
}

impl std::fmt::Debug for UpstreamStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamStats")
            .field("results", &self.results)
            .field("latency_count", &self.latency.get_sample_count())
            .finish()
    }
}

impl UpstreamStats {
    pub fn result(&self, r: UpstreamResult) -> u64 {
        self.results[r.index()].load(Ordering::Relaxed)
    }

    /// Every result with its count, in a fixed order.
    pub fn results(&self) -> Vec<(UpstreamResult, u64)> {
        UpstreamResult::ALL
            .iter()
            .map(|&r| (r, self.result(r)))
            .collect()
    }
}

/// Download counters of one site, as this server replica saw them.
#[derive(Debug, Default)]
pub struct SiteStats {
    /// Downloads holding a token of this site now (this replica).
    pub in_flight: AtomicU32,
    /// Most downloads this replica held at once for the site.
    pub peak_in_flight: AtomicU32,
    pub downloads_started: AtomicU64,
    /// Downloads whose last byte was sent.
    pub downloads_completed: AtomicU64,
    /// Downloads that ended early (the phone went away or its token was lost).
    pub downloads_dropped: AtomicU64,
    /// 503 because all tokens were held.
    pub refused_busy: AtomicU64,
    /// 503 because the phone was outside its slot.
    pub refused_outside_slot: AtomicU64,
    /// Firmware bytes handed to the phones' connections.
    pub bytes_sent: AtomicU64,
    /// The site's download cap, as last read from its rendered configs (0 until the first
    /// firmware request), so the metrics can show in-flight downloads against it.
    pub cap: AtomicU32,
}

impl SiteStats {
    pub(crate) fn enter(&self) {
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.peak_in_flight.fetch_max(now, Ordering::SeqCst);
        self.downloads_started.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn leave(&self) {
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// All counters of one server (or, in tests, of several replicas sharing one instance).
#[derive(Debug, Default)]
pub struct ServerStats {
    outcomes: [AtomicU64; Outcome::ALL.len()],
    sites: Mutex<BTreeMap<String, Arc<SiteStats>>>,
    /// API requests made to read and write progress ConfigMaps.
    pub progress_api_requests: AtomicU64,
    /// Overlay mode: requests to the upstream provisioning server.
    pub upstream: UpstreamStats,
}

impl ServerStats {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    pub(crate) fn count(&self, outcome: Outcome) {
        self.outcomes[outcome.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one upstream request that took `took`.
    pub(crate) fn upstream(&self, result: UpstreamResult, took: std::time::Duration) {
        let u = &self.upstream;
        u.results[result.index()].fetch_add(1, Ordering::Relaxed);
        u.latency.observe(took.as_secs_f64());
    }

    /// Requests that ended with `outcome`.
    pub fn outcome(&self, outcome: Outcome) -> u64 {
        self.outcomes[outcome.index()].load(Ordering::Relaxed)
    }

    /// Every outcome with its count, in a fixed order.
    pub fn outcomes(&self) -> Vec<(Outcome, u64)> {
        Outcome::ALL.iter().map(|&o| (o, self.outcome(o))).collect()
    }

    /// The counters of `site`, created on first use.
    pub fn site(&self, site: &str) -> Arc<SiteStats> {
        let mut sites = self.sites.lock().unwrap_or_else(PoisonError::into_inner);
        sites.entry(site.to_owned()).or_default().clone()
    }

    /// Every site's counters, sorted by site name.
    pub fn sites(&self) -> Vec<(String, Arc<SiteStats>)> {
        let sites = self.sites.lock().unwrap_or_else(PoisonError::into_inner);
        sites.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peak_follows_the_most_concurrent_downloads() {
        let s = SiteStats::default();
        s.enter();
        s.enter();
        s.leave();
        s.enter();
        s.leave();
        s.leave();
        assert_eq!(s.in_flight.load(Ordering::SeqCst), 0);
        assert_eq!(s.peak_in_flight.load(Ordering::SeqCst), 2);
        assert_eq!(s.downloads_started.load(Ordering::SeqCst), 3);
    }

    #[test]
    fn outcomes_have_distinct_labels() {
        let labels: std::collections::BTreeSet<_> =
            Outcome::ALL.iter().map(|o| o.as_str()).collect();
        assert_eq!(labels.len(), Outcome::ALL.len());
    }
}
