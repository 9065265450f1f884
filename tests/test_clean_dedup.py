"""Exact and near dedup on real documents: recall and precision on lightly edited copies,
survivors that do not depend on batching, order or partitions, per-source ledger counts."""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pytest

from zaya_data.clean.config import parse_clean
from zaya_data.clean.dedup import apply_drop_list, resolve_duplicates, signatures
from zaya_data.ledger import Ledger

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
SPEC = parse_clean({"exact_dedup": True, "near_dedup": True}, "test")


def doc_table(texts: list[str], source: str, file_index: int = 0) -> pa.Table:
    n = len(texts)
    return pa.table(
        {
            "id": [f"{source}:{i:04d}" for i in range(n)],
            "source": [source] * n,
            "category": ["math"] * n,
            "text": texts,
            "meta": pa.array([None] * n, pa.string()),
            "file_index": pa.array([file_index] * n, pa.int32()),
            "row_index": pa.array(range(n), pa.int64()),
        }
    )


def solutions() -> list[str]:
    with open(DATA / "qwen25-math-eval" / "olympiadbench.jsonl") as f:
        return [json.loads(line)["solution"][0] for line in f]


def light_edit(text: str, rng: random.Random) -> str:
    """Replace one word in a hundred and drop one sentence-ish chunk: a re-crawled copy."""
    words = text.split(" ")
    for _ in range(max(1, len(words) // 100)):
        words[rng.randrange(len(words))] = rng.choice(["thus", "hence", "so", "we"])
    if len(words) > 60:
        cut = rng.randrange(len(words) - 5)
        del words[cut : cut + 3]
    return " ".join(words)


@pytest.fixture(scope="module")
def corpus() -> tuple[pa.Table, pa.Table, pa.Table]:
    orig = solutions()
    rng = random.Random(7)
    picked = [i for i in range(len(orig)) if len(orig[i].split()) >= 80][:120]
    copies = doc_table([light_edit(orig[i], rng) for i in picked], "crawl")
    exact = doc_table(
        # case, whitespace and Unicode width (NFKC) variants of the first 10 originals
        ["  " + orig[i].upper().replace(" ", "\u3000 ") + "\n" for i in picked[:10]], "mirror"
    )
    return doc_table(orig, "olympiad"), copies, exact


def test_near_dup_recall_and_precision_on_edited_real_solutions(corpus) -> None:
    orig, copies, exact = corpus
    sigs = [signatures(orig, SPEC, priority=0), signatures(copies, SPEC, priority=1), signatures(exact, SPEC, priority=2)]
    drops = resolve_duplicates(sigs, SPEC)
    by_source = Counter(drops.column("source").to_pylist())
    # precision: no original solution is dropped (they are distinct problems' solutions)
    assert by_source["olympiad"] == 0
    # recall: 119 of the 120 edited copies found, every exact variant found
    assert by_source == {"crawl": 119, "mirror": 10}
    reasons = Counter(zip(drops.column("source").to_pylist(), drops.column("reason").to_pylist()))
    assert reasons == {("crawl", "near_duplicate"): 119, ("mirror", "exact_duplicate"): 10}
    # every copy's survivor is the original it was made from (priority 0 wins)
    rows = drops.to_pylist()
    picked = [int(r["survivor_id"].split(":")[1]) for r in rows if r["source"] == "crawl"]
    copied_from = [i for i in range(orig.num_rows) if len(orig.column("text")[i].as_py().split()) >= 80][:120]
    found = [copied_from[r["row_index"]] for r in rows if r["source"] == "crawl"]
    assert picked == found


def test_survivors_do_not_depend_on_batches_order_or_partitions(corpus) -> None:
    orig, copies, exact = corpus
    whole = pa.concat_tables([orig, copies, exact])
    # one priority for all: survivor = smallest id, so "crawl:..." beats "olympiad:..."
    reference = resolve_duplicates([signatures(whole, SPEC)], SPEC)
    batches = [signatures(whole.slice(o, 97), SPEC) for o in range(0, whole.num_rows, 97)]
    assert resolve_duplicates(batches, SPEC).equals(reference)
    assert resolve_duplicates(batches[::-1], SPEC, partitions=3).equals(reference)
    rng = random.Random(3)
    shuffled = whole.take(pa.array(rng.sample(range(whole.num_rows), whole.num_rows)))
    assert resolve_duplicates([signatures(shuffled, SPEC)], SPEC, partitions=2).equals(reference)
    assert Counter(reference.column("source").to_pylist()) == {"olympiad": 120, "mirror": 9}
    survivors = set(reference.column("survivor_id").to_pylist())
    assert survivors.isdisjoint(set(reference.column("id").to_pylist()))


def test_apply_drop_list_counts_per_source_with_record_ids(corpus) -> None:
    orig, copies, exact = corpus
    sigs = [signatures(t, SPEC, priority=p) for p, t in enumerate(corpus)]
    drops = resolve_duplicates(sigs, SPEC)
    ledger = Ledger()
    kept = [apply_drop_list(t, drops, ledger) for t in (orig, copies, exact)]
    assert [t.num_rows for t in kept] == [675, 1, 0]
    assert ledger.counts == {
        ("dedup", "near_duplicate", "crawl"): 119,
        ("dedup", "exact_duplicate", "mirror"): 10,
    }
    ex = ledger.examples[("dedup", "exact_duplicate", "mirror")][0]
    assert ex["record_id"] == "mirror:0000" and ex["location"] == "file 0 row 0"
    assert ex["detail"].startswith("survivor olympiad:")


def test_identical_records_sharing_an_id_keep_exactly_one() -> None:
    # content-derived ids collide for verbatim copies inside one source: matching drops
    # on (source, file, row) keeps one copy instead of dropping both
    t = doc_table(["same text here"] * 3, "s")
    t = t.set_column(0, "id", pa.array(["s:x"] * 3))
    spec = parse_clean({"exact_dedup": True}, "t")
    drops = resolve_duplicates([signatures(t, spec)], spec)
    assert drops.column("row_index").to_pylist() == [1, 2]
    assert apply_drop_list(t, drops, Ledger()).column("row_index").to_pylist() == [0]


def test_near_dedup_off_gives_exact_only_and_empty_texts_are_exact_duplicates() -> None:
    t = doc_table(["", " ", "a b c d e f", "A  B C D E F", "a b c d e g"], "s")
    spec = parse_clean({"exact_dedup": True}, "t")
    drops = resolve_duplicates([signatures(t, spec)], spec).to_pylist()
    assert [(d["row_index"], d["reason"], d["survivor_id"]) for d in drops] == [
        (1, "exact_duplicate", "s:0000"),
        (3, "exact_duplicate", "s:0002"),
    ]


def test_blocked_minhash_equals_the_definition() -> None:
    """The cache-blocked MinHash is min over a document's shingles of (a*x + b) >> 32 (mod
    2^64), column by column, for blocks cut anywhere: tiny blocks, a document longer than a
    block, documents without words."""
    import numpy as np

    from zaya_data.clean import dedup
    from zaya_data.clean.config import NearDedupSpec

    rng = random.Random(3)
    words = [f"w{i}" for i in range(300)]
    texts = [" ".join(rng.choice(words) for _ in range(rng.choice([0, 1, 3, 7, 40, 900]))) for _ in range(60)]
    spec = NearDedupSpec(shingle=3, permutations=40, bands=10, threshold=0.8, seed=5)
    shingles, offsets = dedup.shingle_hashes(texts, spec.shingle)
    a, b = dedup._permutations(spec)
    want = np.full((len(texts), spec.permutations), 0xFFFFFFFF, dtype=np.uint32)
    with np.errstate(over="ignore"):
        for i in range(len(texts)):
            x = shingles[offsets[i]:offsets[i + 1]]
            if len(x):
                want[i] = ((x[:, None] * a[None, :] + b[None, :]) >> np.uint64(32)).min(axis=0)
    saved = dedup._SHINGLE_BLOCK
    try:
        for block in (1, 5, 64, 4096):
            dedup._SHINGLE_BLOCK = block
            assert np.array_equal(dedup.minhash(texts, spec), want), block
    finally:
        dedup._SHINGLE_BLOCK = saved


def _reference_drops(edges: pa.Table) -> list[tuple]:
    """Python union-find over key tuples: each cluster keeps its smallest key."""
    from zaya_data.clean.dedup import KEY_COLUMNS

    e = edges.to_pydict()
    m = list(zip(*(e[f"m_{c}"] for c in KEY_COLUMNS)))
    a = list(zip(*(e[f"a_{c}"] for c in KEY_COLUMNS)))
    parent: dict[tuple, tuple] = {}

    def find(x: tuple) -> tuple:
        while parent.get(x, x) != x:
            x = parent[x]
        return x

    for x, y in zip(m, a):
        rx, ry = find(x), find(y)
        if rx != ry:
            lo, hi = sorted((rx, ry))
            parent[hi] = lo
    exact = {x for x, ex in zip(m, e["exact"]) if ex}
    return [(k[1], k[2], k[3], k[4], "exact_duplicate" if k in exact else "near_duplicate", find(k)[1])
            for k in sorted(set(m) | set(a)) if find(k) != k]


def test_vectorized_resolution_equals_a_python_union_find() -> None:
    from zaya_data.clean.dedup import EDGE_SCHEMA, resolve_edges

    rng = random.Random(11)
    ids = ["é", "a", "b", "ß", "z", "日本", "a2", "A"] + [f"r{i}" for i in range(300)]
    keys = [(rng.choice([0, 1]), i, rng.choice(["s1", "s2"]), rng.randrange(3), rng.randrange(50)) for i in ids]
    for trial in range(20):
        rows = []
        for _ in range(rng.choice([1, 5, 40, 400])):
            x, y = rng.sample(keys, 2)
            if trial % 3 == 0:  # long chains, the slow case for label propagation
                j = keys.index(x)
                y = keys[(j + 1) % len(keys)]
            rows.append((rng.random() < 0.3, x, y))
        cols = {"exact": [r[0] for r in rows]}
        for side, pick in (("m", 1), ("a", 2)):
            for k, c in enumerate(["priority", "id", "source", "file_index", "row_index"]):
                cols[f"{side}_{c}"] = [r[pick][k] for r in rows]
        edges = pa.table(cols, schema=EDGE_SCHEMA)
        # split in several tables, as the partitions of a build give them
        parts = [edges.slice(0, len(rows) // 2), edges.slice(len(rows) // 2)]
        got = resolve_edges(parts).to_pylist()
        assert [tuple(r.values()) for r in got] == _reference_drops(edges), trial
