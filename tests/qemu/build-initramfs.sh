#!/usr/bin/env bash
# Packs the gpio-sim test VM's initramfs: the init binary as /init with the shared libraries
# `ldd` says it needs (at the same paths, where the dynamic loader looks), plus /dev/console
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
# The debug build's symbols are over 100 MB: packed as they are, the initramfs and its unpacked
# copy do not fit in the VM's memory. The VM needs the code, not the symbols.
stripped="$(mktemp)"
trap 'rm -f "$list" "$stripped"' EXIT
strip --strip-debug -o "$stripped" "$init"
cat > "$list" <<LIST
dir /dev 0755 0 0
nod /dev/console 0600 0 0 c 5 1
nod /dev/null 0666 0 0 c 1 3
dir /proc 0755 0 0
dir /sys 0755 0 0
file /init $stripped 0755 0 0
LIST
# The shared libraries and the dynamic loader, each at the path ldd resolved it to.
declare -A dirs=()
for lib in $(ldd "$init" | grep -o '/[^ ]*' | sort -u); do
  d="$(dirname "$lib")"
  path=""
  IFS=/ read -ra parts <<< "${d#/}"
  for p in "${parts[@]}"; do
    path="$path/$p"
    if [ -z "${dirs[$path]:-}" ]; then
      dirs[$path]=1
      echo "dir $path 0755 0 0" >> "$list"
    fi
  done
  echo "file $lib $(readlink -f "$lib") 0755 0 0" >> "$list"
done
"$gen" "$list" > "$out.tmp"
mv "$out.tmp" "$out"
echo "$out"
