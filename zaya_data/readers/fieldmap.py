"""Field mapping: from a raw record (a parsed JSON object, a Parquet/HF row, a
reasoning-gym item) to the values of one canonical row.

A source's `fields` maps canonical field -> expression on the raw record:
`a`, `a.b.c` (nested objects), `a[0]` / `a[-1]` (list items), or combinations such as
`a.b[2].c`. A record the mapping cannot use raises `RecordError(reason, detail)`; the
reader turns that into a ledger rejection naming the file and line, so nothing is lost
silently. The mapper is built once per source and called once per record, so the hot
path is a few dict lookups plus type checks.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from zaya_data.schema import stable_id
from zaya_data.specs import SourceSpec

# Values of unmapped fields larger than this (UTF-8 bytes of their JSON) are dropped from
# `meta`, so one record with a huge side field cannot blow up every batch it travels in.
MAX_META_VALUE_BYTES = 4096

# Canonical fields each kind accepts in `fields`, and what an omitted one defaults to.
DEFAULTS: dict[str, dict[str, str]] = {
    "document": {"text": "text"},
    "reasoning": {"prompt": "prompt", "reasoning": "reasoning", "answer": "answer"},
    "rollout_group": {"problem": "problem", "rollouts": "rollouts"},
}
ALLOWED: dict[str, set[str]] = {
    "document": {"text"},
    "reasoning": {"prompt", "reasoning", "answer", "reference_answer", "messages", "trace"},
    # rollout_text / rollout_answer: expressions applied to each rollout when rollouts
    # are objects rather than plain strings (defaults "text" and "answer").
    "rollout_group": {
        "problem", "rollouts", "rollout_answers", "reference_answer", "rollout_text", "rollout_answer",
    },
}

_MISSING = object()
_TOKEN = re.compile(r"([^.\[\]]+)|\[(-?\d+)\]|(\.)")
# A paragraph break: a line holding nothing but whitespace.
_PARAGRAPH_BREAK = re.compile(r"\n[ \t\r\f\v]*\n")


class RecordError(Exception):
    """One record the mapping cannot use: `reason` is the ledger reason, `detail` names
    the field and what was wrong."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


Step = str | int


def parse_expression(expr: str) -> tuple[Step, ...]:
    """`a.b[2].c` -> ("a", "b", 2, "c"). Raises ValueError on a malformed expression."""
    steps: list[Step] = []
    pos = 0
    expect_key = True  # a key must follow the start or a dot
    while pos < len(expr):
        m = _TOKEN.match(expr, pos)
        if m is None:
            raise ValueError(f"malformed field expression {expr!r} at position {pos}")
        key, index, dot = m.groups()
        if key is not None:
            if not expect_key:
                raise ValueError(f"malformed field expression {expr!r}: missing '.' before {key!r}")
            steps.append(key.strip())
            expect_key = False
        elif index is not None:
            if expect_key and steps:
                raise ValueError(f"malformed field expression {expr!r}: '.[' at position {pos}")
            if not steps:
                raise ValueError(f"malformed field expression {expr!r}: starts with an index")
            steps.append(int(index))
            expect_key = False
        else:
            if expect_key:
                raise ValueError(f"malformed field expression {expr!r}: empty key at position {pos}")
            expect_key = True
        pos = m.end()
    if not steps or expect_key:
        raise ValueError(f"malformed field expression {expr!r}")
    return tuple(steps)


def resolve(rec: Any, steps: tuple[Step, ...], canon: str, expr: str) -> Any:
    """The value at `steps` in `rec`; RecordError(missing_field / wrong_type) naming the
    canonical field, the expression and the step that failed."""
    cur = rec
    for i, step in enumerate(steps):
        if isinstance(step, str):
            if not isinstance(cur, dict):
                raise RecordError(
                    "wrong_type", f"field {canon!r} ({expr}): expected an object before {step!r}, "
                    f"got {type(cur).__name__}",
                )
            cur = cur.get(step, _MISSING)
            if cur is _MISSING:
                where = "" if i == 0 else f" (no key {step!r})"
                raise RecordError("missing_field", f"field {canon!r} ({expr}) is missing{where}")
        else:
            if not isinstance(cur, list):
                raise RecordError(
                    "wrong_type", f"field {canon!r} ({expr}): expected a list before [{step}], "
                    f"got {type(cur).__name__}",
                )
            if not -len(cur) <= step < len(cur):
                raise RecordError(
                    "missing_field", f"field {canon!r} ({expr}): index [{step}] out of range (length {len(cur)})"
                )
            cur = cur[step]
    return cur


def as_text(value: Any, canon: str, expr: str, *, numeric: bool = False, required: bool = True) -> str | None:
    """Check a mapped value is usable text. `numeric`: ints/floats become strings; only for
    answers, because benchmark answers are very often bare JSON numbers (`"answer": 27.0`)
    while a number where a prompt or a trace belongs means the mapping is wrong."""
    if type(value) is str:
        s = value
    elif value is None:
        if not required:
            return None
        raise RecordError("missing_field", f"field {canon!r} ({expr}) is null")
    elif numeric and isinstance(value, (int, float)) and not isinstance(value, bool):
        # 27.0 -> "27": JSON writers turn integer answers into floats; the answer is 27.
        try:
            s = str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)
        except ValueError:  # an int beyond Python's str() digit limit
            raise RecordError("wrong_type", f"field {canon!r} ({expr}): a number too long to write as text") from None
    else:
        raise RecordError("wrong_type", f"field {canon!r} ({expr}): expected a string, got {type(value).__name__}")
    if not s or s.isspace():
        if not required:
            return None
        raise RecordError("empty_field", f"field {canon!r} ({expr}) is empty")
    if "\x00" in s:
        raise RecordError("nul_byte", f"field {canon!r} ({expr}) contains a NUL byte")
    return s


def split_think(trace: str, canon: str) -> tuple[str, str]:
    """`<think>R</think>A` -> (R, A). The opening tag may be missing (chat templates often
    put it in the prompt); an opening tag with no closing one means the trace was cut off
    mid-thought, which is rejected rather than guessed at."""
    close = trace.rfind("</think>")
    if close < 0:
        if "<think>" in trace:
            raise RecordError("unclosed_think", f"field {canon!r}: <think> without </think>")
        raise RecordError("empty_field", f"field {canon!r}: no </think>, so the reasoning is empty")
    head = trace[:close]
    opening = head.find("<think>")
    if opening >= 0:
        head = head[:opening] + head[opening + len("<think>"):]
    reasoning = head.strip()
    answer = trace[close + len("</think>"):].strip()
    if not reasoning:
        raise RecordError("empty_field", f"field {canon!r}: the reasoning inside <think> is empty")
    if not answer:
        raise RecordError("empty_field", f"field {canon!r}: the answer after </think> is empty")
    return reasoning, answer


def split_final_paragraph(trace: str, canon: str) -> tuple[str, str]:
    """The answer is the last non-empty paragraph (paragraphs are separated by blank
    lines); with a single paragraph, the last line. The reasoning is what precedes it."""
    text = trace.strip()
    last = None
    for last in _PARAGRAPH_BREAK.finditer(text):
        pass
    if last is not None:
        reasoning, answer = text[: last.start()], text[last.end():]
    else:
        cut = text.rfind("\n")
        reasoning, answer = (text[:cut], text[cut + 1:]) if cut >= 0 else ("", text)
    reasoning, answer = reasoning.strip(), answer.strip()
    if not reasoning:
        raise RecordError("empty_field", f"field {canon!r}: a single line, so the reasoning is empty")
    if not answer:
        raise RecordError("empty_field", f"field {canon!r}: the final paragraph is empty")
    return reasoning, answer


SPLITTERS: dict[str, Callable[[str, str], tuple[str, str]]] = {
    "think": split_think,
    "final_paragraph": split_final_paragraph,
}

_THINK_BLOCK = re.compile(r"<think>.*?</think>", re.DOTALL)


def _content(msg: dict[str, Any], i: int, expr: str) -> str:
    content = msg.get("content")
    if isinstance(content, list):
        # OpenAI-style content parts: keep the text parts, in order.
        parts = [p.get("text") for p in content if isinstance(p, dict) and p.get("type", "text") == "text"]
        if not all(isinstance(p, str) for p in parts):
            raise RecordError("wrong_type", f"field 'messages' ({expr}[{i}].content): a text part is not a string")
        content = "".join(parts)
    if content is None:
        content = ""
    if not isinstance(content, str):
        raise RecordError(
            "wrong_type", f"field 'messages' ({expr}[{i}].content): expected a string, got {type(content).__name__}"
        )
    if "\x00" in content:
        raise RecordError("nul_byte", f"field 'messages' ({expr}[{i}].content) contains a NUL byte")
    return content


def split_messages(messages: Any, expr: str) -> tuple[str, str, str]:
    """Chat records -> (prompt, reasoning, answer).

    The last assistant turn is the sample: its reasoning is a separate
    `reasoning_content`/`reasoning` key when present, else the `<think>...</think>` block
    of its content; the answer is the content after the block. Everything before it is
    the prompt. Single-turn (optional system + one user turn): system and user contents
    joined by a blank line. Multi-turn: every earlier turn as "role: content", joined by
    blank lines, with earlier assistant turns' <think> blocks removed (the sample's own
    reasoning is the only chain of thought kept). Turns after the last assistant turn
    (e.g. a trailing user turn) are not part of the sample and are ignored.
    """
    if not isinstance(messages, list):
        raise RecordError("wrong_type", f"field 'messages' ({expr}): expected a list, got {type(messages).__name__}")
    last = -1
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict):
            raise RecordError("wrong_type", f"field 'messages' ({expr}[{i}]): expected an object, got {type(msg).__name__}")
        role = msg.get("role")
        if not isinstance(role, str):
            raise RecordError("missing_field", f"field 'messages' ({expr}[{i}].role) is missing or not a string")
        if role == "assistant":
            last = i
    if last < 0:
        raise RecordError("missing_field", f"field 'messages' ({expr}): no assistant turn")
    final = messages[last]
    content = _content(final, last, expr)
    side = final.get("reasoning_content", final.get("reasoning"))
    if isinstance(side, str) and side.strip():
        if "\x00" in side:
            raise RecordError("nul_byte", f"field 'messages' ({expr}[{last}].reasoning_content) contains a NUL byte")
        reasoning = side.strip()
        answer = _THINK_BLOCK.sub("", content).strip()
        if not answer:
            raise RecordError("empty_field", f"field 'messages' ({expr}[{last}].content): the answer is empty")
    else:
        reasoning, answer = split_think(content, f"messages[{last}].content")
    before = messages[:last]
    turns = [(m["role"], _content(m, i, expr)) for i, m in enumerate(before)]
    if any(role == "assistant" for role, _ in turns):
        prompt = "\n\n".join(
            f"{role}: {_THINK_BLOCK.sub('', text).strip() if role == 'assistant' else text.strip()}"
            for role, text in turns
        )
    else:
        prompt = "\n\n".join(text.strip() for role, text in turns if role in ("system", "user") and text.strip())
    if not prompt.strip():
        raise RecordError("empty_field", f"field 'messages' ({expr}): no user turn before the last assistant turn")
    return prompt, reasoning, answer


def _meta_default(value: Any) -> Any:
    # reasoning-gym metadata can hold sets, tuples or small objects; meta is informative
    # text, so anything JSON cannot encode is written as its str().
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=repr)
    return str(value)


def _string_keys(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _string_keys(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_string_keys(v) for v in value]
    return value


def _dumps(value: Any) -> str:
    try:
        return json.dumps(value, sort_keys=True, ensure_ascii=False, default=_meta_default)
    except TypeError:
        # sort_keys cannot order mixed key types ({1: .., "a": ..}, seen in generated
        # metadata); JSON keys are strings anyway, so make them strings first.
        return json.dumps(_string_keys(value), sort_keys=True, ensure_ascii=False, default=_meta_default)


def meta_json(rest: dict[str, Any]) -> str | None:
    """JSON text of the unmapped fields, values over MAX_META_VALUE_BYTES dropped (their
    keys listed under "_dropped" so a reader of meta knows they existed), or None."""
    if not rest:
        return None
    text = _dumps(rest)
    if len(text) <= MAX_META_VALUE_BYTES // 4 or len(text.encode("utf-8", "surrogatepass")) <= MAX_META_VALUE_BYTES:
        return text
    kept: dict[str, Any] = {}
    dropped: list[str] = []
    for key, value in rest.items():
        if isinstance(value, str) and len(value) > MAX_META_VALUE_BYTES:
            dropped.append(str(key))
            continue
        size = len(_dumps(value).encode("utf-8", "surrogatepass"))
        if size > MAX_META_VALUE_BYTES:
            dropped.append(str(key))
        else:
            kept[key] = value
    if dropped:
        kept["_dropped"] = sorted(dropped)
    return _dumps(kept)


class Mapper:
    """Maps raw records of one source to canonical row values.

    `__call__(rec)` returns a tuple in schema order without the constant and provenance
    columns: document (id, text, meta); reasoning (id, prompt, reasoning, answer,
    reference_answer, meta); rollout_group (problem_id, problem, reference_answer,
    rollouts, meta). It raises RecordError for a record it cannot use.
    """

    def __init__(self, spec: SourceSpec, *, with_meta: bool = True):
        kind = spec.kind
        if kind not in DEFAULTS:
            raise ValueError(f"source {spec.name!r} ({spec.origin}): unknown kind {kind!r}")
        bad = sorted(set(spec.fields) - ALLOWED[kind])
        if bad:
            raise ValueError(
                f"source {spec.name!r} ({spec.origin}): fields {bad} are not canonical fields of kind {kind!r} "
                f"(allowed: {', '.join(sorted(ALLOWED[kind]))})"
            )
        fields = dict(spec.fields)
        if "messages" in fields:
            clash = sorted({"prompt", "reasoning", "answer", "trace"} & set(fields))
            if clash:
                raise ValueError(f"source {spec.name!r} ({spec.origin}): fields {clash} cannot be mapped with 'messages'")
        elif "trace" in fields:
            clash = sorted({"reasoning", "answer"} & set(fields))
            if clash:
                raise ValueError(
                    f"source {spec.name!r} ({spec.origin}): fields {clash} cannot be mapped with 'trace' (the trace holds both)"
                )
            if spec.split not in SPLITTERS:
                raise ValueError(
                    f"source {spec.name!r} ({spec.origin}): a 'trace' field needs split: "
                    f"{' or '.join(SPLITTERS)}, got {spec.split!r}"
                )
            fields.setdefault("prompt", "prompt")
        else:
            if spec.split is not None:
                raise ValueError(f"source {spec.name!r} ({spec.origin}): split: {spec.split} needs a 'trace' field to split")
            fields = {**DEFAULTS[kind], **fields}
        self.name = spec.name
        self.kind = kind
        self.with_meta = with_meta
        self.split = SPLITTERS.get(spec.split or "")
        try:
            self.exprs = {canon: (expr, parse_expression(expr)) for canon, expr in fields.items()}
        except ValueError as e:
            raise ValueError(f"source {spec.name!r} ({spec.origin}): {e}") from None
        # Expressions that apply to each rollout object, not to the record.
        self.rollout_text = self.exprs.pop("rollout_text", ("text", ("text",)))
        self.rollout_answer = self.exprs.pop("rollout_answer", ("answer", ("answer",)))
        # What meta leaves out: a top-level key mapped whole, or the leaf of a nested
        # key path (metadata.answer_cot drops answer_cot, keeps the rest of metadata). A
        # path through a list index drops its top-level key (the list was consumed).
        self._drop_top: set[str] = set()
        self._drop_nested: list[tuple[str, ...]] = []
        for _expr, steps in self.exprs.values():
            if len(steps) == 1 or not all(isinstance(s, str) for s in steps):
                self._drop_top.add(str(steps[0]))
            else:
                self._drop_nested.append(tuple(str(s) for s in steps))
        self.required_roots = {
            canon: str(steps[0]) for canon, (_e, steps) in self.exprs.items() if canon != "reference_answer"
        }
        self._call = {
            "document": self._document, "reasoning": self._reasoning, "rollout_group": self._rollout_group,
        }[kind]

    def __call__(self, rec: dict[str, Any]) -> tuple[Any, ...]:
        return self._call(rec)

    # -- value access -------------------------------------------------------------
    def _get(self, rec: dict[str, Any], canon: str) -> Any:
        expr, steps = self.exprs[canon]
        if len(steps) == 1:
            value = rec.get(steps[0], _MISSING)  # the common case, without the loop
            if value is _MISSING:
                raise RecordError("missing_field", f"field {canon!r} ({expr}) is missing")
            return value
        return resolve(rec, steps, canon, expr)

    def _text(self, rec: dict[str, Any], canon: str, *, numeric: bool = False) -> str:
        return as_text(self._get(rec, canon), canon, self.exprs[canon][0], numeric=numeric)  # type: ignore[return-value]

    def _reference(self, rec: dict[str, Any]) -> str | None:
        # Optional: a missing or null reference answer is a null, not a rejection; a
        # present one of the wrong type is still an error in the mapping or the data.
        if "reference_answer" not in self.exprs:
            return None
        expr, steps = self.exprs["reference_answer"]
        try:
            value = resolve(rec, steps, "reference_answer", expr)
        except RecordError as e:
            if e.reason == "missing_field":
                return None
            raise
        return as_text(value, "reference_answer", expr, numeric=True, required=False)

    def _meta(self, rec: dict[str, Any]) -> str | None:
        if not self.with_meta:
            return None
        drop = self._drop_top
        rest = {k: v for k, v in rec.items() if k not in drop}
        for path in self._drop_nested:
            _drop_path(rest, path)
        return meta_json(rest)

    # -- kinds ----------------------------------------------------------------------
    def _document(self, rec: dict[str, Any]) -> tuple[Any, ...]:
        text = self._text(rec, "text")
        return (stable_id(self.name, text), text, self._meta(rec))

    def _reasoning(self, rec: dict[str, Any]) -> tuple[Any, ...]:
        if "messages" in self.exprs:
            prompt, reasoning, answer = split_messages(self._get(rec, "messages"), self.exprs["messages"][0])
        elif self.split is not None:
            prompt = self._text(rec, "prompt")
            reasoning, answer = self.split(self._text(rec, "trace"), "trace")
        else:
            prompt = self._text(rec, "prompt")
            reasoning = self._text(rec, "reasoning")
            answer = self._text(rec, "answer", numeric=True)
        ref = self._reference(rec)
        rid = stable_id(self.name, prompt, reasoning, answer)
        return (rid, prompt, reasoning, answer, ref, self._meta(rec))

    def _rollout_group(self, rec: dict[str, Any]) -> tuple[Any, ...]:
        problem = self._text(rec, "problem")
        rollouts = self._get(rec, "rollouts")
        rexpr = self.exprs["rollouts"][0]
        if not isinstance(rollouts, list):
            raise RecordError("wrong_type", f"field 'rollouts' ({rexpr}): expected a list, got {type(rollouts).__name__}")
        if not rollouts:
            raise RecordError("empty_field", f"field 'rollouts' ({rexpr}) is an empty list")
        answers: list[Any] | None = None
        if "rollout_answers" in self.exprs:
            aexpr = self.exprs["rollout_answers"][0]
            answers = self._get(rec, "rollout_answers")
            if not isinstance(answers, list):
                raise RecordError(
                    "wrong_type", f"field 'rollout_answers' ({aexpr}): expected a list, got {type(answers).__name__}"
                )
            if len(answers) != len(rollouts):
                raise RecordError(
                    "length_mismatch",
                    f"field 'rollout_answers' ({aexpr}) has {len(answers)} items, 'rollouts' ({rexpr}) has {len(rollouts)}",
                )
        problem_id = stable_id(self.name, problem)
        out = []
        for i, item in enumerate(rollouts):
            canon = f"rollouts[{i}]"
            answer: str | None = None
            if isinstance(item, dict):
                texpr, tsteps = self.rollout_text
                text = _rollout_text(resolve(item, tsteps, canon, f"{rexpr}[{i}].{texpr}"), canon, f"{rexpr}[{i}].{texpr}")
                aexpr, asteps = self.rollout_answer
                try:
                    raw_answer = resolve(item, asteps, canon, aexpr)
                except RecordError as e:
                    if e.reason != "missing_field":
                        raise
                    raw_answer = None
                answer = as_text(raw_answer, f"{canon}.answer", aexpr, numeric=True, required=False)
            else:
                text = _rollout_text(item, canon, f"{rexpr}[{i}]")
            if answers is not None:
                answer = as_text(
                    answers[i], f"rollout_answers[{i}]", f"{self.exprs['rollout_answers'][0]}[{i}]",
                    numeric=True, required=False,
                )
            out.append({"id": stable_id(problem_id, text), "text": text, "answer": answer})  # type: ignore[arg-type]
        return (problem_id, problem, self._reference(rec), out, self._meta(rec))


def _rollout_text(value: Any, canon: str, expr: str) -> str:
    """A rollout's text. An empty string is kept: the group (the problem) is the record,
    and one empty sample among C does not make the problem unusable; consumers that need
    text (the RSA population builder) count each empty rollout themselves."""
    if type(value) is str and (not value or value.isspace()):
        return value
    return as_text(value, canon, expr)  # type: ignore[return-value]


def _drop_path(rest: dict[str, Any], path: tuple[str, ...]) -> None:
    """Remove the leaf at `path` from `rest`, copying the dicts on the way so the raw
    record is not modified; an object left empty is removed too."""
    top = rest.get(path[0])
    if not isinstance(top, dict):
        return
    chain = [rest]
    cur: dict[str, Any] = dict(top)
    rest[path[0]] = cur
    chain.append(cur)
    for key in path[1:-1]:
        nxt = cur.get(key)
        if not isinstance(nxt, dict):
            return
        nxt = dict(nxt)
        cur[key] = nxt
        cur = nxt
        chain.append(cur)
    cur.pop(path[-1], None)
    # Prune objects emptied by the removal, innermost first.
    for parent, key in zip(reversed(chain[:-1]), reversed(path[:-1])):
        if parent.get(key) == {}:
            del parent[key]
