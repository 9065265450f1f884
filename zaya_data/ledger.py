"""The rejection ledger: every record that does not reach the output, by stage and reason.

Ledgers are plain data (mergeable, JSON-serialisable) so each Ray task keeps its own and
the driver adds them up; nothing is shared or mutated across processes. The invariant the
audit checks is `input == written + rejected` for every source.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# How many example records each (stage, reason, source) keeps: enough to find and fix
# the problem, bounded so a corpus with a million bad lines keeps a small ledger.
MAX_EXAMPLES = 20


class StrictModeError(ValueError):
    """Raised instead of a ledger entry when the build runs with --strict."""


@dataclass
class Rejection:
    stage: str
    reason: str
    source: str
    file: str | None = None
    location: str | None = None  # "line 12" / "row 7"
    record_id: str | None = None
    detail: str | None = None  # e.g. the field name and what was wrong

    def describe(self) -> str:
        where = ":".join(p for p in (self.file, self.location) if p)
        parts = [f"{self.stage}/{self.reason}", f"source {self.source!r}"]
        if where:
            parts.append(where)
        if self.record_id:
            parts.append(f"record {self.record_id}")
        if self.detail:
            parts.append(self.detail)
        return ", ".join(parts)


@dataclass
class Ledger:
    """Counts of rejected records keyed by (stage, reason, source), with examples."""

    strict: bool = False
    counts: dict[tuple[str, str, str], int] = field(default_factory=dict)
    examples: dict[tuple[str, str, str], list[dict[str, Any]]] = field(default_factory=dict)
    # Every rejection, when the caller asks for it (`Ledger(log=[])`): the build's workers
    # turn it into the per-record fate index that `zaya-data explain` reads. Never part of
    # `to_dict`, so ledger.json and job records stay bounded by MAX_EXAMPLES.
    log: list[Rejection] | None = None

    def reject(
        self,
        stage: str,
        reason: str,
        source: str,
        *,
        file: str | None = None,
        location: str | None = None,
        record_id: str | None = None,
        detail: str | None = None,
        count: int = 1,
    ) -> None:
        rej = Rejection(stage, reason, source, file, location, record_id, detail)
        if self.strict:
            raise StrictModeError(rej.describe())
        key = (stage, reason, source)
        self.counts[key] = self.counts.get(key, 0) + count
        if self.log is not None and count == 1:  # bulk counts (mix/not_selected) name no record
            self.log.append(rej)
        ex = self.examples.setdefault(key, [])
        if len(ex) < MAX_EXAMPLES:
            ex.append({k: v for k, v in rej.__dict__.items() if v is not None})

    def merge(self, other: "Ledger") -> "Ledger":
        for key, n in other.counts.items():
            self.counts[key] = self.counts.get(key, 0) + n
        for key, ex in other.examples.items():
            mine = self.examples.setdefault(key, [])
            mine.extend(ex[: max(0, MAX_EXAMPLES - len(mine))])
        if self.log is not None and other.log is not None:
            self.log.extend(other.log)
        return self

    def total(self, source: str | None = None, stage: str | None = None) -> int:
        return sum(
            n
            for (st, _r, src), n in self.counts.items()
            if (source is None or src == source) and (stage is None or st == stage)
        )

    def to_dict(self) -> dict[str, Any]:
        rows = []
        for key in sorted(self.counts):
            stage, reason, source = key
            rows.append(
                {
                    "stage": stage,
                    "reason": reason,
                    "source": source,
                    "count": self.counts[key],
                    "examples": self.examples.get(key, []),
                }
            )
        return {"rejections": rows, "total": self.total()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Ledger":
        led = cls()
        for row in data.get("rejections", []):
            key = (row["stage"], row["reason"], row["source"])
            led.counts[key] = int(row["count"])
            led.examples[key] = list(row.get("examples", []))
        return led

    def write(self, path: str | Path) -> None:
        from zaya_data.io import atomic_write_text

        atomic_write_text(path, json.dumps(self.to_dict(), indent=1, sort_keys=True))

    @classmethod
    def read(cls, path: str | Path) -> "Ledger":
        return cls.from_dict(json.loads(Path(path).read_text()))
