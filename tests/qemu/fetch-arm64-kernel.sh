#!/usr/bin/env bash
# Fetches the Debian arm64 kernel the arm64 smoke tier (tests/arm64_qemu.rs) boots under
# qemu-system-aarch64: the package linux-image-arm64 currently depends on, fetched with
# `apt-get download` (no install, no foreign kernel on this machine) and only its
# /boot/vmlinuz-* extracted. Needs arm64 in dpkg's architectures and a fresh package list
# (scripts/install-deps.sh test does both).
#
# Cached as $CACHE/<package>_<version>/vmlinuz: once one is cached it is used as it is (asking
# apt costs 10-20 s on a loaded machine); TAPGATE_ARM64_KERNEL_REFRESH=1 fetches the current
# one again, as does an empty cache.
# Prints the kernel's path as the last line of stdout; progress goes to stderr.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
target="${CARGO_TARGET_DIR:-$repo/target}"
cache="$target/qemu-arm64/kernel"
mkdir -p "$cache"

newest_cached() {
    ls -1t "$cache"/*/vmlinuz 2>/dev/null | head -n 1
}

if [[ "${TAPGATE_ARM64_KERNEL_REFRESH:-0}" != 1 ]] && cached="$(newest_cached)" \
    && [[ -n "$cached" ]]; then
    echo "$cached"
    exit 0
fi

# The metapackage names the current ABI's image package (linux-image-6.1.0-NN-arm64).
pkg="$(apt-cache depends --no-recommends --no-suggests linux-image-arm64:arm64 2>/dev/null \
    | awk '/Depends: linux-image-[0-9]/ { sub(/:arm64$/, "", $2); print $2; exit }')"
if [[ -z "$pkg" ]]; then
    if cached="$(newest_cached)" && [[ -n "$cached" ]]; then
        echo "fetch-arm64-kernel: package list has no linux-image-arm64:arm64; using $cached" >&2
        echo "$cached"
        exit 0
    fi
    echo "fetch-arm64-kernel: apt knows no linux-image-arm64:arm64; run" \
        "'dpkg --add-architecture arm64 && apt-get update' (scripts/install-deps.sh test)" >&2
    exit 2
fi
version="$(apt-cache show "$pkg:arm64" | awk '/^Version:/ { print $2; exit }')"
out="$cache/${pkg}_${version}"

if [[ -f "$out/vmlinuz" ]]; then
    echo "$out/vmlinuz"
    exit 0
fi

exec 9>"$cache/.lock"
flock 9
if [[ -f "$out/vmlinuz" ]]; then
    echo "$out/vmlinuz"
    exit 0
fi

work="$(mktemp -d "$cache/fetch.XXXXXX")"
trap 'rm -rf "$work"' EXIT
echo "fetch-arm64-kernel: apt-get download $pkg:arm64=$version" >&2
# apt's _apt user cannot write into root-owned temporary folders; the download itself is fine.
(cd "$work" && apt-get download -q "$pkg:arm64=$version" >&2 2> >(grep -v 'unsandboxed' >&2))
deb="$(ls "$work"/*.deb)"
dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$work" --wildcards './boot/vmlinuz-*'
mkdir -p "$out"
mv "$work"/boot/vmlinuz-* "$out/vmlinuz.tmp"
mv "$out/vmlinuz.tmp" "$out/vmlinuz"
# Older kernels are not needed once a newer one is cached.
for old in "$cache"/*/; do
    [[ "${old%/}" == "$out" ]] || rm -rf "$old"
done
echo "$out/vmlinuz"
