"""Filter + dedup throughput: zaya-data's cleaning stages vs datatrove's own pipeline,
same filters, same data, same number of worker processes, measured in one run.

    python benchmarks/bench_clean.py [--workers 2] [--scale 1] [--repeat 2] [--keep-dir DIR]

Corpus: every text of ../shared/data (MATH/Minerva/OlympiadBench solutions, Qwen
rollouts, GSM8K answers) plus the Python documentation topics shipped in the standard
library (`pydoc_data`), with 10% lightly edited copies and 5% verbatim copies added so
dedup has work to do; `--scale k` repeats it k times with fresh edits. Written as
`--workers` JSONL shards (datatrove's input unit: one task per file).

datatrove (0.10.1): LocalPipelineExecutor, stage 1 = JsonlReader -> the four filters ->
JsonlWriter -> MinhashDedupSignature; stage 2 MinhashDedupBuckets; stage 3
MinhashDedupCluster; stage 4 = JsonlReader -> MinhashDedupFilter -> JsonlWriter, its
documented MinHash recipe (5-grams, 14 buckets x 8 hashes).
zaya-data: a process pool of the same size; map 1 = read JSONL to Arrow ->
QualityFilter (the same datatrove filter objects) -> Parquet + `signatures` (exact and
MinHash, 5-grams, 14 bands x 8); driver `resolve_duplicates`; map 2 = `apply_drop_list`
-> Parquet. Both count docs in/out; throughput = input docs (and input text MB) / wall s.
The machine may be shared: each engine runs `--repeat` times, alternating, and the best
(least disturbed) wall time of each is compared.

Same work? The four filters are the same datatrove objects with the same arguments, so
"after filters" must be equal (checked; the run fails otherwise). Dedup differs by
design: zaya-data drops exact duplicates of the normalized text, and a MinHash band
collision only where the estimated Jaccard similarity reaches 0.8; datatrove's MinHash
removes every band collision without checking similarity, over its own normalized
5-grams. The kept sets are compared document by document.

Near-dedup scaling (for a many-core machine; runs only the signature + resolve path):

    python benchmarks/bench_clean.py --scaling 1,2,4,8,16 --scale 16 [--corpus distinct]

signatures and bucket keys (map: per chunk, one file of bucket rows with a record batch
per hash partition, and one of signatures, memory-mapped by the readers), then the
hash-partitioned reduce: each partition's buckets into exact links and near candidates,
the candidates verified in the reducer (their MinHash rows read at their locations from
the chunks' signature files, each distinct pair of the partition compared once), only
the kept links sent back; then the pool reads the linked records' keys (a task per
signature file) and the driver runs the union-find. All of it in a process pool of each
size over the same chunks (--chunks, 64: Arrow files of input records, written first, of
decreasing size so the last wave is short: --chunk-layout; processes forked from a server
that has imported the modules, not from the driver: --start), timed once the pool's
processes are up (--repeat R: R interleaved rounds over the core counts, best and
median). Prints docs/s, speedup and parallel efficiency T1 / (k * Tk) against 1 core
("resolve s" is everything after the map, "driver s" the driver's part of it, "map busy"
the map tasks' summed time over k x the map's wall, "pool start s" the untimed start
(forking k processes, each running the dedup path once over a few records: `_warm_up`;
"efficiency with start" counts it),
"machine efficiency" an in-cache calibration task on the same pool, "CPU time stolen" the
hypervisor's steal over all CPUs), and checks that every size gives the same drop list;
then the bucket rows' bytes per document, what the verification saw (last run, summed
over the partitions) and each part of the map's and the reduce's tasks, with their wall,
CPU and kernel time and page faults, at every size. Core counts above this machine's CPUs
are skipped. `ZAYA_SHARED_DATA` points at the shared data when ../shared/data is absent.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import random
import re
import shutil
import sys
import tempfile
import time
from typing import Any
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# ../shared/data beside the checkout; ZAYA_SHARED_DATA points elsewhere (a bigger machine).
DATA = Path(os.environ.get("ZAYA_SHARED_DATA", ROOT.parent / "shared" / "data"))

FILTERS = {
    # Gopher's alpha-word rule and C4's curly-bracket rule each drop nearly all LaTeX-heavy
    # math text; off on both sides so the later filters and dedup see real work.
    "gopher_quality": {"max_non_alpha_words_ratio": None},
    "gopher_repetition": True,
    "c4": {"filter_curly_bracket": False},
    "fineweb": True,
}
CLEAN = {"quality": FILTERS, "exact_dedup": True, "near_dedup": {"shingle": 5, "permutations": 112, "bands": 14}}


def base_texts() -> list[str]:
    def jl(rel: str) -> list[dict]:
        with open(DATA / rel) as f:
            return [json.loads(line) for line in f]

    texts = [c for r in jl("qwen25-math-eval/math_cot_100_rollouts8.jsonl") for c in r["code"]]
    texts += [r["solution"][0] for r in jl("qwen25-math-eval/olympiadbench.jsonl")]
    texts += [r["solution"] for r in jl("limo-eval/math.jsonl")]
    texts += [r["solution"] for r in jl("qwen25-math-eval/minerva_math.jsonl")]
    texts += [r["question"] + "\n" + r["answer"] for r in jl("qwen25-math-eval/gsm8k.jsonl")]
    import pydoc_data.topics as topics

    for _, body in sorted(topics.topics.items()):
        chunk: list[str] = []
        for para in body.split("\n\n"):
            chunk.append(para)
            if sum(map(len, chunk)) > 3000:
                texts.append("\n\n".join(chunk))
                chunk = []
        if chunk:
            texts.append("\n\n".join(chunk))
    return texts


def edit(text: str, rng: random.Random) -> str:
    words = text.split(" ")
    for _ in range(max(1, len(words) // 100)):
        words[rng.randrange(len(words))] = rng.choice(["thus", "hence", "so"])
    return " ".join(words)


def corpus_docs(scale: int, kind: str = "repeated") -> list[str]:
    """The benchmark corpus at `scale` times the shared texts.

    repeated: the texts `scale` times over with fresh edits, plus 10% edited and 5% verbatim
      copies per round: at scale k every document has ~k near copies (a dedup worst case:
      ~90% of the corpus is dropped, the links and verification are as many as they get).
    distinct: `scale` times as many documents, each of as many sentences as a shared text,
      drawn at random from all of the texts' sentences, plus 10% edited and 5% verbatim
      copies of them: the duplicate rate of a corpus that was not already deduplicated
      (about 13% dropped), with the map's work per document the same as `repeated`."""
    rng = random.Random(0)
    base = base_texts()
    if kind == "distinct":
        sentences = [x for t in base for x in _SENTENCE_BREAK.split(t) if x.strip()]
        originals = [" ".join(rng.choice(sentences) for _ in range(max(1, len(_SENTENCE_BREAK.split(t)))))
                     for _ in range(scale) for t in base]
        docs = originals + [edit(t, rng) for t in rng.sample(originals, len(originals) // 10)]
        docs += rng.sample(originals, len(originals) // 20)
    elif kind == "repeated":
        docs = []
        for _ in range(scale):
            docs += [edit(t, rng) if scale > 1 else t for t in base]
            docs += [edit(t, rng) for t in rng.sample(base, len(base) // 10)]
            docs += rng.sample(base, len(base) // 20)
    else:
        raise ValueError(f"unknown corpus kind {kind!r} (repeated, distinct)")
    rng.shuffle(docs)
    return docs


_SENTENCE_BREAK = re.compile(r"(?<=[.!?])\s+|\n+")


def build_corpus(root: Path, workers: int, scale: int) -> tuple[list[Path], int, int]:
    docs = corpus_docs(scale)
    root.mkdir(parents=True)
    paths = [root / f"shard_{i:02d}.jsonl" for i in range(workers)]
    files = [p.open("w") for p in paths]
    for i, t in enumerate(docs):
        files[i % workers].write(json.dumps({"id": f"d{i:07d}", "text": t}) + "\n")
    for f in files:
        f.close()
    return paths, len(docs), sum(len(t.encode()) for t in docs)


# ---------------------------------------------------------------------------------------
# datatrove


def _xxh64(data: str | bytes) -> int:
    import xxhash

    return xxhash.xxh64_intdigest(data.encode("utf-8") if isinstance(data, str) else data)


def run_datatrove(inp: Path, work: Path, workers: int) -> dict:
    # datatrove 0.10.1's default MinHash hash (xxhash64 of a str) fails with the
    # installed xxhash 4.x ("Strings must be encoded before hashing"); give it the same
    # xxh64 on the UTF-8 bytes rather than switching it to its slower sha1 option.
    import datatrove.utils.hashes.xxhash as dt_xxhash

    dt_xxhash.xxhash64 = _xxh64
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.dedup import MinhashDedupCluster, MinhashDedupFilter, MinhashDedupSignature
    from datatrove.pipeline.dedup.minhash import MinhashConfig, MinhashDedupBuckets
    from datatrove.pipeline.filters import (
        C4QualityFilter,
        FineWebQualityFilter,
        GopherQualityFilter,
        GopherRepetitionFilter,
    )
    from datatrove.pipeline.readers import JsonlReader
    from datatrove.pipeline.writers import JsonlWriter

    cfg = MinhashConfig(n_grams=5, num_buckets=14, hashes_per_bucket=8, seed=1)
    filters = [
        GopherQualityFilter(max_non_alpha_words_ratio=None),
        GopherRepetitionFilter(),
        C4QualityFilter(filter_curly_bracket=False),
        FineWebQualityFilter(),
    ]
    logs = work / "logs"
    common = {"workers": workers, "skip_completed": False}
    t0 = time.perf_counter()
    LocalPipelineExecutor(
        [JsonlReader(str(inp)), *filters, JsonlWriter(str(work / "filtered"), compression=None),
         MinhashDedupSignature(str(work / "sigs"), config=cfg)],
        tasks=workers, logging_dir=str(logs / "1"), **common,
    ).run()
    t1 = time.perf_counter()
    LocalPipelineExecutor([MinhashDedupBuckets(str(work / "sigs"), str(work / "buckets"), config=cfg)],
                          tasks=cfg.num_buckets, logging_dir=str(logs / "2"), **common).run()
    LocalPipelineExecutor([MinhashDedupCluster(str(work / "buckets"), str(work / "remove"), config=cfg)],
                          tasks=1, logging_dir=str(logs / "3"), **common).run()
    LocalPipelineExecutor(
        [JsonlReader(str(work / "filtered")), MinhashDedupFilter(str(work / "remove")),
         JsonlWriter(str(work / "out"), compression=None)],
        tasks=workers, logging_dir=str(logs / "4"), **common,
    ).run()
    t2 = time.perf_counter()
    kept_filters = sum(1 for p in (work / "filtered").glob("*.jsonl") for _ in p.open())
    ids = {json.loads(line)["id"] for p in (work / "out").glob("*.jsonl") for line in p.open()}
    return {"wall": t2 - t0, "filter_s": t1 - t0, "dedup_s": t2 - t1, "after_filters": kept_filters,
            "kept": len(ids), "ids": ids}


# ---------------------------------------------------------------------------------------
# zaya-data


def _map_filter(args: tuple[str, int, str]) -> tuple[dict, bytes]:
    import pyarrow as pa
    import pyarrow.json as pj
    import pyarrow.parquet as pq

    from zaya_data.clean import QualityFilter, parse_clean, signatures
    from zaya_data.ledger import Ledger

    path, index, out = args
    spec = parse_clean(CLEAN, "bench")
    raw = pj.read_json(path)
    n = raw.num_rows
    table = pa.table(
        {
            "id": raw.column("id"), "source": pa.array(["bench"] * n), "category": pa.array(["mixed"] * n),
            "text": raw.column("text"), "meta": pa.nulls(n, pa.string()),
            "file_index": pa.array([index] * n, pa.int32()), "row_index": pa.array(range(n), pa.int64()),
        }
    )
    ledger = Ledger()
    kept = QualityFilter(spec)(table, ledger)
    pq.write_table(kept, out)
    return ledger.to_dict(), _ipc_bytes(signatures(kept, spec))


def _map_apply(args: tuple[str, bytes, str]) -> tuple[list[str], dict]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from zaya_data.clean import apply_drop_list
    from zaya_data.ledger import Ledger

    path, drops_ipc, out = args
    drops = pa.ipc.open_stream(drops_ipc).read_all()
    ledger = Ledger()
    kept = apply_drop_list(pq.read_table(path), drops, ledger)
    pq.write_table(kept, out)
    return kept.column("id").to_pylist(), ledger.to_dict()


def run_zaya(shards: list[Path], work: Path, workers: int) -> dict:
    import pyarrow as pa

    from zaya_data.clean import parse_clean, resolve_duplicates
    from zaya_data.ledger import Ledger

    work.mkdir(parents=True)
    spec = parse_clean(CLEAN, "bench")
    ledger = Ledger()
    t0 = time.perf_counter()
    with ProcessPoolExecutor(workers) as pool:
        filtered = [str(work / f"filtered_{i}.parquet") for i in range(len(shards))]
        res = list(pool.map(_map_filter, [(str(p), i, f) for i, (p, f) in enumerate(zip(shards, filtered))]))
        t1 = time.perf_counter()
        sigs = [pa.ipc.open_stream(b).read_all() for _, b in res]
        for led, _ in res:
            ledger.merge(Ledger.from_dict(led))
        blob = _ipc_bytes(resolve_duplicates(sigs, spec))
        outs = list(pool.map(_map_apply, [(f, blob, str(work / f"out_{i}.parquet")) for i, f in enumerate(filtered)]))
    t2 = time.perf_counter()
    for _, led in outs:
        ledger.merge(Ledger.from_dict(led))
    return {
        "wall": t2 - t0, "filter_s": t1 - t0, "dedup_s": t2 - t1,
        "after_filters": sum(s.num_rows for s in sigs), "kept": sum(len(ids) for ids, _ in outs),
        "ids": {i for ids, _ in outs for i in ids},
        "exact": ledger.total(stage="dedup") - sum(n for (st, r, _), n in ledger.counts.items() if r == "near_duplicate"),
        "near": sum(n for (st, r, _), n in ledger.counts.items() if r == "near_duplicate"),
    }


# ---------------------------------------------------------------------------------------
# near-dedup scaling: signatures + bucket resolution only, over a process pool

_SCALE_SPEC: Any = None  # the parsed CLEAN spec, made before the pools fork (see run_scaling)
SCALE_CHUNKS = 64  # the same for every pool size of a run, so each does exactly the same work (--chunks)
SCALE_PARTITIONS = 64
CHUNK_LAYOUTS = ("decreasing", "equal")


def _chunk_sizes(n: int, chunks: int, layout: str) -> list[int]:
    """Documents per map task. `equal`: n / chunks each. `decreasing`: sizes falling
    linearly from ~1.6x to ~0.3x of the mean, so that the pool's last wave is of short
    tasks and the processes finish close together (guided scheduling: with equal tasks a
    process that takes the last one still runs a whole task while the others idle). On 16
    cores at scale 128 the map's busy share went from 88-92% (equal) to 97-99% (decreasing;
    results/clean-2026-12-07.md, run 11). The same sizes for every pool size of a run."""
    if layout not in CHUNK_LAYOUTS:
        raise ValueError(f"unknown chunk layout {layout!r} ({', '.join(CHUNK_LAYOUTS)})")
    if not 0 < chunks <= n:
        raise ValueError(f"{chunks} map tasks for {n} documents: give --chunks between 1 and {n}")
    weights = [1.0] * chunks if layout == "equal" else [chunks - c + chunks / 4 for c in range(chunks)]
    total, rest = sum(weights), n - chunks  # one document each, the rest by weight: no empty task
    bounds = [round(rest * sum(weights[:c]) / total) for c in range(chunks + 1)]
    return [1 + bounds[c + 1] - bounds[c] for c in range(chunks)]


def _write_scale_chunks(docs: list[str], folder: Path, layout: str = "decreasing") -> None:
    """The corpus as SCALE_CHUNKS Arrow files of input records, read by the map tasks as a
    build's workers read their shards, of `_chunk_sizes(layout)` documents each. Each
    chunk takes its documents from a fixed shuffle of the corpus (kept in corpus order
    within the chunk), not a contiguous run: the corpus is its sources one after another,
    so contiguous chunks would differ several-fold in cost per document. Ids are the
    documents' corpus positions, whatever the layout. (The tasks once sliced a list of
    texts inherited from the forked driver: every slice touched the refcounts of its
    strings, so each process copied the pages it read, a cost that grew with the number
    of processes.)"""
    import numpy as np
    import pyarrow as pa

    folder.mkdir(parents=True)
    n = len(docs)
    shuffled = np.random.default_rng(0).permutation(n)
    lo = 0
    for chunk, size in enumerate(_chunk_sizes(n, SCALE_CHUNKS, layout)):
        rows = np.sort(shuffled[lo : lo + size])
        lo += size
        _write_arrow(str(folder / f"input-{chunk:03d}.arrow"), pa.table({
            "id": [f"d{i:08d}" for i in rows], "source": pa.array(["bench"] * size),
            "category": pa.array(["mixed"] * size), "text": [docs[i] for i in rows],
            "meta": pa.nulls(size, pa.string()),
            "file_index": pa.array([chunk] * size, pa.int32()), "row_index": pa.array(range(size), pa.int64()),
        }))


def _usage() -> tuple[float, float, int]:
    """This process's CPU seconds, kernel-mode seconds and minor page faults so far."""
    import resource

    r = resource.getrusage(resource.RUSAGE_SELF)
    return time.process_time(), r.ru_stime, r.ru_minflt


def _usage_parts(t0: float, start: tuple[float, float, int]) -> dict[str, float]:
    """A task's wall and CPU time, the kernel's part of that CPU time and its minor page
    faults (thousands), since `t0` and `start` (`_usage()`): CPU time below wall time means
    the task waited for a CPU; kernel time and faults that grow with the number of
    processes are work each process does for itself (processes forked from the driver
    copied each inherited page they wrote: results/clean-2026-12-07.md, runs 12-15)."""
    cpu, sys_s, faults = _usage()
    return {"task wall time": time.perf_counter() - t0, "task CPU time": cpu - start[0],
            "task kernel time": sys_s - start[1], "minor page faults (thousands)": (faults - start[2]) / 1e3}


def _scale_map(args: tuple[int, str, str]) -> tuple[int, int, dict[str, float]]:
    """Chunk -> signatures -> bucket keys (locations in block `chunk`), written as ONE file
    per chunk holding one record batch per hash partition (a sort-based shuffle file: the
    reducer of partition p reads batch p of every chunk's file), and the chunk's
    signatures (key + MinHash) as one file, which the reducers and the driver memory-map
    and read at the locations they need. Returns the chunk's documents, the bytes of its
    bucket rows and the seconds of its parts (reading the chunk, `signatures`' phases, then
    the writes and the bucket keys) with the task's wall, CPU and kernel time and page
    faults (`_usage_parts`): a task whose CPU time is its wall time ran on a CPU all along,
    so a slowdown under load is in the work per cycle (caches, memory, clock, the kernel's
    page faults), not in waiting for a CPU. (A file
    per chunk and partition, 4,096 creates in one folder per run, serialized the 16-process
    map on the folder's lock.)"""
    t0, start = time.perf_counter(), _usage()
    import numpy as np
    import pyarrow as pa

    from zaya_data.clean import signatures
    from zaya_data.clean.dedup import SIGNATURE_ROWS, bucket_keys, partition_of

    chunk, inputs, work = args
    spec = _SCALE_SPEC
    table = pa.ipc.open_file(pa.memory_map(f"{inputs}/input-{chunk:03d}.arrow")).read_all()
    m = table.num_rows
    parts = {"read": time.perf_counter() - t0}
    sig = signatures(table, spec, timings=parts)
    t1 = time.perf_counter()
    _write_arrow(f"{work}/sigs-{chunk:03d}.arrow", sig.select(SIGNATURE_ROWS))
    t2 = time.perf_counter()
    keys = bucket_keys(sig, spec, chunk)
    part = partition_of(keys, SCALE_PARTITIONS).to_numpy()
    order = np.argsort(part, kind="stable")
    bounds = np.searchsorted(part[order], np.arange(SCALE_PARTITIONS + 1))
    ordered = keys.take(pa.array(order))
    with pa.OSFile(f"{work}/keys-{chunk:03d}.arrow", "wb") as f, pa.ipc.new_file(f, keys.schema) as w:
        for p in range(SCALE_PARTITIONS):
            w.write_batch(ordered.slice(bounds[p], bounds[p + 1] - bounds[p]).combine_chunks().to_batches()[0]
                          if bounds[p + 1] > bounds[p] else pa.RecordBatch.from_pylist([], schema=keys.schema))
    t3 = time.perf_counter()
    parts.update({"write sigs": t2 - t1, "keys+shuffle write": t3 - t2, **_usage_parts(t0, start)})
    return m, keys.nbytes, parts


def _write_arrow(path: str, table: Any) -> None:
    import pyarrow as pa

    with pa.OSFile(path, "wb") as f, pa.ipc.new_file(f, table.schema) as w:
        w.write_table(table)


def _ipc_bytes(table: Any) -> bytes:
    import pyarrow as pa

    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as w:
        w.write_table(table)
    return sink.getvalue().to_pybytes()


def _calibration_task(_: int) -> float:
    """A fixed, trivially parallel CPU task (hashing and a Python loop, in cache): how well
    the machine itself scales over k busy cores (clock boost, shared caches), the ceiling
    for any CPU-bound pipeline on it. The `hash` task of cpu_probe.py, shorter."""
    from cpu_probe import task_hash  # beside this script

    t0 = time.perf_counter()
    task_hash(300_000)
    return time.perf_counter() - t0


_OPEN_BLOCKS: dict[str, Any] = {}  # in a pool process: the signature files it has mapped


def _signature_block(work: str, opened: dict[str, Any]) -> Any:
    """Block c of the locations: chunk c's signature file, memory-mapped (no copy; a
    reader touches only the pages of the rows it gathers), mapped once per `opened`: a
    pool process keeps its files for the run's later partitions (as a Ray worker's object
    store keeps its blocks mapped; opening 64 files in each of 64 reducers cost more than
    their reads), the driver maps each once per resolution."""
    import pyarrow as pa

    def block(c: int) -> Any:
        path = f"{work}/sigs-{c:03d}.arrow"
        if path not in opened:
            opened[path] = pa.ipc.open_file(pa.memory_map(path)).read_all()
        return opened[path]

    return block


_OPEN_SHUFFLE: dict[str, Any] = {}  # in a pool process: the shuffle files it has opened


def _shuffle_file(path: str) -> Any:
    """A map task's shuffle file, opened (memory-mapped, footer read) once per pool process
    for the run's later partitions, as `_signature_block` keeps the signature files."""
    import pyarrow as pa

    if path not in _OPEN_SHUFFLE:
        _OPEN_SHUFFLE[path] = pa.ipc.open_file(pa.memory_map(path))
    return _OPEN_SHUFFLE[path]


def _scale_reduce(args: tuple[int, str]) -> tuple[bytes, dict[str, int], dict[str, float]]:
    """All bucket rows of one hash partition -> its exact links and the near candidates
    that pass the threshold, verified here against the MinHash rows of the partition's
    candidate records (Arrow IPC bytes, LINK_SCHEMA: locations), the verification's
    counts, and the seconds of the task's parts (reading its batch of every shuffle file,
    `bucket_links` with the signature reads, writing the links) with its wall, CPU and kernel
    time and page faults (`_usage_parts`)."""
    t0, start = time.perf_counter(), _usage()
    import pyarrow as pa

    from zaya_data.clean.dedup import bucket_links

    p, work = args
    tables = [pa.Table.from_batches([_shuffle_file(f"{work}/keys-{c:03d}.arrow").get_batch(p)])
              for c in range(SCALE_CHUNKS)]
    rows = pa.concat_tables(tables)
    t1 = time.perf_counter()
    stats: dict[str, int] = {}
    links = bucket_links(rows, _signature_block(work, _OPEN_BLOCKS), _THRESHOLD, stats=stats)
    t2 = time.perf_counter()
    out = _ipc_bytes(links)
    t3 = time.perf_counter()
    parts = {"shuffle read": t1 - t0, "bucket links + verification": t2 - t1, "links write": t3 - t2,
             **_usage_parts(t0, start)}
    return out, stats, parts


_THRESHOLD = CLEAN["near_dedup"].get("threshold", 0.8)


def _scale_keys(args: tuple[int, Any, str]) -> bytes:
    """The keys of rows `rows` of signature block `c` (Arrow IPC bytes), gathered in a pool
    process that keeps the block mapped, as a build's Ray path gathers them with one task
    per block where the block is (`dedup_ray._keys_at_blocks`)."""
    from zaya_data.clean.dedup import block_keys

    c, rows, work = args
    return _ipc_bytes(block_keys(_signature_block(work, _OPEN_BLOCKS)(c), rows))


def _scale_resolve(reduced: list[tuple[bytes, dict[str, int], dict[str, float]]], work: Path,
                   pool: ProcessPoolExecutor) -> tuple[Any, dict[str, float]]:
    """The driver's part: gather the partitions' verified links, have the pool read the
    linked records' keys from the signature files (a task per block), union-find
    (`resolve_links`, as a build runs it). Returns the drop list and the verification's
    counts (summed over the partitions) with the driver's seconds (the key reads
    included: the driver waits for them)."""
    import pyarrow as pa

    from zaya_data.clean.dedup import KEY_SCHEMA, block_rows, resolve_links

    def keys_of(locations: Any) -> Any:
        tasks = [(c, rows, str(work)) for c, rows in block_rows(locations)]
        parts = [pa.ipc.open_stream(b).read_all() for b in pool.map(_scale_keys, tasks)]
        return pa.concat_tables(parts) if parts else KEY_SCHEMA.empty_table()

    t0 = time.perf_counter()
    links = [pa.ipc.open_stream(b).read_all() for b, _, _ in reduced]
    stats: dict[str, float] = {}
    drops = resolve_links(links, keys_of, stats)
    stats["driver_s"] = time.perf_counter() - t0
    for _, part, _ in reduced:
        for name, v in part.items():
            stats[name] = stats.get(name, 0) + v
    return drops, stats


_POOL_BARRIER: Any = None  # in a pool process: the barrier of `_pool_ready`
ALLOCATORS = ("default", "retain")


def _retain_freed_memory() -> None:
    """Keep freed memory in the process for the next task instead of returning it to the
    kernel: Arrow allocates through glibc's malloc (not its bundled mimalloc, which returns
    freed pages after a short delay and has no runtime switch), and glibc neither serves large
    blocks by mmap nor trims the heap's top. Returned, the arrays a map task frees are
    faulted in again by the next one, 4 KiB at a time: at scale 128 on one core (2-CPU
    dev VM) 269K minor faults (1.1 GB, twice the text) and 8% of the map's time in the
    kernel; kept, 60K faults (a process's first tasks) for 16 of the 64 chunks. On 16-core
    hosts it was no better than the default (run 13), so it is an option, not the default."""
    import ctypes

    import pyarrow as pa

    libc = ctypes.CDLL("libc.so.6")
    m_trim_threshold, m_mmap_threshold = -1, -3  # malloc.h
    # the largest mmap threshold glibc accepts depends on its version: 32 MiB always works
    if not (libc.mallopt(m_mmap_threshold, 256 << 20) or libc.mallopt(m_mmap_threshold, 32 << 20)):
        raise RuntimeError("mallopt(M_MMAP_THRESHOLD) refused")
    if not libc.mallopt(m_trim_threshold, 2**31 - 1):
        raise RuntimeError("mallopt(M_TRIM_THRESHOLD) refused")
    pa.set_memory_pool(pa.system_memory_pool())


_WARM_UP: Any = None  # the first WARM_UP_DOCS records of the corpus (a forkserver worker gets them in `state`)
WARM_UP_DOCS = 256


def _warm_up() -> None:
    """The dedup path once over a few records, in a new pool process before it takes a
    task: signatures, bucket keys, partitioning, links and verification. What a fresh
    process pays once, whatever the corpus: the first touch of the libraries' code and of
    the pages it inherited (copy on write), and first-call set-up. Measured
    on a 2-CPU dev VM at scale 128: 0.27 s and 15K page faults; without it a process's
    first map task took 1.18-1.34 s against ~0.82 s for its next one of the same size, so
    on 16 cores, 16 processes paid it inside a ~3.5 s map, and on one core one process
    inside ~45 s. A build's long-lived Ray workers pay it once, before their first
    stage, not per stage. Its time is in the "pool start" column."""
    from zaya_data.clean import signatures
    from zaya_data.clean.dedup import bucket_keys, bucket_links, partition_of

    sig = signatures(_WARM_UP, _SCALE_SPEC)
    keys = bucket_keys(sig, _SCALE_SPEC, 0)
    partition_of(keys, SCALE_PARTITIONS)
    bucket_links(keys, lambda _: sig, _THRESHOLD)


def _init_worker(counter: Any, barrier: Any, size: int, allocator: str, state: tuple[int, bytes]) -> None:
    """A new pool process: given the run's `state` (its chunk count and warm-up records as
    Arrow IPC, which a process not forked from the driver does not inherit; the spec is
    parsed unless inherited), set to `allocator`, warmed up (`_warm_up`), single-threaded
    and, in a pool smaller than the machine, on a core of its own: a k-process run uses k
    cores and no more (Arrow's thread pool would otherwise let the 1-core baseline use
    several). A pool as large as the machine is left to the scheduler: pinning it confines
    it no further, and only keeps a process on a CPU that something else (the driver's
    threads, the machine's daemons) is using."""
    import pyarrow as pa

    from zaya_data.clean import parse_clean

    global _POOL_BARRIER, SCALE_CHUNKS, _SCALE_SPEC, _WARM_UP
    _POOL_BARRIER = barrier
    SCALE_CHUNKS, _WARM_UP = state[0], pa.ipc.open_stream(state[1]).read_all()
    _SCALE_SPEC = _SCALE_SPEC or parse_clean(CLEAN, "bench")
    with counter.get_lock():
        index = counter.value
        counter.value += 1
    cpus = sorted(os.sched_getaffinity(0))
    if size < len(cpus):
        os.sched_setaffinity(0, {cpus[index % len(cpus)]})
    pa.set_cpu_count(1)
    pa.set_io_thread_count(1)
    if allocator == "retain":
        _retain_freed_memory()
    _warm_up()


def _stolen_s() -> float | None:
    """Seconds the hypervisor has kept this machine's CPUs from running it (the `steal`
    column of /proc/stat's cpu line, summed over the CPUs), or None where there is no
    /proc/stat. On a virtual machine, time stolen during a round is time its processes
    were runnable and did not run: a slowdown that no code of ours causes."""
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()
        return int(fields[8]) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def _ready(_: int) -> None:
    _POOL_BARRIER.wait()


def _pool_ready(pool: ProcessPoolExecutor, k: int) -> None:
    """Returns once all k processes of `pool` have started (each one blocks at the barrier
    until the k-th arrives, so each takes exactly one of the k tasks)."""
    list(pool.map(_ready, range(k)))


def _scaling_once(k: int, ctx: Any, inputs: Path, work: Path, allocator: str,
                  state: tuple[int, bytes]) -> dict[str, Any]:
    """One near-dedup run on a pool of k processes: its timings, the map tasks' parts and
    the drop list."""
    work.mkdir(parents=True)
    p0 = time.perf_counter()
    with ProcessPoolExecutor(k, mp_context=ctx, initializer=_init_worker,
                             initargs=(ctx.Value("i", 0), ctx.Barrier(k), k, allocator, state)) as pool:
        # Timed from a running pool, as a build's Ray workers are up before its stages
        # run (the pool's start is its own column): the k processes start one after
        # another, each warming up (`_warm_up`), and the last ones would start a task late.
        _pool_ready(pool, k)
        s0 = _stolen_s()
        t0 = time.perf_counter()
        done = list(pool.map(_scale_map, [(c, str(inputs), str(work)) for c in range(SCALE_CHUNKS)]))
        t1 = time.perf_counter()
        reduced = list(pool.map(_scale_reduce, [(p, str(work)) for p in range(SCALE_PARTITIONS)]))
        drops, moved = _scale_resolve(reduced, work, pool)
        wall = time.perf_counter() - t0
        s1 = _stolen_s()
        # the machine's own scaling, measured on the same pool right after
        c0 = time.perf_counter()
        list(pool.map(_calibration_task, range(4 * k)))
        calib = (time.perf_counter() - c0) / 4  # 4 tasks per process: seconds per round of k tasks
    shutil.rmtree(work, ignore_errors=True)
    return {
        "wall": wall, "map": t1 - t0, "driver": moved.pop("driver_s"), "moved": moved, "drops": drops,
        "docs": sum(m for m, _, _ in done), "task_s": sum(p["task wall time"] for *_, p in done),
        "bucket_bytes": sum(b for _, b, _ in done), "pool_start": t0 - p0, "calib": calib,
        "steal": None if s0 is None or s1 is None else (s1 - s0) / ((os.cpu_count() or 1) * wall),
        "parts": {name: sum(p[name] for *_, p in done) for name in done[0][2]},
        "reduce_parts": {name: sum(p[name] for *_, p in reduced) for name in reduced[0][2]},
    }


START_METHODS = ("forkserver", "fork")


def _pool_context(start: str) -> Any:
    """The pools' multiprocessing context. `forkserver` (the default): the pool processes
    fork from a small server process that has imported the dedup modules, not from the
    driver, which by then holds the corpus it built and hundreds of MB it freed. A
    process forked from the driver shares all of that copy-on-write: each page of
    inherited heap the process writes (its allocations land in the driver's freed space)
    is copied at a fault, and while the pool lives so is each page the driver writes (its
    resolution took 0.20-0.27 s on 16-core hosts, 0.11-0.17 s with this server). On 16
    cores the map tasks took 1.18-1.56x their 1-core time forked from the driver, 1.01x
    from this server on quiet rounds (results/clean-2026-12-07.md, runs 12-15). A build's
    Ray workers are processes of their own, as these are. The server imports datatrove's
    filters too, which `parse_clean` in each worker needs (2-CPU dev VM: a pool's start
    0.63-0.90 s -> 0.28-0.33 s). `fork`: the runs before 2026-12-07 06:00."""
    import multiprocessing as mp

    if start not in START_METHODS:
        raise ValueError(f"unknown start method {start!r} ({', '.join(START_METHODS)})")
    ctx = mp.get_context(start)
    if start == "forkserver":
        ctx.set_forkserver_preload(["numpy", "pyarrow", "xxhash", "datatrove.pipeline.filters", "zaya_data.clean",
                                    "zaya_data.clean.dedup", "zaya_data.clean.quality"])
    return ctx


def run_scaling(cores: list[int], scale: int, root: Path, corpus: str = "repeated", repeat: int = 1,
                chunks: int = 64, layout: str = "decreasing", allocator: str = "default",
                start: str = "forkserver") -> None:
    import pyarrow as pa

    import zaya_data.clean.dedup  # noqa: F401  (imported before the pools fork, not inside the first timed run)

    from zaya_data.clean import parse_clean

    global _SCALE_SPEC, SCALE_CHUNKS, _WARM_UP
    SCALE_CHUNKS = chunks  # set before the pools start: their tasks read it
    # Parsed here, inherited by forked workers, parsed again by each forkserver worker as it
    # starts (`_init_worker`): parsing imports datatrove's filters (0.45 s), which every pool
    # process would otherwise pay in its first task, 16 at once on 16 cores: start-up, not
    # dedup work (a build's Ray workers import once and stay).
    _SCALE_SPEC = parse_clean(CLEAN, "bench")
    ctx = _pool_context(start)
    docs = corpus_docs(scale, corpus)
    n, mb = len(docs), sum(len(t.encode()) for t in docs) / 1e6
    inputs = root / "inputs"
    _write_scale_chunks(docs, inputs, layout)
    _WARM_UP = pa.ipc.open_file(pa.memory_map(str(inputs / "input-000.arrow"))).read_all().slice(0, WARM_UP_DOCS)
    state = (SCALE_CHUNKS, _ipc_bytes(_WARM_UP))  # what a worker not forked from here needs
    del docs
    ncpu = os.cpu_count() or 1
    run = [k for k in cores if k <= ncpu]
    skipped = [k for k in cores if k > ncpu]
    print(f"# near-dedup scaling: {corpus} corpus, {n} docs, {mb:.1f} MB text, {SCALE_CHUNKS} {layout} chunks, "
          f"{SCALE_PARTITIONS} partitions, {allocator} allocator, {start} pools, {ncpu} CPUs, "
          f"python {platform.python_version()}, "
          f"load average {os.getloadavg()[0]:.2f}" + (f", {repeat} rounds" if repeat > 1 else ""))
    if skipped:
        print(f"# skipped core counts {skipped}: this machine has {ncpu} CPUs")
    print("| cores | wall s | signatures s | resolve s | driver s | docs/s | MB/s | speedup | efficiency "
          "| map task s (sum) | map busy | pool start s | efficiency with start | machine efficiency "
          "| CPU time stolen | drops |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    first: dict[str, Any] | None = None  # the first run: the reference of speedup, slowdowns, drops
    last: dict[str, Any] = {}
    walls: dict[int, list[float]] = {k: [] for k in run}
    parts_by_k: dict[int, dict[str, float]] = {}  # the map tasks' parts of each k's first round
    reduce_parts_by_k: dict[int, dict[str, float]] = {}  # and the reduce tasks'
    # Rounds of every core count in turn, so a change in the machine's load reaches all of them.
    for rnd in range(repeat):
        for k in run:
            r = _scaling_once(k, ctx, inputs, root / f"scale-{k}-{rnd}", allocator, state)
            assert r["docs"] == n
            first = r | {"k": k} if first is None else first
            walls[k].append(r["wall"])
            parts_by_k.setdefault(k, r["parts"])
            reduce_parts_by_k.setdefault(k, r["reduce_parts"])
            ref = first["wall"] * first["k"]
            ref_started = (first["wall"] + first["pool_start"]) * first["k"]
            wall, task_s = r["wall"], r["task_s"]
            same = r["drops"].equals(first["drops"])
            print(f"| {k} | {wall:.2f} | {r['map']:.2f} | {wall - r['map']:.2f} | {r['driver']:.2f} | {n / wall:.0f} | "
                  f"{mb / wall:.2f} | {ref / wall:.2f}x | {ref / (k * wall):.0%} | "
                  f"{task_s:.1f} ({task_s / first['task_s']:.2f}x) | {task_s / (k * r['map']):.0%} | "
                  f"{r['pool_start']:.2f} | {ref_started / (k * (wall + r['pool_start'])):.0%} | "
                  f"{first['calib'] / r['calib']:.0%} | "
                  f"{'n/a' if r['steal'] is None else format(r['steal'], '.1%')} | "
                  f"{r['drops'].num_rows}{'' if same else ' (DIFFERS from the first run!)'} |")
            sys.stdout.flush()
            last = r
    if run:
        print(f"# bucket rows {last['bucket_bytes'] / n:.0f} bytes per document; verification: "
              + ", ".join(f"{name} {v:g}" for name, v in last["moved"].items()))
        print(f"# drop list sha256 {hashlib.sha256(_ipc_bytes(first['drops'].combine_chunks())).hexdigest()} "
              "(Arrow IPC stream of the combined table: compare across versions)")
        if repeat > 1:
            _print_rounds(walls)
        _print_parts("map", parts_by_k)
        _print_parts("reduce", reduce_parts_by_k)


def _print_rounds(walls: dict[int, list[float]]) -> None:
    """Per core count over the rounds: the least disturbed (best) and the median wall, and
    the efficiency of each against the first core count's same statistic."""
    import statistics

    k0 = next(iter(walls))
    best0, med0 = min(walls[k0]) * k0, statistics.median(walls[k0]) * k0
    print(f"\n# over the rounds: efficiency of the best wall against the best at {k0} core(s), "
          "and of the median against the median")
    print("| cores | walls s | best s | efficiency (best) | median s | efficiency (median) |")
    print("|---|---|---|---|---|---|")
    for k, w in walls.items():
        best, med = min(w), statistics.median(w)
        print(f"| {k} | {', '.join(f'{x:.2f}' for x in w)} | {best:.2f} | {best0 / (k * best):.0%} | "
              f"{med:.2f} | {med0 / (k * med):.0%} |")


def _print_parts(phase: str, parts_by_k: dict[int, dict[str, float]]) -> None:
    """Which part of the map or reduce slows when k tasks run at once: each part's seconds
    summed over the tasks, and its slowdown against the first core count."""
    first = next(iter(parts_by_k))
    names = list(parts_by_k[first])
    print(f"\n# {phase} task parts, seconds summed over the tasks (slowdown against {first} core{'s' if first > 1 else ''})")
    print("| part | " + " | ".join(f"{k} cores" for k in parts_by_k) + " |")
    print("|---|" + "---|" * len(parts_by_k))
    for name in names:
        base = parts_by_k[first][name]
        cells = [f"{p[name]:.2f} ({p[name] / base:.2f}x)" if base > 0 else f"{p[name]:.2f}" for p in parts_by_k.values()]
        print(f"| {name} | " + " | ".join(cells) + " |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workers", type=int, default=2, help="worker processes on both sides (default 2)")
    ap.add_argument("--scale", type=int, default=1, help="corpus copies, each with fresh edits (default 1)")
    ap.add_argument("--repeat", type=int, default=None,
                    help="comparison: runs per engine, alternating, best wall counts (default 2); scaling: "
                         "rounds over the core counts, best and median reported (default 1)")
    ap.add_argument("--keep-dir", type=Path, default=None, help="keep inputs and outputs here")
    ap.add_argument("--scaling", metavar="K,K,...", help="near-dedup scaling mode: comma-separated core counts "
                                                          "(start with 1: efficiency is against the first)")
    ap.add_argument("--chunks", type=int, default=64,
                    help="scaling mode's map tasks, i.e. input files (default 64): more shorten the last wave")
    ap.add_argument("--chunk-layout", choices=CHUNK_LAYOUTS, default="decreasing",
                    help="scaling mode's map task sizes: decreasing (default; the last wave is of short "
                         "tasks) or equal (the layout of runs before 2026-12-07 03:40)")
    ap.add_argument("--corpus", choices=("repeated", "distinct"), default="repeated",
                    help="scaling mode's corpus: repeated = every document with ~scale near copies (worst "
                         "case), distinct = distinct documents with 15%% copies, ~13%% dropped (see corpus_docs)")
    ap.add_argument("--start", choices=START_METHODS, default="forkserver",
                    help="scaling mode's pool processes fork from: forkserver (default; a server with the "
                         "modules imported) or fork (the driver itself: the runs before 2026-12-07 06:00)")
    ap.add_argument("--allocator", choices=ALLOCATORS, default="default",
                    help="scaling mode's pool processes: default (Arrow's mimalloc, glibc's defaults) or retain "
                         "(freed memory kept for the next task: _retain_freed_memory)")
    args = ap.parse_args()
    if not (DATA / "qwen25-math-eval").is_dir():
        sys.exit(f"no shared data at {DATA}: set ZAYA_SHARED_DATA to a copy of it")
    root = Path(tempfile.mkdtemp(prefix="bench_clean_")) if args.keep_dir is None else args.keep_dir
    try:
        if args.scaling:
            run_scaling([int(k) for k in args.scaling.split(",")], args.scale, root, args.corpus,
                        args.repeat or 1, args.chunks, args.chunk_layout, args.allocator, args.start)
            return
        args.repeat = args.repeat or 2
        run_comparison(args, root)
    finally:
        if args.keep_dir is None:
            shutil.rmtree(root, ignore_errors=True)


def run_comparison(args: argparse.Namespace, root: Path) -> None:
    import logging

    shards, n_docs, n_bytes = build_corpus(root / "input", args.workers, args.scale)
    mb = n_bytes / 1e6
    print(f"# bench_clean: {n_docs} docs, {mb:.1f} MB text, {args.workers} workers, "
          f"{os.cpu_count()} CPUs, python {platform.python_version()}, best of {args.repeat}, "
          f"load average {os.getloadavg()[0]:.2f} (the machine may be shared: compare with the CPUs)")
    from loguru import logger  # datatrove logs every step at INFO; keep the report readable

    logger.remove()
    logger.add(sys.stderr, level="WARNING")
    logging.getLogger("datatrove").setLevel(logging.WARNING)
    runs: dict[str, list[dict]] = {"datatrove": [], "zaya": []}
    for i in range(args.repeat):
        order = ("zaya", "datatrove") if i % 2 == 0 else ("datatrove", "zaya")
        for eng in order:
            work = root / f"{eng}-{i}"
            r = run_zaya(shards, work, args.workers) if eng == "zaya" else run_datatrove(root / "input", work, args.workers)
            runs[eng].append(r)
            print(f"#   run {i + 1} {eng}: {r['wall']:.1f} s", flush=True)
            shutil.rmtree(work, ignore_errors=True)
    print(f"# load average after the runs: {os.getloadavg()[0]:.2f}")
    dt = min(runs["datatrove"], key=lambda r: r["wall"])
    zaya = min(runs["zaya"], key=lambda r: r["wall"])
    print("| engine | wall s | stage 1: filters + signatures s | dedup s | after filters | kept | docs/s | MB/s |")
    print("|---|---|---|---|---|---|---|---|")
    for name, r in (("datatrove 0.10.1", dt), ("zaya-data", zaya)):
        print(f"| {name} | {r['wall']:.1f} | {r['filter_s']:.1f} | {r['dedup_s']:.1f} | {r['after_filters']} | "
              f"{r['kept']} | {n_docs / r['wall']:.0f} | {mb / r['wall']:.2f} |")
    same_filters = dt["after_filters"] == zaya["after_filters"]
    both = len(dt["ids"] & zaya["ids"])
    print(f"\nafter the filters: datatrove {dt['after_filters']}, zaya-data {zaya['after_filters']} "
          f"({'the same' if same_filters else 'DIFFERENT: the filters did not do the same work'})")
    print(f"dedup drops: zaya-data exact {zaya['exact']} + near {zaya['near']} = {zaya['exact'] + zaya['near']}; "
          f"datatrove MinHash {dt['after_filters'] - dt['kept']}")
    print(f"kept by both {both}, only by zaya-data {len(zaya['ids'] - dt['ids'])}, "
          f"only by datatrove {len(dt['ids'] - zaya['ids'])}")
    print(f"throughput ratio zaya-data / datatrove: {dt['wall'] / zaya['wall']:.2f}x "
          f"(stage 1 {dt['filter_s'] / zaya['filter_s']:.2f}x, dedup {dt['dedup_s'] / zaya['dedup_s']:.2f}x)")
    sys.stdout.flush()
    if not same_filters:
        sys.exit(1)


if __name__ == "__main__":
    main()
