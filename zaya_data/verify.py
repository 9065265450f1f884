"""`zaya-data verify`: check a finished phase directory against its manifest.

Shallow checks (always): the manifest parses; every listed shard exists with the listed
sha256, size and row count; no stray `shard-*.parquet` the manifest does not list; no
temporary files left by an interrupted write; the manifest's shard entries add up to its
totals; the phase's other outputs that the manifest records a checksum for
(`records.parquet`, the per-record fate index, and `decontamination.json`) exist with that
sha256 (and the fate index with its row count). Deep checks (default) read every row, one row group at a time so memory stays
bounded by a row group: exact row length, segment lengths + padding = context, per-segment
lists of equal length, padding made of pad ids with loss 0, and recounted tokens per
source, per shard and in total equal to what the manifest says.

An RL prompt phase (`kind: prompts`) is checked the same way over its `prompts-*.parquet`
files (sha256, size, rows, totals.prompts; deep: no empty prompt, prompts per source).

Every problem names the shard file, the row (0-based, within the shard) where it applies
and what is wrong.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from zaya_data.io import sha256_file
from zaya_data.manifest import MANIFEST_NAME, ManifestError, read_manifest
from zaya_data.shards import PACKED, flat_lists

# Per shard and per kind of problem, report this many rows, then one summary line.
MAX_ROWS_PER_CHECK = 10
COUNT_KEYS = ("rows", "tokens", "padding_tokens", "loss_tokens", "segments")


@dataclass(frozen=True)
class Problem:
    file: str
    message: str
    row: int | None = None

    def __str__(self) -> str:
        where = self.file if self.row is None else f"{self.file} row {self.row}"
        return f"{where}: {self.message}"


@dataclass
class VerifyReport:
    phase_dir: Path
    problems: list[Problem] = field(default_factory=list)
    shards_checked: int = 0
    rows_checked: int = 0
    deep: bool = True

    @property
    def ok(self) -> bool:
        return not self.problems

    def add(self, file: str, message: str, row: int | None = None) -> None:
        self.problems.append(Problem(file, message, row))

    def __str__(self) -> str:
        head = (
            f"{self.phase_dir}: {'OK' if self.ok else f'{len(self.problems)} problem(s)'} "
            f"({self.shards_checked} shards, {self.rows_checked} rows checked"
            f"{'' if self.deep else ', shallow'})"
        )
        return "\n".join([head, *(f"  {p}" for p in self.problems)])


def _report_rows(report: VerifyReport, file: str, rows: np.ndarray, base: int, what: Any) -> None:
    """Add one problem per bad row (up to the cap), then a count of the rest.
    `what(i)` gives the message for local row index i."""
    for i in rows[:MAX_ROWS_PER_CHECK].tolist():
        report.add(file, what(i), base + i)
    if rows.size > MAX_ROWS_PER_CHECK:
        report.add(file, f"... and {rows.size - MAX_ROWS_PER_CHECK} more rows with the same kind of problem")


@dataclass
class _Counts:
    rows: int = 0
    tokens: int = 0
    padding_tokens: int = 0
    loss_tokens: int = 0
    segments: int = 0
    by_source: dict[str, list[int]] = field(default_factory=dict)  # name -> [tokens, segments]
    # False once a row's segment_sources does not line up with its segment_lengths: the
    # row is reported, and per-source recounts would only add confusing follow-on errors.
    sources_aligned: bool = True

    def as_dict(self) -> dict[str, int]:
        return {k: getattr(self, k) for k in COUNT_KEYS}

    def merge(self, other: _Counts) -> None:
        for k in COUNT_KEYS:
            setattr(self, k, getattr(self, k) + getattr(other, k))
        for name, (t, s) in other.by_source.items():
            acc = self.by_source.setdefault(name, [0, 0])
            acc[0] += t
            acc[1] += s
        self.sources_aligned &= other.sources_aligned


def _check_row_group(
    report: VerifyReport, file: str, tbl: pa.Table, base: int, context: int, pad_id: int | None, counts: _Counts
) -> None:
    n = tbl.num_rows
    ids_v, ids_s, ids_n = flat_lists(tbl.column("input_ids"))
    mask_v, mask_s, mask_n = flat_lists(tbl.column("loss_mask"))
    seg_v, seg_s, seg_n = flat_lists(tbl.column("segment_lengths"))
    seg_v = seg_v.astype(np.int64)
    pad = tbl.column("num_padding").to_numpy().astype(np.int64)

    bad = np.flatnonzero(ids_n != context)
    _report_rows(report, file, bad, base, lambda i: f"input_ids has {ids_n[i]} tokens, context is {context}")
    bad = np.flatnonzero(mask_n != ids_n)
    _report_rows(report, file, bad, base, lambda i: f"loss_mask has {mask_n[i]} values, input_ids {ids_n[i]}")
    for name in ("segment_sources", "segment_ids", "segment_categories"):
        _, _, other_n = flat_lists(tbl.column(name))
        bad = np.flatnonzero(other_n != seg_n)
        _report_rows(
            report, file, bad, base,
            lambda i, name=name, on=other_n: f"{name} has {on[i]} entries, segment_lengths {seg_n[i]}",
        )
    csum = np.concatenate([[0], np.cumsum(seg_v)])
    seg_sum = csum[seg_s + seg_n] - csum[seg_s]
    bad = np.flatnonzero(seg_sum + pad != context)
    _report_rows(
        report, file, bad, base,
        lambda i: f"segment lengths sum to {seg_sum[i]} + num_padding {pad[i]} != context {context}",
    )
    seg_row = np.repeat(np.arange(n), seg_n)
    bad = np.unique(seg_row[seg_v < 1])
    _report_rows(report, file, bad, base, lambda i: "a segment has length < 1")
    bad = np.flatnonzero((pad < 0) | (pad > context))
    _report_rows(report, file, bad, base, lambda i: f"num_padding {pad[i]} outside [0, {context}]")
    mask_row = np.repeat(np.arange(n), mask_n)
    bad = np.unique(mask_row[mask_v > 1])
    _report_rows(report, file, bad, base, lambda i: "loss_mask has a value other than 0/1")

    # Padding: the last num_padding positions of a well-formed row are pad ids, loss 0.
    ok = np.flatnonzero((ids_n == context) & (mask_n == context) & (pad >= 0) & (pad <= context))
    if ok.size:
        cols = np.arange(context, dtype=np.int64)
        ids = ids_v[ids_s[ok][:, None] + cols]
        mask = mask_v[mask_s[ok][:, None] + cols]
        in_pad = cols[None, :] >= (context - pad[ok])[:, None]
        if pad_id is not None:
            bad = ok[np.any(in_pad & (ids != pad_id), axis=1)]
            _report_rows(report, file, bad, base, lambda i: f"a padding position holds a token other than pad id {pad_id}")
        bad = ok[np.any(in_pad & (mask != 0), axis=1)]
        _report_rows(report, file, bad, base, lambda i: "a padding position has loss_mask 1")

    counts.rows += n
    counts.tokens += int(seg_v.sum())
    counts.padding_tokens += int(pad.sum())
    counts.loss_tokens += int(np.count_nonzero(mask_v))
    counts.segments += int(seg_n.sum())
    src_v, _, src_n = flat_lists(tbl.column("segment_sources"))
    if not np.array_equal(src_n, seg_n):
        counts.sources_aligned = False
    elif src_v.size:
        names, inverse = np.unique(src_v, return_inverse=True)
        tok = np.bincount(inverse, weights=seg_v, minlength=names.size)
        num = np.bincount(inverse, minlength=names.size)
        for name, t, s in zip(names.tolist(), tok.tolist(), num.tolist()):
            acc = counts.by_source.setdefault(name, [0, 0])
            acc[0] += int(t)
            acc[1] += int(s)


def _check_shard_rows(
    report: VerifyReport, path: Path, context: int, pad_id: int | None
) -> _Counts | None:
    counts = _Counts()
    with pa.memory_map(str(path), "r") as source:
        pf = pq.ParquetFile(source)
        if not pf.schema_arrow.equals(PACKED):
            report.add(path.name, f"schema is not the packed-shard schema: {pf.schema_arrow}")
            return None
        base = 0
        for g in range(pf.num_row_groups):
            tbl = pf.read_row_group(g)
            _check_row_group(report, path.name, tbl, base, context, pad_id, counts)
            base += tbl.num_rows
            del tbl
    return counts


def _compare(report: VerifyReport, file: str, what: str, listed: Any, found: int) -> None:
    if listed != found:
        report.add(file, f"{what}: manifest says {listed!r}, shards hold {found}")


def _sidecar_entries(manifest: dict[str, Any]) -> list[tuple[str, Any]]:
    """(manifest key, entry) of every non-shard output the manifest lists: the fate index
    and the decontamination report. An entry is {"file", "sha256"[, "rows"]}; a manifest
    written before checksums were recorded names the report by its file name only."""
    out: list[tuple[str, Any]] = []
    if "records" in manifest:
        out.append(("records", manifest["records"]))
    cleaning = manifest.get("cleaning")
    if isinstance(cleaning, dict) and "decontamination" in cleaning:
        out.append(("cleaning.decontamination", cleaning["decontamination"]))
    return out


def _check_sidecars(report: VerifyReport, phase_dir: Path, manifest: dict[str, Any]) -> None:
    for key, entry in _sidecar_entries(manifest):
        name = entry.get("file") if isinstance(entry, dict) else entry
        if not isinstance(name, str) or not name or "/" in name or "\\" in name or name.startswith("."):
            report.add(MANIFEST_NAME, f"{key}: {name!r} is not a plain file name")
            continue
        path = phase_dir / name
        if not path.is_file():
            report.add(name, f"listed in the manifest ({key}) but missing")
            continue
        if not isinstance(entry, dict) or "sha256" not in entry:
            continue  # an older manifest: nothing to check the file against
        digest = sha256_file(path)
        if digest != entry["sha256"]:
            report.add(name, f"sha256 {digest} does not match the manifest's {entry['sha256']}")
            continue
        if "rows" in entry:
            try:
                rows = pq.ParquetFile(path).metadata.num_rows
            except Exception as e:  # matching sha but unreadable: the manifest recorded a bad file
                report.add(name, f"not a readable Parquet file: {e}")
                continue
            if entry["rows"] != rows:
                report.add(name, f"rows: manifest says {entry['rows']!r}, the file holds {rows}")


def _check_listed_file(report: VerifyReport, phase_dir: Path, name: str, entry: dict[str, Any]) -> Path | None:
    """A data file the manifest lists: present, with the listed size and sha256. None when
    it is missing (nothing more can be read from it)."""
    path = phase_dir / name
    if not path.is_file():
        report.add(name, "listed in the manifest but missing")
        return None
    report.shards_checked += 1
    size = path.stat().st_size
    if entry.get("bytes") is not None and entry["bytes"] != size:
        report.add(name, f"size {size} bytes, manifest says {entry['bytes']}")
    digest = sha256_file(path)
    if digest != entry.get("sha256"):
        report.add(name, f"sha256 {digest} does not match the manifest's {entry.get('sha256')}")
    return path


def verify_phase(phase_dir: str | Path, deep: bool = True) -> VerifyReport:
    """Check `phase_dir` against its manifest; see the module docstring for the list."""
    phase_dir = Path(phase_dir)
    report = VerifyReport(phase_dir=phase_dir, deep=deep)
    try:
        manifest = read_manifest(phase_dir)
    except ManifestError as e:
        report.add(MANIFEST_NAME, str(e))
        return report
    _check_sidecars(report, phase_dir, manifest)
    if manifest.get("kind") == "prompts":
        return _verify_prompt_phase(report, phase_dir, manifest, deep)
    context = manifest["context"]
    pad_id = (manifest.get("tokenizer") or {}).get("pad_id")

    listed = [s["file"] for s in manifest["shards"]]
    seen: set[str] = set()
    for name in listed:
        if name in seen:
            report.add(name, "listed twice in the manifest")
        seen.add(name)
    for p in sorted(phase_dir.iterdir()):
        if p.name.startswith(".") and ".tmp-" in p.name:
            report.add(p.name, "temporary file left by an interrupted write")
        elif p.name.startswith("shard-") and p.name.endswith(".parquet") and p.name not in seen:
            report.add(p.name, "shard file not listed in the manifest")

    listed_sum = {k: 0 for k in COUNT_KEYS}
    total = _Counts()
    recount_complete = True
    for entry in manifest["shards"]:
        name = entry["file"]
        for k in COUNT_KEYS:
            v = entry.get(k)
            if not isinstance(v, int) or isinstance(v, bool):
                report.add(MANIFEST_NAME, f"shard {name}: {k!r} missing or not an integer")
            else:
                listed_sum[k] += v
        path = _check_listed_file(report, phase_dir, name, entry)
        if path is None:
            recount_complete = False
            continue
        try:
            rows = pq.ParquetFile(path).metadata.num_rows
        except Exception as e:  # a corrupt footer is a finding, not a crash
            report.add(name, f"not a readable Parquet file: {e}")
            recount_complete = False
            continue
        _compare(report, name, "rows", entry.get("rows"), rows)
        if not deep:
            continue
        try:
            counts = _check_shard_rows(report, path, context, pad_id)
        except Exception as e:
            report.add(name, f"cannot read rows: {e}")
            counts = None
        if counts is None:
            recount_complete = False
            continue
        report.rows_checked += counts.rows
        for k, v in counts.as_dict().items():
            _compare(report, name, k, entry.get(k), v)
        total.merge(counts)

    totals = manifest.get("totals") or {}
    for k in COUNT_KEYS:
        if totals.get(k) != listed_sum[k]:
            report.add(MANIFEST_NAME, f"totals.{k} is {totals.get(k)!r} but the shard entries add up to {listed_sum[k]}")
        if deep and recount_complete:
            _compare(report, MANIFEST_NAME, f"totals.{k}", totals.get(k), getattr(total, k))
    eff = totals.get("packing_efficiency")
    if eff is not None and listed_sum["rows"]:
        expect = listed_sum["tokens"] / (listed_sum["rows"] * context)
        if not isinstance(eff, (int, float)) or not math.isclose(eff, expect, rel_tol=1e-9, abs_tol=1e-12):
            report.add(MANIFEST_NAME, f"totals.packing_efficiency is {eff!r}, tokens/(rows*context) is {expect!r}")

    if deep and recount_complete and total.sources_aligned:
        sources = manifest.get("sources") or {}
        for name in sorted(set(sources) | set(total.by_source)):
            tok, seg = total.by_source.get(name, [0, 0])
            info = sources.get(name)
            if info is None:
                report.add(MANIFEST_NAME, f"source {name!r} has {tok} tokens in the shards but is not in the manifest")
                continue
            _compare(report, MANIFEST_NAME, f"sources.{name}.tokens", info.get("tokens"), tok)
            if "segments" in info:
                _compare(report, MANIFEST_NAME, f"sources.{name}.segments", info.get("segments"), seg)
    return report


def _verify_prompt_phase(report: VerifyReport, phase_dir: Path, manifest: dict[str, Any], deep: bool) -> VerifyReport:
    """An RL prompt phase: `prompts-*.parquet` files with sha256 and row counts in the
    manifest, which add up to totals.prompts; deep, every prompt is non-empty and the
    prompts per source recount to the manifest's."""
    listed = [s.get("file") for s in manifest.get("shards") or []]
    seen: set[str] = set()
    for name in listed:
        if name in seen:
            report.add(str(name), "listed twice in the manifest")
        seen.add(str(name))
    for p in sorted(phase_dir.iterdir()):
        if p.name.startswith(".") and ".tmp-" in p.name:
            report.add(p.name, "temporary file left by an interrupted write")
        elif p.name.startswith("prompts-") and p.name.endswith(".parquet") and p.name not in seen:
            report.add(p.name, "prompt file not listed in the manifest")
    listed_rows = 0
    by_source: dict[str, int] = {}
    recount_complete = True
    for entry in manifest.get("shards") or []:
        name = str(entry.get("file"))
        rows = entry.get("rows")
        if not isinstance(rows, int) or isinstance(rows, bool):
            report.add(MANIFEST_NAME, f"prompt file {name}: 'rows' missing or not an integer")
        else:
            listed_rows += rows
        path = _check_listed_file(report, phase_dir, name, entry)
        if path is None:
            recount_complete = False
            continue
        try:
            table = pq.read_table(path, columns=["source", "prompt"]) if deep else None
            actual = pq.ParquetFile(path).metadata.num_rows
        except Exception as e:  # a corrupt file is a finding, not a crash
            report.add(name, f"not a readable prompt file: {e}")
            recount_complete = False
            continue
        _compare(report, name, "rows", rows, actual)
        if table is None:
            continue
        report.rows_checked += table.num_rows
        for i, (src, prompt) in enumerate(zip(table["source"].to_pylist(), table["prompt"].to_pylist())):
            if not prompt:
                report.add(name, "empty prompt", row=i)
            by_source[src] = by_source.get(src, 0) + 1
    totals = manifest.get("totals") or {}
    if totals.get("prompts") != listed_rows:
        report.add(MANIFEST_NAME, f"totals.prompts is {totals.get('prompts')!r} but the prompt files add up to {listed_rows}")
    if deep and recount_complete:
        sources = manifest.get("sources") or {}
        for src in sorted(set(sources) | set(by_source)):
            want = (sources.get(src) or {}).get("prompts", 0)
            if want != by_source.get(src, 0):
                report.add(MANIFEST_NAME, f"sources.{src}.prompts is {want!r}, the prompt files hold {by_source.get(src, 0)}")
    return report
