#!/usr/bin/env bash
# Crash soak (not run by CI at this length): ROUNDS SIGKILL cycles (100 by default) of a
# real server while several clients upsert, delete and rate at once, each restart
# checked against a model of every acknowledged write (server/tests/soak.rs; the test
# suite runs 5 cycles). Prints the cycles, writes checked and time taken.
#   scripts/soak.sh [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --workspace
MARQUEE_SOAK_ROUNDS="${1:-100}" cargo test --release -p marquee-server --test soak -- --nocapture
