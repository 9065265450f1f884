"""Reasoning-sample validation: is this trace fit to train on?

Checks, in order (the first failure names the drop, ledger stage `validate`):
- `unclosed_think`: a `<think>` without its `</think>` in the reasoning or answer, or a
  stray think tag in the answer (the splitter cut the trace in the wrong place);
- `empty_reasoning`, `too_short` / `too_long`: reasoning length in characters against
  `min_chars` / `max_chars`;
- `repetition_loop`: the reasoning is a degenerate loop. Measured as the fraction of its
  10-word windows that repeat an earlier window: ordinary reasoning restates a phrase
  now and then (a few percent), a model stuck in a loop repeats nearly everything, so
  the default limit of 0.5 separates them with a wide margin;
- `no_final_answer`: `require_answer` and no final answer in the `answer` field (the
  last `\\boxed{...}`/`\\fbox{...}` for `answer_pattern: boxed`, else the last match of
  the regex, its group 1 when it has one);
- `answer_mismatch`: `math_verify: drop` and a reference answer that math-verify says
  the final answer is not equivalent to. With `math_verify: flag` such samples are kept
  and counted in `stats["answer_mismatch_flagged"]`.
"""

from __future__ import annotations

import re
import threading
from typing import Any

import numpy as np
import pyarrow as pa

from zaya_data.clean.config import ValidateSpec
from zaya_data.clean.normalize import locations, record_kind
from zaya_data.ledger import Ledger

STAGE = "validate"
REPEAT_WINDOW = 10  # words per window of the repetition-loop measure
_BOX = re.compile(r"\\(?:boxed|fbox)\s*\{")
_THINK_OPEN, _THINK_CLOSE = "<think>", "</think>"


def last_boxed(text: str) -> str | None:
    """Content of the last `\\boxed{...}` (balanced braces), or None."""
    starts = [m.end() for m in _BOX.finditer(text)]
    for start in reversed(starts):
        depth, i = 1, start
        while i < len(text):
            c = text[i]
            if c == "{":
                depth += 1
            elif c == "}":
                depth -= 1
                if depth == 0:
                    content = text[start:i].strip()
                    if content:
                        return content
                    break
            i += 1
    return None


def extract_answer(text: str, pattern: str) -> str | None:
    if pattern == "boxed":
        return last_boxed(text)
    matches = list(re.finditer(pattern, text))
    if not matches:
        return None
    m = matches[-1]
    ans = (m.group(1) if m.re.groups else m.group(0)).strip()
    return ans or None


def repeat_fraction(text: str, window: int = REPEAT_WINDOW) -> float:
    """Fraction of the text's `window`-word windows that repeat an earlier window."""
    words = text.split()
    m = len(words) - window + 1
    if m < 2:
        return 0.0
    # Python's str hash is salted per process, but only equality matters here, so the
    # fraction is the same on every worker.
    h = np.array([hash(w) for w in words], dtype=np.int64).view(np.uint64)
    roll = np.zeros(m, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for j in range(window):
            roll = roll * np.uint64(0x100000001B3) + h[j : j + m]
    return 1.0 - len(np.unique(roll)) / m


def answers_equivalent(answer: str, reference: str) -> bool:
    """math-verify's judgement of `answer` against `reference` (both bare LaTeX/text)."""
    from math_verify import parse, verify

    # math-verify's timeouts use SIGALRM, which only the main thread may set; a Ray
    # worker thread runs without them.
    main = threading.current_thread() is threading.main_thread()
    kw: dict[str, Any] = {} if main else {"parsing_timeout": None}
    gold = parse(f"${reference}$", **kw)
    pred = parse(f"${answer}$", **kw)
    return bool(verify(gold, pred, **({} if main else {"timeout_seconds": None})))


def format_problem(reasoning: str, answer: str, spec: ValidateSpec) -> str | None:
    """The first format failure of a sample, or None."""
    for part in (reasoning, answer):
        if part.count(_THINK_OPEN) > part.count(_THINK_CLOSE):
            return "unclosed_think"
    if _THINK_OPEN in answer or _THINK_CLOSE in answer:
        return "unclosed_think"
    n = len(reasoning.strip())
    if n == 0:
        return "empty_reasoning"
    if n < spec.min_chars:
        return "too_short"
    if spec.max_chars is not None and n > spec.max_chars:
        return "too_long"
    if spec.max_repeat_fraction is not None and repeat_fraction(reasoning) > spec.max_repeat_fraction:
        return "repetition_loop"
    return None


class Validator:
    """Callable stage `Validator(spec)(table, ledger) -> table` for REASONING tables.
    `stats`: checked, kept, verified (reference present and checked), answer_mismatch_flagged,
    no_reference."""

    def __init__(self, spec: ValidateSpec) -> None:
        self.spec = spec
        self.stats: dict[str, int] = {}
        # (id, source, file_index, row_index, reason, detail) of every sample kept under
        # `math_verify: flag` although its answer does not match: the build records them
        # so `explain` can say so.
        self.flagged: list[tuple[str, str, int, int, str, str]] = []

    def _count(self, key: str) -> None:
        self.stats[key] = self.stats.get(key, 0) + 1

    def check(self, reasoning: str, answer: str, reference: str | None) -> str | None:
        """Drop reason for one sample, or None to keep (flags are counted in stats)."""
        spec = self.spec
        bad = format_problem(reasoning, answer, spec)
        if bad:
            return bad
        final = extract_answer(answer, spec.answer_pattern)
        if final is None and spec.require_answer:
            return "no_final_answer"
        if spec.math_verify != "off" and final is not None:
            if reference is None or not reference.strip():
                self._count("no_reference")
            else:
                self._count("verified")
                if not answers_equivalent(final, reference):
                    if spec.math_verify == "drop":
                        return "answer_mismatch"
                    self._count("answer_mismatch_flagged")
        return None

    def __call__(self, table: pa.Table, ledger: Ledger) -> pa.Table:
        if record_kind(table) != "reasoning":
            raise ValueError("validate: needs a REASONING table (prompt, reasoning, answer), got columns "
                             f"{table.column_names}")
        if table.num_rows == 0:
            return table
        ids = table.column("id").to_pylist()
        sources = table.column("source").to_pylist()
        refs = (table.column("reference_answer").to_pylist() if "reference_answer" in table.column_names
                else [None] * table.num_rows)
        where = locations(table)
        files = table.column("file_index").to_pylist()
        rows = table.column("row_index").to_pylist()
        mask = []
        for i, (r, a) in enumerate(zip(table.column("reasoning").to_pylist(), table.column("answer").to_pylist())):
            self._count("checked")
            flags = self.stats.get("answer_mismatch_flagged", 0)
            reason = self.check(r or "", a or "", refs[i])
            if reason:
                detail = None
                if reason == "answer_mismatch":  # say what disagreed: explain and the ledger show it
                    detail = f"answer {extract_answer(a or '', self.spec.answer_pattern)!r}, reference {refs[i]!r}"
                ledger.reject(STAGE, reason, sources[i], location=where[i], record_id=ids[i], detail=detail)
            else:
                self._count("kept")
                if self.stats.get("answer_mismatch_flagged", 0) > flags:
                    final = extract_answer(a or "", self.spec.answer_pattern)
                    self.flagged.append((ids[i], sources[i], files[i], rows[i], "answer_mismatch",
                                         f"answer {final!r}, reference {refs[i]!r}"))
            mask.append(reason is None)
        return table.filter(pa.array(mask, pa.bool_()))
