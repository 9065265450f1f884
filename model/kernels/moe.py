"""Top-1 MoE as two grouped GEMMs over tokens sorted by expert, with a skip class.

Plan (no host synchronization, so the whole thing can live inside a CUDA graph):
  1. sort token ids by expert id (stable); the skip class E sorts last;
  2. cut each expert's run of sorted rows into tiles of BLOCK_M rows; the number of tiles is
     bounded by cdiv(T, BLOCK_M) + E, so the grid is launched at that bound and surplus
     programs return at once;
  3. kernel 1: h = silu(x @ Wg^T) * (x @ Wu^T) for each tile (gate and up accumulated side by
     side from the same x tile, SwiGLU applied in registers), written in sorted order;
  4. kernel 2: y = (h @ Wd^T) * router_weight, scattered straight to the token's row.
Skipped tokens get tiles of their own (expert id E) whose only work is the down kernel
writing their zeros (no separate fill launch). Each touched expert's weights stream from HBM once per
tile column, so decode (few rows per expert) is bound by weight bytes, prefill by FLOPs.

Swapped variant (a config's `swap_ab`): at decode sizes an expert's tile holds a handful of
tokens, but Hopper's warpgroup MMA needs 64 rows on its M side, so a 64-row token tile does
64 rows of multiply-adds for, say, 16 tokens (at batch 256 over 16 experts, 4x the useful
FLOPs: enough to make the "memory-bound" MoE compute-bound). The swapped kernels compute the
transposed product, weight rows on M and tokens on N (16 suffice), with the same tiles,
schedule and roundings.

Weights through tensor descriptors (a config's `tma`, Hopper): each weight tile is one bulk
copy from a descriptor over the stack seen as [E * rows, K] (model/kernels/tma.py). A column
block may run past its expert's gate rows into its up rows, or into the next expert's rows:
those products land only in masked-out outputs; rows and K past the whole stack read as zero.
Measured on an H100 (2026-12-07): level with the pointer loads kernel for kernel; with the small
linears' TMA, engine decode at batch 1 +3.6% (the Hopper table's choice).

Split-K (a config's `split_k` > 1; decode regimes): at decode sizes the grid is a few token
tiles x the weight columns, e.g. ~6 x 32 = 192 programs at batch 256 routed over ~5 experts,
too few to keep 132 SMs' worth of loads in flight, and at batch 1 a single tile: 32 programs.
Each (tile, column) is then cut along K into `split_k` programs, reduced in split order by
the last to finish (model/kernels/splitk.py). Measured slower on an H100 in every decode case
(2026-12-05), so the tables keep split_k = 1.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .splitk import _acquire, _arrive, _collect, _k_range, _publish, _release, split_counters
from .pdl import pdl_enter, pdl_launch
from .tma import matrix_descriptor, tma_addressable, tma_device
from .tuning import KernelConfig, kernel_config


@triton.jit
def _store_zeros(Y, SORTED_TOK, rows, rmask, offs_n, nmask, stride_yt, BLOCK_M: tl.constexpr,
                 BLOCK_N: tl.constexpr):
    tok = tl.load(SORTED_TOK + rows, mask=rmask, other=0).to(tl.int64)
    tl.store(Y + tok[:, None] * stride_yt + offs_n[None, :],
             tl.zeros([BLOCK_M, BLOCK_N], dtype=Y.dtype.element_ty), mask=rmask[:, None] & nmask[None, :])


@triton.jit
def _swiglu_store(H, acc_g, acc_u, h_ptrs, mask):
    h = acc_g / (1.0 + tl.exp(-acc_g)) * acc_u
    tl.store(h_ptrs, h.to(H.dtype.element_ty), mask=mask)


@triton.jit
def _weighted_store(Y, acc, y_ptrs, wr, mask):
    # Round the expert output to the model dtype before the router weight, as upstream does.
    acc = acc.to(Y.dtype.element_ty).to(tl.float32)
    tl.store(y_ptrs, (acc * wr).to(Y.dtype.element_ty), mask=mask)


@triton.jit
def _gate_up_finish(H, WS, SEM, acc_g, acc_u, h_ptrs, ws_ptrs, mask, inter, stride_wss, tile,
                    SPLIT_K: tl.constexpr):
    """SwiGLU epilogue, after the split-K reduction when there is one (see the module doc)."""
    if SPLIT_K == 1:
        _swiglu_store(H, acc_g, acc_u, h_ptrs, mask)
    else:
        slot = tile * tl.num_programs(1) + tl.program_id(1)
        if _arrive(SEM, slot) == SPLIT_K - 1:
            _acquire(SEM, slot, SPLIT_K)
            acc_g = _collect(ws_ptrs, stride_wss, acc_g, mask, SPLIT_K)
            acc_u = _collect(ws_ptrs + inter, stride_wss, acc_u, mask, SPLIT_K)
            _swiglu_store(H, acc_g, acc_u, h_ptrs, mask)
        else:
            me = tl.program_id(2)
            _publish(ws_ptrs + me * stride_wss, acc_g, mask)
            _publish(ws_ptrs + inter + me * stride_wss, acc_u, mask)
            _release(SEM, slot)


@triton.jit
def _down_finish(Y, WS, SEM, acc, y_ptrs, wr, ws_ptrs, mask, stride_wss, tile, SPLIT_K: tl.constexpr):
    """Weighted scatter epilogue, after the split-K reduction when there is one."""
    if SPLIT_K == 1:
        _weighted_store(Y, acc, y_ptrs, wr, mask)
    else:
        slot = tile * tl.num_programs(1) + tl.program_id(1)
        if _arrive(SEM, slot) == SPLIT_K - 1:
            _acquire(SEM, slot, SPLIT_K)
            acc = _collect(ws_ptrs, stride_wss, acc, mask, SPLIT_K)
            _weighted_store(Y, acc, y_ptrs, wr, mask)
        else:
            _publish(ws_ptrs + tl.program_id(2) * stride_wss, acc, mask)
            _release(SEM, slot)


@triton.jit
def _gate_up_tile(
    pid_m, e,
    X, W, H, SORTED_TOK, BLK_EXPERT, BLK_START, BLK_END, WS, SEM,
    hidden, inter, n_experts,
    stride_xt, stride_we, stride_wn, stride_wk, stride_ht, stride_wsr, stride_wss,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, PRECISION: tl.constexpr,
    SPLIT_K: tl.constexpr, TMA: tl.constexpr,
):
    pid_n = tl.program_id(1)
    start = tl.load(BLK_START + pid_m)
    end = tl.load(BLK_END + pid_m)
    rows = start + tl.arange(0, BLOCK_M)
    rmask = rows < end
    tok = tl.load(SORTED_TOK + rows, mask=rmask, other=0).to(tl.int64)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    nmask = offs_n < inter
    k_lo, k_hi = _k_range(hidden, BLOCK_K, SPLIT_K)
    offs_k = tl.arange(0, BLOCK_K)
    x_ptr = X + tok[:, None] * stride_xt + (k_lo + offs_k)[None, :]
    acc_g = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    acc_u = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    if TMA:  # W: a descriptor over [E * 2I, H] (see moe_top1)
        row_g = e * (2 * inter) + pid_n * BLOCK_N
        for k0 in range(k_lo, k_hi, BLOCK_K):
            kmask = (k0 + offs_k) < k_hi
            xt = tl.load(x_ptr, mask=rmask[:, None] & kmask[None, :], other=0.0)
            wg = W.load([row_g, k0])
            wu = W.load([row_g + inter, k0])
            acc_g = tl.dot(xt, tl.trans(wg), acc_g, input_precision=PRECISION)
            acc_u = tl.dot(xt, tl.trans(wu), acc_u, input_precision=PRECISION)
            x_ptr += BLOCK_K
    else:
        w_base = W + e.to(tl.int64) * stride_we
        wg_ptr = w_base + offs_n[None, :] * stride_wn + (k_lo + offs_k)[:, None] * stride_wk
        wu_ptr = wg_ptr + inter * stride_wn
        for k0 in range(k_lo, k_hi, BLOCK_K):
            kmask = (k0 + offs_k) < k_hi
            xt = tl.load(x_ptr, mask=rmask[:, None] & kmask[None, :], other=0.0)
            wg = tl.load(wg_ptr, mask=kmask[:, None] & nmask[None, :], other=0.0)
            wu = tl.load(wu_ptr, mask=kmask[:, None] & nmask[None, :], other=0.0)
            acc_g = tl.dot(xt, wg, acc_g, input_precision=PRECISION)
            acc_u = tl.dot(xt, wu, acc_u, input_precision=PRECISION)
            x_ptr += BLOCK_K
            wg_ptr += BLOCK_K * stride_wk
            wu_ptr += BLOCK_K * stride_wk
    rows64 = rows.to(tl.int64)
    _gate_up_finish(H, WS, SEM, acc_g, acc_u, H + rows64[:, None] * stride_ht + offs_n[None, :],
                    WS + rows64[:, None] * stride_wsr + offs_n[None, :], rmask[:, None] & nmask[None, :],
                    inter, stride_wss, pid_m, SPLIT_K)


@triton.jit
def _gate_up_kernel(
    X, W, H, SORTED_TOK, BLK_EXPERT, BLK_START, BLK_END, WS, SEM,
    hidden, inter, n_experts, n_tiles,
    stride_xt, stride_we, stride_wn, stride_wk, stride_ht, stride_wsr, stride_wss,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, PRECISION: tl.constexpr,
    SPLIT_K: tl.constexpr, TMA: tl.constexpr, PDL: tl.constexpr,
):
    # Tiles program_id(0), + grid, ... of the tile table, up to the first unused tile or
    # skip-class tile (those come last; the down kernel writes the skip class's zeros).
    pdl_enter(PDL)
    pid_m = tl.program_id(0)
    e = tl.load(BLK_EXPERT + pid_m)
    while (e >= 0) & (e < n_experts):
        _gate_up_tile(pid_m, e, X, W, H, SORTED_TOK, BLK_EXPERT, BLK_START, BLK_END, WS, SEM, hidden, inter,
            n_experts, stride_xt, stride_we, stride_wn, stride_wk, stride_ht, stride_wsr, stride_wss,
            BLOCK_M, BLOCK_N, BLOCK_K, PRECISION, SPLIT_K, TMA)
        pid_m += tl.num_programs(0)
        e = tl.load(BLK_EXPERT + pid_m, mask=pid_m < n_tiles, other=-1)


@triton.jit
def _down_tile(
    pid_m, e,
    H, W, Y, SORTED_TOK, SORTED_W, BLK_EXPERT, BLK_START, BLK_END, WS, SEM,
    hidden, inter, n_experts,
    stride_ht, stride_we, stride_wn, stride_wk, stride_yt, stride_wsr, stride_wss,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, PRECISION: tl.constexpr,
    SPLIT_K: tl.constexpr, TMA: tl.constexpr,
):
    pid_n = tl.program_id(1)
    start = tl.load(BLK_START + pid_m)
    end = tl.load(BLK_END + pid_m)
    rows = start + tl.arange(0, BLOCK_M)
    rmask = rows < end
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    nmask = offs_n < hidden
    if e == n_experts:  # the skip class: these tokens' output is zero (no separate fill launch)
        if tl.program_id(2) == 0:
            _store_zeros(Y, SORTED_TOK, rows, rmask, offs_n, nmask, stride_yt, BLOCK_M, BLOCK_N)
    else:
        k_lo, k_hi = _k_range(inter, BLOCK_K, SPLIT_K)
        offs_k = tl.arange(0, BLOCK_K)
        h_ptr = H + rows.to(tl.int64)[:, None] * stride_ht + (k_lo + offs_k)[None, :]
        acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
        if TMA:  # W: a descriptor over [E * H, I]
            row_w = e * hidden + pid_n * BLOCK_N
            for k0 in range(k_lo, k_hi, BLOCK_K):
                kmask = (k0 + offs_k) < k_hi
                ht = tl.load(h_ptr, mask=rmask[:, None] & kmask[None, :], other=0.0)
                acc = tl.dot(ht, tl.trans(W.load([row_w, k0])), acc, input_precision=PRECISION)
                h_ptr += BLOCK_K
        else:
            w_ptr = W + e.to(tl.int64) * stride_we + offs_n[None, :] * stride_wn + (k_lo + offs_k)[:, None] * stride_wk
            for k0 in range(k_lo, k_hi, BLOCK_K):
                kmask = (k0 + offs_k) < k_hi
                ht = tl.load(h_ptr, mask=rmask[:, None] & kmask[None, :], other=0.0)
                wt = tl.load(w_ptr, mask=kmask[:, None] & nmask[None, :], other=0.0)
                acc = tl.dot(ht, wt, acc, input_precision=PRECISION)
                h_ptr += BLOCK_K
                w_ptr += BLOCK_K * stride_wk
        wr = tl.load(SORTED_W + rows, mask=rmask, other=0.0).to(tl.float32)
        tok = tl.load(SORTED_TOK + rows, mask=rmask, other=0).to(tl.int64)
        _down_finish(Y, WS, SEM, acc, Y + tok[:, None] * stride_yt + offs_n[None, :], wr[:, None],
                     WS + rows.to(tl.int64)[:, None] * stride_wsr + offs_n[None, :],
                     rmask[:, None] & nmask[None, :], stride_wss, pid_m, SPLIT_K)


@triton.jit
def _down_kernel(
    H, W, Y, SORTED_TOK, SORTED_W, BLK_EXPERT, BLK_START, BLK_END, WS, SEM,
    hidden, inter, n_experts, n_tiles,
    stride_ht, stride_we, stride_wn, stride_wk, stride_yt, stride_wsr, stride_wss,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, PRECISION: tl.constexpr,
    SPLIT_K: tl.constexpr, TMA: tl.constexpr, PDL: tl.constexpr,
):
    # Tiles program_id(0), + grid, ... of the tile table, up to the first unused tile.
    pdl_enter(PDL)
    pid_m = tl.program_id(0)
    e = tl.load(BLK_EXPERT + pid_m)
    while e >= 0:
        _down_tile(pid_m, e, H, W, Y, SORTED_TOK, SORTED_W, BLK_EXPERT, BLK_START, BLK_END, WS, SEM, hidden,
            inter, n_experts, stride_ht, stride_we, stride_wn, stride_wk, stride_yt, stride_wsr, stride_wss,
            BLOCK_M, BLOCK_N, BLOCK_K, PRECISION, SPLIT_K, TMA)
        pid_m += tl.num_programs(0)
        e = tl.load(BLK_EXPERT + pid_m, mask=pid_m < n_tiles, other=-1)


@triton.jit
def _gate_up_swapped_tile(
    pid_m, e,
    X, W, H, SORTED_TOK, BLK_EXPERT, BLK_START, BLK_END, WS, SEM,
    hidden, inter, n_experts,
    stride_xt, stride_we, stride_wn, stride_wk, stride_ht, stride_wsr, stride_wss,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, PRECISION: tl.constexpr,
    SPLIT_K: tl.constexpr, TMA: tl.constexpr,
):
    pid_n = tl.program_id(1)
    start = tl.load(BLK_START + pid_m)
    end = tl.load(BLK_END + pid_m)
    rows = start + tl.arange(0, BLOCK_M)
    rmask = rows < end
    tok = tl.load(SORTED_TOK + rows, mask=rmask, other=0).to(tl.int64)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    nmask = offs_n < inter
    k_lo, k_hi = _k_range(hidden, BLOCK_K, SPLIT_K)
    offs_k = tl.arange(0, BLOCK_K)
    xt_ptr = X + tok[None, :] * stride_xt + (k_lo + offs_k)[:, None]  # x^T tile [BLOCK_K, BLOCK_M]
    acc_g = tl.zeros([BLOCK_N, BLOCK_M], dtype=tl.float32)
    acc_u = tl.zeros([BLOCK_N, BLOCK_M], dtype=tl.float32)
    if TMA:  # W: a descriptor over [E * 2I, H]
        row_g = e * (2 * inter) + pid_n * BLOCK_N
        for k0 in range(k_lo, k_hi, BLOCK_K):
            kmask = (k0 + offs_k) < k_hi
            xt = tl.load(xt_ptr, mask=kmask[:, None] & rmask[None, :], other=0.0)
            acc_g = tl.dot(W.load([row_g, k0]), xt, acc_g, input_precision=PRECISION)
            acc_u = tl.dot(W.load([row_g + inter, k0]), xt, acc_u, input_precision=PRECISION)
            xt_ptr += BLOCK_K
    else:
        w_base = W + e.to(tl.int64) * stride_we
        wg_ptr = w_base + offs_n[:, None] * stride_wn + (k_lo + offs_k)[None, :] * stride_wk  # [BLOCK_N, BLOCK_K]
        wu_ptr = wg_ptr + inter * stride_wn
        for k0 in range(k_lo, k_hi, BLOCK_K):
            kmask = (k0 + offs_k) < k_hi
            xt = tl.load(xt_ptr, mask=kmask[:, None] & rmask[None, :], other=0.0)
            wg = tl.load(wg_ptr, mask=nmask[:, None] & kmask[None, :], other=0.0)
            wu = tl.load(wu_ptr, mask=nmask[:, None] & kmask[None, :], other=0.0)
            acc_g = tl.dot(wg, xt, acc_g, input_precision=PRECISION)
            acc_u = tl.dot(wu, xt, acc_u, input_precision=PRECISION)
            xt_ptr += BLOCK_K
            wg_ptr += BLOCK_K * stride_wk
            wu_ptr += BLOCK_K * stride_wk
    rows64 = rows.to(tl.int64)
    _gate_up_finish(H, WS, SEM, acc_g, acc_u, H + rows64[None, :] * stride_ht + offs_n[:, None],
                    WS + rows64[None, :] * stride_wsr + offs_n[:, None], nmask[:, None] & rmask[None, :],
                    inter, stride_wss, pid_m, SPLIT_K)


@triton.jit
def _gate_up_swapped_kernel(
    X, W, H, SORTED_TOK, BLK_EXPERT, BLK_START, BLK_END, WS, SEM,
    hidden, inter, n_experts, n_tiles,
    stride_xt, stride_we, stride_wn, stride_wk, stride_ht, stride_wsr, stride_wss,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, PRECISION: tl.constexpr,
    SPLIT_K: tl.constexpr, TMA: tl.constexpr, PDL: tl.constexpr,
):
    """`_gate_up_kernel` with the product transposed: h^T [BLOCK_N, BLOCK_M] = W [BLOCK_N, K] @
    x^T [K, BLOCK_M]. The weight rows fill the MMA's M side (Hopper's warpgroup MMA needs 64
    there) and a tile's tokens its N side (16 is enough), so a decode tile of a few tokens is
    not padded to 64 rows of wasted multiply-adds."""
    # Tiles program_id(0), + grid, ... of the tile table, up to the first unused tile or
    # skip-class tile (those come last; the down kernel writes the skip class's zeros).
    pdl_enter(PDL)
    pid_m = tl.program_id(0)
    e = tl.load(BLK_EXPERT + pid_m)
    while (e >= 0) & (e < n_experts):
        _gate_up_swapped_tile(pid_m, e, X, W, H, SORTED_TOK, BLK_EXPERT, BLK_START, BLK_END, WS, SEM,
            hidden, inter, n_experts, stride_xt, stride_we, stride_wn, stride_wk, stride_ht, stride_wsr,
            stride_wss, BLOCK_M, BLOCK_N, BLOCK_K, PRECISION, SPLIT_K, TMA)
        pid_m += tl.num_programs(0)
        e = tl.load(BLK_EXPERT + pid_m, mask=pid_m < n_tiles, other=-1)


@triton.jit
def _down_swapped_tile(
    pid_m, e,
    H, W, Y, SORTED_TOK, SORTED_W, BLK_EXPERT, BLK_START, BLK_END, WS, SEM,
    hidden, inter, n_experts,
    stride_ht, stride_we, stride_wn, stride_wk, stride_yt, stride_wsr, stride_wss,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, PRECISION: tl.constexpr,
    SPLIT_K: tl.constexpr, TMA: tl.constexpr,
):
    pid_n = tl.program_id(1)
    start = tl.load(BLK_START + pid_m)
    end = tl.load(BLK_END + pid_m)
    rows = start + tl.arange(0, BLOCK_M)
    rmask = rows < end
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    nmask = offs_n < hidden
    if e == n_experts:  # the skip class: these tokens' output is zero (no separate fill launch)
        if tl.program_id(2) == 0:
            _store_zeros(Y, SORTED_TOK, rows, rmask, offs_n, nmask, stride_yt, BLOCK_M, BLOCK_N)
    else:
        k_lo, k_hi = _k_range(inter, BLOCK_K, SPLIT_K)
        offs_k = tl.arange(0, BLOCK_K)
        ht_ptr = H + rows.to(tl.int64)[None, :] * stride_ht + (k_lo + offs_k)[:, None]  # h^T tile [BLOCK_K, BLOCK_M]
        acc = tl.zeros([BLOCK_N, BLOCK_M], dtype=tl.float32)
        if TMA:  # W: a descriptor over [E * H, I]
            row_w = e * hidden + pid_n * BLOCK_N
            for k0 in range(k_lo, k_hi, BLOCK_K):
                kmask = (k0 + offs_k) < k_hi
                ht = tl.load(ht_ptr, mask=kmask[:, None] & rmask[None, :], other=0.0)
                acc = tl.dot(W.load([row_w, k0]), ht, acc, input_precision=PRECISION)
                ht_ptr += BLOCK_K
        else:
            w_ptr = W + e.to(tl.int64) * stride_we + offs_n[:, None] * stride_wn + (k_lo + offs_k)[None, :] * stride_wk
            for k0 in range(k_lo, k_hi, BLOCK_K):
                kmask = (k0 + offs_k) < k_hi
                ht = tl.load(ht_ptr, mask=kmask[:, None] & rmask[None, :], other=0.0)
                wt = tl.load(w_ptr, mask=nmask[:, None] & kmask[None, :], other=0.0)
                acc = tl.dot(wt, ht, acc, input_precision=PRECISION)
                ht_ptr += BLOCK_K
                w_ptr += BLOCK_K * stride_wk
        wr = tl.load(SORTED_W + rows, mask=rmask, other=0.0).to(tl.float32)
        tok = tl.load(SORTED_TOK + rows, mask=rmask, other=0).to(tl.int64)
        _down_finish(Y, WS, SEM, acc, Y + tok[None, :] * stride_yt + offs_n[:, None], wr[None, :],
                     WS + rows.to(tl.int64)[None, :] * stride_wsr + offs_n[:, None],
                     nmask[:, None] & rmask[None, :], stride_wss, pid_m, SPLIT_K)


@triton.jit
def _down_swapped_kernel(
    H, W, Y, SORTED_TOK, SORTED_W, BLK_EXPERT, BLK_START, BLK_END, WS, SEM,
    hidden, inter, n_experts, n_tiles,
    stride_ht, stride_we, stride_wn, stride_wk, stride_yt, stride_wsr, stride_wss,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, PRECISION: tl.constexpr,
    SPLIT_K: tl.constexpr, TMA: tl.constexpr, PDL: tl.constexpr,
):
    """`_down_kernel` transposed like `_gate_up_swapped_kernel`: y^T = Wd @ h^T per tile."""
    # Tiles program_id(0), + grid, ... of the tile table, up to the first unused tile.
    pdl_enter(PDL)
    pid_m = tl.program_id(0)
    e = tl.load(BLK_EXPERT + pid_m)
    while e >= 0:
        _down_swapped_tile(pid_m, e, H, W, Y, SORTED_TOK, SORTED_W, BLK_EXPERT, BLK_START, BLK_END, WS, SEM,
            hidden, inter, n_experts, stride_ht, stride_we, stride_wn, stride_wk, stride_yt, stride_wsr,
            stride_wss, BLOCK_M, BLOCK_N, BLOCK_K, PRECISION, SPLIT_K, TMA)
        pid_m += tl.num_programs(0)
        e = tl.load(BLK_EXPERT + pid_m, mask=pid_m < n_tiles, other=-1)


@triton.jit
def _schedule_kernel(
    IDS, W, SORTED_TOK, SORTED_W, BLK_EXPERT, BLK_START, BLK_END,
    n_tokens, n_experts, n_blocks,
    BLOCK_M: tl.constexpr, E_PAD: tl.constexpr, CHUNK: tl.constexpr, NB_CHUNK: tl.constexpr, PDL: tl.constexpr,
):
    """One program: counting sort of tokens by expert (stable) and the tile table.

    Replaces ~15 small PyTorch launches (sort, bincount, cumsums, searchsorted, gathers),
    which at decode batch sizes cost more than the expert GEMMs' own launch latency.
    """
    pdl_enter(PDL)
    e = tl.arange(0, E_PAD)
    emask = e < n_experts
    offs = tl.arange(0, CHUNK)
    # Pass 1: tokens per expert (the skip class and padding match no column).
    counts = tl.zeros([E_PAD], dtype=tl.int32)
    for start in range(0, n_tokens, CHUNK):
        t = start + offs
        ids = tl.load(IDS + t, mask=t < n_tokens, other=-1).to(tl.int32)
        hit = ((ids[:, None] == e[None, :]) & emask[None, :]).to(tl.int32)
        counts += tl.sum(hit, axis=0)
    ends = tl.cumsum(counts, axis=0)
    starts = ends - counts
    # Pass 2: destination = expert start + tokens of that expert seen before (stable order).
    seen = tl.zeros([E_PAD], dtype=tl.int32)
    for start in range(0, n_tokens, CHUNK):
        t = start + offs
        tmask = t < n_tokens
        ids = tl.load(IDS + t, mask=tmask, other=-1).to(tl.int32)
        hit = ((ids[:, None] == e[None, :]) & emask[None, :]).to(tl.int32)
        rank = tl.cumsum(hit, axis=0) - hit
        dest = tl.sum(hit * (starts + seen)[None, :] + hit * rank, axis=1)
        active = tl.sum(hit, axis=1) > 0
        w = tl.load(W + t, mask=tmask, other=0.0).to(tl.float32)
        tl.store(SORTED_TOK + dest, t, mask=active)
        tl.store(SORTED_W + dest, w, mask=active)
        seen += tl.sum(hit, axis=0)
    # Tile table: tile b belongs to the first expert whose cumulative tile count exceeds b.
    tiles = tl.where(emask, (counts + BLOCK_M - 1) // BLOCK_M, 0)
    tile_ends = tl.cumsum(tiles, axis=0)
    first_tile = tile_ends - tiles
    for b0 in range(0, n_blocks, NB_CHUNK):
        b = b0 + tl.arange(0, NB_CHUNK)
        owner = tl.sum(((tile_ends[None, :] <= b[:, None]) & emask[None, :]).to(tl.int32), axis=1)
        sel = (e[None, :] == owner[:, None]).to(tl.int32)
        valid = owner < n_experts
        blk_start = tl.sum(sel * starts[None, :], axis=1) + (b - tl.sum(sel * first_tile[None, :], axis=1)) * BLOCK_M
        blk_end = tl.sum(sel * ends[None, :], axis=1)
        bmask = b < n_blocks
        tl.store(BLK_EXPERT + b, tl.where(valid, owner, -1), mask=bmask)
        tl.store(BLK_START + b, blk_start, mask=bmask)
        tl.store(BLK_END + b, blk_end, mask=bmask)


# Above this many tokens the single-program schedule's serial loop would cost more than the
# PyTorch ops it replaces (which are then negligible next to the GEMMs).
_TRITON_SCHEDULE_MAX_TOKENS = 4096


def schedule(
    expert_ids: torch.Tensor, expert_weights: torch.Tensor, num_experts: int, block_m: int,
    with_skip: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(sorted token ids, their router weights in fp32, tile expert, tile start, tile end).

    Sorted order is stable (tokens of one expert keep their order); only the first
    (number of non-skipped tokens) sorted entries are defined. Sync-free either way.
    with_skip: the skip class (id E) gets tiles too (tile expert E), so a kernel can write
    its tokens' zeros; then every token's sorted entry is defined.
    """
    t = expert_ids.shape[0]
    if t > _TRITON_SCHEDULE_MAX_TOKENS:
        order, blk_e, blk_s, blk_end, perm = tile_schedule(expert_ids, num_experts, block_m, with_skip)
        return order, expert_weights[perm].to(torch.float32), blk_e, blk_s, blk_end
    classes = num_experts + 1 if with_skip else num_experts
    nb = min(t, triton.cdiv(t, block_m) + classes)  # a tile holds at least one token
    dev = expert_ids.device
    sorted_tok = torch.empty(t, dtype=torch.int32, device=dev)
    sorted_w = torch.empty(t, dtype=torch.float32, device=dev)
    blk_e = torch.empty(nb, dtype=torch.int32, device=dev)
    blk_s = torch.empty(nb, dtype=torch.int32, device=dev)
    blk_end = torch.empty(nb, dtype=torch.int32, device=dev)
    _schedule_kernel[(1,)](
        expert_ids, expert_weights, sorted_tok, sorted_w, blk_e, blk_s, blk_end,
        t, classes, nb,
        BLOCK_M=block_m, E_PAD=max(16, triton.next_power_of_2(classes)),
        CHUNK=min(1024, max(16, triton.next_power_of_2(t))), NB_CHUNK=min(256, max(16, triton.next_power_of_2(nb))),
        num_warps=8, **pdl_launch(dev),
    )
    return sorted_tok, sorted_w, blk_e, blk_s, blk_end


def moe_config(num_tokens: int, num_experts: int, device: torch.device) -> KernelConfig:
    """Small tiles when experts see a few rows (small decode batches), medium ones for large
    decode batches (an expert may get hundreds of the rows: each tile re-reads its weights),
    large ones for prefill."""
    if num_tokens > 32 * num_experts:
        name = "moe_large"
    elif num_tokens >= 64:
        name = "moe_medium"
    else:
        name = "moe_small"
    return kernel_config(name, device)


def tile_schedule(
    expert_ids: torch.Tensor, num_experts: int, block_m: int, with_skip: bool = False
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Sorted order and the per-tile (expert, first row, end row) table, without a host sync.

    Returns (order [T] int32: sorted position -> token, block_expert [NB] int32 (-1 = unused
    tile), block_start [NB], block_end [NB] int32), plus the sort permutation as int64.
    NB = min(T, cdiv(T, block_m) + classes) is the static upper bound on the number of tiles, with
    classes = num_experts, or num_experts + 1 when the skip class gets tiles (`with_skip`).
    """
    t = expert_ids.shape[0]
    ids = expert_ids.to(torch.int64)
    _, perm = torch.sort(ids, stable=True)
    # scatter_add rather than bincount: bincount reads the max back to the host, which would
    # stall the stream and break CUDA-graph capture.
    counts = torch.zeros(num_experts + 1, dtype=torch.int64, device=ids.device)
    counts.scatter_add_(0, ids, torch.ones_like(ids))
    classes = num_experts + 1 if with_skip else num_experts
    counts = counts[:classes]
    ends = torch.cumsum(counts, 0)
    starts = ends - counts
    tiles = (counts + block_m - 1) // block_m
    tile_ends = torch.cumsum(tiles, 0)
    nb = min(t, triton.cdiv(t, block_m) + classes)
    b = torch.arange(nb, device=ids.device)
    e_of_b = torch.searchsorted(tile_ends, b, right=True)
    valid = e_of_b < classes
    e_c = e_of_b.clamp(max=classes - 1)
    first_tile = tile_ends[e_c] - tiles[e_c]
    block_start = starts[e_c] + (b - first_tile) * block_m
    block_end = ends[e_c]
    block_expert = torch.where(valid, e_c, torch.full_like(e_c, -1))
    return (
        perm.to(torch.int32),
        block_expert.to(torch.int32),
        block_start.to(torch.int32),
        block_end.to(torch.int32),
        perm,
    )


def moe_top1(
    x: torch.Tensor,
    expert_ids: torch.Tensor,
    expert_weights: torch.Tensor,
    gate_up_proj: torch.Tensor,
    down_proj: torch.Tensor,
) -> torch.Tensor:
    """Triton grouped-GEMM top-1 MoE; same contract as `reference.moe_top1`.

    x [T, H]; expert_ids [T] integer (E = skip); expert_weights [T] (any float dtype);
    gate_up_proj [E, 2I, H]; down_proj [E, H, I]. Output [T, H] in x's dtype.
    """
    t, hidden = x.shape
    num_experts, two_i, h_w = gate_up_proj.shape
    inter = two_i // 2
    if h_w != hidden or down_proj.shape != (num_experts, hidden, inter):
        raise ValueError(
            f"x {tuple(x.shape)}, gate_up_proj {tuple(gate_up_proj.shape)}, down_proj {tuple(down_proj.shape)} disagree"
        )
    if x.stride(1) != 1:
        x = x.contiguous()
    out = torch.empty_like(x)  # every row is written: skip-class tiles store the zeros
    if t == 0:
        return out
    cfg = moe_config(t, num_experts, x.device)
    bm, bn, bk = cfg.block_m, cfg.block_n, cfg.block_k
    precision = "ieee" if x.dtype == torch.float32 else "tf32"
    stages = cfg.num_stages
    if x.dtype == torch.float32:
        bm, bn, bk, stages = min(bm, 64), min(bn, 64), min(bk, 32), min(stages, 2)
    order, sorted_w, blk_e, blk_s, blk_end = schedule(expert_ids, expert_weights, num_experts, bm, with_skip=True)
    h = torch.empty((t, inter), dtype=x.dtype, device=x.device)
    nb = blk_e.shape[0]
    # Programs along the tile axis: one per table entry, or (extra_tiles > 0) fewer, each
    # looping over the table: the table's bound counts a partial tile for every class, and
    # at batch 256 over ~5 experts ~15 of its 21 entries are unused, each an empty program
    # that still takes an SM slot with the kernel's shared memory.
    grid_tiles = min(nb, triton.cdiv(t, bm) + cfg.extra_tiles) if cfg.extra_tiles else nb
    cols_gu, cols_d = triton.cdiv(inter, bn), triton.cdiv(hidden, bn)
    split = min(cfg.split_k, triton.cdiv(min(hidden, inter), bk))
    sem = split_counters(x.device, nb * max(cols_gu, cols_d)) if split > 1 else None
    if sem is None:
        split = 1
    # fp32 partial sums of the split-K slices, [split, T, 2I] for gate/up, [split, T, H] for down
    row = max(2 * inter, hidden)
    ws = torch.empty((split, t, row), dtype=torch.float32, device=x.device) if split > 1 else out
    sem = sem if sem is not None else blk_e  # unsplit: an unused pointer argument
    gate_up_kernel, down_kernel = ((_gate_up_swapped_kernel, _down_swapped_kernel) if cfg.swap_ab
                                   else (_gate_up_kernel, _down_kernel))
    # Weights through descriptors when the table says so and the copy engine can address them
    # (the activations stay pointer loads: their rows are gathered by token id)
    tma = bool(cfg.tma) and _tma_weights(gate_up_proj, down_proj)
    w_gu = matrix_descriptor(gate_up_proj, (bn, bk)) if tma else gate_up_proj
    w_d = matrix_descriptor(down_proj, (bn, bk)) if tma else down_proj
    gate_up_kernel[(grid_tiles, cols_gu, split)](
        x, w_gu, h, order, blk_e, blk_s, blk_end, ws, sem,
        hidden, inter, num_experts, nb,
        x.stride(0), gate_up_proj.stride(0), gate_up_proj.stride(1), gate_up_proj.stride(2), h.stride(0),
        row, t * row,
        BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, PRECISION=precision, SPLIT_K=split, TMA=tma,
        num_warps=cfg.num_warps, num_stages=stages, **pdl_launch(x.device),
    )
    down_kernel[(grid_tiles, cols_d, split)](
        h, w_d, out, order, sorted_w, blk_e, blk_s, blk_end, ws, sem,
        hidden, inter, num_experts, nb,
        h.stride(0), down_proj.stride(0), down_proj.stride(1), down_proj.stride(2), out.stride(0),
        row, t * row,
        BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, PRECISION=precision, SPLIT_K=split, TMA=tma,
        num_warps=cfg.num_warps, num_stages=stages, **pdl_launch(x.device),
    )
    return out


def _tma_weights(gate_up_proj: torch.Tensor, down_proj: torch.Tensor) -> bool:
    """Whether both expert weight stacks can be read through descriptors as [E * rows, K]
    matrices: contiguous, aligned, on a device with a TMA unit (or the interpreter), and
    with row indices that fit the descriptor's int32 coordinates."""
    return (tma_device(gate_up_proj.device)
            and all(w.is_contiguous() and tma_addressable(w) and w.numel() // w.shape[-1] < 2**31
                    for w in (gate_up_proj, down_proj)))
