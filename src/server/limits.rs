//! File descriptors under a power-on storm: 20,000 phones booting at once open more
//! connections than the default soft limit (often 1024) allows. Without care the process runs
//! out of descriptors, and then its own API client and `/healthz` starve with the phones.
//!
//! - [`raise_nofile_limit`]: at start, the soft `RLIMIT_NOFILE` goes up to the hard limit.
//! - [`max_connections`]: the provisioning server holds at most that many connections and
//!   leaves the rest of the descriptors to the API client, the metrics endpoint and firmware
//!   files; beyond it, new connections wait in the kernel's accept queue (phones retry what
//!   overflows it).
//! - [`AcceptBackoff`]: an accept error (out of descriptors or memory) pauses accepting,
//!   doubling up to a second, instead of retrying in a busy loop.

use std::io;
use std::time::Duration;

/// Descriptors kept out of the provisioning server's reach: a quarter of the limit, at least
/// 64 (API client connections, metrics scrapes, probes, one open image per download) and at
/// most 1024.
fn reserve(limit: u64) -> u64 {
    (limit / 4).clamp(64, 1024)
}

/// Most connections held by default however high the limit: each costs a task and its
/// buffers (tens of KiB), and a storm beyond this is better queued than served slowly.
pub const MAX_CONNECTIONS_CEILING: usize = 16_384;

/// The connection cap for a soft descriptor limit of `limit`: what the reserve leaves, at
/// most [`MAX_CONNECTIONS_CEILING`], at least 1.
pub fn max_connections(limit: u64) -> usize {
    let usable = limit.saturating_sub(reserve(limit)).max(1);
    usize::try_from(usable)
        .unwrap_or(usize::MAX)
        .min(MAX_CONNECTIONS_CEILING)
}

/// The soft `RLIMIT_NOFILE` in force.
pub fn nofile_limit() -> io::Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the struct it is given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(lim.rlim_cur)
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit; returns the soft limit now in force.
pub fn raise_nofile_limit() -> io::Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read or write only the struct they are given.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return Err(io::Error::last_os_error());
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) != 0 {
                return Err(io::Error::last_os_error());
            }
        }
    }
    nofile_limit()
}

/// Pauses after accept errors: per-connection errors (the peer reset before we accepted)
/// retry at once; resource errors (out of descriptors, memory, buffers) wait 10 ms, doubling
/// to 1 s while they last, so a full descriptor table does not spin a core.
#[derive(Debug, Default)]
pub struct AcceptBackoff {
    delay: Option<Duration>,
}

const FIRST_PAUSE: Duration = Duration::from_millis(10);
const LONGEST_PAUSE: Duration = Duration::from_secs(1);

impl AcceptBackoff {
    /// An accept succeeded.
    pub fn reset(&mut self) {
        self.delay = None;
    }

    /// How long to pause after `error` (zero for per-connection errors).
    pub fn pause_after(&mut self, error: &io::Error) -> Duration {
        let exhausted = matches!(
            error.raw_os_error(),
            Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
        );
        if !exhausted {
            return Duration::ZERO;
        }
        let next = self
            .delay
            .map_or(FIRST_PAUSE, |d| (d * 2).min(LONGEST_PAUSE));
        self.delay = Some(next);
        next
    }

    /// Logs `error` and sleeps as long as [`AcceptBackoff::pause_after`] says.
    pub async fn after(&mut self, what: &str, error: &io::Error) {
        let pause = self.pause_after(error);
        tracing::warn!(error = %error, pause_ms = pause.as_millis() as u64, "{what}: accept failed");
        if !pause.is_zero() {
            tokio::time::sleep(pause).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_connection_cap_leaves_a_reserve_of_descriptors() {
        assert_eq!(max_connections(128), 64);
        assert_eq!(max_connections(1024), 768);
        assert_eq!(max_connections(8192), 8192 - 1024);
        assert_eq!(max_connections(1 << 20), MAX_CONNECTIONS_CEILING);
        assert_eq!(max_connections(10), 1);
    }

    #[test]
    fn running_out_of_descriptors_backs_off_doubling_to_a_second() {
        let mut backoff = AcceptBackoff::default();
        let emfile = io::Error::from_raw_os_error(libc::EMFILE);
        let pauses: Vec<u128> = (0..9)
            .map(|_| backoff.pause_after(&emfile).as_millis())
            .collect();
        assert_eq!(pauses, [10, 20, 40, 80, 160, 320, 640, 1000, 1000]);
        backoff.reset();
        assert_eq!(backoff.pause_after(&emfile), FIRST_PAUSE);
    }

    #[test]
    fn a_peer_resetting_before_accept_is_retried_at_once() {
        let mut backoff = AcceptBackoff::default();
        let aborted = io::Error::from_raw_os_error(libc::ECONNABORTED);
        assert_eq!(backoff.pause_after(&aborted), Duration::ZERO);
    }

    #[test]
    fn raising_the_limit_reaches_the_hard_limit() {
        let soft = raise_nofile_limit().expect("raise");
        assert_eq!(nofile_limit().expect("read"), soft);
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: as above.
        assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) }, 0);
        assert_eq!(lim.rlim_cur, lim.rlim_max);
    }
}
