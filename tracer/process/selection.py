"""Which connections a watch shows, and what it counts. Pure.

Every connection handed out by the stream (tracer/process/stream.py) is
classified and counted; the incidents -- or all of them, with --all or in JSON
without --incidents-only -- are annotated and go to the sink; the rest only
count. The same path serves a live watch and a recording shown again.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

from tracer.record.event import to_raw
from tracer.record.recording import WatchRecording
from tracer.process.connections import ConnTimeline, annotate_connection
from tracer.process.stream import End, Open, Stream, Tally, rows_of

SUMMARY_ROWS = 1_000  # rows kept for the closing summary; more are counted
CHECK_EVERY = 16  # connections handed out between two looks at the clock and the backlog


@dataclass(frozen=True)
class Row:
    """One shown connection in the closing summary."""

    conn: int
    laddr: str | None
    lport: int
    raddr: str | None
    rport: int
    rules: tuple
    writes: tuple  # (index, call, size, ret, errno) per write-like call


class Selection:
    """Hands out connections: classified, counted, the chosen ones annotated and shown."""

    def __init__(self, wrec: WatchRecording, stream: Stream, sink, show_all: bool,
                 behind: Callable[[bool], bool] = lambda shed: False):
        self.wrec, self.stream, self.sink, self.show_all = wrec, stream, sink, show_all
        self.tally = Tally()
        self.rows: list[Row] = []
        self.rows_left_off = 0
        self.shed = False  # the watch is behind: healthy connections are counted, not annotated
        self.behind = behind  # behind(shedding now) -> whether to shed (asked every CHECK_EVERY)

    def hand_out(self, items: Sequence[tuple[Open, End]], stop: Callable[[], bool] = lambda: False) -> bool:
        """Each item in turn; when stop() says so, the rest are only counted (left unshown).
        Returns whether all were handed out."""
        for i, (o, end) in enumerate(items):
            if i % CHECK_EVERY == 0:
                if stop():
                    self.left_unshown(items[i:])
                    return False
                self.shed = self.behind(self.shed)
            self._one(o, end)
        return True

    def left_unshown(self, items: Sequence[tuple[Open, End]]) -> None:
        """Connections the watch had no time left to show: classified and counted only."""
        for o, end in items:
            d = self.stream.done(o, end)
            self._count(d)
            if d.incident or self.show_all:
                self.tally.unshown_at_stop += 1
                self.tally.unshown_incidents += d.incident

    def _count(self, d) -> None:
        t = self.tally
        t.connections += 1
        if d.incident:
            t.incidents += 1
            t.by_rule.update(d.rules)
        else:
            t.healthy += 1

    def _one(self, o: Open, end: End) -> None:
        d = self.stream.done(o, end)
        self._count(d)
        if not (d.incident or self.show_all):
            return
        if self.shed and not d.incident:
            self.tally.shed += 1
            return
        c = o.connection()
        lport, rport = c.ports()
        _, laddr, raddr = c.addresses()
        peer = self.stream.peer(c.conn, lport, rport, laddr, raddr)
        ct = annotate_connection(self.wrec, c, peer)
        ct.rules, ct.end = d.rules, end
        self.stream.remember(c.conn, lport, rport, laddr, raddr)
        self.tally.shown += 1
        if len(self.rows) < SUMMARY_ROWS:
            self.rows.append(Row(c.conn, laddr, lport, raddr, rport, d.rules,
                                 tuple((k.index, k.name, k.size, k.ret, k.errno) for k in ct.calls)))
        else:
            self.rows_left_off += 1
        self.sink.connection(ct)


def replay(wrec: WatchRecording, sink, show_all: bool) -> Selection:
    """A recorded watch through the live path: its events in time order into a stream,
    then every connection handed out as a live watch would at its stop."""
    stream = Stream(wrec.rec.state_names)
    sel = Selection(wrec, stream, sink, show_all)
    sink.start(wrec)
    events = sorted(wrec.rec.events, key=lambda e: e.ts_ns)
    stream.add(rows_of(to_raw(e) for e in events))
    sel.tally.events = len(events)
    sel.tally.lost = wrec.rec.lost_events
    sel.hand_out(stream.rest())
    sink.end(wrec, sel)
    return sel


def collected(wrec: WatchRecording, show_all: bool = True) -> list[ConnTimeline]:
    """Every shown connection of a recording, annotated, in the order a watch shows them (tests, ladders)."""
    got: list[ConnTimeline] = []

    class _Keep:
        def start(self, _wrec) -> None: ...
        def connection(self, ct) -> None: got.append(ct)
        def end(self, _wrec, _sel) -> None: ...

    replay(wrec, _Keep(), show_all)
    return got
