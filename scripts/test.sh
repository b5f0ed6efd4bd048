#!/usr/bin/env bash
# Runs the whole test suite: fetches the reference model and NVRTC (for the CUDA kernel
# compile check) if missing, builds the workspace (server, CLI and plugin libraries), then
# runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/fetch-model.sh
NVRTC_LIB="$(scripts/fetch-nvrtc.sh)"
export LD_LIBRARY_PATH="${NVRTC_LIB}${LD_LIBRARY_PATH:+:${LD_LIBRARY_PATH}}"
cargo build --release --workspace
cargo test --release --workspace "$@"
