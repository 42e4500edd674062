#!/usr/bin/env bash
# `make demo`: the product end to end on this machine, in about two minutes.
#   local control plane → CRDs → `phonefleet run` (controller + provisioning server, on a
#   compressed clock) → an example fleet of 600 phones in 6 sites → `phonefleet simulate` (the
#   phones, over real HTTP) → live per-site progress bars → a final summary.
# One model's new firmware never comes back: watch the canary halt it and nothing else.
# The control plane keeps running afterwards (`source .cluster/env`; `make cluster-down`).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
NS=${DEMO_NAMESPACE:-phonefleet-demo}
SCALE=${DEMO_TIME_SCALE:-1200}
ORIGIN=2026-01-05T00:00:00Z # a Monday, 00:00 UTC

echo "==> building phonefleet (release, with the demo's compressed clock)"
cargo build --release --quiet --features simulated-time
bin=${CARGO_TARGET_DIR:-$root/target}/release/phonefleet

echo "==> starting the local control plane (first run builds it from source: ~8 minutes)"
tests/cluster/up.sh >/dev/null
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

echo "==> phonefleet run: controller + provisioning server on 127.0.0.1:$port (log: $work/run.log)"
NO_COLOR=1 "$bin" run --namespace "$NS" --server-url "http://127.0.0.1:$port" \
  --provisioning-listen "127.0.0.1:$port" --metrics-listen "127.0.0.1:$metrics" \
  --firmware-dir "$work/firmware" --token-lease-seconds 3 "${clock[@]}" >"$work/run.log" 2>&1 &
pids+=($!)
kubectl wait --for=condition=Ready --timeout=120s -n "$NS" phoneschedule/fleet >/dev/null
kubectl get phoneschedules,phonesites -n "$NS"

# Three days: sites with Grandstream phones roll out on whole-hour slots (docs/planner.md).
echo "==> 600 phones boot at once and follow their files (simulated 72 h at ${SCALE}x)"
"$bin" simulate --server "http://127.0.0.1:$port" -n "$NS" --hours 72 --seed 1 \
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
