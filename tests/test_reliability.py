"""Bad input never crashes a build and is always accounted for; a killed build resumes
to the same bytes."""

from __future__ import annotations

import gzip
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from mixtures import three_source_mixture
from zaya_data.cli import main
from zaya_data.ledger import Ledger
from zaya_data.schema import stable_id

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def real_lines(n: int) -> list[dict]:
    out = []
    for line in (DATA / "limo-eval" / "math.jsonl").open():
        r = json.loads(line)
        out.append({"prompt": r["problem"], "trace": f"<think>{r['solution']}</think>The answer is {r['answer']}."})
        if len(out) == n:
            break
    return out


# JSONL lines each holding one malformed record -> the ledger reason it must get (None:
# the record is usable and written).
BAD_LINES: dict[str, tuple[bytes, str | None]] = {
    "invalid_json": (b'{"prompt": "x", "trace": ', "invalid_json"),
    "invalid_utf8": (b'{"prompt": "\xc3\x28 bad", "trace": "<think>r</think>a"}', "invalid_utf8"),
    "lone_surrogate": (b'{"prompt": "\\ud800 half", "trace": "<think>r</think>a"}', "invalid_utf8"),
    "not_an_object": (b'["prompt", "trace"]', "not_an_object"),
    "a_bare_string": (b'"just a string"', "not_an_object"),
    "a_number": (b"42", "not_an_object"),
    "null_record": (b"null", "not_an_object"),
    "missing_field": (b'{"prompt": "only a prompt"}', "missing_field"),
    "wrong_type_prompt": (b'{"prompt": ["a", "list"], "trace": "<think>r</think>a"}', "wrong_type"),
    "wrong_type_trace": (b'{"prompt": "p", "trace": {"a": 1}}', "wrong_type"),
    "null_field": (b'{"prompt": null, "trace": "<think>r</think>a"}', "missing_field"),
    "empty_prompt": (b'{"prompt": "", "trace": "<think>r</think>a"}', "empty_field"),
    "empty_answer": (b'{"prompt": "p", "trace": "<think>r</think>"}', "empty_field"),
    "empty_reasoning": (b'{"prompt": "p", "trace": "<think></think>answer"}', "empty_field"),
    "nul_byte_escaped": (b'{"prompt": "p\\u0000q", "trace": "<think>r</think>a"}', "nul_byte"),
    "nul_byte_raw": (b'{"prompt": "p\x00q", "trace": "<think>r</think>a"}', "invalid_json"),
    "unclosed_think": (b'{"prompt": "p", "trace": "<think>reasoning that never ends"}', "unclosed_think"),
    "deep_nesting": (b'{"prompt": "p", "trace": "<think>r</think>a", "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
                     "invalid_json"),
    "huge_prompt": (json.dumps({"prompt": "word " * 5000, "trace": "<think>r</think>a"}).encode(),
                    "prompt_and_answer_exceed_context"),
    "duplicate_key_object": (b'{"prompt": "p", "prompt": "q", "trace": "<think>r</think>a"}', None),
    "crlf_line_end": (b'{"prompt": "p", "trace": "<think>r</think>a"}\r', None),
}
BIG_DOC_BYTES = 200 << 20


@dataclass
class Kind:
    """One kind of bad input: its own source (so the manifest and the ledger account for
    it alone), and exactly what must become of its records."""

    fmt: str
    input_records: int
    rejections: dict[str, int]
    kind: str = "reasoning"
    written_ids: list[str] = field(default_factory=list)  # ids that must appear this many times

    @property
    def written(self) -> int:
        return self.input_records - sum(self.rejections.values())


def _complete_lines(data: bytes) -> int:
    return data.count(b"\n")


def _write_big_doc(path: Path, good: bytes) -> None:
    """good line, a 200 MB record, good line; written in 1 MiB pieces (memory stays low)."""
    piece = b"reasoning " * (1 << 17)  # 1.25 MiB
    with path.open("wb") as f:
        f.write(good + b"\n" + b'{"prompt": "p", "trace": "<think>')
        n = 0
        while n < BIG_DOC_BYTES:
            f.write(piece)
            n += len(piece)
        f.write(b'</think>the answer"}\n' + good + b"\n")


def build_corpus(d: Path) -> dict[str, Kind]:
    """Writes one folder per kind under `d`; returns what each kind must account for."""
    good = real_lines(60)
    enc = [json.dumps(r).encode() for r in good]
    kinds: dict[str, Kind] = {}

    def folder(name: str) -> Path:
        (d / name).mkdir()
        return d / name

    # JSONL: a real record, then the malformed one (it must not take its neighbour down).
    for i, (name, (raw, reason)) in enumerate(BAD_LINES.items()):
        (folder(name) / "a.jsonl").write_bytes(enc[i] + b"\n" + raw + b"\n")
        kinds[name] = Kind("jsonl", 2, {reason: 1} if reason else {})
    # The same record twice: one id, two positions, both written.
    (folder("duplicate_ids") / "a.jsonl").write_bytes(enc[30] + b"\n" + enc[30] + b"\n")
    kinds["duplicate_ids"] = Kind("jsonl", 2, {})
    # A byte-order mark before the first record.
    (folder("utf8_bom") / "a.jsonl").write_bytes(b"\xef\xbb\xbf" + enc[31] + b"\n")
    kinds["utf8_bom"] = Kind("jsonl", 1, {})
    # A 200 MB record between two real ones: rejected without being held in memory.
    _write_big_doc(folder("record_200mb") / "a.jsonl", enc[32])
    kinds["record_200mb"] = Kind("jsonl", 3, {"record_too_large": 1})
    # Truncated compressed streams: every complete line is read, the cut-off rest is one
    # rejection.
    body = b"".join(e + b"\n" for e in enc[33:53])
    cut_gz = gzip.compress(body)[:-40]
    (folder("truncated_gzip") / "a.jsonl.gz").write_bytes(cut_gz)
    n_gz = _complete_lines(zlib.decompressobj(wbits=16 + zlib.MAX_WBITS).decompress(cut_gz))
    kinds["truncated_gzip"] = Kind("jsonl", n_gz + 1, {"truncated_compressed_stream": 1})
    cut_zst = zstandard.ZstdCompressor().compress(body)[:-30]
    (folder("truncated_zstd") / "a.jsonl.zst").write_bytes(cut_zst)
    n_zst = _complete_lines(zstandard.ZstdDecompressor().decompressobj().decompress(cut_zst))
    kinds["truncated_zstd"] = Kind("jsonl", n_zst + 1, {"truncated_compressed_stream": 1})
    # An empty file, and binary garbage (every non-blank "line" is a rejected record).
    (folder("empty_file") / "a.jsonl").write_bytes(b"")
    kinds["empty_file"] = Kind("jsonl", 0, {})
    # 30 lines of random bytes, each starting with 0xFF (never valid UTF-8).
    rng = random.Random(1)
    garbage = [b"\xff" + bytes(rng.choice(range(11, 256)) for _ in range(rng.randrange(1, 200))) for _ in range(30)]
    (folder("binary_garbage") / "a.jsonl").write_bytes(b"\n".join(garbage))
    kinds["binary_garbage"] = Kind("jsonl", 30, {"invalid_utf8": 30})
    # Parquet: a column missing from the schema, a column of the wrong type, a file cut
    # in half (no footer), a middle row group with a damaged page (the groups after it
    # are still read).
    rows = {"prompt": [r["prompt"] for r in good[:30]], "trace": [r["trace"] for r in good[:30]]}
    pq.write_table(pa.table({"question": ["q1", "q2", "q3"]}), folder("parquet_missing_column") / "a.parquet")
    kinds["parquet_missing_column"] = Kind("parquet", 3, {"missing_field": 3})
    pq.write_table(pa.table({"prompt": [1, 2, 3], "trace": rows["trace"][:3]}), folder("parquet_wrong_type") / "a.parquet")
    kinds["parquet_wrong_type"] = Kind("parquet", 3, {"wrong_type": 3})
    pq.write_table(pa.table(rows), d / "whole.parquet", row_group_size=10)
    whole = (d / "whole.parquet").read_bytes()
    (folder("parquet_truncated") / "a.parquet").write_bytes(whole[: len(whole) // 2])
    kinds["parquet_truncated"] = Kind("parquet", 1, {"unreadable_file": 1})
    damaged = bytearray(whole)
    page = pq.ParquetFile(d / "whole.parquet").metadata.row_group(1).column(0).data_page_offset
    damaged[page:page + 40] = bytes(b ^ 0xFF for b in damaged[page:page + 40])
    (folder("parquet_damaged_row_group") / "a.parquet").write_bytes(bytes(damaged))
    kinds["parquet_damaged_row_group"] = Kind("parquet", 30, {"corrupt_file": 10})
    # Plain text (one file = one document) that is not UTF-8.
    (folder("text_not_utf8") / "a.txt").write_bytes("caf\u00e9 cr\u00e8me".encode("latin-1"))
    kinds["text_not_utf8"] = Kind("text", 1, {"invalid_utf8": 1}, kind="document")
    kinds["duplicate_ids"].written_ids = [stable_id("duplicate_ids", good[30]["prompt"], *_split(good[30]["trace"]))] * 2
    return kinds


def _split(trace: str) -> tuple[str, str]:
    from zaya_data.readers.fieldmap import split_think

    return split_think(trace, "trace")


def _source_yaml(name: str, k: Kind, d: Path) -> str:
    if k.fmt == "text":
        return f'  {name}: {{path: "{d}/{name}/*", format: text, category: c}}\n'
    return (f'  {name}: {{path: "{d}/{name}/*", format: {k.fmt}, kind: reasoning, category: c,\n'
            f'           fields: {{prompt: prompt, trace: trace}}, split: think}}\n')


@pytest.fixture(scope="module")
def fuzz_corpus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict[str, Kind]]]:
    d = tmp_path_factory.mktemp("fuzz")
    kinds = build_corpus(d)
    # A budget no source can meet and one epoch: every usable record is written once.
    (d / "mix.yaml").write_text(
        "name: fuzz\nsources:\n" + "".join(_source_yaml(n, k, d) for n, k in kinds.items())
        + "phases:\n  p:\n    context: 512\n    token_budget: 1T\n    allow_shortfall: true\n"
        + "    weights: {" + ", ".join(f"{n}: 1" for n in kinds) + "}\n"
    )
    yield d / "mix.yaml", kinds
    (d / "record_200mb" / "a.jsonl").unlink()  # don't leave 200 MB in pytest's kept temp dirs


def test_the_fuzz_corpus_has_at_least_20_kinds_across_formats(fuzz_corpus) -> None:
    _, kinds = fuzz_corpus
    assert len(kinds) == 33
    assert {k.fmt for k in kinds.values()} == {"jsonl", "parquet", "text"}
    assert {"record_200mb", "duplicate_ids", "truncated_zstd", "parquet_wrong_type", "unclosed_think",
            "nul_byte_raw", "invalid_utf8", "missing_field", "empty_prompt"} <= set(kinds)
    assert (fuzz_corpus[0].parent / "record_200mb" / "a.jsonl").stat().st_size > BIG_DOC_BYTES


def test_a_fuzz_corpus_builds_and_every_record_is_accounted_for(fuzz_corpus, tmp_path: Path) -> None:
    mix, kinds = fuzz_corpus
    assert main(["build", str(mix), "--out", str(tmp_path), "--quiet", "--no-ray"]) == 0
    m = json.loads((tmp_path / "p" / "manifest.json").read_text())
    led = Ledger.read(tmp_path / "p" / "ledger.json")
    assert set(m["sources"]) == set(kinds)
    for name, k in kinds.items():
        s = m["sources"][name]
        got = {reason: n for (_stage, reason, src), n in led.counts.items() if src == name}
        assert (s["input_records"], got) == (k.input_records, k.rejections), name
        # input = written + rejected, record for record: nothing was left unselected.
        assert (s["unique_documents"], s["not_selected_records"], s["rejected_records"]) == \
            (k.written, 0, sum(k.rejections.values())), name
    ids = [i for f in sorted((tmp_path / "p").glob("shard-*.parquet"))
           for row in pq.read_table(f, columns=["segment_ids"])["segment_ids"].to_pylist() for i in row]
    for name, k in kinds.items():
        for rid in set(k.written_ids):
            assert ids.count(rid) == k.written_ids.count(rid), name
    assert m["totals"]["rejected_records"] == sum(sum(k.rejections.values()) for k in kinds.values())
    assert main(["verify", str(tmp_path / "p")]) == 0


def _build_cmd(mix: Path, *extra: str) -> list[str]:
    # Always `--out out` from the build's own folder: the manifest records the command
    # line, so identical commands let whole phase folders be compared byte for byte.
    return [sys.executable, "-m", "zaya_data.cli", "build", str(mix), "--out", "out", "--quiet", *extra]


def _phase_files(out: Path) -> dict[str, bytes]:
    return {f.name: f.read_bytes() for f in sorted((out / "p").iterdir())}


@pytest.fixture(scope="module")
def kill_mixture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("kill")
    return three_source_mixture(d, name="kill")


def test_kill_9_of_the_driver_then_resume_gives_the_same_bytes(kill_mixture: Path, tmp_path: Path) -> None:
    (tmp_path / "ref").mkdir()
    t0 = time.monotonic()
    subprocess.run(_build_cmd(kill_mixture, "--no-ray"), cwd=tmp_path / "ref", check=True)
    duration = time.monotonic() - t0
    want = _phase_files(tmp_path / "ref" / "out")
    assert len([n for n in want if n.startswith("shard-")]) == 50
    rng = random.Random(7)
    interrupted = 0
    for trial in range(12):  # three interruptions; a kill drawn too late does not count
        cwd = tmp_path / f"k{trial}"
        cwd.mkdir()
        proc = subprocess.Popen(_build_cmd(kill_mixture, "--no-ray"), cwd=cwd)
        try:
            proc.wait(rng.uniform(0.05, 0.95) * duration)
            continue  # finished before the kill
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        interrupted += 1
        # No partial file is ever visible under a final name: each shard already there
        # is the reference's shard, byte for byte.
        for f in (cwd / "out" / "p").glob("shard-*.parquet"):
            assert f.read_bytes() == want[f.name], (trial, f.name)
        assert not (cwd / "out" / "p" / "manifest.json").exists()
        subprocess.run(_build_cmd(kill_mixture, "--no-ray"), cwd=cwd, check=True)
        # Shards, ledger and manifest identical; no temporary left beside them.
        assert _phase_files(cwd / "out") == want, f"trial {trial}"
        if interrupted == 3:
            break
    assert interrupted == 3


def _ray_workers_writing_parts(out: Path) -> dict[int, Path]:
    """pid -> temporary part file, for every tokenize job in progress: a worker writes
    its part under `.unit-NNNNN.arrow.tmp-<its pid>` and renames it when done."""
    found = {}
    for tmp in out.glob("_work/*/parts/*/.unit-*.arrow.tmp-*"):
        found[int(tmp.name.rsplit("-", 1)[1])] = tmp
    return found


def _dead(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat[stat.rfind(")") + 2] in "ZX"


def test_a_ray_worker_killed_mid_job_is_replaced_and_the_output_is_unchanged(kill_mixture: Path,
                                                                             tmp_path: Path) -> None:
    (tmp_path / "ref").mkdir()
    subprocess.run(_build_cmd(kill_mixture, "--no-ray"), cwd=tmp_path / "ref", check=True)
    want = _phase_files(tmp_path / "ref" / "out")
    cwd = tmp_path / "ray"
    cwd.mkdir()
    out = cwd / "out"
    # Ray's own temp folder, short: it holds unix sockets, whose paths are length-limited.
    ray_tmp = Path(tempfile.mkdtemp(prefix="zr-", dir="/tmp"))
    env = {**os.environ, "RAY_TMPDIR": str(ray_tmp), "RAY_USAGE_STATS_ENABLED": "0"}
    proc = subprocess.Popen(_build_cmd(kill_mixture, "--workers", "2"), cwd=cwd, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    killed: dict[int, Path] = {}
    try:
        # Kill a worker while it is inside a tokenize job; the kill counts when the job's
        # temporary file outlives the worker (it was never renamed to its final name).
        while proc.poll() is None and not any(t.exists() for t in killed.values()):
            writing = {pid: t for pid, t in _ray_workers_writing_parts(out).items() if pid not in killed}
            if not writing:
                time.sleep(0.005)
                continue
            pid, tmp = min(writing.items())
            os.kill(pid, signal.SIGKILL)
            while not _dead(pid):
                time.sleep(0.01)
            killed[pid] = tmp
        _, err = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert proc.returncode == 0, err.decode(errors="replace")[-3000:]
    stale = [t for t in killed.values() if t.exists()]
    assert len(stale) == 1, killed
    # The job the dead worker held was retried by a new worker: its part is complete.
    final = stale[0].with_name(stale[0].name.split(".tmp-")[0].lstrip("."))
    assert final.exists() and final.with_suffix(".json").exists()
    got = _phase_files(out)
    assert sorted(got) == sorted(want)
    for name in want:
        if name != "manifest.json":
            assert got[name] == want[name], name
    m_got, m_want = json.loads(got["manifest.json"]), json.loads(want["manifest.json"])
    assert m_got.pop("created_by_command") != m_want.pop("created_by_command")  # --workers 2 vs --no-ray
    assert m_got == m_want
