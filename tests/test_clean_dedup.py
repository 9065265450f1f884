"""Exact and near dedup on real documents: recall and precision on lightly edited copies,
survivors that do not depend on batching, order or partitions, per-source ledger counts."""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from zaya_data.clean.config import NearDedupSpec, parse_clean
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


def test_signatures_in_batches_are_the_signatures_of_the_whole(corpus, monkeypatch) -> None:
    import zaya_data.clean.dedup as dedup

    whole = pa.concat_tables(corpus)
    at_once = signatures(whole, SPEC, priority=2)  # fewer records than SIGNATURE_BATCH: one batch
    assert whole.num_rows <= dedup.SIGNATURE_BATCH
    monkeypatch.setattr(dedup, "SIGNATURE_BATCH", 37)  # not a divisor of the rows: a short last batch
    assert whole.num_rows % 37
    timings: dict[str, float] = {}
    batched = signatures(whole, SPEC, priority=2, timings=timings)
    assert batched.equals(at_once)
    assert all(c.num_chunks == 1 for c in batched.columns)  # one chunk, as readers of the blocks expect
    assert set(timings) == {"normalize", "shingles", "minhash", "bands+table"}


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


def _reference_drops(edges: pa.Table) -> list[tuple]:
    """Python union-find over key tuples: each cluster keeps its smallest key."""
    from zaya_data.clean.dedup import KEY_COLUMNS

    e = edges.to_pydict()
    m = list(zip(*(e[f"m_{c}"] for c in KEY_COLUMNS)))
    a = list(zip(*(e[f"a_{c}"] for c in KEY_COLUMNS)))
    return union_find_drops(list(zip(e["exact"], m, a)))


def union_find_drops(links: list[tuple[bool, tuple, tuple]]) -> list[tuple]:
    """(exact, member key, anchor key) links -> drop rows as tuples (id, source, file,
    row, reason, survivor id), in key order: each cluster keeps its smallest key; a
    dropped record is an exact duplicate if it was the member of an exact link."""
    parent: dict[tuple, tuple] = {}

    def find(x: tuple) -> tuple:
        while parent.get(x, x) != x:
            x = parent[x]
        return x

    for _, x, y in links:
        rx, ry = find(x), find(y)
        if rx != ry:
            lo, hi = sorted((rx, ry))
            parent[hi] = lo
    exact = {x for ex, x, _ in links if ex}
    nodes = {k for _, x, y in links for k in (x, y)}
    return [(k[1], k[2], k[3], k[4], "exact_duplicate" if k in exact else "near_duplicate", find(k)[1])
            for k in sorted(nodes) if find(k) != k]


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


# ---------------------------------------------------------------------------------------
# candidate verification (bucket rows without signatures, MinHash read by the reducer at
# the candidates' locations) against brute force

RANDOM_NEAR = NearDedupSpec(shingle=5, permutations=20, bands=5, threshold=0.75, seed=1)


def random_signature_blocks(seed: int, n: int = 400, blocks: int = 5,
                            near: NearDedupSpec | None = RANDOM_NEAR) -> list[pa.Table]:
    """Signature tables (SIGNATURE_SCHEMA) of `n` synthetic records, cut in `blocks`:
    MinHash values from a small alphabet, records drawn as mutated copies of a few dozen
    bases (similarities all around the threshold, some exactly on it), planted exact
    duplicates, band buckets forced to collide between dissimilar records, a band value
    reused under another band (another bucket), exact hashes equal to a band hash of
    another record or one off it (same hash partition), keys differing in one column."""
    import numpy as np

    from zaya_data.clean.dedup import SIGNATURE_SCHEMA, band_hashes

    rng = np.random.default_rng(seed)
    p = near.permutations if near is not None else RANDOM_NEAR.permutations
    base = rng.integers(0, 40, size=(max(2, n // 12), p), dtype=np.uint32)
    sig = base[rng.integers(0, len(base), size=n)]
    for i in range(n):
        k = rng.choice([0, 0, 1, 2, 3, 5, 8, 20])
        sig[i, rng.choice(p, size=k, replace=False)] = rng.integers(0, 40, size=k, dtype=np.uint32)
    bands = band_hashes(sig, near if near is not None else RANDOM_NEAR)
    nb = bands.shape[1]
    exact = rng.integers(0, 2**63, size=n, dtype=np.uint64)
    for _ in range(n // 10):  # exact duplicates (whatever their MinHash says)
        i, j = rng.integers(0, n, size=2)
        exact[i] = exact[j]
    for _ in range(n // 10):  # band collisions between records drawn at random
        i, j = rng.integers(0, n, size=2)
        b = rng.integers(0, nb)
        bands[i, b] = bands[j, b]
    for _ in range(n // 20):  # the same value under another band: another bucket
        i, j = rng.integers(0, n, size=2)
        bands[i, 0] = bands[j, nb - 1]
    for _ in range(n // 20):  # exact hash = a band hash (another slot), or one off (same partition)
        i, j = rng.integers(0, n, size=2)
        exact[i] = bands[j, 0] + np.uint64(rng.integers(0, 2))
    ids = ["é", "a", "b", "ß", "z", "日本", "a2", "A", ""] + [f"r{i}" for i in range(n // 8)]
    keys = {
        "priority": pa.array(rng.integers(0, 3, size=n), pa.int32()),
        "id": pa.array([ids[k] for k in rng.integers(0, len(ids), size=n)], pa.string()),
        "source": pa.array([["s1", "s2", "ü"][k] for k in rng.integers(0, 3, size=n)], pa.string()),
        "file_index": pa.array(rng.integers(0, 3, size=n), pa.int32()),
        "row_index": pa.array(rng.permutation(n), pa.int64()),  # keys unique per record
    }
    if near is None:
        empty = np.zeros(n + 1, dtype=np.int32)
        mh = pa.ListArray.from_arrays(pa.array(empty), pa.array([], pa.uint32()))
        bh = pa.ListArray.from_arrays(pa.array(empty), pa.array([], pa.uint64()))
    else:
        mh = pa.ListArray.from_arrays(pa.array(np.arange(0, n * p + 1, p, dtype=np.int32)), pa.array(sig.ravel()))
        bh = pa.ListArray.from_arrays(pa.array(np.arange(0, n * nb + 1, nb, dtype=np.int32)), pa.array(bands.ravel()))
    table = pa.table([*keys.values(), pa.array(exact), mh, bh], schema=SIGNATURE_SCHEMA)
    cuts = sorted(rng.choice(np.arange(1, n), size=blocks - 1, replace=False).tolist())
    return [table.slice(lo, hi - lo) for lo, hi in zip([0, *cuts], [*cuts, n])]


def brute_force_drops(blocks: list[pa.Table], exact_dedup: bool, near: NearDedupSpec | None) -> list[tuple]:
    """The definition, record by record: for each (slot, bucket) group the anchor is the
    smallest key; an exact-slot member is always linked to it, a band member iff the mean
    of (its MinHash == the anchor's) reaches the threshold; then a Python union-find."""
    import numpy as np

    from zaya_data.clean.dedup import KEY_COLUMNS

    rows = pa.concat_tables(blocks).to_pylist()
    key = [tuple(r[c] for c in KEY_COLUMNS) for r in rows]
    groups: dict[tuple[int, int], list[int]] = {}
    for i, r in enumerate(rows):
        if exact_dedup:
            groups.setdefault((0, r["exact"]), []).append(i)
        if near is not None:
            for b, h in enumerate(r["bands"]):
                groups.setdefault((1 + b, h), []).append(i)
    links = []
    for (slot, _), members in groups.items():
        anchor = min(members, key=lambda i: key[i])
        for m in members:
            if m == anchor:
                continue
            same = np.array(rows[m]["minhash"]) == np.array(rows[anchor]["minhash"])
            if slot == 0 or np.mean(same) >= near.threshold:
                links.append((slot == 0, key[m], key[anchor]))
    return union_find_drops(links)


@pytest.mark.parametrize("exact_dedup,near", [(True, RANDOM_NEAR), (False, RANDOM_NEAR), (True, None)])
def test_candidate_verification_equals_brute_force_on_planted_collisions(exact_dedup, near) -> None:
    from zaya_data.clean.config import CleanSpec
    from zaya_data.clean.dedup import DROPS_SCHEMA

    spec = CleanSpec(exact_dedup=exact_dedup, near_dedup=near)
    for seed in range(6):
        blocks = random_signature_blocks(seed, near=near)
        want = brute_force_drops(blocks, exact_dedup, near)
        assert len(want) > 20, seed  # the planted duplicates are found at all
        for partitions, order in ((1, blocks), (4, blocks[::-1]), (13, blocks[1:] + blocks[:1])):
            got = resolve_duplicates(order, spec, partitions=partitions)
            assert got.schema.equals(DROPS_SCHEMA)
            assert [tuple(r.values()) for r in got.to_pylist()] == want, (seed, partitions)


def test_boundary_similarity_is_kept_and_one_below_is_not() -> None:
    """threshold 0.75 of 20 values: 15 equal values is a link, 14 is not."""
    import numpy as np

    from zaya_data.clean.config import CleanSpec
    from zaya_data.clean.dedup import SIGNATURE_SCHEMA

    a = np.arange(20, dtype=np.uint32)
    b15, b14 = a.copy(), a.copy()
    b15[:5] += 100
    b14[:6] += 100
    b15[15:] = b14[15:] = a[15:]  # the last band equal in both: one shared bucket each
    sig = np.stack([a, b15, b14])
    bands = np.full((3, 5), 7, dtype=np.uint64)  # every band bucket shared by all three
    n = 3
    t = pa.table([
        pa.array([0] * n, pa.int32()), pa.array(["a", "b", "c"]), pa.array(["s"] * n),
        pa.array([0] * n, pa.int32()), pa.array(range(n), pa.int64()), pa.array([1, 2, 3], pa.uint64()),
        pa.ListArray.from_arrays(pa.array([0, 20, 40, 60], pa.int32()), pa.array(sig.ravel())),
        pa.ListArray.from_arrays(pa.array([0, 5, 10, 15], pa.int32()), pa.array(bands.ravel())),
    ], schema=SIGNATURE_SCHEMA)
    spec = CleanSpec(exact_dedup=True, near_dedup=RANDOM_NEAR)
    drops = resolve_duplicates([t], spec).to_pylist()
    assert [(d["id"], d["reason"], d["survivor_id"]) for d in drops] == [("b", "near_duplicate", "a")]


def test_bucket_rows_carry_no_minhash() -> None:
    import numpy as np

    from zaya_data.clean.dedup import BUCKET_SCHEMA, KEY_COLUMNS, LOCATION, bucket_keys
    from zaya_data.clean.dedup_ray import located_bucket_rows

    blocks = random_signature_blocks(0, n=50, blocks=2)
    for spec in (SPEC, parse_clean({"exact_dedup": True}, "t"), parse_clean({"near_dedup": True}, "t")):
        keys = bucket_keys(signatures(doc_table(["a b c d e f g", "x y z"], "s"), spec), spec, 0)
        assert keys.schema.equals(BUCKET_SCHEMA)
        assert keys.column_names == ["slot", "bucket", *KEY_COLUMNS, LOCATION]
    from zaya_data.clean.config import CleanSpec

    spec = CleanSpec(exact_dedup=True, near_dedup=RANDOM_NEAR)
    keys = bucket_keys(blocks[1], spec, 5)
    assert "minhash" not in keys.column_names and keys.num_rows == blocks[1].num_rows * (1 + RANDOM_NEAR.bands)
    # every bucket row of a record says where its signature is: block 5, its row there
    loc = keys.column(LOCATION).to_numpy()
    assert set((loc >> np.uint64(32)).tolist()) == {5}
    rows = (loc & np.uint64(0xFFFFFFFF)).astype(np.int64)
    assert keys.column("row_index").to_pylist() == blocks[1].column("row_index").take(pa.array(rows)).to_pylist()
    # what the Ray shuffle carries: the same rows plus their partition
    assert located_bucket_rows(blocks[0], 0, spec, 4).column_names == ["slot", "bucket", *KEY_COLUMNS, LOCATION,
                                                                       "partition"]
    with pytest.raises(ValueError, match="2\\*\\*32"):
        bucket_keys(blocks[0], spec, 2**32)


def keyed_reference(blocks: list[pa.Table], spec) -> pa.Table:
    """The former driver-side verification, on full keys and in one place: every bucket's
    links with their keys (`bucket_edges`), each near candidate's MinHash looked up by key
    and compared with its anchor's, union-find on keys (`resolve_edges`). No locations,
    no partitions, no reducer."""
    import numpy as np

    from zaya_data.clean import dedup

    allk = pa.concat_tables([dedup.bucket_keys(b, spec, i) for i, b in enumerate(blocks)])
    edges = dedup.bucket_edges(allk)
    whole = pa.concat_tables(blocks)
    key = list(zip(*(whole.column(c).to_pylist() for c in dedup.KEY_COLUMNS)))
    mh = dict(zip(key, (np.array(m, dtype=np.uint32) for m in whole.column("minhash").to_pylist())))
    e = edges.to_pydict()
    m = list(zip(*(e[f"m_{c}"] for c in dedup.KEY_COLUMNS)))
    a = list(zip(*(e[f"a_{c}"] for c in dedup.KEY_COLUMNS)))
    t = dedup.threshold_of(spec)
    keep = [ex or float(np.mean(mh[x] == mh[y])) >= t for ex, x, y in zip(e["exact"], m, a)]
    return dedup.resolve_edges([edges.filter(pa.array(keep, pa.bool_()))])


def _reduce_partition(args: tuple) -> pa.Table:
    """A reducer in another process: one partition's bucket rows -> its verified links,
    the MinHash read from the (pickled) signature blocks at the candidates' locations."""
    from zaya_data.clean.dedup import bucket_links

    keys, blocks, threshold = args
    return bucket_links(keys, blocks.__getitem__, threshold)


def reducer_drops(blocks: list[pa.Table], spec, partitions: int, workers: int) -> pa.Table:
    """The build's flow from the library functions: located bucket rows per block, hash
    partitions, each verified by a reducer in a pool of `workers` processes (threads = 1:
    one process, several partitions, any order), then the driver's `resolve_links`."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    from zaya_data.clean import dedup

    allk = pa.concat_tables([dedup.bucket_keys(b, spec, i) for i, b in enumerate(blocks)])
    part = dedup.partition_of(allk, partitions)
    parts = [allk.filter(pc.equal(part, p)) for p in range(partitions)]
    with ProcessPoolExecutor(workers, mp_context=mp.get_context("fork")) as pool:
        links = list(pool.map(_reduce_partition, [(k, blocks, dedup.threshold_of(spec)) for k in parts]))
    return dedup.resolve_links(links[::-1], lambda loc: dedup.keys_at(blocks.__getitem__, loc))


def test_reducer_verification_equals_the_keyed_reference_on_real_data(corpus) -> None:
    """Real solutions, their edited copies and exact variants, cut in signature blocks of
    97 rows: the drops of the reducer-side verification (1, 2, 3 partitions; 1 and 2
    worker processes; in-process `resolve_duplicates`) are the keyed single-place
    reference's, and the brute-force ones."""
    orig, copies, exact = corpus
    whole = pa.concat_tables([orig, copies, exact])
    blocks = [signatures(whole.slice(o, 97), SPEC, priority=o % 3) for o in range(0, whole.num_rows, 97)]
    want = keyed_reference(blocks, SPEC)
    assert want.num_rows > 100
    assert [tuple(r.values()) for r in want.to_pylist()] == brute_force_drops(blocks, True, SPEC.near_dedup)
    for partitions in (1, 2, 3):
        assert resolve_duplicates(blocks, SPEC, partitions=partitions).equals(want), partitions
        for workers in (1, 2):
            assert reducer_drops(blocks, SPEC, partitions, workers).equals(want), (partitions, workers)


def test_reducer_verification_equals_the_keyed_reference_on_planted_collisions() -> None:
    from zaya_data.clean.config import CleanSpec

    spec = CleanSpec(exact_dedup=True, near_dedup=RANDOM_NEAR)
    for seed in range(3):
        blocks = random_signature_blocks(seed)
        want = keyed_reference(blocks, spec)
        assert [tuple(r.values()) for r in want.to_pylist()] == brute_force_drops(blocks, True, RANDOM_NEAR)
        for partitions, workers in ((1, 1), (2, 2), (3, 2), (7, 1)):
            assert reducer_drops(blocks, spec, partitions, workers).equals(want), (seed, partitions)


def test_a_record_given_twice_is_one_record() -> None:
    """Equal keys at two locations (a signature block passed twice) are one record, as one
    key hash was before: the same records dropped, with the same survivors, as with one
    copy. (The copies' exact link makes the record an exact
    duplicate's member, so a near drop may read `exact_duplicate`: so it did with key
    hashes.)"""
    from zaya_data.clean.config import CleanSpec

    spec = CleanSpec(exact_dedup=True, near_dedup=RANDOM_NEAR)
    blocks = random_signature_blocks(5)
    once = resolve_duplicates(blocks, spec).drop_columns(["reason"])
    for given in (blocks + blocks[:2], [blocks[1], *blocks]):
        twice = resolve_duplicates(given, spec, partitions=3)
        assert twice.drop_columns(["reason"]).equals(once)


def test_partition_links_are_the_verified_keyed_edges_as_locations() -> None:
    """`bucket_links` (what a partition sends back: 17 bytes per link) is `bucket_edges`
    (the keyed reference) with the near candidates below the threshold removed and each
    key replaced by its record's location, each link once; and the stats say what the
    verification saw."""
    import numpy as np

    from zaya_data.clean import dedup
    from zaya_data.clean.config import CleanSpec

    spec = CleanSpec(exact_dedup=True, near_dedup=RANDOM_NEAR)
    blocks = random_signature_blocks(7)
    allk = pa.concat_tables([dedup.bucket_keys(b, spec, i) for i, b in enumerate(blocks)])
    where = {}  # key -> location
    for i, b in enumerate(blocks):
        for r, k in enumerate(zip(*(b.column(c).to_pylist() for c in dedup.KEY_COLUMNS))):
            where[k] = (i << 32) | r
    mh = {k: np.array(m) for b in blocks
          for k, m in zip(zip(*(b.column(c).to_pylist() for c in dedup.KEY_COLUMNS)), b.column("minhash").to_pylist())}
    e = dedup.bucket_edges(allk).to_pydict()
    want = set()
    for row in range(len(e["exact"])):
        m = tuple(e[f"m_{c}"][row] for c in dedup.KEY_COLUMNS)
        a = tuple(e[f"a_{c}"][row] for c in dedup.KEY_COLUMNS)
        if e["exact"][row] or np.mean(mh[m] == mh[a]) >= RANDOM_NEAR.threshold:
            want.add((e["exact"][row], where[m], where[a]))
    stats: dict = {}
    links = dedup.bucket_links(allk, blocks.__getitem__, RANDOM_NEAR.threshold, stats=stats)
    assert links.schema.equals(dedup.LINK_SCHEMA)
    got = list(zip(*(links.column(c).to_pylist() for c in ("exact", "member", "anchor"))))
    assert len(got) == len(set(got)) and set(got) == want
    assert stats["near links kept"] + stats["exact links"] == len(got)
    assert stats["near links kept"] <= stats["pairs compared"] <= stats["near candidate links"]
    assert 0 < stats["signature rows read"] <= sum(b.num_rows for b in blocks)
    # a partition without near candidates reads no signature block
    exact_only = allk.filter(pc.equal(allk.column("slot"), 0))
    never = lambda i: pytest.fail("read a signature block")  # noqa: E731
    assert dedup.bucket_links(exact_only, never, RANDOM_NEAR.threshold).num_rows == stats["exact links"]


def test_records_are_read_at_their_locations() -> None:
    import numpy as np

    from zaya_data.clean import dedup

    whole = pa.concat_tables(random_signature_blocks(2, n=60, blocks=3))
    blocks = [whole.slice(lo, 20) for lo in (0, 20, 40)]
    loc = np.array(sorted([(0 << 32) | 3, (0 << 32) | 5, (2 << 32) | 0, (2 << 32) | (blocks[2].num_rows - 1)]),
                   dtype=np.uint64)
    want = [(0, 3), (0, 5), (2, 0), (2, blocks[2].num_rows - 1)]
    assert [(b, r.tolist()) for b, r in dedup.block_rows(loc)] == [(0, [3, 5]), (2, [0, blocks[2].num_rows - 1])]
    mh = dedup.minhash_at(blocks.__getitem__, loc)
    assert mh.dtype == np.uint32 and mh.tolist() == [blocks[b].column("minhash")[r].as_py() for b, r in want]
    keys = dedup.keys_at(blocks.__getitem__, loc)
    assert keys.schema.equals(dedup.KEY_SCHEMA)
    assert keys.to_pylist() == [blocks[b].select(dedup.KEY_COLUMNS).slice(r, 1).to_pylist()[0] for b, r in want]
    # a sliced, multi-chunk block reads the same rows
    chunked = [pa.concat_tables([b.slice(0, 4), b.slice(4)]) for b in blocks]
    assert np.array_equal(dedup.minhash_at(chunked.__getitem__, loc), mh)
    with pytest.raises(ValueError, match="lengths"):
        uneven = pa.array([[1, 2]] + [[1]] * (blocks[0].num_rows - 1), pa.list_(pa.uint32()))
        bad = blocks[0].set_column(6, "minhash", uneven)
        dedup.minhash_at([bad].__getitem__, loc[:1])
    with pytest.raises(ValueError, match="keys read"):
        dedup.resolve_links([pa.table([pa.array([True]), pa.array([loc[1]]), pa.array([loc[0]])],
                                      schema=dedup.LINK_SCHEMA)], lambda x: dedup.keys_at(blocks.__getitem__, x[:1]))


def test_sort_based_unique_equals_numpy_unique() -> None:
    # The resolution's distinct values: one sort instead of np.unique (slow on ~1M 64-bit
    # values), and for locations a mark per (block, row); same values and inverse, empty
    # and single-element arrays included.
    import numpy as np

    from zaya_data.clean.dedup import _sorted_unique, _unique_locations

    rng = np.random.default_rng(3)
    for n in (0, 1, 2, 7, 5000):
        for dtype in (np.uint64, np.int64):
            x = rng.integers(0, max(1, n // 3) + 1, n).astype(dtype)
            assert np.array_equal(_sorted_unique(x), np.unique(x)) and _sorted_unique(x).dtype == x.dtype
        for blocks in (1, 3, 40):
            loc = (rng.integers(0, blocks, n).astype(np.uint64) << np.uint64(32)) | rng.integers(0, 2**31, n).astype(
                np.uint64) % np.uint64(max(1, n // 2))
            u, inv = np.unique(loc, return_inverse=True)
            u2, inv2 = _unique_locations(loc)
            assert np.array_equal(u, u2) and u2.dtype == np.uint64 and np.array_equal(inv.ravel(), inv2)


def test_pair_similarity_is_the_same_on_any_number_of_threads() -> None:
    import numpy as np

    from zaya_data.clean.dedup import _PAIR_BLOCK, similar

    rng = np.random.default_rng(11)
    mh = rng.integers(0, 4, (500, 16), dtype=np.uint32)  # few values: similarities spread out
    n = 3 * _PAIR_BLOCK + 17
    m, a = rng.integers(0, 500, n), rng.integers(0, 500, n)
    expect = (mh[m] == mh[a]).mean(axis=1) >= 0.5
    for threads in (1, 2, 5):
        assert np.array_equal(similar(mh, m, a, 0.5, threads=threads), expect)
    assert similar(mh, m[:0], a[:0], 0.5).shape == (0,)
