#!/usr/bin/env bash
# Runs ON THE GPU HOST, with .gpu-carry/ made by prepare.sh: builds nothing. Kernel parity
# (every kernel against the CPU path on fresh random inputs), the roofline benchmarks,
# BERT on the GPU against sentence-transformers on the same weights, and the peers
# (torch.topk, sentence-transformers fp16) in the same call; prints one table.
set -uo pipefail
cd "$(dirname "$0")/../.."
CARRY=.gpu-carry
RESULTS="${OUT:-/tmp/marquee-gpu}"
mkdir -p "${RESULTS}"
export PYTHONUNBUFFERED=1

# NVRTC and cuBLAS 13 from the image's Python packages; libcuda from the driver.
NV_LIBS="$(python3 - <<'PY'
import glob, os, site
dirs = set()
for root in site.getsitepackages():
    for lib in glob.glob(f"{root}/nvidia/**/libnvrtc.so.13", recursive=True) + \
               glob.glob(f"{root}/nvidia/**/libcublas.so.13", recursive=True):
        dirs.add(os.path.dirname(lib))
print(":".join(sorted(dirs)))
PY
)"
export LD_LIBRARY_PATH="${NV_LIBS}:/usr/local/nvidia/lib64${LD_LIBRARY_PATH:+:${LD_LIBRARY_PATH}}"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader

MODEL=/tmp/marquee-model
python3 benchmarks/gpu/pack_model.py unpack "${CARRY}/model" "${MODEL}"

"${CARRY}/bin/gpu_check" | tee "${RESULTS}/gpu_check.jsonl"
for precision in fp32 bf16; do
    "${CARRY}/bin/embed_bench" "${MODEL}" "${CARRY}/texts.jsonl" --device cuda:0 \
        --precision "${precision}" --rounds 1 --out "${RESULTS}/emb_${precision}.json" \
        | tee -a "${RESULTS}/bert.jsonl"
    "${CARRY}/bin/embed_bench" "${MODEL}" "${CARRY}/docs.jsonl" --device cuda:0 \
        --precision "${precision}" --batch 256 --rounds 5 | tee -a "${RESULTS}/bert.jsonl"
done
python3 benchmarks/gpu/torch_peers.py --model "${MODEL}" --texts "${CARRY}/texts.jsonl" \
    --docs "${CARRY}/docs.jsonl" --marquee-embeddings "${RESULTS}" | tee "${RESULTS}/peers.jsonl"
rm -f "${RESULTS}"/emb_*.json
echo "## GPU run $(date -u +%Y-%m-%d)"
python3 benchmarks/gpu/report.py "${RESULTS}"/*.jsonl | tee "${RESULTS}/report.md"
