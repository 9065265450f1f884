"""The fused Gumbel-max sampler (model/kernels/sampling.py) against the PyTorch sampler.

The kernel checks run on a GPU, or on the CPU through Triton's interpreter (TRITON_INTERPRET=1,
which must be set before Triton is imported). Without either, one test re-runs this file in a
fresh process with TRITON_INTERPRET=1, so a plain `pytest` covers the kernel on the CPU. The
batch-256 x 262,272 checks and the CUDA-graph check are GPU-only (marked gpu).

Exactness: on a GPU the kernel should compute the reference's noise bit for bit (the noise-table
test compares all 2^24 values the noise can take), so tokens must be equal. Under the
interpreter `tl.log` is numpy's, an ulp away from torch's CPU log on ~22% of inputs; token
checks there accept a different token only where the reference's two scores tie to within
float rounding, and on at most 1% of rows (so far every row has matched exactly anyway).

NaN: as in torch.argmax, a NaN score counts as the maximum, so a row whose logits hold a NaN
returns the index of its first NaN, greedy or sampled (NaN / t + noise stays NaN).
"""

from __future__ import annotations

import os

import pytest
import torch

from model.engine.sampler import SamplingBatch, gumbel_noise, row_keys, sample, sample_torch
from torch_checks import rerun_under_interpreter

_INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"
_HAS_GPU = torch.cuda.is_available()
DEVICE = torch.device("cuda" if _HAS_GPU else "cpu")
V_8B = 262_272
# seed 83, step 0 hashes token 193925 to the top 24-bit value, whose uniform rounds to 1.
TOP_SEED, TOP_TOKEN = 83, 193_925

needs_kernel = pytest.mark.skipif(not (_HAS_GPU or _INTERPRET), reason="needs a GPU (or TRITON_INTERPRET=1)")
needs_cuda = pytest.mark.skipif(not _HAS_GPU, reason="needs a CUDA/ROCm GPU")


def _batch(temps: list[float], seeds: list[int], steps: list[int]) -> SamplingBatch:
    n = len(temps)
    return SamplingBatch.build(temps, [1.0] * n, [0] * n, seeds, steps, DEVICE)


def _scores(logits: torch.Tensor, batch: SamplingBatch) -> torch.Tensor:
    """The reference's per-token scores: logits / t + noise for t > 0, the logits otherwise."""
    x = logits.float()
    t = batch.temperature
    noise = gumbel_noise(row_keys(batch.seeds, batch.steps), torch.arange(x.shape[1], device=x.device))
    noisy = x / torch.where(t > 0, t, torch.ones_like(t))[:, None] + noise
    return torch.where((t > 0)[:, None], noisy, x)


def _assert_same_draws(got: torch.Tensor, logits: torch.Tensor, batch: SamplingBatch) -> None:
    want = sample_torch(logits, batch)
    assert got.dtype == torch.int64 and got.shape == want.shape
    differ = (got != want).nonzero()[:, 0]
    if differ.numel() == 0:
        return
    assert not _HAS_GPU, f"rows {differ.tolist()}: kernel {got[differ].tolist()} != reference {want[differ].tolist()}"
    # Interpreter: numpy's log may move a score by an ulp; only a near-tie may then flip.
    scores = _scores(logits, batch)
    a, b = scores[differ, got[differ]], scores[differ, want[differ]]
    assert torch.all((a - b).abs() <= 1e-5 * b.abs().clamp_min(1.0)), f"rows {differ.tolist()}: {a} vs {b}"
    assert differ.numel() <= max(1, got.numel() // 100), f"{differ.numel()} of {got.numel()} rows differ"


def _kernel_draws(logits: torch.Tensor, batch: SamplingBatch, **kw) -> torch.Tensor:
    from model.kernels.sampling import gumbel_argmax

    return gumbel_argmax(logits, batch.temperature, batch.seeds, batch.steps, **kw)


# --- the reference ---------------------------------------------------------------------------


def test_reference_noise_is_finite_where_the_uniform_rounds_to_one() -> None:
    # (m + 0.5) / 2^24 rounds to 1 for m = 2^24 - 1: uncapped, its noise was +inf, and that token
    # was drawn whatever its logit.
    keys = row_keys(torch.tensor([TOP_SEED]), torch.tensor([0]))
    noise = gumbel_noise(keys, torch.arange(V_8B))
    assert torch.isfinite(noise).all()
    assert noise[0, TOP_TOKEN].item() == noise.max().item() == pytest.approx(16.635532)
    logits = torch.randn(1, V_8B, generator=torch.Generator().manual_seed(0))
    logits[0, TOP_TOKEN] = -1e4
    batch = SamplingBatch.build([1.0], [1.0], [0], [TOP_SEED], [0], torch.device("cpu"))
    assert sample(logits, batch).item() != TOP_TOKEN


# --- the kernel on small shapes (GPU or interpreter) ------------------------------------------


@needs_kernel
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("vocab,chunks,block", [(1000, None, 2048), (4099, 1, 256), (5003, 3, 256), (3001, 7, 128)])
def test_kernel_draws_equal_the_torch_sampler_on_odd_vocabularies(dtype: torch.dtype, vocab: int, chunks: int | None,
                                                                  block: int) -> None:
    g = torch.Generator().manual_seed(vocab)
    temps = [0.8, 0.0, 1.0, 0.3, 2.0, 0.0, 1e-3, 5.0, 0.8, 0.8, 100.0]
    seeds = [1, 2, 3, 2**63 - 1, -5, 7, 11, 2**40 + 3, 1, 1, 99]
    steps = [0, 0, 4, 1000, 2**31 + 7, 3, 0, 8, 1, 2, 5]
    # Scale 3 gives peaked rows (the noise rarely beats the top logit) and flat ones after /100.
    logits = (torch.randn(len(temps), vocab, generator=g) * 3).to(dtype).to(DEVICE)
    batch = _batch(temps, seeds, steps)
    _assert_same_draws(_kernel_draws(logits, batch, num_chunks=chunks, block=block), logits, batch)


@needs_kernel
def test_kernel_row_keys_are_the_reference_row_keys() -> None:
    # The kernel forms each row's key from (seed, step) in uint32; the reference in masked int64.
    from model.kernels.sampling import kernel_row_keys

    g = torch.Generator().manual_seed(5)
    edge_seeds = [0, 1, -1, -2**63, 2**63 - 1, 2**32 - 1, 2**32, -2**32, 0x5BD1E995, 2**62 + 12345]
    edge_steps = [0, 1, 2**31 - 1, 2**31, 2**32 + 3, 2**62, 7, 0, 2**31 + 7, 123456789]
    seeds = torch.cat([torch.tensor(edge_seeds), torch.randint(-2**63, 2**63 - 1, (300,), generator=g)])
    steps = torch.cat([torch.tensor(edge_steps), torch.randint(0, 2**40, (300,), generator=g)])
    want = row_keys(seeds, steps)
    got = kernel_row_keys(seeds.to(DEVICE), steps.to(DEVICE)).cpu()
    assert torch.equal(got, want), (got != want).nonzero()[:5].tolist()
    assert kernel_row_keys(torch.zeros(0, dtype=torch.int64), torch.zeros(0, dtype=torch.int64)).numel() == 0


@needs_kernel
def test_kernel_reads_strided_rows_and_handles_an_empty_batch() -> None:
    g = torch.Generator().manual_seed(3)
    wide = (torch.randn(5, 3000, generator=g) * 2).to(DEVICE)
    batch = _batch([0.8, 0.0, 1.0, 0.5, 0.8], [4, 4, 5, 6, 7], [0, 1, 2, 3, 4])
    for logits in (wide[:, :2500], wide.t().contiguous().t()):  # row stride 3000; column stride 5
        _assert_same_draws(_kernel_draws(logits, batch, num_chunks=2, block=512), logits, batch)
    empty = _batch([], [], [])
    assert _kernel_draws(torch.zeros(0, 10, device=DEVICE), empty).shape == (0,)


@needs_kernel
def test_kernel_hash_is_the_reference_hash_and_noise_alone_picks_its_argmax() -> None:
    from model.engine.sampler import _mix32
    from model.kernels.sampling import hash_and_noise

    vocab = 4999
    batch = _batch([1.0] * 4, [0, 1, 2**62 + 17, -3], [0, 9, 2**20, 5])
    keys = row_keys(batch.seeds, batch.steps)
    bits, noise = hash_and_noise(keys, vocab)
    ids = torch.arange(vocab, device=DEVICE)
    expect_bits = _mix32(_mix32((keys[:, None] ^ ((ids * 0x2C1B3C6D) & 0xFFFFFFFF)) & 0xFFFFFFFF) ^ 0x165667B1)
    assert torch.equal(bits, expect_bits)
    expect = gumbel_noise(keys, ids)
    if _HAS_GPU:
        assert torch.equal(noise.view(torch.int32), expect.view(torch.int32))
    else:  # numpy's log vs torch's: an ulp of a value below 17
        assert (noise - expect).abs().max().item() <= 2e-6
    # All-zero logits: the draw is the argmax of the noise alone.
    zeros = torch.zeros(4, vocab, device=DEVICE)
    got = _kernel_draws(zeros, batch, num_chunks=3, block=256)
    assert torch.equal(got, expect.argmax(dim=-1))
    _assert_same_draws(got, zeros, batch)


@needs_kernel
def test_kernel_noise_table_over_every_24_bit_hash_prefix() -> None:
    from model.kernels.sampling import noise_table

    m = torch.arange(1 << 24, device=DEVICE)
    u = ((m.to(torch.float32) + 0.5) * (1.0 / (1 << 24))).clamp_max(1.0 - 2.0**-24)
    expect = -torch.log(-torch.log(u))  # gumbel_noise's formula after the hash
    got = noise_table(DEVICE)
    assert torch.isfinite(got).all()
    if _HAS_GPU:
        # Bit for bit, except the sign of a zero: where -log(u) is exactly 1 the noise is 0, which
        # torch 2.11 (cu130, H100, 2026-12-05) writes as -0.0 and the kernel as +0.0 (one of the
        # 2^24 values). Scores compare -0.0 == +0.0 (`_order_key`), so no draw can differ by it.
        same_bits = got.view(torch.int32) == expect.view(torch.int32)
        both_zero = (got == 0) & (expect == 0)
        assert bool((same_bits | both_zero).all()), f"{int((~(same_bits | both_zero)).sum())} values differ"
    else:
        assert (got - expect).abs().max().item() <= 2e-6


@needs_kernel
def test_kernel_ties_infinities_nans_and_non_positive_temperatures_follow_torch_argmax() -> None:
    vocab, ninf, nan = 1000, float("-inf"), float("nan")
    rows = torch.randn(12, vocab, generator=torch.Generator().manual_seed(5))
    rows[0, [700, 30, 999]] = 50.0                      # greedy: duplicate max, first wins
    rows[1] = ninf
    rows[1, 600], rows[1, 650] = -0.0, 0.0              # greedy: -0.0 == +0.0, first wins
    rows[2, [900, 100, 400]] = float("inf")             # sampled: +inf in three chunks
    rows[3] = ninf                                      # sampled: all -inf -> 0
    rows[4] = ninf                                      # greedy: all -inf -> 0
    rows[5, [800, 300]] = nan                           # greedy: first NaN
    rows[6, [800, 300]] = nan                           # sampled: first NaN
    rows[6, 10] = float("inf")
    rows[7] = nan                                       # sampled: all NaN -> 0
    rows[8, 512] = 1e30                                 # nan temperature -> greedy
    rows[9, 513] = 1e30                                 # negative temperature -> greedy
    rows[10, 999] = nan                                 # sampled: a NaN in the last column
    rows[11, 0] = -1e30                                 # sampled: ordinary row
    temps = [0.0, 0.0, 0.7, 1.0, 0.0, 0.0, 0.9, 1.0, nan, -1.0, 1.3, 0.8]
    batch = _batch(temps, list(range(12)), [3] * 12)
    logits = rows.to(DEVICE)
    expect = [30, 600, 100, 0, 0, 300, 300, 0, 512, 513, 999]
    for chunks in (1, 4):
        got = _kernel_draws(logits, batch, num_chunks=chunks, block=128)
        assert got[:11].tolist() == expect
        _assert_same_draws(got, logits, batch)


@needs_kernel
def test_kernel_full_vocabulary_rows_including_the_top_hash_value() -> None:
    g = torch.Generator().manual_seed(8)
    logits = (torch.randn(3, V_8B, generator=g) * 4).to(DEVICE)
    logits[0, TOP_TOKEN] = -1e4
    batch = _batch([1.0, 0.8, 0.0], [TOP_SEED, 12345, 6], [0, 17, 0])
    got = _kernel_draws(logits, batch)
    assert got[0].item() != TOP_TOKEN
    _assert_same_draws(got, logits, batch)


def test_kernel_checks_run_under_the_interpreter_in_a_fresh_process() -> None:
    if _HAS_GPU or _INTERPRET:
        pytest.skip("the kernel checks run in this process")
    done = rerun_under_interpreter(__file__, timeout=900)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]


# --- GPU only: the 8B shape, the engine's dispatch, CUDA graphs --------------------------------


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("rows", [256, 64, 3, 1])
def test_gpu_8b_vocabulary_draws_equal_the_torch_sampler(dtype: torch.dtype, rows: int) -> None:
    g = torch.Generator(device=DEVICE).manual_seed(rows)
    logits = (torch.randn(rows, V_8B, generator=g, device=DEVICE) * 3).to(dtype)
    temps = [[0.8, 0.0, 1.0, 0.3][r % 4] for r in range(rows)]
    batch = _batch(temps, [1000 + r for r in range(rows)], [r * 7 for r in range(rows)])
    got = sample(logits, batch)  # the engine's entry point: the kernel on CUDA without cuts
    _assert_same_draws(got, logits, batch)


@pytest.mark.gpu
@needs_cuda
def test_gpu_nan_rows_and_cut_rows_at_the_8b_shape() -> None:
    rows = 256
    g = torch.Generator(device=DEVICE).manual_seed(1)
    logits = torch.randn(rows, V_8B, generator=g, device=DEVICE).to(torch.bfloat16)
    logits[3, [200_000, 70_000]] = float("nan")
    logits[4] = float("nan")
    logits[5, 262_271] = float("nan")
    batch = _batch([0.8 if r % 5 else 0.0 for r in range(rows)], list(range(rows)), [2] * rows)
    got = sample(logits, batch)
    assert got[3].item() == 70_000 and got[4].item() == 0 and got[5].item() == 262_271
    _assert_same_draws(got, logits, batch)
    # A row with a top-k cut sends the whole batch down the PyTorch path, unchanged.
    cut = SamplingBatch.build([0.8] * rows, [1.0] * rows, [0] * (rows - 1) + [40], list(range(rows)), [2] * rows,
                              DEVICE)
    assert torch.equal(sample(logits, cut), sample_torch(logits, cut))


@pytest.mark.gpu
@needs_cuda
def test_gpu_kernel_replays_in_a_cuda_graph() -> None:
    from model.kernels.sampling import gumbel_argmax

    rows = 64
    logits = torch.randn(rows, V_8B, device=DEVICE).to(torch.bfloat16)
    temp = torch.full((rows,), 0.8, device=DEVICE)
    temp[::3] = 0.0
    seeds = torch.arange(rows, device=DEVICE)
    steps = torch.zeros(rows, dtype=torch.int64, device=DEVICE)
    gumbel_argmax(logits, temp, seeds, steps)  # compile outside the capture
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = gumbel_argmax(logits, temp, seeds, steps)
    for seed in range(3):
        logits.copy_(torch.randn(rows, V_8B, device=DEVICE, generator=torch.Generator(device=DEVICE).manual_seed(seed)))
        steps.fill_(seed + 1)  # a decode graph's sampler sees new steps every replay
        graph.replay()
        assert torch.equal(out, gumbel_argmax(logits, temp, seeds, steps))

