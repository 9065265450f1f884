"""Bin packing of tokenized items into fixed-context rows.

`best_fit_decreasing` is exact best-fit-decreasing: items sorted longest first (ties by a
caller-given hash key, so the order does not depend on how the input was sharded), each
placed into the open row with the *smallest remaining capacity that still fits it*, ties
by the oldest row. On long chain-of-thought length distributions this fills rows to
>99% where naive sequential filling wastes 10-30% of a 32K context on padding
(`benchmarks/bench_packing.py`).

Complexity: O(n log n) for the sort, then one `bisect` over the sorted list of distinct
remaining capacities (at most `capacity` entries) and one heap operation on the bucket of
rows sharing that capacity per *(run of equal lengths, row)* pair, not per item: a run of
equal items fills the row best-fit picks until it is too full for one more, then the next
(see `best_fit_decreasing`). Items are whole tokens up to the context, so a corpus of
hundreds of thousands has long runs, and the Python loop does a fraction of its items.
`best_fit_decreasing_per_item` is the plain one-item-at-a-time loop it must equal.
"""

from __future__ import annotations

import hashlib
import heapq
from bisect import bisect_left, insort

import numpy as np


def _check_lengths(lengths: np.ndarray, capacity: int) -> np.ndarray:
    if capacity < 1:
        raise ValueError(f"capacity must be >= 1, got {capacity}")
    lens = np.asarray(lengths)
    if lens.ndim != 1:
        raise ValueError(f"lengths must be a 1-D array, got shape {lens.shape}")
    lens = lens.astype(np.int64, copy=False)
    if lens.size:
        too_long = np.flatnonzero(lens > capacity)
        if too_long.size:
            i = int(too_long[0])
            raise ValueError(
                f"item {i} has length {int(lens[i])} > capacity {capacity} "
                f"({too_long.size} item(s) too long; trim them before packing)"
            )
        empty = np.flatnonzero(lens < 1)
        if empty.size:
            i = int(empty[0])
            raise ValueError(
                f"item {i} has length {int(lens[i])}; items must hold at least one token"
            )
    return lens


def _bfd_order(lens: np.ndarray, tiebreak: np.ndarray | None) -> np.ndarray:
    """Item indices by length descending, then tiebreak (default: index) ascending."""
    n = lens.size
    if tiebreak is None:
        return np.lexsort((np.arange(n), -lens))
    tb = np.asarray(tiebreak)
    if tb.shape != lens.shape:
        raise ValueError(f"tiebreak shape {tb.shape} != lengths shape {lens.shape}")
    # lexsort is stable, so equal (length, tiebreak) pairs fall back to the index.
    return np.lexsort((tb, -lens))


def _group_bins(order: np.ndarray, assign: np.ndarray, nbins: int) -> list[np.ndarray]:
    """One array of item indices per bin from the bin of each item in processing order;
    the stable sort keeps placement order inside each bin."""
    perm = np.argsort(assign, kind="stable")
    grouped = order[perm]
    counts = np.bincount(assign, minlength=nbins)
    return np.split(grouped, np.cumsum(counts)[:-1])


def best_fit_decreasing(
    lengths: np.ndarray, capacity: int, tiebreak: np.ndarray | None = None
) -> list[np.ndarray]:
    """Pack items into bins of `capacity`; return one array of item indices per bin.

    Items are taken by length descending, equal lengths by `tiebreak` ascending (default:
    the item index). Each goes to the open bin with the smallest remaining capacity that
    fits it, ties by lowest bin number; a new bin is opened when none fits. Bins are
    numbered (and returned) in creation order; inside a bin, items are in placement order.

    Run-batched, with the same result as placing items one by one
    (`best_fit_decreasing_per_item`): in a run of m items of equal length L, the first goes
    to the best-fit bin, whose room c drops to c - L. When c - L >= L it is again the best
    fit for the next one (every other candidate has room >= c), so that bin takes
    min(m, c // L) consecutive items before the run moves on to the next candidate (same
    room, higher number, then larger rooms), and once none fits, to new bins of
    capacity // L items each. So the loop below runs once per (run, bin) pair.
    """
    lens = _check_lengths(lengths, capacity)
    n = lens.size
    if n == 0:
        return []
    order = _bfd_order(lens, tiebreak)
    sorted_lens = lens[order]
    smallest = int(sorted_lens[-1])
    run_starts = np.flatnonzero(np.r_[True, sorted_lens[1:] != sorted_lens[:-1]]).tolist()
    run_lens = sorted_lens[run_starts].tolist()
    run_ends = run_starts[1:] + [n]

    caps: list[int] = []  # distinct remaining capacities of open bins, ascending
    buckets: dict[int, list[int]] = {}  # remaining capacity -> min-heap of bin numbers
    # (bin, items) per placement step, in processing order; np.repeat expands them
    step_bin: list[int] = []
    step_count: list[int] = []
    nbins = 0

    def keep(b: int, rem: int) -> None:
        # Items only get shorter, so a bin whose room is below the shortest item is
        # closed for good: dropping it keeps `caps` small.
        if rem >= smallest:
            heap = buckets.get(rem)
            if heap:
                heapq.heappush(heap, b)
            else:
                buckets[rem] = [b]
                insort(caps, rem)

    for length, lo, hi in zip(run_lens, run_starts, run_ends):
        m = hi - lo
        while m:
            i = bisect_left(caps, length)
            if i == len(caps):
                nbins = _open_bins(length, m, capacity, nbins, step_bin, step_count, buckets, caps, smallest)
                break
            cap = caps[i]
            heap = buckets[cap]
            b = heapq.heappop(heap)
            if not heap:
                del caps[i]
                del buckets[cap]
            q = min(m, cap // length)
            step_bin.append(b)
            step_count.append(q)
            m -= q
            keep(b, cap - q * length)

    assign = np.repeat(np.asarray(step_bin, np.int64), np.asarray(step_count, np.int64))
    return _group_bins(order, assign, nbins)


def _open_bins(length: int, m: int, capacity: int, nbins: int, step_bin: list[int], step_count: list[int],
               buckets: dict[int, list[int]], caps: list[int], smallest: int) -> int:
    """Place the last `m` items of a run (length `length`) when no open bin fits one: new
    bins of `capacity // length` items each, the last holding the rest. Their rooms are
    recorded for later (shorter) items. Returns the number of bins now."""
    per = capacity // length
    full, rest = divmod(m, per)
    first = nbins
    step_bin.extend(range(first, first + full))
    step_count.extend([per] * full)
    _add_new_bins(buckets, caps, capacity - per * length, range(first, first + full), smallest)
    if rest:
        step_bin.append(first + full)
        step_count.append(rest)
        _add_new_bins(buckets, caps, capacity - rest * length, range(first + full, first + full + 1), smallest)
    return first + full + (1 if rest else 0)


def _add_new_bins(buckets: dict[int, list[int]], caps: list[int], rem: int, bins: range, smallest: int) -> None:
    """Record new bins, numbered above every open one, as having `rem` room left."""
    if rem < smallest or not bins:
        return
    heap = buckets.get(rem)
    if heap is None:
        buckets[rem] = heap = []
        insort(caps, rem)
    heap.extend(bins)  # each larger than every number already in it, in order: still a heap


def best_fit_decreasing_per_item(
    lengths: np.ndarray, capacity: int, tiebreak: np.ndarray | None = None
) -> list[np.ndarray]:
    """`best_fit_decreasing`, placing one item per loop step: the reference the run-batched
    version is tested against (and the shape of the algorithm written plainly).

    Items are taken by length descending, equal lengths by `tiebreak` ascending (default:
    the item index). Each goes to the open bin with the smallest remaining capacity that
    fits it, ties by lowest bin number; a new bin is opened when none fits. Bins are
    numbered (and returned) in creation order; inside a bin, items are in placement order.
    """
    lens = _check_lengths(lengths, capacity)
    n = lens.size
    if n == 0:
        return []
    order = _bfd_order(lens, tiebreak)
    sorted_lens = lens[order].tolist()
    smallest = sorted_lens[-1]

    caps: list[int] = []  # distinct remaining capacities of open bins, ascending
    buckets: dict[int, list[int]] = {}  # remaining capacity -> min-heap of bin numbers
    assign = np.empty(n, dtype=np.int64)  # bin number per item, in processing order
    nbins = 0
    for k, length in enumerate(sorted_lens):
        i = bisect_left(caps, length)
        if i == len(caps):
            b = nbins
            nbins += 1
            rem = capacity - length
        else:
            cap = caps[i]
            heap = buckets[cap]
            b = heapq.heappop(heap)
            if not heap:
                del caps[i]
            rem = cap - length
        assign[k] = b
        # Items only get shorter, so a bin whose room is below the shortest item is
        # closed for good: dropping it keeps `caps` small.
        if rem >= smallest:
            heap = buckets.get(rem)
            if heap:
                heapq.heappush(heap, b)
            else:
                buckets[rem] = [b]
                insort(caps, rem)

    return _group_bins(order, assign, nbins)


def sequential_pack(lengths: np.ndarray, capacity: int) -> list[np.ndarray]:
    """The naive baseline: fill rows in input order, start a new row when the next item
    does not fit in the current one."""
    lens = _check_lengths(lengths, capacity)
    if lens.size == 0:
        return []
    starts = [0]
    used = 0
    for i, length in enumerate(lens.tolist()):
        if used + length > capacity:
            starts.append(i)
            used = 0
        used += length
    idx = np.arange(lens.size, dtype=np.int64)
    return np.split(idx, starts[1:])


def packing_efficiency(lengths: np.ndarray, bins: list[np.ndarray], capacity: int) -> float:
    """Tokens placed / (rows * capacity): 1.0 means no padding at all."""
    if not bins:
        return 0.0
    lens = np.asarray(lengths, dtype=np.int64)
    tokens = int(lens[np.concatenate(bins)].sum())
    return tokens / (len(bins) * capacity)


def tiebreak_keys(ids: list[str], pieces: list[int] | None = None) -> np.ndarray:
    """uint64 keys from item ids (and piece numbers): equal-length items are then ordered
    by content identity, not by where they sat in the input, so the packing is the same
    whichever worker produced which item first."""
    pieces = pieces if pieces is not None else [0] * len(ids)
    if len(pieces) != len(ids):
        raise ValueError(f"{len(ids)} ids but {len(pieces)} pieces")
    keys = np.empty(len(ids), dtype=np.uint64)
    for i, (item_id, piece) in enumerate(zip(ids, pieces)):
        digest = hashlib.blake2b(f"{item_id}#{piece}".encode(), digest_size=8).digest()
        keys[i] = int.from_bytes(digest, "little")
    return keys


def shuffle_bins(bins: list[np.ndarray], seed: int) -> list[np.ndarray]:
    """Bins in a seeded random order. BFD creates bins longest-item first, so written in
    creation order a phase would put all long-CoT rows before the short-document rows;
    shuffle before writing shards so every shard sees the whole mix."""
    perm = np.random.default_rng(seed).permutation(len(bins))
    return [bins[i] for i in perm.tolist()]
