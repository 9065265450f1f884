"""The fate of every input record of a phase: written by the build, read by `zaya-data explain`.

The ledger keeps counts and a few example ids per reason, which cannot answer "what
happened to record X?". So every phase also writes `records.parquet`, one row per input
record that reached a stage with an id (malformed lines that never got one are rows
with a null id), in canonical order (source in mixture order, file, row):

    id, source, file_index, row_index, file
    fate            packed | selected (prompt phases) | not_selected | dropped
    stage, reason   where and why it was dropped (ledger stage and reason)
    detail          the ledger's detail ("survivor <id>", "aime item 60", ...)
    flags           checks that failed under a flag policy ("validate:answer_mismatch")
    tokens, pieces, trimmed_tokens   after tokenize/trim (null when dropped before)
    epochs          times the mixer used it
    placements      list of {shard, row, segment, piece, epoch}: shard is the index in the
                    manifest's `shards`, row the row inside that shard, segment the
                    position in the row's `segment_ids`

It is built on the driver from the tokenized parts' metadata, the packing plan and the
workers' *fates* sidecars (`zaya_data.clean.build.FATE_LOG`), one source at a time, so
its cost is a few dozen bytes per record, and it depends only on the build's inputs
(the same bytes for any number of workers).

`explain(out, query)` then answers from the build's files only; nothing is rebuilt.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

RECORDS_NAME = "records.parquet"

PLACEMENT = pa.struct(
    [
        pa.field("shard", pa.int32()),
        pa.field("row", pa.int32()),
        pa.field("segment", pa.int32()),
        pa.field("piece", pa.int32()),
        pa.field("epoch", pa.int32()),
    ]
)
RECORDS = pa.schema(
    [
        pa.field("id", pa.string()),
        pa.field("source", pa.string()),
        pa.field("file_index", pa.int32()),
        pa.field("row_index", pa.int64()),
        pa.field("file", pa.string()),
        pa.field("fate", pa.string()),
        pa.field("stage", pa.string()),
        pa.field("reason", pa.string()),
        pa.field("detail", pa.string()),
        pa.field("flags", pa.string()),
        pa.field("tokens", pa.int64()),
        pa.field("pieces", pa.int32()),
        pa.field("trimmed_tokens", pa.int64()),
        pa.field("epochs", pa.int32()),
        pa.field("placements", pa.list_(PLACEMENT)),
    ]
)


class ExplainError(ValueError):
    """Bad input: no such folder, no phase in it, a phase without a fate index."""


# ---------------------------------------------------------------------------------------
# writing (the build)


@dataclass
class SourceFates:
    """The records of one source that reached the mixer, and every use of them."""

    name: str
    ids: list[str] | pa.Array
    file_index: np.ndarray
    row_index: np.ndarray
    files: dict[int, str]  # file_index -> path
    tokens: np.ndarray | None  # None in prompt phases
    pieces: np.ndarray | None
    trimmed_tokens: np.ndarray | None
    kept_fate: str  # "packed" or "selected"
    # one entry per use (a piece of a record in one epoch), any order
    use_record: np.ndarray
    use_epoch: np.ndarray
    use_piece: np.ndarray
    use_shard: np.ndarray
    use_row: np.ndarray
    use_segment: np.ndarray


def packed_fates(names: list[str], items: dict[str, Any], sels: dict[str, Any], uses: Any,
                 rows: list[np.ndarray], shard_rows: int, records: list[dict[str, Any]]) -> list[SourceFates]:
    """SourceFates of a packed phase from the plan (`plan.SourceItems`, selections, uses,
    packed rows of use indices) and the job records (unit paths)."""
    n_uses = len(uses.item)
    use_row = np.zeros(n_uses, np.int64)
    use_seg = np.zeros(n_uses, np.int64)
    if rows:
        lens = np.fromiter((len(r) for r in rows), np.int64, count=len(rows))
        flat = np.concatenate(rows).astype(np.int64)
        use_row[flat] = np.repeat(np.arange(len(rows)), lens)
        use_seg[flat] = np.arange(len(flat)) - np.repeat(np.cumsum(lens) - lens, lens)
    # `shards` are sorted by file name = shard index order (shard-NNNNN), so the index of a
    # row's shard in the manifest is row // shard_rows
    out = []
    start = 0
    for i, n in enumerate(names):
        it, sel = items[n], sels[n]
        counts = it.rec_count[sel.records]
        block = slice(start, start + int(counts.sum()))
        start = block.stop
        assert (uses.source[block] == i).all(), "uses are concatenated in source order"
        sel_of_use = np.repeat(np.arange(len(sel.records)), counts)
        paths: dict[int, str] = {}
        for r in records:
            if r["source"] == n:
                paths.update({int(k): v for k, v in r.get("unit_paths", {str(r["file_index"]): r["path"]}).items()})
        trimmed = (np.add.reduceat(it.trimmed_tokens, it.rec_start) if len(it.rec_start)
                   else np.zeros(0, np.int64))
        grow = use_row[block]
        out.append(SourceFates(
            name=n, ids=it.rec_ids, file_index=it.rec_file_index, row_index=it.rec_row_index, files=paths,
            tokens=it.rec_tokens, pieces=it.rec_count, trimmed_tokens=trimmed, kept_fate="packed",
            use_record=sel.records[sel_of_use], use_epoch=sel.epochs[sel_of_use],
            use_piece=it.piece[uses.item[block]], use_shard=grow // shard_rows, use_row=grow % shard_rows,
            use_segment=use_seg[block],
        ))
    return out


def prompt_fates(names: list[str], tables: dict[str, pa.Table], sels: dict[str, Any], order: np.ndarray,
                 paths: dict[str, dict[int, str]]) -> list[SourceFates]:
    """SourceFates of a prompt phase: `order[j]` is the index, in the concatenation of the
    sources' selections, of the prompt written at row j."""
    pos = np.empty(len(order), np.int64)
    pos[order] = np.arange(len(order))
    out, start = [], 0
    for n in names:
        t, sel = tables[n], sels[n]
        k = len(sel.records)
        fi = t["file_index"].to_numpy().astype(np.int64)
        out.append(SourceFates(
            name=n, ids=t["id"].to_pylist(), file_index=fi, row_index=t["row_index"].to_numpy().astype(np.int64),
            files=paths.get(n, {}), tokens=None, pieces=None, trimmed_tokens=None,
            kept_fate="selected", use_record=sel.records, use_epoch=sel.epochs, use_piece=np.zeros(k, np.int64),
            use_shard=np.zeros(k, np.int64), use_row=pos[start:start + k], use_segment=np.zeros(k, np.int64),
        ))
        start += k
    return out


def _source_table(sf: SourceFates, dropped: pa.Table, flagged: dict[tuple, str]) -> pa.Table:
    n = len(sf.ids)
    epochs = np.bincount(sf.use_record, minlength=n).astype(np.int32) if n else np.zeros(0, np.int32)
    order = np.lexsort((sf.use_piece, sf.use_epoch, sf.use_record))
    rec = sf.use_record[order]
    offsets = np.zeros(n + 1, np.int32)
    if n:
        np.cumsum(np.bincount(rec, minlength=n), out=offsets[1:])
    struct = pa.StructArray.from_arrays(
        [pa.array(a[order].astype(np.int32)) for a in (sf.use_shard, sf.use_row, sf.use_segment, sf.use_piece,
                                                         sf.use_epoch)],
        fields=list(PLACEMENT),
    )

    def opt(a: np.ndarray | None, typ: pa.DataType) -> pa.Array:
        return pa.nulls(n, typ) if a is None else pa.array(a.astype(typ.to_pandas_dtype()), typ)

    # Vectorized: a source may hold hundreds of millions of records; Python touches only
    # the few flagged ones and each distinct file once.
    if flagged:
        keys = zip([sf.name] * n, sf.file_index.tolist(), sf.row_index.tolist())
        flags = pa.array([flagged.get(k) for k in keys], pa.string())
    else:
        flags = pa.nulls(n, pa.string())
    uniq, inv = np.unique(sf.file_index, return_inverse=True)
    files = pa.array([sf.files.get(int(f)) for f in uniq], pa.string()).take(pa.array(inv.astype(np.int64)))
    fate = pc.if_else(pa.array(epochs > 0), pa.scalar(sf.kept_fate), pa.scalar("not_selected"))
    kept = pa.table({
        "id": sf.ids if isinstance(sf.ids, pa.Array) else pa.array(sf.ids, pa.string()), "source": pa.repeat(pa.scalar(sf.name), n),
        "file_index": pa.array(sf.file_index.astype(np.int32)), "row_index": pa.array(sf.row_index.astype(np.int64)),
        "file": files, "fate": fate,
        "stage": pa.nulls(n, pa.string()), "reason": pa.nulls(n, pa.string()), "detail": pa.nulls(n, pa.string()),
        "flags": flags,
        "tokens": opt(sf.tokens, pa.int64()), "pieces": opt(sf.pieces, pa.int32()),
        "trimmed_tokens": opt(sf.trimmed_tokens, pa.int64()), "epochs": pa.array(epochs, pa.int32()),
        "placements": pa.ListArray.from_arrays(pa.array(offsets), struct),
    }, schema=RECORDS)
    m = len(dropped)
    drop = pa.table({
        "id": dropped["id"], "source": dropped["source"], "file_index": dropped["file_index"],
        "row_index": dropped["row_index"], "file": dropped["file"], "fate": pa.array(["dropped"] * m, pa.string()),
        "stage": dropped["stage"], "reason": dropped["reason"], "detail": dropped["detail"],
        "flags": pa.nulls(m, pa.string()), "tokens": pa.nulls(m, pa.int64()), "pieces": pa.nulls(m, pa.int32()),
        "trimmed_tokens": pa.nulls(m, pa.int64()), "epochs": pa.array(np.zeros(m, np.int32)),
        "placements": pa.array([[]] * m, pa.list_(PLACEMENT)),
    }, schema=RECORDS)
    both = pa.concat_tables([kept, drop])
    return both.sort_by([("file_index", "ascending"), ("row_index", "ascending"), ("fate", "ascending")])


def write_fate_index(phase_dir: Path, sources: list[SourceFates], fate_files: list[str],
                     names: list[str]) -> dict[str, Any]:
    """Write `phase_dir/records.parquet` (one row group per source, in mixture order) and
    return its manifest entry."""
    from zaya_data.clean.build import FATE_LOG, read_arrow
    from zaya_data.io import atomic_replace, sha256_file, tmp_path_for

    logs = [read_arrow(f) for f in fate_files]
    log = pa.concat_tables(logs) if logs else FATE_LOG.empty_table()
    flagged_rows = log.filter(pc.equal(log["outcome"], "flagged")).to_pylist()
    flagged: dict[tuple, str] = {}
    for r in flagged_rows:
        k = (r["source"], r["file_index"], r["row_index"])
        flagged[k] = ",".join(filter(None, [flagged.get(k), f"{r['stage']}:{r['reason']}"]))
    dropped = log.filter(pc.equal(log["outcome"], "dropped"))
    path = phase_dir / RECORDS_NAME
    tmp = tmp_path_for(path)
    total = 0
    by_name = {s.name: s for s in sources}
    with pq.ParquetWriter(tmp, RECORDS, compression="zstd") as w:
        for n in names:
            t = _source_table(by_name[n], dropped.filter(pc.equal(dropped["source"], n)), flagged)
            w.write_table(t)
            total += t.num_rows
    atomic_replace(tmp, path)
    return {"file": RECORDS_NAME, "rows": total, "sha256": sha256_file(path)}


# ---------------------------------------------------------------------------------------
# reading (zaya-data explain)

# (stage, step label) in the order a record meets them; "dedup" drops are split by reason.
CLEAN_STEPS = [
    ("quality", "quality filters"),
    ("language", "language id"),
    ("validate", "validation"),
    ("decontaminate", "decontamination"),
    ("dedup", "exact / near dedup"),
    ("problem_dedup", "problem dedup"),
]
_STAGE_ENABLED = {
    "quality": ("quality",), "language": ("language",), "validate": ("validate",),
    "decontaminate": ("decontaminate",), "dedup": ("exact_dedup", "near_dedup"), "problem_dedup": ("problem_dedup",),
}


def find_phases(out: Path) -> list[Path]:
    if not out.is_dir():
        raise ExplainError(f"{out}: no such folder")
    if (out / "manifest.json").is_file():
        return [out]
    phases = sorted(p for p in out.iterdir() if (p / "manifest.json").is_file())
    if not phases:
        raise ExplainError(f"{out}: no finished phase here (no */manifest.json)")
    return phases


def _index(phase: Path) -> pa.Table | None:
    p = phase / RECORDS_NAME
    return pq.read_table(p) if p.is_file() else None


def resolve_id(tables: dict[str, pa.Table], query: str) -> tuple[str | None, list[str]]:
    """(the id, []) for an exact id or a unique prefix; (None, candidates) otherwise."""
    for t in tables.values():
        if pc.any(pc.equal(t["id"], query)).as_py():
            return query, []
    found: set[str] = set()
    for t in tables.values():
        hit = t.filter(pc.fill_null(pc.starts_with(t["id"], query), False))
        found.update(hit["id"].to_pylist())
        if len(found) > 50:
            break
    if len(found) == 1:
        return found.pop(), []
    return None, sorted(found)


def _shard_check(phase: Path, shard_file: str, row: int, segment: int) -> str | None:
    """The segment id written at (row, segment) of a shard, read back from the file."""
    path = phase / shard_file
    if not path.is_file():
        return None
    pf = pq.ParquetFile(path)
    rg_rows = pf.metadata.row_group(0).num_rows if pf.metadata.num_row_groups else 0
    if not rg_rows:
        return None
    g, r = divmod(row, rg_rows)
    col = "segment_ids" if "segment_ids" in pf.schema_arrow.names else "id"
    t = pf.read_row_group(g, columns=[col])
    v = t[col][r].as_py()
    return v[segment] if isinstance(v, list) else v


def _step(name: str, status: str, detail: str = "", **extra: Any) -> dict[str, Any]:
    return {"step": name, "status": status, "detail": detail, **extra}


def _explain_row(phase: Path, manifest: dict[str, Any], row: dict[str, Any], table: pa.Table,
                 decontam: list[dict[str, Any]]) -> dict[str, Any]:
    src = row["source"]
    kind = manifest.get("kind", "packed")
    enabled = set((manifest.get("cleaning") or {}).get("sources", {}).get(src, {}).get("stages", []))
    where = f"{row['file'] or '?'}" + (f" row {row['row_index']}" if row["row_index"] is not None and row["row_index"] >= 0 else "")
    steps = []
    dropped_at = row["stage"] if row["fate"] == "dropped" else None
    reached = True
    if dropped_at == "read":
        steps.append(_step("read", "dropped", f"{row['reason']}: {row['detail'] or ''}".strip(": "), reason=row["reason"]))
        reached = False
    else:
        steps.append(_step("read", "ok", f"{where} (source {src}, file {row['file_index']})"))
    drop_key = dropped_at
    if dropped_at == "dedup" and row["reason"] == "problem_over_k":
        drop_key = "problem_dedup"
    for key, label in CLEAN_STEPS:
        on = any(e in enabled for e in _STAGE_ENABLED[key])
        if not reached:
            steps.append(_step(label, "not reached"))
            continue
        if drop_key == key:
            steps.append(_clean_drop(label, row, table, decontam))
            reached = False
        elif not on:
            steps.append(_step(label, "off"))
        else:
            flags = [f for f in (row["flags"] or "").split(",") if f.startswith(key + ":")]
            steps.append(_step(label, "flagged" if flags else "passed", ", ".join(flags)))
    tok_label = "tokenize / trim" if kind == "packed" else "render prompt"
    if not reached:
        steps.append(_step(tok_label, "not reached"))
    elif dropped_at in ("tokenize", "trim"):
        steps.append(_step(tok_label, "dropped", f"{dropped_at}/{row['reason']}: {row['detail'] or ''}".strip(": "),
                           reason=row["reason"]))
        reached = False
    elif kind == "packed":
        trimmed = row["trimmed_tokens"] or 0
        pieces = row["pieces"] or 1
        d = f"{row['tokens']:,} tokens"
        d += f", trimmed (answer-preserving): {trimmed:,} reasoning tokens cut" if trimmed else ", not trimmed"
        if pieces > 1:
            d += f", split into {pieces} pieces of at most {manifest['context']:,} tokens"
        steps.append(_step(tok_label, "ok", d, tokens=row["tokens"], trimmed=bool(trimmed),
                           trimmed_tokens=trimmed, pieces=pieces))
    else:
        steps.append(_step(tok_label, "ok"))
    if not reached:
        steps.append(_step("mixing", "not reached"))
    elif row["fate"] == "not_selected":
        steps.append(_step("mixing", "not selected", "the source's target was reached before this record "
                                                     "in the seeded selection order", epochs=0))
        reached = False
    else:
        e = row["epochs"]
        steps.append(_step("mixing", "selected", f"used {e} time{'s' if e != 1 else ''} (epochs "
                           f"{sorted({p['epoch'] for p in row['placements']})})", epochs=e))
    places = []
    shards = manifest.get("shards", [])
    for p in row["placements"] if reached else []:
        f = shards[p["shard"]]["file"] if p["shard"] < len(shards) else f"shard #{p['shard']}"
        written = _shard_check(phase, f, p["row"], p["segment"]) if kind == "packed" else None
        expect = row["id"] + (f"#{p['piece']}" if p["piece"] else "")
        rows_before = sum(int(s.get("rows", 0)) for s in shards[:p["shard"]])
        places.append({**p, "file": f, "global_row": rows_before + p["row"],
                       "verified": None if written is None else written == expect})
    if not reached:
        steps.append(_step("packing" if kind == "packed" else "prompt set", "not reached"))
    elif kind == "packed":
        d = "; ".join(f"{q['file']} row {q['row']} (global row {q['global_row']}), segment {q['segment']}"
                      + (f", piece {q['piece']}" if row["pieces"] and row["pieces"] > 1 else "")
                      + f", epoch {q['epoch']}"
                      + {True: " (checked in the shard)", False: " (MISMATCH: the shard holds another segment there)",
                         None: ""}[q["verified"]] for q in places)
        steps.append(_step("packing", "packed", d, placements=places))
    else:
        d = "; ".join(f"{q['file']} row {q['row']}, epoch {q['epoch']}" for q in places)
        steps.append(_step("prompt set", "written", d, placements=places))
    return {"source": src, "file": row["file"], "file_index": row["file_index"], "row_index": row["row_index"],
            "fate": row["fate"], "stage": row["stage"], "reason": row["reason"], "steps": steps}


def _clean_drop(label: str, row: dict[str, Any], table: pa.Table, decontam: list[dict[str, Any]]) -> dict[str, Any]:
    stage, reason, detail = row["stage"], row["reason"], row["detail"] or ""
    extra: dict[str, Any] = {"reason": reason}
    text = f"{stage}/{reason}" + (f": {detail}" if detail else "")
    if stage == "dedup" and detail.startswith("survivor "):
        sid = detail[len("survivor "):]
        extra["survivor"] = sid
        surv = table.filter(pc.equal(table["id"], sid))
        kept = [r for r in surv.to_pylist() if r["fate"] != "dropped"] or surv.to_pylist()
        if kept:
            s = kept[0]
            extra["survivor_source"] = s["source"]
            extra["survivor_fate"] = s["fate"]
            what = "exact" if reason == "exact_duplicate" else "near"
            if reason == "problem_over_k":
                what = "same-problem"
            text = (f"{stage}/{reason}: {what} duplicate of {sid} (source {s['source']}, "
                    f"{s['file'] or '?'} row {s['row_index']}; that record: {s['fate']})")
    if stage == "decontaminate":
        ms = [m for m in decontam if m["record_id"] == row["id"] and m["source"] == row["source"]
              and m["file_index"] == row["file_index"] and m["row_index"] == row["row_index"]]
        extra["matches"] = [{k: m[k] for k in ("benchmark", "item", "item_id", "match")} for m in ms]
        if ms:
            text = f"{stage}/{reason}: matches " + ", ".join(
                f"{m['benchmark']} item {m['item_id']} (record {m['item']} of the benchmark file, {m['match']} match)"
                for m in ms)
    return _step(label, "dropped", text, **extra)


def explain(out: Path, query: str) -> dict[str, Any]:
    """What happened to the record `query` (an id or a unique prefix of one) in every phase
    of the build at `out`. Returns {"status": "found" | "not_found" | "ambiguous", ...}."""
    from zaya_data.manifest import ManifestError, read_manifest

    if not query:
        raise ExplainError("empty record id")
    phases = find_phases(Path(out))
    tables: dict[str, pa.Table] = {}
    missing = []
    for p in phases:
        t = _index(p)
        if t is None:
            missing.append(p.name)
        else:
            tables[p.name] = t
    if not tables:
        raise ExplainError(f"{out}: no phase has a {RECORDS_NAME} (built by an older zaya-data?); rebuild to explain")
    rid, candidates = resolve_id(tables, query)
    base: dict[str, Any] = {"query": query, "out": str(out), "phases_without_index": missing}
    if rid is None:
        return {**base, "status": "ambiguous" if candidates else "not_found", "candidates": candidates[:50]}
    result: dict[str, Any] = {**base, "status": "found", "id": rid, "phases": {}}
    for p in phases:
        t = tables.get(p.name)
        if t is None:
            continue
        try:
            m = read_manifest(p)
        except ManifestError as e:
            raise ExplainError(str(e)) from e
        rows = t.filter(pc.equal(t["id"], rid)).to_pylist()
        if not rows:
            result["phases"][p.name] = {"kind": m.get("kind", "packed"), "occurrences": [],
                                        "note": "not an input of this phase"}
            continue
        decontam = []
        if (p / "decontamination.json").is_file():
            decontam = json.loads((p / "decontamination.json").read_text())["matches"]
        result["phases"][p.name] = {
            "kind": m.get("kind", "packed"), "context": m.get("context"),
            "occurrences": [_explain_row(p, m, r, t, decontam) for r in rows],
        }
    return result
