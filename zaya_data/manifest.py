"""The phase manifest: `manifest.json`, the one file that says what a phase directory holds.

It is written LAST, atomically, after every shard it lists is complete on disk, so a
phase directory with a manifest is a finished phase and one without is a run to resume.
Keys are sorted and the layout fixed (indent 1) so two identical builds give identical
manifests. The layout is documented in `docs/` and filled by the pipeline; `verify` and
the audit read it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from zaya_data.io import atomic_write_text

MANIFEST_NAME = "manifest.json"
FORMAT_VERSION = 1


class ManifestError(ValueError):
    """A manifest that is missing, unreadable or not the expected layout."""


def manifest_path(phase_dir: str | Path) -> Path:
    return Path(phase_dir) / MANIFEST_NAME


def dumps_manifest(manifest: dict[str, Any]) -> str:
    # allow_nan=False: NaN/Infinity are not JSON, and another reader would choke on them.
    return json.dumps(manifest, sort_keys=True, indent=1, ensure_ascii=False, allow_nan=False) + "\n"


def write_manifest(phase_dir: str | Path, manifest: dict[str, Any]) -> Path:
    """Atomically write `phase_dir/manifest.json`. Call it after the last shard."""
    path = manifest_path(phase_dir)
    try:
        text = dumps_manifest(manifest)
    except (TypeError, ValueError) as e:
        raise ManifestError(f"{path}: manifest is not JSON-serializable: {e}") from e
    atomic_write_text(path, text)
    return path


def read_manifest(phase_dir: str | Path) -> dict[str, Any]:
    """Read and minimally validate `phase_dir/manifest.json`; errors name the path."""
    path = manifest_path(phase_dir)
    if not path.is_file():
        raise ManifestError(f"{path}: no manifest (the phase was never finished, or this is not a phase directory)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ManifestError(f"{path}: cannot parse manifest: {e}") from e
    if not isinstance(data, dict):
        raise ManifestError(f"{path}: manifest must be a JSON object, got {type(data).__name__}")
    version = data.get("format_version")
    if version != FORMAT_VERSION:
        raise ManifestError(f"{path}: format_version {version!r} is not supported (expected {FORMAT_VERSION})")
    # RL prompt phases have no context: they are prompt sets, not token rows.
    required = (("shards", list),) if data.get("kind") == "prompts" else (("context", int), ("shards", list))
    for key, kind in required:
        if not isinstance(data.get(key), kind) or isinstance(data.get(key), bool):
            raise ManifestError(f"{path}: key {key!r} missing or not {kind.__name__}")
    for i, shard in enumerate(data["shards"]):
        if not isinstance(shard, dict) or not isinstance(shard.get("file"), str):
            raise ManifestError(f"{path}: shards[{i}] has no 'file' name")
        if "/" in shard["file"] or "\\" in shard["file"] or shard["file"].startswith("."):
            raise ManifestError(f"{path}: shards[{i}].file {shard['file']!r} must be a plain file name")
    return data


def totals_from_shards(shards: list[dict[str, Any]], context: int) -> dict[str, Any]:
    """The manifest's `totals` from its shard entries (what `verify` checks it against)."""
    totals: dict[str, Any] = {
        k: sum(int(s[k]) for s in shards) for k in ("rows", "tokens", "padding_tokens", "loss_tokens", "segments")
    }
    rows = totals["rows"]
    totals["packing_efficiency"] = totals["tokens"] / (rows * context) if rows else 0.0
    return totals
