#!/usr/bin/env bash
# Imports an OCI image archive (scripts/build-image.sh writes one) into the containerd of the
# node in DIR, in the namespace the kubelet uses, so pods run it without pulling.
#
#   load-image.sh DIR ARCHIVE
set -euo pipefail
dir=${1:?usage: load-image.sh DIR ARCHIVE}
archive=${2:?usage: load-image.sh DIR ARCHIVE}
sock=$dir/node/containerd.sock
[ -f "$dir/node/ready" ] || { echo "load-image.sh: no node running in $dir (PHONEFLEET_NODE=1 make cluster)" >&2; exit 1; }
start=$SECONDS
ctr --address "$sock" -n k8s.io images import "$archive" >&2
echo "load-image.sh: imported $archive in $((SECONDS - start))s" >&2
