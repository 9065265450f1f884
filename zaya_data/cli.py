"""The `zaya-data` command.

Exit codes scripts can trust:
  0  success
  1  the work ran and found a problem (a source short of its target, a shard that fails
     verification, a strict-mode rejection)
  2  bad invocation or bad mixture file (the message names file, line and key)
  3  the output exists and belongs to another build (use --overwrite)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_EXISTS = 0, 1, 2, 3

# Summary tables are meant to be read whole: don't let a pipe squeeze them to 80 columns.
console = Console(stderr=False, width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True)


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.2f}%"


def _summary_table(result) -> Table:
    m = result.manifest
    kind = m.get("kind", "packed")
    t = Table(title=f"phase {result.phase} ({kind}, {result.status})", title_justify="left")
    by = m["weights"]["by"]
    t.add_column(by)
    t.add_column("target", justify="right")
    t.add_column("realized", justify="right")
    if kind == "packed":
        for c in ("tokens", "docs", "repetition", "trimmed", "rejected", "not selected"):
            t.add_column(c, justify="right")
    else:
        for c in ("prompts", "repetition", "rejected", "not selected"):
            t.add_column(c, justify="right")
    groups: dict[str, list[dict]] = {}
    for name, s in m["sources"].items():
        groups.setdefault(name if by == "source" else s["category"], []).append(s)
    for key, members in groups.items():
        tgt = m["weights"]["target"].get(key)
        real = m["weights"]["realized"].get(key)
        rej = sum(s["rejected_records"] for s in members)
        ns = sum(s["not_selected_records"] for s in members)
        rep = max(s["repetition"] for s in members)
        if kind == "packed":
            t.add_row(key, _pct(tgt), _pct(real), f"{sum(s['tokens'] for s in members):,}",
                      f"{sum(s['documents'] for s in members):,}", f"{rep:.2f}x",
                      f"{sum(s['trimmed_samples'] for s in members):,}", f"{rej:,}", f"{ns:,}")
        else:
            t.add_row(key, _pct(tgt), _pct(real), f"{sum(s['prompts'] for s in members):,}",
                      f"{rep:.2f}x", f"{rej:,}", f"{ns:,}")
    tot = m["totals"]
    if kind == "packed":
        t.caption = (f"rows {tot['rows']:,} x {m['context']:,} tokens | tokens {tot['tokens']:,} | "
                     f"packing efficiency {_pct(tot['packing_efficiency'])} | loss tokens {tot['loss_tokens']:,}")
    else:
        t.caption = f"prompts {tot['prompts']:,}"
    if result.timings:
        t.caption += "\ntime: " + " | ".join(f"{k} {v:.1f} s" for k, v in result.timings.items())
    t.caption_justify = "left"
    return t


def cmd_build(args: argparse.Namespace) -> int:
    from zaya_data.config import load_mixture
    from zaya_data.executor import make_executor
    from zaya_data.pipeline import build_phase, command_line, dry_run

    mix = load_mixture(args.mixture)
    phases = args.phase or list(mix.phases)
    for p in phases:
        if p not in mix.phases:
            err.print(f"[red]error:[/] {args.mixture}: no phase {p!r} (phases: {', '.join(mix.phases)})")
            return EXIT_USAGE
    seed = mix.seed if args.seed is None else args.seed
    if args.dry_run:
        t = Table(title=f"dry run: {mix.name}", title_justify="left")
        for c in ("phase", "source", "category", "files/units", "target share", "target"):
            t.add_column(c)
        for r in dry_run(mix, phases):
            t.add_row(r["phase"], r["source"], r["category"], str(r["units"]), _pct(r["target_share"]),
                      f"{r['target']:,} {r['unit_of_budget']}")
        console.print(t)
        return EXIT_OK
    out = Path(args.out or Path("out") / mix.name)
    out.mkdir(parents=True, exist_ok=True)
    executor = make_executor("local" if args.no_ray else "ray", args.ray_address, args.workers,
                             progress=not args.quiet)
    try:
        for p in phases:
            res = build_phase(mix, mix.phases[p], out, executor, seed=seed, strict=args.strict,
                              overwrite=args.overwrite, command=command_line())
            console.print(_summary_table(res))
    finally:
        executor.shutdown()
    console.print(f"output: {out}")
    return EXIT_OK


def cmd_verify(args: argparse.Namespace) -> int:
    from zaya_data.verify import verify_phase

    bad = 0
    for d in args.dirs:
        rep = verify_phase(Path(d), deep=not args.quick)
        if rep.ok:
            console.print(f"[green]ok[/] {d}")
        else:
            bad += 1
            for prob in rep.problems:
                console.print(f"[red]FAIL[/] {d}: {prob}")
    return EXIT_FAILED if bad else EXIT_OK


def cmd_export(args: argparse.Namespace) -> int:
    from zaya_data.megatron import export_megatron

    info = export_megatron(Path(args.phase_dir), args.out_prefix)
    console.print(info)
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="zaya-data", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    from zaya_data import __version__

    p.add_argument("--version", action="version", version=f"zaya-data {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    b = sub.add_parser("build", help="build the phases of a mixture into packed shards / prompt sets",
                       description="Read, tokenize, trim, mix and pack the sources of MIXTURE into "
                                   "OUT/<phase>/ shards with a manifest. Resumes an interrupted build.")
    b.add_argument("mixture", help="mixture YAML file (e.g. mixtures/demo.yaml)")
    b.add_argument("--phase", action="append", help="build only this phase (repeatable)")
    b.add_argument("--out", help="output folder (default: out/<mixture name>)")
    b.add_argument("--ray-address", help="join an existing Ray cluster (e.g. 'auto' or host:port)")
    b.add_argument("--workers", type=int, help="parallel workers (default: all CPUs)")
    b.add_argument("--seed", type=int, help="override the mixture's seed")
    b.add_argument("--overwrite", action="store_true", help="replace an existing output")
    b.add_argument("--dry-run", action="store_true", help="validate and show targets; write nothing")
    b.add_argument("--strict", action="store_true", help="stop at the first bad record (names file, line, field)")
    b.add_argument("--no-ray", action="store_true", help="run in this process (debugging)")
    b.add_argument("--quiet", action="store_true", help="no progress bars")
    b.set_defaults(func=cmd_build)

    v = sub.add_parser("verify", help="check a phase's shards against its manifest",
                       description="Checksums, row counts and per-row invariants of packed shards.")
    v.add_argument("dirs", nargs="+", help="phase folders (OUT/<phase>)")
    v.add_argument("--quick", action="store_true", help="checksums and counts only, no row checks")
    v.set_defaults(func=cmd_verify)

    e = sub.add_parser("export", help="export shards to other formats")
    esub = e.add_subparsers(dest="format", required=True)
    em = esub.add_parser("megatron", help="write Megatron-LM .bin/.idx (one document per packed segment)",
                         description="Export a phase to Megatron-LM's indexed dataset format.")
    em.add_argument("phase_dir")
    em.add_argument("out_prefix", help="output path prefix (writes PREFIX.bin and PREFIX.idx)")
    em.set_defaults(func=cmd_export)
    # The other commands live beside their code and add themselves.
    from zaya_data import cli_audit, cli_explain, cli_rsa

    cli_audit.register(sub)
    cli_rsa.register(sub)
    cli_explain.register(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    from zaya_data.config import ConfigError
    from zaya_data.ledger import StrictModeError
    from zaya_data.mixing import ShortfallError
    from zaya_data.pipeline import OutputExistsError

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as e:
        err.print(f"[red]config error:[/] {e}")
        return EXIT_USAGE
    except OutputExistsError as e:
        err.print(f"[red]output exists:[/] {e}")
        return EXIT_EXISTS
    except (ShortfallError, StrictModeError) as e:
        err.print(f"[red]build failed:[/] {e}")
        return EXIT_FAILED
    except FileNotFoundError as e:
        err.print(f"[red]not found:[/] {e}")
        return EXIT_USAGE
    except ValueError as e:
        err.print(f"[red]error:[/] {e}")
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
