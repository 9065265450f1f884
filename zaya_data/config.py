"""Mixture files: YAML -> validated `MixtureSpec`, with errors that name file, line and key.

A mixture file reads like a table a person can check: sources (where, what format, which
fields, which category) and phases (context, RoPE base, budget, weights). The format is
documented in docs/mixtures.md; this module is its only parser.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import re
import sysconfig
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from zaya_data.specs import (
    FORMATS,
    KINDS,
    SPLITS,
    MixtureSpec,
    PhaseSpec,
    SourceSpec,
    TemplateSpec,
    TokenizerSpec,
)

if TYPE_CHECKING:
    from zaya_data.clean.config import CleanSpec


class ConfigError(ValueError):
    """A mixture file problem; the message starts with `file:line: key:`."""


class _LineDict(dict):
    """A dict that remembers the line of each key (1-based), for error messages."""

    lines: dict[str, int]
    line: int


class _LineLoader(yaml.SafeLoader):
    pass


def _construct_mapping(loader: _LineLoader, node: yaml.MappingNode) -> _LineDict:
    loader.flatten_mapping(node)
    out = _LineDict()
    out.lines = {}
    out.line = node.start_mark.line + 1
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in out:
            raise ConfigError(
                f"{loader.name}:{key_node.start_mark.line + 1}: duplicate key {key!r}"
            )
        out[key] = loader.construct_object(value_node, deep=True)
        out.lines[key] = key_node.start_mark.line + 1
    return out


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


class _Ctx:
    """Where we are in the file, so every error names it."""

    def __init__(self, file: Path):
        self.file = file

    def err(self, node: Any, key: str, path: str, msg: str) -> ConfigError:
        line = node.lines.get(key, node.line) if isinstance(node, _LineDict) else "?"
        return ConfigError(f"{self.file}:{line}: {path}: {msg}")

    def where(self, node: Any, key: str) -> str:
        line = node.lines.get(key, node.line) if isinstance(node, _LineDict) else "?"
        return f"{self.file}:{line}"


_SIZE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([kKmMbBgGtT]?)\s*$")
_MULT = {"": 1, "k": 10**3, "m": 10**6, "b": 10**9, "g": 10**9, "t": 10**12}


def parse_size(value: Any) -> int:
    """A count: an int, or a string with an SI suffix ("2M", "660B", "1.2T" tokens)."""
    if isinstance(value, bool):
        raise ValueError(f"expected a count, got {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        m = _SIZE.match(value.replace("_", ""))
        if m:
            return int(round(float(m.group(1)) * _MULT[m.group(2).lower()]))
    raise ValueError(f"expected a count like 2000000 or '1.2T', got {value!r}")


def expand_path(raw: str, base_dir: Path) -> str:
    """Expand ${ENV}, {stdlib}, {purelib} and {pkg:NAME}; resolve relative paths against
    the mixture file's folder (so a mixture is portable with its data)."""

    def env(m: re.Match[str]) -> str:
        name = m.group(1)
        if name not in os.environ:
            raise ValueError(f"environment variable ${{{name}}} is not set")
        return os.environ[name]

    s = re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", env, raw)
    s = s.replace("{stdlib}", sysconfig.get_paths()["stdlib"])
    s = s.replace("{purelib}", sysconfig.get_paths()["purelib"])

    def pkg(m: re.Match[str]) -> str:
        spec = importlib.util.find_spec(m.group(1))
        if spec is None or not spec.submodule_search_locations:
            raise ValueError(f"package {m.group(1)!r} is not installed")
        return list(spec.submodule_search_locations)[0]

    s = re.sub(r"\{pkg:([A-Za-z0-9_.]+)\}", pkg, s)
    s = os.path.expanduser(s)
    if not os.path.isabs(s) and not s.startswith("reasoning_gym:"):
        s = str((base_dir / s).resolve())
    return s


_SOURCE_KEYS = {"path", "format", "kind", "category", "fields", "split", "options", "clean"}
_PHASE_KEYS = {
    "kind", "context", "rope_base", "token_budget", "prompt_budget", "weights",
    "weights_by", "max_repetition", "max_repetition_per_source", "allow_shortfall",
    "loss", "template", "trim_window", "shard_rows", "description", "clean",
}
_TOP_KEYS = {"name", "seed", "tokenizer", "template", "sources", "phases", "description", "clean"}
_TEMPLATE_KEYS = set(TemplateSpec.__dataclass_fields__)


def _check_keys(ctx: _Ctx, node: Any, allowed: set[str], path: str, line: int | str = "?") -> None:
    """`line`: where `node` is, for a node that is not a mapping (and so has no lines)."""
    if not isinstance(node, dict):
        raise ConfigError(f"{ctx.file}:{line}: {path}: expected a mapping, got {type(node).__name__}")
    for key in node:
        if key not in allowed:
            raise ctx.err(
                node, key, f"{path}.{key}" if path else str(key),
                f"unknown key (allowed: {', '.join(sorted(allowed))})",
            )


def _get(ctx: _Ctx, node: dict, key: str, path: str, typ: type | tuple, default: Any = ...) -> Any:
    """`path` is the node's own key path ("" for the top level)."""
    full = f"{path}.{key}" if path else key
    if key not in node:
        if default is ...:
            line = node.line if isinstance(node, _LineDict) else "?"
            raise ConfigError(f"{ctx.file}:{line}: {full}: required key is missing")
        return default
    val = node[key]
    if typ is float and isinstance(val, int) and not isinstance(val, bool):
        val = float(val)
    if not isinstance(val, typ) or (isinstance(val, bool) and typ in (int, float)):
        tname = typ.__name__ if isinstance(typ, type) else "/".join(t.__name__ for t in typ)
        raise ctx.err(node, key, full, f"expected {tname}, got {val!r}")
    return val


def _template(ctx: _Ctx, node: Any, path: str, base: TemplateSpec, line: int | str = "?") -> TemplateSpec:
    if node is None:
        return base
    _check_keys(ctx, node, _TEMPLATE_KEYS, path, line)
    kwargs = {}
    for key, val in node.items():
        want = bool if key.startswith("add_") else str
        if not isinstance(val, want):
            raise ctx.err(node, key, f"{path}.{key}", f"expected {want.__name__}, got {val!r}")
        kwargs[key] = val
    fields = {**base.__dict__, **kwargs}
    return TemplateSpec(**fields)


def _source(ctx: _Ctx, name: str, node: Any, base_dir: Path, line: int | str = "?") -> SourceSpec:
    path = f"sources.{name}"
    _check_keys(ctx, node, _SOURCE_KEYS, path, line)
    fmt = _get(ctx, node, "format", path, str)
    if fmt not in FORMATS:
        raise ctx.err(node, "format", f"{path}.format", f"must be one of {', '.join(FORMATS)}, got {fmt!r}")
    kind = _get(ctx, node, "kind", path, str, "document")
    if kind not in KINDS:
        raise ctx.err(node, "kind", f"{path}.kind", f"must be one of {', '.join(KINDS)}, got {kind!r}")
    category = _get(ctx, node, "category", path, str)
    raw_paths = node.get("path")
    if fmt == "reasoning_gym":
        paths: tuple[str, ...] = ()
    else:
        if isinstance(raw_paths, str):
            raw_paths = [raw_paths]
        if not isinstance(raw_paths, list) or not raw_paths or not all(isinstance(p, str) for p in raw_paths):
            raise ctx.err(node, "path", f"{path}.path", "expected a path/glob or a list of them")
        try:
            paths = tuple(expand_path(p, base_dir) for p in raw_paths)
        except ValueError as e:
            raise ctx.err(node, "path", f"{path}.path", str(e)) from None
    fields = _get(ctx, node, "fields", path, dict, {})
    for k, v in fields.items():
        if not isinstance(v, str):
            raise ctx.err(fields, k, f"{path}.fields.{k}", f"expected a field expression string, got {v!r}")
    split = _get(ctx, node, "split", path, str, None)
    if split is not None and split not in SPLITS:
        raise ctx.err(node, "split", f"{path}.split", f"must be one of {', '.join(SPLITS)}, got {split!r}")
    options = dict(_get(ctx, node, "options", path, dict, {}))
    if fmt == "reasoning_gym" and "dataset" not in options:
        raise ctx.err(node, "options", f"{path}.options.dataset", "reasoning_gym sources need options.dataset")
    spec = SourceSpec(
        name=name, paths=paths, format=fmt, kind=kind, category=category,
        fields=dict(fields), split=split, options=options, origin=ctx.where(node, "format"),
    )
    _check_mapping(ctx, node, path, spec)
    return spec


_OPTION_IN_MESSAGE = re.compile(r"options\.([A-Za-z_]+)")


def _check_mapping(ctx: _Ctx, node: _LineDict, path: str, spec: SourceSpec) -> None:
    """The readers' rules for fields, split and options, checked now rather than at
    build time, each error at the key it is about."""
    from zaya_data.readers import _check_spec
    from zaya_data.readers.fieldmap import ALLOWED, parse_expression

    fields = node.get("fields") or {}
    if spec.format != "text":
        for key, expr in fields.items():
            if key not in ALLOWED[spec.kind]:
                raise ctx.err(fields, key, f"{path}.fields.{key}", f"not a canonical field of kind {spec.kind!r} "
                              f"(allowed: {', '.join(sorted(ALLOWED[spec.kind]))})")
            try:
                parse_expression(expr)
            except ValueError as e:
                raise ctx.err(fields, key, f"{path}.fields.{key}", str(e)) from None
    try:
        _check_spec(spec)
        if spec.format == "reasoning_gym":
            from zaya_data.readers.reasoning_gym import gym_options

            gym_options(spec)
    except ValueError as e:
        msg = str(e).removeprefix(f"source {spec.name!r} ({spec.origin}): ")
        opt = _OPTION_IN_MESSAGE.search(msg)
        options = node.get("options")
        if opt and isinstance(options, _LineDict) and opt.group(1) in options:
            raise ctx.err(options, opt.group(1), f"{path}.options.{opt.group(1)}", msg) from None
        if opt:
            raise ctx.err(node, "options", f"{path}.options", msg) from None
        if spec.format == "text" and "kind" in msg:
            raise ctx.err(node, "kind", f"{path}.kind", msg) from None
        # Mapping rules across fields (messages vs trace vs split): name the split when
        # the message is about it, else the fields.
        key = "split" if "split" in msg and "split" in node else "fields"
        raise ctx.err(node, key, f"{path}.{key}", msg) from None


def _phase(ctx: _Ctx, name: str, node: Any, template: TemplateSpec, sources: dict[str, SourceSpec],
           line: int | str = "?") -> PhaseSpec:
    path = f"phases.{name}"
    _check_keys(ctx, node, _PHASE_KEYS, path, line)
    _get(ctx, node, "description", path, str, None)
    kind = _get(ctx, node, "kind", path, str, "packed")
    if kind not in ("packed", "prompts"):
        raise ctx.err(node, "kind", f"{path}.kind", f"must be 'packed' or 'prompts', got {kind!r}")
    context = _get(ctx, node, "context", path, int, None if kind == "prompts" else ...)
    if context is not None and context < 16:
        raise ctx.err(node, "context", f"{path}.context", f"must be >= 16, got {context}")

    def size(key: str, required: bool) -> int | None:
        if key not in node:
            if required:
                raise ConfigError(f"{ctx.file}:{node.line}: {path}.{key}: required key is missing")
            return None
        try:
            n = parse_size(node[key])
        except ValueError as e:
            raise ctx.err(node, key, f"{path}.{key}", str(e)) from None
        if n <= 0:
            raise ctx.err(node, key, f"{path}.{key}", f"must be positive, got {node[key]!r}")
        return n

    token_budget = size("token_budget", kind == "packed")
    prompt_budget = size("prompt_budget", kind == "prompts")
    weights_by = _get(ctx, node, "weights_by", path, str, "source")
    if weights_by not in ("source", "category"):
        raise ctx.err(node, "weights_by", f"{path}.weights_by", f"must be 'source' or 'category', got {weights_by!r}")
    weights = _get(ctx, node, "weights", path, dict)
    known = set(sources) if weights_by == "source" else {s.category for s in sources.values()}
    for k, w in weights.items():
        wpath = f"{path}.weights.{k}"
        if k not in known:
            what = "source" if weights_by == "source" else "category"
            raise ctx.err(weights, k, wpath, f"unknown {what} (known: {', '.join(sorted(known))})")
        if isinstance(w, bool) or not isinstance(w, (int, float)) or w < 0 or w != w:
            raise ctx.err(weights, k, wpath, f"weight must be a number >= 0, got {w!r}")
    if not any(w > 0 for w in weights.values()):
        raise ctx.err(node, "weights", f"{path}.weights", "at least one weight must be > 0")
    max_rep = _get(ctx, node, "max_repetition", path, float, 1.0)
    if max_rep < 1.0:
        raise ctx.err(node, "max_repetition", f"{path}.max_repetition", f"must be >= 1.0 (epochs), got {max_rep}")
    per_src = _get(ctx, node, "max_repetition_per_source", path, dict, {})
    for k, v in per_src.items():
        if k not in sources:
            raise ctx.err(per_src, k, f"{path}.max_repetition_per_source.{k}", "unknown source")
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 1.0:
            raise ctx.err(per_src, k, f"{path}.max_repetition_per_source.{k}", f"must be a number >= 1.0, got {v!r}")
    loss = _get(ctx, node, "loss", path, str, "all")
    if loss not in ("all", "assistant"):
        raise ctx.err(node, "loss", f"{path}.loss", f"must be 'all' or 'assistant', got {loss!r}")
    trim_window = _get(ctx, node, "trim_window", path, int, 64)
    if trim_window < 0:
        raise ctx.err(node, "trim_window", f"{path}.trim_window", f"must be >= 0 (tokens), got {trim_window}")
    shard_rows = _get(ctx, node, "shard_rows", path, int, 1024)
    if shard_rows < 1:
        raise ctx.err(node, "shard_rows", f"{path}.shard_rows", "must be >= 1")
    rope = node.get("rope_base")
    if rope is not None and (isinstance(rope, bool) or not isinstance(rope, (int, float)) or rope <= 0):
        raise ctx.err(node, "rope_base", f"{path}.rope_base", f"must be a positive number, got {rope!r}")
    return PhaseSpec(
        name=name, kind=kind, context=context or 0,
        rope_base=float(rope) if rope is not None else None,
        token_budget=token_budget, prompt_budget=prompt_budget,
        weights_by=weights_by, weights={k: float(v) for k, v in weights.items()},
        max_repetition=max_rep,
        max_repetition_per_source={k: float(v) for k, v in per_src.items()},
        allow_shortfall=_get(ctx, node, "allow_shortfall", path, bool, False),
        loss=loss, template=_template(ctx, node.get("template"), f"{path}.template", template,
                                      node.lines.get("template", "?")),
        trim_window=trim_window, shard_rows=shard_rows, origin=ctx.where(node, "kind"),
    )


def _clean_sections(ctx: _Ctx, root: _LineDict, phases: dict[str, PhaseSpec], sources: dict[str, SourceSpec],
                    base_dir: Path) -> tuple[CleanSpec, dict[str, PhaseSpec]]:
    """Parse the `clean:` sections and merge them top level -> phase -> source for every
    source taking part in each phase; the phases come back carrying their merged specs.

    Each section is parsed where it is written, so an error names that section's line, and
    its paths (benchmarks, a language model file) resolve like source paths. Only sources
    that take part in a phase are checked against it: a rollout group that no cleaned
    phase reads is not an error."""
    from zaya_data.clean.config import CleanSpec, parse_clean
    from zaya_data.mixing import phase_sources

    def resolve(p: str) -> str:
        return expand_path(p, base_dir)

    phase_nodes = {str(k): v for k, v in root["phases"].items()}
    source_nodes = {str(k): v for k, v in root["sources"].items()}
    try:
        top = parse_clean(root.get("clean"), ctx.where(root, "clean"), resolve)
        out: dict[str, PhaseSpec] = {}
        for pname, phase in phases.items():
            ph_node = phase_nodes[pname]
            ph_top = top.merged(ph_node.get("clean"), ctx.where(ph_node, "clean"), resolve)
            merged: dict[str, CleanSpec] = {}
            for n in phase_sources(phase, sources):
                src_node = source_nodes[n]
                spec = ph_top.merged(src_node.get("clean"), ctx.where(src_node, "clean"), resolve)
                kind = sources[n].kind
                where = spec.origin or ctx.where(src_node, "clean")
                if not spec.is_noop and kind == "rollout_group":
                    raise ValueError(f"{where}: clean: source {n!r} is kind 'rollout_group'; cleaning applies to "
                                     "documents and reasoning samples")
                if spec.validate is not None and kind != "reasoning":
                    raise ValueError(f"{where}: clean.validate: source {n!r} is kind {kind!r}; validation checks "
                                     "reasoning samples only")
                merged[n] = spec
            out[pname] = dataclasses.replace(phase, clean=merged)
    except ValueError as e:  # the cleaning parser's messages already start with file:line
        raise ConfigError(str(e)) from None
    return top, out


def load_mixture(path: str | Path) -> MixtureSpec:
    """Parse and validate a mixture file. Every error names the file, line and key."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: mixture file not found")
    text = path.read_text(encoding="utf-8")
    ctx = _Ctx(path)
    try:
        loader = _LineLoader(text)
        loader.name = str(path)
        try:
            root = loader.get_single_data()
        finally:
            loader.dispose()
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise ConfigError(f"{where}: invalid YAML: {e}") from None
    if not isinstance(root, dict):
        raise ConfigError(f"{path}:1: the mixture file must be a mapping with 'sources' and 'phases'")
    _check_keys(ctx, root, _TOP_KEYS, "")
    base_dir = path.resolve().parent
    seed = _get(ctx, root, "seed", "", int, 0)
    if seed < 0:  # numpy's generators take non-negative seeds only
        raise ctx.err(root, "seed", "seed", f"must be >= 0, got {seed}")
    name = _get(ctx, root, "name", "", str, path.stem)
    _get(ctx, root, "description", "", str, None)
    tok = _get(ctx, root, "tokenizer", "", str, "embedded")
    if tok != "embedded":
        try:
            tok = expand_path(tok, base_dir)
        except ValueError as e:
            raise ctx.err(root, "tokenizer", "tokenizer", str(e)) from None
    template = _template(ctx, root.get("template"), "template", TemplateSpec(), root.lines.get("template", "?"))
    src_node = _get(ctx, root, "sources", "", dict)
    sources = {str(n): _source(ctx, str(n), v, base_dir, src_node.lines[n]) for n, v in src_node.items()}
    ph_node = _get(ctx, root, "phases", "", dict)
    if not ph_node:
        raise ctx.err(root, "phases", "phases", "at least one phase is required")
    phases = {str(n): _phase(ctx, str(n), v, template, sources, ph_node.lines[n]) for n, v in ph_node.items()}
    clean, phases = _clean_sections(ctx, root, phases, sources, base_dir)
    return MixtureSpec(
        name=name, path=path.resolve(), seed=seed,
        tokenizer=TokenizerSpec(tok), sources=sources, phases=phases, raw_text=text, clean=clean,
    )
