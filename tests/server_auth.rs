//! Per-phone authentication of the provisioning server (issue #12 item 4), against the real
//! local control plane: per-phone credentials by HTTP digest and basic, mutual TLS with the
//! MAC from the client certificate, constant answers for unknown versus unauthorised phones,
//! and the per-source limit on failures. Each fails on the code before: any client knowing a
//! MAC read its file, an unknown MAC was a 404 while a known one was a 401 naming its site, and
//! failures were never limited.

mod support;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use phonefleet::render::Format;
use phonefleet::server::auth::AuthMode;
use phonefleet::server::digest::{self, Algorithm};
use phonefleet::server::ratelimit::LimitConfig;
use phonefleet::server::{Outcome, ServerConfig, ServerStats, TlsFiles};
use sha2::Digest as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use support::provisioning::{
    FW_FILE, Fixture, OLD, Reply, TestPhone, fixture, get, http, mac, now_slot, started, ua,
};

fn file_path(i: u32) -> String {
    format!("/{}", Format::Xml.file_name(mac(i)))
}

fn phones(n: u32) -> Vec<TestPhone> {
    (1..=n)
        .map(|i| TestPhone {
            mac: mac(i),
            slot: now_slot(),
        })
        .collect()
}

fn basic(user: &str, password: &str) -> String {
    use base64::Engine;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

/// What a refusal says, with the digest nonce (the only thing that changes with time) blanked.
fn shape(reply: &Reply) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let mut headers: Vec<(String, String)> = reply
        .headers
        .iter()
        .filter(|(k, _)| *k != "date")
        .map(|(k, v)| {
            let v = v.to_str().unwrap_or("").to_owned();
            let v = match digest::challenge_nonce(&v) {
                Some(n) => v.replace(&n, "NONCE"),
                None => v,
            };
            (k.to_string(), v)
        })
        .collect();
    headers.sort();
    (reply.status, headers, reply.body.to_vec())
}

fn write_credentials(f: &Fixture, text: &str) -> PathBuf {
    let path = f.firmware_dir.path().join("credentials");
    std::fs::write(&path, text).expect("write credentials");
    path
}

#[tokio::test]
async fn a_phones_digest_credentials_open_its_own_file_and_no_other() {
    let f = fixture("auth-digest", 3, &phones(3), 4096).await;
    let creds = write_credentials(
        &f,
        &format!(
            "mac:{} phone1 pw-one\nmac:{} phone2 pw-two\nsite:{}/paris paris pw-site\n",
            mac(1),
            mac(2),
            f.ns.name
        ),
    );
    let srv = started(
        ServerConfig {
            credentials_file: Some(creds),
            auth_mode: AuthMode::Digest,
            ..f.config("r1")
        },
        f.client.clone(),
        ServerStats::new(),
    )
    .await;
    let http = http();
    let addr = srv.local_addr();
    // Knowing a MAC is no longer enough (before: 200 with the file).
    let anonymous = get(&http, addr, &file_path(2), &[]).await;
    assert_eq!(anonymous.status, 401);
    let challenges: Vec<String> = anonymous
        .headers
        .get_all("www-authenticate")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect();
    assert_eq!(challenges.len(), 2, "{challenges:?}");
    assert!(challenges[0].contains("algorithm=SHA-256"));
    assert!(challenges[1].contains("algorithm=MD5"));
    assert!(
        challenges.iter().all(|c| !c.contains("paris")),
        "the realm names no site: {challenges:?}"
    );
    let nonce = digest::challenge_nonce(&challenges[0]).expect("nonce");
    let answer = |i: u32, who: (&str, &str), alg| {
        digest::answer(&nonce, "phonefleet", alg, who, "GET", &file_path(i))
    };
    for alg in [Algorithm::Sha256, Algorithm::Md5] {
        let own = get(
            &http,
            addr,
            &file_path(1),
            &[("authorization", &answer(1, ("phone1", "pw-one"), alg))],
        )
        .await;
        assert_eq!(own.status, 200, "{alg:?}");
        assert_eq!(
            own.body,
            f.files[&Format::Xml.file_name(mac(1))].as_bytes(),
            "{alg:?}"
        );
    }
    // Phone 1's credentials, answered for phone 2's file: refused.
    let other = get(
        &http,
        addr,
        &file_path(2),
        &[(
            "authorization",
            &answer(2, ("phone1", "pw-one"), Algorithm::Sha256),
        )],
    )
    .await;
    assert_eq!(other.status, 401);
    // Phone 1's valid answer replayed on phone 2's path: refused (the answer names its URI).
    let replayed = get(
        &http,
        addr,
        &file_path(2),
        &[(
            "authorization",
            &answer(1, ("phone1", "pw-one"), Algorithm::Sha256),
        )],
    )
    .await;
    assert_eq!(replayed.status, 401);
    // Phone 3 has no line of its own: its site's credentials open its file, not phone 2's.
    let site3 = get(
        &http,
        addr,
        &file_path(3),
        &[(
            "authorization",
            &answer(3, ("paris", "pw-site"), Algorithm::Sha256),
        )],
    )
    .await;
    assert_eq!(site3.status, 200);
    let site2 = get(
        &http,
        addr,
        &file_path(2),
        &[(
            "authorization",
            &answer(2, ("paris", "pw-site"), Algorithm::Sha256),
        )],
    )
    .await;
    assert_eq!(site2.status, 401, "a phone's own line overrides its site's");
    // Firmware: phone 1's credentials with phone 2's User-Agent are refused.
    let fw = format!("/firmware/paris/{FW_FILE}");
    let agent2 = ua(mac(2), OLD);
    let fw_answer = |who| digest::answer(&nonce, "phonefleet", Algorithm::Sha256, who, "GET", &fw);
    let stolen = get(
        &http,
        addr,
        &fw,
        &[
            ("user-agent", &agent2),
            ("authorization", &fw_answer(("phone1", "pw-one"))),
        ],
    )
    .await;
    assert_eq!(stolen.status, 401);
    let own = get(
        &http,
        addr,
        &fw,
        &[
            ("user-agent", &agent2),
            ("authorization", &fw_answer(("phone2", "pw-two"))),
        ],
    )
    .await;
    assert_eq!(
        own.status, 200,
        "phone 2 downloads with its own credentials"
    );
    srv.shutdown().await;
    f.ns.delete().await;
}

#[tokio::test]
async fn basic_mode_needs_the_phones_own_credentials_on_every_file() {
    let f = fixture("auth-basic", 3, &phones(2), 1024).await;
    let creds = write_credentials(
        &f,
        &format!(
            "mac:{} phone1 pw-one\nmac:{} phone2 pw-two\n",
            mac(1),
            mac(2)
        ),
    );
    let srv = started(
        ServerConfig {
            credentials_file: Some(creds),
            auth_mode: AuthMode::Basic,
            ..f.config("r1")
        },
        f.client.clone(),
        ServerStats::new(),
    )
    .await;
    let (http, addr) = (http(), srv.local_addr());
    let with = |i: u32, user: &'static str, pw: &'static str| {
        let http = http.clone();
        async move {
            get(
                &http,
                addr,
                &file_path(i),
                &[("authorization", &basic(user, pw))],
            )
            .await
            .status
        }
    };
    assert_eq!(get(&http, addr, &file_path(1), &[]).await.status, 401);
    assert_eq!(with(1, "phone1", "pw-one").await, 200);
    assert_eq!(with(2, "phone1", "pw-one").await, 401);
    assert_eq!(with(2, "phone2", "pw-two").await, 200);
    assert_eq!(with(1, "phone1", "pw-two").await, 401);
    srv.shutdown().await;
    f.ns.delete().await;
}

/// Runs with the configuration the server had before (a legacy per-site credentials file), so
/// it fails on the old code: an unknown MAC was a 404, a known one a 401 whose realm named the
/// site.
#[tokio::test]
async fn unknown_and_unauthorised_phones_get_the_same_answer() {
    let f = fixture("auth-constant", 3, &phones(1), 1024).await;
    let hash: String = sha2::Sha256::digest(b"s3cret")
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let legacy = write_credentials(&f, &format!("paris phone {hash}\n"));
    let digest_file = f.firmware_dir.path().join("digest-credentials");
    std::fs::write(&digest_file, format!("mac:{} phone1 pw-one\n", mac(1))).unwrap();
    for (mode, creds) in [
        (AuthMode::None, legacy.clone()),
        (AuthMode::Basic, legacy),
        (AuthMode::Digest, digest_file),
    ] {
        let srv = started(
            ServerConfig {
                credentials_file: Some(creds),
                auth_mode: mode,
                ..f.config("r1")
            },
            f.client.clone(),
            ServerStats::new(),
        )
        .await;
        let (http, addr) = (http(), srv.local_addr());
        let unknown = 0x77;
        for headers in [vec![], vec![("authorization", basic("phone", "guess"))]] {
            let headers: Vec<(&str, &str)> =
                headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let known = get(&http, addr, &file_path(1), &headers).await;
            let nobody = get(&http, addr, &file_path(unknown), &headers).await;
            assert_eq!(known.status, 401, "{mode:?}");
            assert_eq!(shape(&known), shape(&nobody), "{mode:?} {headers:?}");
            let realm = known.headers["www-authenticate"].to_str().unwrap();
            assert!(!realm.contains("paris"), "{mode:?}: {realm}");
        }
        // Firmware: the same, for a known and an unknown phone's User-Agent.
        let fw = format!("/firmware/paris/{FW_FILE}");
        let (ua_known, ua_unknown) = (ua(mac(1), OLD), ua(mac(unknown), OLD));
        let known = get(&http, addr, &fw, &[("user-agent", &ua_known)]).await;
        let nobody = get(&http, addr, &fw, &[("user-agent", &ua_unknown)]).await;
        assert_eq!(known.status, 401, "{mode:?}");
        assert_eq!(shape(&known), shape(&nobody), "{mode:?}");
        srv.shutdown().await;
    }
    f.ns.delete().await;
}

#[tokio::test]
async fn a_source_that_keeps_failing_is_answered_429_even_with_the_right_credentials() {
    let f = fixture("auth-limit", 3, &phones(1), 1024).await;
    let creds = write_credentials(&f, &format!("mac:{} phone1 pw-one\n", mac(1)));
    // A refill far longer than the test: what is asserted does not depend on its speed.
    let limit = LimitConfig {
        burst: 5,
        refill: Duration::from_secs(3600),
        ..LimitConfig::default()
    };
    let srv = started(
        ServerConfig {
            credentials_file: Some(creds),
            auth_mode: AuthMode::Basic,
            failure_limit: limit,
            ..f.config("r1")
        },
        f.client.clone(),
        ServerStats::new(),
    )
    .await;
    let (http, addr) = (http(), srv.local_addr());
    let good = basic("phone1", "pw-one");
    let bad = basic("phone1", "guess");
    let status = |path: String, auth: String| {
        let http = http.clone();
        async move {
            get(&http, addr, &path, &[("authorization", &auth)])
                .await
                .status
        }
    };
    assert_eq!(status(file_path(1), good.clone()).await, 200);
    // A phone's first request carries no credentials: not a failure.
    for _ in 0..10 {
        assert_eq!(get(&http, addr, &file_path(1), &[]).await.status, 401);
    }
    for _ in 0..5 {
        assert_eq!(status(file_path(1), bad.clone()).await, 401);
    }
    assert_eq!(status(file_path(1), bad.clone()).await, 429);
    let blocked = get(&http, addr, &file_path(1), &[("authorization", &good)]).await;
    assert_eq!(blocked.status, 429, "no oracle while blocked");
    assert!(blocked.headers.contains_key("retry-after"));
    assert_eq!(get(&http, addr, "/healthz", &[]).await.status, 200);
    assert_eq!(srv.stats().outcome(Outcome::RateLimited), 2);
    srv.shutdown().await;

    // Without authentication, guessing MACs (unknown phones) is what is limited.
    let srv = started(
        ServerConfig {
            failure_limit: LimitConfig { burst: 3, ..limit },
            ..f.config("r1")
        },
        f.client.clone(),
        ServerStats::new(),
    )
    .await;
    let addr = srv.local_addr();
    for guess in 0x70..0x73 {
        assert_eq!(get(&http, addr, &file_path(guess), &[]).await.status, 404);
    }
    assert_eq!(get(&http, addr, &file_path(0x73), &[]).await.status, 429);
    assert_eq!(
        get(&http, addr, &file_path(1), &[]).await.status,
        429,
        "a found MAC is not served to a source that is guessing"
    );
    srv.shutdown().await;
    f.ns.delete().await;
}

// ---- mutual TLS ----

fn openssl(args: &[&str], dir: &Path) {
    let out = std::process::Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA (`<name>.pem`, `<name>.key`) made in the test.
fn make_ca(dir: &Path, name: &str) {
    openssl(
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "1",
            "-subj",
            &format!("/CN={name}"),
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.pem"),
        ],
        dir,
    );
}

/// A certificate `<name>.pem`/`<name>.key` issued by `ca` with subject CN `cn` and extensions.
fn issue(dir: &Path, ca: &str, name: &str, cn: &str, extensions: &str) {
    openssl(
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-subj",
            &format!("/O=Test phones/CN={cn}"),
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.csr"),
        ],
        dir,
    );
    std::fs::write(dir.join(format!("{name}.ext")), extensions).unwrap();
    openssl(
        &[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            &format!("{ca}.pem"),
            "-CAkey",
            &format!("{ca}.key"),
            "-CAcreateserial",
            "-days",
            "1",
            "-extfile",
            &format!("{name}.ext"),
            "-out",
            &format!("{name}.pem"),
        ],
        dir,
    );
}

fn tls_client(dir: &Path, ca: &str, client: Option<&str>) -> tokio_rustls::TlsConnector {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(dir.join(format!("{ca}.pem"))).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots);
    let config = match client {
        None => builder.with_no_client_auth(),
        Some(name) => {
            let certs = CertificateDer::pem_file_iter(dir.join(format!("{name}.pem")))
                .unwrap()
                .collect::<Result<Vec<_>, _>>()
                .unwrap();
            let key = PrivateKeyDer::from_pem_file(dir.join(format!("{name}.key"))).unwrap();
            builder.with_client_auth_cert(certs, key).unwrap()
        }
    };
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

/// One GET over TLS; `None` when the handshake or the exchange fails.
async fn tls_get(
    connector: &tokio_rustls::TlsConnector,
    addr: std::net::SocketAddr,
    path: &str,
    user_agent: Option<&str>,
) -> Option<(u16, String)> {
    let tcp = tokio::net::TcpStream::connect(addr).await.ok()?;
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let mut stream = connector.connect(name, tcp).await.ok()?;
    let ua = user_agent.map_or(String::new(), |u| format!("User-Agent: {u}\r\n"));
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n{ua}Connection: close\r\n\r\n")
                .as_bytes(),
        )
        .await
        .ok()?;
    let mut reply = Vec::new();
    // TLS 1.3 reports a refused client certificate on the first read, not in the handshake.
    stream.read_to_end(&mut reply).await.ok()?;
    let reply = String::from_utf8_lossy(&reply).into_owned();
    let status = reply.get(9..12)?.parse().ok()?;
    let body = reply.split_once("\r\n\r\n").map(|(_, b)| b.to_owned())?;
    Some((status, body))
}

#[tokio::test]
async fn mutual_tls_takes_the_mac_from_the_client_certificate() {
    let f = fixture("auth-mtls", 3, &phones(2), 1024).await;
    let dir = f.firmware_dir.path();
    make_ca(dir, "ca");
    make_ca(dir, "rogue-ca");
    issue(
        dir,
        "ca",
        "server",
        "localhost",
        "basicConstraints=critical,CA:FALSE\nextendedKeyUsage=serverAuth\nsubjectAltName=DNS:localhost\n",
    );
    let client_ext = "basicConstraints=critical,CA:FALSE\nextendedKeyUsage=clientAuth\n";
    // Phone 1: the MAC as the subject CN (colon form); phone 2: as a DNS SAN (bare form).
    issue(dir, "ca", "phone1", &mac(1).to_string(), client_ext);
    issue(
        dir,
        "ca",
        "phone2",
        "GXP2170",
        &format!("{client_ext}subjectAltName=DNS:{}\n", mac(2).bare()),
    );
    issue(dir, "ca", "nomac", "not a phone", client_ext);
    issue(dir, "rogue-ca", "forged1", &mac(1).to_string(), client_ext);
    let srv = started(
        ServerConfig {
            tls: Some(TlsFiles {
                cert: dir.join("server.pem"),
                key: dir.join("server.key"),
            }),
            client_ca: Some(dir.join("ca.pem")),
            auth_mode: AuthMode::ClientCert,
            ..f.config("r1")
        },
        f.client.clone(),
        ServerStats::new(),
    )
    .await;
    let addr = srv.local_addr();
    let file = |i: u32| f.files[&Format::Xml.file_name(mac(i))].clone();
    let phone1 = tls_client(dir, "ca", Some("phone1"));
    let phone2 = tls_client(dir, "ca", Some("phone2"));
    assert_eq!(
        tls_get(&phone1, addr, &file_path(1), None).await,
        Some((200, file(1)))
    );
    assert_eq!(
        tls_get(&phone2, addr, &file_path(2), None).await,
        Some((200, file(2)))
    );
    // Another phone's file, known or not: the same refusal.
    let refused = tls_get(&phone1, addr, &file_path(2), None).await;
    assert_eq!(refused.as_ref().map(|r| r.0), Some(403));
    assert_eq!(
        tls_get(&phone1, addr, &file_path(0x77), None).await,
        refused
    );
    // Firmware with another phone's User-Agent: refused; with its own: inside its slot, served.
    let fw = format!("/firmware/paris/{FW_FILE}");
    let theirs = tls_get(&phone1, addr, &fw, Some(&ua(mac(2), OLD))).await;
    assert_eq!(theirs.map(|r| r.0), Some(403));
    let own = tls_get(&phone1, addr, &fw, Some(&ua(mac(1), OLD))).await;
    assert_eq!(own.map(|r| r.0), Some(200));
    // A valid certificate naming no MAC opens nothing.
    let nomac = tls_client(dir, "ca", Some("nomac"));
    assert_eq!(
        tls_get(&nomac, addr, &file_path(1), None)
            .await
            .map(|r| r.0),
        Some(403)
    );
    // No certificate, or one from another CA: no exchange at all.
    assert_eq!(
        tls_get(&tls_client(dir, "ca", None), addr, &file_path(1), None).await,
        None
    );
    assert_eq!(
        tls_get(
            &tls_client(dir, "ca", Some("forged1")),
            addr,
            &file_path(1),
            None
        )
        .await,
        None
    );
    srv.shutdown().await;
    f.ns.delete().await;
}
