"""Wall-clock laps of a job's steps, by step name (a build's phases, the dedup map's parts)."""

from __future__ import annotations

import time


class Clock:
    """Wall seconds between marks, added to `laps[name]` for the step that just ended (a
    name marked twice sums). `laps`: a caller's dict to add into, or a new one."""

    def __init__(self, laps: dict[str, float] | None = None) -> None:
        self.laps: dict[str, float] = {} if laps is None else laps
        self._t = time.perf_counter()

    def mark(self, name: str) -> None:
        now = time.perf_counter()
        self.laps[name] = self.laps.get(name, 0.0) + now - self._t
        self._t = now
