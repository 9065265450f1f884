"""`zaya-data show DIR --row N`: one packed row decoded back to text, as a trainer sees it.

Each segment (one document, or one piece of a long one) is introduced by a rule naming
its source, category, id and token counts; inside it, tokens that carry loss are bold and
tokens masked out of the loss are dim (or, without colour, wrapped in « »). Trailing
padding is summarized, not printed. The tokenizer is the one the manifest names, so the
text is what the ids mean, not what the build intended.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
from rich.text import Text

from zaya_data.audit.findings import AuditInputError
from zaya_data.manifest import ManifestError, read_manifest

NO_LOSS_OPEN, NO_LOSS_CLOSE = "\u00ab", "\u00bb"  # « »


@dataclass
class Span:
    text: str
    loss: bool
    tokens: int


@dataclass
class SegmentView:
    index: int
    source: str
    category: str
    id: str
    start: int
    length: int
    loss_tokens: int
    spans: list[Span] = field(default_factory=list)


@dataclass
class RowView:
    phase: str
    shard: str
    row_in_shard: int
    row: int
    context: int
    padding: int
    segments: list[SegmentView] = field(default_factory=list)
    tokenizer_note: str = ""


def locate_row(phase_dir: Path, manifest: dict[str, Any], row: int) -> tuple[str, int]:
    """(shard file, row within it) of the phase's global row `row` (0-based, shards in
    manifest order)."""
    total = sum(int(s.get("rows", 0)) for s in manifest["shards"])
    if row < 0 or row >= total:
        raise AuditInputError(f"{phase_dir}: row {row} is out of range (the phase has {total} rows, 0..{total - 1})")
    base = 0
    for s in manifest["shards"]:
        n = int(s.get("rows", 0))
        if row < base + n:
            return s["file"], row - base
        base += n
    raise AssertionError("unreachable: row was range-checked")


def _read_one(path: Path, row: int) -> dict[str, Any]:
    if not path.is_file():
        raise AuditInputError(f"{path}: listed in the manifest but missing")
    pf = pq.ParquetFile(path)
    base = 0
    for g in range(pf.num_row_groups):
        n = pf.metadata.row_group(g).num_rows
        if row < base + n:
            return pf.read_row_group(g).slice(row - base, 1).to_pylist()[0]
        base += n
    raise AuditInputError(f"{path}: has {base} rows, the manifest promised more (row {row} asked)")


def _runs(mask: np.ndarray) -> list[tuple[int, int, bool]]:
    """Maximal runs of equal mask values as (start, stop, has_loss)."""
    if mask.size == 0:
        return []
    cuts = np.flatnonzero(np.diff(mask)) + 1
    edges = [0, *cuts.tolist(), int(mask.size)]
    return [(a, b, bool(mask[a])) for a, b in zip(edges[:-1], edges[1:])]


def row_view(phase_dir: str | Path, row: int, tokenizer: Any = None) -> RowView:
    """Decode packed row `row` of a phase. `tokenizer` (a `tokenizers.Tokenizer`)
    overrides the one named in the manifest (tests, or a moved tokenizer file)."""
    phase_dir = Path(phase_dir)
    try:
        manifest = read_manifest(phase_dir)
    except ManifestError as e:
        raise AuditInputError(str(e)) from e
    if manifest.get("kind", "packed") != "packed":
        raise AuditInputError(f"{phase_dir}: a {manifest.get('kind')!r} phase has no packed rows "
                              "(prompt phases: see prompt_view)")
    shard, local = locate_row(phase_dir, manifest, row)
    rec = _read_one(phase_dir / shard, local)
    note = ""
    if tokenizer is None:
        from zaya_data.tokenizer import load_tokenizer

        info = manifest.get("tokenizer") or {}
        if not info.get("path"):
            raise AuditInputError(f"{phase_dir / 'manifest.json'}: tokenizer.path missing; cannot decode")
        loaded = load_tokenizer(info["path"])
        tokenizer = loaded.tokenizer
        if info.get("sha256") and loaded.sha256 != info["sha256"]:
            note = (f"warning: tokenizer {info['path']} now has sha256 {loaded.sha256[:12]}..., the build used "
                    f"{info['sha256'][:12]}...; the text below may not be what was trained on")
    ids = np.asarray(rec["input_ids"], dtype=np.int64)
    mask = np.asarray(rec["loss_mask"], dtype=np.uint8)
    view = RowView(phase=str(manifest.get("phase") or phase_dir.name), shard=shard, row_in_shard=local, row=row,
                   context=int(manifest["context"]), padding=int(rec["num_padding"]), tokenizer_note=note)
    start = 0
    for i, length in enumerate(rec["segment_lengths"]):
        seg_ids, seg_mask = ids[start:start + length], mask[start:start + length]
        seg = SegmentView(index=i, source=rec["segment_sources"][i], category=rec["segment_categories"][i],
                          id=rec["segment_ids"][i], start=start, length=int(length),
                          loss_tokens=int(np.count_nonzero(seg_mask)))
        for a, b, loss in _runs(seg_mask):
            # Decode a whole run at once: byte-level tokens decoded one by one would split
            # multi-byte characters.
            text = tokenizer.decode(seg_ids[a:b].tolist(), skip_special_tokens=False)
            seg.spans.append(Span(text=text, loss=loss, tokens=b - a))
        view.segments.append(seg)
        start += int(length)
    return view


def prompt_view(phase_dir: str | Path, row: int) -> dict[str, Any]:
    """Row `row` of an RL prompt phase's prompt file, as a dict of its columns."""
    phase_dir = Path(phase_dir)
    try:
        manifest = read_manifest(phase_dir)
    except ManifestError as e:
        raise AuditInputError(str(e)) from e
    shard, local = locate_row(phase_dir, manifest, row)
    return {"shard": shard, "row_in_shard": local, **_read_one(phase_dir / shard, local)}


def render_prompt(rec: dict[str, Any], row: int, color: bool = True) -> Text:
    out = Text()
    out.append(f"prompt {row} ({rec['shard']} row {rec['row_in_shard']}): source {rec.get('source')} | category "
               f"{rec.get('category')} | id {rec.get('id')} | epoch {rec.get('epoch')} | reference answer "
               f"{rec.get('reference_answer')!r}\n", style="bold cyan" if color else "")
    out.append(str(rec.get("prompt", "")) + "\n")
    return out


def render_row(view: RowView, color: bool = True) -> Text:
    """The row as rich Text: bold = loss, dim = no loss; in plain mode « » wrap no-loss spans."""
    out = Text()
    used = sum(s.length for s in view.segments)
    loss = sum(s.loss_tokens for s in view.segments)
    out.append(f"phase {view.phase}, row {view.row} ({view.shard} row {view.row_in_shard}): "
               f"{len(view.segments)} segments, {used:,} tokens + {view.padding:,} padding = context {view.context:,}; "
               f"loss on {loss:,} tokens\n", style="bold" if color else "")
    legend = ("legend: bold = trained on (loss 1), dim = context only (loss 0)" if color
              else f"legend: {NO_LOSS_OPEN}...{NO_LOSS_CLOSE} = context only (loss 0), the rest is trained on (loss 1)")
    out.append(legend + "\n")
    if view.tokenizer_note:
        out.append(view.tokenizer_note + "\n", style="yellow" if color else "")
    for seg in view.segments:
        header = (f"\n=== segment {seg.index + 1}/{len(view.segments)} | source {seg.source} | category "
                  f"{seg.category} | id {seg.id} | tokens {seg.start}..{seg.start + seg.length - 1} "
                  f"({seg.length:,}, loss {seg.loss_tokens:,}) ===\n")
        out.append(header, style="bold cyan" if color else "")
        for sp in seg.spans:
            if color:
                out.append(sp.text, style="bold" if sp.loss else "dim")
            else:
                out.append(sp.text if sp.loss else f"{NO_LOSS_OPEN}{sp.text}{NO_LOSS_CLOSE}")
        out.append("\n")
    out.append(f"\n=== padding: {view.padding:,} tokens (loss 0) ===\n", style="bold cyan" if color else "")
    return out
