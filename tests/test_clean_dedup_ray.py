"""Duplicate resolution on Ray Data gives the in-process drop list, for 1 and 2 workers
and any block order, and the brute-force one on planted collisions."""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pytest

from zaya_data.clean.config import parse_clean
from zaya_data.clean.dedup import resolve_duplicates, signatures

ray = pytest.importorskip("ray")

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
SPEC = parse_clean({"exact_dedup": True, "near_dedup": {"permutations": 64, "bands": 16}}, "test")


@pytest.fixture(scope="module")
def ray_local():
    # address="local": always a private instance, never a cluster someone else started
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


def sig_blocks() -> list[pa.Table]:
    with open(DATA / "qwen25-math-eval" / "minerva_math.jsonl") as f:
        texts = [json.loads(line)["solution"] for line in f]
    rng = random.Random(1)
    copies = []
    for t in texts[:60]:
        w = t.split(" ")
        w[rng.randrange(len(w))] = "hence"
        copies.append(" ".join(w))
    texts = texts + copies + [t.lower() for t in texts[60:80]]
    n = len(texts)
    table = pa.table(
        {
            "id": [f"minerva:{i:04d}" for i in range(n)],
            "source": ["minerva"] * n,
            "text": texts,
            "file_index": pa.array([0] * n, pa.int32()),
            "row_index": pa.array(range(n), pa.int64()),
        }
    )
    return [signatures(table.slice(o, 50), SPEC) for o in range(0, n, 50)]


def test_ray_groupby_resolution_equals_in_process(ray_local) -> None:
    import ray.data

    from zaya_data.clean.dedup_ray import resolve_duplicates_ray

    blocks = sig_blocks()
    expected = resolve_duplicates(blocks, SPEC)
    # 20 case variants + 1 "edit" that replaced an empty token; 28 of the other one-word
    # edits (minerva solutions are short, so one changed word moves many of their 5-word
    # shingles and the similarity falls below the 0.8 threshold)
    assert Counter(expected.column("reason").to_pylist()) == {"exact_duplicate": 21, "near_duplicate": 28}
    # one in-process worker vs two Ray workers (2 CPUs, 2 hash partitions), blocks in
    # reverse order: one Ray run only, as each costs seconds of scheduling on 2 cores
    got = resolve_duplicates_ray(ray.data.from_arrow(blocks[::-1]), SPEC, partitions=2)
    assert got.equals(expected)


def test_ray_candidate_verification_equals_brute_force(ray_local) -> None:
    """Planted exact/near duplicates and hash collisions (test_clean_dedup's synthetic
    signatures): the Ray path (light bucket rows shuffled, each partition's candidates
    verified in its reducer against the signature blocks' refs, keys read where the
    blocks are) gives the brute-force drop list, and the in-process one."""
    import ray.data

    from test_clean_dedup import RANDOM_NEAR, brute_force_drops, random_signature_blocks
    from zaya_data.clean.config import CleanSpec
    from zaya_data.clean.dedup_ray import resolve_duplicates_ray

    blocks = random_signature_blocks(3, n=600, blocks=6)
    spec = CleanSpec(exact_dedup=True, near_dedup=RANDOM_NEAR)
    got = resolve_duplicates_ray(ray.data.from_arrow(blocks), spec, partitions=3)
    assert [tuple(r.values()) for r in got.to_pylist()] == brute_force_drops(blocks, True, RANDOM_NEAR)
    assert got.equals(resolve_duplicates(blocks, spec))
