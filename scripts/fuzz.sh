#!/usr/bin/env bash
# Runs one fuzz target of fuzz/ (cargo-fuzz, libFuzzer, AddressSanitizer) for SECONDS
# seconds on its corpus, fuzz/corpus/TARGET, adding the new inputs it finds there (run
# `cargo +nightly fuzz cmin --features libfuzzer TARGET` before committing them), and
# prints the number of executions. Installs cargo-fuzz if missing; needs the nightly
# toolchain. A crash input lands in fuzz/artifacts/TARGET/: fix the bug, and move the
# input to fuzz/regressions/TARGET/, which `cargo test` replays.
#
# Usage: scripts/fuzz.sh TARGET SECONDS   (targets: the files of fuzz/fuzz_targets/)
set -euo pipefail
cd "$(dirname "$0")/.."

usage() {
    echo "usage: $0 TARGET SECONDS" >&2
    echo "targets: $(ls fuzz/fuzz_targets | sed 's/\.rs$//' | tr '\n' ' ')" >&2
    exit 2
}
[[ $# -eq 2 && -f "fuzz/fuzz_targets/$1.rs" && "$2" =~ ^[1-9][0-9]*$ ]] || usage
target="$1"
seconds="$2"

command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz
if [[ "${target}" == bert_tokenizer ]]; then
    scripts/fetch-model.sh >/dev/null
fi
mkdir -p "fuzz/corpus/${target}"
log="$(mktemp)"
trap 'rm -f "${log}"' EXIT
cargo +nightly fuzz run --features libfuzzer --target-dir target/fuzz "${target}" \
    "fuzz/corpus/${target}" -- -max_total_time="${seconds}" -timeout=30 2>&1 | tee "${log}"
grep -Eo '^Done [0-9]+ runs in [0-9]+ second\(s\)' "${log}" | tail -n 1
