"""CCA's convolution step for decode: depthwise conv (kernel 2) then grouped conv (kernel 2)
over the packed [q0, k0] channels, evaluated at the newest position, plus the state shift.

Why fuse: the PyTorch path concatenates the state with the new token, runs two conv1d
launches (cuDNN picks a general grouped-conv algorithm for a length-3 input) and copies the
state back: four or more launches moving tiny tensors. Here one program per (head group,
batch block) does it all: the depthwise stage is elementwise, the grouped stage is a
[batch, 2*CG] x [2*CG, CG] product per group (inputs interleaved to match the weight layout) (CG = head_dim = 128 channels), and the state
is rewritten in place. The bytes are dominated by the grouped weight (C * CG * 2 values,
read once per batch block), so for decode batches the kernel is launch- or weight-bound.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .tuning import kernel_config


@triton.jit
def _conv_decode_kernel(
    QK, S, DW, DB, GW, GB, OUT,
    batch,
    stride_xb, stride_sb, stride_sc, stride_st, stride_dw_c, stride_dw_k,
    stride_ob,
    CG: tl.constexpr, CG_PAD: tl.constexpr, BLOCK_B: tl.constexpr,
    UPDATE_STATE: tl.constexpr, PRECISION: tl.constexpr,
):
    g = tl.program_id(0)
    pid_b = tl.program_id(1)
    rows = pid_b * BLOCK_B + tl.arange(0, BLOCK_B)
    ch = tl.arange(0, CG_PAD)
    cmask = ch < CG
    chan = g * CG + ch
    m2 = (rows < batch)[:, None] & cmask[None, :]
    rows64 = rows.to(tl.int64)

    s_ptr = S + rows64[:, None] * stride_sb + chan[None, :] * stride_sc
    s0 = tl.load(s_ptr, mask=m2, other=0.0)
    s1 = tl.load(s_ptr + stride_st, mask=m2, other=0.0)
    x = tl.load(QK + rows64[:, None] * stride_xb + chan[None, :], mask=m2, other=0.0)
    if UPDATE_STATE:
        # Each program owns its (rows, channels) slice of the state: no other program reads it.
        tl.store(s_ptr, s1, mask=m2)
        tl.store(s_ptr + stride_st, x.to(S.dtype.element_ty), mask=m2)

    w0 = tl.load(DW + chan * stride_dw_c, mask=cmask, other=0.0).to(tl.float32)
    w1 = tl.load(DW + chan * stride_dw_c + stride_dw_k, mask=cmask, other=0.0).to(tl.float32)
    bd = tl.load(DB + chan, mask=cmask, other=0.0).to(tl.float32)
    s0f = s0.to(tl.float32)
    s1f = s1.to(tl.float32)
    xf = x.to(tl.float32)
    # Depthwise outputs at positions t-1 and t, rounded to the model dtype like the conv1d output.
    d1 = (w0[None, :] * s0f + w1[None, :] * s1f + bd[None, :]).to(GW.dtype.element_ty)
    d2 = (w0[None, :] * s1f + w1[None, :] * xf + bd[None, :]).to(GW.dtype.element_ty)

    # Grouped conv as one product: interleave the two depthwise outputs so that column 2i+k
    # holds d_k[:, i], which matches the memory order of GW[o, i, k]; each output channel's
    # weights are then one contiguous run of 2*CG values (vectorized, coalesced loads).
    dd = tl.reshape(tl.join(d1, d2), (BLOCK_B, 2 * CG_PAD))
    # GW is contiguous (the wrapper guarantees it), so flat offset f = 2i+k is provably
    # contiguous and the loads vectorize.
    f = tl.arange(0, 2 * CG_PAD)
    fmask = f < 2 * CG
    wt = tl.load(
        GW + (g * CG + ch)[None, :].to(tl.int64) * (2 * CG) + f[:, None],
        mask=fmask[:, None] & cmask[None, :], other=0.0,
    )
    acc = tl.dot(dd, wt, input_precision=PRECISION)
    acc += tl.load(GB + chan, mask=cmask, other=0.0).to(tl.float32)[None, :]
    tl.store(OUT + rows64[:, None] * stride_ob + chan[None, :], acc.to(OUT.dtype.element_ty), mask=m2)


def cca_conv_decode(
    qk: torch.Tensor,
    conv_state: torch.Tensor,
    dw_weight: torch.Tensor,
    dw_bias: torch.Tensor,
    gw_weight: torch.Tensor,
    gw_bias: torch.Tensor,
    update_state: bool = True,
) -> torch.Tensor:
    """Triton fused CCA decode convolution; same contract as `reference.cca_conv_decode`.

    qk [B, C] (unit stride in C), conv_state [B, C, 2] (any strides; updated in place),
    dw_weight [C, 1, 2], gw_weight [C, C/G, 2].
    """
    b_size, c = qk.shape
    cg = gw_weight.shape[1]
    if conv_state.shape != (b_size, c, 2):
        raise ValueError(f"conv_state {tuple(conv_state.shape)} should be {(b_size, c, 2)}")
    if c % cg or dw_weight.shape != (c, 1, 2) or gw_weight.shape != (c, cg, 2):
        raise ValueError(f"weights {tuple(dw_weight.shape)}, {tuple(gw_weight.shape)} do not fit {c} channels")
    if qk.stride(1) != 1:
        qk = qk.contiguous()
    gw_weight = gw_weight.contiguous()  # a no-op for nn.Conv1d weights
    out = torch.empty_like(qk)
    if b_size == 0:
        return out
    cfg = kernel_config("conv_decode", qk.device)
    block_b = max(16, cfg.block_m)
    grid = (c // cg, triton.cdiv(b_size, block_b))
    _conv_decode_kernel[grid](
        qk, conv_state, dw_weight, dw_bias, gw_weight, gw_bias, out,
        b_size,
        qk.stride(0), conv_state.stride(0), conv_state.stride(1), conv_state.stride(2),
        dw_weight.stride(0), dw_weight.stride(2),
        out.stride(0),
        CG=cg, CG_PAD=max(16, triton.next_power_of_2(cg)), BLOCK_B=block_b,
        UPDATE_STATE=update_state,
        PRECISION="ieee" if gw_weight.dtype == torch.float32 else "tf32",
        num_warps=cfg.num_warps, num_stages=cfg.num_stages,
    )
    return out
