"""The chat/thinking template: how a record becomes text segments with roles.

A reasoning sample (prompt, reasoning, answer) is rendered as these segments, in order:

    role         text (TemplateSpec field)                 default (chatml_think)
    bos          the tokenizer's bos id, if add_bos        -
    user         user.format(prompt=PROMPT)                "<|im_start|>user\\n{prompt}<|im_end|>\\n<|im_start|>assistant\\n"
    think_open   think_open                                "<think>\\n"
    reasoning    REASONING, verbatim                       -
    think_close  think_close                               "\\n</think>\\n\\n"
    answer       answer.format(answer=ANSWER)              "{answer}<|im_end|>\\n"
    eos          the tokenizer's eos id, if add_eos        -

A plain document is `bos? , document.format(text=TEXT) , eos?`. bos and eos are token
ids, never text, so a tokenizer without them simply has no such segment.

Placeholders: `user` may use `{prompt}`, `answer` `{answer}`, `document` `{text}`, each
at least once; `think_open`/`think_close` are constant text. Write a literal brace as
`{{` or `}}`. Record text is substituted as-is (never run through `str.format`), so a
prompt full of braces such as "\\frac{1}{2}" is safe. Conversions and format specs
(`{prompt!r}`, `{prompt:>9}`) are refused.

Loss policy (`PhaseSpec.loss`): "all" puts loss 1 on every token (only the padding that
packing adds has 0); "assistant" puts loss 1 on think_open, reasoning, think_close,
answer and eos and 0 on bos and user. A plain document has no prompt, so under
"assistant" its text and eos keep loss 1 and only bos gets 0.

Special-token strings in the template (such as `<|im_start|>`) become their special
ids; the same strings inside record text are ordinary text (see `zaya_data.tokenizer`).
"""

from __future__ import annotations

import functools
import string
from dataclasses import dataclass

from zaya_data.specs import TemplateSpec

LOSS_POLICIES = ("all", "assistant")
# The fields each template piece may (and, for the record-bearing pieces, must) use.
PIECE_FIELDS: dict[str, tuple[str, ...]] = {
    "user": ("prompt",),
    "think_open": (),
    "think_close": (),
    "answer": ("answer",),
    "document": ("text",),
}
ROLES = ("bos", "user", "think_open", "reasoning", "think_close", "answer", "document", "eos")
_ASSISTANT_LOSS = {"bos": 0, "user": 0, "think_open": 1, "reasoning": 1, "think_close": 1,
                   "answer": 1, "document": 1, "eos": 1}

Segment = tuple[str, "str | int"]  # (role, text) or, for bos/eos, (role, token id)


class TemplateError(ValueError):
    """A template piece that uses an unknown field, misses its field, or is malformed."""


@dataclass(frozen=True)
class Piece:
    """One template piece parsed into literal text and field names, in order:
    ("literal", "<|im_start|>user\\n"), ("field", "prompt"), ("literal", "<|im_end|>...")."""

    name: str
    parts: tuple[tuple[str, str], ...]

    def render(self, **values: str) -> str:
        return "".join(v if kind == "literal" else values[v] for kind, v in self.parts)

    @property
    def is_constant(self) -> bool:
        return all(kind == "literal" for kind, _ in self.parts)


@functools.lru_cache(maxsize=256)
def parse_piece(template: TemplateSpec, name: str) -> Piece:
    """Parse one piece of `template`, naming the template and key on any error."""
    text = getattr(template, name)
    allowed = PIECE_FIELDS[name]
    where = f"template {template.name!r}, key {name!r}"
    if not isinstance(text, str):
        raise TemplateError(f"{where}: expected text, got {type(text).__name__}")
    parts: list[tuple[str, str]] = []
    try:
        parsed = list(string.Formatter().parse(text))
    except ValueError as e:
        raise TemplateError(f"{where}: malformed braces in {text!r} ({e}); write a literal brace as {{{{ or }}}}") from None
    for literal, fname, spec, conv in parsed:
        if literal:
            parts.append(("literal", literal))
        if fname is None:
            continue
        if fname not in allowed:
            hint = f"allowed: {{{allowed[0]}}}" if allowed else "this piece takes no fields"
            raise TemplateError(f"{where}: unknown placeholder {{{fname}}} ({hint})")
        if spec or conv:
            raise TemplateError(f"{where}: placeholder {{{fname}}} must be plain, without conversion or format spec")
        parts.append(("field", fname))
    for f in allowed:
        if ("field", f) not in parts:
            raise TemplateError(f"{where}: has no {{{f}}} placeholder, so the record's {f} would be lost")
    return Piece(name, tuple(parts))


def validate_template(template: TemplateSpec) -> dict[str, Piece]:
    """All pieces of `template`, parsed; raises TemplateError naming the template and key."""
    return {name: parse_piece(template, name) for name in PIECE_FIELDS}


def loss_value(policy: str, role: str) -> int:
    """The loss-mask value of a token of `role` under `policy`."""
    if policy not in LOSS_POLICIES:
        raise ValueError(f"unknown loss policy {policy!r} (expected one of {', '.join(LOSS_POLICIES)})")
    if role not in _ASSISTANT_LOSS:
        raise ValueError(f"unknown segment role {role!r}")
    return 1 if policy == "all" else _ASSISTANT_LOSS[role]


def _ends(template: TemplateSpec, bos_id: int | None, eos_id: int | None) -> tuple[list[Segment], list[Segment]]:
    head: list[Segment] = [("bos", bos_id)] if template.add_bos and bos_id is not None else []
    tail: list[Segment] = [("eos", eos_id)] if template.add_eos and eos_id is not None else []
    return head, tail


def render_sample(
    prompt: str, reasoning: str, answer: str, template: TemplateSpec,
    bos_id: int | None = None, eos_id: int | None = None,
) -> list[Segment]:
    """The segments of one reasoning sample (see the module docstring)."""
    p = validate_template(template)
    head, tail = _ends(template, bos_id, eos_id)
    return [
        *head,
        ("user", p["user"].render(prompt=prompt)),
        ("think_open", p["think_open"].render()),
        ("reasoning", reasoning),
        ("think_close", p["think_close"].render()),
        ("answer", p["answer"].render(answer=answer)),
        *tail,
    ]


def render_document(text: str, template: TemplateSpec, bos_id: int | None = None,
                    eos_id: int | None = None) -> list[Segment]:
    """The segments of one plain document."""
    head, tail = _ends(template, bos_id, eos_id)
    return [*head, ("document", parse_piece(template, "document").render(text=text)), *tail]


def render_prompt(prompt: str, template: TemplateSpec) -> str:
    """The user part of the template around `prompt`: what an RL prompt set stores (the
    policy writes the thinking and the answer itself)."""
    return parse_piece(template, "user").render(prompt=prompt)
