//! Which bytes of which image each phone has been sent, so a download counts as complete only
//! when the whole image went out to that phone — in one response or in several ranges — and
//! never because one response happened to end at the image's last byte (`Range: bytes=-1`).

use crate::core::{Mac, MacMap};

/// Bytes sent per phone, for the image (by its `ETag`) it is downloading.
#[derive(Debug, Default)]
pub struct Coverage {
    phones: MacMap<Sent>,
}

#[derive(Debug)]
struct Sent {
    image: String,
    total: u64,
    /// Half-open byte ranges, sorted and merged.
    ranges: Vec<(u64, u64)>,
}

impl Coverage {
    /// Records that bytes `[start, end)` of the image tagged `image` (`total` bytes long) went
    /// out to `mac`. True once every byte of that image has gone out to it (and then forgets
    /// the phone); another image starts the count again.
    pub fn add(&mut self, mac: Mac, image: &str, total: u64, start: u64, end: u64) -> bool {
        let sent = self.phones.entry(mac).or_insert_with(|| Sent {
            image: image.to_owned(),
            total,
            ranges: Vec::new(),
        });
        if sent.image != image || sent.total != total {
            *sent = Sent {
                image: image.to_owned(),
                total,
                ranges: Vec::new(),
            };
        }
        let end = end.min(total);
        if start < end {
            sent.ranges.push((start, end));
            sent.ranges.sort_unstable();
            let mut merged: Vec<(u64, u64)> = Vec::with_capacity(sent.ranges.len());
            for &(s, e) in &sent.ranges {
                match merged.last_mut() {
                    Some(last) if s <= last.1 => last.1 = last.1.max(e),
                    _ => merged.push((s, e)),
                }
            }
            sent.ranges = merged;
        }
        let complete = total == 0 || sent.ranges.first() == Some(&(0, total));
        if complete {
            self.phones.remove(&mac);
        }
        complete
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn phone() -> Mac {
        "00:0b:82:12:34:56".parse().expect("MAC")
    }

    #[test]
    fn the_last_byte_alone_is_not_the_image() {
        let mut c = Coverage::default();
        assert!(!c.add(phone(), "\"a\"", 1000, 999, 1000));
    }

    #[test]
    fn ranges_add_up_to_the_whole_image_in_any_order() {
        let mut c = Coverage::default();
        assert!(!c.add(phone(), "\"a\"", 1000, 500, 1000));
        assert!(!c.add(phone(), "\"a\"", 1000, 0, 200));
        assert!(!c.add(phone(), "\"a\"", 1000, 150, 450));
        assert!(c.add(phone(), "\"a\"", 1000, 450, 500));
    }

    #[test]
    fn another_image_starts_the_count_again() {
        let mut c = Coverage::default();
        assert!(!c.add(phone(), "\"a\"", 1000, 0, 600));
        assert!(!c.add(phone(), "\"b\"", 1000, 600, 1000));
        assert!(c.add(phone(), "\"b\"", 1000, 0, 600));
    }

    #[test]
    fn a_whole_response_completes_at_once() {
        let mut c = Coverage::default();
        assert!(c.add(phone(), "\"a\"", 1000, 0, 1000));
        assert!(c.add(phone(), "\"a\"", 0, 0, 0), "an empty image");
    }
}
