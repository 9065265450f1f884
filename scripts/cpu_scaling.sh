#!/usr/bin/env bash
# One device call: the build-throughput benchmark on a many-core machine.
# Needs in the carried paths: .whl (ray, datatrove and deps for Python 3.12) and
# .benchdata (a copy of ../shared/data, which does not travel with the checkout).
set -uo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD ZAYA_SHARED_DATA=$PWD/.benchdata PYTHONUNBUFFERED=1
export PATH=/tmp/site/bin:$PATH
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
nproc; lscpu | grep -E "Model name|^CPU\(s\)" ; python3 -c "import ray, pyarrow, tokenizers; print('ray', ray.__version__, 'pyarrow', pyarrow.__version__, 'tokenizers', tokenizers.__version__)"
python3 benchmarks/bench_tokenize.py --mb "${MB:-160}" --workers "${WORKERS:-16}" --scaling "${SCALING:-1,2,4,8,16}" 2>&1 | tee "$OUT/bench_tokenize.log"
