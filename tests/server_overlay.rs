//! Overlay mode (issue #14) against a real upstream: nginx from Debian, run as a child process
//! with its own configuration in a temporary directory, serving a directory of vendor-style
//! files (SIP accounts, common files, a ringtone). phonefleet sits in front of it with the
//! rendered configs of a real local control plane.

mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use chrono::Weekday;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::PostParams;
use kube::{Api, Client};
use phonefleet::api::PhoneSchedule;
use phonefleet::children::{INDEX_KEY, IndexFirmware, IndexPhone, IndexSlot, ShardIndex};
use phonefleet::core::{
    DaySet, FlexiblePolicy, LocalWindow, Mac, PhoneFamily, ProvisioningPolicy, WeeklyPolicy,
};
use phonefleet::render::{self, FirmwarePath, PhoneConfig, RolloutSlot};
use phonefleet::server::auth::AuthMode;
use phonefleet::server::overlay::UpstreamConfig;
use phonefleet::server::{Outcome, ServerConfig, ServerStats, UpstreamResult};

use support::TestNamespace;
use support::nginx::Nginx;
use support::provisioning::{Reply, get, http, mac, now_slot, started};
use support::proxy::StallingProxy;

/// Every request of these tests ends within this, or the test fails (a hang is a failure,
/// not a wait): the overlay's own timeout is far shorter.
const NO_HANG: Duration = Duration::from_secs(60);

async fn fetch(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Reply {
    tokio::time::timeout(NO_HANG, get(&http(), addr, path, headers))
        .await
        .unwrap_or_else(|_| panic!("GET {path} hung"))
}

// ---------- fixture ----------

fn window(start: &str, end: &str) -> LocalWindow {
    LocalWindow {
        start: start.parse().expect("HH:MM"),
        end: end.parse().expect("HH:MM"),
    }
}

fn policy() -> ProvisioningPolicy {
    ProvisioningPolicy {
        power_on: true,
        repeatedly: None,
        weekly: WeeklyPolicy {
            enabled: true,
            interval_weeks: 1,
            inactivity_minutes: 0,
            window: window("00:00", "05:00"),
            days: DaySet::ALL,
        },
        flexible: FlexiblePolicy {
            enabled: false,
            interval_days: 1,
            window: window("00:00", "00:00"),
        },
    }
}

struct Phone {
    mac: Mac,
    family: PhoneFamily,
    in_slot: bool,
}

fn phone(i: u32, family: PhoneFamily, in_slot: bool) -> Phone {
    Phone {
        mac: mac(i),
        family,
        in_slot,
    }
}

fn model(family: PhoneFamily) -> &'static str {
    match family {
        PhoneFamily::Yealink => "SIP-T46U",
        _ => "GXP2170",
    }
}

/// A namespace with one rendered-config shard (real renderer) for `phones`; returns the
/// rendered files by name.
async fn shard(
    prefix: &str,
    phones: &[Phone],
) -> (TestNamespace, Client, BTreeMap<String, String>) {
    let cluster = support::cluster().await;
    cluster.apply_crds().await;
    let ns = cluster.namespace(prefix).await;
    let client = cluster.client().await;
    let schedule: PhoneSchedule = serde_json::from_value(serde_json::json!({
        "apiVersion": "phonefleet.io/v1alpha1",
        "kind": "PhoneSchedule",
        "metadata": {"name": "fw"},
        "spec": {}
    }))
    .expect("schedule");
    let schedule = Api::<PhoneSchedule>::namespaced(client.clone(), &ns.name)
        .create(&PostParams::default(), &schedule)
        .await
        .expect("create schedule");
    let policy = policy();
    let server_url = "http://prov.test:8080".parse().expect("server URL");
    let mut data = BTreeMap::new();
    let mut index_phones = BTreeMap::new();
    for p in phones {
        let slot = p.in_slot.then(|| RolloutSlot {
            firmware_version: "2.0.0".into(),
            firmware: FirmwarePath::new("paris", "fw.bin").expect("firmware path"),
            window: phonefleet::core::CheckWindow {
                weekday: Weekday::Tue,
                window: window("01:00", "01:30"),
            },
        });
        let file = render::render(
            &PhoneConfig {
                mac: p.mac,
                model: model(p.family),
                family: p.family,
                provisioning: &policy,
                slot: slot.as_ref(),
            },
            &server_url,
        );
        index_phones.insert(
            p.mac.bare().to_string(),
            IndexPhone {
                model: model(p.family).into(),
                file: file.name.clone(),
                slot: now_slot()
                    .filter(|_| p.in_slot)
                    .map(|(start, end)| IndexSlot {
                        stage: 0,
                        start,
                        end,
                        held: false,
                    }),
            },
        );
        data.insert(file.name, file.body);
    }
    let files = data.clone();
    let index = ShardIndex {
        schedule: format!("{}/fw", ns.name),
        site: "paris".into(),
        time_zone: "Europe/Paris".into(),
        cap: 2,
        firmware: Some(IndexFirmware {
            version: "2.0.0".into(),
            file: "fw.bin".into(),
            models: vec![],
        }),
        phones: index_phones,
    };
    data.insert(
        INDEX_KEY.into(),
        serde_json::to_string(&index).expect("index"),
    );
    let cm = support::fleet::rendered_config_map(&schedule, "paris", data);
    Api::<ConfigMap>::namespaced(client.clone(), &ns.name)
        .create(&PostParams::default(), &cm)
        .await
        .expect("create rendered configs");
    (ns, client, files)
}

fn server_config(ns: &TestNamespace, upstream: UpstreamConfig) -> ServerConfig {
    ServerConfig {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        scope: phonefleet::scope::WatchScope::namespace(ns.name.clone()),
        replica_id: "overlay".into(),
        flush_interval: Duration::from_millis(200),
        upstream: Some(upstream),
        ..ServerConfig::default()
    }
}

fn upstream(url: String) -> UpstreamConfig {
    UpstreamConfig {
        timeout: Duration::from_secs(2),
        ..UpstreamConfig::new(url)
    }
}

// ---------- the upstream's files ----------

fn yealink_file(m: Mac, n: u32) -> String {
    format!(
        "#!version:1.0.0.1\n\
         ## the file header \"#!version:1.0.0.1\" can not be edited or deleted. ##\n\
         # SIP account of extension {n}\n\
         account.1.enable = 1\n\
         account.1.label = Ext {n}\n\
         account.1.display_name = Extension {n}\n\
         account.1.auth_name = {n}\n\
         account.1.user_name = {n}\n\
         account.1.password = sip-secret-{n}\n\
         account.1.sip_server.1.address = pbx.example.net\n\
         account.1.sip_server.1.port = 5060\n\
         \n\
         # provisioning as the old server had it\n\
         static.auto_provision.power_on = 0\n\
         static.auto_provision.repeat.enable = 1\n\
         static.auto_provision.repeat.minutes = 720\n\
         static.auto_provision.server.url = http://old.example/prov\n\
         ringtone.url = http://old.example/prov/ring.wav\n\
         local_time.time_zone = +1\n\
         local_time.time_zone_name = France(Paris)\n\
         # mac {}\n",
        m.bare()
    )
}

fn grandstream_file(m: Mac, n: u32) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\" ?>\n\
         <!-- Grandstream GXP2170, extension {n} -->\n\
         <gs_provision version=\"1\">\n\
         \x20 <mac>{}</mac>\n\
         \x20 <config version=\"1\">\n\
         \x20   <!-- Account 1 -->\n\
         \x20   <P271>1</P271>\n\
         \x20   <P270>Ext {n}</P270>\n\
         \x20   <P47>pbx.example.net</P47>\n\
         \x20   <P35>{n}</P35>\n\
         \x20   <P36>{n}</P36>\n\
         \x20   <P34>sip-secret-{n}</P34>\n\
         \x20   <P3>Extension {n}</P3>\n\
         \x20   <!-- Provisioning -->\n\
         \x20   <P212>2</P212>\n\
         \x20   <P237>old.example/prov</P237>\n\
         \x20   <P194>1</P194>\n\
         \x20   <P193>720</P193>\n\
         \x20   <P64>CET-1CEST-2,M3.5.0/02:00:00,M10.5.0/03:00:00</P64>\n\
         \x20 </config>\n\
         </gs_provision>\n",
        m.bare()
    )
}

/// A WAV-like ringtone: a RIFF header and 300 KiB of samples (larger than the merge limit
/// the tests set, so it must be streamed, never buffered).
fn ringtone() -> Vec<u8> {
    let mut v = b"RIFF\x24\xb0\x04\x00WAVEfmt ".to_vec();
    v.extend((0..300 * 1024).map(|i: u32| (i.wrapping_mul(2_654_435_761) >> 24) as u8));
    v
}

/// The upstream's directory: per-phone files for `with_files`, common files, a ringtone, a
/// file of a phone phonefleet does not manage, and (optionally) one oversized phone file.
fn upstream_dir(with_files: &[&Phone], big: Option<&Phone>) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let w = |name: &str, body: &[u8]| std::fs::write(dir.path().join(name), body).expect("write");
    for (n, p) in with_files.iter().enumerate() {
        let n = 100 + n as u32;
        match p.family {
            PhoneFamily::Yealink => w(
                &format!("{}.cfg", p.mac.bare()),
                yealink_file(p.mac, n).as_bytes(),
            ),
            _ => w(
                &format!("cfg{}.xml", p.mac.bare()),
                grandstream_file(p.mac, n).as_bytes(),
            ),
        }
    }
    if let Some(p) = big {
        let mut file = grandstream_file(p.mac, 999);
        let filler: String = (0..400)
            .map(|i| format!("    <P{}>{}</P{}>\n", 20000 + i, "x".repeat(40), 20000 + i))
            .collect();
        file = file.replace("  </config>", &format!("{filler}  </config>"));
        w(&format!("cfg{}.xml", p.mac.bare()), file.as_bytes());
    }
    w(
        "y000000000108.cfg",
        b"#!version:1.0.0.1\n## common file of all T46U\nlang.gui = English\nfeatures.dnd.enable = 0\n",
    );
    w(
        "cfg.xml",
        b"<?xml version=\"1.0\"?>\n<gs_provision version=\"1\"><config version=\"1\"><P64>CET</P64></config></gs_provision>\n",
    );
    w("ring.wav", &ringtone());
    let stranger = mac(0xff_ffff);
    w(
        &format!("cfg{}.xml", stranger.bare()),
        grandstream_file(stranger, 7).as_bytes(),
    );
    dir
}

fn file_name(p: &Phone) -> String {
    match p.family {
        PhoneFamily::Yealink => format!("{}.cfg", p.mac.bare()),
        _ => format!("cfg{}.xml", p.mac.bare()),
    }
}

/// The upstream's settings a merged file must keep: every line (Yealink) or element
/// (Grandstream) whose key phonefleet's file does not set, byte for byte.
fn kept_settings(upstream: &str, ours: &str, family: PhoneFamily) -> Vec<String> {
    match family {
        PhoneFamily::Yealink => {
            let ours_keys: Vec<&str> = ours
                .lines()
                .filter(|l| !l.starts_with('#'))
                .filter_map(|l| l.split_once('=').map(|(k, _)| k.trim()))
                .collect();
            upstream
                .lines()
                .filter(|l| {
                    l.starts_with('#')
                        || l.split_once('=')
                            .is_none_or(|(k, _)| !ours_keys.contains(&k.trim()))
                })
                .map(str::to_owned)
                .collect()
        }
        _ => {
            let codes = |s: &str| -> Vec<String> {
                s.split("<P")
                    .skip(1)
                    .filter_map(|t| t.split_once('>').map(|(c, _)| c.to_owned()))
                    .filter(|c| c.chars().all(|ch| ch.is_ascii_digit()))
                    .collect()
            };
            let ours_codes = codes(ours);
            upstream
                .lines()
                .filter(|l| {
                    let t = l.trim();
                    !(t.starts_with("<P") && codes(t).iter().any(|c| ours_codes.contains(c)))
                })
                .map(str::to_owned)
                .collect()
        }
    }
}

/// phonefleet's settings: its key lines or elements.
fn ours_settings(ours: &str, family: PhoneFamily) -> Vec<String> {
    ours.lines()
        .map(str::trim)
        .filter(|l| match family {
            PhoneFamily::Yealink => !l.starts_with('#') && l.contains('='),
            _ => l.starts_with("<P"),
        })
        .map(str::to_owned)
        .collect()
}

fn header<'a>(r: &'a Reply, name: &str) -> &'a str {
    r.headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

fn ua_of(p: &Phone) -> String {
    match p.family {
        PhoneFamily::Yealink => format!("Yealink SIP-T46U 108.86.0.20 {}", p.mac),
        _ => format!(
            "Grandstream Model HW GXP2170 SW 1.0.11.23 DevId {}",
            p.mac.bare()
        ),
    }
}

#[tokio::test]
async fn merged_files_keep_the_upstreams_settings_common_files_pass_unchanged_and_a_dead_upstream_is_survived()
 {
    let phones = [
        phone(1, PhoneFamily::Yealink, true),
        phone(2, PhoneFamily::Yealink, false),
        phone(3, PhoneFamily::Grandstream, true),
        phone(4, PhoneFamily::Grandstream, false),
        // Managed, no file upstream: phonefleet's alone.
        phone(5, PhoneFamily::Grandstream, true),
        // Managed, upstream file, never fetched before the upstream dies: 502.
        phone(6, PhoneFamily::Yealink, true),
        // Managed, upstream file over the size limit.
        phone(7, PhoneFamily::Grandstream, true),
    ];
    let (ns, client, ours) = shard("overlay", &phones).await;
    let with_files = [&phones[0], &phones[1], &phones[2], &phones[3], &phones[5]];
    let root = upstream_dir(&with_files, Some(&phones[6]));
    let mut nginx = Nginx::start(root.path(), None).await;
    // Through a proxy the test can stall: a hung upstream, not only a dead one.
    let stall = StallingProxy::start(nginx.addr).await;
    let stats = ServerStats::new();
    let srv = started(
        server_config(
            &ns,
            UpstreamConfig {
                max_body_bytes: 8 * 1024,
                ..upstream(format!("http://{}", stall.addr()))
            },
        ),
        client.clone(),
        stats.clone(),
    )
    .await;
    let addr = srv.local_addr();

    // Every managed phone's file: the upstream's settings, byte for byte, and phonefleet's keys.
    let mut first: BTreeMap<String, Reply> = BTreeMap::new();
    for p in with_files.iter().take(4) {
        let name = file_name(p);
        let upstream_file =
            std::fs::read_to_string(root.path().join(&name)).expect("upstream file");
        let reply = fetch(addr, &format!("/{name}"), &[("user-agent", &ua_of(p))]).await;
        assert_eq!(reply.status, 200, "{name}");
        let body = std::str::from_utf8(&reply.body).expect("text");
        let merged_lines: Vec<&str> = body.lines().collect();
        for kept in kept_settings(&upstream_file, &ours[&name], p.family) {
            assert!(
                merged_lines.contains(&kept.as_str()),
                "{name}: upstream line {kept:?} lost:\n{body}"
            );
        }
        for key in ours_settings(&ours[&name], p.family) {
            assert!(
                merged_lines.iter().any(|l| l.trim() == key),
                "{name}: phonefleet's {key:?} missing:\n{body}"
            );
        }
        assert!(body.contains("sip-secret-"), "{name}");
        if p.family == PhoneFamily::Yealink {
            assert!(body.starts_with("#!version:1.0.0.1\n"), "{name}");
            assert!(
                !body.contains("static.auto_provision.power_on = 0"),
                "{name}: the upstream's value of a phonefleet key stays"
            );
        } else {
            assert!(
                !body.contains("<P194>1</P194>"),
                "{name}: the upstream's P194 stays"
            );
        }
        assert!(header(&reply, "etag").starts_with("\"pf-"), "{name}");
        assert!(!header(&reply, "last-modified").is_empty(), "{name}");
        first.insert(name, reply);
    }
    // No upstream file: phonefleet's own, byte for byte.
    let own = fetch(addr, &format!("/{}", file_name(&phones[4])), &[]).await;
    assert_eq!(own.status, 200);
    assert_eq!(own.body, ours[&file_name(&phones[4])].as_bytes());
    // Over the size limit: refused, counted, never a file without the upstream's settings.
    let big = fetch(addr, &format!("/{}", file_name(&phones[6])), &[]).await;
    assert_eq!(big.status, 502);
    assert_eq!(stats.upstream.result(UpstreamResult::TooLarge), 1);

    // Conditional requests: 304 by ETag and by date, and the upstream revalidated, not re-sent.
    let (name, reply) = first.iter().next().expect("a file");
    let etag = header(reply, "etag").to_owned();
    let revalidated_before = stats.upstream.result(UpstreamResult::NotModified);
    let again = fetch(addr, &format!("/{name}"), &[("if-none-match", &etag)]).await;
    assert_eq!(again.status, 304);
    assert!(again.body.is_empty());
    assert_eq!(header(&again, "etag"), etag);
    let by_date = fetch(
        addr,
        &format!("/{name}"),
        &[("if-modified-since", header(reply, "last-modified"))],
    )
    .await;
    assert_eq!(by_date.status, 304);
    assert!(
        stats.upstream.result(UpstreamResult::NotModified) >= revalidated_before + 2,
        "nginx answered phonefleet's revalidation with 304"
    );
    assert_eq!(
        fetch(addr, &format!("/{name}"), &[("if-none-match", "\"other\"")])
            .await
            .status,
        200
    );
    assert!(stats.outcome(Outcome::NotModified) >= 2);

    // Files phonefleet does not own: byte-identical to nginx's, streamed, with nginx's headers.
    let stranger = format!("/cfg{}.xml", mac(0xff_ffff).bare());
    for path in [
        "/y000000000108.cfg",
        "/cfg.xml",
        "/ring.wav",
        stranger.as_str(),
    ] {
        let direct = fetch(nginx.addr, path, &[]).await;
        let through = fetch(addr, path, &[]).await;
        assert_eq!(direct.status, 200, "{path}");
        assert_eq!(through.status, 200, "{path}");
        assert_eq!(through.body, direct.body, "{path}");
        assert_eq!(
            header(&through, "content-type"),
            header(&direct, "content-type"),
            "{path}"
        );
        assert_eq!(header(&through, "etag"), header(&direct, "etag"), "{path}");
    }
    assert_eq!(fetch(addr, "/ring.wav", &[]).await.body, ringtone());
    // Conditionals and ranges of passed-on files are the upstream's.
    let ring = fetch(nginx.addr, "/ring.wav", &[]).await;
    let not_modified = fetch(
        addr,
        "/ring.wav",
        &[("if-none-match", header(&ring, "etag"))],
    )
    .await;
    assert_eq!(not_modified.status, 304);
    let part = fetch(addr, "/ring.wav", &[("range", "bytes=0-11")]).await;
    assert_eq!(part.status, 206);
    assert_eq!(&part.body[..], &ringtone()[..12]);
    assert_eq!(fetch(addr, "/missing.cfg", &[]).await.status, 404);

    // The upstream hangs: after the timeout, the last good merged file, or 502.
    stall.stall();
    let (name, reply) = first.iter().next().expect("a file");
    let stood_in = fetch(addr, &format!("/{name}"), &[]).await;
    assert_eq!(stood_in.status, 200);
    assert_eq!(stood_in.body, reply.body);
    assert_eq!(
        fetch(addr, &format!("/{}", file_name(&phones[5])), &[])
            .await
            .status,
        502
    );
    assert!(stats.upstream.result(UpstreamResult::Timeout) >= 2);
    stall.resume();

    // The upstream dies: every fetched phone gets its last good file, the others 502.
    nginx.stop();
    for (name, reply) in &first {
        let stood_in = fetch(addr, &format!("/{name}"), &[]).await;
        assert_eq!(stood_in.status, 200, "{name}");
        assert_eq!(stood_in.body, reply.body, "{name}");
        // Still answered conditionally.
        let cond = fetch(
            addr,
            &format!("/{name}"),
            &[("if-none-match", header(reply, "etag"))],
        )
        .await;
        assert_eq!(cond.status, 304, "{name}");
    }
    assert_eq!(
        fetch(addr, &format!("/{}", file_name(&phones[5])), &[])
            .await
            .status,
        502
    );
    assert_eq!(fetch(addr, "/y000000000108.cfg", &[]).await.status, 502);
    assert!(stats.upstream.result(UpstreamResult::Unreachable) >= 1);
    assert!(stats.outcome(Outcome::UpstreamFailed) >= 3);
    srv.shutdown().await;
    ns.delete().await;
}

#[tokio::test]
async fn with_upstream_basic_auth_only_the_right_credentials_get_the_merged_file() {
    let phones = [
        phone(11, PhoneFamily::Yealink, true),
        phone(12, PhoneFamily::Grandstream, true),
    ];
    let (ns, client, ours) = shard("overlay-auth", &phones).await;
    let root = upstream_dir(&[&phones[0], &phones[1]], None);
    let mut nginx = Nginx::start(root.path(), Some(("phone", "pw"))).await;
    let stats = ServerStats::new();
    let srv = started(
        server_config(&ns, upstream(nginx.url())),
        client.clone(),
        stats.clone(),
    )
    .await;
    let addr = srv.local_addr();
    let right = support_basic("phone", "pw");
    let wrong = support_basic("phone", "nope");
    for p in &phones {
        let path = format!("/{}", file_name(p));
        let direct = fetch(nginx.addr, &path, &[]).await;
        assert_eq!(direct.status, 401);
        // No credentials: the upstream's 401, unchanged, never the file.
        let none = fetch(addr, &path, &[("user-agent", &ua_of(p))]).await;
        assert_eq!(none.status, 401, "{path}");
        assert_eq!(
            header(&none, "www-authenticate"),
            header(&direct, "www-authenticate")
        );
        assert_eq!(none.body, direct.body);
        assert!(!String::from_utf8_lossy(&none.body).contains("sip-secret"));
        let bad = fetch(addr, &path, &[("authorization", &wrong)]).await;
        assert_eq!(bad.status, 401, "{path}");
        // The right ones: the merged file.
        let good = fetch(
            addr,
            &path,
            &[("authorization", &right), ("user-agent", &ua_of(p))],
        )
        .await;
        assert_eq!(good.status, 200, "{path}");
        let body = String::from_utf8_lossy(&good.body).into_owned();
        assert!(body.contains("sip-secret-"), "{path}");
        for key in ours_settings(&ours[&file_name(p)], p.family) {
            assert!(body.lines().any(|l| l.trim() == key), "{path}: {key}");
        }
    }
    // Common files need the credentials too: the upstream decides.
    assert_eq!(fetch(addr, "/y000000000108.cfg", &[]).await.status, 401);
    assert_eq!(
        fetch(addr, "/y000000000108.cfg", &[("authorization", &right)])
            .await
            .status,
        200
    );
    assert_eq!(stats.upstream.result(UpstreamResult::Refused), 2 * 2 + 1);

    // The upstream dies: the last good file only to the credentials it accepted.
    let path = format!("/{}", file_name(&phones[0]));
    let before = fetch(addr, &path, &[("authorization", &right)]).await;
    nginx.stop();
    let same = fetch(addr, &path, &[("authorization", &right)]).await;
    assert_eq!(same.status, 200);
    assert_eq!(same.body, before.body);
    for headers in [vec![], vec![("authorization", wrong.as_str())]] {
        let refused = fetch(addr, &path, &headers).await;
        assert_eq!(refused.status, 502, "{headers:?}");
        assert!(!String::from_utf8_lossy(&refused.body).contains("sip-secret"));
    }
    srv.shutdown().await;
    ns.delete().await;
}

fn support_basic(user: &str, password: &str) -> String {
    use base64::Engine;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

#[tokio::test]
async fn an_upstream_pointing_back_at_phonefleet_is_a_detected_loop() {
    let phones = [phone(21, PhoneFamily::Grandstream, true)];
    let (ns, client, _) = shard("overlay-loop", &phones).await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let stats = ServerStats::new();
    let srv = started(
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], port)),
            ..server_config(&ns, upstream(format!("http://127.0.0.1:{port}")))
        },
        client.clone(),
        stats.clone(),
    )
    .await;
    let addr = srv.local_addr();
    // Passed on to itself: the inner request is refused with 508, which comes back.
    assert_eq!(fetch(addr, "/cfg.xml", &[]).await.status, 508);
    // A managed phone's file: no merged file can be made, 502.
    assert_eq!(
        fetch(addr, &format!("/{}", file_name(&phones[0])), &[])
            .await
            .status,
        502
    );
    assert_eq!(stats.outcome(Outcome::LoopDetected), 2);
    assert_eq!(stats.upstream.result(UpstreamResult::Loop), 2);
    srv.shutdown().await;
    ns.delete().await;
}

#[tokio::test]
async fn phonefleets_own_login_needs_its_own_check_of_the_phones() {
    let phones = [phone(31, PhoneFamily::Grandstream, true)];
    let (ns, client, ours) = shard("overlay-login", &phones).await;
    let root = upstream_dir(&[&phones[0]], None);
    let nginx = Nginx::start(root.path(), Some(("phonefleet", "pw"))).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let login = dir.path().join("login");
    std::fs::write(&login, "phonefleet:pw\n").expect("login");
    let creds = dir.path().join("creds");
    std::fs::write(&creds, format!("mac:{} phone31 pw31\n", phones[0].mac)).expect("creds");
    let with_login = UpstreamConfig {
        credentials_file: Some(login),
        ..upstream(nginx.url())
    };
    // Logging in for the phones while letting anyone in would hand out their SIP accounts.
    let refused = phonefleet::server::start(
        server_config(&ns, with_login.clone()),
        client.clone(),
        phonefleet::clock::Clock::System,
    )
    .await;
    assert!(matches!(
        refused,
        Err(phonefleet::server::ServerError::Upstream(_))
    ));
    // phonefleet's password modes cannot share the phones' Authorization with the upstream.
    let conflict = phonefleet::server::start(
        ServerConfig {
            auth_mode: AuthMode::Basic,
            credentials_file: Some(creds.clone()),
            ..server_config(&ns, upstream(nginx.url()))
        },
        client.clone(),
        phonefleet::clock::Clock::System,
    )
    .await;
    assert!(matches!(
        conflict,
        Err(phonefleet::server::ServerError::Upstream(_))
    ));
    // phonefleet checks the phone, then logs in itself.
    let srv = started(
        ServerConfig {
            auth_mode: AuthMode::Basic,
            credentials_file: Some(creds),
            ..server_config(&ns, with_login)
        },
        client.clone(),
        ServerStats::new(),
    )
    .await;
    let addr = srv.local_addr();
    let p = &phones[0];
    let path = format!("/{}", file_name(p));
    let own = support_basic("phone31", "pw31");
    let anonymous = fetch(addr, &path, &[("user-agent", &ua_of(p))]).await;
    assert_eq!(anonymous.status, 401);
    assert!(header(&anonymous, "www-authenticate").contains("phonefleet"));
    assert!(!String::from_utf8_lossy(&anonymous.body).contains("sip-secret"));
    let good = fetch(
        addr,
        &path,
        &[("user-agent", &ua_of(p)), ("authorization", &own)],
    )
    .await;
    assert_eq!(good.status, 200);
    let body = String::from_utf8_lossy(&good.body).into_owned();
    assert!(body.contains("sip-secret-"));
    for key in ours_settings(&ours[&file_name(p)], p.family) {
        assert!(body.lines().any(|l| l.trim() == key), "{key}");
    }
    // Passed-on files: only for a phone phonefleet lets in.
    assert_eq!(
        fetch(addr, "/cfg.xml", &[("user-agent", &ua_of(p))])
            .await
            .status,
        401
    );
    let common = fetch(
        addr,
        "/cfg.xml",
        &[("user-agent", &ua_of(p)), ("authorization", &own)],
    )
    .await;
    assert_eq!(common.status, 200);
    assert_eq!(
        common.body,
        std::fs::read(root.path().join("cfg.xml")).expect("cfg.xml")
    );
    srv.shutdown().await;
    ns.delete().await;
}

fn openssl(args: &[&str], dir: &std::path::Path) {
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

#[tokio::test]
async fn an_https_upstream_is_trusted_through_its_ca_file_only() {
    let phones = [phone(41, PhoneFamily::Yealink, true)];
    let (ns, client, ours) = shard("overlay-https", &phones).await;
    let root = upstream_dir(&[&phones[0]], None);
    // A private CA and a certificate for 127.0.0.1, as an internal provisioning server has.
    let pki = tempfile::tempdir().expect("tempdir");
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut ca = vec!["req", "-x509"];
    ca.extend(ec);
    ca.extend([
        "-days",
        "1",
        "-subj",
        "/CN=old provisioning CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
    ]);
    openssl(&ca, pki.path());
    let mut csr = vec!["req"];
    csr.extend(ec);
    csr.extend([
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        "srv.key",
        "-out",
        "srv.csr",
    ]);
    openssl(&csr, pki.path());
    std::fs::write(
        pki.path().join("srv.ext"),
        "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
    )
    .expect("ext");
    openssl(
        &[
            "x509",
            "-req",
            "-in",
            "srv.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "1",
            "-extfile",
            "srv.ext",
            "-out",
            "srv.pem",
        ],
        pki.path(),
    );
    let nginx = Nginx::start_with(
        root.path(),
        None,
        Some((&pki.path().join("srv.pem"), &pki.path().join("srv.key"))),
    )
    .await;
    let p = &phones[0];
    let path = format!("/{}", file_name(p));
    // With the CA: the merged file.
    let stats = ServerStats::new();
    let srv = started(
        server_config(
            &ns,
            UpstreamConfig {
                ca_file: Some(pki.path().join("ca.pem")),
                ..upstream(nginx.https_url())
            },
        ),
        client.clone(),
        stats.clone(),
    )
    .await;
    let merged = fetch(srv.local_addr(), &path, &[]).await;
    assert_eq!(merged.status, 200);
    let body = String::from_utf8_lossy(&merged.body).into_owned();
    assert!(body.contains("sip-secret-"));
    for key in ours_settings(&ours[&file_name(p)], p.family) {
        assert!(body.lines().any(|l| l.trim() == key), "{key}");
    }
    assert_eq!(stats.upstream.result(UpstreamResult::Ok), 1);
    srv.shutdown().await;
    // Without it, the system's roots do not know the private CA: no file, 502.
    let stats = ServerStats::new();
    let srv = started(
        server_config(&ns, upstream(nginx.https_url())),
        client.clone(),
        stats.clone(),
    )
    .await;
    assert_eq!(fetch(srv.local_addr(), &path, &[]).await.status, 502);
    assert_eq!(stats.upstream.result(UpstreamResult::Unreachable), 1);
    srv.shutdown().await;
    ns.delete().await;
}
