"""RSA pipeline files (`pipelines/*.yaml`): YAML -> validated `RSAConfig`.

Errors name the file, line and key (`pipelines/rsa_math.yaml:14: subsets.k: ...`), as
mixture files do; the input source is parsed by the mixture parser's own source rules,
so an RSA input reads exactly like a mixture source. The keys and defaults are
documented in `pipelines/rsa_math.yaml`.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from zaya_data.config import ConfigError, _check_keys, _Ctx, _get, _LineDict, _LineLoader, _source, expand_path
from zaya_data.rsa.prompt import DEFAULT_TEMPLATE, PLACEHOLDERS, TEMPLATE_FIELDS, TEMPLATES, AggregationTemplate
from zaya_data.rsa.teachers import OpenAISettings, Sampling
from zaya_data.specs import SourceSpec

DEFAULT_POPULATION_PROMPT = "{problem}\n\nPlease reason step by step, and put your final answer within \\boxed{}."


@dataclass(frozen=True)
class TeacherSpec:
    kind: str  # "zaya1" | "openai"
    sampling: Sampling
    openai: OpenAISettings | None = None
    # zaya1: "tiny", a checkpoint folder (HF layout), or "random:<config>" (benchmarks)
    checkpoint: str | None = None
    device: str = "auto"  # zaya1 in-process: "cpu", "cuda", "auto"
    dtype: str = "auto"  # zaya1: "float32", "bfloat16", "auto" (bf16 on GPU, fp32 on CPU)
    gpus: int = 0  # zaya1: Ray GPU actors (0 = generate in this process)
    batch_size: int = 16  # zaya1: prompts per generate call
    # zaya1: generate through model.engine (continuous batching, paged cache, Triton on GPU)
    # or the readable model.generate path: "on", "off", or "auto" (the engine on CUDA).
    engine: str = "auto"

    @property
    def label(self) -> str:
        if self.kind == "openai" and self.openai is not None:
            return f"openai:{self.openai.model}"
        return f"zaya1:{self.checkpoint}"


@dataclass(frozen=True)
class PopulationSpec:
    """Self-aggregation: the teacher writes C rollouts per problem before round 1."""

    c: int
    prompt: str  # {problem} is replaced
    sampling: Sampling


@dataclass(frozen=True)
class RSAConfig:
    name: str
    path: Path
    seed: int
    source: SourceSpec
    limit: int | None  # only the first N problems of the input
    tokenizer: str
    tau: int
    boundary_window: int
    k: int
    m: int
    c: int | None  # rollouts of the population used per problem (None = all)
    stratify: bool
    skip_unanimous: bool
    template: AggregationTemplate
    teacher: TeacherSpec
    rounds: int
    verifier: bool
    reject_truncated: bool
    population: PopulationSpec | None
    output: str | None
    batch_problems: int
    raw_text: str = ""

    def fingerprint(self) -> str:
        """Hash of everything that decides the output; a resumed run must match it.
        Operational knobs (concurrency, retries, timeouts, GPU count, output path) are
        left out: changing them between a kill and a resume changes no byte."""
        d = asdict(self)
        for k in ("path", "output", "raw_text", "name"):
            d.pop(k)
        d["source"].pop("origin")
        t = d["teacher"]
        t.pop("gpus")
        if t["openai"]:
            for k in ("concurrency", "retries", "timeout", "backoff", "backoff_max", "api_key_env", "base_url"):
                t["openai"].pop(k)
        blob = json.dumps(d, sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


_TOP = {"name", "seed", "description", "input", "tokenizer", "tails", "subsets", "prompt",
        "teacher", "rounds", "verifier", "population", "output", "batch_problems", "reject_truncated"}
_INPUT_EXTRA = {"limit"}
_TAILS = {"tau", "boundary_window"}
_SUBSETS = {"k", "m", "c", "stratify", "skip_unanimous"}
_PROMPT = {"template", *TEMPLATE_FIELDS, "version"}
_TEACHER = {"kind", "checkpoint", "device", "dtype", "gpus", "batch_size", "engine", "base_url", "model",
            "api_key_env", "endpoint", "concurrency", "retries", "timeout", "backoff", "backoff_max",
            "completion_template", "extra_body", "sampling"}
_SAMPLING = {"temperature", "top_p", "top_k", "max_tokens", "stop"}
_POPULATION = {"c", "prompt", "sampling"}
_VERIFIER = {"enabled"}


def _pos_int(ctx: _Ctx, node: dict, key: str, path: str, default: Any = ..., minimum: int = 1) -> int:
    v = _get(ctx, node, key, path, int, default)
    if v is not None and v < minimum:
        raise ctx.err(node, key, f"{path}.{key}", f"must be >= {minimum}, got {v}")
    return v


def _mapping(ctx: _Ctx, node: dict, key: str, path: str, allowed: set[str]) -> _LineDict:
    sub = node.get(key)
    if sub is None:
        empty = _LineDict()
        empty.lines, empty.line = {}, node.line if isinstance(node, _LineDict) else 0
        return empty
    if not isinstance(sub, dict):
        raise ctx.err(node, key, f"{path}.{key}" if path else key, f"expected a mapping, got {sub!r}")
    _check_keys(ctx, sub, allowed, f"{path}.{key}" if path else key)
    return sub


def _sampling(ctx: _Ctx, node: dict, path: str, base: Sampling) -> Sampling:
    s = _mapping(ctx, node, "sampling", path, _SAMPLING)
    p = f"{path}.sampling"
    temperature = _get(ctx, s, "temperature", p, float, base.temperature)
    if temperature < 0:
        raise ctx.err(s, "temperature", f"{p}.temperature", f"must be >= 0, got {temperature}")
    top_p = _get(ctx, s, "top_p", p, float, base.top_p)
    if not 0 < top_p <= 1:
        raise ctx.err(s, "top_p", f"{p}.top_p", f"must be in (0, 1], got {top_p}")
    stop = _get(ctx, s, "stop", p, list, list(base.stop))
    if not all(isinstance(x, str) for x in stop):
        raise ctx.err(s, "stop", f"{p}.stop", "expected a list of strings")
    return Sampling(temperature=temperature, top_p=top_p,
                    top_k=_pos_int(ctx, s, "top_k", p, base.top_k),
                    max_tokens=_pos_int(ctx, s, "max_tokens", p, base.max_tokens), stop=tuple(stop))


def _template(ctx: _Ctx, node: dict) -> AggregationTemplate:
    p = _mapping(ctx, node, "prompt", "", _PROMPT)
    name = _get(ctx, p, "template", "prompt", str, DEFAULT_TEMPLATE)
    if name not in TEMPLATES:
        raise ctx.err(p, "template", "prompt.template", f"unknown template (known: {', '.join(sorted(TEMPLATES))})")
    base = TEMPLATES[name]
    custom = {k: _get(ctx, p, k, "prompt", str) for k in TEMPLATE_FIELDS if k in p}
    if not custom:
        if "version" in p:
            raise ctx.err(p, "version", "prompt.version", "only with a custom template text (header, candidate, ...)")
        return base
    # Changed text must carry its own version, so no two prompts share a name.
    version = _get(ctx, p, "version", "prompt", str)
    if version in TEMPLATES:
        raise ctx.err(p, "version", "prompt.version", f"{version!r} names a built-in template; choose a new version")
    if "{tail}" not in custom.get("candidate", base.candidate):
        raise ctx.err(p, "candidate", "prompt.candidate", "must contain {tail}")
    if "{problem}" not in custom.get("header", base.header):
        raise ctx.err(p, "header", "prompt.header", "must contain {problem}")
    for k, text in custom.items():
        unknown = set(re.findall(r"\{([a-z_]+)\}", text)) - PLACEHOLDERS[k]
        if unknown:
            raise ctx.err(p, k, f"prompt.{k}", f"unknown placeholder(s) {sorted(unknown)} "
                                                f"(allowed: {sorted(PLACEHOLDERS[k])})")
    return AggregationTemplate(**{**asdict(base), **custom, "version": version})


def _teacher(ctx: _Ctx, root: dict, base_dir: Path) -> TeacherSpec:
    if "teacher" not in root:
        raise ConfigError(f"{ctx.file}:{root.line}: teacher: required key is missing")
    t = _mapping(ctx, root, "teacher", "", _TEACHER)
    kind = _get(ctx, t, "kind", "teacher", str)
    sampling = _sampling(ctx, t, "teacher", Sampling())
    zaya_only = {"checkpoint", "device", "dtype", "gpus", "batch_size", "engine"}
    openai_only = _TEACHER - zaya_only - {"kind", "sampling"}
    if kind == "openai":
        for k in zaya_only & set(t):
            raise ctx.err(t, k, f"teacher.{k}", "only for kind: zaya1")
        base_url = _get(ctx, t, "base_url", "teacher", str)
        if not base_url.startswith(("http://", "https://")):
            raise ctx.err(t, "base_url", "teacher.base_url", f"must start with http:// or https://, got {base_url!r}")
        endpoint = _get(ctx, t, "endpoint", "teacher", str, "chat")
        if endpoint not in ("chat", "completions"):
            raise ctx.err(t, "endpoint", "teacher.endpoint", f"must be 'chat' or 'completions', got {endpoint!r}")
        key_env = _get(ctx, t, "api_key_env", "teacher", str, None)
        if key_env is not None and not key_env.replace("_", "").isalnum():
            # A key pasted where its variable's name belongs would end up in the config
            # hash and the logs; refuse it.
            raise ctx.err(t, "api_key_env", "teacher.api_key_env",
                          "must be the NAME of an environment variable (letters, digits, _), not the key")
        timeout = _get(ctx, t, "timeout", "teacher", float, 600.0)
        backoff = _get(ctx, t, "backoff", "teacher", float, 1.0)
        backoff_max = _get(ctx, t, "backoff_max", "teacher", float, 60.0)
        for k, v in (("timeout", timeout), ("backoff", backoff), ("backoff_max", backoff_max)):
            if v < 0 or (k == "timeout" and v == 0):
                raise ctx.err(t, k, f"teacher.{k}", f"must be positive, got {v}")
        settings = OpenAISettings(
            base_url=base_url, model=_get(ctx, t, "model", "teacher", str), api_key_env=key_env,
            endpoint=endpoint, concurrency=_pos_int(ctx, t, "concurrency", "teacher", 8),
            retries=_pos_int(ctx, t, "retries", "teacher", 5, minimum=0), timeout=timeout,
            backoff=backoff, backoff_max=backoff_max,
            completion_template=_get(ctx, t, "completion_template", "teacher", str,
                                     OpenAISettings.completion_template),
            extra_body=dict(_get(ctx, t, "extra_body", "teacher", dict, {})),
        )
        return TeacherSpec(kind="openai", sampling=sampling, openai=settings)
    if kind == "zaya1":
        for k in openai_only & set(t):
            raise ctx.err(t, k, f"teacher.{k}", "only for kind: openai")
        ckpt = _get(ctx, t, "checkpoint", "teacher", str)
        if ckpt.startswith("random:"):
            # Random weights of a shipped configuration: throughput benchmarks only.
            from model.config import CONFIG_DIR

            if not (CONFIG_DIR / f"{ckpt[7:]}.json").is_file():
                known = sorted(p.stem for p in CONFIG_DIR.glob("*.json"))
                raise ctx.err(t, "checkpoint", "teacher.checkpoint", f"no configuration {ckpt[7:]!r} (known: {known})")
        elif ckpt != "tiny":
            try:
                ckpt = expand_path(ckpt, base_dir)
            except ValueError as e:
                raise ctx.err(t, "checkpoint", "teacher.checkpoint", str(e)) from None
        device = _get(ctx, t, "device", "teacher", str, "auto")
        if device not in ("auto", "cpu", "cuda"):
            raise ctx.err(t, "device", "teacher.device", f"must be auto, cpu or cuda, got {device!r}")
        dtype = _get(ctx, t, "dtype", "teacher", str, "auto")
        if dtype not in ("auto", "float32", "bfloat16", "float16"):
            raise ctx.err(t, "dtype", "teacher.dtype", f"must be auto, float32, bfloat16 or float16, got {dtype!r}")
        engine = t.get("engine", "auto")
        if engine not in ("auto", True, False):
            raise ctx.err(t, "engine", "teacher.engine", f"must be auto, true or false, got {engine!r}")
        return TeacherSpec(kind="zaya1", sampling=sampling, checkpoint=ckpt, device=device, dtype=dtype,
                           gpus=_pos_int(ctx, t, "gpus", "teacher", 0, minimum=0),
                           batch_size=_pos_int(ctx, t, "batch_size", "teacher", 16),
                           engine=engine if engine == "auto" else ("on" if engine else "off"))
    raise ctx.err(t, "kind", "teacher.kind", f"must be 'zaya1' or 'openai', got {kind!r}")


def parse_rsa_config(text: str, path: Path) -> RSAConfig:
    ctx = _Ctx(path)
    try:
        loader = _LineLoader(text)
        loader.name = str(path)
        try:
            root = loader.get_single_data()
        finally:
            loader.dispose()
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: invalid YAML: {e}") from None
    if not isinstance(root, dict):
        raise ConfigError(f"{path}:1: an RSA pipeline file must be a mapping with 'input' and 'teacher'")
    _check_keys(ctx, root, _TOP, "")
    base_dir = path.resolve().parent

    if "input" not in root:
        raise ConfigError(f"{ctx.file}:{root.line}: input: required key is missing")
    inp = root["input"]
    if not isinstance(inp, _LineDict):
        raise ctx.err(root, "input", "input", "expected a mapping (path, format, kind, fields)")
    limit = _pos_int(ctx, inp, "limit", "input", None)
    src_node = _LineDict({k: v for k, v in inp.items() if k not in _INPUT_EXTRA})
    src_node.lines, src_node.line = inp.lines, inp.line
    src_node.setdefault("kind", "rollout_group")
    src_node.setdefault("category", "rsa")
    name = _get(ctx, root, "name", "<top>", str, path.stem)
    source = _source(ctx, "input", src_node, base_dir)
    if source.kind == "document":
        raise ctx.err(inp, "kind", "input.kind", "must be rollout_group (or reasoning, with a population spec)")

    tok = _get(ctx, root, "tokenizer", "<top>", str, "embedded")
    if tok != "embedded":
        try:
            tok = expand_path(tok, base_dir)
        except ValueError as e:
            raise ctx.err(root, "tokenizer", "tokenizer", str(e)) from None

    tails = _mapping(ctx, root, "tails", "", _TAILS)
    tau = _pos_int(ctx, tails, "tau", "tails", 4096)
    window = _pos_int(ctx, tails, "boundary_window", "tails", 64, minimum=0)

    sub = _mapping(ctx, root, "subsets", "", _SUBSETS)
    k = _pos_int(ctx, sub, "k", "subsets", 4)
    m = _pos_int(ctx, sub, "m", "subsets", 4)
    c = _pos_int(ctx, sub, "c", "subsets", None)
    if c is not None and c < k:
        raise ctx.err(sub, "c", "subsets.c", f"must be >= subsets.k ({k}), got {c}")

    teacher = _teacher(ctx, root, base_dir)
    rounds = _pos_int(ctx, root, "rounds", "<top>", 1)

    ver = root.get("verifier")
    if isinstance(ver, bool):
        verifier = ver
    elif ver is None:
        verifier = False
    else:
        vnode = _mapping(ctx, root, "verifier", "", _VERIFIER)
        verifier = _get(ctx, vnode, "enabled", "verifier", bool, False)

    population = None
    if root.get("population") is not None:
        pop = _mapping(ctx, root, "population", "", _POPULATION)
        pc = _pos_int(ctx, pop, "c", "population")
        if pc < k:
            raise ctx.err(pop, "c", "population.c", f"must be >= subsets.k ({k}), got {pc}")
        prompt = _get(ctx, pop, "prompt", "population", str, DEFAULT_POPULATION_PROMPT)
        if "{problem}" not in prompt:
            raise ctx.err(pop, "prompt", "population.prompt", "must contain {problem}")
        population = PopulationSpec(c=pc, prompt=prompt, sampling=_sampling(ctx, pop, "population", teacher.sampling))
    elif source.kind != "rollout_group":
        raise ctx.err(inp, "kind", "input.kind", "only rollout_group inputs carry a population; "
                                                 "add a population spec to generate one")

    output = _get(ctx, root, "output", "<top>", str, None)
    if output is not None:
        try:
            output = expand_path(output, base_dir)
        except ValueError as e:
            raise ctx.err(root, "output", "output", str(e)) from None
    return RSAConfig(
        name=name, path=path.resolve(), seed=_get(ctx, root, "seed", "<top>", int, 0), source=source,
        limit=limit, tokenizer=tok, tau=tau, boundary_window=window, k=k, m=m, c=c,
        stratify=_get(ctx, sub, "stratify", "subsets", bool, False),
        skip_unanimous=_get(ctx, sub, "skip_unanimous", "subsets", bool, False),
        template=_template(ctx, root), teacher=teacher, rounds=rounds, verifier=verifier,
        reject_truncated=_get(ctx, root, "reject_truncated", "<top>", bool, True),
        population=population, output=output,
        batch_problems=_pos_int(ctx, root, "batch_problems", "<top>", 8), raw_text=text,
    )


def load_rsa_config(path: str | Path) -> RSAConfig:
    """Parse and validate an RSA pipeline file. Every error names the file, line and key."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: RSA pipeline file not found")
    return parse_rsa_config(path.read_text(encoding="utf-8"), path)
