"""The audit of a build: what each phase was meant to contain, what it really contains,
and every place where the files disagree with each other.

Inputs are only files: `OUT/<phase>/manifest.json`, `OUT/<phase>/ledger.json` and the
shards. Shares, counts, repetition and lengths come from the independent recount
(`zaya_data.audit.recount`); the manifest supplies what cannot be recovered from packed
rows (targets, what was available, trimming, input records). Each manifest figure the
recount can reproduce is compared with it, and each mismatch is a `Finding`.

The result is plain JSON data (`audit_build(...)["phases"][name]`), rendered by
`terminal.py` and `html.py` and written as is by `--json`.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any

from zaya_data.audit.findings import AuditInputError, Finding
from zaya_data.audit.recount import (
    PackedRecount, Progress, PromptRecount, recount_packed, recount_prompts, recount_summary, stray_files,
)
from zaya_data.manifest import MANIFEST_NAME, ManifestError, read_manifest

AUDIT_FORMAT = 1
SHARE_TOL = 1e-9  # realized shares are ratios of recounted integers: they match exactly or not at all
REPETITION_TOL = 1e-6  # the manifest rounds repetition to 6 decimals
# Ledger stages in pipeline order (tables list rejections in the order records meet them).
PIPELINE_STAGES = ("read", "validate", "quality", "language", "filter", "dedup", "near_dedup", "problem_dedup",
                   "decont", "decontaminate", "format", "tokenize", "trim", "mix")


def removal_kind(stage: str) -> str | None:
    """"dedup" or "decont" when a ledger stage removes duplicates or benchmark overlap
    (the cleaning stages name themselves dedup / near_dedup / decontaminate)."""
    if "dedup" in stage:
        return "dedup"
    if stage.startswith("decont"):
        return "decont"
    return None


def find_phases(root: Path) -> list[Path]:
    """`root` itself when it is a phase folder, else its sub-folders that hold a manifest,
    in name order (`_work` and hidden folders are the build's scratch space)."""
    root = Path(root)
    if not root.exists():
        raise AuditInputError(f"{root}: no such folder")
    if not root.is_dir():
        raise AuditInputError(f"{root}: not a folder (give a build folder OUT or a phase folder OUT/<phase>)")
    if (root / MANIFEST_NAME).is_file():
        return [root]
    phases = sorted(p for p in root.iterdir()
                    if p.is_dir() and not p.name.startswith(("_", ".")) and (p / MANIFEST_NAME).is_file())
    if not phases:
        raise AuditInputError(f"{root}: no phase folders with a {MANIFEST_NAME} (is this a zaya-data build?)")
    return phases


def _share(part: float, whole: float) -> float:
    return part / whole if whole else 0.0


def _language(name: str, manifest: dict[str, Any]) -> str:
    """The language of a source when the build recorded one, else "unknown" (shards do
    not carry per-document language, and the audit does not guess)."""
    info = (manifest.get("sources") or {}).get(name) or {}
    cfg = ((manifest.get("config") or {}).get("sources") or {}).get(name) or {}
    for value in (info.get("language"), cfg.get("language"), (cfg.get("options") or {}).get("language")):
        if isinstance(value, str) and value:
            return value
    # A language filter that keeps exactly one language fixes what got through it.
    lang = ((cfg.get("clean") or {}).get("language") or {}) if isinstance(cfg.get("clean"), dict) else {}
    keep = lang.get("keep") if isinstance(lang, dict) else None
    if isinstance(keep, (list, tuple)) and len(keep) == 1 and isinstance(keep[0], str):
        return keep[0]
    if isinstance(keep, str) and keep:
        return keep
    return "unknown"


def _read_ledger(phase_dir: Path, manifest: dict[str, Any], phase: str, findings: list[Finding]) -> dict[str, Any] | None:
    name = manifest.get("ledger")
    if not name:
        return None
    path = phase_dir / str(name)
    if not path.is_file():
        findings.append(Finding(phase, str(name), "the manifest names this ledger but the file is missing"))
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        rows = data["rejections"]
        for i, r in enumerate(rows):
            for key in ("stage", "reason", "source", "count"):
                if key not in r:
                    raise ValueError(f"rejections[{i}] has no {key!r}")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        findings.append(Finding(phase, str(name), f"unreadable ledger: {e}"))
        return None
    return data


def _rejections(ledger: dict[str, Any] | None) -> dict[str, Any]:
    rows = []
    for r in (ledger or {}).get("rejections", []):
        ex = r.get("examples") or []
        rows.append({"stage": r["stage"], "reason": r["reason"], "source": r["source"], "count": int(r["count"]),
                     "example": ex[0] if ex else None})
    rows.sort(key=lambda r: (PIPELINE_STAGES.index(r["stage"]) if r["stage"] in PIPELINE_STAGES else len(PIPELINE_STAGES),
                             r["stage"], r["reason"], r["source"]))
    by_stage: dict[str, int] = {}
    by_reason: dict[str, int] = {}
    for r in rows:
        by_stage[r["stage"]] = by_stage.get(r["stage"], 0) + r["count"]
        key = f"{r['stage']}/{r['reason']}"
        by_reason[key] = by_reason.get(key, 0) + r["count"]
    removed = {kind: [r for r in rows if removal_kind(r["stage"]) == kind] for kind in ("dedup", "decont")}
    return {
        "present": ledger is not None,
        "rows": rows,
        "by_stage": by_stage,
        "by_reason": by_reason,
        "dedup": {"present": bool(removed["dedup"]), "removed": sum(r["count"] for r in removed["dedup"]),
                  "rows": removed["dedup"]},
        "decont": {"present": bool(removed["decont"]), "removed": sum(r["count"] for r in removed["decont"]),
                   "rows": removed["decont"]},
        # Records the mixer did not need are not rejections of bad data; keep them apart.
        "rejected_total": sum(r["count"] for r in rows if (r["stage"], r["reason"]) != ("mix", "not_selected")),
        "not_selected_total": sum(r["count"] for r in rows if (r["stage"], r["reason"]) == ("mix", "not_selected")),
    }


def _ledger_counts(rej: dict[str, Any], source: str) -> tuple[int, int]:
    """(rejected, not selected) records of one source according to the ledger."""
    rejected = not_sel = 0
    for r in rej["rows"]:
        if r["source"] != source:
            continue
        if (r["stage"], r["reason"]) == ("mix", "not_selected"):
            not_sel += r["count"]
        else:
            rejected += r["count"]
    return rejected, not_sel


def _compare(findings: list[Finding], phase: str, where: str, what: str, listed: Any, found: Any) -> None:
    if listed != found:
        findings.append(Finding(phase, where, f"{what}: manifest says {listed!r}, recount of the shards gives {found!r}"))


def _check_shards(phase: str, manifest: dict[str, Any], rc: PackedRecount | PromptRecount,
                  keys: tuple[str, ...], findings: list[Finding]) -> None:
    for entry, shard in zip(manifest["shards"], rc.shards):
        name = shard.file
        if not shard.exists:
            findings.append(Finding(phase, name, "listed in the manifest but missing"))
            continue
        if entry.get("sha256") != shard.sha256:
            findings.append(Finding(phase, name, f"sha256 {(shard.sha256 or '')[:16]}... does not match the manifest's "
                                                 f"{str(entry.get('sha256'))[:16]}... (the shard was changed after it was written)"))
        if entry.get("bytes") is not None and entry.get("bytes") != shard.bytes:
            findings.append(Finding(phase, name, f"size {shard.bytes} bytes, manifest says {entry.get('bytes')}"))
        for p in shard.problems:
            findings.append(Finding(phase, name, p))
        if not shard.readable:
            continue
        for k in keys:
            if k in entry:
                _compare(findings, phase, name, k, entry.get(k), getattr(shard, k))


def audit_phase(phase_dir: str | Path, progress: Progress | None = None, workers: int = 1) -> dict[str, Any]:
    """Audit one phase folder: its figures (from the recount) and its findings."""
    phase_dir = Path(phase_dir)
    try:
        manifest = read_manifest(phase_dir)
    except ManifestError as e:
        raise AuditInputError(str(e)) from e
    phase = str(manifest.get("phase") or phase_dir.name)
    kind = manifest.get("kind", "packed")
    if kind not in ("packed", "prompts"):
        raise AuditInputError(f"{phase_dir / MANIFEST_NAME}: kind {kind!r} is neither 'packed' nor 'prompts'")
    findings: list[Finding] = []
    ledger = _read_ledger(phase_dir, manifest, phase, findings)
    rej = _rejections(ledger)
    listed = [s["file"] for s in manifest["shards"]]
    for name in sorted({n for n in listed if listed.count(n) > 1}):
        findings.append(Finding(phase, name, "listed more than once in the manifest"))
    for name in stray_files(phase_dir, listed, kind):
        findings.append(Finding(phase, name, "data file in the phase folder that the manifest does not list"))
    _check_config(phase, manifest, findings)
    base: dict[str, Any] = {
        "phase": phase, "dir": str(phase_dir), "kind": kind, "seed": manifest.get("seed"),
        "config_sha256": manifest.get("config_sha256"), "tool_version": manifest.get("tool_version"),
        "weights_by": (manifest.get("weights") or {}).get("by", "source"),
        "rejections": rej,
    }
    if kind == "packed":
        rc = recount_packed(phase_dir, listed, int(manifest["context"]), progress, workers)
        body = _packed_audit(phase, manifest, rc, rej, findings)
    else:
        rcp = recount_prompts(phase_dir, listed, progress)
        body = _prompt_audit(phase, manifest, rcp, rej, findings)
        rc = rcp
    base.update(body)
    base["recount"] = recount_summary(rc)
    base["findings"] = [f.to_dict() for f in findings]
    base["ok"] = not findings
    return base


def _check_config(phase: str, m: dict[str, Any], findings: list[Finding]) -> None:
    """What the manifest says it was built from must hash to its config_sha256, and its
    targets must add up to the budget and to 1: an edited target is caught here."""
    cfg, listed = m.get("config"), m.get("config_sha256")
    if isinstance(cfg, dict) and isinstance(listed, str):
        # The build hashes the config as sort_keys JSON; a JSON round trip keeps that text.
        found = hashlib.sha256(json.dumps(cfg, sort_keys=True, default=str).encode()).hexdigest()
        if found != listed:
            findings.append(Finding(phase, MANIFEST_NAME, f"config_sha256 is {listed[:16]}... but the manifest's "
                                                          f"config hashes to {found[:16]}... (config edited)"))
    target = (m.get("weights") or {}).get("target")
    if isinstance(target, dict) and target:
        total = math.fsum(v for v in target.values() if isinstance(v, (int, float)))
        if abs(total - 1.0) > 1e-9:
            findings.append(Finding(phase, MANIFEST_NAME, f"weights.target adds up to {total!r}, not 1"))
    key, budget_key = ("target_tokens", "token_budget") if m.get("kind", "packed") == "packed" else (
        "target_prompts", "prompt_budget")
    srcs = m.get("sources") or {}
    budget = m.get(budget_key)
    if isinstance(budget, int) and srcs and all(key in s for s in srcs.values()):
        total_t = sum(int(s[key]) for s in srcs.values())
        if total_t != budget:
            findings.append(Finding(phase, MANIFEST_NAME, f"sources' {key} add up to {total_t}, "
                                                          f"{budget_key} is {budget}"))


def _check_accounting(phase: str, name: str, info: dict[str, Any], rej: dict[str, Any],
                      avail_key: str, findings: list[Finding]) -> None:
    """input = written + rejected, per source: the ledger must account for every record."""
    if rej["present"]:
        l_rej, l_ns = _ledger_counts(rej, name)
        if "rejected_records" in info:
            _compare_ledger(findings, phase, name, "rejected records", info["rejected_records"], l_rej)
        if "not_selected_records" in info:
            _compare_ledger(findings, phase, name, "records not selected by the mixer", info["not_selected_records"], l_ns)
    if all(k in info for k in ("input_records", avail_key, "rejected_records")):
        if info["input_records"] != info[avail_key] + info["rejected_records"]:
            findings.append(Finding(phase, f"source {name}",
                                    f"accounting: {info['input_records']} input records != {info[avail_key]} "
                                    f"reaching the mixer + {info['rejected_records']} rejected"))


def _compare_ledger(findings: list[Finding], phase: str, name: str, what: str, listed: int, ledger: int) -> None:
    if listed != ledger:
        findings.append(Finding(phase, f"source {name}", f"{what}: manifest says {listed}, ledger.json says {ledger}"))


def _packed_audit(phase: str, m: dict[str, Any], rc: PackedRecount, rej: dict[str, Any],
                  findings: list[Finding]) -> dict[str, Any]:
    context = int(m["context"])
    msrc: dict[str, Any] = m.get("sources") or {}
    _check_shards(phase, m, rc, ("rows", "tokens", "padding_tokens", "loss_tokens", "segments"), findings)

    tokens = rc.total("tokens")
    docs = rc.documents
    rows = rc.total("rows")
    target_total = sum(int(s.get("target_tokens", 0)) for s in msrc.values())
    sources: dict[str, Any] = {}
    for name in list(msrc) + sorted(set(rc.sources) - set(msrc)):
        info = msrc.get(name)
        r = rc.sources.get(name)
        if info is None:
            findings.append(Finding(phase, f"source {name}",
                                    f"{r.tokens if r else 0} tokens in the shards but the source is not in the manifest"))
            info = {}
        category = info.get("category") or (r.categories.most_common(1)[0][0] if r and r.categories else "unknown")
        t = r.tokens if r else 0
        available = info.get("available_tokens")
        repetition = _share(t, available) if available else None
        entry = {
            "category": category,
            "language": _language(name, m),
            "target_tokens": info.get("target_tokens"),
            "target_share": _share(info.get("target_tokens", 0), target_total) if target_total else None,
            "tokens": t,
            "realized_share": _share(t, tokens),
            "documents": r.documents if r else 0,
            "document_share": _share(r.documents if r else 0, docs),
            "segments": r.segments if r else 0,
            "loss_tokens": r.loss_tokens if r else 0,
            "loss_fraction": _share(r.loss_tokens, r.tokens) if r else 0.0,
            "distinct_documents": r.distinct_documents if r else 0,
            "max_uses": r.max_uses if r else 0,
            "repeated_documents": r.repeated_documents if r else 0,
            "repetition": repetition,
            "available_tokens": available,
            "available_documents": info.get("available_documents"),
            "unique_documents_manifest": info.get("unique_documents"),
            "trimmed_samples": info.get("trimmed_samples"),
            "trimmed_tokens": info.get("trimmed_tokens"),
            "input_records": info.get("input_records"),
            "rejected_records": info.get("rejected_records"),
            "not_selected_records": info.get("not_selected_records"),
            "shortfall_tokens": info.get("shortfall_tokens"),
            "lengths": r.lengths.summary() if r else None,
        }
        entry["share_delta"] = (entry["realized_share"] - entry["target_share"]
                                if entry["target_share"] is not None else None)
        sources[name] = entry
        if r and info and rc.complete:
            where = f"source {name}"
            for key, found in (("tokens", r.tokens), ("segments", r.segments), ("documents", r.documents),
                               ("loss_tokens", r.loss_tokens)):
                if key in info:
                    _compare(findings, phase, where, key, info[key], found)
            wrong = sorted(c for c in r.categories if c != info.get("category"))
            if info.get("category") is not None and wrong:
                findings.append(Finding(phase, where, f"segments labelled category {', '.join(map(repr, wrong))}, "
                                                      f"manifest says {info['category']!r}"))
            if "unique_documents" in info and r.distinct_documents > info["unique_documents"]:
                findings.append(Finding(phase, where, f"{r.distinct_documents} distinct documents in the shards, "
                                                      f"more than the {info['unique_documents']} the manifest selected"))
            if repetition is not None and isinstance(info.get("repetition"), (int, float)):
                if abs(info["repetition"] - repetition) > REPETITION_TOL:
                    findings.append(Finding(phase, where, f"repetition: manifest says {info['repetition']}, "
                                                          f"recounted tokens / available tokens is {repetition:.6f}"))
        elif info and rc.complete and info.get("tokens", 0):
            findings.append(Finding(phase, f"source {name}", f"tokens: manifest says {info['tokens']}, "
                                                             "the shards hold none"))
        if info:
            _check_accounting(phase, name, info, rej, "available_documents", findings)

    categories = _group(sources, "category", tokens, docs)
    languages = _group(sources, "language", tokens, docs)
    by = (m.get("weights") or {}).get("by", "source")
    weights = m.get("weights") or {}
    if by == "category":
        for cat, share in (weights.get("target") or {}).items():
            categories.setdefault(cat, _empty_group())["target_share"] = share
    for c in categories.values():
        if c["target_share"] is not None:
            c["share_delta"] = c["realized_share"] - c["target_share"]
    realized = {k: v["realized_share"] for k, v in (sources if by == "source" else categories).items()}
    if rc.complete:
        for k, listed in (weights.get("realized") or {}).items():
            found = realized.get(k, 0.0)
            if not isinstance(listed, (int, float)) or abs(listed - found) > SHARE_TOL:
                findings.append(Finding(phase, MANIFEST_NAME, f"weights.realized[{k!r}]: manifest says {listed!r}, "
                                                              f"recounted share is {found!r}"))

    loss = rc.total("loss_tokens")
    totals = {
        "rows": rows, "tokens": tokens, "padding_tokens": rc.total("padding_tokens"), "loss_tokens": loss,
        "segments": rc.total("segments"), "documents": docs,
        "packing_efficiency": _share(tokens, rows * context),
        "loss_fraction": _share(loss, tokens),
        "token_budget": m.get("token_budget"),
    }
    mt = m.get("totals") or {}
    if rc.complete:
        for k in ("rows", "tokens", "padding_tokens", "loss_tokens", "segments"):
            if k in mt:
                _compare(findings, phase, MANIFEST_NAME, f"totals.{k}", mt[k], totals[k])
        eff = mt.get("packing_efficiency")
        if eff is not None and (not isinstance(eff, (int, float))
                                or not math.isclose(eff, totals["packing_efficiency"], rel_tol=1e-9, abs_tol=1e-12)):
            findings.append(Finding(phase, MANIFEST_NAME, f"totals.packing_efficiency: manifest says {eff!r}, "
                                                          f"recount gives {totals['packing_efficiency']!r}"))
    if rej["present"] and "rejected_records" in mt:
        _compare_ledger(findings, phase, "totals", "rejected records", mt["rejected_records"], rej["rejected_total"])
    return {
        "context": context, "rope_base": m.get("rope_base"), "loss_policy": m.get("loss"),
        "tokenizer": {k: v for k, v in (m.get("tokenizer") or {}).items() if k in ("path", "sha256", "pad_id", "vocab_size")},
        "totals": totals,
        "sources": sources,
        "categories": categories,
        "languages": languages,
        "weights": {"by": by, "raw": weights.get("raw"), "target": weights.get("target"),
                    "realized_manifest": weights.get("realized"), "realized_recount": realized},
        "lengths": {
            "segments": {**rc.segment_lengths.summary(), "histogram": rc.segment_lengths.log2_bins()},
            "rows": {**rc.row_tokens.summary(), "histogram": rc.row_tokens.linear_bins(context, 20)},
        },
    }


def _empty_group() -> dict[str, Any]:
    return {"tokens": 0, "documents": 0, "realized_share": 0.0, "document_share": 0.0, "target_share": None,
            "share_delta": None, "sources": []}


def _group(sources: dict[str, Any], key: str, tokens: int, docs: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, s in sources.items():
        g = out.setdefault(s[key], _empty_group())
        g["tokens"] += s.get("tokens", s.get("prompts", 0))
        g["documents"] += s.get("documents", s.get("prompts", 0))
        g["sources"].append(name)
        if s.get("target_share") is not None:
            g["target_share"] = (g["target_share"] or 0.0) + s["target_share"]
    for g in out.values():
        g["realized_share"] = _share(g["tokens"], tokens)
        g["document_share"] = _share(g["documents"], docs)
    return out


def _prompt_audit(phase: str, m: dict[str, Any], rc: PromptRecount, rej: dict[str, Any],
                  findings: list[Finding]) -> dict[str, Any]:
    msrc: dict[str, Any] = m.get("sources") or {}
    _check_shards(phase, m, rc, ("rows",), findings)
    total = sum(s.prompts for s in rc.sources.values())
    target_total = sum(int(s.get("target_prompts", 0)) for s in msrc.values())
    sources: dict[str, Any] = {}
    for name in list(msrc) + sorted(set(rc.sources) - set(msrc)):
        info = msrc.get(name)
        r = rc.sources.get(name)
        if info is None:
            findings.append(Finding(phase, f"source {name}",
                                    f"{r.prompts if r else 0} prompts in the file but the source is not in the manifest"))
            info = {}
        n = r.prompts if r else 0
        avail = info.get("available_prompts")
        entry = {
            "category": info.get("category") or (r.categories.most_common(1)[0][0] if r and r.categories else "unknown"),
            "language": _language(name, m),
            "target_prompts": info.get("target_prompts"),
            "target_share": _share(info.get("target_prompts", 0), target_total) if target_total else None,
            "prompts": n, "realized_share": _share(n, total),
            "unique_prompts": r.unique_prompts if r else 0,
            "max_uses": r.max_uses if r else 0,
            "epochs": (r.max_epoch + 1) if r else 0,
            "repetition": _share(n, avail) if avail else None,
            "available_prompts": avail,
            "input_records": info.get("input_records"),
            "rejected_records": info.get("rejected_records"),
            "not_selected_records": info.get("not_selected_records"),
            "shortfall_prompts": info.get("shortfall_prompts"),
            "lengths": r.lengths.summary() if r else None,
        }
        entry["share_delta"] = entry["realized_share"] - entry["target_share"] if entry["target_share"] is not None else None
        sources[name] = entry
        if info and rc.complete:
            where = f"source {name}"
            for key, found in (("prompts", n), ("unique_prompts", entry["unique_prompts"])):
                if key in info:
                    _compare(findings, phase, where, key, info[key], found)
            wrong = sorted(c for c in (r.categories if r else {}) if c != info.get("category"))
            if info.get("category") is not None and wrong:
                findings.append(Finding(phase, where, f"prompts labelled category {', '.join(map(repr, wrong))}, "
                                                      f"manifest says {info['category']!r}"))
            if entry["repetition"] is not None and isinstance(info.get("repetition"), (int, float)):
                if abs(info["repetition"] - entry["repetition"]) > REPETITION_TOL:
                    findings.append(Finding(phase, where, f"repetition: manifest says {info['repetition']}, "
                                                          f"recounted prompts / available is {entry['repetition']:.6f}"))
        if info:
            _check_accounting(phase, name, info, rej, "available_prompts", findings)
    categories = _group(sources, "category", total, total)
    languages = _group(sources, "language", total, total)
    weights = m.get("weights") or {}
    by = weights.get("by", "source")
    if by == "category":
        for cat, share in (weights.get("target") or {}).items():
            categories.setdefault(cat, _empty_group())["target_share"] = share
    for c in categories.values():
        if c["target_share"] is not None:
            c["share_delta"] = c["realized_share"] - c["target_share"]
    realized = {k: v["realized_share"] for k, v in (sources if by == "source" else categories).items()}
    mt = m.get("totals") or {}
    if rc.complete:
        for k, listed in (weights.get("realized") or {}).items():
            found = realized.get(k, 0.0)
            if not isinstance(listed, (int, float)) or abs(listed - found) > SHARE_TOL:
                findings.append(Finding(phase, MANIFEST_NAME, f"weights.realized[{k!r}]: manifest says {listed!r}, "
                                                              f"recounted share is {found!r}"))
        if "prompts" in mt:
            _compare(findings, phase, MANIFEST_NAME, "totals.prompts", mt["prompts"], total)
    if rej["present"] and "rejected_records" in mt:
        _compare_ledger(findings, phase, "totals", "rejected records", mt["rejected_records"], rej["rejected_total"])
    return {
        "totals": {"prompts": total, "unique_prompts": sum(s["unique_prompts"] for s in sources.values()),
                   "prompt_budget": m.get("prompt_budget")},
        "sources": sources,
        "categories": categories,
        "languages": languages,
        "weights": {"by": by, "raw": weights.get("raw"), "target": weights.get("target"),
                    "realized_manifest": weights.get("realized"), "realized_recount": realized},
        "lengths": {"prompts": {**rc.prompt_lengths.summary(), "histogram": rc.prompt_lengths.log2_bins()}},
    }


def audit_build(root: str | Path, phases: list[str] | None = None,
                progress_factory: Any = None, workers: int = 1) -> dict[str, Any]:
    """Audit every phase under `root` (or only `phases`). `progress_factory(name, rows)`
    may return a per-row-group callback for a progress bar; `workers` processes recount
    the shards of a packed phase in parallel (same figures whatever the number)."""
    root = Path(root)
    dirs = find_phases(root)
    if phases:
        by_name = {d.name: d for d in dirs}
        missing = [p for p in phases if p not in by_name]
        if missing:
            raise AuditInputError(f"{root}: no phase {', '.join(map(repr, missing))} "
                                  f"(phases: {', '.join(sorted(by_name))})")
        dirs = [by_name[p] for p in phases]
    manifests = {}
    for d in dirs:
        try:
            manifests[d] = read_manifest(d)
        except ManifestError as e:
            raise AuditInputError(str(e)) from e
    if not phases:
        # The recipe's order: packed phases by context (pretraining, midtraining, SFT),
        # then RL prompt sets; names break ties.
        dirs.sort(key=lambda d: (manifests[d].get("kind", "packed") != "packed",
                                 int(manifests[d].get("context") or 0), d.name))
    out: dict[str, Any] = {"format": AUDIT_FORMAT, "tool": "zaya-data audit", "root": str(root), "phases": {}}
    for d in dirs:
        manifest_rows = sum(int(s.get("rows", 0)) for s in manifests[d]["shards"])
        cb = progress_factory(d.name, manifest_rows) if progress_factory else None
        try:
            phase_audit = audit_phase(d, cb, workers)
        finally:
            if cb is not None and hasattr(cb, "close"):
                cb.close()
        out["phases"][d.name] = phase_audit
    out["findings"] = [f for p in out["phases"].values() for f in p["findings"]]
    out["ok"] = not out["findings"]
    return out
