//! MAC addresses as the planner's phone identity.

use std::fmt;
use std::str::FromStr;

use serde::{Serialize, Serializer};

/// A map keyed by MAC address. A decision builds several of a million phones: foldhash
/// hashes a `u64` several times faster than std's SipHash, and its per-process random seed
/// keeps keys that phones report from being chosen to collide.
pub type MacMap<V> = std::collections::HashMap<Mac, V, foldhash::fast::RandomState>;

/// A set of MAC addresses (see [`MacMap`]).
pub type MacSet = std::collections::HashSet<Mac, foldhash::fast::RandomState>;

/// A 48-bit MAC address held in a `u64`, so a million phones cost no string allocations in the
/// planner and compare, sort and hash as integers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Mac(u64);

/// Why a string is not a MAC address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MacError {
    #[error("expected 12 hex digits, optionally separated by ':' or '-' every 2 digits")]
    Shape,
    #[error("'{0}' is not a hex digit")]
    NotHex(char),
}

impl Mac {
    const MASK: u64 = (1 << 48) - 1;

    /// The address whose 48 low bits are `bits`; `None` when higher bits are set.
    pub fn from_u64(bits: u64) -> Option<Self> {
        (bits & !Self::MASK == 0).then_some(Self(bits))
    }

    /// The address as a 48-bit integer.
    pub fn as_u64(self) -> u64 {
        self.0
    }

    /// The six bytes, most significant (first printed) first.
    pub fn octets(self) -> [u8; 6] {
        let b = self.0.to_be_bytes();
        [b[2], b[3], b[4], b[5], b[6], b[7]]
    }

    /// The separator-free lower-case form (`aabbccddeeff`) phones use in file names.
    pub fn bare(self) -> Bare {
        Bare(self)
    }

    /// A 64-bit FNV-1a hash of the six bytes. Fixed by this code, unlike std's hashers, so
    /// stage and slot assignments stay the same across builds, runs and machines.
    pub fn stable_hash(self) -> u64 {
        const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
        const PRIME: u64 = 0x0000_0100_0000_01b3;
        self.octets()
            .iter()
            .fold(OFFSET, |h, &b| (h ^ u64::from(b)).wrapping_mul(PRIME))
    }
}

impl FromStr for Mac {
    type Err = MacError;

    /// Accepts `aabbccddeeff`, `aa:bb:cc:dd:ee:ff` and `aa-bb-cc-dd-ee-ff`, any case; one kind
    /// of separator throughout.
    fn from_str(s: &str) -> Result<Self, MacError> {
        let bytes = s.as_bytes();
        let digits: Vec<u8> = match bytes.len() {
            12 => bytes.to_vec(),
            17 => {
                let sep = bytes[2];
                if sep != b':' && sep != b'-' {
                    return Err(MacError::Shape);
                }
                let mut digits = Vec::with_capacity(12);
                for (i, &b) in bytes.iter().enumerate() {
                    if i % 3 == 2 {
                        if b != sep {
                            return Err(MacError::Shape);
                        }
                    } else {
                        digits.push(b);
                    }
                }
                digits
            }
            _ => return Err(MacError::Shape),
        };
        let mut bits = 0u64;
        for &b in &digits {
            let c = char::from(b);
            let v = c.to_digit(16).ok_or(MacError::NotHex(c))?;
            bits = (bits << 4) | u64::from(v);
        }
        Ok(Self(bits))
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let o = self.octets();
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            o[0], o[1], o[2], o[3], o[4], o[5]
        )
    }
}

impl Serialize for Mac {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// Display adapter for [`Mac::bare`].
#[derive(Clone, Copy, Debug)]
pub struct Bare(Mac);

impl Bare {
    /// The twelve lower-case hex digits, without the formatter (files are rendered per request).
    pub fn digits(self) -> [u8; 12] {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut out = [0u8; 12];
        for (i, digit) in out.iter_mut().enumerate() {
            *digit = HEX[((self.0.0 >> (44 - 4 * i)) & 0xf) as usize];
        }
        out
    }
}

impl fmt::Display for Bare {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:012x}", self.0.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_accepted_spelling_to_the_same_address() {
        let want = Mac::from_u64(0x000b_8212_3456).unwrap();
        for s in [
            "000b82123456",
            "00:0B:82:12:34:56",
            "00-0b-82-12-34-56",
            "000B82123456",
        ] {
            assert_eq!(s.parse::<Mac>(), Ok(want), "{s}");
        }
    }

    #[test]
    fn bare_digits_spell_what_display_writes() {
        for n in [0, 1, 0x000b_82ab_cdef, 0x1234_5678_9abc, (1 << 48) - 1] {
            let mac = Mac::from_u64(n).unwrap();
            assert_eq!(mac.bare().digits(), format!("{n:012x}").as_bytes());
        }
    }

    #[test]
    fn displays_lower_case_with_colons_and_bare() {
        let mac: Mac = "00-0B-82-AB-CD-EF".parse().unwrap();
        assert_eq!(mac.to_string(), "00:0b:82:ab:cd:ef");
        assert_eq!(mac.bare().to_string(), "000b82abcdef");
    }

    #[test]
    fn rejects_malformed_addresses() {
        for s in [
            "",
            "000b8212345",
            "000b821234567",
            "00:0b:82-12:34:56",
            "00.0b.82.12.34.56",
            "000b:82:12:34:56:",
            "00:0b:82:12:34:5g",
            "+0b82123456",
        ] {
            assert!(s.parse::<Mac>().is_err(), "{s} should be rejected");
        }
        assert_eq!(
            "00:0b:82:12:34:5g".parse::<Mac>(),
            Err(MacError::NotHex('g'))
        );
    }

    #[test]
    fn from_u64_refuses_more_than_48_bits() {
        assert!(Mac::from_u64(1 << 48).is_none());
        assert!(Mac::from_u64((1 << 48) - 1).is_some());
    }

    #[test]
    fn stable_hash_is_fnv1a_of_the_six_bytes() {
        // FNV-1a of the bytes 00 00 00 00 00 00, computed independently.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for _ in 0..6 {
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        assert_eq!(Mac::from_u64(0).unwrap().stable_hash(), h);
        let a: Mac = "00:0b:82:12:34:56".parse().unwrap();
        let b: Mac = "00:0b:82:12:34:57".parse().unwrap();
        assert_ne!(a.stable_hash(), b.stable_hash());
    }
}
