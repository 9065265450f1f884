"""Fused RMSNorm, optionally with ZAYA's residual add/affine, in one pass over each row.

The decoder does, per layer and twice: new_res = scaled(x) + scaled(res) in fp32; then
y = weight * rmsnorm(new_res cast to the model dtype). Unfused that is ~8 elementwise kernels
each reading and writing the row; fused it is one read of x and res and one write of new_res
and y: 12 bytes per element for bf16 x with an fp32 residual stream.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .reference import ResidualScaling
from .pdl import pdl_enter, pdl_launch
from .tuning import kernel_config


@triton.jit
def _row_update(x_ptr, r_ptr, hs_ptr, hb_ptr, rs_ptr, rb_ptr, cols, mask, HAS_RES: tl.constexpr, HAS_SCALE: tl.constexpr):
    """New residual values of one chunk of a row, in fp32."""
    x = tl.load(x_ptr + cols, mask=mask, other=0.0).to(tl.float32)
    if HAS_RES:
        r = tl.load(r_ptr + cols, mask=mask, other=0.0).to(tl.float32)
        if HAS_SCALE:
            hs = tl.load(hs_ptr + cols, mask=mask, other=0.0).to(tl.float32)
            hb = tl.load(hb_ptr + cols, mask=mask, other=0.0).to(tl.float32)
            rs = tl.load(rs_ptr + cols, mask=mask, other=0.0).to(tl.float32)
            rb = tl.load(rb_ptr + cols, mask=mask, other=0.0).to(tl.float32)
            x = (x + hb) * hs + (r + rb) * rs
        else:
            x = x + r
    return x


@triton.jit
def _rms_norm_kernel(
    X, R, HS, HB, RS, RB, W, Y, NEW_R,
    stride_x, stride_r, stride_y, stride_nr,
    n_cols, eps,
    HAS_RES: tl.constexpr,
    HAS_SCALE: tl.constexpr,
    BLOCK: tl.constexpr,
    NUM_CHUNKS: tl.constexpr, PDL: tl.constexpr,
):
    pdl_enter(PDL)
    row = tl.program_id(0).to(tl.int64)
    x_ptr = X + row * stride_x
    r_ptr = R + row * stride_r
    y_ptr = Y + row * stride_y
    nr_ptr = NEW_R + row * stride_nr
    offs = tl.arange(0, BLOCK)
    if NUM_CHUNKS == 1:
        # Whole row in registers: one read, one write, no re-load.
        mask = offs < n_cols
        v = _row_update(x_ptr, r_ptr, HS, HB, RS, RB, offs, mask, HAS_RES, HAS_SCALE)
        if HAS_RES:
            tl.store(nr_ptr + offs, v.to(NEW_R.dtype.element_ty), mask=mask)
            # The decoder casts the fp32 stream to the model dtype before normalizing.
            v = v.to(NEW_R.dtype.element_ty).to(W.dtype.element_ty).to(tl.float32)
        else:
            v = v.to(W.dtype.element_ty).to(tl.float32)
        rstd = 1.0 / tl.sqrt(tl.sum(v * v, axis=0) / n_cols + eps)
        w = tl.load(W + offs, mask=mask, other=0.0).to(tl.float32)
        normed = (v * rstd).to(W.dtype.element_ty).to(tl.float32)
        tl.store(y_ptr + offs, (normed * w).to(Y.dtype.element_ty), mask=mask)
    else:
        # Rows wider than one block: first pass writes the new residual and accumulates the
        # sum of squares, second pass re-reads it (L2-resident) to normalize.
        acc = tl.zeros([BLOCK], dtype=tl.float32)
        for c in range(NUM_CHUNKS):
            cols = c * BLOCK + offs
            mask = cols < n_cols
            v = _row_update(x_ptr, r_ptr, HS, HB, RS, RB, cols, mask, HAS_RES, HAS_SCALE)
            if HAS_RES:
                tl.store(nr_ptr + cols, v.to(NEW_R.dtype.element_ty), mask=mask)
                v = v.to(NEW_R.dtype.element_ty).to(W.dtype.element_ty).to(tl.float32)
            else:
                v = v.to(W.dtype.element_ty).to(tl.float32)
            acc += v * v
        rstd = 1.0 / tl.sqrt(tl.sum(acc, axis=0) / n_cols + eps)
        for c in range(NUM_CHUNKS):
            cols = c * BLOCK + offs
            mask = cols < n_cols
            if HAS_RES:
                v = tl.load(nr_ptr + cols, mask=mask, other=0.0)
            else:
                v = tl.load(x_ptr + cols, mask=mask, other=0.0)
            v = v.to(W.dtype.element_ty).to(tl.float32)
            w = tl.load(W + cols, mask=mask, other=0.0).to(tl.float32)
            normed = (v * rstd).to(W.dtype.element_ty).to(tl.float32)
            tl.store(y_ptr + cols, (normed * w).to(Y.dtype.element_ty), mask=mask)


def _launch(
    x: torch.Tensor,
    weight: torch.Tensor,
    eps: float,
    residual: torch.Tensor | None,
    scaling: ResidualScaling | None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    if x.shape[-1] != weight.shape[0]:
        raise ValueError(f"hidden size {x.shape[-1]} does not match weight {tuple(weight.shape)}")
    shape = x.shape
    x2 = x.reshape(-1, shape[-1])
    if x2.stride(-1) != 1:
        x2 = x2.contiguous()
    rows, cols = x2.shape
    y = torch.empty((rows, cols), dtype=weight.dtype, device=x.device)
    if residual is not None:
        if residual.shape != shape:
            raise ValueError(f"residual shape {tuple(residual.shape)} != input shape {tuple(shape)}")
        r2 = residual.reshape(-1, cols)
        if r2.stride(-1) != 1:
            r2 = r2.contiguous()
        new_r = torch.empty((rows, cols), dtype=residual.dtype, device=x.device)
    else:
        r2, new_r = x2, y  # unused pointers
    cfg = kernel_config("rms_norm", x.device)
    block = min(triton.next_power_of_2(cols), cfg.block_n)
    chunks = triton.cdiv(cols, block)
    hs, hb, rs, rb = scaling if scaling is not None else (weight, weight, weight, weight)
    if rows > 0:
        _rms_norm_kernel[(rows,)](
            x2, r2, hs, hb, rs, rb, weight, y, new_r,
            x2.stride(0), r2.stride(0), y.stride(0), new_r.stride(0),
            cols, eps,
            HAS_RES=residual is not None,
            HAS_SCALE=scaling is not None,
            BLOCK=block,
            NUM_CHUNKS=chunks,
            num_warps=cfg.num_warps if block >= 1024 else 4,
            **pdl_launch(x.device),
        )
    y = y.view(shape)
    return y, (new_r.view(shape) if residual is not None else None)


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """Triton RMSNorm of the last dimension; same contract as `reference.rms_norm`."""
    y, _ = _launch(x, weight, eps, None, None)
    return y


def add_rms_norm(
    x: torch.Tensor,
    residual: torch.Tensor,
    weight: torch.Tensor,
    eps: float,
    scaling: ResidualScaling | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Triton fused residual (+ ZAYA affine) and RMSNorm; same contract as `reference.add_rms_norm`."""
    y, new_r = _launch(x, weight, eps, residual, scaling)
    assert new_r is not None
    return y, new_r
