"""`zaya-data explain OUT RECORD_ID`: one record's fate through every stage of a build,
wired by `register(subparsers)`.

Exit codes:
  0  the record was found (whatever happened to it)
  1  no record of the build has this id or an id starting with it
  2  bad invocation: no such folder, no finished phase, a phase without a fate index, or
     a prefix that several ids share (the candidates are listed; give more of the id)
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

EXIT_FOUND, EXIT_NOT_FOUND, EXIT_USAGE = 0, 1, 2

_STYLE = {"dropped": "red", "not selected": "yellow", "flagged": "yellow", "ok": "green", "passed": "green",
          "selected": "green", "packed": "green", "written": "green", "off": "dim", "not reached": "dim"}


def _print(console: Console, res: dict[str, Any]) -> None:
    console.print(f"[bold]record[/] {res['id']}" + (f"  (prefix {res['query']!r})" if res["query"] != res["id"] else ""))
    for phase, info in res["phases"].items():
        head = f"phase {phase} ({info['kind']}" + (f", context {info['context']:,}" if info.get("context") else "") + ")"
        if not info["occurrences"]:
            console.print(f"\n[bold]{head}[/]: {info.get('note', 'not an input of this phase')}")
            continue
        for occ in info["occurrences"]:
            t = Table(title=f"{head}: {occ['fate'].replace('_', ' ')}", title_justify="left")
            t.add_column("step")
            t.add_column("outcome")
            t.add_column("detail", overflow="fold")
            for s in occ["steps"]:
                style = _STYLE.get(s["status"], "")
                t.add_row(s["step"], f"[{style}]{s['status']}[/]" if style else s["status"], s["detail"])
            console.print()
            console.print(t)
    if res.get("phases_without_index"):
        console.print(f"\n[yellow]phases without records.parquet (not explained):[/] {', '.join(res['phases_without_index'])}")


def cmd_explain(args: argparse.Namespace) -> int:
    from zaya_data.explain import ExplainError, explain

    console = Console(highlight=False) if sys.stdout.isatty() else Console(width=160, highlight=False)
    err = Console(stderr=True)
    try:
        res = explain(Path(args.out), args.record_id)
    except ExplainError as e:
        err.print(f"[red]error:[/] {e}")
        return EXIT_USAGE
    if args.phase and res["status"] == "found":
        unknown = [p for p in args.phase if p not in res["phases"]]
        if unknown:
            err.print(f"[red]error:[/] no phase {', '.join(unknown)} in {args.out} (phases: {', '.join(res['phases'])})")
            return EXIT_USAGE
        res["phases"] = {p: v for p, v in res["phases"].items() if p in args.phase}
    code = {"found": EXIT_FOUND, "not_found": EXIT_NOT_FOUND, "ambiguous": EXIT_USAGE}[res["status"]]
    if args.json:
        sys.stdout.write(json.dumps(res, indent=1, sort_keys=True) + "\n")
        return code
    if res["status"] == "not_found":
        err.print(f"[red]not found:[/] no record of {args.out} has id {args.record_id!r} or an id starting with it")
    elif res["status"] == "ambiguous":
        shown = res["candidates"][:10]
        more = len(res["candidates"]) - len(shown)
        err.print(f"[red]ambiguous:[/] {args.record_id!r} is a prefix of {len(res['candidates'])}"
                  f"{'+' if len(res['candidates']) >= 50 else ''} ids; give more of it:\n  "
                  + "\n  ".join(shown) + (f"\n  ... and {more} more" if more > 0 else ""))
    else:
        _print(console, res)
    return code


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `explain` to the `zaya-data` command's subparsers."""
    e = subparsers.add_parser(
        "explain", help="one record's fate: read, cleaning, tokenize/trim, mixing, packing",
        description="Tell what happened to one input record in every phase of a build, from the files the "
                    "build wrote (records.parquet, ledger, decontamination report, manifest and shards; nothing "
                    "is rebuilt): read, each cleaning stage (quality, language, validation, decontamination with "
                    "the benchmark item matched, exact/near dedup with the survivor, problem dedup), "
                    "tokenize/trim (tokens, trimmed or not), mixing (selected and how many epochs, or not "
                    "selected) and packing (shard, row and segment, checked against the shard). "
                    "Exit 0: found; 1: no such id; 2: bad folder, or an ambiguous prefix.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    e.add_argument("out", metavar="OUT", help="a build folder (OUT/<phase>/manifest.json) or one phase folder")
    e.add_argument("record_id", metavar="RECORD_ID", help="a record id (as in segment_ids), or a unique prefix of one")
    e.add_argument("--phase", action="append", help="explain only this phase (repeatable)")
    e.add_argument("--json", action="store_true", help="print the explanation as JSON instead of tables")
    e.set_defaults(func=cmd_explain)
