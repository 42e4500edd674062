//! `Range: bytes=…` for resumable firmware downloads (RFC 9110 §14). Phones resume a dropped
//! download from where it stopped instead of starting a 40 MB image again over a WAN link;
//! a strong `ETag` per image and `If-Range` keep a resume from splicing two images together
//! when the image was replaced in between.

/// An inclusive byte range `[start, end]` of a file, already checked against its length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ByteRange {
    pub start: u64,
    pub end: u64,
}

impl ByteRange {
    /// Bytes in the range.
    pub fn len(self) -> u64 {
        self.end - self.start + 1
    }

    /// Never true: a range holds at least one byte (for clippy's `len_without_is_empty`).
    pub fn is_empty(self) -> bool {
        false
    }

    /// The `Content-Range` value for a file of `total` bytes.
    pub fn content_range(self, total: u64) -> String {
        format!("bytes {}-{}/{total}", self.start, self.end)
    }
}

/// Why a `Range` header cannot be satisfied; answered with 416 and `Content-Range: bytes */len`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RangeError {
    #[error("malformed byte range '{0}'")]
    Malformed(String),
    #[error("byte range '{0}' lies outside the file")]
    Unsatisfiable(String),
}

/// The range of a file of `len` bytes that `header` asks for.
///
/// `Ok(None)` means "send the whole file": a unit other than `bytes`, or several ranges (a
/// server may ignore a Range header, and no phone asks for multipart ranges). A malformed or
/// unsatisfiable single byte range is an error (416).
pub fn parse_range(header: &str, len: u64) -> Result<Option<ByteRange>, RangeError> {
    let Some(spec) = header.trim().strip_prefix("bytes=") else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None);
    }
    let malformed = || RangeError::Malformed(header.to_owned());
    let unsatisfiable = || RangeError::Unsatisfiable(header.to_owned());
    let (first, last) = spec.trim().split_once('-').ok_or_else(malformed)?;
    let number = |s: &str| -> Result<u64, RangeError> {
        if s.is_empty() || s.len() > 19 || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(malformed());
        }
        s.parse().map_err(|_| malformed())
    };
    let range = if first.is_empty() {
        // Suffix range: the last N bytes.
        let n = number(last)?;
        if n == 0 || len == 0 {
            return Err(unsatisfiable());
        }
        ByteRange {
            start: len.saturating_sub(n),
            end: len - 1,
        }
    } else {
        let start = number(first)?;
        let end = if last.is_empty() {
            u64::MAX
        } else {
            number(last)?
        };
        if end < start {
            return Err(malformed());
        }
        if start >= len {
            return Err(unsatisfiable());
        }
        ByteRange {
            start,
            end: end.min(len - 1),
        }
    };
    Ok(Some(range))
}

/// A strong entity tag for the image behind `meta`: its length, modification time (ns) and
/// inode. Replacing an image (a new file renamed over the old one, or a rewrite) changes it, so
/// a phone resuming with `If-Range` never gets the tail of another image spliced onto its part.
pub fn etag(meta: &std::fs::Metadata) -> String {
    use std::os::unix::fs::MetadataExt;
    format!(
        "\"{:x}-{:x}.{:x}-{:x}\"",
        meta.len(),
        meta.mtime(),
        meta.mtime_nsec(),
        meta.ino()
    )
}

/// Whether a `Range` may be honoured given the request's `If-Range` (RFC 9110 §13.1.5): with
/// no `If-Range`, yes; with one, only if it is exactly our current strong tag. Dates and weak
/// tags never match (we send no `Last-Modified`), so the answer is the whole image.
pub fn if_range_holds(if_range: Option<&[u8]>, etag: &str) -> bool {
    match if_range {
        None => true,
        Some(v) => v.trim_ascii() == etag.as_bytes(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(start: u64, end: u64) -> Option<ByteRange> {
        Some(ByteRange { start, end })
    }

    #[test]
    fn parses_the_three_forms_of_a_single_range() {
        assert_eq!(parse_range("bytes=0-99", 1000), Ok(r(0, 99)));
        assert_eq!(parse_range("bytes=500-", 1000), Ok(r(500, 999)));
        assert_eq!(parse_range("bytes=-100", 1000), Ok(r(900, 999)));
    }

    #[test]
    fn clamps_ranges_that_run_past_the_end() {
        assert_eq!(parse_range("bytes=900-5000", 1000), Ok(r(900, 999)));
        assert_eq!(parse_range("bytes=-5000", 1000), Ok(r(0, 999)));
    }

    #[test]
    fn whole_file_for_other_units_and_multiple_ranges() {
        assert_eq!(parse_range("items=0-1", 1000), Ok(None));
        assert_eq!(parse_range("bytes=0-1,5-6", 1000), Ok(None));
    }

    #[test]
    fn refuses_ranges_outside_the_file() {
        for h in ["bytes=1000-", "bytes=1000-2000", "bytes=-0"] {
            assert!(
                matches!(parse_range(h, 1000), Err(RangeError::Unsatisfiable(_))),
                "{h}"
            );
        }
        assert!(matches!(
            parse_range("bytes=0-", 0),
            Err(RangeError::Unsatisfiable(_))
        ));
    }

    #[test]
    fn refuses_malformed_ranges() {
        for h in [
            "bytes=",
            "bytes=-",
            "bytes=a-b",
            "bytes=5-1",
            "bytes=1",
            "bytes=+1-2",
            "bytes=99999999999999999999-",
        ] {
            assert!(
                matches!(parse_range(h, 1000), Err(RangeError::Malformed(_))),
                "{h}"
            );
        }
    }

    #[test]
    fn if_range_honours_a_range_only_for_the_current_image() {
        let tag = "\"10-1.2-3\"";
        assert!(if_range_holds(None, tag), "no If-Range: resume");
        assert!(if_range_holds(Some(tag.as_bytes()), tag));
        for stale in [
            "\"10-1.2-4\"",
            "W/\"10-1.2-3\"",
            "Tue, 01 Dec 2026 00:00:00 GMT",
            "",
        ] {
            assert!(!if_range_holds(Some(stale.as_bytes()), tag), "{stale}");
        }
    }

    #[test]
    fn an_images_tag_changes_when_it_is_replaced() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("fw.bin");
        std::fs::write(&path, [1u8; 100]).expect("write");
        let before = etag(&std::fs::metadata(&path).expect("metadata"));
        assert_eq!(before, etag(&std::fs::metadata(&path).expect("metadata")));
        let next = dir.path().join("next");
        std::fs::write(&next, [2u8; 100]).expect("write");
        std::fs::rename(&next, &path).expect("rename");
        assert_ne!(before, etag(&std::fs::metadata(&path).expect("metadata")));
    }

    #[test]
    fn content_range_names_the_total() {
        let r = ByteRange { start: 10, end: 19 };
        assert_eq!(
            (r.len(), r.content_range(100)),
            (10, "bytes 10-19/100".to_owned())
        );
    }
}
