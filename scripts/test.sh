#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit and property tests, the real-stack tiers
# (loopback HTTP simulator, SQLite files, pcscd + vpcd with a virtual phone, SIGKILLed
# processes, gpio-sim under qemu, the arm64 package under qemu-system-aarch64, the fuzz
# corpus). Installs what it needs when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh test
# cargo-deb builds the .deb the suite checks (tests/ops_deb.rs); about 2.5 minutes once.
command -v cargo-deb >/dev/null 2>&1 || cargo install cargo-deb --locked --quiet

echo "== cargo fmt --all --check"
cargo fmt --all --check
echo "== cargo clippy --workspace --all-targets -- -D warnings"
cargo clippy --workspace --all-targets --quiet -- -D warnings
# A controller image may leave the simulator out: that build must stay clean too.
echo "== cargo clippy --no-default-features -- -D warnings"
cargo clippy --no-default-features --quiet -- -D warnings
echo "== cargo test --workspace"
cargo test --workspace
