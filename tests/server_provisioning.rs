//! The provisioning server against the real local control plane, over real HTTP: rendered
//! configs written in the shape `src/children.rs` defines, files rendered by the real renderer.

mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc, Weekday};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::PostParams;
use kube::{Api, Client, ResourceExt};
use phonefleet::api::PhoneSchedule;
use phonefleet::children::{
    self, INDEX_KEY, IndexFirmware, IndexPhone, IndexSlot, LABEL_COMPONENT, PhoneProgress,
    PhoneState, ShardIndex,
};
use phonefleet::clock::Clock;
use phonefleet::core::{
    DaySet, FlexiblePolicy, LocalWindow, Mac, ProvisioningPolicy, WeeklyPolicy,
};
use phonefleet::render::{self, FirmwarePath, Format, PhoneConfig, RolloutSlot};
use phonefleet::server::{self, Outcome, ServerConfig, ServerHandle, ServerStats};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const TARGET: &str = "2.0.0";
const OLD: &str = "1.0.0";
const FW_FILE: &str = "gxp2170fw.bin";

type Http = HttpClient<HttpConnector, Empty<Bytes>>;

fn http() -> Http {
    HttpClient::builder(TokioExecutor::new()).build_http()
}

fn mac(i: u32) -> Mac {
    Mac::from_u64(0x000b_8200_0000 + u64::from(i)).expect("48-bit MAC")
}

fn ua(mac: Mac, version: &str) -> String {
    format!(
        "Grandstream Model HW GXP2170 SW {version} DevId {}",
        mac.bare()
    )
}

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

/// A phone of the test shard and its slot (UTC), if any.
struct TestPhone {
    mac: Mac,
    slot: Option<(DateTime<Utc>, DateTime<Utc>)>,
}

/// The test fixture: a namespace with a PhoneSchedule and one rendered-config shard.
struct Fixture {
    ns: support::TestNamespace,
    client: Client,
    firmware_dir: tempfile::TempDir,
    files: BTreeMap<String, String>,
}

async fn fixture(prefix: &str, cap: u32, phones: &[TestPhone], firmware_bytes: usize) -> Fixture {
    let cluster = support::cluster().await;
    cluster.apply_crds().await;
    let ns = cluster.namespace(prefix).await;
    let client = cluster.client().await;
    let schedules: Api<PhoneSchedule> = Api::namespaced(client.clone(), &ns.name);
    let schedule: PhoneSchedule = serde_json::from_value(serde_json::json!({
        "apiVersion": "phonefleet.io/v1alpha1",
        "kind": "PhoneSchedule",
        "metadata": {"name": "fw"},
        "spec": {}
    }))
    .expect("schedule");
    let schedule = schedules
        .create(&PostParams::default(), &schedule)
        .await
        .expect("create schedule");
    let policy = policy();
    let server_url = "http://prov.test:8080".parse().expect("server URL");
    let mut data = BTreeMap::new();
    let mut index_phones = BTreeMap::new();
    for p in phones {
        let slot = p.slot.map(|_| RolloutSlot {
            firmware_version: TARGET.into(),
            firmware: FirmwarePath::new("paris", FW_FILE).expect("firmware path"),
            window: phonefleet::core::CheckWindow {
                weekday: Weekday::Tue,
                window: window("01:00", "01:30"),
            },
        });
        let file = render::render(
            &PhoneConfig {
                mac: p.mac,
                model: "GXP2170",
                family: phonefleet::core::PhoneFamily::Grandstream,
                provisioning: &policy,
                slot: slot.as_ref(),
            },
            &server_url,
        );
        index_phones.insert(
            p.mac.bare().to_string(),
            IndexPhone {
                model: "GXP2170".into(),
                file: file.name.clone(),
                slot: p.slot.map(|(start, end)| IndexSlot {
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
        cap,
        firmware: Some(IndexFirmware {
            version: TARGET.into(),
            file: FW_FILE.into(),
            models: vec![],
        }),
        phones: index_phones,
    };
    data.insert(
        INDEX_KEY.into(),
        serde_json::to_string(&index).expect("index JSON"),
    );
    let cm = support::fleet::rendered_config_map(&schedule, "paris", data);
    Api::<ConfigMap>::namespaced(client.clone(), &ns.name)
        .create(&PostParams::default(), &cm)
        .await
        .expect("create rendered-config ConfigMap");
    let firmware_dir = tempfile::tempdir().expect("tempdir");
    let image: Vec<u8> = (0..firmware_bytes).map(|i| (i % 251) as u8).collect();
    std::fs::write(firmware_dir.path().join(FW_FILE), image).expect("write firmware");
    Fixture {
        ns,
        client,
        firmware_dir,
        files,
    }
}

fn config(f: &Fixture, replica: &str) -> ServerConfig {
    ServerConfig {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        scope: phonefleet::scope::WatchScope::namespace(f.ns.name.clone()),
        firmware_dir: Some(f.firmware_dir.path().to_path_buf()),
        replica_id: replica.into(),
        flush_interval: Duration::from_millis(200),
        ..ServerConfig::default()
    }
}

async fn started(config: ServerConfig, client: Client, stats: Arc<ServerStats>) -> ServerHandle {
    let handle = server::start_with_stats(config, client, Clock::System, stats)
        .await
        .expect("server starts");
    support::eventually(
        "the server to sync its index",
        Duration::from_secs(30),
        || {
            let ready = handle.is_ready();
            async move { ready.then_some(()) }
        },
    )
    .await;
    handle
}

struct Reply {
    status: u16,
    headers: http::HeaderMap,
    body: Bytes,
}

async fn get(client: &Http, addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Reply {
    let mut req = http::Request::get(format!("http://{addr}{path}"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = client
        .request(req.body(Empty::new()).expect("request"))
        .await
        .expect("HTTP request");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    Reply {
        status,
        headers,
        body,
    }
}

/// Sends raw bytes and returns the status code of the reply (for requests a client library
/// would refuse to send).
async fn raw_status(addr: SocketAddr, request: &[u8]) -> u16 {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.write_all(request).await.expect("write");
    let mut buf = [0u8; 64];
    let mut n = 0;
    while n < 12 {
        let r = s.read(&mut buf[n..]).await.expect("read");
        assert!(r > 0, "connection closed without a status line");
        n += r;
    }
    let line = String::from_utf8_lossy(&buf[..n]).to_string();
    line[9..12]
        .parse()
        .unwrap_or_else(|_| panic!("status line: {line:?}"))
}

fn now_slot() -> Option<(DateTime<Utc>, DateTime<Utc>)> {
    let now = Utc::now();
    Some((
        now - chrono::Duration::hours(1),
        now + chrono::Duration::hours(1),
    ))
}

async fn progress_of(client: &Client, ns: &str, mac: Mac) -> Option<(PhoneProgress, ConfigMap)> {
    let name = children::progress_map_name(&children::config_map_name("fw", "paris", 0));
    let cm = Api::<ConfigMap>::namespaced(client.clone(), ns)
        .get_opt(&name)
        .await
        .ok()??;
    let value = cm.data.as_ref()?.get(&mac.bare().to_string())?;
    Some((serde_json::from_str(value).ok()?, cm))
}

#[tokio::test]
async fn configs_are_served_byte_for_byte_and_unknown_phones_are_counted() {
    let f = fixture(
        "srv-config",
        3,
        &[TestPhone {
            mac: mac(1),
            slot: None,
        }],
        1024,
    )
    .await;
    let srv = started(config(&f, "r1"), f.client.clone(), ServerStats::new()).await;
    let http = http();
    let name = Format::Xml.file_name(mac(1));
    let reply = get(&http, srv.local_addr(), &format!("/{name}"), &[]).await;
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.body,
        f.files[&name].as_bytes(),
        "exactly the rendered bytes"
    );
    assert_eq!(reply.headers["content-type"], Format::Xml.content_type());
    let unknown = Format::Xml.file_name(mac(99));
    assert_eq!(
        get(&http, srv.local_addr(), &format!("/{unknown}"), &[])
            .await
            .status,
        404
    );
    assert_eq!(
        get(&http, srv.local_addr(), "/000b82000063.cfg", &[])
            .await
            .status,
        404
    );
    let stats = srv.stats();
    assert_eq!(stats.outcome(Outcome::ConfigServed), 1);
    assert_eq!(stats.outcome(Outcome::UnknownPhone), 2);
    assert_eq!(
        get(&http, srv.local_addr(), "/readyz", &[]).await.status,
        200
    );
    srv.shutdown().await;
    f.ns.delete().await;
}

#[tokio::test]
async fn firmware_supports_range_and_head() {
    let f = fixture(
        "srv-range",
        3,
        &[TestPhone {
            mac: mac(1),
            slot: now_slot(),
        }],
        100_000,
    )
    .await;
    let srv = started(config(&f, "r1"), f.client.clone(), ServerStats::new()).await;
    let http = http();
    let path = format!("/firmware/paris/{FW_FILE}");
    let agent = ua(mac(1), OLD);
    let image = std::fs::read(f.firmware_dir.path().join(FW_FILE)).expect("image");

    let part = get(
        &http,
        srv.local_addr(),
        &path,
        &[("user-agent", &agent), ("range", "bytes=100-199")],
    )
    .await;
    assert_eq!(part.status, 206);
    assert_eq!(part.headers["content-range"], "bytes 100-199/100000");
    assert_eq!(&part.body[..], &image[100..200]);

    let tail = get(
        &http,
        srv.local_addr(),
        &path,
        &[("user-agent", &agent), ("range", "bytes=-10")],
    )
    .await;
    assert_eq!((tail.status, &tail.body[..]), (206, &image[99_990..]));

    let head = http::Request::head(format!("http://{}{path}", srv.local_addr()))
        .header("user-agent", &agent)
        .body(Empty::new())
        .expect("request");
    let head = http.request(head).await.expect("HEAD");
    assert_eq!(head.status(), 200);
    assert_eq!(head.headers()["content-length"], "100000");
    assert_eq!(head.headers()["accept-ranges"], "bytes");

    let bad = get(
        &http,
        srv.local_addr(),
        &path,
        &[("user-agent", &agent), ("range", "bytes=200000-")],
    )
    .await;
    assert_eq!(bad.status, 416);
    assert_eq!(bad.headers["content-range"], "bytes */100000");

    let whole = get(&http, srv.local_addr(), &path, &[("user-agent", &agent)]).await;
    assert_eq!((whole.status, whole.body.len()), (200, image.len()));
    assert_eq!(&whole.body[..], &image[..]);

    let anonymous = get(&http, srv.local_addr(), &path, &[("user-agent", "curl/8")]).await;
    assert_eq!(anonymous.status, 400, "firmware needs a phone's MAC");
    srv.shutdown().await;
    f.ns.delete().await;
}

#[tokio::test]
async fn outside_its_slot_a_phone_is_told_when_to_come_back() {
    let later = Utc::now() + chrono::Duration::hours(2);
    let phones = [
        TestPhone {
            mac: mac(1),
            slot: Some((later, later + chrono::Duration::minutes(30))),
        },
        TestPhone {
            mac: mac(2),
            slot: None,
        },
    ];
    let f = fixture("srv-slot", 3, &phones, 1024).await;
    let srv = started(config(&f, "r1"), f.client.clone(), ServerStats::new()).await;
    let http = http();
    let path = format!("/firmware/paris/{FW_FILE}");
    let early = get(
        &http,
        srv.local_addr(),
        &path,
        &[("user-agent", &ua(mac(1), OLD))],
    )
    .await;
    assert_eq!(early.status, 503);
    let retry: i64 = early.headers["retry-after"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("seconds");
    assert!(
        (7000..=7200).contains(&retry),
        "Retry-After {retry} should be the ~2 h until the slot"
    );
    let none = get(
        &http,
        srv.local_addr(),
        &path,
        &[("user-agent", &ua(mac(2), OLD))],
    )
    .await;
    assert_eq!(none.status, 503);
    assert!(none.headers.contains_key("retry-after"));
    assert_eq!(srv.stats().outcome(Outcome::OutsideSlot), 2);
    srv.shutdown().await;
    f.ns.delete().await;
}

#[tokio::test]
async fn cap_holds_during_power_on_storm_with_two_replicas() {
    const PHONES: u32 = 40;
    const CAP: u32 = 3;
    let phones: Vec<TestPhone> = (0..PHONES)
        .map(|i| TestPhone {
            mac: mac(i),
            slot: now_slot(),
        })
        .collect();
    let f = fixture("srv-storm", CAP, &phones, 32 * 1024).await;
    let stats = ServerStats::new();
    let slow = |replica| ServerConfig {
        // 32 KiB at 64 KiB/s: each download lasts about half a second.
        download_rate: Some(64 * 1024),
        chunk_bytes: 4 * 1024,
        busy_retry_after: Duration::from_secs(1),
        ..config(&f, replica)
    };
    let a = started(slow("replica-a"), f.client.clone(), stats.clone()).await;
    let b = started(slow("replica-b"), f.client.clone(), stats.clone()).await;
    let addrs = [a.local_addr(), b.local_addr()];
    let in_flight = Arc::new(AtomicU32::new(0));
    let peak = Arc::new(AtomicU32::new(0));
    let refusals = Arc::new(AtomicU32::new(0));
    let mut phones = Vec::new();
    for i in 0..PHONES {
        let (in_flight, peak, refusals) = (in_flight.clone(), peak.clone(), refusals.clone());
        // Every phone boots at once and alternates between the replicas, as behind a Service.
        phones.push(tokio::spawn(async move {
            let http = http();
            let agent = ua(mac(i), OLD);
            for attempt in 0u32.. {
                let addr = addrs[((i + attempt) % 2) as usize];
                let req = http::Request::get(format!("http://{addr}/firmware/paris/{FW_FILE}"))
                    .header("user-agent", &agent)
                    .body(Empty::<Bytes>::new())
                    .expect("request");
                let resp = http.request(req).await.expect("HTTP");
                if resp.status() == 503 {
                    refusals.fetch_add(1, Ordering::SeqCst);
                    let _ = resp.into_body().collect().await;
                    // A phone retries later; a short pause keeps the storm going.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
                assert_eq!(resp.status(), 200);
                let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(now, Ordering::SeqCst);
                let body = resp.into_body().collect().await.expect("body").to_bytes();
                in_flight.fetch_sub(1, Ordering::SeqCst);
                assert_eq!(body.len(), 32 * 1024);
                return;
            }
        }));
    }
    for p in phones {
        p.await.expect("phone task");
    }
    let site = stats.site("paris");
    let server_peak = site.peak_in_flight.load(Ordering::SeqCst);
    let client_peak = peak.load(Ordering::SeqCst);
    assert!(
        server_peak <= CAP,
        "server-side peak {server_peak} > cap {CAP}"
    );
    assert!(
        client_peak <= CAP,
        "client-side peak {client_peak} > cap {CAP}"
    );
    assert!(
        client_peak >= 2,
        "the storm should have run downloads concurrently"
    );
    assert!(
        refusals.load(Ordering::SeqCst) > 0,
        "a storm of {PHONES} must see refusals"
    );
    assert_eq!(
        site.downloads_completed.load(Ordering::SeqCst),
        u64::from(PHONES)
    );
    // Issue #12 item 10, API load per download: takes read the token Leases from a watch, so a
    // firmware request past the local count costs no LIST; count every token request once
    // each won token has been given back.
    let replicas = [&a, &b];
    let count = |f: fn(&phonefleet::server::tokens::ApiCalls) -> &std::sync::atomic::AtomicU64| {
        replicas
            .iter()
            .map(|r| f(r.token_api_calls()).load(Ordering::SeqCst))
            .sum::<u64>()
    };
    support::eventually(
        "every token to be given back",
        Duration::from_secs(30),
        || {
            let released = count(|c| &c.releases);
            async move { (released >= u64::from(PHONES)).then_some(()) }
        },
    )
    .await;
    let (lists, takes, renewals, releases) = (
        count(|c| &c.lists),
        count(|c| &c.takes),
        count(|c| &c.renewals),
        count(|c| &c.releases),
    );
    let progress = stats.progress_api_requests.load(Ordering::SeqCst);
    let per_download = (lists + takes + renewals + releases + progress) as f64 / f64::from(PHONES);
    eprintln!(
        "storm: {PHONES} downloads, {} refusals; token API requests: {lists} lists, {takes} \
         takes, {renewals} renewals, {releases} releases; {progress} progress requests; \
         {per_download:.2} API requests per completed download",
        refusals.load(Ordering::SeqCst)
    );
    assert_eq!(lists, 0, "no Lease LIST once the watch has synced");
    a.shutdown().await;
    b.shutdown().await;
    f.ns.delete().await;
}

#[tokio::test]
async fn progress_is_persisted_and_survives_a_killed_server() {
    let f = fixture(
        "srv-progress",
        3,
        &[
            TestPhone {
                mac: mac(1),
                slot: now_slot(),
            },
            TestPhone {
                mac: mac(2),
                slot: now_slot(),
            },
        ],
        4096,
    )
    .await;
    let srv = started(config(&f, "r1"), f.client.clone(), ServerStats::new()).await;
    let http = http();
    for m in [mac(1), mac(2)] {
        let fw = get(
            &http,
            srv.local_addr(),
            &format!("/firmware/paris/{FW_FILE}"),
            &[("user-agent", &ua(m, OLD))],
        )
        .await;
        assert_eq!(fw.status, 200);
    }
    for m in [mac(1), mac(2)] {
        let (record, cm) =
            support::eventually("rebooting to be persisted", Duration::from_secs(20), || {
                let client = f.client.clone();
                let ns = f.ns.name.clone();
                async move {
                    progress_of(&client, &ns, m)
                        .await
                        .filter(|(r, _)| r.state == PhoneState::Rebooting)
                }
            })
            .await;
        assert_eq!(record.target, TARGET);
        assert_eq!(cm.labels()[LABEL_COMPONENT], "progress");
        assert_eq!(cm.owner_references()[0].kind, "PhoneSchedule");
    }
    // Like kill -9: no drain, no last batch.
    srv.abort();
    let srv = started(config(&f, "r2"), f.client.clone(), ServerStats::new()).await;
    let xml = |m: Mac| format!("/{}", Format::Xml.file_name(m));
    // Phone 1 comes back upgraded; phone 2 comes back on the old version, which only counts as a
    // failure if the restarted server remembers that it was rebooting.
    assert_eq!(
        get(
            &http,
            srv.local_addr(),
            &xml(mac(1)),
            &[("user-agent", &ua(mac(1), TARGET))]
        )
        .await
        .status,
        200
    );
    assert_eq!(
        get(
            &http,
            srv.local_addr(),
            &xml(mac(2)),
            &[("user-agent", &ua(mac(2), OLD))]
        )
        .await
        .status,
        200
    );
    for (m, want) in [(mac(1), PhoneState::Upgraded), (mac(2), PhoneState::Failed)] {
        support::eventually(
            "the new states to be persisted",
            Duration::from_secs(20),
            || {
                let client = f.client.clone();
                let ns = f.ns.name.clone();
                async move {
                    progress_of(&client, &ns, m)
                        .await
                        .filter(|(r, _)| r.state == want)
                }
            },
        )
        .await;
    }
    srv.shutdown().await;
    f.ns.delete().await;
}

#[tokio::test]
async fn malformed_requests_are_refused_without_panics() {
    let f = fixture(
        "srv-bad",
        3,
        &[TestPhone {
            mac: mac(1),
            slot: now_slot(),
        }],
        1024,
    )
    .await;
    let srv = started(config(&f, "r1"), f.client.clone(), ServerStats::new()).await;
    let addr = srv.local_addr();
    let req = |target: &str, extra: &str| {
        format!("GET {target} HTTP/1.1\r\nHost: x\r\n{extra}\r\n").into_bytes()
    };
    for target in [
        "/../../etc/passwd",
        "/%2e%2e/%2e%2e/etc/passwd",
        "/firmware/paris/..%2f..%2fetc%2fpasswd",
        "/firmware/../paris/x",
        "/firmware/paris/../../etc/passwd",
        "/cfg000b82000001.xml/..",
        "//cfg000b82000001.xml",
    ] {
        let status = raw_status(
            addr,
            &req(
                target,
                "User-Agent: Grandstream Model HW GXP2170 SW 1.0 DevId 000b82000001\r\n",
            ),
        )
        .await;
        assert!(status == 404 || status == 400, "{target}: {status}");
    }
    let name = Format::Xml.file_name(mac(1));
    let bad_ua = raw_status(
        addr,
        &req(
            &format!("/{name}"),
            "User-Agent: Yealink SIP-T46U 108.86.0.20 00:15:65:zz:bb:cc\r\n",
        ),
    )
    .await;
    assert_eq!(bad_ua, 400);
    let other_phone = raw_status(
        addr,
        &req(
            &format!("/{name}"),
            &format!("User-Agent: {}\r\n", ua(mac(2), OLD)),
        ),
    )
    .await;
    assert_eq!(other_phone, 403, "a phone may not fetch another's file");
    let long = format!("/{}", "a".repeat(2000));
    assert_eq!(raw_status(addr, &req(&long, "")).await, 414);
    let huge = format!("X-Junk: {}\r\n", "j".repeat(16 * 1024));
    assert_eq!(
        raw_status(addr, &req(&format!("/{name}"), &huge)).await,
        431
    );
    assert_eq!(
        raw_status(
            addr,
            format!("POST /{name} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n").as_bytes()
        )
        .await,
        405
    );
    // Still serving.
    assert_eq!(raw_status(addr, &req(&format!("/{name}"), "")).await, 200);
    srv.shutdown().await;
    f.ns.delete().await;
}

#[tokio::test]
async fn basic_auth_and_a_path_prefix_guard_a_sites_configs() {
    use base64::Engine;
    use sha2::Digest;
    let f = fixture(
        "srv-auth",
        3,
        &[TestPhone {
            mac: mac(1),
            slot: None,
        }],
        1024,
    )
    .await;
    let hash: String = sha2::Sha256::digest(b"s3cret")
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let creds = f.firmware_dir.path().join("credentials");
    std::fs::write(
        &creds,
        format!("# site user sha256(password)\nparis phone {hash}\n"),
    )
    .unwrap();
    let srv = started(
        ServerConfig {
            credentials_file: Some(creds),
            path_prefix: "/prov".into(),
            ..config(&f, "r1")
        },
        f.client.clone(),
        ServerStats::new(),
    )
    .await;
    let http = http();
    let name = Format::Xml.file_name(mac(1));
    let path = format!("/prov/{name}");
    let anonymous = get(&http, srv.local_addr(), &path, &[]).await;
    assert_eq!(anonymous.status, 401);
    assert!(
        anonymous.headers["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Basic")
    );
    let good = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("phone:s3cret")
    );
    let bad = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("phone:guess")
    );
    assert_eq!(
        get(&http, srv.local_addr(), &path, &[("authorization", &bad)])
            .await
            .status,
        401
    );
    let ok = get(&http, srv.local_addr(), &path, &[("authorization", &good)]).await;
    assert_eq!((ok.status, &ok.body[..]), (200, f.files[&name].as_bytes()));
    assert_eq!(
        get(
            &http,
            srv.local_addr(),
            &format!("/{name}"),
            &[("authorization", &good)]
        )
        .await
        .status,
        404,
        "only under the prefix"
    );
    assert_eq!(srv.stats().outcome(Outcome::Unauthorized), 2);
    srv.shutdown().await;
    f.ns.delete().await;
}

#[tokio::test]
async fn tls_serves_configs_over_https() {
    let f = fixture(
        "srv-tls",
        3,
        &[TestPhone {
            mac: mac(1),
            slot: None,
        }],
        1024,
    )
    .await;
    let dir = f.firmware_dir.path();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let out = std::process::Command::new("openssl")
        .args([
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
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost",
            "-addext",
            "basicConstraints=critical,CA:FALSE",
            "-addext",
            "extendedKeyUsage=serverAuth",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let srv = started(
        ServerConfig {
            tls: Some(server::TlsFiles {
                cert: cert.clone(),
                key,
            }),
            ..config(&f, "r1")
        },
        f.client.clone(),
        ServerStats::new(),
    )
    .await;
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pki_types::CertificateDer::pem_file_iter(&cert).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(tls));
    let tcp = tokio::net::TcpStream::connect(srv.local_addr())
        .await
        .unwrap();
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let mut stream = connector.connect(name, tcp).await.expect("TLS handshake");
    let file = Format::Xml.file_name(mac(1));
    stream
        .write_all(
            format!("GET /{file} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await
        .unwrap();
    let mut reply = Vec::new();
    let _ = stream.read_to_end(&mut reply).await;
    let reply = String::from_utf8_lossy(&reply);
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(
        reply.ends_with(&f.files[&file]),
        "the rendered bytes over TLS"
    );
    // Plain HTTP on the TLS port is not served.
    let plain = tokio::net::TcpStream::connect(srv.local_addr())
        .await
        .unwrap();
    let (mut r, mut w) = plain.into_split();
    let _ = w.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let mut buf = Vec::new();
    let _ = r.read_to_end(&mut buf).await;
    assert!(!String::from_utf8_lossy(&buf).starts_with("HTTP/1.1 200"));
    srv.shutdown().await;
    f.ns.delete().await;
}

#[tokio::test]
async fn a_phone_seen_back_by_another_replica_is_not_failed_by_the_first() {
    let f = fixture(
        "srv-replicas",
        3,
        &[TestPhone {
            mac: mac(1),
            slot: now_slot(),
        }],
        4096,
    )
    .await;
    let short = |replica| ServerConfig {
        reboot_deadline: Duration::from_secs(3),
        ..config(&f, replica)
    };
    let a = started(short("replica-a"), f.client.clone(), ServerStats::new()).await;
    let b = started(short("replica-b"), f.client.clone(), ServerStats::new()).await;
    let http = http();
    // The download goes through replica A...
    let fw = get(
        &http,
        a.local_addr(),
        &format!("/firmware/paris/{FW_FILE}"),
        &[("user-agent", &ua(mac(1), OLD))],
    )
    .await;
    assert_eq!(fw.status, 200);
    let state_is = |want: PhoneState| {
        let client = f.client.clone();
        let ns = f.ns.name.clone();
        move || {
            let (client, ns) = (client.clone(), ns.clone());
            async move {
                progress_of(&client, &ns, mac(1))
                    .await
                    .filter(|(r, _)| r.state == want)
                    .map(|_| ())
            }
        }
    };
    support::eventually(
        "A to record the reboot",
        Duration::from_secs(20),
        state_is(PhoneState::Rebooting),
    )
    .await;
    // ...and the phone comes back, on the target version, through replica B.
    let back = get(
        &http,
        b.local_addr(),
        &format!("/{}", Format::Xml.file_name(mac(1))),
        &[("user-agent", &ua(mac(1), TARGET))],
    )
    .await;
    assert_eq!(back.status, 200);
    support::eventually(
        "B to record the upgrade",
        Duration::from_secs(20),
        state_is(PhoneState::Upgraded),
    )
    .await;
    // A never saw the phone again: its reboot deadline passes, it infers a failure, finds the
    // stored record newer than what it inferred from, and adopts it instead of writing.
    support::eventually("A to adopt the upgrade", Duration::from_secs(30), || {
        let state = a.progress_of(mac(1)).map(|p| p.state);
        async move { (state == Some(PhoneState::Upgraded)).then_some(()) }
    })
    .await;
    let (stored, _) = progress_of(&f.client, &f.ns.name, mac(1))
        .await
        .expect("record");
    assert_eq!(
        stored.state,
        PhoneState::Upgraded,
        "the phone was not failed"
    );
    a.shutdown().await;
    b.shutdown().await;
    f.ns.delete().await;
}
