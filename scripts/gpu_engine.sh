#!/usr/bin/env bash
# The inference engine on a GPU machine in one call: GPU tests (engine vs model.generate, tiny and
# 8B bf16, with and without CUDA graphs), then the decode-throughput benchmark (8B random bf16).
#   bash scripts/gpu_engine.sh            # tests, then the benchmark (~5 min on an H200)
#   bash scripts/gpu_engine.sh --skip-hf  # extra arguments go to scripts/bench_engine.py
# Logs and JSON go to $OUT (the device tool's return folder) or out/engine; the table prints last.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-out/engine}
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
{
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.mem --format=csv
  python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"
  python3 -c "import transformers as t; print('transformers', t.__version__, 'Zaya', hasattr(t, 'ZayaForCausalLM'))" \
    || echo "transformers: not importable"
} 2>&1 | tee "$OUT/gpu.txt"
# --noconftest: the project conftest may import pipeline dependencies the GPU image lacks.
ZAYA_ENGINE_GPU_RESULTS="$OUT/engine-gpu-tests.json" \
  timeout "${ENGINE_TEST_TIMEOUT:-240}" python3 -m pytest -q -s -m gpu --noconftest -p no:cacheprovider tests/test_engine_gpu.py 2>&1 \
  | tee "$OUT/pytest.log"
test_rc=${PIPESTATUS[0]}
timeout "${ENGINE_BENCH_TIMEOUT:-320}" python3 scripts/bench_engine.py --out "$OUT" "$@" 2>&1 | tee "$OUT/bench.log"
bench_rc=${PIPESTATUS[0]}
echo
echo "== engine GPU tests (tail) =="
grep -E "passed|failed|error" "$OUT/pytest.log" | tail -3
python3 - "$OUT/engine-gpu-tests.json" <<'PY' || true
import json, sys
try:
    results = json.load(open(sys.argv[1]))
except OSError:
    sys.exit(0)
for name, r in sorted(results.items()):
    runs = r["runs"]
    gaps = [x.get("gap_over_std") for x in runs if "gap" in x]
    print(f"{name:22s} agree {[x['agree'] for x in runs]} of {runs[0]['of']}  "
          f"max gap/std at divergence {max(gaps) if gaps else 0:.2e}")
PY
echo "== benchmark table =="
sed -n '/^# decode tokens/,$p' "$OUT/bench.log"
echo "pytest rc=$test_rc bench rc=$bench_rc"
exit $(( test_rc != 0 || bench_rc != 0 ))
