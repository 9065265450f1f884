"""Best-fit-decreasing packing: exactness against a slow reference, invariants, efficiency."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from zaya_data.packing import (
    best_fit_decreasing,
    best_fit_decreasing_per_item,
    packing_efficiency,
    sequential_pack,
    shuffle_bins,
    tiebreak_keys,
)

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def reference_bfd(lengths: list[int], capacity: int, tiebreak: list[int] | None = None) -> list[list[int]]:
    """Textbook O(n * bins) BFD with the same tie rules: longest first, then tiebreak,
    then index; the fitting bin with least room left, then the oldest bin."""
    keys = tiebreak if tiebreak is not None else list(range(len(lengths)))
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], keys[i], i))
    bins: list[list[int]] = []
    room: list[int] = []
    for i in order:
        best = None
        for b, r in enumerate(room):
            if r >= lengths[i] and (best is None or r < room[best]):
                best = b
        if best is None:
            bins.append([i])
            room.append(capacity - lengths[i])
        else:
            bins[best].append(i)
            room[best] -= lengths[i]
    return bins


def check_invariants(lengths: np.ndarray, bins: list[np.ndarray], capacity: int) -> None:
    flat = np.concatenate(bins)
    assert sorted(flat.tolist()) == list(range(len(lengths)))  # every item exactly once, uncut
    assert all(int(lengths[b].sum()) <= capacity for b in bins)


@pytest.mark.parametrize("seed", range(12))
def test_bfd_equals_slow_reference_on_random_inputs(seed: int) -> None:
    rng = np.random.default_rng(seed)
    capacity = int(rng.integers(8, 200))
    n = int(rng.integers(1, 300))
    # small alphabets of lengths force many ties in both lengths and remaining room
    lengths = rng.integers(1, capacity + 1, size=n) if seed % 2 else rng.choice([1, 3, capacity // 2, capacity], n)
    tiebreak = rng.integers(0, 2**63, size=n, dtype=np.uint64) if seed % 3 == 0 else None
    bins = best_fit_decreasing(lengths, capacity, tiebreak=tiebreak)
    expected = reference_bfd(lengths.tolist(), capacity, tiebreak.tolist() if tiebreak is not None else None)
    assert [b.tolist() for b in bins] == expected
    check_invariants(lengths, bins, capacity)


@pytest.mark.parametrize("seed", range(40))
def test_run_batched_bfd_equals_the_per_item_loop(seed: int) -> None:
    """Long runs of equal lengths (what the batching exploits) and runs that end part-way
    into a bin, in new bins or in closed-room buckets: the same bins, in the same order."""
    rng = np.random.default_rng(1000 + seed)
    capacity = int(rng.integers(1, 120))
    n = int(rng.integers(1, 2000))
    shape = seed % 4
    if shape == 0:
        lengths = rng.integers(1, capacity + 1, size=n)
    elif shape == 1:  # few distinct lengths: long runs
        lengths = rng.choice(rng.integers(1, capacity + 1, size=5), size=n)
    elif shape == 2:  # short items, many per bin
        lengths = rng.integers(1, max(1, capacity // 8) + 1, size=n)
    else:  # mostly exact divisors of the capacity: bins filled to the brim
        divisors = [d for d in range(1, capacity + 1) if capacity % d == 0]
        lengths = rng.choice(divisors, size=n)
    tiebreak = rng.integers(0, 4, size=n).astype(np.uint64) if seed % 2 else None
    fast = best_fit_decreasing(lengths, capacity, tiebreak=tiebreak)
    slow = best_fit_decreasing_per_item(lengths, capacity, tiebreak=tiebreak)
    assert [b.tolist() for b in fast] == [b.tolist() for b in slow]
    if n <= 300:
        expected = reference_bfd(lengths.tolist(), capacity, tiebreak.tolist() if tiebreak is not None else None)
        assert [b.tolist() for b in fast] == expected


def test_run_batched_bfd_on_the_real_length_distribution_of_a_4k_build() -> None:
    """Token counts of real MATH traces (long tail up to the context), tiebroken by hash as
    the planner does: the batched and per-item packings agree row for row."""
    rng = np.random.default_rng(7)
    texts = [t for line in (DATA / "qwen25-math-eval" / "math_cot_100_rollouts8.jsonl").open()
             for t in json.loads(line)["code"]]
    # ~4 characters per token, cut to the context as the trimmer would
    lengths = np.clip(np.array([len(t) // 4 + 1 for t in texts] * 8), 1, 4096)
    tiebreak = rng.integers(0, 2**63, size=lengths.size, dtype=np.uint64)
    fast = best_fit_decreasing(lengths, 4096, tiebreak=tiebreak)
    slow = best_fit_decreasing_per_item(lengths, 4096, tiebreak=tiebreak)
    assert len(fast) == len(slow)
    assert all(np.array_equal(a, b) for a, b in zip(fast, slow))


def test_bfd_small_example_exact_bins() -> None:
    # sorted: 7(i1) 6(i3) 5(i0) 4(i4) 3(i2) 2(i5) 2(i6) into capacity 10
    # 7->b0(3) 6->b1(4) 5->b2(5) 4->b1(0) 3->b0(0) 2->b2(3) 2->b2(1)
    bins = best_fit_decreasing(np.array([5, 7, 3, 6, 4, 2, 2]), 10)
    assert [b.tolist() for b in bins] == [[1, 2], [3, 4], [0, 5, 6]]


def test_bfd_ties_follow_tiebreak_not_input_position() -> None:
    lengths = np.array([4, 4, 4])
    # reversed keys: the item with the smallest key is placed first
    bins = best_fit_decreasing(lengths, 4, tiebreak=np.array([30, 20, 10], dtype=np.uint64))
    assert [b.tolist() for b in bins] == [[2], [1], [0]]
    # permuting the input together with its keys gives the same items in the same bins
    perm = np.array([1, 2, 0])
    again = best_fit_decreasing(lengths[perm], 4, tiebreak=np.array([30, 20, 10], dtype=np.uint64)[perm])
    assert [perm[b].tolist() for b in again] == [[2], [1], [0]]


def test_bfd_is_deterministic_across_calls() -> None:
    rng = np.random.default_rng(7)
    lengths = rng.integers(1, 500, size=5000)
    a = best_fit_decreasing(lengths, 1000)
    b = best_fit_decreasing(lengths.copy(), 1000)
    assert [x.tolist() for x in a] == [x.tolist() for x in b]


def test_item_longer_than_capacity_is_an_error_naming_it() -> None:
    with pytest.raises(ValueError, match=r"item 2 has length 11 > capacity 10"):
        best_fit_decreasing(np.array([3, 4, 11]), 10)
    with pytest.raises(ValueError, match=r"item 1 has length 0"):
        sequential_pack(np.array([3, 0]), 10)


def test_sequential_pack_fills_in_order() -> None:
    bins = sequential_pack(np.array([4, 5, 3, 8, 1, 1]), 10)
    assert [b.tolist() for b in bins] == [[0, 1], [2], [3, 4, 5]]
    assert packing_efficiency(np.array([4, 5, 3, 8, 1, 1]), bins, 10) == pytest.approx(22 / 30)


def real_trace_lengths() -> np.ndarray:
    """Lengths (in characters/4, a token estimate) of the 800 real CoT rollouts."""
    lengths = []
    with open(DATA / "qwen25-math-eval" / "math_cot_100_rollouts8.jsonl", encoding="utf-8") as f:
        for line in f:
            lengths.extend(max(1, len(t) // 4) for t in json.loads(line)["code"])
    return np.array(lengths, dtype=np.int64)


def test_bfd_reaches_99_percent_on_long_cot_lengths_at_32k() -> None:
    # Real trace lengths scaled 16x to long-CoT size (a few hundred to tens of
    # thousands of tokens), many items so the tail of short ones can fill the gaps.
    base = real_trace_lengths()
    assert base.size == 800
    rng = np.random.default_rng(0)
    lengths = np.minimum(base[rng.integers(0, base.size, 20000)] * 16, 32768)
    bins = best_fit_decreasing(lengths, 32768)
    check_invariants(lengths, bins, 32768)
    bfd = packing_efficiency(lengths, bins, 32768)
    seq = packing_efficiency(lengths, sequential_pack(lengths, 32768), 32768)
    assert bfd >= 0.99
    assert bfd > seq


def test_bfd_handles_a_million_items_exactly_once() -> None:
    rng = np.random.default_rng(1)
    lengths = np.clip(rng.lognormal(8.5, 1.0, 1_000_000), 16, 32768).astype(np.int64)
    bins = best_fit_decreasing(lengths, 32768)
    counts = np.bincount(np.concatenate(bins), minlength=lengths.size)
    assert counts.min() == 1 and counts.max() == 1
    starts = np.cumsum([0] + [b.size for b in bins[:-1]])
    sums = np.add.reduceat(lengths[np.concatenate(bins)], starts)
    assert sums.max() <= 32768
    assert packing_efficiency(lengths, bins, 32768) >= 0.99


def test_tiebreak_keys_make_packing_independent_of_input_order() -> None:
    ids = [f"src:{i}" for i in range(40)]
    lengths = np.array([5, 5, 3, 3, 2, 2, 7, 1] * 5)
    keys = tiebreak_keys(ids)
    assert keys.dtype == np.uint64 and len(set(keys.tolist())) == 40
    assert tiebreak_keys(["a"], [1])[0] != tiebreak_keys(["a"], [0])[0]
    perm = np.random.default_rng(0).permutation(40)
    a = best_fit_decreasing(lengths, 10, tiebreak=keys)
    b = best_fit_decreasing(lengths[perm], 10, tiebreak=tiebreak_keys([ids[i] for i in perm]))
    assert [[ids[i] for i in x] for x in a] == [[ids[perm[i]] for i in x] for x in b]


def test_shuffle_bins_is_a_seeded_permutation() -> None:
    bins = [np.array([i]) for i in range(10)]
    s1, s2 = shuffle_bins(bins, 3), shuffle_bins(bins, 3)
    assert [b.tolist() for b in s1] == [b.tolist() for b in s2]
    assert sorted(int(b[0]) for b in s1) == list(range(10))
    assert [int(b[0]) for b in s1] != list(range(10))
    assert [int(b[0]) for b in shuffle_bins(bins, 4)] != [int(b[0]) for b in s1]
