#!/usr/bin/env bash
# Runs the whole test suite: fetches the reference model if missing, builds the
# workspace (server, CLI and plugin libraries), then runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/fetch-model.sh
cargo build --release --workspace
cargo test --release --workspace "$@"
