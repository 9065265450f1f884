"""Per-phase mixing: normalized weights -> per-source token targets -> deterministic selection.

Following Megatron's blended datasets, the whole selection is computed up front from
per-record token counts alone (no text), so it is cheap, reproducible and inspectable:
- weights are normalized over the non-zero entries of the phase;
- category weights are split among the category's sources in proportion to the tokens
  each has available (a category's sources keep their natural relative sizes);
- each source is walked epoch by epoch in an order given by a seeded hash of the record's
  id and position, so the choice depends on the data and the seed, never on how many
  workers read it or in which order they finished.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field

import numpy as np

from zaya_data.specs import PhaseSpec, SourceSpec


class ShortfallError(RuntimeError):
    """A source cannot reach its target within its allowed repetition."""


def normalize_weights(weights: dict[str, float]) -> dict[str, float]:
    """Shares over the non-zero weights; zero-weight entries are left out entirely."""
    nz = {k: float(w) for k, w in weights.items() if w > 0}
    if not nz:
        raise ValueError("at least one weight must be > 0")
    total = math.fsum(nz.values())
    return {k: w / total for k, w in nz.items()}


def largest_remainder(total: int, shares: dict[str, float]) -> dict[str, int]:
    """Integer parts of `total` proportional to `shares`, summing exactly to `total`
    (ties broken by name so the split is deterministic)."""
    raw = {k: total * s for k, s in shares.items()}
    out = {k: int(math.floor(v)) for k, v in raw.items()}
    left = total - sum(out.values())
    by_rem = sorted(raw, key=lambda k: (-(raw[k] - out[k]), k))
    for k in by_rem[:left]:
        out[k] += 1
    return out


def phase_sources(phase: PhaseSpec, sources: dict[str, SourceSpec]) -> list[str]:
    """Sources that take part in a phase (non-zero weight, directly or via category),
    in the mixture file's order."""
    shares = normalize_weights(phase.weights)
    if phase.weights_by == "source":
        return [s for s in sources if s in shares]
    return [s for s, spec in sources.items() if spec.category in shares]


def source_targets(
    phase: PhaseSpec,
    sources: dict[str, SourceSpec],
    available: dict[str, int],
    budget: int,
) -> tuple[dict[str, float], dict[str, int]]:
    """Target share and target count (tokens or prompts) of every source in the phase."""
    shares = normalize_weights(phase.weights)
    names = phase_sources(phase, sources)
    if phase.weights_by == "source":
        src_share = {s: shares[s] for s in names}
    else:
        src_share = {}
        for cat, cshare in shares.items():
            members = [s for s in names if sources[s].category == cat]
            if not members:
                continue
            avail = sum(available.get(s, 0) for s in members)
            for s in members:
                # An empty category still gets its share (it will show as a shortfall)
                # rather than silently vanishing from the mix.
                frac = available.get(s, 0) / avail if avail else 1.0 / len(members)
                src_share[s] = cshare * frac
    return src_share, largest_remainder(budget, src_share)


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """A fast, well-mixing 64-bit hash on numpy arrays (wrapping arithmetic)."""
    with np.errstate(over="ignore"):
        z = x + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def record_hashes(ids: list[str], file_index: np.ndarray, row_index: np.ndarray) -> np.ndarray:
    """One uint64 per record from its id and position (position separates exact
    duplicates, which share an id)."""
    out = np.empty(len(ids), dtype=np.uint64)
    for i, rid in enumerate(ids):
        out[i] = int.from_bytes(hashlib.blake2b(rid.encode(), digest_size=8).digest(), "little")
    with np.errstate(over="ignore"):
        pos = (file_index.astype(np.uint64) << np.uint64(40)) ^ row_index.astype(np.uint64)
        return _splitmix64(out ^ _splitmix64(pos))


def epoch_keys(hashes: np.ndarray, seed: int, salt: str, epoch: int) -> np.ndarray:
    """Sort keys for one epoch of one source: a fresh seeded permutation per epoch."""
    s = int.from_bytes(hashlib.blake2b(f"{seed}\x00{salt}\x00{epoch}".encode(), digest_size=8).digest(), "little")
    return _splitmix64(hashes ^ np.uint64(s))


@dataclass
class Selection:
    """Which records of one source are used, and how often."""

    source: str
    target: int
    # (record index, epoch) for every use, in selection order
    records: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    epochs: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))
    taken: int = 0  # tokens (or prompts) taken
    available: int = 0
    shortfall: int = 0

    @property
    def repetition(self) -> float:
        return self.taken / self.available if self.available else 0.0

    def unique_records(self) -> int:
        # a count of distinct non-negative indices: bincount is O(n), np.unique sorts
        return int(np.count_nonzero(np.bincount(self.records))) if self.records.size else 0


def select_source(
    source: str,
    sizes: np.ndarray,
    hashes: np.ndarray,
    target: int,
    max_repetition: float,
    seed: int,
    salt: str,
) -> Selection:
    """Walk the source in seeded epochs until `target` is reached.

    Records are taken whole; the record that crosses the target is included (so a source
    reaches its target, overshooting by less than one record). An epoch is complete
    unless it is the last one needed, or repetition allows only a fraction of it; in the
    latter case the fractional cap is never exceeded.
    """
    sel = Selection(source=source, target=target, available=int(sizes.sum()))
    if target <= 0 or sel.available == 0:
        sel.shortfall = max(target, 0)
        return sel
    recs: list[np.ndarray] = []
    eps: list[np.ndarray] = []
    remaining = target
    epoch = 0
    while remaining > 0 and epoch < max_repetition:
        order = np.argsort(epoch_keys(hashes, seed, salt, epoch), kind="stable")
        cum = np.cumsum(sizes[order])
        allowed = max_repetition - epoch  # fraction of this epoch repetition allows
        if allowed >= 1.0:
            n = int(np.searchsorted(cum, remaining, side="left")) + 1
        else:
            cap = min(remaining, int(math.floor(allowed * sel.available)))
            n = int(np.searchsorted(cum, cap, side="right"))
            if cap == remaining:  # the target, not repetition, binds: include the crossing record
                n = int(np.searchsorted(cum, remaining, side="left")) + 1
        n = min(n, len(order))
        if n == 0:
            break
        recs.append(order[:n])
        eps.append(np.full(n, epoch, np.int32))
        got = int(cum[n - 1])
        remaining -= got
        sel.taken += got
        epoch += 1
    if recs:
        sel.records = np.concatenate(recs)
        sel.epochs = np.concatenate(eps)
    sel.shortfall = max(remaining, 0)
    return sel


def realized_shares(taken: dict[str, int]) -> dict[str, float]:
    total = sum(taken.values())
    return {k: (v / total if total else 0.0) for k, v in taken.items()}
