"""The `clean:` section parser: defaults, merging, and errors that name key and origin."""

from __future__ import annotations

import pytest

from zaya_data.clean.config import (
    BenchmarkSpec,
    CleanSpec,
    DecontamSpec,
    LanguageSpec,
    NearDedupSpec,
    ProblemDedupSpec,
    ValidateSpec,
    parse_clean,
)


def test_absent_section_is_a_noop_and_true_means_defaults() -> None:
    assert parse_clean(None, "m.yaml:1").is_noop
    spec = parse_clean(
        {"near_dedup": True, "language": True, "problem_dedup": True, "validate": True, "exact_dedup": True},
        "m.yaml:3",
    )
    assert spec.near_dedup == NearDedupSpec(shingle=5, permutations=112, bands=14, threshold=0.8, seed=1)
    assert spec.near_dedup.rows == 8
    assert spec.language == LanguageSpec(model="py3langid", keep=("en",), min_score=0.65)
    assert spec.problem_dedup == ProblemDedupSpec(policy="keep_all", k=1)
    assert spec.validate == ValidateSpec(True, "boxed", "off", 0.5, 1, None)
    assert spec.exact_dedup is True and spec.quality == () and spec.decontaminate is None


def test_full_section_parses_every_key() -> None:
    spec = parse_clean(
        {
            "quality": {"gopher_quality": {"min_doc_words": 20}, "c4": True, "fineweb": False,
                        "gopher_repetition": {"top_n_grams": [[2, 0.3]]}},
            "language": {"model": "py3langid", "keep": ["en", "de"], "min_score": 0.5},
            "near_dedup": {"shingle": 3, "permutations": 64, "bands": 16, "threshold": 0.7, "seed": 9},
            "problem_dedup": {"policy": "keep_k", "k": 2},
            "decontaminate": {"ngram": 8, "benchmarks": [
                {"name": "aime", "path": "b/aime.jsonl", "fields": {"problem": "question", "answer": "ans"}},
                {"name": "gpqa", "path": "b/gpqa.parquet", "fields": {"problem": "q", "answer": None}},
            ]},
            "validate": {"answer_pattern": r"Answer: (\S+)", "math_verify": False, "max_chars": 100, "min_chars": 3},
        },
        "mixtures/x.yaml:40",
    )
    # fixed filter order whatever the YAML order; lists frozen to tuples
    assert spec.quality == (
        ("gopher_quality", (("min_doc_words", 20),)),
        ("gopher_repetition", (("top_n_grams", ((2, 0.3),)),)),
        ("c4", ()),
    )
    assert spec.quality_filters["gopher_quality"] == {"min_doc_words": 20}
    assert spec.decontaminate == DecontamSpec(
        benchmarks=(
            BenchmarkSpec("aime", "b/aime.jsonl", "jsonl", "question", "ans"),
            BenchmarkSpec("gpqa", "b/gpqa.parquet", "parquet", "q", None),
        ),
        ngram=8,
        min_overlap=0.5,
    )
    assert spec.validate.math_verify == "off"  # YAML's bare `off` arrives as False
    assert spec.near_dedup.rows == 4 and spec.problem_dedup.k == 2


def test_source_override_replaces_named_top_level_keys_only() -> None:
    top = parse_clean({"quality": {"c4": True, "fineweb": True}, "exact_dedup": True}, "m.yaml:2")
    src = top.merged({"quality": {"gopher_quality": True}, "near_dedup": {"threshold": 0.9}}, "m.yaml:20")
    assert [n for n, _ in src.quality] == ["gopher_quality"]
    assert src.exact_dedup is True
    assert src.near_dedup.threshold == 0.9 and src.near_dedup.bands == 14
    assert top.merged({"quality": False}, "m.yaml:30").quality == ()
    assert top.merged(None, "m.yaml:31") is top


@pytest.mark.parametrize(
    ("mapping", "message"),
    [
        ({"qualty": {}}, "m.yaml:7: clean.qualty: unknown key"),
        ({"quality": {"gopher": True}}, "m.yaml:7: clean.quality.gopher: unknown key"),
        ({"quality": {"c4": {"min_sentences": 3}}}, "m.yaml:7: clean.quality.c4.min_sentences: unknown key"),
        ({"near_dedup": {"permutations": 100, "bands": 14}}, "clean.near_dedup.bands: permutations (100) must be a multiple"),
        ({"near_dedup": {"threshold": 1.5}}, "clean.near_dedup.threshold: expected a number in [0.0, 1.0]"),
        ({"exact_dedup": "yes"}, "clean.exact_dedup: expected true or false"),
        ({"problem_dedup": {"policy": "keep_one"}}, "clean.problem_dedup.policy: expected one of keep_all, keep_k"),
        ({"validate": {"math_verify": "maybe"}}, "clean.validate.math_verify: expected one of off, flag, drop"),
        ({"validate": {"answer_pattern": "(unclosed"}}, "clean.validate.answer_pattern: bad regex"),
        ({"decontaminate": {"benchmarks": [{"path": "x.jsonl"}]}}, "clean.decontaminate.benchmarks[0].name: required"),
        ({"decontaminate": {"benchmarks": [{"name": "a", "path": "x", "format": "csv"}]}},
         "clean.decontaminate.benchmarks[0].format: expected one of jsonl, parquet"),
        ({"language": {"keep": []}}, "clean.language.keep: expected a list of language codes"),
        ([1, 2], "m.yaml:7: clean: expected a mapping"),
    ],
)
def test_bad_values_name_the_key_and_origin(mapping: object, message: str) -> None:
    with pytest.raises(ValueError) as exc:
        parse_clean(mapping, "m.yaml:7")  # type: ignore[arg-type]
    assert message in str(exc.value)
    assert "m.yaml:7" in str(exc.value)


def test_spec_is_frozen_and_hashable() -> None:
    spec = parse_clean({"quality": {"gopher_repetition": {"top_n_grams": [[2, 0.2]]}}}, "o")
    assert hash(spec) == hash(parse_clean({"quality": {"gopher_repetition": {"top_n_grams": [[2, 0.2]]}}}, "o2"))
    with pytest.raises(AttributeError):
        spec.exact_dedup = True  # type: ignore[misc]
    assert CleanSpec() == parse_clean({}, "x")
