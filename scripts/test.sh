#!/usr/bin/env bash
# Runs the whole test suite: fetches the reference model and NVRTC (for the CUDA kernel
# compile check) if missing, builds the workspace (server, CLI and plugin libraries; the
# server with the storage failure-injection hook the disk-fault tests arm), runs
# every Rust test, then the Python client's tests (scripts/test-python.sh: a virtual
# environment with the client, pytest and the official openai package, against the
# release server). Arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/fetch-model.sh
NVRTC_LIB="$(scripts/fetch-nvrtc.sh)"
export LD_LIBRARY_PATH="${NVRTC_LIB}${LD_LIBRARY_PATH:+:${LD_LIBRARY_PATH}}"
cargo build --release --workspace --features marquee-server/fault-injection
cargo test --release --workspace --features marquee-server/fault-injection "$@"
scripts/test-python.sh -q
