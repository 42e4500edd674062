#!/usr/bin/env bash
# Kills the kube-apiserver of the control plane in DIR (SIGKILL, as a crash would) and starts it
# again with the same flags on the same port; returns once /readyz answers ok. For tests that
# prove clients recover from an API server outage.
set -euo pipefail
dir=${1:?usage: restart-apiserver.sh DIR}
pid=$(awk '$1=="kube-apiserver"{print $2}' "$dir/pids")
kill -KILL "$pid" 2>/dev/null || true
while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
setsid bash -c "exec $(cat "$dir/apiserver.cmd")" </dev/null >>"$dir/logs/kube-apiserver.log" 2>&1 &
new=$!
sed -i "s/^kube-apiserver $pid\$/kube-apiserver $new/" "$dir/pids"
"$(dirname "${BASH_SOURCE[0]}")/status.sh" "$dir" >/dev/null 2>&1 || true
server=$(awk '/server:/{print $2; exit}' "$dir/kubeconfig")
for _ in $(seq 1 600); do
  if curl -sf --max-time 2 --cacert "$dir/pki/ca.crt" --cert "$dir/pki/admin.crt" \
    --key "$dir/pki/admin.key" "$server/readyz" >/dev/null 2>&1; then
    echo "restart-apiserver.sh: kube-apiserver back (pid $new)" >&2
    exit 0
  fi
  sleep 0.2
done
echo "restart-apiserver.sh: kube-apiserver not ready after 120s" >&2
exit 1
