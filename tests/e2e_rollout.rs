//! End to end on the real control plane: controller and provisioning server (`phonefleet
//! run`) with simulated phones (`phonefleet simulate`) over real HTTP on a compressed clock:
//! two thousand phones over ten sites with caps from five to twenty and a canary stage, one
//! model's firmware never coming back, and the controller and server killed with SIGKILL and
//! started again mid-rollout.
#![cfg(feature = "simulated-time")]

mod support;

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};

use chrono::{SecondsFormat, Utc};
use kube::api::Api;
use phonefleet::api::PhoneSchedule;
use support::simulation::{SimulatorProcess, until_simulated};

const ORIGIN: &str = "2026-01-05T00:00:00Z";
/// Twenty simulated minutes per real second.
const SCALE: &str = "1200";
const SITES: usize = 10;
const PHONES_PER_SITE: usize = 200;
const CAPS: [u32; SITES] = [5, 6, 8, 10, 12, 14, 15, 16, 18, 20];
/// The simulation's budget in simulated hours: the plan completes in under three days
/// (whole-hour Grandstream slots).
const SIMULATED_HOURS: &str = "240";

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// The fleet's three phone families: Yealink SIP-T46U (the bad model) and Grandstream
/// GXP2170 placed by their model names, XSTIM phones by `family: xstim`.
fn model(site: usize, phone: usize) -> &'static str {
    match (site + phone) % 3 {
        0 => "SIP-T46U",
        1 => "GXP2170",
        _ => "XSTIM",
    }
}

fn healthy(model: &str) -> bool {
    model != "SIP-T46U"
}

/// The inventory's `family` for models no table places.
fn family_field(model: &str) -> &'static str {
    if model == "XSTIM" {
        ", family: xstim"
    } else {
        ""
    }
}

fn fleet(namespace: &str) -> String {
    let mut out = format!(
        r#"apiVersion: phonefleet.io/v1alpha1
kind: PhoneSchedule
metadata: {{name: fleet, namespace: {namespace}}}
spec:
  siteSelector: {{matchLabels: {{e2e: "yes"}}}}
  provisioning:
    powerOn: true
    # Phones only learn their slot when they fetch their file: checking every 30 minutes
    # outside slots lets a released stage reach them within half an hour.
    repeatedly: {{enabled: true, everyMinutes: 30}}
    weekly: {{enabled: true, window: {{start: "00:00", end: "00:00"}}, days: [Sun, Mon, Tue, Wed, Thu, Fri, Sat]}}
  firmware: {{version: 2.0.0, file: gxp2170fw.bin, sizeBytes: 65536, models: [GXP2170, SIP-T46U, XSTIM]}}
  rollout:
    downloadMinutes: 5
    checkSpreadMinutes: 5
    stages: [{{name: canary, percent: 2}}, {{name: early, percent: 30}}, {{name: everyone, percent: 100}}]
    successThresholdPercent: 95
    failureThresholdPercent: 10
"#
    );
    let zones = [
        "UTC",
        "Europe/Paris",
        "America/New_York",
        "Asia/Tokyo",
        "Australia/Sydney",
    ];
    for site in 0..SITES {
        out.push_str(&format!(
            "---\napiVersion: phonefleet.io/v1alpha1\nkind: PhoneSite\nmetadata: {{name: site-{site}, namespace: {namespace}, labels: {{e2e: \"yes\"}}}}\nspec:\n  timeZone: {}\n  maxConcurrentDownloads: {}\n  phones:\n",
            zones[site % zones.len()],
            CAPS[site]
        ));
        for phone in 0..PHONES_PER_SITE {
            out.push_str(&format!(
                "  - {{mac: '00:0b:82:{site:02x}:{:02x}:{:02x}', model: {}{}}}\n",
                phone / 256,
                phone % 256,
                model(site, phone),
                family_field(model(site, phone))
            ));
        }
    }
    out
}

/// `phonefleet run` (controller + provisioning server) as a child process.
struct Run {
    child: Child,
    log: PathBuf,
}

impl Run {
    fn start(
        cluster: &support::TestCluster,
        ns: &str,
        dir: &Path,
        addr: SocketAddr,
        clock: &[String],
        upstream: Option<&str>,
    ) -> Run {
        let log = dir.join(format!("run-{}.log", Utc::now().timestamp_millis()));
        let file = std::fs::File::create(&log).expect("log");
        let child = Command::new(env!("CARGO_BIN_EXE_phonefleet"))
            .args(["run", "--namespace", ns])
            .arg(format!("--server-url=http://{addr}"))
            .arg(format!("--provisioning-listen={addr}"))
            .arg(format!("--firmware-dir={}", dir.join("firmware").display()))
            // Two simulated hours (six real seconds at this scale) to come back from a reboot:
            // a phone slowed by a loaded machine is not counted failed, which in the canary
            // could halt a healthy model.
            .args(["--reboot-deadline-minutes", "120"])
            .args([
                "--token-lease-seconds",
                "3",
                "--metrics-listen",
                "127.0.0.1:0",
            ])
            .args(clock)
            .args(upstream.map(|u| format!("--upstream={u}")))
            // The upstream timeout is real time (a network timeout), while the phones live on
            // the compressed clock: the default 5 s is 100 simulated minutes, and at the boot
            // storm a loaded machine can queue 2000 merged-file requests (each one a request
            // to nginx, through at most --upstream-max-connections) past it. A phone whose
            // first check gets a 502 has no schedule yet and never checks again, so here the
            // timeout is generous: nginx on loopback either answers or is gone, and waiting
            // costs the test real time, not phones.
            .args(upstream.map(|_| "--upstream-timeout=120"))
            .env("KUBECONFIG", &cluster.kubeconfig)
            .env("RUST_LOG", "info,kube=warn")
            .env("NO_COLOR", "1")
            .stdout(file.try_clone().expect("log"))
            .stderr(file)
            .spawn()
            .expect("spawn phonefleet run");
        Run { child, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn kill_9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        self.kill_9();
    }
}

async fn schedule(client: &kube::Client, ns: &str) -> PhoneSchedule {
    Api::<PhoneSchedule>::namespaced(client.clone(), ns)
        .get("fleet")
        .await
        .expect("schedule")
}

/// The two rollouts of this file run one after the other: each needs the machine's cores for
/// its compressed clock.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_rollout_upgrades_every_healthy_phone_under_the_caps_and_halts_the_bad_model() {
    let _one = ONE_AT_A_TIME.lock().await;
    rollout("e2e", false).await;
}

/// Issue #14: the same rollout with phonefleet in overlay mode in front of nginx serving every
/// phone a file of its own (SIP account, and schedule keys phonefleet overrides) and common
/// files: the same results, and the phones' files keep the upstream's settings.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_rollout_through_the_overlay_in_front_of_nginx_gives_the_same_results() {
    let _one = ONE_AT_A_TIME.lock().await;
    rollout("e2e-overlay", true).await;
}

/// The MAC of `phone` at `site`, bare (as in file names).
fn bare_mac(site: usize, phone: usize) -> String {
    format!("000b82{site:02x}{:02x}{:02x}", phone / 256, phone % 256)
}

/// The old provisioning server's directory: a file per phone, in its family's format, with a
/// SIP account and schedule keys of its own, and common files.
fn upstream_files(dir: &Path) {
    for site in 0..SITES {
        for phone in 0..PHONES_PER_SITE {
            let mac = bare_mac(site, phone);
            let n = site * 1000 + phone;
            let (name, body) = if model(site, phone) == "SIP-T46U" {
                (
                    format!("{mac}.cfg"),
                    format!(
                        "#!version:1.0.0.1\n# extension {n}\naccount.1.enable = 1\naccount.1.user_name = {n}\naccount.1.password = sip-secret-{n}\nstatic.auto_provision.power_on = 0\nstatic.auto_provision.repeat.minutes = 10080\n"
                    ),
                )
            } else {
                // Schedule keys phonefleet replaces: Grandstream's P194 with a mode phonefleet
                // never writes, XSTIM's power-on switch off.
                let own = if model(site, phone) == "GXP2170" {
                    "<P194>7</P194>"
                } else {
                    "<P25020>0</P25020>"
                };
                (
                    format!("cfg{mac}.xml"),
                    format!(
                        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<gs_provision version=\"1\">\n  <config version=\"1\">\n    <!-- extension {n} -->\n    <P271>1</P271>\n    <P35>{n}</P35>\n    <P34>sip-secret-{n}</P34>\n    {own}\n  </config>\n</gs_provision>\n"
                    ),
                )
            };
            std::fs::write(dir.join(name), body).expect("upstream file");
        }
    }
    std::fs::write(
        dir.join("y000000000108.cfg"),
        "#!version:1.0.0.1\nlang.gui = English\n",
    )
    .expect("common file");
}

async fn rollout(prefix: &str, overlay: bool) {
    let cluster = support::cluster().await;
    cluster.apply_crds().await;
    let ns = cluster.namespace(prefix).await;
    let client = cluster.client().await;
    let mut dir = tempfile::tempdir().expect("temp dir");
    if std::env::var_os("PHONEFLEET_E2E_KEEP").is_some() {
        dir.disable_cleanup(true);
        eprintln!("e2e: logs kept in {}", dir.path().display());
    }
    std::fs::create_dir_all(dir.path().join("firmware")).expect("firmware dir");
    // Grandstream and XSTIM phones append their own image name to P192's directory.
    for image in ["gxp2170fw.bin", "xstimfw.bin"] {
        std::fs::write(
            dir.path().join("firmware").join(image),
            phonefleet::simulator::firmware_image("2.0.0", 64 * 1024),
        )
        .expect("firmware");
    }
    let manifest = dir.path().join("fleet.yaml");
    std::fs::write(&manifest, fleet(&ns.name)).expect("fleet");
    cluster.kubectl_ok(&[
        "apply",
        "--server-side",
        "-f",
        manifest.to_str().expect("path"),
    ]);

    let upstream_dir = tempfile::tempdir().expect("temp dir");
    let nginx = if overlay {
        upstream_files(upstream_dir.path());
        Some(support::nginx::Nginx::start(upstream_dir.path(), None).await)
    } else {
        None
    };
    let upstream = nginx.as_ref().map(|n| n.url());

    let addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let real_origin = Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true);
    let clock = vec![
        format!("--time-origin={ORIGIN}"),
        format!("--time-scale={SCALE}"),
        format!("--time-real-origin={real_origin}"),
    ];
    let mut first = Run::start(
        cluster,
        &ns.name,
        dir.path(),
        addr,
        &clock,
        upstream.as_deref(),
    );
    let (kubectl, kubeconfig, namespace) = (
        cluster.bin_dir.join("kubectl"),
        cluster.kubeconfig.clone(),
        ns.name.clone(),
    );
    let ready = tokio::task::spawn_blocking(move || {
        Command::new(kubectl)
            .env("KUBECONFIG", kubeconfig)
            .args([
                "wait",
                "--for=condition=Ready",
                "--timeout=120s",
                "-n",
                &namespace,
            ])
            .arg("phoneschedule/fleet")
            .output()
            .expect("kubectl wait")
    })
    .await
    .expect("join");
    assert!(ready.status.success(), "not Ready:\n{}", first.log());

    // The phones: all boot at once (a storm), and site-3 loses power three simulated hours in.
    // The simulated budget is ten days, several times what the plan predicts (under three):
    // the test ends the simulation itself once the controller has counted every healthy phone,
    // so a slow machine costs real time, not the verdict (see tests/support/simulation.rs).
    let mut sim_args: Vec<String> = [
        "--hours",
        SIMULATED_HOURS,
        "--seed",
        "7",
        "--fail-model",
        "SIP-T46U",
        "--power-cut",
        "site-3=2026-01-05T03:00:00Z",
        "--boot-spread-minutes",
        "0",
    ]
    .map(String::from)
    .to_vec();
    sim_args.extend(clock.iter().cloned());
    let mut simulator = SimulatorProcess::start(
        &cluster.kubeconfig,
        &ns.name,
        &format!("http://{addr}"),
        &sim_args,
    );

    // Mid-rollout: kill -9 controller and server together, start them again at once.
    let upgraded_at_kill = until_simulated("a fifth of the fleet upgraded", &mut simulator, || {
        let client = client.clone();
        let ns = ns.name.clone();
        async move {
            let s = schedule(&client, &ns).await.status?;
            let upgraded = s.counts.as_ref()?.upgraded;
            (upgraded >= 400).then_some(upgraded)
        }
    })
    .await;
    first.kill_9();
    let first_log = first.log();
    let second = Run::start(
        cluster,
        &ns.name,
        dir.path(),
        addr,
        &clock,
        upstream.as_deref(),
    );

    let healthy_total: u32 = (0..SITES)
        .map(|site| {
            (0..PHONES_PER_SITE)
                .filter(|p| healthy(model(site, *p)))
                .count() as u32
        })
        .sum();
    // Status lines as they change, so a failure shows where the rollout stood.
    let last_seen = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    until_simulated(
        "the controller to count every healthy phone upgraded",
        &mut simulator,
        || {
            let (client, ns, last_seen) = (client.clone(), ns.name.clone(), last_seen.clone());
            async move {
                let s = schedule(&client, &ns).await.status?;
                let line = format!(
                    "{:?} stage {:?} counts {:?} halted {:?} next {:?}",
                    s.phase,
                    s.stage,
                    s.counts,
                    s.rollout.as_ref().map(|r| &r.halted_models),
                    s.next_window
                );
                if let Ok(mut last) = last_seen.lock()
                    && *last != line
                {
                    eprintln!("e2e: {line}");
                    *last = line;
                }
                (s.counts.as_ref()?.upgraded == healthy_total).then_some(())
            }
        },
    )
    .await;
    let summary = simulator.stop();

    let final_status = schedule(&client, &ns.name)
        .await
        .status
        .unwrap_or_else(|| panic!("a status\n{}", second.log()));

    let mut failed_total = 0;
    for site in 0..SITES {
        let s = &summary["sites"][format!("site-{site}")];
        let healthy = (0..PHONES_PER_SITE)
            .filter(|p| healthy(model(site, *p)))
            .count() as u64;
        let cap = u64::from(CAPS[site]);
        let (upgraded, failed) = (
            s["upgraded"].as_u64().unwrap_or(0),
            s["failed"].as_u64().unwrap_or(0),
        );
        let peak = s["peakConcurrentDownloads"].as_u64().unwrap_or(u64::MAX);
        let completed = s["downloadsCompleted"].as_u64().unwrap_or(0);
        println!(
            "site-{site}: cap {cap}, peak {peak}, upgraded {upgraded}/{healthy}, failed {failed}, downloads {completed}, errors {}",
            s["errors"]
        );
        assert_eq!(
            upgraded, healthy,
            "site-{site}: every healthy phone upgraded\n{summary}"
        );
        assert!(
            peak <= cap,
            "site-{site}: {peak} concurrent downloads over cap {cap}\n{summary}"
        );
        assert!(peak >= 1);
        // Only canary phones of the bad model ever got its firmware: 2 % of 200 is 4 phones.
        assert!(
            failed <= 4,
            "site-{site}: {failed} phones bricked, beyond the canary\n{summary}"
        );
        assert_eq!(
            completed,
            upgraded + failed,
            "site-{site}: a phone downloaded twice\n{summary}"
        );
        failed_total += failed;
    }
    assert!(failed_total >= 1, "the bad model failed in the canary");
    let rollout = final_status.rollout.clone().expect("rollout status");
    assert_eq!(rollout.halted_models, ["SIP-T46U"]);
    assert_eq!(final_status.phase.as_deref(), Some("Halted"));
    assert_eq!(
        final_status.counts.as_ref().map(|c| u64::from(c.failed)),
        Some(failed_total)
    );
    assert!(upgraded_at_kill < 2000, "the kill happened mid-rollout");
    let events = cluster.kubectl_ok(&["get", "events", "-n", &ns.name]);
    assert!(
        events.contains("RolloutHalted") && events.contains("StageReleased"),
        "{events}"
    );
    assert!(!first_log.is_empty());
    if overlay {
        // The phones' files were the old server's with phonefleet's keys: one of each format.
        let http = support::provisioning::http();
        for (site, phone) in [(0, 0), (0, 1)] {
            let mac = bare_mac(site, phone);
            let path = if model(site, phone) == "SIP-T46U" {
                format!("/{mac}.cfg")
            } else {
                format!("/cfg{mac}.xml")
            };
            let reply = support::provisioning::get(&http, addr, &path, &[]).await;
            let body = String::from_utf8_lossy(&reply.body).into_owned();
            assert_eq!(reply.status, 200, "{path}");
            assert!(
                body.contains(&format!("sip-secret-{}", site * 1000 + phone)),
                "{path}: {body}"
            );
            assert!(
                !body.contains("power_on = 0") && !body.contains("<P194>7</P194>"),
                "{path}: {body}"
            );
        }
        let common = support::provisioning::get(&http, addr, "/y000000000108.cfg", &[]).await;
        assert_eq!(&common.body[..], b"#!version:1.0.0.1\nlang.gui = English\n");
    }
    drop(second);
    drop(nginx);
    ns.delete().await;
}
