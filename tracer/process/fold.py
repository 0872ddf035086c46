"""Repeated writes folded: consecutive calls alike in call, size class, result and
path become one Fold value; the call that differs stays whole. Pure.

A real program repeats itself (curl sends a 3 MB body in 42 writes of 65,536
bytes): each shown whole is eight lines that look the same. Calls are alike
when nothing a reader looks for differs: the call (write, sendto, ...), the
size's power-of-two class, the result (all bytes, part of them, or which
errno), the socket at entry (state, sk_err, sk_shutdown) and the branch that
decided it. Only consecutive calls fold, with no kernel step between them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from tracer.process.timeline import IoNote

MIN_RUN = 2  # a run this long or longer folds


@dataclass(frozen=True)
class Fold:
    """Consecutive alike calls, shown as one line."""

    notes: tuple[IoNote, ...]

    @property
    def first(self) -> IoNote:
        return self.notes[0]

    @property
    def last(self) -> IoNote:
        return self.notes[-1]

    @property
    def t_ns(self) -> int:
        return self.first.t_ns

    @property
    def count(self) -> int:
        return len(self.notes)

    @property
    def sizes(self) -> tuple[int, int]:
        return min(n.size for n in self.notes), max(n.size for n in self.notes)

    @property
    def rets(self) -> tuple[int, int]:
        return min(n.ret for n in self.notes), max(n.ret for n in self.notes)


def size_class(size: int) -> int:
    """The power of two at or above size (0 and unknown sizes are their own class)."""
    return size if size <= 0 else 1 << (size - 1).bit_length()


def result_class(n: IoNote) -> tuple:
    if n.killed_by or n.ret is None or n.ret < 0:
        return ("failed", n.errno, n.killed_by)
    return ("all",) if n.ret == n.size else ("part", size_class(n.ret))


def alike_key(n: IoNote, name: str) -> tuple:
    return (n.op, name, size_class(n.size), result_class(n), n.state, n.sk_err, n.sk_shutdown,
            n.decision.branch, n.decision.inferred, n.observed_at)


def fold(items: Sequence, name_of=lambda n: n.call.name) -> list:
    """The timeline's items with runs of alike consecutive calls as Folds."""
    out: list = []
    run: list[IoNote] = []

    def flush() -> None:
        if len(run) >= MIN_RUN:
            out.append(Fold(tuple(run)))
        else:
            out.extend(run)
        run.clear()

    for item in items:
        if isinstance(item, IoNote) and item.ret is not None:
            if run and alike_key(run[-1], name_of(run[-1])) != alike_key(item, name_of(item)):
                flush()
            run.append(item)
        else:
            flush()
            out.append(item)
    flush()
    return out
