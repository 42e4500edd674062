//! Who is asking: the phone's vendor, model, firmware version and MAC, from its User-Agent.
//!
//! Firmware paths carry no MAC (`firmware/<site>/<file>`), so the User-Agent is the only way
//! to tell which phone downloads, hence whose slot and whose progress it is. Parsing is strict
//! and total: anything unexpected is a typed error, never a panic.

use std::fmt;

use crate::core::Mac;
use crate::core::mac::MacError;

/// Longest model or version token accepted; real ones are a dozen characters.
const MAX_TOKEN: usize = 64;

/// Phone families whose User-Agent we understand.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Vendor {
    Yealink,
    Grandstream,
}

impl fmt::Display for Vendor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Vendor::Yealink => "Yealink",
            Vendor::Grandstream => "Grandstream",
        })
    }
}

/// A phone as it identifies itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PhoneAgent {
    pub vendor: Vendor,
    pub model: String,
    /// The firmware version the phone runs now.
    pub version: String,
    pub mac: Mac,
}

/// Why a User-Agent does not identify a phone.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UserAgentError {
    /// Not a phone family we know (a browser, curl, a monitoring probe).
    #[error("the User-Agent does not name a known phone family (Yealink, Grandstream)")]
    NotAPhone,
    /// Claims to be a phone but does not have the vendor's shape.
    #[error("malformed {vendor} User-Agent: {what}")]
    Malformed { vendor: Vendor, what: &'static str },
    #[error("malformed MAC in {vendor} User-Agent: {source}")]
    Mac { vendor: Vendor, source: MacError },
}

/// Parses `Yealink SIP-T46U 108.86.0.20 00:15:65:aa:bb:cc` and
/// `Grandstream Model HW GXP2170 SW 1.0.11.23 DevId c074ad123456` (an optional hardware
/// revision may follow the model, as some Grandstream firmwares send).
pub fn parse_user_agent(ua: &str) -> Result<PhoneAgent, UserAgentError> {
    let mut words = ua.split_ascii_whitespace();
    match words.next() {
        Some("Yealink") => {
            let vendor = Vendor::Yealink;
            let bad = |what| UserAgentError::Malformed { vendor, what };
            let model = words.next().ok_or(bad("missing model"))?;
            let version = words.next().ok_or(bad("missing version"))?;
            let mac = words.next().ok_or(bad("missing MAC"))?;
            if words.next().is_some() {
                return Err(bad("unexpected words after the MAC"));
            }
            agent(vendor, model, version, mac)
        }
        Some("Grandstream") => {
            let vendor = Vendor::Grandstream;
            let bad = |what| UserAgentError::Malformed { vendor, what };
            let rest: Vec<&str> = words.collect();
            let after = |key: &str| {
                rest.iter()
                    .position(|w| *w == key)
                    .and_then(|i| rest.get(i + 1).copied())
            };
            let model = after("HW").ok_or(bad("missing 'HW <model>'"))?;
            let version = after("SW").ok_or(bad("missing 'SW <version>'"))?;
            let mac = after("DevId").ok_or(bad("missing 'DevId <mac>'"))?;
            agent(vendor, model, version, mac)
        }
        _ => Err(UserAgentError::NotAPhone),
    }
}

fn agent(
    vendor: Vendor,
    model: &str,
    version: &str,
    mac: &str,
) -> Result<PhoneAgent, UserAgentError> {
    let token_ok = |s: &str| {
        !s.is_empty()
            && s.len() <= MAX_TOKEN
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'+' | b'-'))
    };
    if !token_ok(model) {
        return Err(UserAgentError::Malformed {
            vendor,
            what: "model must be 1-64 letters, digits, '.', '_', '+' or '-'",
        });
    }
    if !token_ok(version) {
        return Err(UserAgentError::Malformed {
            vendor,
            what: "version must be 1-64 letters, digits, '.', '_', '+' or '-'",
        });
    }
    let mac = mac
        .parse::<Mac>()
        .map_err(|source| UserAgentError::Mac { vendor, source })?;
    Ok(PhoneAgent {
        vendor,
        model: model.to_owned(),
        version: version.to_owned(),
        mac,
    })
}

/// The User-Agent a phone of `vendor` sends (what the fleet simulator sends, so the server is
/// exercised with the real shapes).
pub fn user_agent(vendor: Vendor, model: &str, version: &str, mac: Mac) -> String {
    match vendor {
        Vendor::Yealink => format!("Yealink {model} {version} {mac}"),
        Vendor::Grandstream => {
            format!(
                "Grandstream Model HW {model} SW {version} DevId {}",
                mac.bare()
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_yealink_user_agent() {
        let a = parse_user_agent("Yealink SIP-T46U 108.86.0.20 00:15:65:aa:bb:cc").unwrap();
        assert_eq!(a.vendor, Vendor::Yealink);
        assert_eq!(
            (a.model.as_str(), a.version.as_str()),
            ("SIP-T46U", "108.86.0.20")
        );
        assert_eq!(a.mac.bare().to_string(), "001565aabbcc");
    }

    #[test]
    fn parses_a_grandstream_user_agent_with_or_without_hardware_revision() {
        for ua in [
            "Grandstream Model HW GXP2170 SW 1.0.11.23 DevId c074ad123456",
            "Grandstream Model HW GXP2170 V2.3A SW 1.0.11.23 DevId c074ad123456",
        ] {
            let a = parse_user_agent(ua).unwrap();
            assert_eq!(a.vendor, Vendor::Grandstream);
            assert_eq!(
                (a.model.as_str(), a.version.as_str()),
                ("GXP2170", "1.0.11.23")
            );
            assert_eq!(a.mac.bare().to_string(), "c074ad123456");
        }
    }

    #[test]
    fn round_trips_what_the_simulator_sends() {
        let mac: Mac = "c0:74:ad:12:34:56".parse().unwrap();
        for vendor in [Vendor::Yealink, Vendor::Grandstream] {
            let a = parse_user_agent(&user_agent(vendor, "M-1", "2.0", mac)).unwrap();
            assert_eq!(
                (a.vendor, a.model.as_str(), a.version.as_str(), a.mac),
                (vendor, "M-1", "2.0", mac)
            );
        }
    }

    #[test]
    fn other_clients_are_not_phones() {
        for ua in [
            "",
            "curl/8.5.0",
            "Mozilla/5.0 (X11)",
            "yealink SIP-T46U 1 000000000000",
        ] {
            assert_eq!(
                parse_user_agent(ua),
                Err(UserAgentError::NotAPhone),
                "{ua:?}"
            );
        }
    }

    #[test]
    fn malformed_phone_user_agents_are_typed_errors() {
        for ua in [
            "Yealink",
            "Yealink SIP-T46U",
            "Yealink SIP-T46U 108.86.0.20",
            "Yealink SIP-T46U 108.86.0.20 00:15:65:aa:bb:cc extra",
            "Yealink SIP-T46U 108.86.0.20 00:15:65:aa:bb",
            "Yealink SIP-T46U 108.86.0.20 zz:15:65:aa:bb:cc",
            "Yealink SIP<T46U 108.86.0.20 00:15:65:aa:bb:cc",
            "Grandstream Model HW GXP2170 SW 1.0.11.23",
            "Grandstream Model HW GXP2170 SW",
            "Grandstream Model SW 1.0 DevId c074ad123456",
            "Grandstream Model HW GXP2170 SW 1.0 DevId c074ad12345",
            "Grandstream Model HW GXP2170 SW 1.0 DevId ../../etc/passwd",
        ] {
            let e = parse_user_agent(ua).unwrap_err();
            assert_ne!(e, UserAgentError::NotAPhone, "{ua:?}");
        }
        let long = format!("Yealink {} 1.0 001565aabbcc", "M".repeat(65));
        assert!(parse_user_agent(&long).is_err());
    }
}
