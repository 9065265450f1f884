"""PyTorch reference implementations of the ZAYA1 inference kernels.

Each function here has the same signature and returns the same thing as the Triton kernel
of the same name in this package, and follows the math of upstream
`transformers.models.zaya.modeling_zaya` (written from reading it, not copied). They are
(a) the oracle for the kernel tests, (b) the "PyTorch path" the benchmarks compare against,
and (c) a fallback where Triton is unavailable. They run on any device and in any dtype;
in float64 they are the high-precision reference.

Tensor layout conventions shared by the whole package (token-major, "packed"):
  hidden states  [T, H]            T = total tokens of all sequences in the batch
  q              [T, Hq, D]        k, v [T, Hk, D]; Hq % Hk == 0 (grouped heads)
  cu_seqlens     [B + 1] int32     sequence b owns rows cu_seqlens[b]:cu_seqlens[b+1]
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F


class ResidualScaling(NamedTuple):
    """ZAYA's learned residual affine: out = (x + hidden_bias) * hidden_scale + (res + residual_bias) * residual_scale."""

    hidden_scale: torch.Tensor
    hidden_bias: torch.Tensor
    residual_scale: torch.Tensor
    residual_bias: torch.Tensor


# --------------------------------------------------------------------------------------------
# 1. RMSNorm (+ residual)
# --------------------------------------------------------------------------------------------


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """weight * normalize(x) with the statistics in fp32; output in weight's dtype.

    Like upstream, the input is first cast to the weight's dtype (the decoder casts its fp32
    residual stream to the model dtype before each norm), normalized in fp32, cast back, then
    multiplied by the weight.
    """
    x = x.to(weight.dtype)
    xf = x.float() if x.dtype != torch.float64 else x
    var = xf.pow(2).mean(-1, keepdim=True)
    normed = (xf * torch.rsqrt(var + eps)).to(weight.dtype)
    return weight * normed


def add_rms_norm(
    x: torch.Tensor,
    residual: torch.Tensor,
    weight: torch.Tensor,
    eps: float,
    scaling: ResidualScaling | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """New residual stream (in residual's dtype) and its RMSNorm (in weight's dtype).

    Without `scaling` the new residual is x + residual; with it, ZAYA's
    (x + hb) * hs + (residual + rb) * rs.
    """
    if scaling is None:
        new_residual = residual + x.to(residual.dtype)
    else:
        hs, hb, rs, rb = scaling
        new_residual = ((x + hb) * hs + (residual + rb) * rs).to(residual.dtype)
    return rms_norm(new_residual, weight, eps), new_residual


# --------------------------------------------------------------------------------------------
# 2. Partial rotary embedding
# --------------------------------------------------------------------------------------------


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    rot = cos.shape[-1]
    x_rot, x_pass = x[..., :rot], x[..., rot:]
    x1, x2 = x_rot[..., : rot // 2], x_rot[..., rot // 2 :]
    rotated = torch.cat((-x2, x1), dim=-1)
    return torch.cat((x_rot * cos + rotated * sin, x_pass), dim=-1)


def apply_partial_rotary(
    q: torch.Tensor,
    k: torch.Tensor,
    positions: torch.Tensor,
    inv_freq: torch.Tensor,
    inplace: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotate the first 2*len(inv_freq) dims of every head of q [T, Hq, D] and k [T, Hk, D].

    Convention of upstream (NeoX "rotate half" inside the rotary slice): with r = rotary_dim,
    pairs are (j, j + r/2); angle_j = position * inv_freq[j]; cos/sin computed in fp32 and
    cast to the input dtype before the products. `positions` is [T] (per token, so packed
    variable-length batches carry their own offsets).
    """
    compute = torch.float64 if q.dtype == torch.float64 else torch.float32
    # Angles are formed in fp32 whatever the input dtype (upstream's convention, which the
    # model was trained with); only cos/sin and the products use the higher precision.
    freqs = (positions.to(torch.float32)[:, None] * inv_freq.to(torch.float32)[None, :]).to(compute)
    emb = torch.cat((freqs, freqs), dim=-1)
    cos = emb.cos().to(q.dtype)[:, None, :]
    sin = emb.sin().to(q.dtype)[:, None, :]
    q_out = _rotate(q, cos, sin)
    k_out = _rotate(k, cos, sin)
    if inplace:
        q.copy_(q_out)
        k.copy_(k_out)
        return q, k
    return q_out, k_out


def cca_qk(
    qk: torch.Tensor,
    conv: torch.Tensor,
    temp: torch.Tensor,
    positions: torch.Tensor,
    inv_freq: torch.Tensor,
    num_heads: int,
    num_kv_heads: int,
    rotary=None,
    k_out: torch.Tensor | None = None,
    out_rows: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """CCA's queries and keys from the packed [q0, k0] projections and their convolution.

    qk [T, C] (C = (Hq + Hk) * D: the first C outputs of the fused projection), conv [T, C]
    (the convolution of those channels), temp [Hk], positions [T], inv_freq [rotary_dim / 2].
    The residual mixes each query head with its key head (q_res = (q0 + k0[group]) / 2) and
    each key head with the mean of its group's q_res; conv + residual is L2-normalized per
    head to norm sqrt(D), keys are scaled by their head's temperature, and both get partial
    RoPE. Returns q [T, Hq, D], k [T, Hk, D], contiguous, in qk's dtype. Each step is one
    PyTorch op in the model dtype, in `model.zaya1`'s order (the roundings the fused kernel
    reproduces). `rotary`: the RoPE implementation (default: this module's).
    With `k_out` [N, Hk, D] and `out_rows` [T], token t's keys go to k_out[out_rows[t]] (the
    decode step's K cache slots) and k_out is returned in place of k.
    """
    t, c = qk.shape
    hq, hk = num_heads, num_kv_heads
    d = c // (hq + hk)
    q0 = qk[:, : hq * d].reshape(t, hq, d)
    k0 = qk[:, hq * d :].reshape(t, hk, d)
    groups = hq // hk
    q_res = (q0 + k0.repeat_interleave(groups, dim=1)) * 0.5
    k_res = q_res.view(t, hk, groups, d).mean(dim=2)
    q = conv[:, : hq * d].reshape(t, hq, d) + q_res
    k = conv[:, hq * d :].reshape(t, hk, d) + k_res
    eps = torch.finfo(q.dtype).eps
    q = q * (d**0.5 / q.norm(p=2, dim=-1, keepdim=True).clamp_min(eps))
    k = k * (d**0.5 / k.norm(p=2, dim=-1, keepdim=True).clamp_min(eps))
    k = k * temp[None, :, None]
    q, k = (rotary or apply_partial_rotary)(q.contiguous(), k.contiguous(), positions, inv_freq)
    return (q, k) if k_out is None else (q, _write_rows(k_out, out_rows, k))


def _write_rows(out: torch.Tensor, rows: torch.Tensor | None, values: torch.Tensor) -> torch.Tensor:
    """out[rows[i]] = values[i]; out is returned (the `out_rows` contract of the decode ops)."""
    if rows is None or rows.shape[0] != values.shape[0]:
        raise ValueError(f"out_rows must give one row per token ({values.shape[0]}), got "
                         f"{None if rows is None else tuple(rows.shape)}")
    out.index_copy_(0, rows.long(), values.to(out.dtype))
    return out


# --------------------------------------------------------------------------------------------
# 3. CCA prefill attention (causal, grouped heads, packed variable-length)
# --------------------------------------------------------------------------------------------


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
    """Causal softmax attention of packed sequences; output [Tq, Hq, D] in q's dtype.

    Sequence b's queries are the LAST len_q(b) positions of its len_k(b) keys (len_k >= len_q;
    equal for plain prefill, larger for chunked prefill / a cached prefix). Query at absolute
    position i sees keys j <= i, and with a sliding window W only j > i - W (W keys in all,
    the upstream convention). Softmax in fp32 (float64 for float64 inputs).
    """
    if cu_seqlens_k is None:
        cu_seqlens_k = cu_seqlens_q
    hq, hk, d = q.shape[1], k.shape[1], q.shape[2]
    group = hq // hk
    scale = d**-0.5 if scale is None else scale
    acc_dtype = torch.float64 if q.dtype == torch.float64 else torch.float32
    out = torch.empty_like(q)
    cq = cu_seqlens_q.tolist()
    ck = cu_seqlens_k.tolist()
    for b in range(len(cq) - 1):
        qs, ks = q[cq[b] : cq[b + 1]], k[ck[b] : ck[b + 1]]
        vs = v[ck[b] : ck[b + 1]]
        lq, lk = qs.shape[0], ks.shape[0]
        if lq == 0:
            continue
        kk = ks.repeat_interleave(group, dim=1).transpose(0, 1).to(acc_dtype)
        vv = vs.repeat_interleave(group, dim=1).transpose(0, 1).to(acc_dtype)
        qq = qs.transpose(0, 1).to(acc_dtype)
        scores = torch.matmul(qq, kk.transpose(1, 2)) * scale
        qpos = torch.arange(lq, device=q.device)[:, None] + (lk - lq)
        kpos = torch.arange(lk, device=q.device)[None, :]
        allowed = kpos <= qpos
        if sliding_window is not None:
            allowed &= kpos > qpos - sliding_window
        scores = scores.masked_fill(~allowed, float("-inf"))
        probs = torch.softmax(scores, dim=-1)
        out[cq[b] : cq[b + 1]] = torch.matmul(probs, vv).transpose(0, 1).to(q.dtype)
    return out


# --------------------------------------------------------------------------------------------
# 4. CCA decode attention against a paged compressed cache
# --------------------------------------------------------------------------------------------


def cca_decode_attention(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    block_table: torch.Tensor,
    seq_lens: torch.Tensor,
    scale: float | None = None,
    sliding_window: int | None = None,
    num_splits: int | None = None,
) -> torch.Tensor:
    """One new query token per sequence against its cached keys/values; output [B, Hq, D].

    Paged cache layout: k_cache, v_cache [num_pages, page_size, Hk, D]; sequence b's token n
    lives at page block_table[b, n // page_size], slot n % page_size; seq_lens[b] tokens are
    valid (the new token's own k/v must already be written). `num_splits` only changes how
    the Triton kernel divides the work; the reference ignores it.
    """
    del num_splits
    b_size, hq, d = q.shape
    page = k_cache.shape[1]
    hk = k_cache.shape[2]
    group = hq // hk
    scale = d**-0.5 if scale is None else scale
    acc_dtype = torch.float64 if q.dtype == torch.float64 else torch.float32
    out = torch.empty_like(q)
    lens = seq_lens.tolist()
    for b in range(b_size):
        n = lens[b]
        tok = torch.arange(n, device=q.device)
        pages = block_table[b, tok // page].long()
        ks = k_cache[pages, tok % page].to(acc_dtype)  # [n, Hk, D]
        vs = v_cache[pages, tok % page].to(acc_dtype)
        if sliding_window is not None:
            ks, vs = ks[max(0, n - sliding_window) :], vs[max(0, n - sliding_window) :]
        kk = ks.repeat_interleave(group, dim=1)  # [n, Hq, D]
        vv = vs.repeat_interleave(group, dim=1)
        scores = torch.einsum("hd,nhd->hn", q[b].to(acc_dtype), kk) * scale
        probs = torch.softmax(scores, dim=-1)
        out[b] = torch.einsum("hn,nhd->hd", probs, vv).to(q.dtype)
    return out


def paged_view(cache: torch.Tensor, page_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """View a contiguous cache [B, S, Hk, D] as pages, plus the block table that maps it.

    S must be a multiple of page_size. Returns (pages [B*S/page_size, page_size, Hk, D],
    block_table [B, S/page_size] int32); no copy is made.
    """
    b_size, s, hk, d = cache.shape
    if s % page_size:
        raise ValueError(f"cache length {s} is not a multiple of page_size {page_size}")
    per_seq = s // page_size
    pages = cache.view(b_size * per_seq, page_size, hk, d)
    table = torch.arange(b_size * per_seq, device=cache.device, dtype=torch.int32).view(b_size, per_seq)
    return pages, table


# --------------------------------------------------------------------------------------------
# 5. CCA convolution state update (decode)
# --------------------------------------------------------------------------------------------


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
    """One decode step of CCA's two causal convolutions over the packed [q0, k0] channels.

    qk [B, C] is this token's packed q_proj/k_proj output; row b's state holds the same
    channels at positions t-2, t-1: conv_state[b] ([B, C, 2]) when `slots` is None, else
    conv_state[slots[b]] (conv_state [num_slots, C, 2], e.g. the engine's cache; rows have
    distinct slots except padding rows sharing one scratch slot, whose state and outputs are
    garbage). Depthwise conv (kernel 2, dw_weight [C, 1, 2]) then grouped conv (kernel 2,
    gw_weight [C, C/G, 2], G groups) evaluated at position t only. Returns the conv output
    [B, C] (before the q/k residual paths) and, if update_state, shifts the state in place to
    positions t-1, t. `block_b` / `block_k` only change the Triton kernel's tiling; ignored here.
    """
    del block_b, block_k
    state = conv_state if slots is None else conv_state[slots]
    window = torch.cat([state, qk[:, :, None].to(state.dtype)], dim=-1)  # [B, C, 3]
    groups = qk.shape[1] // gw_weight.shape[1]
    depth = F.conv1d(window.to(qk.dtype), dw_weight, dw_bias, groups=qk.shape[1])  # [B, C, 2]
    out = F.conv1d(depth, gw_weight, gw_bias, groups=groups)[:, :, 0]
    if update_state:
        if slots is None:
            conv_state.copy_(window[:, :, 1:])
        else:
            conv_state.index_copy_(0, slots.long(), window[:, :, 1:])  # index_copy_ wants int64; slots may be int32
    return out


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
    """The decode step's per-sequence state: the convolution (`cca_conv_decode` on
    conv_state[slots], updated) and the delayed value.

    v [B, 2W] is [v_current | v_delayed] of this token; value_state [num_slots, W] holds each
    slot's previous v_delayed. Returns (conv [B, C], [v_current | previous v_delayed] [B, 2W],
    the token's value heads) and stores v_delayed in value_state[slots]. Slots as in
    `cca_conv_decode` (the shared scratch slot of padding rows holds garbage). With `v_out`
    [N, 2W] and `out_rows` [B], row b of the value heads goes to v_out[out_rows[b]] (the V
    cache slots) and v_out is returned in its place.
    """
    conv = cca_conv_decode(qk, conv_state, dw_weight, dw_bias, gw_weight, gw_bias, slots=slots,
                           block_b=block_b, block_k=block_k)
    width = value_state.shape[1]
    previous = value_state[slots]
    value_state.index_copy_(0, slots.long(), v[:, width:].to(value_state.dtype))
    heads = torch.cat([v[:, :width], previous.to(v.dtype)], dim=-1)
    return conv, heads if v_out is None else _write_rows(v_out, out_rows, heads)


# --------------------------------------------------------------------------------------------
# 6. Top-1 MoE with a mixture-of-depths skip class
# --------------------------------------------------------------------------------------------


def moe_top1(
    x: torch.Tensor,
    expert_ids: torch.Tensor,
    expert_weights: torch.Tensor,
    gate_up_proj: torch.Tensor,
    down_proj: torch.Tensor,
) -> torch.Tensor:
    """out[t] = w[t] * down[e] @ (silu(gate) * up), [gate, up] = gate_up[e] @ x[t], e = expert_ids[t].

    gate_up_proj [E, 2I, H] (rows :I are the gate, I: the up projection), down_proj [E, H, I].
    expert_ids == E is the skip class: that token's output is zero and costs nothing.
    This is the per-expert loop of upstream's eager path.
    """
    num_experts, two_i, _ = gate_up_proj.shape
    inter = two_i // 2
    out = torch.zeros_like(x)
    for e in range(num_experts):
        rows = (expert_ids == e).nonzero(as_tuple=True)[0]
        if rows.numel() == 0:
            continue
        xe = x[rows]
        gu = F.linear(xe, gate_up_proj[e])
        h = F.silu(gu[:, :inter]) * gu[:, inter:]
        y = F.linear(h, down_proj[e]) * expert_weights[rows, None].to(x.dtype)
        out.index_copy_(0, rows, y.to(out.dtype))
    return out


# --------------------------------------------------------------------------------------------
# 7. Router MLP and top-1 choice
# --------------------------------------------------------------------------------------------


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
    """Router of one ZAYA MoE block on its state s [T, R]. With `prev` (the previous layer's
    router state [T, R]) and `prev_scale` [R], the depth average s + prev * prev_scale is
    formed first (two roundings in s's dtype, as `model.zaya1`) and written back into s, the
    state the next layer reads.

    logits = out_proj(gelu(fc2(gelu(fc1(rmsnorm(s)))))) over E+1 classes, p = softmax(logits),
    choice = argmax(p + balancing_biases) in fp32 (the biases move the choice, not the
    weight). Returns (weight [T] fp32 = p[choice], 0 for the skip class; choice [T] int32,
    where E is the skip class).
    """
    if prev is not None:
        s.copy_(s + prev * prev_scale)
    h = rms_norm(s, norm_weight, eps)
    h = F.gelu(F.linear(h, fc1_weight, fc1_bias))
    h = F.gelu(F.linear(h, fc2_weight, fc2_bias))
    logits = F.linear(h, out_weight)
    probs = torch.softmax(logits, dim=-1)
    acc = torch.float64 if probs.dtype == torch.float64 else torch.float32
    biased = probs.to(acc) + balancing_biases.to(acc)
    choice = torch.argmax(biased, dim=-1)
    weight = probs.gather(-1, choice[:, None])[:, 0].to(acc)
    skip = choice == (out_weight.shape[0] - 1)
    weight = weight.masked_fill(skip, 0.0)
    return weight.to(torch.float32) if acc == torch.float32 else weight, choice.to(torch.int32)


# --------------------------------------------------------------------------------------------
# Decode linears (q/k/v, o_proj, router down-projection)
# --------------------------------------------------------------------------------------------


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """y = x @ weight^T + bias for x [M, K], weight [N, K], bias [N] or None (F.linear)."""
    return F.linear(x, weight, bias)
