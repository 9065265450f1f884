"""ZAYA1 in readable PyTorch: CCA attention + top-1 MoE with a mixture-of-depths skip class.

Module and parameter names follow upstream `transformers.ZayaForCausalLM` exactly (they
are the names in the published checkpoint), so `state_dict()` keys and shapes match.
The numerics follow the reference too, including where it keeps the residual stream in
fp32 while the blocks run in the model dtype.

    h   = ((embed(ids) + input_hidden_states_bias) * input_hidden_states_scale).float()
    per layer:
        a    = self_attn(input_layernorm(h))                  # CCA, grouped heads
        r    = post_attention_residual_scale(a, h)            # (a + b_a) * s_a + (h + b_h) * s_h
        m, s = mlp(post_attention_layernorm(r), s_prev)       # router state s flows layer to layer
        h    = post_mlp_residual_scale(m, r)
    logits = lm_head(norm(h))                                  # lm_head tied to embed_tokens
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .cache import LayerCache, ModelCache
from .config import Zaya1Config


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Statistics in fp32, result back in the input dtype before the weight (as the reference).
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * xf.to(x.dtype)


class ResidualScaling(nn.Module):
    """out = (x + hidden_states_bias) * hidden_states_scale + (res + residual_bias) * residual_scale."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.hidden_states_scale = nn.Parameter(torch.ones(dim))
        self.hidden_states_bias = nn.Parameter(torch.zeros(dim))
        self.residual_scale = nn.Parameter(torch.ones(dim))
        self.residual_bias = nn.Parameter(torch.zeros(dim))

    def forward(self, x: torch.Tensor, res: torch.Tensor) -> torch.Tensor:
        # `res` is the fp32 residual stream, so the sum is fp32 whatever the block's dtype.
        return (x + self.hidden_states_bias) * self.hidden_states_scale + (res + self.residual_bias) * self.residual_scale


# ---------------------------------------------------------------------------------------------
# Rotary position embedding, one table per layer type, applied to the first `rotary_dim` dims.
# ---------------------------------------------------------------------------------------------
class RotaryEmbedding(nn.Module):
    def __init__(self, config: Zaya1Config) -> None:
        super().__init__()
        self.layer_types = sorted(set(config.layer_types))
        for kind in self.layer_types:
            rope = config.rope_parameters[kind]
            dim = int(config.head_dim * rope.partial_rotary_factor)
            inv_freq = 1.0 / (rope.rope_theta ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim))
            self.register_buffer(f"{kind}_inv_freq", inv_freq, persistent=False)

    def forward(self, position_ids: torch.Tensor, kind: str, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """cos, sin of shape [B, T, rotary_dim] for integer positions [B, T]."""
        inv_freq = getattr(self, f"{kind}_inv_freq")
        freqs = position_ids[..., None].float() * inv_freq.float()
        emb = torch.cat([freqs, freqs], dim=-1)
        return emb.cos().to(dtype), emb.sin().to(dtype)


def apply_partial_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x: [B, H, T, d]; cos/sin: [B, T, r] with r <= d. Rotates x[..., :r] (half-split pairing), keeps the rest."""
    r = cos.shape[-1]
    cos, sin = cos[:, None], sin[:, None]
    x_rot, x_pass = x[..., :r], x[..., r:]
    x1, x2 = x_rot[..., : r // 2], x_rot[..., r // 2 :]
    rotated = torch.cat([-x2, x1], dim=-1)
    return torch.cat([x_rot * cos + rotated * sin, x_pass], dim=-1)


# ---------------------------------------------------------------------------------------------
# CCA: compressed convolutional attention with grouped query heads.
# ---------------------------------------------------------------------------------------------
class CCAProjection(nn.Module):
    """x -> (q, k, v), each [B, T, heads, head_dim], with ZAYA1's three changes to plain q/k/v projections:

    1. q and k are mixed over time by two causal convolutions over the packed [q0, k0] channels
       (a depthwise one, then one grouped per head);
    2. q and k keep a residual path: q_res = (q0 + k0 of the head's group) / 2, k_res = group mean of q_res;
    3. half of each position's value comes from the previous position (`v_proj_delayed`).
    """

    def __init__(self, config: Zaya1Config) -> None:
        super().__init__()
        self.hq, self.hk, self.d = config.num_attention_heads, config.num_key_value_heads, config.head_dim
        self.groups = config.kv_groups
        self.state_len = config.conv_state_len
        h, bias = config.hidden_size, config.attention_bias
        self.q_proj = nn.Linear(h, self.hq * self.d, bias=bias)
        self.k_proj = nn.Linear(h, self.hk * self.d, bias=bias)
        self.v_proj_current = nn.Linear(h, self.hk * self.d // 2, bias=bias)
        self.v_proj_delayed = nn.Linear(h, self.hk * self.d // 2, bias=bias)
        c = config.conv_channels
        self.conv_qk_depthwise = nn.Conv1d(c, c, kernel_size=config.cca_time0, groups=c)
        self.conv_qk_grouped = nn.Conv1d(c, c, kernel_size=config.cca_time1, groups=self.hq + self.hk)

    def forward(
        self, x: torch.Tensor, cache: LayerCache | None, start: int
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        b, t, _ = x.shape
        continuing = cache is not None and start > 0
        q0, k0 = self.q_proj(x), self.k_proj(x)

        # Residual path: each query head averaged with its group's key head; keys are the group mean.
        q_res = (q0.view(b, t, self.hq, self.d) + k0.view(b, t, self.hk, self.d).repeat_interleave(self.groups, dim=2)) * 0.5
        k_res = q_res.view(b, t, self.hk, self.groups, self.d).mean(dim=-2)

        # Causal convolutions over time. The window starts with `state_len` past positions:
        # zeros at the start of a sequence, the cached tail of [q0, k0] when continuing.
        packed = torch.cat([q0, k0], dim=-1).transpose(1, 2)  # [B, C, T]
        past = cache.conv_state if continuing else packed.new_zeros(b, packed.shape[1], self.state_len)
        window = torch.cat([past, packed], dim=-1)
        if cache is not None and self.state_len > 0:
            cache.conv_state.copy_(window[..., -self.state_len :])
        mixed = self.conv_qk_grouped(self.conv_qk_depthwise(window)).transpose(1, 2)  # [B, T, C]
        q = mixed[..., : self.hq * self.d].reshape(b, t, self.hq, self.d) + q_res
        k = mixed[..., self.hq * self.d :].reshape(b, t, self.hk, self.d) + k_res

        # Values: [current half, previous position's delayed half], then split into heads.
        v_current = self.v_proj_current(x)
        v_delayed = self.v_proj_delayed(x)
        if continuing:
            previous = cache.value_state[:, None]
        else:
            # Before the first position the delayed projection sees a zero input (its bias, if any).
            previous = self.v_proj_delayed(x.new_zeros(b, 1, x.shape[-1]))
        v_shifted = torch.cat([previous, v_delayed[:, :-1]], dim=1)
        if cache is not None:  # only now: `previous` may be a view of the state being replaced
            cache.value_state.copy_(v_delayed[:, -1])
        v = torch.cat([v_current, v_shifted], dim=-1).view(b, t, self.hk, self.d)
        return q, k, v


class QKNorm(nn.Module):
    """L2-normalize every q and k head to norm sqrt(head_dim); scale key heads by a learned `temp`."""

    def __init__(self, config: Zaya1Config) -> None:
        super().__init__()
        self.scale = config.head_dim**0.5
        self.temp = nn.Parameter(torch.zeros(config.num_key_value_heads))

    def forward(self, q: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        eps = torch.finfo(q.dtype).eps
        q = q * (self.scale / q.norm(p=2, dim=-1, keepdim=True).clamp_min(eps))
        k = k * (self.scale / k.norm(p=2, dim=-1, keepdim=True).clamp_min(eps))
        return q, k * self.temp[None, None, :, None]


class Attention(nn.Module):
    def __init__(self, config: Zaya1Config) -> None:
        super().__init__()
        self.qkv_proj = CCAProjection(config)
        self.qk_norm = QKNorm(config)
        self.o_proj = nn.Linear(config.num_attention_heads * config.head_dim, config.hidden_size, bias=config.attention_bias)
        self.scale = 1.0 / math.sqrt(config.head_dim)

    def forward(
        self,
        x: torch.Tensor,
        mask: torch.Tensor,
        rope: tuple[torch.Tensor, torch.Tensor],
        cache: LayerCache | None,
        start: int,
    ) -> torch.Tensor:
        b, t, _ = x.shape
        q, k, v = self.qkv_proj(x, cache, start)
        q, k = self.qk_norm(q, k)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # [B, heads, T, d]
        q, k = apply_partial_rotary(q, *rope), apply_partial_rotary(k, *rope)
        if cache is not None:
            cache.k[:, :, start : start + t] = k
            cache.v[:, :, start : start + t] = v
            k, v = cache.k[:, :, : start + t], cache.v[:, :, : start + t]
        # Each key/value head serves `groups` consecutive query heads (enable_gqa repeats them that way).
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=self.scale, enable_gqa=True)
        return self.o_proj(out.transpose(1, 2).reshape(b, t, -1))


# ---------------------------------------------------------------------------------------------
# Router (MLP with exponential depth averaging) and top-1 experts with a skip class.
# ---------------------------------------------------------------------------------------------
class RouterMLP(nn.Module):
    def __init__(self, dim: int, classes: int, eps: float) -> None:
        super().__init__()
        self.norm = RMSNorm(dim, eps)
        self.fc1 = nn.Linear(dim, dim, bias=True)
        self.fc2 = nn.Linear(dim, dim, bias=True)
        self.out_proj = nn.Linear(dim, classes, bias=False)

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        s = F.gelu(self.fc1(self.norm(s)))
        return self.out_proj(F.gelu(self.fc2(s)))


class Router(nn.Module):
    """Chooses one of `num_experts` experts or the skip class (index `num_experts`) per token."""

    def __init__(self, config: Zaya1Config, layer_idx: int) -> None:
        super().__init__()
        self.num_experts = config.num_experts
        self.down_proj = nn.Linear(config.hidden_size, config.router_hidden_size, bias=True)
        # Exponential depth averaging: every layer but the first adds the previous layer's router state.
        self.uses_depth_average = layer_idx > 0
        if self.uses_depth_average:
            self.router_states_scale = nn.Parameter(torch.ones(config.router_hidden_size))
        self.router_mlp = RouterMLP(config.router_hidden_size, config.num_experts + 1, config.rms_norm_eps)
        # Load-balancing biases move the choice, never the weight. Kept in fp32 whatever the model
        # dtype (see `Zaya1ForCausalLM.to_dtype`); the skip class starts at -1.
        biases = torch.zeros(config.num_experts + 1, dtype=torch.float32)
        biases[-1] = -1.0
        self.register_buffer("balancing_biases", biases, persistent=True)

    def forward(
        self, x: torch.Tensor, prev_state: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Returns (weight [B, T], choice [B, T] in 0..num_experts, router state [B, T, R] for the next layer)."""
        s = self.down_proj(x)
        if self.uses_depth_average and prev_state is not None:
            s = s + prev_state * self.router_states_scale
        probs = torch.softmax(self.router_mlp(s), dim=-1)
        choice = torch.topk(probs.float() + self.balancing_biases.float(), 1, dim=-1).indices
        weight = probs.gather(-1, choice)
        return weight.squeeze(-1), choice.squeeze(-1), s


class Experts(nn.Module):
    """SwiGLU experts stored as stacked 3-D tensors (the checkpoint's layout)."""

    def __init__(self, config: Zaya1Config) -> None:
        super().__init__()
        e, i, h = config.num_experts, config.moe_intermediate_size, config.hidden_size
        self.num_experts = e
        self.gate_up_proj = nn.Parameter(torch.empty(e, 2 * i, h))
        self.down_proj = nn.Parameter(torch.empty(e, h, i))

    def forward(self, x: torch.Tensor, weight: torch.Tensor, choice: torch.Tensor) -> torch.Tensor:
        """x [N, H], weight [N], choice [N]; tokens that chose the skip class get a zero output."""
        out = torch.zeros_like(x)
        for e in choice.unique().tolist():
            if e == self.num_experts:  # mixture-of-depths: the residual alone carries the token
                continue
            rows = (choice == e).nonzero().squeeze(-1)
            gate, up = F.linear(x[rows], self.gate_up_proj[e]).chunk(2, dim=-1)
            y = F.linear(F.silu(gate) * up, self.down_proj[e]) * weight[rows, None]
            out.index_add_(0, rows, y.to(out.dtype))
        return out


class SparseMoeBlock(nn.Module):
    def __init__(self, config: Zaya1Config, layer_idx: int) -> None:
        super().__init__()
        self.gate = Router(config, layer_idx)
        self.experts = Experts(config)

    def forward(self, x: torch.Tensor, prev_state: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        b, t, h = x.shape
        weight, choice, state = self.gate(x, prev_state)
        out = self.experts(x.reshape(b * t, h), weight.reshape(-1), choice.reshape(-1))
        return out.view(b, t, h), state


class DecoderLayer(nn.Module):
    def __init__(self, config: Zaya1Config, layer_idx: int) -> None:
        super().__init__()
        self.layer_type = config.layer_types[layer_idx]
        self.self_attn = Attention(config)
        self.mlp = SparseMoeBlock(config, layer_idx)
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.post_attention_residual_scale = ResidualScaling(config.hidden_size)
        self.post_mlp_residual_scale = ResidualScaling(config.hidden_size)

    def forward(
        self,
        h: torch.Tensor,
        router_state: torch.Tensor | None,
        mask: torch.Tensor,
        rope: tuple[torch.Tensor, torch.Tensor],
        conv_mask: torch.Tensor | None,
        cache: LayerCache | None,
        start: int,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        dtype = self.input_layernorm.weight.dtype
        x = self.input_layernorm(h.to(dtype))
        if conv_mask is not None:
            # Zero padded positions before any projection so they leak nothing into the
            # convolutions or the delayed values of the tokens after them.
            x = x * conv_mask[:, :, None].to(x.dtype)
        r = self.post_attention_residual_scale(self.self_attn(x, mask, rope, cache, start), h)
        m, router_state = self.mlp(self.post_attention_layernorm(r.to(dtype)), router_state)
        return self.post_mlp_residual_scale(m, r), router_state


def attention_masks(
    config: Zaya1Config, start: int, t: int, attention_mask: torch.Tensor | None, device: torch.device
) -> dict[str, torch.Tensor]:
    """Boolean masks [B|1, 1, T, start+T] per layer type: True where query i may attend key j.

    Causal, minus padded keys, and for sliding layers only keys less than `sliding_window`
    positions back (distance counted in cache slots, which left padding keeps consistent).
    A padded query keeps its own slot so its row is never empty (an all-masked softmax
    gives NaN, and a NaN in a padded row would spread through the convolutions).
    """
    q_pos = torch.arange(start, start + t, device=device)[:, None]
    k_pos = torch.arange(start + t, device=device)[None, :]
    causal = k_pos <= q_pos
    masks = {"hybrid": causal}
    if "hybrid_sliding" in config.layer_types:
        masks["hybrid_sliding"] = causal & (q_pos - k_pos < config.sliding_window)
    out = {}
    for kind, m in masks.items():
        m = m[None, None]
        if attention_mask is not None:
            m = (m & attention_mask.bool()[:, None, None, :]) | (k_pos == q_pos)[None, None]
        out[kind] = m
    return out


class Zaya1Model(nn.Module):
    def __init__(self, config: Zaya1Config) -> None:
        super().__init__()
        self.config = config
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id)
        self.input_hidden_states_scale = nn.Parameter(torch.ones(config.hidden_size))
        self.input_hidden_states_bias = nn.Parameter(torch.zeros(config.hidden_size))
        self.layers = nn.ModuleList(DecoderLayer(config, i) for i in range(config.num_hidden_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.rotary_emb = RotaryEmbedding(config)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None,
        position_ids: torch.Tensor,
        cache: ModelCache | None,
    ) -> torch.Tensor:
        b, t = input_ids.shape
        start = 0
        if cache is not None:
            cache.check_room(t)
            start = cache.length
        dtype = self.embed_tokens.weight.dtype
        masks = attention_masks(self.config, start, t, attention_mask, input_ids.device)
        ropes = {kind: self.rotary_emb(position_ids, kind, dtype) for kind in masks}
        conv_mask = attention_mask[:, -t:] if attention_mask is not None else None

        # The residual stream stays fp32 (the reference's `residual_in_fp32`).
        h = ((self.embed_tokens(input_ids) + self.input_hidden_states_bias) * self.input_hidden_states_scale).float()
        router_state = None
        for i, layer in enumerate(self.layers):
            h, router_state = layer(
                h,
                router_state,
                masks[layer.layer_type],
                ropes[layer.layer_type],
                conv_mask,
                cache.layers[i] if cache is not None else None,
                start,
            )
        if cache is not None:
            cache.length += t
        return self.norm(h.to(dtype))


class Zaya1ForCausalLM(nn.Module):
    def __init__(self, config: Zaya1Config) -> None:
        super().__init__()
        self.config = config
        self.model = Zaya1Model(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=config.lm_head_bias)
        if config.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight

    @property
    def dtype(self) -> torch.dtype:
        return self.model.embed_tokens.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.model.embed_tokens.weight.device

    def to_dtype(self, dtype: torch.dtype) -> Zaya1ForCausalLM:
        """Cast parameters; the router's balancing biases stay fp32 (they decide near-ties)."""
        self.to(dtype)
        for layer in self.model.layers:
            layer.mlp.gate.balancing_biases.data = layer.mlp.gate.balancing_biases.data.float()
        return self

    def materialize_(self, device: torch.device | str, dtype: torch.dtype) -> Zaya1ForCausalLM:
        """Give a meta-device model real, uninitialized storage on `device` (weights still to be filled).

        Rebuilds what is not a weight: the RoPE tables, the tie of lm_head to the embedding,
        and fp32 balancing biases (reset to their init: zeros, skip class -1).
        """
        self.to(dtype)  # still on meta: free, and the device never holds an fp32 copy
        self.to_empty(device=device)
        self.to_dtype(dtype)
        if self.config.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight
        self.model.rotary_emb = RotaryEmbedding(self.config).to(device)
        with torch.no_grad():
            for layer in self.model.layers:
                biases = layer.mlp.gate.balancing_biases
                biases.zero_()
                biases[-1] = -1.0
        return self

    def new_cache(self, batch_size: int, max_len: int) -> ModelCache:
        return ModelCache(self.config, batch_size, max_len, device=self.device, dtype=self.dtype)

    def forward(
        self,
        input_ids: torch.Tensor,
        *,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        cache: ModelCache | None = None,
        num_logits_to_keep: int = 0,
    ) -> torch.Tensor:
        """Logits [B, T, V] (or the last `num_logits_to_keep` positions).

        attention_mask: [B, past + T], 1 for tokens, 0 for (left) padding, past = `cache.length`.
        position_ids: [B, T]; by default counted over the mask's tokens, so a left-padded
        prompt gets the same positions as the same prompt alone.
        cache: written in place and advanced by T when given.
        """
        b, t = input_ids.shape
        start = cache.length if cache is not None else 0
        if attention_mask is not None and attention_mask.shape != (b, start + t):
            raise ValueError(f"attention_mask has shape {tuple(attention_mask.shape)}, expected {(b, start + t)}")
        if position_ids is None:
            if attention_mask is not None:
                position_ids = (attention_mask.long().cumsum(-1) - 1).clamp_min(0)[:, -t:]
            else:
                position_ids = torch.arange(start, start + t, device=input_ids.device)[None].expand(b, t)
        h = self.model(input_ids, attention_mask, position_ids, cache)
        if num_logits_to_keep:
            h = h[:, -num_logits_to_keep:]
        return self.lm_head(h)


def parameter_counts(config: Zaya1Config) -> dict[str, int]:
    """Parameter counts of a configuration, built on the meta device (no memory).

    total: every parameter once (the tied lm_head is the embedding matrix).
    non_embedding: total minus the embedding matrix (the published "8.3B total").
    active: what one token touches in its forward pass, embeddings excluded (a lookup is
      not compute): attention, router, norms and residual scalings of every layer, and ONE
      expert per layer (top-1) of the `num_experts`. The untied-head case adds nothing here
      because the head is counted with the embeddings. A token that takes the skip class
      touches even fewer; this is the upper bound the report calls "active".
    """
    with torch.device("meta"):
        model = Zaya1ForCausalLM(config)
    total = sum(p.numel() for p in model.parameters())  # parameters() yields a tied tensor once
    embedding = model.model.embed_tokens.weight.numel()
    per_expert = 3 * config.moe_intermediate_size * config.hidden_size  # gate, up, down
    idle_experts = (config.num_experts - config.num_experts_per_tok) * per_expert * config.num_hidden_layers
    lm_head_extra = 0 if config.tie_word_embeddings else model.lm_head.weight.numel()
    non_embedding = total - embedding - lm_head_extra
    return {"total": total, "non_embedding": non_embedding, "active": non_embedding - idle_experts}
