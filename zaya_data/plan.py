"""From tokenized parts to a packing plan: which item goes into which row of which shard.

Only per-item metadata (lengths, ids, positions) is read here, memory-mapped from the
parts, so the driver plans a phase without holding its tokens. The plan is a pure
function of that metadata, the weights and the seed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from zaya_data.mixing import Selection, _splitmix64, epoch_keys, record_hashes


@dataclass
class SourceItems:
    """The tokenized items (samples or document pieces) of one source, in canonical
    order (unit, then row, then piece), grouped into records."""

    name: str
    part: np.ndarray  # global part index of each item
    row: np.ndarray  # row of the item inside its part
    tokens: np.ndarray
    loss_tokens: np.ndarray
    trimmed: np.ndarray
    trimmed_tokens: np.ndarray
    piece: np.ndarray
    rec_start: np.ndarray  # first item of each record
    rec_count: np.ndarray  # items (pieces) of each record
    rec_tokens: np.ndarray
    rec_hash: np.ndarray
    rec_ids: pa.StringArray  # Arrow, not a list: no Python object per record
    rec_file_index: np.ndarray
    rec_row_index: np.ndarray

    @property
    def records(self) -> int:
        return len(self.rec_start)


_META_COLS = ["id", "file_index", "row_index", "piece", "num_tokens", "loss_tokens", "trimmed", "trimmed_tokens"]

# What the planner needs of a part, one row per item: the part's own metadata columns plus
# the item's record hash (`mixing.record_hashes`; the pieces of a record share it). The
# tokenize worker writes it beside its part (`write_part_meta`) because hashing ids is a
# Python loop per record: done there it runs on every worker at once instead of on the
# driver after them, and the driver reads one small single-chunk table per part instead
# of the part's metadata in a chunk per 1024 rows.
ITEM_META = pa.schema([
    pa.field("id", pa.string(), nullable=False),
    pa.field("file_index", pa.int32(), nullable=False),
    pa.field("row_index", pa.int64(), nullable=False),
    pa.field("piece", pa.int32(), nullable=False),
    pa.field("num_tokens", pa.int32(), nullable=False),
    pa.field("loss_tokens", pa.int32(), nullable=False),
    pa.field("trimmed", pa.bool_(), nullable=False),
    pa.field("trimmed_tokens", pa.int32(), nullable=False),
    pa.field("hash", pa.uint64(), nullable=False),
])


def meta_path(part: str | Path) -> Path:
    return Path(part).with_suffix(".meta.arrow")


def part_meta(part: str | Path) -> pa.Table:
    """The ITEM_META rows of a part (a TOKENIZED Arrow IPC file), in one chunk."""
    from zaya_data.tasks import read_part

    t = read_part(str(part)).select(_META_COLS).combine_chunks()
    if not t.num_rows:
        return ITEM_META.empty_table()
    # Per item: the pieces of a record share its id and position, so the planner takes
    # the hash of each record's first piece (the hash `record_hashes` gives the record).
    h = record_hashes(t["id"].to_pylist(), t["file_index"].to_numpy().astype(np.int64),
                      t["row_index"].to_numpy().astype(np.int64))
    return t.append_column(ITEM_META.field("hash"), pa.array(h, pa.uint64())).cast(ITEM_META)


def write_part_meta(part: str | Path) -> None:
    """Write `part_meta(part)` beside the part, atomically; called by the worker before it
    writes the job's record, so a finished job always has it."""
    from zaya_data.io import atomic_replace, tmp_path_for

    out = meta_path(part)
    tmp = tmp_path_for(out)
    table = part_meta(part)
    with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_file(sink, ITEM_META) as writer:
        writer.write_table(table)
    atomic_replace(tmp, out)


def read_part_meta(part: str | Path) -> pa.Table:
    """The part's ITEM_META: its sidecar, or computed here for a part written without one
    (a work folder of an older version being resumed). Same rows either way.

    A sidecar is used only if it describes its part: the same schema and the same ids, row
    for row (the part is memory-mapped, so its id column costs no decode). One that does
    not (the part rewritten outside its job, or by another version) would shift which rows
    the shard workers take; it is ignored and the metadata computed from the part."""
    from zaya_data.tasks import read_part

    path = meta_path(part)
    if path.exists():
        meta = pa.ipc.open_file(pa.memory_map(str(path), "r")).read_all().combine_chunks()
        if meta.schema.equals(ITEM_META) and meta.column("id").equals(read_part(str(part)).column("id")):
            return meta
    return part_meta(part)


def _column(tables: list[pa.Table], col: str, dtype: type) -> np.ndarray:
    if not tables:
        return np.zeros(0, dtype)
    return np.concatenate([t[col].to_numpy() for t in tables]).astype(dtype, copy=False)


def load_source_items(name: str, parts: list[tuple[int, str]]) -> SourceItems:
    """`parts`: (global part index, path) in canonical order."""
    metas = [read_part_meta(path) for _, path in parts]
    counts = [m.num_rows for m in metas]
    piece = _column(metas, "piece", np.int32)
    tokens = _column(metas, "num_tokens", np.int64)
    rec_start = np.nonzero(piece == 0)[0]
    rec_count = np.diff(np.append(rec_start, len(piece)))
    rec_tokens = np.add.reduceat(tokens, rec_start) if len(rec_start) else np.zeros(0, np.int64)
    ids = pa.concat_arrays([m["id"].combine_chunks() for m in metas]) if metas else pa.array([], pa.string())
    return SourceItems(
        name=name,
        part=np.repeat(np.array([g for g, _ in parts], np.int64), counts),
        row=np.concatenate([np.arange(n, dtype=np.int64) for n in counts]) if counts else np.zeros(0, np.int64),
        tokens=tokens, loss_tokens=_column(metas, "loss_tokens", np.int64), trimmed=_column(metas, "trimmed", bool),
        trimmed_tokens=_column(metas, "trimmed_tokens", np.int64), piece=piece,
        rec_start=rec_start, rec_count=rec_count, rec_tokens=rec_tokens,
        rec_hash=_column(metas, "hash", np.uint64)[rec_start],
        rec_ids=ids.take(pa.array(rec_start, pa.int64())),
        rec_file_index=_column(metas, "file_index", np.int64)[rec_start],
        rec_row_index=_column(metas, "row_index", np.int64)[rec_start],
    )


@dataclass
class Uses:
    """Every use of an item in the phase (an item repeated over epochs appears once per
    epoch), with the key that orders it for packing."""

    source: np.ndarray  # index into the phase's source list
    item: np.ndarray  # index into that source's items
    part: np.ndarray
    row: np.ndarray
    tokens: np.ndarray
    key: np.ndarray


def expand_uses(src_idx: int, items: SourceItems, sel: Selection, seed: int, salt: str) -> Uses:
    recs, epochs = sel.records, sel.epochs
    counts = items.rec_count[recs]
    starts = items.rec_start[recs]
    # item index of every use: start of its record + 0..count-1
    offsets = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    item = np.repeat(starts, counts) + offsets
    rkey = np.empty(len(recs), np.uint64)
    for e in np.unique(epochs):
        m = epochs == e
        rkey[m] = epoch_keys(items.rec_hash[recs[m]], seed, salt, int(e))
    with np.errstate(over="ignore"):
        key = _splitmix64(np.repeat(rkey, counts) ^ (items.piece[item].astype(np.uint64) + np.uint64(1)))
    return Uses(
        source=np.full(len(item), src_idx, np.int32), item=item, part=items.part[item],
        row=items.row[item], tokens=items.tokens[item], key=key,
    )


def concat_uses(parts: list[Uses]) -> Uses:
    return Uses(*(np.concatenate([getattr(u, f) for u in parts]) if parts else np.zeros(0)
                  for f in ("source", "item", "part", "row", "tokens", "key")))


def pack_uses(uses: Uses, context: int, seed: int, window: int) -> list[np.ndarray]:
    """Best-fit-decreasing within windows of `window` uses taken in seeded-hash order (so
    every window samples all sources), then a seeded shuffle of the rows so a trainer
    reading shards in order does not see length-sorted data. Returns rows of use indices."""
    from zaya_data.packing import best_fit_decreasing

    order = np.argsort(uses.key, kind="stable")
    rows: list[np.ndarray] = []
    for lo in range(0, len(order), window):
        w = order[lo:lo + window]
        bins = best_fit_decreasing(uses.tokens[w], context, tiebreak=uses.key[w])
        rows.extend(w[b] for b in bins)
    perm = np.random.default_rng(np.random.PCG64(seed)).permutation(len(rows))
    return [rows[i] for i in perm]


def shard_jobs(rows: list[np.ndarray], uses: Uses, shard_rows: int, phase_dir: str, work: str) -> list[dict]:
    jobs = []
    for k, lo in enumerate(range(0, len(rows), shard_rows)):
        chunk = rows[lo:lo + shard_rows]
        idx = np.concatenate(chunk) if chunk else np.zeros(0, np.int64)
        starts = np.concatenate([[0], np.cumsum([len(r) for r in chunk])])
        name = f"shard-{k:05d}.parquet"
        jobs.append({
            "out": f"{phase_dir}/{name}", "record": f"{work}/shards/{name}.json",
            "part": uses.part[idx].tolist(), "row": uses.row[idx].tolist(),
            "row_starts": starts.tolist(),
        })
    return jobs


def table_sum(table: pa.Table, col: str) -> int:
    return int(pc.sum(table[col]).as_py() or 0)
