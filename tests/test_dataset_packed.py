"""PackedDataset: exact training tensors from a hand-built phase, and DataLoader workers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from torch.utils.data import DataLoader

from zaya_data.dataset import PackedDataset, collate_packed
from zaya_data.manifest import totals_from_shards, write_manifest
from zaya_data.schema import TOKENIZED
from zaya_data.shards import assemble_rows, write_shards

CONTEXT = 8
PAD = 9


def build_phase(phase: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # item i: tokens 10*i+1 .. ; loss on every token but the first of each item
    lengths = [3, 2, 4, 8, 1, 5]
    items = pa.Table.from_pylist(
        [
            {
                "id": f"s:{i}", "source": "s", "category": "c", "file_index": 0, "row_index": i, "piece": 0,
                "input_ids": [10 * i + 1 + k for k in range(n)], "loss_mask": [0] + [1] * (n - 1),
                "num_tokens": n, "loss_tokens": n - 1, "trimmed": False, "trimmed_tokens": 0,
            }
            for i, n in enumerate(lengths)
        ],
        schema=TOKENIZED,
    )
    bins = [np.array([0, 1]), np.array([3]), np.array([2, 4]), np.array([5, 0])]
    # two rows per row group, three rows per shard: row 2 sits in a second row group
    # and row 3 in a second shard, so the reader's global row numbering is exercised.
    monkeypatch.setattr("zaya_data.shards.ROW_GROUP_TOKENS", 2 * CONTEXT)
    shards = write_shards(assemble_rows(items, bins, CONTEXT, PAD), phase, rows_per_shard=3)
    assert pq.ParquetFile(phase / "shard-00000.parquet").num_row_groups == 2
    write_manifest(phase, {"format_version": 1, "context": CONTEXT, "shards": shards,
                           "totals": totals_from_shards(shards, CONTEXT), "tokenizer": {"pad_id": PAD}})


def as_lists(item: dict[str, torch.Tensor]) -> dict[str, list[int]]:
    return {k: v.tolist() for k, v in item.items()}


def test_rows_give_exact_labels_positions_and_cu_seqlens(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    build_phase(tmp_path, monkeypatch)
    ds = PackedDataset(tmp_path)
    assert len(ds) == 4
    row0 = ds[0]
    assert {k: v.dtype for k, v in row0.items()} == {
        "input_ids": torch.int64, "labels": torch.int64, "loss_mask": torch.uint8,
        "position_ids": torch.int64, "cu_seqlens": torch.int32,
    }
    assert as_lists(row0) == {
        "input_ids": [1, 2, 3, 11, 12, 9, 9, 9],
        "labels": [-100, 2, 3, -100, 12, -100, -100, -100],
        "loss_mask": [0, 1, 1, 0, 1, 0, 0, 0],
        "position_ids": [0, 1, 2, 0, 1, 0, 1, 2],
        "cu_seqlens": [0, 3, 5, 8],
    }
    assert as_lists(ds[1]) == {  # one full-length item: no padding segment
        "input_ids": [31, 32, 33, 34, 35, 36, 37, 38],
        "labels": [-100, 32, 33, 34, 35, 36, 37, 38],
        "loss_mask": [0, 1, 1, 1, 1, 1, 1, 1],
        "position_ids": [0, 1, 2, 3, 4, 5, 6, 7],
        "cu_seqlens": [0, 8],
    }
    assert as_lists(ds[2])["cu_seqlens"] == [0, 4, 5, 8]
    assert as_lists(ds[2])["position_ids"] == [0, 1, 2, 3, 0, 0, 1, 2]
    assert as_lists(ds[-1]) == {  # second shard: item 5 then item 0 again, exact fit
        "input_ids": [51, 52, 53, 54, 55, 1, 2, 3],
        "labels": [-100, 52, 53, 54, 55, -100, 2, 3],
        "loss_mask": [0, 1, 1, 1, 1, 0, 1, 1],
        "position_ids": [0, 1, 2, 3, 4, 0, 1, 2],
        "cu_seqlens": [0, 5, 8],
    }
    with pytest.raises(IndexError, match="row 4 out of range for 4 rows"):
        ds[4]


def test_dataloader_with_workers_matches_direct_reads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    build_phase(tmp_path, monkeypatch)
    ds = PackedDataset(tmp_path)
    ds[0]  # open handles in the parent: workers must not reuse them
    loader = DataLoader(ds, batch_size=2, num_workers=2, collate_fn=collate_packed)
    batches = list(loader)
    assert len(batches) == 2
    first = batches[0]
    assert first["input_ids"].tolist() == [ds[0]["input_ids"].tolist(), ds[1]["input_ids"].tolist()]
    # row 1's boundaries are offset by one context in the flattened batch
    assert first["cu_seqlens"].tolist() == [0, 3, 5, 8, 16]
    assert int(first["max_seqlen"]) == 8
    assert batches[1]["cu_seqlens"].tolist() == [0, 4, 5, 8, 13, 16]
    assert batches[1]["labels"].tolist() == [ds[2]["labels"].tolist(), ds[3]["labels"].tolist()]


def test_missing_shard_is_named_when_opening(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    build_phase(tmp_path, monkeypatch)
    (tmp_path / "shard-00001.parquet").unlink()
    with pytest.raises(FileNotFoundError, match="shard-00001.parquet: shard listed in .*manifest.json is missing"):
        PackedDataset(tmp_path)
