//! The last good merged answer per phone file, bounded in bytes (oldest entries go first).
//!
//! What an entry is for: answering a phone when the upstream is slow or down, but only a
//! request presenting the credentials the upstream accepted for that answer
//! ([`Entry::credentials`]); and revalidating with the upstream (`If-None-Match` with the
//! upstream's own validator) so an unchanged file costs the upstream a 304, not a body.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use http::HeaderValue;

/// One phone file's last good answer.
#[derive(Clone, Debug)]
pub struct Entry {
    /// Digest of the credentials the upstream accepted (see `Upstream::credential_key`).
    pub credentials: [u8; 32],
    /// The upstream's validators and type for its file (none after an upstream 404).
    pub upstream_etag: Option<HeaderValue>,
    pub upstream_modified: Option<HeaderValue>,
    pub upstream_type: Option<HeaderValue>,
    /// The upstream's file (empty after an upstream 404).
    pub upstream_body: Bytes,
    /// What was served: the merged file.
    pub merged: Bytes,
    /// Strong validator of `merged`.
    pub etag: String,
    /// When `merged` last changed (whole seconds: HTTP dates have no finer grain).
    pub modified: SystemTime,
}

impl Entry {
    fn weight(&self, key: &str) -> usize {
        self.upstream_body.len() + self.merged.len() + key.len() + 256
    }
}

/// Entries by file name, evicted oldest first beyond `max_bytes`.
#[derive(Debug)]
pub struct Cache {
    max_bytes: usize,
    used: usize,
    seq: u64,
    entries: HashMap<String, (u64, Arc<Entry>)>,
    order: VecDeque<(u64, String)>,
}

impl Cache {
    pub fn new(max_bytes: usize) -> Self {
        Self {
            max_bytes,
            used: 0,
            seq: 0,
            entries: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    pub fn get(&self, key: &str) -> Option<Arc<Entry>> {
        self.entries.get(key).map(|(_, e)| e.clone())
    }

    /// Stores `entry` for `key` (replacing the previous one); an entry larger than the whole
    /// cache is not kept.
    pub fn put(&mut self, key: &str, entry: Entry) {
        self.remove(key);
        let weight = entry.weight(key);
        if weight > self.max_bytes {
            return;
        }
        self.seq += 1;
        self.used += weight;
        self.entries
            .insert(key.to_owned(), (self.seq, Arc::new(entry)));
        self.order.push_back((self.seq, key.to_owned()));
        while self.used > self.max_bytes {
            let Some((seq, oldest)) = self.order.pop_front() else {
                break;
            };
            // Stale order records (the key was stored again since) are skipped.
            if self.entries.get(&oldest).is_some_and(|(s, _)| *s == seq) {
                self.remove(&oldest);
            }
        }
    }

    pub fn remove(&mut self, key: &str) {
        if let Some((_, e)) = self.entries.remove(key) {
            self.used -= e.weight(key);
        }
        // Order records of removed keys are dropped lazily; keep them from piling up.
        if self.order.len() > 2 * self.entries.len() + 64 {
            let entries = &self.entries;
            self.order
                .retain(|(seq, k)| entries.get(k).is_some_and(|(s, _)| s == seq));
        }
    }

    /// Bytes held (as weighed).
    pub fn used(&self) -> usize {
        self.used
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(size: usize) -> Entry {
        Entry {
            credentials: [0; 32],
            upstream_etag: None,
            upstream_modified: None,
            upstream_type: None,
            upstream_body: Bytes::from(vec![b'a'; size]),
            merged: Bytes::new(),
            etag: String::new(),
            modified: SystemTime::UNIX_EPOCH,
        }
    }

    #[test]
    fn holds_at_most_its_bytes_and_drops_the_oldest_first() {
        let mut c = Cache::new(3 * (1000 + 256 + 1));
        for k in ["a", "b", "c", "d"] {
            c.put(k, entry(1000));
        }
        assert_eq!(c.len(), 3);
        assert!(c.get("a").is_none());
        assert!(c.used() <= 3 * 1257);
        // Storing "b" again makes it the newest: "c" goes next.
        c.put("b", entry(1000));
        c.put("e", entry(1000));
        assert!(c.get("c").is_none());
        assert!(c.get("b").is_some() && c.get("d").is_some() && c.get("e").is_some());
        // Larger than everything: not kept, nothing else lost.
        c.put("huge", entry(10_000));
        assert!(c.get("huge").is_none());
        assert_eq!(c.len(), 3);
        c.remove("b");
        assert_eq!(c.len(), 2);
        for i in 0..1000 {
            c.put("x", entry(i % 7));
        }
        assert!(c.order.len() <= 2 * c.len() + 65);
    }
}
