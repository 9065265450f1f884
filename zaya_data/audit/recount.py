"""The independent recount: what the shards of a phase actually hold.

Nothing here trusts the build: counts come from the shard bytes alone, one row group at
a time (memory stays bounded by a row group plus one count per possible length), and are
compared with the manifest only afterwards, in `zaya_data.audit.report`. The recount
uses its own list arithmetic rather than the writer's helpers (`zaya_data.shards`), so a
bug in the writer's bookkeeping cannot hide itself by being repeated here.

Documents vs segments: a record longer than the context is cut into pieces; piece k > 0
carries the segment id `<record id>#k`. A document is a piece-0 segment, so one record
used twice (a repeated source) counts as two documents and one distinct document.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from zaya_data.audit.lengths import LengthCounts
from zaya_data.io import sha256_file

PACKED_COLUMNS = (
    "input_ids", "loss_mask", "segment_lengths", "segment_sources", "segment_ids",
    "segment_categories", "num_padding",
)
PROMPT_COLUMNS = ("id", "source", "category", "file_index", "row_index", "prompt", "epoch")
PIECE_SUFFIX = r"#[0-9]+$"
# Structural problems of one kind per shard reported row by row up to this many, then
# summarized: a shard broken everywhere should not bury the other findings.
MAX_ROW_PROBLEMS = 5

Progress = Callable[[int], None]  # called with the rows just recounted


@dataclass
class SourceRecount:
    tokens: int = 0
    segments: int = 0
    documents: int = 0
    loss_tokens: int = 0
    categories: Counter = field(default_factory=Counter)  # category -> segments
    uses: Counter = field(default_factory=Counter)  # record id -> documents (piece-0 uses)
    lengths: LengthCounts = field(default_factory=LengthCounts)  # segment lengths

    @property
    def distinct_documents(self) -> int:
        return len(self.uses)

    @property
    def max_uses(self) -> int:
        return max(self.uses.values(), default=0)

    @property
    def repeated_documents(self) -> int:
        return sum(1 for v in self.uses.values() if v > 1)


@dataclass
class ShardRecount:
    file: str
    exists: bool = False
    readable: bool = False
    sha256: str | None = None
    bytes: int | None = None
    rows: int = 0
    tokens: int = 0
    padding_tokens: int = 0
    loss_tokens: int = 0
    segments: int = 0
    problems: list[str] = field(default_factory=list)  # structural, "row 12: ..."

    def counts(self) -> dict[str, int]:
        return {k: getattr(self, k) for k in ("rows", "tokens", "padding_tokens", "loss_tokens", "segments")}


@dataclass
class PackedRecount:
    context: int
    shards: list[ShardRecount] = field(default_factory=list)
    sources: dict[str, SourceRecount] = field(default_factory=dict)
    segment_lengths: LengthCounts = field(default_factory=LengthCounts)
    row_tokens: LengthCounts = field(default_factory=LengthCounts)  # non-padding tokens per row
    complete: bool = True  # False when a shard could not be read: totals are partial

    def total(self, key: str) -> int:
        return sum(getattr(s, key) for s in self.shards)

    @property
    def documents(self) -> int:
        return sum(s.documents for s in self.sources.values())


@dataclass
class PromptSourceRecount:
    prompts: int = 0
    categories: Counter = field(default_factory=Counter)
    positions: Counter = field(default_factory=Counter)  # (file_index, row_index) -> uses
    max_epoch: int = -1
    lengths: LengthCounts = field(default_factory=LengthCounts)  # prompt characters

    @property
    def unique_prompts(self) -> int:
        return len(self.positions)

    @property
    def max_uses(self) -> int:
        return max(self.positions.values(), default=0)


@dataclass
class PromptRecount:
    shards: list[ShardRecount] = field(default_factory=list)
    sources: dict[str, PromptSourceRecount] = field(default_factory=dict)
    prompt_lengths: LengthCounts = field(default_factory=LengthCounts)
    complete: bool = True

    def total(self, key: str) -> int:
        return sum(getattr(s, key) for s in self.shards)


def _flat(col: pa.ChunkedArray | pa.Array) -> tuple[pa.Array, np.ndarray]:
    """A list column as (flat values, per-row lengths), whatever its chunking."""
    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    lengths = pc.fill_null(pc.list_value_length(arr), 0).to_numpy(zero_copy_only=False).astype(np.int64)
    return pc.list_flatten(arr), lengths


def _note(shard: ShardRecount, rows: np.ndarray, base: int, what: Callable[[int], str]) -> None:
    already = sum(1 for p in shard.problems if not p.startswith("..."))
    for i in rows.tolist():
        if already >= MAX_ROW_PROBLEMS:
            shard.problems.append(f"... and more rows with problems (first {MAX_ROW_PROBLEMS} shown)")
            return
        shard.problems.append(f"row {base + i}: {what(i)}")
        already += 1


def _open_shard(path: Path, shard: ShardRecount, columns: tuple[str, ...]) -> pq.ParquetFile | None:
    shard.exists = path.is_file()
    if not shard.exists:
        return None
    shard.bytes = path.stat().st_size
    shard.sha256 = sha256_file(path)
    try:
        pf = pq.ParquetFile(path)
    except Exception as e:  # a damaged footer is a finding about this shard, not a crash
        shard.problems.append(f"not a readable Parquet file ({type(e).__name__}: {e})")
        return None
    missing = [c for c in columns if c not in pf.schema_arrow.names]
    if missing:
        shard.problems.append(f"columns missing: {', '.join(missing)}")
        return None
    shard.readable = True
    return pf


def _recount_packed_group(tbl: pa.Table, context: int, base: int, shard: ShardRecount, rc: PackedRecount) -> None:
    n = tbl.num_rows
    _, ids_n = _flat(tbl.column("input_ids"))
    mask_v, mask_n = _flat(tbl.column("loss_mask"))
    seg_v, seg_n = _flat(tbl.column("segment_lengths"))
    src_v, src_n = _flat(tbl.column("segment_sources"))
    sid_v, sid_n = _flat(tbl.column("segment_ids"))
    cat_v, cat_n = _flat(tbl.column("segment_categories"))
    pad = pc.fill_null(tbl.column("num_padding"), 0).to_numpy().astype(np.int64)
    seg = seg_v.to_numpy(zero_copy_only=False).astype(np.int64)
    mask = mask_v.to_numpy(zero_copy_only=False).astype(np.int64)

    bad = np.flatnonzero(ids_n != context)
    _note(shard, bad, base, lambda i: f"input_ids has {ids_n[i]} tokens, context is {context}")
    bad = np.flatnonzero(mask_n != ids_n)
    _note(shard, bad, base, lambda i: f"loss_mask has {mask_n[i]} values, input_ids {ids_n[i]}")
    aligned = True
    for name, other in (("segment_sources", src_n), ("segment_ids", sid_n), ("segment_categories", cat_n)):
        bad = np.flatnonzero(other != seg_n)
        if bad.size:
            aligned = False
            _note(shard, bad, base, lambda i, o=other, nm=name: f"{nm} has {o[i]} entries, segment_lengths {seg_n[i]}")
    seg_row = np.repeat(np.arange(n), seg_n)
    row_sum = np.bincount(seg_row, weights=seg, minlength=n).astype(np.int64) if n else np.zeros(0, np.int64)
    bad = np.flatnonzero(row_sum + pad != ids_n)
    _note(shard, bad, base, lambda i: f"segments hold {row_sum[i]} tokens + {pad[i]} padding, row has {ids_n[i]}")
    bad = np.unique(seg_row[seg < 1])
    _note(shard, bad, base, lambda i: "a segment has length < 1")
    if mask.size and int(mask.max()) > 1:
        _note(shard, np.unique(np.repeat(np.arange(n), mask_n)[mask > 1]), base,
              lambda i: "loss_mask holds a value other than 0/1")

    shard.rows += n
    shard.tokens += int(seg.sum())
    shard.padding_tokens += int(pad.sum())
    shard.loss_tokens += int(np.count_nonzero(mask))
    shard.segments += int(seg_n.sum())
    rc.row_tokens.add(np.clip(row_sum, 0, None))
    rc.segment_lengths.add(np.clip(seg, 0, None))
    if not aligned or seg.size == 0:
        return

    # Loss tokens of each segment: the mask summed over the segment's span of its row.
    # Spans are clipped to the row so a malformed row (reported above) cannot index into
    # the next one.
    row_start = np.concatenate([[0], np.cumsum(mask_n)])[:-1]
    first_in_row = np.concatenate([[0], np.cumsum(seg_n)])[:-1]
    excl = np.cumsum(seg) - seg  # tokens of earlier segments in this row group
    row_base = np.concatenate([excl, [int(seg.sum())]])[first_in_row]
    within = excl - row_base[seg_row]
    lo = row_start[seg_row] + np.minimum(within, mask_n[seg_row])
    hi = row_start[seg_row] + np.minimum(within + np.clip(seg, 0, None), mask_n[seg_row])
    csum = np.concatenate([[0], np.cumsum(mask)])
    seg_loss = csum[hi] - csum[lo]

    names = src_v.cast(pa.string())
    enc = pc.dictionary_encode(names)
    idx = enc.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    dictionary = enc.dictionary.to_pylist()
    k = len(dictionary)
    is_piece = pc.fill_null(pc.match_substring_regex(sid_v.cast(pa.string()), PIECE_SUFFIX), False)
    is_doc = ~is_piece.to_numpy(zero_copy_only=False)
    tok = np.bincount(idx, weights=seg, minlength=k)
    cnt = np.bincount(idx, minlength=k)
    docs = np.bincount(idx[is_doc], minlength=k)
    loss = np.bincount(idx, weights=seg_loss, minlength=k)
    for j, name in enumerate(dictionary):
        s = rc.sources.setdefault(name, SourceRecount())
        s.tokens += int(tok[j])
        s.segments += int(cnt[j])
        s.documents += int(docs[j])
        s.loss_tokens += int(loss[j])
        s.lengths.add(seg[idx == j])
    # Categories and record uses, grouped in Arrow rather than in a Python loop per segment.
    pairs = pa.table({"s": names, "c": cat_v.cast(pa.string())}).group_by(["s", "c"]).aggregate([("s", "count")])
    for s_name, c_name, c in zip(*(pairs.column(x).to_pylist() for x in ("s", "c", "s_count"))):
        rc.sources[s_name].categories[c_name] += c
    doc_tbl = pa.table({"s": names, "i": sid_v.cast(pa.string())}).filter(pa.array(is_doc))
    uses = doc_tbl.group_by(["s", "i"]).aggregate([("i", "count")])
    for s_name, rid, c in zip(*(uses.column(x).to_pylist() for x in ("s", "i", "i_count"))):
        rc.sources[s_name].uses[rid] += c


def _recount_packed_shard(phase_dir: Path, name: str, context: int,
                          progress: Progress | None = None) -> PackedRecount:
    """The recount of one shard (a picklable result, so shards can be spread over processes)."""
    rc = PackedRecount(context=context)
    rc.row_tokens = LengthCounts(context + 1)
    rc.segment_lengths = LengthCounts(context + 1)
    shard = ShardRecount(file=name)
    rc.shards.append(shard)
    pf = _open_shard(phase_dir / name, shard, PACKED_COLUMNS)
    if pf is None:
        rc.complete = False
        return rc
    base = 0
    g = 0
    try:
        for g in range(pf.num_row_groups):
            tbl = pf.read_row_group(g, columns=list(PACKED_COLUMNS))
            _recount_packed_group(tbl, context, base, shard, rc)
            base += tbl.num_rows
            if progress:
                progress(tbl.num_rows)
    except Exception as e:  # corrupt pages surface here; name the shard and row group
        shard.problems.append(f"cannot read row group {g} ({type(e).__name__}: {e})")
        shard.readable = False
        rc.complete = False
    return rc


def _merge_packed(into: PackedRecount, part: PackedRecount) -> None:
    into.shards.extend(part.shards)
    into.complete &= part.complete
    into.segment_lengths.merge(part.segment_lengths)
    into.row_tokens.merge(part.row_tokens)
    for name, s in part.sources.items():
        acc = into.sources.setdefault(name, SourceRecount())
        for k in ("tokens", "segments", "documents", "loss_tokens"):
            setattr(acc, k, getattr(acc, k) + getattr(s, k))
        acc.categories.update(s.categories)
        acc.uses.update(s.uses)
        acc.lengths.merge(s.lengths)


def recount_packed(phase_dir: Path, shard_files: list[str], context: int,
                   progress: Progress | None = None, workers: int = 1) -> PackedRecount:
    """Recount every listed shard of a packed phase from its bytes; with `workers` > 1,
    shards are recounted in parallel processes. Results are merged in the manifest's
    shard order, so the figures do not depend on the number of workers."""
    rc = PackedRecount(context=context)
    rc.row_tokens = LengthCounts(context + 1)
    rc.segment_lengths = LengthCounts(context + 1)
    if workers <= 1 or len(shard_files) <= 1:
        for name in shard_files:
            _merge_packed(rc, _recount_packed_shard(phase_dir, name, context, progress))
        return rc
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=min(workers, len(shard_files))) as pool:
        futures = [pool.submit(_recount_packed_shard, phase_dir, name, context) for name in shard_files]
        for fut in futures:
            part = fut.result()
            if progress:
                progress(part.total("rows"))
            _merge_packed(rc, part)
    return rc


def recount_prompts(phase_dir: Path, shard_files: list[str], progress: Progress | None = None) -> PromptRecount:
    """Recount the prompt files of an RL prompt phase."""
    rc = PromptRecount()
    for name in shard_files:
        shard = ShardRecount(file=name)
        rc.shards.append(shard)
        pf = _open_shard(phase_dir / name, shard, PROMPT_COLUMNS)
        if pf is None:
            rc.complete = False
            continue
        try:
            for g in range(pf.num_row_groups):
                tbl = pf.read_row_group(g, columns=list(PROMPT_COLUMNS))
                shard.rows += tbl.num_rows
                _recount_prompt_group(tbl, rc)
                if progress:
                    progress(tbl.num_rows)
        except Exception as e:
            shard.problems.append(f"cannot read row group {g} ({type(e).__name__}: {e})")
            shard.readable = False
            rc.complete = False
    return rc


def _recount_prompt_group(tbl: pa.Table, rc: PromptRecount) -> None:
    plen = pc.fill_null(pc.utf8_length(tbl.column("prompt").cast(pa.string())), 0)
    plen_np = plen.to_numpy().astype(np.int64)
    rc.prompt_lengths.add(plen_np)
    cols = {c: tbl.column(c).to_pylist() for c in ("source", "category", "file_index", "row_index", "epoch")}
    rows_of: dict[str, list[int]] = {}
    for i, name in enumerate(cols["source"]):
        s = rc.sources.setdefault(name, PromptSourceRecount())
        rows_of.setdefault(name, []).append(i)
        s.prompts += 1
        s.categories[cols["category"][i]] += 1
        s.positions[(cols["file_index"][i], cols["row_index"][i])] += 1
        ep = cols["epoch"][i]
        if ep is not None and ep > s.max_epoch:
            s.max_epoch = ep
    for name, rows in rows_of.items():
        rc.sources[name].lengths.add(plen_np[np.asarray(rows, dtype=np.int64)])


def stray_files(phase_dir: Path, listed: list[str], kind: str) -> list[str]:
    """Data files in the folder that the manifest does not list (a half-finished rewrite,
    a shard copied in by hand): the audit would otherwise not see them at all."""
    pattern = "shard-*.parquet" if kind == "packed" else "prompts-*.parquet"
    return sorted(p.name for p in phase_dir.glob(pattern) if p.name not in set(listed))


def recount_summary(rc: PackedRecount | PromptRecount) -> dict[str, Any]:
    """The recount as plain JSON data (what `--json` writes under `recount`)."""
    out: dict[str, Any] = {"complete": rc.complete, "shards": []}
    for s in rc.shards:
        out["shards"].append({"file": s.file, "exists": s.exists, "readable": s.readable, "sha256": s.sha256,
                              "bytes": s.bytes, **s.counts(), "problems": list(s.problems)})
    return out
