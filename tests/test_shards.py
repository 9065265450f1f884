"""Packed-row assembly and reproducible, atomic shard writing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from zaya_data.io import sha256_file
from zaya_data.schema import TOKENIZED
from zaya_data.shards import PACKED, assemble_rows, write_shard, write_shards


def tokenized(lengths: list[int], sources: list[str] | None = None, pieces: list[int] | None = None) -> pa.Table:
    """Item i has tokens 100*i .. 100*i+len-1; loss on all but its first token."""
    rows = []
    for i, n in enumerate(lengths):
        rows.append(
            {
                "id": f"src:{i:02d}", "source": (sources or ["web"] * len(lengths))[i],
                "category": "math" if i % 2 else "web", "file_index": 0, "row_index": i,
                "piece": (pieces or [0] * len(lengths))[i],
                "input_ids": list(range(100 * i, 100 * i + n)), "loss_mask": [0] + [1] * (n - 1),
                "num_tokens": n, "loss_tokens": n - 1, "trimmed": False, "trimmed_tokens": 0,
            }
        )
    return pa.Table.from_pylist(rows, schema=TOKENIZED)


def test_assemble_rows_exact_contents_with_repeated_item_and_padding() -> None:
    items = tokenized([3, 2, 4], sources=["a", "b", "a"], pieces=[0, 2, 0])
    out = assemble_rows(items, [np.array([2, 1]), np.array([0, 1])], context=8, pad_id=7)
    assert out.schema.equals(PACKED)
    assert out.to_pylist() == [
        {
            "input_ids": [200, 201, 202, 203, 100, 101, 7, 7], "loss_mask": [0, 1, 1, 1, 0, 1, 0, 0],
            "segment_lengths": [4, 2], "segment_sources": ["a", "b"], "segment_ids": ["src:02", "src:01#2"],
            "segment_categories": ["web", "math"], "num_padding": 2,
        },
        {
            "input_ids": [0, 1, 2, 100, 101, 7, 7, 7], "loss_mask": [0, 1, 1, 0, 1, 0, 0, 0],
            "segment_lengths": [3, 2], "segment_sources": ["a", "b"], "segment_ids": ["src:00", "src:01#2"],
            "segment_categories": ["web", "math"], "num_padding": 3,
        },
    ]


def test_assemble_rows_reads_chunked_and_sliced_inputs() -> None:
    whole = tokenized([3, 2, 4, 1, 5])
    chunked = pa.concat_tables([whole.slice(0, 2), whole.slice(2, 3)])
    assert chunked.column("input_ids").num_chunks == 2
    bins = [np.array([4, 3]), np.array([0, 2, 1])]
    assert assemble_rows(chunked, bins, 10, 0).equals(assemble_rows(whole, bins, 10, 0))
    sliced = whole.slice(1, 4)  # offsets of a sliced list array do not start at 0
    assert assemble_rows(sliced, [np.array([3])], 6, 0).column("input_ids").to_pylist() == [[400, 401, 402, 403, 404, 0]]


def test_assemble_rows_rejects_overfull_bin_and_mismatched_mask() -> None:
    items = tokenized([3, 4])
    with pytest.raises(ValueError, match=r"bin 0 holds 7 tokens > context 6"):
        assemble_rows(items, [np.array([0, 1])], 6, 0)
    bad = items.set_column(items.schema.get_field_index("loss_mask"), TOKENIZED.field("loss_mask"),
                           pa.array([[1, 1, 1], [1]], pa.list_(pa.uint8())))
    with pytest.raises(ValueError, match=r"item 1 \(id 'src:01'\): input_ids has 4 tokens but loss_mask has 1"):
        assemble_rows(bad, [np.array([1])], 6, 0)


def test_write_shard_returns_counts_and_is_byte_identical_twice(tmp_path: Path) -> None:
    rows = assemble_rows(tokenized([3, 2, 4], sources=["a", "b", "a"]), [np.array([2, 1]), np.array([0])], 8, 7)
    e1 = write_shard(rows, tmp_path / "one" / "shard-00000.parquet")
    e2 = write_shard(rows, tmp_path / "two" / "shard-00000.parquet")
    assert (tmp_path / "one" / "shard-00000.parquet").read_bytes() == (tmp_path / "two" / "shard-00000.parquet").read_bytes()
    assert e1 == e2
    assert e1["sha256"] == sha256_file(tmp_path / "one" / "shard-00000.parquet")
    assert {k: v for k, v in e1.items() if k not in ("sha256", "bytes")} == {
        "file": "shard-00000.parquet", "rows": 2, "tokens": 9, "padding_tokens": 7, "loss_tokens": 6, "segments": 3,
    }
    back = pq.read_table(tmp_path / "one" / "shard-00000.parquet")
    assert back.schema.equals(PACKED) and back.equals(rows)
    assert pq.ParquetFile(tmp_path / "one" / "shard-00000.parquet").metadata.row_group(0).column(0).compression == "ZSTD"


def test_failed_write_leaves_no_file_under_the_final_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rows = assemble_rows(tokenized([3]), [np.array([0])], 4, 0)

    def broken(table: pa.Table, where: Path, **kwargs: object) -> None:
        Path(where).write_bytes(b"PAR1 half a file")
        raise OSError("disk full")

    monkeypatch.setattr("zaya_data.shards.pq.write_table", broken)
    with pytest.raises(OSError, match="disk full"):
        write_shard(rows, tmp_path / "shard-00000.parquet")
    assert list(tmp_path.iterdir()) == []  # neither the shard nor its temporary file


def test_write_shard_refuses_a_table_that_is_not_packed(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"shard-00000.parquet: table schema is not PACKED"):
        write_shard(tokenized([2]), tmp_path / "shard-00000.parquet")
    assert not (tmp_path / "shard-00000.parquet").exists()


def test_write_shards_splits_rows_into_numbered_files(tmp_path: Path) -> None:
    rows = assemble_rows(tokenized([1, 2, 3, 4, 5]), [np.array([i]) for i in range(5)], 5, 0)
    entries = write_shards(rows, tmp_path, rows_per_shard=2)
    assert [(e["file"], e["rows"], e["tokens"]) for e in entries] == [
        ("shard-00000.parquet", 2, 3), ("shard-00001.parquet", 2, 7), ("shard-00002.parquet", 1, 5),
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == [e["file"] for e in entries]
