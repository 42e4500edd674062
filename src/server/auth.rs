//! Who may fetch a phone's file: the authentication mode, the credentials file, and the
//! decision for one request (pure: the request's facts in, a [`Verdict`] out).
//!
//! Modes ([`AuthMode`], `--auth-mode`):
//!
//! - `none` (default, compatible): anyone may fetch any file. With a `--credentials-file`
//!   the sites (or phones) it lists need their credentials by HTTP basic, the others stay open.
//! - `basic`, `digest`: every config and firmware request needs the credentials of the phone
//!   it is for — its own `mac:` line, else its site's `site:` line, else a `*` line — by HTTP
//!   basic or digest (RFC 7616, SHA-256 and MD5 offered). A phone without a line is refused.
//! - `client-cert`: mutual TLS; the MAC comes from the client certificate
//!   ([`super::tls`]), and a phone may fetch only its own file and firmware.
//!
//! The credentials file (a Kubernetes Secret mounted by the kubelet, reloaded when it changes)
//! has one line per scope, `#` comments:
//!
//! ```text
//! mac:00:15:65:aa:bb:cc   phone-aabbcc   <password>     # one phone
//! site:paris              paris          <password>     # every phone of site paris
//! site:voice/paris        paris          <password>     # site paris of namespace voice only
//! *                       fleet          <password>     # every other phone
//! paris                   phone          <sha256 hex>   # legacy: site, user, SHA-256 of the
//!                                                       # password (basic only)
//! ```
//!
//! Refusals are constant ([`Verdict::Refused`]): an unknown MAC, a MAC claimed by two
//! namespaces and a known phone without the right credentials get the same answer, and the
//! realm is the configured one (`--auth-realm`), never the site's name.

use std::collections::HashMap;
use std::path::Path;

use base64::Engine;
use sha2::{Digest, Sha256};

use super::digest::{self, NonceState, Nonces};
use crate::core::Mac;

/// How requests for phone files are authenticated.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AuthMode {
    /// No authentication (sites listed in a credentials file still need basic auth).
    #[default]
    None,
    /// HTTP basic with per-phone or per-site credentials.
    Basic,
    /// HTTP digest (SHA-256 or MD5) with per-phone or per-site credentials.
    Digest,
    /// Mutual TLS: the MAC from the client certificate.
    ClientCert,
}

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
        "credentials file line {line}: expected '<mac:MAC | site:[NAMESPACE/]SITE | *> <user> <password>' \
         or the legacy '<site> <user> <sha256 of password, 64 hex digits>'"
    )]
    Line { line: usize },
    #[error(
        "credentials file line {line}: a legacy line (SHA-256 of the password) cannot answer HTTP digest; \
         give the password as 'site:{site} <user> <password>'"
    )]
    LegacyUnderDigest { line: usize, site: String },
    #[error("--auth-mode {0:?} needs --credentials-file")]
    NoCredentials(AuthMode),
}

/// What a line covers.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Scope {
    Mac(Mac),
    /// A site, in one namespace or (`None`) in any.
    Site {
        namespace: Option<String>,
        site: String,
    },
    Any,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Secret {
    Password(String),
    /// Legacy lines: the SHA-256 of the password (basic only).
    Sha256([u8; 32]),
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Credential {
    user: String,
    secret: Secret,
}

/// The credentials file, parsed.
#[derive(Clone, Debug, Default)]
pub struct Credentials {
    lines: HashMap<Scope, Credential>,
    /// The file's bytes: the digest nonce key (the same on every replica).
    raw: Vec<u8>,
}

/// The site a phone belongs to, as the config index knows it.
#[derive(Clone, Copy, Debug)]
pub struct SiteRef<'a> {
    pub namespace: &'a str,
    pub site: &'a str,
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
        let mut lines = HashMap::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let bad = || AuthError::Line { line: i + 1 };
            let words: Vec<&str> = line.split_ascii_whitespace().collect();
            let [scope, user, secret] = words[..] else {
                return Err(bad());
            };
            let (scope, secret) = if let Some(mac) = scope.strip_prefix("mac:") {
                let mac = mac.parse::<Mac>().map_err(|_| bad())?;
                (Scope::Mac(mac), Secret::Password(secret.to_owned()))
            } else if let Some(site) = scope.strip_prefix("site:") {
                let (namespace, site) = match site.split_once('/') {
                    Some((ns, site)) => (Some(ns.to_owned()), site),
                    None => (None, site),
                };
                if site.is_empty() || namespace.as_deref() == Some("") {
                    return Err(bad());
                }
                let scope = Scope::Site {
                    namespace,
                    site: site.to_owned(),
                };
                (scope, Secret::Password(secret.to_owned()))
            } else {
                // Legacy: `<site|*> <user> <sha256 hex>`; a `*` line may also carry a
                // plain password (anything but 64 hex digits).
                match (scope, decode_hex32(secret)) {
                    ("*", Some(hash)) => (Scope::Any, Secret::Sha256(hash)),
                    ("*", None) => (Scope::Any, Secret::Password(secret.to_owned())),
                    (site, Some(hash)) => (
                        Scope::Site {
                            namespace: None,
                            site: site.to_owned(),
                        },
                        Secret::Sha256(hash),
                    ),
                    (_, None) => return Err(bad()),
                }
            };
            lines.insert(
                scope,
                Credential {
                    user: user.to_owned(),
                    secret,
                },
            );
        }
        Ok(Self {
            lines,
            raw: text.as_bytes().to_vec(),
        })
    }

    fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }

    /// The line that covers a phone: its own, else its site's (namespaced first), else `*`.
    fn covering(&self, mac: Mac, site: Option<SiteRef<'_>>) -> Option<&Credential> {
        self.lines
            .get(&Scope::Mac(mac))
            .or_else(|| {
                let site = site?;
                self.lines
                    .get(&Scope::Site {
                        namespace: Some(site.namespace.to_owned()),
                        site: site.site.to_owned(),
                    })
                    .or_else(|| {
                        self.lines.get(&Scope::Site {
                            namespace: None,
                            site: site.site.to_owned(),
                        })
                    })
            })
            .or_else(|| self.lines.get(&Scope::Any))
    }

    /// The first legacy (hash-only) line, if any: digest cannot use it.
    fn legacy_line(&self) -> Option<String> {
        self.lines
            .iter()
            .find_map(|(scope, c)| match (scope, &c.secret) {
                (Scope::Site { site, .. }, Secret::Sha256(_)) => Some(site.clone()),
                (Scope::Any, Secret::Sha256(_)) => Some("*".into()),
                _ => None,
            })
    }
}

/// The facts of one request the decision needs.
#[derive(Clone, Copy, Debug)]
pub struct RequestFacts<'a> {
    pub method: &'a str,
    /// The request target as sent (path and query), which a digest answer must name.
    pub uri: &'a str,
    pub authorization: Option<&'a [u8]>,
    /// The MAC of the verified client certificate, when the connection has one.
    pub client_mac: Option<Mac>,
    /// Unix seconds now (digest nonces).
    pub now_secs: u64,
}

/// The decision for one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Allowed,
    /// Refused with the constant answer. `presented`: the client offered a credential (or
    /// certificate) that did not open this file — a failure the rate limit counts; a request
    /// without any is the first half of every authenticated fetch and is not counted.
    /// `stale`: a right digest answer on an expired nonce (a fresh challenge says so).
    Refused {
        presented: bool,
        stale: bool,
    },
}

/// The configured mode with its credentials.
#[derive(Clone, Debug)]
pub struct Policy {
    pub mode: AuthMode,
    pub realm: String,
    credentials: Credentials,
    nonces: Nonces,
}

impl Policy {
    /// A policy; checks that the credentials can serve the mode.
    pub fn new(
        mode: AuthMode,
        realm: String,
        credentials: Option<Credentials>,
    ) -> Result<Self, AuthError> {
        let credentials = match (mode, credentials) {
            (AuthMode::Basic | AuthMode::Digest, None) => {
                return Err(AuthError::NoCredentials(mode));
            }
            (_, c) => c.unwrap_or_default(),
        };
        if mode == AuthMode::Digest
            && let Some(site) = credentials.legacy_line()
        {
            let line = credentials
                .raw
                .split(|b| *b == b'\n')
                .position(|l| {
                    std::str::from_utf8(l)
                        .is_ok_and(|l| l.split_ascii_whitespace().next() == Some(site.as_str()))
                })
                .map_or(0, |i| i + 1);
            return Err(AuthError::LegacyUnderDigest { line, site });
        }
        let nonces = Nonces::new(&credentials.raw);
        Ok(Self {
            mode,
            realm,
            credentials,
            nonces,
        })
    }

    /// No authentication at all (the default).
    pub fn open() -> Self {
        Self {
            mode: AuthMode::None,
            realm: DEFAULT_REALM.into(),
            credentials: Credentials::default(),
            nonces: Nonces::new(b""),
        }
    }

    /// Whether a file or image of a phone needs any check: false only in mode `none` without
    /// credentials, the fast path.
    pub fn is_open(&self) -> bool {
        self.mode == AuthMode::None && self.credentials.is_empty()
    }

    /// May this request fetch a file of `mac` (of `site`, `None` for a phone no rendered
    /// config lists)?
    pub fn decide(&self, req: &RequestFacts<'_>, mac: Mac, site: Option<SiteRef<'_>>) -> Verdict {
        let refused = |presented| Verdict::Refused {
            presented,
            stale: false,
        };
        match self.mode {
            AuthMode::ClientCert => match req.client_mac {
                Some(own) if own == mac => Verdict::Allowed,
                Some(_) => refused(true),
                // A verified certificate without a MAC in it.
                None => refused(true),
            },
            AuthMode::None => {
                let Some(line) = self.credentials.covering(mac, site) else {
                    // Open site, or (no site known) a file with no line for it: an unknown
                    // phone is answered as a protected one once any line exists.
                    return if site.is_none() && !self.credentials.is_empty() {
                        refused(req.authorization.is_some())
                    } else {
                        Verdict::Allowed
                    };
                };
                self.basic(req, line)
            }
            AuthMode::Basic => match self.credentials.covering(mac, site) {
                Some(line) => self.basic(req, line),
                None => refused(req.authorization.is_some()),
            },
            AuthMode::Digest => match self.credentials.covering(mac, site) {
                Some(line) => self.digest(req, line),
                None => refused(req.authorization.is_some()),
            },
        }
    }

    fn basic(&self, req: &RequestFacts<'_>, want: &Credential) -> Verdict {
        let Some(header) = req.authorization else {
            return Verdict::Refused {
                presented: false,
                stale: false,
            };
        };
        let ok = basic(header).is_some_and(|(user, password)| {
            let got: [u8; 32] = Sha256::digest(password.as_bytes()).into();
            let want_hash: [u8; 32] = match &want.secret {
                Secret::Sha256(h) => *h,
                Secret::Password(p) => Sha256::digest(p.as_bytes()).into(),
            };
            // Compare every byte whatever the first difference, so timing tells nothing.
            digest::ct_eq(&got, &want_hash) & digest::ct_eq(user.as_bytes(), want.user.as_bytes())
        });
        if ok {
            Verdict::Allowed
        } else {
            Verdict::Refused {
                presented: true,
                stale: false,
            }
        }
    }

    fn digest(&self, req: &RequestFacts<'_>, want: &Credential) -> Verdict {
        let Some(header) = req.authorization else {
            return Verdict::Refused {
                presented: false,
                stale: false,
            };
        };
        let Secret::Password(password) = &want.secret else {
            // Refused at start (Policy::new); never a panic.
            return Verdict::Refused {
                presented: true,
                stale: false,
            };
        };
        let answer = std::str::from_utf8(header).ok().and_then(digest::parse);
        let Some(answer) = answer else {
            return Verdict::Refused {
                presented: true,
                stale: false,
            };
        };
        let proves = answer.proves(&self.realm, &want.user, password, req.method, req.uri);
        match (proves, self.nonces.check(&answer.nonce, req.now_secs)) {
            (true, NonceState::Fresh) => Verdict::Allowed,
            (true, NonceState::Stale) => Verdict::Refused {
                presented: false,
                stale: true,
            },
            _ => Verdict::Refused {
                presented: true,
                stale: false,
            },
        }
    }

    /// The `WWW-Authenticate` values of the constant refusal (none for `client-cert`: TLS
    /// is the only way to present a certificate).
    pub fn challenges(&self, now_secs: u64, stale: bool) -> Vec<String> {
        match self.mode {
            AuthMode::ClientCert => vec![],
            AuthMode::None | AuthMode::Basic => {
                vec![format!("Basic realm=\"{}\"", self.realm)]
            }
            AuthMode::Digest => {
                let nonce = self.nonces.issue(now_secs);
                // Strongest first (RFC 7616 section 3.7): clients pick the first they know.
                [digest::Algorithm::Sha256, digest::Algorithm::Md5]
                    .into_iter()
                    .map(|a| digest::challenge(&self.realm, a, &nonce, stale))
                    .collect()
            }
        }
    }
}

/// The realm of challenges unless `--auth-realm` says otherwise.
pub const DEFAULT_REALM: &str = "phonefleet";

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

    fn mac(s: &str) -> Mac {
        s.parse().unwrap()
    }

    fn facts<'a>(auth: Option<&'a [u8]>, uri: &'a str) -> RequestFacts<'a> {
        RequestFacts {
            method: "GET",
            uri,
            authorization: auth,
            client_mac: None,
            now_secs: 10_000,
        }
    }

    const PARIS: SiteRef<'static> = SiteRef {
        namespace: "voice",
        site: "paris",
    };
    const LYON: SiteRef<'static> = SiteRef {
        namespace: "voice",
        site: "lyon",
    };

    fn policy(mode: AuthMode, text: &str) -> Policy {
        Policy::new(
            mode,
            DEFAULT_REALM.into(),
            Some(Credentials::parse(text).unwrap()),
        )
        .unwrap()
    }

    #[test]
    fn legacy_lines_guard_their_site_and_leave_others_open() {
        let p = policy(
            AuthMode::None,
            &format!("# phones of paris\nparis phone {}\n", sha("s3cret")),
        );
        let m = mac("001565000001");
        let allows = |auth: Option<&[u8]>, site| {
            p.decide(&facts(auth, "/x"), m, Some(site)) == Verdict::Allowed
        };
        assert!(allows(Some(&header("phone", "s3cret")), PARIS));
        assert!(!allows(Some(&header("phone", "wrong")), PARIS));
        assert!(!allows(Some(&header("other", "s3cret")), PARIS));
        assert!(!allows(None, PARIS));
        assert!(!allows(Some(b"Basic !!!"), PARIS));
        assert!(allows(None, LYON), "sites without a line are open");
        // An unknown phone is answered as a protected one.
        assert_eq!(
            p.decide(&facts(None, "/x"), m, None),
            Verdict::Refused {
                presented: false,
                stale: false
            }
        );
    }

    #[test]
    fn a_phones_credential_opens_its_own_file_only() {
        let p = policy(
            AuthMode::Basic,
            "mac:00:15:65:00:00:01 phone1 pw1\nmac:001565000002 phone2 pw2\nsite:voice/paris paris pwp\n",
        );
        let (one, two, three) = (
            mac("001565000001"),
            mac("001565000002"),
            mac("001565000003"),
        );
        let with = |h: &[u8], m, site| p.decide(&facts(Some(h), "/x"), m, Some(site));
        assert_eq!(with(&header("phone1", "pw1"), one, PARIS), Verdict::Allowed);
        assert_eq!(
            with(&header("phone1", "pw1"), two, PARIS),
            Verdict::Refused {
                presented: true,
                stale: false
            },
            "phone 1's credential does not open phone 2's file"
        );
        // Phone 3 has no line of its own: its site's.
        assert_eq!(
            with(&header("paris", "pwp"), three, PARIS),
            Verdict::Allowed
        );
        // The site line does not open a phone that has its own line.
        assert_ne!(with(&header("paris", "pwp"), one, PARIS), Verdict::Allowed);
        // Nor a phone of another namespace's site of the same name.
        let other_ns = SiteRef {
            namespace: "other",
            site: "paris",
        };
        assert_ne!(
            with(&header("paris", "pwp"), three, other_ns),
            Verdict::Allowed
        );
        // No line at all: refused, as an unknown phone.
        assert_eq!(
            p.decide(&facts(None, "/x"), three, Some(LYON)),
            p.decide(&facts(None, "/x"), mac("00aa00000009"), None)
        );
    }

    #[test]
    fn digest_answers_open_the_file_they_name_with_a_fresh_nonce() {
        let p = policy(AuthMode::Digest, "mac:001565000001 phone1 pw1\n");
        let one = mac("001565000001");
        let challenges = p.challenges(10_000, false);
        assert_eq!(challenges.len(), 2);
        assert!(challenges[0].contains("algorithm=SHA-256"));
        assert!(challenges[1].contains("algorithm=MD5"));
        assert!(
            challenges
                .iter()
                .all(|c| c.contains("realm=\"phonefleet\""))
        );
        let nonce = digest::challenge_nonce(&challenges[0]).unwrap();
        for alg in [digest::Algorithm::Sha256, digest::Algorithm::Md5] {
            let h = digest::answer(
                &nonce,
                "phonefleet",
                alg,
                ("phone1", "pw1"),
                "GET",
                "/cfg001565000001.xml",
            );
            let f = facts(Some(h.as_bytes()), "/cfg001565000001.xml");
            assert_eq!(p.decide(&f, one, Some(PARIS)), Verdict::Allowed);
            // Replayed for another file: refused.
            let f = facts(Some(h.as_bytes()), "/cfg001565000002.xml");
            assert_ne!(p.decide(&f, one, Some(PARIS)), Verdict::Allowed);
            // Later than the nonce's lifetime: stale, a fresh challenge.
            let late = RequestFacts {
                now_secs: 10_000 + 301,
                ..facts(Some(h.as_bytes()), "/cfg001565000001.xml")
            };
            assert_eq!(
                p.decide(&late, one, Some(PARIS)),
                Verdict::Refused {
                    presented: false,
                    stale: true
                }
            );
        }
        let wrong = digest::answer(
            &nonce,
            "phonefleet",
            digest::Algorithm::Sha256,
            ("phone1", "guess"),
            "GET",
            "/cfg001565000001.xml",
        );
        assert_eq!(
            p.decide(
                &facts(Some(wrong.as_bytes()), "/cfg001565000001.xml"),
                one,
                Some(PARIS)
            ),
            Verdict::Refused {
                presented: true,
                stale: false
            }
        );
    }

    #[test]
    fn client_certificates_open_their_own_mac_only() {
        let p = Policy::new(AuthMode::ClientCert, DEFAULT_REALM.into(), None).unwrap();
        let one = mac("001565000001");
        let two = mac("001565000002");
        let f = RequestFacts {
            client_mac: Some(one),
            ..facts(None, "/x")
        };
        assert_eq!(p.decide(&f, one, Some(PARIS)), Verdict::Allowed);
        assert_ne!(p.decide(&f, two, Some(PARIS)), Verdict::Allowed);
        assert_ne!(p.decide(&f, two, None), Verdict::Allowed);
        assert!(p.challenges(0, false).is_empty());
    }

    #[test]
    fn modes_refuse_credentials_they_cannot_use() {
        assert!(matches!(
            Policy::new(AuthMode::Digest, DEFAULT_REALM.into(), None),
            Err(AuthError::NoCredentials(AuthMode::Digest))
        ));
        let legacy = Credentials::parse(&format!("paris phone {}", sha("x"))).unwrap();
        assert!(matches!(
            Policy::new(AuthMode::Digest, DEFAULT_REALM.into(), Some(legacy)),
            Err(AuthError::LegacyUnderDigest { line: 1, .. })
        ));
    }

    #[test]
    fn malformed_lines_are_refused_with_their_number() {
        for (text, line) in [
            ("\nparis phone abc", 2),
            ("paris", 1),
            ("mac:zz phone pw", 1),
            ("site: u p", 1),
            ("site:/paris u p", 1),
        ] {
            match Credentials::parse(text) {
                Err(AuthError::Line { line: l }) => assert_eq!(l, line, "{text:?}"),
                other => panic!("{text:?}: {other:?}"),
            }
        }
    }
}
