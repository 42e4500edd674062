#!/usr/bin/env bash
# Measures phonefleet at scale on a fresh local control plane (issue #18; figures, not a test):
# PHONES phones in SITES PhoneSites, one PhoneSchedule selecting all, `phonefleet run` with its
# provisioning server (release build, as the chart runs it). Reports:
#   - apply -> Ready of the schedule (kubectl wait, wall time);
#   - peak RSS (VmHWM) of `phonefleet run` after Ready and after the load below;
#   - bytes phonefleet keeps in the API: its ConfigMaps as JSON (sum), and the API server's
#     apiserver_storage_size_bytes before/after;
#   - API write requests per minute while the schedule goes Ready and during simulated progress;
#   - reconcile duration p50/p99 from the controller's own histogram, while PROGRESS_SECONDS
#     of simulated progress arrive (progress ConfigMaps patched as the server writes them);
#   - config requests/s (wrk, random phones; WRK_ROUNDS rounds of WRK_SECONDS after a
#     warm-up): the run's server with a warm cache (files held in memory, as pre-rendered
#     files were) and a second server with the cache off (every
#     request rendered from the stored decision), both asked for the same 10,000 phones (the
#     ratio compares rendering with serving held bytes, nothing else); and the second server
#     asked for any phone of the fleet (lookups spread over every phone's index entry).
#
# Usage: scripts/measure-scale.sh            (PHONES=1000000 SITES=10000 by default)
#        PHONES=100000 SITES=1000 scripts/measure-scale.sh
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
PHONES=${PHONES:-1000000}
SITES=${SITES:-10000}
PROGRESS_SECONDS=${PROGRESS_SECONDS:-60}
WRK_SECONDS=${WRK_SECONDS:-10}
WRK_ROUNDS=${WRK_ROUNDS:-3}

# wrk drives the config requests (Debian's package; not needed by `make test`).
if ! command -v wrk >/dev/null 2>&1; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk
fi
if [ -z "${PHONEFLEET_TEST_KUBECONFIG:-}" ]; then
  # CARGO_FLAGS: e.g. "--no-default-features" for a glibc-malloc build heaptrack can follow.
  # shellcheck disable=SC2086
  nice cargo build --release --quiet ${CARGO_FLAGS:-} --bin phonefleet --example provisioning-server
  exec tests/cluster/with-cluster.sh "$0" "$@"
fi
target=${CARGO_TARGET_DIR:-$root/target}
bin=$target/release/phonefleet
server_bin=$target/release/examples/provisioning-server
work=$(mktemp -d /tmp/phonefleet-scale.XXXXXX)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT
ns=scale
log() { echo "[$(date -u +%H:%M:%S)] $*" >&2; }

kubectl apply --server-side -f crds/ >/dev/null
kubectl wait --for condition=Established -f crds/ >/dev/null
kubectl create namespace "$ns" >/dev/null

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
prov=$(free_port)
metrics=$(free_port)
cold=$(free_port)

storage() { # the API server's own figure of its storage, summed over storage clusters
  kubectl get --raw /metrics | awk '/^apiserver_storage_size_bytes/ {s += $NF} END {printf "%d\n", s}'
}
ours() { # bytes of phonefleet's ConfigMaps as stored objects (JSON), by component
  kubectl get configmaps -n "$ns" -l app.kubernetes.io/managed-by=phonefleet -o json |
    python3 -c '
import json, sys, collections
by = collections.Counter(); n = collections.Counter()
for cm in json.load(sys.stdin)["items"]:
    c = cm["metadata"].get("labels", {}).get("app.kubernetes.io/component", "?")
    by[c] += len(json.dumps(cm, separators=(",", ":"))); n[c] += 1
print(" ".join(f"{k}={by[k]}/{n[k]}" for k in sorted(by)) or "none=0/0", sum(by.values()))'
}
writes() {
  kubectl get --raw /metrics | awk '/^apiserver_request_total\{/ && /verb="(POST|PUT|PATCH|APPLY|DELETE)"/ {s += $NF} END {printf "%d\n", s}'
}
buckets() { # the controller's reconcile histogram: "le count" lines
  curl -s "http://127.0.0.1:$metrics/metrics" | awk '/^phonefleet_reconcile_duration_seconds_bucket/ {
    match($0, /le="[^"]*"/); le = substr($0, RSTART + 4, RLENGTH - 5); print le, $NF }'
}
quantiles() { # before-file after-file -> "count p50 p99" (upper bucket bounds, seconds)
  python3 - "$1" "$2" <<'PY'
import sys
def read(p):
    return {le: float(c) for le, c in (l.split() for l in open(p) if l.strip())}
b, a = read(sys.argv[1]), read(sys.argv[2])
les = sorted(a, key=lambda x: float("inf") if x == "+Inf" else float(x))
cum = [(le, a[le] - b.get(le, 0)) for le in les]
total = cum[-1][1]
def q(p):
    for le, c in cum:
        if total and c >= p * total:
            return le
    return "n/a"
print(int(total), q(0.5), q(0.99))
PY
}

log "writing $PHONES phones in $SITES PhoneSites"
python3 - "$ns" "$PHONES" "$SITES" >"$work/fleet.yaml" <<'PY'
import sys
ns, phones, sites = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
zones = ["Europe/Paris", "America/New_York", "Asia/Tokyo", "Australia/Sydney", "America/Sao_Paulo"]
per = phones // sites
out = sys.stdout
for s in range(sites):
    out.write(f"---\napiVersion: phonefleet.io/v1alpha1\nkind: PhoneSite\nmetadata: {{name: site-{s:05d}, namespace: {ns}, labels: {{fleet: bench}}}}\n")
    out.write(f"spec:\n  timeZone: {zones[s % len(zones)]}\n  maxConcurrentDownloads: 10\n  phones:\n")
    for p in range(per):
        n = s * per + p
        model = "SIP-T46U" if n % 3 == 0 else "GXP2170"
        out.write(f"  - {{mac: '00:0b:{(n >> 24) & 255:02x}:{(n >> 16) & 255:02x}:{(n >> 8) & 255:02x}:{n & 255:02x}', model: {model}}}\n")
PY
# In chunks: one kubectl apply of a million phones would hold them all in one request body.
python3 - "$work" <<'PY'
import sys, os
work = sys.argv[1]
docs = open(f"{work}/fleet.yaml").read().split("---\n")[1:]
os.makedirs(f"{work}/chunks", exist_ok=True)
for i in range(0, len(docs), 200):
    open(f"{work}/chunks/{i // 200:05d}.yaml", "w").write("".join("---\n" + d for d in docs[i:i + 200]))
PY
for f in "$work"/chunks/*.yaml; do kubectl apply --server-side -f "$f" >/dev/null; done
log "sites applied"

storage_before=$(storage)
read -r ours_before_detail ours_before < <(ours)

# RUN_PREFIX wraps the run (e.g. RUN_PREFIX="heaptrack -o /tmp/run" with
# CARGO_FLAGS=--no-default-features to see where memory goes: heaptrack follows glibc malloc,
# not the jemalloc the default build uses).
${RUN_PREFIX:-} "$bin" run --namespace "$ns" --server-url "http://127.0.0.1:$prov" \
  --provisioning-listen "127.0.0.1:$prov" --metrics-listen "127.0.0.1:$metrics" \
  >"$work/run.log" 2>&1 &
run_pid=$!
pids+=("$run_pid")
for _ in $(seq 1 600); do
  curl -sf "http://127.0.0.1:$metrics/healthz" >/dev/null 2>&1 && break
  sleep 0.2
done
# The process whose memory counts: the run itself, also under a RUN_PREFIX wrapper.
mem_pid=$(pgrep -n -f "$bin run --namespace $ns" || echo "$run_pid")
pids+=("$mem_pid")
phase=listing
( while kill -0 "$mem_pid" 2>/dev/null; do
    echo "$(date +%s.%N) $(awk '/VmRSS/{print $2}' "/proc/$mem_pid/status" 2>/dev/null)"
    sleep 1
  done ) >"$work/rss.log" &
pids+=("$!")
mark() { echo "$(date +%s.%N) $1" >>"$work/phases.log"; }
mark listing
# Ready once every cache has listed (the sites before the clock starts; not part of the figure).
listed_at=$(date +%s.%N)
for _ in $(seq 1 3000); do
  curl -s "http://127.0.0.1:$metrics/metrics" | grep -q '^phonefleet_ready 1' && break
  sleep 0.2
done
listed_s=$(python3 -c "print(round($(date +%s.%N) - $listed_at, 1))")
# A fresh controller writes every PhoneSite's status once (phone count, validity): a one-time
# backlog of SITES writes, which would otherwise share the API server with the schedule's
# first apply. Timed on its own; the schedule is applied once it is done.
site_statuses() {
  kubectl get --raw /metrics | awk '/^apiserver_request_total\{/ && /resource="phonesites"/ &&
    /subresource="status"/ && /verb="APPLY"/ && /code="200"/ {s += $NF} END {printf "%d\n", s}'
}
for _ in $(seq 1 3600); do
  [ "$(site_statuses)" -ge "$SITES" ] && break
  sleep 0.5
done
statuses_s=$(python3 -c "print(round($(date +%s.%N) - $listed_at, 1))")
log "caches listed after ${listed_s}s, site statuses written after ${statuses_s}s"
sleep 2
rss_idle=$(awk '/VmRSS/{print $2}' "/proc/$mem_pid/status")
mark schedule

writes_before=$(writes)
start=$(date +%s.%N)
kubectl apply -f - >/dev/null <<YAML
apiVersion: phonefleet.io/v1alpha1
kind: PhoneSchedule
metadata: {name: bench, namespace: $ns}
spec:
  siteSelector: {matchLabels: {fleet: bench}}
  provisioning:
    weekly: {enabled: true, window: {start: "22:00", end: "05:00"}, days: [Sun, Mon, Tue, Wed, Thu, Fri, Sat]}
  firmware: {version: "2.0", file: fw-2.0.bin}
  rollout: {downloadMinutes: 10, stages: [{name: canary, percent: 1}, {name: all, percent: 100}]}
YAML
kubectl wait --for=condition=Ready --timeout=1800s -n "$ns" phoneschedule/bench >/dev/null
end=$(date +%s.%N)
ready_s=$(python3 -c "print(round($end - $start, 1))")
log "Ready after ${ready_s}s"
# Let the shards land (Ready is set by the reconcile that writes them) and the server index.
expected=$(kubectl get configmaps -n "$ns" -l app.kubernetes.io/component=rendered-config -o name | wc -l)
sleep 5
writes_ready=$(writes)
ready_minutes=$(python3 -c "print(max(($(date +%s.%N) - $start) / 60, 1e-9))")
rss_ready=$(awk '/VmHWM/{print $2}' "/proc/$mem_pid/status")
mark progress
storage_after=$(storage)
read -r ours_after_detail ours_after < <(ours)

# Simulated progress: every second, one shard's progress ConfigMap gets its phones' records
# (as the provisioning server writes them), owned by the schedule so the controller wakes.
uid=$(kubectl get phoneschedule -n "$ns" bench -o jsonpath='{.metadata.uid}')
kubectl get configmaps -n "$ns" -l app.kubernetes.io/component=rendered-config -o json |
  python3 -c '
import json, sys
for cm in json.load(sys.stdin)["items"]:
    macs = [l.split(",")[0] for l in cm["data"].get("phonefleet-phones", "").splitlines() if l]
    print(cm["metadata"]["name"], " ".join(macs[:50]))' >"$work/shards.txt"
buckets >"$work/buckets-before"
writes_progress_before=$(writes)
progress_start=$(date +%s.%N)
i=0
while read -r shard macs; do
  now=$(date +%s.%N)
  python3 -c "import sys; sys.exit(0 if $now - $progress_start < $PROGRESS_SECONDS else 1)" || break
  python3 - "$ns" "$shard" "$uid" $macs >"$work/progress.json" <<'PY'
import json, sys, datetime
ns, shard, uid, macs = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
since = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
rec = json.dumps({"state": "upgraded", "version": "2.0", "target": "2.0", "since": since})
print(json.dumps({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {
    "name": f"{shard}-progress", "namespace": ns,
    "labels": {"app.kubernetes.io/component": "progress", "app.kubernetes.io/managed-by": "phonefleet",
               "phonefleet.io/schedule": "bench"},
    "ownerReferences": [{"apiVersion": "phonefleet.io/v1alpha1", "kind": "PhoneSchedule", "name": "bench", "uid": uid}]},
    "data": {m: rec for m in macs}}))
PY
  kubectl apply --server-side --field-manager=bench-progress -f "$work/progress.json" >/dev/null
  i=$((i + 1))
  sleep 1
done <"$work/shards.txt"
progress_written=$i
progress_end=$(date +%s.%N)
sleep 5
buckets >"$work/buckets-after"
writes_progress=$(writes)
progress_minutes=$(python3 -c "print(($progress_end - $progress_start + 5) / 60)")
read -r reconciles p50 p99 < <(quantiles "$work/buckets-before" "$work/buckets-after")

mark wrk
# Config requests/s: the run's own server, warm (a subset that fits the cache, fetched once
# first), and a second server with the cache off, every request rendered: both on the same
# subset, then the second on every phone.
kubectl get configmaps -n "$ns" -l app.kubernetes.io/component=rendered-config -o json |
  python3 -c '
import json, sys
fam = {}
for cm in json.load(sys.stdin)["items"]:
    h = json.loads(cm["data"]["phonefleet-decision.json"])
    for l in cm["data"].get("phonefleet-phones", "").splitlines():
        mac, model = l.split(",")[:2]
        f = h["models"][int(model)]["family"]
        print(f"/{mac}.cfg" if f == "yealink" else f"/cfg{mac}.xml")' | shuf --random-source=<(yes) >"$work/paths.txt"
head -n 10000 "$work/paths.txt" >"$work/warm.txt"
lua() { # paths file -> wrk script (read at start: a Lua chunk holds at most 65,536 constants)
  echo 'local paths = {}'
  echo "for line in io.lines(\"$1\") do paths[#paths+1] = line end"
  echo 'math.randomseed(42)'
  echo 'request = function() return wrk.format("GET", paths[math.random(#paths)]) end'
}
lua "$work/warm.txt" >"$work/warm.lua"
lua "$work/paths.txt" >"$work/all.lua"
"$server_bin" serve --namespace "$ns" --provisioning-listen "127.0.0.1:$cold" --render-cache-bytes 0 \
  >"$work/cold.log" 2>&1 &
pids+=("$!")
first=$(head -n 1 "$work/paths.txt")
for _ in $(seq 1 600); do
  [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$cold$first" || true)" = 200 ] && break
  sleep 0.5
done
cmp <(curl -s "http://127.0.0.1:$prov$first") <(curl -s "http://127.0.0.1:$cold$first")
while read -r p; do curl -s -o /dev/null "http://127.0.0.1:$prov$p"; done < <(head -n 200 "$work/warm.txt")
# Every server and path warmed up before the timed rounds: in single-round runs every first
# round came out slower than the second, whichever server it asked.
wrk -t1 -c8 -d2s -s "$work/warm.lua" "http://127.0.0.1:$prov" >/dev/null
wrk -t1 -c8 -d2s -s "$work/warm.lua" "http://127.0.0.1:$cold" >/dev/null
wrk -t1 -c8 -d2s -s "$work/all.lua" "http://127.0.0.1:$cold" >/dev/null
rps() { wrk -t2 -c64 -d"${WRK_SECONDS}s" -s "$2" "http://127.0.0.1:$1" | tee -a "$work/wrk.log" | awk '/Requests\/sec/ {print $2}'; }
warm=(); cold_=(); all=()
for _ in $(seq 1 "$WRK_ROUNDS"); do
  warm+=("$(rps "$prov" "$work/warm.lua")"); cold_+=("$(rps "$cold" "$work/warm.lua")"); all+=("$(rps "$cold" "$work/all.lua")")
done
ratio() { python3 -c "print(f'{$1 / $2:.2f}')"; }
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
ratios=""
for i in "${!warm[@]}"; do ratios+="$(ratio "${cold_[$i]}" "${warm[$i]}")x "; done
grep -q "Non-2xx" "$work/wrk.log" && { echo "non-2xx answers during wrk:" >&2; grep -B3 "Non-2xx" "$work/wrk.log" >&2; }
rss_end=$(awk '/VmHWM/{print $2}' "/proc/$mem_pid/status")
mark end

# Peak resident memory in each phase, from the samples.
rss_phases=$(python3 - "$work/rss.log" "$work/phases.log" <<'PY'
import sys
samples = [(float(t), int(k)) for t, k in (l.split() for l in open(sys.argv[1]) if len(l.split()) == 2)]
marks = [(float(t), n) for t, n in (l.split() for l in open(sys.argv[2]))]
out = []
for i, (t, name) in enumerate(marks[:-1]):
    end = marks[i + 1][0]
    peak = max((k for s, k in samples if t <= s < end), default=0)
    out.append(f"{name} {peak // 1024} MiB")
print(", ".join(out))
PY
)
per_phone() { python3 -c "print(round($1 / $PHONES, 1))"; }
cat <<OUT
phonefleet at scale: $PHONES phones, $SITES PhoneSites ($(nproc) cores, release build, local control plane)
  apply -> Ready: ${ready_s}s ($expected rendered-config ConfigMaps)
  phonefleet run: caches listed in ${listed_s}s, all $SITES site statuses written in ${statuses_s}s (before the schedule); RSS with the sites listed, before the schedule: $((rss_idle / 1024)) MiB; peak RSS by phase (1 s samples): $rss_phases; peak RSS (VmHWM): after Ready $((rss_ready / 1024)) MiB, after progress and wrk $((rss_end / 1024)) MiB
  phonefleet's ConfigMaps in the API: before $ours_before B, after Ready $ours_after B = $(per_phone "$ours_after") B/phone ($ours_after_detail)
  apiserver_storage_size_bytes: before $storage_before, after Ready $storage_after (+$(per_phone "$((storage_after - storage_before))") B/phone)
  API writes: $((writes_ready - writes_before)) until Ready+5s ($(python3 -c "print(round(($writes_ready - $writes_before) / $ready_minutes))")/min); during progress $((writes_progress - writes_progress_before)) ($(python3 -c "print(round(($writes_progress - $writes_progress_before) / $progress_minutes))")/min, $progress_written progress ConfigMaps written)
  reconciles during ${PROGRESS_SECONDS}s of progress: $reconciles, p50 <= ${p50}s, p99 <= ${p99}s (bucket bounds)
  config req/s (wrk -t2 -c64, ${WRK_SECONDS}s, $WRK_ROUNDS rounds after a warm-up), the same 10,000 phones: warm cache ${warm[*]}; rendered on every request (cache off) ${cold_[*]}; per round ${ratios}(median of each: $(ratio "$(median "${cold_[@]}")" "$(median "${warm[@]}")")x); any of the $PHONES phones, rendered on every request: ${all[*]}
OUT
