"""Tails: the last tau tokens of each rollout's reasoning, with its final answer kept.

Markovian RSA puts only the end of each candidate into the aggregation prompt, so the
prompt stays bounded however long the population's traces grow. A tail is measured in
the tokenizer's own tokens (the suffix `ids[j:]` of the reasoning's encoding, never more
than tau of them); it starts at a line or sentence boundary when one lies within
`window` tokens after the hard cut, so a candidate does not open mid-word. The cut only
ever moves forward, so a tail never exceeds tau tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

THINK_CLOSE = "</think>"
_SENTENCE_END = ".!?"


@dataclass(frozen=True)
class Tail:
    text: str  # the reasoning suffix, exactly text[char_start:] of the reasoning
    tokens: int  # its length in tokens (== len(ids) - first token index)
    truncated: bool  # False when the whole reasoning fit within tau
    boundary: str  # "start" (whole text), "line", "sentence" or "none" (hard cut)
    final: str  # the text after </think> (the final answer section), "" when none


def split_rollout(text: str) -> tuple[str, str]:
    """(reasoning, final answer section). `<think>R</think>A` gives (R, A); a plain
    chain of thought that ends in its answer ("... \\boxed{42}.") is all reasoning, and
    its answer is kept because a tail is a suffix."""
    pos = text.rfind(THINK_CLOSE)
    if pos < 0:
        return text, ""
    reasoning = text[:pos]
    if reasoning.lstrip().startswith("<think>"):
        reasoning = reasoning.lstrip()[len("<think>"):]
    return reasoning, text[pos + len(THINK_CLOSE):].strip()


def _boundary_kind(text: str, start: int) -> str | None:
    """The kind of boundary a token starting at char `start` sits on, or None."""
    if start <= 0:
        return "start"
    prev = text[start - 1]
    if prev == "\n":
        return "line"
    # Byte-level BPE attaches the space to the next word (". The" -> ".", " The"), so a
    # sentence start is a token that begins at the space after [.!?]; other tokenizers
    # start the token after the space.
    if prev in _SENTENCE_END and text[start:start + 1].isspace():
        return "sentence"
    if prev in " \t" and start >= 2 and text[start - 2] in _SENTENCE_END:
        return "sentence"
    return None


def tail_from_encoding(text: str, offsets: Sequence[tuple[int, int]], tau: int, window: int,
                       final: str = "") -> tuple[Tail, int]:
    """The tail of `text` given its token offsets; also returns the first token index."""
    n = len(offsets)
    if n <= tau:
        return Tail(text, n, False, "start", final), 0
    cut = n - tau
    # A token that starts inside a character another token already began (a multi-byte
    # character split across byte-level tokens) cannot start a text suffix.
    def clean(j: int) -> bool:
        return j == 0 or offsets[j][0] >= offsets[j - 1][1]

    for j in range(cut, min(n, cut + window + 1)):
        if clean(j):
            kind = _boundary_kind(text, offsets[j][0])
            if kind is not None:
                return Tail(text[offsets[j][0]:], n - j, True, kind, final), j
    j = cut
    while j < n - 1 and not clean(j):
        j += 1
    return Tail(text[offsets[j][0]:], n - j, True, "none", final), j


def extract_tails(texts: Sequence[str], tokenizer: Any, tau: int, window: int = 64) -> list[Tail]:
    """Tails of many rollouts, encoded in one batch. `tokenizer` is a HF
    `tokenizers.Tokenizer` (the phase's tokenizer: tails are counted in its tokens)."""
    if tau < 1:
        raise ValueError(f"tau must be >= 1, got {tau}")
    split = [split_rollout(t) for t in texts]
    encs = tokenizer.encode_batch([r for r, _ in split], add_special_tokens=False)
    return [tail_from_encoding(r, e.offsets, tau, window, f)[0] for (r, f), e in zip(split, encs)]
