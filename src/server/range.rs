//! `Range: bytes=…` for resumable firmware downloads (RFC 9110 §14). Phones resume a dropped
//! download from where it stopped instead of starting a 40 MB image again over a WAN link.

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
    fn content_range_names_the_total() {
        let r = ByteRange { start: 10, end: 19 };
        assert_eq!(
            (r.len(), r.content_range(100)),
            (10, "bytes 10-19/100".to_owned())
        );
    }
}
