#!/usr/bin/env bash
# Builds the local test control plane (etcd, kube-apiserver, kube-controller-manager, kubectl,
# helm) from source through the Go module proxy, once per version. With --node (or
# PHONEFLEET_NODE=1) also the node's kubelet, kube-scheduler and kube-proxy, as a tool set of
# their own (module kubernetes-node: same k8s.io/kubernetes version) so adding them leaves the
# control plane's cached set untouched.
#
# Binaries land in "$PHONEFLEET_TOOLS/<tool-set>-<version>-<hash of go.mod+go.sum>/" (default
# ~/.cache/phonefleet/tools), outside the work tree; a set already built is skipped. Prints the
# directory that holds the binaries as its last line so callers can `bin=$(build.sh | tail -1)`.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
tools=${PHONEFLEET_TOOLS:-${XDG_CACHE_HOME:-$HOME/.cache}/phonefleet/tools}
mkdir -p "$tools/bin"
node=${PHONEFLEET_NODE:-}
[ "${1:-}" = --node ] && node=1
export GOFLAGS=-mod=mod CGO_ENABLED=0

modversion() { # module path, go.mod file -> required version
  awk -v m="$1" '$1==m && $2 ~ /^v/ {print $2; exit} $1=="require" && $2==m {print $3; exit}' "$2"
}

build_set() { # name, version, ldflags, packages...
  local name=$1 version=$2 ldflags=$3; shift 3
  local hash dir
  hash=$(cat "$here/$name/go.mod" "$here/$name/go.sum" | sha256sum | cut -c1-12)
  dir="$tools/$name-$version-$hash"
  if [ -f "$dir/.complete" ]; then
    echo "build.sh: $name $version cached in $dir" >&2
  else
    echo "build.sh: building $name $version (cold builds take several minutes)" >&2
    local start=$SECONDS
    rm -rf "$dir.tmp" && mkdir -p "$dir.tmp"
    (cd "$here/$name" && go build -trimpath -ldflags "-s -w $ldflags" -o "$dir.tmp/" "$@")
    touch "$dir.tmp/.complete"
    rm -rf "$dir" && mv "$dir.tmp" "$dir"
    echo "build.sh: built $name $version in $((SECONDS - start))s" >&2
  fi
  for f in "$dir"/*; do ln -sfn "$f" "$tools/bin/$(basename "$f")"; done
}

k8s=$(modversion k8s.io/kubernetes "$here/kubernetes/go.mod")
minor=$(echo "$k8s" | cut -d. -f2)
kv=""
for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  kv+=" -X $p.gitVersion=$k8s -X $p.gitMajor=1 -X $p.gitMinor=$minor -X $p.gitTreeState=clean"
  kv+=" -X $p.buildDate=1970-01-01T00:00:00Z"
done
build_set kubernetes "$k8s" "$kv" \
  k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
  k8s.io/kubernetes/cmd/kubectl
if [ -n "$node" ]; then
  nk8s=$(modversion k8s.io/kubernetes "$here/kubernetes-node/go.mod")
  [ "$nk8s" = "$k8s" ] || { echo "build.sh: kubernetes-node/go.mod pins $nk8s, kubernetes/go.mod $k8s" >&2; exit 1; }
  build_set kubernetes-node "$k8s" "$kv" \
    k8s.io/kubernetes/cmd/kubelet k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kube-proxy
fi

etcd=$(modversion go.etcd.io/etcd/server/v3 "$here/etcd/go.mod")
build_set etcd "$etcd" "" .

helm=$(modversion helm.sh/helm/v3 "$here/helm/go.mod")
build_set helm "$helm" "-X helm.sh/helm/v3/internal/version.version=$helm" helm.sh/helm/v3/cmd/helm

echo "$tools/bin"
