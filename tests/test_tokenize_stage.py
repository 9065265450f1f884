"""FormatTokenizeTrim on documents and reasoning samples: exact schema, document pieces,
loss masks per policy, template text, rejections, and batch-size invariance."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from zaya_data.ledger import Ledger
from zaya_data.schema import DOCUMENT, REASONING, TOKENIZED
from zaya_data.specs import TemplateSpec
from zaya_data.stages.template import render_sample
from zaya_data.stages.tokenize import FormatTokenizeTrim
from zaya_data.tokenizer import load_tokenizer

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
T = TemplateSpec()


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer("embedded")


@pytest.fixture(scope="module")
def documents() -> pa.Table:
    rows = []
    for li, line in enumerate((DATA / "qwen25-math-eval" / "olympiadbench.jsonl").read_text().splitlines()[:200]):
        rec = json.loads(line)
        text = rec["question"] + "\n\n" + "\n\n".join(rec["solution"])
        rows.append(dict(id=f"ob-{li}", source="olympiad", category="math", text=text, meta=None,
                         file_index=3, row_index=li))
    return pa.Table.from_pylist(rows, schema=DOCUMENT)


@pytest.fixture(scope="module")
def samples() -> pa.Table:
    rows = []
    for li, line in enumerate((DATA / "limo-eval" / "math.jsonl").read_text().splitlines()[:150]):
        rec = json.loads(line)
        rows.append(dict(id=rec["unique_id"], source="limo", category="math", prompt=rec["problem"],
                         reasoning=rec["solution"], answer=f"The answer is $\\boxed{{{rec['answer']}}}$.",
                         file_index=0, row_index=li))
    return pa.Table.from_pylist(rows, schema=REASONING)


def test_output_schema_is_exactly_tokenized(documents, samples):
    assert FormatTokenizeTrim("embedded", T, 64, "all", source_kind="document")(documents, Ledger()).schema == TOKENIZED
    assert FormatTokenizeTrim("embedded", T, 4096, "all")(samples, Ledger()).schema == TOKENIZED
    empty = FormatTokenizeTrim("embedded", T, 64, "all")(samples.slice(0, 0), Ledger())
    assert empty.schema == TOKENIZED and empty.num_rows == 0


def test_long_documents_split_into_context_pieces_that_concatenate_back(tok, documents):
    whole = FormatTokenizeTrim("embedded", T, 10**9, "all", source_kind="document")(documents, Ledger())
    assert whole.num_rows == documents.num_rows and set(whole["piece"].to_pylist()) == {0}
    out = FormatTokenizeTrim("embedded", T, 100, "all", source_kind="document")(documents, Ledger())
    pieces: dict[str, list[dict]] = {}
    for row in out.to_pylist():
        pieces.setdefault(row["id"], []).append(row)
    assert list(pieces) == documents["id"].to_pylist()  # input order kept, nothing lost
    texts = documents["text"].to_pylist()
    for i, full in enumerate(whole["input_ids"].to_pylist()):
        ps = pieces[f"ob-{i}"]
        assert [p["piece"] for p in ps] == list(range(-(-len(full) // 100)))
        assert sum((p["input_ids"] for p in ps), []) == full
        assert all(p["num_tokens"] == len(p["input_ids"]) == 100 for p in ps[:-1])
        assert 1 <= ps[-1]["num_tokens"] <= 100
        assert full[0] == tok.bos_id and full[-1] == tok.eos_id
        assert [p["input_ids"].count(tok.bos_id) for p in ps] == [1] + [0] * (len(ps) - 1)
        assert [p["input_ids"].count(tok.eos_id) for p in ps] == [0] * (len(ps) - 1) + [1]
        assert tok.tokenizer.decode(full[1:-1], skip_special_tokens=False) == texts[i]
        assert all(not p["trimmed"] and p["trimmed_tokens"] == 0 and p["file_index"] == 3 for p in ps)
    assert out.num_rows > 2 * documents.num_rows


@pytest.mark.parametrize("loss", ["all", "assistant"])
def test_document_loss_mask_per_policy(documents, loss):
    out = FormatTokenizeTrim("embedded", T, 100, loss, source_kind="document")(documents.slice(0, 20), Ledger())
    for row in out.to_pylist():
        expect = [1] * row["num_tokens"]
        if loss == "assistant" and row["piece"] == 0:
            expect[0] = 0  # bos
        assert row["loss_mask"] == expect
        assert row["loss_tokens"] == sum(expect)


def test_reasoning_tokens_decode_to_the_rendered_template(tok, samples):
    out = FormatTokenizeTrim("embedded", T, 10**6, "all")(samples, Ledger())
    for rec, ids in zip(samples.to_pylist(), out["input_ids"].to_pylist()):
        segs = render_sample(rec["prompt"], rec["reasoning"], rec["answer"], T, tok.bos_id, tok.eos_id)
        text = "".join(v if isinstance(v, str) else tok.tokenizer.id_to_token(v) for _, v in segs)
        assert tok.tokenizer.decode(ids, skip_special_tokens=False) == text


def test_assistant_loss_masks_bos_and_user_only(tok, samples):
    t = samples.slice(0, 30)
    a = FormatTokenizeTrim("embedded", T, 10**6, "assistant")(t, Ledger())
    b = FormatTokenizeTrim("embedded", T, 10**6, "all")(t, Ledger())
    assert a["input_ids"].equals(b["input_ids"])
    for rec, ids, mask, mask_all, lt in zip(t.to_pylist(), a["input_ids"].to_pylist(), a["loss_mask"].to_pylist(),
                                            b["loss_mask"].to_pylist(), a["loss_tokens"].to_pylist()):
        # bos, then the user turn: "<|im_start|>user\n" PROMPT "<|im_end|>\n<|im_start|>assistant\n"
        user = (tok.tokenizer.encode("<|im_start|>user\n").ids + tok.text_tokenizer.encode(rec["prompt"]).ids
                + tok.tokenizer.encode("<|im_end|>\n<|im_start|>assistant\n").ids)
        assert ids[1:1 + len(user)] == user
        assert mask == [0] * (1 + len(user)) + [1] * (len(ids) - 1 - len(user))
        assert ids[1 + len(user)] == tok.special["<think>"]
        assert mask_all == [1] * len(ids) and lt == sum(mask)


def test_special_token_strings_inside_records_are_not_control_tokens(tok):
    table = pa.Table.from_pylist([dict(id="x", source="s", category="c", prompt="say <|im_end|> now",
                                       reasoning="fake </think> close <think>", answer="<eos>",
                                       file_index=0, row_index=0)], schema=REASONING)
    ids = FormatTokenizeTrim("embedded", T, 4096, "all")(table, Ledger())["input_ids"][0].as_py()
    # bos, im_start, im_end, im_start (template), <think>, </think>, im_end (template), eos: nothing else
    specials = [t for t in ids if t < 8]
    assert specials == [2, 4, 5, 4, 6, 7, 5, 3]
    assert tok.tokenizer.decode(ids, skip_special_tokens=False).count("</think>") == 2


def test_template_without_bos_eos_and_custom_pieces(tok):
    t = dataclasses.replace(T, user="Q: {prompt}\n", think_open="", think_close="\n--\n", answer="A: {answer}",
                            add_bos=False, add_eos=False)
    table = pa.Table.from_pylist([dict(id="x", source="s", category="c", prompt="1+{1}?", reasoning="two",
                                       answer="2", file_index=0, row_index=0)], schema=REASONING)
    out = FormatTokenizeTrim("embedded", t, 4096, "assistant")(table, Ledger())
    ids = out["input_ids"][0].as_py()
    assert tok.tokenizer.decode(ids, skip_special_tokens=False) == "Q: 1+{1}?\ntwo\n--\nA: 2"
    n_user = len(tok.tokenizer.encode("Q: ").ids + tok.text_tokenizer.encode("1+{1}?").ids + tok.tokenizer.encode("\n").ids)
    assert out["loss_mask"][0].as_py() == [0] * n_user + [1] * (len(ids) - n_user)


def test_null_fields_and_empty_documents_are_counted_rejections():
    samples = pa.table({"id": ["a", "b"], "source": ["s", "s"], "category": ["c", "c"], "prompt": ["p", None],
                        "reasoning": ["r", "r"], "answer": ["x", "y"], "file_index": pa.array([0, 0], pa.int32()),
                        "row_index": pa.array([0, 1], pa.int64())})
    ledger = Ledger()
    out = FormatTokenizeTrim("embedded", T, 128, "all")(samples, ledger)
    assert out["id"].to_pylist() == ["a"]
    assert ledger.counts == {("tokenize", "null_field", "s"): 1}
    assert ledger.examples[("tokenize", "null_field", "s")][0] == {
        "stage": "tokenize", "reason": "null_field", "source": "s", "location": "file_index 0, row_index 1",
        "record_id": "b", "detail": "field 'prompt' is null"}
    docs = pa.Table.from_pylist([dict(id="e", source="d", category="c", text="", file_index=0, row_index=5),
                                 dict(id="f", source="d", category="c", text="hi", file_index=0, row_index=6)],
                                schema=DOCUMENT)
    bare = dataclasses.replace(T, add_bos=False, add_eos=False)
    ledger = Ledger()
    out = FormatTokenizeTrim("embedded", bare, 128, "all", source_kind="document")(docs, ledger)
    assert out["id"].to_pylist() == ["f"] and ledger.counts == {("tokenize", "no_tokens", "d"): 1}


def test_output_does_not_depend_on_batch_boundaries(samples, documents):
    for stage, table in ((FormatTokenizeTrim("embedded", T, 256, "assistant"), samples),
                         (FormatTokenizeTrim("embedded", T, 100, "all", source_kind="document"), documents)):
        whole = stage(table, Ledger())
        parts = [stage(table.slice(s, 37), Ledger()) for s in range(0, table.num_rows, 37)]
        assert pa.concat_tables(parts).equals(whole)


def test_bad_configuration_is_refused_with_a_clear_error(samples):
    with pytest.raises(ValueError, match="source kind 'rollout_group' cannot be tokenized"):
        FormatTokenizeTrim("embedded", T, 128, "all", source_kind="rollout_group")
    with pytest.raises(ValueError, match="unknown loss policy 'prompt'"):
        FormatTokenizeTrim("embedded", T, 128, "prompt")
    with pytest.raises(ValueError, match="context must be >= 1"):
        FormatTokenizeTrim("embedded", T, 0, "all")
    with pytest.raises(ValueError, match=r"no column\(s\) \['text'\]"):
        FormatTokenizeTrim("embedded", T, 128, "all", source_kind="document")(samples, Ledger())
