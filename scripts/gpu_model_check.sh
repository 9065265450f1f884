#!/usr/bin/env bash
# GPU checks of the packaged ZAYA1 model (tests/test_model_gpu.py): 8B at random bf16 weights
# (4K prefill + 128 decoded tokens, memory vs parameter count) and tiny CUDA vs CPU.
# On the device machine: bash scripts/gpu_model_check.sh  (results JSON and log under $OUT, or ./gpu-results)
set -euo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-gpu-results}"
mkdir -p "$out"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/nvidia-smi.csv"
python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda)' | tee "$out/torch.txt"
ZAYA_GPU_RESULTS="$out/model-gpu.json" PYTHONUNBUFFERED=1 \
  python3 -m pytest -q -s -p no:cacheprovider tests/test_model_gpu.py 2>&1 | tee "$out/pytest.log"
