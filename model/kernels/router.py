"""The ZAYA router MLP and its top-1 choice in one kernel.

Unfused, the router is ~15 launches per layer (RMSNorm's elementwise ops, three linears, two
GELUs, softmax, bias add, topk, gather, two masked fills) over tiny tensors ([T, 256] and
[T, 17]), so at decode batch sizes it is launch-bound. Here one program takes BLOCK_T tokens
through the whole chain with every intermediate in registers:
  xn = rmsnorm(s);  for each chunk c of the router width R:
      h1_c = gelu(xn @ W1[c]^T + b1[c]);  acc2 += h1_c @ W2[:, c]^T
  h2 = gelu(acc2 + b2);  logits = h2 @ Wo^T;  p = softmax(logits);  e = argmax(p + bias)
The weights (2 x R^2 + (E+1) x R values, ~260 KB in bf16 for R=256) stream through shared
memory once per program and stay L2-resident across programs.

Why L2 warm-up programs (`l2_warm` in the tuning table): in a decode step the router's
weights were last read a whole step ago, so they come from HBM, and one program pulls its
256 KB through one SM: ~15 us whatever the batch (2026-12-03 sweep on an H200, 15.0 us at 64
tokens and 14.9 us at 256), because every token block walks the same bytes in the same
order. `l2_warm` extra programs each load a distinct slice of W1/W2 at launch and discard it
(a store that only a NaN would trigger keeps the load alive), so the bytes arrive over that
many SMs at once and the token programs read them from L2. Measured (H200, 2026-12-03
12:56): alone they gain nothing at chunk 128 (14.3 us at T=256 with or without), and with
chunk 256 / 3 stages they take 14.8 us to 13.2 us, the table's entry; so the weights' trip
from HBM is a small part of the time, most of it is the chain inside one program.

Hence the split over the router width (`split_k` in the table, with `block_k` the chunk):
each token block's chunks are dealt out to split_k programs, each computing its fc1 columns
h1_c and their fc2 partial h1_c @ W2[:, c]^T; the last slice to finish adds the fp32 partials
in split order (model/kernels/splitk.py: the same bits whichever finished last) and runs the
rest (GELU, the class logits, softmax, top-1). A program's chain is then 1/split_k as long,
and the weights come in over split_k SMs. With the depth average, the last slice writes the
state back, after every slice has read s. Measured on an H100 (2026-12-07): 4 x 64 columns
take 13.0-14.3 us alone, and in the engine decode is level or 0.7% slower (41.0K against 41.3K
tokens/s at batch 256): what a router launch costs is not its chain. The tables keep split_k=1.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .pdl import pdl_enter, pdl_launch
from .splitk import _acquire, _arrive, _collect, _publish, _release, split_counters
from .tuning import kernel_config


@triton.jit
def _gelu(x):
    # Exact (erf) GELU, the default of nn.GELU used by upstream.
    return 0.5 * x * (1.0 + tl.math.erf(x * 0.7071067811865476))


@triton.jit
def _warm_slice(W1, W2, SINK, w, n_warm, n_weights, WARM_BLOCK: tl.constexpr):
    """Warm-up program w of n_warm: load slice w of [W1 | W2] (n_weights values each) and
    discard it; SINK[w] is written only if the slice sums to NaN, which keeps the loads."""
    half = (n_warm + 1) // 2
    base = W1 if w < half else W2
    part = w if w < half else w - half
    parts = half if w < half else n_warm - half
    size = tl.cdiv(n_weights, parts)
    lo = part * size
    hi = tl.minimum(lo + size, n_weights)
    offs = tl.arange(0, WARM_BLOCK)
    acc = tl.zeros([WARM_BLOCK], dtype=tl.float32)
    for i in range(lo, hi, WARM_BLOCK):
        acc += tl.load(base + i + offs, mask=(i + offs) < hi, other=0.0).to(tl.float32)
    total = tl.sum(acc, axis=0)
    tl.store(SINK + w, total, mask=total != total)


@triton.jit
def _router_finish(acc2, B2, WO, BIAS, OUT_W, OUT_E, rows, rmask, cols, cmask, width, n_classes,
                   E_PAD: tl.constexpr, PRECISION: tl.constexpr):
    """From fc2's accumulator: GELU, the class logits, softmax, the biased top-1 and its weight."""
    wdt = WO.dtype.element_ty
    b2 = tl.load(B2 + cols, mask=cmask, other=0.0).to(tl.float32)
    h2 = _gelu(acc2 + b2[None, :]).to(wdt)
    ecols = tl.arange(0, E_PAD)
    emask = ecols < n_classes
    wot = tl.load(WO + ecols[None, :] * width + cols[:, None], mask=cmask[:, None] & emask[None, :], other=0.0)
    logits = tl.dot(h2, wot, input_precision=PRECISION)
    logits = tl.where(emask[None, :], logits, float("-inf"))
    mx = tl.max(logits, axis=1)
    ex = tl.exp(logits - mx[:, None])
    p = ex / tl.sum(ex, axis=1)[:, None]
    bias = tl.load(BIAS + ecols, mask=emask, other=float("-inf")).to(tl.float32)
    biased = tl.where(emask[None, :], p + bias[None, :], float("-inf"))
    choice = tl.argmax(biased, axis=1)
    w = tl.sum(tl.where(ecols[None, :] == choice[:, None], p, 0.0), axis=1)
    w = tl.where(choice == n_classes - 1, 0.0, w)
    tl.store(OUT_W + rows, w, mask=rmask)
    tl.store(OUT_E + rows, choice.to(tl.int32), mask=rmask)


@triton.jit
def _router_kernel(
    S, PREV, PREV_SCALE, NW, W1, B1, W2, B2, WO, BIAS, OUT_W, OUT_E, SINK, WS, SEM,
    n_tokens, width, n_classes, eps, stride_s, stride_prev, n_blocks, n_warm, stride_wss,
    R_PAD: tl.constexpr, E_PAD: tl.constexpr, BLOCK_T: tl.constexpr, CHUNK: tl.constexpr,
    HAS_PREV: tl.constexpr, PRECISION: tl.constexpr, WARM_BLOCK: tl.constexpr, SPLIT: tl.constexpr,
    PER: tl.constexpr, PDL: tl.constexpr,
):
    pid = tl.program_id(0)
    if pid >= n_blocks:  # an L2 warm-up program (launched after the token programs)
        # before the PDL wait: it reads only weights, which no kernel writes, so it may run
        # while the previous kernel finishes (its SINK is written only for a NaN sum)
        if tl.program_id(2) == 0:
            _warm_slice(W1, W2, SINK, pid - n_blocks, n_warm, width * width, WARM_BLOCK)
        return
    pdl_enter(PDL)
    rows = pid * BLOCK_T + tl.arange(0, BLOCK_T)
    rmask = rows < n_tokens
    cols = tl.arange(0, R_PAD)
    cmask = cols < width
    smask = rmask[:, None] & cmask[None, :]
    s_ptr = S + rows.to(tl.int64)[:, None] * stride_s + cols[None, :]
    s = tl.load(s_ptr, mask=smask, other=0.0)
    if HAS_PREV:
        # depth average s + prev * scale, each product and sum rounded to s's dtype as in
        # PyTorch; written back: it is the state the next layer's router adds. The GPU
        # compiler may contract the fp32 multiply and add into one FMA (one rounding instead
        # of two), so the state can differ from PyTorch's by one unit in the last place
        # (seen on H200 for fp32 and bf16; the tests bound it, the engine's greedy tests
        # check that decisions follow).
        sdt = S.dtype.element_ty
        prev = tl.load(PREV + rows.to(tl.int64)[:, None] * stride_prev + cols[None, :], mask=smask, other=0.0)
        scale = tl.load(PREV_SCALE + cols, mask=cmask, other=0.0)
        scaled = (prev.to(tl.float32) * scale.to(tl.float32)[None, :]).to(sdt)
        s = (s.to(tl.float32) + scaled.to(tl.float32)).to(sdt)
        if SPLIT == 1:  # split: the last slice writes it, once every slice has read s
            tl.store(s_ptr, s, mask=smask)
    wdt = W1.dtype.element_ty
    sf = s.to(wdt).to(tl.float32)
    rstd = 1.0 / tl.sqrt(tl.sum(sf * sf, axis=1) / width + eps)
    nw = tl.load(NW + cols, mask=cmask, other=0.0).to(tl.float32)
    xn = ((sf * rstd[:, None]).to(wdt).to(tl.float32) * nw[None, :]).to(wdt)

    acc2 = tl.zeros([BLOCK_T, R_PAD], dtype=tl.float32)
    # This program's PER columns of the router width (all of it unless split: program_id(2)).
    # A loop of constant trip count: with one chunk (the Hopper entry) it is not pipelined,
    # so its single 128 KB stage is not multiplied by num_stages in shared memory.
    offs_c = tl.program_id(2) * PER + tl.arange(0, CHUNK)
    for c0 in range(0, PER, CHUNK):
        ch = c0 + offs_c
        chm = ch < width
        # W1 rows of this chunk, transposed to [R, CHUNK]
        w1t = tl.load(W1 + ch[None, :] * width + cols[:, None], mask=cmask[:, None] & chm[None, :], other=0.0)
        b1 = tl.load(B1 + ch, mask=chm, other=0.0).to(tl.float32)
        h1 = _gelu(tl.dot(xn, w1t, input_precision=PRECISION) + b1[None, :]).to(wdt)
        # W2 columns of this chunk, transposed to [CHUNK, R]
        w2t = tl.load(W2 + cols[None, :] * width + ch[:, None], mask=chm[:, None] & cmask[None, :], other=0.0)
        acc2 = tl.dot(h1, w2t, acc2, input_precision=PRECISION)
    if SPLIT == 1:
        _router_finish(acc2, B2, WO, BIAS, OUT_W, OUT_E, rows, rmask, cols, cmask, width, n_classes, E_PAD,
                       PRECISION)
    else:
        # fc2 split over its K (the router width): the last slice to finish adds the fp32
        # partials in split order (the same bits whichever came last) and runs the rest
        ws_ptrs = WS + rows.to(tl.int64)[:, None] * R_PAD + cols[None, :]
        if _arrive(SEM, pid) == SPLIT - 1:
            _acquire(SEM, pid, SPLIT)
            acc2 = _collect(ws_ptrs, stride_wss, acc2, smask, SPLIT)
            if HAS_PREV:
                tl.store(s_ptr, s, mask=smask)
            _router_finish(acc2, B2, WO, BIAS, OUT_W, OUT_E, rows, rmask, cols, cmask, width, n_classes, E_PAD,
                           PRECISION)
        else:
            _publish(ws_ptrs + tl.program_id(2) * stride_wss, acc2, smask)
            _release(SEM, pid)


def router_top1(
    s: torch.Tensor,
    norm_weight: torch.Tensor,
    fc1_weight: torch.Tensor,
    fc1_bias: torch.Tensor,
    fc2_weight: torch.Tensor,
    fc2_bias: torch.Tensor,
    out_weight: torch.Tensor,
    balancing_biases: torch.Tensor,
    eps: float,
    prev: torch.Tensor | None = None,
    prev_scale: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Triton fused router; same contract as `reference.router_top1` (with `prev`, the depth
    average is formed in the same launch and written back into s).

    s [T, R] with R the router width; fc weights [R, R] (nn.Linear layout, contiguous);
    out_weight [E+1, R]. Intermediates are kept in fp32 and rounded to the weight dtype
    between layers, so the choice can differ from the PyTorch path only on near-ties.
    """
    t, width = s.shape
    n_classes = out_weight.shape[0]
    for name, w in (("fc1_weight", fc1_weight), ("fc2_weight", fc2_weight)):
        if w.shape != (width, width) or not w.is_contiguous():
            raise ValueError(f"{name} must be a contiguous [{width}, {width}] matrix, got {tuple(w.shape)}")
    if out_weight.shape[1] != width or not out_weight.is_contiguous():
        raise ValueError(f"out_weight must be a contiguous [E+1, {width}] matrix, got {tuple(out_weight.shape)}")
    if s.stride(1) != 1:
        if prev is not None:
            raise ValueError("s needs unit stride in its last dim (it is updated in place with prev)")
        s = s.contiguous()
    if prev is not None:
        if prev.shape != s.shape or prev.stride(1) != 1 or prev_scale is None or prev_scale.shape != (width,):
            raise ValueError(f"prev must be {tuple(s.shape)} with unit last stride and prev_scale [{width}]")
    out_w = torch.empty(t, dtype=torch.float32, device=s.device)
    out_e = torch.empty(t, dtype=torch.int32, device=s.device)
    if t == 0:
        return out_w, out_e
    cfg = kernel_config("router", s.device)
    r_pad = max(16, triton.next_power_of_2(width))
    chunk = min(cfg.block_k, r_pad)
    block_t = max(16, cfg.block_m)
    stages = cfg.num_stages
    if fc1_weight.dtype == torch.float32:
        # fp32 weight tiles are twice the bytes: keep the pipelined chunks inside shared memory.
        chunk, stages = min(chunk, 64), 1
    n_blocks = triton.cdiv(t, block_t)
    n_warm = cfg.l2_warm
    sink = torch.empty(max(1, n_warm), dtype=torch.float32, device=s.device)
    # split_k: each token block's fc1 columns / fc2 K cut into slices of whole chunks, one
    # program each (a decode step's router is a chain of dependent loads in one program)
    split = min(cfg.split_k, triton.cdiv(width, chunk))
    sem = split_counters(s.device, n_blocks) if split > 1 else None
    if sem is None:
        split = 1
    ws = torch.empty((split, t, r_pad), dtype=torch.float32, device=s.device) if split > 1 else out_w
    _router_kernel[(n_blocks + n_warm, 1, split)](
        s, prev if prev is not None else s, prev_scale if prev is not None else norm_weight,
        norm_weight, fc1_weight, fc1_bias, fc2_weight, fc2_bias, out_weight, balancing_biases, out_w, out_e, sink,
        ws, sem if sem is not None else out_e,
        t, width, n_classes, eps, s.stride(0), prev.stride(0) if prev is not None else 0, n_blocks, n_warm,
        t * r_pad,
        R_PAD=r_pad, E_PAD=max(16, triton.next_power_of_2(n_classes)), BLOCK_T=block_t, CHUNK=chunk,
        HAS_PREV=prev is not None,
        PRECISION="ieee" if fc1_weight.dtype == torch.float32 else "tf32", WARM_BLOCK=1024, SPLIT=split,
        PER=triton.cdiv(triton.cdiv(width, chunk), split) * chunk,
        num_warps=cfg.num_warps, num_stages=stages, **pdl_launch(s.device),
    )
    return out_w, out_e
