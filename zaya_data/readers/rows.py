"""Accumulate mapped rows in per-column Python lists and turn them into one Arrow table
per batch: one `pa.array` call per column per batch, none per record."""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from zaya_data.schema import SCHEMAS

# Largest record a reader passes on (UTF-8 bytes of its line, file or mapped text).
# Tokenizing holds ~120 bytes of memory per byte of text, so one 200 MB record would take
# ~24 GB in a worker; 16 MiB (~4M tokens, 30x the largest context) is beyond any real
# training sample. `options.max_record_bytes` changes it per source.
MAX_RECORD_BYTES = 16 << 20


def record_limit(options: dict[str, Any]) -> int:
    return int(options.get("max_record_bytes", MAX_RECORD_BYTES))


def text_bytes(values: tuple[Any, ...], limit: int) -> int:
    """UTF-8 size of the string values of a mapped row, counted exactly only when it
    could exceed `limit` (a character is at most 4 bytes)."""
    strs = [v for v in values if isinstance(v, str)]
    chars = sum(len(v) for v in strs)
    if 4 * chars <= limit:
        return chars
    return sum(len(v.encode("utf-8", "surrogatepass")) for v in strs)

# Columns each Mapper tuple fills, in tuple order (the rest are constant or provenance).
_VALUE_COLUMNS = {
    "document": ("id", "text", "meta"),
    "reasoning": ("id", "prompt", "reasoning", "answer", "reference_answer", "meta"),
    "rollout_group": ("problem_id", "problem", "reference_answer", "rollouts", "meta"),
}


class RowBuffer:
    """Rows of one read unit, flushed as `pa.Table`s of the kind's canonical schema."""

    def __init__(self, kind: str, source: str, category: str, file_index: int, batch_size: int):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.schema: pa.Schema = SCHEMAS[kind]
        self.source = source
        self.category = category
        self.file_index = file_index
        self.batch_size = batch_size
        self.names = _VALUE_COLUMNS[kind]
        self.rows: list[tuple[Any, ...]] = []
        self.row_index: list[int] = []

    def __len__(self) -> int:
        return len(self.rows)

    def add(self, values: tuple[Any, ...], row_index: int) -> bool:
        """Append one row; True when the buffer holds a full batch (call `flush`)."""
        self.rows.append(values)
        self.row_index.append(row_index)
        return len(self.rows) >= self.batch_size

    def flush(self) -> pa.Table:
        n = len(self.rows)
        columns = dict(zip(self.names, zip(*self.rows))) if n else {k: () for k in self.names}
        columns["source"] = [self.source] * n
        columns["category"] = [self.category] * n
        columns["file_index"] = [self.file_index] * n
        columns["row_index"] = self.row_index
        arrays = [pa.array(columns[f.name], type=f.type) for f in self.schema]
        self.rows = []
        self.row_index = []
        return pa.Table.from_arrays(arrays, schema=self.schema)
