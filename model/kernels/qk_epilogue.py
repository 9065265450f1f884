"""CCA's query/key epilogue in one launch: residual mix, per-head L2 norm, key temperature and
partial RoPE (`reference.cca_qk`).

Why: in PyTorch this is ~20 small launches per layer (repeat_interleave, add, scale, mean,
two adds, two norms, clamps, divisions, products, the temperature, contiguous copies, then
the rotary kernel), each a few microseconds at decode sizes: in the engine profile of the 8B
model at batch 256 (benchmarks/results/engine-profile-b256-2026-12-02-h200.json) the mean and
norm reductions, reciprocals, elementwise kernels and the rotary kernel of this path come to
roughly 1-1.5 ms of a ~9.4 ms step (the profile is by kernel name, not by call site). Here one program per token reads
its q0/k0 row and its convolution row once and writes q and k.

Roundings follow the PyTorch composition in the model dtype (every intermediate rounded to
it where a PyTorch op would produce it; `sqrt(D) / norm` is, as PyTorch's `__rtruediv__`
computes it, the rounded reciprocal times sqrt(D)), with RoPE as `model.kernels.rotary` computes it
(fp32 angles, cos/sin and products, one rounding). The rotation needs each element's partner
(j +- rotary_dim/2) after normalization; the program recomputes the normalized value at the
partner's index instead of exchanging registers, which costs a second (cached) read of the
same row and no barrier.

Status: the default on GPUs since its H200 check (2026-12-02: tests/test_cca_qk.py's GPU tests,
and the 8B engine equal to `generate` for 64/64 greedy tokens with it); decode at batch 256 went
from 27.1K to 34.3K tokens/s (benchmarks/results/engine-rsa-2026-12-02-h200.md).
ZAYA_FUSED_QK=0 runs the PyTorch composition instead (to compare, or on a backend where the
kernel misbehaves); tests/test_engine.py runs both inside the engine under the interpreter.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

from . import reference
from .pdl import pdl_enter, pdl_launch
from .rotary import apply_partial_rotary


def fused_enabled() -> bool:
    return os.environ.get("ZAYA_FUSED_QK", "1") != "0"


@triton.jit
def _rnd(x, DT: tl.constexpr):
    """Round fp32 to the model dtype and back (what storing a PyTorch intermediate does)."""
    return x.to(DT).to(tl.float32)


@triton.jit
def _q_res(QK, row, hq, dd, HQ: tl.constexpr, G: tl.constexpr, D: tl.constexpr, DT: tl.constexpr):
    """q_res = (q0 + k0[head // G]) * 0.5 at heads hq [H] x dims dd [D] (rounded like PyTorch)."""
    q0 = tl.load(QK + row + hq[:, None] * D + dd[None, :]).to(tl.float32)
    k0 = tl.load(QK + row + HQ * D + (hq // G)[:, None] * D + dd[None, :]).to(tl.float32)
    return _rnd(_rnd(q0 + k0, DT) * 0.5, DT)


@triton.jit
def _kernel(
    QK, CONV, TEMP, POS, INV_FREQ, QO, KO, KROWS,
    stride_qk, stride_conv, eps, sqrt_d,
    HQ: tl.constexpr, HK: tl.constexpr, G: tl.constexpr, D: tl.constexpr, HALF: tl.constexpr,
    HAS_ROWS: tl.constexpr, PDL: tl.constexpr,
):
    pdl_enter(PDL)
    t = tl.program_id(0).to(tl.int64)
    DT: tl.constexpr = QO.dtype.element_ty
    row = t * stride_qk
    crow = t * stride_conv
    d = tl.arange(0, D)
    rot = d < 2 * HALF
    # partner of each rotated dim: j <-> j + HALF inside the rotary slice (itself elsewhere)
    dp = tl.where(d < HALF, d + HALF, tl.where(rot, d - HALF, d))
    j = tl.where(d < HALF, d, d - HALF) % HALF
    pos = tl.load(POS + t).to(tl.float32)
    ang = pos * tl.load(INV_FREQ + j).to(tl.float32)
    cos = tl.cos(ang)
    sin = tl.where(d < HALF, -tl.sin(ang), tl.sin(ang))  # o = x cos -+ x_partner sin

    hq = tl.arange(0, HQ)
    hk = tl.arange(0, HK)
    # queries: conv + q_res, normalized per head to norm sqrt(D)
    qres = _q_res(QK, row, hq, d, HQ, G, D, DT)
    qres_p = _q_res(QK, row, hq, dp, HQ, G, D, DT)
    q = _rnd(tl.load(CONV + crow + hq[:, None] * D + d[None, :]).to(tl.float32) + qres, DT)
    q_p = _rnd(tl.load(CONV + crow + hq[:, None] * D + dp[None, :]).to(tl.float32) + qres_p, DT)
    qn = _rnd(tl.sqrt(tl.sum(q * q, axis=1)), DT)
    qs = _rnd(_rnd(tl.math.div_rn(tl.zeros([HQ], tl.float32) + 1.0, tl.maximum(qn, eps)), DT) * sqrt_d, DT)
    q = _rnd(q * qs[:, None], DT)
    q_p = _rnd(q_p * qs[:, None], DT)
    qo = tl.where(rot[None, :], q * cos[None, :] + q_p * sin[None, :], q)
    tl.store(QO + t * HQ * D + hq[:, None] * D + d[None, :], qo.to(DT))

    # keys: conv + mean of the group's q_res, normalized, times the head's temperature
    kres = _rnd(tl.sum(tl.reshape(qres, (HK, G, D)), axis=1) / G, DT)
    kres_p = _rnd(tl.sum(tl.reshape(qres_p, (HK, G, D)), axis=1) / G, DT)
    k = _rnd(tl.load(CONV + crow + HQ * D + hk[:, None] * D + d[None, :]).to(tl.float32) + kres, DT)
    k_p = _rnd(tl.load(CONV + crow + HQ * D + hk[:, None] * D + dp[None, :]).to(tl.float32) + kres_p, DT)
    kn = _rnd(tl.sqrt(tl.sum(k * k, axis=1)), DT)
    ks = _rnd(_rnd(tl.math.div_rn(tl.zeros([HK], tl.float32) + 1.0, tl.maximum(kn, eps)), DT) * sqrt_d, DT)
    temp = tl.load(TEMP + hk).to(tl.float32)
    k = _rnd(_rnd(k * ks[:, None], DT) * temp[:, None], DT)
    k_p = _rnd(_rnd(k_p * ks[:, None], DT) * temp[:, None], DT)
    ko = tl.where(rot[None, :], k * cos[None, :] + k_p * sin[None, :], k)
    krow = tl.load(KROWS + t).to(tl.int64) if HAS_ROWS else t  # a K cache slot, or row t
    tl.store(KO + krow * HK * D + hk[:, None] * D + d[None, :], ko.to(DT))


def _pow2(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0


def fused_cca_qk(qk: torch.Tensor, conv: torch.Tensor, temp: torch.Tensor, positions: torch.Tensor,
                 inv_freq: torch.Tensor, num_heads: int, num_kv_heads: int, k_out: torch.Tensor | None = None,
                 out_rows: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The one-launch kernel; shapes must be powers of two (`supports`). With k_out/out_rows
    the keys are stored straight into k_out's rows (no separate index copy)."""
    t, c = qk.shape
    hq, hk = num_heads, num_kv_heads
    d = c // (hq + hk)
    if qk.stride(1) != 1 or conv.stride(1) != 1:
        raise ValueError("qk and conv need unit stride along channels")
    q = torch.empty(t, hq, d, device=qk.device, dtype=qk.dtype)
    if k_out is None:
        k = torch.empty(t, hk, d, device=qk.device, dtype=qk.dtype)
    else:
        if out_rows is None or out_rows.shape != (t,):
            raise ValueError(f"out_rows must give one row per token ({t})")
        if k_out.shape[1:] != (hk, d) or not k_out.is_contiguous() or k_out.dtype != qk.dtype:
            raise ValueError(f"k_out must be a contiguous [N, {hk}, {d}] {qk.dtype} tensor, got "
                             f"{tuple(k_out.shape)} {k_out.dtype}")
        k = k_out
    if t:
        _kernel[(t,)](
            qk, conv, temp, positions, inv_freq.contiguous(), q, k, out_rows if k_out is not None else positions,
            qk.stride(0), conv.stride(0), torch.finfo(qk.dtype).eps, d**0.5,
            HQ=hq, HK=hk, G=hq // hk, D=d, HALF=inv_freq.shape[0], HAS_ROWS=k_out is not None, num_warps=4,
            **pdl_launch(qk.device),
        )
    return q, k


def supports(num_heads: int, num_kv_heads: int, head_dim: int, half: int) -> bool:
    """Triton tiles need power-of-two sizes: heads, group size, head_dim and rotary half."""
    return (num_heads % num_kv_heads == 0 and all(_pow2(n) for n in (num_heads, num_kv_heads, head_dim, half))
            and 2 * half <= head_dim)


def cca_qk(qk: torch.Tensor, conv: torch.Tensor, temp: torch.Tensor, positions: torch.Tensor,
           inv_freq: torch.Tensor, num_heads: int, num_kv_heads: int, k_out: torch.Tensor | None = None,
           out_rows: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Same contract as `reference.cca_qk`: the fused kernel unless disabled (ZAYA_FUSED_QK=0)
    or the shapes do not allow it, else the PyTorch composition with the Triton rotary kernel."""
    d = qk.shape[1] // (num_heads + num_kv_heads)
    if fused_enabled() and supports(num_heads, num_kv_heads, d, inv_freq.shape[0]):
        return fused_cca_qk(qk, conv, temp, positions, inv_freq, num_heads, num_kv_heads, k_out, out_rows)
    return reference.cca_qk(qk, conv, temp, positions, inv_freq, num_heads, num_kv_heads, rotary=apply_partial_rotary,
                            k_out=k_out, out_rows=out_rows)
