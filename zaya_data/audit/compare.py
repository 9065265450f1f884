"""Side-by-side deltas of two audited phases (two builds of one mixture, or two phases of
one build): what changed in composition, lengths, packing and rejections."""

from __future__ import annotations

from typing import Any


def _row(pair: str, what: str, name: str, unit: str, a: Any, b: Any) -> dict[str, Any]:
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (a, b))
    delta = b - a if numeric else None
    return {"pair": pair, "what": what, "name": name, "unit": unit, "a": a, "b": b, "delta": delta}


def _keys(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    return list(a) + [k for k in b if k not in a]


def compare_phases(a: dict[str, Any], b: dict[str, Any], pair: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    if a["kind"] != b["kind"]:
        rows.append(_row(pair, "kind", "", "text", a["kind"], b["kind"]))
        return rows
    ta, tb = a["totals"], b["totals"]
    if a["kind"] == "packed":
        rows.append(_row(pair, "context", "", "count", a["context"], b["context"]))
        for k in ("rows", "tokens", "documents", "segments", "padding_tokens", "loss_tokens"):
            rows.append(_row(pair, "total", k, "count", ta[k], tb[k]))
        for k in ("packing_efficiency", "loss_fraction"):
            rows.append(_row(pair, "total", k, "share", ta[k], tb[k]))
        volume = "tokens"
    else:
        for k in ("prompts", "unique_prompts"):
            rows.append(_row(pair, "total", k, "count", ta[k], tb[k]))
        volume = "prompts"
    for group in ("sources", "categories"):
        ga, gb = a[group], b[group]
        for name in _keys(ga, gb):
            x, y = ga.get(name, {}), gb.get(name, {})
            label = "source" if group == "sources" else "category"
            rows.append(_row(pair, f"target share by {label}", name, "share", x.get("target_share"), y.get("target_share")))
            rows.append(_row(pair, f"realized share by {label}", name, "share",
                             x.get("realized_share", 0.0 if x == {} else None), y.get("realized_share", 0.0 if y == {} else None)))
            rows.append(_row(pair, f"{volume} by {label}", name, "count", x.get(volume, 0), y.get(volume, 0)))
            if group == "sources":
                if volume == "tokens":
                    rows.append(_row(pair, "documents by source", name, "count", x.get("documents", 0), y.get("documents", 0)))
                rows.append(_row(pair, "repetition by source", name, "ratio", x.get("repetition"), y.get("repetition")))
    if a["kind"] == "packed":
        for key, label in (("segments", "document length"), ("rows", "row fill")):
            for stat in ("mean", "p50", "p90", "max"):
                rows.append(_row(pair, label, stat, "ratio" if stat == "mean" else "count",
                                 a["lengths"][key][stat], b["lengths"][key][stat]))
    ra, rb = a["rejections"]["by_reason"], b["rejections"]["by_reason"]
    for k in sorted(set(ra) | set(rb)):
        rows.append(_row(pair, "rejections", k, "count", ra.get(k, 0), rb.get(k, 0)))
    return rows


def compare_audits(a: dict[str, Any], b: dict[str, Any], pairs: list[tuple[str, str]],
                   a_label: str, b_label: str) -> dict[str, Any]:
    """Deltas (B - A) for each (phase in A, phase in B) pair."""
    rows: list[dict[str, Any]] = []
    for pa_name, pb_name in pairs:
        pair = pa_name if pa_name == pb_name else f"{pa_name} / {pb_name}"
        rows.extend(compare_phases(a["phases"][pa_name], b["phases"][pb_name], pair))
    only_a = sorted(set(a["phases"]) - {p for p, _ in pairs})
    only_b = sorted(set(b["phases"]) - {q for _, q in pairs})
    return {"a_label": a_label, "b_label": b_label, "pairs": [list(p) for p in pairs],
            "only_in_a": only_a, "only_in_b": only_b, "rows": rows}
