#!/usr/bin/env bash
# Builds the small x86_64 kernel the gpio-sim tier boots under qemu, from Debian's
# linux-source-6.1: `make tinyconfig` plus tests/qemu/kernel.config.
#
# The result is cached as $CACHE/<key>/ (bzImage, the final .config, and the kernel's own
# gen_init_cpio for build-initramfs.sh), where the key hashes the config fragment, the source
# package version and RECIPE below, so a second run only prints the path. Bump RECIPE when a
# change to this script changes what it builds.
# Prints that directory as the last line of stdout; build logs go to stderr.
#
# Needs: linux-source-6.1 bc bison flex libelf-dev make gcc xz-utils
#   (apt-get install linux-source-6.1 bc bison flex libelf-dev cpio qemu-system-x86)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
target="${CARGO_TARGET_DIR:-$repo/target}"
cache="$target/qemu-kernel"
tarball="${TAPGATE_LINUX_TARBALL:-/usr/src/linux-source-6.1.tar.xz}"
fragment="$here/kernel.config"
RECIPE=1

if [[ ! -f "$tarball" ]]; then
    echo "build-kernel: $tarball missing; apt-get install linux-source-6.1" >&2
    exit 2
fi

src_version="$(dpkg-query -W -f='${Version}' linux-source-6.1 2>/dev/null || stat -c %s "$tarball")"
key="$( { cat "$fragment"; echo "$src_version recipe $RECIPE"; } | sha256sum | cut -c1-16)"
out="$cache/$key"

if [[ -f "$out/bzImage" && -x "$out/gen_init_cpio" ]]; then
    echo "$out"
    exit 0
fi

mkdir -p "$cache"
exec 9>"$cache/.lock"
flock 9
# Another run may have finished while we waited for the lock.
if [[ -f "$out/bzImage" && -x "$out/gen_init_cpio" ]]; then
    echo "$out"
    exit 0
fi

src="$cache/src-$src_version"
if [[ ! -f "$src/.extracted" ]]; then
    echo "build-kernel: extracting $tarball" >&2
    rm -rf "$src"
    mkdir -p "$src"
    tar -xJf "$tarball" -C "$src" --strip-components=1
    touch "$src/.extracted"
fi

build="$cache/build-$key"
mkdir -p "$build"
jobs="${TAPGATE_KERNEL_JOBS:-$(nproc)}"
{
    make -C "$src" O="$build" ARCH=x86_64 tinyconfig
    "$src/scripts/kconfig/merge_config.sh" -m -O "$build" "$build/.config" "$fragment"
    make -C "$src" O="$build" ARCH=x86_64 olddefconfig
} >&2

# merge_config.sh only warns when Kconfig drops an option (a missing dependency); a kernel
# without gpio-sim would boot and fail every check for the wrong reason, so refuse here.
missing=0
while IFS= read -r line; do
    [[ "$line" =~ ^CONFIG_ ]] || continue
    if ! grep -qx "$line" "$build/.config"; then
        echo "build-kernel: $line did not survive olddefconfig" >&2
        missing=1
    fi
done < "$fragment"
if [[ $missing -ne 0 ]]; then
    exit 3
fi

make -C "$src" O="$build" ARCH=x86_64 -j"$jobs" bzImage >&2
mkdir -p "$out"
cp "$build/arch/x86/boot/bzImage" "$out/bzImage.tmp"
cp "$build/.config" "$out/config"
make -C "$src" O="$build" ARCH=x86_64 usr/gen_init_cpio >&2
cp "$build/usr/gen_init_cpio" "$out/gen_init_cpio"
mv "$out/bzImage.tmp" "$out/bzImage"
echo "$out"
