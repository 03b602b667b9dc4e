#!/usr/bin/env bash
# Installs the Debian 12 packages tapgate builds and tests with, only those missing.
# Usage: scripts/install-deps.sh [build|test]   (build: enough to compile and run the demo)
set -euo pipefail

want=(libpcsclite-dev pkg-config)
if [ "${1:-build}" = test ]; then
  # pcscd + vpcd: the real-reader tier; qemu + kernel sources: the gpio-sim tier.
  want+=(pcscd vsmartcard-vpcd qemu-system-x86 linux-source-6.1 bc bison flex libelf-dev cpio xz-utils)
fi

missing=()
for p in "${want[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
echo "installing: ${missing[*]}" >&2
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
