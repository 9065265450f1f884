"""Fused Gumbel-max sampling: argmax(logits / temperature + gumbel_noise(key, token id)) in one pass.

`model.engine.sampler` draws a token without top-k/top-p cuts as the argmax of the scaled logits
plus Gumbel noise that is a hash of (row key, token id). In PyTorch that is ~10 int64 elementwise
kernels and two logs over [B, V] (V = 262,272), each writing its [B, V] result; here each
program streams a chunk of one row once, computes the same noise in registers, and keeps a
running (score, index) maximum. Rows are split into several chunks when B is small so the GPU
is filled; a second tiny kernel reduces the per-chunk maxima. Shapes are static and nothing
syncs with the host, so both launches can be captured in a CUDA graph.

Bit-compatibility with `model.engine.sampler.gumbel_noise` (the reference):
- the hash is the same uint32 arithmetic: the reference works in int64 on values < 2^32 and
  masks to 32 bits after each multiply, which is exactly uint32 wrap-around;
- the uniform, the logs and the sum are the same fp32 ops in the same order; the division
  `logits / temperature` uses the IEEE-rounded `div_rn` (Triton's `/` on fp32 is the
  approximate div.full), and `tl.log` lowers to libdevice's `__nv_logf` (its sm_90 PTX is the
  same as an explicit `libdevice.log`'s), the `logf` that CUDA's `torch.log` calls. Triton
  builds libdevice in its flush-to-zero mode, which only matters for subnormals, and no log
  input here is one (u >= 2^-25, -log(u) >= 6e-8); tests/test_sampling_kernel.py compares all
  2^24 possible noise values bit for bit on a GPU. The Triton interpreter computes `tl.log` with
  numpy, which differs from torch's CPU log by an ulp on ~22% of inputs: under the
  interpreter the noise agrees to an ulp, not to the bit;
- the argmax follows torch.argmax: the largest score, ties to the smallest index, and NaN
  counts as larger than everything (a row with a NaN score returns its first NaN). Scores are
  compared as integers (an order-preserving map of the fp32 bits with -0.0 == +0.0 and every
  NaN mapped to the top), so there is no float-compare NaN subtlety in the reduction.
Rows with temperature <= 0 (or NaN) return the argmax of their logits, as the reference does.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

# Not swept: 2048 elements per step keeps 8 fp32 values per thread at 8 warps, enough
# independent hash/log chains to hide latency without spilling. Measured with these values on
# an H200 (scripts/bench_sampler.py, engine-rsa-2026-12-02-h200.md): 0.52 ms for 256 rows x
# 262,272 (17x the PyTorch path), ALU-bound (134 MB of bf16 logits would take 0.03 ms).
BLOCK_V = 2048
NUM_WARPS = 8
# Programs per SM to aim for when splitting rows (the per-element work is ALU-heavy: ~2 logs and
# ~20 integer ops, so several resident programs per SM hide the latency of each other's loads).
PROGRAMS_PER_SM = 4

# Globals read inside @triton.jit functions must be constexpr.
_INT32_MIN: tl.constexpr = tl.constexpr(-(2**31))
_INT32_MAX: tl.constexpr = tl.constexpr(2**31 - 1)
_U_MAX: tl.constexpr = tl.constexpr(1.0 - 2.0**-24)  # the largest fp32 below 1
_DEBUG_BLOCK = 4096


@triton.jit
def _mix32(x):
    """`sampler._mix32` on uint32: shifts are logical and products wrap mod 2^32."""
    x = x ^ (x >> 16)
    x = x * 0x7FEB352D
    x = x ^ (x >> 15)
    x = x * 0x68E31DA5
    return x ^ (x >> 16)


@triton.jit
def _hash(key, cols):
    """The 32-bit hash of `sampler.gumbel_noise` for row key `key` (uint32) and token ids `cols`."""
    x = _mix32(key ^ (cols.to(tl.uint32) * 0x2C1B3C6D))
    return _mix32(x ^ 0x165667B1)


@triton.jit
def _row_key(seed, step):
    """`sampler.row_keys` of one row in uint32: (seed int64, step int64) -> the row's key.

    The reference masks to 32 bits after every step in int64 (its products stay below 2^63),
    which is uint32 wrap-around; so here the seed's halves, the step's low 31 bits and every
    product and sum are uint32, and the bits are the same.
    """
    lo = (seed & 0xFFFFFFFF).to(tl.uint32)
    hi = ((seed >> 32) & 0xFFFFFFFF).to(tl.uint32)
    k = _mix32(lo) ^ _mix32(hi ^ 0x5BD1E995)
    return _mix32(k + (step & 0x7FFFFFFF).to(tl.uint32) * 0x27D4EB2F)


@triton.jit
def _gumbel(m):
    """Gumbel noise from the top 24 bits `m` (uint32 < 2^24) of the hash, as `gumbel_noise` does."""
    u = (m.to(tl.float32) + 0.5) * (1.0 / 16777216.0)
    u = tl.minimum(u, _U_MAX)  # m = 2^24 - 1 rounds to u = 1 (see gumbel_noise)
    return -tl.log(-tl.log(u))


@triton.jit
def _order_key(x):
    """An int32 that orders like torch.argmax orders fp32 values: -0.0 == +0.0, NaN above +inf."""
    bits = x.to(tl.int32, bitcast=True)
    mag = bits & 0x7FFFFFFF
    key = tl.where(bits < 0, -mag, bits)
    return tl.where(mag > 0x7F800000, 0x7FFFFFFF, key)


# The chunking varies with the batch size: runtime arguments, unspecialized, so a serving
# process compiles one variant per logits dtype (and SPLIT) rather than one per batch size.
@triton.jit(do_not_specialize=["blocks_per_chunk", "num_chunks"])
def _gumbel_argmax_kernel(
    LOGITS, TEMP, SEEDS, STEPS, PART_KEY, PART_IDX, OUT,
    stride_row, vocab, blocks_per_chunk, num_chunks,
    SPLIT: tl.constexpr,
    BLOCK: tl.constexpr,
):
    row = tl.program_id(0)
    chunk = tl.program_id(1)
    t = tl.load(TEMP + row)
    # Each program forms its row's key (a few scalar ops) rather than taking it from
    # `sampler.row_keys`, whose ~40 tiny int64 launches per step cost more than this kernel.
    key = _row_key(tl.load(SEEDS + row), tl.load(STEPS + row))
    base = LOGITS + row.to(tl.int64) * stride_row
    offs = tl.arange(0, BLOCK)
    start = chunk * blocks_per_chunk * BLOCK
    # Per-lane running maxima; a lane sees increasing indices, so a strict > keeps the first.
    best_key = tl.full([BLOCK], _INT32_MIN, tl.int32)
    best_idx = tl.zeros([BLOCK], tl.int32)
    for b in range(0, blocks_per_chunk):
        cols = start + b * BLOCK + offs
        mask = cols < vocab
        x = tl.load(base + cols, mask=mask, other=0.0).to(tl.float32)
        if t > 0:  # uniform per program: greedy rows skip the hash and the logs
            x = tl.math.div_rn(x, t) + _gumbel(_hash(key, cols) >> 8)
        k = tl.where(mask, _order_key(x), _INT32_MIN)  # every real score is above INT32_MIN
        better = k > best_key
        best_key = tl.where(better, k, best_key)
        best_idx = tl.where(better, cols, best_idx)
    top = tl.max(best_key, axis=0)
    idx = tl.min(tl.where(best_key == top, best_idx, _INT32_MAX), axis=0)
    if SPLIT:
        tl.store(PART_KEY + row * num_chunks + chunk, top)
        tl.store(PART_IDX + row * num_chunks + chunk, idx)
    else:
        tl.store(OUT + row, idx.to(tl.int64))


@triton.jit(do_not_specialize=["num_chunks"])
def _reduce_chunks_kernel(PART_KEY, PART_IDX, OUT, num_chunks, BLOCK: tl.constexpr):
    row = tl.program_id(0)
    offs = tl.arange(0, BLOCK)
    mask = offs < num_chunks
    k = tl.load(PART_KEY + row * num_chunks + offs, mask=mask, other=_INT32_MIN)
    i = tl.load(PART_IDX + row * num_chunks + offs, mask=mask, other=_INT32_MAX)
    top = tl.max(k, axis=0)
    # Chunks cover increasing index ranges, so the smallest index among tied chunks is the first.
    tl.store(OUT + row, tl.min(tl.where(k == top, i, _INT32_MAX), axis=0).to(tl.int64))


@triton.jit
def _row_keys_kernel(SEEDS, STEPS, KEYS, n, BLOCK: tl.constexpr):
    """Debug path for tests: the sampler kernel's row keys, to compare with `sampler.row_keys`."""
    i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = i < n
    key = _row_key(tl.load(SEEDS + i, mask=mask, other=0), tl.load(STEPS + i, mask=mask, other=0))
    tl.store(KEYS + i, key.to(tl.int64), mask=mask)  # zero-extends: the key as a value < 2^32


@triton.jit
def _noise_kernel(KEYS, BITS, NOISE, n_cols, FROM_BITS: tl.constexpr, BLOCK: tl.constexpr):
    """Debug path for tests: the hash and the noise of (KEYS[row], column), or with FROM_BITS the
    noise of m = column itself (every 24-bit input when n_cols = 2^24)."""
    row = tl.program_id(0)
    cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = cols < n_cols
    out = row.to(tl.int64) * n_cols + cols
    if FROM_BITS:
        m = cols.to(tl.uint32)
    else:
        h = _hash(tl.load(KEYS + row).to(tl.uint32), cols)
        tl.store(BITS + out, h.to(tl.int64), mask=mask)  # zero-extends: the hash as a value < 2^32
        m = h >> 8
    tl.store(NOISE + out, _gumbel(m), mask=mask)


def _num_chunks(batch: int, vocab: int, block: int, device: torch.device) -> int:
    """Chunks per row: enough programs to fill the GPU, never a chunk below one block.

    A power of two, so the second kernel's block (the next power of two of the final count)
    takes few distinct values.
    """
    if device.type != "cuda":
        return 1
    sms = torch.cuda.get_device_properties(device).multi_processor_count
    want = triton.cdiv(PROGRAMS_PER_SM * sms, batch)
    return min(triton.next_power_of_2(want), triton.next_power_of_2(triton.cdiv(vocab, block)))


def gumbel_argmax(logits: torch.Tensor, temperature: torch.Tensor, seeds: torch.Tensor, steps: torch.Tensor,
                  num_chunks: int | None = None, block: int = BLOCK_V) -> torch.Tensor:
    """Per row of logits [B, V] (any float dtype): argmax(logits.float() / t + gumbel_noise(key, ids))
    for temperature t > 0, argmax(logits) otherwise, where key = `sampler.row_keys(seeds, steps)`
    (formed inside the kernel). temperature [B] fp32, seeds and steps [B] int64. Returns int64 [B].

    num_chunks (split of each row; default: fill the GPU) and block exist for tests.
    """
    assert logits.dim() == 2 and temperature.shape == seeds.shape == steps.shape == logits.shape[:1]
    if logits.stride(1) != 1:
        logits = logits.contiguous()
    batch, vocab = logits.shape
    temperature = temperature.to(torch.float32).contiguous()
    seeds, steps = seeds.to(torch.int64).contiguous(), steps.to(torch.int64).contiguous()
    out = torch.empty(batch, dtype=torch.int64, device=logits.device)
    if batch == 0:
        return out
    nblocks = triton.cdiv(vocab, block)
    chunks = num_chunks or _num_chunks(batch, vocab, block, logits.device)
    per_chunk = triton.cdiv(nblocks, chunks)
    chunks = triton.cdiv(nblocks, per_chunk)  # no empty chunk: each one starts below V
    part_key = torch.empty(batch, chunks, dtype=torch.int32, device=logits.device)
    part_idx = torch.empty(batch, chunks, dtype=torch.int32, device=logits.device)
    _gumbel_argmax_kernel[(batch, chunks)](
        logits, temperature, seeds, steps, part_key, part_idx, out, logits.stride(0), vocab, per_chunk, chunks,
        SPLIT=chunks > 1, BLOCK=block, num_warps=NUM_WARPS,
    )
    if chunks > 1:
        _reduce_chunks_kernel[(batch,)](part_key, part_idx, out, chunks, BLOCK=triton.next_power_of_2(chunks),
                                        num_warps=1)
    return out


def kernel_row_keys(seeds: torch.Tensor, steps: torch.Tensor) -> torch.Tensor:
    """Debug path: the row keys [B] (int64 holding uint32) the sampler kernel forms in place of
    `sampler.row_keys(seeds, steps)`."""
    seeds, steps = seeds.to(torch.int64).contiguous(), steps.to(torch.int64).contiguous()
    keys = torch.empty_like(seeds)
    if seeds.numel():
        _row_keys_kernel[(triton.cdiv(seeds.numel(), 256),)](seeds, steps, keys, seeds.numel(), BLOCK=256)
    return keys


def hash_and_noise(keys: torch.Tensor, vocab: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Debug path: the kernel's hash [B, vocab] (int64 holding uint32) and noise [B, vocab] fp32
    of rows `keys` [B] and token ids 0..vocab-1, to compare with `sampler.gumbel_noise`."""
    keys = keys.to(torch.int64).contiguous()
    bits = torch.empty(keys.shape[0], vocab, dtype=torch.int64, device=keys.device)
    noise = torch.empty(keys.shape[0], vocab, dtype=torch.float32, device=keys.device)
    _noise_kernel[(keys.shape[0], triton.cdiv(vocab, _DEBUG_BLOCK))](
        keys, bits, noise, vocab, FROM_BITS=False, BLOCK=_DEBUG_BLOCK)
    return bits, noise


def noise_table(device: torch.device) -> torch.Tensor:
    """Debug path: the kernel's noise for every 24-bit hash prefix m (2^24 values, index = m)."""
    n = 1 << 24
    noise = torch.empty(1, n, dtype=torch.float32, device=device)
    _noise_kernel[(1, n // _DEBUG_BLOCK)](noise, noise, noise, n, FROM_BITS=True, BLOCK=_DEBUG_BLOCK)
    return noise[0]
