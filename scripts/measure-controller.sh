#!/usr/bin/env bash
# Measures the controller on a fresh local control plane (issue figures, not a test):
#   1. apply → Ready for PHONES_SMALL phones over SITES sites (kubectl wait, wall time);
#   2. the controller's peak RSS (VmHWM) with PHONES_LARGE phones, after Ready;
#   3. API writes during idle reconciles (apiserver_request_total, write verbs).
# Usage: scripts/measure-controller.sh   (release build; prints a summary at the end)
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
SITES=${SITES:-20}
PHONES_SMALL=${PHONES_SMALL:-10000}
PHONES_LARGE=${PHONES_LARGE:-100000}

cargo build --release --quiet
bin=$root/target/release/phonefleet
[ -n "${CARGO_TARGET_DIR:-}" ] && bin=$CARGO_TARGET_DIR/release/phonefleet

if [ -z "${PHONEFLEET_TEST_KUBECONFIG:-}" ]; then
  exec tests/cluster/with-cluster.sh "$0" "$@"
fi
kubectl apply --server-side -f crds/ >/dev/null
kubectl wait --for condition=Established -f crds/ >/dev/null

fleet() { # namespace, phones -> YAML on stdout
  python3 - "$1" "$2" "$SITES" <<'PY'
import sys
ns, phones, sites = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
zones = ["Europe/Paris", "America/New_York", "Asia/Tokyo", "Australia/Sydney", "America/Sao_Paulo"]
per = phones // sites
for s in range(sites):
    print(f"---\napiVersion: phonefleet.io/v1alpha1\nkind: PhoneSite\nmetadata: {{name: site-{s:02d}, namespace: {ns}, labels: {{fleet: bench}}}}")
    print(f"spec:\n  timeZone: {zones[s % len(zones)]}\n  maxConcurrentDownloads: 10\n  phones:")
    for p in range(per):
        n = s * per + p
        model = "SIP-T46U" if n % 3 == 0 else "GXP2170"
        print(f"  - {{mac: '00:0b:{(n >> 24) & 255:02x}:{(n >> 16) & 255:02x}:{(n >> 8) & 255:02x}:{n & 255:02x}', model: {model}}}")
PY
}
schedule() { # namespace
  cat <<YAML
apiVersion: phonefleet.io/v1alpha1
kind: PhoneSchedule
metadata: {name: bench, namespace: $1}
spec:
  siteSelector: {matchLabels: {fleet: bench}}
  provisioning:
    weekly: {enabled: true, window: {start: "22:00", end: "05:00"}, days: [Sun, Mon, Tue, Wed, Thu, Fri, Sat]}
  firmware: {version: "2.0", file: fw-2.0.bin}
  rollout: {downloadMinutes: 10, stages: [{name: canary, percent: 1}, {name: all, percent: 100}]}
YAML
}

measure() { # namespace, phones -> "seconds rss_kib"
  local ns=$1 phones=$2
  kubectl create namespace "$ns" >/dev/null
  fleet "$ns" "$phones" | kubectl apply --server-side -f - >/dev/null
  "$bin" run --namespace "$ns" --no-provisioning-server >"/tmp/phonefleet-measure-$ns.log" 2>&1 &
  local pid=$!
  sleep 2 # let the controller list the sites before the clock starts (not part of the figure)
  local start end
  start=$(date +%s.%N)
  schedule "$ns" | kubectl apply -f - >/dev/null
  kubectl wait --for=condition=Ready --timeout=600s -n "$ns" phoneschedule/bench >/dev/null
  end=$(date +%s.%N)
  local rss
  rss=$(awk '/VmHWM/{print $2}' "/proc/$pid/status")
  local cms
  cms=$(kubectl get configmaps -n "$ns" -l phonefleet.io/schedule=bench -o name | wc -l)
  echo "$(python3 -c "print(round($end - $start, 2))") $rss $cms $pid"
}

writes() {
  kubectl get --raw /metrics | awk '/^apiserver_request_total\{/ && /resource="(configmaps|phoneschedules|events)"/ && /verb="(POST|PUT|PATCH|APPLY|DELETE)"/ {s += $NF} END {print s + 0}'
}

read -r small_s small_rss small_cms small_pid < <(measure small "$PHONES_SMALL")
# Idle reconciles: touch a site 20 times, count writes before and after.
sleep 3
before=$(writes)
for i in $(seq 1 20); do kubectl annotate --overwrite -n small phonesite/site-00 "touch=$i" >/dev/null; done
sleep 5
after=$(writes)
kill "$small_pid"
read -r large_s large_rss large_cms large_pid < <(measure large "$PHONES_LARGE")
kill "$large_pid"

cat <<OUT
phonefleet controller measurements ($(nproc) cores, release build, local control plane)
  apply -> Ready, $PHONES_SMALL phones / $SITES sites: ${small_s}s ($small_cms ConfigMaps), controller peak RSS $((small_rss / 1024)) MiB
  apply -> Ready, $PHONES_LARGE phones / $SITES sites: ${large_s}s ($large_cms ConfigMaps), controller peak RSS $((large_rss / 1024)) MiB
  API writes during 20 idle reconciles: $((after - before))
OUT
