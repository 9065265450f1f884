"""K-subsets: which candidates go into each of a problem's M aggregation prompts.

Each subset holds K distinct rollouts (drawn without replacement from the C of the
population); the draw is a pure function of (seed, problem id, round), so any worker,
and any rerun, picks the same candidates. With `stratify`, each subset first takes one
rollout from as many distinct answers as it can (the answers visited in a seeded order
that rotates across the M subsets), so a minority answer reaches the aggregator instead
of being crowded out by the majority.
"""

from __future__ import annotations

import hashlib
import math
from typing import Sequence

import numpy as np

from zaya_data.rsa.answers import answer_key


def subset_rng(seed: int, problem_id: str, round_index: int) -> np.random.Generator:
    h = hashlib.blake2b(f"{seed}\x00{problem_id}\x00{round_index}".encode(), digest_size=8)
    return np.random.default_rng(int.from_bytes(h.digest(), "little"))


def is_unanimous(answers: Sequence[str | None]) -> bool:
    """All candidates give the same (non-empty) answer."""
    keys = {answer_key(a) for a in answers}
    return len(keys) == 1 and "" not in keys


def answer_groups(answers: Sequence[str | None]) -> list[list[int]]:
    """Candidate indices grouped by agreeing answer, groups in first-seen order."""
    groups: dict[str, list[int]] = {}
    for i, a in enumerate(answers):
        groups.setdefault(answer_key(a), []).append(i)
    return list(groups.values())


def choose_subsets(answers: Sequence[str | None], k: int, m: int, rng: np.random.Generator,
                   stratify: bool = False) -> list[tuple[int, ...]]:
    """M subsets of K candidate indices each (sorted), without replacement inside a
    subset. When C < K every subset is the whole population. Subsets are kept distinct
    while C-choose-K allows it (a bounded number of redraws)."""
    c = len(answers)
    if c == 0 or k < 1 or m < 1:
        return []
    k = min(k, c)
    groups = answer_groups(answers)
    order = [int(g) for g in rng.permutation(len(groups))]
    out: list[tuple[int, ...]] = []
    seen: set[tuple[int, ...]] = set()
    distinct_possible = math.comb(c, k) >= m
    for s in range(m):
        pick: tuple[int, ...] = ()
        for _attempt in range(16):
            if stratify and len(groups) > 1:
                pick = _stratified(groups, order, s, k, c, rng)
            else:
                pick = tuple(sorted(int(i) for i in rng.choice(c, size=k, replace=False)))
            if pick not in seen or not distinct_possible:
                break
        seen.add(pick)
        out.append(pick)
    return out


def _stratified(groups: list[list[int]], order: list[int], s: int, k: int, c: int,
                rng: np.random.Generator) -> tuple[int, ...]:
    # Rotate the group order by the subset number so that, when there are more distinct
    # answers than K, successive subsets cover different answers.
    rot = order[s % len(order):] + order[: s % len(order)]
    chosen: list[int] = []
    for g in rot[:k]:
        members = groups[g]
        chosen.append(int(members[int(rng.integers(len(members)))]))
    rest = [i for i in range(c) if i not in set(chosen)]
    if len(chosen) < k:
        extra = rng.choice(len(rest), size=k - len(chosen), replace=False)
        chosen.extend(rest[int(i)] for i in extra)
    return tuple(sorted(chosen))
