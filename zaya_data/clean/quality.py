"""Heuristic quality filters: datatrove's own filters, applied to Arrow batches.

We reuse datatrove 0.10.1's GopherQualityFilter, GopherRepetitionFilter, C4QualityFilter
and FineWebQualityFilter unchanged: each record becomes a datatrove `Document`, each
filter's `filter()` answers keep / (drop, reason), and a drop becomes a ledger entry
`quality / <filter>:<reason>` naming the record. Filters run in a fixed order and the
first one that drops a record names it, as in datatrove's pipeline, and
`tests/test_clean_quality.py` checks the decisions are identical to datatrove's.

One thing differs, and only in speed: the word/sentence splitter. datatrove's English
splitter is spaCy's blank pipeline (tokenizer + sentencizer, no model download) run
inside a spaCy *memory zone* per call, which discards every lexeme the call created, so
each document pays to create the lexemes of all its words again: ~75% of the filters'
time. `ReusingSpacyTokenizer` runs the same spaCy pipeline outside memory zones (lexemes
are kept and reused: the same tokens, ~4x faster splitting on real text) and bounds the
memory by rebuilding the pipeline once its vocabulary passes `MAX_LEXEMES`.
"""

from __future__ import annotations

import inspect
from typing import Any

import pyarrow as pa

from zaya_data.clean.config import CleanSpec
from zaya_data.clean.normalize import locations, record_texts
from zaya_data.ledger import Ledger

STAGE = "quality"


def _filter_classes() -> dict[str, type]:
    from datatrove.pipeline.filters import (
        C4QualityFilter,
        FineWebQualityFilter,
        GopherQualityFilter,
        GopherRepetitionFilter,
    )

    return {
        "gopher_quality": GopherQualityFilter,
        "gopher_repetition": GopherRepetitionFilter,
        "c4": C4QualityFilter,
        "fineweb": FineWebQualityFilter,
    }


# Constructor arguments that make no sense in a config file (we own the writer and the
# word splitter, which is English).
_NOT_CONFIGURABLE = {"self", "exclusion_writer", "language"}


def filter_parameters(name: str) -> set[str]:
    """The keyword arguments the mixture file may pass to datatrove filter `name`."""
    cls = _filter_classes()[name]
    return set(inspect.signature(cls.__init__).parameters) - _NOT_CONFIGURABLE


# Lexemes kept before the spaCy pipeline is rebuilt: ~500 MB at worst, and a rebuild
# (~0.3 s) every few thousand documents of code or LaTeX-heavy text, far less on prose.
MAX_LEXEMES = 500_000


class ReusingSpacyTokenizer:
    """datatrove's English `SpaCyTokenizer`, without per-call memory zones."""

    def __new__(cls) -> Any:
        # Built lazily as a real datatrove WordTokenizer subclass (filters accept an
        # instance as `language`) so importing this module does not import spaCy.
        from datatrove.utils.word_tokenizers import SpaCyTokenizer, strip_strings

        class _Reusing(SpaCyTokenizer):
            def _nlp(self, text: str) -> Any:
                if self._tokenizer is not None and len(self._tokenizer.vocab) > MAX_LEXEMES:
                    self._tokenizer = None  # the parent's property builds a fresh pipeline
                nlp = self.tokenizer
                nlp.max_length = len(text) + 10
                return nlp

            def _doc(self, text: str, words_only: bool) -> Any:
                nlp = self._nlp(text)
                return (nlp.tokenizer if words_only else nlp)(text)

            # The string "IS_ALPHA" breaks spaCy inside a memory zone, depending on the
            # zone's state, and datatrove then splits the text without it; such texts go
            # through datatrove's own code so the result is the same in every case.
            def word_tokenize(self, text: str) -> list[str]:
                if "IS_ALPHA" in text:
                    return super().word_tokenize(text)
                # words need no sentencizer: it only marks sentence starts
                return strip_strings([t.text for t in self._doc(text, True)])

            def sent_tokenize(self, text: str) -> list[str]:
                if "IS_ALPHA" in text:
                    return super().sent_tokenize(text)
                return strip_strings([s.text for s in self._doc(text, False).sents])

            def span_tokenize(self, text: str) -> list[tuple[int, int]]:
                if "IS_ALPHA" in text:
                    return super().span_tokenize(text)
                return [(s.start_char, s.end_char) for s in self._doc(text, False).sents]

            def __reduce__(self) -> tuple:  # picklable for Ray workers and process pools
                return (ReusingSpacyTokenizer, ())

        return _Reusing("en")


def _thaw(v: Any) -> Any:
    return tuple(_thaw(x) for x in v) if isinstance(v, tuple) else v


def build_filters(spec: CleanSpec) -> list[tuple[str, Any]]:
    """(name, datatrove filter instance) for each filter the spec enables, in order."""
    classes = _filter_classes()
    words = ReusingSpacyTokenizer()  # one instance: datatrove caches splits per (text, tokenizer)
    out = []
    for name, args in spec.quality_filters.items():
        kwargs = {k: _thaw(v) for k, v in args.items()}
        out.append((name, classes[name](language=words, **kwargs)))
    return out


class QualityFilter:
    """Callable stage: `QualityFilter(spec)(table, ledger) -> table` keeps the records
    every enabled filter keeps. Works on DOCUMENT (text) and REASONING (prompt, reasoning
    and answer joined) tables. `stats` counts kept/dropped per filter reason."""

    def __init__(self, spec: CleanSpec) -> None:
        self.filters = build_filters(spec)
        self.stats: dict[str, int] = {}

    def keep_mask(self, table: pa.Table, ledger: Ledger) -> list[bool]:
        from datatrove.data import Document

        texts = record_texts(table)
        ids = table.column("id").to_pylist()
        sources = table.column("source").to_pylist()
        where = locations(table)
        mask = []
        for i, text in enumerate(texts):
            keep = True
            # One Document through the chain, as in datatrove's pipeline: C4QualityFilter
            # drops lines from doc.text and the filters after it judge what is left. The
            # record itself keeps its original text (a reasoning sample cannot lose lines).
            doc = Document(text=text, id=ids[i])
            for name, flt in self.filters:
                res = flt.filter(doc)
                ok, reason = (res, None) if not isinstance(res, tuple) else res
                if not ok:
                    full = f"{name}:{reason or 'dropped'}"
                    ledger.reject(STAGE, full, sources[i], location=where[i], record_id=ids[i])
                    self.stats[full] = self.stats.get(full, 0) + 1
                    keep = False
                    break
            mask.append(keep)
        self.stats["kept"] = self.stats.get("kept", 0) + sum(mask)
        return mask

    def __call__(self, table: pa.Table, ledger: Ledger) -> pa.Table:
        if not self.filters or table.num_rows == 0:
            return table
        return table.filter(pa.array(self.keep_mask(table, ledger), pa.bool_()))
