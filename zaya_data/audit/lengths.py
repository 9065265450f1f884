"""Exact length distributions kept as counts per length.

Segment and row lengths are bounded by the phase's context (131072 at most in the
recipe), so a count per possible length is a small array that gives *exact* quantiles
without holding one entry per segment, however many hundreds of millions there are.
"""

from __future__ import annotations

from typing import Any

import numpy as np


class LengthCounts:
    """How many items have each length (0, 1, 2, ...); grows as longer items arrive."""

    def __init__(self, size: int = 1) -> None:
        self.counts = np.zeros(max(1, size), dtype=np.int64)

    def add(self, lengths: np.ndarray) -> None:
        lengths = np.asarray(lengths, dtype=np.int64)
        if lengths.size == 0:
            return
        if int(lengths.min()) < 0:
            raise ValueError("lengths must be >= 0")
        binc = np.bincount(lengths)
        if binc.size > self.counts.size:
            grown = np.zeros(binc.size, dtype=np.int64)
            grown[: self.counts.size] = self.counts
            self.counts = grown
        self.counts[: binc.size] += binc

    def merge(self, other: LengthCounts) -> None:
        nz = np.flatnonzero(other.counts)
        self.add(np.repeat(nz, other.counts[nz]))

    @property
    def n(self) -> int:
        return int(self.counts.sum())

    @property
    def total(self) -> int:
        return int((self.counts * np.arange(self.counts.size, dtype=np.int64)).sum())

    def quantile(self, q: float) -> int:
        """The smallest length L with at least a fraction q of items <= L (0 when empty)."""
        n = self.n
        if n == 0:
            return 0
        rank = max(1, int(np.ceil(q * n)))
        return int(np.searchsorted(np.cumsum(self.counts), rank, side="left"))

    def min(self) -> int:
        nz = np.flatnonzero(self.counts)
        return int(nz[0]) if nz.size else 0

    def max(self) -> int:
        nz = np.flatnonzero(self.counts)
        return int(nz[-1]) if nz.size else 0

    def log2_bins(self) -> list[dict[str, int]]:
        """Counts in bins [1,2), [2,4), [4,8), ... up to the longest item; length 0 (an
        empty row) gets a bin [0,1) of its own when present."""
        out: list[dict[str, int]] = []
        if self.counts[0]:
            out.append({"lo": 0, "hi": 1, "count": int(self.counts[0])})
        top = self.max()
        lo = 1
        while lo <= top:
            hi = lo * 2
            out.append({"lo": lo, "hi": hi, "count": int(self.counts[lo:hi].sum())})
            lo = hi
        return out

    def linear_bins(self, upper: int, bins: int) -> list[dict[str, int]]:
        """`bins` equal bins over [0, upper]; the last bin includes `upper` itself (a full
        row lands there rather than in a bin of its own)."""
        edges = [round(upper * i / bins) for i in range(bins + 1)]
        out = []
        for i in range(bins):
            lo, hi = edges[i], edges[i + 1]
            stop = hi + 1 if i == bins - 1 else hi
            out.append({"lo": lo, "hi": hi, "count": int(self.counts[lo:stop].sum())})
        return out

    def summary(self) -> dict[str, Any]:
        n = self.n
        return {
            "count": n,
            "total": self.total,
            "mean": self.total / n if n else 0.0,
            "min": self.min(),
            "p10": self.quantile(0.10),
            "p50": self.quantile(0.50),
            "p90": self.quantile(0.90),
            "p99": self.quantile(0.99),
            "max": self.max(),
        }
