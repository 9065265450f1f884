"""Offline language identification.

The model must already be on this machine: either the one inside the `py3langid` PyPI
package (`model: py3langid`, ~97 languages, numpy only) or a local model file in
py3langid's format named in the config. Nothing is ever downloaded; a missing model
is an error naming the path and the config origin.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa

from zaya_data.clean.config import LanguageSpec
from zaya_data.clean.normalize import locations, record_texts
from zaya_data.ledger import Ledger

STAGE = "language"
# Characters of each record the identifier reads: the byte n-gram model's decision is
# settled long before this, and a 100 KB document should not cost 50x a short one.
MAX_CHARS = 4000


def load_identifier(model: str, origin: str = "") -> Any:
    try:
        from py3langid.langid import MODEL_FILE, LanguageIdentifier
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise RuntimeError(
            f"{origin}: clean.language: needs the `py3langid` package (pip install py3langid)"
        ) from e
    if model == "py3langid":
        return LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
    path = Path(model).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"{origin}: clean.language.model: no model file at {str(path)!r} "
            "(use `py3langid` for the packaged model; models are never downloaded)"
        )
    try:
        return LanguageIdentifier.from_modelpath(path, norm_probs=True)
    except Exception as e:
        raise ValueError(f"{origin}: clean.language.model: {path} is not a py3langid model: {e}") from e


class LanguageFilter:
    """Callable stage: keeps records whose top language is in `keep` with probability at
    least `min_score`. Drops are `language / <lang>` (another language) or
    `language / low_score` (a kept language below the threshold), detail `lang=p`."""

    def __init__(self, spec: LanguageSpec, origin: str = "") -> None:
        self.spec = spec
        self.identifier = load_identifier(spec.model, origin)
        self.keep = set(spec.keep)

    def classify(self, text: str) -> tuple[str, float]:
        lang, p = self.identifier.classify(text[:MAX_CHARS])
        return lang, float(p)

    def __call__(self, table: pa.Table, ledger: Ledger) -> pa.Table:
        if table.num_rows == 0:
            return table
        ids = table.column("id").to_pylist()
        sources = table.column("source").to_pylist()
        where = locations(table)
        mask = []
        for i, text in enumerate(record_texts(table)):
            lang, p = self.classify(text)
            ok = lang in self.keep and p >= self.spec.min_score
            if not ok:
                reason = "low_score" if lang in self.keep else lang
                ledger.reject(STAGE, reason, sources[i], location=where[i], record_id=ids[i], detail=f"{lang}={p:.3f}")
            mask.append(ok)
        return table.filter(pa.array(mask, pa.bool_()))
