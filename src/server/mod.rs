//! The provisioning server: serves each phone its rendered config and, inside its planned slot
//! and under its site's cap, the firmware image; learns each phone's progress from its requests.
//!
//! Entry points (what `phonefleet run` calls):
//!
//! ```text
//! serve(config: ServerConfig, client: kube::Client, clock: Clock,
//!       shutdown: impl Future<Output = ()>) -> Result<(), ServerError>
//! start(config, client, clock) -> Result<ServerHandle, ServerError>   // for tests, metrics
//! ```
//!
//! [`serve`] runs until `shutdown` completes, then stops accepting, lets running downloads end
//! (up to [`ServerConfig::drain_timeout`]) and writes the last progress batch. [`start`] returns
//! a [`ServerHandle`] with the bound address, [`ServerHandle::is_ready`] and the
//! [`ServerStats`] a metrics module reads.
//!
//! The API server access it needs (RBAC): ConfigMaps get/list/watch (rendered configs,
//! progress and phone notes) and create/patch (progress and [`notes`], field manager
//! [`progress::FIELD_MANAGER`]); Leases
//! (`coordination.k8s.io`) list/watch/create/update (download tokens), in the watched
//! namespace(s).
//!
//! See `docs/provisioning.md` for the design: routes, status codes, tokens, progress.

pub mod access_log;
pub mod auth;
pub mod cli;
pub mod conn;
pub mod coverage;
pub mod digest;
pub mod http;
pub mod identity;
pub mod index;
pub mod limits;
pub mod notes;
pub mod overlay;
pub mod progress;
#[cfg(test)]
mod props;
pub mod range;
pub mod ratelimit;
pub mod stats;
pub mod tls;
pub mod tokens;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use kube::Client;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::clock::Clock;
use crate::scope::WatchScope;

pub use stats::{Outcome, ServerStats, SiteStats, UpstreamResult};

/// Everything the provisioning server is configured with. [`ServerConfig::default`] gives the
/// documented defaults; `listen` is the only field most deployments change.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Bound of the cache of files rendered on request (see [`index::FileCache`]).
    pub render_cache_bytes: usize,
    /// Address to listen on (phones reach it through a Service).
    pub listen: SocketAddr,
    /// The namespaces whose rendered configs, progress and download tokens are watched.
    pub scope: WatchScope,
    /// Path prefix the server is reached under (`/prov` serves `/prov/cfg<mac>.xml`); the
    /// same prefix must be in the server URL the controller renders into configs. Empty by
    /// default.
    pub path_prefix: String,
    /// Directory holding firmware images, looked up by plain file name only
    /// (`firmware/<site>/<file>` serves `<dir>/<file>`). No firmware is served without it.
    pub firmware_dir: Option<PathBuf>,
    /// This replica's name in download tokens (`<replica>/<mac>`); the pod name in a cluster.
    pub replica_id: String,
    /// Lifetime of a download token not renewed (real time): how long a crashed replica's
    /// downloads keep counting against the cap.
    pub lease_duration: Duration,
    /// How long a token stays held after the last byte was handed to the socket (real time),
    /// so the phone has really received it before another download starts.
    pub release_grace: Duration,
    /// Time after a completed download by which the phone must be back on the target
    /// version, or it is failed (on the server's clock).
    pub reboot_deadline: Duration,
    /// Interval between two progress batches (real time).
    pub flush_interval: Duration,
    /// `Retry-After` when a site is busy (on the server's clock, as phones read it).
    pub busy_retry_after: Duration,
    /// Per-download rate limit in bytes per second of the server's clock; `None` is
    /// unthrottled.
    pub download_rate: Option<u64>,
    /// A download whose connection accepts fewer bytes than this per second (real time,
    /// averaged over each `min_download_rate_window`) is cut, so a phone that trickles cannot
    /// hold one of its site's tokens for hours; `None` never cuts. At most half of
    /// `download_rate` when that is set, so throttling never trips it.
    pub min_download_rate: Option<u64>,
    /// The window the minimum rate is averaged over; the first window is the grace period
    /// (TCP slow start, a phone busy writing flash between reads).
    pub min_download_rate_window: Duration,
    /// Size of the chunks firmware is read and sent in.
    pub chunk_bytes: usize,
    /// PEM certificate chain and key: serve HTTPS instead of HTTP.
    pub tls: Option<TlsFiles>,
    /// Per-phone and per-site credentials (see [`auth`]); reloaded when the file changes
    /// (a mounted Secret is updated in place by the kubelet).
    pub credentials_file: Option<PathBuf>,
    /// How phones authenticate (see [`auth::AuthMode`]); `None` by default.
    pub auth_mode: auth::AuthMode,
    /// Realm of the challenges: the same for every phone, never a site's name.
    pub auth_realm: String,
    /// PEM CA bundle client certificates must chain to (`client-cert` mode; needs `tls`).
    pub client_ca: Option<PathBuf>,
    /// Per-source limit on failed requests (see [`ratelimit`]).
    pub failure_limit: ratelimit::LimitConfig,
    /// Longest request URI accepted (414 beyond).
    pub max_uri_bytes: usize,
    /// Most header bytes per request (431 beyond; at least 8 KiB, hyper's floor).
    pub max_header_bytes: usize,
    /// Time a client has to send each request's headers (slow-header attacks hold
    /// connections otherwise); `None` leaves only the idle timeout. It costs one timer per
    /// request (see docs/provisioning.md, benchmark).
    pub header_read_timeout: Option<Duration>,
    /// A connection with no byte moving either way for this long is closed (also cuts a
    /// download whose phone stopped reading).
    pub idle_timeout: Duration,
    /// On shutdown, how long running downloads may take to finish.
    pub drain_timeout: Duration,
    /// Most connections held at once; beyond, new ones wait in the kernel's accept queue.
    /// `None`: derived from the descriptor limit at start ([`limits::max_connections`]), so
    /// the API client and the metrics endpoint always keep descriptors.
    pub max_connections: Option<usize>,
    /// What makes a phone reporting the target version count as upgraded (see
    /// [`progress::UpgradeEvidence`]).
    pub upgrade_evidence: progress::UpgradeEvidence,
    /// Most Lease writes per second this replica makes to take download tokens; beyond, a
    /// firmware request is answered busy without an API request (0: unbounded).
    pub take_writes_per_second: u32,
    /// Which requests get an access log line (none by default).
    pub access_log: access_log::AccessLogConfig,
    /// Overlay mode: the existing provisioning server phonefleet sits in front of (see
    /// [`overlay`]); `None` serves phonefleet's files alone.
    pub upstream: Option<overlay::UpstreamConfig>,
}

/// Default minimum rate: 16 KiB/s (128 kbit/s) gets a 40 MB image through in under 45
/// minutes; a phone slower than that on average over a minute is not downloading, it is
/// holding a token.
pub const DEFAULT_MIN_DOWNLOAD_RATE: u64 = 16 * 1024;

/// Default window (and grace period) of the minimum rate.
pub const DEFAULT_MIN_DOWNLOAD_RATE_WINDOW: Duration = Duration::from_secs(60);

/// Certificate chain and private key, PEM.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 8080)),
            scope: WatchScope::Cluster,
            path_prefix: String::new(),
            firmware_dir: None,
            replica_id: std::env::var("POD_NAME")
                .or_else(|_| std::env::var("HOSTNAME"))
                .unwrap_or_else(|_| format!("phonefleet-{}", std::process::id())),
            lease_duration: Duration::from_secs(30),
            release_grace: Duration::from_millis(20),
            reboot_deadline: Duration::from_secs(30 * 60),
            flush_interval: progress::DEFAULT_FLUSH_INTERVAL,
            busy_retry_after: Duration::from_secs(120),
            download_rate: None,
            min_download_rate: Some(DEFAULT_MIN_DOWNLOAD_RATE),
            min_download_rate_window: DEFAULT_MIN_DOWNLOAD_RATE_WINDOW,
            chunk_bytes: 64 * 1024,
            tls: None,
            credentials_file: None,
            auth_mode: auth::AuthMode::None,
            auth_realm: auth::DEFAULT_REALM.into(),
            client_ca: None,
            failure_limit: ratelimit::LimitConfig::default(),
            max_uri_bytes: 1024,
            max_header_bytes: 8 * 1024,
            header_read_timeout: Some(Duration::from_secs(10)),
            idle_timeout: Duration::from_secs(60),
            drain_timeout: Duration::from_secs(10),
            max_connections: None,
            upgrade_evidence: progress::UpgradeEvidence::default(),
            take_writes_per_second: tokens::DEFAULT_TAKE_WRITES_PER_SECOND,
            access_log: access_log::AccessLogConfig::default(),
            upstream: None,
            render_cache_bytes: index::DEFAULT_CACHE_BYTES,
        }
    }
}

/// Why the server could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("binding {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Tls(#[from] conn::TlsError),
    #[error(transparent)]
    Auth(#[from] auth::AuthError),
    #[error("loading phone progress: {0}")]
    Progress(#[from] progress::ProgressError),
    #[error("path prefix '{0}' must be empty or start with '/' and not end with '/'")]
    PathPrefix(String),
    #[error("--auth-mode client-cert needs --tls-cert, --tls-key and --client-ca")]
    ClientCertNeedsTls,
    #[error(transparent)]
    Upstream(#[from] overlay::UpstreamError),
}

/// A running server.
pub struct ServerHandle {
    addr: SocketAddr,
    ready: Arc<AtomicBool>,
    stats: Arc<ServerStats>,
    tracker: Arc<Mutex<progress::Tracker>>,
    tokens: Arc<tokens::Tokens>,
    shutdown: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl ServerHandle {
    /// The address the server listens on (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// True once the config index holds a complete list of the rendered configs and the
    /// download-token watch has synced.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst) && self.tokens.is_synced()
    }

    /// The server's counters.
    pub fn stats(&self) -> Arc<ServerStats> {
        self.stats.clone()
    }

    /// What this replica believes about a phone now (its latest record, written or not).
    pub fn progress_of(&self, mac: crate::core::Mac) -> Option<crate::children::PhoneProgress> {
        self.tracker
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .latest(mac)
            .cloned()
    }

    /// API requests made for download tokens so far.
    pub fn token_api_calls(&self) -> &tokens::ApiCalls {
        self.tokens.api_calls()
    }

    /// Stops accepting, drains downloads, writes the last progress batch.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        let _ = self.task.await;
    }

    /// Stops at once, like a killed process: no drain, no last batch (for tests).
    pub fn abort(self) {
        self.task.abort();
    }
}

/// Runs the server until `shutdown` completes.
pub async fn serve(
    config: ServerConfig,
    client: Client,
    clock: Clock,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServerError> {
    let handle = start(config, client, clock).await?;
    shutdown.await;
    handle.shutdown().await;
    Ok(())
}

/// Starts the server with fresh counters.
pub async fn start(
    config: ServerConfig,
    client: Client,
    clock: Clock,
) -> Result<ServerHandle, ServerError> {
    start_with_stats(config, client, clock, ServerStats::new()).await
}

/// Starts the server counting into `stats` (shared with a metrics module, or between
/// replicas in a test).
pub async fn start_with_stats(
    config: ServerConfig,
    client: Client,
    clock: Clock,
    stats: Arc<ServerStats>,
) -> Result<ServerHandle, ServerError> {
    let prefix = &config.path_prefix;
    if !prefix.is_empty() && (!prefix.starts_with('/') || prefix.ends_with('/')) {
        return Err(ServerError::PathPrefix(prefix.clone()));
    }
    let policy = load_policy(&config)?;
    let upstream = match &config.upstream {
        Some(up) => Some(Arc::new(upstream_with_auth(up, &config)?)),
        None => None,
    };
    let client_ca = match (config.auth_mode, &config.tls, &config.client_ca) {
        (auth::AuthMode::ClientCert, Some(_), Some(ca)) => Some(ca.as_path()),
        (auth::AuthMode::ClientCert, _, _) => return Err(ServerError::ClientCertNeedsTls),
        // A CA bundle without client-cert mode verifies nothing the server would use.
        _ => None,
    };
    let tls = match &config.tls {
        Some(files) => Some(tls::acceptor(&files.cert, &files.key, client_ca)?),
        None => None,
    };
    // Progress first: a phone's first request after a restart must see its recorded state.
    let mut tracker = progress::Tracker::new(config.upgrade_evidence);
    let loaded = progress::load(&client, &config.scope, &mut tracker).await?;
    tracing::info!(records = loaded, "loaded phone progress");
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|source| ServerError::Bind {
            addr: config.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| ServerError::Bind {
        addr: config.listen,
        source,
    })?;
    let ready = Arc::new(AtomicBool::new(false));
    let index: index::SharedIndex = Arc::new(RwLock::new(index::Index::with_cache_bytes(
        config.render_cache_bytes,
    )));
    // Takes read the token Leases from a watch, not a LIST per firmware request.
    let (leases, lease_watch) = tokens::watch_leases(client.clone(), &config.scope);
    let lease_watch = tokio::spawn(lease_watch);
    let tokens = tokens::Tokens::new(
        client.clone(),
        config.replica_id.clone(),
        config.lease_duration,
        config.release_grace,
        Some(leases),
        config.take_writes_per_second,
    );
    let tracker = Arc::new(Mutex::new(tracker));
    let state = Arc::new(http::State {
        config: config.clone(),
        clock,
        index: index.clone(),
        tracker: tracker.clone(),
        tokens: tokens.clone(),
        stats: stats.clone(),
        policy: RwLock::new(Arc::new(policy)),
        limiter: ratelimit::FailureLimiter::new(config.failure_limit),
        ready: ready.clone(),
        coverage: Arc::default(),
        access_log: access_log::AccessLog::new(config.access_log),
        upstream,
    });
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let watcher = {
        let ready = ready.clone();
        tokio::spawn(index::watch(
            client.clone(),
            config.scope.clone(),
            index,
            move || ready.store(true, Ordering::SeqCst),
        ))
    };
    let (stop_flush, stop_flush_rx) = watch::channel(false);
    let flusher = tokio::spawn(flush_loop(state.clone(), client, stop_flush_rx));
    let reloader = tokio::spawn(reload_credentials(state.clone()));
    let task = tokio::spawn(async move {
        accept_loop(listener, tls, state, shutdown_rx).await;
        watcher.abort();
        lease_watch.abort();
        reloader.abort();
        // Downloads are drained: their ends are in the tracker; write the last batch.
        let _ = stop_flush.send(true);
        let _ = flusher.await;
    });
    tracing::info!(%addr, "provisioning server listening");
    Ok(ServerHandle {
        addr,
        ready,
        stats,
        tracker,
        tokens,
        shutdown: shutdown_tx,
        task,
    })
}

async fn accept_loop(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    state: Arc<http::State>,
    mut shutdown: watch::Receiver<bool>,
) {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let max = state.config.max_connections.unwrap_or_else(|| {
        limits::nofile_limit().map_or(limits::MAX_CONNECTIONS_CEILING, limits::max_connections)
    });
    tracing::info!(max_connections = max, "provisioning connections capped");
    let slots = Arc::new(tokio::sync::Semaphore::new(max.max(1)));
    let mut backoff = limits::AcceptBackoff::default();
    loop {
        // At the cap, stop accepting: further phones wait in the kernel's accept queue and
        // take no descriptor of ours.
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
            _ = shutdown.wait_for(|s| *s) => break,
        };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.wait_for(|s| *s) => break,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => {
                backoff.reset();
                accepted
            }
            Err(e) => {
                backoff.after("provisioning server", &e).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let watcher = graceful.watcher();
        let tls = tls.clone();
        let state = state.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let idle = state.config.idle_timeout;
            let handshake = state
                .config
                .header_read_timeout
                .unwrap_or(state.config.idle_timeout);
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(state.config.header_read_timeout)
                .max_buf_size(state.config.max_header_bytes.max(8192))
                .max_headers(100)
                .keep_alive(true);
            let meter = Arc::new(conn::Meter::default());
            let service = |identity: Option<tls::ClientIdentity>| {
                let meter = meter.clone();
                service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
                    let state = state.clone();
                    // The firmware handler watches the connection's rate through it.
                    req.extensions_mut().insert(meter.clone());
                    req.extensions_mut().insert(conn::PeerAddr(peer));
                    if let Some(identity) = identity {
                        req.extensions_mut().insert(identity);
                    }
                    async move { Ok::<_, std::convert::Infallible>(state.handle(req).await) }
                })
            };
            let io = conn::IdleTimeout::metered(stream, idle, meter.clone());
            let serve = async {
                match tls {
                    None => {
                        watcher
                            .watch(builder.serve_connection(TokioIo::new(io), service(None)))
                            .await
                    }
                    Some(acceptor) => {
                        let Ok(Ok(tls_stream)) =
                            tokio::time::timeout(handshake, acceptor.accept(io)).await
                        else {
                            return Ok(());
                        };
                        // Under mutual TLS the handshake verified the chain; the MAC is read
                        // once per connection.
                        let identity = tls_stream
                            .get_ref()
                            .1
                            .peer_certificates()
                            .and_then(|certs| certs.first())
                            .map(|leaf| tls::ClientIdentity {
                                mac: tls::mac_of(leaf),
                            });
                        watcher
                            .watch(
                                builder
                                    .serve_connection(TokioIo::new(tls_stream), service(identity)),
                            )
                            .await
                    }
                }
            };
            // Dropping the connection (a download below the minimum rate) closes the socket
            // and drops the body, which releases its token.
            let result = tokio::select! {
                r = serve => r,
                _ = meter.cut_requested() => Ok(()),
            };
            if let Err(e) = result {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    let drain = state.config.drain_timeout;
    if tokio::time::timeout(drain, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("downloads still running after the drain timeout; cutting them");
    }
}

/// The upstream, checked against the authentication mode: the phone's `Authorization` header
/// can serve one party only (see [`overlay`]).
fn upstream_with_auth(
    up: &overlay::UpstreamConfig,
    config: &ServerConfig,
) -> Result<overlay::Upstream, ServerError> {
    let upstream = overlay::Upstream::new(up)?;
    let mode = config.auth_mode;
    if upstream.logs_in() && mode == auth::AuthMode::None {
        return Err(overlay::UpstreamError::CredentialsNeedAuth.into());
    }
    let password_mode = matches!(mode, auth::AuthMode::Basic | auth::AuthMode::Digest)
        || (mode == auth::AuthMode::None && config.credentials_file.is_some());
    if !upstream.logs_in() && password_mode {
        let name = match mode {
            auth::AuthMode::Basic => "basic",
            auth::AuthMode::Digest => "digest",
            _ => "none",
        };
        return Err(overlay::UpstreamError::AuthConflict(name.into()).into());
    }
    Ok(upstream)
}

/// The authentication policy the configuration asks for.
fn load_policy(config: &ServerConfig) -> Result<auth::Policy, ServerError> {
    let credentials = match &config.credentials_file {
        Some(path) => Some(auth::Credentials::from_file(path)?),
        None => None,
    };
    Ok(auth::Policy::new(
        config.auth_mode,
        config.auth_realm.clone(),
        credentials,
    )?)
}

/// How often the credentials file is read again for changes.
const CREDENTIALS_RELOAD: Duration = Duration::from_secs(10);

/// Reads the credentials file again every [`CREDENTIALS_RELOAD`] and swaps the policy when its
/// content changed (the kubelet updates a mounted Secret in place). A file that no longer
/// parses keeps the previous policy and logs why.
async fn reload_credentials(state: Arc<http::State>) {
    let Some(path) = state.config.credentials_file.clone() else {
        return;
    };
    let mut last = tokio::fs::read(&path).await.ok();
    loop {
        tokio::time::sleep(CREDENTIALS_RELOAD).await;
        let now = tokio::fs::read(&path).await.ok();
        if now.is_none() || now == last {
            continue;
        }
        last = now;
        match load_policy(&state.config) {
            Ok(policy) => {
                *state.policy.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(policy);
                tracing::info!(path = %path.display(), "credentials reloaded");
            }
            Err(e) => {
                tracing::warn!(error = %e, "credentials file changed but is refused; keeping the previous one")
            }
        }
    }
}

/// Every `flush_interval`: fail overdue reboots, then write each changed progress map. After
/// `stop`, one last batch (a few attempts) and return.
async fn flush_loop(state: Arc<http::State>, client: Client, mut stop: watch::Receiver<bool>) {
    let deadline =
        chrono::Duration::from_std(state.config.reboot_deadline).unwrap_or(chrono::Duration::MAX);
    loop {
        let stopping = tokio::select! {
            _ = tokio::time::sleep(state.config.flush_interval) => false,
            _ = stop.wait_for(|s| *s) => true,
        };
        if stopping {
            for _ in 0..3 {
                flush_once(&state, &client, deadline).await;
                if state
                    .tracker
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .pending()
                    .is_empty()
                {
                    break;
                }
            }
            return;
        }
        flush_once(&state, &client, deadline).await;
    }
}

async fn flush_once(state: &http::State, client: &Client, deadline: chrono::Duration) {
    {
        let pending = {
            let mut tracker = state.tracker.lock().unwrap_or_else(PoisonError::into_inner);
            tracker.sweep(state.clock.now(), deadline);
            tracker.pending()
        };
        for (map, changes) in pending {
            match progress::flush_map(client, &map, &changes, &state.stats.progress_api_requests)
                .await
            {
                Ok(results) => {
                    let mut tracker = state.tracker.lock().unwrap_or_else(PoisonError::into_inner);
                    for (mac, generation, resolution) in results {
                        tracker.settle(mac, generation, &resolution);
                    }
                }
                // The namespace is gone (schedule and namespace deleted): nobody will read
                // these records, drop them instead of retrying forever.
                Err(progress::ProgressError::Write {
                    source: kube::Error::Api(e),
                    ..
                }) if e.code == 404 => {
                    let mut tracker = state.tracker.lock().unwrap_or_else(PoisonError::into_inner);
                    for (mac, _, generation) in &changes {
                        tracker.settle(*mac, *generation, &progress::Resolution::Write);
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "writing progress failed; retrying next batch")
                }
            }
        }
    }
    flush_notes(state, client).await;
}

/// Writes the phones' due notes (what `kubectl phonefleet why` shows); a failure is retried
/// next batch, a vanished namespace drops them.
async fn flush_notes(state: &http::State, client: &Client) {
    let pending = state
        .tracker
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .notes
        .pending();
    for (map, notes) in pending {
        let result =
            notes::flush_map(client, &map, &notes, &state.stats.progress_api_requests).await;
        let written = match result {
            Ok(()) => true,
            Err(progress::ProgressError::Write {
                source: kube::Error::Api(e),
                ..
            }) if e.code == 404 => true,
            Err(e) => {
                tracing::warn!(error = %e, "writing phone notes failed; retrying next batch");
                false
            }
        };
        if written {
            let mut tracker = state.tracker.lock().unwrap_or_else(PoisonError::into_inner);
            for (mac, note) in notes {
                tracker.notes.settle(mac, note);
            }
        }
    }
}
