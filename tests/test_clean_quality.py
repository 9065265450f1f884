"""datatrove's quality filters on Arrow batches: same decisions as datatrove's own
pipeline, reasons counted in the ledger; offline language identification."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pytest

from zaya_data.clean.config import LanguageSpec, parse_clean
from zaya_data.clean.language import LanguageFilter
from zaya_data.clean.quality import QualityFilter
from zaya_data.ledger import Ledger, StrictModeError

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def doc_table(texts: list[str], source: str = "olymp") -> pa.Table:
    n = len(texts)
    return pa.table(
        {
            "id": [f"{source}:{i}" for i in range(n)],
            "source": [source] * n,
            "category": ["math"] * n,
            "text": texts,
            "meta": pa.array([None] * n, pa.string()),
            "file_index": pa.array([0] * n, pa.int32()),
            "row_index": pa.array(range(n), pa.int64()),
        }
    )


def olympiad_solutions(n: int) -> list[str]:
    with open(DATA / "qwen25-math-eval" / "olympiadbench.jsonl") as f:
        return [json.loads(line)["solution"][0] for line in f][:n]


# Gopher's "80% of words contain a letter" rule drops nearly every LaTeX-heavy solution;
# switched off here so the other rules get to decide something.
ALL_FILTERS = {
    "quality": {
        "gopher_repetition": True, "fineweb": True, "c4": True,
        "gopher_quality": {"max_non_alpha_words_ratio": None},
    }
}


def test_decisions_and_reasons_match_datatrove_pipeline_on_real_solutions() -> None:
    from datatrove.data import Document
    from datatrove.pipeline.filters import (
        C4QualityFilter,
        FineWebQualityFilter,
        GopherQualityFilter,
        GopherRepetitionFilter,
    )

    texts = olympiad_solutions(150)
    # datatrove's own pipeline (run(): generators chained, stats per filter, its own
    # spaCy word splitter), in our fixed filter order
    steps = [GopherQualityFilter(max_non_alpha_words_ratio=None), GopherRepetitionFilter(), C4QualityFilter(), FineWebQualityFilter()]
    stream = (Document(text=t, id=str(i)) for i, t in enumerate(texts))
    for step in steps:
        stream = step.run(stream)
    kept_dt = [int(d.id) for d in stream]
    names = ["gopher_quality", "gopher_repetition", "c4", "fineweb"]
    reasons_dt = Counter()
    for name, step in zip(names, steps):
        for key, stat in step.stats.stats.items():
            if key.startswith("dropped_"):
                reasons_dt[f"{name}:{key[len('dropped_'):]}"] = stat.total

    ledger = Ledger()
    qf = QualityFilter(parse_clean(ALL_FILTERS, "t"))
    out = qf(doc_table(texts), ledger)
    assert [int(i.split(":")[1]) for i in out.column("id").to_pylist()] == kept_dt
    ours = Counter({reason: n for (stage, reason, src), n in ledger.counts.items()})
    assert ours == reasons_dt
    assert sum(ours.values()) + out.num_rows == 150
    # the real numbers on these 150 solutions
    assert out.num_rows == 4
    assert ours == {
        "c4:curly_bracket": 89, "c4:too_few_sentences": 2, "gopher_quality:gopher_above_avg_threshold": 1,
        "gopher_quality:gopher_enough_stop_words": 1, "gopher_quality:gopher_short_doc": 5,
        "gopher_repetition:dup_line_frac": 42, "gopher_repetition:dup_para_frac": 1,
        "gopher_repetition:duplicated_5_n_grams": 4, "gopher_repetition:top_4_gram": 1,
    }
    assert qf.stats["kept"] == 4


def test_every_drop_names_record_and_location() -> None:
    ledger = Ledger()
    spec = parse_clean({"quality": {"gopher_quality": {"min_doc_words": 5, "max_non_alpha_words_ratio": None}}}, "t")
    table = doc_table(["too short", "The cat sat on the mat and then it went to the garden with the dog."])
    out = QualityFilter(spec)(table, ledger)
    assert out.column("id").to_pylist() == ["olymp:1"]
    assert ledger.to_dict()["rejections"] == [
        {
            "stage": "quality", "reason": "gopher_quality:gopher_short_doc", "source": "olymp", "count": 1,
            "examples": [{"stage": "quality", "reason": "gopher_quality:gopher_short_doc", "source": "olymp",
                          "location": "file 0 row 0", "record_id": "olymp:0"}],
        }
    ]
    with pytest.raises(StrictModeError, match="olymp:0"):
        QualityFilter(spec)(table, Ledger(strict=True))


def test_no_filters_returns_the_same_table() -> None:
    t = doc_table(["x"])
    assert QualityFilter(parse_clean({}, "t"))(t, Ledger()) is t


def test_language_filter_uses_the_packaged_model_and_counts_other_languages() -> None:
    texts = olympiad_solutions(3) + [
        "Der schnelle braune Fuchs springt über den faulen Hund, und dann geht er nach Hause.",
        "Le renard brun rapide saute par-dessus le chien paresseux et rentre à la maison.",
    ]
    ledger = Ledger()
    out = LanguageFilter(LanguageSpec())(doc_table(texts), ledger)
    assert out.column("id").to_pylist() == ["olymp:0", "olymp:1", "olymp:2"]
    assert ledger.counts == {("language", "de", "olymp"): 1, ("language", "fr", "olymp"): 1}
    # raising the bar turns a kept language with a weaker score into low_score
    strict = LanguageFilter(LanguageSpec(keep=("en",), min_score=1.0))
    led2 = Ledger()
    strict(doc_table(["The answer is 42."]), led2)
    assert led2.counts == {("language", "low_score", "olymp"): 1}


def test_missing_language_model_is_an_error_not_a_download(tmp_path: Path) -> None:
    missing = tmp_path / "lid.176.bin"
    with pytest.raises(FileNotFoundError, match=r"mix.yaml:9: clean.language.model: no model file at .*lid.176.bin"):
        LanguageFilter(LanguageSpec(model=str(missing)), origin="mix.yaml:9")
    bad = tmp_path / "model.npz.xz"
    bad.write_bytes(b"not a model")
    with pytest.raises(ValueError, match="is not a py3langid model"):
        LanguageFilter(LanguageSpec(model=str(bad)), origin="mix.yaml:9")


def test_reusing_tokenizer_splits_exactly_like_datatrove_across_pipeline_rebuilds(monkeypatch: pytest.MonkeyPatch) -> None:
    from datatrove.utils.word_tokenizers import SpaCyTokenizer

    import zaya_data.clean.quality as quality

    # rebuild the spaCy pipeline every few documents: results must not depend on its state
    monkeypatch.setattr(quality, "MAX_LEXEMES", 2_000)
    ours, theirs = quality.ReusingSpacyTokenizer(), SpaCyTokenizer("en")
    texts = olympiad_solutions(40) + ["IS_ALPHA breaks spaCy", ""]
    rebuilt = 0
    for t in texts:
        before = ours._tokenizer
        assert ours.word_tokenize(t) == theirs.word_tokenize(t)
        assert ours.sent_tokenize(t) == theirs.sent_tokenize(t)
        assert ours.span_tokenize(t) == theirs.span_tokenize(t)
        rebuilt += before is not None and ours._tokenizer is not before
    assert rebuilt > 0
