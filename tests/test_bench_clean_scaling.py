"""The near-dedup scaling benchmark (benchmarks/bench_clean.py --scaling) keeps measuring
the same work: its map task layout covers every document once, and every core count and
layout finds the same duplicates."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from itertools import pairwise
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("ZAYA_SHARED_DATA", ROOT.parent / "shared" / "data"))
sys.path.insert(0, str(ROOT / "benchmarks"))

import bench_clean  # a script beside the tests' package, not an installed module


@pytest.mark.parametrize("n, chunks", [(554_649, 64), (1_000, 64), (64, 64), (17, 16)])
def test_chunk_sizes_cover_the_corpus(n: int, chunks: int) -> None:
    equal = bench_clean._chunk_sizes(n, chunks, "equal")
    falling = bench_clean._chunk_sizes(n, chunks, "decreasing")
    assert sum(equal) == sum(falling) == n
    assert len(equal) == len(falling) == chunks
    assert min(equal) >= 1 and min(falling) >= 1  # no empty task
    assert max(equal) - min(equal) <= 1
    assert all(a >= b - 1 for a, b in pairwise(falling))  # falling, up to rounding
    if n >= 1_000:  # the last wave is short: the last task about a fifth of the first
        assert falling[-1] < falling[0] / 4


def test_chunk_sizes_reject_an_unknown_layout_and_empty_tasks() -> None:
    with pytest.raises(ValueError, match="unknown chunk layout 'random'"):
        bench_clean._chunk_sizes(100, 4, "random")
    for chunks in (0, 101):
        with pytest.raises(ValueError, match=f"{chunks} map tasks for 100 documents"):
            bench_clean._chunk_sizes(100, chunks, "equal")


def test_stolen_time_is_read_where_there_is_proc_stat() -> None:
    stolen = bench_clean._stolen_s()
    if not Path("/proc/stat").exists():
        assert stolen is None
    else:
        assert stolen is not None and stolen >= 0


def _drops(out: str) -> list[int]:
    rows = [line for line in out.splitlines() if re.match(r"\| \d+ \|", line)]
    return [int(line.rstrip(" |").split("|")[-1].split()[0]) for line in rows]


def test_scaling_finds_the_same_duplicates_at_every_core_count_layout_allocator_and_start() -> None:
    if not DATA.exists():
        pytest.skip(f"shared data not found at {DATA} (set ZAYA_SHARED_DATA)")
    drops = []
    for layout, allocator, start in (("decreasing", "default", "forkserver"), ("equal", "retain", "fork")):
        run = subprocess.run(
            [sys.executable, str(ROOT / "benchmarks" / "bench_clean.py"), "--scaling", "1,2", "--scale", "1",
             "--corpus", "distinct", "--chunks", "8", "--chunk-layout", layout, "--allocator", allocator,
             "--start", start],
            capture_output=True, text=True, timeout=600, check=False, env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        assert run.returncode == 0, run.stderr
        assert f"8 {layout} chunks" in run.stdout and f"{allocator} allocator, {start} pools" in run.stdout
        assert "DIFFERS" not in run.stdout
        for phase in ("map", "reduce"):  # where each phase's time goes, on and off the CPU, and its faults
            table = run.stdout.split(f"# {phase} task parts")[1]
            for row in ("task wall time", "task CPU time", "task kernel time", "minor page faults (thousands)"):
                assert f"| {row} |" in table, (phase, row)
        drops += _drops(run.stdout)
    assert len(drops) == 4 and len(set(drops)) == 1 and drops[0] > 0, drops
