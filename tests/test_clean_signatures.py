"""The near-dedup signature map is bit-identical to its straightforward form.

`signatures` normalizes each text once, finds words on UTF-8 bytes with Arrow, and runs the
rolling shingle hash and the MinHash in place. The reference below is the implementation it
replaced, kept here only for these tests: `_WS.sub` normalization, `re.findall` words, a
Python loop per word, whole-array rolling hash, MinHash in (shingles, 16) blocks. Same
exact hashes, shingles, MinHash, bands and table for real documents, edge cases (empty,
shorter than the shingle, punctuation only, NFKC ligatures, combining marks, CJK, lone
surrogates, every code point) and shingle sizes 1, 3, 5.
"""

from __future__ import annotations

import json
import os
import random
import re
import unicodedata
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import xxhash

from zaya_data.clean import dedup
from zaya_data.clean.config import CleanSpec, NearDedupSpec, parse_clean
from zaya_data.clean.normalize import dedup_normalize

DATA = Path(os.environ.get("ZAYA_SHARED_DATA", Path(__file__).resolve().parents[1].parent / "shared" / "data"))
SHINGLES = (1, 3, 5)

# ---------------------------------------------------------------------------------------
# reference: the straightforward implementation

_REF_WS = re.compile(r"\s+")
_REF_WORD = re.compile(r"\w+")


def ref_normalize(text: str) -> str:
    return _REF_WS.sub(" ", unicodedata.normalize("NFKC", text).lower()).strip()


def ref_shingle_hashes(texts: list[str], n: int) -> tuple[np.ndarray, np.ndarray]:
    word_hashes: list[int] = []
    bounds = [0]
    seen: dict[str, int] = {}
    for t in texts:
        for w in _REF_WORD.findall(ref_normalize(t)):
            h = seen.get(w)
            if h is None:
                h = seen[w] = xxhash.xxh3_64_intdigest(w.encode("utf-8", "surrogatepass"))
            word_hashes.append(h)
        bounds.append(len(word_hashes))
    w = np.array(word_hashes, dtype=np.uint64)
    counts = np.diff(np.array(bounds, dtype=np.int64))
    starts = np.array(bounds[:-1], dtype=np.int64)
    total = len(w)
    nwin = max(total - n + 1, 0)
    roll = np.zeros(nwin, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for j in range(n):
            roll = roll * dedup._ROLL + w[j : j + nwin]
    per_doc = np.where(counts >= n, counts - n + 1, np.minimum(counts, 1))
    out_offsets = np.zeros(len(texts) + 1, dtype=np.int64)
    np.cumsum(per_doc, out=out_offsets[1:])
    out = np.empty(out_offsets[-1], dtype=np.uint64)
    full = counts >= n
    fi = np.flatnonzero(full)
    if len(fi):
        reps = per_doc[fi]
        within = np.arange(reps.sum()) - np.repeat(np.cumsum(reps) - reps, reps)
        out[np.repeat(out_offsets[fi], reps) + within] = roll[np.repeat(starts[fi], reps) + within]
    for i in np.flatnonzero(~full & (counts > 0)):
        h = np.uint64(0)
        with np.errstate(over="ignore"):
            for x in w[starts[i] : starts[i] + counts[i]]:
                h = h * dedup._ROLL + x
        out[out_offsets[i]] = h
    return dedup._mix(out), out_offsets


def ref_minhash_of(shingles: np.ndarray, offsets: np.ndarray, spec: NearDedupSpec) -> np.ndarray:
    """The definition: per document, min over its shingles of (a*x + b) >> 32 (mod 2^64)."""
    a, b = dedup._permutations(spec)
    sig = np.full((len(offsets) - 1, spec.permutations), 0xFFFFFFFF, dtype=np.uint32)
    with np.errstate(over="ignore"):
        for i in range(len(offsets) - 1):
            x = shingles[offsets[i] : offsets[i + 1]]
            if len(x):
                sig[i] = ((x[:, None] * a[None, :] + b[None, :]) >> np.uint64(32)).min(axis=0)
    return sig


def ref_minhash(texts: list[str], spec: NearDedupSpec) -> np.ndarray:
    return ref_minhash_of(*ref_shingle_hashes(texts, spec.shingle), spec)


def ref_band_hashes(sig: np.ndarray, spec: NearDedupSpec) -> np.ndarray:
    n = sig.shape[0]
    rows = sig.reshape(n, spec.bands, spec.rows).astype(np.uint64)
    h = np.broadcast_to(np.arange(spec.bands, dtype=np.uint64)[None, :], (n, spec.bands)).copy()
    with np.errstate(over="ignore"):
        for r in range(spec.rows):
            h = h * dedup._ROLL + rows[:, :, r]
    return dedup._mix(h)


def ref_exact_hashes(texts: list[str]) -> np.ndarray:
    return np.array(
        [xxhash.xxh3_64_intdigest(ref_normalize(t).encode("utf-8", "surrogatepass")) for t in texts], dtype=np.uint64
    )


def ref_signatures(table: pa.Table, spec: CleanSpec, priority: int = 0) -> pa.Table:
    texts = table.column("text").to_pylist()
    n = len(texts)
    nd = spec.near_dedup
    sig = ref_minhash(texts, nd)
    bands = ref_band_hashes(sig, nd)
    mh = pa.ListArray.from_arrays(pa.array(np.arange(0, n * nd.permutations + 1, nd.permutations, dtype=np.int32)),
                                  pa.array(sig.ravel()))
    bh = pa.ListArray.from_arrays(pa.array(np.arange(0, n * nd.bands + 1, nd.bands, dtype=np.int32)),
                                  pa.array(bands.ravel()))
    return pa.table(
        [
            pa.array(np.full(n, priority, dtype=np.int32)),
            table.column("id").combine_chunks().cast(pa.string()),
            table.column("source").combine_chunks().cast(pa.string()),
            table.column("file_index").combine_chunks().cast(pa.int32()),
            table.column("row_index").combine_chunks().cast(pa.int64()),
            pa.array(ref_exact_hashes(texts)),
            mh,
            bh,
        ],
        schema=dedup.SIGNATURE_SCHEMA,
    )


# ---------------------------------------------------------------------------------------
# inputs

EDGE = [
    "",
    " ",
    "\n\t \u3000\u00a0",
    "a",
    "One",
    "two words",
    "three words here",
    "four words are here",
    "!!! ... --- ??? (){}[] $$ \\\\ ~ `",  # punctuation only
    "a, b; c. d! e? f",
    "snake_case_word __init__ _ __ x_1",
    "\ufb01nance \ufb02ow \ufb00 o\ufb03ce",  # NFKC ligatures fi fl ff ffi
    "caf\u00e9 vs cafe\u0301 and e\u0301\u0300\u0323 stacked",  # precomposed vs combining marks
    "\u0301\u0300 \u0323",  # combining marks alone
    "\u4e2d\u6587\u5b57\u7b26\u6d4b\u8bd5\u3002\u65e5\u672c\u8a9e\u306e\u30c6\u30ad\u30b9\u30c8\u3001\ud55c\uad6d\uc5b4",  # CJK
    "\uff21\uff22\uff23 \uff11\uff12\uff13 \uff01\uff1f",  # full width
    "x\u00b2 + y\u00b3 = \u00bd \u2160 \u2460 \u0663",  # superscripts, fractions, numerals
    "\u0130stanbul \u00df STRASSE \u03a3\u039f\u03a6\u039f\u03a3 \u01c5",  # special lowercasing
    "emoji \U0001f600 test \U0001f468\u200d\U0001f469\u200d\U0001f467 zwj\u200bzw",
    "sep\x1cfile\x1dgroup\x1erecord\x1funit\u2028line\u2029para\x85nel\x0bvt\x0cff",
    "math \u201cquotes\u201d \u2018single\u2019 \u2014 \u2013 \u2026 \u2022 \u00b7 \u00d7 \u00f7 \u2264 \u2265 \u2260 "
    "\u00b1 \u00a7 \u00b6 \u2020 \u2021 \u2032 \u2033 \u221e \u2211 \u220f \u222b \u221a \u2202 \u2207 end",  # > 16 marks
    "\u00e9" * 50 + " \u2014 " + "word " * 20,
    "\u0627\u0644\u0639\u0631\u0628\u064a\u0629 \u0928\u092e\u0938\u094d\u0924\u0947 \u0e20\u0e32\u0e29\u0e32\u0e44\u0e17\u0e22",
]
SURROGATES = [
    "\ud800",
    "lone \ud800 high and \udfff low",
    "abc\udc80def\udcff ghi",  # surrogateescape-decoded bytes
    "pair \ud83d\ude00 as two code points",
    "\udc80" * 5 + " x y z " + "\ud834",
]


def _tricky_texts(seed: int, count: int) -> list[str]:
    """Random texts over characters that stress normalization and word splitting."""
    rng = random.Random(seed)
    alphabet = (
        list("abcXYZ019_") + list(" \t\n\r\x0b\x0c\x1c\x1f\u00a0\u2028\u3000\x85")
        + list(".,;:!?()-'\"$\\{}^~") + list("\u00e9\u00df\u0130\u03a3\u4e2d\u0663\u00b2\u2160\ufb01\uff21")
        + list("\u0301\u0323\u200b\u200d\u2014\u201c\u00d7\u2264\U0001f600")
    )
    out = []
    for _ in range(count):
        k = rng.choice([0, 1, 2, 4, 9, 30, 200])
        out.append("".join(rng.choice(alphabet) for _ in range(k)))
    return out


def _jl(rel: str) -> list[dict]:
    with open(DATA / rel) as f:
        return [json.loads(line) for line in f]


@pytest.fixture(scope="module")
def real_texts() -> list[str]:
    """Real documents as bench_clean's corpus reads them, a sample of each file, plus
    lightly edited copies and exact copies."""
    if not DATA.exists():
        pytest.skip(f"shared data not found at {DATA} (set ZAYA_SHARED_DATA)")
    rng = random.Random(11)
    texts = [c for r in _jl("qwen25-math-eval/math_cot_100_rollouts8.jsonl")[:40] for c in r["code"]]
    texts += [r["solution"][0] for r in _jl("qwen25-math-eval/olympiadbench.jsonl")[:200]]
    texts += [r["solution"] for r in _jl("limo-eval/math.jsonl")[:200]]
    texts += [r["solution"] for r in _jl("qwen25-math-eval/minerva_math.jsonl")[:200]]
    texts += [r["question"] + "\n" + r["answer"] for r in _jl("qwen25-math-eval/gsm8k.jsonl")[:200]]
    edited = []
    for t in rng.sample(texts, 100):
        words = t.split(" ")
        words[rng.randrange(len(words))] = rng.choice(["thus", "hence", "so"])
        edited.append(" ".join(words))
    texts += edited + rng.sample(texts, 50)
    rng.shuffle(texts)
    assert any(not t.isascii() for t in texts) and any(t.isascii() for t in texts)
    return texts


def doc_table(texts: list[str]) -> pa.Table:
    n = len(texts)
    return pa.table(
        {
            "id": [f"d{i:05d}" for i in range(n)],
            "source": ["s"] * n,
            "category": ["math"] * n,
            "text": texts,
            "meta": pa.array([None] * n, pa.string()),
            "file_index": pa.array([3] * n, pa.int32()),
            "row_index": pa.array(range(n), pa.int64()),
        }
    )


def spec_for(shingle: int, permutations: int = 112, bands: int = 14) -> CleanSpec:
    return parse_clean({"exact_dedup": True,
                        "near_dedup": {"shingle": shingle, "permutations": permutations, "bands": bands}}, "test")


def assert_same_functions(texts: list[str], shingle: int) -> None:
    got, want = dedup.shingle_hashes(texts, shingle), ref_shingle_hashes(texts, shingle)
    assert got[0].dtype == want[0].dtype == np.uint64 and got[1].dtype == want[1].dtype
    assert np.array_equal(got[1], want[1]) and np.array_equal(got[0], want[0])
    got_exact = dedup.exact_hashes(texts)
    assert got_exact.dtype == np.uint64 and np.array_equal(got_exact, ref_exact_hashes(texts))
    nd = spec_for(shingle, 40, 10).near_dedup
    got_mh = dedup.minhash(texts, nd)
    assert got_mh.dtype == np.uint32 and got_mh.flags.c_contiguous
    assert np.array_equal(got_mh, ref_minhash(texts, nd))


# ---------------------------------------------------------------------------------------
# tests


@pytest.mark.parametrize("shingle", SHINGLES)
def test_signatures_of_real_documents_equal_the_reference(real_texts, shingle) -> None:
    table = doc_table(real_texts)
    spec = spec_for(shingle)
    got = dedup.signatures(table, spec, priority=2)
    want = ref_signatures(table, spec, priority=2)
    assert got.schema == want.schema == dedup.SIGNATURE_SCHEMA
    assert got.equals(want)


def test_signature_phase_timings_add_up_and_change_nothing(real_texts) -> None:
    """`timings` gets each phase's seconds added (twice called: summed), and the table is the
    one made without it; near dedup off times only what runs."""
    table = doc_table(real_texts[:200])
    spec = spec_for(5)
    timings: dict[str, float] = {}
    assert dedup.signatures(table, spec, timings=timings).equals(dedup.signatures(table, spec))
    assert list(timings) == ["normalize", "shingles", "minhash", "bands+table"]
    assert all(v > 0 for v in timings.values())
    first = dict(timings)
    dedup.signatures(table, spec, timings=timings)
    assert all(timings[k] > first[k] for k in first)
    exact_only: dict[str, float] = {}
    dedup.signatures(table, parse_clean({"exact_dedup": True}, "test"), timings=exact_only)
    assert list(exact_only) == ["normalize", "bands+table"]


@pytest.mark.parametrize("shingle", SHINGLES)
def test_signatures_in_batches_and_chunked_columns_equal_the_reference(real_texts, shingle) -> None:
    """A batch of any size, a column in several chunks, and a batch mixing edge cases."""
    spec = spec_for(shingle, 24, 6)
    texts = real_texts[:150] + EDGE + real_texts[150:300]
    table = doc_table(texts)
    chunked = pa.concat_tables([table.slice(0, 7), table.slice(7, 100), table.slice(107)])
    assert dedup.signatures(chunked, spec).equals(ref_signatures(table, spec))
    for lo in (0, 5, 160):
        part = table.slice(lo, 13)
        assert dedup.signatures(part, spec).equals(ref_signatures(part, spec))


@pytest.mark.parametrize("shingle", SHINGLES)
def test_edge_cases_equal_the_reference(shingle) -> None:
    assert_same_functions(EDGE, shingle)
    table = doc_table(EDGE)
    assert dedup.signatures(table, spec_for(shingle)).equals(ref_signatures(table, spec_for(shingle)))
    for t in EDGE:  # each alone: a batch of one text, with no or one shingle
        assert_same_functions([t], shingle)


@pytest.mark.parametrize("shingle", SHINGLES)
def test_lone_surrogates_equal_the_reference(shingle) -> None:
    """An Arrow string column cannot hold them (not UTF-8), but json.loads gives them for
    `\\ud800` escapes: the functions on Python strings hash them like the reference."""
    assert_same_functions(SURROGATES, shingle)
    assert_same_functions(SURROGATES + EDGE, shingle)


def test_empty_batches() -> None:
    for shingle in SHINGLES:
        assert_same_functions([], shingle)
        assert_same_functions(["", " ", "..."], shingle)
    spec = spec_for(5)
    for texts in ([], [""], ["", "!"]):
        table = doc_table(texts)
        assert dedup.signatures(table, spec).equals(ref_signatures(table, spec))


@pytest.mark.parametrize("shingle", SHINGLES)
def test_random_tricky_texts_equal_the_reference(shingle) -> None:
    assert_same_functions(_tricky_texts(shingle, 400), shingle)


def test_every_code_point_normalizes_and_splits_like_the_reference() -> None:
    """Each code point between word characters and alone, all 1.1M of them (surrogates
    too): the same normalized text and the same words (1-shingles) as the reference."""
    texts = [" ".join(f"a{chr(c)}b {chr(c)}" for c in range(lo, min(lo + 512, 0x110000)))
             for lo in range(0, 0x110000, 512)]
    assert [dedup_normalize(t) for t in texts] == [ref_normalize(t) for t in texts]
    assert_same_functions(texts, 1)


def test_minhash_blocks_equal_the_reference(real_texts) -> None:
    """The cache blocks cut anywhere (tiny blocks, documents longer than a block) give
    the reference MinHash."""
    texts = real_texts[:120] + EDGE
    nd = spec_for(5, 40, 10).near_dedup
    assert_every_block_gives(texts, nd, ref_minhash(texts, nd), (1, 7, 300, 4096))


def assert_every_block_gives(texts: list[str], spec: NearDedupSpec, want: np.ndarray, blocks: tuple[int, ...]) -> None:
    saved = dedup._SHINGLE_BLOCK
    try:
        for block in blocks:
            dedup._SHINGLE_BLOCK = block
            assert np.array_equal(dedup.minhash(texts, spec), want), block
    finally:
        dedup._SHINGLE_BLOCK = saved


def test_blocked_minhash_equals_the_definition() -> None:
    """The cache-blocked MinHash is min over a document's shingles of (a*x + b) >> 32 (mod
    2^64), column by column, for blocks cut anywhere: tiny blocks, a document longer than a
    block, documents without words."""
    rng = random.Random(3)
    words = [f"w{i}" for i in range(300)]
    texts = [" ".join(rng.choice(words) for _ in range(rng.choice([0, 1, 3, 7, 40, 900]))) for _ in range(60)]
    spec = NearDedupSpec(shingle=3, permutations=40, bands=10, threshold=0.8, seed=5)
    assert_every_block_gives(texts, spec, ref_minhash_of(*dedup.shingle_hashes(texts, spec.shingle), spec),
                             (1, 5, 64, 4096))
