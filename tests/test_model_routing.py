"""Fitting the router's balancing biases (model.routing) on the tiny model.

The tiny model's random router is skewed (worst layer sends ~3.5x the mean expert load to one
expert); a fit must bring the calibration tokens close to even loads, carry over to tokens it
never saw, leave the skip class's bias and each layer's skip share alone, and be deterministic.
"""

from __future__ import annotations

import math

import pytest
import torch

from model import Zaya1ForCausalLM, balance_routing_, load_stats, routing_loads
from model.tiny import build_tiny
from torch_checks import one_thread  # noqa: F401 (autouse fixture)

VOCAB = 32768  # the tiny config's
CAL = torch.randint(8, VOCAB, (32, 16), generator=torch.Generator().manual_seed(1))  # 512 tokens
HELD = torch.randint(8, VOCAB, (32, 16), generator=torch.Generator().manual_seed(2))


def biases(model: Zaya1ForCausalLM) -> torch.Tensor:
    return torch.stack([layer.mlp.gate.balancing_biases.clone() for layer in model.model.layers])


@pytest.fixture(scope="module")
def fitted() -> tuple[Zaya1ForCausalLM, torch.Tensor, dict]:
    model = build_tiny()
    start = biases(model)
    return model, start, balance_routing_(model, CAL)


def test_routing_loads_counts_what_the_router_chooses() -> None:
    model = build_tiny()
    experts = model.config.num_experts
    model.model.layers[0].mlp.gate.balancing_biases[2] += 10.0  # beats any probability gap
    loads = routing_loads(model, CAL)
    assert loads.shape == (len(model.model.layers), experts + 1) and loads.dtype == torch.int64
    assert loads[0].tolist() == [0, 0, CAL.numel(), 0, 0]
    assert (loads.sum(dim=1) == CAL.numel()).all()
    mask = torch.zeros_like(CAL, dtype=torch.bool)
    mask[:, 10:] = True
    masked = routing_loads(model, CAL, count_mask=mask)
    assert (masked.sum(dim=1) == int(mask.sum())).all()
    # Chunked forwards count the same tokens the same way.
    assert torch.equal(routing_loads(model, CAL, batch_size=5), loads)


def test_fit_evens_the_calibration_loads(fitted) -> None:
    model, _, stats = fitted
    before, after = stats["before"]["max_over_mean"], stats["after"]["max_over_mean"]
    assert max(before) > 2.5  # the random router starts skewed, or this test shows nothing
    assert max(after) <= 1.1, after
    assert all(n == model.config.num_experts for n in stats["after"]["distinct_experts"])
    assert stats["steps"] == 40 and stats["tokens_counted"] == CAL.numel()
    # The reported "after" is the model as it is now.
    assert stats["after"] == load_stats(routing_loads(model, CAL))


def test_fit_carries_over_to_held_out_tokens(fitted) -> None:
    model, start, _ = fitted
    unfitted = build_tiny()
    assert torch.equal(biases(unfitted), start)
    held_before = max(load_stats(routing_loads(unfitted, HELD))["max_over_mean"])
    held_after = max(load_stats(routing_loads(model, HELD))["max_over_mean"])
    assert held_before > 2.5
    assert held_after <= 1.5 and held_after < 0.5 * held_before, (held_before, held_after)


def test_only_expert_biases_move_and_stay_fp32_in_place(fitted) -> None:
    model, start, stats = fitted
    now = biases(model)
    assert now.dtype == torch.float32
    assert torch.equal(now[:, -1], start[:, -1])  # skip class untouched
    change = (now[:, :-1] - start[:, :-1]).abs()
    assert (change.amax(dim=1) > 1e-3).all()  # every layer's experts moved
    assert math.isclose(stats["max_bias_change"], float(change.max()), abs_tol=1e-6)


def test_fit_keeps_each_layers_skip_share(fitted) -> None:
    _, _, stats = fitted
    before, after = stats["before"]["skip_fraction"], stats["after"]["skip_fraction"]
    assert any(s > 0.03 for s in before)  # some layer skips, so there is a share to keep
    assert all(abs(a - b) <= 0.01 for a, b in zip(after, before)), (before, after)


def test_fit_is_deterministic_and_in_place(fitted) -> None:
    first_model, _, first_stats = fitted
    model = build_tiny().train()
    buffers = [layer.mlp.gate.balancing_biases for layer in model.model.layers]
    pointers = [b.data_ptr() for b in buffers]
    stats = balance_routing_(model, CAL.clone())
    assert torch.equal(biases(model), biases(first_model))
    assert stats == first_stats
    assert model.training  # the mode it was in comes back
    assert all(layer.mlp.gate.balancing_biases is b for layer, b in zip(model.model.layers, buffers))
    assert [b.data_ptr() for b in buffers] == pointers  # views of the buffers (an engine's) see the fit


def test_count_mask_balances_only_the_counted_positions() -> None:
    model = build_tiny()
    mask = torch.zeros_like(CAL, dtype=torch.bool)
    mask[:, 8:] = True
    expected_before = load_stats(routing_loads(model, CAL, count_mask=mask))
    stats = balance_routing_(model, CAL, count_mask=mask, steps=30)
    assert stats["tokens_counted"] == int(mask.sum())
    assert stats["before"] == expected_before
    assert max(stats["after"]["max_over_mean"]) <= 1.15


def test_bf16_model_keeps_fp32_biases() -> None:
    model = build_tiny().to_dtype(torch.bfloat16)
    stats = balance_routing_(model, CAL[:8], steps=4)
    assert stats["steps"] == 4
    assert all(layer.mlp.gate.balancing_biases.dtype == torch.float32 for layer in model.model.layers)
    assert stats["max_bias_change"] > 0


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"steps": 0}, ValueError, "steps"),
        ({"steps": 2.5}, ValueError, "steps"),
        ({"steps": True}, ValueError, "steps"),
        ({"rate": 0.0}, ValueError, "rate"),
        ({"rate": -0.01}, ValueError, "rate"),
        ({"rate": float("nan")}, ValueError, "rate"),
        ({"rate": 0.5}, ValueError, "rate"),
        ({"token_ids": CAL[0]}, ValueError, "2-D"),
        ({"token_ids": CAL[:0]}, ValueError, "non-empty"),
        ({"token_ids": CAL.float()}, TypeError, "integer"),
        ({"token_ids": CAL.tolist()}, TypeError, "torch.Tensor"),
        ({"token_ids": CAL + VOCAB}, ValueError, r"\[0, 32768\)"),
        ({"count_mask": torch.ones(3, 3, dtype=torch.bool)}, ValueError, "shape"),
        ({"count_mask": torch.zeros_like(CAL, dtype=torch.bool)}, ValueError, "no token"),
        ({"count_mask": torch.ones_like(CAL)}, TypeError, "bool"),
        ({"batch_size": 0}, ValueError, "batch_size"),
    ],
)
def test_bad_arguments_raise(kwargs: dict, error: type[Exception], match: str) -> None:
    model = build_tiny()
    start = biases(model)
    kwargs = dict(kwargs)  # the parameter's dict is shared between runs
    token_ids = kwargs.pop("token_ids", CAL)
    with pytest.raises(error, match=match):
        balance_routing_(model, token_ids, **kwargs)
    assert torch.equal(biases(model), start)  # checked before anything moves


def test_wrong_model_or_bias_dtype_raises() -> None:
    with pytest.raises(TypeError, match="Zaya1ForCausalLM"):
        balance_routing_(torch.nn.Linear(2, 2), CAL)  # type: ignore[arg-type]
    model = build_tiny()
    model.model.layers[1].mlp.gate.balancing_biases.data = model.model.layers[1].mlp.gate.balancing_biases.half()
    with pytest.raises(ValueError, match="float32"):
        balance_routing_(model, CAL)
