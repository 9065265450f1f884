"""CCA's convolution step for decode: depthwise conv (kernel 2) then grouped conv (kernel 2)
over the packed [q0, k0] channels, evaluated at the newest position, plus the state shift.

Why fuse: the PyTorch path concatenates the state with the new token, runs two conv1d
launches (cuDNN picks a general grouped-conv algorithm for a length-3 input) and copies the
state back: four or more launches moving tiny tensors. Here one program per (head group,
batch block) does it all: the depthwise stage is elementwise, the grouped stage is a
[batch, 2*CG] x [2*CG, CG] product per group (inputs interleaved to match the weight layout)
(CG = head_dim = 128 channels), and the state is rewritten in place. The bytes are dominated
by the grouped weight (C * CG * 2 values, read once per batch block), so for decode batches
the kernel is launch- or weight-bound.

Slot-indexed form (the engine's decode step): row b's state is conv_state[slots[b]] of the
cache itself, read and written in place, which replaces a gather and an index_copy per layer.
The same launch can also swap the delayed value (`cca_conv_value_decode`): that is per-row
work too, and folding it in saves another gather, cat and index_copy per layer.

Races: a program owns the state of its rows' slots in its head group's channels (and its
share of the value columns), so distinct slots never race. Padding rows of a CUDA graph all
use the scratch slot: programs then read and write it concurrently, which only puts garbage
(values of other padding rows) in the scratch slot and in the padding rows' outputs, both
of which are discarded.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .pdl import pdl_enter, pdl_launch
from .tuning import kernel_config


@triton.jit
def _conv_decode_kernel(
    QK, S, SLOTS, DW, DB, GW, GB, OUT,
    V, VS, VOUT, VROWS,
    batch, v_width,
    stride_slot, stride_xb, stride_sb, stride_dw_c, stride_dw_k, stride_ob,
    stride_vb, stride_vsb, stride_vob,
    CG: tl.constexpr, CG_PAD: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_K: tl.constexpr,
    HAS_SLOTS: tl.constexpr, UPDATE_STATE: tl.constexpr,
    HAS_VALUE: tl.constexpr, V_BLOCK: tl.constexpr, HAS_VROWS: tl.constexpr, PRECISION: tl.constexpr, PDL: tl.constexpr,
):
    pdl_enter(PDL)
    g = tl.program_id(0)
    pid_b = tl.program_id(1)
    rows = pid_b * BLOCK_B + tl.arange(0, BLOCK_B)
    rmask = rows < batch
    rows64 = rows.to(tl.int64)
    if HAS_SLOTS:
        srow = tl.load(SLOTS + rows64 * stride_slot, mask=rmask, other=0).to(tl.int64)
    else:
        srow = rows64
    n = tl.arange(0, CG_PAD)  # this group's output channels
    nmask = n < CG
    f = tl.arange(0, 2 * BLOCK_K)  # flat (channel, tap) offsets of one chunk: 2 * channel + tap
    acc = tl.zeros((BLOCK_B, CG_PAD), dtype=tl.float32)
    # Input channels in chunks of BLOCK_K: a smaller chunk keeps the [2*BLOCK_K, CG] weight
    # tile in registers at larger BLOCK_B (the whole group at once spills beyond 16 rows).
    for k0 in range(0, CG, BLOCK_K):
        kc = k0 + tl.arange(0, BLOCK_K)
        kmask = kc < CG
        chan = g * CG + kc
        m2 = rmask[:, None] & kmask[None, :]
        fm = rmask[:, None] & ((2 * k0 + f) < 2 * CG)[None, :]
        # The state's [C, 2] is dense (the wrapper guarantees it): both taps of the chunk are
        # one contiguous run of 2*BLOCK_K values, loaded once and split, not two stride-2 loads.
        s_ptr = S + srow[:, None] * stride_sb + (2 * (g * CG + k0) + f)[None, :]
        st = tl.load(s_ptr, mask=fm, other=0.0)
        s0, s1 = tl.split(tl.reshape(st, (BLOCK_B, BLOCK_K, 2)))
        x = tl.load(QK + rows64[:, None] * stride_xb + chan[None, :], mask=m2, other=0.0)
        if UPDATE_STATE:
            # The chunk's own (slot, channels) are written once, after their only read.
            new = tl.reshape(tl.join(s1, x.to(S.dtype.element_ty)), (BLOCK_B, 2 * BLOCK_K))
            tl.store(s_ptr, new, mask=fm)

        w0 = tl.load(DW + chan * stride_dw_c, mask=kmask, other=0.0).to(tl.float32)
        w1 = tl.load(DW + chan * stride_dw_c + stride_dw_k, mask=kmask, other=0.0).to(tl.float32)
        bd = tl.load(DB + chan, mask=kmask, other=0.0).to(tl.float32)
        s0f = s0.to(tl.float32)
        s1f = s1.to(tl.float32)
        xf = x.to(tl.float32)
        # Depthwise outputs at positions t-1 and t, rounded to the model dtype like the conv1d output.
        d1 = (w0[None, :] * s0f + w1[None, :] * s1f + bd[None, :]).to(GW.dtype.element_ty)
        d2 = (w0[None, :] * s1f + w1[None, :] * xf + bd[None, :]).to(GW.dtype.element_ty)

        # Grouped conv as one product: interleave the two depthwise outputs so that column 2i+k
        # holds d_k[:, i], which matches the memory order of GW[o, i, k]; each output channel's
        # weights of the chunk are then one contiguous run of 2*BLOCK_K values (vectorized loads).
        dd = tl.reshape(tl.join(d1, d2), (BLOCK_B, 2 * BLOCK_K))
        wt = tl.load(
            GW + (g * CG + n)[None, :].to(tl.int64) * (2 * CG) + (2 * k0 + f)[:, None],
            mask=((2 * k0 + f) < 2 * CG)[:, None] & nmask[None, :], other=0.0,
        )
        acc += tl.dot(dd, wt, input_precision=PRECISION)
    chan_out = g * CG + n
    acc += tl.load(GB + chan_out, mask=nmask, other=0.0).to(tl.float32)[None, :]
    om = rmask[:, None] & nmask[None, :]
    tl.store(OUT + rows64[:, None] * stride_ob + chan_out[None, :], acc.to(OUT.dtype.element_ty), mask=om)

    if HAS_VALUE:
        # Group g's programs also own value columns [g*V_BLOCK, (g+1)*V_BLOCK) of their rows:
        # VOUT = [v_current | previous v_delayed], then the slot keeps this token's v_delayed.
        cols = g * V_BLOCK + tl.arange(0, V_BLOCK)
        vm = rmask[:, None] & (cols < v_width)[None, :]
        vs_ptr = VS + srow[:, None] * stride_vsb + cols[None, :]
        v_ptr = V + rows64[:, None] * stride_vb + cols[None, :]
        if HAS_VROWS:  # straight into the V cache: row b goes to its page slot VROWS[b]
            orow = tl.load(VROWS + rows64, mask=rmask, other=0).to(tl.int64)
        else:
            orow = rows64
        vo_ptr = VOUT + orow[:, None] * stride_vob + cols[None, :]
        previous = tl.load(vs_ptr, mask=vm, other=0.0)
        current = tl.load(v_ptr, mask=vm, other=0.0)
        delayed = tl.load(v_ptr + v_width, mask=vm, other=0.0)
        tl.store(vs_ptr, delayed.to(VS.dtype.element_ty), mask=vm)
        tl.store(vo_ptr, current.to(VOUT.dtype.element_ty), mask=vm)
        tl.store(vo_ptr + v_width, previous.to(VOUT.dtype.element_ty), mask=vm)


def _launch(
    qk: torch.Tensor,
    conv_state: torch.Tensor,
    slots: torch.Tensor | None,
    dw_weight: torch.Tensor,
    dw_bias: torch.Tensor,
    gw_weight: torch.Tensor,
    gw_bias: torch.Tensor,
    update_state: bool,
    value: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None] | None,
    block_b: int | None,
    block_k: int | None,
) -> torch.Tensor:
    """Checks shapes, launches the kernel; `value` = (v, value_state, v_out, v_out rows or
    None) or None. Returns the conv output."""
    b_size, c = qk.shape
    cg = gw_weight.shape[1]
    rows = b_size if slots is None else conv_state.shape[0]
    if conv_state.shape != (rows, c, 2):
        raise ValueError(f"conv_state {tuple(conv_state.shape)} should be {(rows, c, 2)}")
    if slots is not None and slots.shape != (b_size,):
        raise ValueError(f"slots {tuple(slots.shape)} should be {(b_size,)}")
    if c % cg or dw_weight.shape != (c, 1, 2) or gw_weight.shape != (c, cg, 2):
        raise ValueError(f"weights {tuple(dw_weight.shape)}, {tuple(gw_weight.shape)} do not fit {c} channels")
    cg_pad = max(16, triton.next_power_of_2(cg))
    cfg = kernel_config("conv_decode", qk.device)
    block_b = max(16, cfg.block_m) if block_b is None else block_b
    # default: the table's chunk of the group's input channels (128: the whole 8B group)
    block_k = min(cfg.block_k, cg_pad) if block_k is None else block_k
    if block_b < 16 or block_b & (block_b - 1):
        raise ValueError(f"block_b={block_b}: need a power of two >= 16 (tl.dot)")
    if not 8 <= block_k <= cg_pad or block_k & (block_k - 1):
        raise ValueError(f"block_k={block_k}: need a power of two in [8, {cg_pad}] (tl.dot needs K = 2*block_k >= 16)")
    if conv_state.stride(2) != 1 or conv_state.stride(1) != 2:
        # The kernel reads a state row's [C, 2] as one dense run; other layouts go via a copy.
        dense = conv_state.contiguous()
        out = _launch(qk, dense, slots, dw_weight, dw_bias, gw_weight, gw_bias, update_state, value, block_b, block_k)
        if update_state:
            conv_state.copy_(dense)
        return out
    if qk.stride(1) != 1:
        qk = qk.contiguous()
    gw_weight = gw_weight.contiguous()  # a no-op for nn.Conv1d weights
    out = torch.empty_like(qk)
    if b_size == 0:
        return out
    groups = c // cg
    if value is None:
        v = vs = vo = qk  # unused (HAS_VALUE=False): any tensor argument
        v_rows, v_width, v_block = None, 0, 1
    else:
        v, vs, vo, v_rows = value
        v_width = vs.shape[1]
        v_block = triton.next_power_of_2(triton.cdiv(v_width, groups))  # groups * v_block >= v_width
    grid = (groups, triton.cdiv(b_size, block_b))
    _conv_decode_kernel[grid](
        qk, conv_state, slots if slots is not None else qk, dw_weight, dw_bias, gw_weight, gw_bias, out,
        v, vs, vo, v_rows if v_rows is not None else qk,
        b_size, v_width,
        slots.stride(0) if slots is not None else 0, qk.stride(0), conv_state.stride(0),
        dw_weight.stride(0), dw_weight.stride(2), out.stride(0),
        v.stride(0), vs.stride(0), vo.stride(0),
        CG=cg, CG_PAD=cg_pad, BLOCK_B=block_b, BLOCK_K=block_k,
        HAS_SLOTS=slots is not None, UPDATE_STATE=update_state,
        HAS_VALUE=value is not None, V_BLOCK=v_block, HAS_VROWS=v_rows is not None,
        PRECISION="ieee" if gw_weight.dtype == torch.float32 else "tf32",
        num_warps=cfg.num_warps, num_stages=cfg.num_stages, **pdl_launch(qk.device),
    )
    return out


def cca_conv_decode(
    qk: torch.Tensor,
    conv_state: torch.Tensor,
    dw_weight: torch.Tensor,
    dw_bias: torch.Tensor,
    gw_weight: torch.Tensor,
    gw_bias: torch.Tensor,
    update_state: bool = True,
    slots: torch.Tensor | None = None,
    *,
    block_b: int | None = None,
    block_k: int | None = None,
) -> torch.Tensor:
    """Triton fused CCA decode convolution; same contract as `reference.cca_conv_decode`.

    qk [B, C] (unit stride in C); conv_state [B, C, 2] (slots None: row b's state is
    conv_state[b]) or [num_slots, C, 2] with slots [B] int (row b's state is
    conv_state[slots[b]]); any strides, updated in place. dw_weight [C, 1, 2], gw_weight
    [C, C/G, 2]. block_b: batch rows per program (default: the tuning table's block_m);
    block_k: input channels per step of the grouped product (default: the whole group).
    """
    return _launch(qk, conv_state, slots, dw_weight, dw_bias, gw_weight, gw_bias, update_state, None,
                   block_b, block_k)


def cca_conv_value_decode(
    qk: torch.Tensor,
    v: torch.Tensor,
    conv_state: torch.Tensor,
    value_state: torch.Tensor,
    slots: torch.Tensor,
    dw_weight: torch.Tensor,
    dw_bias: torch.Tensor,
    gw_weight: torch.Tensor,
    gw_bias: torch.Tensor,
    *,
    block_b: int | None = None,
    block_k: int | None = None,
    v_out: torch.Tensor | None = None,
    out_rows: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Triton decode-step state update (conv + delayed value) in one launch; same contract as
    `reference.cca_conv_value_decode`.

    v [B, 2W] = [v_current | v_delayed] (unit stride in W), value_state [num_slots, W] (unit
    stride in W); the rest as in `cca_conv_decode` with slots. v_out [N, 2W] (unit stride in
    its last dim) with out_rows [B]: the value heads are stored in those rows (the V cache).
    """
    b_size = qk.shape[0]
    width = value_state.shape[1]
    if v.shape != (b_size, 2 * width):
        raise ValueError(f"v {tuple(v.shape)} should be {(b_size, 2 * width)}")
    if v.stride(1) != 1:
        v = v.contiguous()
    if value_state.stride(1) != 1:
        raise ValueError("value_state needs unit stride in its last dim (it is updated in place)")
    rows = out_rows if v_out is not None else None
    if v_out is None:
        v_out = torch.empty(b_size, 2 * width, device=v.device, dtype=v.dtype)
    elif out_rows is None or out_rows.shape != (b_size,) or v_out.shape[1:] != (2 * width,) or v_out.stride(1) != 1:
        raise ValueError(f"v_out must be [N, {2 * width}] with unit last stride and out_rows [{b_size}]; got "
                         f"{tuple(v_out.shape)}, {None if out_rows is None else tuple(out_rows.shape)}")
    conv = _launch(qk, conv_state, slots, dw_weight, dw_bias, gw_weight, gw_bias, True,
                   (v, value_state, v_out, rows),
                   block_b, block_k)
    return conv, v_out
