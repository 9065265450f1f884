"""RSA building blocks on the real 8-rollout MATH sample: tails, subsets, answers, the
aggregation prompt and the pipeline file parser."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from zaya_data.config import ConfigError
from zaya_data.rsa.answers import answer_key, answers_equivalent, extract_boxed
from zaya_data.rsa.config import load_rsa_config, parse_rsa_config
from zaya_data.rsa.prompt import TEMPLATES, render_aggregation_prompt
from zaya_data.rsa.subsets import answer_groups, choose_subsets, is_unanimous, subset_rng
from zaya_data.rsa.tails import Tail, extract_tails, split_rollout
from zaya_data.tokenizer import load_tokenizer

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "qwen25-math-eval" / "math_cot_100_rollouts8.jsonl"


@pytest.fixture(scope="module")
def rows() -> list[dict]:
    return [json.loads(line) for line in DATA.read_text().splitlines()]


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer("embedded").text_tokenizer


# ---------------------------------------------------------------------------- tails


def test_tails_are_the_token_exact_suffix_within_tau(rows, tok):
    texts = [c for r in rows[:25] for c in r["code"]]
    tails = extract_tails(texts, tok, tau=128, window=16)
    for text, tail in zip(texts, tails):
        ids = tok.encode(text, add_special_tokens=False).ids
        assert text.endswith(tail.text)
        assert tail.tokens <= 128
        assert tok.encode(tail.text, add_special_tokens=False).ids == ids[len(ids) - tail.tokens:]
        if tail.truncated:
            assert 128 - 16 <= tail.tokens <= 128
        else:
            assert tail.text == text and tail.tokens == len(ids)
    assert Counter(t.boundary for t in tails) == {"line": 82, "sentence": 72, "none": 46}


def test_tail_starts_at_a_boundary_whenever_one_lies_in_the_window(rows, tok):
    texts = [c for r in rows[:25] for c in r["code"]]
    for tail, text in zip(extract_tails(texts, tok, tau=128, window=16), texts):
        enc = tok.encode(text, add_special_tokens=False)
        n = len(enc.ids)
        if n <= 128:
            continue
        cut = n - 128
        starts = [enc.offsets[j][0] for j in range(cut, min(n, cut + 17))]

        def at_boundary(s: int) -> bool:
            return text[s - 1] == "\n" or (text[s - 1] in ".!?" and text[s].isspace())

        start = len(text) - len(tail.text)
        if any(at_boundary(s) for s in starts):
            assert tail.boundary in ("line", "sentence")
            # the first boundary after the hard cut: the longest tail that starts cleanly
            assert start == next(s for s in starts if at_boundary(s))
        else:
            assert tail.boundary == "none" and start == enc.offsets[cut][0]


def test_tail_of_the_first_rollout_keeps_its_boxed_answer(rows, tok):
    tail = extract_tails([rows[0]["code"][0]], tok, tau=32, window=16)[0]
    assert tail == Tail(
        text="198 \\cdot 5.9999985401 \\cdot 6.9999852\\) to the nearest whole number is \\(\\boxed{420}\\).",
        tokens=32, truncated=True, boundary="none", final="")
    assert extract_boxed(tail.text) == "420"


def test_think_rollout_tail_counts_reasoning_only_and_keeps_the_answer(tok):
    reasoning = " ".join(f"Step {i} adds one." for i in range(40))
    tail = extract_tails([f"<think>{reasoning}</think>\n\nThe answer is \\boxed{{40}}."], tok, tau=20, window=8)[0]
    assert tail.final == "The answer is \\boxed{40}."
    assert reasoning.endswith(tail.text) and tail.tokens <= 20 and tail.boundary == "sentence"
    assert split_rollout("<think>a</think>b") == ("a", "b")


# ---------------------------------------------------------------------------- subsets


def test_subsets_are_deterministic_and_without_replacement(rows):
    answers = rows[54]["pred"]
    a = choose_subsets(answers, 4, 6, subset_rng(7, "p54", 1))
    b = choose_subsets(answers, 4, 6, subset_rng(7, "p54", 1))
    assert a == b
    assert all(len(s) == 4 and len(set(s)) == 4 and all(0 <= i < 8 for i in s) for s in a)
    assert len(set(a)) == 6  # distinct subsets while C(8, 4) allows
    assert choose_subsets(answers, 4, 6, subset_rng(8, "p54", 1)) != a  # the seed matters
    assert choose_subsets(answers, 4, 6, subset_rng(7, "p54", 2)) != a  # so does the round


def test_stratified_subsets_cover_distinct_answers(rows):
    answers = rows[28]["pred"]  # ['11', '11', '4', '15', '4', '2', '3', '13']: 6 distinct
    assert len(answer_groups(answers)) == 6
    subsets = choose_subsets(answers, 4, 3, subset_rng(1, "p28", 1), stratify=True)
    for s in subsets:
        assert len({answers[i] for i in s}) == 4  # four candidates, four different answers
    assert {answers[i] for s in subsets for i in s} == set(answers)  # all six covered
    # Problem 98 has 4 distinct answers among 8: every stratified subset of 4 has them all.
    a98 = rows[98]["pred"]
    for s in choose_subsets(a98, 4, 5, subset_rng(1, "p98", 1), stratify=True):
        assert {a98[i] for i in s} == {"50625", "759375", "2500", "708750"}


def test_unanimous_problems_are_detected(rows):
    assert sum(is_unanimous(r["pred"]) for r in rows) == 88
    assert is_unanimous(["\\frac{1}{2}", "\\dfrac{1}{2}", " \\frac{1}{2}"])
    assert not is_unanimous([None, None])


def test_k_larger_than_population_takes_everyone():
    assert choose_subsets(["1", "2"], 4, 3, subset_rng(0, "p", 1)) == [(0, 1)] * 3


# ---------------------------------------------------------------------------- answers


def test_answer_extraction_and_equivalence():
    assert extract_boxed("so \\boxed{\\frac{1}{2}} and then \\boxed{a{b}c}.") == "a{b}c"
    assert extract_boxed("\\boxed{unclosed") is None
    assert answer_key("\\left( 1, 2 \\right)") == "(1,2)"
    assert answers_equivalent("\\frac{3}{8}", "0.375")
    assert answers_equivalent("10{,}000", "10000")
    assert not answers_equivalent("25", "12.5")


# ---------------------------------------------------------------------------- prompt


def test_default_template_renders_exactly():
    tails = [Tail(" Then 2+2=4.\nSo \\boxed{4}.", 9, True, "sentence", ""),
             Tail("Clearly 5.", 4, False, "start", "\\boxed{5}")]
    out = render_aggregation_prompt(TEMPLATES["rsa-agg-v1"], "What is 2+2?\n", tails)
    assert out == (
        "Problem:\nWhat is 2+2?\n\nHere are 2 candidate solutions. Each shows only the final part of its "
        "reasoning, and any of them may be wrong.\n"
        "\nCandidate 1:\n[... earlier reasoning omitted ...]\nThen 2+2=4.\nSo \\boxed{4}.\n"
        "\nCandidate 2:\nClearly 5.\n\nFinal answer: \\boxed{5}\n"
        "\nCompare the candidates, find their mistakes and what they got right, and write one complete, "
        "improved solution to the problem. Put the final answer in \\boxed{}.")


# ---------------------------------------------------------------------------- config


def _cfg(tmp_path: Path, body: str):
    p = tmp_path / "rsa.yaml"
    p.write_text(body)
    return load_rsa_config(p)


BASE = f"""input:
  path: {DATA}
  format: jsonl
  fields: {{problem: question, rollouts: code, rollout_answers: pred, reference_answer: gt}}
teacher: {{kind: zaya1, checkpoint: tiny}}
"""


def test_shipped_pipeline_parses_with_documented_defaults():
    cfg = load_rsa_config(REPO / "pipelines" / "rsa_math.yaml")
    assert (cfg.tau, cfg.k, cfg.m, cfg.rounds, cfg.verifier) == (4096, 4, 4, 2, False)
    assert cfg.template.version == "rsa-agg-v1" and cfg.teacher.openai.api_key_env == "OPENAI_API_KEY"
    assert tuple(Path(p).resolve() for p in cfg.source.paths) == (DATA.resolve(),)


def test_defaults(tmp_path):
    cfg = _cfg(tmp_path, BASE)
    assert (cfg.tau, cfg.boundary_window, cfg.k, cfg.m, cfg.c, cfg.rounds) == (4096, 64, 4, 4, None, 1)
    assert (cfg.stratify, cfg.skip_unanimous, cfg.verifier, cfg.population) == (False, False, False, None)
    assert cfg.source.kind == "rollout_group" and cfg.source.category == "rsa"


@pytest.mark.parametrize("extra, where", [
    ("subsets: {k: 4, kk: 2}\n", ":6: subsets.kk: unknown key"),
    ("subsets: {k: 0}\n", ":6: subsets.k: must be >= 1"),
    ("subsets: {k: 4, c: 3}\n", ":6: subsets.c: must be >= subsets.k"),
    ("tails: {tau: '4K'}\n", ":6: tails.tau: expected int"),
    ("prompt: {template: rsa-agg-v9}\n", ":6: prompt.template: unknown template"),
    ("prompt: {header: 'P {problem}'}\n", ":6: prompt.version: required key is missing"),
    ("prompt: {version: x1, candidate: '{index} {tails}'}\n", ":6: prompt.candidate: must contain {tail}"),
])
def test_config_errors_name_file_line_and_key(tmp_path, extra, where):
    with pytest.raises(ConfigError) as e:
        _cfg(tmp_path, BASE + extra)
    assert f"rsa.yaml{where}" in str(e.value)


def test_openai_teacher_refuses_a_key_where_its_variable_name_belongs(tmp_path):
    body = BASE.replace("{kind: zaya1, checkpoint: tiny}",
                        "{kind: openai, base_url: 'http://127.0.0.1:1/v1', model: m, api_key_env: sk-live-1234}")
    with pytest.raises(ConfigError, match=r"rsa.yaml:5: teacher.api_key_env: must be the NAME"):
        _cfg(tmp_path, body)
    with pytest.raises(ConfigError, match=r"rsa.yaml:5: teacher.checkpoint: only for kind: zaya1"):
        _cfg(tmp_path, body.replace("api_key_env: sk-live-1234", "checkpoint: tiny"))


def test_fingerprint_ignores_operational_knobs(tmp_path):
    text = BASE.replace("{kind: zaya1, checkpoint: tiny}",
                        "{kind: openai, base_url: 'http://127.0.0.1:1/v1', model: m, concurrency: 2}")
    a = parse_rsa_config(text, tmp_path / "a.yaml")
    b = parse_rsa_config(text.replace("concurrency: 2", "concurrency: 64"), tmp_path / "a.yaml")
    c = parse_rsa_config(text + "seed: 5\n", tmp_path / "a.yaml")
    assert a.fingerprint() == b.fingerprint() != c.fingerprint()
