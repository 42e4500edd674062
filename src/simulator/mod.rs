//! The fleet simulator: phones that behave as in DESIGN.md §2 against the real provisioning
//! server over real HTTP.
//!
//! Each phone boots (all phones of the simulation at once, or spread over `boot_spread`),
//! fetches its own configuration file with its vendor's User-Agent, reads the knobs from the
//! file (so it obeys what the renderer wrote, not what the plan meant), checks again at a
//! random time inside its window on allowed days (after its inactivity requirement), at every
//! boot when power-on checks are on, and at every power cut of its site (a storm: every phone
//! of the site boots at once). When its file points at a firmware image it has not installed,
//! it downloads it (honouring 503 + `Retry-After`), reboots, and reports the image's version
//! on its next request, unless its model is one whose new firmware never comes back.
//!
//! The simulator counts, on its own side, how many of each site's phones download at once:
//! an independent check of the server's cap. Time follows the [`Clock`] it is given, so with
//! `simulated-time` a multi-night rollout runs in a minute.
//!
//! Firmware images name their version in a first line `PHONEFLEET-FIRMWARE <version>`
//! ([`firmware_image`]), as real images carry theirs in a header; a phone that installs an
//! image without one keeps its old version.

pub mod cli;
pub mod knobs;
pub mod schedule;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::{Deserialize, Serialize};

use crate::api::PhoneSite;
use crate::clock::Clock;
use crate::core::{Mac, PhoneFamily, ReArm};
use crate::render::Format;
use crate::server::identity::{Vendor, user_agent};

use knobs::{PhoneKnobs, parse_grandstream, parse_xstim, parse_yealink};
use schedule::{Busy, SplitMix, next_check_busy, rearmed_from, same_schedule};

/// First line of a simulated firmware image.
pub const IMAGE_HEADER: &str = "PHONEFLEET-FIRMWARE ";

/// A firmware image of `size` bytes announcing `version`.
pub fn firmware_image(version: &str, size: usize) -> Vec<u8> {
    let mut image = format!("{IMAGE_HEADER}{version}\n").into_bytes();
    image.resize(size.max(image.len()), b'.');
    image
}

fn image_version(image: &[u8]) -> Option<String> {
    let line = image.split(|b| *b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?;
    line.strip_prefix(IMAGE_HEADER).map(str::to_owned)
}

/// One simulated phone.
#[derive(Clone, Debug)]
pub struct SimPhone {
    pub mac: Mac,
    pub model: String,
    /// Whose keys the phone reads (the inventory's family, else its model's); `None`: a phone
    /// no family places, which fetches its file and finds none.
    pub family: Option<PhoneFamily>,
}

/// One site of the simulated fleet.
#[derive(Clone, Debug)]
pub struct SimSite {
    pub name: String,
    pub time_zone: Tz,
    pub phones: Vec<SimPhone>,
}

/// Why the fleet could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    #[error("reading PhoneSites: {0}")]
    Yaml(#[from] serde_yaml_ng::Error),
    #[error("listing PhoneSites: {0}")]
    Kube(#[from] kube::Error),
    #[error("PhoneSite {site}: unknown time zone '{zone}'")]
    Zone { site: String, zone: String },
    #[error("PhoneSite {site}: bad MAC '{mac}'")]
    Mac { site: String, mac: String },
}

/// The sites of a list of PhoneSites.
pub fn sites_from(phone_sites: &[PhoneSite]) -> Result<Vec<SimSite>, FleetError> {
    let mut out = Vec::new();
    for s in phone_sites {
        let name = s.metadata.name.clone().unwrap_or_default();
        let time_zone: Tz = s.spec.time_zone.parse().map_err(|_| FleetError::Zone {
            site: name.clone(),
            zone: s.spec.time_zone.clone(),
        })?;
        let mut phones = Vec::new();
        for p in &s.spec.phones {
            let mac = p.mac.parse().map_err(|_| FleetError::Mac {
                site: name.clone(),
                mac: p.mac.to_string(),
            })?;
            phones.push(SimPhone {
                mac,
                model: p.model.to_string(),
                family: PhoneFamily::resolve(&p.model, p.family),
            });
        }
        out.push(SimSite {
            name,
            time_zone,
            phones,
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// The PhoneSites of a multi-document YAML manifest (other kinds are skipped).
pub fn sites_from_manifest(yaml: &str) -> Result<Vec<SimSite>, FleetError> {
    let mut sites = Vec::new();
    for doc in serde_yaml_ng::Deserializer::from_str(yaml) {
        let value = serde_yaml_ng::Value::deserialize(doc)?;
        if value.get("kind").and_then(|k| k.as_str()) == Some("PhoneSite") {
            sites.push(serde_yaml_ng::from_value::<PhoneSite>(value)?);
        }
    }
    sites_from(&sites)
}

/// The PhoneSites of a namespace.
pub async fn sites_from_cluster(
    client: kube::Client,
    namespace: &str,
) -> Result<Vec<SimSite>, FleetError> {
    let api: kube::Api<PhoneSite> = kube::Api::namespaced(client, namespace);
    let list = api.list(&Default::default()).await?;
    sites_from(&list.items)
}

/// How the simulation runs.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Base URL of the provisioning server, as in the rendered files (`http://host:port/prefix`).
    pub server: String,
    pub sites: Vec<SimSite>,
    pub seed: u64,
    /// Version every phone runs at the start.
    pub initial_version: String,
    /// Models whose new firmware never comes back after the reboot.
    pub fail_models: Vec<String>,
    /// Simulated time the simulation lasts.
    pub duration: Duration,
    /// Phones boot at a random time within this span from the start (zero: all at once).
    pub boot_spread: Duration,
    /// `(site, when)`: every phone of the site reboots at that instant.
    pub power_cuts: Vec<(String, DateTime<Utc>)>,
    /// Simulated time a phone takes to flash and reboot.
    pub reboot_time: Duration,
    /// Chance a phone is in use when its window opens (delays checks that need inactivity).
    pub busy_fraction: f64,
    /// End as soon as every phone is upgraded or dead, instead of running `duration`.
    pub stop_when_settled: bool,
    /// When phones obey a check window they have just fetched; `None`: each family's own
    /// ([`PhoneFamily::re_arm`]), at once for a phone of no family.
    pub re_arm: Option<ReArm>,
}

impl SimConfig {
    /// Defaults for everything but the server and the fleet.
    pub fn new(server: String, sites: Vec<SimSite>) -> Self {
        Self {
            server: server.trim_end_matches('/').to_owned(),
            sites,
            seed: 1,
            initial_version: "1.0.0".into(),
            fail_models: Vec::new(),
            duration: Duration::from_secs(7 * 24 * 3600),
            boot_spread: Duration::ZERO,
            power_cuts: Vec::new(),
            reboot_time: Duration::from_secs(120),
            busy_fraction: 0.0,
            stop_when_settled: false,
            re_arm: None,
        }
    }
}

/// Per-site results, counted by the phones themselves.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct SiteSummary {
    pub phones: u32,
    /// Phones running a version other than the initial one at the end.
    pub upgraded: u32,
    /// Phones that never came back from a reboot.
    pub failed: u32,
    /// Most of the site's phones downloading at the same time, as the phones saw it.
    pub peak_concurrent_downloads: u32,
    /// 503 answers to firmware requests.
    pub refusals: u64,
    pub downloads_completed: u64,
    pub config_fetches: u64,
    /// Requests that failed at the HTTP level or got an unexpected status.
    pub errors: u64,
    /// Window checks made later in their occurrence because the phone was in use when the
    /// window opened (`busy_fraction`, with an inactivity requirement).
    pub busy_delayed_checks: u64,
    /// Window checks made in a later occurrence because the phone was in use through an
    /// earlier one (a missed window).
    pub busy_missed_windows: u64,
    /// When the site's last phone to upgrade came back with its new firmware (simulated
    /// time): the rollout's real completion for the site, to hold a prediction against.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_upgrade: Option<DateTime<Utc>>,
}

/// What the simulation saw, per site.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    pub sites: BTreeMap<String, SiteSummary>,
}

#[derive(Default)]
struct SiteCounters {
    in_flight: AtomicU32,
    peak: AtomicU32,
    refusals: AtomicU64,
    completed: AtomicU64,
    fetches: AtomicU64,
    errors: AtomicU64,
    upgraded: AtomicU32,
    failed: AtomicU32,
    busy_delayed: AtomicU64,
    busy_missed: AtomicU64,
    /// Latest upgrade instant, Unix milliseconds (`i64::MIN`: none yet).
    last_upgrade_ms: AtomicI64,
}

impl SiteCounters {
    fn new() -> Self {
        Self {
            last_upgrade_ms: AtomicI64::new(i64::MIN),
            ..Self::default()
        }
    }
}

type Http = HttpClient<HttpConnector, Empty<Bytes>>;

struct Shared {
    config: SimConfig,
    clock: Clock,
    http: Http,
    end: DateTime<Utc>,
    total_settled: AtomicU32,
    total_phones: u32,
    /// Set when the caller asks the simulation to end now (e.g. SIGTERM to `phonefleet simulate`).
    stopped: std::sync::atomic::AtomicBool,
}

/// Runs the fleet until the simulated duration has passed; returns what the phones counted.
pub async fn run(config: SimConfig, clock: Clock) -> Summary {
    run_until(config, clock, std::future::pending()).await
}

/// Like [`run`], but also ends (and still counts) as soon as `stop` completes: a test or an
/// operator can end the simulation when what it waits for has happened, instead of giving the
/// run a fixed length that a slow machine may not reach in time.
pub async fn run_until(
    config: SimConfig,
    clock: Clock,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> Summary {
    let start = clock.now();
    let end =
        start + chrono::Duration::from_std(config.duration).unwrap_or(chrono::Duration::days(7));
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let http = HttpClient::builder(TokioExecutor::new())
        .pool_max_idle_per_host(256)
        .build(connector);
    let total_phones = config.sites.iter().map(|s| s.phones.len() as u32).sum();
    let shared = Arc::new(Shared {
        config: config.clone(),
        clock,
        http,
        end,
        total_settled: AtomicU32::new(0),
        total_phones,
        stopped: std::sync::atomic::AtomicBool::new(false),
    });
    let stopper = {
        let shared = shared.clone();
        tokio::spawn(async move {
            stop.await;
            shared.stopped.store(true, Ordering::SeqCst);
        })
    };
    let mut counters = BTreeMap::new();
    let mut tasks = Vec::new();
    for site in &config.sites {
        let c = Arc::new(SiteCounters::new());
        counters.insert(site.name.clone(), (site.phones.len() as u32, c.clone()));
        let cuts: Vec<DateTime<Utc>> = config
            .power_cuts
            .iter()
            .filter(|(s, _)| *s == site.name)
            .map(|(_, t)| *t)
            .collect();
        for phone in &site.phones {
            let mut rng = SplitMix::new(config.seed ^ phone.mac.stable_hash());
            let spread = config.boot_spread.as_secs();
            let boot = start + chrono::Duration::seconds(rng.below(spread) as i64);
            let p = Phone {
                shared: shared.clone(),
                site: site.clone(),
                counters: c.clone(),
                mac: phone.mac,
                model: phone.model.clone(),
                family: phone.family,
                vendor: vendor_of(phone.family),
                version: config.initial_version.clone(),
                installed: None,
                partial: None,
                knobs: None,
                re_arm: config
                    .re_arm
                    .or(phone.family.map(PhoneFamily::re_arm))
                    .unwrap_or(ReArm::AtOnce),
                armed_from: None,
                planned: None,
                rng,
                cuts: cuts.clone(),
                settled: false,
            };
            tasks.push(tokio::spawn(p.live(boot)));
        }
    }
    for t in tasks {
        let _ = t.await;
    }
    stopper.abort();
    let mut summary = Summary::default();
    for (name, (phones, c)) in counters {
        summary.sites.insert(
            name,
            SiteSummary {
                phones,
                upgraded: c.upgraded.load(Ordering::SeqCst),
                failed: c.failed.load(Ordering::SeqCst),
                peak_concurrent_downloads: c.peak.load(Ordering::SeqCst),
                refusals: c.refusals.load(Ordering::SeqCst),
                downloads_completed: c.completed.load(Ordering::SeqCst),
                config_fetches: c.fetches.load(Ordering::SeqCst),
                errors: c.errors.load(Ordering::SeqCst),
                busy_delayed_checks: c.busy_delayed.load(Ordering::SeqCst),
                busy_missed_windows: c.busy_missed.load(Ordering::SeqCst),
                last_upgrade: match c.last_upgrade_ms.load(Ordering::SeqCst) {
                    i64::MIN => None,
                    ms => DateTime::from_timestamp_millis(ms),
                },
            },
        );
    }
    summary
}

/// The User-Agent shape a simulated phone of `family` sends. XSTIM's is undocumented: the
/// simulator sends Grandstream's shape for it (an assumption, docs/phones.md), as it does for
/// a phone of no family.
pub fn vendor_of(family: Option<PhoneFamily>) -> Vendor {
    match family {
        Some(PhoneFamily::Yealink) => Vendor::Yealink,
        Some(PhoneFamily::Grandstream | PhoneFamily::Xstim) | None => Vendor::Grandstream,
    }
}

struct Phone {
    shared: Arc<Shared>,
    site: SimSite,
    counters: Arc<SiteCounters>,
    mac: Mac,
    model: String,
    family: Option<PhoneFamily>,
    vendor: Vendor,
    version: String,
    /// URL of the image last installed: the phone does not fetch the same image again.
    installed: Option<String>,
    /// A download cut short: resumed with `Range` at the next attempt, as phones do.
    partial: Option<Partial>,
    knobs: Option<PhoneKnobs>,
    re_arm: ReArm,
    /// Under [`ReArm::NextOccurrence`]: no check on the new schedule before this instant.
    armed_from: Option<DateTime<Utc>>,
    /// The last scheduled check, and whether being busy moved it (counted when it is made).
    planned: Option<(DateTime<Utc>, Busy)>,
    rng: SplitMix,
    cuts: Vec<DateTime<Utc>>,
    settled: bool,
}

/// The part of an image received before its download was cut.
struct Partial {
    url: String,
    received: u64,
    /// The first bytes, where the image names its version.
    head: Vec<u8>,
}

/// Bytes of an image's beginning kept for its version line.
const HEAD_BYTES: usize = 256;

enum Check {
    /// Nothing to download (or done).
    Idle,
    /// Come back at this time (503 with Retry-After).
    RetryAt(DateTime<Utc>),
    /// Downloaded an image with this version: reboot into it.
    Reboot(Option<String>),
}

impl Phone {
    async fn live(mut self, boot: DateTime<Utc>) {
        let shared = self.shared.clone();
        if !self.sleep_until(boot).await {
            return self.finish();
        }
        // First boot: factory settings check at power-on.
        let mut next = Some(self.shared.clock.now());
        loop {
            let now = self.shared.clock.now();
            let cut = self.cuts.iter().copied().filter(|c| *c > now).min();
            let wake = match (next, cut) {
                (Some(n), Some(c)) => n.min(c),
                (Some(n), None) => n,
                (None, Some(c)) => c,
                (None, None) => shared.end,
            };
            if !self.sleep_until(wake).await {
                return self.finish();
            }
            let booted = cut == Some(wake) && next.is_none_or(|n| n > wake);
            if booted && !self.knobs.as_ref().is_none_or(|k| k.power_on) {
                next = self.schedule();
                continue;
            }
            // The scheduled window check is being made: count it if being busy moved it.
            if let Some((_, how)) = self.planned.take_if(|(t, _)| *t == wake && !booted) {
                match how {
                    Busy::No => {}
                    Busy::Delayed => {
                        self.counters.busy_delayed.fetch_add(1, Ordering::Relaxed);
                    }
                    Busy::Missed => {
                        self.counters.busy_missed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            match self.check().await {
                Check::Idle => next = self.schedule(),
                Check::RetryAt(t) => next = Some(t.min(self.schedule().unwrap_or(t))),
                Check::Reboot(version) => {
                    let reboot =
                        chrono::Duration::from_std(shared.config.reboot_time).unwrap_or_default();
                    if !self.sleep_until(self.shared.clock.now() + reboot).await {
                        return self.finish();
                    }
                    if shared.config.fail_models.iter().any(|m| m == &self.model) {
                        // Bricked: never comes back.
                        self.counters.failed.fetch_add(1, Ordering::SeqCst);
                        shared.total_settled.fetch_add(1, Ordering::SeqCst);
                        return self.finish();
                    }
                    if let Some(v) = version {
                        self.version = v;
                    }
                    if self.version != shared.config.initial_version {
                        let now = self.shared.clock.now().timestamp_millis();
                        self.counters
                            .last_upgrade_ms
                            .fetch_max(now, Ordering::SeqCst);
                    }
                    // Boot after the upgrade: a power-on check reports the new version.
                    next = Some(self.shared.clock.now());
                }
            }
            // Upgraded, and has reported it on a request since the reboot.
            if !self.settled && self.version != shared.config.initial_version {
                self.settled = true;
                shared.total_settled.fetch_add(1, Ordering::SeqCst);
            }
        }
    }

    fn finish(self) {
        if self.version != self.shared.config.initial_version {
            self.counters.upgraded.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// Sleeps until `t` on the clock; false when the simulation ends first.
    async fn sleep_until(&self, t: DateTime<Utc>) -> bool {
        let end = self.shared.end;
        let target = t.min(end);
        loop {
            let now = self.shared.clock.now();
            if now >= target {
                break;
            }
            if self.shared.stopped.load(Ordering::SeqCst) {
                return false;
            }
            if self.shared.config.stop_when_settled
                && self.shared.total_settled.load(Ordering::SeqCst) >= self.shared.total_phones
            {
                return false;
            }
            let wait = (target - now).to_std().unwrap_or_default();
            // Wake at least every 100 ms real time to notice the end of the simulation.
            let real = self
                .shared
                .clock
                .to_real(wait)
                .min(Duration::from_millis(100));
            tokio::time::sleep(real.max(Duration::from_millis(1))).await;
        }
        t < end
    }

    fn schedule(&mut self) -> Option<DateTime<Utc>> {
        let k = self.knobs.as_ref()?;
        let now = self.shared.clock.now();
        self.planned = next_check_busy(
            k,
            self.site.time_zone,
            self.mac,
            self.armed_from.map_or(now, |a| a.max(now)),
            self.shared.config.busy_fraction,
            &mut self.rng,
        );
        self.planned.map(|(t, _)| t)
    }

    fn agent(&self) -> String {
        user_agent(self.vendor, &self.model, &self.version, self.mac)
    }

    async fn get(
        &self,
        url: &str,
        headers: &[(&str, String)],
    ) -> Option<hyper::Response<hyper::body::Incoming>> {
        let mut req = hyper::Request::get(url).header("user-agent", self.agent());
        for (k, v) in headers {
            req = req.header(*k, v);
        }
        let req = req.body(Empty::new()).ok()?;
        match self.shared.http.request(req).await {
            Ok(r) => Some(r),
            Err(_) => {
                self.counters.errors.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }

    /// One provisioning check: config, then firmware when the config points at a new image.
    async fn check(&mut self) -> Check {
        let format = self.family.map_or(Format::Xml, Format::of);
        {
            let url = format!(
                "{}/{}",
                self.shared.config.server,
                format.file_name(self.mac)
            );
            let Some(resp) = self.get(&url, &[]).await else {
                return Check::Idle;
            };
            let status = resp.status();
            let body = resp.into_body().collect().await.map(|b| b.to_bytes());
            if status == 404 {
                // No file for this phone (no family, or not in the fleet): nothing to obey.
                return Check::Idle;
            }
            let (true, Ok(body)) = (status.is_success(), body) else {
                self.counters.errors.fetch_add(1, Ordering::Relaxed);
                return Check::Idle;
            };
            self.counters.fetches.fetch_add(1, Ordering::Relaxed);
            let text = String::from_utf8_lossy(&body);
            let parsed = match self.family {
                Some(PhoneFamily::Yealink) => parse_yealink(&text),
                Some(PhoneFamily::Xstim) => parse_xstim(&text, &self.model),
                Some(PhoneFamily::Grandstream) | None => parse_grandstream(&text, &self.model),
            };
            match parsed {
                Ok(k) => {
                    if self.re_arm == ReArm::NextOccurrence
                        && let Some(old) = &self.knobs
                        && !same_schedule(old, &k)
                    {
                        let now = self.shared.clock.now();
                        self.armed_from =
                            Some(rearmed_from(old, self.site.time_zone, self.mac, now));
                    }
                    self.knobs = Some(k);
                }
                Err(_) => {
                    self.counters.errors.fetch_add(1, Ordering::Relaxed);
                    return Check::Idle;
                }
            }
        }
        let Some(url) = self.knobs.as_ref().and_then(|k| k.firmware_url.clone()) else {
            return Check::Idle;
        };
        if self.installed.as_deref() == Some(url.as_str()) {
            return Check::Idle;
        }
        self.download(url).await
    }

    async fn download(&mut self, url: String) -> Check {
        let resume = self.partial.take().filter(|p| p.url == url);
        let range: Vec<(&str, String)> = resume
            .iter()
            .map(|p| ("range", format!("bytes={}-", p.received)))
            .collect();
        let Some(resp) = self.get(&url, &range).await else {
            self.partial = resume;
            return Check::Idle;
        };
        let status = resp.status();
        if status == 503 {
            self.counters.refusals.fetch_add(1, Ordering::Relaxed);
            let after = resp
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<i64>().ok())
                .unwrap_or(600)
                .clamp(1, 7 * 24 * 3600);
            let _ = resp.into_body().collect().await;
            self.partial = resume;
            return Check::RetryAt(self.shared.clock.now() + chrono::Duration::seconds(after));
        }
        if !status.is_success() {
            self.counters.errors.fetch_add(1, Ordering::Relaxed);
            let _ = resp.into_body().collect().await;
            return Check::Idle;
        }
        // 206 continues the cut download; 200 (the server ignored the range) starts over.
        let mut part = match resume {
            Some(p) if status == 206 => p,
            _ => Partial {
                url: url.clone(),
                received: 0,
                head: Vec::new(),
            },
        };
        let c = self.counters.clone();
        let now = c.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        c.peak.fetch_max(now, Ordering::SeqCst);
        let mut body = resp.into_body();
        let outcome = loop {
            match body.frame().await {
                None => break Ok(()),
                Some(Ok(frame)) => {
                    if let Some(data) = frame.data_ref() {
                        let keep = HEAD_BYTES.saturating_sub(part.head.len()).min(data.len());
                        part.head.extend_from_slice(&data[..keep]);
                        part.received += data.len() as u64;
                    }
                }
                Some(Err(e)) => break Err(e),
            }
        };
        c.in_flight.fetch_sub(1, Ordering::SeqCst);
        match outcome {
            Ok(()) => {
                c.completed.fetch_add(1, Ordering::Relaxed);
                self.installed = Some(url);
                Check::Reboot(image_version(&part.head))
            }
            Err(_) => {
                c.errors.fetch_add(1, Ordering::Relaxed);
                self.partial = Some(part);
                Check::Idle
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_carry_their_version() {
        let image = firmware_image("2.0.1", 1000);
        assert_eq!(image.len(), 1000);
        assert_eq!(image_version(&image).as_deref(), Some("2.0.1"));
        assert_eq!(image_version(b"garbage"), None);
    }

    #[test]
    fn user_agents_follow_the_family() {
        assert_eq!(vendor_of(Some(PhoneFamily::Yealink)), Vendor::Yealink);
        assert_eq!(
            vendor_of(Some(PhoneFamily::Grandstream)),
            Vendor::Grandstream
        );
        assert_eq!(vendor_of(Some(PhoneFamily::Xstim)), Vendor::Grandstream);
    }

    #[test]
    fn manifests_yield_their_phone_sites() {
        let yaml = r#"
apiVersion: phonefleet.io/v1alpha1
kind: PhoneSite
metadata: {name: paris}
spec:
  timeZone: Europe/Paris
  maxConcurrentDownloads: 3
  phones:
    - {mac: "00:0b:82:12:34:56", model: GXP2170}
---
apiVersion: phonefleet.io/v1alpha1
kind: PhoneSchedule
metadata: {name: fw}
spec: {}
"#;
        let sites = sites_from_manifest(yaml).unwrap();
        assert_eq!(sites.len(), 1);
        assert_eq!(sites[0].phones[0].model, "GXP2170");
    }
}
