#!/usr/bin/env bash
# Removes the node node-up.sh added to the control plane in DIR: kills its containers, stops
# kube-proxy, the kubelet, kube-scheduler and containerd, and removes what they left on the
# machine (container shims, mounts, network namespaces, the bridge, iptables rules, cgroups).
# down.sh calls it; safe to run twice.
#
#   node-down.sh DIR
set -uo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
dir=$(cd "${1:?usage: node-down.sh DIR}" 2>/dev/null && pwd) || exit 0
node=$dir/node
[ -d "$node" ] || exit 0
bridge=pfnode0
sock=$node/containerd.sock
lock=/run/phonefleet-node.dir
rm -f "$node/ready"

pid_of() { [ -f "$dir/pids" ] && awk -v n="$1" '$1==n{print $2}' "$dir/pids" | tail -1; }
stop() { # process names: SIGTERM, then SIGKILL after 10 s
  local pids="" p
  for n in "$@"; do p=$(pid_of "$n"); [ -n "$p" ] && pids="$pids $p"; done
  for p in $pids; do kill -TERM "$p" 2>/dev/null; done
  for _ in $(seq 1 100); do
    local alive=""
    for p in $pids; do kill -0 "$p" 2>/dev/null && alive=1; done
    [ -z "$alive" ] && break
    sleep 0.1
  done
  for p in $pids; do kill -KILL "$p" 2>/dev/null; done
  if [ -f "$dir/pids" ]; then
    for n in "$@"; do sed -i "/^$n /d" "$dir/pids"; done
  fi
}

# The kubelet first, so it does not restart what is killed next.
stop kubelet kube-scheduler
# Network namespaces of the pod sandboxes, read from containerd before its containers go.
netns=()
if ctr --address "$sock" version >/dev/null 2>&1; then
  for id in $(ctr --address "$sock" -n k8s.io containers ls -q 2>/dev/null); do
    p=$(ctr --address "$sock" -n k8s.io containers info "$id" 2>/dev/null | python3 -c '
import json, sys
try:
    spec = json.load(sys.stdin)["Spec"]
    for ns in spec["linux"]["namespaces"]:
        if ns["type"] == "network" and ns.get("path"): print(ns["path"])
except Exception: pass')
    [ -n "$p" ] && netns+=("$p")
    ctr --address "$sock" -n k8s.io tasks kill -s SIGKILL "$id" >/dev/null 2>&1
  done
  sleep 0.5
  for id in $(ctr --address "$sock" -n k8s.io tasks ls -q 2>/dev/null); do
    ctr --address "$sock" -n k8s.io tasks delete -f "$id" >/dev/null 2>&1
  done
fi
stop kube-proxy containerd
# Shims still running for this containerd (their command line names its socket), and what runs
# under them.
for shim in $(pgrep -f -- "-address $sock" 2>/dev/null); do
  for child in $(pgrep -P "$shim" 2>/dev/null); do kill -KILL "$child" 2>/dev/null; done
  kill -KILL "$shim" 2>/dev/null
done
# Mounts under the node directory (rootfs, shm, volumes), deepest first, then the sandboxes'
# network namespaces.
awk -v d="$node/" 'index($5, d) == 1 {print $5}' /proc/self/mountinfo | sort -r | while read -r m; do
  umount -l "$m" 2>/dev/null
done
for p in "${netns[@]}"; do
  [ -e "$p" ] && { umount "$p" 2>/dev/null; rm -f "$p"; }
done
# iptables: kube-proxy cleans its own chains; the kubelet's (KUBE-FIREWALL, KUBE-KUBELET-CANARY,
# KUBE-IPTABLES-HINT) and the bridge plugin's masquerade chains (CNI-…, whose rules carry the
# network's name in a comment) are removed here, IPv4 and IPv6. One node per machine: every
# KUBE- chain is this node's.
bin=${XDG_CACHE_HOME:-$HOME/.cache}/phonefleet/tools/bin
[ -x "$bin/kube-proxy" ] && "$bin/kube-proxy" --cleanup >/dev/null 2>&1
for ipt in iptables ip6tables; do
  command -v "$ipt" >/dev/null 2>&1 || continue
  for table in filter nat mangle; do
    "$ipt-save" -t "$table" 2>/dev/null |
      grep -E -e '^-A [A-Z]+ .*-j KUBE-' -e '^-A .*name: \\"phonefleet\\" id: ' | sed 's/^-A /-D /' |
      while read -r rule; do eval "$ipt -t $table $rule" 2>/dev/null; done
    chains=$("$ipt-save" -t "$table" 2>/dev/null | awk '/^:(KUBE-|CNI-)/{print substr($1, 2)}')
    for chain in $chains; do "$ipt" -t "$table" -F "$chain" 2>/dev/null; done
    for chain in $chains; do "$ipt" -t "$table" -X "$chain" 2>/dev/null; done
  done
done
ip link del "$bridge" 2>/dev/null
for v in $(ip -o link show type veth 2>/dev/null | awk -F': ' '{print $2}' | cut -d@ -f1); do
  [ "$(cat "/sys/class/net/$v/master/uevent" 2>/dev/null | sed -n 's/^INTERFACE=//p')" = "$bridge" ] && ip link del "$v"
done
[ -f "$node/ip_forward.before" ] && cat "$node/ip_forward.before" >/proc/sys/net/ipv4/ip_forward
# The kubelet's cgroups (pods under /phonefleet-node), deepest first.
for c in /sys/fs/cgroup/*/phonefleet-node; do
  [ -d "$c" ] && find "$c" -depth -type d -exec rmdir {} \; 2>/dev/null
done
rm -rf "$node"
[ -f "$lock" ] && [ "$(cat "$lock")" = "$dir" ] && rm -f "$lock"
echo "node-down.sh: node of $dir removed" >&2
