#!/usr/bin/env bash
# Installs the Debian 12 packages tapgate builds and tests with, only those missing.
# Usage: scripts/install-deps.sh [build|test]   (build: enough to compile and run the demo)
set -euo pipefail

mode="${1:-build}"
want=(libpcsclite-dev pkg-config)
# Foreign-architecture packages: installed with the others, always without recommends (with
# them apt would trade this machine's own tools, python3 among them, for arm64 ones).
if [ "$mode" = test ]; then
  # pcscd + vpcd: the real-reader tier; qemu + kernel sources: the gpio-sim tier.
  want+=(pcscd vsmartcard-vpcd qemu-system-x86 linux-source-6.1 bc bison flex libelf-dev cpio xz-utils)
  # postgresql: the line-store tier (tests/line_pg.rs) and its bench start throwaway clusters
  # with its initdb and pg_ctl; openssl makes the certificates of its TLS test.
  want+=(postgresql openssl)
  # strip: the gpio-sim tier packs its init binary without debug symbols.
  want+=(binutils)
  # The passenger display's browser tier (tests/display_browser.rs): headless Chromium driven
  # through chromedriver, and zbarimg to read the QR code back from a screenshot.
  want+=(chromium chromium-driver zbar-tools)
  # The arm64 tier (tests/arm64_qemu.rs): cross compiler and C library, the arm64 libpcsclite
  # to link against, and qemu-system-aarch64. Its kernel is fetched with `apt-get download`.
  want+=(gcc-aarch64-linux-gnu libc6-dev-arm64-cross libpcsclite-dev:arm64 qemu-system-arm tzdata)
fi

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"

update=0
if [ "$mode" = test ]; then
  if ! dpkg --print-foreign-architectures | grep -qx arm64; then
    echo "adding arm64 to dpkg's architectures" >&2
    $sudo dpkg --add-architecture arm64
    update=1
  fi
  # The arm64 package list: the arm64 tier resolves and downloads its kernel from it.
  compgen -G '/var/lib/apt/lists/*_binary-arm64_Packages*' >/dev/null || update=1
fi

missing=()
for p in "${want[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if [ ${#missing[@]} -gt 0 ] || [ $update -eq 1 ]; then
  $sudo apt-get update -qq
fi
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}" >&2
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
fi

if [ "$mode" = test ] && command -v rustup >/dev/null 2>&1; then
  # The Rust standard library for the controllers (a no-op when present).
  rustup target list --installed | grep -qx aarch64-unknown-linux-gnu \
    || rustup target add aarch64-unknown-linux-gnu >&2
fi
