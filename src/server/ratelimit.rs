//! A per-source limit on failed requests (wrong credentials, another phone's file, unknown
//! phones): a token bucket per client address, so guessing passwords or MACs from one source
//! costs time, while a site's phones behind one NAT address, which fail rarely, never notice.
//!
//! Memory is bounded: at most `max_sources` buckets. When the table is full, buckets that have
//! refilled (sources that stopped failing) are dropped; if none has, new sources share one
//! overflow bucket — under a flood from more addresses than the table holds, the newcomers are
//! limited together rather than the table growing. IPv6 sources are keyed by their /64 prefix:
//! one host usually has a whole /64 to pick addresses from.
//!
//! Time is a parameter (`now`), so the arithmetic is unit-tested without sleeping.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Default burst: failures a source may make at once.
pub const DEFAULT_BURST: u32 = 30;
/// Default refill: one failure allowed every this many seconds once the burst is spent.
pub const DEFAULT_REFILL: Duration = Duration::from_secs(2);
/// Default number of sources tracked.
pub const DEFAULT_MAX_SOURCES: usize = 10_000;

/// How a source is keyed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Source {
    V4(u32),
    /// The /64 prefix.
    V6(u64),
    /// The shared bucket of sources the table had no room for.
    Overflow,
}

impl Source {
    fn of(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(v4) => Source::V4(u32::from(v4)),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Source::V4(u32::from(v4)),
                None => Source::V6((u128::from(v6) >> 64) as u64),
            },
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// The failure limit's settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LimitConfig {
    /// Failures a source may make at once; 0 turns the limit off.
    pub burst: u32,
    /// Time to earn one more failure.
    pub refill: Duration,
    pub max_sources: usize,
}

impl Default for LimitConfig {
    fn default() -> Self {
        Self {
            burst: DEFAULT_BURST,
            refill: DEFAULT_REFILL,
            max_sources: DEFAULT_MAX_SOURCES,
        }
    }
}

/// Failure buckets per source.
#[derive(Debug)]
pub struct FailureLimiter {
    config: LimitConfig,
    buckets: Mutex<HashMap<Source, Bucket>>,
}

impl FailureLimiter {
    pub fn new(config: LimitConfig) -> Self {
        Self {
            config,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    fn refilled(&self, b: Bucket, now: Instant) -> f64 {
        let earned = now.saturating_duration_since(b.at).as_secs_f64()
            / self.config.refill.as_secs_f64().max(1e-9);
        (b.tokens + earned).min(self.config.burst as f64)
    }

    /// How long `ip` must wait before its requests are looked at again; `None` if it may go on.
    pub fn blocked(&self, ip: IpAddr, now: Instant) -> Option<Duration> {
        if self.config.burst == 0 {
            return None;
        }
        let buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let key = Source::of(ip);
        let bucket = match buckets.get(&key) {
            Some(b) => b,
            // Only when the table is full does the overflow bucket speak for a newcomer.
            None if buckets.len() >= self.config.max_sources => buckets.get(&Source::Overflow)?,
            None => return None,
        };
        let tokens = self.refilled(*bucket, now);
        (tokens < 1.0).then(|| {
            self.config
                .refill
                .mul_f64(1.0 - tokens)
                .max(Duration::from_secs(1))
        })
    }

    /// Records a failure of `ip`.
    pub fn failed(&self, ip: IpAddr, now: Instant) {
        if self.config.burst == 0 {
            return;
        }
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let mut key = Source::of(ip);
        if !buckets.contains_key(&key) && buckets.len() >= self.config.max_sources {
            // Make room: forget sources whose bucket has refilled.
            let burst = self.config.burst as f64;
            let refill = self.config.refill.as_secs_f64().max(1e-9);
            buckets.retain(|k, b| {
                *k == Source::Overflow
                    || b.tokens + now.saturating_duration_since(b.at).as_secs_f64() / refill < burst
            });
            if buckets.len() >= self.config.max_sources {
                key = Source::Overflow;
            }
        }
        let full = Bucket {
            tokens: self.config.burst as f64,
            at: now,
        };
        let current = buckets.get(&key).copied().unwrap_or(full);
        let tokens = (self.refilled(current, now) - 1.0).max(0.0);
        buckets.insert(key, Bucket { tokens, at: now });
    }

    /// Sources tracked now (for tests and a gauge).
    pub fn tracked(&self) -> usize {
        self.buckets.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(burst: u32, refill_secs: u64, max: usize) -> FailureLimiter {
        FailureLimiter::new(LimitConfig {
            burst,
            refill: Duration::from_secs(refill_secs),
            max_sources: max,
        })
    }

    #[test]
    fn a_source_is_blocked_after_its_burst_and_let_in_again_as_it_refills() {
        let l = limiter(3, 10, 100);
        let t0 = Instant::now();
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let other: IpAddr = "10.0.0.2".parse().unwrap();
        for _ in 0..3 {
            assert_eq!(l.blocked(ip, t0), None);
            l.failed(ip, t0);
        }
        let wait = l.blocked(ip, t0).expect("blocked after the burst");
        assert_eq!(wait, Duration::from_secs(10));
        assert_eq!(l.blocked(other, t0), None, "other sources are not");
        assert_eq!(l.blocked(ip, t0 + Duration::from_secs(10)), None);
        l.failed(ip, t0 + Duration::from_secs(10));
        assert!(l.blocked(ip, t0 + Duration::from_secs(10)).is_some());
    }

    #[test]
    fn ipv6_sources_share_their_64_prefix() {
        let l = limiter(1, 60, 100);
        let t0 = Instant::now();
        l.failed("2001:db8:1:2::1".parse().unwrap(), t0);
        assert!(
            l.blocked("2001:db8:1:2::ffff".parse().unwrap(), t0)
                .is_some()
        );
        assert!(l.blocked("2001:db8:1:3::1".parse().unwrap(), t0).is_none());
    }

    #[test]
    fn memory_is_bounded_and_a_flood_of_new_sources_shares_one_bucket() {
        let l = limiter(2, 60, 50);
        let t0 = Instant::now();
        for i in 0..10_000u32 {
            let ip = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            l.failed(ip, t0);
            l.failed(ip, t0);
        }
        assert!(l.tracked() <= 51, "{} buckets", l.tracked());
        // The newcomers spent the shared bucket: a new source is limited too.
        assert!(l.blocked("192.0.2.1".parse().unwrap(), t0).is_some());
        // Once the buckets refill, room is made for new sources again.
        let later = t0 + Duration::from_secs(3600);
        l.failed("192.0.2.1".parse().unwrap(), later);
        assert!(l.blocked("192.0.2.1".parse().unwrap(), later).is_none());
        assert!(l.tracked() <= 51);
    }

    #[test]
    fn a_zero_burst_turns_the_limit_off() {
        let l = limiter(0, 1, 10);
        let t0 = Instant::now();
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        for _ in 0..100 {
            l.failed(ip, t0);
        }
        assert_eq!(l.blocked(ip, t0), None);
        assert_eq!(l.tracked(), 0);
    }
}
