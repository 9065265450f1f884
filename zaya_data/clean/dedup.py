"""Exact and near (MinHash LSH) deduplication across all sources of a build.

Four steps, so that the expensive part is a map over batches and only the duplicates
ever meet in one place:

1. `signatures(table, spec, priority)`: per batch (a map step, numpy-vectorized), one row
   per record: its key (priority, id, source, file_index, row_index), the xxh3 hash of
   its normalized text (NFKC, lowercase, collapsed whitespace), its MinHash signature and
   the LSH band hashes of that signature.
2. `bucket_keys` + `bucket_links`: records sharing an exact hash or a band hash fall in
   one bucket; every member of a bucket is linked to the bucket's *anchor*, its smallest
   key. Buckets are independent, so this runs per hash partition: in-process
   (`resolve_duplicates`) or as a Ray Data groupby (`dedup_ray`). A bucket row is only
   (slot, bucket, key), about 50 bytes: each record has 1 + bands of them, and they are
   what is written, shuffled and read back, so they carry no signature. A partition's
   links come back as 64-bit key hashes (17 bytes each, every distinct link once).
   Exact links are final; band links are *candidates*.
3. `resolve_candidates` (`gather_candidates` + `semi_join` + `similar`): the driver
   deduplicates the candidate pairs and asks every signature block, by key hash, for the
   rows of the linked records (a semi-join: a map where the blocks are), which bring
   their keys and MinHash back once each; a near link is kept where the estimated
   Jaccard similarity of member and anchor (fraction of equal MinHash values) reaches
   `threshold`. Two keys with one hash are detected there and the resolution runs again
   with the next hash seed, so the result never depends on the hash.
4. `_drops`: union-find over the (few) links; each connected cluster keeps its
   smallest key, the **survivor**: the lowest source `priority` (the lead passes the
   source's position in the mixture file), then the smallest id, file and row. Every
   other member is dropped as `exact_duplicate` (its normalized text equals a
   smaller-keyed record's) or `near_duplicate`, naming the survivor. (`bucket_edges` +
   `resolve_edges` are the same resolution on full keys: the reference in tests.)

The survivor and the drop list depend only on the set of records, never on batch
boundaries, batch order or the number of workers.

`apply_drop_list(table, drops, ledger)` removes the dropped records from a batch and
writes one ledger entry per record (stage `dedup`, counted per source).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from itertools import repeat
from typing import Callable, Iterable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import xxhash

from zaya_data.clean.config import CleanSpec, NearDedupSpec
from zaya_data.clean.normalize import dedup_normalize, locations, record_texts
from zaya_data.ledger import Ledger

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


def signatures(table: pa.Table, spec: CleanSpec, priority: int = 0) -> pa.Table:
    """The dedup signature of each record of a DOCUMENT or REASONING batch (SIGNATURE_SCHEMA).
    `priority`: the source's rank (lower wins a cluster). Empty `minhash`/`bands` lists
    when near dedup is off."""
    # normalized once: the exact hash and the shingles are both of the normalized text
    normalized = list(map(dedup_normalize, record_texts(table)))
    n = len(normalized)
    if spec.near_dedup is not None:
        sig = _minhash(*_normalized_shingles(normalized, spec.near_dedup.shingle), spec.near_dedup)
        bands = band_hashes(sig, spec.near_dedup)
        p, b = spec.near_dedup.permutations, spec.near_dedup.bands
        mh = pa.ListArray.from_arrays(pa.array(np.arange(0, n * p + 1, p, dtype=np.int32)), pa.array(sig.ravel()))
        bh = pa.ListArray.from_arrays(pa.array(np.arange(0, n * b + 1, b, dtype=np.int32)), pa.array(bands.ravel()))
    else:
        empty = np.zeros(n + 1, dtype=np.int32)
        mh = pa.ListArray.from_arrays(pa.array(empty), pa.array([], pa.uint32()))
        bh = pa.ListArray.from_arrays(pa.array(empty), pa.array([], pa.uint64()))
    return pa.table(
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


# ---------------------------------------------------------------------------------------
# buckets -> candidate links

KEY_SCHEMA = pa.schema([SIGNATURE_SCHEMA.field(c) for c in KEY_COLUMNS])
BUCKET_SCHEMA = pa.schema([pa.field("slot", pa.int16()), pa.field("bucket", pa.uint64()), *KEY_SCHEMA])


def bucket_keys(sigs: pa.Table, spec: CleanSpec) -> pa.Table:
    """One row per (record, bucket it falls in), BUCKET_SCHEMA: `slot` 0 is the exact-hash
    bucket (when exact dedup is on), `slot` 1+b is LSH band b, then the record key.

    No MinHash: these rows are what gets written, shuffled and read back (1 + bands per
    record), and the signature is needed only for records that share a band bucket with
    another one; the semi-join fetches those, once per record. (Carrying the
    112-value signature in each of 15 rows made the bucket rows ~7.5 KB per document,
    their memory traffic the scaling bottleneck of the map tasks on 16 cores.)"""
    parts = []
    n = sigs.num_rows
    key_cols = {c: sigs.column(c) for c in KEY_COLUMNS}
    if spec.exact_dedup:
        slot = pa.array(np.zeros(n, dtype=np.int16))
        parts.append(pa.table({"slot": slot, "bucket": sigs.column("exact"), **key_cols}))
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
# What a bucket partition sends back: each link as the 64-bit key hashes (`key_hashes`
# with the resolution's seed) of its member and anchor, 17 bytes instead of two keys with
# their strings. The driver never sorts or compares strings for them: the keys come back
# once per record with the semi-join (which also proves the hashes collision-free).
LINK_SCHEMA = pa.schema([pa.field("exact", pa.bool_()), pa.field("member", pa.uint64()), pa.field("anchor", pa.uint64())])

_SORT = [("slot", "ascending"), ("bucket", "ascending")] + [(c, "ascending") for c in KEY_COLUMNS]


def bucket_links(keys: pa.Table, seed: int = 0) -> pa.Table:
    """Links (member -> anchor) within every bucket of `keys` (bucket rows, a whole number
    of buckets: every row of a bucket must be present), LINK_SCHEMA, each distinct link
    once. Anchor = smallest key in the bucket. `exact` rows (slot 0) are links; the others
    are near *candidates*, kept only where the estimated Jaccard similarity of member and
    anchor reaches the threshold (checked after the semi-join: bucket rows carry no
    signature). A reduce step: the sort by key and the hashing run per partition."""
    keys, slot, member, anchor = _bucket_members(keys)
    if len(member) == 0:
        return LINK_SCHEMA.empty_table()
    # hash only the rows of multi-record buckets: most bucket rows are singletons
    mark = np.zeros(keys.num_rows, dtype=bool)
    mark[member] = True
    mark[anchor] = True
    linked = np.flatnonzero(mark)
    h = np.zeros(keys.num_rows, dtype=np.uint64)
    h[linked] = key_hashes(keys.take(pa.array(linked)), seed)
    return _distinct_links(slot[member] == 0, h[member], h[anchor])


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


def _distinct_links(exact: np.ndarray, member: np.ndarray, anchor: np.ndarray) -> pa.Table:
    """LINK_SCHEMA rows, each distinct (exact, member, anchor) once: a pair sharing several
    bands of one partition is a candidate in each of those buckets."""
    order = np.lexsort((anchor, member, exact))
    e, m, a = exact[order], member[order], anchor[order]
    new = np.ones(len(e), dtype=bool)
    new[1:] = (e[1:] != e[:-1]) | (m[1:] != m[:-1]) | (a[1:] != a[:-1])
    return pa.table([pa.array(e[new]), pa.array(m[new]), pa.array(a[new])], schema=LINK_SCHEMA)


def bucket_edges(keys: pa.Table) -> pa.Table:
    """Links within every bucket of `keys` with their full keys (EDGE_SCHEMA), one row per
    member and bucket: the reference form of `bucket_links` (tests, inspection)."""
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


# ---------------------------------------------------------------------------------------
# candidate verification: a semi-join of the linked records against the signatures
#
# The links come back to one process (the driver): one per record, bucket and partition.
# The signatures stay where they are (signature blocks of a Ray dataset, a process pool's
# files); the driver sends out the distinct key hashes of the linked records and each
# block returns only its rows with such a hash: key, MinHash and the hash, once per
# record. Everything on the driver is then integer work on row numbers: the only strings
# it handles are the keys of the linked records, sorted once to rank them.
#
# Exactness: a hash collision between two linked records, or between a linked record and
# any other, makes the semi-join return two different keys for one hash. That is checked
# (`KeyHashCollision`), and the resolution is redone with the next hash seed, so the drop
# list never depends on the hash.

SIGNATURE_ROWS = [*KEY_COLUMNS, "minhash"]  # the signature columns a semi-join returns
KEY_HASH = "key_hash"  # and the key hash of each row
_SEEDS = 8  # hash seeds tried before giving up (each collision has probability ~1e-9)


class KeyHashCollision(Exception):
    """Two different keys share a key hash among the semi-join's rows."""


@dataclass(frozen=True)
class Candidates:
    """The links of all buckets, on the driver, as rows of `nodes`."""

    nodes: np.ndarray  # sorted distinct key hashes of every linked record: what the semi-join asks for
    exact_member: np.ndarray  # int64 per exact link: its member's row of `nodes`
    exact_anchor: np.ndarray  # and its anchor's
    member: np.ndarray  # int64 per distinct near candidate pair: its member's row of `nodes`
    anchor: np.ndarray  # and its anchor's
    links: int  # near candidate links received (before the pairs were deduplicated)


def gather_candidates(links: Iterable[pa.Table]) -> Candidates:
    """The links of `bucket_links` (any number of tables, e.g. one per partition) as rows
    of the distinct linked records; near candidate pairs deduplicated (a pair sharing
    several bands is a candidate in each of those buckets, and its similarity is one)."""
    tables = [t for t in links if t.num_rows]
    if not tables:
        none = np.empty(0, dtype=np.int64)
        return Candidates(np.empty(0, dtype=np.uint64), none, none, none, none, 0)
    exact = np.concatenate([_np(t.column("exact")) for t in tables]).astype(bool)
    m = np.concatenate([_np(t.column("member")) for t in tables])
    a = np.concatenate([_np(t.column("anchor")) for t in tables])
    nodes, row = _unique_inverse(np.concatenate([m, a]))
    mi, ai = row[: len(m)], row[len(m) :]
    pair = _sorted_unique(mi[~exact] * len(nodes) + ai[~exact])
    member, anchor = np.divmod(pair, len(nodes))
    return Candidates(nodes, mi[exact], ai[exact], member, anchor, int((~exact).sum()))


# np.unique on ~1M 64-bit values took 0.35-0.7 s here (numpy 2's hash-based path, then a
# sort of its output); one sort and a neighbour comparison take 0.02-0.04 s. This runs on
# the driver, in the part of the resolution that does not parallelize.


def _sorted_unique(x: np.ndarray) -> np.ndarray:
    """np.unique(x) of a 1-D integer array, by one sort."""
    y = np.sort(x)
    keep = np.ones(len(y), dtype=bool)
    np.not_equal(y[1:], y[:-1], out=keep[1:])
    return y[keep]


def _unique_inverse(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """np.unique(x, return_inverse=True) of a 1-D integer array, by one argsort."""
    order = np.argsort(x)
    xs = x[order]
    new = np.ones(len(xs), dtype=bool)
    np.not_equal(xs[1:], xs[:-1], out=new[1:])
    inverse = np.empty(len(x), dtype=np.int64)
    inverse[order] = np.cumsum(new) - 1
    return xs[new], inverse


def key_hashes(table: pa.Table, seed: int = 0) -> np.ndarray:
    """uint64 hash of each row's key (KEY_COLUMNS), the same for equal keys whatever the
    column's physical type (string or large_string, any integer width), in any process.
    Not collision-free: a collision makes a semi-join return a row more, never less;
    another `seed` gives independent hashes."""
    h = np.full(table.num_rows, seed, dtype=np.uint64)
    for c in KEY_COLUMNS:
        col = table.column(c)
        if pa.types.is_integer(col.type):
            x = _np(pc.fill_null(col, 0)).astype(np.int64).view(np.uint64)
        else:
            x = _string_hashes(col)
        with np.errstate(over="ignore"):
            h = _mix(h * _ROLL + x)
    return h


def _string_hashes(col: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """uint64 hash per string, vectorized: the wrapping sum over its bytes of
    splitmix64(byte | position << 8), mixed with the length (no Python loop per row)."""
    arr = pc.fill_null(col, "")
    arr = (arr.combine_chunks() if isinstance(arr, pa.ChunkedArray) else arr).cast(pa.large_binary())
    n = len(arr)
    if n == 0:
        return np.empty(0, dtype=np.uint64)
    _, obuf, dbuf = arr.buffers()
    off = np.frombuffer(obuf, dtype=np.int64, count=n + 1, offset=arr.offset * 8)
    lo, hi = int(off[0]), int(off[-1])
    lens = np.diff(off)
    data = np.frombuffer(dbuf, dtype=np.uint8, count=hi - lo, offset=lo) if hi > lo else np.empty(0, np.uint8)
    pos = np.arange(hi - lo, dtype=np.int64) - np.repeat(off[:-1] - lo, lens)
    v = _mix((pos.astype(np.uint64) << np.uint64(8)) | data.astype(np.uint64))
    csum = np.zeros(hi - lo + 1, dtype=np.uint64)
    np.cumsum(v, out=csum[1:])  # wraps mod 2^64, and so does the difference below
    with np.errstate(over="ignore"):
        return _mix(csum[off[1:] - lo] - csum[off[:-1] - lo] + lens.astype(np.uint64) * _ROLL)


def semi_join(sigs: pa.Table, wanted: np.ndarray, seed: int = 0) -> pa.Table:
    """The rows of a signature block (SIGNATURE_ROWS columns + KEY_HASH) whose key hash
    (with `seed`) is in `wanted` (sorted distinct uint64, `Candidates.nodes`). A map step:
    it runs where the block is."""
    rows = sigs.select(SIGNATURE_ROWS)
    if rows.num_rows == 0 or len(wanted) == 0:
        return rows.slice(0, 0).append_column(KEY_HASH, pa.array([], pa.uint64()))
    h = key_hashes(rows, seed)
    hit = wanted[np.minimum(np.searchsorted(wanted, h), len(wanted) - 1)] == h
    return rows.filter(pa.array(hit)).append_column(KEY_HASH, pa.array(h[hit]))


def node_rows(nodes: np.ndarray, rows: pa.Table) -> np.ndarray:
    """For each of `nodes` (sorted distinct key hashes), the row of the semi-join's `rows`
    that holds its record. Several rows for one hash are copies of one record (a block
    read twice: the first counts) or a collision (different keys: `KeyHashCollision`)."""
    h = _np(rows.column(KEY_HASH))
    idx = np.searchsorted(nodes, h)
    if len(h) and not (nodes[np.minimum(idx, len(nodes) - 1)] == h).all():
        raise ValueError("semi-join rows with a key hash that was not asked for")
    order = np.argsort(idx, kind="stable")
    sidx = idx[order]
    first = np.ones(len(sidx), dtype=bool)
    first[1:] = sidx[1:] != sidx[:-1]
    if int(first.sum()) != len(nodes):
        raise ValueError(f"no signature found for {len(nodes) - int(first.sum())} of {len(nodes)} candidate records")
    row = order[first]
    extra = order[~first]
    if len(extra) and not _same_keys(rows, extra, row[idx[extra]]):
        raise KeyHashCollision(f"{len(extra)} signature rows share a key hash with another row")
    return row


def _same_keys(rows: pa.Table, i: np.ndarray, j: np.ndarray) -> bool:
    """Whether rows i and rows j of `rows` have equal keys (nulls equal to nulls)."""
    for c in KEY_COLUMNS:
        x, y = rows.column(c).take(pa.array(i)), rows.column(c).take(pa.array(j))
        same = pc.or_kleene(pc.equal(x, y), pc.and_(pc.is_null(x), pc.is_null(y)))
        if not pc.all(pc.fill_null(same, False)).as_py():
            return False
    return True


def signature_matrix(rows: pa.Table, row: np.ndarray) -> np.ndarray:
    """(len(row), permutations) uint32: the MinHash of rows `row` of the semi-join's rows."""
    mh = rows.column("minhash").combine_chunks()
    lens = _np(pc.list_value_length(mh))
    if len(lens) and lens.min() != lens.max():
        raise ValueError(f"signature rows have MinHash lists of lengths {sorted(set(lens.tolist()))}")
    p = int(lens[0]) if len(lens) else 0
    return _np(mh.flatten()).reshape(rows.num_rows, p)[row]


_PAIR_BLOCK = 1 << 13  # pairs compared at once: the two (8192, 112) uint32 gathers stay in L2


def similar(mh: np.ndarray, member: np.ndarray, anchor: np.ndarray, threshold: float,
            threads: int | None = None) -> np.ndarray:
    """Per pair: estimated Jaccard(mh[member], mh[anchor]) >= threshold, the estimate being
    the fraction of equal values as float64 (count / permutations, as the resolution
    always computed it), looked up per count instead of divided per pair.

    Blocks of pairs run on `threads` threads (default: the CPUs this process may use, at
    most 16): numpy's gathers and comparisons release the GIL, and this runs on the driver
    while the workers wait, in the part of the resolution that is one process. Each block
    writes its own slice: the result does not depend on the thread count."""
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


def resolve_candidates(links_for: Callable[[int], Iterable[pa.Table]],
                       fetch: Callable[[np.ndarray, int], Iterable[pa.Table]], threshold: float,
                       stats: dict[str, float] | None = None) -> pa.Table:
    """Links -> drop list: `links_for(seed)` gives the `bucket_links` of every partition,
    `fetch(wanted, seed)` the `semi_join` of every signature block (wherever the blocks
    are); verify the near pairs, union-find. On a key hash collision both are asked again
    with the next seed. `stats`, when given, receives counts and the verification's
    seconds (`verify_s`: from the links on the driver to the kept links)."""
    for seed in range(_SEEDS):
        links = list(links_for(seed))
        try:
            return _resolve_links(links, lambda wanted: fetch(wanted, seed), threshold, stats)
        except KeyHashCollision:
            continue
    raise RuntimeError(f"key hash collisions with {_SEEDS} seeds: the key hash is broken")


def _resolve_links(links: list[pa.Table], fetch: Callable[[np.ndarray], Iterable[pa.Table]], threshold: float,
                   stats: dict[str, float] | None) -> pa.Table:
    t0 = time.perf_counter()
    cands = gather_candidates(links)
    if len(cands.nodes) == 0:
        return DROPS_SCHEMA.empty_table()
    got = [t for t in fetch(cands.nodes) if t.num_rows]
    if not got:
        raise ValueError(f"no signature found for any of {len(cands.nodes)} candidate records")
    rows = pa.concat_tables(got)
    row = node_rows(cands.nodes, rows)
    keep = np.zeros(0, dtype=bool)
    if len(cands.member):
        keep = similar(signature_matrix(rows, row), cands.member, cands.anchor, threshold)
    keys = rows.select(KEY_COLUMNS).take(pa.array(row))
    if stats is not None:
        stats.update({"candidate links": cands.links, "distinct pairs": len(cands.member),
                      "candidate records": len(cands.nodes), "signature rows fetched": rows.num_rows,
                      "near links kept": int(keep.sum()), "exact links": len(cands.exact_member),
                      "verify_s": time.perf_counter() - t0})
    u = np.concatenate([cands.exact_member, cands.member[keep]])
    v = np.concatenate([cands.exact_anchor, cands.anchor[keep]])
    return _drops(keys, u, v, cands.exact_member)


def _drops(keys: pa.Table, u: np.ndarray, v: np.ndarray, exact_members: np.ndarray) -> pa.Table:
    """Union-find over links u[i]-v[i] between rows of `keys` (distinct keys, any order);
    the drop list (DROPS_SCHEMA), sorted by key. Each cluster keeps its smallest key; the
    others are dropped, "exact" when they are in `exact_members` (rows that were the member
    of an exact link), else "near". Keys are sorted once, here: labels are then ranks in
    key order, and a cluster's smallest label is its smallest key."""
    order = pc.sort_indices(keys, sort_keys=[(c, "ascending") for c in KEY_COLUMNS]).to_numpy()
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order))
    ordered = keys.take(pa.array(order))
    n = ordered.num_rows
    label = _min_labels(n, rank[u], rank[v])
    exact = np.zeros(n, dtype=bool)
    exact[rank[exact_members]] = True
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
    (not their order or repeats). The keyed reference of `resolve_candidates`, which gets
    its keys from the semi-join instead."""
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
    tables are held (read twice: bucket rows, then the semi-join of the linked records)."""
    sigs = [t for t in signature_tables if t.num_rows]
    keys = [k for k in (bucket_keys(t, spec) for t in sigs) if k.num_rows]
    if not keys:
        return DROPS_SCHEMA.empty_table()
    allk = pa.concat_tables(keys)
    parts = [allk]
    if partitions > 1:
        part = partition_of(allk, partitions)
        parts = [allk.filter(pc.equal(part, p)) for p in range(partitions)]
    return resolve_candidates(lambda seed: [bucket_links(k, seed) for k in parts],
                              lambda wanted, seed: [semi_join(t, wanted, seed) for t in sigs], threshold_of(spec))


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
