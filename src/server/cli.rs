//! Command-line flags of the provisioning server and of the shared simulated clock, for
//! `phonefleet run` to flatten into its own arguments.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::clock::Clock;
use crate::scope::WatchScope;

use super::{ServerConfig, TlsFiles};

/// Flags of the provisioning server.
#[derive(clap::Args, Clone, Debug)]
pub struct ServerArgs {
    /// Address the provisioning server listens on.
    #[arg(
        long,
        env = "PHONEFLEET_PROVISIONING_LISTEN",
        default_value = "0.0.0.0:8080"
    )]
    pub provisioning_listen: SocketAddr,
    /// Directory of firmware images, served as `firmware/<site>/<file>` by plain file name.
    #[arg(long, env = "PHONEFLEET_FIRMWARE_DIR")]
    pub firmware_dir: Option<PathBuf>,
    /// Path prefix phones reach the server under (e.g. `/prov`); must match the server URL
    /// rendered into the configs.
    #[arg(long, default_value = "")]
    pub path_prefix: String,
    /// PEM certificate chain: serve HTTPS (with --tls-key).
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert.
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Credentials file (a mounted Secret, reloaded when it changes): lines
    /// `mac:<MAC> <user> <password>`, `site:[<namespace>/]<site> <user> <password>`,
    /// `* <user> <password>`, or the legacy `<site> <user> <sha256-hex of password>`.
    #[arg(long)]
    pub credentials_file: Option<PathBuf>,
    /// How phones authenticate: `none` (default; sites listed in --credentials-file still need
    /// basic auth), `basic` or `digest` (every phone needs its own or its site's line in
    /// --credentials-file), `client-cert` (mutual TLS: --tls-cert, --tls-key, --client-ca; the
    /// MAC comes from the phone's certificate).
    #[arg(long, value_enum, default_value_t = super::auth::AuthMode::None)]
    pub auth_mode: super::auth::AuthMode,
    /// Realm of basic and digest challenges: one for every phone, so it names no site.
    #[arg(long, default_value = super::auth::DEFAULT_REALM)]
    pub auth_realm: String,
    /// PEM bundle of the CA(s) that issue the phones' client certificates (--auth-mode
    /// client-cert).
    #[arg(long)]
    pub client_ca: Option<PathBuf>,
    /// Failed requests (wrong credentials, another phone's file, unknown phones) one client
    /// address may make at once before it is answered 429; 0 turns the limit off.
    #[arg(long, default_value_t = super::ratelimit::DEFAULT_BURST)]
    pub failure_burst: u32,
    /// Seconds to earn one more failed request once --failure-burst is spent.
    #[arg(long, default_value_t = super::ratelimit::DEFAULT_REFILL.as_secs(), value_parser = clap::value_parser!(u64).range(1..))]
    pub failure_refill_seconds: u64,
    /// Minutes (on the server's clock) a phone has after its download to come back on the
    /// target version before it is counted failed.
    #[arg(long, default_value_t = 30)]
    pub reboot_deadline_minutes: u64,
    /// Per-download rate limit in bytes per second (on the server's clock); 0 is unlimited.
    #[arg(long, default_value_t = 0)]
    pub download_rate: u64,
    /// Seconds a download token lives without renewal (real time).
    #[arg(long, default_value_t = 30)]
    pub token_lease_seconds: u64,
    /// Bytes per second (real time) a download must keep, averaged over each window, or it is
    /// cut; 0 never cuts. At most half of --download-rate is enforced when that is set.
    #[arg(long, default_value_t = super::DEFAULT_MIN_DOWNLOAD_RATE)]
    pub min_download_rate: u64,
    /// Window (and grace period) of --min-download-rate, in seconds.
    #[arg(long, default_value_t = super::DEFAULT_MIN_DOWNLOAD_RATE_WINDOW.as_secs(), value_parser = clap::value_parser!(u64).range(1..))]
    pub min_download_rate_window_seconds: u64,
    /// Most provisioning connections held at once (beyond, phones wait in the accept queue);
    /// 0 derives it from the descriptor limit, keeping a reserve for the API client and probes.
    #[arg(long, default_value_t = 0)]
    pub max_connections: usize,
    /// Seconds a client has to send each request's headers; 0 leaves only the 60 s idle
    /// timeout.
    #[arg(long, default_value_t = 10)]
    pub header_read_timeout_seconds: u64,
    /// What makes a phone reporting the target version in its User-Agent count as upgraded:
    /// `download` (only after it downloaded the whole image), `slot` (that, or once its
    /// planned slot has begun), `reported-version` (its word, for phones upgraded by other
    /// means).
    #[arg(long, value_enum, default_value_t = super::progress::UpgradeEvidence::Slot)]
    pub upgrade_evidence: super::progress::UpgradeEvidence,
    /// Most Lease writes per second a replica makes to take download tokens (a power-on storm
    /// cannot throttle the API server); beyond, phones are answered busy. 0 is unbounded.
    #[arg(long, default_value_t = super::tokens::DEFAULT_TAKE_WRITES_PER_SECOND)]
    pub token_writes_per_second: u32,
    /// Access log of provisioning requests (one line each, in the --log-format): `all` (but
    /// health probes), `refusals` (answers with a 4xx or 5xx status) or `none`.
    #[arg(long, value_enum, env = "PHONEFLEET_ACCESS_LOG", default_value_t = super::access_log::AccessLogMode::Off)]
    pub access_log: super::access_log::AccessLogMode,
    /// Log one in N of the requests --access-log selects.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub access_log_sample: u32,
    /// Overlay mode: the existing provisioning server (http:// or https:// base URL) phonefleet
    /// sits in front of. Requests phonefleet does not own go there unchanged; the per-phone
    /// files of the phones it manages are the upstream's with phonefleet's keys merged in.
    #[arg(long, env = "PHONEFLEET_UPSTREAM")]
    pub upstream: Option<String>,
    /// Seconds the upstream has to answer (merged files: the whole answer; passed-on files:
    /// the headers, then between two pieces of the body).
    #[arg(long, default_value_t = super::overlay::DEFAULT_TIMEOUT.as_secs(), value_parser = clap::value_parser!(u64).range(1..))]
    pub upstream_timeout: u64,
    /// PEM CA bundle an HTTPS upstream's certificate must chain to (default: the system's).
    #[arg(long, requires = "upstream")]
    pub upstream_ca_file: Option<PathBuf>,
    /// File holding `user:password` phonefleet logs in to the upstream with (basic auth),
    /// instead of forwarding the phones' own Authorization; needs an --auth-mode other than
    /// `none`, since phonefleet then checks the phones itself.
    #[arg(long, requires = "upstream")]
    pub upstream_credentials_file: Option<PathBuf>,
    /// Largest upstream answer phonefleet reads to merge (bytes); larger ones are refused.
    #[arg(long, default_value_t = super::overlay::DEFAULT_MAX_BODY)]
    pub upstream_max_body_bytes: usize,
    /// Bytes of last good merged answers kept in memory, to stand in while the upstream is
    /// down.
    #[arg(long, default_value_t = super::overlay::DEFAULT_CACHE_BYTES)]
    pub upstream_cache_bytes: usize,
    /// Most connections (requests in flight) to the upstream at once; more requests wait for
    /// one, within --upstream-timeout. An existing provisioning server has a bounded number of
    /// connections: a boot storm of phones must not open one each.
    #[arg(long, default_value_t = super::overlay::DEFAULT_MAX_CONNECTIONS, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub upstream_max_connections: usize,
    /// Bytes of phone files rendered on request kept in memory (a miss renders the file again
    /// from the stored decision).
    #[arg(long, default_value_t = super::index::DEFAULT_CACHE_BYTES)]
    pub render_cache_bytes: usize,
}

impl ServerArgs {
    /// The server configuration for these flags, watching `scope`.
    pub fn config(&self, scope: WatchScope) -> ServerConfig {
        ServerConfig {
            listen: self.provisioning_listen,
            scope,
            path_prefix: self.path_prefix.clone(),
            firmware_dir: self.firmware_dir.clone(),
            tls: match (&self.tls_cert, &self.tls_key) {
                (Some(cert), Some(key)) => Some(TlsFiles {
                    cert: cert.clone(),
                    key: key.clone(),
                }),
                _ => None,
            },
            credentials_file: self.credentials_file.clone(),
            auth_mode: self.auth_mode,
            auth_realm: self.auth_realm.clone(),
            client_ca: self.client_ca.clone(),
            failure_limit: super::ratelimit::LimitConfig {
                burst: self.failure_burst,
                refill: Duration::from_secs(self.failure_refill_seconds),
                ..super::ratelimit::LimitConfig::default()
            },
            reboot_deadline: Duration::from_secs(self.reboot_deadline_minutes * 60),
            download_rate: (self.download_rate > 0).then_some(self.download_rate),
            lease_duration: Duration::from_secs(self.token_lease_seconds),
            max_connections: (self.max_connections > 0).then_some(self.max_connections),
            min_download_rate: (self.min_download_rate > 0).then_some(self.min_download_rate),
            min_download_rate_window: Duration::from_secs(self.min_download_rate_window_seconds),
            header_read_timeout: (self.header_read_timeout_seconds > 0)
                .then(|| Duration::from_secs(self.header_read_timeout_seconds)),
            upgrade_evidence: self.upgrade_evidence,
            take_writes_per_second: self.token_writes_per_second,
            access_log: super::access_log::AccessLogConfig {
                mode: self.access_log,
                sample: self.access_log_sample,
            },
            upstream: self
                .upstream
                .as_ref()
                .map(|url| super::overlay::UpstreamConfig {
                    url: url.clone(),
                    timeout: Duration::from_secs(self.upstream_timeout),
                    ca_file: self.upstream_ca_file.clone(),
                    credentials_file: self.upstream_credentials_file.clone(),
                    max_body_bytes: self.upstream_max_body_bytes,
                    cache_bytes: self.upstream_cache_bytes,
                    max_connections: self.upstream_max_connections,
                }),
            render_cache_bytes: self.render_cache_bytes,
            ..ServerConfig::default()
        }
    }
}

/// Flags of the compressed clock, present only in builds with the `simulated-time` feature,
/// so a production binary cannot be switched to simulated time by a flag.
///
/// Simulated time is `origin + (now - real_origin) × scale`; the real origin defaults to the
/// origin itself, so every process given the same `--time-origin` and `--time-scale` (server,
/// controller, simulator) agrees on the simulated time without further coordination.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct ClockArgs {
    /// Simulated instant the simulation starts at (RFC 3339).
    #[cfg(feature = "simulated-time")]
    #[arg(long, requires = "time_scale")]
    pub time_origin: Option<chrono::DateTime<chrono::Utc>>,
    /// How many times faster than real time the simulated clock runs.
    #[cfg(feature = "simulated-time")]
    #[arg(long, requires = "time_origin")]
    pub time_scale: Option<u32>,
    /// Real instant at which simulated time equals --time-origin (default: --time-origin).
    #[cfg(feature = "simulated-time")]
    #[arg(long, requires = "time_origin")]
    pub time_real_origin: Option<chrono::DateTime<chrono::Utc>>,
}

impl ClockArgs {
    /// The clock these flags ask for (the system clock without them).
    pub fn clock(&self) -> Clock {
        #[cfg(feature = "simulated-time")]
        if let (Some(origin), Some(scale)) = (self.time_origin, self.time_scale) {
            return Clock::scaled(origin, self.time_real_origin.unwrap_or(origin), scale);
        }
        Clock::System
    }
}
