#!/usr/bin/env bash
# Adds one worker node to a control plane started by up.sh: kube-scheduler, containerd (with
# runc and a project-local config, root, state and socket), CNI (bridge + host-local +
# loopback + portmap from Debian's containernetworking-plugins), kube-proxy (iptables mode,
# so Services and NodePorts work) and a kubelet registered as the Ready node "phonefleet-node".
#
#   node-up.sh DIR        (DIR: the control plane's directory; up.sh calls this itself when
#                          PHONEFLEET_NODE=1)
#
# Needs root and the Debian packages containerd, runc, containernetworking-plugins, iptables
# and gcc. Nothing is pulled from a container registry: the sandbox ("pause") image is a static
# program built here (node/pause.c) and imported into containerd; load other images with
# load-image.sh. One node per machine (kube-proxy's iptables chains and the bridge are
# machine-wide): a second node-up.sh fails while another directory's node runs.
#
# The node's processes join DIR/pids (so down.sh and up.sh's watchdog stop them); everything
# else the node made (containers, mounts, network namespaces, the bridge, iptables chains,
# cgroups) is removed by node-down.sh, which down.sh calls. Layout under DIR/node/.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
dir=$(cd "${1:?usage: node-up.sh DIR}" && pwd)
node=$dir/node
name=phonefleet-node
bridge=pfnode0
subnet=10.244.0.0/24
gateway=10.244.0.1   # the node's IP: kubelet, NodePorts, and the API server for pods
lock=/run/phonefleet-node.dir

[ "$(id -u)" = 0 ] || { echo "node-up.sh: the node needs root (containerd, runc, CNI, iptables)" >&2; exit 1; }
missing=()
for c in containerd containerd-shim-runc-v2 ctr runc iptables gcc; do
  command -v "$c" >/dev/null 2>&1 || missing+=("$c")
done
[ -x /usr/lib/cni/bridge ] || missing+=("/usr/lib/cni/bridge (containernetworking-plugins)")
if [ ${#missing[@]} -gt 0 ]; then
  echo "node-up.sh: missing ${missing[*]}; apt-get install containerd runc containernetworking-plugins iptables gcc" >&2
  exit 1
fi
if [ -f "$node/ready" ]; then echo "node-up.sh: node already running in $dir" >&2; exit 0; fi
# One node per machine (its bridge, subnet and iptables rules are fixed): a second run on a
# shared machine (two CI jobs) waits for the first one's node-down.sh, up to NODE_LOCK_WAIT
# seconds, instead of failing. flock makes the check and the claim one step.
exec 9>"$lock.flock"
node_alive() { # DIR: does a process of that cluster directory's node still run?
  [ -d "$1/node" ] || return 1
  # Without its pid list nothing proves the node stopped: count it as running (a run that
  # crashed mid-way left one so, and a second node beside it broke every pod's network).
  [ -f "$1/pids" ] || return 0
  local pid
  for pid in $(awk '{print $2}' "$1/pids"); do kill -0 "$pid" 2>/dev/null && return 0; done
  return 1
}
waited=0
while :; do
  flock 9
  holder=$(cat "$lock" 2>/dev/null || true)
  if [ -z "$holder" ] || [ "$holder" = "$dir" ] || ! node_alive "$holder"; then
    echo "$dir" >"$lock"
    flock -u 9
    break
  fi
  flock -u 9
  if [ "$waited" -ge "${NODE_LOCK_WAIT:-3600}" ]; then
    echo "node-up.sh: a node of $holder is still running after ${waited}s; stop it first (node-down.sh)" >&2
    exit 1
  fi
  [ "$waited" = 0 ] && echo "node-up.sh: waiting for the node of $holder to stop (one node per machine)" >&2
  sleep 5
  waited=$((waited + 5))
done
exec 9>&-
start=$SECONDS
bin=$("$here/build.sh" --node | tail -n 1)
mkdir -p "$node"/{logs,pki,cni/net.d,cni/ipam,kubelet,containerd}
# shellcheck disable=SC1091
source "$dir/env"
kc() { "$bin/kubectl" --kubeconfig "$dir/kubeconfig" "$@"; }
api=$(awk '/server:/{print $2; exit}' "$dir/kubeconfig")
api_port=${api##*:}

free_ports() {
  python3 - "$1" <<'PY'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket(); s.bind(("127.0.0.1", 0)); socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
PY
}
read -r kubelet_port kubelet_healthz sched_port proxy_healthz proxy_metrics stream_port < <(free_ports 6)

# --- images: the sandbox image, built here --------------------------------------------------
pause_ref=localhost/phonefleet/pause:1
images=${XDG_CACHE_HOME:-$HOME/.cache}/phonefleet/images
phash=$(cat "$here/node/pause.c" "$root/scripts/oci_image.py" | sha256sum | cut -c1-12)
pause_out=$images/pause-$phash
if [ ! -f "$pause_out/image.tar" ]; then
  rm -rf "$pause_out" && mkdir -p "$pause_out/rootfs"
  gcc -static -Os -s -o "$pause_out/rootfs/pause" "$here/node/pause.c"
  python3 "$root/scripts/oci_image.py" --rootfs "$pause_out/rootfs" --out "$pause_out" \
    --ref "$pause_ref" --config '{"Entrypoint":["/pause"],"User":"65535:65535"}' >/dev/null
fi

# --- certificates: client certs from the control plane's CA ---------------------------------
pki=$node/pki
printf 'basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth\n' >"$pki/client.ext"
printf 'basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\nsubjectAltName=IP:%s,DNS:%s\n' "$gateway" "$name" >"$pki/serving.ext"
cert() { # name, subject, ext
  openssl req -newkey rsa:2048 -nodes -subj "$2" -keyout "$pki/$1.key" -out "$pki/$1.csr" >/dev/null 2>&1
  openssl x509 -req -in "$pki/$1.csr" -CA "$dir/pki/ca.crt" -CAkey "$dir/pki/ca.key" -CAcreateserial \
    -days 3650 -extfile "$pki/$3" -out "$pki/$1.crt" >/dev/null 2>&1
}
cert kubelet "/CN=system:node:$name/O=system:nodes" client.ext
cert kubelet-serving "/CN=$name" serving.ext
cert scheduler "/CN=system:kube-scheduler" client.ext
cert proxy "/CN=system:kube-proxy" client.ext
kubeconfig() { # file, cert name
  cat >"$1" <<KC
apiVersion: v1
kind: Config
clusters:
- name: phonefleet-test
  cluster: {server: "$api", certificate-authority: "$dir/pki/ca.crt"}
users:
- name: $2
  user: {client-certificate: "$pki/$2.crt", client-key: "$pki/$2.key"}
contexts:
- name: phonefleet-test
  context: {cluster: phonefleet-test, user: $2}
current-context: phonefleet-test
KC
}
kubeconfig "$node/kubelet.kubeconfig" kubelet
kubeconfig "$node/scheduler.kubeconfig" scheduler
kubeconfig "$node/proxy.kubeconfig" proxy
# RBAC only (no Node authorizer here): the bootstrap roles, bound to the node's identities.
kc create clusterrolebinding phonefleet-node --clusterrole=system:node --user="system:node:$name" \
  --dry-run=client -o yaml | kc apply -f - >/dev/null
kc create clusterrolebinding phonefleet-node-proxier --clusterrole=system:node-proxier \
  --user=system:kube-proxy --dry-run=client -o yaml | kc apply -f - >/dev/null

start_named() { local n=$1; shift; setsid "$@" </dev/null >"$node/logs/$n.log" 2>&1 & echo "$n $!" >>"$dir/pids"; }
wait_for() { # what, seconds, process name, command...
  local what=$1 secs=$2 proc=$3; shift 3
  for _ in $(seq 1 $((secs * 5))); do
    "$@" >/dev/null 2>&1 && return 0
    if ! kill -0 "$(awk -v n="$proc" '$1==n{print $2}' "$dir/pids" | tail -1)" 2>/dev/null; then
      echo "node-up.sh: $proc exited while waiting for $what; last log lines:" >&2
      tail -n 30 "$node/logs/$proc.log" >&2; return 1
    fi
    sleep 0.2
  done
  echo "node-up.sh: $what not ready after ${secs}s; last $proc log lines:" >&2
  tail -n 30 "$node/logs/$proc.log" >&2; return 1
}

# --- network: the bridge (so the node IP exists before the kubelet starts), CNI config -------
cat /proc/sys/net/ipv4/ip_forward >"$node/ip_forward.before"
echo 1 >/proc/sys/net/ipv4/ip_forward
if [ -e /proc/sys/net/bridge/bridge-nf-call-iptables ]; then
  echo 1 >/proc/sys/net/bridge/bridge-nf-call-iptables
fi
ip link show "$bridge" >/dev/null 2>&1 || ip link add "$bridge" type bridge
ip addr replace "$gateway/24" dev "$bridge"
ip link set "$bridge" up
cat >"$node/cni/net.d/10-phonefleet.conflist" <<JSON
{
  "cniVersion": "1.0.0",
  "name": "phonefleet",
  "plugins": [
    {"type": "bridge", "bridge": "$bridge", "isGateway": true, "ipMasq": true, "hairpinMode": true,
     "ipam": {"type": "host-local", "dataDir": "$node/cni/ipam",
              "ranges": [[{"subnet": "$subnet", "gateway": "$gateway"}]],
              "routes": [{"dst": "0.0.0.0/0"}]}},
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
JSON

# --- containerd ------------------------------------------------------------------------------
sock=$node/containerd.sock
cat >"$node/containerd.toml" <<TOML
version = 2
root = "$node/containerd/root"
state = "$node/containerd/state"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]
[grpc]
  address = "$sock"
[ttrpc]
  address = "$sock.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "$node/containerd/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$pause_ref"
  disable_tcp_service = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "$stream_port"
  enable_selinux = false
  disable_apparmor = true
  # The sandbox has no CAP_SYS_RESOURCE (CapEff 000001fffeffffff: bit 24 missing), so runc
  # cannot lower oom_score_adj below containerd's own (the kubelet asks -998 for sandboxes;
  # runc failed with "failed to update /proc/self/oom_score_adj: Permission denied").
  restrict_oom_score_adj = true
  # Pod network namespaces under the state directory, so node-down.sh finds them by path.
  netns_mounts_under_state_dir = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$node/cni/net.d"
    max_conf_num = 1
TOML
start_named containerd containerd --config "$node/containerd.toml"
wait_for "containerd" 30 containerd ctr --address "$sock" version
ctr --address "$sock" -n k8s.io images import --no-unpack "$pause_out/image.tar" >/dev/null

# --- kube-scheduler --------------------------------------------------------------------------
start_named kube-scheduler "$bin/kube-scheduler" --kubeconfig "$node/scheduler.kubeconfig" \
  --authentication-kubeconfig "$node/scheduler.kubeconfig" --authorization-kubeconfig "$node/scheduler.kubeconfig" \
  --bind-address 127.0.0.1 --secure-port "$sched_port" --leader-elect=false --v=1

# --- kubelet ---------------------------------------------------------------------------------
# cgroup v1 (these machines mount v1 controllers; v2 only as a side "unified" hierarchy): the
# kubelet refuses it unless failCgroupV1 is false. cgroupfs driver (no systemd), pods under a
# cgroup of the node's own.
cgroot=/phonefleet-node
for c in /sys/fs/cgroup/*/; do
  [ "$(stat -fc %T "$c")" = cgroupfs ] && mkdir -p "$c${cgroot#/}"
done
cat >"$node/kubelet.yaml" <<YAML
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $gateway
port: $kubelet_port
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: $kubelet_healthz
tlsCertFile: $pki/kubelet-serving.crt
tlsPrivateKeyFile: $pki/kubelet-serving.key
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $dir/pki/ca.crt}
authorization: {mode: Webhook}
containerRuntimeEndpoint: unix://$sock
cgroupDriver: cgroupfs
cgroupRoot: $cgroot
failCgroupV1: false
failSwapOn: false
resolvConf: /etc/resolv.conf
clusterDomain: cluster.local
staticPodPath: ""
serializeImagePulls: false
imageGCHighThresholdPercent: 99
imageGCLowThresholdPercent: 98
evictionHard: {memory.available: 100Mi, nodefs.available: 1%, imagefs.available: 1%, nodefs.inodesFree: 1%}
rotateCertificates: false
serverTLSBootstrap: false
syncFrequency: 10s
nodeStatusUpdateFrequency: 5s
YAML
start_named kubelet "$bin/kubelet" --config "$node/kubelet.yaml" --kubeconfig "$node/kubelet.kubeconfig" \
  --root-dir "$node/kubelet" --cert-dir "$node/kubelet/pki" --hostname-override "$name" \
  --node-ip "$gateway" --v=1
node_ready() {
  [ "$(kc get node "$name" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" = True ]
}
wait_for "node $name Ready" 120 kubelet node_ready

# --- kube-proxy, and the API server's address for pods ---------------------------------------
# up.sh (PHONEFLEET_NODE=1) binds the API server to all addresses and names 10.96.0.1 in its
# certificate; its endpoint reconciler is off, so the kubernetes Service's endpoints are set
# here: the node IP, which pods reach through their gateway.
kc apply -f - >/dev/null <<YAML
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: kubernetes
  namespace: default
  labels: {kubernetes.io/service-name: kubernetes, endpointslice.kubernetes.io/managed-by: phonefleet-node-up}
addressType: IPv4
endpoints: [{addresses: ["$gateway"], conditions: {ready: true}}]
ports: [{name: https, port: $api_port, protocol: TCP}]
YAML
cat >"$node/kube-proxy.yaml" <<YAML
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: $node/proxy.kubeconfig}
mode: iptables
hostnameOverride: $name
clusterCIDR: $subnet
bindAddress: 127.0.0.1
healthzBindAddress: 127.0.0.1:$proxy_healthz
metricsBindAddress: 127.0.0.1:$proxy_metrics
nodePortAddresses: ["$gateway/32", "127.0.0.1/32"]
conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
YAML
start_named kube-proxy "$bin/kube-proxy" --config "$node/kube-proxy.yaml" --v=1
wait_for "kube-proxy" 60 kube-proxy curl -sf "http://127.0.0.1:$proxy_healthz/healthz"

cat >"$node/env" <<ENV
# The node of the control plane in $dir (written by node-up.sh).
NODE_NAME=$name
NODE_IP=$gateway
CONTAINERD_ADDRESS=$sock
ENV
touch "$node/ready"
echo "node-up.sh: node $name Ready (containerd $(containerd --version | awk '{print $3}'), kubelet $("$bin/kubelet" --version | awk '{print $2}')) after $((SECONDS - start))s" >&2
echo "$name"
