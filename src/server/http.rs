//! Request handling: routing, identity, configs, firmware under the cap, and the answers
//! phones understand.

use std::convert::Infallible;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use hyper::body::Frame;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use crate::children::RefusalReason;
use crate::clock::Clock;
use crate::core::Mac;
use crate::render::{FirmwarePath, parse_file_name};

use super::ServerConfig;
use super::access_log::{self, AccessLog};
use super::auth::{Policy, RequestFacts, SiteRef, Verdict};
use super::conn::{Meter, PeerAddr, enforce_min_rate};
use super::coverage::Coverage;
use super::identity::{PhoneAgent, UserAgentError, parse_user_agent};
use super::index::{ServedPhone, SharedIndex};
use super::progress::{MapRef, Tracker};
use super::range::{ByteRange, etag, if_range_holds, parse_range};
use super::ratelimit::FailureLimiter;
use super::stats::{Outcome, ServerStats, SiteStats};
use super::tls::ClientIdentity;
use super::tokens::{TokenError, TokenGuard, Tokens};

/// A request refused early: the outcome to count and the answer (boxed: it is large).
pub(crate) type Refusal = Box<(Outcome, Response<Body>)>;

/// A firmware request refused for its slot: why, and the answer.
type SlotRefusal = Box<(RefusalReason, (Outcome, Response<Body>))>;

/// The body of every response.
pub type Body = UnsyncBoxBody<Bytes, io::Error>;

/// What every request handler shares.
pub(crate) struct State {
    pub config: ServerConfig,
    pub clock: Clock,
    pub index: SharedIndex,
    pub tracker: Arc<Mutex<Tracker>>,
    pub tokens: Arc<Tokens>,
    pub stats: Arc<ServerStats>,
    /// Who may fetch what (swapped when the credentials file changes).
    pub policy: std::sync::RwLock<Arc<Policy>>,
    /// Failed requests per source.
    pub limiter: FailureLimiter,
    pub ready: Arc<AtomicBool>,
    /// Bytes of each image sent to each phone (see [`Coverage`]).
    pub coverage: Arc<Mutex<Coverage>>,
    /// Which requests get an access log line (see [`access_log`]).
    pub access_log: AccessLog,
    /// Overlay mode: the upstream provisioning server (see [`super::overlay`]).
    pub upstream: Option<Arc<super::overlay::Upstream>>,
}

/// Where a request goes: answered here, or passed to the upstream with its body.
pub(crate) enum Routed {
    Answer(Outcome, Response<Body>),
    /// To the upstream: the path below the prefix (starting with `/`).
    Proxy(String),
}

/// Retry-After for a phone with no slot at all: it should come back at its next scheduled
/// check, which is what it does anyway; an hour keeps an eager client from hammering.
const NO_SLOT_RETRY: Duration = Duration::from_secs(3600);

/// Retry-After inside a held slot (its stage not yet released): short, so that a phone still
/// in its slot when the gate opens downloads then.
const HELD_RETRY: Duration = Duration::from_secs(300);

pub(crate) fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|e: Infallible| match e {})
        .boxed_unsync()
}

pub(crate) fn empty() -> Body {
    Empty::new()
        .map_err(|e: Infallible| match e {})
        .boxed_unsync()
}

pub(crate) fn text(status: StatusCode, message: &str) -> Response<Body> {
    let mut resp = Response::new(full(format!("{message}\n")));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

fn retry_after(status: StatusCode, message: &str, after: Duration) -> Response<Body> {
    let mut resp = text(status, message);
    let secs = after.as_secs().max(1);
    if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
        resp.headers_mut().insert(header::RETRY_AFTER, v);
    }
    resp
}

impl State {
    /// Entry point of every request.
    pub async fn handle<B>(self: Arc<Self>, req: Request<B>) -> Response<Body>
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let started = std::time::Instant::now();
        let (parts, body) = req.into_parts();
        let req = Request::from_parts(parts, ());
        let routed = match &self.upstream {
            Some(up) => self.overlay_route(up, &req).await,
            None => None,
        };
        let (outcome, resp) = match routed {
            None => self.route(&req).await,
            Some(Routed::Answer(outcome, resp)) => (outcome, resp),
            Some(Routed::Proxy(rest)) => {
                let body = body.map_err(|e| io::Error::other(e.into())).boxed_unsync();
                match &self.upstream {
                    Some(up) => up.proxy(&req, &rest, body, &self.stats).await,
                    None => (
                        Outcome::NotAConfigFile,
                        text(StatusCode::NOT_FOUND, "not found"),
                    ),
                }
            }
        };
        self.stats.count(outcome);
        if !self.access_log.selects(outcome, resp.status()) {
            return resp;
        }
        let (mac, model) = self.subject(&req);
        let line = access_log::Line {
            mac,
            family: model
                .as_deref()
                .and_then(crate::core::PhoneFamily::for_model),
            model,
            file: req.uri().path().to_owned(),
            status: resp.status().as_u16(),
            outcome,
            refusal: resp.extensions().get::<RefusalReason>().copied(),
        };
        access_log::logged(resp, line, started)
    }

    /// The phone a request is about, for the access log: the User-Agent's MAC, else the
    /// requested file's; and its model, as the index knows it.
    fn subject<B>(&self, req: &Request<B>) -> (Option<Mac>, Option<String>) {
        let from_agent = req
            .headers()
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .and_then(|ua| parse_user_agent(ua).ok())
            .map(|a| a.mac);
        let from_path = || {
            let name = req.uri().path().rsplit('/').next()?;
            parse_file_name(name).ok().map(|(mac, _)| mac)
        };
        let Some(mac) = from_agent.or_else(from_path) else {
            return (None, None);
        };
        let model = self
            .index
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .phone(mac)
            .map(|p| p.model.to_string());
        (Some(mac), model)
    }

    /// Records a refusal in the phone's note and marks the answer with its reason (for the
    /// access log).
    pub(crate) fn refused(
        &self,
        mac: Mac,
        phone: &ServedPhone,
        version: Option<&str>,
        reason: RefusalReason,
        (outcome, mut resp): (Outcome, Response<Body>),
    ) -> (Outcome, Response<Body>) {
        let now = self.clock.now();
        self.tracker
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .notes
            .refused(mac, &MapRef::of(&phone.shard), version, reason, now);
        resp.extensions_mut().insert(reason);
        (outcome, resp)
    }

    async fn route<B>(&self, req: &Request<B>) -> (Outcome, Response<Body>) {
        let uri_len = req.uri().path_and_query().map_or(0, |p| p.as_str().len())
            + req.uri().authority().map_or(0, |a| a.as_str().len());
        if uri_len > self.config.max_uri_bytes {
            return (
                Outcome::UriTooLong,
                text(StatusCode::URI_TOO_LONG, "URI too long"),
            );
        }
        let head = match *req.method() {
            Method::GET => false,
            Method::HEAD => true,
            _ => {
                let mut resp = text(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD");
                resp.headers_mut()
                    .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
                return (Outcome::MethodNotAllowed, resp);
            }
        };
        let path = req.uri().path();
        match path {
            "/healthz" => return (Outcome::Health, text(StatusCode::OK, "ok")),
            "/readyz" => {
                let resp = if self.ready.load(Ordering::SeqCst) && self.tokens.is_synced() {
                    text(StatusCode::OK, "ready")
                } else {
                    text(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "config index not synced yet",
                    )
                };
                return (Outcome::Health, resp);
            }
            _ => {}
        }
        let not_found = || {
            (
                Outcome::NotAConfigFile,
                text(StatusCode::NOT_FOUND, "not found"),
            )
        };
        let Some(rest) = path.strip_prefix(self.config.path_prefix.as_str()) else {
            return not_found();
        };
        let Some(rest) = rest.strip_prefix('/') else {
            return not_found();
        };
        if !rest.contains('/') {
            return self.config_file(req, rest, head);
        }
        let mut segments = rest.splitn(4, '/');
        match (
            segments.next(),
            segments.next(),
            segments.next(),
            segments.next(),
        ) {
            (Some("firmware"), Some(site), Some(file), None) => {
                self.firmware(req, site, file, head).await
            }
            _ => not_found(),
        }
    }

    pub(crate) fn agent<B>(&self, req: &Request<B>) -> Result<Option<PhoneAgent>, Refusal> {
        let Some(ua) = req.headers().get(header::USER_AGENT) else {
            return Ok(None);
        };
        let bad = |m: String| Box::new((Outcome::BadRequest, text(StatusCode::BAD_REQUEST, &m)));
        let ua = ua
            .to_str()
            .map_err(|_| bad("User-Agent is not ASCII".into()))?;
        match parse_user_agent(ua) {
            Ok(agent) => Ok(Some(agent)),
            Err(UserAgentError::NotAPhone) => Ok(None),
            Err(e) => Err(bad(e.to_string())),
        }
    }

    pub(crate) fn policy(&self) -> Arc<Policy> {
        self.policy
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Refuses a source that failed too often recently (429), before anything about the
    /// phone it asks for is looked at.
    pub(crate) fn not_limited<B>(&self, req: &Request<B>) -> Result<(), Refusal> {
        let Some(PeerAddr(peer)) = req.extensions().get::<PeerAddr>() else {
            return Ok(());
        };
        match self.limiter.blocked(peer.ip(), std::time::Instant::now()) {
            None => Ok(()),
            Some(wait) => Err(Box::new((
                Outcome::RateLimited,
                retry_after(
                    StatusCode::TOO_MANY_REQUESTS,
                    "too many failed requests",
                    wait,
                ),
            ))),
        }
    }

    /// Counts a failed request against its source.
    pub(crate) fn failed<B>(&self, req: &Request<B>) {
        if let Some(PeerAddr(peer)) = req.extensions().get::<PeerAddr>() {
            self.limiter.failed(peer.ip(), std::time::Instant::now());
        }
    }

    /// May this request fetch a file of `mac` (whose entry in the index is `phone`)? The
    /// refusal is the same whether the phone is unknown, claimed twice or just not this
    /// requester's: status, headers and body say nothing about the phone.
    pub(crate) fn authorized<B>(
        &self,
        req: &Request<B>,
        mac: Mac,
        phone: Option<&ServedPhone>,
    ) -> Result<(), Refusal> {
        let policy = self.policy();
        if policy.is_open() {
            return Ok(());
        }
        let now_secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let facts = RequestFacts {
            method: req.method().as_str(),
            uri: req.uri().path_and_query().map_or("/", |p| p.as_str()),
            authorization: req
                .headers()
                .get(header::AUTHORIZATION)
                .map(HeaderValue::as_bytes),
            client_mac: req
                .extensions()
                .get::<ClientIdentity>()
                .and_then(|id| id.mac),
            now_secs,
        };
        let site = phone.map(|p| SiteRef {
            namespace: &p.shard.namespace,
            site: &p.shard.site,
        });
        let (presented, stale) = match policy.decide(&facts, mac, site) {
            Verdict::Allowed => return Ok(()),
            Verdict::Refused { presented, stale } => (presented, stale),
        };
        if presented {
            self.failed(req);
        }
        let status = if policy.mode == super::auth::AuthMode::ClientCert {
            StatusCode::FORBIDDEN
        } else {
            StatusCode::UNAUTHORIZED
        };
        let mut resp = text(status, "unauthorized");
        for challenge in policy.challenges(now_secs, stale) {
            if let Ok(v) = HeaderValue::from_str(&challenge) {
                resp.headers_mut().append(header::WWW_AUTHENTICATE, v);
            }
        }
        Err(Box::new((Outcome::Unauthorized, resp)))
    }

    fn config_file<B>(
        &self,
        req: &Request<B>,
        name: &str,
        head: bool,
    ) -> (Outcome, Response<Body>) {
        let Ok((mac, format)) = parse_file_name(name) else {
            return (
                Outcome::NotAConfigFile,
                text(StatusCode::NOT_FOUND, "not a phone configuration file"),
            );
        };
        if let Err(r) = self.not_limited(req) {
            return *r;
        }
        let agent = match self.agent(req) {
            Ok(a) => a,
            Err(r) => return *r,
        };
        if let Some(agent) = &agent
            && agent.mac != mac
        {
            self.failed(req);
            return (
                Outcome::Forbidden,
                text(StatusCode::FORBIDDEN, "a phone may only fetch its own file"),
            );
        }
        // Some firmwares upper-case the MAC in the name; it is the same phone and the same
        // file, which the index holds under its canonical (lower-case) name.
        let canonical = format.file_name(mac);
        let (file, phone, conflict) = {
            let index = self.index.read().unwrap_or_else(PoisonError::into_inner);
            (
                index.file(&canonical),
                index.phone(mac),
                index.in_conflict(mac),
            )
        };
        // Before anything tells whether the phone exists.
        if let Err(r) = self.authorized(req, mac, phone.as_ref()) {
            return match (&agent, &phone) {
                (Some(a), Some(p)) => {
                    self.refused(mac, p, Some(&a.version), RefusalReason::Unauthorized, *r)
                }
                _ => *r,
            };
        }
        let Some(file) = file else {
            // A phone two namespaces claim is answered as an unknown one: no tenant wins it.
            let outcome = if conflict {
                Outcome::Conflict
            } else {
                Outcome::UnknownPhone
            };
            // Guessing MACs is a failure too.
            self.failed(req);
            return (outcome, text(StatusCode::NOT_FOUND, "unknown phone"));
        };
        self.config_seen(mac, phone.as_ref(), agent.as_ref());
        let len = file.body.len();
        let mut resp = Response::new(if head { empty() } else { full(file.body) });
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(file.content_type),
        );
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        (Outcome::ConfigServed, resp)
    }

    /// A phone fetched its file: what it reports is progress and goes into its note.
    pub(crate) fn config_seen(
        &self,
        mac: Mac,
        phone: Option<&ServedPhone>,
        agent: Option<&PhoneAgent>,
    ) {
        if let Some(phone) = phone
            && let Some(agent) = agent
        {
            let now = self.clock.now();
            let map = MapRef::of(&phone.shard);
            let mut tracker = self.tracker.lock().unwrap_or_else(PoisonError::into_inner);
            tracker.notes.seen(mac, &map, Some(&agent.version), now);
            if let Some(target) = phone.shard.target_for(&phone.model) {
                let slot_started = phone.slot.is_some_and(|s| !s.held && s.start <= now);
                tracker.on_config(
                    mac,
                    &map,
                    &agent.version,
                    &target.version,
                    slot_started,
                    now,
                );
            }
        }
    }

    async fn firmware<B>(
        &self,
        req: &Request<B>,
        site: &str,
        file: &str,
        head: bool,
    ) -> (Outcome, Response<Body>) {
        let not_found = |m: &str| (Outcome::FirmwareNotFound, text(StatusCode::NOT_FOUND, m));
        let Ok(path) = FirmwarePath::new(site, file) else {
            return not_found("not a firmware path");
        };
        let Some(dir) = &self.config.firmware_dir else {
            return not_found("this server serves no firmware");
        };
        if let Err(r) = self.not_limited(req) {
            return *r;
        }
        let agent = match self.agent(req) {
            Ok(Some(a)) => a,
            Ok(None) => {
                return (
                    Outcome::BadRequest,
                    text(
                        StatusCode::BAD_REQUEST,
                        "firmware needs a phone User-Agent carrying its MAC",
                    ),
                );
            }
            Err(r) => return *r,
        };
        let (phone, conflict) = {
            let index = self.index.read().unwrap_or_else(PoisonError::into_inner);
            (index.phone(agent.mac), index.in_conflict(agent.mac))
        };
        // The phone the User-Agent names must be the one the credentials (or the client
        // certificate) are for, whether it exists or not.
        if let Err(r) = self.authorized(req, agent.mac, phone.as_ref()) {
            return match &phone {
                Some(p) => self.refused(
                    agent.mac,
                    p,
                    Some(&agent.version),
                    RefusalReason::Unauthorized,
                    *r,
                ),
                None => *r,
            };
        }
        let Some(phone) = phone else {
            let outcome = if conflict {
                Outcome::Conflict
            } else {
                Outcome::UnknownPhone
            };
            self.failed(req);
            return (outcome, text(StatusCode::NOT_FOUND, "unknown phone"));
        };
        let version = Some(agent.version.as_str());
        let refused = |reason, answer| self.refused(agent.mac, &phone, version, reason, answer);
        if phone.shard.site != path.site() {
            self.failed(req);
            return refused(
                RefusalReason::WrongSite,
                (
                    Outcome::Forbidden,
                    text(
                        StatusCode::FORBIDDEN,
                        "this firmware directory is another site's",
                    ),
                ),
            );
        }
        let full_path = dir.join(path.file());
        let mut fw = match tokio::fs::File::open(&full_path).await {
            Ok(f) => f,
            Err(_) => {
                return refused(
                    RefusalReason::NoFirmwareFile,
                    not_found("no such firmware file"),
                );
            }
        };
        let (total, tag) = match fw.metadata().await {
            Ok(m) if m.is_file() => (m.len(), etag(&m)),
            _ => {
                return refused(
                    RefusalReason::NoFirmwareFile,
                    not_found("no such firmware file"),
                );
            }
        };
        // A resume of another image than the one the phone has part of gets the whole image.
        let if_range = req
            .headers()
            .get(header::IF_RANGE)
            .map(HeaderValue::as_bytes);
        let range = match req.headers().get(header::RANGE).map(|v| v.to_str()) {
            None => None,
            Some(_) if !if_range_holds(if_range, &tag) => None,
            Some(Ok(h)) => match parse_range(h, total) {
                Ok(r) => r,
                Err(e) => {
                    let mut resp = text(StatusCode::RANGE_NOT_SATISFIABLE, &e.to_string());
                    if let Ok(v) = HeaderValue::from_str(&format!("bytes */{total}")) {
                        resp.headers_mut().insert(header::CONTENT_RANGE, v);
                    }
                    return (Outcome::BadRequest, resp);
                }
            },
            Some(Err(_)) => None,
        };
        let image_tag = tag.clone();
        let tag = HeaderValue::from_str(&tag).ok();
        if head {
            let mut resp = Response::new(empty());
            let h = resp.headers_mut();
            h.insert(header::CONTENT_LENGTH, HeaderValue::from(total));
            if let Some(tag) = tag {
                h.insert(header::ETAG, tag);
            }
            h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            );
            return (Outcome::FirmwareServed, resp);
        }
        let site_stats = self.stats.site(path.site());
        site_stats.cap.store(phone.shard.cap, Ordering::Relaxed);
        let now = self.clock.now();
        if let Err(refusal) = self.in_slot(&phone, now, &site_stats) {
            let (reason, answer) = *refusal;
            return refused(reason, answer);
        }
        let guard = match self
            .tokens
            .acquire(
                &phone.shard.namespace,
                path.site(),
                phone.shard.cap,
                &agent.mac.bare().to_string(),
                site_stats.clone(),
            )
            .await
        {
            Ok(g) => g,
            Err(TokenError::Busy { .. }) => {
                site_stats.refused_busy.fetch_add(1, Ordering::Relaxed);
                return refused(
                    RefusalReason::SiteBusy,
                    (
                        Outcome::Busy,
                        retry_after(
                            StatusCode::SERVICE_UNAVAILABLE,
                            "site download cap reached",
                            self.config.busy_retry_after,
                        ),
                    ),
                );
            }
            Err(TokenError::PhoneHolds { .. }) => {
                return refused(
                    RefusalReason::AlreadyDownloading,
                    (
                        Outcome::Busy,
                        retry_after(
                            StatusCode::SERVICE_UNAVAILABLE,
                            "this phone is already downloading from its site",
                            self.config.busy_retry_after,
                        ),
                    ),
                );
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not take a download token");
                return refused(
                    RefusalReason::TokensUnavailable,
                    (
                        Outcome::TokenError,
                        retry_after(
                            StatusCode::SERVICE_UNAVAILABLE,
                            "download tokens unavailable",
                            self.config.busy_retry_after,
                        ),
                    ),
                );
            }
        };
        let ByteRange { start, end } = range.unwrap_or(ByteRange {
            start: 0,
            end: total.saturating_sub(1),
        });
        if start > 0 && fw.seek(io::SeekFrom::Start(start)).await.is_err() {
            return not_found("firmware file unreadable");
        }
        let length = if total == 0 { 0 } else { end - start + 1 };
        let target = phone
            .shard
            .target_for(&phone.model)
            .map(|t| t.version.clone());
        let session = Session {
            tracker: self.tracker.clone(),
            clock: self.clock,
            mac: agent.mac,
            map: MapRef::of(&phone.shard),
            target: target.clone(),
            coverage: self.coverage.clone(),
            image_tag,
            total,
            start,
            sent: 0,
            completed: false,
            site_stats: site_stats.clone(),
        };
        {
            let mut tracker = self.tracker.lock().unwrap_or_else(PoisonError::into_inner);
            tracker
                .notes
                .seen(agent.mac, &session.map, Some(&agent.version), now);
            if let Some(target) = &target {
                tracker.on_download_start(agent.mac, &session.map, &agent.version, target, now);
            }
        }
        let watchdog = self.min_rate().and_then(|min| {
            let meter = req.extensions().get::<Arc<Meter>>()?.clone();
            let window = self.config.min_download_rate_window;
            Some(tokio::spawn(enforce_min_rate(meter, min, window)).abort_handle())
        });
        let download = Download {
            file: fw,
            remaining: length,
            guard,
            _watchdog: watchdog.map(AbortOnDrop),
            session,
            chunk: self.config.chunk_bytes.max(1024),
            rate: self.config.download_rate,
            clock: self.clock,
        };
        let stream = futures::stream::unfold(download, Download::next).boxed();
        let mut resp = Response::new(StreamBody::new(stream).boxed_unsync());
        if let Some(r) = range {
            *resp.status_mut() = StatusCode::PARTIAL_CONTENT;
            if let Ok(v) = HeaderValue::from_str(&r.content_range(total)) {
                resp.headers_mut().insert(header::CONTENT_RANGE, v);
            }
        }
        let h = resp.headers_mut();
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
        h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
        if let Some(tag) = tag {
            h.insert(header::ETAG, tag);
        }
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        );
        (Outcome::FirmwareServed, resp)
    }

    /// The minimum rate a download must keep (bytes per real second), if any: the configured
    /// one, but at most half the throttled rate so throttling never trips it.
    fn min_rate(&self) -> Option<u64> {
        let min = self.config.min_download_rate.filter(|r| *r > 0)?;
        match self.config.download_rate.filter(|r| *r > 0) {
            Some(rate) => Some(min.min(rate / 2)).filter(|r| *r > 0),
            None => Some(min),
        }
    }

    /// A download is allowed only inside the phone's planned slot, while a rollout runs.
    fn in_slot(
        &self,
        phone: &ServedPhone,
        now: DateTime<Utc>,
        site: &SiteStats,
    ) -> Result<(), SlotRefusal> {
        let refuse = |after: Duration, why: &str, reason: RefusalReason| {
            site.refused_outside_slot.fetch_add(1, Ordering::Relaxed);
            Err(Box::new((
                reason,
                (
                    Outcome::OutsideSlot,
                    retry_after(StatusCode::SERVICE_UNAVAILABLE, why, after),
                ),
            )))
        };
        let Some(slot) = phone
            .slot
            .filter(|_| phone.shard.target_for(&phone.model).is_some())
        else {
            return refuse(
                NO_SLOT_RETRY,
                "no download slot planned for this phone",
                RefusalReason::NoSlot,
            );
        };
        if now < slot.start {
            let wait = (slot.start - now)
                .to_std()
                .unwrap_or(Duration::from_secs(1));
            return refuse(
                wait,
                "outside this phone's download slot",
                RefusalReason::BeforeSlot,
            );
        }
        if now >= slot.end {
            return refuse(
                NO_SLOT_RETRY,
                "this phone's download slot is over",
                RefusalReason::SlotOver,
            );
        }
        if slot.held {
            // Come back soon inside the slot: the stage may be released before it ends.
            let left = (slot.end - now).to_std().unwrap_or(Duration::from_secs(1));
            return refuse(
                left.min(HELD_RETRY),
                "this phone's rollout stage is not released yet",
                RefusalReason::StageHeld,
            );
        }
        Ok(())
    }
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Tells the tracker how a download ended, whatever ends it (last byte, drop, lost token).
struct Session {
    tracker: Arc<Mutex<Tracker>>,
    clock: Clock,
    mac: Mac,
    map: MapRef,
    target: Option<String>,
    /// What this phone has been sent of each image, across responses.
    coverage: Arc<Mutex<Coverage>>,
    image_tag: String,
    total: u64,
    /// First byte of this response's range, and bytes handed to the connection since.
    start: u64,
    sent: u64,
    /// The whole range went out.
    completed: bool,
    site_stats: Arc<SiteStats>,
}

impl Drop for Session {
    fn drop(&mut self) {
        let counter = if self.completed {
            &self.site_stats.downloads_completed
        } else {
            &self.site_stats.downloads_dropped
        };
        counter.fetch_add(1, Ordering::Relaxed);
        if let Some(target) = &self.target {
            // Complete only once every byte of the image went out to this phone, in this
            // response or earlier ones: one ranged request of the last byte is not a download.
            let complete = self
                .coverage
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .add(
                    self.mac,
                    &self.image_tag,
                    self.total,
                    self.start,
                    self.start.saturating_add(self.sent),
                );
            self.tracker
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .on_download_end(self.mac, &self.map, complete, target, self.clock.now());
        }
    }
}

/// A firmware body being sent: owns the file, the token and the session, so dropping the body
/// (end of transfer or dropped connection) releases the token and records the outcome.
struct Download {
    file: tokio::fs::File,
    remaining: u64,
    session: Session,
    guard: TokenGuard,
    /// The minimum-rate watchdog of this download, stopped when it ends.
    _watchdog: Option<AbortOnDrop>,
    chunk: usize,
    /// Bytes per second on the server's clock, if throttled.
    rate: Option<u64>,
    clock: Clock,
}

impl Download {
    async fn next(mut self) -> Option<(Result<Frame<Bytes>, io::Error>, Self)> {
        if self.remaining == 0 {
            self.session.completed = true;
            return None;
        }
        if self.guard.is_lost() {
            // Ending short of Content-Length makes hyper close the connection: the phone sees
            // a cut download and resumes it later.
            return None;
        }
        let n = (self.remaining.min(self.chunk as u64)) as usize;
        if let Some(rate) = self.rate.filter(|r| *r > 0) {
            let wait = Duration::from_secs_f64(n as f64 / rate as f64);
            tokio::time::sleep(self.clock.to_real(wait)).await;
        }
        let mut buf = vec![0u8; n];
        match self.file.read_exact(&mut buf).await {
            Ok(_) => {
                self.remaining -= n as u64;
                self.session.sent += n as u64;
                self.session
                    .site_stats
                    .bytes_sent
                    .fetch_add(n as u64, Ordering::Relaxed);
                // Complete once the last byte is handed to hyper: knowing the length, hyper
                // may drop the body without polling it for its end.
                if self.remaining == 0 {
                    self.session.completed = true;
                }
                Some((Ok(Frame::data(Bytes::from(buf))), self))
            }
            Err(e) => {
                tracing::warn!(error = %e, "reading firmware failed");
                None
            }
        }
    }
}
