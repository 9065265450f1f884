"""Bad input never crashes a build and is always accounted for; a killed build resumes
to the same bytes."""

from __future__ import annotations

import gzip
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from zaya_data.cli import main
from zaya_data.ledger import Ledger

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def real_lines(n: int) -> list[dict]:
    out = []
    for line in (DATA / "limo-eval" / "math.jsonl").open():
        r = json.loads(line)
        out.append({"prompt": r["problem"], "trace": f"<think>{r['solution']}</think>The answer is {r['answer']}."})
        if len(out) == n:
            break
    return out


# Each kind of malformed record, as raw JSONL bytes, with the number of records it is.
MALFORMED: dict[str, tuple[bytes, int]] = {
    "invalid_json": (b'{"prompt": "x", "trace": ', 1),
    "invalid_utf8": (b'{"prompt": "\xc3\x28 bad", "trace": "<think>r</think>a"}', 1),
    "not_an_object": (b'["prompt", "trace"]', 1),
    "a_bare_string": (b'"just a string"', 1),
    "a_number": (b"42", 1),
    "null_record": (b"null", 1),
    "missing_field": (b'{"prompt": "only a prompt"}', 1),
    "wrong_type_prompt": (b'{"prompt": ["a", "list"], "trace": "<think>r</think>a"}', 1),
    "wrong_type_trace": (b'{"prompt": "p", "trace": {"a": 1}}', 1),
    "null_field": (b'{"prompt": null, "trace": "<think>r</think>a"}', 1),
    "empty_prompt": (b'{"prompt": "", "trace": "<think>r</think>a"}', 1),
    "empty_answer": (b'{"prompt": "p", "trace": "<think>r</think>"}', 1),
    "empty_reasoning": (b'{"prompt": "p", "trace": "<think></think>answer"}', 1),
    "nul_byte": (b'{"prompt": "p\\u0000q", "trace": "<think>r</think>a"}', 1),
    "unclosed_think": (b'{"prompt": "p", "trace": "<think>reasoning that never ends"}', 1),
    "duplicate_key_object": (b'{"prompt": "p", "prompt": "q", "trace": "<think>r</think>a"}', 1),
    "huge_prompt": (json.dumps({"prompt": "word " * 5000, "trace": "<think>r</think>a"}).encode(), 1),
    "lone_surrogate": (b'{"prompt": "\\ud800 half", "trace": "<think>r</think>a"}', 1),
}


@pytest.fixture(scope="module")
def fuzz_mixture(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, int]]:
    d = tmp_path_factory.mktemp("fuzz")
    good = real_lines(120)
    expected: dict[str, int] = {}
    # 1. a JSONL file with every malformed kind between real records
    lines: list[bytes] = []
    for i, (raw, _) in enumerate(MALFORMED.values()):
        lines.append(json.dumps(good[i]).encode())
        lines.append(raw)
    lines.append(json.dumps(good[0]).encode())  # an exact duplicate record (same id)
    (d / "a.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    expected["jsonl"] = len(MALFORMED) * 2 + 1
    # 2. truncated gzip and zstd streams of real records
    body = b"".join(json.dumps(r).encode() + b"\n" for r in good[20:60])
    (d / "b.jsonl.gz").write_bytes(gzip.compress(body)[:-40])
    (d / "c.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(body)[:-30])
    # 3. an empty file and a file of binary garbage
    (d / "d.jsonl").write_bytes(b"")
    (d / "e.jsonl").write_bytes(bytes(random.Random(1).randrange(256) for _ in range(3000)))
    # 4. Parquet: a good file and one whose schema lacks the mapped field
    pq.write_table(pa.table({"prompt": [r["prompt"] for r in good[60:90]],
                             "trace": [r["trace"] for r in good[60:90]]}), d / "f.parquet")
    pq.write_table(pa.table({"question": ["q1", "q2", "q3"]}), d / "g.parquet")
    expected["parquet"] = 33
    (d / "mix.yaml").write_text(f"""
name: fuzz
sources:
  fz_jsonl: {{path: "{d}/*.jsonl*", format: jsonl, kind: reasoning, category: math,
             fields: {{prompt: prompt, trace: trace}}, split: think}}
  fz_parquet: {{path: "{d}/*.parquet", format: parquet, kind: reasoning, category: math,
               fields: {{prompt: prompt, trace: trace}}, split: think}}
phases:
  p:
    context: 512
    token_budget: 20K
    weights: {{fz_jsonl: 1, fz_parquet: 1}}
    max_repetition: 10
    allow_shortfall: true
""")
    return d / "mix.yaml", expected


def test_a_fuzz_corpus_builds_and_every_record_is_accounted_for(fuzz_mixture, tmp_path: Path) -> None:
    mix, expected = fuzz_mixture
    assert main(["build", str(mix), "--out", str(tmp_path), "--quiet", "--no-ray"]) == 0
    m = json.loads((tmp_path / "p" / "manifest.json").read_text())
    led = Ledger.read(tmp_path / "p" / "ledger.json")
    for name, s in m["sources"].items():
        assert s["input_records"] == s["unique_documents"] + s["not_selected_records"] + s["rejected_records"], name
    assert m["sources"]["fz_parquet"]["input_records"] == expected["parquet"]
    reasons = {r for (_, r, src) in led.counts if src == "fz_jsonl"}
    for reason in ("invalid_json", "invalid_utf8", "not_an_object", "missing_field", "wrong_type",
                   "empty_field", "nul_byte", "unclosed_think", "truncated_compressed_stream"):
        assert reason in reasons, (reason, reasons)
    # the JSONL file alone: every line is a record, written or rejected
    assert m["sources"]["fz_jsonl"]["input_records"] >= expected["jsonl"]
    assert main(["verify", str(tmp_path / "p")]) == 0


def _build_cmd(mix: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "zaya_data.cli", "build", str(mix), "--out", str(out), "--quiet", *extra]


@pytest.fixture(scope="module")
def kill_mixture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("kill")
    (d / "mix.yaml").write_text(f"""
name: kill
sources:
  rollouts:
    path: {DATA}/qwen25-math-eval/math_cot_100_rollouts8.jsonl
    format: jsonl
    kind: reasoning
    category: math
    fields: {{prompt: question, trace: "code[3]"}}
    split: final_paragraph
  gsm8k: {{path: "{DATA}/qwen25-math-eval/gsm8k.jsonl", format: jsonl, category: web, fields: {{text: question}}}}
  olympiad: {{path: "{DATA}/limo-eval/olympiadbench.jsonl", format: jsonl, category: web, fields: {{text: question}}}}
phases:
  p:
    context: 384
    token_budget: 150K
    weights: {{rollouts: 2, gsm8k: 1, olympiad: 1}}
    max_repetition: 4
    shard_rows: 8
""")
    return d / "mix.yaml"


def test_kill_9_of_the_driver_then_resume_gives_the_same_bytes(kill_mixture: Path, tmp_path: Path) -> None:
    ref = tmp_path / "ref"
    subprocess.run(_build_cmd(kill_mixture, ref, "--no-ray"), check=True)
    want = {p.name: p.read_bytes() for p in sorted((ref / "p").glob("shard-*.parquet"))}
    assert len(want) > 4
    rng = random.Random(7)
    for trial in range(3):
        out = tmp_path / f"k{trial}"
        proc = subprocess.Popen(_build_cmd(kill_mixture, out, "--no-ray"))
        time.sleep(rng.uniform(1.0, 4.0))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        # No partial file is ever visible under a final name.
        for f in (out / "p").glob("shard-*.parquet") if (out / "p").exists() else []:
            pq.read_metadata(f)
        subprocess.run(_build_cmd(kill_mixture, out, "--no-ray"), check=True)
        got = {p.name: p.read_bytes() for p in sorted((out / "p").glob("shard-*.parquet"))}
        assert got == want, f"trial {trial}"
        assert not list((out / "p").glob(".*tmp*"))
