"""`zaya-data rsa CONFIG`: build an RSA aggregation dataset (see zaya_data/rsa/).

Exit codes: 0 the dataset is complete; 1 the run failed or stopped early (the teacher
kept failing after its retries, or --max-batches stopped it; rerun to resume); 2 bad
invocation, bad pipeline file (the message names file, line and key), or an output
folder holding another configuration's run (use --overwrite).
"""

from __future__ import annotations

import argparse
import threading
import time
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def _num(x: float | None, fmt: str = ",.0f") -> str:
    return "-" if x is None else format(x, fmt)


def summary_tables(summary: dict[str, Any]) -> list[Table]:
    """Per-round statistics and the rejections, as rich tables."""
    t = Table(title=f"rsa {summary['name']} ({summary['status']}; teacher {summary['teacher']}, "
                    f"template {summary['template']}, tau {summary['tau']}, K {summary['k']}, M {summary['m']})",
              title_justify="left")
    for c in ("round", "problems", "prompts", "examples", "unanimous", "answers/problem",
              "cand acc", "agg acc", "target tok mean/med/max", "gen tokens"):
        t.add_column(c, justify="right")
    for r, s in summary["rounds"].items():
        t.add_row(r, f"{s['problems']:,}", f"{s['prompts']:,}", f"{s['kept']:,}", _pct(s["agreement"]),
                  _num(s["mean_distinct_answers"], ".2f"), _pct(s["candidate_accuracy"]),
                  _pct(s["aggregate_accuracy"]),
                  f"{_num(s['target_tokens_mean'])}/{_num(s['target_tokens_median'])}/"
                  f"{_num(s['target_tokens_max'])}", f"{s['generated_tokens']:,}")
    t.caption = (f"examples {summary['examples']:,} | RL prompts {summary['rl_prompts']:,} | "
                 f"rejections {summary['rejections']['total']:,}")
    t.caption_justify = "left"
    tables = [t]
    rows = summary["rejections"]["rejections"]
    if rows:
        rt = Table(title="rejections", title_justify="left")
        for c in ("stage", "reason", "count", "example"):
            rt.add_column(c)
        for row in rows:
            ex = row["examples"][0] if row["examples"] else {}
            where = " ".join(str(ex[k]) for k in ("record_id", "location", "detail") if ex.get(k))
            rt.add_row(row["stage"], row["reason"], f"{row['count']:,}", where[:100])
        tables.append(rt)
    return tables


class _RichProgress:
    """Problems done, generated tokens and tokens/s, fed from teacher threads."""

    def __init__(self, console: Console, enabled: bool):
        self.enabled = enabled
        self.lock = threading.Lock()
        self.tokens = 0
        self.t0 = time.perf_counter()
        self.bar = Progress(TextColumn("[bold]rsa[/]"), BarColumn(), MofNCompleteColumn(),
                            TextColumn("problems | {task.fields[tokens]:,} tokens | {task.fields[rate]:,.0f} tok/s"),
                            TimeElapsedColumn(), console=console, disable=not enabled)
        self.task = self.bar.add_task("problems", total=None, tokens=0, rate=0.0)
        self.total_of: Any = None  # the run's Progress, which learns the problem count

    def update(self, ev: dict[str, Any]) -> None:
        with self.lock:
            if self.total_of is not None and self.total_of.total_problems and self.bar.tasks[0].total is None:
                self.bar.update(self.task, total=self.total_of.total_problems)
            self.tokens += int(ev.get("generated_tokens", 0))
            rate = self.tokens / max(1e-9, time.perf_counter() - self.t0)
            self.bar.update(self.task, advance=ev.get("problems", 0), tokens=self.tokens, rate=rate)


def cmd_rsa(args: argparse.Namespace) -> int:
    from zaya_data.config import ConfigError
    from zaya_data.rsa.config import load_rsa_config
    from zaya_data.rsa.run import OutputMismatchError, Progress as RunProgress, run_rsa
    from zaya_data.rsa.teachers import TeacherUnavailable

    console, err = Console(), Console(stderr=True)
    try:
        cfg = load_rsa_config(args.config)
    except ConfigError as e:
        err.print(f"[red]config error:[/] {e}")
        return EXIT_USAGE
    view = _RichProgress(console, enabled=not args.quiet)
    progress = RunProgress(update=view.update)
    view.total_of = progress
    try:
        with view.bar:
            res = run_rsa(cfg, args.out, progress=progress, overwrite=args.overwrite,
                          stop_after_batches=args.max_batches)
    except (OutputMismatchError, ConfigError) as e:
        err.print(f"[red]error:[/] {e}")
        return EXIT_USAGE
    except (FileNotFoundError, ValueError) as e:
        err.print(f"[red]error:[/] {e}")
        return EXIT_USAGE
    except TeacherUnavailable as e:
        err.print(f"[red]teacher unavailable:[/] {e}\nfinished batches are kept; rerun the same command to resume")
        return EXIT_FAILED
    for t in summary_tables(res.summary):
        console.print(t)
    console.print(f"output: {res.out}  (SFT: {res.out / 'sft'}/*.parquet, RL prompts: {res.out / 'rl'}/*.parquet)")
    if res.status != "complete":
        err.print(f"[yellow]stopped early[/] after {res.batches_done_now} new batch(es) of {res.batches}; "
                  "rerun to resume")
        return EXIT_FAILED
    return EXIT_OK


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add the `rsa` command to the `zaya-data` parser's subparsers."""
    p = subparsers.add_parser(
        "rsa", help="build an RSA aggregation dataset (expert or self aggregation)",
        description="Tails of each problem's rollouts -> K-candidate aggregation prompts -> the teacher's "
                    "aggregated solution, for R Markovian rounds. Writes OUT/sft/*.parquet (a mixture "
                    "source: format parquet, kind reasoning, category rsa) and OUT/rl/*.parquet (RL "
                    "prompts). Resumes an interrupted run.",
        epilog=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", help="RSA pipeline YAML (e.g. pipelines/rsa_math.yaml)")
    p.add_argument("--out", help="output folder (default: the file's `output`, else out/<name>)")
    p.add_argument("--overwrite", action="store_true", help="replace an output of another configuration")
    p.add_argument("--max-batches", type=int, help="stop after N newly finished problem batches (resume later)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_rsa)
    return p
