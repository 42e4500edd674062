//! The provisioning access log: one line per request with the phone's MAC, family, file,
//! status, bytes, duration and refusal reason, in the process's log format (`--log-format`);
//! `refusals` logs only error answers, `none` nothing, and sampling keeps one in N.
//!
//! Each test installs the log subscriber `phonefleet run` builds for its `--log-format`, writing
//! to a buffer, for its own thread: `#[tokio::test]` runs the server's tasks on that thread.

mod support;

use std::io::Write;
use std::sync::{Arc, Mutex};

use phonefleet::run::{LogFormat, log_subscriber};
use phonefleet::server::access_log::{AccessLogConfig, AccessLogMode};
use phonefleet::server::{ServerConfig, ServerStats};
use serde_json::Value;
use support::provisioning::{self as prov, TestPhone};

/// A log destination the test reads back.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log buffer").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Captured {
        self.clone()
    }
}

impl Captured {
    /// The log so far, without the terminal colours the text format adds.
    fn text(&self) -> String {
        let raw = String::from_utf8_lossy(&self.0.lock().expect("log buffer")).into_owned();
        let mut out = String::with_capacity(raw.len());
        let mut chars = raw.chars();
        while let Some(c) = chars.next() {
            if c == '\u{1b}' {
                // An SGR sequence: ESC [ ... m
                for c in chars.by_ref() {
                    if c == 'm' {
                        break;
                    }
                }
            } else {
                out.push(c);
            }
        }
        out
    }

    /// The access log's JSON lines so far.
    fn access(&self) -> Vec<Value> {
        self.text()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v["target"] == "phonefleet::access")
            .collect()
    }
}

fn install(format: LogFormat) -> (Captured, tracing::subscriber::DefaultGuard) {
    let captured = Captured::default();
    let subscriber = log_subscriber(format, "info,kube=warn".into(), captured.clone());
    let guard = tracing::subscriber::set_default(subscriber);
    (captured, guard)
}

/// Phone 0 is inside its slot, phone 1 has none.
fn phones() -> Vec<TestPhone> {
    vec![
        TestPhone {
            mac: prov::mac(0),
            slot: prov::now_slot(),
        },
        TestPhone {
            mac: prov::mac(1),
            slot: None,
        },
    ]
}

fn with_log(config: ServerConfig, mode: AccessLogMode, sample: u32) -> ServerConfig {
    ServerConfig {
        access_log: AccessLogConfig { mode, sample },
        ..config
    }
}

const IMAGE: usize = 100_000;

/// A config, a firmware download, a refused firmware request, an unknown phone and a probe.
async fn requests(addr: std::net::SocketAddr) {
    let http = prov::http();
    let (in_slot, no_slot) = (prov::mac(0), prov::mac(1));
    let ua = prov::ua(in_slot, prov::OLD);
    let config = format!("/cfg{}.xml", in_slot.bare());
    let r = prov::get(&http, addr, &config, &[("user-agent", &ua)]).await;
    assert_eq!(r.status, 200);
    let r = prov::get(&http, addr, &prov::firmware_path(), &[("user-agent", &ua)]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body.len(), IMAGE);
    let ua = prov::ua(no_slot, prov::OLD);
    let r = prov::get(&http, addr, &prov::firmware_path(), &[("user-agent", &ua)]).await;
    assert_eq!(r.status, 503);
    let unknown = format!("/cfg{}.xml", prov::mac(77).bare());
    let r = prov::get(&http, addr, &unknown, &[]).await;
    assert_eq!(r.status, 404);
    let r = prov::get(&http, addr, "/healthz", &[]).await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn every_request_gets_a_json_line_with_its_fields() {
    let (log, _guard) = install(LogFormat::Json);
    let f = prov::fixture("access-json", 2, &phones(), IMAGE).await;
    let config = with_log(f.config("a"), AccessLogMode::All, 1);
    let server = prov::started(config, f.client.clone(), ServerStats::new()).await;
    requests(server.local_addr()).await;
    // A line is written when its answer's body is done, just after the client has it all.
    let lines = support::eventually(
        "four access lines",
        std::time::Duration::from_secs(30),
        || {
            let lines = log.access();
            async move { (lines.len() >= 4).then_some(lines) }
        },
    )
    .await;
    server.shutdown().await;
    assert_eq!(lines.len(), 4, "no line for the probe: {lines:#?}");
    let in_slot = prov::mac(0).bare().to_string();
    // Lines are written as bodies end: found by their file and status, not their order.
    let find = |file: &str, status: u16| {
        lines
            .iter()
            .find(|l| l["file"] == file && l["status"] == status)
            .unwrap_or_else(|| panic!("no line for {file} {status}: {lines:#?}"))
    };
    let config = find(&format!("/cfg{in_slot}.xml"), 200);
    assert_eq!(config["mac"], in_slot.as_str());
    assert_eq!(config["family"], "grandstream");
    assert_eq!(config["model"], "GXP2170");
    let body = f.files.get(&format!("cfg{in_slot}.xml")).expect("file");
    assert_eq!(config["bytes"], body.len());
    assert_eq!(config["outcome"], "config_served");
    assert!(config["duration_ms"].is_u64(), "{config}");
    assert!(config.get("refusal").is_none(), "{config}");
    let download = find(&prov::firmware_path(), 200);
    assert_eq!(download["mac"], in_slot.as_str());
    assert_eq!(download["bytes"], IMAGE, "the bytes that went out");
    assert_eq!(download["outcome"], "firmware_served");
    let refused = find(&prov::firmware_path(), 503);
    assert_eq!(refused["mac"], prov::mac(1).bare().to_string());
    assert_eq!(refused["refusal"], "noSlot");
    assert_eq!(refused["outcome"], "outside_slot");
    let unknown = find(&format!("/cfg{}.xml", prov::mac(77).bare()), 404);
    assert_eq!(unknown["mac"], prov::mac(77).bare().to_string());
    assert!(unknown.get("family").is_none(), "{unknown}");
    f.ns.delete().await;
}

#[tokio::test]
async fn refusals_only_sampled_text_and_none() {
    let (log, _guard) = install(LogFormat::Text);
    let f = prov::fixture("access-text", 2, &phones(), IMAGE).await;
    let access = |log: &Captured| {
        log.text()
            .lines()
            .filter(|l| l.contains("phonefleet::access"))
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };

    // Refusals: the 503 and the 404 only, as text lines with the fields.
    let config = with_log(f.config("r"), AccessLogMode::Refusals, 1);
    let server = prov::started(config, f.client.clone(), ServerStats::new()).await;
    requests(server.local_addr()).await;
    server.shutdown().await;
    let lines = access(&log);
    assert_eq!(lines.len(), 2, "{lines:#?}");
    let refused = prov::mac(1).bare().to_string();
    assert!(
        lines.iter().any(|l| l.contains("status=503")
            && l.contains("refusal=\"noSlot\"")
            && l.contains(&refused)),
        "{lines:#?}"
    );
    assert!(lines.iter().any(|l| l.contains("status=404")), "{lines:#?}");

    // One in two of everything: two of the four.
    let config = with_log(f.config("s"), AccessLogMode::All, 2);
    let server = prov::started(config, f.client.clone(), ServerStats::new()).await;
    requests(server.local_addr()).await;
    server.shutdown().await;
    assert_eq!(access(&log).len(), 4, "{:#?}", access(&log));

    // None: not a line more.
    let config = with_log(f.config("n"), AccessLogMode::Off, 1);
    let server = prov::started(config, f.client.clone(), ServerStats::new()).await;
    requests(server.local_addr()).await;
    server.shutdown().await;
    assert_eq!(access(&log).len(), 4, "{:#?}", access(&log));
    assert!(
        log.text().contains("provisioning server listening"),
        "the other logs still flow"
    );
    f.ns.delete().await;
}
