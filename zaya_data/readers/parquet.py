"""Parquet files, read batch by batch (pyarrow decodes one row group at a time, so memory
stays bounded by the row-group size whatever the file size)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from zaya_data.ledger import Ledger
from zaya_data.readers.fieldmap import Mapper, RecordError
from zaya_data.readers.rows import RowBuffer, record_limit, text_bytes
from zaya_data.specs import SourceSpec

STAGE = "read"


def map_record_batches(
    spec: SourceSpec, mapper: Mapper, batches: Iterator[pa.RecordBatch | pa.Table | int], path: str,
    file_index: int, ledger: Ledger, batch_size: int, location: str = "row",
) -> Iterator[pa.Table]:
    """Map the rows of Arrow batches (Parquet, HF datasets) through `mapper`; rows are
    numbered from 0 across the batches (an int in `batches` skips that many rows that
    could not be read). Rejections name the file and "row N"."""
    buf = RowBuffer(spec.kind, spec.name, spec.category, file_index, batch_size)
    limit = record_limit(spec.options)
    row = 0
    for batch in batches:
        if isinstance(batch, int):
            row += batch
            continue
        records: list[dict[str, Any]] = batch.to_pylist()
        for rec in records:
            try:
                values = mapper(rec)
            except RecordError as e:
                ledger.reject(STAGE, e.reason, spec.name, file=path, location=f"{location} {row}", detail=e.detail)
            except Exception as e:  # a bug or an input nobody foresaw: name the record
                raise RuntimeError(f"source {spec.name!r}: {path}:{location} {row}: cannot map the record: {e!r}") from e
            else:
                size = text_bytes(values, limit)
                if size > limit:
                    ledger.reject(STAGE, "record_too_large", spec.name, file=path, location=f"{location} {row}",
                                  detail=f"mapped text is {size:,} bytes, options.max_record_bytes is {limit:,}")
                elif buf.add(values, row):
                    yield buf.flush()
            row += 1
    if len(buf):
        yield buf.flush()


def missing_columns(mapper: Mapper, names: list[str]) -> list[tuple[str, str]]:
    """(canonical field, column) pairs whose column the table does not have."""
    have = set(names)
    return [(canon, col) for canon, col in mapper.required_roots.items() if col not in have]


# What a damaged file raises: a bad footer (ArrowInvalid), a bad page or thrift header
# (OSError), a decompression failure (ArrowException subclasses).
_DAMAGED = (pa.ArrowException, OSError)


def _row_groups(pf: pq.ParquetFile, batch_size: int, lost: list[tuple[int, int, int, str]]
                ) -> Iterator[pa.RecordBatch | int]:
    """The file's batches, row group by row group; a damaged group yields the number of
    its rows that could not be read (so row numbers stay file positions) and is noted in
    `lost` as (group, first row, rows, error); the following groups are still read."""
    first = 0
    for g in range(pf.num_row_groups):
        n = pf.metadata.row_group(g).num_rows
        done = 0
        try:
            for b in pf.iter_batches(batch_size=batch_size, row_groups=[g]):
                done += b.num_rows
                yield b
        except _DAMAGED as e:
            lost.append((g, first + done, n - done, f"{type(e).__name__}: {e}"))
            yield n - done
        first += n


def read_parquet(spec: SourceSpec, path: str, file_index: int, ledger: Ledger, batch_size: int) -> Iterator[pa.Table]:
    mapper = Mapper(spec, with_meta=spec.options.get("meta", True))
    try:
        pf = pq.ParquetFile(path)
    except _DAMAGED as e:
        # No readable footer, so no row count: the file is one record in the ledger.
        ledger.reject(STAGE, "unreadable_file", spec.name, file=path, location="whole file",
                      detail=f"not a readable Parquet file ({type(e).__name__}: {e}); its rows cannot be "
                      "counted, so the file counts as one record")
        return
    missing = missing_columns(mapper, pf.schema_arrow.names)
    if missing and pf.metadata.num_rows:
        # Every row of this file lacks the field: count them all (so input == written +
        # rejected still holds) in one ledger entry, and go on with the other files.
        canon, col = missing[0]
        ledger.reject(
            STAGE, "missing_field", spec.name, file=path, location=f"all {pf.metadata.num_rows} rows",
            detail=f"field {canon!r} needs column {col!r}, which {path} does not have "
            f"(columns: {', '.join(pf.schema_arrow.names)})",
            count=pf.metadata.num_rows,
        )
        return
    lost: list[tuple[int, int, int, str]] = []
    yield from map_record_batches(spec, mapper, _row_groups(pf, batch_size, lost), path, file_index, ledger,
                                  batch_size)
    for g, first, n, error in lost:  # the footer says how many rows the damage cost
        ledger.reject(STAGE, "corrupt_file", spec.name, file=path,
                      location=f"row group {g} (rows {first}-{first + n - 1})",
                      detail=f"{error}; these {n} rows cannot be read", count=n)
