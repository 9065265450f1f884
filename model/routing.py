"""Fit a model's router balancing biases so that its experts get equal loads.

Each ZAYA1 MoE layer routes a token to top-1 of `softmax(router logits) + balancing_biases`
over E experts and the skip class (`model/zaya1.py`, `Router`). A trained checkpoint learns
those biases by auxiliary-loss-free load balancing: after each training batch every expert's
bias moves a small step up if the expert got fewer tokens than the mean, down if it got more
(b_e += rate * sign(mean_load - load_e)), so its experts end up evenly loaded. A model with
random weights has no such history and routes most tokens of a batch to a few experts, which
makes batched decode look cheaper than it is on a real checkpoint (fewer experts to read).

    stats = balance_routing_(model, token_ids)    # a few seconds for the 8B on one GPU

runs the same sign rule on the model's own (PyTorch) forward over calibration tokens, so a
random model routes like a trained one for benchmarks. Only the expert entries move; the
skip class keeps its bias, and each layer keeps the share of tokens it skips (balancing evens
the experts; it is not meant to change how often mixture-of-depths skips). `routing_loads`
counts a model's per-layer choices for any tokens (use held-out tokens to see how well a fit
carries over).

Calibration tokens for a random model: its router input is dominated by the context (attention
over random embeddings averages toward a per-sequence, per-position value), so the tokens of one
sequence route alike and the routing drifts with position. A fit generalizes with the number of
sequences more than their length, and should count the positions that matter (count_mask): on a
reduced 8B-like model, 64 sequences counted at the decode positions left held-out batch-256
decode steps at max/mean ~1.7 (even routing of 256 tokens to 16 experts gives ~1.5), 4 sequences
at ~3.8; fitted at other positions than the measured ones, 2-4.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

from .zaya1 import Router, Zaya1ForCausalLM

# Step-size control (Rprop-style sign descent: one step size per layer and expert).
# Bias steps are in probability units. A 17-way softmax puts ~1/17 = 0.06 on a class; on the
# random 8B router the gap between a token's top two classes is ~0.01-0.02 (median), while its
# random init draws the biases with std 0.05 (which is what skews its routing), so a fit moves
# biases by ~0.05-0.2. A fixed step either crawls there (0.001: hundreds of steps) or never
# settles finer than itself (0.01-0.03 throw a large share of the tokens from expert to expert
# every step: on a reduced 8B-like model max/mean load was still 3-7 after 20 steps). So each
# expert's step starts at `rate`, grows by GROW while its sign repeats (any distance is covered
# in tens of steps) and shrinks by SHRINK when the sign flips (bisecting its balance point far
# below the probability gaps): 40 steps bring that model to max/mean ~1.02-1.05 from rates
# 0.003-0.03. It is the training rule with a step that adapts; the loads it sees are
# deterministic (the same tokens every step), which is what makes shrinking on a flip safe.
# GROW 1.5 was measured to overshoot and oscillate.
GROW = 1.2
SHRINK = 0.5
MAX_STEP = 0.1  # a larger single move is never needed with probabilities in [0, 1]
MIN_STEP = 1e-6  # well above fp32 resolution of biases of size ~0.1 (~1e-8)


class _SignSteps:
    """Steps of rate * sign(direction) whose size grows by GROW while an entry's sign repeats and
    shrinks by SHRINK when it flips (a zero sign keeps the size)."""

    def __init__(self, shape: tuple[int, ...], rate: float) -> None:
        self.size = torch.full(shape, float(rate))
        self.previous = torch.zeros(shape)

    def __call__(self, direction: torch.Tensor) -> torch.Tensor:
        agree = direction * self.previous
        size = torch.where(agree > 0, self.size * GROW, torch.where(agree < 0, self.size * SHRINK, self.size))
        self.size = size.clamp(MIN_STEP, MAX_STEP)
        self.previous = direction
        return self.size * direction


def _routers(model: Zaya1ForCausalLM) -> list[Router]:
    return [layer.mlp.gate for layer in model.model.layers]


@contextmanager
def _recording(model: Zaya1ForCausalLM, loads: torch.Tensor, mask: list[torch.Tensor | None]) -> Iterator[None]:
    """Adds each layer's top-1 choices (those where mask[0] is True, or all) into loads[layer].

    Observes the router's own output (weight, choice, state), so the choice is exactly what
    the forward computes; nothing of the routing math is repeated here."""
    classes = loads.shape[1]

    def hook(index: int):
        def record(_module: torch.nn.Module, _inputs: Any, output: tuple[torch.Tensor, ...]) -> None:
            choice = output[1]
            if mask[0] is not None:
                choice = choice[mask[0]]
            loads[index] += torch.bincount(choice.reshape(-1).long(), minlength=classes)

        return record

    handles = [router.register_forward_hook(hook(i)) for i, router in enumerate(_routers(model))]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


@contextmanager
def _in_eval(model: Zaya1ForCausalLM) -> Iterator[None]:
    """The model in eval mode for the block, then back in the mode it was in."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def _check_model(model: Zaya1ForCausalLM) -> None:
    if not isinstance(model, Zaya1ForCausalLM):
        raise TypeError(f"model must be a Zaya1ForCausalLM, got {type(model).__name__}")
    for i, router in enumerate(_routers(model)):
        biases = router.balancing_biases
        if biases.dtype != torch.float32:
            # to_dtype keeps them fp32; a plain .half()/.to(dtype) would have rounded them.
            raise ValueError(f"layer {i}: balancing_biases are {biases.dtype}, expected float32 "
                             "(cast the model with Zaya1ForCausalLM.to_dtype)")


def _check_tokens(model: Zaya1ForCausalLM, token_ids: torch.Tensor, count_mask: torch.Tensor | None,
                  batch_size: int | None) -> None:
    if not isinstance(token_ids, torch.Tensor):
        raise TypeError(f"token_ids must be a torch.Tensor [B, L], got {type(token_ids).__name__}")
    if token_ids.ndim != 2 or token_ids.numel() == 0:
        raise ValueError(f"token_ids must be a non-empty 2-D tensor [B, L], got shape {tuple(token_ids.shape)}")
    if token_ids.dtype.is_floating_point or token_ids.dtype.is_complex or token_ids.dtype == torch.bool:
        raise TypeError(f"token_ids must hold integer ids, got {token_ids.dtype}")
    vocab = model.config.vocab_size
    low, high = int(token_ids.min()), int(token_ids.max())
    if low < 0 or high >= vocab:
        raise ValueError(f"token ids must lie in [0, {vocab}), got values in [{low}, {high}]")
    if count_mask is not None:
        if not isinstance(count_mask, torch.Tensor) or count_mask.dtype != torch.bool:
            raise TypeError("count_mask must be a bool tensor")
        if count_mask.shape != token_ids.shape:
            raise ValueError(f"count_mask has shape {tuple(count_mask.shape)}, token_ids {tuple(token_ids.shape)}")
        if not bool(count_mask.any()):
            raise ValueError("count_mask selects no token")
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1):
        raise ValueError(f"batch_size must be a positive int or None, got {batch_size!r}")


@torch.no_grad()
def _count(model: Zaya1ForCausalLM, token_ids: torch.Tensor, count_mask: torch.Tensor | None,
           batch_size: int | None) -> torch.Tensor:
    """Per-layer choice counts [layers, E + 1] (CPU int64) over the counted tokens."""
    layers, classes = len(model.model.layers), model.config.num_experts + 1
    loads = torch.zeros(layers, classes, dtype=torch.int64, device=model.device)
    ids = token_ids.to(model.device)
    mask = count_mask.to(model.device) if count_mask is not None else None
    rows = batch_size or ids.shape[0]
    current: list[torch.Tensor | None] = [None]
    with _recording(model, loads, current):
        for start in range(0, ids.shape[0], rows):
            current[0] = mask[start : start + rows] if mask is not None else None
            # Only the router choices matter: logits for one position (the 8B's 262K-row head
            # over every position would cost about as much as the rest of the forward).
            model(ids[start : start + rows], num_logits_to_keep=1)
    return loads.cpu()


def routing_loads(model: Zaya1ForCausalLM, token_ids: torch.Tensor, *, count_mask: torch.Tensor | None = None,
                  batch_size: int | None = None) -> torch.Tensor:
    """How many of the tokens each layer sends to each class: int64 [layers, E + 1] on the CPU,
    the last column the skip class.

    One eval forward (no grad) over token_ids [B, L] (rows of equal length, positions from 0),
    `batch_size` rows at a time; with count_mask [B, L] (bool) only the tokens it marks are
    counted (the others still give context), e.g. the positions a decode benchmark reaches.
    """
    _check_model(model)
    _check_tokens(model, token_ids, count_mask, batch_size)
    with _in_eval(model):
        return _count(model, token_ids, count_mask, batch_size)


def load_stats(loads: torch.Tensor) -> dict[str, list[float] | list[int]]:
    """Per layer, from counts [layers, E + 1]: max/mean expert load (1.0 is perfectly even; 0.0
    where no token reached an expert), the distinct experts used, and the skip-class share."""
    experts = loads[:, :-1].double()
    mean = experts.mean(dim=1)
    ratio = torch.where(mean > 0, experts.max(dim=1).values / mean.clamp_min(1e-30), torch.zeros_like(mean))
    total = loads.sum(dim=1).double().clamp_min(1)
    return {
        "max_over_mean": [round(float(r), 4) for r in ratio],
        "distinct_experts": [int(n) for n in (experts > 0).sum(dim=1)],
        "skip_fraction": [round(float(s), 4) for s in loads[:, -1].double() / total],
    }


def _check_schedule(steps: int, rate: float) -> None:
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive int, got {steps!r}")
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not math.isfinite(rate) or not 0 < rate <= MAX_STEP:
        raise ValueError(f"rate must be a number in (0, {MAX_STEP}] (a bias step in probability units), got {rate!r}")


def balance_routing_(
    model: Zaya1ForCausalLM,
    token_ids: torch.Tensor,
    *,
    steps: int = 40,
    rate: float = 0.01,
    count_mask: torch.Tensor | None = None,
    batch_size: int | None = None,
) -> dict[str, Any]:
    """Fit every layer's expert balancing biases (in place) so its expert loads over token_ids are even.

    Each step runs the model's forward over token_ids [B, L] (eval, no grad, on the model's
    device and dtype; see `routing_loads` for count_mask and batch_size), counts each layer's
    top-1 choices, and moves every expert's bias by its step size in the direction of
    sign(mean expert load - its load): the load-balancing rule of ZAYA1 training. Step sizes
    start at `rate` and adapt per expert (see GROW/SHRINK above). The common part of a layer's
    update is replaced by a step that holds the layer's skip share at its value before the fit
    (see below). The skip-class bias is left as it is; the biases stay fp32. Deterministic: the
    same model and tokens give the same biases (the update is computed on the CPU from integer
    counts).

    Returns {"steps", "tokens_counted", "before", "after", "max_bias_change"}, where before and
    after are `load_stats` of the first and of one final forward (after the last update).
    """
    _check_model(model)
    _check_tokens(model, token_ids, count_mask, batch_size)
    _check_schedule(steps, rate)
    routers = _routers(model)
    experts = model.config.num_experts
    start = torch.stack([r.balancing_biases.detach().float().cpu() for r in routers])  # [layers, E + 1]
    biases = start.clone()
    spread, level = _SignSteps((len(routers), experts), rate), _SignSteps((len(routers), 1), rate)

    with _in_eval(model):
        loads = _count(model, token_ids, count_mask, batch_size)
        before, skipped = load_stats(loads), loads[:, experts:]
        for _ in range(steps):
            expert_loads = loads[:, :experts].double()
            update = spread(torch.sign(expert_loads.mean(dim=1, keepdim=True) - expert_loads).float())
            # The sign rule with adaptive steps also moves all experts together (15 rising against
            # one falling): measured, that left some layers skipping 40% of their tokens and others
            # none. Only differences between expert biases decide among experts, so the common part
            # is taken out and steered instead to keep each layer's skip share where it was:
            # balancing evens the experts, it does not change how often mixture-of-depths skips.
            update -= update.mean(dim=1, keepdim=True)
            update += level(torch.sign(loads[:, experts:] - skipped).float())
            biases[:, :experts] += update
            for router, row in zip(routers, biases):
                router.balancing_biases.copy_(row)  # in place: views of the buffer (an engine's) see it
            loads = _count(model, token_ids, count_mask, batch_size)
    return {
        "steps": steps,
        "tokens_counted": int(loads[0].sum()),
        "before": before,
        "after": load_stats(loads),
        "max_bias_change": round(float((biases - start).abs().max()), 6),
    }
