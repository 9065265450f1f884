"""From tokenized parts to a packing plan: which item goes into which row of which shard.

Only per-item metadata (lengths, ids, positions) is read here, memory-mapped from the
parts, so the driver plans a phase without holding its tokens. The plan is a pure
function of that metadata, the weights and the seed.
"""

from __future__ import annotations

from dataclasses import dataclass

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
    rec_ids: list[str]

    @property
    def records(self) -> int:
        return len(self.rec_start)


_META_COLS = ["id", "file_index", "row_index", "piece", "num_tokens", "loss_tokens", "trimmed", "trimmed_tokens"]


def load_source_items(name: str, parts: list[tuple[int, str]]) -> SourceItems:
    """`parts`: (global part index, path) in canonical order."""
    from zaya_data.tasks import read_part

    cols: dict[str, list[np.ndarray]] = {c: [] for c in _META_COLS + ["part", "row"]}
    ids: list[str] = []
    for gidx, path in parts:
        t = read_part(path).select(_META_COLS)
        n = t.num_rows
        for c in _META_COLS[1:]:
            cols[c].append(t[c].to_numpy(zero_copy_only=False))
        ids.extend(t["id"].to_pylist())
        cols["part"].append(np.full(n, gidx, np.int64))
        cols["row"].append(np.arange(n, dtype=np.int64))

    def cat(c: str, dtype: type) -> np.ndarray:
        return np.concatenate(cols[c]).astype(dtype) if cols[c] else np.zeros(0, dtype)

    piece = cat("piece", np.int32)
    tokens = cat("num_tokens", np.int64)
    rec_start = np.nonzero(piece == 0)[0]
    rec_count = np.diff(np.append(rec_start, len(piece)))
    rec_tokens = np.add.reduceat(tokens, rec_start) if len(rec_start) else np.zeros(0, np.int64)
    fi = cat("file_index", np.int64)[rec_start]
    ri = cat("row_index", np.int64)[rec_start]
    rec_ids = [ids[i] for i in rec_start]
    return SourceItems(
        name=name, part=cat("part", np.int64), row=cat("row", np.int64), tokens=tokens,
        loss_tokens=cat("loss_tokens", np.int64), trimmed=cat("trimmed", bool),
        trimmed_tokens=cat("trimmed_tokens", np.int64), piece=piece,
        rec_start=rec_start, rec_count=rec_count, rec_tokens=rec_tokens,
        rec_hash=record_hashes(rec_ids, fi, ri), rec_ids=rec_ids,
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
