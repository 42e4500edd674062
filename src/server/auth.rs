//! Optional HTTP basic authentication, per site.
//!
//! Phones send basic credentials when their provisioning URL or settings carry a user and a
//! password. The credentials file has one line per site: `<site> <user> <sha256-hex>`, where
//! the last field is the SHA-256 of the password in hex (`printf %s "$PASSWORD" | sha256sum`);
//! `*` as the site applies to sites without a line of their own; `#` starts a comment. Sites
//! without a line (and no `*`) need no credentials.

use std::collections::HashMap;
use std::path::Path;

use base64::Engine;
use sha2::{Digest, Sha256};

/// Why the credentials file was refused.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("reading credentials file {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "credentials file line {line}: expected '<site> <user> <sha256 of password, 64 hex digits>'"
    )]
    Line { line: usize },
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Credential {
    user: String,
    sha256: [u8; 32],
}

/// Who may fetch what, per site.
#[derive(Clone, Debug, Default)]
pub struct Credentials {
    sites: HashMap<String, Credential>,
}

impl Credentials {
    /// Reads a credentials file.
    pub fn from_file(path: &Path) -> Result<Self, AuthError> {
        let text = std::fs::read_to_string(path).map_err(|source| AuthError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text)
    }

    /// Parses the content of a credentials file.
    pub fn parse(text: &str) -> Result<Self, AuthError> {
        let mut sites = HashMap::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let bad = || AuthError::Line { line: i + 1 };
            let words: Vec<&str> = line.split_ascii_whitespace().collect();
            let [site, user, hex] = words[..] else {
                return Err(bad());
            };
            let sha256 = decode_hex32(hex).ok_or_else(bad)?;
            sites.insert(
                site.to_owned(),
                Credential {
                    user: user.to_owned(),
                    sha256,
                },
            );
        }
        Ok(Self { sites })
    }

    /// Whether a request for `site` carrying `authorization` (the header's value) may proceed.
    pub fn allows(&self, site: &str, authorization: Option<&[u8]>) -> bool {
        let Some(want) = self.sites.get(site).or_else(|| self.sites.get("*")) else {
            return true;
        };
        let Some((user, password)) = authorization.and_then(basic) else {
            return false;
        };
        let got: [u8; 32] = Sha256::digest(password.as_bytes()).into();
        // Compare every byte whatever the first difference, so timing tells nothing.
        let same_hash = got
            .iter()
            .zip(want.sha256.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0;
        same_hash && user == want.user
    }
}

fn basic(header: &[u8]) -> Option<(String, String)> {
    let header = std::str::from_utf8(header).ok()?;
    let encoded = header.strip_prefix("Basic ")?.trim();
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (user, password) = decoded.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

fn decode_hex32(hex: &str) -> Option<[u8; 32]> {
    let bytes = hex.as_bytes();
    if bytes.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in bytes.chunks(2).enumerate() {
        let s = std::str::from_utf8(pair).ok()?;
        out[i] = u8::from_str_radix(s, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(user: &str, password: &str) -> Vec<u8> {
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        format!("Basic {token}").into_bytes()
    }

    fn sha(password: &str) -> String {
        Sha256::digest(password.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    #[test]
    fn a_site_with_credentials_needs_them() {
        let c = Credentials::parse(&format!(
            "# phones of paris\nparis phone {}\n",
            sha("s3cret")
        ))
        .unwrap();
        assert!(c.allows("paris", Some(&header("phone", "s3cret"))));
        assert!(!c.allows("paris", Some(&header("phone", "wrong"))));
        assert!(!c.allows("paris", Some(&header("other", "s3cret"))));
        assert!(!c.allows("paris", None));
        assert!(!c.allows("paris", Some(b"Basic !!!")));
        assert!(c.allows("lyon", None), "sites without a line are open");
    }

    #[test]
    fn a_star_line_covers_the_other_sites() {
        let c = Credentials::parse(&format!("* all {}", sha("x"))).unwrap();
        assert!(!c.allows("lyon", None));
        assert!(c.allows("lyon", Some(&header("all", "x"))));
    }

    #[test]
    fn malformed_lines_are_refused_with_their_number() {
        assert!(matches!(
            Credentials::parse("\nparis phone abc"),
            Err(AuthError::Line { line: 2 })
        ));
        assert!(matches!(
            Credentials::parse("paris"),
            Err(AuthError::Line { line: 1 })
        ));
    }
}
