"""Test mixtures shared by several test files. A plain module, not a conftest: some test
files run with `--noconftest`. pytest puts tests/ on sys.path (no __init__.py there), so
`from mixtures import three_source_mixture` works from the repo root and from tests/."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

THREE_SOURCE_WEIGHTS: Mapping[str, float] = {"rollouts": 2, "gsm8k": 1, "olympiad": 1}


def three_source_mixture(d: Path, *, name: str, context: int = 384, token_budget: str = "150K",
                         weights: Mapping[str, float] = THREE_SOURCE_WEIGHTS, max_repetition: int = 4,
                         shard_rows: int = 8) -> Path:
    """Write `d/mix.yaml`: real MATH rollouts (one trace each, split at the final
    paragraph), GSM8K and OlympiadBench questions, into one packed phase `p`."""
    w = ", ".join(f"{k}: {v}" for k, v in weights.items())
    p = d / "mix.yaml"
    p.write_text(f"""
name: {name}
sources:
  rollouts:
    path: {DATA}/qwen25-math-eval/math_cot_100_rollouts8.jsonl
    format: jsonl
    kind: reasoning
    category: math
    fields: {{prompt: question, trace: "code[3]"}}
    split: final_paragraph
  gsm8k: {{path: "{DATA}/qwen25-math-eval/gsm8k.jsonl", format: jsonl, category: web, fields: {{text: question}}}}
  olympiad: {{path: "{DATA}/limo-eval/olympiadbench.jsonl", format: jsonl, category: web, fields: {{text: question}}}}
phases:
  p:
    context: {context}
    token_budget: {token_budget}
    weights: {{{w}}}
    max_repetition: {max_repetition}
    shard_rows: {shard_rows}
""")
    return p
