"""Exact and near (MinHash LSH) deduplication across all sources of a build.

Four steps, so that the expensive part is a map over batches and only the duplicates
ever meet in one place:

1. `signatures(table, spec, priority)`: per batch (a map step, numpy-vectorized), one row
   per record: its key (priority, id, source, file_index, row_index), the xxh3 hash of
   its normalized text (NFKC, lowercase, collapsed whitespace), its MinHash signature and
   the LSH band hashes of that signature.
2. `bucket_keys`: records sharing an exact hash or a band hash fall in one bucket; every
   member of a bucket is linked to the bucket's *anchor*, its smallest key. A bucket row
   is only (slot, bucket, key, location), about 60 bytes: each record has 1 + bands of
   them, and they are what is written, shuffled and read back, so they carry no
   signature. The *location* (block << 32 | row) says where the record's signature is.
3. `bucket_links`: buckets are independent, so this runs per hash partition (a reduce:
   in-process in `resolve_duplicates`, a Ray Data groupby in `dedup_ray`). Exact links
   are final; a band bucket's members are near *candidates*: the reducer reads the
   MinHash of its partition's candidate records at their locations (`minhash_at`), and
   keeps a near link where the estimated Jaccard similarity of member and anchor
   (fraction of equal MinHash values) reaches `threshold`, each distinct pair of the
   partition compared once. A partition returns only the exact and the kept links, as
   pairs of locations (17 bytes each).
4. `resolve_links`: the driver reads the keys of the linked records at their locations
   (`keys_at`, once per record), ranks them by one sort, and runs a union-find over the
   links (`_drops`); each connected cluster keeps its smallest key, the **survivor**: the
   lowest source `priority` (the lead passes the source's position in the mixture file),
   then the smallest id, file and row. Every other member is dropped as
   `exact_duplicate` (its normalized text equals a smaller-keyed record's) or
   `near_duplicate`, naming the survivor. (`bucket_edges` + `resolve_edges` are the same
   resolution on full keys: the reference in tests.)

The survivor and the drop list depend only on the set of records, never on batch
boundaries, batch order or the number of workers.

`apply_drop_list(table, drops, ledger)` removes the dropped records from a batch and
writes one ledger entry per record (stage `dedup`, counted per source).
"""

from __future__ import annotations

from itertools import repeat
from typing import Callable, Iterable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import xxhash

from zaya_data.clean.config import CleanSpec, NearDedupSpec
from zaya_data.clean.normalize import dedup_normalize, locations, record_texts
from zaya_data.ledger import Ledger
from zaya_data.timing import Clock

STAGE = "dedup"
EXACT, NEAR = "exact_duplicate", "near_duplicate"

KEY_COLUMNS = ["priority", "id", "source", "file_index", "row_index"]
SIGNATURE_SCHEMA = pa.schema(
    [
        pa.field("priority", pa.int32()),
        pa.field("id", pa.string()),
        pa.field("source", pa.string()),
        pa.field("file_index", pa.int32()),
        pa.field("row_index", pa.int64()),
        pa.field("exact", pa.uint64()),
        pa.field("minhash", pa.list_(pa.uint32())),
        pa.field("bands", pa.list_(pa.uint64())),
    ]
)
DROPS_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string()),
        pa.field("source", pa.string()),
        pa.field("file_index", pa.int32()),
        pa.field("row_index", pa.int64()),
        pa.field("reason", pa.string()),
        pa.field("survivor_id", pa.string()),
    ]
)

_M64 = np.uint64(0xFFFFFFFFFFFFFFFF)
_ROLL = np.uint64(0x100000001B3)  # odd multiplier of the rolling shingle/band hash
# Shingle hashes go through the (a*x + b) >> 32 permutations in blocks of whole documents
# of about _SHINGLE_BLOCK shingles, times slices of _PERM_SLICE permutations: the working
# buffer (_SHINGLE_BLOCK * _PERM_SLICE * 8 bytes = 512 KiB) stays in a core's L2 cache. With
# whole-batch temporaries (tens of MB) the step was bound by memory bandwidth, which the
# processes of a many-core machine share (on 695K shingles x 112 permutations, one core:
# 1.27 s before, 0.16 s blocked).
_PERM_SLICE = 16
_SHINGLE_BLOCK = 4096
# A word is a maximal run of `\w` characters (str.isalnum() or "_"), as `re.findall(r"\w+")`
# finds them. Words are found on UTF-8 bytes: every non-word character becomes a space and
# Arrow splits at spaces. Non-ASCII non-word characters (few distinct per text, found by
# this regex) are replaced first, ASCII ones by one bytes.translate over the batch (`\w`
# in ASCII is [0-9A-Za-z_]; bytes >= 0x80, parts of the non-ASCII word characters left,
# stay as they are).
_NON_ASCII_NONWORD = __import__("re").compile(r"[^\w\x00-\x7f]")
_ASCII_SPACES = bytes(c if c >= 0x80 or chr(c).isalnum() or c == ord("_") else 0x20 for c in range(256))
_MAX_REPLACES = 16  # more distinct non-ASCII non-word characters in a text: one str.translate


_SPLITMIX = ((30, 0xBF58476D1CE4E5B9), (27, 0x94D049BB133111EB))  # then a final >> 31


def _mix(h: np.ndarray) -> np.ndarray:
    """splitmix64 finalizer: spreads the bits of a rolling hash (uint64, wrapping); `h`
    is left as it was."""
    out = np.array(h, dtype=np.uint64)  # a copy, any shape
    return _mix_inplace(out.reshape(-1)).reshape(out.shape)


def _mix_inplace(h: np.ndarray) -> np.ndarray:
    """`_mix` overwriting `h` (1-D uint64), in L2-sized pieces with one scratch piece: a
    long array is read and written once."""
    step = _SHINGLE_BLOCK * _PERM_SLICE
    tmp = np.empty(min(len(h), step), dtype=np.uint64)
    with np.errstate(over="ignore"):
        for lo in range(0, len(h), step):
            x, t = h[lo : lo + step], tmp[: min(step, len(h) - lo)]
            for shift, mult in _SPLITMIX:
                np.right_shift(x, np.uint64(shift), out=t)
                np.bitwise_xor(x, t, out=x)
                np.multiply(x, np.uint64(mult), out=x)
            np.right_shift(x, np.uint64(31), out=t)
            np.bitwise_xor(x, t, out=x)
    return h


def _permutations(spec: NearDedupSpec) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(spec.seed)
    a = rng.integers(1, 2**63, size=spec.permutations, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
    b = rng.integers(0, 2**63, size=spec.permutations, dtype=np.uint64)
    return a, b


def _word_bytes(text: str) -> bytes:
    """UTF-8 of `text` with each non-ASCII non-word character made a space. Lone surrogates
    (non-word) go too: what is left is valid UTF-8, every word's bytes as they were."""
    if text.isascii():
        return text.encode("ascii")
    marks = set(_NON_ASCII_NONWORD.findall(text))
    if len(marks) > _MAX_REPLACES:
        return text.translate(dict.fromkeys(map(ord, marks), " ")).encode("utf-8")
    data = text.encode("utf-8", "surrogatepass")
    for c in marks:  # UTF-8 is self-synchronizing: a character's bytes match only where it is
        data = data.replace(c.encode("utf-8", "surrogatepass"), b" ")
    return data


def _word_hashes(normalized: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """xxh3_64 of the UTF-8 bytes (surrogatepass) of every word of the (dedup-normalized)
    texts, concatenated, and the number of words of each text. No Python object per word:
    the texts' bytes, non-word characters made spaces, are split at spaces and
    dictionary-encoded by Arrow; only the distinct words (a batch of 8.6K documents: 1.4M
    words, 14K distinct) are hashed in Python. (`re.findall` per text and a dict of the
    distinct words took 3x as long.)"""
    n = len(normalized)
    pieces = list(map(_word_bytes, normalized))
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.fromiter(map(len, pieces), dtype=np.int64, count=n), out=offsets[1:])
    data = b"".join(pieces).translate(_ASCII_SPACES)
    del pieces
    spaced = pa.LargeStringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(data))
    split = pc.ascii_split_whitespace(spaced)
    # a text that starts or ends with a space has an empty first or last piece
    bounds = split.offsets.to_numpy()
    bounds = bounds - bounds[0]
    words = split.flatten()
    nonempty = pc.greater(pc.binary_length(words), 0)
    seen = np.zeros(len(words) + 1, dtype=np.int64)
    np.cumsum(nonempty.to_numpy(zero_copy_only=False), out=seen[1:])
    counts = seen[bounds[1:]] - seen[bounds[:-1]]
    encoded = pc.dictionary_encode(words.filter(nonempty))
    distinct = encoded.dictionary.cast(pa.large_binary()).to_pylist()
    hashes = np.fromiter(map(xxhash.xxh3_64_intdigest, distinct), dtype=np.uint64, count=len(distinct))
    return hashes[encoded.indices.to_numpy()], counts


def _rolling_shingles(normalized: list[str], n: int) -> tuple[np.ndarray, np.ndarray]:
    """`shingle_hashes` of dedup-normalized texts, before `_mix`."""
    w, counts = _word_hashes(normalized)
    ends = np.cumsum(counts)
    starts = ends - counts
    total = len(w)
    # Rolling hash of the window of n words starting at every word of the concatenation,
    # in place (position p after j steps: the hash of words p..p+j). A text with fewer
    # than n words gets the hash of all its words: its value is taken at its first
    # position after as many steps as it has words.
    roll = w.copy()
    short = np.flatnonzero((counts > 0) & (counts < n))
    short_len, short_at = counts[short], starts[short]
    short_hash = np.empty(len(short), dtype=np.uint64)
    with np.errstate(over="ignore"):
        for j in range(1, n):
            done = short_len == j
            short_hash[done] = roll[short_at[done]]
            m = max(total - j, 0)
            np.multiply(roll[:m], _ROLL, out=roll[:m])
            np.add(roll[:m], w[j : j + m], out=roll[:m])
    # Windows starting in a text's last n-1 words run into the next text: dropped; a
    # short text's one shingle sits at its first position (one of those), in text order.
    keep = np.ones(total, dtype=bool)
    tail = ends[:, None] - np.arange(1, n, dtype=np.int64)[None, :]
    keep[tail[tail >= starts[:, None]]] = False
    roll[short_at] = short_hash
    keep[short_at] = True
    per_doc = np.where(counts >= n, counts - n + 1, np.minimum(counts, 1))
    offsets = np.zeros(len(normalized) + 1, dtype=np.int64)
    np.cumsum(per_doc, out=offsets[1:])
    return roll[keep], offsets


def shingle_hashes(texts: list[str], n: int) -> tuple[np.ndarray, np.ndarray]:
    """uint64 hashes of every n-word shingle of each (dedup-normalized) text, concatenated,
    and the start offset of each text's shingles (len(texts) + 1 offsets). A text with
    fewer than n words has one shingle of all its words; an empty text has none."""
    return _normalized_shingles(list(map(dedup_normalize, texts)), n)


def _normalized_shingles(normalized: list[str], n: int) -> tuple[np.ndarray, np.ndarray]:
    shingles, offsets = _rolling_shingles(normalized, n)
    return _mix_inplace(shingles), offsets


def minhash(texts: list[str], spec: NearDedupSpec) -> np.ndarray:
    """(len(texts), permutations) uint32 MinHash signatures. A text without words gets
    all-0xFFFFFFFF (it has no shingles; exact dedup is what catches empty texts)."""
    return _minhash(*shingle_hashes(texts, spec.shingle), spec)


def _minhash(shingles: np.ndarray, offsets: np.ndarray, spec: NearDedupSpec) -> np.ndarray:
    """MinHash of each text's shingles (`shingle_hashes`' output). The permuted hashes are
    laid out (permutations, shingles): each multiply and add is a column of `a` or `b`
    against a contiguous row, numpy's fast broadcast, and the minimum per text is a
    contiguous reduction (the former (shingles, 16) layout, whose inner loops are 16 long,
    ran 3x slower). (h >> 32) is monotone in h, so the shift is applied to the minima
    only."""
    a, b = _permutations(spec)
    p = spec.permutations
    sig_t = np.full((p, len(offsets) - 1), 0xFFFFFFFF, dtype=np.uint32)
    nonempty = np.flatnonzero(np.diff(offsets) > 0)
    if len(nonempty) == 0:
        return np.ascontiguousarray(sig_t.T)
    a_col, b_col = a[:, None], b[:, None]
    starts = offsets[:-1][nonempty]
    ends = offsets[1:][nonempty]
    shift = np.uint64(32)
    buf = np.empty(_PERM_SLICE * _SHINGLE_BLOCK, dtype=np.uint64)
    i = 0
    while i < len(nonempty):
        # documents i..j-1: as many as end within one block (at least one, however long)
        j = max(i + 1, int(np.searchsorted(ends, starts[i] + _SHINGLE_BLOCK, side="right")))
        s0, s1 = int(starts[i]), int(ends[j - 1])
        k = s1 - s0
        x = shingles[s0:s1]
        if k * _PERM_SLICE > len(buf):
            buf = np.empty(k * _PERM_SLICE, dtype=np.uint64)
        rows = nonempty[i:j]
        seg = starts[i:j] - s0
        for lo in range(0, p, _PERM_SLICE):
            hi = min(lo + _PERM_SLICE, p)
            h = buf[: (hi - lo) * k].reshape(hi - lo, k)
            with np.errstate(over="ignore"):
                np.multiply(a_col[lo:hi], x, out=h)
                np.add(h, b_col[lo:hi], out=h)
            low = np.minimum.reduceat(h, seg, axis=1)
            np.right_shift(low, shift, out=low)
            sig_t[lo:hi, rows] = low
        i = j
    return np.ascontiguousarray(sig_t.T)


def band_hashes(sig: np.ndarray, spec: NearDedupSpec) -> np.ndarray:
    """(n, bands) uint64: one hash per band of `rows` consecutive signature values."""
    n = sig.shape[0]
    rows = sig.reshape(n, spec.bands, spec.rows).astype(np.uint64)
    h = np.broadcast_to(np.arange(spec.bands, dtype=np.uint64)[None, :], (n, spec.bands)).copy()
    with np.errstate(over="ignore"):
        for r in range(spec.rows):
            h = h * _ROLL + rows[:, :, r]
    return _mix(h)


def exact_hashes(texts: list[str]) -> np.ndarray:
    """xxh3_64 of each text's dedup-normalized UTF-8 bytes (surrogatepass)."""
    return _normalized_exact_hashes(list(map(dedup_normalize, texts)))


def _normalized_exact_hashes(normalized: list[str]) -> np.ndarray:
    encoded = map(str.encode, normalized, repeat("utf-8"), repeat("surrogatepass"))
    return np.fromiter(map(xxhash.xxh3_64_intdigest, encoded), dtype=np.uint64, count=len(normalized))


# Records whose signatures are computed at once. A batch's temporaries (normalized texts,
# word and shingle hashes) are ~10x its text; a whole shard at once (a build's job) would
# hold them for every record, and each process that starts with a large batch faults all
# of that memory in. At 4,096 records (~3.5 MB of text): a fresh process's first 14K-record
# task faulted 14K pages instead of 33K (freed memory kept by the process), and later
# tasks ran as fast as unbatched ones (2-CPU dev VM).
SIGNATURE_BATCH = 4096


def signatures(table: pa.Table, spec: CleanSpec, priority: int = 0,
               timings: dict[str, float] | None = None) -> pa.Table:
    """The dedup signature of each record of a DOCUMENT or REASONING batch (SIGNATURE_SCHEMA),
    as one chunk, computed SIGNATURE_BATCH records at a time (each record's signature is
    its own: the result does not depend on the batching). `priority`: the source's rank
    (lower wins a cluster). Empty `minhash`/`bands` lists when near dedup is off.
    `timings`, if given, gets the seconds of each phase added (normalize, shingles,
    minhash, bands+table): how a benchmark sees which part slows when many processes run
    at once."""
    if table.num_rows <= SIGNATURE_BATCH:
        return _batch_signatures(table, spec, priority, timings)
    return pa.concat_tables([
        _batch_signatures(table.slice(lo, SIGNATURE_BATCH), spec, priority, timings)
        for lo in range(0, table.num_rows, SIGNATURE_BATCH)
    ]).combine_chunks()


def _batch_signatures(table: pa.Table, spec: CleanSpec, priority: int,
                      timings: dict[str, float] | None) -> pa.Table:
    clock = Clock(timings)
    # normalized once: the exact hash and the shingles are both of the normalized text
    normalized = list(map(dedup_normalize, record_texts(table)))
    n = len(normalized)
    clock.mark("normalize")
    if spec.near_dedup is not None:
        shingles = _normalized_shingles(normalized, spec.near_dedup.shingle)
        clock.mark("shingles")
        sig = _minhash(*shingles, spec.near_dedup)
        clock.mark("minhash")
        bands = band_hashes(sig, spec.near_dedup)
        p, b = spec.near_dedup.permutations, spec.near_dedup.bands
        mh = pa.ListArray.from_arrays(pa.array(np.arange(0, n * p + 1, p, dtype=np.int32)), pa.array(sig.ravel()))
        bh = pa.ListArray.from_arrays(pa.array(np.arange(0, n * b + 1, b, dtype=np.int32)), pa.array(bands.ravel()))
    else:
        empty = np.zeros(n + 1, dtype=np.int32)
        mh = pa.ListArray.from_arrays(pa.array(empty), pa.array([], pa.uint32()))
        bh = pa.ListArray.from_arrays(pa.array(empty), pa.array([], pa.uint64()))
    out = pa.table(
        [
            pa.array(np.full(n, priority, dtype=np.int32)),
            table.column("id").combine_chunks().cast(pa.string()),
            table.column("source").combine_chunks().cast(pa.string()),
            table.column("file_index").combine_chunks().cast(pa.int32()),
            table.column("row_index").combine_chunks().cast(pa.int64()),
            pa.array(_normalized_exact_hashes(normalized)),
            mh,
            bh,
        ],
        schema=SIGNATURE_SCHEMA,
    )
    clock.mark("bands+table")
    return out


# ---------------------------------------------------------------------------------------
# buckets -> verified links
#
# A record is named by its *location*: the signature block it is in and its row there, as
# one uint64 (block << 32 | row), which the map writes into each of its bucket rows. A
# reducer reads the MinHash of its near candidates at their locations (a row gather from
# the block: a memory-mapped file, an Arrow block in the object store); the links it sends
# back are locations, 17 bytes each; the driver reads the keys of the linked records at
# theirs. A location is exact, unlike a key hash: nothing to check for collisions.

KEY_SCHEMA = pa.schema([SIGNATURE_SCHEMA.field(c) for c in KEY_COLUMNS])
LOCATION = "location"
BUCKET_SCHEMA = pa.schema([pa.field("slot", pa.int16()), pa.field("bucket", pa.uint64()), *KEY_SCHEMA,
                           pa.field(LOCATION, pa.uint64())])
SIGNATURE_ROWS = [*KEY_COLUMNS, "minhash"]  # the signature columns read at a location
_ROW_BITS = np.uint64(32)
_ROW_MASK = np.uint64(0xFFFFFFFF)


def bucket_keys(sigs: pa.Table, spec: CleanSpec, block: int) -> pa.Table:
    """One row per (record, bucket it falls in), BUCKET_SCHEMA: `slot` 0 is the exact-hash
    bucket (when exact dedup is on), `slot` 1+b is LSH band b, then the record key and its
    location (`block`: this signature table's number among all of the resolution's; the
    row is its row in `sigs`).

    No MinHash: these rows are what gets written, shuffled and read back (1 + bands per
    record), and the signature is needed only for records that share a band bucket with
    another one; the reducer reads those at their location. (Carrying the 112-value
    signature in each of 15 rows made the bucket rows ~7.5 KB per document, their memory
    traffic the scaling bottleneck of the map tasks on 16 cores.)"""
    parts = []
    n = sigs.num_rows
    if not 0 <= block <= int(_ROW_MASK) or n > int(_ROW_MASK) + 1:
        raise ValueError(f"a location holds blocks and rows below 2**32 (block {block}, {n} rows)")
    key_cols = {c: sigs.column(c) for c in KEY_COLUMNS}
    loc = (np.uint64(block) << _ROW_BITS) | np.arange(n, dtype=np.uint64)
    if spec.exact_dedup:
        slot = pa.array(np.zeros(n, dtype=np.int16))
        parts.append(pa.table({"slot": slot, "bucket": sigs.column("exact"), **key_cols, LOCATION: loc}))
    if spec.near_dedup is not None and n:
        nb = spec.near_dedup.bands
        bands = sigs.column("bands").combine_chunks()
        lens = pc.list_value_length(bands).to_numpy(zero_copy_only=False)
        if not (lens == nb).all():
            raise ValueError(f"signature table has band lists of lengths {sorted(set(lens.tolist()))}, spec says {nb} bands")
        take = pa.array(np.repeat(np.arange(n), nb))
        parts.append(
            pa.table(
                {
                    "slot": pa.array(np.tile(np.arange(1, nb + 1, dtype=np.int16), n)),
                    "bucket": bands.flatten(),
                    **{c: col.take(take) for c, col in key_cols.items()},
                    LOCATION: np.repeat(loc, nb),
                }
            )
        )
    if not parts:
        return BUCKET_SCHEMA.empty_table()
    return pa.concat_tables(parts)


EDGE_SCHEMA = pa.schema(
    [
        pa.field("exact", pa.bool_()),
        *[pa.field(f"m_{c}", SIGNATURE_SCHEMA.field(c).type) for c in KEY_COLUMNS],
        *[pa.field(f"a_{c}", SIGNATURE_SCHEMA.field(c).type) for c in KEY_COLUMNS],
    ]
)
# What a bucket partition sends back: each exact link and each near link that passed the
# threshold as the locations of its member and anchor, 17 bytes instead of two keys with
# their strings. The driver never sorts or compares strings for them: it reads the keys
# once per linked record, at its location.
LINK_SCHEMA = pa.schema([pa.field("exact", pa.bool_()), pa.field("member", pa.uint64()), pa.field("anchor", pa.uint64())])

_SORT = [("slot", "ascending"), ("bucket", "ascending")] + [(c, "ascending") for c in KEY_COLUMNS]


def bucket_links(keys: pa.Table, block: Callable[[int], pa.Table], threshold: float, threads: int | None = 1,
                 stats: dict[str, int] | None = None) -> pa.Table:
    """The links (member -> anchor) of every bucket of `keys` (bucket rows, a whole number
    of buckets: every row of a bucket must be present), LINK_SCHEMA. Anchor = smallest key
    in the bucket. Exact rows (slot 0) are links; a band bucket's member is a near
    candidate, linked only where the estimated Jaccard similarity of member and anchor
    (`similar`) reaches `threshold`. A reduce step: the sort by key, and the verification
    of the partition's candidates, each distinct (member, anchor) pair once, run per
    partition. `block(i)` is signature block i (its `minhash` column is read, at the rows
    of the partition's candidate records only: `minhash_at`). A pair sharing bands that
    fell in several partitions is verified in each; the same pair always gives the same
    answer, so the union of the partitions' links does not depend on the partitioning.

    Each exact link appears once (a record is in one exact bucket), each kept near pair
    once. `stats`, when given, receives what the verification saw. `threads`: for
    `similar` (1: a reducer runs beside the others)."""
    keys, slot, member, anchor = _bucket_members(keys)
    loc = _np(keys.column(LOCATION)) if keys.num_rows else np.empty(0, dtype=np.uint64)
    near = slot[member] != 0
    em, ea = loc[member[~near]], loc[anchor[~near]]
    k = int(near.sum())
    keep = np.zeros(0, dtype=bool)
    nodes = pm = pa_ = np.empty(0, dtype=np.uint64)
    if k:
        # distinct candidate records (marks), and distinct pairs as rows of them (one sort)
        nodes, row = _unique_locations(np.concatenate([loc[member[near]], loc[anchor[near]]]))
        pm, pa_ = np.divmod(_sorted_unique(row[:k] * len(nodes) + row[k:]), len(nodes))
        keep = similar(minhash_at(block, nodes), pm, pa_, threshold, threads)
    if stats is not None:
        stats.update({"near candidate links": k, "pairs compared": len(pm), "signature rows read": len(nodes),
                      "near links kept": int(keep.sum()), "exact links": len(em)})
    return pa.table([
        pa.array(np.repeat([True, False], [len(em), int(keep.sum())])),
        pa.array(np.concatenate([em, nodes[pm[keep]]]), pa.uint64()),
        pa.array(np.concatenate([ea, nodes[pa_[keep]]]), pa.uint64()),
    ], schema=LINK_SCHEMA)


def _bucket_members(keys: pa.Table) -> tuple[pa.Table, np.ndarray, np.ndarray, np.ndarray]:
    """`keys` sorted by (slot, bucket, key), its slots, and for every row that is not its
    bucket's first (the members) the row of that first one (the anchor, smallest key)."""
    keys = keys.sort_by(_SORT)
    slot, bucket = _np(keys.column("slot")), _np(keys.column("bucket"))
    n = len(slot)
    first = np.ones(n, dtype=bool)
    first[1:] = (slot[1:] != slot[:-1]) | (bucket[1:] != bucket[:-1])
    anchor = np.maximum.accumulate(np.where(first, np.arange(n), 0))
    member = np.flatnonzero(~first)
    return keys, slot, member, anchor[member]


def bucket_edges(keys: pa.Table) -> pa.Table:
    """Links within every bucket of `keys` with their full keys (EDGE_SCHEMA), one row per
    member and bucket, near candidates unverified: the reference form of `bucket_links`
    (tests, inspection)."""
    if keys.num_rows == 0:
        return EDGE_SCHEMA.empty_table()
    keys, slot, member, anchor = _bucket_members(keys)
    cols = {"exact": pa.array(slot[member] == 0, pa.bool_())}
    for side, rows in (("m", member), ("a", anchor)):
        for c in KEY_COLUMNS:
            cols[f"{side}_{c}"] = keys.column(c).take(pa.array(rows))
    return pa.table(cols, schema=EDGE_SCHEMA)


def _np(col: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """A column without nulls as one numpy array."""
    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    return arr.to_numpy(zero_copy_only=False)


# np.unique on ~1M 64-bit values took 0.35-0.7 s here (numpy 2's hash-based path, then a
# sort of its output); one sort and a neighbour comparison take 0.02-0.04 s.


def _sorted_unique(x: np.ndarray) -> np.ndarray:
    """np.unique(x) of a 1-D integer array, by one sort."""
    y = np.sort(x)
    keep = np.ones(len(y), dtype=bool)
    np.not_equal(y[1:], y[:-1], out=keep[1:])
    return y[keep]


def _unique_locations(loc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """np.unique(loc, return_inverse=True) of locations (uint64, block << 32 | row), by a
    mark per (block, row) instead of a sort: blocks and rows are small dense integers, so
    the marks are at most the rows of the blocks involved. (The driver's 1.9M link ends
    of the scale-32 benchmark: 0.03 s, an argsort 0.2 s.)"""
    if len(loc) == 0:
        return np.empty(0, dtype=np.uint64), np.empty(0, dtype=np.int64)
    b = (loc >> _ROW_BITS).astype(np.int64)
    r = (loc & _ROW_MASK).astype(np.int64)
    top = np.zeros(int(b.max()) + 1, dtype=np.int64)  # rows marked per block: its largest row + 1
    np.maximum.at(top, b, r + 1)
    start = np.zeros(len(top) + 1, dtype=np.int64)
    np.cumsum(top, out=start[1:])
    at = start[b] + r
    seen = np.zeros(int(start[-1]), dtype=bool)
    seen[at] = True
    marked = np.flatnonzero(seen)
    blk = np.searchsorted(start, marked, side="right") - 1
    nodes = (blk.astype(np.uint64) << _ROW_BITS) | (marked - start[blk]).astype(np.uint64)
    return nodes, (np.cumsum(seen) - 1)[at]


# ---------------------------------------------------------------------------------------
# reading records at their locations


def block_rows(locations: np.ndarray) -> list[tuple[int, np.ndarray]]:
    """Sorted locations -> (block, its rows, int64) for each block they are in, in order."""
    if len(locations) == 0:
        return []
    b = locations >> _ROW_BITS
    bounds = [0, *(np.flatnonzero(b[1:] != b[:-1]) + 1).tolist(), len(locations)]
    return [(int(b[lo]), (locations[lo:hi] & _ROW_MASK).astype(np.int64)) for lo, hi in zip(bounds[:-1], bounds[1:])]


def minhash_at(block: Callable[[int], pa.Table], locations: np.ndarray) -> np.ndarray:
    """(len(locations), permutations) uint32: the MinHash of the record at each of the
    sorted `locations`, gathered from `block(i)`'s minhash column (one numpy view per
    block, no copy of the rows not asked for)."""
    parts = [_minhash_matrix(block(b))[rows] for b, rows in block_rows(locations)]
    return np.concatenate(parts) if parts else np.empty((0, 0), dtype=np.uint32)


def _minhash_matrix(sigs: pa.Table) -> np.ndarray:
    """(rows, permutations) uint32 view of a signature block's minhash column."""
    col = sigs.column("minhash")
    mh = col.chunk(0) if col.num_chunks == 1 else col.combine_chunks()
    if len(mh) == 0:
        return np.empty((0, 0), dtype=np.uint32)
    if mh.null_count:
        raise ValueError("signature rows without a MinHash list")
    # numpy on the offsets and values, no compute kernel: this runs per block and partition
    off = mh.offsets.to_numpy()
    lens = np.diff(off)
    if lens.min() != lens.max():
        raise ValueError(f"signature rows have MinHash lists of lengths {sorted(set(lens.tolist()))}")
    values = mh.values.slice(int(off[0]), int(off[-1] - off[0]))
    return values.to_numpy(zero_copy_only=False).reshape(len(mh), int(lens[0]))


def block_keys(sigs: pa.Table, rows: np.ndarray) -> pa.Table:
    """The keys (KEY_SCHEMA) of rows `rows` of a signature block."""
    return sigs.select(KEY_COLUMNS).take(pa.array(rows)).cast(KEY_SCHEMA)


def keys_at(block: Callable[[int], pa.Table], locations: np.ndarray) -> pa.Table:
    """The keys (KEY_SCHEMA) of the records at the sorted `locations`, in that order."""
    parts = [block_keys(block(b), rows) for b, rows in block_rows(locations)]
    return pa.concat_tables(parts) if parts else KEY_SCHEMA.empty_table()


_PAIR_BLOCK = 1 << 13  # pairs compared at once: the two (8192, 112) uint32 gathers stay in L2


def similar(mh: np.ndarray, member: np.ndarray, anchor: np.ndarray, threshold: float,
            threads: int | None = None) -> np.ndarray:
    """Per pair: estimated Jaccard(mh[member], mh[anchor]) >= threshold, the estimate being
    the fraction of equal values as float64 (count / permutations, as the resolution
    always computed it), looked up per count instead of divided per pair.

    Blocks of pairs run on `threads` threads (None: the CPUs this process may use, at most
    16; a reducer beside others passes 1): numpy's gathers and comparisons release the
    GIL. Each block writes its own slice: the result does not depend on the thread
    count."""
    p = mh.shape[1]
    ok = np.arange(p + 1, dtype=np.float64) / p >= threshold if p else np.zeros(1, dtype=bool)
    keep = np.empty(len(member), dtype=bool)

    def block(lo: int) -> None:
        m, a = member[lo : lo + _PAIR_BLOCK], anchor[lo : lo + _PAIR_BLOCK]
        keep[lo : lo + _PAIR_BLOCK] = ok[np.count_nonzero(mh[m] == mh[a], axis=1)]

    starts = range(0, len(member), _PAIR_BLOCK)
    n = min(threads or _usable_cpus(), 16, len(starts))
    if n <= 1:
        for lo in starts:
            block(lo)
    else:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(n) as pool:
            list(pool.map(block, starts))
    return keep


def _usable_cpus() -> int:
    import os

    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


# ---------------------------------------------------------------------------------------
# verified links -> drop list (the driver)


def resolve_links(links: Iterable[pa.Table], keys_of: Callable[[np.ndarray], pa.Table],
                  stats: dict[str, float] | None = None) -> pa.Table:
    """The verified links of every partition (`bucket_links`) -> the drop list
    (DROPS_SCHEMA), sorted by key. `keys_of(locations)` gives the keys (KEY_COLUMNS) of the
    records at the sorted distinct `locations` of the linked records, in that order
    (`keys_at`, or a map where the blocks are). Integer work on row numbers, then one
    sort of the linked records' keys and the union-find. Equal keys at two locations (one
    record's block given twice) are one record. Depends only on the set of links, not on
    their order, repeats or partition. `stats`, when given, receives the counts of links
    and linked records."""
    tables = [t for t in links if t.num_rows]
    if not tables:
        return DROPS_SCHEMA.empty_table()
    exact = np.concatenate([_np(t.column("exact")) for t in tables]).astype(bool)
    m = np.concatenate([_np(t.column("member")) for t in tables])
    a = np.concatenate([_np(t.column("anchor")) for t in tables])
    nodes, row = _unique_locations(np.concatenate([m, a]))
    keys = keys_of(nodes)
    if keys.num_rows != len(nodes):
        raise ValueError(f"{keys.num_rows} keys read for {len(nodes)} linked records")
    node, ordered = _rank(keys)
    u, v = node[row[: len(m)]], node[row[len(m) :]]
    drops = _drops(ordered, u, v, u[exact])
    if stats is not None:
        stats.update({"links received": len(m), "linked records": len(nodes)})
    return drops


def _drops(ordered: pa.Table, u: np.ndarray, v: np.ndarray, exact_members: np.ndarray) -> pa.Table:
    """Union-find over links u[i]-v[i] between rows of `ordered` (distinct keys in key
    order, as `_rank` gives them); the drop list (DROPS_SCHEMA), sorted by key. Each
    cluster keeps its smallest row, which is its smallest key; the others are dropped,
    "exact" when they are in `exact_members` (rows that were the member of an exact link),
    else "near"."""
    n = ordered.num_rows
    label = _min_labels(n, u, v)
    exact = np.zeros(n, dtype=bool)
    exact[exact_members] = True
    drop = np.flatnonzero(label != np.arange(n))
    rows = ordered.take(pa.array(drop))
    return pa.table(
        {
            "id": rows.column("id"),
            "source": rows.column("source"),
            "file_index": rows.column("file_index"),
            "row_index": rows.column("row_index"),
            "reason": pc.if_else(pa.array(exact[drop], pa.bool_()), EXACT, NEAR),
            "survivor_id": ordered.column("id").take(pa.array(label[drop])),
        },
        schema=DROPS_SCHEMA,
    )


def _rank(keys: pa.Table) -> tuple[np.ndarray, pa.Table]:
    """Each row's rank among the distinct keys of `keys` (KEY_COLUMNS), and those distinct
    keys in key order (the first row of each, by a stable sort)."""
    m = keys.num_rows
    order = pc.sort_indices(keys, sort_keys=[(c, "ascending") for c in KEY_COLUMNS]).to_numpy()
    ordered = keys.take(pa.array(order))
    new_key = np.zeros(m, dtype=bool)
    new_key[0] = True
    for c in KEY_COLUMNS:
        col = ordered.column(c).combine_chunks()
        new_key[1:] |= _np(pc.not_equal(col.slice(1), col.slice(0, m - 1)))
    node = np.empty(m, dtype=np.int64)
    node[order] = np.cumsum(new_key) - 1
    return node, ordered.filter(pa.array(new_key))


def resolve_edges(edges: Iterable[pa.Table]) -> pa.Table:
    """Union-find over links with their full keys (EDGE_SCHEMA); returns the drop list
    (DROPS_SCHEMA), sorted by key, as `_drops` gives it. Depends only on the set of links
    (not their order or repeats). The keyed reference of `resolve_links`, which gets its
    keys at the linked records' locations instead."""
    tables = [t for t in edges if t.num_rows]
    if not tables:
        return DROPS_SCHEMA.empty_table()
    e = pa.concat_tables(tables).combine_chunks()
    n = e.num_rows
    both = pa.concat_tables([
        e.select([f"{side}_{c}" for c in KEY_COLUMNS]).rename_columns(KEY_COLUMNS) for side in ("m", "a")
    ]).combine_chunks()
    node, unique = _rank(both)
    u, v = node[:n], node[n:]
    return _drops(unique, u, v, u[_np(e.column("exact")).astype(bool)])


def _min_labels(num_nodes: int, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """For every node, the smallest node of its connected component (edges u[i]-v[i])."""
    label = np.arange(num_nodes, dtype=np.int64)
    while True:
        lu, lv = label[u], label[v]
        if np.array_equal(lu, lv):
            return label
        # hook: each root takes the smallest label seen across its edges
        low = np.minimum(lu, lv)
        np.minimum.at(label, lu, low)
        np.minimum.at(label, lv, low)
        # compress: follow labels to their fixed point (labels only decrease, so this ends)
        while True:
            nxt = label[label]
            if np.array_equal(nxt, label):
                break
            label = nxt


def threshold_of(spec: CleanSpec) -> float:
    return spec.near_dedup.threshold if spec.near_dedup is not None else 1.0


def resolve_duplicates(signature_tables: Iterable[pa.Table], spec: CleanSpec, partitions: int = 1) -> pa.Table:
    """In-process resolution of all signatures of a build -> drop list (DROPS_SCHEMA).
    `partitions` > 1 resolves hash partitions of the buckets one at a time (bounded
    memory for the bucket sort); the result is the same for any value. The signature
    tables are held: block i of the locations is the i-th non-empty table (the reducers
    read MinHash rows from them, the union-find the linked records' keys)."""
    sigs = [t for t in signature_tables if t.num_rows]
    keys = [k for k in (bucket_keys(t, spec, i) for i, t in enumerate(sigs)) if k.num_rows]
    if not keys:
        return DROPS_SCHEMA.empty_table()
    allk = pa.concat_tables(keys)
    parts = [allk]
    if partitions > 1:
        part = partition_of(allk, partitions)
        parts = [allk.filter(pc.equal(part, p)) for p in range(partitions)]
    threshold = threshold_of(spec)
    links = [bucket_links(k, sigs.__getitem__, threshold, threads=None) for k in parts]
    return resolve_links(links, lambda loc: keys_at(sigs.__getitem__, loc))


def partition_of(keys: pa.Table, partitions: int) -> pa.Array:
    """Which hash partition each bucket row goes to (all rows of a bucket go together)."""
    slot = keys.column("slot").to_numpy().astype(np.uint64)
    bucket = keys.column("bucket").to_numpy()
    with np.errstate(over="ignore"):
        return pa.array((_mix(bucket + slot) % np.uint64(partitions)).astype(np.int64))


def apply_drop_list(table: pa.Table, drops: pa.Table, ledger: Ledger, stage: str = STAGE) -> pa.Table:
    """Remove the records of `drops` (matched on source, file_index, row_index: unique per
    record even when two identical records share an id) and count each in the ledger."""
    if drops.num_rows == 0 or table.num_rows == 0:
        return table
    dkeys = {
        (s, f, r): (reason, surv)
        for s, f, r, reason, surv in zip(
            drops.column("source").to_pylist(), drops.column("file_index").to_pylist(),
            drops.column("row_index").to_pylist(), drops.column("reason").to_pylist(),
            drops.column("survivor_id").to_pylist(),
        )
    }
    sources = table.column("source").to_pylist()
    files = table.column("file_index").to_pylist()
    rows = table.column("row_index").to_pylist()
    ids = table.column("id").to_pylist()
    where = locations(table)
    mask = []
    for i, key in enumerate(zip(sources, files, rows)):
        hit = dkeys.get(key)
        if hit is not None:
            ledger.reject(stage, hit[0], sources[i], location=where[i], record_id=ids[i], detail=f"survivor {hit[1]}")
        mask.append(hit is None)
    return table.filter(pa.array(mask, pa.bool_()))
