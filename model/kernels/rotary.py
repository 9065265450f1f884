"""Partial rotary embedding of q and k in one launch, angles computed in the kernel.

Why compute cos/sin in the kernel: upstream materializes cos/sin tables [T, rotary_dim] per
layer type and then runs ~10 elementwise ops per tensor. Here each program reads one
position id and the rotary_dim/2 inverse frequencies (L2-resident), and rewrites only the
rotated slice of every head of q and k: 2 x 2 bytes per rotated element for bf16.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .tuning import kernel_config


@triton.jit
def _rotate_heads(
    src, dst, stride_t_src, stride_h_src, stride_t_dst, stride_h_dst, t, n_heads, head_dim,
    cos, sin, HALF: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_D: tl.constexpr, COPY_PASS: tl.constexpr,
):
    heads = tl.arange(0, BLOCK_H)
    j = tl.arange(0, HALF)
    hmask = heads < n_heads
    s_row = src + t * stride_t_src + heads[:, None] * stride_h_src
    d_row = dst + t * stride_t_dst + heads[:, None] * stride_h_dst
    m = hmask[:, None]
    x1 = tl.load(s_row + j[None, :], mask=m, other=0.0).to(tl.float32)
    x2 = tl.load(s_row + HALF + j[None, :], mask=m, other=0.0).to(tl.float32)
    o1 = x1 * cos[None, :] - x2 * sin[None, :]
    o2 = x2 * cos[None, :] + x1 * sin[None, :]
    tl.store(d_row + j[None, :], o1.to(dst.dtype.element_ty), mask=m)
    tl.store(d_row + HALF + j[None, :], o2.to(dst.dtype.element_ty), mask=m)
    if COPY_PASS:
        # Out of place: the unrotated tail of each head is copied as is.
        d = 2 * HALF + tl.arange(0, BLOCK_D)
        pm = m & (d[None, :] < head_dim)
        xp = tl.load(s_row + d[None, :], mask=pm, other=0.0)
        tl.store(d_row + d[None, :], xp, mask=pm)


@triton.jit
def _rotary_kernel(
    Q, K, QO, KO, POS, INV_FREQ,
    sq_t, sq_h, sk_t, sk_h, sqo_t, sqo_h, sko_t, sko_h,
    n_q_heads, n_k_heads, head_dim,
    HALF: tl.constexpr, BLOCK_HQ: tl.constexpr, BLOCK_HK: tl.constexpr, BLOCK_D: tl.constexpr,
    COPY_PASS: tl.constexpr,
):
    t = tl.program_id(0).to(tl.int64)
    pos = tl.load(POS + t).to(tl.float32)
    j = tl.arange(0, HALF)
    ang = pos * tl.load(INV_FREQ + j).to(tl.float32)
    cos = tl.cos(ang)
    sin = tl.sin(ang)
    _rotate_heads(Q, QO, sq_t, sq_h, sqo_t, sqo_h, t, n_q_heads, head_dim, cos, sin, HALF, BLOCK_HQ, BLOCK_D, COPY_PASS)
    _rotate_heads(K, KO, sk_t, sk_h, sko_t, sko_h, t, n_k_heads, head_dim, cos, sin, HALF, BLOCK_HK, BLOCK_D, COPY_PASS)


def apply_partial_rotary(
    q: torch.Tensor,
    k: torch.Tensor,
    positions: torch.Tensor,
    inv_freq: torch.Tensor,
    inplace: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Triton partial RoPE; same contract as `reference.apply_partial_rotary`.

    q [T, Hq, D], k [T, Hk, D] with unit stride in the last dimension (any token/head stride,
    so views into a fused qkv buffer work); positions [T] integer; inv_freq [rotary_dim/2] fp32.
    """
    if q.dim() != 3 or k.dim() != 3 or q.shape[0] != k.shape[0] or q.shape[2] != k.shape[2]:
        raise ValueError(f"expected q [T, Hq, D] and k [T, Hk, D], got {tuple(q.shape)} and {tuple(k.shape)}")
    half = inv_freq.shape[0]
    head_dim = q.shape[2]
    if 2 * half > head_dim or half & (half - 1):
        raise ValueError(f"rotary_dim {2 * half} must be a power of two not above head_dim {head_dim}")
    if q.stride(-1) != 1 or k.stride(-1) != 1:
        raise ValueError("q and k need unit stride in the head dimension")
    if positions.shape[0] != q.shape[0]:
        raise ValueError(f"positions has {positions.shape[0]} entries for {q.shape[0]} tokens")
    if inplace:
        qo, ko = q, k
    else:
        qo, ko = torch.empty_like(q), torch.empty_like(k)
    t = q.shape[0]
    cfg = kernel_config("rotary", q.device)
    pass_dim = head_dim - 2 * half
    if t > 0:
        _rotary_kernel[(t,)](
            q, k, qo, ko, positions.contiguous(), inv_freq.contiguous(),
            q.stride(0), q.stride(1), k.stride(0), k.stride(1),
            qo.stride(0), qo.stride(1), ko.stride(0), ko.stride(1),
            q.shape[1], k.shape[1], head_dim,
            HALF=half,
            BLOCK_HQ=triton.next_power_of_2(q.shape[1]),
            BLOCK_HK=triton.next_power_of_2(k.shape[1]),
            BLOCK_D=triton.next_power_of_2(max(pass_dim, 1)),
            COPY_PASS=(not inplace) and pass_dim > 0,
            num_warps=cfg.num_warps,
        )
    return qo, ko
