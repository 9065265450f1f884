"""A worker's memory is bounded by its job, not by the corpus: the shard writer takes its
rows from a part without copying the part, and a long-lived clean worker keeps nothing of
a finished job (its decontamination matches go out in the job's record)."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from zaya_data.tasks import read_part, take_part_rows

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

SCHEMA = pa.schema([pa.field("id", pa.string()), pa.field("input_ids", pa.list_(pa.int32()))])
BATCHES, ROWS, TOKENS = 40, 64, 512  # a part of 40 record batches, as a tokenize job writes


def _part(path: Path) -> Path:
    rng = np.random.default_rng(0)
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, SCHEMA) as w:
        for b in range(BATCHES):
            ids = rng.integers(0, 50_000, size=ROWS * TOKENS, dtype=np.int32)
            offsets = pa.array(np.arange(ROWS + 1, dtype=np.int32) * TOKENS)
            w.write_batch(pa.record_batch([pa.array([f"r{b}-{i}" for i in range(ROWS)]),
                                           pa.ListArray.from_arrays(offsets, pa.array(ids))], schema=SCHEMA))
    return path


def test_take_part_rows_is_table_take(tmp_path: Path) -> None:
    part = _part(tmp_path / "part.arrow")
    n = BATCHES * ROWS
    rows = np.array([0, 1, ROWS - 1, ROWS, 5 * ROWS + 3, n - 2, n - 1])
    got = take_part_rows(str(part), rows)
    assert got.equals(read_part(str(part)).take(pa.array(rows)))
    assert take_part_rows(str(part), np.empty(0, np.int64)).equals(SCHEMA.empty_table())
    with pytest.raises(IndexError, match="past its"):
        take_part_rows(str(part), np.array([n]))


def test_take_part_rows_allocates_the_rows_taken_not_the_part(tmp_path: Path) -> None:
    part = _part(tmp_path / "part.arrow")
    pool = pa.proxy_memory_pool(pa.default_memory_pool())  # its own high-water mark
    rows = np.arange(0, BATCHES * ROWS, ROWS * 4)  # one row in every 4th batch: 10 rows
    got = take_part_rows(str(part), rows, memory_pool=pool)
    assert got.num_rows == len(rows)
    part_bytes = BATCHES * ROWS * TOKENS * 4
    # 10 rows of 512 tokens are 20 KB; a take over the whole part (Arrow concatenates its
    # chunks first) would allocate all of its 5 MB.
    peak = pool.max_memory()
    del got  # before the pool it was allocated from
    assert peak < 64 * ROWS * 4 + len(rows) * TOKENS * 4 * 4 < part_bytes // 10


MIX = """\
name: mem
seed: 1
clean:
  decontaminate:
    benchmarks:
      - {{name: aime24, path: {data}/limo-eval/aime.jsonl}}
sources:
  docs: {{path: "{corpus}/*.jsonl", format: jsonl, category: web}}
phases:
  p:
    context: 1024
    token_budget: 1M
    weights: {{docs: 1}}
    allow_shortfall: true
"""


def test_clean_worker_keeps_nothing_of_finished_jobs(tmp_path: Path) -> None:
    from zaya_data import pipeline
    from zaya_data.clean.build import CleanTokenizeWorker, phase_clean_specs
    from zaya_data.config import load_mixture

    problems = [json.loads(line)["problem"] for line in (DATA / "limo-eval" / "aime.jsonl").open()]
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for f in range(6):  # each file holds one benchmark problem among clean documents
        docs = [f"File {f}, note {i}: the weather was mild and the market was open." for i in range(20)]
        docs.insert(7, f"Worked problem. {problems[f]}")
        (corpus / f"f{f}.jsonl").write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    (tmp_path / "mix.yaml").write_text(MIX.format(data=DATA, corpus=corpus))
    mix = load_mixture(str(tmp_path / "mix.yaml"))
    phase = mix.phases["p"]
    units = pipeline._units(mix, ["docs"])
    # one job per file, as a large corpus gives one job per 64 MB: a worker runs many
    jobs = [j for u in units for j in pipeline.group_jobs(mix, [u], tmp_path / "work")]
    assert len(jobs) == 6
    w = CleanTokenizeWorker(tokenizer=mix.tokenizer.path, template=asdict(phase.template), context=phase.context,
                            loss=phase.loss, trim_window=phase.trim_window, strict=False,
                            clean=phase_clean_specs(phase, ["docs"]), mode="single")
    for job in jobs:
        record = w.run(job)
        assert [m["row_index"] for m in record["decontam_matches"]] == [7]
        # what the worker holds after a job is what it held before any: nothing per record
        assert [len(d.matches) for d in w._decontam.values()] == [0]
