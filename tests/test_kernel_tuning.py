"""Launch parameters: the per-device table, and ZAYA_KERNEL_TUNING files that override it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from model.kernels.moe import moe_config
from model.kernels.tuning import DEFAULT, kernel_config


def test_moe_regimes_by_token_count() -> None:
    cpu = "cpu"
    assert moe_config(1, 16, cpu) == DEFAULT["moe_small"]
    assert moe_config(63, 16, cpu) == DEFAULT["moe_small"]
    assert moe_config(64, 16, cpu) == DEFAULT["moe_medium"]
    assert moe_config(512, 16, cpu) == DEFAULT["moe_medium"]
    assert moe_config(513, 16, cpu) == DEFAULT["moe_large"]


def test_override_file_replaces_named_fields_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    f = tmp_path / "t.json"
    f.write_text(json.dumps({"moe_medium": {"block_m": 128, "num_warps": 8}}))
    monkeypatch.setenv("ZAYA_KERNEL_TUNING", str(f))
    got = kernel_config("moe_medium", "cpu")
    assert (got.block_m, got.num_warps) == (128, 8)
    assert (got.block_n, got.block_k, got.num_stages) == (DEFAULT["moe_medium"].block_n,
                                                         DEFAULT["moe_medium"].block_k,
                                                         DEFAULT["moe_medium"].num_stages)
    assert kernel_config("router", "cpu") == DEFAULT["router"]


@pytest.mark.parametrize("content,msg", [
    ({"moe_mediun": {"block_m": 64}}, "unknown kernel 'moe_mediun'"),
    ({"moe_medium": {"block_q": 64}}, "must map fields"),
    ({"moe_medium": {"block_m": 0}}, "must map fields"),
    ([1, 2], "expected an object"),
])
def test_bad_override_files_are_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, content, msg: str) -> None:
    f = tmp_path / "bad.json"
    f.write_text(json.dumps(content))
    monkeypatch.setenv("ZAYA_KERNEL_TUNING", str(f))
    with pytest.raises(ValueError, match=msg):
        kernel_config("moe_medium", "cpu")


def test_unreadable_override_file_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ZAYA_KERNEL_TUNING", str(tmp_path / "missing.json"))
    with pytest.raises(ValueError, match="cannot read"):
        kernel_config("rotary", "cpu")


def test_tune_decode_sweep_times_each_candidate_under_its_own_config(tmp_path: Path, monkeypatch) -> None:
    """Regression: the sweep once rewrote one override file per candidate, and the table's
    per-path cache kept the first candidate for all of them."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
    import tune_decode

    from model.kernels.tuning import KernelConfig

    monkeypatch.setattr(tune_decode, "graph_time", lambda fn, reps=15: fn())
    grid = [KernelConfig(16, 64, 64, 4, 2), KernelConfig(128, 64, 64, 4, 2)]
    best, lines = tune_decode.sweep("moe_medium", grid, {"case": None},
                                    lambda _: float(kernel_config("moe_medium", "cpu").block_m), tmp_path)
    assert best.block_m == 16
    assert [line.split()[1] for line in lines] == [f"m{DEFAULT['moe_medium'].block_m}", "m16", "m128"]
