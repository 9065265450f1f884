"""Mixture files: valid files parse; every bad key or value is named with file and line."""

from __future__ import annotations

from pathlib import Path

import pytest

from zaya_data.config import ConfigError, load_mixture, parse_size

REPO = Path(__file__).resolve().parents[1]

GOOD = """\
name: t
seed: 7
sources:
  a:
    path: data/*.jsonl
    format: jsonl
    category: math
  b:
    path: data/*.jsonl
    format: jsonl
    category: code
phases:
  p:
    context: 128
    token_budget: 1.5M
    weights: {a: 3, b: 0}
"""


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "mix.yaml"
    p.write_text(text)
    return p


def test_shipped_mixtures_parse() -> None:
    demo = load_mixture(REPO / "mixtures" / "demo.yaml")
    assert set(demo.phases) == {"pretrain_1", "pretrain_2", "midtrain", "sft", "rl_general", "rl_code"}
    assert demo.phases["midtrain"].context == 32768 and demo.phases["midtrain"].rope_base == 1e6
    assert demo.phases["sft"].context == 131072 and demo.phases["sft"].loss == "assistant"


def test_sizes_accept_si_suffixes() -> None:
    assert parse_size("1.2T") == 1_200_000_000_000
    assert parse_size("660B") == 660_000_000_000
    assert parse_size("2M") == 2_000_000
    assert parse_size(4096) == 4096
    with pytest.raises(ValueError):
        parse_size("lots")


def test_relative_paths_resolve_against_the_mixture_folder(tmp_path: Path) -> None:
    mix = load_mixture(write(tmp_path, GOOD))
    assert mix.sources["a"].paths == (str(tmp_path / "data" / "*.jsonl"),)
    assert mix.phases["p"].token_budget == 1_500_000
    assert mix.seed == 7


@pytest.mark.parametrize(
    "old,new,line,key",
    [
        ("    format: jsonl\n    category: math", "    format: csvv\n    category: math", 6, "sources.a.format"),
        ("    context: 128", "    context: many", 14, "phases.p.context"),
        ("    weights: {a: 3, b: 0}", "    weights: {a: 3, zz: 1}", 16, "phases.p.weights.zz"),
        ("    weights: {a: 3, b: 0}", "    weights: {a: 0, b: 0}", 16, "phases.p.weights"),
        ("    weights: {a: 3, b: 0}", "    weights: {a: -1, b: 2}", 16, "phases.p.weights.a"),
        ("    token_budget: 1.5M", "    token_budgte: 1.5M", 15, "phases.p.token_budgte"),
        ("    token_budget: 1.5M", "    token_budget: -3", 15, "phases.p.token_budget"),
        ("    category: code\n", "    category: code\n    split: halves\n", 12, "sources.b.split"),
    ],
)
def test_a_bad_key_or_value_is_named_with_file_and_line(tmp_path: Path, old: str, new: str, line: int, key: str) -> None:
    assert old in GOOD
    p = write(tmp_path, GOOD.replace(old, new, 1))
    with pytest.raises(ConfigError) as e:
        load_mixture(p)
    msg = str(e.value)
    assert msg.startswith(f"{p}:{line}: {key}:"), msg


def test_missing_required_key_is_named(tmp_path: Path) -> None:
    p = write(tmp_path, GOOD.replace("    category: math\n", ""))
    with pytest.raises(ConfigError, match=r"sources\.a\.category: required key is missing"):
        load_mixture(p)


def test_unset_environment_variable_in_a_path_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ZAYA_NOPE", raising=False)
    p = write(tmp_path, GOOD.replace("data/*.jsonl", "${ZAYA_NOPE}/x.jsonl", 1))
    with pytest.raises(ConfigError, match=r"ZAYA_NOPE"):
        load_mixture(p)


def test_invalid_yaml_names_the_file(tmp_path: Path) -> None:
    p = write(tmp_path, "sources: [unclosed\n")
    with pytest.raises(ConfigError, match=str(p)):
        load_mixture(p)


def test_zaya1_mixture_carries_the_reports_phase_facts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ZAYA_CORPORA", "/corpora")
    mix = load_mixture(REPO / "mixtures" / "zaya1.yaml")
    p = mix.phases
    assert (p["pretrain_1"].context, p["pretrain_2"].context) == (4096, 4096)
    assert (p["midtrain"].context, p["midtrain"].rope_base, p["midtrain"].token_budget) == (32768, 1e6, 1_200_000_000_000)
    assert (p["sft"].context, p["sft"].rope_base, p["sft"].token_budget) == (131072, 5e6, 660_000_000_000)
    assert max(p["midtrain"].weights, key=p["midtrain"].weights.get) == "long_cot"
    for cat in ("code", "math", "long_cot", "instruction"):  # phase 2 upweights these
        assert p["pretrain_2"].weights[cat] > p["pretrain_1"].weights[cat]
    for cat in ("long_context", "web", "synthetic", "multilingual"):  # SFT has more of these
        assert p["sft"].weights.get(cat, 0) > p["midtrain"].weights.get(cat, 0)
    assert p["rl_general"].kind == p["rl_code"].kind == "prompts"
    assert p["rl_code"].weights["code_standard"] > p["rl_general"].weights["code_standard"]
    assert mix.sources["cot_math"].paths == ("/corpora/cot/math/**/*.parquet",)
