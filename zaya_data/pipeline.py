"""Build the phases of a mixture: read+tokenize on the executor, plan, write shards.

    sources -> [TokenizeWorker per read unit] -> parts (Arrow IPC, in OUT/_work)
            -> plan (mixing + best-fit packing, on the driver, metadata only)
            -> [ShardWorker per shard] -> OUT/<phase>/shard-*.parquet -> manifest.json

Resumption: every unit part and every shard is written atomically and skipped when it
already exists, under a work folder named by the phase's config hash, so a killed build
started again with the same mixture and seed finishes the same bytes.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import shutil
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from zaya_data import __version__
from zaya_data.executor import Executor
from zaya_data.io import atomic_write_text
from zaya_data.ledger import Ledger
from zaya_data.mixing import ShortfallError, phase_sources, realized_shares, select_source, source_targets
from zaya_data.plan import concat_uses, expand_uses, load_source_items, pack_uses, shard_jobs
from zaya_data.specs import MixtureSpec, PhaseSpec
from zaya_data.tasks import PromptWorker, ShardWorker, source_to_dict, unit_to_dict
from zaya_data.timing import Clock

PACK_WINDOW = 1 << 20  # uses per best-fit window: ~99.9% efficient, bounded planning memory


class OutputExistsError(RuntimeError):
    """The phase folder holds a different build; --overwrite replaces it."""


@dataclass
class PhaseResult:
    phase: str
    status: str  # "built", "up-to-date", "dry-run"
    manifest: dict[str, Any] = field(default_factory=dict)
    # wall seconds per step of this build (not in the manifest: its bytes must not depend on
    # the machine); also written to _work/timings-<phase>.json for scripts and benchmarks
    timings: dict[str, float] = field(default_factory=dict)


def _write_timings(work_root: Path, phase: str, timings: dict[str, float]) -> None:
    work_root.mkdir(parents=True, exist_ok=True)
    atomic_write_text(work_root / f"timings-{phase}.json", json.dumps({k: round(v, 3) for k, v in timings.items()}))


def phase_config(mix: MixtureSpec, phase: PhaseSpec, seed: int, tokenizer_sha: str) -> dict[str, Any]:
    """Everything that determines a phase's bytes; its hash names the work folder."""
    names = phase_sources(phase, mix.sources)
    return {
        "mixture": mix.name,
        # `clean` enters the hash separately (build_phase), only when cleaning is on
        "phase": {k: v for k, v in asdict(phase).items() if k not in ("origin", "clean")},
        "sources": {n: {k: v for k, v in source_to_dict(mix.sources[n]).items() if k != "origin"} for n in names},
        "tokenizer": {"path": mix.tokenizer.path, "sha256": tokenizer_sha},
        "seed": seed,
        "format_version": 1,
    }


def config_hash(cfg: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(cfg, sort_keys=True, default=str).encode()).hexdigest()


def _prepare_dir(phase_dir: Path, work_root: Path, cfg_hash: str, overwrite: bool) -> str | None:
    """Returns "up-to-date" when the finished build matches, else readies the folder."""
    from zaya_data.manifest import read_manifest

    marker = phase_dir / ".zaya-build"
    if overwrite:
        shutil.rmtree(phase_dir, ignore_errors=True)
        for old in work_root.glob(f"{phase_dir.name}-*"):
            shutil.rmtree(old, ignore_errors=True)
    elif (phase_dir / "manifest.json").exists():
        if read_manifest(phase_dir).get("config_sha256") == cfg_hash:
            return "up-to-date"
        raise OutputExistsError(
            f"{phase_dir} holds a finished build of a different configuration; "
            "pass --overwrite to replace it or --out to write elsewhere"
        )
    elif marker.exists() and marker.read_text().strip() != cfg_hash:
        raise OutputExistsError(
            f"{phase_dir} holds an unfinished build of a different configuration; "
            "pass --overwrite to replace it"
        )
    elif phase_dir.exists() and any(phase_dir.iterdir()) and not marker.exists():
        raise OutputExistsError(f"{phase_dir} exists and was not written by zaya-data; pass --overwrite")
    phase_dir.mkdir(parents=True, exist_ok=True)
    # Atomic like every other file here: a kill mid-write must not leave a marker that a
    # resumed build would read as "a different configuration".
    atomic_write_text(marker, cfg_hash + "\n")
    return None


def _remove_stale_temps(phase_dir: Path) -> None:
    """Delete temporary files of writers that were killed mid-write (a killed driver, a
    killed Ray worker); they never had a final name. Called once every job of the phase
    has finished, so no live writer owns one."""
    for tmp in phase_dir.glob(".*.tmp-*"):
        tmp.unlink(missing_ok=True)


def _units(mix: MixtureSpec, names: list[str]) -> list[tuple[str, Any]]:
    from zaya_data.readers import list_units

    return [(n, u) for n in names for u in list_units(mix.sources[n])]


# A job reads consecutive units of one source until it holds `job_bytes` or JOB_UNITS units:
# a job per small file would spend more time scheduling than reading, and a few large jobs
# would leave workers idle. So the size aims at JOBS_TARGET jobs for the phase's input,
# between MIN_JOB_BYTES and JOB_BYTES. It depends on the input alone, never on the worker
# count, so part names (what a resumed build looks for) are the same on any cluster.
JOB_BYTES = 64 << 20
MIN_JOB_BYTES = 1 << 20
JOBS_TARGET = 256
JOB_UNITS = 64
GENERATED_UNIT_BYTES = 1 << 20  # generator chunks have no file size; count them as 1 MB


def job_bytes(total_bytes: int) -> int:
    """Bytes per job for a phase whose units hold `total_bytes` in all."""
    return max(MIN_JOB_BYTES, min(JOB_BYTES, total_bytes // JOBS_TARGET))


def _unit_bytes(unit: Any) -> int:
    try:
        return os.path.getsize(unit.path)
    except OSError:
        return GENERATED_UNIT_BYTES


def group_jobs(mix: MixtureSpec, units: list[tuple[str, Any]], work: Path) -> list[dict[str, Any]]:
    """Deterministic grouping (it names the part files a resumed build looks for)."""
    jobs: list[dict[str, Any]] = []
    cur: list[Any] = []
    size = 0
    sizes = [_unit_bytes(u) for _, u in units]
    limit = job_bytes(sum(sizes))

    def flush(name: str) -> None:
        nonlocal cur, size
        if cur:
            jobs.append({"source": source_to_dict(mix.sources[name]), "units": [unit_to_dict(u) for u in cur],
                         "out": str(work / "parts" / name / f"unit-{cur[0].file_index:05d}.arrow")})
        cur, size = [], 0

    prev = None
    for (name, unit), unit_size in zip(units, sizes):
        if prev is not None and name != prev:
            flush(prev)
        cur.append(unit)
        size += unit_size
        prev = name
        if size >= limit or len(cur) >= JOB_UNITS:
            flush(name)
    if prev is not None:
        flush(prev)
    return jobs


def build_phase(
    mix: MixtureSpec, phase: PhaseSpec, out_root: Path, executor: Executor, *, seed: int,
    strict: bool = False, overwrite: bool = False, command: str = "",
) -> PhaseResult:
    from zaya_data.tokenizer import load_tokenizer

    from zaya_data.clean.build import clean_config, phase_clean_specs

    tok = load_tokenizer(mix.tokenizer.path)
    cfg = phase_config(mix, phase, seed, tok.sha256)
    specs = phase_clean_specs(phase, phase_sources(phase, mix.sources))
    if any(not s.is_noop for s in specs.values()):
        # only when cleaning is on, so the hashes (and work folders) of other builds stay
        cfg["clean"] = clean_config(specs)
    chash = config_hash(cfg)
    phase_dir = out_root / phase.name
    work_root = out_root / "_work"
    if _prepare_dir(phase_dir, work_root, chash, overwrite) == "up-to-date":
        from zaya_data.manifest import read_manifest

        return PhaseResult(phase.name, "up-to-date", read_manifest(phase_dir))
    work = work_root / f"{phase.name}-{chash[:12]}"
    names = phase_sources(phase, mix.sources)
    units = _units(mix, names)
    if phase.kind == "prompts":
        return _build_prompts(mix, phase, cfg, chash, names, units, phase_dir, work, executor, seed, strict, command,
                              specs)

    from zaya_data.clean.build import CleanTokenizeWorker

    clock = Clock()
    jobs = group_jobs(mix, units, work)
    init = dict(tokenizer=mix.tokenizer.path, template=asdict(phase.template), context=phase.context,
                loss=phase.loss, trim_window=phase.trim_window, strict=strict)
    warm = _warm_driver_imports()
    records, drop_counts = _clean_jobs(CleanTokenizeWorker, init, mix, phase, names, specs, jobs, work, executor,
                                       "tokenize")
    warm.join()
    clock.mark("read+tokenize")
    parts = [r["part"] for r in records]

    ledger = Ledger()
    for r in records:
        ledger.merge(Ledger.from_dict(r["ledger"]))
    items = {n: load_source_items(n, [(i, r["part"]) for i, r in enumerate(records) if r["source"] == n])
             for n in names}
    available = {n: int(items[n].tokens.sum()) for n in names}
    target_share, targets = source_targets(phase, mix.sources, available, phase.token_budget or 0)

    sels = {}
    for n in names:
        max_rep = phase.max_repetition_per_source.get(n, phase.max_repetition)
        sels[n] = select_source(n, items[n].rec_tokens, items[n].rec_hash, targets[n], max_rep, seed,
                                f"{phase.name}/{n}")
    short = {n: s.shortfall for n, s in sels.items() if s.shortfall > 0}
    if short and not phase.allow_shortfall:
        lines = [f"  {n}: target {sels[n].target:,} tokens, available {sels[n].available:,}, "
                 f"max repetition {phase.max_repetition_per_source.get(n, phase.max_repetition)}, "
                 f"short by {v:,}" for n, v in short.items()]
        raise ShortfallError(
            f"phase {phase.name!r} ({phase.origin}): sources cannot reach their targets:\n" + "\n".join(lines)
            + "\nadd data, raise max_repetition, lower token_budget, or set allow_shortfall: true"
        )
    unique = {n: sels[n].unique_records() for n in names}
    for n in names:
        unused = items[n].records - unique[n]
        if unused:
            ledger.reject("mix", "not_selected", n, detail="token budget reached before this record", count=unused)

    uses = concat_uses([expand_uses(i, items[n], sels[n], seed, f"{phase.name}/{n}") for i, n in enumerate(names)])
    rows = pack_uses(uses, phase.context, seed, PACK_WINDOW)
    sjobs = shard_jobs(rows, uses, phase.shard_rows, str(phase_dir), str(work))
    clock.mark("select+pack")
    # The ledger, fate index and cleaning report need the plan, not the shards: a driver
    # thread writes them while the workers write shards (the driver only waits on Ray
    # then), which takes them off the build's serial tail. Their bytes do not depend on it.
    with ThreadPoolExecutor(1, thread_name_prefix="zaya-index") as pool:
        side = pool.submit(_write_side_files, phase_dir, ledger, names, items, sels, uses, rows, phase.shard_rows,
                           records, specs, drop_counts)
        shards = list(executor.map_jobs(ShardWorker, dict(parts=parts, context=phase.context, pad_id=tok.pad_id),
                                        sjobs, f"{phase.name}: shards"))
        shards.sort(key=lambda s: s["file"])
        clock.mark("shards")
        fate_info, cleaning = side.result()

    sources_out: dict[str, Any] = {}
    taken = {}
    for i, n in enumerate(names):
        m = uses.source == i
        it = items[n]
        used = uses.item[m]
        taken[n] = int(uses.tokens[m].sum())
        src_records = [r for r in records if r["source"] == n]
        rejected = ledger.total(source=n) - ledger.counts.get(("mix", "not_selected", n), 0)
        sources_out[n] = {
            "category": mix.sources[n].category,
            "target_tokens": targets[n],
            "tokens": taken[n],
            "loss_tokens": int(it.loss_tokens[used].sum()),
            "documents": int(len(sels[n].records)),
            "segments": int(m.sum()),
            "unique_documents": unique[n],
            "available_tokens": available[n],
            "available_documents": it.records,
            "repetition": round(sels[n].repetition, 6),
            "trimmed_samples": int((it.trimmed[used] & (it.piece[used] == 0)).sum()),
            "trimmed_tokens": int(it.trimmed_tokens[used].sum()),
            "input_records": sum(r["input_records"] for r in src_records),
            "rejected_records": rejected,
            "not_selected_records": it.records - unique[n],
            "shortfall_tokens": sels[n].shortfall,
            "files": sum(r["units"] for r in src_records),
        }
    by_cat: dict[str, int] = {}
    for n in names:
        by_cat[mix.sources[n].category] = by_cat.get(mix.sources[n].category, 0) + taken[n]
    realized = realized_shares(taken if phase.weights_by == "source" else by_cat)
    if phase.weights_by == "source":
        target = target_share
    else:
        target = {}
        for n, s in target_share.items():
            target[mix.sources[n].category] = target.get(mix.sources[n].category, 0.0) + s
    n_rows = sum(s["rows"] for s in shards)
    tokens = sum(s["tokens"] for s in shards)
    manifest = {
        "format_version": 1, "tool": "zaya-data", "tool_version": __version__,
        "phase": phase.name, "kind": "packed", "context": phase.context, "rope_base": phase.rope_base,
        "seed": seed, "created_by_command": command, "tokenizer": tok.to_manifest(),
        "config": cfg, "config_sha256": chash, "template": asdict(phase.template), "loss": phase.loss,
        "token_budget": phase.token_budget,
        "weights": {"by": phase.weights_by, "raw": phase.weights, "target": target, "realized": realized},
        "sources": sources_out,
        "totals": {
            "rows": n_rows, "tokens": tokens,
            "padding_tokens": sum(s["padding_tokens"] for s in shards),
            "loss_tokens": sum(s["loss_tokens"] for s in shards),
            "segments": sum(s["segments"] for s in shards),
            "packing_efficiency": tokens / (n_rows * phase.context) if n_rows else 0.0,
            "rejected_records": ledger.total() - sum(ledger.counts.get(("mix", "not_selected", n), 0) for n in names),
        },
        "shards": shards, "ledger": "ledger.json", "records": fate_info,
    }
    if cleaning:
        manifest["cleaning"] = cleaning
    from zaya_data.manifest import write_manifest

    _remove_stale_temps(phase_dir)
    write_manifest(phase_dir, manifest)
    (phase_dir / ".zaya-build").unlink(missing_ok=True)
    clock.mark("ledger+index+manifest")
    _write_timings(work_root, phase.name, clock.laps)
    return PhaseResult(phase.name, "built", manifest, clock.laps)


def _write_side_files(phase_dir: Path, ledger: Ledger, names: list[str], items: dict[str, Any],
                      sels: dict[str, Any], uses: Any, rows: list[np.ndarray], shard_rows: int,
                      records: list[dict[str, Any]], specs: dict[str, Any],
                      drop_counts: dict[str, int]) -> tuple[dict[str, Any], dict[str, Any]]:
    """ledger.json, records.parquet and (with cleaning) decontamination.json of a packed
    phase; returns the manifest's `records` and `cleaning` entries."""
    from zaya_data.explain import packed_fates, write_fate_index

    ledger.write(phase_dir / "ledger.json")
    fate_info = write_fate_index(phase_dir, packed_fates(names, items, sels, uses, rows, shard_rows, records),
                                 [f for r in records for f in r.get("fates", [])], names)
    return fate_info, _clean_outputs(phase_dir, records, specs, drop_counts)


def _warm_driver_imports() -> threading.Thread:
    """Import, in a thread, what the driver's planning imports on its first Arrow call
    while the workers tokenize (the driver only waits on them then). pyarrow imports
    pandas at its first conversion (`pa.array`, `to_numpy`) to check for pandas inputs:
    ~0.3-0.5 s that would otherwise open the serial planning step. Join before planning,
    so no import is still running when the driver needs the module."""
    def run() -> None:
        for name in ("pandas", "pyarrow.parquet", "zaya_data.explain"):
            try:
                importlib.import_module(name)
            except ImportError:  # pandas is optional for pyarrow: then it imports nothing
                pass

    thread = threading.Thread(target=run, name="zaya-warm-imports", daemon=True)
    thread.start()
    return thread


def _clean_jobs(worker: type, init: dict[str, Any], mix: MixtureSpec, phase: PhaseSpec, names: list[str],
                specs: dict[str, Any], jobs: list[dict[str, Any]], work: Path, executor: Executor,
                verb: str) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Run the read (+ clean) + tokenize (or render) jobs; with build-wide dedup, in two
    passes around the driver's duplicate resolution (see `zaya_data.clean.build`). Job
    records come back in canonical (source, unit) order."""
    from zaya_data.clean.build import needs_resolve, resolve_build_drops
    from zaya_data.executor import RayExecutor

    init = {**init, "clean": specs,
            "priorities": {n: i for i, n in enumerate(mix.sources)}}  # dedup survivors: earlier sources win

    def ordered(recs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return sorted(recs, key=lambda r: (names.index(r["source"]), r["file_index"]))

    if not needs_resolve(specs):
        recs = executor.map_jobs(worker, {**init, "mode": "single"}, jobs, f"{phase.name}: {verb}")
        return ordered(list(recs)), {}
    map_jobs = [{**j, "out": str(work / "clean" / Path(j["out"]).parent.name / Path(j["out"]).name)} for j in jobs]
    mapped = ordered(list(executor.map_jobs(worker, {**init, "mode": "map"}, map_jobs, f"{phase.name}: clean")))
    drops = work / "clean" / "drops.parquet"
    counts = resolve_build_drops(mapped, specs, drops, isinstance(executor, RayExecutor))
    tok_jobs = [{**j, "cleaned": m["out"]} for j, m in zip(jobs, map_jobs)]
    recs = executor.map_jobs(worker, {**init, "mode": "tokenize", "drops": str(drops)}, tok_jobs,
                             f"{phase.name}: {verb}")
    return ordered(list(recs)), counts


def _clean_outputs(phase_dir: Path, records: list[dict[str, Any]], specs: dict[str, Any],
                   drop_counts: dict[str, int]) -> dict[str, Any]:
    """The manifest's `cleaning` entry (per source: the spec's stages, flagged samples) and
    `decontamination.json` (every benchmark item -> record match) when cleaning ran."""
    from zaya_data.clean.build import merged_decontam_report
    from zaya_data.io import atomic_write_text

    if not any(not s.is_noop for s in specs.values()):
        return {}
    out: dict[str, Any] = {"dedup_drops": drop_counts, "sources": {}}
    for n, s in specs.items():
        if s.is_noop:
            continue
        stages = [st for st, on in (("quality", bool(s.quality)), ("language", s.language is not None),
                                    ("validate", s.validate is not None),
                                    ("decontaminate", s.decontaminate is not None),
                                    ("exact_dedup", s.exact_dedup), ("near_dedup", s.near_dedup is not None),
                                    ("problem_dedup", s.problem_dedup is not None)) if on]
        flagged = sum(r.get("clean_stats", {}).get("validate_flagged", 0) for r in records if r["source"] == n)
        out["sources"][n] = {"stages": stages, "validate_flagged": flagged}
    if any(s.decontaminate is not None for s in specs.values()):
        from zaya_data.io import sha256_file

        path = phase_dir / "decontamination.json"
        atomic_write_text(path, json.dumps(merged_decontam_report(records, specs), indent=1, sort_keys=True) + "\n")
        # its checksum goes in the manifest (written after it), for `zaya-data verify`
        out["decontamination"] = {"file": path.name, "sha256": sha256_file(path)}
    return out


def _build_prompts(mix, phase, cfg, chash, names, units, phase_dir, work, executor, seed, strict, command, specs):
    """RL phases: prompt sets chosen by weight over prompt counts, no tokens or packing."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from zaya_data.io import atomic_replace, sha256_file, tmp_path_for
    from zaya_data.manifest import write_manifest
    from zaya_data.mixing import record_hashes
    from zaya_data.tasks import read_part

    clock = Clock()
    jobs = group_jobs(mix, units, work)
    init = dict(template=asdict(phase.template), strict=strict)
    drop_counts: dict[str, int] = {}
    if any(not s.is_noop for s in specs.values()):
        from zaya_data.clean.build import CleanPromptWorker

        records, drop_counts = _clean_jobs(CleanPromptWorker, init, mix, phase, names, specs, jobs, work, executor,
                                           "prompts")
    else:
        records = list(executor.map_jobs(PromptWorker, init, jobs, f"{phase.name}: prompts"))
        records.sort(key=lambda r: (names.index(r["source"]), r["file_index"]))
    clock.mark("read+prompts")
    ledger = Ledger()
    for r in records:
        ledger.merge(Ledger.from_dict(r["ledger"]))
    tables = {n: pa.concat_tables([read_part(r["part"]) for r in records if r["source"] == n]) for n in names}
    available = {n: tables[n].num_rows for n in names}
    target_share, targets = source_targets(phase, mix.sources, available, phase.prompt_budget or 0)
    chosen = []
    sources_out = {}
    short = {}
    all_sels = {}
    for n in names:
        t = tables[n]
        h = record_hashes(t["id"].to_pylist(), t["file_index"].to_numpy(), t["row_index"].to_numpy())
        max_rep = phase.max_repetition_per_source.get(n, phase.max_repetition)
        sel = select_source(n, np.ones(t.num_rows, np.int64), h, targets[n], max_rep, seed, f"{phase.name}/{n}")
        all_sels[n] = sel
        if sel.shortfall:
            short[n] = sel
        picked = t.take(pa.array(sel.records, pa.int64())).append_column("epoch", pa.array(sel.epochs, pa.int32()))
        chosen.append(picked)
        unused = t.num_rows - sel.unique_records()
        if unused:
            ledger.reject("mix", "not_selected", n, detail="prompt budget reached before this record", count=unused)
        sources_out[n] = {
            "category": mix.sources[n].category, "target_prompts": targets[n], "prompts": int(len(sel.records)),
            "unique_prompts": sel.unique_records(), "available_prompts": available[n],
            "repetition": round(sel.repetition, 6),
            "input_records": sum(r["input_records"] for r in records if r["source"] == n),
            "rejected_records": ledger.total(source=n) - unused, "not_selected_records": unused,
            "shortfall_prompts": sel.shortfall,
        }
    if short and not phase.allow_shortfall:
        raise ShortfallError(
            f"phase {phase.name!r} ({phase.origin}): sources cannot reach their prompt targets: "
            + ", ".join(f"{n} short by {s.shortfall}" for n, s in short.items())
            + "; add data, raise max_repetition, lower prompt_budget, or set allow_shortfall: true"
        )
    table = pa.concat_tables(chosen)
    key = np.random.default_rng(np.random.PCG64(seed)).permutation(table.num_rows)
    table = table.take(pa.array(key, pa.int64()))
    out = phase_dir / "prompts-00000.parquet"
    tmp = tmp_path_for(out)
    pq.write_table(table, tmp, compression="zstd", row_group_size=8192)
    atomic_replace(tmp, out)
    ledger.write(phase_dir / "ledger.json")
    from zaya_data.explain import prompt_fates, write_fate_index

    unit_paths: dict[str, dict[int, str]] = {}
    for j in jobs:
        for u in j["units"]:
            unit_paths.setdefault(u["source"], {})[u["file_index"]] = u["path"]
    fate_info = write_fate_index(phase_dir, prompt_fates(names, tables, all_sels, key, unit_paths),
                                 [f for r in records for f in r.get("fates", [])], names)
    cleaning = _clean_outputs(phase_dir, records, specs, drop_counts)
    counts: dict[str, int] = {}
    for n in names:
        key_ = n if phase.weights_by == "source" else mix.sources[n].category
        counts[key_] = counts.get(key_, 0) + sources_out[n]["prompts"]
    target: dict[str, float] = {}
    for n, s in target_share.items():
        k = n if phase.weights_by == "source" else mix.sources[n].category
        target[k] = target.get(k, 0.0) + s
    manifest = {
        "format_version": 1, "tool": "zaya-data", "tool_version": __version__, "phase": phase.name,
        "kind": "prompts", "seed": seed, "created_by_command": command, "config": cfg, "config_sha256": chash,
        "template": asdict(phase.template), "prompt_budget": phase.prompt_budget,
        "weights": {"by": phase.weights_by, "raw": phase.weights, "target": target,
                    "realized": realized_shares(counts)},
        "sources": sources_out,
        "totals": {"prompts": table.num_rows,
                   "rejected_records": sum(s["rejected_records"] for s in sources_out.values())},
        "shards": [{"file": out.name, "rows": table.num_rows, "sha256": sha256_file(out),
                    "bytes": out.stat().st_size}],
        "ledger": "ledger.json", "records": fate_info,
    }
    if cleaning:
        manifest["cleaning"] = cleaning
    _remove_stale_temps(phase_dir)
    write_manifest(phase_dir, manifest)
    (phase_dir / ".zaya-build").unlink(missing_ok=True)
    clock.mark("select+write")
    _write_timings(work.parent, phase.name, clock.laps)
    return PhaseResult(phase.name, "built", manifest, clock.laps)


def dry_run(mix: MixtureSpec, phases: list[str]) -> list[dict[str, Any]]:
    """What a build would do, without reading records: files found and targets."""
    out = []
    for p in phases:  # a bad clean: section already failed at load (zaya_data.config)
        phase = mix.phases[p]
        names = phase_sources(phase, mix.sources)
        units = _units(mix, names)
        budget = phase.token_budget if phase.kind == "packed" else phase.prompt_budget
        # Without reading, category weights split evenly between a category's sources.
        shares, targets = source_targets(phase, mix.sources, {n: 1 for n in names}, budget or 0)
        for n in names:
            out.append({"phase": p, "source": n, "category": mix.sources[n].category,
                        "units": sum(1 for s, _ in units if s == n), "target_share": shares[n],
                        "target": targets[n], "unit_of_budget": "tokens" if phase.kind == "packed" else "prompts"})
    return out


def command_line() -> str:
    return " ".join(["zaya-data", *sys.argv[1:]])
