#!/usr/bin/env bash
# Build (Triton JIT), check and time the ZAYA1 kernels in one call on a GPU machine.
#   scripts/gpu_kernels.sh            # tests, then the full benchmark
#   scripts/gpu_kernels.sh --quick    # tests, then fewer benchmark cases
# Logs go to $OUT (the device tool's return folder) or out/kernels; the table prints last.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-out/kernels}
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
{
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.mem --format=csv
  python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"
} 2>&1 | tee "$OUT/gpu.txt"
# --noconftest: the project conftest may import pipeline dependencies the GPU image lacks.
python3 -m pytest -q -m gpu --noconftest -p no:cacheprovider tests/test_kernels_gpu.py 2>&1 | tee "$OUT/pytest.log"
test_rc=${PIPESTATUS[0]}
python3 scripts/bench_kernels.py --out "$OUT" "$@" 2>&1 | tee "$OUT/bench.log"
bench_rc=${PIPESTATUS[0]}
echo "pytest rc=$test_rc bench rc=$bench_rc"
exit $(( test_rc != 0 || bench_rc != 0 ))
