//! Overlay mode: the provisioning server in front of an existing (upstream) provisioning
//! server, the way a reverse proxy sits in front of an origin (issue #14).
//!
//! - A request phonefleet does not own is passed to the upstream unchanged (method, path
//!   below the prefix, query, the phone's headers but hop-by-hop ones and `Host`) and the
//!   answer streamed back.
//! - The per-phone file of a phone phonefleet manages is fetched from the upstream and served
//!   with phonefleet's keys merged in ([`merge`]); an upstream 404 gives phonefleet's file
//!   alone; a refusal (401/403) is passed back unchanged, never a merged file.
//! - Failures: a bounded timeout; then the last good merged answer for that file, only to a
//!   request with the credentials the upstream accepted for it ([`cache`]), else 502.
//!   Upstream answers above a size limit are refused. A request carrying [`LOOP_HEADER`]
//!   (which phonefleet adds to every upstream request) is answered 508: the upstream points
//!   back at a phonefleet.
//!
//! Authentication: without `--upstream-credentials-file` it is the upstream's (the phone's
//! `Authorization` is forwarded; phonefleet's own password modes are refused at start);
//! with it, phonefleet checks the phone (`--auth-mode`) and logs in to the upstream itself.
//! See docs/provisioning.md, "Overlaying an existing provisioning server".

pub mod cache;
pub mod merge;
mod route;

use std::io;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use base64::Engine;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderValue, Method, Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Empty, Full, Limited, StreamBody};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use sha2::{Digest, Sha256};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::http::Body;
use super::stats::{Outcome, ServerStats, UpstreamResult};

/// Header phonefleet adds to every upstream request; a request arriving with it came from a
/// phonefleet overlay, so the upstream points back at phonefleet (a loop).
pub const LOOP_HEADER: &str = "x-phonefleet-overlay";

/// Default most bytes of an upstream answer phonefleet reads to merge (per-phone files are a
/// few KiB; a phonebook-sized file is well under this).
pub const DEFAULT_MAX_BODY: usize = 1024 * 1024;

/// Default bytes of last good answers kept (about 4,000 phones of 4 KiB files, twice over).
pub const DEFAULT_CACHE_BYTES: usize = 32 * 1024 * 1024;

/// Default time the upstream has to answer (headers and, for merged files, the whole body;
/// for proxied files, between two pieces of the body).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// Default most connections to the upstream at once. A boot storm (a site's phones powered on
/// together) must not open a connection per phone: an existing provisioning server has a
/// bounded number of them (nginx from Debian: 768 per worker; Apache's prefork: 150 workers)
/// and, beyond it, closes or refuses connections, which phones would get as 502s. Requests
/// beyond the bound wait for a connection, within [`UpstreamConfig::timeout`].
pub const DEFAULT_MAX_CONNECTIONS: usize = 64;

/// How phonefleet reaches the upstream.
#[derive(Clone, Debug)]
pub struct UpstreamConfig {
    /// Base URL, `http(s)://host[:port][/path]`; a request for `<prefix>/<rest>` goes to
    /// `<url>/<rest>`.
    pub url: String,
    pub timeout: Duration,
    /// PEM CA bundle for an HTTPS upstream (the system's roots without it).
    pub ca_file: Option<PathBuf>,
    /// `user:password` phonefleet logs in to the upstream with (basic auth), instead of the
    /// phones' own `Authorization`.
    pub credentials_file: Option<PathBuf>,
    pub max_body_bytes: usize,
    pub cache_bytes: usize,
    /// Most upstream requests (and so connections) in flight at once ([`DEFAULT_MAX_CONNECTIONS`]).
    pub max_connections: usize,
}

impl UpstreamConfig {
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            timeout: DEFAULT_TIMEOUT,
            ca_file: None,
            credentials_file: None,
            max_body_bytes: DEFAULT_MAX_BODY,
            cache_bytes: DEFAULT_CACHE_BYTES,
            max_connections: DEFAULT_MAX_CONNECTIONS,
        }
    }
}

/// Why the overlay could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error(
        "--upstream '{0}' must be an http:// or https:// URL with a host and no query or fragment"
    )]
    Url(String),
    #[error("reading --upstream-ca-file {path}: {reason}")]
    Ca { path: PathBuf, reason: String },
    #[error("reading --upstream-credentials-file {path}: {reason}")]
    Credentials { path: PathBuf, reason: String },
    #[error(
        "--upstream-credentials-file makes phonefleet log in to the upstream on the phones' behalf, so phonefleet must check the phones itself: set --auth-mode basic, digest or client-cert"
    )]
    CredentialsNeedAuth,
    #[error(
        "with --upstream and no --upstream-credentials-file, the phones' Authorization header is the upstream's: --auth-mode {0} or a --credentials-file would need it too (use client-cert, or give phonefleet its own upstream credentials)"
    )]
    AuthConflict(String),
}

/// The upstream, its HTTP client and the last good answers.
pub struct Upstream {
    scheme: Scheme,
    authority: Authority,
    /// Path of the base URL without its trailing `/` (may be empty).
    base_path: String,
    timeout: Duration,
    max_body: usize,
    client: Client<hyper_rustls::HttpsConnector<HttpConnector>, Body>,
    /// `Basic …` phonefleet logs in with, if configured.
    login: Option<HeaderValue>,
    cache: Mutex<cache::Cache>,
    /// One permit per upstream request in flight, held until its answer is read (a streamed
    /// answer: until its end), so the connections in use never exceed the bound.
    slots: Arc<Semaphore>,
}

/// What fetching a phone's file from the upstream gave.
pub enum Fetched {
    /// 200: the upstream's file, its validators and type.
    Body {
        body: Bytes,
        etag: Option<HeaderValue>,
        modified: Option<HeaderValue>,
        content_type: Option<HeaderValue>,
    },
    /// 304 to phonefleet's revalidation: the cached entry is still the upstream's file.
    Unchanged(Arc<cache::Entry>),
    /// 404: the upstream has no file for this phone.
    NotFound,
    /// Any other answer the phone gets as the upstream gave it (refusals above all).
    PassBack(UpstreamResult, Response<Body>),
    /// No usable answer.
    Failed(UpstreamResult, String),
}

/// Hop-by-hop headers (RFC 9110 section 7.6.1) and those phonefleet sets itself: never
/// forwarded either way.
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Headers the phone sent that must not reach the upstream when phonefleet fetches a file to
/// merge: phonefleet needs the whole, unencoded file, and answers conditionals itself.
const NOT_FOR_MERGE: [HeaderName; 7] = [
    header::IF_NONE_MATCH,
    header::IF_MODIFIED_SINCE,
    header::IF_MATCH,
    header::IF_UNMODIFIED_SINCE,
    header::IF_RANGE,
    header::RANGE,
    header::ACCEPT_ENCODING,
];

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for name in HOP_BY_HOP.iter().chain(&named) {
        headers.remove(name);
    }
}

fn empty() -> Body {
    Empty::new()
        .map_err(|e: std::convert::Infallible| match e {})
        .boxed_unsync()
}

fn full(bytes: Bytes) -> Body {
    Full::new(bytes)
        .map_err(|e: std::convert::Infallible| match e {})
        .boxed_unsync()
}

/// A streamed upstream body that fails (and so ends the phone's response short) when no
/// piece arrives for `idle`: a stalled upstream cannot hold a phone's connection. `slot`, the
/// upstream connection's permit, is given back when the body ends (or is dropped).
fn idle_bounded(
    body: hyper::body::Incoming,
    idle: Duration,
    slot: Option<OwnedSemaphorePermit>,
) -> Body {
    let stream = futures::stream::unfold(Some((body, slot)), move |state| async move {
        let (mut body, slot) = state?;
        match tokio::time::timeout(idle, body.frame()).await {
            Ok(Some(Ok(frame))) => Some((Ok(frame), Some((body, slot)))),
            Ok(Some(Err(e))) => Some((Err(io::Error::other(e)), None)),
            Ok(None) => None,
            Err(_) => Some((
                Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "upstream body stalled",
                )),
                None,
            )),
        }
    });
    StreamBody::new(stream).boxed_unsync()
}

impl Upstream {
    /// Parses the URL, loads the CA bundle and credentials, builds the client.
    pub fn new(config: &UpstreamConfig) -> Result<Self, UpstreamError> {
        let bad = || UpstreamError::Url(config.url.clone());
        let uri: Uri = config.url.parse().map_err(|_| bad())?;
        let scheme = uri.scheme().cloned().ok_or_else(bad)?;
        if scheme != Scheme::HTTP && scheme != Scheme::HTTPS {
            return Err(bad());
        }
        let authority = uri.authority().cloned().ok_or_else(bad)?;
        if authority.host().is_empty() || uri.query().is_some() || config.url.contains('#') {
            return Err(bad());
        }
        let base_path = uri.path().trim_end_matches('/').to_owned();
        let tls = tls_config(config.ca_file.as_deref())?;
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(config.timeout));
        http.set_nodelay(true);
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let max_connections = config.max_connections.max(1);
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(hyper_util::rt::TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(max_connections)
            .build(https);
        let login = match &config.credentials_file {
            Some(path) => Some(read_login(path)?),
            None => None,
        };
        Ok(Self {
            scheme,
            authority,
            base_path,
            timeout: config.timeout,
            max_body: config.max_body_bytes,
            client,
            login,
            cache: Mutex::new(cache::Cache::new(config.cache_bytes)),
            slots: Arc::new(Semaphore::new(max_connections)),
        })
    }

    /// Whether phonefleet logs in to the upstream itself (and so checks the phones itself).
    pub fn logs_in(&self) -> bool {
        self.login.is_some()
    }

    /// The upstream URI for `rest` (the request's path below phonefleet's prefix, starting
    /// with `/`) and `query`.
    fn uri(&self, rest: &str, query: Option<&str>) -> Result<Uri, String> {
        let pq = match query {
            Some(q) => format!("{}{rest}?{q}", self.base_path),
            None => format!("{}{rest}", self.base_path),
        };
        let pq: PathAndQuery = pq.parse().map_err(|e| format!("{e}"))?;
        Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(pq)
            .build()
            .map_err(|e| e.to_string())
    }

    /// The phone's headers as the upstream gets them.
    fn forwarded(&self, from: &HeaderMap, merging: bool) -> HeaderMap {
        let mut h = from.clone();
        strip_hop_by_hop(&mut h);
        h.remove(header::HOST);
        if merging {
            for name in &NOT_FOR_MERGE {
                h.remove(name);
            }
        }
        if let Some(login) = &self.login {
            h.insert(header::AUTHORIZATION, login.clone());
        }
        h.append(header::VIA, HeaderValue::from_static("1.1 phonefleet"));
        h.insert(LOOP_HEADER, HeaderValue::from_static("1"));
        h
    }

    /// What the upstream accepted a request with: the phone's `Authorization` (hashed), or,
    /// when phonefleet logs in itself, phonefleet's own check of the phone.
    pub fn credential_key(&self, phone_headers: &HeaderMap) -> [u8; 32] {
        let mut h = Sha256::new();
        if self.login.is_some() {
            h.update(b"checked by phonefleet");
        } else {
            h.update(b"phone:");
            if let Some(a) = phone_headers.get(header::AUTHORIZATION) {
                h.update(a.as_bytes());
            }
        }
        h.finalize().into()
    }

    pub fn cached(&self, key: &str) -> Option<Arc<cache::Entry>> {
        self.cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(key)
    }

    pub fn remember(&self, key: &str, entry: cache::Entry) {
        self.cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .put(key, entry);
    }

    pub fn forget(&self, key: &str) {
        self.cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(key);
    }

    /// Passes a request to the upstream and streams its answer back.
    pub async fn proxy(
        &self,
        phone: &Request<()>,
        rest: &str,
        body: Body,
        stats: &ServerStats,
    ) -> (Outcome, Response<Body>) {
        let started = Instant::now();
        let uri = match self.uri(rest, phone.uri().query()) {
            Ok(u) => u,
            Err(e) => return bad_gateway(stats, UpstreamResult::Unreachable, started, &e),
        };
        let mut req = Request::new(body);
        *req.method_mut() = phone.method().clone();
        *req.uri_mut() = uri;
        *req.headers_mut() = self.forwarded(phone.headers(), false);
        // The wait for a free upstream connection counts against the timeout too: a phone
        // never waits longer than that for the answer's headers.
        let answer = tokio::time::timeout(self.timeout, async {
            let slot = self.slot().await;
            (self.client.request(req).await, slot)
        })
        .await;
        let (resp, slot) = match answer {
            Err(_) => {
                return bad_gateway(stats, UpstreamResult::Timeout, started, "no answer in time");
            }
            Ok((Err(e), _)) => {
                return bad_gateway(stats, UpstreamResult::Unreachable, started, &e.to_string());
            }
            Ok((Ok(resp), slot)) => (resp, slot),
        };
        let result = UpstreamResult::of_status(resp.status());
        stats.upstream(result, started.elapsed());
        let (mut head, incoming) = resp.into_parts();
        strip_hop_by_hop(&mut head.headers);
        (
            Outcome::Proxied,
            Response::from_parts(head, idle_bounded(incoming, self.timeout, slot)),
        )
    }

    /// A permit for one upstream request; `None` never happens (the semaphore is never
    /// closed), and then the request goes unbounded rather than failing.
    async fn slot(&self) -> Option<OwnedSemaphorePermit> {
        self.slots.clone().acquire_owned().await.ok()
    }

    /// Fetches a phone's file to merge: a GET with the phone's headers (no conditionals, no
    /// encodings), revalidating `cached` when its credentials are the request's. Returns
    /// how long it took; the caller counts the result (a file that does not merge counts
    /// as `unmergeable`, not `ok`).
    pub async fn fetch(
        &self,
        phone: &Request<()>,
        rest: &str,
        cached: Option<Arc<cache::Entry>>,
        credentials: &[u8; 32],
    ) -> (Fetched, Duration) {
        let started = Instant::now();
        let fetched = match tokio::time::timeout(
            self.timeout,
            self.fetch_inner(phone, rest, cached, credentials),
        )
        .await
        {
            Ok(f) => f,
            Err(_) => Fetched::Failed(
                UpstreamResult::Timeout,
                format!("no whole answer within {:?}", self.timeout),
            ),
        };
        (fetched, started.elapsed())
    }

    async fn fetch_inner(
        &self,
        phone: &Request<()>,
        rest: &str,
        cached: Option<Arc<cache::Entry>>,
        credentials: &[u8; 32],
    ) -> Fetched {
        let uri = match self.uri(rest, phone.uri().query()) {
            Ok(u) => u,
            Err(e) => return Fetched::Failed(UpstreamResult::Unreachable, e),
        };
        let mut req = Request::new(empty());
        *req.method_mut() = Method::GET;
        *req.uri_mut() = uri;
        let mut headers = self.forwarded(phone.headers(), true);
        let revalidating = cached.filter(|c| c.credentials == *credentials);
        if let Some(c) = &revalidating {
            if let Some(tag) = &c.upstream_etag {
                headers.insert(header::IF_NONE_MATCH, tag.clone());
            } else if let Some(date) = &c.upstream_modified {
                headers.insert(header::IF_MODIFIED_SINCE, date.clone());
            }
        }
        *req.headers_mut() = headers;
        // Held until the answer is read whole (or handed back to the phone as a stream).
        let slot = self.slot().await;
        let resp = match self.client.request(req).await {
            Ok(r) => r,
            Err(e) => return Fetched::Failed(UpstreamResult::Unreachable, e.to_string()),
        };
        let status = resp.status();
        match status {
            StatusCode::OK => {}
            StatusCode::NOT_MODIFIED => {
                return match revalidating {
                    Some(c) => Fetched::Unchanged(c),
                    None => Fetched::Failed(
                        UpstreamResult::OtherStatus,
                        "304 to a request that was not conditional".into(),
                    ),
                };
            }
            StatusCode::NOT_FOUND => return Fetched::NotFound,
            s if s.is_server_error() => {
                let result = UpstreamResult::of_status(s);
                return Fetched::Failed(result, format!("upstream answered {s}"));
            }
            _ => {
                let (mut head, incoming) = resp.into_parts();
                strip_hop_by_hop(&mut head.headers);
                let body = idle_bounded(incoming, self.timeout, slot);
                return Fetched::PassBack(
                    UpstreamResult::of_status(status),
                    Response::from_parts(head, body),
                );
            }
        }
        let too_large = |n: String| {
            Fetched::Failed(
                UpstreamResult::TooLarge,
                format!("answer of {n} bytes is over the limit of {}", self.max_body),
            )
        };
        let declared = resp
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if let Some(n) = declared.filter(|n| *n > self.max_body as u64) {
            return too_large(n.to_string());
        }
        let etag = resp.headers().get(header::ETAG).cloned();
        let modified = resp.headers().get(header::LAST_MODIFIED).cloned();
        let content_type = resp.headers().get(header::CONTENT_TYPE).cloned();
        match Limited::new(resp.into_body(), self.max_body)
            .collect()
            .await
        {
            Ok(collected) => Fetched::Body {
                body: collected.to_bytes(),
                etag,
                modified,
                content_type,
            },
            Err(e) if e.is::<http_body_util::LengthLimitError>() => {
                too_large("more than that".into())
            }
            Err(e) => Fetched::Failed(UpstreamResult::Unreachable, e.to_string()),
        }
    }
}

/// 502 for a proxied request the upstream did not answer, counted and logged.
fn bad_gateway(
    stats: &ServerStats,
    result: UpstreamResult,
    started: Instant,
    why: &str,
) -> (Outcome, Response<Body>) {
    stats.upstream(result, started.elapsed());
    tracing::warn!(
        result = result.as_str(),
        reason = why,
        "upstream provisioning server failed; answering 502"
    );
    (Outcome::UpstreamFailed, upstream_failed())
}

/// The 502 a phone gets when the upstream failed and nothing can stand in.
pub(crate) fn upstream_failed() -> Response<Body> {
    let mut resp = Response::new(full(Bytes::from_static(
        b"upstream provisioning server failed\n",
    )));
    *resp.status_mut() = StatusCode::BAD_GATEWAY;
    resp
}

/// The strong validator of a merged file.
pub fn etag_of(body: &[u8]) -> String {
    let digest = Sha256::digest(body);
    let hex: String = digest[..12].iter().map(|b| format!("{b:02x}")).collect();
    format!("\"pf-{hex}\"")
}

/// Whether a conditional request is satisfied by the file with `etag`, last changed at
/// `modified` (RFC 9110 section 13.2.2: `If-None-Match` wins over `If-Modified-Since`).
pub fn not_modified(headers: &HeaderMap, etag: &str, modified: SystemTime) -> bool {
    if let Some(inm) = headers.get(header::IF_NONE_MATCH) {
        let Ok(inm) = inm.to_str() else {
            return false;
        };
        let bare = |t: &str| t.trim().trim_start_matches("W/").to_owned();
        return inm
            .split(',')
            .any(|t| t.trim() == "*" || bare(t) == bare(etag));
    }
    if let Some(ims) = headers
        .get(header::IF_MODIFIED_SINCE)
        .and_then(|v| v.to_str().ok())
        .and_then(httpdate_parse)
    {
        return modified <= ims;
    }
    false
}

/// `Last-Modified` for `t` (IMF-fixdate).
pub fn http_date(t: SystemTime) -> String {
    let t: chrono::DateTime<chrono::Utc> = t.into();
    t.format("%a, %d %b %Y %H:%M:%S GMT").to_string()
}

fn httpdate_parse(s: &str) -> Option<SystemTime> {
    chrono::NaiveDateTime::parse_from_str(s.trim(), "%a, %d %b %Y %H:%M:%S GMT")
        .ok()
        .map(|t| t.and_utc().into())
}

/// Now, in whole seconds (what an HTTP date can say).
pub fn now_seconds() -> SystemTime {
    let secs = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
}

fn tls_config(ca_file: Option<&std::path::Path>) -> Result<rustls::ClientConfig, UpstreamError> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let bad = |reason: String| UpstreamError::Ca {
                path: path.to_owned(),
                reason,
            };
            for cert in CertificateDer::pem_file_iter(path).map_err(|e| bad(e.to_string()))? {
                let cert = cert.map_err(|e| bad(e.to_string()))?;
                roots.add(cert).map_err(|e| bad(e.to_string()))?;
            }
            if roots.is_empty() {
                return Err(bad("no certificate in the file".into()));
            }
        }
        None => {
            // An HTTP upstream needs none; an HTTPS one without its CA fails its handshake,
            // counted and logged per request.
            for cert in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(cert);
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| UpstreamError::Ca {
            path: ca_file.map(|p| p.to_owned()).unwrap_or_default(),
            reason: e.to_string(),
        })?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(config)
}

/// `Basic base64(user:password)` from a file holding `user:password` (trailing newline
/// ignored: a Secret's value often has one).
fn read_login(path: &std::path::Path) -> Result<HeaderValue, UpstreamError> {
    let bad = |reason: String| UpstreamError::Credentials {
        path: path.to_owned(),
        reason,
    };
    let raw = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
    let line = raw.trim_ascii_end();
    if !line.contains(&b':') || line.contains(&b'\n') {
        return Err(bad("expected one line `user:password`".into()));
    }
    let encoded = base64::engine::general_purpose::STANDARD.encode(line);
    let mut value =
        HeaderValue::from_str(&format!("Basic {encoded}")).map_err(|e| bad(e.to_string()))?;
    value.set_sensitive(true);
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked_and_requests_keep_their_path_below_the_base() {
        for bad in ["ftp://x/", "x.example", "http://", "http://h/p?q=1"] {
            assert!(Upstream::new(&UpstreamConfig::new(bad)).is_err(), "{bad}");
        }
        let up = Upstream::new(&UpstreamConfig::new("http://old.example:8080/prov/")).unwrap();
        assert_eq!(
            up.uri("/y000000000108.cfg", Some("a=1"))
                .unwrap()
                .to_string(),
            "http://old.example:8080/prov/y000000000108.cfg?a=1"
        );
        let up = Upstream::new(&UpstreamConfig::new("https://old.example")).unwrap();
        assert_eq!(
            up.uri("/cfg.xml", None).unwrap().to_string(),
            "https://old.example/cfg.xml"
        );
    }

    #[test]
    fn forwarded_headers_drop_hop_by_hop_and_mark_the_loop() {
        let up = Upstream::new(&UpstreamConfig::new("http://old")).unwrap();
        let mut h = HeaderMap::new();
        h.insert(
            header::USER_AGENT,
            HeaderValue::from_static("Yealink SIP-T46U 66.86.0.15 00:15:65:aa:bb:cc"),
        );
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Basic eDp5"),
        );
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-secret"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert(header::HOST, HeaderValue::from_static("phonefleet"));
        h.insert(header::IF_NONE_MATCH, HeaderValue::from_static("\"a\""));
        let proxied = up.forwarded(&h, false);
        assert_eq!(proxied.get(header::AUTHORIZATION).unwrap(), "Basic eDp5");
        assert!(proxied.get(header::USER_AGENT).is_some());
        assert!(proxied.get(header::IF_NONE_MATCH).is_some());
        assert!(proxied.get("x-secret").is_none());
        assert!(proxied.get(header::CONNECTION).is_none());
        assert!(proxied.get(header::HOST).is_none());
        assert_eq!(proxied.get(LOOP_HEADER).unwrap(), "1");
        let merging = up.forwarded(&h, true);
        assert!(merging.get(header::IF_NONE_MATCH).is_none());
        assert_eq!(merging.get(header::AUTHORIZATION).unwrap(), "Basic eDp5");
    }

    #[test]
    fn phonefleets_own_login_replaces_the_phones() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("login");
        std::fs::write(&path, "prov:s3cret\n").unwrap();
        let mut config = UpstreamConfig::new("http://old");
        config.credentials_file = Some(path);
        let up = Upstream::new(&config).unwrap();
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Basic cGhvbmU6eA=="),
        );
        assert_eq!(
            up.forwarded(&h, true).get(header::AUTHORIZATION).unwrap(),
            "Basic cHJvdjpzM2NyZXQ="
        );
    }

    /// An upstream on loopback that answers every request `ok` after `delay`, keeps
    /// connections alive, and counts the most connections it held at once.
    async fn counting_upstream(delay: Duration) -> (String, Arc<std::sync::atomic::AtomicUsize>) {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let open = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let peak_seen = peak.clone();
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let (open, peak) = (open.clone(), peak.clone());
                let now = open.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(now, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 1024];
                    'conn: loop {
                        // Requests without a body: one ends at its blank line.
                        while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                            match conn.read(&mut chunk).await {
                                Ok(0) | Err(_) => break 'conn,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                        }
                        let end = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
                        buf.drain(..end);
                        tokio::time::sleep(delay).await;
                        let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                        if conn.write_all(answer).await.is_err() {
                            break;
                        }
                    }
                    open.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        (url, peak_seen)
    }

    /// A boot storm (many phones asking at once) opens no more upstream connections than the
    /// bound: an existing server past its own limit closes connections, which phones got as
    /// 502s (the e2e rollout through nginx lost a third of its phones at boot that way).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_storm_of_requests_shares_a_bounded_number_of_upstream_connections() {
        let (url, peak) = counting_upstream(Duration::from_millis(20)).await;
        let config = UpstreamConfig {
            max_connections: 4,
            timeout: Duration::from_secs(60),
            ..UpstreamConfig::new(url)
        };
        let up = Arc::new(Upstream::new(&config).unwrap());
        let tasks: Vec<_> = (0..64)
            .map(|i| {
                let up = up.clone();
                tokio::spawn(async move {
                    let phone = Request::get(format!("/cfg000b8200{i:04x}.xml"))
                        .body(())
                        .unwrap();
                    let rest = phone.uri().path().to_owned();
                    let (fetched, _) = up.fetch(&phone, &rest, None, &[0; 32]).await;
                    matches!(fetched, Fetched::Body { ref body, .. } if &body[..] == b"ok")
                })
            })
            .collect();
        for task in tasks {
            assert!(task.await.unwrap(), "every phone got the upstream's file");
        }
        let peak = peak.load(std::sync::atomic::Ordering::SeqCst);
        assert!(
            peak <= 4,
            "{peak} upstream connections at once, over the bound of 4"
        );
    }

    #[test]
    fn conditionals_follow_rfc_9110_precedence() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let tag = etag_of(b"file");
        let mut h = HeaderMap::new();
        assert!(!not_modified(&h, &tag, t));
        h.insert(
            header::IF_MODIFIED_SINCE,
            HeaderValue::from_str(&http_date(t)).unwrap(),
        );
        assert!(not_modified(&h, &tag, t));
        assert!(!not_modified(&h, &tag, t + Duration::from_secs(1)));
        // A non-matching If-None-Match wins over a satisfied If-Modified-Since.
        h.insert(header::IF_NONE_MATCH, HeaderValue::from_static("\"other\""));
        assert!(!not_modified(&h, &tag, t));
        h.insert(
            header::IF_NONE_MATCH,
            HeaderValue::from_str(&format!("\"x\", W/{tag}")).unwrap(),
        );
        assert!(not_modified(&h, &tag, t + Duration::from_secs(9)));
        assert_ne!(etag_of(b"file"), etag_of(b"file2"));
    }
}
