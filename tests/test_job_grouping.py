"""How a phase's input files become tokenize jobs: enough jobs to keep a pool busy on a
small corpus, bounded jobs on a large one, and never a function of the worker count."""

from __future__ import annotations

from pathlib import Path

from zaya_data import pipeline
from zaya_data.config import load_mixture

MIX = """
name: jobs
sources:
  a: {{path: "{root}/a/*.jsonl", format: jsonl, category: web}}
  b: {{path: "{root}/b/*.jsonl", format: jsonl, category: web}}
phases:
  p: {{context: 256, token_budget: 1000, weights: {{a: 1, b: 1}}}}
"""


def test_job_bytes_bounds() -> None:
    assert pipeline.job_bytes(0) == pipeline.MIN_JOB_BYTES
    assert pipeline.job_bytes(10 << 20) == pipeline.MIN_JOB_BYTES
    assert pipeline.job_bytes(pipeline.JOBS_TARGET * (8 << 20)) == 8 << 20
    assert pipeline.job_bytes(1 << 50) == pipeline.JOB_BYTES


def _files(folder: Path, n: int, size: int) -> None:
    folder.mkdir(parents=True)
    line = '{"text": "' + "x" * 90 + '"}\n'
    for i in range(n):
        (folder / f"f{i:04d}.jsonl").write_text(line * (size // len(line)))


def test_small_files_group_and_sources_never_mix(tmp_path: Path) -> None:
    _files(tmp_path / "a", 40, 300_000)  # 12 MB: 1 MB jobs of 4 files (the last may be short)
    _files(tmp_path / "b", 3, 300_000)
    (tmp_path / "mix.yaml").write_text(MIX.format(root=tmp_path))
    mix = load_mixture(str(tmp_path / "mix.yaml"))
    units = pipeline._units(mix, ["a", "b"])
    jobs = pipeline.group_jobs(mix, units, tmp_path / "work")
    assert [len(j["units"]) for j in jobs] == [4] * 10 + [3]
    assert all(len({u["source"] for u in j["units"]}) == 1 for j in jobs)
    # every unit in exactly one job, in order; part names from the first unit of each job
    flat = [(u["source"], u["file_index"]) for j in jobs for u in j["units"]]
    assert flat == [(n, u.file_index) for n, u in units]
    assert len({j["out"] for j in jobs}) == len(jobs)


def test_one_large_file_per_job_when_files_are_big(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(pipeline, "MIN_JOB_BYTES", 100_000)
    _files(tmp_path / "a", 6, 300_000)
    _files(tmp_path / "b", 1, 1000)
    (tmp_path / "mix.yaml").write_text(MIX.format(root=tmp_path))
    mix = load_mixture(str(tmp_path / "mix.yaml"))
    jobs = pipeline.group_jobs(mix, pipeline._units(mix, ["a", "b"]), tmp_path / "work")
    assert [len(j["units"]) for j in jobs] == [1] * 7
