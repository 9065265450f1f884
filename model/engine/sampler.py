"""Token sampling on the device, per row: temperature, top-k, top-p, and a per-request seed.

The semantics of the cuts are those of `model.generate.sample_next` (top-k keeps every logit at
least the k-th largest, ties included; top-p then drops a token when the tokens ranked before it
already cover `top_p`; temperature 0 is argmax). The randomness is not a stateful generator:
a sequence's draw for its n-th completion token uses Gumbel noise that is a hash of
(seed, n, token id). So a request's tokens depend on nothing but its own seed and logits, not on
its batch companions, the step it joined, or a preemption and recompute; and the whole batch is
sampled in a few vectorized launches (argmax over logits + noise is an exact draw from the
softmax). The draws differ from `model.generate`'s torch.Generator streams: same distribution,
different random numbers.

Because the noise is a pure function of (key, token id), it never has to be materialized: on
CUDA, rows without cuts are drawn by one fused Triton pass over the logits
(`model.kernels.sampling.gumbel_argmax`) that recomputes the same hash and the same fp32 ops
and so returns the same tokens as `sample_torch`, the PyTorch path kept here as its reference,
as the CPU path, and for top-k/top-p (which need a sort).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .transfer import to_device

_MASK32 = 0xFFFFFFFF


def _mix32(x: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer hash (xorshift-multiply rounds) on int64 tensors holding values < 2^32.

    The multipliers are below 2^31, so every product stays below 2^63: no int64 overflow on any
    device, and CPU and GPU give the same bits.
    """
    x = x ^ (x >> 16)
    x = (x * 0x7FEB352D) & _MASK32
    x = x ^ (x >> 15)
    x = (x * 0x68E31DA5) & _MASK32
    return x ^ (x >> 16)


def row_keys(seeds: torch.Tensor, steps: torch.Tensor) -> torch.Tensor:
    """One 32-bit key per (seed, step) row; seeds may use all 64 bits."""
    lo, hi = seeds & _MASK32, (seeds >> 32) & _MASK32
    k = _mix32(lo) ^ _mix32(hi ^ 0x5BD1E995)
    return _mix32((k + (steps & 0x7FFFFFFF) * 0x27D4EB2F) & _MASK32)


def gumbel_noise(keys: torch.Tensor, token_ids: torch.Tensor) -> torch.Tensor:
    """Gumbel(0, 1) noise [B, N] for rows `keys` [B] and vocabulary ids `token_ids` [B, N] or [N]."""
    x = _mix32((keys[:, None] ^ ((token_ids * 0x2C1B3C6D) & _MASK32)) & _MASK32)
    x = _mix32(x ^ 0x165667B1)
    # m = x >> 8 < 2^24; m + 0.5 is exact only for m < 2^23 (above, fp32 rounds it to an even
    # integer). m = 2^24 - 1 rounds to u = 1, whose noise is +inf: that token would win the row
    # whatever its logit (once per ~64 rows at V = 262,272), so u is capped at 1 - 2^-24.
    u = ((x >> 8).to(torch.float32) + 0.5) * (1.0 / (1 << 24))
    u = u.clamp_max(1.0 - 2.0**-24)  # in (0, 1)
    return -torch.log(-torch.log(u))


@dataclass
class SamplingBatch:
    """Per-row parameters as device tensors, plus host flags that skip unused work."""

    temperature: torch.Tensor  # [B] fp32, 0 = greedy
    top_p: torch.Tensor  # [B] fp32
    top_k: torch.Tensor  # [B] int64, 0 = no cut
    seeds: torch.Tensor  # [B] int64
    steps: torch.Tensor  # [B] int64: index of the token being drawn within its completion
    all_greedy: bool
    any_cut: bool  # some row has top_k > 0 or top_p < 1

    @classmethod
    def build(cls, temperature: list[float], top_p: list[float], top_k: list[int], seeds: list[int],
              steps: list[int], device: torch.device) -> SamplingBatch:
        vals = torch.tensor([temperature, top_p], dtype=torch.float32)
        ints = torch.tensor([top_k, seeds, steps], dtype=torch.int64)
        vals, ints = to_device(vals, device), to_device(ints, device)
        return cls(vals[0], vals[1], ints[0], ints[1], ints[2],
                   all_greedy=all(t == 0.0 for t in temperature),
                   any_cut=any(k > 0 for k in top_k) or any(p < 1.0 for p in top_p))


def sample(logits: torch.Tensor, batch: SamplingBatch) -> torch.Tensor:
    """Next token per row [B] (int64) from logits [B, V].

    On CUDA without cuts, one fused Triton pass (`model.kernels.sampling.gumbel_argmax`, the
    same draws as `sample_torch`, which is ~10 [B, V] int64 kernels); otherwise `sample_torch`.
    """
    if logits.is_cuda and not batch.all_greedy and not batch.any_cut:
        # Imported here: importing Triton is slow, and tests choose the interpreter before it.
        from model.kernels.sampling import gumbel_argmax

        return gumbel_argmax(logits, batch.temperature, batch.seeds, batch.steps)
    return sample_torch(logits, batch)


def sample_torch(logits: torch.Tensor, batch: SamplingBatch) -> torch.Tensor:
    """The PyTorch sampler: the reference for the fused kernel, the CPU path, and top-k/top-p."""
    # argmax in the logits' own dtype: widening to fp32 is exact and order-preserving, so the
    # argmax is the same, without writing and re-reading an fp32 copy of [B, V] (at batch 256
    # x 262K that copy was ~0.5 GB of the greedy step's traffic)
    greedy = logits.argmax(dim=-1)
    if batch.all_greedy:
        return greedy
    logits = logits.float()
    temp = torch.where(batch.temperature > 0, batch.temperature, torch.ones_like(batch.temperature))
    scaled = logits / temp[:, None]
    keys = row_keys(batch.seeds, batch.steps)
    vocab = logits.shape[-1]
    if batch.any_cut:
        ordered, order = torch.sort(scaled, dim=-1, descending=True)
        # top-k: keep logits >= the k-th largest (k = 0 or >= V keeps all).
        k = torch.where((batch.top_k > 0) & (batch.top_k < vocab), batch.top_k, torch.full_like(batch.top_k, vocab))
        kth = ordered.gather(1, (k - 1)[:, None])
        ordered = ordered.masked_fill(ordered < kth, float("-inf"))
        # top-p over what top-k left: drop a token once the ones before it cover top_p.
        probs = ordered.softmax(dim=-1)
        drop = (probs.cumsum(dim=-1) - probs) >= batch.top_p[:, None]
        drop &= (batch.top_p < 1.0)[:, None]  # top_p = 1 cuts nothing (not even after fp32 rounding)
        ordered = ordered.masked_fill(drop, float("-inf"))
        pick = (ordered + gumbel_noise(keys, order)).argmax(dim=-1)
        drawn = order.gather(1, pick[:, None])[:, 0]
    else:
        ids = torch.arange(vocab, device=logits.device)
        drawn = (scaled + gumbel_noise(keys, ids)).argmax(dim=-1)
    return torch.where(batch.temperature > 0, drawn, greedy)
