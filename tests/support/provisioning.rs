//! A provisioning-server fixture for hardening tests: one PhoneSchedule, one rendered-config
//! shard for site `paris` (real renderer), a firmware directory, and small HTTP helpers.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc, Weekday};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::PostParams;
use kube::{Api, Client};
use phonefleet::api::PhoneSchedule;
use phonefleet::children::{self, INDEX_KEY, IndexFirmware, IndexPhone, IndexSlot, ShardIndex};
use phonefleet::clock::Clock;
use phonefleet::core::{
    DaySet, FlexiblePolicy, LocalWindow, Mac, ProvisioningPolicy, WeeklyPolicy,
};
use phonefleet::render::{self, FirmwarePath, PhoneConfig, RolloutSlot};
use phonefleet::server::{self, ServerConfig, ServerHandle, ServerStats};

use super::TestNamespace;

pub const TARGET: &str = "2.0.0";
pub const OLD: &str = "1.0.0";
pub const FW_FILE: &str = "gxp2170fw.bin";

pub type Http = HttpClient<HttpConnector, Empty<Bytes>>;

pub fn http() -> Http {
    HttpClient::builder(TokioExecutor::new()).build_http()
}

pub fn mac(i: u32) -> Mac {
    Mac::from_u64(0x000b_8200_0000 + u64::from(i)).expect("48-bit MAC")
}

/// A Grandstream phone's User-Agent for `mac` on `version`.
pub fn ua(mac: Mac, version: &str) -> String {
    format!(
        "Grandstream Model HW GXP2170 SW {version} DevId {}",
        mac.bare()
    )
}

/// The firmware path of the fixture's image.
pub fn firmware_path() -> String {
    format!("/firmware/paris/{FW_FILE}")
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
pub struct TestPhone {
    pub mac: Mac,
    pub slot: Option<(DateTime<Utc>, DateTime<Utc>)>,
}

/// `n` phones (`mac(0)` … `mac(n-1)`) all inside their slot now.
pub fn phones_in_slot(n: u32) -> Vec<TestPhone> {
    (0..n)
        .map(|i| TestPhone {
            mac: mac(i),
            slot: now_slot(),
        })
        .collect()
}

/// A slot from an hour ago to an hour from now.
pub fn now_slot() -> Option<(DateTime<Utc>, DateTime<Utc>)> {
    let now = Utc::now();
    Some((
        now - chrono::Duration::hours(1),
        now + chrono::Duration::hours(1),
    ))
}

/// A namespace with a PhoneSchedule and one rendered-config shard of site `paris`.
pub struct Fixture {
    pub ns: TestNamespace,
    pub client: Client,
    pub firmware_dir: tempfile::TempDir,
    pub files: BTreeMap<String, String>,
}

/// The image the fixture writes: `len` bytes of a pattern seeded by `seed`.
pub fn image(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| ((i % 251) as u8).wrapping_add(seed))
        .collect()
}

pub async fn fixture(
    prefix: &str,
    cap: u32,
    phones: &[TestPhone],
    firmware_bytes: usize,
) -> Fixture {
    let cluster = super::cluster().await;
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
    let cm = super::fleet::rendered_config_map(&schedule, "paris", data);
    Api::<ConfigMap>::namespaced(client.clone(), &ns.name)
        .create(&PostParams::default(), &cm)
        .await
        .expect("create rendered-config ConfigMap");
    let firmware_dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(firmware_dir.path().join(FW_FILE), image(firmware_bytes, 0))
        .expect("write firmware");
    Fixture {
        ns,
        client,
        firmware_dir,
        files,
    }
}

impl Fixture {
    /// A server configuration for this fixture, listening on a free loopback port.
    pub fn config(&self, replica: &str) -> ServerConfig {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            scope: phonefleet::scope::WatchScope::namespace(self.ns.name.clone()),
            firmware_dir: Some(self.firmware_dir.path().to_path_buf()),
            replica_id: replica.into(),
            flush_interval: Duration::from_millis(200),
            ..ServerConfig::default()
        }
    }

    /// The progress record the API server holds for `mac`.
    pub async fn stored_progress(&self, mac: Mac) -> Option<children::PhoneProgress> {
        let name = children::progress_map_name(&children::config_map_name("fw", "paris", 0));
        let cm = Api::<ConfigMap>::namespaced(self.client.clone(), &self.ns.name)
            .get_opt(&name)
            .await
            .ok()??;
        let value = cm.data.as_ref()?.get(&mac.bare().to_string())?;
        serde_json::from_str(value).ok()
    }
}

/// Starts a server and waits until its index is synced.
pub async fn started(
    config: ServerConfig,
    client: Client,
    stats: Arc<ServerStats>,
) -> ServerHandle {
    let handle = server::start_with_stats(config, client, Clock::System, stats)
        .await
        .expect("server starts");
    super::eventually(
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

/// A complete answer.
pub struct Reply {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

/// GETs `path` with `headers` and reads the whole answer.
pub async fn get(client: &Http, addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Reply {
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
