"""CCA attention kernels: causal prefill over packed variable-length sequences, and decode
against a paged compressed K/V cache with split-K.

CCA's attention itself is ordinary grouped-head softmax attention (Hq=8 query heads over
Hk=2 key/value heads, head_dim 128); what makes it cheap is that K/V live in the compressed
space (512 values a token instead of 4096 for 16-head MHA). So the prefill kernel is a
flash-attention forward in which each program maps its query head to its kv head, and the
decode kernel lets one program serve all Hq/Hk query heads of a kv head so each cached
K/V byte is read once per step.

Softmax uses exp2 with the scale folded into log2(e) * scale; statistics are fp32.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .pdl import pdl_enter, pdl_launch
from .tma import matrix_descriptor, tma_addressable, tma_device
from .tuning import kernel_config, multiprocessor_count

_LOG2E = 1.4426950408889634


# --------------------------------------------------------------------------------------------
# Prefill
# --------------------------------------------------------------------------------------------


@triton.jit
def _prefill_step(
    acc, m_i, l_i, q, k_base, v_base, stride_kt, stride_vt, start_n, k_len, q_pos, qk_scale,
    offs_n0, offs_d, WINDOW: tl.constexpr, MASKED: tl.constexpr, PRECISION: tl.constexpr,
    K_ROWS: tl.constexpr,
):
    offs_n = start_n + offs_n0
    if K_ROWS:
        # K as [BLOCK_N, D] rows (the layout in memory), transposed for the MMA; a variant
        # the sweep times against the [D, BLOCK_N] load below (scripts/tune_prefill.py).
        if MASKED:
            kmask = offs_n < k_len
            k = tl.trans(tl.load(k_base + offs_n[:, None] * stride_kt + offs_d[None, :], mask=kmask[:, None],
                                 other=0.0))
        else:
            k = tl.trans(tl.load(k_base + offs_n[:, None] * stride_kt + offs_d[None, :]))
    else:
        if MASKED:
            kmask = offs_n < k_len
            k = tl.load(k_base + offs_n[None, :] * stride_kt + offs_d[:, None], mask=kmask[None, :], other=0.0)
        else:
            k = tl.load(k_base + offs_n[None, :] * stride_kt + offs_d[:, None])
    if MASKED:
        v = tl.load(v_base + offs_n[:, None] * stride_vt + offs_d[None, :], mask=(offs_n < k_len)[:, None], other=0.0)
    else:
        v = tl.load(v_base + offs_n[:, None] * stride_vt + offs_d[None, :])
    s = tl.dot(q, k, input_precision=PRECISION)
    return _online_softmax(acc, m_i, l_i, s, v, offs_n, k_len, q_pos, qk_scale, WINDOW, MASKED, PRECISION)


@triton.jit
def _online_softmax(
    acc, m_i, l_i, s, v, offs_n, k_len, q_pos, qk_scale, WINDOW: tl.constexpr, MASKED: tl.constexpr,
    PRECISION: tl.constexpr,
):
    """One key block's scores `s` folded into the running (acc, max, sum)."""
    if MASKED:
        allowed = (offs_n[None, :] <= q_pos[:, None]) & (offs_n[None, :] < k_len)
        if WINDOW > 0:
            allowed = allowed & (offs_n[None, :] > q_pos[:, None] - WINDOW)
        s = tl.where(allowed, s, float("-inf"))
    # Statistics are kept in the scaled log2 domain; the scale is applied inside one
    # multiply-add per score (s * scale - m) instead of a separate pass over the tile.
    m_new = tl.maximum(m_i, tl.max(s, axis=1) * qk_scale)
    if MASKED:
        # A row can see no key in a masked block (window edge); keep its stats finite.
        m_use = tl.where(m_new == float("-inf"), 0.0, m_new)
    else:
        m_use = m_new  # every row sees every key of an unmasked block: m_new is finite
    p = tl.math.exp2(s * qk_scale - m_use[:, None])
    alpha = tl.math.exp2(m_i - m_use)
    l_i = l_i * alpha + tl.sum(p, axis=1)
    acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=PRECISION)
    return acc, m_new, l_i


@triton.jit
def _prefill_step_tma(
    acc, m_i, l_i, q, K, V, row0, kv_head, start_n, k_len, q_pos, qk_scale, offs_n0,
    BLOCK_N: tl.constexpr, HEAD_DIM: tl.constexpr, WINDOW: tl.constexpr, MASKED: tl.constexpr,
    PRECISION: tl.constexpr,
):
    # K and V blocks through the tensor memory accelerator (descriptors over [T, H * D]):
    # one asynchronous bulk copy per block instead of per-thread address arithmetic and
    # loads, which leaves registers to the MMAs. Rows past the packed tensor read as zero;
    # rows of the next sequence are masked out like any key past k_len.
    k = K.load([row0 + start_n, kv_head * HEAD_DIM])
    v = V.load([row0 + start_n, kv_head * HEAD_DIM])
    s = tl.dot(q, tl.trans(k), input_precision=PRECISION)
    return _online_softmax(acc, m_i, l_i, s, v, start_n + offs_n0, k_len, q_pos, qk_scale, WINDOW, MASKED,
                           PRECISION)


@triton.jit
def _prefill_block(
    acc, m_i, l_i, q, k_src, v_src, k_start, kv_head, stride_kt, stride_vt, start_n, k_len, q_pos, qk_scale,
    offs_n0, offs_d, BLOCK_N: tl.constexpr, HEAD_DIM: tl.constexpr, WINDOW: tl.constexpr, MASKED: tl.constexpr,
    PRECISION: tl.constexpr, K_ROWS: tl.constexpr, TMA: tl.constexpr,
):
    """One key block, loaded through descriptors (TMA: `k_src`, `v_src` are K and V) or
    pointers (`k_src`, `v_src` point at the sequence's first key of the kv head)."""
    if TMA:
        acc, m_i, l_i = _prefill_step_tma(acc, m_i, l_i, q, k_src, v_src, k_start, kv_head, start_n, k_len, q_pos,
                                          qk_scale, offs_n0, BLOCK_N, HEAD_DIM, WINDOW, MASKED, PRECISION)
    else:
        acc, m_i, l_i = _prefill_step(acc, m_i, l_i, q, k_src, v_src, stride_kt, stride_vt, start_n, k_len, q_pos,
                                      qk_scale, offs_n0, offs_d, WINDOW, MASKED, PRECISION, K_ROWS)
    return acc, m_i, l_i


@triton.jit
def _prefill_kernel(
    Q, K, V, O, CU_Q, CU_K, qk_scale,
    stride_qt, stride_qh, stride_kt, stride_kh, stride_vt, stride_vh, stride_ot, stride_oh,
    GROUP: tl.constexpr, HEAD_DIM: tl.constexpr, WINDOW: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, PRECISION: tl.constexpr,
    HEADS_FIRST: tl.constexpr, K_ROWS: tl.constexpr, TMA: tl.constexpr,
):
    # Causal work grows with the query block index: hand out the heaviest blocks first so the
    # short ones fill the tail of the schedule. HEADS_FIRST puts the head on the grid's
    # fastest axis, so the heaviest block of *every* head goes first (and the query heads
    # sharing a kv head read the same K/V blocks at about the same time, from L2). TMA: Q, K
    # and V are tensor descriptors (`_prefill_step_tma`); O stays a pointer (a masked store:
    # the rows past q_len belong to the next sequence). (A warp-specialized middle loop,
    # `tl.range(..., warp_specialize=True)`, was tried on an H200 with Triton 3.6: no gain,
    # and 64-row tiles failed to compile; benchmarks/results/prefill-2026-12-03-h200.md.)
    if HEADS_FIRST:
        head = tl.program_id(0)
        pid_m = tl.num_programs(1) - 1 - tl.program_id(1)
    else:
        pid_m = tl.num_programs(0) - 1 - tl.program_id(0)
        head = tl.program_id(1)
    seq = tl.program_id(2)
    q_start = tl.load(CU_Q + seq)
    q_len = tl.load(CU_Q + seq + 1) - q_start
    if pid_m * BLOCK_M >= q_len:
        return
    k_start = tl.load(CU_K + seq)
    k_len = tl.load(CU_K + seq + 1) - k_start
    shift = k_len - q_len  # queries are the last q_len of k_len positions
    kv_head = head // GROUP

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n0 = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, HEAD_DIM)
    q_rows = (q_start + offs_m).to(tl.int64)
    q_pos = offs_m + shift
    if TMA:
        q = Q.load([q_start + pid_m * BLOCK_M, head * HEAD_DIM])
        k_src, v_src = K, V
    else:
        q = tl.load(
            Q + q_rows[:, None] * stride_qt + head * stride_qh + offs_d[None, :],
            mask=(offs_m < q_len)[:, None], other=0.0,
        )
        k_src = K + k_start.to(tl.int64) * stride_kt + kv_head * stride_kh
        v_src = V + k_start.to(tl.int64) * stride_vt + kv_head * stride_vh

    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)

    r0 = pid_m * BLOCK_M + shift  # first and last absolute query position of this block
    r1 = r0 + BLOCK_M - 1
    j_hi = tl.cdiv(tl.minimum(k_len, r1 + 1), BLOCK_N)  # blocks [0, j_hi) hold visible keys
    j_full_hi = (r0 + 1) // BLOCK_N  # blocks fully below the diagonal for every row
    if WINDOW > 0:
        j_lo = tl.maximum(r0 - WINDOW + 1, 0) // BLOCK_N
        j_full_lo = tl.cdiv(tl.maximum(r1 - WINDOW + 1, 0), BLOCK_N)  # fully inside every row's window
    else:
        j_lo = 0
        j_full_lo = 0
    # Three ranges: masked window edge [a, b), unmasked middle [b, c), masked diagonal [c, j_hi).
    b = tl.minimum(tl.maximum(j_full_lo, j_lo), j_hi)
    c = tl.minimum(tl.maximum(j_full_hi, b), j_hi)
    for j in range(j_lo, b):
        acc, m_i, l_i = _prefill_block(acc, m_i, l_i, q, k_src, v_src, k_start, kv_head, stride_kt, stride_vt,
                                       j * BLOCK_N, k_len, q_pos, qk_scale, offs_n0, offs_d, BLOCK_N, HEAD_DIM,
                                       WINDOW, True, PRECISION, K_ROWS, TMA)
    for j in range(b, c):
        acc, m_i, l_i = _prefill_block(acc, m_i, l_i, q, k_src, v_src, k_start, kv_head, stride_kt, stride_vt,
                                       j * BLOCK_N, k_len, q_pos, qk_scale, offs_n0, offs_d, BLOCK_N, HEAD_DIM,
                                       WINDOW, False, PRECISION, K_ROWS, TMA)
    for j in range(c, j_hi):
        acc, m_i, l_i = _prefill_block(acc, m_i, l_i, q, k_src, v_src, k_start, kv_head, stride_kt, stride_vt,
                                       j * BLOCK_N, k_len, q_pos, qk_scale, offs_n0, offs_d, BLOCK_N, HEAD_DIM,
                                       WINDOW, True, PRECISION, K_ROWS, TMA)

    l_safe = tl.where(l_i == 0.0, 1.0, l_i)
    out = acc / l_safe[:, None]
    tl.store(
        O + q_rows[:, None] * stride_ot + head * stride_oh + offs_d[None, :],
        out.to(O.dtype.element_ty), mask=(offs_m < q_len)[:, None],
    )


def _precision(dtype: torch.dtype) -> str:
    # fp32 inputs get true fp32 products (tf32 would cost ~3e-4 relative error).
    return "ieee" if dtype == torch.float32 else "tf32"


def _check_heads(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> int:
    if q.shape[-1] != k.shape[-1] or k.shape != v.shape:
        raise ValueError(f"q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)} disagree")
    hq, hk = q.shape[-2], k.shape[-2]
    if hq % hk:
        raise ValueError(f"{hq} query heads are not a multiple of {hk} kv heads")
    d = q.shape[-1]
    if d & (d - 1) or d < 16:
        raise ValueError(f"head_dim {d} must be a power of two >= 16")
    if q.stride(-1) != 1 or k.stride(-1) != 1 or v.stride(-1) != 1:
        raise ValueError("q, k, v need unit stride in the head dimension")
    return hq // hk


def _tma_ready(*ts: torch.Tensor) -> bool:
    """Whether tensor descriptors can address these [T, H, D] tensors as [T, H * D] (heads
    adjacent): a device with a TMA unit (NVIDIA compute capability 9+; the interpreter
    emulates one) and what the copy engine requires of the strides (`tma_addressable`).
    Otherwise the pointer path runs."""
    if not tma_device(ts[0].device):
        return False
    return all(t.stride(1) == t.shape[2] and tma_addressable(t) for t in ts)


def _descriptor(t: torch.Tensor, rows: int):
    """A tensor descriptor over [T, H * D] that loads blocks of `rows` tokens of one head."""
    return matrix_descriptor(t.view(t.shape[0], -1), (rows, t.shape[2]))


def cca_prefill_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cu_seqlens_q: torch.Tensor,
    cu_seqlens_k: torch.Tensor | None = None,
    max_seqlen_q: int | None = None,
    scale: float | None = None,
    sliding_window: int | None = None,
) -> torch.Tensor:
    """Triton causal grouped-head attention over packed sequences; same contract as
    `reference.cca_prefill_attention`. Pass `max_seqlen_q` to avoid a device sync (and to
    make the launch capturable in a CUDA graph)."""
    group = _check_heads(q, k, v)
    if cu_seqlens_k is None:
        cu_seqlens_k = cu_seqlens_q
    if max_seqlen_q is None:
        max_seqlen_q = int((cu_seqlens_q[1:] - cu_seqlens_q[:-1]).max().item()) if q.shape[0] else 0
    num_seqs = cu_seqlens_q.shape[0] - 1
    d = q.shape[-1]
    scale = d**-0.5 if scale is None else scale
    out = torch.empty_like(q)
    if num_seqs == 0 or max_seqlen_q == 0:
        return out
    cfg = kernel_config("prefill_attention", q.device)
    block_m, block_n, warps, stages = cfg.block_m, cfg.block_n, cfg.num_warps, cfg.num_stages
    if q.dtype == torch.float32:
        # fp32 tiles are twice the bytes: halve the tiles so they fit shared memory.
        block_m, block_n, stages = min(block_m, 64), min(block_n, 32), min(stages, 2)
    blocks = triton.cdiv(max_seqlen_q, block_m)
    grid = (q.shape[1], blocks, num_seqs) if cfg.heads_first else (blocks, q.shape[1], num_seqs)
    qa, ka, va = q, k, v
    tma = bool(cfg.tma) and _tma_ready(q, k, v)
    if tma:
        qa, ka, va = _descriptor(q, block_m), _descriptor(k, block_n), _descriptor(v, block_n)
    _prefill_kernel[grid](
        qa, ka, va, out, cu_seqlens_q.to(torch.int32), cu_seqlens_k.to(torch.int32), scale * _LOG2E,
        q.stride(0), q.stride(1), k.stride(0), k.stride(1), v.stride(0), v.stride(1), out.stride(0), out.stride(1),
        GROUP=group, HEAD_DIM=d, WINDOW=int(sliding_window or 0),
        BLOCK_M=block_m, BLOCK_N=block_n, PRECISION=_precision(q.dtype),
        HEADS_FIRST=bool(cfg.heads_first), K_ROWS=bool(cfg.k_rows), TMA=tma,
        num_warps=warps, num_stages=stages,
    )
    return out


# --------------------------------------------------------------------------------------------
# Decode (split-K, paged)
# --------------------------------------------------------------------------------------------


@triton.jit
def _decode_kernel(
    Q, KC, VC, BT, SL, O, MID_O, MID_LSE, qk_scale,
    stride_qb, stride_qh, stride_kp, stride_ks, stride_kh, stride_vp, stride_vs, stride_vh,
    stride_bt, stride_ob, stride_oh,
    num_splits,
    GROUP: tl.constexpr, GROUP_PAD: tl.constexpr, HEAD_DIM: tl.constexpr, PAGE: tl.constexpr,
    WINDOW: tl.constexpr, BLOCK_N: tl.constexpr, SINGLE_SPLIT: tl.constexpr, PRECISION: tl.constexpr, PDL: tl.constexpr,
):
    pdl_enter(PDL)
    b = tl.program_id(0)
    kv_head = tl.program_id(1)
    split = tl.program_id(2)
    seq_len = tl.load(SL + b)
    if WINDOW > 0:
        first = tl.maximum(seq_len - WINDOW, 0)
    else:
        first = 0
    span = seq_len - first
    chunk = tl.cdiv(tl.cdiv(span, num_splits), BLOCK_N) * BLOCK_N
    lo = first + split * chunk
    hi = tl.minimum(lo + chunk, seq_len)

    rows = tl.arange(0, GROUP_PAD)
    rmask = rows < GROUP
    heads = kv_head * GROUP + rows
    offs_d = tl.arange(0, HEAD_DIM)
    q = tl.load(Q + b.to(tl.int64) * stride_qb + heads[:, None] * stride_qh + offs_d[None, :],
                mask=rmask[:, None], other=0.0)

    m_i = tl.full([GROUP_PAD], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([GROUP_PAD], dtype=tl.float32)
    acc = tl.zeros([GROUP_PAD, HEAD_DIM], dtype=tl.float32)
    offs_n0 = tl.arange(0, BLOCK_N)
    bt_row = BT + b.to(tl.int64) * stride_bt
    for start in range(lo, hi, BLOCK_N):
        tok = start + offs_n0
        tmask = tok < hi
        page = tl.load(bt_row + tok // PAGE, mask=tmask, other=0).to(tl.int64)
        slot = tok % PAGE
        k = tl.load(KC + page[None, :] * stride_kp + slot[None, :] * stride_ks + kv_head * stride_kh + offs_d[:, None],
                    mask=tmask[None, :], other=0.0)
        v = tl.load(VC + page[:, None] * stride_vp + slot[:, None] * stride_vs + kv_head * stride_vh + offs_d[None, :],
                    mask=tmask[:, None], other=0.0)
        s = tl.dot(q, k, input_precision=PRECISION) * qk_scale
        s = tl.where(tmask[None, :], s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, axis=1))
        m_use = tl.where(m_new == float("-inf"), 0.0, m_new)
        p = tl.math.exp2(s - m_use[:, None])
        alpha = tl.math.exp2(m_i - m_use)
        l_i = l_i * alpha + tl.sum(p, axis=1)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=PRECISION)
        m_i = m_new

    l_safe = tl.where(l_i == 0.0, 1.0, l_i)
    out = acc / l_safe[:, None]
    if SINGLE_SPLIT:
        tl.store(O + b.to(tl.int64) * stride_ob + heads[:, None] * stride_oh + offs_d[None, :],
                 out.to(O.dtype.element_ty), mask=rmask[:, None])
    else:
        # Partial result of this split: normalized output and its log2-sum-exp (-inf if empty).
        lse = tl.where(l_i == 0.0, float("-inf"), m_i + tl.math.log2(l_safe))
        base = (b * tl.num_programs(1) * GROUP + heads).to(tl.int64) * num_splits + split
        tl.store(MID_O + base[:, None] * HEAD_DIM + offs_d[None, :], out, mask=rmask[:, None])
        tl.store(MID_LSE + base, lse, mask=rmask)


@triton.jit
def _decode_reduce_kernel(
    MID_O, MID_LSE, O, stride_ob, stride_oh, num_splits,
    NUM_HEADS: tl.constexpr, HEAD_DIM: tl.constexpr, SPLITS_PAD: tl.constexpr, PDL: tl.constexpr,
):
    pdl_enter(PDL)
    b = tl.program_id(0)
    h = tl.program_id(1)
    sp = tl.arange(0, SPLITS_PAD)
    smask = sp < num_splits
    base = (b * NUM_HEADS + h).to(tl.int64) * num_splits
    lse = tl.load(MID_LSE + base + sp, mask=smask, other=float("-inf"))
    m = tl.max(lse, axis=0)
    w = tl.where(smask & (lse > float("-inf")), tl.math.exp2(lse - m), 0.0)
    offs_d = tl.arange(0, HEAD_DIM)
    o = tl.load(MID_O + (base + sp)[:, None] * HEAD_DIM + offs_d[None, :], mask=smask[:, None], other=0.0)
    out = tl.sum(o * w[:, None], axis=0) / tl.sum(w, axis=0)
    tl.store(O + b.to(tl.int64) * stride_ob + h * stride_oh + offs_d, out.to(O.dtype.element_ty))


def decode_num_splits(batch: int, kv_heads: int, max_seq_len: int, device: torch.device) -> int:
    """Split-K factor: enough programs to cover the GPU `block_m` times over when the batch is
    small, but never chunks shorter than `block_k` tokens (each split costs a partial write)."""
    cfg = kernel_config("decode_attention", device)
    sms = multiprocessor_count(device.index or 0) if device.type == "cuda" else 1
    want = triton.cdiv(cfg.block_m * sms, max(batch * kv_heads, 1))
    cap = max(1, triton.cdiv(max_seq_len, cfg.block_k))
    return int(max(1, min(want, cap, 64)))


def cca_decode_attention(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    block_table: torch.Tensor,
    seq_lens: torch.Tensor,
    scale: float | None = None,
    sliding_window: int | None = None,
    num_splits: int | None = None,
    max_seq_len: int | None = None,
) -> torch.Tensor:
    """Triton decode attention; same contract as `reference.cca_decode_attention`.

    Paged cache [num_pages, page_size, Hk, D] (page_size any positive integer; use
    `reference.paged_view` for a contiguous [B, S, Hk, D] cache). Give `num_splits` or
    `max_seq_len` to avoid a device sync (CUDA-graph capture needs one of them).
    """
    if q.dim() != 3 or k_cache.dim() != 4:
        raise ValueError(f"expected q [B, Hq, D] and cache [pages, page_size, Hk, D], got {tuple(q.shape)}, {tuple(k_cache.shape)}")
    group = _check_heads(q, k_cache, v_cache)
    b_size, hq, d = q.shape
    hk = k_cache.shape[2]
    scale = d**-0.5 if scale is None else scale
    out = torch.empty_like(q)
    if b_size == 0:
        return out
    if num_splits is None:
        if max_seq_len is None:
            max_seq_len = int(seq_lens.max().item())
        if sliding_window:
            max_seq_len = min(max_seq_len, sliding_window)
        num_splits = decode_num_splits(b_size, hk, max_seq_len, q.device)
    cfg = kernel_config("decode_attention", q.device)
    block_n = cfg.block_n
    group_pad = max(16, triton.next_power_of_2(group))
    single = num_splits == 1
    if single:
        mid_o = mid_lse = out  # unused
    else:
        mid_o = torch.empty((b_size, hq, num_splits, d), dtype=torch.float32, device=q.device)
        mid_lse = torch.empty((b_size, hq, num_splits), dtype=torch.float32, device=q.device)
    _decode_kernel[(b_size, hk, num_splits)](
        q, k_cache, v_cache, block_table, seq_lens.to(torch.int32), out, mid_o, mid_lse, scale * _LOG2E,
        q.stride(0), q.stride(1), k_cache.stride(0), k_cache.stride(1), k_cache.stride(2),
        v_cache.stride(0), v_cache.stride(1), v_cache.stride(2), block_table.stride(0),
        out.stride(0), out.stride(1), num_splits,
        GROUP=group, GROUP_PAD=group_pad, HEAD_DIM=d, PAGE=k_cache.shape[1],
        WINDOW=int(sliding_window or 0), BLOCK_N=block_n, SINGLE_SPLIT=single,
        PRECISION=_precision(q.dtype), num_warps=cfg.num_warps, num_stages=cfg.num_stages, **pdl_launch(q.device),
    )
    if not single:
        _decode_reduce_kernel[(b_size, hq)](
            mid_o, mid_lse, out, out.stride(0), out.stride(1), num_splits,
            NUM_HEADS=hq, HEAD_DIM=d, SPLITS_PAD=triton.next_power_of_2(num_splits), num_warps=4,
            **pdl_launch(q.device),
        )
    return out

