#!/usr/bin/env bash
# Installs NVRTC 13.0 (PyPI wheel nvidia-cuda-nvrtc) into data/nvrtc, so the CUDA kernels
# can be compiled to PTX on a machine without a GPU or CUDA toolkit (the kernel compile
# test). Prints the library directory to put on LD_LIBRARY_PATH.
#
# 13.0 on purpose: the lent GPU's driver is CUDA 13.0, and a newer NVRTC emits PTX that
# driver rejects.
set -euo pipefail
cd "$(dirname "$0")/.."

DEST="data/nvrtc"
LIB="${DEST}/nvidia/cu13/lib"
if [[ ! -f "${LIB}/libnvrtc.so.13" ]]; then
    python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore --no-deps \
        --target "${DEST}" "nvidia-cuda-nvrtc==13.0.*" >&2
fi
echo "$(pwd)/${LIB}"
