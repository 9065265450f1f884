"""Incremental decoding with the CCA cache gives the logits of one full forward pass."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from model import Zaya1Config, Zaya1ForCausalLM, randomize_
from torch_checks import one_thread  # noqa: F401 (autouse fixture)

CONFIG = dataclasses.replace(Zaya1Config.named("tiny"), vocab_size=97, sliding_window=6, eos_token_id=3)




def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


def test_prefill_then_70_single_token_steps_equal_the_full_forward() -> None:
    model = randomize_(Zaya1ForCausalLM(CONFIG), seed=1, skip_bias=0.15).eval()
    ids = torch.randint(4, CONFIG.vocab_size, (2, 80), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        full = model(ids)
        cache = model.new_cache(2, 80)
        pieces = [model(ids[:, :10], cache=cache)]
        pieces += [model(ids[:, t : t + 1], cache=cache) for t in range(10, 80)]
    stepped = torch.cat(pieces, dim=1)
    assert cache.length == 80
    assert rel_err(stepped, full) < 1e-5
    # Every decode step on its own, not only on average.
    for t in range(80):
        assert rel_err(stepped[:, t], full[:, t]) < 1e-5, f"position {t}"


def test_chunked_prefill_continues_the_convolution_and_value_state() -> None:
    # Multi-token chunks after the first exercise the cached conv window and delayed values
    # with T > 1, and a chunk longer than the sliding window.
    model = randomize_(Zaya1ForCausalLM(CONFIG), seed=2, skip_bias=0.15).eval()
    ids = torch.randint(4, CONFIG.vocab_size, (1, 30), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        full = model(ids)
        cache = model.new_cache(1, 30)
        chunks = [model(ids[:, a:b], cache=cache) for a, b in ((0, 7), (7, 8), (8, 19), (19, 30))]
    assert rel_err(torch.cat(chunks, dim=1), full) < 1e-5


def test_bf16_cached_decode_tracks_the_bf16_full_forward() -> None:
    model = randomize_(Zaya1ForCausalLM(CONFIG), seed=3, skip_bias=-1.0).eval().to_dtype(torch.bfloat16)
    assert model.model.layers[0].mlp.gate.balancing_biases.dtype == torch.float32
    ids = torch.randint(4, CONFIG.vocab_size, (1, 24), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        full = model(ids)
        cache = model.new_cache(1, 24)
        stepped = torch.cat([model(ids[:, :8], cache=cache)] + [model(ids[:, t : t + 1], cache=cache) for t in range(8, 24)], 1)
    assert full.dtype == torch.bfloat16 and cache.layers[0].k.dtype == torch.bfloat16
    # bf16 rounding differs between one pass and many: a loose bound, far below a wrong state (~0.3+).
    assert rel_err(stepped.float(), full.float()) < 3e-2


def test_cache_overflow_is_an_error() -> None:
    model = randomize_(Zaya1ForCausalLM(CONFIG), seed=4).eval()
    cache = model.new_cache(1, 4)
    with torch.no_grad():
        model(torch.tensor([[5, 6, 7]]), cache=cache)
        try:
            model(torch.tensor([[8, 9]]), cache=cache)
        except ValueError as exc:
            assert "holds 4 positions; 3 used, 2 more requested" in str(exc)
        else:
            raise AssertionError("overflow not detected")
