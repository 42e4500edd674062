//! HTTP digest access authentication (RFC 7616, which keeps RFC 2617's MD5 for compatibility):
//! the challenge, the parsing of an `Authorization: Digest …` header and its verification
//! against a known password.
//!
//! Nonces are stateless: `<unix seconds, 16 hex>` followed by an HMAC-SHA-256 of them (32 hex)
//! under a key every replica derives from the same credentials Secret, so a phone challenged
//! by one replica may answer to another behind the Service. A nonce is good for
//! [`NONCE_LIFETIME`]; a right answer with an older nonce gets a fresh challenge with
//! `stale=true`, which phones answer without asking anyone for a password. Nonce counts are not
//! tracked (RFC 7616 makes that optional): within a nonce's lifetime a captured request can be
//! replayed, which gives the replayer the same file it could read in the captured response —
//! use TLS where the phones' network is not trusted.

use std::time::Duration;

use md5::Md5;
use sha2::{Digest as _, Sha256};

/// How long a nonce is accepted.
pub const NONCE_LIFETIME: Duration = Duration::from_secs(300);

/// The hash a challenge or an answer uses. `-sess` variants are not offered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Algorithm {
    Md5,
    Sha256,
}

impl Algorithm {
    /// As written in `algorithm=`.
    pub fn token(self) -> &'static str {
        match self {
            Algorithm::Md5 => "MD5",
            Algorithm::Sha256 => "SHA-256",
        }
    }

    fn hash(self, data: &str) -> String {
        match self {
            Algorithm::Md5 => hex(&Md5::digest(data.as_bytes())),
            Algorithm::Sha256 => hex(&Sha256::digest(data.as_bytes())),
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Makes and checks nonces.
#[derive(Clone)]
pub struct Nonces {
    key: ring::hmac::Key,
}

impl std::fmt::Debug for Nonces {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Nonces { .. }")
    }
}

impl Nonces {
    /// Nonces under a key derived from `secret` (the credentials file's bytes: the same on every
    /// replica, and unknown to whoever does not know the passwords anyway).
    pub fn new(secret: &[u8]) -> Self {
        let mut material = b"phonefleet digest nonce\0".to_vec();
        material.extend_from_slice(secret);
        let key = Sha256::digest(&material);
        Self {
            key: ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &key),
        }
    }

    /// A nonce for the instant `unix_secs`.
    pub fn issue(&self, unix_secs: u64) -> String {
        let stamp = format!("{unix_secs:016x}");
        let tag = ring::hmac::sign(&self.key, stamp.as_bytes());
        format!("{stamp}{}", hex(&tag.as_ref()[..16]))
    }

    /// Whether `nonce` is one of ours, and if so whether it is still fresh at `now_secs`.
    pub fn check(&self, nonce: &str, now_secs: u64) -> NonceState {
        if nonce.len() != 48 || !nonce.is_ascii() {
            return NonceState::Forged;
        }
        let (stamp, tag) = nonce.split_at(16);
        let Ok(issued) = u64::from_str_radix(stamp, 16) else {
            return NonceState::Forged;
        };
        let Some(tag) = unhex(tag) else {
            return NonceState::Forged;
        };
        let full = ring::hmac::sign(&self.key, stamp.as_bytes());
        // Constant-time comparison of the truncated tag.
        if !ct_eq(&full.as_ref()[..16], &tag) {
            return NonceState::Forged;
        }
        if issued > now_secs.saturating_add(5) {
            return NonceState::Forged;
        }
        if now_secs.saturating_sub(issued) > NONCE_LIFETIME.as_secs() {
            NonceState::Stale
        } else {
            NonceState::Fresh
        }
    }
}

/// Equality that looks at every byte whatever the first difference (only the length leaks),
/// so the time of a refusal tells nothing about how close a guess was.
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    s.as_bytes()
        .chunks(2)
        .map(|p| u8::from_str_radix(std::str::from_utf8(p).ok()?, 16).ok())
        .collect()
}

/// What a nonce is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NonceState {
    Fresh,
    /// Ours, but older than [`NONCE_LIFETIME`].
    Stale,
    /// Not made by a replica sharing our key.
    Forged,
}

/// The `WWW-Authenticate` value of a challenge. The realm is the configured one, never the
/// site's name: a challenge must not tell which site (or whether any site) a MAC belongs to.
pub fn challenge(realm: &str, algorithm: Algorithm, nonce: &str, stale: bool) -> String {
    let stale = if stale { ", stale=true" } else { "" };
    format!(
        "Digest realm=\"{realm}\", qop=\"auth\", algorithm={}, nonce=\"{nonce}\"{stale}",
        algorithm.token()
    )
}

/// The parameters of an `Authorization: Digest …` header.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Answer {
    pub username: String,
    pub realm: String,
    pub nonce: String,
    pub uri: String,
    pub response: String,
    pub algorithm: Option<String>,
    pub qop: Option<String>,
    pub nc: Option<String>,
    pub cnonce: Option<String>,
}

/// Parses the header's value; `None` for anything that is not a well-formed digest answer.
pub fn parse(header: &str) -> Option<Answer> {
    let rest = header.trim_start();
    let scheme_len = rest.find(' ')?;
    if !rest[..scheme_len].eq_ignore_ascii_case("Digest") {
        return None;
    }
    let mut rest = &rest[scheme_len..];
    let mut a = Answer::default();
    let mut seen = 0u16;
    loop {
        rest = rest.trim_start_matches([' ', '\t', ',']);
        if rest.is_empty() {
            break;
        }
        let eq = rest.find('=')?;
        let key = rest[..eq].trim().to_ascii_lowercase();
        rest = rest[eq + 1..].trim_start();
        let value;
        if let Some(quoted) = rest.strip_prefix('"') {
            // Quoted string with backslash escapes.
            let mut out = String::new();
            let mut chars = quoted.char_indices();
            let mut end = None;
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => out.push(chars.next()?.1),
                    '"' => {
                        end = Some(i);
                        break;
                    }
                    c => out.push(c),
                }
            }
            value = out;
            rest = &quoted[end? + 1..];
        } else {
            let end = rest.find(',').unwrap_or(rest.len());
            value = rest[..end].trim().to_owned();
            rest = &rest[end..];
        }
        let slot = match key.as_str() {
            "username" => (0, &mut a.username),
            "realm" => (1, &mut a.realm),
            "nonce" => (2, &mut a.nonce),
            "uri" => (3, &mut a.uri),
            "response" => (4, &mut a.response),
            _ => {
                let opt = match key.as_str() {
                    "algorithm" => &mut a.algorithm,
                    "qop" => &mut a.qop,
                    "nc" => &mut a.nc,
                    "cnonce" => &mut a.cnonce,
                    _ => continue,
                };
                *opt = Some(value);
                continue;
            }
        };
        seen |= 1 << slot.0;
        *slot.1 = value;
    }
    (seen == 0b11111).then_some(a)
}

impl Answer {
    /// The algorithm the answer claims (MD5 when absent, as RFC 7616 says).
    pub fn algorithm(&self) -> Option<Algorithm> {
        match self.algorithm.as_deref() {
            None => Some(Algorithm::Md5),
            Some(a) if a.eq_ignore_ascii_case("MD5") => Some(Algorithm::Md5),
            Some(a) if a.eq_ignore_ascii_case("SHA-256") => Some(Algorithm::Sha256),
            Some(_) => None,
        }
    }

    /// Whether the answer proves knowledge of `password` for `method` and the request target
    /// `uri` (which must be the one the answer names, so an answer for one file opens no other).
    pub fn proves(&self, realm: &str, user: &str, password: &str, method: &str, uri: &str) -> bool {
        let Some(algorithm) = self.algorithm() else {
            return false;
        };
        if self.realm != realm || self.uri != uri {
            return false;
        }
        let ha1 = algorithm.hash(&format!("{user}:{realm}:{password}"));
        let ha2 = algorithm.hash(&format!("{method}:{uri}"));
        let expected = match self.qop.as_deref() {
            Some("auth") => {
                let (Some(nc), Some(cnonce)) = (&self.nc, &self.cnonce) else {
                    return false;
                };
                algorithm.hash(&format!("{ha1}:{}:{nc}:{cnonce}:auth:{ha2}", self.nonce))
            }
            // RFC 2069 compatibility: no qop.
            None => algorithm.hash(&format!("{ha1}:{}:{ha2}", self.nonce)),
            Some(_) => return false,
        };
        let got = self.response.to_ascii_lowercase();
        ct_eq(self.username.as_bytes(), user.as_bytes())
            & ct_eq(expected.as_bytes(), got.as_bytes())
    }
}

/// A client's answer to a challenge (what a phone computes; used by tests and the simulator).
pub fn answer(
    challenge_nonce: &str,
    realm: &str,
    algorithm: Algorithm,
    (user, password): (&str, &str),
    method: &str,
    uri: &str,
) -> String {
    let cnonce = "0a4f113b";
    let nc = "00000001";
    let ha1 = algorithm.hash(&format!("{user}:{realm}:{password}"));
    let ha2 = algorithm.hash(&format!("{method}:{uri}"));
    let response = algorithm.hash(&format!("{ha1}:{challenge_nonce}:{nc}:{cnonce}:auth:{ha2}"));
    format!(
        "Digest username=\"{user}\", realm=\"{realm}\", nonce=\"{challenge_nonce}\", uri=\"{uri}\", \
         algorithm={}, qop=auth, nc={nc}, cnonce=\"{cnonce}\", response=\"{response}\"",
        algorithm.token()
    )
}

/// The nonce of a `WWW-Authenticate: Digest …` challenge (for clients).
pub fn challenge_nonce(challenge: &str) -> Option<String> {
    let start = challenge.find("nonce=\"")? + 7;
    let end = challenge[start..].find('"')? + start;
    Some(challenge[start..end].to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7616 section 3.9.1's example, MD5 and SHA-256.
    #[test]
    fn verifies_the_rfc_7616_examples() {
        let base = |alg: &str, response: &str| Answer {
            username: "Mufasa".into(),
            realm: "http-auth@example.org".into(),
            nonce: "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v".into(),
            uri: "/dir/index.html".into(),
            response: response.into(),
            algorithm: Some(alg.into()),
            qop: Some("auth".into()),
            nc: Some("00000001".into()),
            cnonce: Some("f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ".into()),
        };
        let md5 = base("MD5", "8ca523f5e9506fed4657c9700eebdbec");
        assert!(md5.proves(
            "http-auth@example.org",
            "Mufasa",
            "Circle of Life",
            "GET",
            "/dir/index.html"
        ));
        let sha = base(
            "SHA-256",
            "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1",
        );
        assert!(sha.proves(
            "http-auth@example.org",
            "Mufasa",
            "Circle of Life",
            "GET",
            "/dir/index.html"
        ));
        assert!(!sha.proves(
            "http-auth@example.org",
            "Mufasa",
            "Circle of life",
            "GET",
            "/dir/index.html"
        ));
        assert!(
            !sha.proves(
                "http-auth@example.org",
                "Mufasa",
                "Circle of Life",
                "GET",
                "/dir/other.html"
            ),
            "an answer for one URI opens no other"
        );
    }

    #[test]
    fn parses_what_it_answers_and_refuses_garbage() {
        let n = Nonces::new(b"k");
        let nonce = n.issue(1000);
        for alg in [Algorithm::Md5, Algorithm::Sha256] {
            let h = answer(&nonce, "phonefleet", alg, ("u", "p"), "GET", "/cfg.xml");
            let a = parse(&h).expect("parses");
            assert_eq!(a.algorithm(), Some(alg));
            assert!(a.proves("phonefleet", "u", "p", "GET", "/cfg.xml"));
            assert!(!a.proves("phonefleet", "v", "p", "GET", "/cfg.xml"));
            assert!(!a.proves("other", "u", "p", "GET", "/cfg.xml"));
        }
        for bad in [
            "",
            "Digest",
            "Basic dTpw",
            "Digest username=\"u\"",
            "Digest username=\"u, realm=x",
            "Digest =,=,=",
        ] {
            assert!(parse(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn nonces_are_ours_fresh_then_stale_and_others_are_forged() {
        let n = Nonces::new(b"secret file");
        let nonce = n.issue(1_000);
        assert_eq!(n.check(&nonce, 1_000), NonceState::Fresh);
        assert_eq!(n.check(&nonce, 1_000 + 300), NonceState::Fresh);
        assert_eq!(n.check(&nonce, 1_000 + 301), NonceState::Stale);
        assert_eq!(
            Nonces::new(b"another file").check(&nonce, 1_000),
            NonceState::Forged
        );
        let mut tampered = nonce.clone();
        tampered.replace_range(15..16, "f");
        assert_eq!(n.check(&tampered, 1_000), NonceState::Forged);
        assert_eq!(n.check("short", 1_000), NonceState::Forged);
        assert_eq!(n.check(&n.issue(2_000), 1_000), NonceState::Forged);
    }
}
