"""`zaya-data audit` and `zaya-data show`: the subcommands, wired by `register(subparsers)`.

Exit codes (the same contract as the rest of the CLI):
  0  the audit ran and every recount agrees with the manifests, ledgers and checksums
  1  the audit ran and found disagreements (each one printed, naming shard or source)
  2  bad input: no such folder, no manifest, an unreadable manifest, a row out of range
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class _Bar:
    """A per-phase progress callback (rows recounted) backed by a rich progress bar."""

    def __init__(self, console: Console, phase: str, rows: int) -> None:
        self.progress = Progress(TextColumn(f"recount {phase}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("rows"), TimeRemainingColumn(), console=console, transient=True)
        self.task = self.progress.add_task(phase, total=rows)
        self.progress.start()

    def __call__(self, rows: int) -> None:
        self.progress.advance(self.task, rows)

    def close(self) -> None:
        self.progress.stop()


def _progress_factory(err: Console, quiet: bool) -> Callable[[str, int], _Bar] | None:
    if quiet or not err.is_terminal:
        return None
    return lambda phase, rows: _Bar(err, phase, rows)


def _resolve_against(args: argparse.Namespace, audit: dict[str, Any],
                     progress: Callable[[str, int], _Bar] | None) -> dict[str, Any]:
    """--against OTHER: another build folder (phases paired by name), another phase folder
    (paired with the one phase audited), or the name of another phase of the same build."""
    from zaya_data.audit import AuditInputError, audit_build, compare_audits, find_phases

    other = Path(args.against)
    if other.exists():
        b = audit_build(other, progress_factory=progress, workers=args.workers)
        a_names, b_names = list(audit["phases"]), list(b["phases"])
        if len(find_phases(other)) == 1 and (other / "manifest.json").is_file():
            if len(a_names) != 1:
                raise AuditInputError(f"--against {other} is one phase; choose one phase to compare with --phase")
            pairs = [(a_names[0], b_names[0])]
        elif len(a_names) == 1 and (Path(args.out) / "manifest.json").is_file():
            if a_names[0] not in b["phases"]:
                raise AuditInputError(f"--against {other}: no phase {a_names[0]!r} there (phases: {', '.join(b_names)})")
            pairs = [(a_names[0], a_names[0])]
        else:
            pairs = [(n, n) for n in a_names if n in b["phases"]]
            if not pairs:
                raise AuditInputError(f"--against {other}: no phase in common with {args.out}")
        label_b = str(other)
    else:
        if len(audit["phases"]) != 1:
            raise AuditInputError(f"--against {args.against}: not a folder; to compare two phases of one build "
                                  f"give --phase P --against Q")
        root = Path(args.out)
        if (root / "manifest.json").is_file():
            root = root.parent
        if not (root / args.against / "manifest.json").is_file():
            raise AuditInputError(f"--against {args.against}: neither a folder nor a phase of {root}")
        b = audit_build(root, [args.against], progress_factory=progress, workers=args.workers)
        pairs = [(next(iter(audit["phases"])), next(iter(b["phases"])))]
        label_b = str(root / args.against)
    cmp = compare_audits(audit, b, pairs, str(args.out), label_b)
    cmp["b_ok"] = b["ok"]
    cmp["b_findings"] = b["findings"]
    return cmp


def cmd_audit(args: argparse.Namespace) -> int:
    from zaya_data.audit import AuditInputError, audit_build, render_html
    from zaya_data.audit.terminal import print_audit
    from zaya_data.io import atomic_write_text

    # Piped into a file or a pager, rich would fall back to 80 columns and squeeze the
    # tables; 120 keeps them readable.
    console = Console() if sys.stdout.isatty() else Console(width=120)
    err = Console(stderr=True)
    progress = _progress_factory(err, args.quiet)
    if args.workers < 1:
        err.print(f"[red]error:[/] --workers must be >= 1, got {args.workers}")
        return EXIT_USAGE
    try:
        audit = audit_build(Path(args.out), args.phase, progress_factory=progress, workers=args.workers)
        if args.against:
            audit["against"] = _resolve_against(args, audit, progress)
    except AuditInputError as e:
        err.print(f"[red]error:[/] {e}")
        return EXIT_USAGE
    if args.json:
        atomic_write_text(args.json, json.dumps(audit, indent=1, sort_keys=True, allow_nan=False) + "\n")
    if args.html:
        atomic_write_text(args.html, render_html(audit))
    print_audit(console, audit)
    if args.json:
        console.print(f"json: {args.json}")
    if args.html:
        console.print(f"html: {args.html}")
    failed = not audit["ok"] or (args.against and not audit["against"]["b_ok"])
    if args.against and not audit["against"]["b_ok"]:
        for f in audit["against"]["b_findings"]:
            console.print(f"[red]FAIL[/] (--against) {f['phase']}: {f['where']}: {f['message']}")
    return EXIT_FAILED if failed else EXIT_OK


def cmd_show(args: argparse.Namespace) -> int:
    from zaya_data.audit import AuditInputError, render_row, row_view
    from zaya_data.audit.show import prompt_view, render_prompt
    from zaya_data.manifest import ManifestError, read_manifest

    console = Console(no_color=args.plain, highlight=False)
    err = Console(stderr=True)
    # Piped output has no colour, so dim/bold would vanish: mark masked spans with « » there.
    plain = args.plain or not sys.stdout.isatty()
    try:
        try:
            kind = read_manifest(Path(args.dir)).get("kind", "packed")
        except ManifestError as e:
            raise AuditInputError(str(e)) from e
        if kind == "prompts":
            text = render_prompt(prompt_view(Path(args.dir), args.row), args.row, color=not plain)
        else:
            text = render_row(row_view(Path(args.dir), args.row), color=not plain)
    except AuditInputError as e:
        err.print(f"[red]error:[/] {e}")
        return EXIT_USAGE
    if plain:
        sys.stdout.write(text.plain)
    else:
        console.print(text, soft_wrap=True)
    return EXIT_OK


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `audit` and `show` to the `zaya-data` command's subparsers."""
    a = subparsers.add_parser(
        "audit", help="what each phase really contains: recount, shares, lengths, rejections",
        description="Recount every phase of a build from its shards (never trusting the manifest), report target "
                    "vs realized shares by source and category, repetition, trimming, rejections (dedup and "
                    "decontamination included), document and packed-row lengths, packing efficiency and loss-token "
                    "fraction, and flag every disagreement between shards, manifest and ledger. "
                    "Exit 0: all agree; 1: disagreements found; 2: bad input.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    a.add_argument("out", metavar="OUT", help="a build folder (holding OUT/<phase>/manifest.json) or one phase folder")
    a.add_argument("--phase", action="append", help="audit only this phase (repeatable)")
    a.add_argument("--html", metavar="FILE", help="also write a self-contained HTML report with plots")
    a.add_argument("--json", metavar="FILE", help="also write the full machine-readable audit")
    a.add_argument("--against", metavar="OTHER",
                   help="compare side by side (deltas B - A): another build folder (phases paired by name), "
                        "another phase folder, or the name of another phase of this build (with --phase)")
    a.add_argument("--workers", type=int, default=1, metavar="N",
                   help="recount the shards of a phase in N processes (default 1; same figures for any N)")
    a.add_argument("--quiet", action="store_true", help="no progress bar")
    a.set_defaults(func=cmd_audit)

    s = subparsers.add_parser(
        "show", help="decode one packed row: segment boundaries, sources, loss-masked spans",
        description="Decode packed row N of a phase with the tokenizer named in its manifest. Each segment is "
                    "introduced by a line naming its source, category and id; trained-on tokens are bold and "
                    "loss-masked tokens dim (with --plain, masked spans are wrapped in \u00ab \u00bb). "
                    "For an RL prompt phase, prints prompt N with its source, id and epoch. "
                    "Exit 2 on a bad folder or a row out of range.")
    s.add_argument("dir", metavar="DIR", help="a phase folder (OUT/<phase>)")
    s.add_argument("--row", type=int, required=True, metavar="N",
                   help="0-based row across the phase's shards (or prompt, in a prompt phase)")
    s.add_argument("--plain", action="store_true",
                   help="no colour: mark masked spans with \u00ab \u00bb (the default when output is not a terminal)")
    s.set_defaults(func=cmd_show)
