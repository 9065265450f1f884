"""Rendering records through the chat/thinking template, and template validation."""

from __future__ import annotations

import dataclasses

import pytest

from zaya_data.specs import TemplateSpec
from zaya_data.stages.template import (
    TemplateError, loss_value, render_document, render_prompt, render_sample, validate_template,
)

T = TemplateSpec()


def test_reasoning_sample_renders_bos_user_think_reasoning_close_answer_eos_in_order():
    segs = render_sample("What is 1+1?", "1+1 is 2.", "\\boxed{2}", T, bos_id=2, eos_id=3)
    assert segs == [
        ("bos", 2),
        ("user", "<|im_start|>user\nWhat is 1+1?<|im_end|>\n<|im_start|>assistant\n"),
        ("think_open", "<think>\n"),
        ("reasoning", "1+1 is 2."),
        ("think_close", "\n</think>\n\n"),
        ("answer", "\\boxed{2}<|im_end|>\n"),
        ("eos", 3),
    ]


def test_bos_and_eos_are_left_out_when_disabled_or_the_tokenizer_has_none():
    no_ends = dataclasses.replace(T, add_bos=False, add_eos=False)
    assert [r for r, _ in render_sample("p", "r", "a", no_ends, 2, 3)] == [
        "user", "think_open", "reasoning", "think_close", "answer"]
    assert [r for r, _ in render_sample("p", "r", "a", T, None, None)][0] == "user"
    assert render_document("hello", T, 2, 3) == [("bos", 2), ("document", "hello"), ("eos", 3)]
    assert render_document("hello", T, None, 3) == [("document", "hello"), ("eos", 3)]


def test_record_text_with_braces_is_substituted_verbatim():
    prompt = "Find {x} if \\frac{1}{2} = {prompt} and {0} {}"
    assert render_prompt(prompt, T) == f"<|im_start|>user\n{prompt}<|im_end|>\n<|im_start|>assistant\n"
    t = dataclasses.replace(T, document="{{raw}} {text}!")
    assert render_document("a {text} b", t) == [("document", "{raw} a {text} b!")]


def test_a_field_may_repeat_and_literal_braces_are_escaped():
    t = dataclasses.replace(T, user="Q: {prompt}\nAgain: {prompt} {{ok}}\n")
    assert render_prompt("x{1}", t) == "Q: x{1}\nAgain: x{1} {ok}\n"


@pytest.mark.parametrize("key,value,message", [
    ("user", "{question}", "template 'bad', key 'user': unknown placeholder {question} (allowed: {prompt})"),
    ("answer", "{answer} {prompt}", "template 'bad', key 'answer': unknown placeholder {prompt} (allowed: {answer})"),
    ("think_open", "<think>{answer}", "template 'bad', key 'think_open': unknown placeholder {answer} (this piece takes no fields)"),
    ("document", "no field", "template 'bad', key 'document': has no {text} placeholder"),
    ("user", "{prompt!r}", "template 'bad', key 'user': placeholder {prompt} must be plain"),
    ("user", "{prompt:>9}", "template 'bad', key 'user': placeholder {prompt} must be plain"),
    ("answer", "{answer", "template 'bad', key 'answer': malformed braces"),
])
def test_invalid_templates_are_refused_naming_template_and_key(key, value, message):
    t = dataclasses.replace(T, name="bad", **{key: value})
    with pytest.raises(TemplateError) as e:
        validate_template(t)
    assert str(e.value).startswith(message)


def test_loss_policy_values_per_role():
    roles = ["bos", "user", "think_open", "reasoning", "think_close", "answer", "document", "eos"]
    assert [loss_value("all", r) for r in roles] == [1, 1, 1, 1, 1, 1, 1, 1]
    assert [loss_value("assistant", r) for r in roles] == [0, 0, 1, 1, 1, 1, 1, 1]
    with pytest.raises(ValueError, match="unknown loss policy 'prompt'"):
        loss_value("prompt", "user")
