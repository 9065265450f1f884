"""The jobs the executor runs: read+tokenize one unit, write one shard, gather prompts.

Each job is idempotent and names its own output, written atomically with a `.json`
record last; a job whose record exists is skipped, which is how an interrupted build
resumes without duplicates or holes.
"""

from __future__ import annotations

import dataclasses
import json
import mmap
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from zaya_data.io import atomic_replace, atomic_write_text, tmp_path_for
from zaya_data.ledger import Ledger
from zaya_data.schema import TOKENIZED
from zaya_data.specs import SourceSpec, TemplateSpec

PROMPTS = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("category", pa.string(), nullable=False),
        pa.field("file_index", pa.int32(), nullable=False),
        pa.field("row_index", pa.int64(), nullable=False),
        pa.field("prompt", pa.string(), nullable=False),
        pa.field("problem", pa.string(), nullable=False),
        pa.field("reference_answer", pa.string()),
    ]
)


def source_to_dict(spec: SourceSpec) -> dict[str, Any]:
    return dataclasses.asdict(spec)


def source_from_dict(d: dict[str, Any]) -> SourceSpec:
    return SourceSpec(**{**d, "paths": tuple(d["paths"])})


def unit_to_dict(unit: Any) -> dict[str, Any]:
    return dataclasses.asdict(unit)


def _unit_from_dict(d: dict[str, Any]) -> Any:
    from zaya_data.readers import ReadUnit

    return ReadUnit(**d)


def _finish(out: Path, record: dict[str, Any]) -> dict[str, Any]:
    atomic_write_text(out.with_suffix(".json"), json.dumps(record, sort_keys=True))
    return record


class TokenizeWorker:
    """read -> format -> tokenize -> trim for one read unit; writes an Arrow IPC part
    (TOKENIZED rows, memory-mappable for the shard writers) and its record."""

    def __init__(self, tokenizer: str, template: dict[str, Any], context: int, loss: str,
                 trim_window: int, strict: bool, batch_size: int = 1024):
        self.cfg = dict(tokenizer=tokenizer, template=TemplateSpec(**template), context=context,
                        loss=loss, trim_window=trim_window)
        self.strict = strict
        self.batch_size = batch_size
        self._stages: dict[str, Any] = {}

    def _stage(self, kind: str) -> Any:
        if kind not in self._stages:
            from zaya_data.stages.tokenize import FormatTokenizeTrim

            self._stages[kind] = FormatTokenizeTrim(source_kind=kind, **self.cfg)
        return self._stages[kind]

    def run(self, job: dict[str, Any]) -> dict[str, Any]:
        from zaya_data.plan import write_part_meta
        from zaya_data.readers import read_unit

        out = Path(job["out"])
        done = out.with_suffix(".json")
        if done.exists():
            return json.loads(done.read_text())
        spec = source_from_dict(job["source"])
        units = [_unit_from_dict(u) for u in job["units"]]
        stage = self._stage(spec.kind)
        # --strict stops at malformed input; a trim drop is the phase's policy, not bad data.
        read_ledger = Ledger(strict=self.strict)
        stage_ledger = Ledger()
        t0 = time.perf_counter()
        emitted = 0
        rows = 0
        tokens = 0
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = tmp_path_for(out)
        with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_file(sink, TOKENIZED) as writer:
            for unit in units:
                unit_ledger = Ledger()
                for batch in read_unit(spec, unit, read_ledger, batch_size=self.batch_size):
                    emitted += batch.num_rows
                    tok = stage(batch, unit_ledger)
                    if tok.num_rows:
                        writer.write_table(tok.cast(TOKENIZED))
                        rows += tok.num_rows
                        tokens += int(pa.compute.sum(tok["num_tokens"]).as_py() or 0)
                for examples in unit_ledger.examples.values():
                    for ex in examples:  # stages see batches, the unit knows the file
                        ex.setdefault("file", unit.path)
                stage_ledger.merge(unit_ledger)
        atomic_replace(tmp, out)
        write_part_meta(out)  # before the record: a finished job always has its metadata
        ledger = Ledger().merge(read_ledger).merge(stage_ledger)
        return _finish(out, {
            "source": spec.name, "file_index": units[0].file_index, "units": len(units),
            "path": units[0].path, "part": str(out),
            "input_records": emitted + read_ledger.total(),
            "read_records": emitted, "rows": rows, "tokens": tokens,
            "ledger": ledger.to_dict(), "seconds": time.perf_counter() - t0,
        })


class PromptWorker:
    """read one unit and render its problems as RL prompts (no tokens, no packing)."""

    def __init__(self, template: dict[str, Any], strict: bool, batch_size: int = 1024):
        self.template = TemplateSpec(**template)
        self.strict = strict
        self.batch_size = batch_size

    def run(self, job: dict[str, Any]) -> dict[str, Any]:
        from zaya_data.readers import read_unit
        from zaya_data.stages.template import render_prompt

        out = Path(job["out"])
        done = out.with_suffix(".json")
        if done.exists():
            return json.loads(done.read_text())
        spec = source_from_dict(job["source"])
        units = [_unit_from_dict(u) for u in job["units"]]
        ledger = Ledger(strict=self.strict)
        emitted = 0
        rows = 0
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = tmp_path_for(out)
        with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_file(sink, PROMPTS) as writer:
            for batch in (b for unit in units for b in read_unit(spec, unit, ledger, batch_size=self.batch_size)):
                emitted += batch.num_rows
                if spec.kind == "rollout_group":
                    ids, problems = batch["problem_id"], batch["problem"]
                    refs = batch["reference_answer"]
                elif spec.kind == "reasoning":
                    ids, problems = batch["id"], batch["prompt"]
                    ref = batch["reference_answer"].to_pylist()
                    ans = batch["answer"].to_pylist()
                    refs = pa.array([r if r is not None else a for r, a in zip(ref, ans)], pa.string())
                else:
                    ids, problems = batch["id"], batch["text"]
                    refs = pa.nulls(batch.num_rows, pa.string())
                probs = problems.to_pylist()
                table = pa.table({
                    "id": ids, "source": pa.array([spec.name] * batch.num_rows, pa.string()),
                    "category": pa.array([spec.category] * batch.num_rows, pa.string()),
                    "file_index": batch["file_index"], "row_index": batch["row_index"],
                    "prompt": pa.array([render_prompt(p, self.template) for p in probs], pa.string()),
                    "problem": pa.array(probs, pa.string()), "reference_answer": refs,
                }, schema=PROMPTS)
                writer.write_table(table)
                rows += table.num_rows
        atomic_replace(tmp, out)
        return _finish(out, {
            "source": spec.name, "file_index": units[0].file_index, "units": len(units),
            "path": units[0].path, "part": str(out),
            "input_records": emitted + ledger.total(), "read_records": emitted, "rows": rows,
            "tokens": 0, "ledger": ledger.to_dict(),
        })


def read_part(path: str) -> pa.Table:
    """A part file, memory-mapped: columns are only paged in when touched."""
    return pa.ipc.open_file(pa.memory_map(path, "r")).read_all()


def take_part_rows(path: str, rows: np.ndarray, memory_pool: pa.MemoryPool | None = None) -> pa.Table:
    """`read_part(path).take(rows)` for sorted, unique `rows`, touching only the record
    batches (and, through the memory map, the pages) that hold them.

    Not `Table.take`: on a table of many record batches (a part has one per 1024 read
    rows) Arrow concatenates every chunk of every column before taking, which copies the
    whole part onto the heap and pages in all of its mapped file. A part grows with the
    corpus (up to a job's 64 MB of input), so a shard writer's memory did too; taking
    batch by batch keeps it bounded by the shard's own rows.

    The map is Python's, not `pa.memory_map`, for `madvise`: a page fault maps up to 64 KB
    of page cache around each touched row, so a shard's scattered rows would still leave
    most of a large part resident in this process. Dropping the mapped pages after each
    batch (the file and page cache are untouched; `take` has copied what it needs, and any
    later read simply faults the page in again) keeps at most one batch's pages mapped.
    `memory_pool`: where the taken rows are allocated (a test measures it)."""
    with open(path, "rb") as f:
        mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    # Arrow buffers export `mm`, so it is unmapped when the last of them is freed (here,
    # on return: the result holds copies), never while one is alive.
    reader = pa.ipc.open_file(pa.BufferReader(pa.py_buffer(mm)))
    rows = np.asarray(rows, dtype=np.int64)
    pieces: list[pa.RecordBatch] = []
    start = 0
    lo = 0  # rows[:lo] are in batches already passed: rows are sorted, so one sweep
    for i in range(reader.num_record_batches):
        if lo >= rows.size:
            break
        batch = reader.get_batch(i)  # zero-copy from the map: reads only its metadata
        end = start + batch.num_rows
        hi = lo + int(np.searchsorted(rows[lo:], end))
        if hi > lo:
            pieces.append(pc.take(batch, pa.array(rows[lo:hi] - start), memory_pool=memory_pool))
            mm.madvise(mmap.MADV_DONTNEED)
        lo, start = hi, end
    if lo < rows.size:
        raise IndexError(f"{path}: row {int(rows[lo])} is past its {start} rows")
    return pa.Table.from_batches(pieces, schema=reader.schema)


class ShardWorker:
    """Gathers the items of one shard's rows from the memory-mapped parts, packs them
    into rows and writes the shard atomically."""

    def __init__(self, parts: list[str], context: int, pad_id: int):
        self.parts = parts
        self.context = context
        self.pad_id = pad_id

    def run(self, job: dict[str, Any]) -> dict[str, Any]:
        from zaya_data.shards import assemble_rows, write_shard

        out = Path(job["out"])
        record = Path(job["record"])  # kept in the work folder, not beside the shards
        if out.exists() and record.exists():
            return json.loads(record.read_text())
        part_of = np.asarray(job["part"], dtype=np.int64)
        row_of = np.asarray(job["row"], dtype=np.int64)
        row_starts = np.asarray(job["row_starts"], dtype=np.int64)
        # Take each needed part's rows once, then index the concatenation.
        pieces = []
        pos = np.empty(len(part_of), dtype=np.int64)
        base = 0
        for p in np.unique(part_of):
            sel = np.nonzero(part_of == p)[0]
            uniq, inv = np.unique(row_of[sel], return_inverse=True)
            pieces.append(take_part_rows(self.parts[int(p)], uniq))
            pos[sel] = base + inv
            base += len(uniq)
        items = pa.concat_tables(pieces) if pieces else pa.table({}, schema=TOKENIZED)
        bins = [pos[row_starts[i]:row_starts[i + 1]] for i in range(len(row_starts) - 1)]
        table = assemble_rows(items, bins, self.context, self.pad_id)
        info = write_shard(table, out)
        atomic_write_text(record, json.dumps(info, sort_keys=True))
        return info
