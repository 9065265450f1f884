#!/usr/bin/env bash
# One device call that runs several GPU/CPU-scaling steps, each under its own time limit,
# and prints one table last. Prepare the carried paths first with scripts/device_wheels.sh.
#
#   STEPS="model kernels rsa" bash scripts/device_session.sh        # carry: .whl .benchdata
#
# Steps:
#   model     tests/test_model_gpu.py (8B bf16 4K prefill + 128 decode, memory; tiny CUDA vs CPU)
#   kernels   scripts/gpu_kernels.sh --quick (kernel tests vs float64, then timings)
#   engine    scripts/gpu_engine.sh (engine tests and decode benchmark)
#   decode    scripts/bench_engine.py at batches $DECODE_BATCHES (64,256), engine only (no tests,
#             no baselines): the quick check of a kernel or engine change; $DECODE_ARGS adds
#             bench_engine arguments, e.g. DECODE_ARGS="--routing balanced" (experts evenly loaded
#             as on a trained checkpoint; the default is the random weights' skewed routing). Both
#             in one call: STEPS="decode env:DECODE_ARGS=--routing=balanced decode"
#   bench     scripts/bench_engine.py with its baselines (our PyTorch path, transformers) and no
#             engine tests; $BENCH_ARGS adds arguments, e.g. BENCH_ARGS="--routing balanced"
#   profile   scripts/profile_engine.py (where a decode step's time goes, batch $PROFILE_BATCH)
#   tune      scripts/tune_decode.py: sweep the MoE regimes, conv_decode, the router and decode attention ($TUNE_ONLY
#             narrows them, $TUNE_WITH=field[,regime:field] keeps the candidates that set a field); later steps use the winners
#             (ZAYA_KERNEL_TUNING)
#   override  later steps use the kernel entries in $TUNING_FILE (a path in the tree), e.g. a
#             tune step's winners fetched from an earlier call: "decode override decode"
#   env:V=X   later steps run with the environment variable V set to X, e.g. an A/B of a kernel
#             switch in one call: "env:ZAYA_TRITON_LINEAR=0 decode env:ZAYA_TRITON_LINEAR=1 decode"
#   gputests  the GPU tests of the slot-indexed conv, the sampler, the fused q/k epilogue, MoE
#             (the engine's own tests run in the engine step, its tiny ones also here with "tiny"; ZAYA_FUSED_QK=0 in the environment
#             runs the engine step with the PyTorch q/k composition instead of the fused kernel;
#             GPUTESTS_K narrows the selection)
#   prefill   scripts/tune_prefill.py: CCA prefill tiles and variants vs SDPA (MHA16, GQA) at 4K-32K
#             (not exported: a winner goes into model/kernels/tuning.py by hand, with its numbers)
#   sampler   scripts/bench_sampler.py (fused Gumbel sampler vs the PyTorch path)
#   rsa       benchmarks/bench_rsa.py (aggregation examples per GPU-hour, 8B random weights)
#   rsa2      benchmarks/bench_rsa.py --compare-actors 2 (two GPUs: 2 Ray actors vs 1)
#   scaling   benchmarks/bench_tokenize.py at 1..16 Ray workers joining one Ray head (build throughput)
#   clean     benchmarks/bench_clean.py near-dedup scaling at 1..16 workers ($CLEAN_SCALE, $CLEAN_ARGS,
#             e.g. CLEAN_ARGS="--corpus distinct"; $CLEAN_ALLOCATOR, so that an A/B fits in one call:
#             STEPS="clean env:CLEAN_ALLOCATOR=retain clean")
#   probe     benchmarks/cpu_probe.py $PROBE_ARGS (default --pairs): the machine's own scaling on
#             independent tasks (PROBE_ARGS="--counts 1,16 --tasks hash,l2,stream" for a quick look) and
#             (--pairs) which CPUs are hyperthread siblings: the ceiling of the scaling and clean steps
# Every step's log, and what it wrote, come back in $OUT/results.tar.gz (the tool returns
# at most 8 files); $OUT/summary.txt holds the table.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/device-out}
mkdir -p "$OUT/r"
R="$OUT/r"
t0=$(date +%s)
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl >"$R/pip.log" 2>&1 || echo "wheel install failed (see pip.log)"
fi
export PYTHONPATH="/tmp/site:$PWD" PYTHONUNBUFFERED=1 RAY_USAGE_STATS_ENABLED=0
if [ -f .benchdata/data.tar.xz ]; then
  mkdir -p ../shared && [ -d ../shared/data ] || tar -C ../shared -xJf .benchdata/data.tar.xz
fi
export ZAYA_SHARED_DATA="$(cd ../shared/data 2>/dev/null && pwd)"
{
  date -u +"%Y-%m-%d %H:%M UTC"; git log -1 --format="commit %h %s" 2>/dev/null
  # The device gets the working tree, and a .git that may be older than it: say so, and
  # fingerprint the tree that ran: the contents of every file git does not ignore, tracked
  # or not, so that a file the old index lacks still counts (the same command over the
  # same tree here gives the same value).
  changed=$(git status --porcelain --untracked-files=no 2>/dev/null | wc -l)
  [ "$changed" -gt 0 ] && echo "working tree differs from that commit in $changed tracked files"
  echo "tree sha256 $(git ls-files -z --cached --others --exclude-standard 2>/dev/null | sort -zu \
    | xargs -0 sha256sum 2>/dev/null | sha256sum | cut -c1-16)"
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1
  echo "kernel $(uname -r); transparent hugepages: $(cat /sys/kernel/mm/transparent_hugepage/enabled 2>/dev/null)"
  echo "kernel command line: $(cut -c1-300 /proc/cmdline 2>/dev/null)"
  echo "cpus $(nproc)"; lscpu | grep -E "Model name|Thread\(s\) per core|Core\(s\) per socket|Socket\(s\)|L2 cache|L3 cache|NUMA node\(s\)"
  python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"
  python3 -c "import ray, pyarrow, tokenizers; print('ray', ray.__version__, 'pyarrow', pyarrow.__version__, 'tokenizers', tokenizers.__version__)" 2>&1 | tail -1
  python3 -c "import transformers; print('transformers', transformers.__version__)" 2>&1 | tail -1
} | tee "$R/machine.txt"

declare -A LIMIT=([model]=150 [kernels]=200 [engine]=${ENGINE_LIMIT:-290} [profile]=${PROFILE_LIMIT:-200} [tune]=${TUNE_LIMIT:-300} [decode]=${DECODE_LIMIT:-150} [bench]=${BENCH_LIMIT:-280} [gputests]=${GPUTESTS_LIMIT:-150} [sampler]=60 [prefill]=${PREFILL_LIMIT:-150} [rsa]=${RSA_LIMIT:-100} [rsa2]=${RSA_LIMIT:-300} [scaling]=${SCALING_LIMIT:-130} [clean]=${CLEAN_LIMIT:-70} [probe]=${PROBE_LIMIT:-150})
run_step() {  # name, command...   (a step named twice logs to name.log, name-2.log, ...)
  local name=$1; shift
  local log=$name n=1
  while [ -f "$R/$log.log" ]; do n=$((n + 1)); log="$name-$n"; done
  local s=$(date +%s)
  timeout "${LIMIT[$name]}" "$@" >"$R/$log.log" 2>&1
  local rc=$?
  printf "%-8s rc=%-3s %4ss  %s\n" "$log" "$rc" "$(( $(date +%s) - s ))" "$(tail -1 "$R/$log.log" | cut -c1-90)" >>"$R/steps.txt"
}
for step in ${STEPS:-model kernels rsa}; do
  case $step in
    model)   run_step model env ZAYA_GPU_RESULTS="$R/model-gpu.json" python3 -m pytest -q -s -p no:cacheprovider --noconftest tests/test_model_gpu.py ;;
    kernels) run_step kernels env OUT="$R/kernels" bash scripts/gpu_kernels.sh --quick ;;
    engine)  run_step engine env OUT="$R/engine" ENGINE_TEST_TIMEOUT=${ENGINE_TEST_TIMEOUT:-130} \
               ENGINE_BENCH_TIMEOUT=${ENGINE_BENCH_TIMEOUT:-150} \
               bash scripts/gpu_engine.sh --time-budget 110 ${ENGINE_ARGS:-} ;;
    tune)    run_step tune python3 scripts/tune_decode.py --out "$R/tune" ${TUNE_ONLY:+--only "$TUNE_ONLY"} ${TUNE_WITH:+--with "$TUNE_WITH"}
             [ -f "$R/tune/tuning.json" ] && export ZAYA_KERNEL_TUNING="$R/tune/tuning.json" ;;
    override) # later steps run with the kernel entries of $TUNING_FILE (a ZAYA_KERNEL_TUNING file in the tree)
             export ZAYA_KERNEL_TUNING="$PWD/$TUNING_FILE"; echo "override $TUNING_FILE" >>"$R/steps.txt" ;;
    gputests) run_step gputests python3 -m pytest -q -m gpu --noconftest -p no:cacheprovider \
               tests/test_conv_slots.py tests/test_sampling_kernel.py tests/test_cca_qk.py tests/test_kernels_gpu.py \
               tests/test_linear_kernel.py tests/test_pdl.py tests/test_engine_gpu.py \
               -k "${GPUTESTS_K:-conv or moe or sampl or slot or qk or router or prefill or linear or pdl}" ;;
    prefill) run_step prefill python3 scripts/tune_prefill.py --out "$R/prefill" ;;
    sampler) run_step sampler python3 scripts/bench_sampler.py ;;
    decode)  run_step decode python3 scripts/bench_engine.py --out "$R/decode-$(date +%H%M%S)" --batches "${DECODE_BATCHES:-64,256}" \
               --baseline-max-batch 0 --eager-max-batch 0 --skip-hf ${DECODE_ARGS:-} ;;
    bench)   run_step bench python3 scripts/bench_engine.py --out "$R/bench-$(date +%H%M%S)" --time-budget "${BENCH_BUDGET:-150}" ${BENCH_ARGS:-} ;;
    profile) run_step profile python3 scripts/profile_engine.py --batch "${PROFILE_BATCH:-256}" --out "$R/profile" ;;
    rsa)     run_step rsa python3 benchmarks/bench_rsa.py --out "$R" --prompts "${RSA_PROMPTS:-16}" \
               --max-new-tokens 128 --baseline-prompts 2 --baseline-batch-size 2 ;;
    rsa2)    run_step rsa2 python3 benchmarks/bench_rsa.py --out "$R" --prompts "${RSA_PROMPTS:-32}" \
               --max-new-tokens 128 --baseline-prompts 0 --compare-actors 2 ;;
    scaling) run_step scaling python3 benchmarks/bench_tokenize.py --mb "${MB:-32}" --workers 16 \
               --scaling "${SCALING_COUNTS:-1,2,4,8,16}" --raw-scaling "${RAW_COUNTS:-}" --raw-procs "${RAW_PROCS:-}" --raw-mb "${RAW_MB:-40}" \
               --only-scaling --cluster --shard-rows "${SHARD_ROWS:-512}" ${SCALING_ARGS:-} ;;
    clean)   run_step clean python3 benchmarks/bench_clean.py --scaling 1,2,4,8,16 --scale "${CLEAN_SCALE:-8}" \
               --allocator "${CLEAN_ALLOCATOR:-default}" ${CLEAN_ARGS:-} ;;
    probe)   run_step probe python3 benchmarks/cpu_probe.py ${PROBE_ARGS:---pairs} ;;
    env:*=*) export "${step#env:}"; echo "$step" >>"$R/steps.txt" ;;
    *) echo "unknown step $step" >>"$R/steps.txt" ;;
  esac
  # keep what came back so far, in case a later step outlives the call
  tar -C "$OUT" -czf "$OUT/results.tar.gz" r
done
{ echo "== steps ($(( $(date +%s) - t0 ))s in all)"; cat "$R/steps.txt"; } | tee "$OUT/summary.txt"
