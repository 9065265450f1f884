"""Export a packed phase to Megatron-LM's indexed dataset (`.bin` + `.idx`).

Every packed segment becomes one Megatron document (padding dropped), so Megatron's own
blending, sampling and packing can use the phase's documents as it would any corpus.

Format (Megatron-LM `MMapIndexedDataset`, index version 1), all little-endian:
  .idx: magic b"MMIDIDX\\x00\\x00" | version <Q = 1 | dtype code <B | sequence count <Q |
        document count <Q | sequence lengths int32[sequences] |
        sequence pointers int64[sequences] (byte offsets into .bin) |
        document indices int64[documents] (sequence index where each document starts,
        starting at 0 and ending with the sequence count, so documents = sequences + 1
        here)
  .bin: the token ids of all sequences back to back, in the dtype.
Dtype codes follow Megatron: 1 uint8, 2 int8, 3 int16, 4 int32, 5 int64, 6 float64,
7 float32, 8 uint16. Like Megatron, uint16 is chosen when the vocabulary has fewer than
65500 entries, int32 otherwise.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from zaya_data.io import atomic_replace, sha256_file, tmp_path_for
from zaya_data.manifest import read_manifest
from zaya_data.shards import gather_ranges, flat_lists

MAGIC = b"MMIDIDX\x00\x00"
VERSION = 1
DTYPE_CODES: dict[str, int] = {
    "uint8": 1, "int8": 2, "int16": 3, "int32": 4, "int64": 5, "float64": 6, "float32": 7, "uint16": 8,
}
CODE_DTYPES = {v: np.dtype(k) for k, v in DTYPE_CODES.items()}
_HEADER = struct.Struct("<9sQBQQ")


def optimal_dtype(vocab_size: int | None) -> np.dtype:
    return np.dtype(np.uint16) if vocab_size is not None and vocab_size < 65500 else np.dtype(np.int32)


def export_megatron(phase_dir: str | Path, out_prefix: str | Path, dtype: Any = None) -> dict[str, Any]:
    """Write `<out_prefix>.bin` and `<out_prefix>.idx` from the shards of `phase_dir`.

    Streams the shards one row group at a time. Both files are written under temporary
    names and renamed when complete, `.idx` last. Returns a summary with counts and
    sha256s."""
    phase_dir = Path(phase_dir)
    manifest = read_manifest(phase_dir)
    vocab = (manifest.get("tokenizer") or {}).get("vocab_size")
    dt = np.dtype(dtype) if dtype is not None else optimal_dtype(vocab)
    if dt.name not in DTYPE_CODES:
        raise ValueError(f"dtype {dt} has no Megatron code; use one of {sorted(DTYPE_CODES)}")
    info = np.iinfo(dt) if dt.kind in "iu" else None
    prefix = Path(out_prefix)
    prefix.parent.mkdir(parents=True, exist_ok=True)
    bin_path = prefix.with_name(prefix.name + ".bin")
    idx_path = prefix.with_name(prefix.name + ".idx")
    bin_tmp, idx_tmp = tmp_path_for(bin_path), tmp_path_for(idx_path)

    lengths: list[np.ndarray] = []
    tokens = 0
    try:
        with open(bin_tmp, "wb") as out:
            for entry in manifest["shards"]:
                path = phase_dir / entry["file"]
                with pa.memory_map(str(path), "r") as source:
                    pf = pq.ParquetFile(source)
                    for g in range(pf.num_row_groups):
                        tbl = pf.read_row_group(g, columns=["input_ids", "segment_lengths", "num_padding"])
                        ids_v, ids_s, ids_n = flat_lists(tbl.column("input_ids"))
                        seg_v, _, _ = flat_lists(tbl.column("segment_lengths"))
                        pad = tbl.column("num_padding").to_numpy().astype(np.int64)
                        keep = ids_n - pad  # segments are at the start, padding at the end
                        if (keep < 0).any() or int(keep.sum()) != int(seg_v.sum()):
                            raise ValueError(f"{path}: row group {g} segment lengths do not match input_ids minus padding (run zaya-data verify)")
                        values = ids_v[gather_ranges(ids_s, keep)]
                        if info is not None and values.size and (values.min() < info.min or values.max() > info.max):
                            raise ValueError(f"{path}: token ids span [{values.min()}, {values.max()}], outside {dt}")
                        out.write(values.astype(dt.newbyteorder("<")).tobytes())
                        lengths.append(seg_v.astype(np.int32))
                        tokens += values.size
        seq_lengths = np.concatenate(lengths) if lengths else np.empty(0, np.int32)
        pointers = np.zeros(seq_lengths.size, dtype=np.int64)
        if seq_lengths.size > 1:
            np.cumsum(seq_lengths[:-1].astype(np.int64) * dt.itemsize, out=pointers[1:])
        doc_indices = np.arange(seq_lengths.size + 1, dtype=np.int64)
        with open(idx_tmp, "wb") as out:
            out.write(_HEADER.pack(MAGIC, VERSION, DTYPE_CODES[dt.name], seq_lengths.size, doc_indices.size))
            out.write(seq_lengths.astype("<i4").tobytes())
            out.write(pointers.astype("<i8").tobytes())
            out.write(doc_indices.astype("<i8").tobytes())
        atomic_replace(bin_tmp, bin_path)
        atomic_replace(idx_tmp, idx_path)
    except BaseException:
        bin_tmp.unlink(missing_ok=True)
        idx_tmp.unlink(missing_ok=True)
        raise
    return {
        "bin": str(bin_path), "idx": str(idx_path), "dtype": dt.name,
        "sequences": int(seq_lengths.size), "documents": int(doc_indices.size - 1), "tokens": tokens,
        "bin_sha256": sha256_file(bin_path), "idx_sha256": sha256_file(idx_path),
    }


@dataclass
class MegatronIndexed:
    """A read-only view of a Megatron `.bin`/`.idx` pair; `ds[i]` is sequence i."""

    dtype: np.dtype
    sequence_lengths: np.ndarray
    sequence_pointers: np.ndarray
    document_indices: np.ndarray
    tokens: np.ndarray  # memory-mapped .bin

    def __len__(self) -> int:
        return int(self.sequence_lengths.size)

    def __getitem__(self, i: int) -> np.ndarray:
        start = int(self.sequence_pointers[i]) // self.dtype.itemsize
        return self.tokens[start : start + int(self.sequence_lengths[i])]


def read_megatron(prefix: str | Path) -> MegatronIndexed:
    """Read an indexed dataset from the format description above (tests and checks)."""
    prefix = Path(prefix)
    idx_path = prefix.with_name(prefix.name + ".idx")
    bin_path = prefix.with_name(prefix.name + ".bin")
    data = idx_path.read_bytes()
    if len(data) < _HEADER.size:
        raise ValueError(f"{idx_path}: {len(data)} bytes, shorter than the header")
    magic, version, code, n_seq, n_doc = _HEADER.unpack_from(data, 0)
    if magic != MAGIC:
        raise ValueError(f"{idx_path}: bad magic {magic!r}")
    if version != VERSION:
        raise ValueError(f"{idx_path}: index version {version}, expected {VERSION}")
    if code not in CODE_DTYPES:
        raise ValueError(f"{idx_path}: unknown dtype code {code}")
    expected = _HEADER.size + n_seq * 4 + n_seq * 8 + n_doc * 8
    if len(data) != expected:
        raise ValueError(f"{idx_path}: {len(data)} bytes, header implies {expected}")
    off = _HEADER.size
    lengths = np.frombuffer(data, "<i4", n_seq, off)
    off += 4 * n_seq
    pointers = np.frombuffer(data, "<i8", n_seq, off)
    off += 8 * n_seq
    docs = np.frombuffer(data, "<i8", n_doc, off)
    dt = CODE_DTYPES[code]
    size = bin_path.stat().st_size
    tokens = np.memmap(bin_path, dtype=dt, mode="r") if size else np.empty(0, dt)
    return MegatronIndexed(dt, lengths, pointers, docs, tokens)
