#!/usr/bin/env bash
# Run HERE (the build machine), before the device call: builds the GPU check and the BERT
# embedding benchmark, and gathers what travels to the GPU host into .gpu-carry/ (ignored
# by git, under the device tool's 64 MiB): stripped binaries, the model packed as f16,
# 1,024 movie documents and the parity texts. Then, with the device tool:
#   run  command="bash benchmarks/gpu/run.sh"  carry=[".gpu-carry"]
set -euo pipefail
cd "$(dirname "$0")/../.."

scripts/fetch-model.sh >/dev/null
cargo build --release -p marquee-kernels --example gpu_check
cargo build --release -p marquee-bert-text --example embed_bench

CARRY=.gpu-carry
rm -rf "${CARRY}"
mkdir -p "${CARRY}/bin"
for bin in gpu_check embed_bench; do
    objcopy --strip-debug "target/release/examples/${bin}" "${CARRY}/bin/${bin}"
done
python3 benchmarks/gpu/pack_model.py pack data/models/all-MiniLM-L6-v2 "${CARRY}/model"

MOVIES="${MOVIES:-../shared/data/movies.jsonl.gz}"
python3 - "${MOVIES}" "${CARRY}" <<'PY'
import gzip, json, sys
movies, carry = sys.argv[1], sys.argv[2]
docs = []
with gzip.open(movies, "rt") as f:
    for line in f:
        m = json.loads(line)
        text = m.get("overview") or m.get("plot") or ""
        docs.append({"text": f"{m.get('title', '')} ({m.get('year', '')}). {text}"})
        if len(docs) == 1024:
            break
with open(f"{carry}/docs.jsonl", "w") as f:
    f.writelines(json.dumps(d) + "\n" for d in docs)
fixture = json.load(open("plugins/bert-text/tests/fixtures/minilm_reference.json"))
with open(f"{carry}/texts.jsonl", "w") as f:
    f.writelines(json.dumps({"text": i["text"]}) + "\n" for i in fixture["items"])
print(f"{len(docs)} documents, {len(fixture['items'])} parity texts")
PY
du -sh "${CARRY}"
