//! A phone's file as the provisioning server answers it (issue #18: render on request): from
//! the shard's decision with the cache off (`--render-cache-bytes 0`, every request renders),
//! against the baseline of the same request answered from the warm cache, in the same run.
//!
//! The shard is one site of the fleet `scripts/measure-scale.sh` applies: 100 phones, the
//! three families, every phone in a rollout slot (the longest files), plus the same phones
//! steady (no rollout). `Index::file` is timed as the server calls it: file name parsed, phone
//! looked up, rendered or taken from the cache. The renderer alone (`RenderContext::render`) is
//! timed per family.
//!
//! Run with `cargo bench --bench render`. `cargo test --all-targets` runs each benchmark once
//! as a smoke test.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::Duration;

use chrono::{DateTime, Utc};
use criterion::Criterion;
use k8s_openapi::api::core::v1::ConfigMap;
use phonefleet::children::{IndexFirmware, IndexSlot};
use phonefleet::core::{
    DaySet, FlexiblePolicy, LocalWindow, Mac, PhoneFamily, ProvisioningPolicy, WeeklyPolicy,
};
use phonefleet::decision::{
    self, DECISION_KEY, DecidedPhone, PHONES_KEY, RenderContext, ShardHeader, WireModel, WirePolicy,
};
use phonefleet::render::Format;
use phonefleet::server::index::Index;

const PHONES: u64 = 100;
/// The families in the order models are listed in the header: phone `i` is model `i % 3`.
const MODELS: [(&str, PhoneFamily); 3] = [
    ("XSTIM-IP5", PhoneFamily::Xstim),
    ("T46U", PhoneFamily::Yealink),
    ("GRP2614", PhoneFamily::Grandstream),
];

fn window(start: &str, end: &str) -> LocalWindow {
    LocalWindow {
        start: start.parse().expect("HH:MM"),
        end: end.parse().expect("HH:MM"),
    }
}

fn header(rollout: bool, base: i64) -> ShardHeader {
    let policy = ProvisioningPolicy {
        power_on: true,
        repeatedly: std::num::NonZeroU32::new(60),
        weekly: WeeklyPolicy {
            enabled: true,
            interval_weeks: 1,
            inactivity_minutes: 15,
            window: window("22:00", "05:00"),
            days: DaySet::ALL,
        },
        flexible: FlexiblePolicy {
            enabled: false,
            interval_days: 1,
            window: window("01:00", "02:00"),
        },
    };
    ShardHeader {
        schedule: "scale/fleet".into(),
        site: "site-04217".into(),
        time_zone: "Europe/Paris".into(),
        cap: 4,
        check_minutes: 10,
        server_url: "http://prov.voice.example:8080".into(),
        provisioning: WirePolicy::from(&policy),
        firmware: rollout.then(|| IndexFirmware {
            version: "2.1.7".into(),
            file: "fleet-2.1.7.bin".into(),
            models: vec![],
        }),
        models: MODELS
            .iter()
            .map(|(model, family)| WireModel {
                model: (*model).into(),
                family: *family,
            })
            .collect(),
        base,
    }
}

fn phones(rollout: bool) -> Vec<DecidedPhone> {
    let first: DateTime<Utc> = "2026-12-05T22:00:00Z".parse().expect("RFC 3339");
    (0..PHONES)
        .map(|i| {
            let start = first + chrono::Duration::minutes(15 * (i / 4) as i64);
            DecidedPhone {
                mac: Mac::from_u64(0x000b_8200_0000 + i).expect("48 bits"),
                model: (i % 3) as u32,
                slot: rollout.then_some(IndexSlot {
                    stage: 0,
                    start,
                    end: start + chrono::Duration::minutes(15),
                    held: false,
                }),
            }
        })
        .collect()
}

fn shard(rollout: bool) -> (ConfigMap, RenderContext, Vec<DecidedPhone>) {
    let phones = phones(rollout);
    let base = decision::base_of(phones.iter().filter_map(|p| p.slot.map(|s| s.start)));
    let header = header(rollout, base);
    let mut cm = ConfigMap::default();
    cm.metadata.name = Some("fleet-site-04217-0".into());
    cm.metadata.namespace = Some("scale".into());
    cm.data = Some(BTreeMap::from([
        (DECISION_KEY.to_owned(), header.to_json()),
        (
            PHONES_KEY.to_owned(),
            decision::encode_phones(base, &phones),
        ),
    ]));
    let context = header.render_context().expect("a valid header");
    (cm, context, phones)
}

fn file_name(phone: &DecidedPhone) -> String {
    Format::of(MODELS[phone.model as usize].1).file_name(phone.mac)
}

fn main() {
    let mut c = Criterion::default()
        .sample_size(20)
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1))
        .configure_from_args();
    for rollout in [true, false] {
        let (cm, context, phones) = shard(rollout);
        let names: Vec<String> = phones.iter().map(file_name).collect();
        let warm = Index::from_maps([&cm]);
        let mut cold = Index::with_cache_bytes(0);
        cold.extend([&cm]);
        for name in &names {
            let served = warm.file(name).expect("served");
            assert_eq!(served.body, cold.file(name).expect("served").body);
        }
        let what = if rollout { "in a slot" } else { "steady" };
        let mut group = c.benchmark_group(format!("a phone's file, {what}"));
        // Per request: all 100 phones once (the three families in turn).
        group.bench_function("Index::file, warm cache (baseline)", |b| {
            b.iter(|| {
                for name in &names {
                    black_box(warm.file(black_box(name)));
                }
            })
        });
        group.bench_function("Index::file, cache off (rendered)", |b| {
            b.iter(|| {
                for name in &names {
                    black_box(cold.file(black_box(name)));
                }
            })
        });
        for (model, (_, family)) in MODELS.iter().enumerate() {
            let of_family: Vec<&DecidedPhone> =
                phones.iter().filter(|p| p.model == model as u32).collect();
            group.bench_function(format!("RenderContext::render, {family}"), |b| {
                b.iter(|| {
                    for phone in &of_family {
                        black_box(context.render(black_box(phone)));
                    }
                })
            });
        }
        group.finish();
    }
    c.final_summary();
}
