"""Packed rows and the Parquet shards that hold them.

A packed row is exactly `context` tokens: the documents placed in it by the packer, in
order, then padding (the tokenizer's pad id, loss 0) at the end. Each row carries its
segment lengths, sources, ids and categories so a trainer can reset position ids or use
variable-length attention, and the audit can say where every token came from.

Rows are assembled by one numpy concatenate of slices of the input lists' flat token
buffers (Python touches each segment, never each token), and shards are written with
fixed writer options so the same rows always give the same bytes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from zaya_data.io import atomic_replace, sha256_file, tmp_path_for

PACKED = pa.schema(
    [
        pa.field("input_ids", pa.list_(pa.int32()), nullable=False),
        pa.field("loss_mask", pa.list_(pa.uint8()), nullable=False),
        pa.field("segment_lengths", pa.list_(pa.int32()), nullable=False),
        pa.field("segment_sources", pa.list_(pa.string()), nullable=False),
        pa.field("segment_ids", pa.list_(pa.string()), nullable=False),
        pa.field("segment_categories", pa.list_(pa.string()), nullable=False),
        pa.field("num_padding", pa.int32(), nullable=False),
    ]
)

# Writer options are part of the output's identity: changing any of them changes the
# shard bytes (and so every sha256 in old manifests). Keep them fixed.
ZSTD_LEVEL = 3
# About 2M tokens per row group: small enough that the training reader decodes little
# more than it needs for a random row, large enough for good compression.
ROW_GROUP_TOKENS = 1 << 21
_INT32_MAX = (1 << 31) - 1


def row_group_rows(context: int) -> int:
    return max(1, ROW_GROUP_TOKENS // max(1, context))


def flat_lists(column: pa.ChunkedArray | pa.Array) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A list column as (values, starts, lengths) with int64 positions into one flat
    numpy buffer, whatever its chunking or slicing (int32 offsets cannot address more
    than 2^31 values, so chunks are re-based here)."""
    chunks = column.chunks if isinstance(column, pa.ChunkedArray) else [column]
    values, starts, lengths = [], [], []
    base = 0
    for chunk in chunks:
        offs = chunk.offsets.to_numpy().astype(np.int64)
        lo, hi = int(offs[0]), int(offs[-1])
        values.append(chunk.values.slice(lo, hi - lo).to_numpy(zero_copy_only=False))
        starts.append(offs[:-1] - lo + base)
        lengths.append(np.diff(offs))
        base += hi - lo
    if not chunks:
        return np.empty(0), np.empty(0, np.int64), np.empty(0, np.int64)
    if len(chunks) == 1:  # the common case: keep the zero-copy view of the values
        return values[0], starts[0], lengths[0]
    return np.concatenate(values), np.concatenate(starts), np.concatenate(lengths)


def gather_ranges(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Flat positions of the concatenation of ranges [start, start+length)."""
    total = int(lengths.sum())
    out_starts = np.cumsum(lengths) - lengths
    return np.repeat(starts - out_starts, lengths) + np.arange(total, dtype=np.int64)


def _list_array(offsets: np.ndarray, values: pa.Array) -> pa.ListArray:
    if offsets.size and int(offsets[-1]) > _INT32_MAX:
        raise ValueError(
            f"{int(offsets[-1])} list values in one column exceed int32 offsets; "
            "assemble fewer rows per shard"
        )
    return pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32), pa.int32()), values)


def segment_id_array(ids: pa.Array, pieces: pa.Array) -> pa.Array:
    """Item id, plus `#<piece>` for the second and later pieces of one record."""
    suffixed = pc.binary_join_element_wise(ids, pc.cast(pieces, pa.string()), "#")
    return pc.if_else(pc.greater(pieces, 0), suffixed, ids)


def assemble_rows(items: pa.Table, bins: list[np.ndarray], context: int, pad_id: int) -> pa.Table:
    """Build PACKED rows: row r holds items[bins[r]] in order, then padding.

    `items` follows `zaya_data.schema.TOKENIZED`; an item index may appear in several
    bins (a repeated source)."""
    rows = len(bins)
    counts = np.fromiter((len(b) for b in bins), dtype=np.int64, count=rows)
    order = (
        np.concatenate([np.asarray(b, dtype=np.int64) for b in bins])
        if rows
        else np.empty(0, np.int64)
    )
    if order.size and (order.min() < 0 or order.max() >= items.num_rows):
        bad = order[(order < 0) | (order >= items.num_rows)][0]
        raise ValueError(f"bin refers to item {int(bad)}, but items has {items.num_rows} rows")

    ids_v, ids_start, ids_len = flat_lists(items.column("input_ids"))
    mask_v, mask_start, mask_len = flat_lists(items.column("loss_mask"))
    mismatch = np.flatnonzero(ids_len != mask_len)
    if mismatch.size:
        i = int(mismatch[0])
        raise ValueError(
            f"item {i} (id {items.column('id')[i].as_py()!r}): input_ids has {int(ids_len[i])} "
            f"tokens but loss_mask has {int(mask_len[i])}"
        )

    seg_len = ids_len[order]
    row_of_seg = np.repeat(np.arange(rows, dtype=np.int64), counts)
    row_tokens = np.bincount(row_of_seg, weights=seg_len, minlength=rows).astype(np.int64)
    over = np.flatnonzero(row_tokens > context)
    if over.size:
        r = int(over[0])
        raise ValueError(f"bin {r} holds {int(row_tokens[r])} tokens > context {context}")

    # One np.concatenate of slices (views, no copy) per column: each row's segments then
    # a view of a padding buffer. Python touches each segment once, never each token,
    # and long-CoT segments (thousands of tokens) make that a plain memcpy.
    pad_len = (context - row_tokens).tolist()
    pad_ids = np.full(context, pad_id, dtype=np.int32)
    zeros = np.zeros(context, dtype=np.uint8)
    ids_v = ids_v.astype(np.int32, copy=False)
    mask_v = mask_v.astype(np.uint8, copy=False)
    id_pieces: list[np.ndarray] = []
    mask_pieces: list[np.ndarray] = []
    seg_it = zip(ids_start[order].tolist(), mask_start[order].tolist(), seg_len.tolist())
    for r, count in enumerate(counts.tolist()):
        for _ in range(count):
            s_ids, s_mask, n = next(seg_it)
            id_pieces.append(ids_v[s_ids : s_ids + n])
            mask_pieces.append(mask_v[s_mask : s_mask + n])
        id_pieces.append(pad_ids[: pad_len[r]])
        mask_pieces.append(zeros[: pad_len[r]])
    out_ids = np.concatenate(id_pieces) if id_pieces else np.empty(0, np.int32)
    out_mask = np.concatenate(mask_pieces) if mask_pieces else np.empty(0, np.uint8)

    row_offsets = np.arange(rows + 1, dtype=np.int64) * context
    seg_offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    take = pa.array(order, pa.int64())
    seg_sources = items.column("source").take(take).combine_chunks()
    seg_categories = items.column("category").take(take).combine_chunks()
    seg_ids = segment_id_array(
        items.column("id").take(take).combine_chunks(),
        items.column("piece").take(take).combine_chunks(),
    )
    arrays = [
        _list_array(row_offsets, pa.array(out_ids, pa.int32())),
        _list_array(row_offsets, pa.array(out_mask, pa.uint8())),
        _list_array(seg_offsets, pa.array(seg_len.astype(np.int32), pa.int32())),
        _list_array(seg_offsets, seg_sources.cast(pa.string())),
        _list_array(seg_offsets, seg_ids.cast(pa.string())),
        _list_array(seg_offsets, seg_categories.cast(pa.string())),
        pa.array((context - row_tokens).astype(np.int32), pa.int32()),
    ]
    return pa.Table.from_arrays(arrays, schema=PACKED)


def shard_stats(table: pa.Table) -> dict[str, int]:
    """Counts a manifest records for a PACKED table."""
    seg_v, _, seg_n = flat_lists(table.column("segment_lengths"))
    mask_v, _, _ = flat_lists(table.column("loss_mask"))
    return {
        "rows": table.num_rows,
        "tokens": int(seg_v.astype(np.int64).sum()),
        "padding_tokens": int(pc.sum(table.column("num_padding")).as_py() or 0),
        "loss_tokens": int(np.count_nonzero(mask_v)),
        "segments": int(seg_n.sum()),
    }


def write_shard(table: pa.Table, path: Path) -> dict[str, Any]:
    """Write a PACKED table as one zstd Parquet shard, atomically and reproducibly.

    The file appears under `path` complete or not at all (temporary name in the same
    folder, fsync, rename). Returns the manifest's entry for it."""
    path = Path(path)
    if not table.schema.equals(PACKED):
        raise ValueError(f"{path.name}: table schema is not PACKED:\n{table.schema}")
    path.parent.mkdir(parents=True, exist_ok=True)
    context = len(table.column("input_ids")[0]) if table.num_rows else 1
    tmp = tmp_path_for(path)
    try:
        pq.write_table(
            table,
            tmp,
            row_group_size=row_group_rows(context),
            compression="zstd",
            compression_level=ZSTD_LEVEL,
            use_dictionary=True,
            write_statistics=True,
            version="2.6",
            data_page_version="1.0",
            store_schema=True,
        )
        atomic_replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    entry: dict[str, Any] = {
        "file": path.name,
        "sha256": sha256_file(path),
        "bytes": path.stat().st_size,
    }
    entry.update(shard_stats(table))
    return entry


def shard_name(index: int) -> str:
    return f"shard-{index:05d}.parquet"


def write_shards(table: pa.Table, phase_dir: Path, rows_per_shard: int, first_index: int = 0) -> list[dict[str, Any]]:
    """Split a PACKED table into `shard-NNNNN.parquet` files of `rows_per_shard` rows
    (the last may be shorter) under `phase_dir`; return their manifest entries in order."""
    if rows_per_shard < 1:
        raise ValueError(f"rows_per_shard must be >= 1, got {rows_per_shard}")
    entries = []
    for k, start in enumerate(range(0, table.num_rows, rows_per_shard)):
        part = table.slice(start, rows_per_shard)
        entries.append(write_shard(part, Path(phase_dir) / shard_name(first_index + k)))
    return entries
