"""Hugging Face datasets on local disk: a `save_to_disk` folder, or local data files
(json/jsonl, parquet, csv) loaded with `datasets.load_dataset`. Nothing is downloaded:
offline mode is switched on before `datasets` is used. Rows are taken as Arrow batches
(`with_format("arrow")`), never one Python dict per `ds[i]` call."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa

from zaya_data.ledger import Ledger
from zaya_data.readers.fieldmap import Mapper
from zaya_data.readers.parquet import map_record_batches, missing_columns
from zaya_data.specs import SourceSpec

STAGE = "read"

# data-file extension -> `datasets` packaged builder
BUILDERS = {
    ".json": "json", ".jsonl": "json", ".json.gz": "json", ".jsonl.gz": "json",
    ".parquet": "parquet", ".csv": "csv", ".csv.gz": "csv", ".arrow": "arrow",
}
# Files `save_to_disk` writes at the top of a folder (Dataset / DatasetDict).
SAVED_MARKERS = ("state.json", "dataset_dict.json")


def _offline() -> Any:
    """Import `datasets` with every network path shut: HF_*_OFFLINE are read when the
    libraries are imported, and patched on the config modules in case they already were."""
    os.environ["HF_DATASETS_OFFLINE"] = "1"
    os.environ["HF_HUB_OFFLINE"] = "1"
    import datasets

    datasets.config.HF_DATASETS_OFFLINE = True
    try:
        import huggingface_hub.constants as hub_constants

        hub_constants.HF_HUB_OFFLINE = True
    except ImportError:  # pragma: no cover
        pass
    return datasets


def builder_for(path: str) -> str | None:
    lower = path.lower()
    for ext, builder in sorted(BUILDERS.items(), key=lambda kv: -len(kv[0])):
        if lower.endswith(ext):
            return builder
    return None


def is_saved_dataset(path: str) -> bool:
    return os.path.isdir(path) and any((Path(path) / m).is_file() for m in SAVED_MARKERS)


def _open(spec: SourceSpec, path: str) -> Any:
    datasets = _offline()
    if os.path.isdir(path):
        if not is_saved_dataset(path):
            raise ValueError(
                f"source {spec.name!r} ({spec.origin}): {path} is a folder but not a `save_to_disk` dataset "
                f"(no {' or '.join(SAVED_MARKERS)})"
            )
        ds = datasets.load_from_disk(path)
        if isinstance(ds, datasets.DatasetDict):
            split = spec.options.get("split", "train")
            if split not in ds:
                raise ValueError(
                    f"source {spec.name!r} ({spec.origin}): {path} has no split {split!r} "
                    f"(splits: {', '.join(sorted(ds))}); set options.split"
                )
            ds = ds[split]
        return ds
    builder = builder_for(path)
    if builder is None:
        raise ValueError(
            f"source {spec.name!r} ({spec.origin}): cannot tell the format of {path} "
            f"(hf data files must end in {', '.join(sorted(BUILDERS))})"
        )
    # streaming=True: rows are read from the file as we go, with no Arrow cache written
    # under ~/.cache (a build must not depend on, or fill, a per-user cache).
    return datasets.load_dataset(builder, data_files=[path], split="train", streaming=True)


def read_hf(spec: SourceSpec, path: str, file_index: int, ledger: Ledger, batch_size: int) -> Iterator[pa.Table]:
    mapper = Mapper(spec, with_meta=spec.options.get("meta", True))
    ds = _open(spec, path)
    names = ds.column_names
    if names is not None:
        missing = missing_columns(mapper, list(names))
        if missing:
            canon, col = missing[0]
            total = len(ds) if hasattr(ds, "__len__") else None
            if total is None:  # a streamed file: its length is known only by reading it
                total = sum(t.num_rows for t in ds.with_format("arrow").iter(batch_size=batch_size))
            if total:
                ledger.reject(
                    STAGE, "missing_field", spec.name, file=path, location=f"all {total} rows",
                    detail=f"field {canon!r} needs column {col!r}, which {path} does not have "
                    f"(columns: {', '.join(names)})",
                    count=total,
                )
            return
    batches = ds.with_format("arrow").iter(batch_size=batch_size)
    yield from map_record_batches(spec, mapper, batches, path, file_index, ledger, batch_size)
