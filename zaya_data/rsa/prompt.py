"""The aggregation prompt: problem + numbered candidate tails + an instruction.

Templates are versioned: every example records the version that rendered its prompt,
and changing the text of a template means a new version name, so a dataset never mixes
two prompts under one name. Placeholders are `{name}` for the known names only, so a
template can carry literal braces (`\\boxed{}`) without escaping.

The default, `rsa-agg-v1`, renders (for K=2, the first tail cut, the second whole):

    Problem:
    <problem>

    Here are 2 candidate solutions. Each shows only the final part of its reasoning, and any of them may be wrong.

    Candidate 1:
    [... earlier reasoning omitted ...]
    <tail 1>

    Candidate 2:
    <tail 2>

    Compare the candidates, find their mistakes and what they got right, and write one complete, improved solution to the problem. Put the final answer in \\boxed{}.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

from zaya_data.rsa.tails import Tail


@dataclass(frozen=True)
class AggregationTemplate:
    version: str
    # {problem}, {k}
    header: str
    # {index} (1-based), {omitted} (the marker when the tail was cut), {tail}, {final}
    candidate: str
    omitted: str
    # how a separate final-answer section (after </think>) follows its tail; {answer}
    final: str
    # {k}
    instruction: str


TEMPLATES: dict[str, AggregationTemplate] = {
    "rsa-agg-v1": AggregationTemplate(
        version="rsa-agg-v1",
        header=("Problem:\n{problem}\n\nHere are {k} candidate solutions. Each shows only the final "
                "part of its reasoning, and any of them may be wrong.\n"),
        candidate="\nCandidate {index}:\n{omitted}{tail}{final}\n",
        omitted="[... earlier reasoning omitted ...]\n",
        final="\n\nFinal answer: {answer}",
        instruction=("\nCompare the candidates, find their mistakes and what they got right, and "
                     "write one complete, improved solution to the problem. Put the final answer "
                     "in \\boxed{}."),
    ),
}
DEFAULT_TEMPLATE = "rsa-agg-v1"
TEMPLATE_FIELDS = ("header", "candidate", "omitted", "final", "instruction")
PLACEHOLDERS = {
    "header": {"problem", "k"},
    "candidate": {"index", "omitted", "tail", "final"},
    "omitted": set(),
    "final": {"answer"},
    "instruction": {"k"},
}
_PH = re.compile(r"\{([a-z_]+)\}")


def fill(template: str, values: dict[str, str]) -> str:
    """Replace `{name}` for the names in `values`; every other brace stays literal."""
    return _PH.sub(lambda m: values.get(m.group(1), m.group(0)), template)


def render_aggregation_prompt(template: AggregationTemplate, problem: str, tails: Sequence[Tail]) -> str:
    k = str(len(tails))
    parts = [fill(template.header, {"problem": problem.strip(), "k": k})]
    for i, t in enumerate(tails, 1):
        # The tail text starts exactly at its first token (often the space after a full
        # stop); the prompt shows it without that leading whitespace.
        final = fill(template.final, {"answer": t.final}) if t.final else ""
        parts.append(fill(template.candidate, {
            "index": str(i), "omitted": template.omitted if t.truncated else "",
            "tail": t.text.strip(), "final": final,
        }))
    parts.append(fill(template.instruction, {"k": k}))
    return "".join(parts)
