"""A finding: one disagreement between what a phase's files say and what they hold."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class Finding:
    phase: str
    where: str  # a shard file name, "manifest.json", "ledger.json", or "source NAME"
    message: str

    def __str__(self) -> str:
        return f"{self.phase}: {self.where}: {self.message}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class AuditInputError(ValueError):
    """The audit cannot start: no such folder, no manifests, an unreadable manifest."""
