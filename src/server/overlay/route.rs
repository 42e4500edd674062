//! Which requests the overlay answers itself, which it merges and which it passes on.

use std::sync::PoisonError;
use std::time::SystemTime;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};

use super::cache::Entry;
use super::merge::merge;
use super::{Fetched, LOOP_HEADER, Upstream, etag_of, http_date, not_modified, now_seconds};
use crate::children::RefusalReason;
use crate::core::Mac;
use crate::render::{Format, parse_file_name};
use crate::server::http::{Refusal, Routed, State, empty, full, text};
use crate::server::identity::PhoneAgent;
use crate::server::index::ServedPhone;
use crate::server::stats::{Outcome, UpstreamResult};

/// `Cache-Control` of merged files: phones may keep them to revalidate (304), shared caches
/// must not (they carry SIP credentials).
const MERGED_CACHE_CONTROL: &str = "private, no-cache";

/// A merged (or stand-in) answer and what the phone's request said about it.
struct Served<'a> {
    body: Bytes,
    etag: &'a str,
    modified: SystemTime,
    content_type: HeaderValue,
}

impl State {
    /// Overlay mode: the answer or the upstream for `req`, or `None` for what phonefleet
    /// serves as without an upstream (health, firmware from its directory, paths outside its
    /// prefix, over-long URIs).
    pub(crate) async fn overlay_route(&self, up: &Upstream, req: &Request<()>) -> Option<Routed> {
        let path = req.uri().path();
        if path == "/healthz" || path == "/readyz" {
            return None;
        }
        if req.headers().contains_key(LOOP_HEADER) {
            tracing::warn!(
                path,
                "request from a phonefleet overlay: the upstream URL leads back to phonefleet"
            );
            let mut resp = text(
                StatusCode::LOOP_DETECTED,
                "loop: this request came from a phonefleet overlay",
            );
            resp.headers_mut()
                .insert(LOOP_HEADER, HeaderValue::from_static("loop"));
            return Some(Routed::Answer(Outcome::LoopDetected, resp));
        }
        let uri_len = req.uri().path_and_query().map_or(0, |p| p.as_str().len());
        if uri_len > self.config.max_uri_bytes {
            return None;
        }
        let rest = path.strip_prefix(self.config.path_prefix.as_str())?;
        let name = rest.strip_prefix('/')?;
        let head = req.method() == Method::HEAD;
        if !name.contains('/')
            && (head || req.method() == Method::GET)
            && let Ok((mac, format)) = parse_file_name(name)
        {
            return Some(self.overlay_config(up, req, rest, mac, format, head).await);
        }
        if self.config.firmware_dir.is_some() && name.starts_with("firmware/") {
            return None;
        }
        if up.logs_in()
            && let Err(r) = self.proxy_authorized(req)
        {
            let (outcome, resp) = *r;
            return Some(Routed::Answer(outcome, resp));
        }
        Some(Routed::Proxy(rest.to_owned()))
    }

    /// When phonefleet logs in to the upstream itself, a request it passes on must be one
    /// phonefleet lets in: the phone its User-Agent (or client certificate) names.
    fn proxy_authorized(&self, req: &Request<()>) -> Result<(), Refusal> {
        let agent = self.agent(req)?;
        let mac = agent
            .map(|a| a.mac)
            .or_else(|| {
                req.extensions()
                    .get::<crate::server::tls::ClientIdentity>()
                    .and_then(|id| id.mac)
            })
            // No phone named: only a line valid for every phone can open it.
            .or_else(|| Mac::from_u64(0));
        let Some(mac) = mac else {
            return Err(Box::new((
                Outcome::Unauthorized,
                text(StatusCode::UNAUTHORIZED, "unauthorized"),
            )));
        };
        let phone = self
            .index
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .phone(mac);
        self.authorized(req, mac, phone.as_ref())
    }

    /// A per-phone file: phonefleet's keys merged into the upstream's file for the phone.
    async fn overlay_config(
        &self,
        up: &Upstream,
        req: &Request<()>,
        rest: &str,
        mac: Mac,
        format: Format,
        head: bool,
    ) -> Routed {
        let answer = |r: Refusal| {
            let (outcome, resp) = *r;
            Routed::Answer(outcome, resp)
        };
        if let Err(r) = self.not_limited(req) {
            return answer(r);
        }
        let agent = match self.agent(req) {
            Ok(a) => a,
            Err(r) => return answer(r),
        };
        if let Some(agent) = &agent
            && agent.mac != mac
        {
            self.failed(req);
            return Routed::Answer(
                Outcome::Forbidden,
                text(StatusCode::FORBIDDEN, "a phone may only fetch its own file"),
            );
        }
        let canonical = format.file_name(mac);
        let (file, phone) = {
            let index = self.index.read().unwrap_or_else(PoisonError::into_inner);
            (index.file(&canonical), index.phone(mac))
        };
        // phonefleet's own check, when it has one (client certificates, or its own login
        // to the upstream): before anything tells whether the phone exists.
        if let Err(r) = self.authorized(req, mac, phone.as_ref()) {
            return match (&agent, &phone) {
                (Some(a), Some(p)) => {
                    let (o, resp) =
                        self.refused(mac, p, Some(&a.version), RefusalReason::Unauthorized, *r);
                    Routed::Answer(o, resp)
                }
                _ => answer(r),
            };
        }
        // A phone phonefleet does not manage: the upstream's file alone.
        let Some(file) = file else {
            return Routed::Proxy(rest.to_owned());
        };
        let credentials = up.credential_key(req.headers());
        let cached = up.cached(&canonical);
        let (fetched, took) = up.fetch(req, rest, cached.clone(), &credentials).await;
        let (result, upstream_body, u_etag, u_modified, u_type) = match fetched {
            Fetched::Body {
                body,
                etag,
                modified,
                content_type,
            } => (UpstreamResult::Ok, Some(body), etag, modified, content_type),
            Fetched::Unchanged(entry) => (
                UpstreamResult::NotModified,
                Some(entry.upstream_body.clone()),
                entry.upstream_etag.clone(),
                entry.upstream_modified.clone(),
                entry.upstream_type.clone(),
            ),
            Fetched::NotFound => (UpstreamResult::NotFound, None, None, None, None),
            Fetched::PassBack(result, resp) => {
                self.stats.upstream(result, took);
                // Credentials the upstream no longer accepts lose their stand-in answer.
                if result == UpstreamResult::Refused
                    && cached.is_some_and(|c| c.credentials == credentials)
                {
                    up.forget(&canonical);
                }
                return Routed::Answer(Outcome::Proxied, resp);
            }
            Fetched::Failed(result, why) => {
                self.stats.upstream(result, took);
                return match cached.filter(|c| c.credentials == credentials) {
                    Some(entry) => {
                        tracing::warn!(
                            file = %canonical,
                            result = result.as_str(),
                            reason = %why,
                            "upstream provisioning server failed; serving this phone's last good merged file"
                        );
                        let served = Served {
                            body: entry.merged.clone(),
                            etag: &entry.etag,
                            modified: entry.modified,
                            content_type: content_type(
                                entry.upstream_type.as_ref(),
                                file.content_type,
                            ),
                        };
                        self.serve(req, served, head, mac, phone.as_ref(), agent.as_ref())
                    }
                    None => {
                        tracing::warn!(
                            file = %canonical,
                            result = result.as_str(),
                            reason = %why,
                            "upstream provisioning server failed and no last good file for these credentials; answering 502"
                        );
                        Routed::Answer(Outcome::UpstreamFailed, super::upstream_failed())
                    }
                };
            }
        };
        let merged = match &upstream_body {
            None => Ok(file.body.clone()),
            Some(u) => merge(format, u, &file.body).map(Bytes::from),
        };
        let merged = match merged {
            Ok(m) => {
                self.stats.upstream(result, took);
                m
            }
            Err(e) => {
                // Never a file without the upstream's settings: the phone gets the upstream's
                // own file, unmerged, and the operator a log line and a count.
                self.stats.upstream(UpstreamResult::Unmergeable, took);
                tracing::warn!(file = %canonical, error = %e, "upstream file cannot be merged; passing it on unchanged");
                let body = upstream_body.unwrap_or_default();
                let mut resp = Response::new(if head { empty() } else { full(body.clone()) });
                let h = resp.headers_mut();
                if let Some(t) = u_type {
                    h.insert(header::CONTENT_TYPE, t);
                }
                h.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
                return Routed::Answer(Outcome::Proxied, resp);
            }
        };
        let etag = etag_of(&merged);
        let modified = match &cached {
            Some(c) if c.etag == etag => c.modified,
            _ => now_seconds(),
        };
        let entry = Entry {
            credentials,
            upstream_etag: u_etag,
            upstream_modified: u_modified,
            upstream_type: u_type,
            upstream_body: upstream_body.unwrap_or_default(),
            merged: merged.clone(),
            etag: etag.clone(),
            modified,
        };
        let content_type = content_type(entry.upstream_type.as_ref(), file.content_type);
        up.remember(&canonical, entry);
        let served = Served {
            body: merged,
            etag: &etag,
            modified,
            content_type,
        };
        self.serve(req, served, head, mac, phone.as_ref(), agent.as_ref())
    }

    /// 200 with the file, or 304 when the phone's conditional request says it has it.
    fn serve(
        &self,
        req: &Request<()>,
        served: Served<'_>,
        head: bool,
        mac: Mac,
        phone: Option<&ServedPhone>,
        agent: Option<&PhoneAgent>,
    ) -> Routed {
        self.config_seen(mac, phone, agent);
        let unchanged = not_modified(req.headers(), served.etag, served.modified);
        let len = served.body.len();
        let mut resp = Response::new(if head || unchanged {
            empty()
        } else {
            full(served.body)
        });
        let h = resp.headers_mut();
        if let Ok(v) = HeaderValue::from_str(served.etag) {
            h.insert(header::ETAG, v);
        }
        if let Ok(v) = HeaderValue::from_str(&http_date(served.modified)) {
            h.insert(header::LAST_MODIFIED, v);
        }
        h.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static(MERGED_CACHE_CONTROL),
        );
        if unchanged {
            *resp.status_mut() = StatusCode::NOT_MODIFIED;
            return Routed::Answer(Outcome::NotModified, resp);
        }
        h.insert(header::CONTENT_TYPE, served.content_type);
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
        Routed::Answer(Outcome::ConfigServed, resp)
    }
}

/// The upstream's type for its file, else phonefleet's for the format.
fn content_type(upstream: Option<&HeaderValue>, ours: &'static str) -> HeaderValue {
    upstream
        .cloned()
        .unwrap_or_else(|| HeaderValue::from_static(ours))
}
