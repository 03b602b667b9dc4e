#!/usr/bin/env bash
# Runs `tapgate demo`: a few journeys against the built-in aggregator simulator. No hardware,
# no credentials, no money. Installs the build dependencies first when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh build
exec cargo run --quiet -- demo "$@"
