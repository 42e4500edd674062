#!/usr/bin/env bash
# Stops the control plane started by up.sh in DIR (default as up.sh): SIGTERM, then SIGKILL for
# whatever is still alive after 10 s, and checks that none of its processes is left.
set -uo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
dir=${1:-${PHONEFLEET_CLUSTER_DIR:-$(cd "$here/../.." && pwd)/.cluster}}
# The node first (its containers, mounts and network), while containerd still answers.
[ -d "$dir/node" ] && "$here/node-down.sh" "$dir"
[ -f "$dir/pids" ] || exit 0
pids=$(tac "$dir/pids" | awk '{print $2}')
for p in $pids; do kill -TERM "$p" 2>/dev/null; done
for _ in $(seq 1 100); do
  alive=""
  for p in $pids; do kill -0 "$p" 2>/dev/null && alive="$alive $p"; done
  [ -z "$alive" ] && break
  sleep 0.1
done
for p in $alive; do kill -KILL "$p" 2>/dev/null; done
rm -f "$dir/pids"
rm -rf "$dir/etcd-data"
echo "down.sh: control plane in $dir stopped" >&2
