"""Problem-level dedup for reasoning data: one problem statement, however many traces.

The same problem reaches a build from several sources (a MATH problem in two reasoning
datasets) or many times from one (n sampled traces). Records are grouped by their
normalized statement (`normalize.problem_key`: LaTeX spacing, `$`, case, spacing and
typographic punctuation do not matter). Policies:
- `keep_all`: every trace is kept; the grouping is still computed so `group_stats`
  can report how many problems have several traces.
- `keep_k`: the k records with the smallest (priority, id, file_index, row_index) of
  each problem are kept, the rest dropped as `dedup / problem_over_k`; deterministic
  whatever the batching.

Same shape as `dedup`: `problem_keys(table, priority)` per batch (map step), then
`resolve_problems(key_tables, spec)` gives a drop list for `dedup.apply_drop_list`.
"""

from __future__ import annotations

from typing import Iterable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import xxhash

from zaya_data.clean.config import ProblemDedupSpec
from zaya_data.clean.dedup import DROPS_SCHEMA, KEY_COLUMNS, SIGNATURE_SCHEMA
from zaya_data.clean.normalize import problem_key, problem_texts

REASON = "problem_over_k"

PROBLEM_KEY_SCHEMA = pa.schema([*(SIGNATURE_SCHEMA.field(c) for c in KEY_COLUMNS), pa.field("problem", pa.uint64())])


def problem_keys(table: pa.Table, priority: int = 0) -> pa.Table:
    """(priority, id, source, file_index, row_index, problem hash) for each record."""
    hashes = np.array(
        [xxhash.xxh3_64_intdigest(problem_key(t).encode("utf-8", "surrogatepass")) for t in problem_texts(table)],
        dtype=np.uint64,
    )
    return pa.table(
        [
            pa.array(np.full(table.num_rows, priority, dtype=np.int32)),
            table.column("id").combine_chunks().cast(pa.string()),
            table.column("source").combine_chunks().cast(pa.string()),
            table.column("file_index").combine_chunks().cast(pa.int32()),
            table.column("row_index").combine_chunks().cast(pa.int64()),
            pa.array(hashes),
        ],
        schema=PROBLEM_KEY_SCHEMA,
    )


def _ranked(key_tables: Iterable[pa.Table]) -> tuple[pa.Table, np.ndarray, np.ndarray]:
    """All keys sorted by (problem, key); each row's 0-based rank within its problem and
    the index of its problem's first row."""
    tables = [t for t in key_tables if t.num_rows]
    if not tables:
        return PROBLEM_KEY_SCHEMA.empty_table(), np.zeros(0, np.int64), np.zeros(0, np.int64)
    keys = pa.concat_tables(tables).sort_by([("problem", "ascending")] + [(c, "ascending") for c in KEY_COLUMNS])
    prob = keys.column("problem").to_numpy()
    n = len(prob)
    first = np.ones(n, dtype=bool)
    first[1:] = prob[1:] != prob[:-1]
    head = np.maximum.accumulate(np.where(first, np.arange(n), 0))
    return keys, np.arange(n) - head, head


def resolve_problems(key_tables: Iterable[pa.Table], spec: ProblemDedupSpec) -> pa.Table:
    """Drop list (DROPS_SCHEMA, reason `problem_over_k`, survivor = the problem's first
    kept record) under `spec.policy`; empty for keep_all."""
    keys, rank, head = _ranked(key_tables)
    if spec.policy == "keep_all" or keys.num_rows == 0:
        return DROPS_SCHEMA.empty_table()
    drop = np.flatnonzero(rank >= spec.k)
    take = pa.array(drop)
    return pa.table(
        {
            "id": keys.column("id").take(take),
            "source": keys.column("source").take(take),
            "file_index": keys.column("file_index").take(take),
            "row_index": keys.column("row_index").take(take),
            "reason": pa.array([REASON] * len(drop), pa.string()),
            "survivor_id": keys.column("id").take(pa.array(head[drop])),
        },
        schema=DROPS_SCHEMA,
    ).sort_by([(c, "ascending") for c in ("source", "file_index", "row_index")])


def group_stats(key_tables: Iterable[pa.Table]) -> dict[str, int]:
    """records, distinct problems, problems with more than one record, and records whose
    problem also appears in another source."""
    keys, rank, _head = _ranked(key_tables)
    if keys.num_rows == 0:
        return {"records": 0, "problems": 0, "repeated_problems": 0, "cross_source_records": 0}
    prob = keys.column("problem")
    counts = pc.value_counts(prob)
    per_source = pa.table({"p": prob, "s": keys.column("source")}).group_by(["p", "s"]).aggregate([])
    n_sources = per_source.group_by("p").aggregate([("s", "count")])
    multi = set(n_sources.filter(pc.greater(n_sources.column("s_count"), 1)).column("p").to_pylist())
    return {
        "records": keys.num_rows,
        "problems": len(counts),
        "repeated_problems": int(pc.sum(pc.greater(counts.field("counts"), 1)).as_py() or 0),
        "cross_source_records": int(pc.sum(pc.is_in(prob, pa.array(list(multi), pa.uint64()))).as_py() or 0),
    }
