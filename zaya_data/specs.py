"""Typed specifications handed to readers and stages.

These are the already-validated forms of a mixture file's entries (`zaya_data.config`
parses YAML into them and names the offending key on any error). Readers and stages take
only these dataclasses, never raw YAML.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the cleaning package is imported only where cleaning is parsed or run
    from zaya_data.clean.config import CleanSpec

FORMATS = ("jsonl", "parquet", "hf", "text", "reasoning_gym")
KINDS = ("document", "reasoning", "rollout_group")
# How a single trace field is cut into reasoning and final answer when the source has
# no separate answer field: `think` = "<think>R</think>A"; `final_paragraph` = the last
# non-empty paragraph is the answer (traces ending in "... \\boxed{42}.").
SPLITS = ("think", "final_paragraph")


@dataclass(frozen=True)
class SourceSpec:
    name: str
    paths: tuple[str, ...]  # globs, placeholders ({stdlib}, {pkg:NAME}) already expanded
    format: str  # one of FORMATS
    kind: str  # one of KINDS
    category: str
    # canonical field -> expression on the raw record: "question", "meta.q", "code[0]".
    # Special keys: "messages" (chat records), "trace" (one text field to cut by `split`).
    fields: dict[str, str] = field(default_factory=dict)
    split: str | None = None
    # format-specific options: hf {split}, reasoning_gym {dataset, size, seed, chunk},
    # text {min_chars}, jsonl {encoding}
    options: dict[str, Any] = field(default_factory=dict)
    origin: str = ""  # "mixtures/demo.yaml:12" for error messages


@dataclass(frozen=True)
class TemplateSpec:
    """The chat/thinking template. Each piece is a format string; a reasoning sample is
    rendered as segments [user, think_open, reasoning, think_close, answer] and a plain
    document as [document]. Roles decide the loss mask under the phase's policy."""

    name: str = "chatml_think"
    user: str = "<|im_start|>user\n{prompt}<|im_end|>\n<|im_start|>assistant\n"
    think_open: str = "<think>\n"
    think_close: str = "\n</think>\n\n"
    answer: str = "{answer}<|im_end|>\n"
    document: str = "{text}"
    add_bos: bool = True
    add_eos: bool = True


@dataclass(frozen=True)
class PhaseSpec:
    name: str
    kind: str  # "packed" (token shards) or "prompts" (RL prompt sets)
    context: int
    rope_base: float | None
    token_budget: int | None  # packed phases: tokens to write
    prompt_budget: int | None  # prompt phases: prompts to write
    weights_by: str  # "source" or "category"
    weights: dict[str, float]  # raw weights as written; normalized by zaya_data.mixing
    max_repetition: float  # epochs a source may be repeated (1.0 = no repetition)
    max_repetition_per_source: dict[str, float] = field(default_factory=dict)
    allow_shortfall: bool = False
    loss: str = "all"  # "all" | "assistant"
    template: TemplateSpec = field(default_factory=TemplateSpec)
    trim_window: int = 64  # tokens searched back for a line/sentence boundary
    shard_rows: int = 1024  # packed rows per shard file
    origin: str = ""
    # The merged `clean:` settings (top level -> this phase -> the source) of every source
    # taking part in the phase; a source not named is not cleaned. Paths in them are
    # already resolved. Not part of the phase's config hash as such: the pipeline hashes
    # them separately, and only when cleaning is on (`clean.build.clean_config`).
    clean: dict[str, CleanSpec] = field(default_factory=dict)


@dataclass(frozen=True)
class TokenizerSpec:
    path: str  # "embedded", a tokenizer.json, or a local HF model folder


@dataclass(frozen=True)
class MixtureSpec:
    name: str
    path: Path
    seed: int
    tokenizer: TokenizerSpec
    sources: dict[str, SourceSpec]
    phases: dict[str, PhaseSpec]
    raw_text: str = ""  # the file as read, hashed into the manifest
    clean: CleanSpec | None = None  # the top-level `clean:` section (phases carry the merged ones)
