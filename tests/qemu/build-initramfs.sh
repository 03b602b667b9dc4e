#!/usr/bin/env bash
# Packs the gpio-sim test VM's initramfs: the static init binary as /init, plus /dev/console
# and /dev/null (Rust's runtime opens /dev/null when fd 0-2 are closed, and the kernel gives
# init its console only if /dev/console exists), and mount points for proc and sysfs.
# Uses the kernel's gen_init_cpio, so no root and no mknod are needed.
#
# usage: build-initramfs.sh GEN_INIT_CPIO INIT_BINARY OUTPUT.cpio
set -euo pipefail
gen="$1"
init="$2"
out="$3"
list="$(mktemp)"
trap 'rm -f "$list"' EXIT
cat > "$list" <<LIST
dir /dev 0755 0 0
nod /dev/console 0600 0 0 c 5 1
nod /dev/null 0666 0 0 c 1 3
dir /proc 0755 0 0
dir /sys 0755 0 0
file /init $init 0755 0 0
LIST
"$gen" "$list" > "$out.tmp"
mv "$out.tmp" "$out"
echo "$out"
