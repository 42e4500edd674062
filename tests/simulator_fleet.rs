//! The fleet simulator against the real provisioning server and the real control plane, on a
//! compressed clock: phones obey their rendered files, download inside their slots under the
//! site's cap (also through a power-cut storm), come back upgraded, and a model whose
//! firmware never comes back ends up failed in the progress ConfigMap.

#![cfg(feature = "simulated-time")]

mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use chrono::{DateTime, TimeZone, Utc, Weekday};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use kube::api::{ListParams, PostParams};
use phonefleet::api::PhoneSchedule;
use phonefleet::children::{
    COMPONENT_PROGRESS, INDEX_KEY, IndexFirmware, IndexPhone, IndexSlot, LABEL_COMPONENT,
    PhoneProgress, PhoneState, ShardIndex,
};
use phonefleet::clock::Clock;
use phonefleet::core::{
    CheckWindow, DaySet, FlexiblePolicy, LocalTime, LocalWindow, Mac, PhoneFamily,
    ProvisioningPolicy, WeeklyPolicy,
};
use phonefleet::render::{self, FirmwarePath, Format, PhoneConfig, RolloutSlot};
use phonefleet::server::{self, ServerConfig};
use phonefleet::simulator::{self, SimConfig, SimPhone, SimSite, knobs::grandstream_image};

const TARGET: &str = "2.0.0";
const CAP: u32 = 3;
const SCALE: u32 = 1200;

fn origin() -> DateTime<Utc> {
    // A Monday, 00:00 UTC.
    Utc.with_ymd_and_hms(2026, 1, 5, 0, 0, 0).unwrap()
}

fn policy() -> ProvisioningPolicy {
    let w = |a: &str, b: &str| LocalWindow {
        start: a.parse().unwrap(),
        end: b.parse().unwrap(),
    };
    ProvisioningPolicy {
        power_on: true,
        repeatedly: None,
        weekly: WeeklyPolicy {
            enabled: true,
            interval_weeks: 1,
            inactivity_minutes: 0,
            window: w("00:00", "05:00"),
            days: DaySet::ALL,
        },
        flexible: FlexiblePolicy {
            enabled: false,
            interval_days: 1,
            window: w("00:00", "00:00"),
        },
    }
}

/// The model whose firmware never comes back: XSTIM phones, placed by their family since no
/// XSTIM model name is documented.
const BAD_MODEL: &str = "XSTIM-25";

fn family_of(model: &str) -> PhoneFamily {
    PhoneFamily::for_model(model).unwrap_or(PhoneFamily::Xstim)
}

fn image_for(model: &str) -> String {
    if model.starts_with("SIP-") {
        "t46ufw.bin".into()
    } else {
        grandstream_image(model)
    }
}

/// One night of a site: 12 phones, cap 3, four one-hour slots from 01:00 UTC on a Monday,
/// served by a real server on a compressed clock.
struct Night {
    ns: support::TestNamespace,
    cms: Api<ConfigMap>,
    srv: server::ServerHandle,
    base: String,
    clock: Clock,
    real_origin: DateTime<Utc>,
    phones: Vec<SimPhone>,
    /// Kept alive: the server serves firmware from it.
    _firmware_dir: tempfile::TempDir,
}

async fn night(prefix: &str) -> Night {
    let cluster = support::cluster().await;
    cluster.apply_crds().await;
    let ns = cluster.namespace(prefix).await;
    let client = cluster.client().await;
    let schedule: PhoneSchedule = serde_json::from_value(serde_json::json!({
        "apiVersion": "phonefleet.io/v1alpha1", "kind": "PhoneSchedule",
        "metadata": {"name": "fw"}, "spec": {}
    }))
    .unwrap();
    let schedule = Api::<PhoneSchedule>::namespaced(client.clone(), &ns.name)
        .create(&PostParams::default(), &schedule)
        .await
        .expect("create schedule");

    // 12 phones, three per whole-hour slot from 01:00 (Grandstream phones can only be told
    // whole hours): 6 healthy Grandstream, 3 Yealink, and 3 XSTIM phones of a model whose
    // firmware bricks it.
    let models = [
        "GXP2170", "GXP2170", "GXP2170", "SIP-T46U", "SIP-T46U", "SIP-T46U", "GXP2170", "GXP2170",
        "GXP2170", BAD_MODEL, BAD_MODEL, BAD_MODEL,
    ];
    let policy = policy();
    let firmware_dir = tempfile::tempdir().unwrap();
    for model in ["GXP2170", BAD_MODEL, "SIP-T46U"] {
        std::fs::write(
            firmware_dir.path().join(image_for(model)),
            simulator::firmware_image(TARGET, 20 * 1024),
        )
        .unwrap();
    }
    // Bind the server first: its URL goes into the rendered files.
    let real_origin = Utc::now();
    let clock = Clock::scaled(origin(), real_origin, SCALE);
    let config = ServerConfig {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        scope: phonefleet::scope::WatchScope::namespace(ns.name.clone()),
        firmware_dir: Some(firmware_dir.path().to_path_buf()),
        replica_id: "sim".into(),
        flush_interval: Duration::from_millis(200),
        // 20 KiB at 68 B/s: a download lasts about 5 simulated minutes.
        download_rate: Some(68),
        chunk_bytes: 2048,
        busy_retry_after: Duration::from_secs(120),
        ..ServerConfig::default()
    };
    let srv = server::start(config, client.clone(), clock)
        .await
        .expect("server");
    let base = format!("http://{}", srv.local_addr());
    let server_url = base.parse().unwrap();

    let mut data = BTreeMap::new();
    let mut phones = BTreeMap::new();
    let mut sim_phones = Vec::new();
    for (i, model) in models.iter().enumerate() {
        let mac = Mac::from_u64(0x000b_8210_0000 + i as u64).unwrap();
        let k = (i / CAP as usize) as u32;
        let start = LocalTime::from_minutes(60 + 60 * k).unwrap();
        let end = LocalTime::from_minutes(120 + 60 * k).unwrap();
        let slot = RolloutSlot {
            firmware_version: TARGET.into(),
            firmware: FirmwarePath::new("paris", &image_for(model)).unwrap(),
            window: CheckWindow {
                weekday: Weekday::Mon,
                window: LocalWindow { start, end },
            },
        };
        let family = family_of(model);
        let file = render::render(
            &PhoneConfig {
                mac,
                model,
                family,
                provisioning: &policy,
                slot: Some(&slot),
            },
            &server_url,
        );
        let utc = |t: LocalTime| origin() + chrono::Duration::minutes(i64::from(t.minutes()));
        phones.insert(
            mac.bare().to_string(),
            IndexPhone {
                model: model.to_string(),
                file: file.name.clone(),
                slot: Some(IndexSlot {
                    stage: 0,
                    start: utc(start),
                    end: utc(end),
                    held: false,
                }),
            },
        );
        data.insert(file.name, file.body);
        sim_phones.push(SimPhone {
            mac,
            model: model.to_string(),
            family: Some(family),
        });
    }
    let index = ShardIndex {
        schedule: format!("{}/fw", ns.name),
        site: "paris".into(),
        time_zone: "UTC".into(),
        cap: CAP,
        firmware: Some(IndexFirmware {
            version: TARGET.into(),
            file: "gxp2170fw.bin".into(),
            models: vec![],
        }),
        phones,
    };
    data.insert(INDEX_KEY.into(), serde_json::to_string(&index).unwrap());
    let cm = support::fleet::rendered_config_map(&schedule, "paris", data);
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns.name);
    cms.create(&PostParams::default(), &cm)
        .await
        .expect("create shard");
    support::eventually(
        "the server to index the shard",
        Duration::from_secs(30),
        || {
            let ready = srv.is_ready();
            let base = base.clone();
            let name = Format::Xml.file_name(sim_phones[0].mac);
            async move {
                if !ready {
                    return None;
                }
                let addr = base.trim_start_matches("http://").to_owned();
                let mut conn = tokio::net::TcpStream::connect(addr).await.ok()?;
                let req = format!("GET /{name} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
                conn.write_all(req.as_bytes()).await.ok()?;
                let mut reply = Vec::new();
                conn.read_to_end(&mut reply).await.ok()?;
                reply.starts_with(b"HTTP/1.1 200").then_some(())
            }
        },
    )
    .await;

    Night {
        ns,
        cms,
        srv,
        base,
        clock,
        real_origin,
        phones: sim_phones,
        _firmware_dir: firmware_dir,
    }
}

/// The progress ConfigMaps of the night show 9 upgraded and 3 failed phones.
async fn progress_shows_nine_upgraded_and_three_failed(cms: &Api<ConfigMap>) {
    support::eventually(
        "progress to show 9 upgraded and 3 failed",
        Duration::from_secs(60),
        || {
            let cms = cms.clone();
            async move {
                let lp = ListParams::default()
                    .labels(&format!("{LABEL_COMPONENT}={COMPONENT_PROGRESS}"));
                let list = cms.list(&lp).await.ok()?;
                let mut counts: BTreeMap<PhoneState, u32> = BTreeMap::new();
                for cm in list.items {
                    for v in cm.data.unwrap_or_default().values() {
                        let p: PhoneProgress = serde_json::from_str(v).ok()?;
                        *counts.entry(p.state).or_default() += 1;
                    }
                }
                (counts.get(&PhoneState::Upgraded) == Some(&9)
                    && counts.get(&PhoneState::Failed) == Some(&3))
                .then_some(())
            }
        },
    )
    .await;
}

#[tokio::test]
async fn phones_upgrade_inside_their_slots_under_the_cap_and_a_bad_model_fails() {
    let Night {
        ns,
        cms,
        srv,
        base,
        clock,
        phones: sim_phones,
        _firmware_dir,
        ..
    } = night("sim-fleet").await;
    let sites = vec![SimSite {
        name: "paris".into(),
        time_zone: chrono_tz::UTC,
        phones: sim_phones,
    }];
    let mut sim = SimConfig::new(base, sites);
    sim.seed = 7;
    sim.initial_version = "1.0.0".into();
    sim.fail_models = vec![BAD_MODEL.into()];
    // A budget of simulated time far past the plan (the run ends once every phone settled), so
    // a loaded machine costs real time, not the verdict (tests/support/simulation.rs).
    sim.duration = Duration::from_secs(48 * 3600);
    // Every phone boots at the start (a storm outside the slots), and again at 01:40.
    sim.power_cuts = vec![("paris".into(), origin() + chrono::Duration::minutes(100))];
    sim.stop_when_settled = true;
    let summary = simulator::run(sim, clock).await;
    let site = &summary.sites["paris"];
    eprintln!("{}", serde_json::to_string_pretty(&summary).unwrap());
    assert_eq!(site.phones, 12);
    assert_eq!(site.upgraded, 9, "every healthy phone upgraded");
    assert_eq!(site.failed, 3, "the bricking model stays down");
    assert!(
        site.peak_concurrent_downloads <= CAP,
        "phones saw {} downloads at once",
        site.peak_concurrent_downloads
    );
    assert!(
        site.refusals > 0,
        "phones booting outside their slot are refused"
    );
    let server_peak = srv
        .stats()
        .site("paris")
        .peak_in_flight
        .load(Ordering::SeqCst);
    assert!(
        server_peak <= CAP,
        "server saw {server_peak} downloads at once"
    );

    // The progress the controller reads: 9 upgraded, 3 failed once their reboot deadline passes.
    progress_shows_nine_upgraded_and_three_failed(&cms).await;
    srv.shutdown().await;
    ns.delete().await;
}

#[tokio::test]
async fn the_simulate_subcommand_reads_a_manifest_and_shares_the_servers_clock() {
    let night = night("sim-cli").await;
    let phones: Vec<serde_json::Value> = night
        .phones
        .iter()
        .map(
            |p| serde_json::json!({"mac": p.mac.to_string(), "model": p.model, "family": p.family}),
        )
        .collect();
    let manifest = serde_json::json!({
        "apiVersion": "phonefleet.io/v1alpha1", "kind": "PhoneSite",
        "metadata": {"name": "paris"},
        "spec": {"timeZone": "UTC", "maxConcurrentDownloads": CAP, "phones": phones}
    });
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fleet.yaml");
    std::fs::write(&path, serde_yaml_ng::to_string(&manifest).unwrap()).unwrap();
    let rfc = |t: DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_phonefleet"))
        .arg("simulate")
        .args(["--server", &night.base, "-f"])
        .arg(&path)
        .args([
            "--time-origin",
            &rfc(origin()),
            "--time-scale",
            &SCALE.to_string(),
        ])
        .args(["--time-real-origin", &rfc(night.real_origin)])
        .args([
            "--hours",
            "48",
            "--until-settled",
            "--seed",
            "3",
            "--fail-model",
            BAD_MODEL,
        ])
        .args([
            "--power-cut",
            &format!("paris={}", rfc(origin() + chrono::Duration::minutes(100))),
        ])
        .output()
        .await
        .expect("run phonefleet simulate");
    assert!(
        out.status.success(),
        "simulate failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON summary");
    let site = &summary["sites"]["paris"];
    assert_eq!(site["phones"], 12, "{summary}");
    assert_eq!(site["upgraded"], 9, "{summary}");
    assert_eq!(site["failed"], 3, "{summary}");
    assert!(
        site["peakConcurrentDownloads"].as_u64().unwrap() <= u64::from(CAP),
        "{summary}"
    );
    progress_shows_nine_upgraded_and_three_failed(&night.cms).await;
    let _ = night.clock;
    night.srv.shutdown().await;
    night.ns.delete().await;
}

/// Request line, Range header and User-Agent of a request.
type Seen = (String, Option<String>, String);

/// A phone whose download is cut resumes it with `Range` and installs the image. The server is
/// a small scripted one, so the cut happens exactly once and the requests can be inspected.
#[tokio::test]
async fn a_cut_download_is_resumed_with_range() {
    use std::sync::{Arc, Mutex};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mac = Mac::from_u64(0x0015_65aa_bbcc).unwrap();
    let image = simulator::firmware_image(TARGET, 4096);
    let config = format!(
        "#!version:1.0.0.1\n\
         static.auto_provision.power_on = 1\n\
         static.auto_provision.repeat.enable = 1\n\
         static.auto_provision.repeat.minutes = 1\n\
         static.auto_provision.weekly.enable = 0\n\
         static.auto_provision.weekly_upgrade_interval = 0\n\
         static.auto_provision.inactivity_time_expire = 0\n\
         static.auto_provision.weekly.begin_time = 00:00\n\
         static.auto_provision.weekly.end_time = 05:00\n\
         static.auto_provision.weekly.dayofweek = 0123456\n\
         static.auto_provision.flexible.enable = 0\n\
         static.auto_provision.flexible.interval = 1\n\
         static.auto_provision.flexible.begin_time = 00:00\n\
         static.auto_provision.flexible.end_time = 00:00\n\
         static.firmware.url = http://{addr}/firmware/paris/t46ufw.bin\n"
    );
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let server = {
        let seen = seen.clone();
        tokio::spawn(async move {
            let mut firmware_requests = 0;
            loop {
                let Ok((mut conn, _)) = listener.accept().await else {
                    return;
                };
                let mut buf = Vec::new();
                let mut chunk = [0u8; 1024];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut chunk).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&buf).to_string();
                let line = head.lines().next().unwrap_or_default().to_owned();
                let header = |name: &str| {
                    head.lines().find_map(|l| {
                        l.to_ascii_lowercase()
                            .starts_with(name)
                            .then(|| l[name.len()..].trim().to_owned())
                    })
                };
                let range = header("range:");
                seen.lock().unwrap().push((
                    line.clone(),
                    range.clone(),
                    header("user-agent:").unwrap_or_default(),
                ));
                let reply: Vec<u8> = if line.contains("/firmware/") {
                    firmware_requests += 1;
                    if firmware_requests == 1 {
                        // Announce the whole image, send half, hang up.
                        let mut r = format!(
                            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                            image.len()
                        )
                        .into_bytes();
                        r.extend_from_slice(&image[..2048]);
                        r
                    } else {
                        let from: usize = range
                            .as_deref()
                            .and_then(|r| r.strip_prefix("bytes=")?.strip_suffix('-')?.parse().ok())
                            .unwrap_or(0);
                        let mut r = format!(
                            "HTTP/1.1 206 Partial Content\r\nContent-Length: {}\r\nContent-Range: bytes {from}-{}/{}\r\nConnection: close\r\n\r\n",
                            image.len() - from,
                            image.len() - 1,
                            image.len()
                        )
                        .into_bytes();
                        r.extend_from_slice(&image[from..]);
                        r
                    }
                } else {
                    let mut r = format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        config.len()
                    )
                    .into_bytes();
                    r.extend_from_slice(config.as_bytes());
                    r
                };
                let _ = conn.write_all(&reply).await;
                let _ = conn.shutdown().await;
            }
        })
    };
    let sites = vec![SimSite {
        name: "paris".into(),
        time_zone: chrono_tz::UTC,
        phones: vec![SimPhone {
            mac,
            model: "SIP-T46U".into(),
            family: Some(PhoneFamily::Yealink),
        }],
    }];
    let mut sim = SimConfig::new(format!("http://{addr}"), sites);
    sim.duration = Duration::from_secs(24 * 3600);
    sim.stop_when_settled = true;
    let summary = simulator::run(sim, Clock::scaled(origin(), Utc::now(), 600)).await;
    server.abort();
    let site = &summary.sites["paris"];
    assert_eq!(
        (site.upgraded, site.downloads_completed),
        (1, 1),
        "{summary:?}"
    );
    let seen = seen.lock().unwrap();
    let firmware: Vec<_> = seen
        .iter()
        .filter(|(l, _, _)| l.contains("/firmware/"))
        .collect();
    assert_eq!(firmware.len(), 2, "{seen:?}");
    assert_eq!(firmware[0].1, None);
    assert_eq!(
        firmware[1].1.as_deref(),
        Some("bytes=2048-"),
        "resumed where it was cut"
    );
    let last = seen.last().unwrap();
    assert!(
        last.2.contains(TARGET),
        "the phone came back on the image's version: {last:?}"
    );
}
