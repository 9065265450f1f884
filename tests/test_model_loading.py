"""Checkpoint folders in the Hugging Face layout: round trips, and every refusal names its tensor and file."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from model import CheckpointError, Zaya1Config, Zaya1ForCausalLM, load_model, randomize_, save_checkpoint
from model.loading import INDEX_NAME, WEIGHTS_NAME
from torch_checks import one_thread  # noqa: F401 (autouse fixture)

CONFIG = dataclasses.replace(Zaya1Config.named("tiny"), vocab_size=97, sliding_window=6, eos_token_id=3)
IDS = torch.tensor([[2, 17, 40, 9, 33, 81, 5, 64]])




@pytest.fixture(scope="module")
def model() -> Zaya1ForCausalLM:
    return randomize_(Zaya1ForCausalLM(CONFIG), seed=13, skip_bias=0.2).eval()


@pytest.fixture()
def saved(model: Zaya1ForCausalLM, tmp_path: Path) -> Path:
    save_checkpoint(model, tmp_path / "ckpt")
    return tmp_path / "ckpt"


def assert_same_model(a: Zaya1ForCausalLM, b: Zaya1ForCausalLM) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for name in sa:
        assert torch.equal(sa[name], sb[name]), name
    with torch.no_grad():
        assert torch.equal(a(IDS), b(IDS))


def test_single_file_round_trip_is_exact_and_drops_the_tied_head(model: Zaya1ForCausalLM, saved: Path) -> None:
    assert sorted(p.name for p in saved.iterdir()) == ["config.json", WEIGHTS_NAME]
    stored = load_file(saved / WEIGHTS_NAME)
    assert "lm_head.weight" not in stored and len(stored) == len(model.state_dict()) - 1
    loaded = load_model(saved)
    assert loaded.lm_head.weight is loaded.model.embed_tokens.weight
    assert loaded.config == model.config
    assert_same_model(model, loaded)


def test_sharded_round_trip_writes_an_index_and_loads_the_same_model(model: Zaya1ForCausalLM, tmp_path: Path) -> None:
    save_checkpoint(model, tmp_path, max_shard_bytes=200_000)
    index = json.loads((tmp_path / INDEX_NAME).read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) >= 2 and shards[0] == f"model-00001-of-{len(shards):05d}.safetensors"
    assert not (tmp_path / WEIGHTS_NAME).exists()
    assert_same_model(model, load_model(tmp_path))


def test_balancing_biases_load_as_stored_unless_forced(model: Zaya1ForCausalLM, saved: Path) -> None:
    stored = model.model.layers[1].mlp.gate.balancing_biases
    assert stored[-1].item() == pytest.approx(0.2)
    assert torch.equal(load_model(saved).model.layers[1].mlp.gate.balancing_biases, stored)
    forced = load_model(saved, force_skip_bias=-1.0).model.layers[1].mlp.gate.balancing_biases
    assert forced[-1].item() == -1.0 and torch.equal(forced[:-1], stored[:-1])


def test_bf16_load_keeps_router_biases_in_fp32(saved: Path) -> None:
    loaded = load_model(saved, dtype=torch.bfloat16)
    assert loaded.dtype == torch.bfloat16
    assert loaded.model.layers[0].mlp.experts.gate_up_proj.dtype == torch.bfloat16
    assert loaded.model.layers[0].mlp.gate.balancing_biases.dtype == torch.float32


def test_reference_from_pretrained_reads_our_folder(model: Zaya1ForCausalLM, tmp_path: Path) -> None:
    transformers = pytest.importorskip("transformers")
    # The reference forces the skip bias to -1 on load; store -1 so both models agree.
    published_like = randomize_(Zaya1ForCausalLM(CONFIG), seed=13, skip_bias=-1.0).eval()
    save_checkpoint(published_like, tmp_path)
    reference = transformers.ZayaForCausalLM.from_pretrained(tmp_path, attn_implementation="eager").eval()
    with torch.no_grad():
        got, want = published_like(IDS), reference(input_ids=IDS).logits
    assert ((got - want).norm() / want.norm()).item() < 1e-5


def _rewrite(folder: Path, edit) -> None:
    tensors = load_file(folder / WEIGHTS_NAME)
    edit(tensors)
    save_file(tensors, str(folder / WEIGHTS_NAME))


def test_missing_tensor_is_named(saved: Path) -> None:
    _rewrite(saved, lambda t: t.pop("model.layers.2.self_attn.qk_norm.temp"))
    with pytest.raises(CheckpointError, match=r"missing tensors \['model.layers.2.self_attn.qk_norm.temp'\]"):
        load_model(saved)


def test_unexpected_tensor_is_named_with_its_file(saved: Path) -> None:
    _rewrite(saved, lambda t: t.update({"model.layers.0.mlp.extra_gate": torch.zeros(3)}))
    with pytest.raises(CheckpointError, match=r"unexpected tensors 'model.layers.0.mlp.extra_gate' \(in model.safetensors\)"):
        load_model(saved)


def test_misshaped_tensor_is_named_with_both_shapes(saved: Path) -> None:
    _rewrite(saved, lambda t: t.update({"model.layers.1.mlp.experts.down_proj": torch.zeros(4, 64, 63)}))
    with pytest.raises(CheckpointError) as err:
        load_model(saved)
    assert str(err.value) == (
        f"{saved / WEIGHTS_NAME}: tensor 'model.layers.1.mlp.experts.down_proj' has shape (4, 64, 63), expected (4, 64, 64)"
    )


def test_tied_head_that_differs_from_the_embedding_is_refused(saved: Path) -> None:
    _rewrite(saved, lambda t: t.update({"lm_head.weight": t["model.embed_tokens.weight"] + 1}))
    with pytest.raises(CheckpointError, match="'lm_head.weight' differs from 'model.embed_tokens.weight'"):
        load_model(saved)


def test_folder_without_safetensors_is_refused(saved: Path) -> None:
    (saved / WEIGHTS_NAME).unlink()
    with pytest.raises(CheckpointError, match=f"no {WEIGHTS_NAME} and no {INDEX_NAME}"):
        load_model(saved)


def test_pickled_weights_are_refused_without_being_opened(saved: Path) -> None:
    (saved / WEIGHTS_NAME).unlink()
    # Not a valid pickle at all: proof that the loader refuses by name and never reads it.
    (saved / "pytorch_model.bin").write_bytes(b"\x80\x04 not a pickle")
    with pytest.raises(CheckpointError, match=r"pickled weights \['pytorch_model.bin'\] only; pickles are never loaded"):
        load_model(saved)


def test_index_pointing_at_a_missing_shard_is_named(model: Zaya1ForCausalLM, tmp_path: Path) -> None:
    save_checkpoint(model, tmp_path, max_shard_bytes=200_000)
    (tmp_path / "model-00002-of-{:05d}.safetensors".format(len(set(json.loads((tmp_path / INDEX_NAME).read_text())["weight_map"].values())))).unlink()
    with pytest.raises(CheckpointError, match=r"maps to missing shard .*model-00002-of-"):
        load_model(tmp_path)


def test_index_listing_a_tensor_its_shard_lacks_is_named(model: Zaya1ForCausalLM, tmp_path: Path) -> None:
    save_checkpoint(model, tmp_path, max_shard_bytes=200_000)
    index = json.loads((tmp_path / INDEX_NAME).read_text())
    name = "model.norm.weight"
    wrong = next(s for s in sorted(set(index["weight_map"].values())) if s != index["weight_map"][name])
    index["weight_map"][name] = wrong
    (tmp_path / INDEX_NAME).write_text(json.dumps(index))
    with pytest.raises(CheckpointError, match=f"{wrong}: tensor 'model.norm.weight' listed in {INDEX_NAME} is not in this file"):
        load_model(tmp_path)


def test_config_with_an_unknown_field_is_refused(saved: Path) -> None:
    raw = json.loads((saved / "config.json").read_text())
    raw["num_expertz"] = 4
    (saved / "config.json").write_text(json.dumps(raw))
    with pytest.raises(ValueError, match=r"config.json: unknown config fields \['num_expertz'\]"):
        load_model(saved)
