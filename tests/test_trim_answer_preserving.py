"""Answer-preserving trimming on real traces at contexts shorter than many of them.

The reference for every check is the same stage at an unbounded context (nothing
trimmed) plus the tokenizer itself: a trimmed sample must be the untrimmed head, a
prefix of the reasoning tokens, then think_close + answer + eos token for token.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from zaya_data.ledger import Ledger, StrictModeError
from zaya_data.schema import REASONING, TOKENIZED
from zaya_data.specs import TemplateSpec
from zaya_data.stages.tokenize import FormatTokenizeTrim
from zaya_data.stages.trim import choose_cut, plan_trim
from zaya_data.tokenizer import load_tokenizer

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
WINDOW = 64
T = TemplateSpec()


def _final_paragraph(trace: str) -> tuple[str, str]:
    """(reasoning, answer): the answer is the last non-empty paragraph."""
    paras = [p for p in trace.split("\n\n") if p.strip()]
    answer = paras[-1]
    return trace[: trace.rindex(answer)], answer


def _table() -> pa.Table:
    rows = []
    path = DATA / "qwen25-math-eval" / "math_cot_100_rollouts8.jsonl"
    for li, line in enumerate(path.read_text().splitlines()):
        rec = json.loads(line)
        for k, trace in enumerate(rec["code"]):
            if not trace.strip():
                continue
            reasoning, answer = _final_paragraph(trace)
            rows.append(dict(id=f"rollout-{li}-{k}", source="rollouts", category="math", prompt=rec["question"],
                             reasoning=reasoning, answer=answer, file_index=0, row_index=li))
    for li, line in enumerate((DATA / "limo-eval" / "math.jsonl").read_text().splitlines()):
        rec = json.loads(line)
        rows.append(dict(id=rec["unique_id"], source="limo", category="math", prompt=rec["problem"],
                         reasoning=rec["solution"], answer=rec["answer"], file_index=1, row_index=li))
    return pa.Table.from_pylist(rows, schema=REASONING)


@pytest.fixture(scope="module")
def data():
    tok = load_tokenizer("embedded")
    table = _table()
    full = FormatTokenizeTrim("embedded", T, 10**9, "all")(table, Ledger())
    assert full.num_rows == table.num_rows and not any(full["trimmed"].to_pylist())
    reasonings = table["reasoning"].to_pylist()
    r_enc = tok.text_tokenizer.encode_batch(reasonings, add_special_tokens=False)
    close = tok.tokenizer.encode(T.think_close, add_special_tokens=False).ids
    im_end = tok.tokenizer.encode("<|im_end|>\n", add_special_tokens=False).ids
    a_enc = tok.text_tokenizer.encode_batch(table["answer"].to_pylist(), add_special_tokens=False)
    tails = [close + e.ids + im_end + [tok.eos_id] for e in a_enc]
    return dict(tok=tok, table=table, full=full["input_ids"].to_pylist(), reasonings=reasonings,
                r_ids=[e.ids for e in r_enc], r_off=[e.offsets for e in r_enc], tails=tails)


def _boundary(text: str, offsets: list[tuple[int, int]], k: int) -> bool:
    """The test's own reading of "a line or sentence boundary" at a cut before token k."""
    p = offsets[k - 1][1]
    if offsets[k][0] < p:
        return False
    return text[:p].rstrip(" \t").endswith("\n") or (text[p - 1] in ".?!" and text[p] in " \n")


def test_untrimmed_samples_end_with_think_close_answer_and_eos_verbatim(data):
    for full, tail, r in zip(data["full"], data["tails"], data["r_ids"]):
        assert full[-len(tail):] == tail
        head = len(full) - len(r) - len(tail)
        assert full[head:head + len(r)] == r
        assert full[0] == 2 and full[1] == 4  # <bos> <|im_start|>


@pytest.mark.parametrize("context", [128, 256, 512, 1024])
def test_trimmed_samples_keep_head_a_boundary_cut_reasoning_prefix_and_the_exact_answer(data, context):
    table = data["table"]
    ledger = Ledger()
    out = FormatTokenizeTrim("embedded", T, context, "all", trim_window=WINDOW)(table, ledger)
    assert out.schema == TOKENIZED
    ids_out = dict(zip(out["id"].to_pylist(), out["input_ids"].to_pylist()))
    meta = {r["id"]: r for r in out.select(["id", "num_tokens", "trimmed", "trimmed_tokens"]).to_pylist()}
    expect_rejected = []
    n_trimmed = n_boundary = 0
    for i, rid in enumerate(table["id"].to_pylist()):
        full, tail, r = data["full"][i], data["tails"][i], data["r_ids"][i]
        head = len(full) - len(r) - len(tail)
        if head + len(tail) > context:
            expect_rejected.append(rid)
            assert rid not in ids_out
            continue
        got = ids_out[rid]
        assert meta[rid]["num_tokens"] == len(got) <= context
        if len(full) <= context:
            assert got == full and not meta[rid]["trimmed"] and meta[rid]["trimmed_tokens"] == 0
            continue
        n_trimmed += 1
        k = len(got) - head - len(tail)
        assert got[:head] == full[:head]
        assert got[head:head + k] == r[:k]
        assert got[head + k:] == tail  # think_close, the answer token for token, eos
        assert meta[rid]["trimmed"] and meta[rid]["trimmed_tokens"] == len(r) - k
        budget = context - head - len(tail)
        text, offs = data["reasonings"][i], data["r_off"][i]
        cands = [c for c in range(max(1, budget - WINDOW), budget + 1) if _boundary(text, offs, c)]
        if cands:
            assert k == max(cands), (rid, k, cands)
            n_boundary += 1
        else:
            assert budget - 3 <= k <= budget
    assert ledger.counts.get(("trim", "prompt_and_answer_exceed_context", "rollouts"), 0) + \
        ledger.counts.get(("trim", "prompt_and_answer_exceed_context", "limo"), 0) == len(expect_rejected)
    assert ledger.total() == len(expect_rejected)
    assert out.num_rows + len(expect_rejected) == table.num_rows
    assert n_trimmed > 0 and n_boundary > n_trimmed // 2


def test_trim_counts_on_real_traces_at_each_context(data):
    got = {}
    for context in (128, 256, 512, 1024):
        ledger = Ledger()
        out = FormatTokenizeTrim("embedded", T, context, "all")(data["table"], ledger)
        got[context] = (out.num_rows, sum(out["trimmed"].to_pylist()), ledger.total())
    expected = {}
    for context in (128, 256, 512, 1024):
        rej = trimmed = 0
        for full, tail, r in zip(data["full"], data["tails"], data["r_ids"]):
            fixed = len(full) - len(r)
            rej += fixed > context
            trimmed += fixed <= context < len(full)
        expected[context] = (len(data["full"]) - rej, trimmed, rej)
    assert got == expected
    assert got[256][1] > 500 and got[128][2] > 200  # the data really exercises both paths


def test_rejection_names_record_and_location(data):
    ledger = Ledger()
    FormatTokenizeTrim("embedded", T, 128, "all")(data["table"], ledger)
    ex = ledger.examples[("trim", "prompt_and_answer_exceed_context", "rollouts")][0]
    i = data["table"]["id"].to_pylist().index(ex["record_id"])
    assert ex["location"] == f"file_index 0, row_index {data['table']['row_index'][i].as_py()}"
    assert ex["detail"].endswith("; context is 128")
    with pytest.raises(StrictModeError, match="trim/prompt_and_answer_exceed_context.*row_index"):
        FormatTokenizeTrim("embedded", T, 128, "all")(data["table"], Ledger(strict=True))


def test_answer_fills_the_context_exactly_leaves_empty_reasoning():
    tok = load_tokenizer("embedded")
    table = pa.Table.from_pylist([dict(id="a", source="s", category="c", prompt="Q?", reasoning="Think. " * 50,
                                       answer="42", file_index=0, row_index=0)], schema=REASONING)
    stage = FormatTokenizeTrim("embedded", T, 10**6, "all")
    full = stage(table, Ledger())["input_ids"][0].as_py()
    r = len(tok.text_tokenizer.encode("Think. " * 50).ids)
    fixed = len(full) - r
    out = FormatTokenizeTrim("embedded", T, fixed, "all")(table, Ledger())
    got = out["input_ids"][0].as_py()
    assert len(got) == fixed and out["trimmed_tokens"][0].as_py() == r
    tail = (tok.tokenizer.encode(T.think_close).ids + tok.text_tokenizer.encode("42").ids
            + tok.tokenizer.encode("<|im_end|>\n").ids + [3])
    head = len(full) - r - len(tail)
    assert got == full[:head] + tail and full[head + r:] == tail
    rejected = Ledger()
    assert FormatTokenizeTrim("embedded", T, fixed - 1, "all")(table, rejected).num_rows == 0
    assert rejected.total() == 1


def test_cut_prefers_the_latest_sentence_or_line_end_in_the_window():
    tok = load_tokenizer("embedded").text_tokenizer
    text = "First step done. Then we add the numbers carefully and get\nseven plus five is twelve so far ok"
    enc = tok.encode(text, add_special_tokens=False)
    budget = len(enc.ids) - 3
    k = choose_cut(text, enc.offsets, budget, window=64)
    assert tok.decode(enc.ids[:k]) == "First step done. Then we add the numbers carefully and get\n"
    k = choose_cut(text, enc.offsets, budget, window=5)  # the newline lies outside a 5-token window
    assert k == budget
    short = choose_cut(text, enc.offsets, 5, window=64)
    assert tok.decode(enc.ids[:short]) == "First step done."


def test_cut_never_ends_inside_a_multibyte_character():
    tok = load_tokenizer("embedded").text_tokenizer
    text = "東京都の人口を計算します" * 8
    enc = tok.encode(text, add_special_tokens=False)
    assert len(enc.ids) > len(text)  # byte-level pieces of characters
    for budget in range(2, 40):
        k = choose_cut(text, enc.offsets, budget, window=64)
        assert budget - 3 <= k <= budget
        assert "\ufffd" not in tok.decode(enc.ids[:k])
        assert text.startswith(tok.decode(enc.ids[:k]))


def test_plan_trim_budget_and_rejection_vectorised():
    needs, rejected, budget = plan_trim(np.array([10, 10, 10, 60]), np.array([5, 50, 0, 5]),
                                        np.array([5, 5, 5, 50]), 64)
    assert needs.tolist() == [False, True, False, False]
    assert rejected.tolist() == [False, False, False, True]
    assert budget.tolist() == [5, 49, 0, 5]


def test_offsets_path_cuts_exactly_where_the_byte_level_path_does(data):
    """Byte-level tokenizers find cuts from per-id byte lengths; any other tokenizer uses
    character offsets from a re-tokenized prefix. Both must agree on real traces."""
    fast = FormatTokenizeTrim("embedded", T, 256, "assistant")
    slow = FormatTokenizeTrim("embedded", T, 256, "assistant")
    assert fast.tok.byte_lengths is not None
    slow.tok = dataclasses.replace(slow.tok, byte_lengths=None)
    a = fast(data["table"], Ledger())
    b = slow(data["table"], Ledger())
    assert sum(a["trimmed"].to_pylist()) > 500
    assert a.equals(b)
