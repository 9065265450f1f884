"""y = x @ W^T + b for decode-sized x: the skinny GEMMs of a decode step (q/k/v, o_proj, router).

Why try beside cuBLAS: a decode step's linears have few rows (the batch) and few output columns
(1,536 for q/k/v, 2,048 for o_proj, 256 for the router's down-projection) over K = 1,024 or
2,048. cuBLAS's tiles leave most SMs idle there: on an H200 (2026-12-03 profile, batch 256)
q/k/v took 6.9 us for 6.3 MB of weights, o_proj 5.5 us for 4 MB, the router's 1 MB 5.9 us,
~1 TB/s or less against 4 TB/s. Each of these runs 40 times a step.

Here the grid is (row tiles, column tiles, K slices) with row tiles fastest, so the programs
that read one weight tile run together and share it through L2. Two forms:
  - tokens on the MMA's M side (`swap_ab` = 0): acc [block_m rows, block_n columns];
  - weights on M (`swap_ab` = 1): acc [block_n columns, block_m rows], for a handful of rows
    (Hopper's warpgroup MMA needs 64 on M, 16 on N suffice).
Split-K (model/kernels/splitk.py) when the tiles are too few to fill the GPU: the table's
`split_k` is the most slices; a launch takes min(split_k, SMs // tiles, K steps), so the
router's 16 tiles at batch 256 are cut and o_proj's 128 are not. Slices are reduced in split
order: the bits do not depend on timing.

Measured (H200, 2026-12-05): kernel for kernel no faster than cuBLAS; in the engine it gains
at batch 1 (346 against 325 tok/s) because it joins the chain of early launches
(model/kernels/pdl.py) and cuBLAS does not, and loses at 256 (44.9K against 46.1K). The table's
`vendor_blas` flag picks F.linear per regime (the Hopper table: this kernel below 64 rows only).
ZAYA_TRITON_LINEAR=0 in the environment sends every call to F.linear (an A/B switch).

With PDL on, a small-regime launch first asks for its weight slice in L2 (`prefetch.global.L2`
per 128-byte line) and only then waits for the previous kernel: the weights' trip from HBM
overlaps the predecessor's tail (ZAYA_LINEAR_PREFETCH=0 turns it off).

`tma` in the table: the weight tiles come through a tensor descriptor (model/kernels/tma.py;
columns and K past the matrix read as zero). H100 2026-12-07: on for the small regime (with the
MoE's, batch 1 337 -> 349 tok/s); at 64+ rows still behind cuBLAS (62.4 against 54.0 us summed).

Numerics: fp32 accumulation, the bias added in fp32, one rounding to x's dtype (cuBLAS's fused
bias epilogue does the same; its K order differs, so results agree to the dtype's rounding).
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

from .splitk import _acquire, _arrive, _collect, _k_range, _publish, _release, split_counters
from .pdl import pdl_enter, pdl_launch
from .tma import matrix_descriptor, tma_addressable, tma_device
from .tuning import KernelConfig, is_interpreter, kernel_config, multiprocessor_count

# Above this many rows a linear is a prefill GEMM: cuBLAS's large tiles are the right tool.
MAX_ROWS = 1024


@triton.jit
def _prefetch_l2(W, cols64, cmask, stride_wn, k_lo, k_hi, LINE: tl.constexpr, LINES: tl.constexpr):
    """Ask for this program's weight slice in L2 (one `prefetch.global.L2` per 128-byte line),
    issued before the PDL wait: weights are never written, so they may be fetched while the
    previous kernel still runs, and the GEMM loop then reads them from L2."""
    offs = k_lo + tl.arange(0, LINES) * LINE
    ptrs = W + cols64[:, None] * stride_wn + offs[None, :]
    ptrs = tl.where(cmask[:, None] & (offs < k_hi)[None, :], ptrs, W)  # idle lanes: W's first line
    tl.inline_asm_elementwise("prefetch.global.L2 [$1]; mov.u32 $0, 0;", "=r,l", [ptrs], dtype=tl.int32,
                              is_pure=False, pack=1)


@triton.jit
def _store(Y, B, acc, y_ptrs, bias_offs, bias_mask, mask, HAS_BIAS: tl.constexpr, BIAS_ON_ROWS: tl.constexpr):
    if HAS_BIAS:
        b = tl.load(B + bias_offs, mask=bias_mask, other=0.0).to(tl.float32)
        if BIAS_ON_ROWS:  # swapped: the output columns are the tile's rows
            acc = acc + b[:, None]
        else:
            acc = acc + b[None, :]
    tl.store(y_ptrs, acc.to(Y.dtype.element_ty), mask=mask)


@triton.jit
def _linear_kernel(
    X, W, W_RAW, B, Y, WS, SEM,
    M, N, K, stride_xm, stride_wn, stride_ym, stride_wss,
    HAS_BIAS: tl.constexpr, SWAP: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr, PRECISION: tl.constexpr, SPLIT_K: tl.constexpr, PDL: tl.constexpr,
    LINE: tl.constexpr, PREFETCH_LINES: tl.constexpr, TMA: tl.constexpr,
):
    # W: the weight matrix [N, K], or (TMA) a descriptor over it loading [BLOCK_N, BLOCK_K]
    # tiles; W_RAW: the same matrix as a pointer (for the L2 prefetch)
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    rmask = rows < M
    cmask = cols < N
    rows64 = rows.to(tl.int64)
    cols64 = cols.to(tl.int64)
    k_lo, k_hi = _k_range(K, BLOCK_K, SPLIT_K)
    if PREFETCH_LINES > 0:
        if pid_m == 0:  # the other row tiles read the same weights
            _prefetch_l2(W_RAW, cols64, cmask, stride_wn, k_lo, k_hi, LINE, PREFETCH_LINES)
    pdl_enter(PDL)
    offs_k = k_lo + tl.arange(0, BLOCK_K)
    if SWAP:
        # acc^T [BLOCK_N, BLOCK_M] = W [BLOCK_N, BLOCK_K] @ x^T [BLOCK_K, BLOCK_M]
        x_ptr = X + rows64[None, :] * stride_xm + offs_k[:, None]
        acc = tl.zeros([BLOCK_N, BLOCK_M], dtype=tl.float32)
        if TMA:  # columns past N and K past the matrix read as zero
            for k0 in range(k_lo, k_hi, BLOCK_K):
                kmask = (k0 - k_lo + offs_k) < k_hi
                xt = tl.load(x_ptr, mask=kmask[:, None] & rmask[None, :], other=0.0)
                acc = tl.dot(W.load([pid_n * BLOCK_N, k0]), xt, acc, input_precision=PRECISION)
                x_ptr += BLOCK_K
        else:
            w_ptr = W + cols64[:, None] * stride_wn + offs_k[None, :]
            for k0 in range(k_lo, k_hi, BLOCK_K):
                kmask = (k0 - k_lo + offs_k) < k_hi
                wt = tl.load(w_ptr, mask=cmask[:, None] & kmask[None, :], other=0.0)
                xt = tl.load(x_ptr, mask=kmask[:, None] & rmask[None, :], other=0.0)
                acc = tl.dot(wt, xt, acc, input_precision=PRECISION)
                w_ptr += BLOCK_K
                x_ptr += BLOCK_K
        mask = cmask[:, None] & rmask[None, :]
        offs = rows64[None, :] * stride_ym + cols64[:, None]
        ws_offs = rows64[None, :] * N + cols64[:, None]
    else:
        # acc [BLOCK_M, BLOCK_N] = x [BLOCK_M, BLOCK_K] @ W^T [BLOCK_K, BLOCK_N]
        x_ptr = X + rows64[:, None] * stride_xm + offs_k[None, :]
        acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
        if TMA:
            for k0 in range(k_lo, k_hi, BLOCK_K):
                kmask = (k0 - k_lo + offs_k) < k_hi
                xt = tl.load(x_ptr, mask=rmask[:, None] & kmask[None, :], other=0.0)
                acc = tl.dot(xt, tl.trans(W.load([pid_n * BLOCK_N, k0])), acc, input_precision=PRECISION)
                x_ptr += BLOCK_K
        else:
            w_ptr = W + cols64[None, :] * stride_wn + offs_k[:, None]
            for k0 in range(k_lo, k_hi, BLOCK_K):
                kmask = (k0 - k_lo + offs_k) < k_hi
                xt = tl.load(x_ptr, mask=rmask[:, None] & kmask[None, :], other=0.0)
                wt = tl.load(w_ptr, mask=kmask[:, None] & cmask[None, :], other=0.0)
                acc = tl.dot(xt, wt, acc, input_precision=PRECISION)
                x_ptr += BLOCK_K
                w_ptr += BLOCK_K
        mask = rmask[:, None] & cmask[None, :]
        offs = rows64[:, None] * stride_ym + cols64[None, :]
        ws_offs = rows64[:, None] * N + cols64[None, :]
    if SPLIT_K == 1:
        _store(Y, B, acc, Y + offs, cols, cmask, mask, HAS_BIAS, SWAP)
    else:
        slot = pid_m * tl.num_programs(1) + pid_n
        if _arrive(SEM, slot) == SPLIT_K - 1:
            _acquire(SEM, slot, SPLIT_K)
            acc = _collect(WS + ws_offs, stride_wss, acc, mask, SPLIT_K)
            _store(Y, B, acc, Y + offs, cols, cmask, mask, HAS_BIAS, SWAP)
        else:
            _publish(WS + ws_offs + tl.program_id(2) * stride_wss, acc, mask)
            _release(SEM, slot)


def linear_config(rows: int, device: torch.device) -> KernelConfig:
    """`linear_small` below 64 rows (decode at small batches), `linear_medium` from 64."""
    return kernel_config("linear_small" if rows < 64 else "linear_medium", device)


def linear_splits(cfg: KernelConfig, tiles: int, k: int, device: torch.device) -> int:
    """K slices of a launch: as many as fill the SMs once, at most the table's split_k and
    one BLOCK_K step each."""
    if cfg.split_k <= 1:
        return 1
    index = device.index if device.type == "cuda" and device.index is not None else 0
    sms = multiprocessor_count(index)  # 1 without a GPU
    return max(1, min(cfg.split_k, sms // max(1, tiles), triton.cdiv(k, cfg.block_k)))


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """y = x @ weight^T + bias, like F.linear; x [M, K], weight [N, K], bias [N] or None.

    The Triton kernel for 1 <= M <= MAX_ROWS on a GPU (or under the interpreter); F.linear
    otherwise (prefill sizes, CPU tensors, a table entry with vendor_blas = 1, or
    ZAYA_TRITON_LINEAR=0).
    """
    if x.dim() != 2 or weight.dim() != 2 or x.shape[1] != weight.shape[1]:
        raise ValueError(f"x {tuple(x.shape)} and weight {tuple(weight.shape)}: expected [M, K] and [N, K]")
    m, k = x.shape
    n = weight.shape[0]
    if bias is not None and bias.shape != (n,):
        raise ValueError(f"bias {tuple(bias.shape)}: expected [{n}]")
    if (m == 0 or m > MAX_ROWS or (x.device.type == "cpu" and not is_interpreter())
            or os.environ.get("ZAYA_TRITON_LINEAR", "1") == "0"):
        return F.linear(x, weight, bias)
    if x.stride(1) != 1:
        x = x.contiguous()
    if weight.stride(1) != 1:
        weight = weight.contiguous()
    cfg = linear_config(m, x.device)
    if cfg.vendor_blas:  # the table says cuBLAS / hipBLASLt is the better choice for this regime
        return F.linear(x, weight, bias)
    bm, bn, bk, stages = cfg.block_m, cfg.block_n, cfg.block_k, cfg.num_stages
    if x.dtype == torch.float32:  # fp32 tiles are twice the bytes: stay inside shared memory
        bn, bk, stages = min(bn, 64), min(bk, 64), min(stages, 2)
    tiles = triton.cdiv(m, bm) * triton.cdiv(n, bn)
    split = linear_splits(cfg, tiles, k, x.device)
    sem = split_counters(x.device, tiles) if split > 1 else None
    if sem is None:
        split = 1
    y = torch.empty((m, n), dtype=x.dtype, device=x.device)
    launch = pdl_launch(x.device)
    # L2 prefetch of the weights during the previous kernel's tail: only with PDL (NVIDIA), only
    # where a launch is latency-bound (the small regime's few row tiles), and ZAYA_LINEAR_PREFETCH=0 off
    line = max(1, 128 // weight.element_size())
    per_split = triton.cdiv(triton.cdiv(k, bk), split) * bk
    prefetch = (triton.next_power_of_2(triton.cdiv(per_split, line))
                if launch["PDL"] and m < 64 and os.environ.get("ZAYA_LINEAR_PREFETCH", "1") != "0" else 0)
    ws = torch.empty((split, m, n), dtype=torch.float32, device=x.device) if split > 1 else y
    tma = bool(cfg.tma) and tma_device(x.device) and tma_addressable(weight)
    _linear_kernel[(triton.cdiv(m, bm), triton.cdiv(n, bn), split)](
        x, matrix_descriptor(weight, (bn, bk)) if tma else weight, weight, bias if bias is not None else weight, y, ws, sem if sem is not None else y,
        m, n, k, x.stride(0), weight.stride(0), y.stride(0), m * n,
        HAS_BIAS=bias is not None, SWAP=bool(cfg.swap_ab), BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk,
        PRECISION="ieee" if x.dtype == torch.float32 else "tf32", SPLIT_K=split,
        num_warps=cfg.num_warps, num_stages=stages, **launch,
        LINE=line, PREFETCH_LINES=prefetch, TMA=tma,
    )
    return y
