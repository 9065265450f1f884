"""Megatron `.bin/.idx` export: one document per packed segment, padding dropped."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from zaya_data.manifest import totals_from_shards, write_manifest
from zaya_data.megatron import export_megatron, read_megatron
from zaya_data.packing import best_fit_decreasing
from zaya_data.schema import TOKENIZED
from zaya_data.shards import assemble_rows, write_shards

CONTEXT = 32


def build_phase(phase: Path, vocab_size: int, high_token: int = 0) -> list[list[int]]:
    """A phase from 25 random items; returns every segment's tokens in shard order."""
    rng = np.random.default_rng(3)
    lengths = rng.integers(1, CONTEXT + 1, size=25)
    rows = []
    for i, n in enumerate(lengths.tolist()):
        ids = rng.integers(1, 60000, size=n).tolist()
        if i == 0 and high_token:
            ids[0] = high_token
        rows.append({
            "id": f"s:{i}", "source": "s", "category": "c", "file_index": 0, "row_index": i, "piece": 0,
            "input_ids": ids, "loss_mask": [1] * n, "num_tokens": n, "loss_tokens": n, "trimmed": False, "trimmed_tokens": 0,
        })
    items = pa.Table.from_pylist(rows, schema=TOKENIZED)
    shards = write_shards(assemble_rows(items, best_fit_decreasing(lengths, CONTEXT), CONTEXT, 0), phase, rows_per_shard=4)
    write_manifest(phase, {"format_version": 1, "context": CONTEXT, "shards": shards,
                           "totals": totals_from_shards(shards, CONTEXT), "tokenizer": {"pad_id": 0, "vocab_size": vocab_size}})
    segments = []
    for s in shards:
        for row in pq.read_table(phase / s["file"]).to_pylist():
            start = 0
            for n in row["segment_lengths"]:
                segments.append(row["input_ids"][start : start + n])
                start += n
    assert len(segments) == 25
    return segments


def test_round_trip_equals_the_segments_uint16(tmp_path: Path) -> None:
    segments = build_phase(tmp_path / "phase", vocab_size=65000)
    summary = export_megatron(tmp_path / "phase", tmp_path / "out" / "mid")
    assert (summary["dtype"], summary["sequences"], summary["documents"]) == ("uint16", 25, 25)
    assert summary["tokens"] == sum(len(s) for s in segments)
    ds = read_megatron(tmp_path / "out" / "mid")
    assert ds.dtype == np.uint16
    assert [ds[i].tolist() for i in range(len(ds))] == segments
    assert ds.document_indices.tolist() == list(range(26))
    assert (tmp_path / "out" / "mid.bin").stat().st_size == 2 * summary["tokens"]
    # header, byte for byte: magic, version 1, dtype code 8 (uint16), 25 sequences, 26 doc indices
    head = (tmp_path / "out" / "mid.idx").read_bytes()[:34]
    assert head == b"MMIDIDX\x00\x00" + struct.pack("<QBQQ", 1, 8, 25, 26)
    assert ds.sequence_pointers.tolist() == [2 * sum(len(s) for s in segments[:i]) for i in range(25)]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["mid.bin", "mid.idx"]


def test_large_vocab_exports_int32_and_is_reproducible(tmp_path: Path) -> None:
    segments = build_phase(tmp_path / "phase", vocab_size=151_000, high_token=150_000)
    a = export_megatron(tmp_path / "phase", tmp_path / "a")
    b = export_megatron(tmp_path / "phase", tmp_path / "b")
    assert a["dtype"] == "int32" and (a["bin_sha256"], a["idx_sha256"]) == (b["bin_sha256"], b["idx_sha256"])
    ds = read_megatron(tmp_path / "a")
    assert 150_000 in sum(segments, [])  # a token that uint16 could not hold
    assert [ds[i].tolist() for i in range(len(ds))] == segments


def test_token_outside_dtype_fails_without_leaving_files(tmp_path: Path) -> None:
    build_phase(tmp_path / "phase", vocab_size=151_000, high_token=70_000)
    with pytest.raises(ValueError, match=r"shard-0000\d.parquet: token ids span .* outside uint16"):
        export_megatron(tmp_path / "phase", tmp_path / "out" / "x", dtype="uint16")
    assert list((tmp_path / "out").iterdir()) == []
