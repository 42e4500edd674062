//! `kubectl phonefleet …` on the real API server, found by kubectl as plugins are (an
//! executable named `kubectl-phonefleet` on PATH), against a controller on the real clock; and
//! the NEXT WINDOW printer column on the real clock.

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Output;
use std::time::Duration;

use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::{Resource, ResourceExt};
use phonefleet::api::{PhoneSchedule, PhoneScheduleStatus};
use phonefleet::children::{
    COMPONENT_CONFIG, COMPONENT_PROGRESS, LABEL_COMPONENT, LABEL_MANAGED_BY, LABEL_SCHEDULE,
    MANAGED_BY, PhoneProgress, PhoneState, ShardIndex,
};
use phonefleet::clock::Clock;
use serde_json::Value;
use support::controller::RunningController;
use support::{TestCluster, eventually};

const SCHEDULE: &str = "night-rollout";
const WAIT: Duration = Duration::from_secs(60);

/// A directory holding `kubectl-phonefleet` (a link to the built binary), for PATH.
fn plugin_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    std::os::unix::fs::symlink(
        env!("CARGO_BIN_EXE_phonefleet"),
        dir.path().join("kubectl-phonefleet"),
    )
    .expect("link kubectl-phonefleet");
    dir
}

/// `kubectl <args>` with the plugin directory first on PATH, off the async runtime so that the
/// in-process controller keeps running.
async fn kubectl(cluster: &TestCluster, plugins: &Path, args: &[&str]) -> Output {
    let mut cmd = cluster.tool("kubectl");
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut paths = vec![plugins.to_path_buf()];
    paths.extend(std::env::split_paths(&path));
    cmd.env("PATH", std::env::join_paths(paths).expect("PATH"))
        .args(args);
    tokio::task::spawn_blocking(move || cmd.output().expect("run kubectl"))
        .await
        .expect("join kubectl")
}

async fn kubectl_ok(cluster: &TestCluster, plugins: &Path, args: &[&str]) -> String {
    let out = kubectl(cluster, plugins, args).await;
    assert!(
        out.status.success(),
        "kubectl {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

async fn status(api: &Api<PhoneSchedule>) -> PhoneScheduleStatus {
    api.get(SCHEDULE)
        .await
        .expect("schedule")
        .status
        .unwrap_or_default()
}

/// The shard indexes the controller wrote for the schedule (what the server serves from).
async fn indexes(client: &kube::Client, ns: &str) -> Vec<(String, ShardIndex)> {
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    cms.list(&ListParams::default().labels(&format!(
        "{LABEL_COMPONENT}={COMPONENT_CONFIG},{LABEL_SCHEDULE}={SCHEDULE}"
    )))
    .await
    .expect("list shards")
    .items
    .into_iter()
    .filter_map(|cm| {
        // The controller stores decisions; read them as the index view.
        let index = phonefleet::decision::shard_index(cm.data.as_ref()?)?.ok()?;
        Some((cm.name_any(), index))
    })
    .collect()
}

/// Records `state` for one phone as the provisioning server does: in the progress ConfigMap
/// of its shard, owned by the schedule.
async fn record_progress(
    client: &kube::Client,
    ns: &str,
    schedule: &PhoneSchedule,
    shard: &str,
    mac: &str,
    record: &PhoneProgress,
) {
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    let name = phonefleet::children::progress_map_name(shard);
    let mut cm = ConfigMap::default();
    cm.metadata.name = Some(name.clone());
    cm.metadata.labels = Some(BTreeMap::from([
        (LABEL_COMPONENT.into(), COMPONENT_PROGRESS.into()),
        (LABEL_MANAGED_BY.into(), MANAGED_BY.into()),
        (LABEL_SCHEDULE.into(), SCHEDULE.into()),
    ]));
    cm.metadata.owner_references = Some(vec![OwnerReference {
        api_version: "phonefleet.io/v1alpha1".into(),
        kind: "PhoneSchedule".into(),
        name: SCHEDULE.into(),
        uid: schedule.meta().uid.clone().expect("uid"),
        controller: Some(false),
        block_owner_deletion: Some(false),
    }]);
    cm.data = Some(BTreeMap::from([(
        mac.to_owned(),
        serde_json::to_string(record).expect("json"),
    )]));
    let mut body = serde_json::to_value(&cm).expect("json");
    body["apiVersion"] = "v1".into();
    body["kind"] = "ConfigMap".into();
    cms.patch(
        &name,
        &PatchParams::apply("test-provisioning").force(),
        &Patch::Apply(body),
    )
    .await
    .expect("write progress");
}

fn json(out: &str) -> Value {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("not JSON ({e}):\n{out}"))
}

fn has_event(report: &Value, reason: &str) -> bool {
    report["events"]
        .as_array()
        .is_some_and(|events| events.iter().any(|e| e["reason"] == reason))
}

/// Starts a real-clock controller on the example fleet in a fresh namespace.
async fn example(
    prefix: &str,
) -> (
    &'static TestCluster,
    support::TestNamespace,
    kube::Client,
    RunningController,
    tempfile::NamedTempFile,
) {
    let cluster = support::cluster().await;
    cluster.apply_crds().await;
    let ns = cluster.namespace(prefix).await;
    let client = cluster.client().await;
    let controller = RunningController::start(client.clone(), &ns.name, Clock::System);
    let file = support::fleet::apply_example_fleet(cluster, &ns.name);
    support::fleet::wait_ready(cluster, &ns.name, SCHEDULE).await;
    (cluster, ns, client, controller, file)
}

#[tokio::test]
async fn next_window_column_shows_a_future_instant_on_the_real_clock() {
    let (cluster, ns, client, controller, _file) = example("plugin-column").await;
    let api: Api<PhoneSchedule> = Api::namespaced(client.clone(), &ns.name);
    let next = eventually("a next window", WAIT, || async {
        status(&api).await.next_window
    })
    .await;
    assert!(next > Utc::now(), "the next window {next} is in the future");
    let table = cluster.kubectl_ok(&["get", "psched", SCHEDULE, "-n", &ns.name]);
    let mut lines = table.lines();
    let header = lines.next().unwrap_or_default();
    let row = lines.next().unwrap_or_default();
    let at = header.find("NEXT WINDOW").expect("NEXT WINDOW column");
    let cell = row[at..].split_whitespace().next().unwrap_or_default();
    assert!(!table.contains("<invalid>"), "{table}");
    let shown: DateTime<Utc> = cell
        .parse()
        .unwrap_or_else(|e| panic!("column {cell:?} is not an instant ({e}):\n{table}"));
    assert_eq!(shown, next, "{table}");
    controller.stop().await.expect("controller");
    ns.delete().await;
}

#[tokio::test]
async fn plugin_reads_status_plan_and_uses_kubeconfig_contexts() {
    let (cluster, ns, client, controller, file) = example("plugin-read").await;
    let plugins = plugin_dir();
    let dir = plugins.path();
    let api: Api<PhoneSchedule> = Api::namespaced(client.clone(), &ns.name);
    eventually("Progressing", WAIT, || async {
        (status(&api).await.phase.as_deref() == Some("Progressing")).then_some(())
    })
    .await;

    let text = kubectl_ok(
        cluster,
        dir,
        &["phonefleet", "status", SCHEDULE, "-n", &ns.name],
    )
    .await;
    for part in [
        "phase:       Progressing",
        "canary",
        "paris-hq",
        "gates:",
        "next window:",
    ] {
        assert!(text.contains(part), "status lacks {part:?}:\n{text}");
    }
    let report = json(
        &kubectl_ok(
            cluster,
            dir,
            &[
                "phonefleet",
                "status",
                SCHEDULE,
                "-n",
                &ns.name,
                "-o",
                "json",
            ],
        )
        .await,
    );
    assert_eq!(report["status"]["phase"], "Progressing");
    assert_eq!(report["firmware"], "1.0.11.23");
    let yaml = kubectl_ok(
        cluster,
        dir,
        &[
            "phonefleet",
            "status",
            SCHEDULE,
            "-n",
            &ns.name,
            "-o",
            "yaml",
        ],
    )
    .await;
    assert!(yaml.contains("phase: Progressing"), "{yaml}");
    let all = json(&kubectl_ok(cluster, dir, &["phonefleet", "status", "-A", "-o", "json"]).await);
    assert!(
        all.as_array()
            .is_some_and(|a| a.iter().any(|r| r["namespace"] == ns.name.as_str())),
        "-A lists every namespace"
    );

    // The live plan is the offline plan of the same objects (no phone has progress yet).
    let now = "2026-12-01T08:00:00Z";
    let live = kubectl_ok(
        cluster,
        dir,
        &[
            "phonefleet",
            "plan",
            SCHEDULE,
            "-n",
            &ns.name,
            "--now",
            now,
            "-o",
            "json",
        ],
    )
    .await;
    let offline = std::process::Command::new(env!("CARGO_BIN_EXE_phonefleet"))
        .args([
            "plan",
            "-f",
            file.path().to_str().expect("utf-8"),
            "--now",
            now,
            "-o",
            "json",
        ])
        .output()
        .expect("phonefleet plan");
    assert!(offline.status.success());
    assert_eq!(json(&live), json(&String::from_utf8_lossy(&offline.stdout)));

    // The context's namespace is the default, as with kubectl; --context picks a context.
    let kubeconfig = tempfile::NamedTempFile::new().expect("temp kubeconfig");
    std::fs::copy(&cluster.kubeconfig, kubeconfig.path()).expect("copy kubeconfig");
    let path = kubeconfig.path().to_str().expect("utf-8");
    cluster.kubectl_ok(&[
        "config",
        "set-context",
        "--current",
        "--namespace",
        &ns.name,
        "--kubeconfig",
        path,
    ]);
    let text = kubectl_ok(
        cluster,
        dir,
        &["phonefleet", "status", SCHEDULE, "--kubeconfig", path],
    )
    .await;
    assert!(text.contains(&format!("{}/{SCHEDULE}", ns.name)), "{text}");
    let wrong = kubectl(
        cluster,
        dir,
        &[
            "phonefleet",
            "status",
            SCHEDULE,
            "--kubeconfig",
            path,
            "--context",
            "nowhere",
        ],
    )
    .await;
    assert!(!wrong.status.success(), "an unknown context is an error");
    let missing = kubectl(
        cluster,
        dir,
        &["phonefleet", "status", "nope", "-n", &ns.name],
    )
    .await;
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("not found"),
        "{}",
        String::from_utf8_lossy(&missing.stderr)
    );

    let completion = kubectl_ok(cluster, dir, &["phonefleet", "completion", "bash"]).await;
    assert!(completion.contains("unhalt"), "{completion}");
    for shell in ["bash", "zsh", "fish"] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_phonefleet"))
            .args(["completion", shell])
            .output()
            .expect("phonefleet completion");
        let script = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && script.contains("simulate"),
            "{shell}"
        );
    }
    controller.stop().await.expect("controller");
    ns.delete().await;
}

#[tokio::test]
async fn plugin_steers_the_rollout_pause_promote_retry_unhalt() {
    let (cluster, ns, client, controller, _file) = example("plugin-steer").await;
    let plugins = plugin_dir();
    let dir = plugins.path();
    let n = ns.name.as_str();
    let api: Api<PhoneSchedule> = Api::namespaced(client.clone(), n);
    eventually("Progressing", WAIT, || async {
        (status(&api).await.phase.as_deref() == Some("Progressing")).then_some(())
    })
    .await;

    // pause: the spec field, the phase, and the served index loses its firmware.
    let out = kubectl_ok(cluster, dir, &["phonefleet", "pause", SCHEDULE, "-n", n]).await;
    assert!(out.contains("paused"), "{out}");
    assert!(api.get(SCHEDULE).await.expect("get").spec.rollout.paused);
    eventually("Paused, no firmware served", WAIT, || async {
        let paused = status(&api).await.phase.as_deref() == Some("Paused");
        let served = indexes(&client, n).await;
        (paused && !served.is_empty() && served.iter().all(|(_, i)| i.firmware.is_none()))
            .then_some(())
    })
    .await;
    kubectl_ok(cluster, dir, &["phonefleet", "resume", SCHEDULE, "-n", n]).await;
    eventually("Progressing, firmware served", WAIT, || async {
        let on = status(&api).await.phase.as_deref() == Some("Progressing");
        let served = indexes(&client, n).await;
        (on && served.iter().all(|(_, i)| i.firmware.is_some())).then_some(())
    })
    .await;

    // A canary phone fails: its model halts (one failure of a few canaries is over 5 %).
    let (shard, mac, model) = indexes(&client, n)
        .await
        .into_iter()
        .find_map(|(name, index)| {
            index
                .phones
                .iter()
                .find(|(_, p)| p.slot.is_some_and(|s| !s.held))
                .map(|(mac, p)| (name.clone(), mac.clone(), p.model.clone()))
        })
        .expect("a phone of the canary stage with a slot");
    let schedule = api.get(SCHEDULE).await.expect("schedule");
    record_progress(
        &client,
        n,
        &schedule,
        &shard,
        &mac,
        &PhoneProgress {
            state: PhoneState::Failed,
            version: Some("1.0.0".into()),
            target: "1.0.11.23".into(),
            since: Utc::now() - chrono::Duration::minutes(1),
        },
    )
    .await;
    eventually("the model halted", WAIT, || async {
        let s = status(&api).await;
        let halted = s.rollout.is_some_and(|r| r.halted_models.contains(&model));
        (halted && s.counts.is_some_and(|c| c.failed == 1)).then_some(())
    })
    .await;
    let refused = kubectl(
        cluster,
        dir,
        &[
            "phonefleet",
            "unhalt",
            SCHEDULE,
            "-n",
            n,
            "--model",
            "GRP2614",
        ],
    )
    .await;
    assert!(!refused.status.success(), "GRP2614 is not halted");

    // retry --mac: the failure no longer counts; the model stays halted until unhalted.
    kubectl_ok(
        cluster,
        dir,
        &["phonefleet", "retry", SCHEDULE, "-n", n, "--mac", &mac],
    )
    .await;
    let s = status(&api).await;
    assert_eq!(s.counts.as_ref().map(|c| c.failed), Some(0), "{s:?}");
    assert!(
        s.rollout
            .as_ref()
            .is_some_and(|r| r.halted_models.contains(&model))
    );
    let report = json(
        &kubectl_ok(
            cluster,
            dir,
            &["phonefleet", "status", SCHEDULE, "-n", n, "-o", "json"],
        )
        .await,
    );
    assert!(has_event(&report, "RetryRequested"), "{report:#}");

    // unhalt: the halt is lifted for the same version, recorded in status and an event, and the
    // phone is served a slot again.
    kubectl_ok(
        cluster,
        dir,
        &["phonefleet", "unhalt", SCHEDULE, "-n", n, "--model", &model],
    )
    .await;
    let s = status(&api).await;
    let rollout = s.rollout.expect("rollout");
    assert!(rollout.halted_models.is_empty(), "{rollout:?}");
    assert_eq!(rollout.firmware_version, "1.0.11.23");
    assert!(
        rollout
            .requests
            .iter()
            .any(|r| r.model.as_deref() == Some(model.as_str())),
        "{rollout:?}"
    );
    eventually("the phone served a slot again", WAIT, || async {
        indexes(&client, n)
            .await
            .iter()
            .any(|(_, i)| {
                i.phones
                    .get(&mac)
                    .is_some_and(|p| p.slot.is_some_and(|s| !s.held))
            })
            .then_some(())
    })
    .await;
    let report = json(
        &kubectl_ok(
            cluster,
            dir,
            &["phonefleet", "status", SCHEDULE, "-n", n, "-o", "json"],
        )
        .await,
    );
    assert!(has_event(&report, "ModelUnhalted"), "{report:#}");

    // promote: refused without --yes; with it, stage 2 is released and its phones get slots.
    let refused = kubectl(cluster, dir, &["phonefleet", "promote", SCHEDULE, "-n", n]).await;
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--yes"));
    assert_eq!(
        status(&api).await.rollout.expect("rollout").released_stage,
        0
    );
    let out = kubectl_ok(
        cluster,
        dir,
        &["phonefleet", "promote", SCHEDULE, "-n", n, "--yes"],
    )
    .await;
    assert!(out.contains("carried out"), "{out}");
    assert_eq!(
        status(&api).await.rollout.expect("rollout").released_stage,
        1
    );
    eventually("stage 2 slots served", WAIT, || async {
        indexes(&client, n)
            .await
            .iter()
            .any(|(_, i)| {
                i.phones
                    .values()
                    .any(|p| p.slot.is_some_and(|s| s.stage == 1 && !s.held))
            })
            .then_some(())
    })
    .await;
    let report = json(
        &kubectl_ok(
            cluster,
            dir,
            &["phonefleet", "status", SCHEDULE, "-n", n, "-o", "json"],
        )
        .await,
    );
    assert!(has_event(&report, "StagePromoted"), "{report:#}");

    // Carried out once: the controller does not repeat it on later reconciles.
    let handled = status(&api).await.rollout.expect("rollout").requests.len();
    assert_eq!(handled, 3, "promote, retry, unhalt");
    controller.stop().await.expect("controller");
    ns.delete().await;
}

/// The commands of docs/operating.md's sections, in order: `(heading, commands)`. Code blocks
/// preceded by a `<!-- not run: … -->` comment are skipped.
fn operating_guide() -> Vec<(String, Vec<String>)> {
    let text = std::fs::read_to_string(support::repo_root().join("docs/operating.md"))
        .expect("docs/operating.md");
    let mut sections: Vec<(String, Vec<String>)> = vec![(String::new(), Vec::new())];
    let (mut in_block, mut skip, mut previous) = (false, false, String::new());
    for line in text.lines() {
        if !in_block && line.starts_with('#') {
            sections.push((line.trim_start_matches('#').trim().to_owned(), Vec::new()));
        } else if !in_block && line == "```sh" {
            in_block = true;
            skip = previous.starts_with("<!-- not run:");
        } else if in_block && line == "```" {
            in_block = false;
        } else if in_block && !skip {
            let command = line.split(" #").next().unwrap_or_default().trim();
            if !command.is_empty() {
                sections
                    .last_mut()
                    .expect("a section")
                    .1
                    .push(command.to_owned());
            }
        }
        if !line.trim().is_empty() {
            previous = line.trim().to_owned();
        }
    }
    sections.retain(|(_, commands)| !commands.is_empty());
    sections
}

#[tokio::test]
async fn every_command_of_the_operating_guide_runs() {
    let cluster = support::cluster().await;
    cluster.apply_crds().await;
    let ns = cluster.namespace("plugin-guide").await;
    let client = cluster.client().await;
    let controller = RunningController::start(client.clone(), &ns.name, Clock::System);
    let plugins = plugin_dir();
    let fleet = support::fleet::example_fleet(&ns.name);
    let fleet_path = fleet.path().to_str().expect("utf-8").to_owned();
    let api: Api<PhoneSchedule> = Api::namespaced(client.clone(), &ns.name);
    let sections = operating_guide();
    let run: Vec<&str> = sections.iter().map(|(h, _)| h.as_str()).collect();
    for expected in [
        "Install",
        "The first schedule",
        "Watching",
        "Pausing",
        "Retrying failed phones",
        "Un-halting a model",
        "Releasing the next stage early",
        "A phone that never upgrades",
        "Upgrading phonefleet",
    ] {
        assert!(
            run.contains(&expected),
            "docs/operating.md lost the section {expected:?}: {run:?}"
        );
    }
    let mut halted_model = None;
    for (heading, commands) in &sections {
        if heading == "Un-halting a model" {
            // The guide's situation: a model halted by a failure.
            let (shard, mac) = indexes(&client, &ns.name)
                .await
                .into_iter()
                .find_map(|(name, index)| {
                    index
                        .phones
                        .iter()
                        .find(|(_, p)| p.slot.is_some_and(|s| !s.held))
                        .map(|(mac, p)| {
                            halted_model = Some(p.model.clone());
                            (name.clone(), mac.clone())
                        })
                })
                .expect("a canary phone");
            let schedule = api.get(SCHEDULE).await.expect("schedule");
            record_progress(
                &client,
                &ns.name,
                &schedule,
                &shard,
                &mac,
                &PhoneProgress {
                    state: PhoneState::Failed,
                    version: Some("1.0.0".into()),
                    target: "1.0.11.23".into(),
                    // After the guide's earlier retry, or that retry would forgive it.
                    since: Utc::now(),
                },
            )
            .await;
            eventually("a halted model", WAIT, || async {
                status(&api)
                    .await
                    .rollout
                    .is_some_and(|r| !r.halted_models.is_empty())
                    .then_some(())
            })
            .await;
        }
        for command in commands {
            let mut command = command
                .replace("-n voice", &format!("-n {}", ns.name))
                .replace("examples/fleet.yaml", &fleet_path);
            if let Some(model) = halted_model
                .as_ref()
                .filter(|_| heading == "Un-halting a model")
            {
                command = command.replace("SIP-T46U", model);
            }
            let words: Vec<&str> = command.split_whitespace().collect();
            let out = match words.first().copied() {
                Some("kubectl") => kubectl(cluster, plugins.path(), &words[1..]).await,
                Some("phonefleet") => {
                    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_phonefleet"));
                    cmd.args(&words[1..]).current_dir(support::repo_root());
                    tokio::task::spawn_blocking(move || cmd.output().expect("phonefleet"))
                        .await
                        .expect("join")
                }
                other => panic!("docs/operating.md runs {other:?}: only kubectl and phonefleet"),
            };
            assert!(
                out.status.success(),
                "docs/operating.md, {heading}: `{command}` failed:\n{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        // What the prose after each section promises (there is no schedule before the first).
        let Some(s) = api.get_opt(SCHEDULE).await.expect("get schedule") else {
            continue;
        };
        let s = s.status.unwrap_or_default();
        match heading.as_str() {
            "The first schedule" => assert!(
                s.conditions
                    .iter()
                    .any(|c| c.type_ == "Ready" && c.status == "True")
            ),
            "Pausing" => assert!(!api.get(SCHEDULE).await.expect("get").spec.rollout.paused),
            "Un-halting a model" => assert!(s.rollout.is_some_and(|r| r.halted_models.is_empty())),
            "Releasing the next stage early" => {
                assert_eq!(s.rollout.map(|r| r.released_stage), Some(1))
            }
            _ => {}
        }
    }
    controller.stop().await.expect("controller");
    ns.delete().await;
}

/// `why MAC` through kubectl: a phone of the provisioning fixture asks for its file, then for
/// the firmware before its slot; `why` shows its site, family, stage, slot in UTC and local
/// time, the server's note (version, last request, the refusal and its reason) and the exact
/// bytes the server answered for its file.
#[tokio::test]
async fn why_explains_one_phone_from_the_servers_records() {
    use support::provisioning::{self as prov, TestPhone};
    let cluster = support::cluster().await;
    let start = Utc::now() + chrono::Duration::hours(1);
    let end = start + chrono::Duration::hours(1);
    let phone = prov::mac(1);
    let f = prov::fixture(
        "plugin-why",
        1,
        &[TestPhone {
            mac: phone,
            slot: Some((start, end)),
        }],
        1024,
    )
    .await;
    let server = prov::started(
        f.config("why"),
        f.client.clone(),
        phonefleet::server::ServerStats::new(),
    )
    .await;
    let http = prov::http();
    let ua = prov::ua(phone, prov::OLD);
    let file_name = format!("cfg{}.xml", phone.bare());
    let served = prov::get(
        &http,
        server.local_addr(),
        &format!("/{file_name}"),
        &[("user-agent", &ua)],
    )
    .await;
    assert_eq!(served.status, 200);
    let refused = prov::get(
        &http,
        server.local_addr(),
        &prov::firmware_path(),
        &[("user-agent", &ua)],
    )
    .await;
    assert_eq!(refused.status, 503, "before its slot");
    // The server writes its note with its next progress batch.
    let cms: Api<ConfigMap> = Api::namespaced(f.client.clone(), &f.ns.name);
    // In a notes map of its own: the controller, which watches progress, is not woken.
    let notes_map = phonefleet::children::notes_map_name(&phonefleet::children::config_map_name(
        "fw", "paris", 0,
    ));
    eventually("the phone's note", WAIT, || async {
        cms.get_opt(&notes_map)
            .await
            .ok()
            .flatten()
            .and_then(|cm| {
                cm.data?
                    .get(&phonefleet::children::note_key(phone))
                    .cloned()
            })
            .filter(|note| note.contains("beforeSlot"))
    })
    .await;

    let plugins = plugin_dir();
    let dir = plugins.path();
    let mac = phone.to_string();
    let n = f.ns.name.as_str();
    let report = json(
        &kubectl_ok(
            cluster,
            dir,
            &["phonefleet", "why", &mac, "-n", n, "-o", "json"],
        )
        .await,
    );
    assert_eq!(report["mac"], mac.as_str());
    assert_eq!(report["site"], "paris");
    assert_eq!(report["schedule"], "fw");
    assert_eq!(report["family"], "grandstream");
    assert_eq!(report["model"], "GXP2170");
    assert_eq!(report["target"], prov::TARGET);
    assert_eq!(report["stage"], 0);
    let slot_start: DateTime<Utc> = report["slot"]["start"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .expect("slot start");
    assert_eq!(slot_start, start);
    let paris: chrono_tz::Tz = "Europe/Paris".parse().expect("zone");
    let local: DateTime<chrono::FixedOffset> = report["slot"]["startLocal"]
        .as_str()
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .expect("local slot start");
    let expected = start.with_timezone(&paris).fixed_offset();
    assert_eq!(local, expected);
    assert_eq!(local.offset(), expected.offset(), "in the site's time zone");
    assert_eq!(report["lastSeen"]["version"], prov::OLD);
    assert!(report["lastSeen"]["seen"].is_string(), "{report}");
    assert_eq!(report["lastSeen"]["refusal"]["reason"], "beforeSlot");
    assert_eq!(report["file"]["name"], file_name.as_str());
    assert_eq!(
        report["file"]["body"].as_str().map(str::as_bytes),
        Some(&served.body[..]),
        "the bytes the server answered"
    );
    assert!(
        report["verdict"]
            .as_str()
            .is_some_and(|v| v.starts_with("waiting for its slot")),
        "{report}"
    );

    let text = kubectl_ok(cluster, dir, &["phonefleet", "why", &mac, "-n", n]).await;
    for part in [
        "site:         paris (Europe/Paris)",
        "last refusal: beforeSlot",
        &format!("reporting {}", prov::OLD),
        "slot (local):",
    ] {
        assert!(text.contains(part), "why lacks {part:?}:\n{text}");
    }
    assert!(
        text.contains(std::str::from_utf8(&served.body).expect("utf-8")),
        "the served file:\n{text}"
    );
    let yaml = kubectl_ok(
        cluster,
        dir,
        &["phonefleet", "why", &mac, "-n", n, "-o", "yaml"],
    )
    .await;
    assert!(yaml.contains("reason: beforeSlot"), "{yaml}");

    let unknown = prov::mac(99).to_string();
    let missing = kubectl(cluster, dir, &["phonefleet", "why", &unknown, "-n", n]).await;
    assert!(!missing.status.success());
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("no schedule of this namespace"),
        "{}",
        String::from_utf8_lossy(&missing.stderr)
    );
    server.shutdown().await;
    f.ns.delete().await;
}
