"""Answer-preserving trimming: fit an over-long reasoning sample into the context.

The ZAYA1 recipe keeps long chain-of-thought traces in the mix at every context length:
when a sample does not fit, the *tail of the reasoning* is dropped and everything else
is kept token for token:

    bos user think_open | reasoning[:k] | think_close answer eos

`k` is the longest reasoning prefix that fits, cut back to the nearest line or sentence
end when one lies within the last `window` tokens of that prefix, so the model sees a
coherent prefix of thought, the thinking block closed, then the right answer. A sample
whose head (bos, user, think_open) and tail (think_close, answer, eos) alone exceed the
context cannot be saved and is rejected by the stage.

Boundaries are found on the reasoning text through the encoding's character offsets, so
they work for any tokenizer: a cut between tokens k-1 and k is at a boundary when
- the kept text, less trailing spaces/tabs, ends with a newline (a line end), or
- it ends with ".", "?" or "!" and the next character is a space or newline;
and never when tokens k-1 and k share one character (a byte-level split of a multi-byte
character), so a trimmed prefix never ends inside a character.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

# A character is at most 4 UTF-8 bytes, so a character-aligned cut is at most 3 tokens back.
_MAX_CHAR_TOKENS = 4


def plan_trim(head: np.ndarray, body: np.ndarray, tail: np.ndarray, context: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Vectorised over a batch: (needs_trim, rejected, budget) per sample.

    `budget` is how many reasoning tokens fit beside the head and tail of a sample that
    needs trimming (before any boundary search); for other samples it equals `body`.
    """
    head = np.asarray(head, dtype=np.int64)
    body = np.asarray(body, dtype=np.int64)
    tail = np.asarray(tail, dtype=np.int64)
    fixed = head + tail
    rejected = fixed > context
    needs = (fixed + body > context) & ~rejected
    budget = np.where(needs, context - fixed, body)
    return needs, rejected, budget


def _ends_sentence_or_line(text: str | bytes, end: int) -> bool:
    """Whether `text[:end]` ends a line or a sentence (see the module docstring). Works on
    str (character positions) and on UTF-8 bytes (byte positions) alike: every character
    it looks at is ASCII."""
    b = isinstance(text, bytes)
    blank, newline = ((b" ", b"\t"), b"\n") if b else ((" ", "\t"), "\n")
    p = end
    while p > 0 and text[p - 1:p] in blank:  # a line's trailing indentation still ends it
        p -= 1
    if p > 0 and text[p - 1:p] == newline:
        return True
    stops, follow = ((b".", b"?", b"!"), (b" ", b"\n")) if b else ((".", "?", "!"), (" ", "\n"))
    return 0 < end < len(text) and text[end - 1:end] in stops and text[end:end + 1] in follow


def _pick(budget: int, window: int, aligned, boundary) -> int:
    """The largest k <= budget (k >= budget - window) whose cut is a boundary; else the
    largest character-aligned k (at most 3 tokens back, 0 always qualifies); else budget."""
    if budget <= 0:
        return 0
    for k in range(budget, max(1, budget - window) - 1, -1):
        if aligned(k) and boundary(k):
            return k
    for k in range(budget, max(-1, budget - _MAX_CHAR_TOKENS), -1):
        if k == 0 or aligned(k):
            return k
    return budget


def cut_is_boundary(text: str, offsets: Sequence[tuple[int, int]], k: int) -> bool:
    """Whether cutting before token `k` (keeping tokens [0, k)) lands on a line or
    sentence boundary of `text`. `offsets` are the tokens' character spans; k >= 1 and
    token k must exist (a trimmed prefix always drops at least one token)."""
    end = offsets[k - 1][1]
    return offsets[k][0] >= end and _ends_sentence_or_line(text, end)


def choose_cut(text: str, offsets: Sequence[tuple[int, int]], budget: int, window: int) -> int:
    """How many reasoning tokens to keep: the largest k <= budget whose cut is a boundary,
    searching back at most `window` tokens; otherwise the largest character-aligned
    k <= budget; otherwise `budget`. `offsets` (character spans) must cover tokens
    0..budget."""
    return _pick(budget, window,
                 lambda k: offsets[k][0] >= offsets[k - 1][1],  # tokens k-1, k not bytes of one character
                 lambda k: _ends_sentence_or_line(text, offsets[k - 1][1]))


def choose_cut_bytes(data: bytes, ends: Sequence[int], budget: int, window: int) -> int:
    """`choose_cut` for byte-level tokenizers, on the UTF-8 bytes of the text: `ends[j]` is
    the byte position where token j ends (for j in 0..budget-1). A cut is
    character-aligned when the next byte does not continue a multi-byte character."""
    return _pick(budget, window,
                 lambda k: (data[ends[k - 1]] & 0xC0) != 0x80,
                 lambda k: _ends_sentence_or_line(data, ends[k - 1]))
