"""Atomic file writes: a file appears under its final name complete, or not at all."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


def tmp_path_for(path: str | Path) -> Path:
    p = Path(path)
    return p.with_name(f".{p.name}.tmp-{os.getpid()}")


def atomic_replace(tmp: str | Path, final: str | Path) -> None:
    """fsync the temporary file, rename it over the final name, fsync the directory."""
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, final)
    dfd = os.open(Path(final).parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_path_for(path)
    tmp.write_bytes(data)
    atomic_replace(tmp, path)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
