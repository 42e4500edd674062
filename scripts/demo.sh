#!/usr/bin/env bash
# `make demo`: the product end to end on this machine, in about two minutes.
#   local control plane → CRDs → `phonefleet run` (controller + provisioning server, on a
#   compressed clock) → an example fleet of 600 phones in 6 sites → `phonefleet simulate` (the
#   phones, over real HTTP) → live per-site progress bars → a final summary.
# One model's new firmware never comes back: watch the canary halt it and nothing else.
# The control plane keeps running afterwards (`source .cluster/env`; `make cluster-down`).
#
# IN_CLUSTER=1 (`make demo IN_CLUSTER=1`, as root, with the node's Debian packages): the
# controller runs in the cluster instead, as an operator would run it: the control plane with
# its node (PHONEFLEET_NODE=1), the image built without Docker (scripts/build-image.sh
# --simulated-time: the demo's compressed clock compiled in, tagged <version>-simulated-time)
# and loaded into the node, `helm install` of charts/phonefleet (firmware from a ConfigMap,
# provisioning Service on a NodePort), and the simulated phones reaching it through the NodePort.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
NS=${DEMO_NAMESPACE:-phonefleet-demo}
SCALE=${DEMO_TIME_SCALE:-1200}
ORIGIN=2026-01-05T00:00:00Z # a Monday, 00:00 UTC

IN_CLUSTER=${IN_CLUSTER:-}
[ "$IN_CLUSTER" = 0 ] && IN_CLUSTER=""
bin=${CARGO_TARGET_DIR:-$root/target}/release/phonefleet
if [ -n "$IN_CLUSTER" ]; then
  echo "==> building the phonefleet image (release build with the demo's compressed clock, no Docker)"
  image=$(scripts/build-image.sh --simulated-time 2>/dev/null | tail -n 1)
  echo "    $image"
  echo "==> starting the local control plane and its node (first run builds them from source)"
  # A control plane left by `make cluster` without a node cannot host pods: restart it.
  [ -f .cluster/pids ] && [ ! -f .cluster/node/ready ] && tests/cluster/down.sh
  PHONEFLEET_NODE=1 tests/cluster/up.sh >/dev/null
  tests/cluster/load-image.sh .cluster "${image##* }" 2>/dev/null
  # shellcheck disable=SC1091
  source .cluster/node/env
else
  echo "==> building phonefleet (release, with the demo's compressed clock)"
  cargo build --release --quiet --features simulated-time
  echo "==> starting the local control plane (first run builds it from source: ~8 minutes)"
  tests/cluster/up.sh >/dev/null
fi
# shellcheck disable=SC1091
source .cluster/env
kubectl apply --server-side --force-conflicts -f crds/ >/dev/null
kubectl wait --for condition=Established -f crds/ >/dev/null
kubectl delete namespace "$NS" --ignore-not-found --wait=true >/dev/null
kubectl create namespace "$NS" >/dev/null

work=$(mktemp -d "${TMPDIR:-/tmp}/phonefleet-demo.XXXXXX")
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

echo "==> applying the example fleet (examples/demo-fleet.yaml) to namespace $NS"
sed -E "s/namespace: demo([,}]|$)/namespace: $NS\1/" examples/demo-fleet.yaml | kubectl apply -f - >/dev/null
mkdir -p "$work/firmware"
# Yealink phones fetch static.firmware.url (the schedule's file); Grandstream and XSTIM phones
# append their own image name to P192's directory (the simulator's <model>fw.bin).
python3 - "$work/firmware/gxp2170fw.bin" "$work/firmware/xstimfw.bin" <<'PY'
import sys
image = b"PHONEFLEET-FIRMWARE 2.0.0\n"
for path in sys.argv[1:]:
    open(path, "wb").write(image + b"." * (256 * 1024 - len(image)))
PY
read -r port metrics < <(python3 -c 'import socket
s=[socket.socket() for _ in range(2)]
[x.bind(("127.0.0.1",0)) for x in s]
print(*[x.getsockname()[1] for x in s])')
real_origin=$(date -u +%Y-%m-%dT%H:%M:%S.%3NZ)
clock=(--time-origin "$ORIGIN" --time-scale "$SCALE" --time-real-origin "$real_origin")

if [ -n "$IN_CLUSTER" ]; then
  port=30080
  server="http://$NODE_IP:$port"
  echo "==> helm install phonefleet charts/phonefleet -n $NS (NodePort $port on node $NODE_NAME)"
  kubectl create configmap demo-firmware -n "$NS" --from-file="$work/firmware/gxp2170fw.bin" \
    --from-file="$work/firmware/xstimfw.bin" >/dev/null
  start=$SECONDS
  helm install phonefleet charts/phonefleet -n "$NS" --wait --timeout 5m \
    --set replicaCount=1 --set image.pullPolicy=Never \
    --set image.tag="$(awk -F'"' '/^version *=/{print $2; exit}' Cargo.toml)-simulated-time" \
    --set provisioning.service.type=NodePort --set provisioning.service.nodePort=$port \
    --set controller.serverUrl="$server" --set provisioning.tokenLeaseSeconds=3 \
    --set firmware.source=configMap --set firmware.configMap.name=demo-firmware \
    --set-json "controller.extraArgs=[\"--time-origin=$ORIGIN\",\"--time-scale=$SCALE\",\"--time-real-origin=$real_origin\"]" >/dev/null
  echo "    pod Ready $((SECONDS - start))s after helm install:"
  kubectl get pods -n "$NS" -o wide
else
  server="http://127.0.0.1:$port"
  echo "==> phonefleet run: controller + provisioning server on 127.0.0.1:$port (log: $work/run.log)"
  NO_COLOR=1 "$bin" run --namespace "$NS" --server-url "$server" \
    --provisioning-listen "127.0.0.1:$port" --metrics-listen "127.0.0.1:$metrics" \
    --firmware-dir "$work/firmware" --token-lease-seconds 3 "${clock[@]}" >"$work/run.log" 2>&1 &
  pids+=($!)
fi
kubectl wait --for=condition=Ready --timeout=120s -n "$NS" phoneschedule/fleet >/dev/null
kubectl get phoneschedules,phonesites -n "$NS"

# Three days: sites with Grandstream phones roll out on whole-hour slots (docs/planner.md).
echo "==> 600 phones boot at once and follow their files (simulated 72 h at ${SCALE}x)"
"$bin" simulate --server "$server" -n "$NS" --hours 72 --seed 1 \
  --fail-model SIP-T46U "${clock[@]}" >"$work/summary.json" 2>"$work/simulate.log" &
sim=$!
pids+=("$sim")
"$bin" progress -n "$NS" fleet --until-settled --timeout-seconds 600 || true
wait "$sim" || true

echo
echo "==> final state"
kubectl get phoneschedule -n "$NS" fleet
kubectl get events -n "$NS" --field-selector involvedObject.kind=PhoneSchedule \
  -o custom-columns=TYPE:.type,REASON:.reason,MESSAGE:.message | head -n 12
python3 - "$work/summary.json" <<'PY'
import json, sys
try:
    summary = json.load(open(sys.argv[1]))
except Exception as e:
    sys.exit(f"no simulator summary: {e}")
print("\nwhat the phones saw (per site):")
print(f"{'site':<10} {'phones':>6} {'upgraded':>8} {'failed':>6} {'peak downloads':>14} {'503s':>6}")
for name, s in sorted(summary["sites"].items()):
    print(f"{name:<10} {s['phones']:>6} {s['upgraded']:>8} {s['failed']:>6} {s['peakConcurrentDownloads']:>14} {s['refusals']:>6}")
PY
echo
echo "The control plane is still up: source .cluster/env; kubectl get psched -n $NS. Stop it: make cluster-down"
