"""Mixture files: valid files parse; every bad key or value is named with file and line."""

from __future__ import annotations

from pathlib import Path

import pytest

from zaya_data.cli import main
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
        # top level
        ("name: t", "name: [t]", 1, "name"),
        ("seed: 7", "seed: seven", 2, "seed"),
        ("seed: 7", "seed: -1", 2, "seed"),
        ("seed: 7", "seed: 7\ndescription: 5", 3, "description"),
        ("seed: 7", "seed: 7\ntokenizer: 5", 3, "tokenizer"),
        ("seed: 7", "seed: 7\ntemplate: 5", 3, "template"),
        ("seed: 7", "seed: 7\ntemplate: {user: 5}", 3, "template.user"),
        ("seed: 7", "seed: 7\ncolour: red", 3, "colour"),
        # sources
        ("  a:\n    path: data/*.jsonl\n    format: jsonl\n    category: math\n", "  a: 5\n", 4, "sources.a"),
        ("    category: math", "    category: math\n    colour: red", 8, "sources.a.colour"),
        ("    category: math", "    category: math\n    kind: essay", 8, "sources.a.kind"),
        ("    category: math", "    category: [math]", 7, "sources.a.category"),
        ("    path: data/*.jsonl\n    format: jsonl\n    category: math",
         "    path: 5\n    format: jsonl\n    category: math", 5, "sources.a.path"),
        ("    category: math", "    category: math\n    fields: [text]", 8, "sources.a.fields"),
        ("    category: math", "    category: math\n    fields: {text: 5}", 8, "sources.a.fields.text"),
        ("    category: math", "    category: math\n    fields: {text: 'a..b'}", 8, "sources.a.fields.text"),
        ("    category: math", "    category: math\n    fields: {texxt: a}", 8, "sources.a.fields.texxt"),
        ("    category: math", "    category: math\n    split: think", 8, "sources.a.split"),
        ("    category: math", "    category: math\n    kind: reasoning\n    fields: {trace: t, answer: a}\n"
         "    split: think", 9, "sources.a.fields"),
        ("    category: math", "    category: math\n    options: 5", 8, "sources.a.options"),
        ("    category: math", "    category: math\n    options: {meta: 3}", 8, "sources.a.options.meta"),
        ("    category: math", "    category: math\n    options: {max_record_bytes: 0}", 8,
         "sources.a.options.max_record_bytes"),
        ("    format: jsonl\n    category: math", "    format: text\n    category: math\n    kind: reasoning", 8,
         "sources.a.kind"),
        ("    format: jsonl\n    category: math", "    format: text\n    category: math\n    options: {min_chars: 0}",
         8, "sources.a.options.min_chars"),
        ("    path: data/*.jsonl\n    format: jsonl\n    category: math",
         "    format: reasoning_gym\n    category: math\n    options: {dataset: leg_counting, size: 0}", 7,
         "sources.a.options.size"),
        # phases
        ("  p:\n    context: 128\n    token_budget: 1.5M\n    weights: {a: 3, b: 0}\n", "  p: 5\n", 13, "phases.p"),
        ("    context: 128\n", "", 14, "phases.p.context"),
        ("    context: 128", "    context: 8", 14, "phases.p.context"),
        ("    context: 128", "    context: 128\n    kind: wrong", 15, "phases.p.kind"),
        ("    token_budget: 1.5M", "    token_budget: lots", 15, "phases.p.token_budget"),
        ("    context: 128", "    context: 128\n    prompt_budget: -1", 15, "phases.p.prompt_budget"),
        ("    context: 128", "    context: 128\n    weights_by: file", 15, "phases.p.weights_by"),
        ("    weights: {a: 3, b: 0}", "    weights: [a]", 16, "phases.p.weights"),
        ("    weights: {a: 3, b: 0}", "    weights: {a: high, b: 0}", 16, "phases.p.weights.a"),
        ("    weights: {a: 3, b: 0}", "    weights: {a: .nan, b: 1}", 16, "phases.p.weights.a"),
        ("    weights: {a: 3, b: 0}", "    weights_by: category\n    weights: {math: 1, art: 1}", 17,
         "phases.p.weights.art"),
        ("    context: 128", "    context: 128\n    max_repetition: 0.5", 15, "phases.p.max_repetition"),
        ("    context: 128", "    context: 128\n    max_repetition: many", 15, "phases.p.max_repetition"),
        ("    context: 128", "    context: 128\n    max_repetition_per_source: 3", 15,
         "phases.p.max_repetition_per_source"),
        ("    context: 128", "    context: 128\n    max_repetition_per_source: {zz: 2}", 15,
         "phases.p.max_repetition_per_source.zz"),
        ("    context: 128", "    context: 128\n    max_repetition_per_source: {a: 0.5}", 15,
         "phases.p.max_repetition_per_source.a"),
        ("    context: 128", "    context: 128\n    loss: some", 15, "phases.p.loss"),
        ("    context: 128", "    context: 128\n    trim_window: wide", 15, "phases.p.trim_window"),
        ("    context: 128", "    context: 128\n    trim_window: -5", 15, "phases.p.trim_window"),
        ("    context: 128", "    context: 128\n    shard_rows: 0", 15, "phases.p.shard_rows"),
        ("    context: 128", "    context: 128\n    shard_rows: 1.5", 15, "phases.p.shard_rows"),
        ("    context: 128", "    context: 128\n    rope_base: -1", 15, "phases.p.rope_base"),
        ("    context: 128", "    context: 128\n    rope_base: big", 15, "phases.p.rope_base"),
        ("    context: 128", "    context: 128\n    allow_shortfall: maybe", 15, "phases.p.allow_shortfall"),
        ("    context: 128", "    context: 128\n    description: 5", 15, "phases.p.description"),
        ("    context: 128", "    context: 128\n    template: 5", 15, "phases.p.template"),
        ("    context: 128", "    context: 128\n    template: {bogus: x}", 15, "phases.p.template.bogus"),
        ("    context: 128", "    context: 128\n    template: {add_bos: 1}", 15, "phases.p.template.add_bos"),
        ("phases:\n  p:\n    context: 128\n    token_budget: 1.5M\n    weights: {a: 3, b: 0}\n", "phases: {}\n", 12,
         "phases"),
    ],
)
def test_a_bad_key_or_value_is_named_with_file_and_line(tmp_path: Path, old: str, new: str, line: int, key: str) -> None:
    assert old in GOOD
    p = write(tmp_path, GOOD.replace(old, new, 1))
    with pytest.raises(ConfigError) as e:
        load_mixture(p)
    msg = str(e.value)
    assert msg.startswith(f"{p}:{line}: {key}:"), msg


def test_a_duplicate_key_is_named_with_file_and_line(tmp_path: Path) -> None:
    p = write(tmp_path, GOOD.replace("    context: 128", "    context: 128\n    context: 256", 1))
    with pytest.raises(ConfigError) as e:
        load_mixture(p)
    assert str(e.value) == f"{p}:15: duplicate key 'context'"


def test_a_yaml_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    p = write(tmp_path, GOOD.replace("    context: 128", "    context: [128", 1))
    with pytest.raises(ConfigError) as e:
        load_mixture(p)
    assert str(e.value).startswith(f"{p}:15: invalid YAML:"), str(e.value)


def test_the_cli_exits_2_and_prints_file_line_and_key(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    p = write(tmp_path, GOOD.replace("    context: 128", "    context: 128\n    trim_window: -5", 1))
    assert main(["build", str(p), "--dry-run"]) == 2
    err = " ".join(capsys.readouterr().err.split())  # rich wraps long lines
    assert f"{p}:15: phases.p.trim_window: must be >= 0 (tokens), got -5" in err


def test_a_path_matching_no_file_names_source_file_line_and_path(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture) -> None:
    # Paths are resolved when the build lists its files (a mixture may name corpora that
    # only the build machine has), so this one is reported by `build`, also in --dry-run.
    p = write(tmp_path, GOOD)
    assert main(["build", str(p), "--dry-run"]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert f"source 'a' ({p}:6): path '{tmp_path / 'data' / '*.jsonl'}' matches no file" in err


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
    monkeypatch.setenv("ZAYA_BENCHMARKS", "/bench")
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
    # cleaning: dedup everywhere, every phase (RL prompts too) decontaminated against the
    # evaluation sets, quality filters on web text, validation of reasoning traces
    for phase in p.values():
        for name, spec in phase.clean.items():
            assert spec.exact_dedup and spec.near_dedup is not None, (phase.name, name)
            assert [b.name for b in spec.decontaminate.benchmarks] == [
                "aime24", "aime25", "hmmt_feb25", "math500", "gpqa_diamond", "livecodebench"]
    web, math_web, cot_math = (p["pretrain_1"].clean[n] for n in ("web", "math_web", "cot_math"))
    assert [n for n, _ in web.quality] == ["gopher_quality", "gopher_repetition", "c4", "fineweb"]
    assert [n for n, _ in math_web.quality] == ["gopher_repetition", "fineweb"]
    assert cot_math.validate is not None and web.validate is None and cot_math.quality == ()
    gpqa = web.decontaminate.benchmarks[4]
    assert (gpqa.path, gpqa.format, gpqa.problem_field) == ("/bench/gpqa_diamond.parquet", "parquet", "Question")


CLEANED = """\
name: c
clean:
  exact_dedup: true
  quality: {c4: true}
sources:
  a:
    path: data/*.jsonl
    format: jsonl
    category: math
    clean:
      quality: {fineweb: true}
  b:
    path: data/*.jsonl
    format: jsonl
    category: code
  r:
    path: data/*.parquet
    format: parquet
    kind: rollout_group
    category: rsa
phases:
  p:
    context: 128
    token_budget: 1M
    weights: {a: 1, b: 1}
    clean:
      decontaminate:
        benchmarks:
          - {name: aime, path: bench/aime.jsonl}
  q:
    context: 128
    token_budget: 1M
    weights: {b: 1}
"""


def test_clean_sections_are_merged_onto_each_phase(tmp_path: Path) -> None:
    mix = load_mixture(write(tmp_path, CLEANED))
    assert mix.clean is not None and mix.clean.exact_dedup and [n for n, _ in mix.clean.quality] == ["c4"]
    p, q = mix.phases["p"].clean, mix.phases["q"].clean
    # only the sources taking part; the rollout group `r` is in no phase, so not an error
    assert sorted(p) == ["a", "b"] and sorted(q) == ["b"]
    assert [n for n, _ in p["a"].quality] == ["fineweb"] and [n for n, _ in p["b"].quality] == ["c4"]
    assert p["a"].exact_dedup and p["b"].exact_dedup and q["b"].exact_dedup
    # the phase's benchmark resolves against the mixture's folder, like source paths
    assert [b.path for b in p["a"].decontaminate.benchmarks] == [str(tmp_path / "bench" / "aime.jsonl")]
    assert q["b"].decontaminate is None
    assert p["a"].origin == f"{tmp_path / 'mix.yaml'}:10" and q["b"].origin == f"{tmp_path / 'mix.yaml'}:2"


@pytest.mark.parametrize(
    "old,new,message",
    [
        ("  exact_dedup: true\n", "  exact_dedup: yes please\n", ":2: clean.exact_dedup: expected true or false"),
        ("      quality: {fineweb: true}", "      quality: {finweb: true}", ":10: clean.quality.finweb: unknown key"),
        ("path: bench/aime.jsonl}", "path: '${ZAYA_NO_SUCH_VAR}/aime.jsonl'}",
         ":26: clean.decontaminate.benchmarks[0].path: environment variable ${ZAYA_NO_SUCH_VAR} is not set"),
        ("    weights: {b: 1}\n", "    weights: {code: 1, rsa: 1}\n    weights_by: category\n",
         ":2: clean: source 'r' is kind 'rollout_group'; cleaning applies to documents"),
        ("      quality: {fineweb: true}", "      validate: true",
         ":10: clean.validate: source 'a' is kind 'document'; validation checks reasoning samples only"),
    ],
)
def test_bad_clean_sections_name_file_line_and_key(tmp_path: Path, old: str, new: str, message: str) -> None:
    assert old in CLEANED
    p = write(tmp_path, CLEANED.replace(old, new))
    with pytest.raises(ConfigError) as exc:
        load_mixture(p)
    assert str(exc.value).startswith(f"{p}:") and message in str(exc.value)
