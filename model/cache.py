"""Decoding state of ZAYA1: per attention layer, what the next token needs from the past.

CCA keeps three things per layer (all rows of a batch advance together; left padding
keeps them aligned):
- K and V after qk-norm and RoPE, `num_key_value_heads` heads each (the "compressed" KV:
  2 heads of 128 instead of one per query head), preallocated to `max_len` positions;
- the convolution state: the last `conv_state_len` positions of the packed [q0, k0]
  channels that the two causal convolutions read;
- the value state: the previous position's `v_proj_delayed` output, the delayed half
  of the next position's values.

Sliding-window layers keep the full length too and mask by distance: simpler, and the
published 8B configuration has no sliding layers.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .config import Zaya1Config


@dataclass
class LayerCache:
    k: torch.Tensor  # [B, Hk, max_len, head_dim]
    v: torch.Tensor  # [B, Hk, max_len, head_dim]
    conv_state: torch.Tensor  # [B, conv_channels, conv_state_len]
    value_state: torch.Tensor  # [B, Hk * head_dim // 2]


class ModelCache:
    """All layers' decoding state plus `length`, the number of positions already written."""

    def __init__(
        self,
        config: Zaya1Config,
        batch_size: int,
        max_len: int,
        *,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> None:
        self.batch_size = batch_size
        self.max_len = max_len
        self.length = 0
        hk, d = config.num_key_value_heads, config.head_dim
        self.layers = [
            LayerCache(
                k=torch.zeros(batch_size, hk, max_len, d, device=device, dtype=dtype),
                v=torch.zeros(batch_size, hk, max_len, d, device=device, dtype=dtype),
                conv_state=torch.zeros(batch_size, config.conv_channels, config.conv_state_len, device=device, dtype=dtype),
                value_state=torch.zeros(batch_size, hk * d // 2, device=device, dtype=dtype),
            )
            for _ in range(config.num_hidden_layers)
        ]

    def check_room(self, new_tokens: int) -> None:
        if self.length + new_tokens > self.max_len:
            raise ValueError(f"cache holds {self.max_len} positions; {self.length} used, {new_tokens} more requested")

    def nbytes(self) -> int:
        return sum(
            t.numel() * t.element_size()
            for layer in self.layers
            for t in (layer.k, layer.v, layer.conv_state, layer.value_state)
        )
