//! `phonefleet run --log-format json`: one JSON object per line, for log pipelines.

mod support;

use std::time::Duration;

use support::controller::ControllerProcess;

#[tokio::test]
async fn json_logs_are_one_object_per_line() {
    let cluster = support::cluster().await;
    cluster.apply_crds().await;
    let ns = cluster.namespace("logs-json").await;
    let process = ControllerProcess::spawn(cluster, &ns.name, &["--log-format", "json"]);
    let log = support::eventually(
        "the controller's first log lines",
        Duration::from_secs(60),
        || {
            let log = process.log();
            async move { log.contains("metrics endpoint listening").then_some(log) }
        },
    )
    .await;
    for line in log.lines().filter(|l| !l.trim().is_empty()) {
        let value: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
        for key in ["timestamp", "level", "target", "message"] {
            assert!(value.get(key).is_some(), "{key} missing: {line}");
        }
    }
    let listening = log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["message"] == "metrics endpoint listening")
        .expect("the listening line");
    assert!(
        listening.get("addr").is_some(),
        "fields at the top level: {listening}"
    );
    drop(process);
    ns.delete().await;
}
