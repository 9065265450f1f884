"""Weights are normalized over non-zero entries; selection is seeded and exact."""

from __future__ import annotations

import numpy as np
import pytest

from zaya_data.mixing import (
    largest_remainder,
    normalize_weights,
    record_hashes,
    select_source,
    source_targets,
)
from zaya_data.specs import PhaseSpec, SourceSpec


def phase(weights: dict[str, float], by: str = "source") -> PhaseSpec:
    return PhaseSpec(name="p", kind="packed", context=128, rope_base=None, token_budget=1000,
                     prompt_budget=None, weights_by=by, weights=weights, max_repetition=1.0)


def src(name: str, cat: str) -> SourceSpec:
    return SourceSpec(name=name, paths=(), format="jsonl", kind="document", category=cat)


def test_weights_are_normalized_over_the_non_zero_entries() -> None:
    assert normalize_weights({"a": 2, "b": 0, "c": 6}) == {"a": 0.25, "c": 0.75}
    with pytest.raises(ValueError):
        normalize_weights({"a": 0})


def test_integer_targets_sum_exactly_to_the_budget() -> None:
    assert largest_remainder(10, {"a": 1 / 3, "b": 1 / 3, "c": 1 / 3}) == {"a": 4, "b": 3, "c": 3}
    assert sum(largest_remainder(1_000_003, {"a": 0.1, "b": 0.2, "c": 0.7}).values()) == 1_000_003


def test_category_share_is_split_by_available_tokens() -> None:
    sources = {"a": src("a", "math"), "b": src("b", "math"), "c": src("c", "code"), "z": src("z", "web")}
    shares, targets = source_targets(phase({"math": 3, "code": 1, "web": 0}, "category"), sources,
                                     {"a": 100, "b": 300, "c": 5, "z": 9}, 1000)
    assert shares == {"a": 0.1875, "b": 0.5625, "c": 0.25}
    assert targets == {"a": 188, "b": 562, "c": 250}


def test_selection_reaches_the_target_with_whole_records_and_repeats_up_to_the_limit() -> None:
    sizes = np.array([10, 20, 30, 40], np.int64)
    h = record_hashes(list("abcd"), np.zeros(4, np.int32), np.arange(4))
    one = select_source("s", sizes, h, 55, 1.0, 1, "x")
    assert one.taken >= 55 and one.taken - sizes[one.records[-1]] < 55  # crosses the target once
    assert one.shortfall == 0 and len(set(one.records.tolist())) == len(one.records)
    three = select_source("s", sizes, h, 250, 3.0, 1, "x")
    assert three.epochs.tolist()[:8] == [0, 0, 0, 0, 1, 1, 1, 1]  # two full epochs first
    assert three.taken >= 250 and three.shortfall == 0
    short = select_source("s", sizes, h, 250, 2.0, 1, "x")
    assert short.taken == 200 and short.shortfall == 50


def test_selection_depends_on_the_seed_not_on_the_input_order() -> None:
    ids = [f"r{i}" for i in range(50)]
    sizes = np.arange(1, 51, dtype=np.int64)
    h = record_hashes(ids, np.zeros(50, np.int32), np.arange(50))
    a = select_source("s", sizes, h, 300, 1.0, 42, "x")
    perm = np.random.default_rng(0).permutation(50)
    b = select_source("s", sizes[perm], h[perm], 300, 1.0, 42, "x")
    assert sorted(np.array(ids)[a.records].tolist()) == sorted(np.array(ids)[perm][b.records].tolist())
    c = select_source("s", sizes, h, 300, 1.0, 43, "x")
    assert set(a.records.tolist()) != set(c.records.tolist())


def test_unique_records_counts_distinct_indices_like_np_unique() -> None:
    from zaya_data.mixing import Selection

    rng = np.random.default_rng(3)
    for n in (0, 1, 17, 5000):
        recs = rng.integers(0, max(1, n // 3), size=n).astype(np.int64)
        sel = Selection(source="s", target=0, records=recs, epochs=np.zeros(n, np.int32))
        assert sel.unique_records() == np.unique(recs).size
