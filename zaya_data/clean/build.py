"""Cleaning inside `zaya-data build`: which `CleanSpec` each source of a phase gets, and
the jobs that run the stages between reading and tokenization.

A packed phase runs in one of two shapes:
- no build-wide dedup: one job per read unit does read -> map stages -> tokenize, as
  before (`mode="single"`);
- exact, near or problem dedup on: `mode="map"` jobs read and run the map stages,
  writing the surviving canonical rows, their dedup signatures and problem keys to
  `_work/<phase>/clean/`; the driver resolves duplicates over every source at once
  (`resolve_build_drops`, on Ray Data when the build runs on Ray); `mode="tokenize"` jobs
  remove the drops and tokenize.

Map stages run in this order: quality, language, validate, decontaminate. They all run
before dedup so that a cluster's survivor is a record that is actually kept: deduping
first would let a duplicate be dropped in favour of a survivor that a later filter
removes, and both copies would be lost.

Every job also writes a *fates* sidecar (`*.fates.arrow`, FATE_LOG rows): one row per
record it dropped or flagged, with stage, reason, detail and position. The driver turns
the sidecars and the packing plan into the phase's `records.parquet`
(`zaya_data.explain`), which is what `zaya-data explain` reads.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from zaya_data.clean.config import CleanSpec
from zaya_data.io import atomic_replace, atomic_write_text, tmp_path_for
from zaya_data.ledger import Ledger, Rejection
from zaya_data.schema import SCHEMAS, TOKENIZED
from zaya_data.tasks import TokenizeWorker, source_from_dict

# One row per dropped or flagged record; `outcome` is "dropped" or "flagged" (kept, but a
# check failed under a flag policy, e.g. math_verify: flag).
FATE_LOG = pa.schema(
    [
        pa.field("id", pa.string()),
        pa.field("source", pa.string()),
        pa.field("file_index", pa.int32()),
        pa.field("row_index", pa.int64()),
        pa.field("file", pa.string()),
        pa.field("stage", pa.string()),
        pa.field("reason", pa.string()),
        pa.field("detail", pa.string()),
        pa.field("outcome", pa.string()),
    ]
)

# Locations as the readers and stages write them, -> (file_index or None, row_index).
_LOC = [
    (re.compile(r"^file(?:_index)? (\d+),? row(?:_index)? (\d+)$"), lambda m: (int(m[1]), int(m[2]))),
    (re.compile(r"^line (\d+)$"), lambda m: (None, int(m[1]) - 1)),  # JSONL lines are 1-based
    (re.compile(r"^(?:item|row|index) (\d+)$"), lambda m: (None, int(m[1]))),
]


def parse_location(location: str | None) -> tuple[int | None, int]:
    """(file_index if the location names it, 0-based row) of a ledger location; row -1
    when the location names no single record ("after line 40", "all 12 rows")."""
    for pat, conv in _LOC:
        m = pat.match(location or "")
        if m:
            return conv(m)
    return None, -1


def fate_rows(log: list[Rejection], file_index: int, path: str, outcome: str = "dropped") -> pa.Table:
    cols: dict[str, list[Any]] = {f.name: [] for f in FATE_LOG}
    for r in log:
        fi, ri = parse_location(r.location)
        cols["id"].append(r.record_id)
        cols["source"].append(r.source)
        cols["file_index"].append(file_index if fi is None else fi)
        cols["row_index"].append(ri)
        cols["file"].append(r.file or path)
        cols["stage"].append(r.stage)
        cols["reason"].append(r.reason)
        cols["detail"].append(r.detail)
        cols["outcome"].append(outcome)
    return pa.table(cols, schema=FATE_LOG)


def write_arrow(path: Path, table: pa.Table) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_path_for(path)
    with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_file(sink, table.schema) as w:
        w.write_table(table)
    atomic_replace(tmp, path)


def read_arrow(path: str | Path) -> pa.Table:
    return pa.ipc.open_file(pa.memory_map(str(path), "r")).read_all()


def write_parquet(path: Path, table: pa.Table) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_path_for(path)
    pq.write_table(table, tmp, compression="zstd")
    atomic_replace(tmp, path)


# ---------------------------------------------------------------------------------------
# specs: top-level `clean:`, then the phase's, then the source's (merged at load)


def phase_clean_specs(phase: Any, names: list[str]) -> dict[str, CleanSpec]:
    """The merged CleanSpec of every source of `phase` (top-level section, overridden key
    by key by the phase's, then by the source's), as the mixture loader parsed them onto
    the phase (`zaya_data.config`); a source without one is not cleaned."""
    return {n: phase.clean.get(n) or CleanSpec() for n in names}


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def clean_config(specs: dict[str, CleanSpec]) -> dict[str, Any]:
    """What of the cleaning determines the phase's bytes (hashed into its config): each
    cleaned source's spec and the sha256 of every benchmark file it decontaminates against."""
    out: dict[str, Any] = {}
    for n, s in specs.items():
        if s.is_noop:
            continue
        d = dataclasses.asdict(s)
        d.pop("origin", None)
        if s.decontaminate is not None:
            d["benchmark_sha256"] = {b.name: _sha256(b.path) for b in s.decontaminate.benchmarks}
        out[n] = d
    return out


def needs_resolve(specs: dict[str, CleanSpec]) -> bool:
    return any(s.exact_dedup or s.near_dedup is not None or s.problem_dedup is not None for s in specs.values())


# ---------------------------------------------------------------------------------------
# per-batch stages of one source


class MapStages:
    """quality -> language -> validate -> decontaminate for one source's spec."""

    def __init__(self, spec: CleanSpec, decontam_cache: dict[Any, Any]) -> None:
        from zaya_data.clean import Decontaminator, LanguageFilter, QualityFilter, Validator

        self.spec = spec
        self.quality = QualityFilter(spec) if spec.quality else None
        self.language = LanguageFilter(spec.language, spec.origin) if spec.language else None
        self.validator = Validator(spec.validate) if spec.validate else None
        self.decontam = None
        if spec.decontaminate is not None and spec.decontaminate.benchmarks:
            key = spec.decontaminate
            if key not in decontam_cache:  # one benchmark index per worker, shared by sources
                decontam_cache[key] = Decontaminator(key, spec.origin)
            self.decontam = decontam_cache[key]

    def __call__(self, table: pa.Table, ledger: Ledger) -> pa.Table:
        for stage in (self.quality, self.language, self.validator, self.decontam):
            if stage is not None and table.num_rows:
                table = stage(table, ledger)
        return table


class CleanTokenizeWorker(TokenizeWorker):
    """The tokenize job of a packed phase, with the cleaning stages and a fates sidecar.

    `clean`: source name -> CleanSpec (sources not named are not cleaned). `mode`:
    "single" (read, clean, tokenize), "map" (read, clean, write canonical rows +
    signatures) or "tokenize" (cleaned rows - drops -> tokens). `drops`: the build's
    drop list (DROPS_SCHEMA Parquet) for "tokenize"."""

    def __init__(self, tokenizer: str, template: dict[str, Any], context: int, loss: str, trim_window: int,
                 strict: bool, clean: dict[str, CleanSpec] | None = None, mode: str = "single",
                 drops: str | None = None, priorities: dict[str, int] | None = None, batch_size: int = 1024):
        super().__init__(tokenizer, template, context, loss, trim_window, strict, batch_size)
        self.clean = clean or {}
        self.mode = mode
        self.drops_path = drops
        self.priorities = priorities or {}
        self._maps: dict[str, MapStages] = {}
        self._decontam: dict[Any, Any] = {}
        self._drops: pa.Table | None = None

    final_schema = TOKENIZED

    def _final(self, spec: Any, batch: pa.Table, ledger: Ledger) -> pa.Table:
        """The step after cleaning: format + tokenize + trim."""
        return self._stage(spec.kind)(batch, ledger)

    @staticmethod
    def _tokens(table: pa.Table) -> int:
        return int(pc.sum(table["num_tokens"]).as_py() or 0)

    def _map(self, source: str) -> MapStages | None:
        spec = self.clean.get(source)
        if spec is None or spec.is_noop:
            return None
        if source not in self._maps:
            self._maps[source] = MapStages(spec, self._decontam)
        return self._maps[source]

    def run(self, job: dict[str, Any]) -> dict[str, Any]:
        out = Path(job["out"])
        done = out.with_suffix(".json")
        if done.exists():
            return json.loads(done.read_text())
        if self.mode == "tokenize":
            return self._run_tokenize(job, out)
        return self._run_read(job, out)

    # -- read (+ map stages) (+ tokenize) -------------------------------------------------

    def _run_read(self, job: dict[str, Any], out: Path) -> dict[str, Any]:
        from zaya_data.readers import read_unit
        from zaya_data.tasks import _unit_from_dict

        spec = source_from_dict(job["source"])
        units = [_unit_from_dict(u) for u in job["units"]]
        stages = self._map(spec.name)
        tokenize = self.mode == "single"
        schema = self.final_schema if tokenize else SCHEMAS[spec.kind]
        t0 = time.perf_counter()
        read_total = emitted = rows = tokens = 0
        ledger = Ledger()
        fates: list[pa.Table] = []
        kept_tables: list[pa.Table] = []  # "map": canonical rows for signatures
        matches0 = len(stages.decontam.matches) if stages and stages.decontam else 0
        flagged0 = len(stages.validator.flagged) if stages and stages.validator else 0
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = tmp_path_for(out)
        with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_file(sink, schema) as writer:
            for unit in units:
                # --strict stops at malformed input; cleaning and trim drops are policy.
                read_ledger = Ledger(strict=self.strict, log=[])
                unit_ledger = Ledger(log=[])
                for batch in read_unit(spec, unit, read_ledger, batch_size=self.batch_size):
                    emitted += batch.num_rows
                    if stages is not None:
                        batch = stages(batch, unit_ledger)
                    if tokenize:
                        batch = self._final(spec, batch, unit_ledger)
                    if batch.num_rows:
                        writer.write_table(batch.cast(schema))
                        rows += batch.num_rows
                        if tokenize:
                            tokens += self._tokens(batch)
                        else:
                            kept_tables.append(batch.cast(schema))
                read_total += read_ledger.total()
                for led in (read_ledger, unit_ledger):
                    for examples in led.examples.values():
                        for ex in examples:  # stages see batches, the unit knows the file
                            ex.setdefault("file", unit.path)
                    fates.append(fate_rows(led.log or [], unit.file_index, unit.path))
                    ledger.merge(dataclasses.replace(led, log=None))
        atomic_replace(tmp, out)
        clean_info = self._clean_info(stages, matches0, flagged0, fates, units)
        fates_path = out.with_suffix(".fates.arrow")
        write_arrow(fates_path, pa.concat_tables(fates) if fates else FATE_LOG.empty_table())
        record = {
            "source": spec.name, "file_index": units[0].file_index, "units": len(units),
            "path": units[0].path, "part": str(out),
            "unit_paths": {str(u.file_index): u.path for u in units},
            "input_records": emitted + read_total, "read_records": emitted, "rows": rows, "tokens": tokens,
            "ledger": ledger.to_dict(), "fates": [str(fates_path)], **clean_info,
            "seconds": time.perf_counter() - t0,
        }
        if self.mode == "map":
            record.update(self._write_keys(spec, out, kept_tables))
        else:
            self._write_meta(out)
        atomic_write_text(out.with_suffix(".json"), json.dumps(record, sort_keys=True))
        return record

    def _write_meta(self, out: Path) -> None:
        """The planner's per-item metadata beside a tokenized part (`plan.write_part_meta`),
        before the job's record, so a finished job always has it."""
        from zaya_data.plan import write_part_meta

        write_part_meta(out)

    def _clean_info(self, stages: MapStages | None, matches0: int, flagged0: int, fates: list[pa.Table],
                    units: list[Any]) -> dict[str, Any]:
        if stages is None:
            return {"decontam_matches": [], "clean_stats": {}}
        # The stages live as long as the worker, which runs many jobs: take this job's
        # matches and flags out of their lists, or they would grow with the corpus.
        matches: list[dict[str, Any]] = []
        if stages.decontam is not None:
            matches = stages.decontam.matches[matches0:]
            del stages.decontam.matches[matches0:]
        stats: dict[str, int] = {}
        if stages.validator is not None:
            flagged = stages.validator.flagged[flagged0:]
            del stages.validator.flagged[flagged0:]
            stats["validate_flagged"] = len(flagged)
            if flagged:
                paths = {u.file_index: u.path for u in units}
                fates.append(pa.table({
                    "id": [f[0] for f in flagged], "source": [f[1] for f in flagged],
                    "file_index": [f[2] for f in flagged], "row_index": [f[3] for f in flagged],
                    "file": [paths.get(f[2]) for f in flagged], "stage": ["validate"] * len(flagged),
                    "reason": [f[4] for f in flagged], "detail": [f[5] for f in flagged],
                    "outcome": ["flagged"] * len(flagged),
                }, schema=FATE_LOG))
        return {"decontam_matches": matches, "clean_stats": stats}

    def _write_keys(self, spec: Any, out: Path, tables: list[pa.Table]) -> dict[str, Any]:
        """Signatures (exact/near) and problem keys of the rows that survived the map stages."""
        from zaya_data.clean.dedup import SIGNATURE_SCHEMA, signatures
        from zaya_data.clean.problems import PROBLEM_KEY_SCHEMA, problem_keys

        cs = self.clean.get(spec.name) or CleanSpec()
        prio = self.priorities.get(spec.name, 0)
        table = pa.concat_tables(tables) if tables else SCHEMAS[spec.kind].empty_table()
        res: dict[str, Any] = {"signatures": None, "problem_keys": None}
        if cs.exact_dedup or cs.near_dedup is not None:
            sig = signatures(table, cs, prio) if table.num_rows else SIGNATURE_SCHEMA.empty_table()
            p = out.with_suffix(".sig.parquet")
            write_parquet(p, sig)
            res["signatures"] = str(p)
        if cs.problem_dedup is not None:
            keys = problem_keys(table, prio) if table.num_rows else PROBLEM_KEY_SCHEMA.empty_table()
            p = out.with_suffix(".problems.parquet")
            write_parquet(p, keys)
            res["problem_keys"] = str(p)
        return res

    # -- cleaned rows - drops -> tokens ------------------------------------------------------

    def _run_tokenize(self, job: dict[str, Any], out: Path) -> dict[str, Any]:
        from zaya_data.clean.dedup import apply_drop_list

        spec = source_from_dict(job["source"])
        mapped = json.loads(Path(job["cleaned"]).with_suffix(".json").read_text())
        if self._drops is None:
            self._drops = pq.read_table(self.drops_path) if self.drops_path else None
        drops = self._drops
        if drops is not None:
            drops = drops.filter(pc.equal(drops["source"], spec.name))
        t0 = time.perf_counter()
        ledger = Ledger.from_dict(mapped["ledger"])
        step = Ledger(log=[])
        rows = tokens = 0
        cleaned = read_arrow(job["cleaned"])
        tmp = tmp_path_for(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_file(sink, self.final_schema) as writer:
            for lo in range(0, cleaned.num_rows, self.batch_size):
                batch = cleaned.slice(lo, self.batch_size)
                if drops is not None and drops.num_rows:
                    batch = apply_drop_list(batch, drops, step)
                tok = self._final(spec, batch, step)
                if tok.num_rows:
                    writer.write_table(tok.cast(self.final_schema))
                    rows += tok.num_rows
                    tokens += self._tokens(tok)
        atomic_replace(tmp, out)
        paths = {int(k): v for k, v in mapped["unit_paths"].items()}
        for examples in step.examples.values():
            for ex in examples:
                fi, _ = parse_location(ex.get("location"))
                if fi is not None and fi in paths:
                    ex.setdefault("file", paths[fi])
        fates = fate_rows(step.log or [], mapped["file_index"], mapped["path"])
        fates = fates.set_column(fates.schema.get_field_index("file"), "file",
                                 pa.array([paths.get(f, mapped["path"]) for f in fates["file_index"].to_pylist()],
                                          pa.string()))
        ledger.merge(dataclasses.replace(step, log=None))
        fates_path = out.with_suffix(".fates.arrow")
        write_arrow(fates_path, fates)
        record = {
            **{k: mapped[k] for k in ("source", "file_index", "units", "path", "unit_paths", "input_records",
                                     "read_records", "decontam_matches", "clean_stats")},
            "part": str(out), "rows": rows, "tokens": tokens, "ledger": ledger.to_dict(),
            "fates": [*mapped["fates"], str(fates_path)], "seconds": time.perf_counter() - t0,
        }
        self._write_meta(out)
        atomic_write_text(out.with_suffix(".json"), json.dumps(record, sort_keys=True))
        return record


class CleanPromptWorker(CleanTokenizeWorker):
    """The job of an RL prompt phase with cleaning: the same read / clean / drop passes,
    then the problems rendered as prompts (PROMPTS rows, as `tasks.PromptWorker` writes)."""

    def __init__(self, template: dict[str, Any], strict: bool, clean: dict[str, CleanSpec] | None = None,
                 mode: str = "single", drops: str | None = None, priorities: dict[str, int] | None = None,
                 batch_size: int = 1024):
        # no tokenizer is ever loaded: `_final` below replaces the tokenize stage
        super().__init__("embedded", template, 1, "all", 0, strict, clean, mode, drops, priorities, batch_size)

    @property
    def final_schema(self) -> pa.Schema:  # type: ignore[override]
        from zaya_data.tasks import PROMPTS

        return PROMPTS

    def _write_meta(self, out: Path) -> None:
        pass  # prompt parts are read whole by the driver; there is no packing plan

    def _final(self, spec: Any, batch: pa.Table, ledger: Ledger) -> pa.Table:
        from zaya_data.stages.template import render_prompt
        from zaya_data.tasks import PROMPTS

        n = batch.num_rows
        if spec.kind == "reasoning":
            problems = batch["prompt"]
            # the sample's answer stands in for a missing reference (as PromptWorker does)
            refs = pa.array([r if r is not None else a for r, a in zip(batch["reference_answer"].to_pylist(),
                                                                        batch["answer"].to_pylist())], pa.string())
        else:
            problems = batch["text"]
            refs = pa.nulls(n, pa.string())
        probs = problems.to_pylist()
        return pa.table({
            "id": batch["id"], "source": pa.array([spec.name] * n, pa.string()),
            "category": pa.array([spec.category] * n, pa.string()),
            "file_index": batch["file_index"], "row_index": batch["row_index"],
            "prompt": pa.array([render_prompt(p, self.cfg["template"]) for p in probs], pa.string()),
            "problem": pa.array(probs, pa.string()), "reference_answer": refs,
        }, schema=PROMPTS)

    @staticmethod
    def _tokens(table: pa.Table) -> int:
        return 0


# ---------------------------------------------------------------------------------------
# driver: the build-wide drop list


_RECORD_AT = ["source", "file_index", "row_index"]  # where a record is: unique within a build


def resolve_build_drops(map_records: list[dict[str, Any]], specs: dict[str, CleanSpec], out: Path,
                        use_ray: bool) -> dict[str, int]:
    """Resolve exact/near duplicates (per group of sources sharing one dedup config) and
    then problem dedup among the survivors, over every source of the phase; writes the
    drop list (DROPS_SCHEMA) to `out`. The result depends only on the records, never on
    jobs, workers or the order they finished in."""
    from zaya_data.clean.dedup import DROPS_SCHEMA, resolve_duplicates
    from zaya_data.clean.problems import resolve_problems

    drops: list[pa.Table] = []
    groups: dict[tuple, list[str]] = {}
    for r in map_records:
        s = specs.get(r["source"])
        if r.get("signatures") and s is not None:
            groups.setdefault((s.exact_dedup, s.near_dedup), []).append(r["signatures"])
    for (exact, near), paths in sorted(groups.items(), key=lambda kv: repr(kv[0])):
        cs = CleanSpec(exact_dedup=exact, near_dedup=near)
        if use_ray:
            from zaya_data.clean.dedup_ray import resolve_duplicates_ray

            drops.append(resolve_duplicates_ray(_ray_signatures(sorted(paths)), cs))
        else:
            drops.append(resolve_duplicates((pq.read_table(p) for p in sorted(paths)), cs))
    near_dropped = pa.concat_tables(drops) if drops else DROPS_SCHEMA.empty_table()
    gone = near_dropped.select(_RECORD_AT)
    pgroups: dict[Any, list[pa.Table]] = {}
    for r in map_records:
        s = specs.get(r["source"])
        if r.get("problem_keys") and s is not None and s.problem_dedup is not None:
            pgroups.setdefault(s.problem_dedup, []).append(_survivors(pq.read_table(r["problem_keys"]), gone))
    for pspec, tables in sorted(pgroups.items(), key=lambda kv: repr(kv[0])):
        drops.append(resolve_problems(tables, pspec))
    table = pa.concat_tables(drops) if drops else DROPS_SCHEMA.empty_table()
    table = table.sort_by([(c, "ascending") for c in _RECORD_AT])
    write_parquet(out, table)
    reasons = table["reason"].to_pylist()
    return {r: reasons.count(r) for r in sorted(set(reasons))}


def _survivors(keys: pa.Table, gone: pa.Table) -> pa.Table:
    """The rows of `keys` whose record is not in `gone` (both with `_RECORD_AT` columns):
    an Arrow anti-join, not a Python set over every record. Row order is not kept;
    `resolve_problems` sorts its input."""
    if gone.num_rows == 0 or keys.num_rows == 0:
        return keys
    kept = keys.join(gone.cast(keys.select(_RECORD_AT).schema), keys=_RECORD_AT, join_type="left anti",
                     use_threads=False)
    return kept.select(keys.column_names)


def _read_signature_files(batch: pa.Table) -> pa.Table:
    from zaya_data.clean.dedup import SIGNATURE_SCHEMA

    tables = [pq.read_table(p) for p in batch["path"].to_pylist()]
    return pa.concat_tables(tables) if tables else SIGNATURE_SCHEMA.empty_table()


def _ray_signatures(paths: list[str]) -> Any:
    """A Ray dataset of the signature files, read by the workers (one block per file), so
    the signatures never pass through the driver. (Not `ray.data.read_parquet`: its path
    handling imports an fsspec API that the installed fsspec no longer has.)"""
    import ray.data

    from zaya_data.executor import quiet_ray_data

    quiet_ray_data()
    files = ray.data.from_items([{"path": p} for p in paths], override_num_blocks=max(1, len(paths)))
    return files.map_batches(_read_signature_files, batch_format="pyarrow", batch_size=1)


def merged_decontam_report(records: list[dict[str, Any]], specs: dict[str, CleanSpec]) -> dict[str, Any]:
    """The phase's decontamination report: every (benchmark item, record) match, sorted,
    and per benchmark how many items matched how many records."""
    from zaya_data.clean.decontam import merge_reports

    matches = merge_reports([r.get("decontam_matches", []) for r in records])
    items: dict[str, int] = {}
    for s in specs.values():
        if s.decontaminate is None:
            continue
        for b in s.decontaminate.benchmarks:
            items.setdefault(b.name, 0)
    summary = {}
    for b in sorted(items):
        ms = [m for m in matches if m["benchmark"] == b]
        summary[b] = {"items_matched": len({m["item"] for m in ms}),
                      "records_matched": len({(m["source"], m["file_index"], m["row_index"]) for m in ms}),
                      "sources": sorted({m["source"] for m in ms})}
    return {"summary": summary, "matches": matches}
