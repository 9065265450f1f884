"""Text normalizations shared by dedup, problem dedup and decontamination, and the column
that each record kind is judged on.

Two strengths:
- `dedup_normalize`: NFKC, lowercase, collapse whitespace. Two documents that differ only
  in case, Unicode width forms or spacing are the same document.
- `match_normalize`: also drops what benchmark copies vary in without changing the
  problem: `$` delimiters, LaTeX spacing commands (`\\,` `\\;` `\\!` `\\ ` `\\quad`),
  `\\left`/`\\right`, `\\dfrac`/`\\tfrac` vs `\\frac`, and typographic punctuation.
  `match_tokens` then splits into letter runs, digit runs and single punctuation
  marks, so "x+y", "x + y" and "2x" / "2 x" give the same tokens.
"""

from __future__ import annotations

import re
import unicodedata

import pyarrow as pa
import pyarrow.compute as pc

_LATEX_SPACING = re.compile(r"\\(?:[,;:! ]|quad\b|qquad\b|enspace\b|thinspace\b)|~")
_LATEX_SIZING = re.compile(r"\\(?:left|right|bigg|big)[lr]?(?![a-z])")
_FRAC_VARIANTS = re.compile(r"\\[dt]frac(?![a-z])")
_PUNCT = str.maketrans(
    {
        "\u2018": "'", "\u2019": "'", "\u201a": "'", "\u201b": "'",
        "\u201c": '"', "\u201d": '"', "\u201e": '"', "\u00ab": '"', "\u00bb": '"',
        "\u2013": "-", "\u2014": "-", "\u2212": "-", "\u2010": "-", "\u2011": "-",
        "\u2026": "...", "\u00a0": " ",
        "$": " ",
    }
)
# letter runs, digit runs and single marks: "x+y", "x + y" and a copy whose `$` was
# dropped ("$$...678$$is" -> "...678is") all give the same tokens
_TOKEN = re.compile(r"[^\W\d_]+|\d+|[^\w\s]|_")


def _collapse_spaces(t: str) -> str:
    # str.split() cuts at runs of the characters `\s` matches (both are str.isspace) and
    # drops the ends: the same string as `re.sub(r"\s+", " ", t).strip()`, about 3x faster
    # (the regex substitution was most of the time of the dedup signatures' normalization)
    return " ".join(t.split())


def dedup_normalize(text: str) -> str:
    return _collapse_spaces(unicodedata.normalize("NFKC", text).lower())


def match_normalize(text: str) -> str:
    # lowercase first so that `\LEFT(` or `\DFRAC` in an upper-cased copy are recognized
    t = unicodedata.normalize("NFKC", text).lower()
    t = _LATEX_SPACING.sub(" ", t)
    t = _LATEX_SIZING.sub(" ", t)
    t = _FRAC_VARIANTS.sub(r"\\frac", t)
    return _collapse_spaces(t.translate(_PUNCT))


def match_tokens(text: str) -> list[str]:
    return _TOKEN.findall(match_normalize(text))


def problem_key(text: str) -> str:
    """The normalized statement two copies of one problem share (token-joined, so spacing
    around operators does not matter)."""
    return " ".join(match_tokens(text))


def record_kind(table: pa.Table) -> str:
    names = set(table.column_names)
    if "text" in names:
        return "document"
    if {"prompt", "reasoning", "answer"} <= names:
        return "reasoning"
    raise ValueError(f"table with columns {table.column_names} is neither a DOCUMENT nor a REASONING table")


def record_texts(table: pa.Table) -> list[str]:
    """The whole text of each record: a document's text, or a reasoning sample's prompt,
    reasoning and answer joined by blank lines."""
    if record_kind(table) == "document":
        return table.column("text").to_pylist()
    sep = pa.scalar("\n\n")
    joined = pc.binary_join_element_wise(
        pc.fill_null(table.column("prompt"), ""),
        pc.fill_null(table.column("reasoning"), ""),
        pc.fill_null(table.column("answer"), ""),
        sep,
    )
    return joined.to_pylist()


def problem_texts(table: pa.Table) -> list[str]:
    """What counts as the record's problem statement: a reasoning sample's prompt, or a
    document's whole text."""
    col = "prompt" if record_kind(table) == "reasoning" else "text"
    return table.column(col).to_pylist()


def locations(table: pa.Table) -> list[str]:
    """`file F row R` for each record, for ledger entries."""
    f = table.column("file_index").to_pylist() if "file_index" in table.column_names else [None] * table.num_rows
    r = table.column("row_index").to_pylist() if "row_index" in table.column_names else [None] * table.num_rows
    return [f"file {a} row {b}" for a, b in zip(f, r)]
