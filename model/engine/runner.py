"""ZAYA1's forward pass over packed tokens and the paged cache, written against `Ops`.

Same math as `model.zaya1` (which stays the readable oracle), reorganized for serving:
- token-major packed batches ([T, ...], no padding) for prefill, one token per row for decode;
- q_proj, k_proj and both value projections are one GEMM whose first `conv_channels` outputs
  are exactly the packed [q0, k0] the CCA convolutions read;
- the convolutions at every position use the decode step's formula (a 3-position window:
  the two previous positions and this one), so prefill and decode share one op; the previous
  positions come from the same chunk, from the sequence's state slot (a continued prefill),
  or are zeros at a sequence's start;
- each residual add is fused with the next RMSNorm (`add_rms_norm` with ZAYA's affine).

Everything in `decode` is device work with static shapes and no host sync, so it can be
captured in a CUDA graph; the host-side bookkeeping lives in the scheduler.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from model.kernels.reference import ResidualScaling
from model.zaya1 import Zaya1ForCausalLM

from .backend import Ops
from .pages import PagedCache


@dataclass
class LayerWeights:
    """References to one decoder layer's tensors (plus the fused q/k/v weight, a copy)."""

    sliding_window: int | None
    inv_freq: torch.Tensor  # fp32 [rotary_dim / 2]
    input_norm: torch.Tensor
    qkv_weight: torch.Tensor  # [C + Hk*D, H]: q0, k0, v_current, v_delayed
    qkv_bias: torch.Tensor | None
    v0: torch.Tensor  # v_proj_delayed of a zero input: the delayed value before position 0
    dw_weight: torch.Tensor
    dw_bias: torch.Tensor
    gw_weight: torch.Tensor
    gw_bias: torch.Tensor
    temp: torch.Tensor
    o_weight: torch.Tensor
    o_bias: torch.Tensor | None
    post_attn_norm: torch.Tensor
    post_attn_scaling: ResidualScaling
    post_mlp_scaling: ResidualScaling
    router_down_weight: torch.Tensor
    router_down_bias: torch.Tensor
    router_states_scale: torch.Tensor | None
    router_norm: torch.Tensor
    router_fc1_weight: torch.Tensor
    router_fc1_bias: torch.Tensor
    router_fc2_weight: torch.Tensor
    router_fc2_bias: torch.Tensor
    router_out_weight: torch.Tensor
    balancing_biases: torch.Tensor
    gate_up: torch.Tensor
    down: torch.Tensor


def _scaling(module: torch.nn.Module) -> ResidualScaling:
    return ResidualScaling(module.hidden_states_scale, module.hidden_states_bias, module.residual_scale,
                           module.residual_bias)


def layer_weights(model: Zaya1ForCausalLM) -> list[LayerWeights]:
    config = model.config
    out = []
    for layer in model.model.layers:
        attn, proj, gate = layer.self_attn, layer.self_attn.qkv_proj, layer.mlp.gate
        linears = (proj.q_proj, proj.k_proj, proj.v_proj_current, proj.v_proj_delayed)
        weight = torch.cat([m.weight for m in linears]).contiguous()
        bias = torch.cat([m.bias for m in linears]) if proj.q_proj.bias is not None else None
        with torch.no_grad():
            v0 = proj.v_proj_delayed(weight.new_zeros(1, config.hidden_size))[0]
        kind = layer.layer_type
        out.append(
            LayerWeights(
                sliding_window=config.sliding_window if kind == "hybrid_sliding" else None,
                inv_freq=getattr(model.model.rotary_emb, f"{kind}_inv_freq").float(),
                input_norm=layer.input_layernorm.weight,
                qkv_weight=weight,
                qkv_bias=bias,
                v0=v0,
                dw_weight=proj.conv_qk_depthwise.weight,
                dw_bias=proj.conv_qk_depthwise.bias,
                gw_weight=proj.conv_qk_grouped.weight,
                gw_bias=proj.conv_qk_grouped.bias,
                temp=attn.qk_norm.temp,
                o_weight=attn.o_proj.weight,
                o_bias=attn.o_proj.bias,
                post_attn_norm=layer.post_attention_layernorm.weight,
                post_attn_scaling=_scaling(layer.post_attention_residual_scale),
                post_mlp_scaling=_scaling(layer.post_mlp_residual_scale),
                router_down_weight=gate.down_proj.weight,
                router_down_bias=gate.down_proj.bias,
                router_states_scale=gate.router_states_scale if gate.uses_depth_average else None,
                router_norm=gate.router_mlp.norm.weight,
                router_fc1_weight=gate.router_mlp.fc1.weight,
                router_fc1_bias=gate.router_mlp.fc1.bias,
                router_fc2_weight=gate.router_mlp.fc2.weight,
                router_fc2_bias=gate.router_mlp.fc2.bias,
                router_out_weight=gate.router_mlp.out_proj.weight,
                balancing_biases=gate.balancing_biases,
                gate_up=layer.mlp.experts.gate_up_proj,
                down=layer.mlp.experts.down_proj,
            )
        )
    return out


@dataclass
class PrefillInputs:
    """A packed prefill batch (device tensors unless noted); built by `Scheduler`/`Engine`.

    Index conventions for the previous-position gathers, per layer:
      conv source = [zero row, state[:, 0] of each sequence, state[:, 1] of each, this chunk's qk]
      value source = [delayed value before position 0, value state of each sequence, this chunk's v_delayed]
    """

    ids: torch.Tensor  # [T]
    positions: torch.Tensor  # [T]
    write_idx: torch.Tensor  # [T] flat page-slot index (page * page_size + offset)
    cu_q: torch.Tensor  # [B + 1] int32
    max_q: int  # host
    slots: torch.Tensor  # [B]
    conv_prev2: torch.Tensor  # [T] indices into the conv source
    conv_prev1: torch.Tensor  # [T]
    conv_last2: torch.Tensor  # [B] the new state's two positions
    conv_last1: torch.Tensor  # [B]
    value_prev: torch.Tensor  # [T] indices into the value source
    value_last: torch.Tensor  # [B] packed row of each sequence's last token
    logit_rows: torch.Tensor  # [N] packed rows whose next-token logits are wanted
    kv_gather: torch.Tensor | None  # [Tk] flat page-slot indices of every key (when a prefix is cached)
    cu_k: torch.Tensor | None  # [B + 1] int32


@dataclass
class DecodeInputs:
    """One token per row; padded rows use the scratch slot and page (see pages.SCRATCH)."""

    ids: torch.Tensor  # [B]
    positions: torch.Tensor  # [B]
    slots: torch.Tensor  # [B]
    seq_lens: torch.Tensor  # [B] int32, including this token


class ModelRunner:
    def __init__(self, model: Zaya1ForCausalLM, cache: PagedCache, ops: Ops) -> None:
        config = model.config
        self.config = config
        self.cache = cache
        self.ops = ops
        self.device = model.device
        self.dtype = model.dtype
        self.layers = layer_weights(model)
        emb = model.model
        self.embed = emb.embed_tokens.weight
        self.in_bias = emb.input_hidden_states_bias
        self.in_scale = emb.input_hidden_states_scale
        self.final_norm = emb.norm.weight
        self.lm_head = model.lm_head.weight
        self.lm_bias = model.lm_head.bias
        self.eps = config.rms_norm_eps
        self.hq, self.hk, self.d = config.num_attention_heads, config.num_key_value_heads, config.head_dim
        self.c = config.conv_channels
        self.scale = self.d**-0.5

    # ---- shared pieces ------------------------------------------------------------------------
    def _embed(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = ((F.embedding(ids, self.embed) + self.in_bias) * self.in_scale).float()  # fp32 residual stream
        return self.ops.rms_norm(h, self.layers[0].input_norm, self.eps), h

    def _project(self, lw: LayerWeights, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(packed [q0, k0] [T, C], [v_current | v_delayed] [T, Hk*D]): views of one GEMM's output."""
        y = self.ops.linear(x, lw.qkv_weight, lw.qkv_bias)
        return y[:, : self.c], y[:, self.c :]

    def _qk(self, lw: LayerWeights, qk: torch.Tensor, conv: torch.Tensor,
            positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """q [T, Hq, D], k [T, Hk, D]: residual mix, per-head norm, temperature, partial RoPE."""
        return self.ops.cca_qk(qk, conv, lw.temp, positions, lw.inv_freq, self.hq, self.hk)

    def _mlp_and_next_norm(self, i: int, a: torch.Tensor, h: torch.Tensor,
                           router_state: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        lw = self.layers[i]
        ops = self.ops
        x2, r = ops.add_rms_norm(a, h, lw.post_attn_norm, self.eps, lw.post_attn_scaling)
        s = ops.linear(x2, lw.router_down_weight, lw.router_down_bias)
        averaged = lw.router_states_scale is not None and router_state is not None
        # with prev, the router forms s + prev * scale itself and leaves it in s (the next state)
        weight, choice = ops.router_top1(s, lw.router_norm, lw.router_fc1_weight, lw.router_fc1_bias,
                                         lw.router_fc2_weight, lw.router_fc2_bias, lw.router_out_weight,
                                         lw.balancing_biases, self.eps, prev=router_state if averaged else None,
                                         prev_scale=lw.router_states_scale if averaged else None)
        m = ops.moe_top1(x2, choice, weight, lw.gate_up, lw.down)
        next_norm = self.layers[i + 1].input_norm if i + 1 < len(self.layers) else self.final_norm
        x, h = ops.add_rms_norm(m, r, next_norm, self.eps, lw.post_mlp_scaling)
        return x, h, s

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.lm_head, self.lm_bias)

    # ---- prefill ------------------------------------------------------------------------------
    def prefill(self, inp: PrefillInputs) -> torch.Tensor:
        """Run a packed prefill chunk, writing K/V pages and state slots; logits [N, V] of `logit_rows`."""
        cache, ops = self.cache, self.ops
        x, h = self._embed(inp.ids)
        router_state = None
        zero_row = x.new_zeros(1, self.c)
        for i, lw in enumerate(self.layers):
            qk, v = self._project(lw, x)
            half = v.shape[1] // 2
            v_cur, v_del = v[:, :half], v[:, half:]
            # Convolution windows: the two previous positions of every token, gathered.
            state = cache.conv[i][inp.slots]  # [B, C, 2]
            src = torch.cat([zero_row, state[:, :, 0], state[:, :, 1], qk])
            window = torch.stack([src[inp.conv_prev2], src[inp.conv_prev1]], dim=-1)
            conv = ops.cca_conv_decode(qk, window, lw.dw_weight, lw.dw_bias, lw.gw_weight, lw.gw_bias,
                                       update_state=False)
            cache.conv[i].index_copy_(0, inp.slots, torch.stack([src[inp.conv_last2], src[inp.conv_last1]], dim=-1))
            vsrc = torch.cat([lw.v0[None], cache.value[i][inp.slots], v_del])
            v_all = torch.cat([v_cur, vsrc[inp.value_prev]], dim=-1).view(-1, self.hk, self.d)
            cache.value[i].index_copy_(0, inp.slots, v_del[inp.value_last])
            q, k = self._qk(lw, qk, conv, inp.positions)
            cache.k[i].view(-1, self.hk, self.d).index_copy_(0, inp.write_idx, k)
            cache.v[i].view(-1, self.hk, self.d).index_copy_(0, inp.write_idx, v_all)
            if inp.kv_gather is None:
                keys, values, cu_k = k, v_all, inp.cu_q
            else:  # part of the sequence is cached already: attend over all of it, from the pages
                keys = cache.k[i].view(-1, self.hk, self.d)[inp.kv_gather]
                values = cache.v[i].view(-1, self.hk, self.d)[inp.kv_gather]
                cu_k = inp.cu_k
            o = ops.cca_prefill_attention(q, keys, values, inp.cu_q, cu_k, inp.max_q, self.scale, lw.sliding_window)
            a = ops.linear(o.reshape(o.shape[0], -1), lw.o_weight, lw.o_bias)
            x, h, router_state = self._mlp_and_next_norm(i, a, h, router_state)
        return self._logits(x[inp.logit_rows])

    # ---- decode -------------------------------------------------------------------------------
    def decode(self, inp: DecodeInputs, num_splits: dict[int | None, int | None]) -> torch.Tensor:
        """One token per row; logits [B, V]. `num_splits` maps a layer's sliding window to its split-K."""
        cache, ops = self.cache, self.ops
        page = cache.page_size
        table = cache.block_table[inp.slots]  # [B, max_pages]
        pages = table.gather(1, (inp.positions // page)[:, None].to(torch.int64))[:, 0]
        write_idx = pages.to(torch.int64) * page + inp.positions % page
        x, h = self._embed(inp.ids)
        router_state = None
        for i, lw in enumerate(self.layers):
            qk, v = self._project(lw, x)
            # Conv and delayed-value state are read and written in their slots by one op
            # (no gather / index_copy round trip; padding rows share the scratch slot), and
            # the value heads and the keys go straight into their K/V page slots.
            conv, _ = ops.cca_conv_value_decode(qk, v, cache.conv[i], cache.value[i], inp.slots,
                                                lw.dw_weight, lw.dw_bias, lw.gw_weight, lw.gw_bias,
                                                v_out=cache.v[i].view(-1, self.hk * self.d), out_rows=write_idx)
            q, _ = ops.cca_qk(qk, conv, lw.temp, inp.positions, lw.inv_freq, self.hq, self.hk,
                              k_out=cache.k[i].view(-1, self.hk, self.d), out_rows=write_idx)
            o = ops.cca_decode_attention(q, cache.k[i], cache.v[i], table, inp.seq_lens, self.scale,
                                         lw.sliding_window, num_splits[lw.sliding_window])
            a = ops.linear(o.reshape(o.shape[0], -1), lw.o_weight, lw.o_bias)
            x, h, router_state = self._mlp_and_next_norm(i, a, h, router_state)
        return self._logits(x)
