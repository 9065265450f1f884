"""A PyTorch dataset over the packed shards of one phase, for training.

Each item is one packed row as tensors:
- `input_ids` [context] int64
- `labels` [context] int64: `input_ids` where `loss_mask` is 1, else -100. Labels are
  NOT shifted: position t holds token t, and the trainer shifts (predicts labels[t+1]
  from position t), as Hugging Face causal-LM losses do. After that shift, a segment's
  last position would predict the next segment's first token; a trainer that wants no
  cross-document targets masks those positions using `cu_seqlens`.
- `loss_mask` [context] uint8 (as stored: 0 on padding and on non-trained tokens)
- `position_ids` [context] int64: restart at 0 at every segment boundary (the padding
  tail counts as one more segment)
- `cu_seqlens` [segments + 1] int32: [0, l1, l1+l2, ..., context] with the padding as its
  own final segment, the layout of variable-length (flash) attention.

Shards are opened lazily, memory-mapped, once per process: a DataLoader worker that
receives the dataset by fork or pickle opens its own handles on first use. Reading a
row decodes its row group once and keeps it for the following rows, so sequential or
shard-local access costs one decode per row group.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torch.utils.data import Dataset

from zaya_data.manifest import read_manifest
from zaya_data.shards import flat_lists

IGNORE_INDEX = -100
_COLUMNS = ["input_ids", "loss_mask", "segment_lengths", "num_padding"]


class PackedDataset(Dataset):
    def __init__(self, phase_dir: str | Path) -> None:
        self.phase_dir = Path(phase_dir)
        manifest = read_manifest(self.phase_dir)
        self.context: int = manifest["context"]
        self.files = [self.phase_dir / s["file"] for s in manifest["shards"]]
        # Footers only: where each row group starts in the global row numbering.
        group_file, group_index, group_rows = [], [], []
        for fi, path in enumerate(self.files):
            if not path.is_file():
                raise FileNotFoundError(f"{path}: shard listed in {self.phase_dir / 'manifest.json'} is missing")
            meta = pq.read_metadata(path)
            for g in range(meta.num_row_groups):
                group_file.append(fi)
                group_index.append(g)
                group_rows.append(meta.row_group(g).num_rows)
        self._group_file = np.array(group_file, dtype=np.int64)
        self._group_index = np.array(group_index, dtype=np.int64)
        self._group_start = np.concatenate([[0], np.cumsum(group_rows, dtype=np.int64)])
        self._handles: dict[int, pq.ParquetFile] = {}
        self._pid: int | None = None
        self._cached: tuple[int, dict[str, np.ndarray]] | None = None

    def __len__(self) -> int:
        return int(self._group_start[-1])

    def __getstate__(self) -> dict[str, Any]:
        # Open memory maps do not cross process boundaries; workers reopen lazily.
        state = self.__dict__.copy()
        state["_handles"] = {}
        state["_pid"] = None
        state["_cached"] = None
        return state

    def _file(self, fi: int) -> pq.ParquetFile:
        if self._pid != os.getpid():  # first use in this process (or a forked worker)
            self._handles = {}
            self._cached = None
            self._pid = os.getpid()
        handle = self._handles.get(fi)
        if handle is None:
            handle = pq.ParquetFile(pa.memory_map(str(self.files[fi]), "r"))
            self._handles[fi] = handle
        return handle

    def _group(self, gi: int) -> dict[str, np.ndarray]:
        pf = self._file(int(self._group_file[gi]))
        if self._cached is not None and self._cached[0] == gi:
            return self._cached[1]
        tbl = pf.read_row_group(int(self._group_index[gi]), columns=_COLUMNS)
        ids_v, ids_s, ids_n = flat_lists(tbl.column("input_ids"))
        mask_v, mask_s, _ = flat_lists(tbl.column("loss_mask"))
        seg_v, seg_s, seg_n = flat_lists(tbl.column("segment_lengths"))
        arrays = {
            "ids_v": ids_v, "ids_s": ids_s, "ids_n": ids_n, "mask_v": mask_v, "mask_s": mask_s,
            "seg_v": seg_v.astype(np.int64), "seg_s": seg_s, "seg_n": seg_n,
            "pad": tbl.column("num_padding").to_numpy().astype(np.int64),
        }
        self._cached = (gi, arrays)
        return arrays

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        n = len(self)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"row {i} out of range for {n} rows in {self.phase_dir}")
        gi = int(np.searchsorted(self._group_start, i, side="right") - 1)
        a = self._group(gi)
        j = i - int(self._group_start[gi])
        ctx = self.context
        if int(a["ids_n"][j]) != ctx:
            fi = int(self._group_file[gi])
            raise ValueError(f"{self.files[fi].name}: a row in group {int(self._group_index[gi])} has {int(a['ids_n'][j])} tokens, context is {ctx} (run zaya-data verify)")
        ids = a["ids_v"][a["ids_s"][j] : a["ids_s"][j] + ctx].astype(np.int64)
        mask = np.ascontiguousarray(a["mask_v"][a["mask_s"][j] : a["mask_s"][j] + ctx])
        segs = a["seg_v"][a["seg_s"][j] : a["seg_s"][j] + a["seg_n"][j]]
        pad = int(a["pad"][j])
        lengths = np.concatenate([segs, [pad]]) if pad > 0 else segs
        cu = np.concatenate([[0], np.cumsum(lengths)])
        if int(cu[-1]) != ctx:
            raise ValueError(f"row {i}: segment lengths + padding = {int(cu[-1])} != context {ctx} (run zaya-data verify)")
        position_ids = np.arange(ctx, dtype=np.int64) - np.repeat(cu[:-1], lengths)
        labels = np.where(mask == 1, ids, IGNORE_INDEX)
        return {
            "input_ids": torch.from_numpy(ids),
            "labels": torch.from_numpy(labels.astype(np.int64)),
            "loss_mask": torch.from_numpy(mask.astype(np.uint8)),
            "position_ids": torch.from_numpy(position_ids),
            "cu_seqlens": torch.from_numpy(cu.astype(np.int32)),
        }


def collate_packed(batch: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Batch rows for a DataLoader: fixed-size tensors are stacked to [B, context];
    `cu_seqlens` of the rows are joined into one boundary list over the flattened batch
    (row b's boundaries offset by b*context), with `max_seqlen` the longest segment, as
    variable-length attention kernels take them."""
    out = {k: torch.stack([row[k] for row in batch]) for k in ("input_ids", "labels", "loss_mask", "position_ids")}
    context = out["input_ids"].shape[1]
    parts = [batch[0]["cu_seqlens"]]
    for b, row in enumerate(batch[1:], start=1):
        parts.append(row["cu_seqlens"][1:] + b * context)
    cu = torch.cat(parts)
    out["cu_seqlens"] = cu
    out["max_seqlen"] = torch.tensor(int((cu[1:] - cu[:-1]).max()), dtype=torch.int32)
    return out
