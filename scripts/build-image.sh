#!/usr/bin/env bash
# Builds the phonefleet image without a container engine and without pulling a base image:
# the release binary (no `simulated-time`, with the Dockerfile's profile settings) on a minimal
# root filesystem assembled from Debian packages (glibc, libgcc, CA certificates), uid 65532, no
# shell. Config (user, entrypoint, cmd, ports, labels) is read from the Dockerfile's final stage
# plus what its distroless base declares, so both images are equivalent
# (tests/image_build.rs checks it).
#
#   scripts/build-image.sh [--out DIR] [--simulated-time]
#
# --simulated-time builds a demo image instead (`make demo IN_CLUSTER=1`): the same, with the
# compressed clock compiled in, tagged <version>-simulated-time so it is never mistaken for the
# release image, in ~/.cache/phonefleet/images/phonefleet-simulated-time by default.
#
# DIR (default ~/.cache/phonefleet/images/phonefleet) receives rootfs/, layout/ (an OCI image
# layout) and image.tar (its archive: `ctr -n k8s.io images import`, `skopeo copy
# oci-archive:...`). The .deb files are cached in ~/.cache/phonefleet/images/debs. Prints
# "<image name> <manifest digest> <archive path>" as its last line.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cache=${XDG_CACHE_HOME:-$HOME/.cache}/phonefleet/images
out=""
features=()
while [ $# -gt 0 ]; do
  case $1 in
    --out) out=$2; shift 2 ;;
    --simulated-time) features=(--features simulated-time); shift ;;
    *) echo "build-image.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
suffix=${features:+-simulated-time}
out=${out:-$cache/phonefleet$suffix}
mkdir -p "$out" "$cache/debs"
out=$(cd "$out" && pwd)
version=$(awk -F'"' '/^version *=/{print $2; exit}' "$root/Cargo.toml")
ref=docker.io/library/phonefleet:$version$suffix

# --- the binary: the Dockerfile's `cargo build`, with the profile variables of its ENV line ---
start=$SECONDS
profile_env=$(awk '/^ENV CARGO_PROFILE_/{sub(/^ENV /,""); print; exit}' "$root/Dockerfile")
[ -n "$profile_env" ] || { echo "build-image.sh: no 'ENV CARGO_PROFILE_...' in the Dockerfile" >&2; exit 1; }
target=${CARGO_TARGET_DIR:-$root/target}
# Variables cargo sets for a test or build script that runs this (CARGO_MANIFEST_DIR, …):
# ring's build script tracks CARGO_MANIFEST_DIR, so leaking them would rebuild the release
# binary's dependencies every time the environment flips.
for v in $(compgen -e | grep -E '^(CARGO_(PKG_|MANIFEST_|CRATE_|BIN_|PRIMARY_|TARGET_TMPDIR|RUSTC_)|OUT_DIR$)'); do
  unset "$v"
done
# shellcheck disable=SC2086
(cd "$root" && env $profile_env cargo build --release --locked --bin phonefleet "${features[@]}") >&2
bin=$target/release/phonefleet
echo "build-image.sh: release binary ready after $((SECONDS - start))s" >&2

# --- the base: files of Debian packages, unpacked (no maintainer scripts, no dpkg database) --
debs=(libc6 libgcc-s1 ca-certificates)
(cd "$cache/debs" && for p in "${debs[@]}"; do
  v=$(apt-cache policy "$p" | awk '/Candidate:/{print $2}')
  ls "${p}_"*.deb >/dev/null 2>&1 && dpkg-deb -f "$(ls "${p}_"*.deb | head -1)" Version | grep -qx "$v" \
    || { rm -f "${p}_"*.deb; apt-get download -q -o APT::Sandbox::User=root "$p" >&2; }
done)
rootfs=$out/rootfs
rm -rf "$rootfs" && mkdir -p "$rootfs"
for p in "${debs[@]}"; do dpkg-deb -x "$(ls "$cache/debs/${p}_"*.deb | head -1)" "$rootfs"; done
rm -rf "$rootfs/usr/share/doc" "$rootfs/usr/share/lintian" "$rootfs/usr/share/man" \
  "$rootfs/usr/sbin" "$rootfs/sbin" "$rootfs/usr/bin" "$rootfs/etc/ld.so.conf.d"
# The CA bundle update-ca-certificates would write (a maintainer script, not run here).
mkdir -p "$rootfs/etc/ssl/certs"
find "$rootfs/usr/share/ca-certificates" -name '*.crt' | LC_ALL=C sort | xargs cat \
  >"$rootfs/etc/ssl/certs/ca-certificates.crt"
# Users and groups as in distroless: root, nobody, nonroot (65532); no login shell anywhere.
printf '%s\n' 'root:x:0:0:root:/root:/sbin/nologin' \
  'nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin' \
  'nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin' >"$rootfs/etc/passwd"
printf '%s\n' 'root:x:0:' 'nobody:x:65534:' 'nonroot:x:65532:' >"$rootfs/etc/group"
printf 'hosts: files dns\n' >"$rootfs/etc/nsswitch.conf"
mkdir -p "$rootfs/tmp" "$rootfs/root" "$rootfs/home/nonroot" "$rootfs/usr/local/bin" \
  "$rootfs/proc" "$rootfs/sys" "$rootfs/dev" "$rootfs/etc/phonefleet" "$rootfs/var/lib/phonefleet"
chmod 1777 "$rootfs/tmp"
chmod 700 "$rootfs/root" "$rootfs/home/nonroot"
install -m 0755 "$bin" "$rootfs/usr/local/bin/phonefleet"
if find "$rootfs" \( -name sh -o -name bash -o -name dash -o -name busybox \) | grep -q .; then
  echo "build-image.sh: a shell slipped into the image" >&2; exit 1
fi

# Distroless's own config (inherited by the Dockerfile's image), then the Dockerfile's.
base_config='{"Env":["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin","SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt"],"WorkingDir":"/home/nonroot"}'
python3 "$root/scripts/oci_image.py" --rootfs "$rootfs" --out "$out" --ref "$ref" \
  --dockerfile "$root/Dockerfile" --config "$base_config" --owner home/nonroot=65532:65532 |
  tee /dev/stderr | tail -n 1
echo "build-image.sh: image built in $((SECONDS - start))s ($(du -sh "$out/image.tar" | cut -f1))" >&2
