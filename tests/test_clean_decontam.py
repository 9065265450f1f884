"""Decontamination on real benchmark files: AIME 2024 and MATH-500 problems injected into
GSM8K questions, verbatim and as case/whitespace/LaTeX-spacing variants, and in the other
repository's formatting, are all caught; the clean corpus loses nothing."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pyarrow as pa
import pytest

from zaya_data.clean.config import parse_clean
from zaya_data.clean.decontam import MIN_SHORT_TOKENS, Decontaminator, load_benchmark
from zaya_data.clean.normalize import match_tokens
from zaya_data.ledger import Ledger

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def read_jsonl(rel: str) -> list[dict]:
    with open(DATA / rel) as f:
        return [json.loads(line) for line in f]


def spec_for(tmp: Path | None = None):
    return parse_clean(
        {
            "decontaminate": {
                "benchmarks": [
                    {"name": "aime24", "path": str(DATA / "limo-eval" / "aime.jsonl"),
                     "fields": {"problem": "problem", "answer": "answer"}},
                    {"name": "math500", "path": str(DATA / "limo-eval" / "math.jsonl"), "format": "jsonl"},
                ]
            }
        },
        "mix.yaml:30",
    ).decontaminate


@pytest.fixture(scope="module")
def deco() -> Decontaminator:
    return Decontaminator(spec_for())


def doc_table(texts: list[str], source: str) -> pa.Table:
    n = len(texts)
    return pa.table(
        {
            "id": [f"{source}:{i:04d}" for i in range(n)],
            "source": [source] * n,
            "category": ["math"] * n,
            "text": texts,
            "meta": pa.array([None] * n, pa.string()),
            "file_index": pa.array([0] * n, pa.int32()),
            "row_index": pa.array(range(n), pa.int64()),
        }
    )


def variant(problem: str) -> str:
    """What a scraped copy does to a problem: case, spacing, `$` dropped, LaTeX spacing
    commands and \\left/\\right added, \\frac written \\dfrac, curly quotes."""
    t = problem.upper().replace(" ", "  \n ")
    t = t.replace("(", "\\LEFT(").replace(")", "\\RIGHT)").replace(",", ",\\,").replace("=", "\\;=\\!")
    t = re.sub(r"\\FRAC", r"\\DFRAC", t).replace("'", "\u2019").replace("$", "")
    return t


def test_clean_gsm8k_corpus_has_no_false_positive(deco: Decontaminator) -> None:
    gsm = [r["question"] for r in read_jsonl("qwen25-math-eval/gsm8k.jsonl")]
    ledger = Ledger()
    out = deco(doc_table(gsm, "gsm8k"), ledger)
    assert out.num_rows == 1319 and ledger.counts == {} and deco.report() == []


def test_injected_benchmark_problems_are_all_caught() -> None:
    deco = Decontaminator(spec_for())
    gsm = [r["question"] for r in read_jsonl("qwen25-math-eval/gsm8k.jsonl")]
    items = [("aime24", r["problem"]) for r in read_jsonl("limo-eval/aime.jsonl")]
    items += [("math500", r["problem"]) for r in read_jsonl("limo-eval/math.jsonl")]
    embeddable = [(b, p) for b, p in items if len(match_tokens(p)) >= MIN_SHORT_TOKENS]
    # every item is long enough to look for inside other text: the shortest MATH-500
    # problem, "Evaluate $\log_264$.", is 6 tokens (evaluate \ log _ 264 .); the ones
    # under 13 tokens are found by whole-sequence containment
    assert len(embeddable) == len(items) == 530
    texts, expect = [], []
    for k, (bench, problem) in enumerate(embeddable):
        before, after = gsm[(2 * k) % len(gsm)], gsm[(2 * k + 1) % len(gsm)]
        texts.append(f"{before}\n\n{problem}\n\n{after}")  # verbatim inside other text
        texts.append(f"{before} {variant(problem)} {after}")  # scraped variant inside other text
        expect += [bench, bench]
    # the short item, and every item, as a whole record in variant form: exact match
    texts += [variant(p) for _, p in items]
    expect += [b for b, _ in items]
    ledger = Ledger()
    out = deco(doc_table(texts, "web"), ledger)
    assert out.num_rows == 0
    assert sum(ledger.counts.values()) == len(texts) == 2 * 530 + 530
    assert {r for (_s, r, _src) in ledger.counts} <= {
        "aime24:ngram", "aime24:exact", "aime24:contains", "math500:ngram", "math500:exact", "math500:contains"
    }
    report = deco.report()
    caught = {}
    for m in report:
        caught.setdefault(m["row_index"], set()).add(m["benchmark"])
    assert all(expect[i] in caught[i] for i in range(len(texts)))
    # the report names item, record and source
    first = [m for m in report if m["benchmark"] == "aime24" and m["item"] == 0]
    assert first[0] == {
        "benchmark": "aime24", "item": 0, "item_id": "60", "match": "ngram",
        "record_id": "web:0000", "source": "web", "file_index": 0, "row_index": 0,
    }
    assert any(m["match"] == "contains" for m in report)
    summary = deco.summary()
    assert summary["aime24"] == {"items": 30, "items_matched": 30, "records_matched": 90}
    assert summary["math500"]["items_matched"] == 500


def test_other_repository_formatting_of_aime24_is_caught_in_reasoning_prompts(deco: Decontaminator) -> None:
    qwen = read_jsonl("qwen25-math-eval/aime24.jsonl")
    n = len(qwen)
    table = pa.table(
        {
            "id": [f"rs:{i}" for i in range(n)],
            "source": ["rs"] * n,
            "category": ["reasoning"] * n,
            "prompt": [r["problem"] for r in qwen],
            "reasoning": ["Let me think."] * n,
            "answer": [f"\\boxed{{{r['answer']}}}" for r in qwen],
            "reference_answer": [str(r["answer"]) for r in qwen],
            "meta": pa.array([None] * n, pa.string()),
            "file_index": pa.array([3] * n, pa.int32()),
            "row_index": pa.array(range(n), pa.int64()),
        }
    )
    ledger = Ledger()
    assert deco(table, ledger).num_rows == 0
    assert ledger.counts == {("decontaminate", "aime24:exact", "rs"): 30}
    ex = ledger.examples[("decontaminate", "aime24:exact", "rs")][0]
    assert ex["record_id"] == "rs:0" and ex["location"] == "file 3 row 0" and ex["detail"] == "aime24 item 60"


def test_real_overlap_between_math_rollouts_and_math500_is_found(deco: Decontaminator) -> None:
    # MATH test problems appear in both the Qwen rollouts file and MATH-500
    qs = [r["question"] for r in read_jsonl("qwen25-math-eval/math_cot_100_rollouts8.jsonl")]
    ledger = Ledger()
    out = deco(doc_table(qs, "rollouts"), ledger)
    assert out.num_rows == 94
    assert ledger.counts == {
        ("decontaminate", "math500:exact", "rollouts"): 5,
        ("decontaminate", "math500:ngram", "rollouts"): 1,
    }


def test_bad_benchmark_files_are_named(tmp_path: Path) -> None:
    from zaya_data.clean.config import BenchmarkSpec

    with pytest.raises(FileNotFoundError, match="mix.yaml:5: clean.decontaminate benchmark 'hmmt': no file"):
        load_benchmark(BenchmarkSpec("hmmt", str(tmp_path / "none.jsonl")), "mix.yaml:5")
    f = tmp_path / "b.jsonl"
    f.write_text('{"question": "What is 1+1?"}\n{"q": "x"}\n')
    with pytest.raises(ValueError, match=r"b.jsonl:line 2: no field 'question'"):
        load_benchmark(BenchmarkSpec("b", str(f), problem_field="question"), "mix.yaml:5")
    # Parquet with a nested field mapping (LiveCodeBench-style records)
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"task": [{"statement": "Write a function that reverses a linked list in place."}]}),
                   tmp_path / "lcb.parquet")
    items = load_benchmark(BenchmarkSpec("lcb", str(tmp_path / "lcb.parquet"), "parquet", "task.statement", None))
    assert [(i.benchmark, i.index, i.item_id, i.answer) for i in items] == [("lcb", 0, "0", None)]
