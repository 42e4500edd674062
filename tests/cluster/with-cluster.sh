#!/usr/bin/env bash
# Runs a command against a private, freshly started local control plane, then tears it down
# (also when the command fails or the run is interrupted).
#
#   with-cluster.sh COMMAND [ARGS...]
#
# The command sees PHONEFLEET_TEST_KUBECONFIG and KUBECONFIG pointing at the control plane, and
# the built tools (kubectl, helm, ...) first on PATH.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
dir=$(mktemp -d "${TMPDIR:-/tmp}/phonefleet-cluster.XXXXXX")
trap '"$here/down.sh" "$dir"; rm -rf "$dir"' EXIT
kubeconfig=$("$here/up.sh" --dir "$dir" --owner-pid $$ | tail -n 1)
export PHONEFLEET_TEST_KUBECONFIG=$kubeconfig KUBECONFIG=$kubeconfig
# shellcheck disable=SC1091
source "$dir/env"
"$@"
