"""The audit as one self-contained HTML page: inline CSS and inline SVG drawn here, no
script, no font or CDN request, so it opens the same offline, in a browser sandbox, or
attached to a ticket.

Every section carries `data-section="..."` so tests (and readers following a link) can
find it: findings, summary, and per phase shares, deltas, sources, repetition, languages,
lengths, rejections; then against when two builds were compared.
"""

from __future__ import annotations

import html
from typing import Any

from zaya_data.audit.terminal import num, pct, pp

CSS = """
body{font-family:'DejaVu Sans',Helvetica,Arial,sans-serif;margin:24px 32px;color:#1d2430;background:#fff;font-size:14px}
h1{font-size:24px;margin:0 0 4px} h2{font-size:19px;margin:28px 0 8px;border-bottom:2px solid #d8dee9;padding-bottom:4px}
h3{font-size:15px;margin:18px 0 6px;color:#384152}
.meta{color:#5b6575;font-size:12px} .ok{color:#1a7f37;font-weight:bold} .bad{color:#c62828;font-weight:bold}
table{border-collapse:collapse;margin:6px 0 10px;font-size:12.5px}
th,td{border:1px solid #d8dee9;padding:3px 8px;text-align:right;white-space:nowrap}
th{background:#eef2f7} td.l,th.l{text-align:left} tr:nth-child(even) td{background:#f8fafc}
.pos{color:#1a7f37} .neg{color:#c62828} .warn{color:#b26a00}
svg{display:block;margin-top:4px}
.ct{font-weight:bold;font-size:13px}
.grid{display:flex;flex-wrap:wrap;gap:18px;align-items:flex-start}
.card{border:1px solid #d8dee9;border-radius:6px;padding:8px 12px;background:#fff}
.legend span{display:inline-block;margin-right:14px;font-size:12px}
.sw{display:inline-block;width:11px;height:11px;margin-right:4px;vertical-align:-1px}
nav a{margin-right:12px}
"""
TARGET_COLOR = "#b8c2d1"
REALIZED_COLOR = "#2f6fd0"
HIST_COLOR = "#5a8fd8"


def esc(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _svg(width: int, height: int, body: list[str], label: str) -> str:
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" role="img" aria-label="{esc(label)}" '
            f'font-family="DejaVu Sans, Helvetica, Arial, sans-serif" font-size="11">' + "".join(body) + "</svg>")


def bars_svg(items: list[tuple[str, float | None, float]], label: str) -> str:
    """Grouped horizontal bars: target (grey) above realized (blue) for each name."""
    lw, bw, rh = 150, 300, 30
    top = max([max(t or 0.0, r) for _, t, r in items] + [1e-12])
    h = rh * len(items) + 10
    body = []
    for i, (name, tgt, real) in enumerate(items):
        y = 5 + i * rh
        body.append(f'<text x="{lw - 6}" y="{y + 17}" text-anchor="end">{esc(name[:24])}</text>')
        if tgt is not None:
            w = bw * tgt / top
            body.append(f'<rect x="{lw}" y="{y + 2}" width="{w:.1f}" height="11" fill="{TARGET_COLOR}"/>')
            body.append(f'<text x="{lw + w + 4:.1f}" y="{y + 11}" fill="#5b6575">{esc(pct(tgt, 1))}</text>')
        w = bw * real / top
        body.append(f'<rect x="{lw}" y="{y + 14}" width="{w:.1f}" height="11" fill="{REALIZED_COLOR}"/>')
        body.append(f'<text x="{lw + w + 4:.1f}" y="{y + 23}">{esc(pct(real, 1))}</text>')
    body.append(f'<line x1="{lw}" y1="2" x2="{lw}" y2="{h - 4}" stroke="#5b6575"/>')
    return _svg(lw + bw + 60, h, body, label)


def deltas_svg(items: list[tuple[str, float]], label: str) -> str:
    """Realized minus target share, in percentage points, as bars either side of zero."""
    lw, half, rh = 150, 170, 22
    top = max([abs(d) for _, d in items] + [1e-4])
    h = rh * len(items) + 24
    mid = lw + half + 40
    body = [f'<line x1="{mid}" y1="2" x2="{mid}" y2="{h - 18}" stroke="#5b6575"/>',
            f'<text x="{mid}" y="{h - 4}" text-anchor="middle" fill="#5b6575">0 (on target)</text>']
    for i, (name, d) in enumerate(items):
        y = 4 + i * rh
        w = half * abs(d) / top
        x = mid if d >= 0 else mid - w
        color = "#c62828" if abs(d) >= 0.05 else "#e09a1c" if abs(d) >= 0.01 else "#3a9d5d"
        body.append(f'<text x="{lw - 6}" y="{y + 13}" text-anchor="end">{esc(name[:24])}</text>')
        body.append(f'<rect x="{x:.1f}" y="{y + 3}" width="{max(w, 0.5):.1f}" height="13" fill="{color}"/>')
        # The value goes on the far side of zero from a negative bar, so it never runs
        # into the names on the left.
        tx = mid + w + 4 if d >= 0 else mid + 4
        body.append(f'<text x="{tx:.1f}" y="{y + 13}">{esc(pp(d))}</text>')
    return _svg(lw + 2 * half + 120, h, body, label)


def _short(n: int) -> str:
    if n >= 1 << 20 and n % (1 << 20) == 0:
        return f"{n >> 20}M"
    if n >= 1024 and n % 1024 == 0:
        return f"{n >> 10}K"
    return str(n)


def hist_svg(bins: list[dict[str, int]], label: str, xlabel: str, tick: Any = None) -> str:
    """Vertical bars, one per bin, labelled with the bin's lower edge (`tick(lo)` formats it)."""
    tick = tick or _short
    if not bins:
        return '<p class="meta">no data</p>'
    bw = max(14, min(40, 480 // len(bins)))
    ph, left = 150, 46
    top = max(b["count"] for b in bins) or 1
    w = left + bw * len(bins) + 10
    body = [f'<line x1="{left}" y1="{ph + 10}" x2="{w - 6}" y2="{ph + 10}" stroke="#5b6575"/>',
            f'<text x="{left - 4}" y="16" text-anchor="end" fill="#5b6575">{esc(_short(top))}</text>',
            f'<text x="{left - 4}" y="{ph + 10}" text-anchor="end" fill="#5b6575">0</text>']
    for i, b in enumerate(bins):
        x = left + i * bw
        hgt = ph * b["count"] / top
        body.append(f'<rect x="{x + 1}" y="{ph + 10 - hgt:.1f}" width="{bw - 2}" height="{hgt:.1f}" fill="{HIST_COLOR}">'
                    f'<title>[{b["lo"]}, {b["hi"]}): {b["count"]}</title></rect>')
        if len(bins) <= 20 or i % 2 == 0:
            body.append(f'<text x="{x + bw / 2:.1f}" y="{ph + 24}" text-anchor="middle" font-size="9.5">'
                        f'{esc(tick(b["lo"]))}</text>')
    body.append(f'<text x="{left + (w - left) / 2:.0f}" y="{ph + 40}" text-anchor="middle" fill="#5b6575">'
                f'{esc(xlabel)}</text>')
    return _svg(w, ph + 46, body, label)


def _table(headers: list[str], rows: list[list[Any]], left: int = 1, text_last: bool = False) -> str:
    """A table with the first `left` columns (and the last, when it is free text) left-aligned."""
    n = len(headers)

    def align(i: int) -> str:
        return "l" if i < left or (text_last and i == n - 1) else ""

    th = "".join(f'<th class="{align(i)}">{esc(h)}</th>' for i, h in enumerate(headers))
    body = []
    for r in rows:
        cells = []
        for i, c in enumerate(r):
            cls = align(i)
            if isinstance(c, tuple):  # (text, css class)
                cells.append(f'<td class="{cls} {c[1]}">{esc(c[0])}</td>')
            else:
                cells.append(f'<td class="{cls}">{esc(c)}</td>')
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><tr>{th}</tr>{''.join(body)}</table>"


def _delta_cell(d: float | None) -> tuple[str, str]:
    if d is None:
        return ("-", "")
    return (pp(d), "neg" if abs(d) >= 0.05 else "warn" if abs(d) >= 0.01 else "pos")


def _legend(first: str = "target", second: str = "realized (recounted)") -> str:
    return (f'<div class="legend"><span><i class="sw" style="background:{TARGET_COLOR}"></i>{esc(first)}</span>'
            f'<span><i class="sw" style="background:{REALIZED_COLOR}"></i>{esc(second)}</span></div>')


def _section(key: str, title: str, inner: str) -> str:
    return f'<section data-section="{esc(key)}"><h3>{esc(title)}</h3>{inner}</section>'


def phase_html(p: dict[str, Any]) -> str:
    name = p["phase"]
    packed = p["kind"] == "packed"
    volume = "tokens" if packed else "prompts"
    tot = p["totals"]
    parts = [f'<h2 id="phase-{esc(name)}">phase {esc(name)} <span class="meta">({esc(p["kind"])})</span></h2>']
    if packed:
        parts.append(f'<p>context {num(p["context"])}, RoPE base {num(p["rope_base"])}, loss policy '
                     f'{esc(p.get("loss_policy"))}, weights by {esc(p["weights_by"])}. '
                     f'<b>{num(tot["rows"])}</b> rows, <b>{num(tot["tokens"])}</b> tokens (budget '
                     f'{num(tot["token_budget"])}), {num(tot["documents"])} documents in {num(tot["segments"])} '
                     f'segments; packing efficiency <b>{pct(tot["packing_efficiency"])}</b>, loss-token fraction '
                     f'<b>{pct(tot["loss_fraction"])}</b>.</p>')
    else:
        parts.append(f'<p>weights by {esc(p["weights_by"])}. <b>{num(tot["prompts"])}</b> prompts '
                     f'({num(tot["unique_prompts"])} distinct), budget {num(tot["prompt_budget"])}.</p>')

    src, cat = p["sources"], p["categories"]
    charts = []
    for title, groups in (("by source", src), ("by category", cat)):
        items = [(k, g.get("target_share"), g["realized_share"]) for k, g in groups.items()]
        charts.append(f'<div class="card"><div class="ct">{volume} share {title}</div>{bars_svg(items, f"{name} shares {title}")}</div>')
    if packed:
        items = [(k, None, g["document_share"]) for k, g in src.items()]
        charts.append(f'<div class="card"><div class="ct">document share by source</div>{bars_svg(items, f"{name} document shares")}</div>')
    parts.append(_section("shares", "target vs realized shares", _legend() + f'<div class="grid">{"".join(charts)}</div>'))

    key_groups = src if p["weights_by"] == "source" else cat
    items = [(k, g["share_delta"]) for k, g in key_groups.items() if g.get("share_delta") is not None]
    rows = [[k, pct(g.get("target_share")), pct(g["realized_share"]), _delta_cell(g.get("share_delta")),
             num(g.get("tokens", g.get("prompts")))] for k, g in key_groups.items()]
    parts.append(_section("deltas", f"target-vs-realized deltas (by {p['weights_by']}, the mixture's own weights)",
                          f'<div class="grid"><div class="card">{deltas_svg(items, f"{name} deltas")}</div>'
                          f'<div>{_table([p["weights_by"], "target", "realized", "delta", volume], rows)}</div></div>'))

    if packed:
        headers = ["source", "category", "target", "realized", "delta", "tokens", "documents", "doc share",
                   "segments", "loss tokens", "loss frac"]
        rows = [[k, s["category"], pct(s["target_share"]), pct(s["realized_share"]), _delta_cell(s["share_delta"]),
                 num(s["tokens"]), num(s["documents"]), pct(s["document_share"]), num(s["segments"]),
                 num(s["loss_tokens"]), pct(s["loss_fraction"])] for k, s in src.items()]
    else:
        headers = ["source", "category", "target", "realized", "delta", "prompts", "input", "rejected", "not selected"]
        rows = [[k, s["category"], pct(s["target_share"]), pct(s["realized_share"]), _delta_cell(s["share_delta"]),
                 num(s["prompts"]), num(s["input_records"]), num(s["rejected_records"]), num(s["not_selected_records"])]
                for k, s in src.items()]
    parts.append(_section("sources", "sources (recounted from the data files)", _table(headers, rows, left=2)))
    if packed:
        rows = [[k, num(s["input_records"]), num(s["rejected_records"]), num(s["not_selected_records"]),
                 num(s["available_documents"]), num(s["trimmed_samples"]), num(s["trimmed_tokens"]),
                 num(s["target_tokens"]), num(s["shortfall_tokens"])] for k, s in src.items()]
        parts.append(_section("trimming", "trimming and accounting per source (from the manifest; shards do not "
                                          "record trimming)",
                              _table(["source", "input records", "rejected", "not selected", "reached mixer",
                                      "trimmed samples", "trimmed tokens", "target tokens", "shortfall"], rows)))

    if packed:
        rows = [[k, num(s["documents"]), num(s["distinct_documents"]), num(s["repeated_documents"]), num(s["max_uses"]),
                 num(s["available_tokens"]), "-" if s["repetition"] is None else f"{s['repetition']:.3f}x"]
                for k, s in src.items()]
        headers = ["source", "documents", "distinct", "used more than once", "max uses", "available tokens",
                   "repetition (tokens / available)"]
    else:
        rows = [[k, num(s["prompts"]), num(s["unique_prompts"]), num(s["epochs"]), num(s["max_uses"]),
                 num(s["available_prompts"]), "-" if s["repetition"] is None else f"{s['repetition']:.3f}x"]
                for k, s in src.items()]
        headers = ["source", "prompts", "distinct", "epochs", "max uses", "available", "repetition"]
    parts.append(_section("repetition", "repetition per source", _table(headers, rows)))

    rows = [[k, num(g["tokens"]), pct(g["realized_share"]), ", ".join(g["sources"])] for k, g in p["languages"].items()]
    parts.append(_section("languages", "composition by language (\"unknown\" where the build recorded none)",
                          _table(["language", volume, "share", "sources"], rows)))

    if packed:
        seg, row = p["lengths"]["segments"], p["lengths"]["rows"]
        ctx = p["context"]

        def fill_tick(lo: int) -> str:
            return f"{round(100 * lo / ctx)}%"

        stats = _table(["", "count", "mean", "p10", "p50", "p90", "p99", "max"],
                       [[label, num(L["count"]), f"{L['mean']:,.1f}", num(L["p10"]), num(L["p50"]), num(L["p90"]),
                         num(L["p99"]), num(L["max"])] for label, L in (("documents (segments)", seg),
                                                                        ("packed rows (tokens)", row))])
        hists = (f'<div class="grid"><div class="card"><div class="ct">document (segment) lengths</div>'
                 f'{hist_svg(seg["histogram"], f"{name} segment lengths", "tokens (log2 bins, lower edge)")}</div>'
                 f'<div class="card"><div class="ct">packed-row fill</div>'
                 f'{hist_svg(row["histogram"], f"{name} row fill", "non-padding tokens per row, % of context (5% bins)", fill_tick)}'
                 f'</div></div>')
    else:
        L = p["lengths"]["prompts"]
        stats = _table(["", "count", "mean", "p50", "p90", "max"],
                       [["prompt characters", num(L["count"]), f"{L['mean']:,.1f}", num(L["p50"]), num(L["p90"]),
                         num(L["max"])]])
        hists = (f'<div class="card"><div class="ct">prompt lengths</div>'
                 f'{hist_svg(L["histogram"], f"{name} prompt lengths", "characters (log2 bins)")}</div>')
    per_source = _table(
        ["source", "count", "mean", "p50", "p90", "max"],
        [[k, num(s["lengths"]["count"]), f'{s["lengths"]["mean"]:,.1f}', num(s["lengths"]["p50"]),
          num(s["lengths"]["p90"]), num(s["lengths"]["max"])] for k, s in src.items() if s.get("lengths")])
    unit = "segment lengths (tokens)" if packed else "prompt lengths (characters)"
    parts.append(_section("lengths", "length distributions",
                          f'<div class="grid"><div>{stats}</div><div><div class="ct">{unit} by source</div>'
                          f'{per_source}</div></div>' + hists))

    rej = p["rejections"]
    if not rej["present"]:
        inner = '<p class="warn">no ledger.json: rejections unknown</p>'
    else:
        summary = (f'<p>{num(rej["rejected_total"])} records rejected, {num(rej["not_selected_total"])} not selected '
                   f'by the mixer (budget reached). Dedup removed <b>{num(rej["dedup"]["removed"])}</b>'
                   f'{"" if rej["dedup"]["present"] else " (no dedup stage in this build)"}; decontamination removed '
                   f'<b>{num(rej["decont"]["removed"])}</b>'
                   f'{"" if rej["decont"]["present"] else " (no decontamination stage in this build)"}.</p>')
        by_stage = _table(["stage", "records"], [[k, num(v)] for k, v in rej["by_stage"].items()])
        rows = []
        for r in rej["rows"]:
            ex = r.get("example") or {}
            where = ":".join(str(ex[k]) for k in ("file", "location") if ex.get(k))
            rows.append([r["stage"], r["reason"], r["source"], num(r["count"]),
                         (" ".join(x for x in (where.rsplit("/", 1)[-1], ex.get("detail") or "") if x))[:90]])
        detail = (_table(["stage", "reason", "source", "count", "example"], rows, left=3, text_last=True)
                  if rows else "<p>none</p>")
        inner = summary + f'<div class="grid"><div>{by_stage}</div><div>{detail}</div></div>'
    parts.append(_section("rejections", "rejections by stage and reason", inner))
    return f'<div class="phase" data-phase="{esc(name)}">{"".join(parts)}</div>'


def _findings_html(audit: dict[str, Any]) -> str:
    n_shards = sum(len(p["recount"]["shards"]) for p in audit["phases"].values())
    if audit["ok"]:
        inner = (f'<p class="ok">Independent recount agrees: every figure the shards can reproduce matches '
                 f'the manifests and ledgers, and all {n_shards} data files match their sha256.</p>')
    else:
        inner = (f'<p class="bad">{len(audit["findings"])} disagreement(s) between the files:</p>'
                 + _table(["phase", "where", "finding"],
                          [[f["phase"], f["where"], f["message"]] for f in audit["findings"]], left=3))
    return f'<section data-section="findings"><h2>recount check</h2>{inner}</section>'


def _summary_html(audit: dict[str, Any]) -> str:
    rows = []
    for name, p in audit["phases"].items():
        t = p["totals"]
        groups = p["sources"] if p["weights_by"] == "source" else p["categories"]
        worst = max((abs(g["share_delta"]) for g in groups.values() if g.get("share_delta") is not None), default=None)
        rows.append([name, p["kind"], num(p.get("context")), num(t.get("rows", t.get("prompts"))), num(t.get("tokens")),
                     pct(t.get("packing_efficiency")), pct(t.get("loss_fraction")), pp(worst),
                     num(p["rejections"]["rejected_total"]),
                     (str(len(p["findings"])), "neg" if p["findings"] else "pos")])
    table = _table(["phase", "kind", "context", "rows / prompts", "tokens", "packing eff.", "loss frac",
                    "max |delta|", "rejected", "findings"], rows, left=2)
    return f'<section data-section="summary"><h2>summary</h2>{table}</section>'


def _against_html(cmp: dict[str, Any]) -> str:
    charts = []
    for pa_name, pb_name in cmp["pairs"]:
        pair = pa_name if pa_name == pb_name else f"{pa_name} / {pb_name}"
        for label in ("source", "category"):
            what = f"realized share by {label}"
            items = [(r["name"], r["a"], r["b"] or 0.0) for r in cmp["rows"] if r["pair"] == pair and r["what"] == what]
            if items:
                charts.append(f'<div class="card"><div class="ct">{esc(pair)}: {what}</div>'
                              f'{bars_svg(items, f"{pair} {what}")}</div>')
    rows = []
    for r in cmp["rows"]:
        if r["unit"] == "share":
            a, b, d = pct(r["a"]), pct(r["b"]), _delta_cell(r["delta"])
        else:
            a, b = num(r["a"]), num(r["b"])
            dv = r["delta"]
            d = ("-", "") if dv is None else ((f"{dv:+,}" if isinstance(dv, int) else f"{dv:+,.4f}"),
                                               "" if dv == 0 else "warn")
        rows.append([r["pair"], r["what"], r["name"], a, b, d])
    extra = ""
    if cmp["only_in_a"] or cmp["only_in_b"]:
        extra = (f'<p class="meta">only in A: {esc(", ".join(cmp["only_in_a"]) or "-")}; '
                 f'only in B: {esc(", ".join(cmp["only_in_b"]) or "-")}</p>')
    return (f'<section data-section="against"><h2>comparison: A = {esc(cmp["a_label"])}, '
            f'B = {esc(cmp["b_label"])} (delta = B - A)</h2>{extra}'
            + _legend("A", "B") + f'<div class="grid">{"".join(charts)}</div>'
            + _table(["phase", "what", "name", "A", "B", "delta"], rows, left=3) + "</section>")


def render_html(audit: dict[str, Any]) -> str:
    phases = list(audit["phases"].values())
    nav = " ".join(f'<a href="#phase-{esc(p["phase"])}">{esc(p["phase"])}</a>' for p in phases)
    status = ('<span class="ok">recount OK</span>' if audit["ok"]
              else f'<span class="bad">{len(audit["findings"])} disagreement(s)</span>')
    if audit.get("against"):
        nav += ' <a href="#against">comparison</a>'
    body = [f'<h1>zaya-data audit</h1><p class="meta">{esc(audit["root"])} &middot; {len(phases)} phase(s) &middot; '
            f'{status}</p><nav>{nav}</nav>',
            _findings_html(audit), _summary_html(audit)]
    body += [phase_html(p) for p in phases]
    if audit.get("against"):
        body.append(f'<a id="against"></a>{_against_html(audit["against"])}')
    return ('<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<title>zaya-data audit: {esc(audit["root"])}</title><style>{CSS}</style></head>'
            f'<body>{"".join(body)}</body></html>\n')
