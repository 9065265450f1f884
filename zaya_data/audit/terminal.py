"""Rich tables for the terminal: one block per phase, findings last (what to act on)."""

from __future__ import annotations

from typing import Any

from rich.console import Console, Group
from rich.table import Table
from rich.text import Text


def pct(x: float | None, digits: int = 2) -> str:
    return "-" if x is None else f"{100 * x:.{digits}f}%"


def pp(x: float | None) -> str:
    """A difference of two shares in percentage points, signed."""
    return "-" if x is None else f"{100 * x:+.2f} pp"


def num(x: Any) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{int(x):,}" if x.is_integer() else f"{x:,.2f}"
    return f"{x:,}"


def _delta_style(d: float | None) -> str:
    if d is None:
        return ""
    return "red" if abs(d) >= 0.05 else "yellow" if abs(d) >= 0.01 else "green"


def _shares_table(title: str, groups: dict[str, Any], unit: str, extra: list[tuple[str, str]]) -> Table:
    t = Table(title=title, title_justify="left")
    for c in ("name", "target", f"realized ({unit})", "delta", unit, f"{unit} share" if unit == "tokens" else "",
              *[h for h, _ in extra]):
        if c:
            t.add_column(c, justify="left" if c == "name" else "right")
    for name, g in groups.items():
        cells = [name, pct(g.get("target_share")), pct(g["realized_share"]),
                 Text(pp(g.get("share_delta")), style=_delta_style(g.get("share_delta"))),
                 num(g.get("tokens", g.get("prompts")))]
        if unit == "tokens":
            cells.append(pct(g.get("document_share")))
        cells += [num(g.get(k)) if not k.endswith("share") else pct(g.get(k)) for _, k in extra]
        t.add_row(*cells)
    return t


def phase_renderables(p: dict[str, Any]) -> list[Any]:
    out: list[Any] = []
    if p["kind"] == "packed":
        tot = p["totals"]
        head = (f"[bold]phase {p['phase']}[/] (packed, context {p['context']:,}, RoPE base {num(p['rope_base'])}, "
                f"loss {p.get('loss_policy')}): {tot['rows']:,} rows, {tot['tokens']:,} tokens "
                f"(budget {num(tot['token_budget'])}), {tot['documents']:,} documents in {tot['segments']:,} segments, "
                f"packing efficiency {pct(tot['packing_efficiency'])}, loss tokens {pct(tot['loss_fraction'])}")
        out.append(Text.from_markup(head))
        src = Table(title="sources (recounted from the shards)", title_justify="left")
        for c in ("source", "category", "target", "realized", "delta", "tokens", "documents", "doc share",
                  "loss frac"):
            src.add_column(c, justify="left" if c in ("source", "category") else "right")
        rep = Table(title="repetition, trimming, rejections per source", title_justify="left")
        for c in ("source", "distinct docs", "repetition", "max uses", "trimmed", "trimmed tokens", "rejected",
                  "not selected"):
            rep.add_column(c, justify="left" if c == "source" else "right")
        for name, s in p["sources"].items():
            src.add_row(name, s["category"], pct(s["target_share"]), pct(s["realized_share"]),
                        Text(pp(s["share_delta"]), style=_delta_style(s["share_delta"])), num(s["tokens"]),
                        num(s["documents"]), pct(s["document_share"]), pct(s["loss_fraction"]))
            rep.add_row(name, num(s["distinct_documents"]),
                        "-" if s["repetition"] is None else f"{s['repetition']:.2f}x", num(s["max_uses"]),
                        num(s["trimmed_samples"]), num(s["trimmed_tokens"]), num(s["rejected_records"]),
                        num(s["not_selected_records"]))
        out.append(src)
        out.append(rep)
        out.append(_shares_table("categories", p["categories"], "tokens", [("documents", "documents")]))
        lens = Table(title="lengths (tokens)", title_justify="left")
        for c in ("what", "count", "mean", "p10", "p50", "p90", "p99", "max"):
            lens.add_column(c, justify="left" if c == "what" else "right")
        for label, key in (("documents (segments)", "segments"), ("packed rows (non-padding)", "rows")):
            L = p["lengths"][key]
            lens.add_row(label, num(L["count"]), f"{L['mean']:,.1f}", num(L["p10"]), num(L["p50"]),
                         num(L["p90"]), num(L["p99"]), num(L["max"]))
        out.append(lens)
    else:
        tot = p["totals"]
        out.append(Text.from_markup(f"[bold]phase {p['phase']}[/] (RL prompts): {tot['prompts']:,} prompts "
                                    f"({tot['unique_prompts']:,} distinct), budget {num(tot['prompt_budget'])}"))
        src = Table(title="sources (recounted from the prompt file)", title_justify="left")
        for c in ("source", "category", "target", "realized", "delta", "prompts", "distinct", "epochs",
                  "repetition", "rejected", "not selected"):
            src.add_column(c, justify="left" if c in ("source", "category") else "right")
        for name, s in p["sources"].items():
            src.add_row(name, s["category"], pct(s["target_share"]), pct(s["realized_share"]),
                        Text(pp(s["share_delta"]), style=_delta_style(s["share_delta"])), num(s["prompts"]),
                        num(s["unique_prompts"]), num(s["epochs"]),
                        "-" if s["repetition"] is None else f"{s['repetition']:.2f}x",
                        num(s["rejected_records"]), num(s["not_selected_records"]))
        out.append(src)
        out.append(_shares_table("categories", p["categories"], "prompts", []))
    langs = ", ".join(f"{k} {pct(v['realized_share'])}" for k, v in p["languages"].items())
    out.append(Text(f"languages: {langs}"))
    rej = p["rejections"]
    if not rej["present"]:
        out.append(Text("rejections: no ledger", style="yellow"))
    else:
        rt = Table(title=f"rejections ({rej['rejected_total']:,} rejected, {rej['not_selected_total']:,} not selected "
                         f"by the mixer; dedup removed {rej['dedup']['removed']:,}, decontamination "
                         f"{rej['decont']['removed']:,})", title_justify="left")
        for c in ("stage", "reason", "source", "count", "example"):
            rt.add_column(c, justify="right" if c == "count" else "left")
        for r in rej["rows"]:
            ex = r.get("example") or {}
            where = ":".join(str(ex[k]) for k in ("file", "location") if ex.get(k))
            rt.add_row(r["stage"], r["reason"], r["source"], num(r["count"]),
                       " ".join(x for x in (where, ex.get("detail") or "") if x)[:80])
        out.append(rt)
    return out


def against_table(cmp: dict[str, Any]) -> Table:
    t = Table(title=f"{cmp['a_label']}  vs  {cmp['b_label']}  (delta = B - A)", title_justify="left")
    for c in ("phase A / B", "what", "name", "A", "B", "delta"):
        t.add_column(c, justify="right" if c in ("A", "B", "delta") else "left")
    # Unchanged figures are noise on a terminal; shares are always shown (the point of a
    # comparison). --json and --html keep every row.
    shown = [r for r in cmp["rows"] if r["a"] != r["b"] or r["what"].startswith("realized share")]
    hidden = len(cmp["rows"]) - len(shown)
    if hidden:
        t.caption = f"{hidden} unchanged figures not shown (all rows are in --json and --html)"
        t.caption_justify = "left"
    for row in shown:
        fmt = pct if row["unit"] == "share" else num
        d = row["delta"]
        dtxt = pp(d) if row["unit"] == "share" else ("-" if d is None else f"{d:+,}" if isinstance(d, int) else f"{d:+,.4f}")
        t.add_row(row["pair"], row["what"], row["name"], fmt(row["a"]), fmt(row["b"]), dtxt)
    return t


def findings_renderable(audit: dict[str, Any]) -> Any:
    if audit["ok"]:
        return Text("recount agrees with every manifest, ledger and shard checksum: OK", style="bold green")
    t = Table(title=f"{len(audit['findings'])} disagreement(s) between the files", title_justify="left",
              title_style="bold red")
    for c in ("phase", "where", "finding"):
        t.add_column(c)
    for f in audit["findings"]:
        t.add_row(f["phase"], f["where"], f["message"])
    return t


def summary_table(audit: dict[str, Any]) -> Table:
    t = Table(title="audit summary", title_justify="left")
    for c in ("phase", "kind", "rows/prompts", "tokens", "efficiency", "loss frac", "max |delta|", "rejected",
              "shards", "findings"):
        t.add_column(c, justify="left" if c in ("phase", "kind") else "right")
    for name, p in audit["phases"].items():
        tot = p["totals"]
        deltas = [abs(g["share_delta"]) for g in (p["sources"] if p["weights_by"] == "source" else p["categories"]).values()
                  if g.get("share_delta") is not None]
        nf = len(p["findings"])
        t.add_row(name, p["kind"], num(tot.get("rows", tot.get("prompts"))), num(tot.get("tokens")),
                  pct(tot.get("packing_efficiency")), pct(tot.get("loss_fraction")), pp(max(deltas, default=None)),
                  num(p["rejections"]["rejected_total"]), str(len(p["recount"]["shards"])),
                  Text(str(nf), style="red" if nf else "green"))
    return t


def print_audit(console: Console, audit: dict[str, Any]) -> None:
    for p in audit["phases"].values():
        console.print(Group(*phase_renderables(p)))
        console.print()
    if audit.get("against"):
        console.print(against_table(audit["against"]))
        console.print()
    console.print(summary_table(audit))
    console.print(findings_renderable(audit))
