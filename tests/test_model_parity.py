"""Our ZAYA1 forward equals the reference `transformers.ZayaForCausalLM` on the same random weights.

Tiny configuration with every feature on (CCA with grouped heads, partial RoPE, full and
sliding layers, router with depth averaging, non-zero `temp`, residual scalings), fp32,
relative error of the logits under 1e-5.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

pytest.importorskip("transformers")

from model import Zaya1Config, Zaya1ForCausalLM, randomize_
from model.hf_reference import reference_model
from torch_checks import one_thread  # noqa: F401 (autouse fixture)

VOCAB = 97
CONFIG = dataclasses.replace(Zaya1Config.named("tiny"), vocab_size=VOCAB, sliding_window=5, eos_token_id=3)
# Prompt lengths of the left-padded batch: the longest exceeds the sliding window twice over.
LENGTHS = (14, 9, 3)




def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


def left_padded_batch(seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    longest = max(LENGTHS)
    ids = torch.zeros(len(LENGTHS), longest, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, n in enumerate(LENGTHS):
        ids[i, longest - n :] = torch.randint(4, VOCAB, (n,), generator=gen)
        mask[i, longest - n :] = 1
    positions = (mask.cumsum(-1) - 1).clamp_min(0)
    return ids, mask, positions


def route_recorder(model: Zaya1ForCausalLM) -> list[torch.Tensor]:
    """Collects every router's choices (0..E-1 experts, E = skip) during forwards."""
    choices: list[torch.Tensor] = []
    for layer in model.model.layers:
        layer.mlp.gate.register_forward_hook(lambda _m, _inp, out: choices.append(out[1].flatten()))
    return choices


@pytest.mark.parametrize("skip_bias", [-1.0, 0.15], ids=["published-skip-bias", "skip-class-hit"])
@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_left_padded_batch_logits_match_reference(skip_bias: float, attn: str) -> None:
    ours = randomize_(Zaya1ForCausalLM(CONFIG), seed=11, skip_bias=skip_bias).eval()
    reference = reference_model(ours, attn_implementation=attn)
    choices = route_recorder(ours)
    ids, mask, positions = left_padded_batch(seed=3)
    with torch.no_grad():
        got = ours(ids, attention_mask=mask, position_ids=positions)
        want = reference(input_ids=ids, attention_mask=mask, position_ids=positions).logits
    valid = mask.bool()
    assert rel_err(got[valid], want[valid]) < 1e-5
    routed = torch.cat(choices)[valid.flatten().repeat(CONFIG.num_hidden_layers)]
    assert len(set(routed.tolist()) - {CONFIG.num_experts}) >= 3  # several experts hit
    skip_hits = int((routed == CONFIG.num_experts).sum())
    if skip_bias == -1.0:
        assert skip_hits == 0  # with -1 the skip class can never win top-1
    else:
        assert 0 < skip_hits < routed.numel()


def test_left_padding_does_not_change_a_prompts_logits() -> None:
    ours = randomize_(Zaya1ForCausalLM(CONFIG), seed=5, skip_bias=0.15).eval()
    ids, mask, _ = left_padded_batch(seed=4)
    with torch.no_grad():
        batched = ours(ids, attention_mask=mask)
        for i, n in enumerate(LENGTHS):
            alone = ours(ids[i : i + 1, -n:])
            assert rel_err(batched[i, -n:], alone[0]) < 1e-5


def test_prefill_then_cached_decode_matches_reference_cached_decode() -> None:
    ours = randomize_(Zaya1ForCausalLM(CONFIG), seed=21, skip_bias=0.15).eval()
    reference = reference_model(ours)
    ids, mask, positions = left_padded_batch(seed=8)
    steps = 10
    new_tokens = torch.randint(4, VOCAB, (len(LENGTHS), steps), generator=torch.Generator().manual_seed(9))
    cache = ours.new_cache(len(LENGTHS), ids.shape[1] + steps)
    with torch.no_grad():
        got = ours(ids, attention_mask=mask, position_ids=positions, cache=cache)
        out = reference(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True)
        valid = mask.bool()
        assert rel_err(got[valid], out.logits[valid]) < 1e-5
        ref_cache = out.cache
        for step in range(steps):
            mask = torch.cat([mask, torch.ones(len(LENGTHS), 1, dtype=mask.dtype)], dim=1)
            positions = positions[:, -1:] + 1
            token = new_tokens[:, step : step + 1]
            got = ours(token, attention_mask=mask, position_ids=positions, cache=cache)
            out = reference(input_ids=token, attention_mask=mask, position_ids=positions, cache=ref_cache, use_cache=True)
            ref_cache = out.cache
            assert rel_err(got, out.logits) < 1e-5, f"decode step {step}"
    assert cache.length == ids.shape[1] + steps


def test_bf16_forward_is_bit_identical_to_the_reference_sdpa_path() -> None:
    # The reference casts its balancing biases to bf16 with the model; ours stay fp32. With
    # bf16-representable biases both route identically, and every op runs in the same order.
    ours = randomize_(Zaya1ForCausalLM(CONFIG), seed=7, skip_bias=0.15).eval().to_dtype(torch.bfloat16)
    for layer in ours.model.layers:
        biases = layer.mlp.gate.balancing_biases
        biases.copy_(biases.bfloat16().float())
    reference = reference_model(ours, attn_implementation="sdpa")
    ids, mask, positions = left_padded_batch(seed=6)
    with torch.no_grad():
        got = ours(ids, attention_mask=mask, position_ids=positions)
        want = reference(input_ids=ids, attention_mask=mask, position_ids=positions).logits
    assert got.dtype == want.dtype == torch.bfloat16
    valid = mask.bool()
    assert torch.equal(got[valid], want[valid])
