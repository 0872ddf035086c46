"""How long each phase of a run took, for `--timings` (the numbers behind the README's).

Phases are measured on CLOCK_MONOTONIC; the first one starts when the process
started (its start time in /proc/self/stat, on CLOCK_BOOTTIME), so Python's
start and the imports count too, as a user waiting for the tool sees them.
"""
from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass, field
from typing import Iterator


def process_age_s(stat: str = "/proc/self/stat") -> float:
    """Seconds since this process started (field 22 of /proc/self/stat, in clock ticks since boot)."""
    with open(stat) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    started = int(fields[19]) / os.sysconf("SC_CLK_TCK")  # fields[0] is field 3 (state)
    return max(time.clock_gettime(time.CLOCK_BOOTTIME) - started, 0.0)


@dataclass
class Timings:
    """Phases in order, each (name, seconds); `start` is the first: the process up to the first phase."""

    phases: list[tuple[str, float]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.phases.append(("start (python, imports)", process_age_s()))
        self._t = time.monotonic()

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Time a phase; the gap since the previous one joins this phase."""
        try:
            yield
        finally:
            now = time.monotonic()
            self.phases.append((name, now - self._t))
            self._t = now

    def until(self, name: str) -> float:
        """Seconds from the process's start to the end of phase `name`."""
        total = 0.0
        for n, s in self.phases:
            total += s
            if n == name:
                return total
        raise KeyError(name)

    @property
    def total(self) -> float:
        return sum(s for _, s in self.phases)
