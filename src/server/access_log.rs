//! The provisioning access log: one line per request (phone MAC, family, file, status, bytes,
//! duration, refusal reason), as a `tracing` event of target [`TARGET`], so it comes out in the
//! process's log format (`--log-format json|text`).
//!
//! Which requests get a line: `--access-log all|refusals|none` (probes never), then one in
//! `--access-log-sample N` of those. A line is written when the answer's body is done (the
//! last byte handed to the connection, or the connection dropped), so `bytes` and
//! `durationMs` are what really went out, firmware downloads included.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use http::{Response, StatusCode};
use http_body_util::BodyExt;

use crate::children::RefusalReason;
use crate::core::{Mac, PhoneFamily};

use super::http::Body;
use super::stats::Outcome;

/// The `target` of access log events (filter them with `RUST_LOG`, e.g.
/// `info,phonefleet::access=off`).
pub const TARGET: &str = "phonefleet::access";

/// Which requests are logged.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum AccessLogMode {
    /// Every request but health probes.
    All,
    /// Requests answered with an error status (4xx, 5xx): refusals, unknown phones, busy sites.
    Refusals,
    /// None (`none`, not `off`: YAML reads an unquoted `off` as false, and chart values are
    /// YAML).
    #[default]
    #[value(name = "none", alias = "off")]
    Off,
}

/// The access log's settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AccessLogConfig {
    pub mode: AccessLogMode,
    /// Log one in this many of the requests `mode` selects (1: all of them).
    pub sample: u32,
}

impl Default for AccessLogConfig {
    fn default() -> Self {
        Self {
            mode: AccessLogMode::Off,
            sample: 1,
        }
    }
}

/// The access log of one server: its settings and the sampling counter.
#[derive(Debug, Default)]
pub struct AccessLog {
    config: AccessLogConfig,
    selected: AtomicU64,
}

impl AccessLog {
    pub fn new(config: AccessLogConfig) -> Self {
        Self {
            config,
            selected: AtomicU64::new(0),
        }
    }

    /// Whether the request that ended with `outcome` and `status` gets a line.
    pub fn selects(&self, outcome: Outcome, status: StatusCode) -> bool {
        let wanted = match self.config.mode {
            AccessLogMode::Off => false,
            AccessLogMode::All => outcome != Outcome::Health,
            AccessLogMode::Refusals => {
                outcome != Outcome::Health && (status.is_client_error() || status.is_server_error())
            }
        };
        wanted
            && self
                .selected
                .fetch_add(1, Ordering::Relaxed)
                .is_multiple_of(u64::from(self.config.sample.max(1)))
    }
}

/// What one line says, but the bytes and the duration (known when the body is done).
#[derive(Clone, Debug)]
pub struct Line {
    pub mac: Option<Mac>,
    pub family: Option<PhoneFamily>,
    pub model: Option<String>,
    /// The request's path.
    pub file: String,
    pub status: u16,
    pub outcome: Outcome,
    pub refusal: Option<RefusalReason>,
}

/// Writes the line when dropped (with the body).
struct Pending {
    line: Line,
    started: Instant,
    bytes: u64,
}

impl Pending {
    fn count(&mut self, frame: &hyper::body::Frame<bytes::Bytes>) {
        if let Some(data) = frame.data_ref() {
            self.bytes += data.len() as u64;
        }
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        let l = &self.line;
        tracing::info!(
            target: TARGET,
            mac = l.mac.map(|m| m.bare().to_string()),
            family = l.family.map(PhoneFamily::name),
            model = l.model.as_deref(),
            file = %l.file,
            status = l.status,
            bytes = self.bytes,
            duration_ms = self.started.elapsed().as_millis() as u64,
            outcome = l.outcome.as_str(),
            refusal = l.refusal.map(RefusalReason::as_str),
            "access"
        );
    }
}

/// `resp`, whose body counts the bytes it hands out and writes `line` when it is done.
pub fn logged(resp: Response<Body>, line: Line, started: Instant) -> Response<Body> {
    let (parts, body) = resp.into_parts();
    let mut pending = Pending {
        line,
        started,
        bytes: 0,
    };
    let body = body
        .map_frame(move |frame| {
            // A method call moves the whole `Pending` into the closure (a field access would
            // capture only the counter, and the line would be written at once).
            pending.count(&frame);
            frame
        })
        .boxed_unsync();
    Response::from_parts(parts, body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(mode: AccessLogMode, sample: u32) -> AccessLog {
        AccessLog::new(AccessLogConfig { mode, sample })
    }

    #[test]
    fn off_logs_nothing_and_probes_are_never_logged() {
        let off = log(AccessLogMode::Off, 1);
        assert!(!off.selects(Outcome::ConfigServed, StatusCode::OK));
        assert!(!off.selects(Outcome::Busy, StatusCode::SERVICE_UNAVAILABLE));
        let all = log(AccessLogMode::All, 1);
        assert!(all.selects(Outcome::ConfigServed, StatusCode::OK));
        assert!(!all.selects(Outcome::Health, StatusCode::OK));
    }

    #[test]
    fn refusals_are_the_error_answers() {
        let refusals = log(AccessLogMode::Refusals, 1);
        assert!(!refusals.selects(Outcome::ConfigServed, StatusCode::OK));
        assert!(!refusals.selects(Outcome::FirmwareServed, StatusCode::PARTIAL_CONTENT));
        assert!(refusals.selects(Outcome::OutsideSlot, StatusCode::SERVICE_UNAVAILABLE));
        assert!(refusals.selects(Outcome::UnknownPhone, StatusCode::NOT_FOUND));
        assert!(!refusals.selects(Outcome::Health, StatusCode::SERVICE_UNAVAILABLE));
    }

    #[test]
    fn sampling_keeps_one_in_n() {
        let sampled = log(AccessLogMode::All, 10);
        let kept = (0..100)
            .filter(|_| sampled.selects(Outcome::ConfigServed, StatusCode::OK))
            .count();
        assert_eq!(kept, 10);
    }
}
