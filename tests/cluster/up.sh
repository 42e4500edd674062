#!/usr/bin/env bash
# Starts a local, real Kubernetes control plane on 127.0.0.1: etcd, kube-apiserver (RBAC,
# service-account signing key, locally generated serving certs, an admin client certificate)
# and kube-controller-manager (garbage collector, namespace, service-account and ClusterRole
# aggregation controllers,
# so owner references and namespace deletion behave as in a cluster).
#
#   up.sh [--dir DIR] [--owner-pid PID]
#
# DIR (default: $PHONEFLEET_CLUSTER_DIR or .cluster/ at the repository root) receives the
# kubeconfig, certificates, logs and pids. With --owner-pid the control plane tears itself down
# as soon as that process exits, however it exits (a panicking or killed test run included).
# --remove-dir-on-exit (with --owner-pid) also deletes DIR then, logs included.
# Prints the kubeconfig path as its last line once /readyz answers ok.
#
# With PHONEFLEET_NODE=1 it also starts a node (node-up.sh: kube-scheduler, containerd, CNI,
# kube-proxy, a kubelet) and, for pods to reach it, binds the API server to every address and
# runs the EndpointSlice and node lifecycle controllers (the latter lifts the not-ready taint
# the API server puts on a new node).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
dir=${PHONEFLEET_CLUSTER_DIR:-$root/.cluster}
with_node=${PHONEFLEET_NODE:-}
[ "$with_node" = 0 ] && with_node=""
owner=""
cleanup=""
while [ $# -gt 0 ]; do
  case $1 in
    --dir) dir=$2; shift 2 ;;
    --owner-pid) owner=$2; shift 2 ;;
    --remove-dir-on-exit) cleanup=1; shift ;;
    *) echo "up.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done

if [ -f "$dir/pids" ] && "$here/status.sh" "$dir" >/dev/null 2>&1; then
  echo "up.sh: control plane already running in $dir" >&2
  echo "$dir/kubeconfig"
  exit 0
fi
"$here/down.sh" "$dir" >/dev/null 2>&1 || true

bin=$("$here/build.sh" ${with_node:+--node} | tail -n 1)
mkdir -p "$dir/pki" "$dir/logs"
dir=$(cd "$dir" && pwd)
rm -rf "$dir/etcd-data" "$dir/pids"

free_ports() { # n -> n distinct free TCP ports on 127.0.0.1
  python3 - "$1" <<'PY'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket(); s.bind(("127.0.0.1", 0)); socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
PY
}
read -r etcd_port peer_port api_port kcm_port < <(free_ports 4)

# --- certificates: one CA signs the serving cert and every client cert -----------------------
pki=$dir/pki
ossl() { openssl "$@" >/dev/null 2>&1; }
ossl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=phonefleet-test-ca" \
  -keyout "$pki/ca.key" -out "$pki/ca.crt"
client_cert() { # name, CN, O
  ossl req -newkey rsa:2048 -nodes -subj "/CN=$2${3:+/O=$3}" -keyout "$pki/$1.key" -out "$pki/$1.csr"
  ossl x509 -req -in "$pki/$1.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" -CAcreateserial \
    -days 3650 -extfile "$pki/client.ext" -out "$pki/$1.crt"
}
ossl req -newkey rsa:2048 -nodes -subj "/CN=kube-apiserver" -keyout "$pki/apiserver.key" \
  -out "$pki/apiserver.csr"
# X.509 v3 extensions everywhere: rustls (the controller's TLS stack) rejects v1 certificates.
printf 'basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth\n' >"$pki/client.ext"
printf 'basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,IP:10.96.0.1,DNS:localhost,DNS:kubernetes.default.svc\n' >"$pki/san.ext"
ossl x509 -req -in "$pki/apiserver.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" -CAcreateserial \
  -days 3650 -extfile "$pki/san.ext" -out "$pki/apiserver.crt"
client_cert admin admin system:masters
client_cert kcm system:kube-controller-manager
# What the API server shows a kubelet (logs, exec, port-forward).
client_cert apiserver-kubelet apiserver-kubelet-client system:masters
ossl genrsa -out "$pki/sa.key" 2048
ossl rsa -in "$pki/sa.key" -pubout -out "$pki/sa.pub"

kubeconfig() { # file, user cert name
  cat >"$1" <<KC
apiVersion: v1
kind: Config
clusters:
- name: phonefleet-test
  cluster:
    server: https://127.0.0.1:$api_port
    certificate-authority: $pki/ca.crt
users:
- name: $2
  user:
    client-certificate: $pki/$2.crt
    client-key: $pki/$2.key
contexts:
- name: phonefleet-test
  context: {cluster: phonefleet-test, user: $2}
current-context: phonefleet-test
KC
}
kubeconfig "$dir/kubeconfig.tmp" admin
kubeconfig "$dir/kcm.kubeconfig" kcm

start_named() { local name=$1; shift; setsid "$@" </dev/null >"$dir/logs/$name.log" 2>&1 & echo "$name $!" >>"$dir/pids"; }

start_named etcd "$bin/etcd" --name default --data-dir "$dir/etcd-data" \
  --listen-client-urls "http://127.0.0.1:$etcd_port" --advertise-client-urls "http://127.0.0.1:$etcd_port" \
  --listen-peer-urls "http://127.0.0.1:$peer_port" --initial-advertise-peer-urls "http://127.0.0.1:$peer_port" \
  --initial-cluster "default=http://127.0.0.1:$peer_port" --unsafe-no-fsync --log-level warn

apiserver_cmd=("$bin/kube-apiserver"
  --etcd-servers "http://127.0.0.1:$etcd_port"
  --bind-address "$([ -n "$with_node" ] && echo 0.0.0.0 || echo 127.0.0.1)" --advertise-address 127.0.0.1 --secure-port "$api_port"
  --tls-cert-file "$pki/apiserver.crt" --tls-private-key-file "$pki/apiserver.key"
  --client-ca-file "$pki/ca.crt"
  --kubelet-client-certificate "$pki/apiserver-kubelet.crt" --kubelet-client-key "$pki/apiserver-kubelet.key"
  --authorization-mode RBAC
  --service-account-issuer https://kubernetes.default.svc
  --service-account-key-file "$pki/sa.pub" --service-account-signing-key-file "$pki/sa.key"
  --api-audiences https://kubernetes.default.svc
  --service-cluster-ip-range 10.96.0.0/16
  --endpoint-reconciler-type none
  --allow-privileged=false --profiling=false --v=1)
# Kept so restart-apiserver.sh can bring the same server back on the same port.
printf '%q ' "${apiserver_cmd[@]}" >"$dir/apiserver.cmd"
start_named kube-apiserver "${apiserver_cmd[@]}"

api="https://127.0.0.1:$api_port"
ready() {
  curl -sf --max-time 2 --cacert "$pki/ca.crt" --cert "$pki/admin.crt" --key "$pki/admin.key" \
    "$api/readyz" >/dev/null 2>&1
}
for _ in $(seq 1 600); do
  ready && break
  if ! kill -0 "$(awk '$1=="kube-apiserver"{print $2}' "$dir/pids")" 2>/dev/null; then
    echo "up.sh: kube-apiserver exited; last log lines:" >&2; tail -n 30 "$dir/logs/kube-apiserver.log" >&2
    "$here/down.sh" "$dir" >&2 || true; exit 1
  fi
  sleep 0.2
done
ready || { echo "up.sh: kube-apiserver not ready after 120s" >&2; "$here/down.sh" "$dir" >&2 || true; exit 1; }

start_named kube-controller-manager "$bin/kube-controller-manager" \
  --kubeconfig "$dir/kcm.kubeconfig" \
  --authentication-kubeconfig "$dir/kcm.kubeconfig" --authorization-kubeconfig "$dir/kcm.kubeconfig" \
  --bind-address 127.0.0.1 --secure-port "$kcm_port" \
  --controllers garbage-collector-controller,namespace-controller,clusterrole-aggregation-controller,serviceaccount-controller,serviceaccount-token-controller,root-ca-certificate-publisher-controller,deployment-controller,replicaset-controller,resourcequota-controller${with_node:+,endpointslice-controller,node-lifecycle-controller} \
  --service-account-private-key-file "$pki/sa.key" --root-ca-file "$pki/ca.crt" \
  --use-service-account-credentials=true --leader-elect=false --v=1

# Wait until the controller manager serves its health endpoint (it fails at start-up, rather
# than retrying, when the API server is unreachable).
for _ in $(seq 1 300); do
  curl -skf --max-time 2 "https://127.0.0.1:$kcm_port/healthz" >/dev/null 2>&1 && break
  if ! kill -0 "$(awk '$1=="kube-controller-manager"{print $2}' "$dir/pids")" 2>/dev/null; then
    echo "up.sh: kube-controller-manager exited; last log lines:" >&2
    tail -n 20 "$dir/logs/kube-controller-manager.log" >&2
    "$here/down.sh" "$dir" >&2 || true; exit 1
  fi
  sleep 0.2
done

mv "$dir/kubeconfig.tmp" "$dir/kubeconfig"
cat >"$dir/env" <<ENV
export KUBECONFIG=$dir/kubeconfig
export PATH=$bin:\$PATH
ENV

if [ -n "$owner" ]; then
  # Watchdog: outlives this script, dies with the control plane.
  setsid bash -c 'while kill -0 "$1" 2>/dev/null && [ -f "$2/pids" ]; do sleep 1; done
    "$3/down.sh" "$2"; if [ -n "$4" ]; then rm -rf "$2"; fi' \
    watchdog "$owner" "$dir" "$here" "$cleanup" </dev/null >>"$dir/logs/watchdog.log" 2>&1 &
fi
if [ -n "$with_node" ]; then
  "$here/node-up.sh" "$dir" >/dev/null || { "$here/down.sh" "$dir" >&2 || true; exit 1; }
fi
echo "up.sh: control plane $("$bin/kubectl" --kubeconfig "$dir/kubeconfig" version -o json 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin)["serverVersion"]["gitVersion"])') ready at $api" >&2
echo "$dir/kubeconfig"
