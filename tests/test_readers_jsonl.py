"""JSONL reading: compressed copies read identically, every bad line is counted with its
reason and line, strict mode names file/line/field, cut-off streams are counted, and
reading is streamed."""

from __future__ import annotations

import bz2
import gzip
import json
import lzma
import shutil
import tracemalloc
import zlib
from pathlib import Path

import pyarrow as pa
import pytest
import zstandard

from zaya_data.ledger import Ledger, StrictModeError
from zaya_data.readers import jsonl as jsonl_mod
from zaya_data.readers import list_units, read_source, read_unit
from zaya_data.specs import SourceSpec

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
ROLLOUTS = DATA / "qwen25-math-eval" / "math_cot_100_rollouts8.jsonl"
needs_data = pytest.mark.skipif(not ROLLOUTS.is_file(), reason="../shared/data is not beside the checkout")

ROLLOUT_FIELDS = {"problem": "question", "rollouts": "code", "rollout_answers": "pred", "reference_answer": "gt"}


def spec_for(path: Path | str, kind: str = "reasoning", fields: dict[str, str] | None = None,
             split: str | None = None, **options: object) -> SourceSpec:
    return SourceSpec(name="src", paths=(str(path),), format="jsonl", kind=kind, category="math",
                      fields=fields or {}, split=split, options=dict(options), origin="mix.yaml:3")


def read(spec: SourceSpec, ledger: Ledger | None = None, batch_size: int = 1024) -> tuple[pa.Table, Ledger]:
    ledger = ledger if ledger is not None else Ledger()
    tables = list(read_source(spec, ledger, batch_size))
    table = pa.concat_tables(tables) if tables else None
    return table, ledger  # type: ignore[return-value]


def reasons(ledger: Ledger) -> dict[str, int]:
    return {reason: n for (_stage, reason, _source), n in ledger.counts.items()}


def zstd_bytes(data: bytes) -> bytes:
    return zstandard.ZstdCompressor(level=3).compress(data)


@needs_data
@pytest.mark.parametrize("suffix", [".gz", ".zst", ".bz2", ".xz"])
def test_compressed_copies_give_the_table_of_the_plain_file(tmp_path: Path, suffix: str) -> None:
    raw = ROLLOUTS.read_bytes()
    packed = {".gz": gzip.compress, ".zst": zstd_bytes, ".bz2": bz2.compress, ".xz": lzma.compress}[suffix](raw)
    copy = tmp_path / f"rollouts.jsonl{suffix}"
    copy.write_bytes(packed)
    plain, _ = read(spec_for(ROLLOUTS, "rollout_group", ROLLOUT_FIELDS))
    table, ledger = read(spec_for(copy, "rollout_group", ROLLOUT_FIELDS))
    assert ledger.total() == 0
    assert table.equals(plain)
    assert plain.num_rows == 100


@needs_data
def test_multi_member_gzip_and_multi_frame_zstd_read_every_member(tmp_path: Path) -> None:
    lines = ROLLOUTS.read_bytes().splitlines(keepends=True)
    head, tail = b"".join(lines[:37]), b"".join(lines[37:])
    (tmp_path / "m.jsonl.gz").write_bytes(gzip.compress(head) + gzip.compress(tail))
    (tmp_path / "m.jsonl.zst").write_bytes(zstd_bytes(head) + zstd_bytes(tail))
    plain, _ = read(spec_for(ROLLOUTS, "rollout_group", ROLLOUT_FIELDS))
    for name in ("m.jsonl.gz", "m.jsonl.zst"):
        table, ledger = read(spec_for(tmp_path / name, "rollout_group", ROLLOUT_FIELDS))
        assert ledger.total() == 0
        assert table["problem_id"].to_pylist() == plain["problem_id"].to_pylist()


def complete_lines_before_truncation(path: Path) -> int:
    """Reference count with the standard library / zstandard's own readers: the number of
    newline-terminated lines decodable from the cut-off stream."""
    out = bytearray()
    if path.suffix == ".gz":
        # (gzip.open drops its last buffered block when it hits the cut; zlib does not)
        out += zlib.decompressobj(wbits=16 + zlib.MAX_WBITS).decompress(path.read_bytes())
    else:
        with path.open("rb") as fh, zstandard.ZstdDecompressor().stream_reader(fh) as reader:
            while chunk := reader.read(4096):  # zstandard returns a silent EOF here
                out += chunk
    return out.count(b"\n")


@needs_data
@pytest.mark.parametrize("suffix", [".gz", ".zst"])
def test_truncated_stream_keeps_what_was_read_and_counts_one_rejection(tmp_path: Path, suffix: str) -> None:
    raw = ROLLOUTS.read_bytes()
    packed = gzip.compress(raw) if suffix == ".gz" else zstd_bytes(raw)
    cut = tmp_path / f"cut.jsonl{suffix}"
    cut.write_bytes(packed[: len(packed) * 2 // 3])
    expected = complete_lines_before_truncation(cut)
    assert 0 < expected < 100

    table, ledger = read(spec_for(cut, "rollout_group", ROLLOUT_FIELDS))
    plain, _ = read(spec_for(ROLLOUTS, "rollout_group", ROLLOUT_FIELDS))
    assert table.num_rows == expected
    assert table["problem_id"].to_pylist() == plain["problem_id"].to_pylist()[:expected]
    assert reasons(ledger) == {"truncated_compressed_stream": 1}
    example = ledger.examples[("read", "truncated_compressed_stream", "src")][0]
    assert example["file"] == str(cut)
    assert example["location"] == f"after line {expected}"


def test_a_file_that_is_not_gzip_is_counted_as_corrupt(tmp_path: Path) -> None:
    bad = tmp_path / "fake.jsonl.gz"
    bad.write_bytes(b'{"text": "not compressed at all"}\n')
    table, ledger = read(spec_for(bad, "document"))
    assert table is None
    assert reasons(ledger) == {"corrupt_compressed_stream": 1}


# One line per failure the reader must name; the comment is the expected reason.
BAD_LINES: list[bytes] = [
    b'{"prompt": "p1", "reasoning": "r1", "answer": "a1"}',  # ok
    b'{"prompt": "p2", "reasoning": "r2", "answer": ',  # invalid_json
    b'{"prompt": "p3 \xff\xfe", "reasoning": "r3", "answer": "a3"}',  # invalid_utf8
    b'["prompt", "reasoning", "answer"]',  # not_an_object
    b'{"prompt": "p5", "reasoning": "r5"}',  # missing_field (answer)
    b'{"prompt": "p6", "reasoning": 6, "answer": "a6"}',  # wrong_type (reasoning)
    b'{"prompt": "", "reasoning": "r7", "answer": "a7"}',  # empty_field (prompt)
    b'{"prompt": "p8", "reasoning": "r\\u0000 8", "answer": "a8"}',  # nul_byte (reasoning)
    b"",  # blank: not a record
    b"   \t",  # blank: not a record
    b'{"prompt": "p11", "reasoning": "r11", "answer": 11}',  # ok (numeric answer -> "11")
    b'{"prompt": "p12", "reasoning": "   ", "answer": "a12"}',  # empty_field (whitespace only)
    b'{"prompt": "p13", "reasoning": "r13", "answer": null}',  # missing_field (null)
    b'{"prompt": "p14", "reasoning": "r14", "answer": true}',  # wrong_type (bool is not a number here)
    b'{"prompt": "p15 \\ud800", "reasoning": "r15", "answer": "a15"}',  # invalid_utf8 (lone surrogate)
    b'{"prompt": "p16", "reasoning": "r16", "answer": "a16", "extra": {"k": [1, 2]}}',  # ok, with meta
    b"42",  # not_an_object
    b'{"prompt": "p18", "reasoning": "r18", "answer": "a18"',  # invalid_json
]
EXPECTED_REASONS = {
    "invalid_json": 2, "invalid_utf8": 2, "not_an_object": 2, "missing_field": 2,
    "wrong_type": 2, "empty_field": 2, "nul_byte": 1,
}


def write_bad(tmp_path: Path) -> Path:
    path = tmp_path / "bad.jsonl"
    path.write_bytes(b"\n".join(BAD_LINES) + b"\n")
    return path


@pytest.mark.parametrize("parser", ["orjson", "stdlib"])
def test_every_bad_line_is_counted_with_its_reason(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   parser: str) -> None:
    if parser == "stdlib":
        monkeypatch.setattr(jsonl_mod, "_fast_loads", None)
    elif jsonl_mod._fast_loads is None:
        pytest.skip("orjson is not installed")
    table, ledger = read(spec_for(write_bad(tmp_path)))
    records = sum(1 for line in BAD_LINES if line.strip())
    assert records == 16
    assert table.num_rows + ledger.total() == records
    assert reasons(ledger) == EXPECTED_REASONS
    assert table["prompt"].to_pylist() == ["p1", "p11", "p16"]
    assert table["answer"].to_pylist() == ["a1", "11", "a16"]
    assert table["row_index"].to_pylist() == [0, 10, 15]  # 0-based line numbers, blank lines included
    assert table["meta"].to_pylist() == [None, None, '{"extra": {"k": [1, 2]}}']
    where = {(r, e["location"]) for (_s, r, _src), ex in ledger.examples.items() for e in ex}
    assert where == {
        ("invalid_json", "line 2"), ("invalid_utf8", "line 3"), ("not_an_object", "line 4"),
        ("missing_field", "line 5"), ("wrong_type", "line 6"), ("empty_field", "line 7"), ("nul_byte", "line 8"),
        ("empty_field", "line 12"), ("missing_field", "line 13"), ("wrong_type", "line 14"),
        ("invalid_utf8", "line 15"), ("not_an_object", "line 17"), ("invalid_json", "line 18"),
    }
    details = {e["location"]: e["detail"] for ex in ledger.examples.values() for e in ex}
    assert details["line 5"] == "field 'answer' (answer) is missing"
    assert details["line 6"] == "field 'reasoning' (reasoning): expected a string, got int"
    assert details["line 8"] == "field 'reasoning' (reasoning) contains a NUL byte"
    assert details["line 13"] == "field 'answer' (answer) is null"


def test_strict_mode_raises_naming_file_line_and_field(tmp_path: Path) -> None:
    path = tmp_path / "strict.jsonl"
    path.write_text('{"prompt": "p", "reasoning": "r", "answer": "a"}\n{"prompt": "p", "reasoning": "r"}\n')
    with pytest.raises(StrictModeError) as err:
        read(spec_for(path), Ledger(strict=True))
    message = str(err.value)
    assert f"{path}:line 2" in message
    assert "read/missing_field" in message
    assert "field 'answer'" in message


def test_strict_mode_names_the_byte_of_an_undecodable_line(tmp_path: Path) -> None:
    path = write_bad(tmp_path)
    path.write_bytes(b"\n".join([BAD_LINES[0], BAD_LINES[2]]) + b"\n")
    with pytest.raises(StrictModeError, match=r"line 2, undecodable byte at offset 15"):
        read(spec_for(path), Ledger(strict=True))


@needs_data
def test_tiny_read_chunks_split_lines_anywhere_and_change_nothing(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    gz = tmp_path / "r.jsonl.gz"
    gz.write_bytes(gzip.compress(ROLLOUTS.read_bytes()))
    plain, _ = read(spec_for(ROLLOUTS, "rollout_group", ROLLOUT_FIELDS))
    monkeypatch.setattr(jsonl_mod, "CHUNK", 7)
    monkeypatch.setattr(jsonl_mod, "COMPRESSED_CHUNK", 5)
    for path in (ROLLOUTS, gz):
        table, ledger = read(spec_for(path, "rollout_group", ROLLOUT_FIELDS))
        assert ledger.total() == 0
        assert table.equals(plain)


def test_crlf_bom_and_missing_final_newline_read_like_plain_lines(tmp_path: Path) -> None:
    rows = [{"text": f"doc {i}", "n": i} for i in range(3)]
    plain = tmp_path / "plain.jsonl"
    plain.write_text("".join(json.dumps(r) + "\n" for r in rows))
    odd = tmp_path / "odd.jsonl"
    odd.write_bytes(b"\xef\xbb\xbf" + b"\r\n".join(json.dumps(r).encode() for r in rows))
    a, la = read(spec_for(plain, "document"))
    b, lb = read(spec_for(odd, "document"))
    assert la.total() == lb.total() == 0
    assert b.drop(["file_index"]).equals(a.drop(["file_index"]))
    assert b["text"].to_pylist() == ["doc 0", "doc 1", "doc 2"]
    assert b["meta"].to_pylist() == ['{"n": 0}', '{"n": 1}', '{"n": 2}']


@needs_data
def test_ids_are_the_same_across_reads_and_batch_sizes() -> None:
    spec = spec_for(ROLLOUTS, "reasoning", {"prompt": "question", "trace": "code[1]"}, "final_paragraph")
    tables = [read(spec, batch_size=bs)[0] for bs in (1, 7, 1024, 1024)]
    for t in tables[1:]:
        assert t.equals(tables[0])
    batches = list(read_source(spec, Ledger(), batch_size=7))
    assert [b.num_rows for b in batches] == [7] * 14 + [2]
    assert len(set(tables[0]["id"].to_pylist())) == 100


def test_reading_is_streamed_not_loaded_whole(tmp_path: Path) -> None:
    # ~24 MB of JSONL; reading it batch by batch must never hold the file in memory.
    path = tmp_path / "big.jsonl"
    filler = "x" * 2000
    with path.open("w") as fh:
        for i in range(12_000):
            fh.write(json.dumps({"text": f"{i} {filler}"}) + "\n")
    assert path.stat().st_size > 24_000_000
    spec = spec_for(path, "document", meta=False)
    unit = list_units(spec)[0]
    tracemalloc.start()
    try:
        rows = 0
        for batch in read_unit(spec, unit, Ledger(), batch_size=256):
            rows += batch.num_rows
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert rows == 12_000
    assert peak < 8_000_000, f"peak Python memory {peak} bytes while reading a 24 MB file"


def test_meta_can_be_switched_off_per_source(tmp_path: Path) -> None:
    path = tmp_path / "m.jsonl"
    path.write_text('{"text": "t", "url": "u"}\n')
    on, _ = read(spec_for(path, "document"))
    off, _ = read(spec_for(path, "document", meta=False))
    assert on["meta"].to_pylist() == ['{"url": "u"}']
    assert off["meta"].to_pylist() == [None]


def test_copied_file_under_two_globs_is_one_unit(tmp_path: Path) -> None:
    src = tmp_path / "a" / "x.jsonl"
    src.parent.mkdir()
    src.write_text('{"text": "t"}\n')
    shutil.copy(src, tmp_path / "a" / "y.jsonl")
    spec = SourceSpec(name="s", paths=(str(tmp_path / "a" / "*.jsonl"), str(src), str(tmp_path / "**" / "x.jsonl")),
                      format="jsonl", kind="document", category="c")
    assert [Path(u.path).name for u in list_units(spec)] == ["x.jsonl", "y.jsonl"]


def test_chat_records_with_think_blocks_read_end_to_end(tmp_path: Path) -> None:
    records = [
        {"messages": [{"role": "system", "content": "S"}, {"role": "user", "content": "2+2?"},
                      {"role": "assistant", "content": "<think>\nadd\n</think>\n\n4"}], "lang": "en"},
        {"messages": [{"role": "user", "content": "3+3?"}, {"role": "assistant", "content": "<think>add, then"}]},
        {"messages": [{"role": "user", "content": "5+5?"},
                      {"role": "assistant", "content": "10", "reasoning_content": "five twice"}]},
    ]
    path = tmp_path / "chat.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    table, ledger = read(spec_for(path, fields={"messages": "messages"}))
    assert table.select(["prompt", "reasoning", "answer", "meta"]).to_pylist() == [
        {"prompt": "S\n\n2+2?", "reasoning": "add", "answer": "4", "meta": '{"lang": "en"}'},
        {"prompt": "5+5?", "reasoning": "five twice", "answer": "10", "meta": None},
    ]
    assert reasons(ledger) == {"unclosed_think": 1}
    assert ledger.examples[("read", "unclosed_think", "src")][0]["location"] == "line 2"


def test_an_answer_too_long_for_str_is_counted_not_fatal(tmp_path: Path) -> None:
    path = tmp_path / "huge.jsonl"
    digits = "9" * 5000  # beyond Python's int <-> str digit limit
    path.write_text('{"prompt": "p", "reasoning": "r", "answer": ' + digits + "}\n"
                    '{"prompt": "p", "reasoning": "r", "answer": "' + digits + '"}\n')
    table, ledger = read(spec_for(path))
    assert table["answer"].to_pylist() == [digits]
    assert reasons(ledger) == {"invalid_json": 1}
