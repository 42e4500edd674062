#!/usr/bin/env bash
# Config endpoint benchmark: wrk against phonefleet's provisioning server and against nginx
# serving the same rendered files statically, same run, same machine. Prints req/s and p99 of
# both and the ratio.
#
#   scripts/bench-provisioning.sh [--phones N] [--duration 10s] [--connections 64] [--threads 2]
#                                 [--rounds 3] [--no-build] [--overlay]
#                                 [-- extra flags for the server, e.g. --header-read-timeout-seconds 0]
#
# --overlay (issue #14): phonefleet runs in overlay mode in front of a second nginx (the
# "upstream") serving a vendor-style file per phone (SIP account, schedule keys); the
# measured nginx serves the merged files phonefleet produced, so both answer the same bytes.
#
# Installs wrk and nginx with apt-get when missing. Starts a private local control plane
# (tests/cluster/up.sh in a temporary directory, torn down when the script exits) and runs the
# server against it, so the config index comes from a real rendered-config ConfigMap.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

PHONES=500 DURATION=10s CONNECTIONS=64 THREADS=2 ROUNDS=3 BUILD=1 OVERLAY=0
while [[ $# -gt 0 ]]; do
  case $1 in
    --phones) PHONES=$2; shift 2 ;;
    --duration) DURATION=$2; shift 2 ;;
    --connections) CONNECTIONS=$2; shift 2 ;;
    --threads) THREADS=$2; shift 2 ;;
    --rounds) ROUNDS=$2; shift 2 ;;
    --no-build) BUILD=0; shift ;;
    --overlay) OVERLAY=1; shift ;;
    --) shift; break ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done

need=()
command -v wrk >/dev/null || need+=(wrk)
command -v nginx >/dev/null || [[ -x /usr/sbin/nginx ]] || need+=(nginx)
if [[ ${#need[@]} -gt 0 ]]; then
  echo "installing ${need[*]}" >&2
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

WORK=$(mktemp -d /tmp/phonefleet-bench.XXXXXX)
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  [[ -n ${KEEP:-} ]] || rm -rf "$WORK"
}
trap cleanup EXIT

BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release/examples/provisioning-server
if [[ $BUILD == 1 || ! -x $BIN ]]; then
  echo "building (release)" >&2
  nice cargo build --release --quiet --example provisioning-server
fi

# The same rendered files for both servers.
NS=phonefleet-bench
"$BIN" fixture --dir "$WORK/files" --manifest "$WORK/configmap.json" --phones "$PHONES" --namespace "$NS"
# nginx workers run as an unprivileged user when started as root: let them read the files.
chmod 755 "$WORK"
chmod -R a+rX "$WORK/files"

echo "starting a private control plane" >&2
BIN_DIR=$(tests/cluster/build.sh 2>/dev/null | tail -1)
KUBECONFIG=$(tests/cluster/up.sh --dir "$WORK/cluster" --owner-pid $$ | tail -1)
export KUBECONFIG PATH="$BIN_DIR:$PATH"
kubectl create namespace "$NS" --dry-run=client -o yaml | kubectl apply -f - >/dev/null
kubectl apply --server-side --force-conflicts -f "$WORK/configmap.json" >/dev/null

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
OURS=$(free_port)
NGX=$(free_port)
UP=$(free_port)

OVERLAY_ARGS=()
if [[ $OVERLAY == 1 ]]; then
  # The upstream's file of each phone: a SIP account and a P194 of its own (phonefleet's wins).
  mkdir -p "$WORK/upstream"
  python3 - "$WORK/files" "$WORK/upstream" <<'PY'
import os, sys
src, dst = sys.argv[1:]
for i, name in enumerate(sorted(os.listdir(src))):
    mac = name[3:-4]
    body = f"""<?xml version="1.0" encoding="UTF-8"?>
<!-- old provisioning server: extension {1000 + i} -->
<gs_provision version="1">
  <mac>{mac}</mac>
  <config version="1">
    <P271>1</P271>
    <P270>Ext {1000 + i}</P270>
    <P47>pbx.example.net</P47>
    <P35>{1000 + i}</P35>
    <P36>{1000 + i}</P36>
    <P34>sip-secret-{1000 + i}</P34>
    <P3>Extension {1000 + i}</P3>
    <P212>2</P212>
    <P237>old.example/prov</P237>
    <P194>1</P194>
    <P193>720</P193>
    <P64>CET-1CEST-2,M3.5.0/02:00:00,M10.5.0/03:00:00</P64>
  </config>
</gs_provision>
"""
    open(os.path.join(dst, name), "w").write(body)
PY
  chmod -R a+rX "$WORK/upstream"
  OVERLAY_ARGS=(--upstream "http://127.0.0.1:$UP")
fi

"$BIN" serve --namespace "$NS" --provisioning-listen "127.0.0.1:$OURS" "${OVERLAY_ARGS[@]}" "$@" 2>"$WORK/server.log" &
PIDS+=($!)

mkdir -p "$WORK/nginx/logs"
cat >"$WORK/nginx/nginx.conf" <<CONF
daemon off;
worker_processes 2;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/logs/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  default_type text/plain;
  types { application/xml xml; }
  sendfile on;
  tcp_nopush on;
  keepalive_requests 100000;
  server {
    listen 127.0.0.1:$NGX;
    root $WORK/files;
    location / { try_files \$uri =404; }
  }
  server {
    listen 127.0.0.1:$UP;
    root $WORK/upstream;
    location / { try_files \$uri =404; }
  }
}
CONF
"$NGINX" -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" &
PIDS+=($!)

# Random phone files, the same list for both.
{
  echo 'local paths = {}'
  sed 's/.*/paths[#paths+1] = "&"/' "$WORK/paths.txt"
  echo 'math.randomseed(42)'
  echo 'request = function() return wrk.format("GET", paths[math.random(#paths)]) end'
} >"$WORK/paths.lua"

wait_ok() {
  local first
  first=$(head -1 "$WORK/paths.txt")
  for _ in $(seq 1 300); do
    if [[ $(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$1$first" || true) == 200 ]]; then return 0; fi
    sleep 0.1
  done
  echo "server on port $1 never served $first" >&2
  cat "$WORK/server.log" "$WORK/nginx/logs/error.log" >&2
  return 1
}
wait_ok "$OURS"
if [[ $OVERLAY == 1 ]]; then
  # nginx serves what phonefleet merges: the same bytes for both.
  while read -r path; do
    curl -sf -o "$WORK/files$path" "http://127.0.0.1:$OURS$path"
  done <"$WORK/paths.txt"
  grep -q sip-secret "$WORK/files$(head -1 "$WORK/paths.txt")"
fi
wait_ok "$NGX"

# Both serve identical bytes.
first=$(head -1 "$WORK/paths.txt")
cmp <(curl -s "http://127.0.0.1:$OURS$first") <(curl -s "http://127.0.0.1:$NGX$first")

run() { # port -> "req/s p99_ms"
  local out rps p99
  out=$(wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency -s "$WORK/paths.lua" "http://127.0.0.1:$1")
  echo "$out" >>"$WORK/wrk.log"
  if echo "$out" | grep -q "Non-2xx"; then echo "non-2xx answers from port $1" >&2; echo "$out" >&2; exit 1; fi
  rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
  p99=$(echo "$out" | awk '$1=="99%" {v=$2; if (v ~ /us$/) {sub(/us$/,"",v); v=v/1000} else if (v ~ /ms$/) {sub(/ms$/,"",v)} else if (v ~ /s$/) {sub(/s$/,"",v); v=v*1000}; print v}')
  echo "$rps $p99"
}

# Warm both up, then measure alternately, ROUNDS times each: on a shared machine the load
# changes from second to second, so medians of alternated runs compare the two fairly.
wrk -t1 -c8 -d2s -s "$WORK/paths.lua" "http://127.0.0.1:$OURS" >/dev/null
wrk -t1 -c8 -d2s -s "$WORK/paths.lua" "http://127.0.0.1:$NGX" >/dev/null
RESULTS=()
for _ in $(seq 1 "$ROUNDS"); do
  RESULTS+=("nginx $(run "$NGX")")
  RESULTS+=("phonefleet $(run "$OURS")")
done

printf '%s\n' "${RESULTS[@]}" >"$WORK/results.txt"
OVERLAY=$OVERLAY python3 - "$WORK/results.txt" "$PHONES" "$DURATION" "$CONNECTIONS" "$THREADS" "$ROUNDS" "$(cut -d' ' -f1-3 /proc/loadavg)" <<'PY'
import os, statistics, sys
results, phones, duration, conns, threads, rounds, load = sys.argv[1:]
runs = {}
for line in open(results):
    name, rps, p99 = line.split()
    runs.setdefault(name, []).append((float(rps), float(p99)))
med = {n: (statistics.median(r for r, _ in v), statistics.median(p for _, p in v)) for n, v in runs.items()}
print(f"wrk -t{threads} -c{conns} -d{duration}, {phones} rendered files{' (phonefleet: overlay, merged per request)' if os.environ.get('OVERLAY') == '1' else ''}, random paths; "
      f"{rounds} alternated runs each, medians; load average at the end: {load}")
print(f"{'server':<12}{'req/s':>10}{'p99 ms':>9}   runs (req/s)")
for n in ("nginx", "phonefleet"):
    r, p = med[n]
    print(f"{n:<12}{r:>10.0f}{p:>9.2f}   {', '.join(f'{x:.0f}' for x, _ in runs[n])}")
(nr, np), (orr, op) = med["nginx"], med["phonefleet"]
print(f"ratio phonefleet/nginx: {orr / nr:.2f}x req/s, p99 {op / np:.2f}x")
PY
