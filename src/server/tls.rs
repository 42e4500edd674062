//! Mutual TLS: the server asks every phone for its device certificate, verifies it against a
//! configured CA bundle (rustls' WebPKI client verifier: chain, validity period, client-auth
//! usage), and takes the phone's MAC from it.
//!
//! Where the MAC is: vendors issue each phone a unique certificate "based on the MAC address"
//! (Yealink's administrator guides, section "Certificates"), without saying in which field
//! in the pages read; device certificates commonly carry it as the subject common name, some
//! in a subject alternative name. So the MAC is taken from the subject CN, else from a DNS
//! subject alternative name, in any of the shapes [`Mac`] parses (`001565aabbcc`,
//! `00:15:65:aa:bb:cc`, `00-15-65-AA-BB-CC`). A certificate whose CN and DNS names name two
//! different MACs names none (refused). Operators with their own CA issue certificates with
//! the MAC as CN.

use std::path::Path;
use std::sync::Arc;

use rustls_pki_types::CertificateDer;

use super::conn::TlsError;
use crate::core::Mac;

/// The identity a verified client certificate gives a connection (a request extension).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientIdentity {
    /// `None`: the certificate is valid but names no MAC.
    pub mac: Option<Mac>,
}

/// A TLS acceptor from PEM files; with `client_ca`, a client certificate chaining to one of its
/// certificates is required.
pub fn acceptor(
    cert: &Path,
    key: &Path,
    client_ca: Option<&Path>,
) -> Result<tokio_rustls::TlsAcceptor, TlsError> {
    use rustls_pki_types::PrivateKeyDer;
    use rustls_pki_types::pem::PemObject;
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| TlsError::Cert {
            path: cert.display().to_string(),
            message: e.to_string(),
        })?;
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsError::Key {
        path: key.display().to_string(),
        message: e.to_string(),
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let config = match client_ca {
        None => builder
            .with_no_client_auth()
            .with_single_cert(certs, key_der)?,
        Some(ca) => {
            let bad = |message: String| TlsError::ClientCa {
                path: ca.display().to_string(),
                message,
            };
            let mut roots = rustls::RootCertStore::empty();
            for c in CertificateDer::pem_file_iter(ca).map_err(|e| bad(e.to_string()))? {
                roots
                    .add(c.map_err(|e| bad(e.to_string()))?)
                    .map_err(|e| bad(e.to_string()))?;
            }
            if roots.is_empty() {
                return Err(bad("no certificate in the bundle".into()));
            }
            let verifier =
                rustls::server::WebPkiClientVerifier::builder_with_provider(roots.into(), provider)
                    .build()
                    .map_err(|e| bad(e.to_string()))?;
            builder
                .with_client_cert_verifier(verifier)
                .with_single_cert(certs, key_der)?
        }
    };
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// The MAC a (verified) client certificate names: its subject CN, else a DNS subject
/// alternative name; `None` if it names none or two different ones.
pub fn mac_of(cert: &CertificateDer<'_>) -> Option<Mac> {
    let parsed = webpki::EndEntityCert::try_from(cert).ok()?;
    let from_cn = common_names(parsed.subject()).find_map(|cn| cn.parse::<Mac>().ok());
    let mut from_san = parsed
        .valid_dns_names()
        .filter_map(|n| n.parse::<Mac>().ok());
    let first_san = from_san.next();
    if from_san.any(|m| Some(m) != first_san) {
        return None;
    }
    match (from_cn, first_san) {
        (Some(a), Some(b)) if a != b => None,
        (a, b) => a.or(b),
    }
}

/// The common names in a DER subject (the contents of the `Name` SEQUENCE): each RDN is a SET
/// of `SEQUENCE { OID, value }`; CN is OID 2.5.4.3, its value a string type.
fn common_names(subject: &[u8]) -> impl Iterator<Item = &str> {
    const CN: &[u8] = &[0x55, 0x04, 0x03];
    let mut rdns = Tlv::iter(subject);
    let mut current: Option<Tlv<'_>> = None;
    std::iter::from_fn(move || {
        loop {
            if let Some(set) = current.as_mut()
                && let Some(attr) = set.next()
            {
                let (0x30, attr) = attr else { continue };
                let mut parts = Tlv::iter(attr);
                let (Some((0x06, oid)), Some((tag, value))) = (parts.next(), parts.next()) else {
                    continue;
                };
                // UTF8String, PrintableString, IA5String.
                if oid == CN
                    && matches!(tag, 0x0c | 0x13 | 0x16)
                    && let Ok(s) = std::str::from_utf8(value)
                {
                    return Some(s);
                }
                continue;
            }
            match rdns.next()? {
                (0x31, set) => current = Some(Tlv::iter(set)),
                _ => current = None,
            }
        }
    })
}

/// An iterator over DER TLVs (tag, contents); stops at the first malformed one.
struct Tlv<'a> {
    rest: &'a [u8],
}

impl<'a> Tlv<'a> {
    fn iter(bytes: &'a [u8]) -> Self {
        Self { rest: bytes }
    }
}

impl<'a> Iterator for Tlv<'a> {
    type Item = (u8, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        let (&tag, rest) = self.rest.split_first()?;
        let (&first, rest) = rest.split_first()?;
        let (len, rest) = if first < 0x80 {
            (first as usize, rest)
        } else {
            let n = (first & 0x7f) as usize;
            if n == 0 || n > 4 || rest.len() < n {
                self.rest = &[];
                return None;
            }
            let len = rest[..n]
                .iter()
                .fold(0usize, |acc, b| (acc << 8) | *b as usize);
            (len, &rest[n..])
        };
        if rest.len() < len {
            self.rest = &[];
            return None;
        }
        let (value, rest) = rest.split_at(len);
        self.rest = rest;
        Some((tag, value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `SET { SEQUENCE { OID 2.5.4.3, UTF8String value } }` and others.
    fn rdn(oid: &[u8], tag: u8, value: &[u8]) -> Vec<u8> {
        let mut attr = vec![0x06, oid.len() as u8];
        attr.extend_from_slice(oid);
        attr.extend_from_slice(&[tag, value.len() as u8]);
        attr.extend_from_slice(value);
        let mut seq = vec![0x30, attr.len() as u8];
        seq.extend(attr);
        let mut set = vec![0x31, seq.len() as u8];
        set.extend(seq);
        set
    }

    #[test]
    fn finds_the_common_name_among_other_attributes() {
        let mut subject = rdn(&[0x55, 0x04, 0x06], 0x13, b"FR");
        subject.extend(rdn(&[0x55, 0x04, 0x0a], 0x0c, b"Yealink"));
        subject.extend(rdn(&[0x55, 0x04, 0x03], 0x0c, b"00:15:65:aa:bb:cc"));
        let names: Vec<&str> = common_names(&subject).collect();
        assert_eq!(names, ["00:15:65:aa:bb:cc"]);
    }

    #[test]
    fn malformed_subjects_yield_nothing_without_panicking() {
        for bytes in [
            &[][..],
            &[0x31],
            &[0x31, 0x85, 1, 2, 3, 4, 5],
            &[0x31, 0x10, 0x30],
            &[0x31, 0x02, 0x30, 0x00],
            &[0x31, 0x84, 0xff, 0xff, 0xff, 0xff],
        ] {
            assert_eq!(common_names(bytes).count(), 0, "{bytes:?}");
        }
    }

    #[test]
    fn the_long_length_form_is_read() {
        let value = vec![b'a'; 200];
        let mut tlv = vec![0x0c, 0x81, 200];
        tlv.extend(&value);
        let items: Vec<_> = Tlv::iter(&tlv).collect();
        assert_eq!(items, [(0x0c, &value[..])]);
    }
}
