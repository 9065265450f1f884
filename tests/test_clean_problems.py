"""Problem-level dedup of reasoning data: the same MATH problem from two repositories'
files (different formatting) and with 8 traces each is one problem; keep_k keeps the
same k traces whatever the batching."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pyarrow as pa

from zaya_data.clean.config import ProblemDedupSpec, parse_clean
from zaya_data.clean.dedup import apply_drop_list
from zaya_data.clean.problems import group_stats, problem_keys, resolve_problems
from zaya_data.ledger import Ledger

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def read_jsonl(rel: str) -> list[dict]:
    with open(DATA / rel) as f:
        return [json.loads(line) for line in f]


def reasoning_table(prompts: list[str], source: str, file_index: int = 0) -> pa.Table:
    n = len(prompts)
    return pa.table(
        {
            "id": [f"{source}:{i:04d}" for i in range(n)],
            "source": [source] * n,
            "category": ["math"] * n,
            "prompt": prompts,
            "reasoning": [f"trace {i}" for i in range(n)],
            "answer": ["\\boxed{0}"] * n,
            "reference_answer": pa.array([None] * n, pa.string()),
            "meta": pa.array([None] * n, pa.string()),
            "file_index": pa.array([file_index] * n, pa.int32()),
            "row_index": pa.array(range(n), pa.int64()),
        }
    )


def corpus() -> tuple[pa.Table, pa.Table]:
    # 100 MATH problems x 8 traces (Qwen rollouts), and MATH-500 with its own formatting
    qwen = [r["question"] for r in read_jsonl("qwen25-math-eval/math_cot_100_rollouts8.jsonl") for _ in range(8)]
    # the same problem in another copy: different spacing, \dfrac and $ usage
    qwen[8] = qwen[8].replace(" ", "  ").replace("\\frac", "\\dfrac")
    math500 = [r["problem"] for r in read_jsonl("limo-eval/math.jsonl")]
    return reasoning_table(qwen, "qwen"), reasoning_table(math500, "math500", file_index=1)


def test_problems_are_recognized_across_sources_and_traces() -> None:
    qwen, math500 = corpus()
    stats = group_stats([problem_keys(qwen, 1), problem_keys(math500, 0)])
    # 600 problems less the 5 MATH-500 statements that are also among the 100 rollouts
    # (the re-spaced \\dfrac copy of problem 1 still counts as problem 1: 100 problems
    # with several records, none split in two)
    assert stats == {"records": 1300, "problems": 595, "repeated_problems": 100, "cross_source_records": 45}


def test_keep_k_keeps_the_first_k_by_source_priority_then_id_whatever_the_batching() -> None:
    qwen, math500 = corpus()
    spec = parse_clean({"problem_dedup": {"policy": "keep_k", "k": 2}}, "t").problem_dedup
    keys = [problem_keys(math500, 0), problem_keys(qwen, 1)]
    drops = resolve_problems(keys, spec)
    # each of the 95 qwen-only problems keeps 2 of 8 traces; the 5 shared problems keep
    # the MATH-500 record (priority 0) and 1 qwen trace
    assert drops.num_rows == 95 * 6 + 5 * 7
    assert set(drops.column("source").to_pylist()) == {"qwen"}
    assert set(drops.column("reason").to_pylist()) == {"problem_over_k"}
    assert drops.filter(pa.compute.equal(drops.column("row_index"), 2)).column("survivor_id").to_pylist() == ["qwen:0000"]

    rng = random.Random(5)
    rows = rng.sample(range(qwen.num_rows), qwen.num_rows)
    shuffled = qwen.take(pa.array(rows))
    batches = [problem_keys(shuffled.slice(o, 77), 1) for o in range(0, qwen.num_rows, 77)]
    assert resolve_problems(batches[::-1] + [problem_keys(math500, 0)], spec).equals(drops)

    ledger = Ledger()
    kept = apply_drop_list(qwen, drops, ledger)
    assert kept.num_rows == 800 - drops.num_rows
    assert ledger.counts == {("dedup", "problem_over_k", "qwen"): 605}


def test_keep_all_drops_nothing() -> None:
    qwen, _ = corpus()
    assert resolve_problems([problem_keys(qwen)], ProblemDedupSpec("keep_all", 1)).num_rows == 0


def test_problem_dedup_sees_only_the_near_dedup_survivors() -> None:
    # The build drops near duplicates first; the problem keys of the dropped records leave
    # by an anti-join on where each record is (source, file, row), checked against a set.
    from zaya_data.clean.build import _survivors

    prompts = [r["problem"] for r in read_jsonl("qwen25-math-eval/minerva_math.jsonl")[:60]]
    keys = pa.concat_tables([problem_keys(reasoning_table(prompts, s, f), p)
                             for p, (s, f) in enumerate([("a", 0), ("a", 1), ("b", 0)])])
    rng = random.Random(5)
    gone = keys.take(sorted(rng.sample(range(keys.num_rows), 70))).select(["source", "file_index", "row_index"])
    kept = _survivors(keys, gone)
    out = set(zip(gone["source"].to_pylist(), gone["file_index"].to_pylist(), gone["row_index"].to_pylist()))
    expect = [i for i, k in enumerate(zip(keys["source"].to_pylist(), keys["file_index"].to_pylist(),
                                          keys["row_index"].to_pylist())) if k not in out]
    assert kept.schema == keys.schema and kept.num_rows == len(expect) == keys.num_rows - 70
    assert sorted(kept["id"].to_pylist()) == sorted(keys.take(expect)["id"].to_pylist())
    spec = ProblemDedupSpec(policy="keep_k", k=1)
    assert resolve_problems([kept], spec).equals(resolve_problems([keys.take(expect)], spec))
    assert _survivors(keys, gone.slice(0, 0)).equals(keys)
