//! Whether a watch cache has completed its first list, readable and awaitable by any number of
//! tasks.
//!
//! kube-runtime's `Store::wait_until_ready` keeps a single waker (a oneshot receiver behind a
//! mutex): of several tasks awaiting it only the last one polled is woken, and a
//! `now_or_never()` check replaces the waker of a task awaiting it. Two schedules reconciled
//! while the caches were still filling left one of them waiting forever — never reconciled
//! until a restart (found by `tests/controller_tenancy.rs`). A `tokio::sync::watch` wakes
//! every waiter.

use kube::runtime::watcher::{self, Event};
use tokio::sync::watch;

/// The sending side: marks the cache synced when its stream passes an `InitDone`.
pub struct Marker(watch::Sender<bool>);

/// One cache's readiness.
#[derive(Clone, Debug)]
pub struct Synced(watch::Receiver<bool>);

/// A marker and the readiness it sets.
pub fn channel() -> (Marker, Synced) {
    let (tx, rx) = watch::channel(false);
    (Marker(tx), Synced(rx))
}

impl Marker {
    /// For `Stream::inspect` placed after the reflector (which has applied the event to its
    /// store by the time it yields it): the first `InitDone` marks the cache synced.
    pub fn on_event<K>(self) -> impl FnMut(&Result<Event<K>, watcher::Error>) {
        move |event| {
            if matches!(event, Ok(Event::InitDone)) && !*self.0.borrow() {
                self.0.send_replace(true);
            }
        }
    }
}

impl Synced {
    /// Whether the first list has completed.
    pub fn is_synced(&self) -> bool {
        *self.0.borrow()
    }

    /// Waits for the first list; false when the cache's stream is gone before it.
    pub async fn wait(&self) -> bool {
        self.0.clone().wait_for(|s| *s).await.is_ok()
    }
}

/// Waits until every one of `caches` has synced; false when one of them is gone first.
pub async fn all(caches: &[Synced]) -> bool {
    for cache in caches {
        if !cache.wait().await {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ConfigMap;

    /// Many tasks awaiting one cache all wake when it syncs (kube's `wait_until_ready` would
    /// wake only the last one polled).
    #[tokio::test]
    async fn every_waiter_wakes_when_the_cache_syncs() {
        let (marker, synced) = channel();
        let mut mark = marker.on_event::<ConfigMap>();
        let waiters: Vec<_> = (0..5)
            .map(|_| {
                let s = synced.clone();
                tokio::spawn(async move { s.wait().await })
            })
            .collect();
        tokio::task::yield_now().await;
        assert!(!synced.is_synced());
        mark(&Ok(Event::Init));
        assert!(!synced.is_synced(), "a list in progress is not synced");
        mark(&Ok(Event::InitDone));
        // One thread: woken waiters run when this task yields; one never woken stays pending.
        for _ in 0..100 {
            if waiters.iter().all(|w| w.is_finished()) {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert!(
            waiters.iter().all(|w| w.is_finished()),
            "a waiter was not woken"
        );
        for w in waiters {
            assert!(w.await.expect("waiter"));
        }
        assert!(synced.is_synced());
    }

    #[tokio::test]
    async fn a_cache_whose_stream_is_gone_is_reported_not_awaited_forever() {
        let (marker, synced) = channel();
        drop(marker);
        assert!(!synced.wait().await);
        let (m2, s2) = channel();
        let mut mark = m2.on_event::<ConfigMap>();
        mark(&Ok(Event::InitDone));
        assert!(all(&[s2]).await);
        assert!(!all(&[synced]).await);
    }
}
