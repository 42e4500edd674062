//! Metrics, dashboards and alerts against the real tools: the controller, the provisioning
//! server and the metrics endpoint run in this process on the real control plane, the fleet
//! simulator rolls firmware out on a compressed clock (three sites, 300 phones, caps 2, 3 and
//! 5, a canary stage, a model whose firmware bricks it), `promtool check metrics` reads a live
//! scrape, and a real Prometheus scrapes the process with the chart's rules loaded. Every
//! dashboard panel query and every alert expression is evaluated through Prometheus's HTTP
//! API; the halted-rollout alert must fire and the over-cap alert never.

#![cfg(feature = "simulated-time")]

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::{DateTime, TimeZone, Utc};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::rt::TokioExecutor;
use kube::Api;
use kube::api::PostParams;
use phonefleet::api::{PhoneSchedule, PhoneSite};
use phonefleet::clock::Clock;
use phonefleet::controller::{self, ControllerConfig};
use phonefleet::metrics::{Metrics, endpoint::Endpoint};
use phonefleet::server::{self, ServerConfig, ServerStats};
use phonefleet::simulator::{self, SimConfig, knobs::grandstream_image};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

const SCALE: u32 = 600;
const TARGET: &str = "2.0.0";
const FAILING_MODEL: &str = "GXP1625";
const SCHEDULE: &str = "fw";
/// (site, time zone, cap): caps 2 to 5, three time zones.
const SITES: [(&str, &str, u32); 3] = [
    ("paris", "Europe/Paris", 2),
    ("oslo", "Europe/Oslo", 3),
    ("lisbon", "Europe/Lisbon", 5),
];
const PHONES_PER_SITE: u64 = 100;
/// Scrapes allowed after the simulation has ended (its simulated week is the budget; see
/// tests/support/simulation.rs): the last progress still reaches the metrics and Prometheus.
const AFTER_SIMULATION: Duration = Duration::from_secs(60);

fn origin() -> DateTime<Utc> {
    // A Monday, 00:00 UTC.
    Utc.with_ymd_and_hms(2026, 1, 5, 0, 0, 0).unwrap()
}

fn model_of(i: u64) -> &'static str {
    match i % 10 {
        0 => FAILING_MODEL,
        1 | 3 | 5 | 7 => "GRP2614",
        _ => "GXP2170",
    }
}

fn site(name: &str, zone: &str, cap: u32, index: u64) -> PhoneSite {
    let phones: Vec<Value> = (0..PHONES_PER_SITE)
        .map(|i| {
            let n = 0x000b_8230_0000 + index * 0x1000 + i;
            let mac = format!(
                "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
                (n >> 40) & 0xff,
                (n >> 32) & 0xff,
                (n >> 24) & 0xff,
                (n >> 16) & 0xff,
                (n >> 8) & 0xff,
                n & 0xff
            );
            // XSTIM phones (minute-level windows) keep the run about a minute; whole-hour
            // Grandstream planning is covered by e2e_rollout.
            serde_json::json!({"mac": mac, "model": model_of(i), "family": "xstim"})
        })
        .collect();
    serde_json::from_value(serde_json::json!({
        "apiVersion": "phonefleet.io/v1alpha1", "kind": "PhoneSite",
        "metadata": {"name": name, "labels": {"fleet": "e2e"}},
        "spec": {"timeZone": zone, "maxConcurrentDownloads": cap, "phones": phones}
    }))
    .expect("site")
}

fn schedule() -> PhoneSchedule {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "phonefleet.io/v1alpha1", "kind": "PhoneSchedule",
        "metadata": {"name": SCHEDULE},
        "spec": {
            "siteSelector": {"matchLabels": {"fleet": "e2e"}},
            "provisioning": {
                "powerOn": true,
                // Phones without a slot yet learn theirs at the next check.
                "repeatedly": {"enabled": true, "everyMinutes": 20},
                "weekly": {"enabled": true, "intervalWeeks": 0, "inactivityMinutes": 0,
                           "window": {"start": "00:00", "end": "00:00"},
                           "days": ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"]},
                "flexible": {"enabled": false}
            },
            "firmware": {"version": TARGET, "file": "gxp2170fw.bin",
                         "models": ["GXP2170", "GRP2614", FAILING_MODEL]},
            "rollout": {
                "downloadMinutes": 3,
                "checkSpreadMinutes": 3,
                "stages": [{"name": "canary", "percent": 10}, {"name": "everyone", "percent": 100}],
                "successThresholdPercent": 80,
                "failureThresholdPercent": 5
            }
        }
    }))
    .expect("schedule")
}

/// A child process killed (and reaped) when dropped, however the test ends.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// Percent-encodes a query parameter value.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

type Http = HttpClient<hyper_util::client::legacy::connect::HttpConnector, Empty<Bytes>>;

async fn get(http: &Http, url: &str) -> Option<(u16, String)> {
    let resp = tokio::time::timeout(Duration::from_secs(10), http.get(url.parse().ok()?))
        .await
        .ok()?
        .ok()?;
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.ok()?.to_bytes();
    Some((status, String::from_utf8_lossy(&body).into_owned()))
}

/// A Prometheus server of our own: loopback, temporary storage, 1 s scrapes and rule
/// evaluations, the chart's rules file.
struct Prometheus {
    _process: KillOnDrop,
    base: String,
    http: Http,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    async fn start(target: SocketAddr, rules: &Path) -> Prometheus {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
                 rule_files:\n  - {rules}\n\
                 scrape_configs:\n  - job_name: phonefleet\n    static_configs:\n      - targets: ['{target}']\n",
                rules = rules.display()
            ),
        )
        .expect("write prometheus.yml");
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("prometheus.log")).expect("log");
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start prometheus ({e}): install the `prometheus` Debian package (.ci/run does)")
            });
        let prometheus = Prometheus {
            _process: KillOnDrop(child),
            base: format!("http://127.0.0.1:{port}"),
            http: HttpClient::builder(TokioExecutor::new()).build_http(),
            _dir: dir,
        };
        let ready = format!("{}/-/ready", prometheus.base);
        support::eventually("prometheus to be ready", Duration::from_secs(60), || {
            let (http, url) = (prometheus.http.clone(), ready.clone());
            async move { get(&http, &url).await.filter(|(s, _)| *s == 200) }
        })
        .await;
        prometheus
    }

    /// `/api/v1/query` of `expr`: the result vector, or the error Prometheus gave.
    async fn query(&self, expr: &str) -> Result<Vec<Value>, String> {
        let url = format!("{}/api/v1/query?query={}", self.base, encode(expr));
        let (status, body) = get(&self.http, &url)
            .await
            .ok_or_else(|| "no answer".to_owned())?;
        let v: Value = serde_json::from_str(&body).map_err(|e| format!("{e}: {body}"))?;
        if status != 200 || v["status"] != "success" {
            return Err(format!("HTTP {status}: {body}"));
        }
        Ok(v["data"]["result"].as_array().cloned().unwrap_or_default())
    }

    /// `(alertname, state)` of every pending or firing alert.
    async fn alerts(&self) -> Vec<(String, String, Value)> {
        let url = format!("{}/api/v1/alerts", self.base);
        let Some((200, body)) = get(&self.http, &url).await else {
            return Vec::new();
        };
        let v: Value = serde_json::from_str(&body).unwrap_or_default();
        v["data"]["alerts"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .map(|a| {
                (
                    a["labels"]["alertname"].as_str().unwrap_or("").to_owned(),
                    a["state"].as_str().unwrap_or("").to_owned(),
                    a["labels"].clone(),
                )
            })
            .collect()
    }
}

/// Every `targets[].expr` of every panel (rows included) of a dashboard.
fn panel_queries(dashboard: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut stack: Vec<&Value> = dashboard["panels"].as_array().unwrap().iter().collect();
    while let Some(panel) = stack.pop() {
        if let Some(inner) = panel["panels"].as_array() {
            stack.extend(inner.iter());
        }
        for target in panel["targets"].as_array().into_iter().flatten() {
            if let Some(expr) = target["expr"].as_str() {
                out.push((
                    panel["title"].as_str().unwrap_or("").to_owned(),
                    expr.to_owned(),
                ));
            }
        }
    }
    out
}

/// Replaces Grafana's variables by values of this run.
fn substitute(expr: &str, ns: &str, site: &str) -> String {
    expr.replace("$__rate_interval", "15s")
        .replace("${namespace}", ns)
        .replace("$namespace", ns)
        .replace("${schedule}", SCHEDULE)
        .replace("$schedule", SCHEDULE)
        .replace("${site}", site)
        .replace("$site", site)
}

/// The metric names an expression reads (for alerts whose condition must stay false here:
/// their inputs must at least exist, or the alert could never fire).
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let bytes = expr.as_bytes();
    let mut i = 0;
    while let Some(pos) = expr[i..].find("phonefleet_") {
        let start = i + pos;
        let mut end = start;
        while end < bytes.len() && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_') {
            end += 1;
        }
        names.insert(expr[start..end].to_owned());
        i = end;
    }
    names
}

fn promtool_check_metrics(text: &str) -> String {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool (install the `prometheus` Debian package)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // promtool prints nothing for a clean exposition; lint findings are printed (and exit 3).
    assert!(
        out.status.success() && report.trim().is_empty(),
        "promtool check metrics is not clean:\n{report}"
    );
    "clean".to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn prometheus_scrapes_a_rollout_every_panel_and_alert_has_data_and_a_halt_fires() {
    let cluster = support::cluster().await;
    cluster.apply_crds().await;
    let ns = cluster.namespace("metrics-e2e").await;
    let client = cluster.client().await;
    let clock = Clock::scaled(origin(), Utc::now(), SCALE);

    // The provisioning server, counting into the stats the metrics read.
    let firmware_dir = tempfile::tempdir().unwrap();
    for model in ["GXP2170", "GRP2614", FAILING_MODEL] {
        std::fs::write(
            firmware_dir.path().join(grandstream_image(model)),
            simulator::firmware_image(TARGET, 16 * 1024),
        )
        .unwrap();
    }
    let stats = ServerStats::new();
    let srv = server::start_with_stats(
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            scope: phonefleet::scope::WatchScope::namespace(ns.name.clone()),
            firmware_dir: Some(firmware_dir.path().to_path_buf()),
            replica_id: "e2e".into(),
            flush_interval: Duration::from_millis(200),
            // 16 KiB at 128 B/s: about two simulated minutes per download.
            download_rate: Some(128),
            chunk_bytes: 2048,
            busy_retry_after: Duration::from_secs(60),
            reboot_deadline: Duration::from_secs(15 * 60),
            ..ServerConfig::default()
        },
        client.clone(),
        clock,
        stats.clone(),
    )
    .await
    .expect("provisioning server");
    let server_url = format!("http://{}", srv.local_addr());

    // The metrics endpoint and the controller, as `phonefleet run` wires them.
    let metrics = Metrics::new(Some(stats.clone()), true).unwrap();
    let stop = CancellationToken::new();
    let endpoint = Endpoint::bind(SocketAddr::from(([127, 0, 0, 1], 0)), metrics.clone())
        .await
        .unwrap();
    let metrics_addr = endpoint.local_addr().unwrap();
    tokio::spawn(endpoint.serve(stop.clone().cancelled_owned()));
    let controller_task = tokio::spawn(controller::run(
        client.clone(),
        clock,
        ControllerConfig {
            scope: phonefleet::scope::WatchScope::namespace(ns.name.clone()),
            server_url: server_url.parse().unwrap(),
            lease: None,
            instance: "metrics-e2e".into(),
        },
        metrics.clone(),
        stop.clone(),
    ));
    // The fleet.
    let sites: Vec<PhoneSite> = SITES
        .iter()
        .enumerate()
        .map(|(i, (name, zone, cap))| site(name, zone, *cap, i as u64))
        .collect();
    let site_api: Api<PhoneSite> = Api::namespaced(client.clone(), &ns.name);
    for s in &sites {
        site_api
            .create(&PostParams::default(), s)
            .await
            .expect("create site");
    }
    Api::<PhoneSchedule>::namespaced(client.clone(), &ns.name)
        .create(&PostParams::default(), &schedule())
        .await
        .expect("create schedule");

    // Ready once the server has indexed the rendered configs and the caches are synced.
    phonefleet::metrics::follow_server_readiness(&metrics, || srv.is_ready(), &stop).await;
    let readyz = format!("http://{metrics_addr}/readyz");
    support::eventually("/readyz to answer 200", Duration::from_secs(60), || {
        let url = readyz.clone();
        async move {
            let http: Http = HttpClient::builder(TokioExecutor::new()).build_http();
            get(&http, &url).await.filter(|(s, _)| *s == 200)
        }
    })
    .await;

    // Prometheus, scraping the metrics endpoint with the chart's rules.
    let rules_path = support::repo_root().join("charts/phonefleet/rules/phonefleet-rules.yaml");
    let prometheus = Prometheus::start(metrics_addr, &rules_path).await;

    // The phones boot once the server serves the controller's files
    // (`support::simulation::wait_until_served`).
    let sim_sites = simulator::sites_from(&sites).expect("sites");
    support::simulation::wait_until_served(&server_url, &sim_sites, Duration::from_secs(120)).await;

    // The phones.
    let mut sim = SimConfig::new(server_url.clone(), sim_sites);
    sim.fail_models = vec![FAILING_MODEL.into()];
    sim.duration = Duration::from_secs(7 * 24 * 3600);
    sim.boot_spread = Duration::from_secs(10 * 60);
    sim.stop_when_settled = true;
    let sim_task = tokio::spawn(simulator::run(sim, clock));

    // What must be seen.
    let dashboards: Vec<(String, Value)> = ["fleet-overview.json", "site-drilldown.json"]
        .iter()
        .map(|f| {
            let path = support::repo_root()
                .join("charts/phonefleet/dashboards")
                .join(f);
            let text = std::fs::read_to_string(&path).unwrap();
            (f.to_string(), serde_json::from_str(&text).unwrap())
        })
        .collect();
    let mut panel_exprs: BTreeMap<String, String> = BTreeMap::new();
    for (file, d) in &dashboards {
        // Template variables: `label_values(selector, label)` must list values too.
        for var in d["templating"]["list"].as_array().unwrap() {
            if var["type"] != "query" {
                continue;
            }
            let q = var["definition"].as_str().unwrap();
            let inner = q
                .strip_prefix("label_values(")
                .and_then(|r| r.strip_suffix(')'))
                .unwrap_or_else(|| panic!("{file}: unexpected variable query {q}"));
            let (selector, label) = inner.rsplit_once(',').unwrap();
            let expr = format!("count by ({}) ({selector})", label.trim());
            panel_exprs.insert(
                substitute(&expr, &ns.name, "paris"),
                format!("{file}: variable {}", var["name"]),
            );
        }
        for (title, expr) in panel_queries(d) {
            panel_exprs.insert(
                substitute(&expr, &ns.name, "paris"),
                format!("{file}: {title}"),
            );
        }
    }
    let rules: Value =
        serde_yaml_ng::from_str(&std::fs::read_to_string(&rules_path).unwrap()).unwrap();
    let alert_rules: Vec<(String, String)> = rules["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap().iter())
        .map(|r| {
            (
                r["alert"].as_str().unwrap().to_owned(),
                r["expr"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let mut alert_inputs: BTreeSet<String> = alert_rules
        .iter()
        .flat_map(|(_, e)| metric_names(e))
        .collect();
    alert_inputs.insert("up{job=\"phonefleet\"}".into());

    let mut seen_panels: BTreeSet<String> = BTreeSet::new();
    let mut seen_inputs: BTreeSet<String> = BTreeSet::new();
    let mut halted_expr_data = false;
    let mut halted_fired = false;
    let mut stage_two_seen = false;
    let mut max_series = 0usize;
    let mut max_per_metric: BTreeMap<String, usize> = BTreeMap::new();
    let mut checked_scrape = None;
    let start = Instant::now();
    let mut simulation_ended: Option<Instant> = None;
    let http: Http = HttpClient::builder(TokioExecutor::new()).build_http();
    loop {
        // A live scrape, checked by promtool once it holds the server's and the
        // controller's series.
        if checked_scrape.is_none()
            && let Some((200, text)) = get(&http, &format!("http://{metrics_addr}/metrics")).await
            && text.contains("phonefleet_phones{")
            && text.contains("phonefleet_downloads_in_flight{")
        {
            checked_scrape = Some(promtool_check_metrics(&text));
        }
        for (expr, what) in &panel_exprs {
            if seen_panels.contains(expr) {
                continue;
            }
            match prometheus.query(expr).await {
                Ok(result) if !result.is_empty() => {
                    seen_panels.insert(expr.clone());
                }
                Ok(_) => {}
                Err(e) => panic!("{what}: `{expr}` is not a valid query: {e}"),
            }
        }
        for input in &alert_inputs {
            if !seen_inputs.contains(input)
                && prometheus.query(input).await.is_ok_and(|r| !r.is_empty())
            {
                seen_inputs.insert(input.clone());
            }
        }
        for (name, expr) in &alert_rules {
            let result = prometheus
                .query(expr)
                .await
                .unwrap_or_else(|e| panic!("alert {name}: `{expr}` is not a valid query: {e}"));
            match name.as_str() {
                "PhonefleetRolloutHalted" => halted_expr_data |= !result.is_empty(),
                "PhonefleetSiteOverCap" => {
                    assert!(result.is_empty(), "over the cap: {result:?}")
                }
                _ => {}
            }
        }
        for (name, state, labels) in prometheus.alerts().await {
            match name.as_str() {
                "PhonefleetRolloutHalted" if state == "firing" => {
                    assert_eq!(labels["model"], FAILING_MODEL, "{labels}");
                    assert_eq!(labels["schedule"], SCHEDULE, "{labels}");
                    halted_fired = true;
                }
                // Pending is fine (PhonefleetDown is, before the first scrape); the over-cap
                // expression is checked above to stay empty at every evaluation.
                _ if state != "firing" => {}
                other => panic!("alert {other} fires in a healthy run: {labels}"),
            }
        }
        if let Ok(r) = prometheus
            .query(&format!(
                "phonefleet_rollout_stage{{namespace=\"{}\",stage=\"everyone\"}} == 1",
                ns.name
            ))
            .await
        {
            stage_two_seen |= !r.is_empty();
        }
        if let Ok(r) = prometheus
            .query("count({__name__=~\"phonefleet_.*\"})")
            .await
            && let Some(n) = r.first().and_then(|v| v["value"][1].as_str())
        {
            max_series = max_series.max(n.parse().unwrap_or(0));
        }
        if let Ok(r) = prometheus
            .query("count by (__name__) ({__name__=~\"phonefleet_.*\"})")
            .await
        {
            for v in r {
                let name = v["metric"]["__name__"].as_str().unwrap_or("").to_owned();
                let n: usize = v["value"][1].as_str().unwrap_or("0").parse().unwrap_or(0);
                let e = max_per_metric.entry(name).or_default();
                *e = (*e).max(n);
            }
        }
        let done = seen_panels.len() == panel_exprs.len()
            && seen_inputs.len() == alert_inputs.len()
            && halted_expr_data
            && halted_fired
            && stage_two_seen
            && checked_scrape.is_some();
        if done {
            break;
        }
        if sim_task.is_finished() && simulation_ended.is_none() {
            simulation_ended = Some(Instant::now());
        }
        if simulation_ended.is_some_and(|t| t.elapsed() > AFTER_SIMULATION) {
            let missing_panels: Vec<_> = panel_exprs
                .iter()
                .filter(|(e, _)| !seen_panels.contains(*e))
                .map(|(e, w)| format!("{w}: {e}"))
                .collect();
            let missing_inputs: Vec<_> = alert_inputs.difference(&seen_inputs).collect();
            panic!(
                "{AFTER_SIMULATION:?} after the simulation: panels without data {missing_panels:#?}; alert inputs \
                 without data {missing_inputs:?}; halted alert data {halted_expr_data}, fired \
                 {halted_fired}; stage two released {stage_two_seen}; scrape checked {}",
                checked_scrape.is_some()
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // The cap held on the server side too (peaks between scrapes included).
    for (name, _, cap) in SITES {
        let peak = stats
            .site(name)
            .peak_in_flight
            .load(std::sync::atomic::Ordering::SeqCst);
        assert!(
            peak <= cap,
            "site {name}: {peak} downloads at once, cap {cap}"
        );
    }
    eprintln!(
        "metrics e2e: {} panel and variable queries and {} alert rules evaluated in {:?}; promtool: {}",
        panel_exprs.len(),
        alert_rules.len(),
        start.elapsed(),
        checked_scrape.unwrap_or_default().trim()
    );
    eprintln!("metrics e2e: largest phonefleet_* series count {max_series}");
    for (name, n) in &max_per_metric {
        eprintln!("metrics e2e:   {name} {n}");
    }

    sim_task.abort();
    stop.cancel();
    controller_task
        .await
        .expect("controller task")
        .expect("controller run");
    srv.shutdown().await;
    drop(prometheus);
}
