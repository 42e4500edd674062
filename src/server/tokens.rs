//! Download tokens: the run-time cap, exact across server replicas.
//!
//! Each site has `cap` tokens, `coordination.k8s.io/v1` Leases named `<site>-download-<k>`
//! (k in 0..cap) in the schedule's namespace. A download holds one from before its first byte
//! until its body is fully sent or its connection drops. A Lease is taken with an optimistic
//! write (create, or replace at the `resourceVersion` read while it was free), so two replicas
//! can never both take the same one: however many replicas serve a site, at most `cap`
//! downloads run. A token is renewed while its download lasts; a replica that dies mid-download
//! stops renewing, and its tokens become free after the lease duration. If a renewal finds the
//! Lease taken by someone else, the download is cut (the phone resumes later with `Range`), so
//! the cap holds even then.
//!
//! Lease times are real (system) time even under simulated time: they measure whether a
//! replica is alive, not when a phone may download.
//!
//! A per-site count of the tokens this replica holds is the fast path: at `cap` the replica
//! answers busy without asking the API server, which matters in a power-on storm. Past it, a
//! take reads the Leases from a watch ([`watch_leases`]), not from a LIST, and makes at most
//! [`RateBudget`]'s writes per second: a storm costs the API server one write per won token
//! plus renewals and releases, and a bounded number of lost races, whatever the number of
//! phones. The watch may lag a write by a moment; that costs at most a 409 (the write is at the
//! `resourceVersion` seen) or a busy answer, never a second holder.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::{FutureExt, StreamExt};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{ListParams, PostParams};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};

use crate::children::{LABEL_MANAGED_BY, LABEL_SITE, MANAGED_BY};
use crate::scope::WatchScope;

use super::stats::SiteStats;

/// Why no token was taken.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("all {cap} download tokens of site {site} are held")]
    Busy { site: String, cap: u32 },
    #[error("phone {phone} already holds a download token of site {site}")]
    PhoneHolds { site: String, phone: String },
    #[error("download tokens of site {site}: {source}")]
    Api {
        site: String,
        #[source]
        source: kube::Error,
    },
}

/// Hands out and takes back download tokens.
pub struct Tokens {
    client: Client,
    replica: String,
    lease_duration: Duration,
    release_grace: Duration,
    /// Tokens this replica holds (or is trying to take).
    held: Mutex<Tally>,
    /// The token Leases as the watch sees them; a LIST is made only until it has synced.
    leases: Option<Store<Lease>>,
    /// The Leases as this replica last wrote them (`namespace/name`): the watch may not have
    /// seen our own latest write yet — a token we just gave back would look held, and a phone
    /// fetching its image in consecutive ranges would be turned away between two of them.
    written: Mutex<HashMap<String, Lease>>,
    /// Bounds the rate of Lease writes made to take tokens.
    budget: Mutex<RateBudget>,
    calls: ApiCalls,
}

/// API requests made for download tokens, by kind (for the storm test's measurement and the
/// logs). The watch itself is one long request plus a re-list when it breaks.
#[derive(Debug, Default)]
pub struct ApiCalls {
    /// Lease LISTs (only while the watch has not synced).
    pub lists: AtomicU64,
    /// Creates and replaces to take a token, won or lost (409).
    pub takes: AtomicU64,
    /// Renewals of held tokens.
    pub renewals: AtomicU64,
    /// Replaces (and re-reads after a 409) to give tokens back.
    pub releases: AtomicU64,
    /// Takes answered busy because the write budget was spent (no request made).
    pub throttled: AtomicU64,
}

impl ApiCalls {
    /// All requests made.
    pub fn total(&self) -> u64 {
        self.lists.load(Ordering::Relaxed)
            + self.takes.load(Ordering::Relaxed)
            + self.renewals.load(Ordering::Relaxed)
            + self.releases.load(Ordering::Relaxed)
    }
}

/// A token bucket: at most `burst` writes at once, refilled at `per_second`. Pure: the caller
/// gives the time.
#[derive(Debug, Clone)]
pub struct RateBudget {
    per_second: f64,
    burst: f64,
    available: f64,
    last: Option<tokio::time::Instant>,
}

impl RateBudget {
    /// `per_second` writes on average, `per_second` (at least one) at once; 0 is unbounded.
    pub fn new(per_second: u32) -> Self {
        let rate = f64::from(per_second);
        Self {
            per_second: rate,
            burst: rate.max(1.0),
            available: rate.max(1.0),
            last: None,
        }
    }

    /// Spends one write if the budget allows it at `now`.
    pub fn try_spend(&mut self, now: tokio::time::Instant) -> bool {
        if self.per_second <= 0.0 {
            return true;
        }
        if let Some(last) = self.last {
            let refill = now.saturating_duration_since(last).as_secs_f64() * self.per_second;
            self.available = (self.available + refill).min(self.burst);
        }
        self.last = Some(now);
        if self.available >= 1.0 {
            self.available -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Default bound on Lease writes to take tokens, per replica and second.
pub const DEFAULT_TAKE_WRITES_PER_SECOND: u32 = 20;

/// A store of the download-token Leases of `scope` and the future that keeps it in sync (run
/// it in a task).
pub fn watch_leases(
    client: Client,
    scope: &WatchScope,
) -> (
    Store<Lease>,
    impl std::future::Future<Output = ()> + Send + 'static,
) {
    let (store, writer) = reflector::store();
    // The leader Lease carries no site label: only download tokens are watched.
    let config =
        watcher::Config::default().labels(&format!("{LABEL_MANAGED_BY}={MANAGED_BY},{LABEL_SITE}"));
    let run = reflector::reflector(writer, scope.watcher::<Lease>(&client, config))
        .default_backoff()
        .touched_objects()
        .for_each(|event| {
            if let Err(e) = event {
                tracing::warn!(error = %e, "download-token watch failed; retrying");
            }
            futures::future::ready(())
        });
    (store, run)
}

/// One count of a site's local tally, taken before the API call that may win a token and
/// given back on drop: whatever ends the attempt (busy, an API error, the phone hanging up
/// while the call is in flight, which drops the request's future) cannot leak it.
struct Reservation {
    tokens: Arc<Tokens>,
    key: String,
    /// `namespace/site/phone`: one token per phone at a time.
    phone: String,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.tokens.unreserve(&self.key, &self.phone);
    }
}

/// Longest a phone's request waits for its previous token to be given back before it is
/// answered busy (the release is a grace period plus one API write).
const RELEASE_WAIT: Duration = Duration::from_secs(2);

/// What this replica counts: tokens per `namespace/site`, and the phones holding them
/// (`namespace/site/phone`).
#[derive(Default)]
struct Tally {
    per_site: HashMap<String, u32>,
    /// Phones whose token is being given back (release grace, Lease write): their next
    /// request waits for it instead of being refused, so a phone fetching its image in
    /// consecutive ranges is not turned away between two of them.
    releasing: HashSet<String>,
    phones: HashSet<String>,
}

/// The result of an attempt to take a token.
enum Taken {
    /// Won: the Leases API, the token's name, our holder identity, the Lease as written.
    Token(Box<(Api<Lease>, String, String, Lease)>),
    /// All the site's tokens are held.
    Busy,
    /// This phone holds one of the site's tokens already.
    PhoneHolds,
    /// This phone's previous token is being given back.
    Releasing,
}

/// A held token. Dropping it releases the token in the background.
pub struct TokenGuard {
    lost: Arc<AtomicBool>,
    release: Option<Release>,
}

struct Release {
    tokens: Arc<Tokens>,
    api: Api<Lease>,
    name: String,
    holder: String,
    /// The local count's slot, given back once the Lease is released.
    reservation: Reservation,
    site_stats: Arc<SiteStats>,
    renewer: tokio::task::JoinHandle<()>,
    latest: Arc<Mutex<Lease>>,
}

impl TokenGuard {
    /// True once the token was found taken by someone else: the download must stop.
    pub fn is_lost(&self) -> bool {
        self.lost.load(Ordering::SeqCst)
    }
}

impl Drop for TokenGuard {
    fn drop(&mut self) {
        let Some(r) = self.release.take() else {
            return;
        };
        r.renewer.abort();
        r.tokens.releasing(&r.reservation.phone);
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            // No runtime left (process exit): the lease expires on its own.
            r.site_stats.leave();
            return;
        };
        handle.spawn(async move {
            // The last bytes may still be on their way to the phone: keep the slot a moment.
            tokio::time::sleep(r.tokens.release_grace).await;
            let lease = r.latest.lock().unwrap_or_else(PoisonError::into_inner).clone();
            if let Err(e) = release(&r.tokens, &r.api, &r.name, &r.holder, lease).await {
                tracing::warn!(lease = %r.name, error = %e, "releasing a download token failed; it expires on its own");
            }
            r.site_stats.leave();
            drop(r.reservation);
        });
    }
}

impl Tokens {
    /// `replica` names this server in the Leases' `holderIdentity` (`<replica>/<mac>`).
    /// `leases`: the watch's store ([`watch_leases`]); without one every take LISTs.
    /// `take_writes_per_second` bounds the writes made to take tokens (0: unbounded).
    pub fn new(
        client: Client,
        replica: String,
        lease_duration: Duration,
        release_grace: Duration,
        leases: Option<Store<Lease>>,
        take_writes_per_second: u32,
    ) -> Arc<Self> {
        Arc::new(Self {
            client,
            replica,
            lease_duration: lease_duration.max(Duration::from_secs(3)),
            release_grace,
            held: Mutex::new(Tally::default()),
            leases,
            written: Mutex::new(HashMap::new()),
            budget: Mutex::new(RateBudget::new(take_writes_per_second)),
            calls: ApiCalls::default(),
        })
    }

    /// The API requests made so far.
    pub fn api_calls(&self) -> &ApiCalls {
        &self.calls
    }

    /// Whether the token watch has synced (or there is none): until then takes LIST.
    pub fn is_synced(&self) -> bool {
        self.leases
            .as_ref()
            .is_none_or(|store| matches!(store.wait_until_ready().now_or_never(), Some(Ok(()))))
    }

    /// Remembers a Lease as this replica wrote it.
    fn wrote(&self, lease: &Lease) {
        let key = format!(
            "{}/{}",
            lease.namespace().unwrap_or_default(),
            lease.name_any()
        );
        self.written
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(key, lease.clone());
    }

    /// The site's token Leases from the watch, once it has synced, each replaced by our own
    /// last write of it when that is newer.
    fn watched(&self, namespace: &str, site: &str) -> Option<BTreeMap<String, Lease>> {
        let store = self.leases.as_ref()?;
        store.wait_until_ready().now_or_never()?.ok()?;
        let of_site = |l: &Lease| {
            l.namespace().as_deref() == Some(namespace)
                && l.labels().get(LABEL_SITE).map(String::as_str) == Some(site)
        };
        let mut leases: BTreeMap<String, Lease> = store
            .state()
            .into_iter()
            .filter(|l| of_site(l))
            .map(|l| (l.name_any(), (*l).clone()))
            .collect();
        let written = self.written.lock().unwrap_or_else(PoisonError::into_inner);
        for ours in written.values().filter(|l| of_site(l)) {
            let name = ours.name_any();
            if leases.get(&name).is_none_or(|seen| newer(ours, seen)) {
                leases.insert(name, ours.clone());
            }
        }
        Some(leases)
    }

    /// Spends one take write from the budget.
    fn may_write(&self) -> bool {
        let ok = self
            .budget
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .try_spend(tokio::time::Instant::now());
        if !ok {
            self.calls.throttled.fetch_add(1, Ordering::Relaxed);
        }
        ok
    }

    /// Counts one more token of `key` for `who`, unless `cap` are counted already or `who`
    /// holds one of `key` already.
    fn reserve(self: &Arc<Self>, key: &str, who: &str, cap: u32) -> Result<Reservation, Taken> {
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        let phone = format!("{key}/{who}");
        if held.releasing.contains(&phone) {
            return Err(Taken::Releasing);
        }
        if held.phones.contains(&phone) {
            return Err(Taken::PhoneHolds);
        }
        let n = held.per_site.entry(key.to_owned()).or_default();
        if *n >= cap {
            return Err(Taken::Busy);
        }
        *n += 1;
        held.phones.insert(phone.clone());
        Ok(Reservation {
            tokens: self.clone(),
            key: key.to_owned(),
            phone,
        })
    }

    fn unreserve(&self, key: &str, phone: &str) {
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = held.per_site.get_mut(key) {
            *n = n.saturating_sub(1);
        }
        held.phones.remove(phone);
        held.releasing.remove(phone);
    }

    fn releasing(&self, phone: &str) {
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        held.releasing.insert(phone.to_owned());
    }

    /// Tokens of `site` this replica holds or is taking now (its local count).
    pub fn held(&self, namespace: &str, site: &str) -> u32 {
        let held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        let key = format!("{namespace}/{site}");
        held.per_site.get(&key).copied().unwrap_or(0)
    }

    /// Takes one of `site`'s `cap` tokens for the phone `who`.
    pub async fn acquire(
        self: &Arc<Self>,
        namespace: &str,
        site: &str,
        cap: u32,
        who: &str,
        site_stats: Arc<SiteStats>,
    ) -> Result<TokenGuard, TokenError> {
        let key = format!("{namespace}/{site}");
        let refused = |why: Taken| match why {
            Taken::PhoneHolds | Taken::Releasing => TokenError::PhoneHolds {
                site: site.to_owned(),
                phone: who.to_owned(),
            },
            _ => TokenError::Busy {
                site: site.to_owned(),
                cap,
            },
        };
        if cap == 0 {
            return Err(refused(Taken::Busy));
        }
        // Counted before the API call: a storm's concurrent takers see each other. The
        // reservation is a guard, so a phone hanging up mid-call gives it back.
        let mut reservation = self.reserve(&key, who, cap);
        let waiting_since = tokio::time::Instant::now();
        while let Err(Taken::Releasing) = reservation {
            if waiting_since.elapsed() >= RELEASE_WAIT {
                return Err(refused(Taken::PhoneHolds));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
            reservation = self.reserve(&key, who, cap);
        }
        let reservation = reservation.map_err(refused)?;
        match self.take(namespace, site, cap, who).await {
            Ok(Taken::Token(won)) => {
                let (api, name, holder, lease) = *won;
                site_stats.enter();
                let lost = Arc::new(AtomicBool::new(false));
                let latest = Arc::new(Mutex::new(lease));
                let renewer = tokio::spawn(renew(
                    self.clone(),
                    api.clone(),
                    latest.clone(),
                    lost.clone(),
                    self.lease_duration,
                ));
                Ok(TokenGuard {
                    lost,
                    release: Some(Release {
                        tokens: self.clone(),
                        api,
                        name,
                        holder,
                        reservation,
                        site_stats,
                        renewer,
                        latest,
                    }),
                })
            }
            Ok(why) => Err(refused(why)),
            Err(source) => Err(TokenError::Api {
                site: site.to_owned(),
                source,
            }),
        }
    }

    async fn take(
        &self,
        namespace: &str,
        site: &str,
        cap: u32,
        who: &str,
    ) -> Result<Taken, kube::Error> {
        let api: Api<Lease> = Api::namespaced(self.client.clone(), namespace);
        let lp = ListParams::default().labels(&format!(
            "{LABEL_SITE}={site},{LABEL_MANAGED_BY}={MANAGED_BY}"
        ));
        let existing: BTreeMap<String, Lease> = match self.watched(namespace, site) {
            Some(watched) => watched,
            None => {
                self.calls.lists.fetch_add(1, Ordering::Relaxed);
                api.list(&lp)
                    .await?
                    .items
                    .into_iter()
                    .map(|l| (l.name_any(), l))
                    .collect()
            }
        };
        let holder = format!("{}/{who}", self.replica);
        let now = Utc::now();
        // One token per phone at a time, across replicas too: a phone opening several
        // connections must not take its whole site's cap.
        let suffix = format!("/{who}");
        if existing.values().any(|l| {
            !is_free(l, now)
                && l.spec
                    .as_ref()
                    .and_then(|s| s.holder_identity.as_deref())
                    .is_some_and(|h| h.ends_with(&suffix))
        }) {
            return Ok(Taken::PhoneHolds);
        }
        // Start at a phone-dependent token so concurrent takers mostly try different ones.
        let offset = who
            .bytes()
            .fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b)));
        for i in 0..cap {
            let k = (offset.wrapping_add(i)) % cap;
            let name = lease_name(site, k);
            if existing.get(&name).is_some_and(|l| !is_free(l, now)) {
                continue;
            }
            if !self.may_write() {
                return Ok(Taken::Busy);
            }
            self.calls.takes.fetch_add(1, Ordering::Relaxed);
            let result = match existing.get(&name) {
                Some(lease) if is_free(lease, now) => {
                    let mut taken = lease.clone();
                    taken.spec = Some(self.held_spec(&holder, now, lease));
                    api.replace(&name, &PostParams::default(), &taken).await
                }
                Some(_) => continue,
                None => {
                    let mut lease = Lease::default();
                    lease.metadata.name = Some(name.clone());
                    lease.metadata.namespace = Some(namespace.to_owned());
                    lease.metadata.labels = Some(BTreeMap::from([
                        (LABEL_SITE.to_owned(), site.to_owned()),
                        (LABEL_MANAGED_BY.to_owned(), MANAGED_BY.to_owned()),
                    ]));
                    lease.spec = Some(self.held_spec(&holder, now, &Lease::default()));
                    api.create(&PostParams::default(), &lease).await
                }
            };
            match result {
                Ok(lease) => {
                    self.wrote(&lease);
                    return Ok(Taken::Token(Box::new((api, name, holder, lease))));
                }
                // Someone else took it (or created it) first: try the next one.
                Err(kube::Error::Api(e)) if e.code == 409 => continue,
                // Deleted since we last wrote it: forget our copy, try the next one.
                Err(kube::Error::Api(e)) if e.code == 404 => {
                    self.written
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .remove(&format!("{namespace}/{name}"));
                    continue;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(Taken::Busy)
    }

    fn held_spec(&self, holder: &str, now: DateTime<Utc>, previous: &Lease) -> LeaseSpec {
        let transitions = previous
            .spec
            .as_ref()
            .and_then(|s| s.lease_transitions)
            .unwrap_or(0);
        LeaseSpec {
            holder_identity: Some(holder.to_owned()),
            lease_duration_seconds: Some(self.lease_duration.as_secs().min(i32::MAX as u64) as i32),
            acquire_time: Some(micro_time(now)),
            renew_time: Some(micro_time(now)),
            lease_transitions: Some(transitions.saturating_add(1)),
            ..Default::default()
        }
    }
}

/// Whether `a` is a later version of the object than `b`. Resource versions are opaque to
/// clients in general; the API server's etcd storage gives increasing integers, and when either
/// does not parse the watch's copy (`b`) is taken — at worst a 409 or a busy answer, never a
/// second holder, since every take is a write at the version read.
fn newer(a: &Lease, b: &Lease) -> bool {
    let version = |l: &Lease| {
        l.metadata
            .resource_version
            .as_deref()
            .and_then(|v| v.parse::<u64>().ok())
    };
    matches!((version(a), version(b)), (Some(x), Some(y)) if x > y)
}

/// Name of token `k` of `site`.
pub fn lease_name(site: &str, k: u32) -> String {
    format!("{site}-download-{k}")
}

/// Whether nobody holds `lease` at `now`: no holder, or the holder stopped renewing.
pub fn is_free(lease: &Lease, now: DateTime<Utc>) -> bool {
    let Some(spec) = &lease.spec else {
        return true;
    };
    if spec.holder_identity.as_deref().is_none_or(str::is_empty) {
        return true;
    }
    let (Some(renew), Some(secs)) = (&spec.renew_time, spec.lease_duration_seconds) else {
        return true;
    };
    let renewed = from_micro_time(renew);
    renewed + chrono::Duration::seconds(i64::from(secs)) < now
}

fn micro_time(t: DateTime<Utc>) -> MicroTime {
    let ts = k8s_openapi::jiff::Timestamp::new(t.timestamp(), t.timestamp_subsec_nanos() as i32)
        .unwrap_or(k8s_openapi::jiff::Timestamp::UNIX_EPOCH);
    MicroTime(ts)
}

fn from_micro_time(t: &MicroTime) -> DateTime<Utc> {
    DateTime::from_timestamp(t.0.as_second(), t.0.subsec_nanosecond().max(0) as u32)
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}

/// Renews the lease every third of its duration; flags `lost` when someone else took it or
/// when it could not be renewed before it would expire.
async fn renew(
    tokens: Arc<Tokens>,
    api: Api<Lease>,
    latest: Arc<Mutex<Lease>>,
    lost: Arc<AtomicBool>,
    duration: Duration,
) {
    let mut last_ok = tokio::time::Instant::now();
    loop {
        tokio::time::sleep(duration / 3).await;
        let mut lease = latest
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let name = lease.name_any();
        if let Some(spec) = lease.spec.as_mut() {
            spec.renew_time = Some(micro_time(Utc::now()));
        }
        tokens.calls.renewals.fetch_add(1, Ordering::Relaxed);
        match api.replace(&name, &PostParams::default(), &lease).await {
            Ok(renewed) => {
                tokens.wrote(&renewed);
                *latest.lock().unwrap_or_else(PoisonError::into_inner) = renewed;
                last_ok = tokio::time::Instant::now();
            }
            Err(kube::Error::Api(e)) if e.code == 409 => {
                lost.store(true, Ordering::SeqCst);
                return;
            }
            Err(e) => {
                tracing::warn!(lease = %name, error = %e, "renewing a download token failed");
                if last_ok.elapsed() >= duration * 2 / 3 {
                    lost.store(true, Ordering::SeqCst);
                    return;
                }
            }
        }
    }
}

/// Clears the holder, if we still hold it.
async fn release(
    tokens: &Tokens,
    api: &Api<Lease>,
    name: &str,
    holder: &str,
    mut lease: Lease,
) -> Result<(), kube::Error> {
    for _ in 0..3 {
        let ours = lease
            .spec
            .as_ref()
            .and_then(|s| s.holder_identity.as_deref())
            == Some(holder);
        if !ours {
            return Ok(());
        }
        if let Some(spec) = lease.spec.as_mut() {
            spec.holder_identity = None;
            spec.renew_time = None;
        }
        tokens.calls.releases.fetch_add(1, Ordering::Relaxed);
        match api.replace(name, &PostParams::default(), &lease).await {
            Ok(released) => {
                tokens.wrote(&released);
                return Ok(());
            }
            Err(kube::Error::Api(e)) if e.code == 409 => {
                tokens.calls.releases.fetch_add(1, Ordering::Relaxed);
                lease = api.get(name).await?;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn lease(holder: Option<&str>, renewed: DateTime<Utc>, secs: i32) -> Lease {
        Lease {
            spec: Some(LeaseSpec {
                holder_identity: holder.map(str::to_owned),
                renew_time: Some(micro_time(renewed)),
                lease_duration_seconds: Some(secs),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn a_lease_is_free_without_holder_or_once_expired() {
        let now = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        assert!(is_free(&Lease::default(), now));
        assert!(is_free(&lease(None, now, 30), now));
        assert!(is_free(&lease(Some(""), now, 30), now));
        assert!(!is_free(&lease(Some("r/m"), now, 30), now));
        assert!(!is_free(
            &lease(Some("r/m"), now - chrono::Duration::seconds(29), 30),
            now
        ));
        assert!(is_free(
            &lease(Some("r/m"), now - chrono::Duration::seconds(31), 30),
            now
        ));
    }

    /// A client whose API server accepts connections and never answers.
    async fn hung_api() -> (Client, tokio::task::JoinHandle<()>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("address");
        let hold = tokio::spawn(async move {
            let mut open = Vec::new();
            while let Ok((conn, _)) = listener.accept().await {
                open.push(conn);
            }
        });
        let url = format!("http://{addr}").parse().expect("URL");
        let client = Client::try_from(kube::Config::new(url)).expect("client");
        (client, hold)
    }

    #[tokio::test]
    async fn a_phone_hanging_up_while_the_api_server_is_slow_leaks_no_token() {
        const CAP: u32 = 2;
        let (client, _api) = hung_api().await;
        let tokens = Tokens::new(
            client,
            "r".into(),
            Duration::from_secs(30),
            Duration::ZERO,
            None,
            0,
        );
        let stats = Arc::new(SiteStats::default());
        for phone in 0..=CAP {
            let who = format!("p{phone}");
            let attempt = tokens.acquire("voice", "paris", CAP, &who, stats.clone());
            // The phone hangs up before the API server answers: its request's future is dropped.
            let outcome = tokio::time::timeout(Duration::from_millis(50), attempt).await;
            assert!(
                outcome.is_err(),
                "attempt {phone} should still wait for the API server, got {:?}",
                outcome.map(|r| r.map(|_| ()))
            );
        }
        assert_eq!(tokens.held("voice", "paris"), 0, "no attempt holds a token");
        assert_eq!(stats.in_flight.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn a_phone_taking_a_token_cannot_take_a_second_one_of_its_site() {
        let (client, _api) = hung_api().await;
        let tokens = Tokens::new(
            client,
            "r".into(),
            Duration::from_secs(30),
            Duration::ZERO,
            None,
            0,
        );
        let stats = Arc::new(SiteStats::default());
        let taking = {
            let (tokens, stats) = (tokens.clone(), stats.clone());
            tokio::spawn(async move { tokens.acquire("voice", "paris", 3, "p0", stats).await })
        };
        support_wait_until(|| tokens.held("voice", "paris") == 1).await;
        let second = tokens
            .acquire("voice", "paris", 3, "p0", stats.clone())
            .await;
        assert!(matches!(second, Err(TokenError::PhoneHolds { .. })));
        taking.abort();
        let _ = taking.await;
        assert_eq!(tokens.held("voice", "paris"), 0);
    }

    /// Polls `done` until it holds (the spawned attempt reached its API call).
    async fn support_wait_until(done: impl Fn() -> bool) {
        for _ in 0..1000 {
            if done() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("condition never held");
    }

    #[test]
    fn micro_time_round_trips() {
        let t = Utc.with_ymd_and_hms(2026, 3, 29, 1, 30, 15).unwrap()
            + chrono::Duration::microseconds(123456);
        assert_eq!(from_micro_time(&micro_time(t)), t);
    }

    #[test]
    fn the_write_budget_allows_a_burst_then_its_rate() {
        let t0 = tokio::time::Instant::now();
        let mut budget = RateBudget::new(4);
        let spent = (0..10).filter(|_| budget.try_spend(t0)).count();
        assert_eq!(spent, 4, "a burst of the rate");
        assert!(!budget.try_spend(t0 + Duration::from_millis(200)));
        assert!(
            budget.try_spend(t0 + Duration::from_millis(250)),
            "refilled at 4/s"
        );
        assert!(!budget.try_spend(t0 + Duration::from_millis(250)));
        let later = t0 + Duration::from_secs(60);
        let spent = (0..10).filter(|_| budget.try_spend(later)).count();
        assert_eq!(spent, 4, "never more than the burst");
        let mut unbounded = RateBudget::new(0);
        assert!((0..1000).all(|_| unbounded.try_spend(t0)));
    }
}
