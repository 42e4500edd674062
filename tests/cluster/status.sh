#!/usr/bin/env bash
# Exit 0 when every process of the control plane in DIR is alive and the API server is ready.
set -uo pipefail
dir=${1:?usage: status.sh DIR}
[ -f "$dir/pids" ] || exit 1
while read -r name pid; do
  kill -0 "$pid" 2>/dev/null || { echo "$name (pid $pid) is not running"; exit 1; }
done <"$dir/pids"
server=$(awk '/server:/{print $2; exit}' "$dir/kubeconfig")
curl -sf --max-time 2 --cacert "$dir/pki/ca.crt" --cert "$dir/pki/admin.crt" --key "$dir/pki/admin.key" \
  "$server/readyz" >/dev/null || { echo "API server at $server not ready"; exit 1; }
echo "control plane in $dir: running, API server $server ready"
