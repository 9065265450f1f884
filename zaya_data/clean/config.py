"""The `clean:` section of a mixture file, parsed into a frozen `CleanSpec`.

A `clean:` section may appear at the top of a mixture file (applies to every source) and
inside a source (overrides for that source). Every key is optional; an absent section
means no cleaning at all, so adding a stage is always an explicit decision.

Keys and their defaults (a stage given as `true` takes all its defaults, `false`/absent
turns it off):

    quality:                      # datatrove heuristic filters, in this order
      gopher_quality: false       # true, or {min_doc_words: 50, ...} GopherQualityFilter args
      gopher_repetition: false    # true, or GopherRepetitionFilter args
      c4: false                   # true, or C4QualityFilter args
      fineweb: false              # true, or FineWebQualityFilter args
    language:                     # off unless present
      model: py3langid            # "py3langid" (model inside the PyPI package) or a local
                                  # py3langid model file (.npz.xz); never downloaded
      keep: [en]
      min_score: 0.65             # normalized probability of the top language
    exact_dedup: false            # normalized-text hash (NFKC, lowercase, collapse spaces)
    near_dedup:                   # off unless present; `true` = these defaults
      shingle: 5                  # words per shingle
      permutations: 112
      bands: 14                   # permutations must be a multiple of bands
      threshold: 0.8              # estimated Jaccard a candidate pair must reach
      seed: 1
    problem_dedup:                # reasoning data; off unless present
      policy: keep_all            # keep_all | keep_k
      k: 1
    decontaminate:                # off unless present
      benchmarks:                 # list of {name, path, format: jsonl|parquet,
        - {name: aime24, path: ..., format: jsonl, fields: {problem: problem, answer: answer}}
      ngram: 13
      min_overlap: 0.5            # fraction of an item's distinct n-grams a record must share
    validate:                     # reasoning samples; off unless present
      require_answer: true
      answer_pattern: boxed       # "boxed" or a regex whose group 1 (or whole match) is the answer
      math_verify: off            # off | flag | drop: answer vs reference_answer
      max_repeat_fraction: 0.5    # drop when one line / 20-word n-gram covers more than this
      min_chars: 1                # of the reasoning
      max_chars: null

Merging (`CleanSpec.merged`): a per-source section replaces whole top-level keys of the
build's section (a source that says `quality: {c4: true}` gets only C4, not C4 plus the
top-level filters); keys it does not name are inherited.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Any, Callable

QUALITY_FILTERS = ("gopher_quality", "gopher_repetition", "c4", "fineweb")
MATH_VERIFY_POLICIES = ("off", "flag", "drop")
PROBLEM_POLICIES = ("keep_all", "keep_k")
BENCHMARK_FORMATS = ("jsonl", "parquet")


@dataclass(frozen=True)
class LanguageSpec:
    model: str = "py3langid"
    keep: tuple[str, ...] = ("en",)
    min_score: float = 0.65


@dataclass(frozen=True)
class NearDedupSpec:
    shingle: int = 5
    permutations: int = 112
    bands: int = 14
    threshold: float = 0.8
    seed: int = 1

    @property
    def rows(self) -> int:
        return self.permutations // self.bands


@dataclass(frozen=True)
class ProblemDedupSpec:
    policy: str = "keep_all"
    k: int = 1


@dataclass(frozen=True)
class BenchmarkSpec:
    name: str
    path: str
    format: str = "jsonl"
    problem_field: str = "problem"
    answer_field: str | None = "answer"


@dataclass(frozen=True)
class DecontamSpec:
    benchmarks: tuple[BenchmarkSpec, ...] = ()
    ngram: int = 13
    min_overlap: float = 0.5


@dataclass(frozen=True)
class ValidateSpec:
    require_answer: bool = True
    answer_pattern: str = "boxed"
    math_verify: str = "off"
    max_repeat_fraction: float | None = 0.5
    min_chars: int = 1
    max_chars: int | None = None


@dataclass(frozen=True)
class CleanSpec:
    # filter name -> keyword arguments for the datatrove filter (empty = its defaults)
    quality: tuple[tuple[str, tuple[tuple[str, Any], ...]], ...] = ()
    language: LanguageSpec | None = None
    exact_dedup: bool = False
    near_dedup: NearDedupSpec | None = None
    problem_dedup: ProblemDedupSpec | None = None
    decontaminate: DecontamSpec | None = None
    validate: ValidateSpec | None = None
    origin: str = field(default="", compare=False)

    @property
    def quality_filters(self) -> dict[str, dict[str, Any]]:
        return {name: dict(args) for name, args in self.quality}

    @property
    def is_noop(self) -> bool:
        return self == CleanSpec()

    def merged(self, override: dict[str, Any] | None, origin: str, resolve: Resolver | None = None) -> "CleanSpec":
        """This spec with the top-level keys named in `override` replaced."""
        if not override:
            return self
        return replace(self, **_parse_fields(override, origin, resolve), origin=origin)


# Turns a path as written (benchmark files, a language model file) into the one to open;
# the mixture loader passes its own, so these paths resolve like source paths (relative
# to the mixture file, ${ENV}, {pkg:NAME}). It raises ValueError on a path it cannot
# resolve; None keeps paths as written.
Resolver = Callable[[str], str]


def parse_clean(mapping: dict[str, Any] | None, origin: str, resolve: Resolver | None = None) -> CleanSpec:
    """Parse a `clean:` mapping; `origin` ("mixtures/x.yaml:12") is named in every error."""
    if mapping is None:
        return CleanSpec(origin=origin)
    return CleanSpec(**_parse_fields(mapping, origin, resolve), origin=origin)


def _resolved(path: str, origin: str, key: str, resolve: Resolver | None) -> str:
    if resolve is None:
        return path
    try:
        return resolve(path)
    except ValueError as e:  # an unset ${ENV}, a package that is not installed
        raise _err(origin, key, str(e)) from None


# ---------------------------------------------------------------------------------------
# parsing helpers: each names the full key path and the origin on a bad value


def _err(origin: str, key: str, msg: str) -> ValueError:
    return ValueError(f"{origin}: clean.{key}: {msg}")


def _mapping(value: Any, origin: str, key: str, allowed: set[str]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _err(origin, key, f"expected a mapping, got {type(value).__name__}")
    for k in value:
        if k not in allowed:
            raise _err(origin, f"{key}.{k}", f"unknown key (allowed: {', '.join(sorted(allowed))})")
    return value


def _bool(value: Any, origin: str, key: str) -> bool:
    if not isinstance(value, bool):
        raise _err(origin, key, f"expected true or false, got {value!r}")
    return value


def _int(value: Any, origin: str, key: str, lo: int = 0, allow_none: bool = False) -> int | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < lo:
        raise _err(origin, key, f"expected an integer >= {lo}, got {value!r}")
    return value


def _float(value: Any, origin: str, key: str, lo: float, hi: float, allow_none: bool = False) -> float | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo <= value <= hi:
        raise _err(origin, key, f"expected a number in [{lo}, {hi}], got {value!r}")
    return float(value)


def _choice(value: Any, origin: str, key: str, choices: tuple[str, ...]) -> str:
    # YAML 1.1 reads a bare `off` as False; accept it for the off/flag/drop policy.
    if value is False and "off" in choices:
        value = "off"
    if value not in choices:
        raise _err(origin, key, f"expected one of {', '.join(choices)}, got {value!r}")
    return value


def _str(value: Any, origin: str, key: str) -> str:
    if not isinstance(value, str) or not value:
        raise _err(origin, key, f"expected a non-empty string, got {value!r}")
    return value


def _stage(value: Any, origin: str, key: str, parse: Callable[[dict[str, Any]], Any]) -> Any:
    """A stage written as `false`/null (off), `true` (defaults) or a mapping."""
    if value is None or value is False:
        return None
    if value is True:
        return parse({})
    return parse(value)


def _quality(value: Any, origin: str) -> tuple:
    if value is None or value is False:
        return ()
    m = _mapping(value, origin, "quality", set(QUALITY_FILTERS))
    from zaya_data.clean.quality import filter_parameters  # datatrove import only when used

    out = []
    for name in QUALITY_FILTERS:  # fixed order: the ledger's first failing filter is stable
        if name not in m or m[name] is None or m[name] is False:
            continue
        args = {} if m[name] is True else _mapping(m[name], origin, f"quality.{name}", filter_parameters(name))
        items = []
        for k, v in sorted(args.items()):
            # YAML lists -> tuples so the spec stays hashable (top_n_grams: [[2, 0.2], ...])
            items.append((k, _freeze(v)))
        out.append((name, tuple(items)))
    return tuple(out)


def _freeze(v: Any) -> Any:
    if isinstance(v, list):
        return tuple(_freeze(x) for x in v)
    return v


def _language(value: Any, origin: str, resolve: Resolver | None = None) -> LanguageSpec | None:
    def parse(m: dict[str, Any]) -> LanguageSpec:
        m = _mapping(m, origin, "language", {"model", "keep", "min_score"})
        keep = m.get("keep", ["en"])
        if isinstance(keep, str):
            keep = [keep]
        if not isinstance(keep, list) or not keep or not all(isinstance(x, str) and x for x in keep):
            raise _err(origin, "language.keep", f"expected a list of language codes, got {keep!r}")
        model = _str(m.get("model", "py3langid"), origin, "language.model")
        if model != "py3langid":  # a local model file, named like every other path
            model = _resolved(model, origin, "language.model", resolve)
        return LanguageSpec(
            model=model,
            keep=tuple(keep),
            min_score=_float(m.get("min_score", 0.65), origin, "language.min_score", 0.0, 1.0),
        )

    return _stage(value, origin, "language", parse)


def _near(value: Any, origin: str) -> NearDedupSpec | None:
    def parse(m: dict[str, Any]) -> NearDedupSpec:
        m = _mapping(m, origin, "near_dedup", set(NearDedupSpec.__dataclass_fields__))
        d = NearDedupSpec()
        spec = NearDedupSpec(
            shingle=_int(m.get("shingle", d.shingle), origin, "near_dedup.shingle", 1),
            permutations=_int(m.get("permutations", d.permutations), origin, "near_dedup.permutations", 1),
            bands=_int(m.get("bands", d.bands), origin, "near_dedup.bands", 1),
            threshold=_float(m.get("threshold", d.threshold), origin, "near_dedup.threshold", 0.0, 1.0),
            seed=_int(m.get("seed", d.seed), origin, "near_dedup.seed", 0),
        )
        if spec.permutations % spec.bands:
            raise _err(origin, "near_dedup.bands", f"permutations ({spec.permutations}) must be a multiple of bands ({spec.bands})")
        return spec

    return _stage(value, origin, "near_dedup", parse)


def _problem(value: Any, origin: str) -> ProblemDedupSpec | None:
    def parse(m: dict[str, Any]) -> ProblemDedupSpec:
        m = _mapping(m, origin, "problem_dedup", {"policy", "k"})
        return ProblemDedupSpec(
            policy=_choice(m.get("policy", "keep_all"), origin, "problem_dedup.policy", PROBLEM_POLICIES),
            k=_int(m.get("k", 1), origin, "problem_dedup.k", 1),
        )

    return _stage(value, origin, "problem_dedup", parse)


def _benchmark(b: Any, origin: str, i: int, resolve: Resolver | None = None) -> BenchmarkSpec:
    key = f"decontaminate.benchmarks[{i}]"
    b = _mapping(b, origin, key, {"name", "path", "format", "fields"})
    for req in ("name", "path"):
        if req not in b:
            raise _err(origin, f"{key}.{req}", "required")
    path = _str(b["path"], origin, f"{key}.path")
    fmt = b.get("format") or ("parquet" if path.endswith(".parquet") else "jsonl")
    fields = _mapping(b.get("fields", {}), origin, f"{key}.fields", {"problem", "answer"})
    return BenchmarkSpec(
        name=_str(b["name"], origin, f"{key}.name"),
        path=_resolved(path, origin, f"{key}.path", resolve),
        format=_choice(fmt, origin, f"{key}.format", BENCHMARK_FORMATS),
        problem_field=_str(fields.get("problem", "problem"), origin, f"{key}.fields.problem"),
        answer_field=None if fields.get("answer") is None and "answer" in fields
        else _str(fields.get("answer", "answer"), origin, f"{key}.fields.answer"),
    )


def _decontam(value: Any, origin: str, resolve: Resolver | None = None) -> DecontamSpec | None:
    def parse(m: dict[str, Any]) -> DecontamSpec:
        m = _mapping(m, origin, "decontaminate", {"benchmarks", "ngram", "min_overlap"})
        benches = m.get("benchmarks", [])
        if not isinstance(benches, list):
            raise _err(origin, "decontaminate.benchmarks", f"expected a list, got {type(benches).__name__}")
        parsed = tuple(_benchmark(b, origin, i, resolve) for i, b in enumerate(benches))
        names = [b.name for b in parsed]
        if len(set(names)) != len(names):
            raise _err(origin, "decontaminate.benchmarks", f"duplicate benchmark names in {names}")
        return DecontamSpec(
            benchmarks=parsed,
            ngram=_int(m.get("ngram", 13), origin, "decontaminate.ngram", 1),
            min_overlap=_float(m.get("min_overlap", 0.5), origin, "decontaminate.min_overlap", 0.0, 1.0),
        )

    return _stage(value, origin, "decontaminate", parse)


def _validate(value: Any, origin: str) -> ValidateSpec | None:
    def parse(m: dict[str, Any]) -> ValidateSpec:
        m = _mapping(m, origin, "validate", set(ValidateSpec.__dataclass_fields__))
        d = ValidateSpec()
        pattern = _str(m.get("answer_pattern", d.answer_pattern), origin, "validate.answer_pattern")
        if pattern != "boxed":
            try:
                re.compile(pattern)
            except re.error as e:
                raise _err(origin, "validate.answer_pattern", f"bad regex {pattern!r}: {e}") from None
        spec = ValidateSpec(
            require_answer=_bool(m.get("require_answer", d.require_answer), origin, "validate.require_answer"),
            answer_pattern=pattern,
            math_verify=_choice(m.get("math_verify", d.math_verify), origin, "validate.math_verify", MATH_VERIFY_POLICIES),
            max_repeat_fraction=_float(
                m.get("max_repeat_fraction", d.max_repeat_fraction), origin, "validate.max_repeat_fraction",
                0.0, 1.0, allow_none=True,
            ),
            min_chars=_int(m.get("min_chars", d.min_chars), origin, "validate.min_chars", 0),
            max_chars=_int(m.get("max_chars", d.max_chars), origin, "validate.max_chars", 1, allow_none=True),
        )
        if spec.max_chars is not None and spec.max_chars < spec.min_chars:
            raise _err(origin, "validate.max_chars", f"{spec.max_chars} is below min_chars {spec.min_chars}")
        return spec

    return _stage(value, origin, "validate", parse)


# Each parser takes (value, origin); those that read paths also take the resolver.
_PARSERS: dict[str, Callable[[Any, str], Any]] = {
    "quality": _quality,
    "language": _language,
    "exact_dedup": lambda v, o: _bool(v, o, "exact_dedup"),
    "near_dedup": _near,
    "problem_dedup": _problem,
    "decontaminate": _decontam,
    "validate": _validate,
}


_PATH_PARSERS: dict[str, Callable[[Any, str, Resolver | None], Any]] = {
    "language": _language,
    "decontaminate": _decontam,
}


def _parse_fields(mapping: Any, origin: str, resolve: Resolver | None = None) -> dict[str, Any]:
    if not isinstance(mapping, dict):
        raise ValueError(f"{origin}: clean: expected a mapping, got {type(mapping).__name__}")
    out: dict[str, Any] = {}
    for key, value in mapping.items():
        if key not in _PARSERS:
            raise ValueError(f"{origin}: clean.{key}: unknown key (allowed: {', '.join(sorted(_PARSERS))})")
        out[key] = _PATH_PARSERS[key](value, origin, resolve) if key in _PATH_PARSERS else _PARSERS[key](value, origin)
    return out
