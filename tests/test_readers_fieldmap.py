"""Field mapping: expressions, trace splits, chat messages, rollout objects and meta."""

from __future__ import annotations

import json

import pytest

from zaya_data.readers.fieldmap import (
    Mapper,
    RecordError,
    parse_expression,
    resolve,
    split_final_paragraph,
    split_messages,
    split_think,
)
from zaya_data.schema import stable_id
from zaya_data.specs import SourceSpec


def mapper(kind: str = "reasoning", fields: dict[str, str] | None = None, split: str | None = None) -> Mapper:
    return Mapper(SourceSpec(name="s", paths=(), format="jsonl", kind=kind, category="c", fields=fields or {},
                             split=split, origin="mix.yaml:9"))


def error_of(fn, *args) -> tuple[str, str]:  # type: ignore[no-untyped-def]
    with pytest.raises(RecordError) as err:
        fn(*args)
    return err.value.reason, err.value.detail


def test_expressions_parse_to_keys_and_indices() -> None:
    assert parse_expression("a") == ("a",)
    assert parse_expression("a.b.c") == ("a", "b", "c")
    assert parse_expression("a[0]") == ("a", 0)
    assert parse_expression("a[-1]") == ("a", -1)
    assert parse_expression("a.b[2].c") == ("a", "b", 2, "c")
    assert parse_expression("m[0][1]") == ("m", 0, 1)


@pytest.mark.parametrize("bad", ["", ".a", "a.", "a..b", "[0]", "a[x]", "a[0]b", "a.[0]"])
def test_malformed_expressions_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="malformed field expression"):
        parse_expression(bad)


def test_resolve_walks_nested_objects_and_lists_and_names_the_failing_step() -> None:
    rec = {"a": {"b": [{"c": "x"}, {"c": "y"}, {"c": "z"}]}, "l": ["first", "last"]}
    assert resolve(rec, ("a", "b", 2, "c"), "answer", "a.b[2].c") == "z"
    assert resolve(rec, ("l", -1), "answer", "l[-1]") == "last"
    assert error_of(resolve, rec, ("a", "q"), "prompt", "a.q") == (
        "missing_field", "field 'prompt' (a.q) is missing (no key 'q')")
    assert error_of(resolve, rec, ("l", 5), "prompt", "l[5]") == (
        "missing_field", "field 'prompt' (l[5]): index [5] out of range (length 2)")
    assert error_of(resolve, rec, ("l", "x"), "prompt", "l.x") == (
        "wrong_type", "field 'prompt' (l.x): expected an object before 'x', got list")
    assert error_of(resolve, rec, ("a", 0), "prompt", "a[0]") == (
        "wrong_type", "field 'prompt' (a[0]): expected a list before [0], got dict")


def test_think_split_accepts_a_missing_opening_tag_and_rejects_a_missing_closing_one() -> None:
    assert split_think("<think>\nR1\n</think>\n\nA1", "trace") == ("R1", "A1")
    assert split_think("R2</think>A2", "trace") == ("R2", "A2")
    assert error_of(split_think, "<think>R3 never ends", "trace") == (
        "unclosed_think", "field 'trace': <think> without </think>")
    assert error_of(split_think, "no tags at all", "trace")[0] == "empty_field"
    assert error_of(split_think, "<think>R</think>  ", "trace") == (
        "empty_field", "field 'trace': the answer after </think> is empty")
    assert error_of(split_think, "<think> </think>A", "trace")[0] == "empty_field"


def test_final_paragraph_is_the_answer_and_a_single_paragraph_splits_at_its_last_line() -> None:
    assert split_final_paragraph("step 1\nstep 2\n\nstep 3\n \nSo \\boxed{4}.\n\n", "t") == (
        "step 1\nstep 2\n\nstep 3", "So \\boxed{4}.")
    assert split_final_paragraph("a\nb\n#### 7", "t") == ("a\nb", "#### 7")
    assert error_of(split_final_paragraph, "just one line", "t") == (
        "empty_field", "field 't': a single line, so the reasoning is empty")


def test_chat_messages_single_turn_with_system_and_think_block() -> None:
    msgs = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "What is 2+2?"},
        {"role": "assistant", "content": "<think>\n2+2 is 4.\n</think>\n\nThe answer is 4."},
    ]
    assert split_messages(msgs, "messages") == ("Be brief.\n\nWhat is 2+2?", "2+2 is 4.", "The answer is 4.")


def test_chat_messages_take_a_separate_reasoning_content_key() -> None:
    msgs = [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "A", "reasoning_content": " R "}]
    assert split_messages(msgs, "messages") == ("Q", "R", "A")
    msgs = [{"role": "user", "content": [{"type": "text", "text": "Q1 "}, {"type": "text", "text": "Q2"}]},
            {"role": "assistant", "content": "A", "reasoning": "R"}]
    assert split_messages(msgs, "messages") == ("Q1 Q2", "R", "A")


def test_chat_messages_multi_turn_label_earlier_turns_and_drop_their_thinking() -> None:
    msgs = [
        {"role": "user", "content": "Q1"},
        {"role": "assistant", "content": "<think>old</think>A1"},
        {"role": "user", "content": "Q2"},
        {"role": "assistant", "content": "<think>R2</think>A2"},
        {"role": "user", "content": "trailing turn, not part of the sample"},
    ]
    assert split_messages(msgs, "messages") == ("user: Q1\n\nassistant: A1\n\nuser: Q2", "R2", "A2")


def test_chat_messages_without_an_assistant_or_with_an_open_think_are_rejected() -> None:
    assert error_of(split_messages, [{"role": "user", "content": "Q"}], "messages") == (
        "missing_field", "field 'messages' (messages): no assistant turn")
    bad = [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "<think>cut off"}]
    assert error_of(split_messages, bad, "messages")[0] == "unclosed_think"
    assert error_of(split_messages, "not a list", "conv")[0] == "wrong_type"
    no_user = [{"role": "assistant", "content": "<think>R</think>A"}]
    assert error_of(split_messages, no_user, "messages")[0] == "empty_field"


def test_reasoning_mapper_with_messages_gives_the_row_and_its_id() -> None:
    m = mapper(fields={"messages": "conversation", "reference_answer": "gold"})
    rec = {"conversation": [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "<think>R</think>A"}],
           "gold": 4, "tag": "x"}
    assert m(rec) == (stable_id("s", "Q", "R", "A"), "Q", "R", "A", "4", '{"tag": "x"}')


def test_meta_drops_only_the_mapped_leaf_of_a_nested_path_and_leaves_the_record_alone() -> None:
    m = mapper(fields={"prompt": "question", "reasoning": "metadata.answer_cot", "answer": "answer"})
    rec = {"question": "Q", "answer": 7, "metadata": {"answer_cot": "R", "level": 2, "inner": {"k": 1}}}
    row = m(rec)
    assert row[1:5] == ("Q", "R", "7", None)
    assert json.loads(row[5]) == {"metadata": {"level": 2, "inner": {"k": 1}}}
    assert rec["metadata"]["answer_cot"] == "R"  # the raw record is not modified
    only = mapper(fields={"prompt": "q", "reasoning": "m.r", "answer": "a"})
    assert only({"q": "Q", "a": "A", "m": {"r": "R"}})[5] is None  # an emptied object goes too


def test_meta_drops_values_over_4kb_and_lists_their_keys() -> None:
    m = mapper("document")
    row = m({"text": "t", "small": "s", "big": "x" * 5000, "bigger": ["y" * 3000, "z" * 3000], "n": None})
    assert json.loads(row[2]) == {"_dropped": ["big", "bigger"], "n": None, "small": "s"}


def test_missing_or_null_reference_answer_is_null_but_a_wrong_type_is_rejected() -> None:
    m = mapper(fields={"reference_answer": "gt"})
    base = {"prompt": "P", "reasoning": "R", "answer": "A"}
    assert m(base)[4] is None
    assert m({**base, "gt": None})[4] is None
    assert m({**base, "gt": 2.5})[4] == "2.5"
    assert error_of(m, {**base, "gt": ["x"]}) == ("wrong_type", "field 'reference_answer' (gt): expected a string, got list")


def test_rollout_objects_and_parallel_answers() -> None:
    m = mapper("rollout_group", {"problem": "q", "rollouts": "samples", "rollout_text": "out.text"})
    rec = {"q": "P", "samples": [{"out": {"text": "T1"}, "answer": 3}, {"out": {"text": "T2"}}]}
    pid, problem, ref, rollouts, meta = m(rec)
    assert (pid, problem, ref, meta) == (stable_id("s", "P"), "P", None, None)
    assert rollouts == [{"id": stable_id(pid, "T1"), "text": "T1", "answer": "3"},
                        {"id": stable_id(pid, "T2"), "text": "T2", "answer": None}]
    m2 = mapper("rollout_group", {"problem": "q", "rollouts": "code", "rollout_answers": "pred"})
    assert error_of(m2, {"q": "P", "code": ["a", "b"], "pred": ["1"]}) == (
        "length_mismatch", "field 'rollout_answers' (pred) has 1 items, 'rollouts' (code) has 2")
    assert error_of(m2, {"q": "P", "code": [], "pred": []}) == ("empty_field", "field 'rollouts' (code) is an empty list")
    # an empty sample is passed on (the group is the record); a missing one is not text
    assert m2({"q": "P", "code": ["a", ""], "pred": ["1", "2"]})[3][1] == {
        "id": stable_id(stable_id("s", "P"), ""), "text": "", "answer": "2"}
    assert error_of(m2, {"q": "P", "code": ["a", None], "pred": ["1", "2"]}) == (
        "missing_field", "field 'rollouts[1]' (code[1]) is null")


@pytest.mark.parametrize("fields,split,message", [
    ({"title": "t"}, None, "fields \\['title'\\] are not canonical fields of kind 'reasoning'"),
    ({"trace": "t"}, None, "a 'trace' field needs split"),
    ({"trace": "t", "answer": "a"}, "think", "cannot be mapped with 'trace'"),
    ({"messages": "m", "prompt": "p"}, None, "cannot be mapped with 'messages'"),
    ({}, "think", "needs a 'trace' field"),
    ({"prompt": "a..b"}, None, "malformed field expression"),
])
def test_bad_mappings_name_the_source_and_where_it_was_configured(fields: dict[str, str], split: str | None,
                                                                   message: str) -> None:
    with pytest.raises(ValueError, match=message) as err:
        mapper(fields=fields, split=split)
    assert "source 's' (mix.yaml:9)" in str(err.value)


def test_meta_of_generated_metadata_with_mixed_keys_and_sets_is_still_json() -> None:
    m = mapper("document")
    row = m({"text": "t", "metadata": {1: "a", "b": 2, "s": {3, 1}}})
    assert row[2] == '{"metadata": {"1": "a", "b": 2, "s": [1, 3]}}'
