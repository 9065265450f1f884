"""ZAYA1 configuration: the published 8B sizes, the tiny configuration, config.json compatibility."""

from __future__ import annotations

import dataclasses

import pytest

from model import Zaya1Config, parameter_counts
from model.config import RopeParameters


def test_8b_parameter_counts_match_the_published_figures() -> None:
    counts = parameter_counts(Zaya1Config.named("zaya1-8b"))
    print(f"zaya1-8b parameters: {counts}")
    # Measured on the meta device; the reference ZayaForCausalLM gives the same 8,840,488,784.
    assert counts["total"] == 8_840_488_784  # "8.84B in all"
    assert counts["non_embedding"] == 8_303_355_728  # the published "8.3B total"
    # Active per token: attention + router + norms + residual scalings + one of 16 experts,
    # per layer (embeddings excluded) = 753.6M; the report rounds it to "760M active".
    assert counts["active"] == 753_608_528
    assert abs(counts["active"] - 760e6) / 760e6 < 0.01


def test_named_8b_configuration_is_the_reference_default() -> None:
    transformers = pytest.importorskip("transformers")
    ours = Zaya1Config.named("zaya1-8b")
    reference = transformers.ZayaConfig()
    assert Zaya1Config.from_dict(reference.to_dict(), source="reference") == ours
    assert ours.layer_types == ("hybrid",) * 40 and ours.eos_token_ids == (106,)


def test_tiny_configuration_turns_every_feature_on() -> None:
    tiny = Zaya1Config.named("tiny")
    assert set(tiny.layer_types) == {"hybrid", "hybrid_sliding"} and tiny.sliding_window
    assert tiny.kv_groups == 2  # grouped query heads
    assert tiny.rope_parameters["hybrid"].partial_rotary_factor == 0.5
    assert tiny.num_experts >= 2 and tiny.num_hidden_layers >= 2  # experts and depth averaging
    assert tiny.tie_word_embeddings and tiny.conv_state_len == 2
    assert (tiny.vocab_size, tiny.pad_token_id, tiny.bos_token_id, tiny.eos_token_ids) == (32768, 0, 2, (3, 5))


def test_config_json_round_trips_through_the_reference_config() -> None:
    transformers = pytest.importorskip("transformers")
    tiny = Zaya1Config.named("tiny")
    assert Zaya1Config.from_dict(tiny.to_dict()) == tiny
    raw = {k: v for k, v in tiny.to_dict().items() if k not in ("model_type", "architectures")}
    assert Zaya1Config.from_dict(transformers.ZayaConfig(**raw).to_dict()) == tiny


def test_hub_config_with_a_stray_top_level_rope_type_is_read() -> None:
    raw = Zaya1Config.named("zaya1-8b").to_dict()
    raw["rope_parameters"]["rope_type"] = "default"  # as on the hub (Zyphra/ZAYA1-8B discussion 19)
    raw["rope_parameters"]["hybrid"]["rope_theta"] = 1_000_000.0
    config = Zaya1Config.from_dict(raw)
    assert config.rope_parameters["hybrid"] == RopeParameters(rope_theta=1_000_000.0, partial_rotary_factor=0.5)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"num_experts_per_tok": 2}, "num_experts_per_tok=2: ZAYA1 routes each token to one expert"),
        ({"layer_types": ("hybrid_sliding",) * 40}, "sliding_window must be set"),
        ({"layer_types": ("hybrid",) * 39}, "layer_types has 39 entries for 40 layers"),
        ({"layer_types": ("hybrid",) * 39 + ("mamba",)}, "layer_types[39]='mamba'"),
        ({"num_key_value_heads": 3}, "num_attention_heads=8 is not a multiple of num_key_value_heads=3"),
    ],
)
def test_invalid_configurations_are_refused(change: dict, message: str) -> None:
    with pytest.raises(ValueError) as err:
        dataclasses.replace(Zaya1Config.named("zaya1-8b"), **change)
    assert message in str(err.value)


def test_other_model_types_are_refused() -> None:
    with pytest.raises(ValueError, match=r"x.json: model_type='llama', expected 'zaya'"):
        Zaya1Config.from_dict({"model_type": "llama"}, source="x.json")
