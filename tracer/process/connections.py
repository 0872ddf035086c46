"""Watch mode's connections: a watch's events grouped by socket, each one
annotated as one connection (tracer/process/annotate.py). Pure.

The kernel side (bpf/watch/) reports, for the sockets that passed the
filters, the same events as the reproduction, plus the write-like calls
(WATCH_CALL_ENTER/EXIT: fd, size, result), the socket's addresses when it
joins the watch (WATCH_ADDR) and its destruction (WATCH_DESTROY). Here they
are grouped by socket -- events that fire in softirq carry the socket, not a
meaningful task -- and each connection's calls, with the kernel's results,
are its writes.

A connection begins where its socket joins the watch (a WATCH_ADDR event; a
socket leaves the watch when destroyed or when a new connection starts at its
address) and ends at its destruction (WATCH_DESTROY).
"""
from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass, field
from typing import Iterable

from tracer.kernel.names import errno_name
from tracer.record.event import Event, Kind
from tracer.record.recording import UserMark, WatchRecording
from tracer.process.annotate import timeline_of
from tracer.process.timeline import UNTRACED_CALL, Call, IoNote, MarkNote, Subject, Timeline

# include/linux/socket.h (v6.1): AF_INET 2, AF_INET6 10.
FAMILIES = {2: "AF_INET", 10: "AF_INET6"}
GRACE_NS = 200_000_000  # a connection is shown this long after its socket's destruction (late events)
START_MARK = "watch started (loading the probes)"


# --- connections -----------------------------------------------------------------


@dataclass
class Connection:
    """One socket's life in the watch, and its events in time order."""

    conn: int  # 1, 2, ... in order of appearance
    sk: int
    events: list[Event] = field(default_factory=list)
    ended_ns: int | None = None  # destroyed, or a new connection started at its address
    joined: bool = False  # its WATCH_ADDR was seen

    @property
    def first_ns(self) -> int:
        return self.events[0].ts_ns

    @property
    def destroyed(self) -> bool:
        return any(e.kind == Kind.WATCH_DESTROY for e in self.events)

    def order(self) -> tuple:
        """Ended connections by their end, then the others by their start: the same
        order whether they were shown while watching or all at once from a recording."""
        return (0, self.ended_ns, self.conn) if self.ended_ns is not None else (1, self.first_ns, self.conn)

    def ports(self) -> tuple[int, int]:
        lport = next((e.sport for e in self.events if e.sport), 0)
        rport = next((e.dport for e in self.events if e.dport), 0)
        return lport, rport

    def addresses(self) -> tuple[str | None, str | None, str | None]:
        """(family, local, remote) from the WATCH_ADDR events."""
        parts = {e.addr_part: e for e in self.events if e.kind == Kind.WATCH_ADDR}
        first = parts.get(0) or parts.get(1)
        if first is None:
            return None, None, None
        family = FAMILIES.get(first.family, str(first.family))
        raw = {i: struct.pack("<Q", e.value & 0xFFFFFFFFFFFFFFFF) for i, e in parts.items()}
        if 0 in raw:
            return family, str(ipaddress.IPv4Address(raw[0][:4])), str(ipaddress.IPv4Address(raw[0][4:]))
        if all(i in raw for i in (1, 2, 3, 4)):
            return (family, str(ipaddress.IPv6Address(raw[1] + raw[2])),
                    str(ipaddress.IPv6Address(raw[3] + raw[4])))
        return family, None, None


def group(events: Iterable[Event]) -> list[Connection]:
    """Events to connections, all at once, the way a watch hands them out at its stop
    (tracer/process/stream.py is the one grouping, live and replayed)."""
    from tracer.process.stream import Stream, rows_of
    from tracer.record.event import to_raw

    s = Stream({})
    s.add(rows_of(to_raw(e) for e in events))
    return [o.connection() for o, _ in s.rest()]


# --- the write-like calls ------------------------------------------------------------


def _pairs(events: list[Event], enter: Kind, exit_: Kind) -> list[tuple[Event, Event | None]]:
    """Entry events with the exit that followed on the same thread (None: not seen)."""
    out, open_by_tid = [], {}
    for e in events:
        if e.kind == enter:
            open_by_tid[e.tid] = len(out)
            out.append((e, None))
        elif e.kind == exit_ and e.tid in open_by_tid:
            i = open_by_tid.pop(e.tid)
            out[i] = (out[i][0], e)
    return out


def calls_of(events: list[Event]) -> list[Call]:
    """The connection's write-like calls, with the kernel's results: WATCH_CALL_ENTER/EXIT
    pairs, and the tcp_sendmsg_locked calls outside any of them (kprobe, fentry)."""
    calls = [(a.call, a, b) for a, b in _pairs(events, Kind.WATCH_CALL_ENTER, Kind.WATCH_CALL_EXIT)]

    def inside(e: Event) -> bool:
        return any(a.tid == e.tid and a.ts_ns <= e.ts_ns and (b is None or e.ts_ns <= b.ts_ns) for _, a, b in calls)

    calls += [(UNTRACED_CALL, a, b) for a, b in _pairs(events, Kind.SENDMSG_ENTER, Kind.SENDMSG_RETURN)
              if not inside(a)]
    calls.sort(key=lambda c: c[1].ts_ns)
    out = []
    for i, (name, a, b) in enumerate(calls, 1):
        ret = b.value if b else None  # the kernel's: a negative errno on failure
        out.append(Call(i, "write", name, a.value, None if ret is None else max(ret, -1),
                        errno_name(-ret) if ret is not None and ret < 0 else None, a.ts_ns,
                        b.ts_ns if b else None, None, a.pid, a.tid, a.comm,
                        None if name == UNTRACED_CALL else a.fd))
    return out


# --- annotation --------------------------------------------------------------------


@dataclass
class ConnTimeline:
    """One connection, annotated: its identity, its write-like calls and its timeline."""

    conn: Connection
    family: str | None
    laddr: str | None
    lport: int
    raddr: str | None
    rport: int
    calls: list[Call]
    timeline: Timeline
    peer: int | None = None  # the connection at the other end, when it is watched too
    rules: tuple = ()  # the incident rules it matched (tracer/process/stream.py Rule); () healthy
    end: object = None  # why it was handed out (stream.End); None: a recording shown whole

    @property
    def writers(self) -> list[tuple[int, str, int | None]]:
        """(pid, comm, fd) of the tasks that wrote on it, in order of their first call."""
        out = []
        for c in self.calls:
            if (c.pid, c.comm, c.fd) not in out:
                out.append((c.pid, c.comm, c.fd))
        return out

    @property
    def connected_by(self) -> tuple[int, str] | None:
        """(pid, comm) of the task whose connect(2) moved the socket to SYN_SENT: that
        runs in the connecting task (tcp_v4_connect, net/ipv4/tcp_ipv4.c)."""
        syn_sent = next((k for k, v in self.timeline.recording.state_names.items() if v == "SYN_SENT"), None)
        e = next((e for e in self.conn.events if e.kind == Kind.SET_STATE and e.state == syn_sent), None)
        return (e.pid, e.comm) if e else None

    def call_of(self, w: IoNote) -> Call:
        return self.calls[w.index - 1]

    @property
    def items(self) -> list:
        """The timeline without the watch's start mark (shown once for all connections)."""
        return [i for i in self.timeline.items if not isinstance(i, MarkNote)]


def annotate_connection(wrec: WatchRecording, conn: Connection, peer: int | None = None) -> ConnTimeline:
    """One watched connection: its socket is the client's, its calls are the writes."""
    conn.events.sort(key=lambda e: e.ts_ns)  # batches from several CPUs may interleave
    calls = calls_of(conn.events)
    lport, rport = conn.ports()
    family, laddr, raddr = conn.addresses()
    tl = timeline_of(wrec.rec, Subject(lport, rport), calls, conn.events, [UserMark(START_MARK, wrec.t0_ns)])
    return ConnTimeline(conn, family, laddr, lport, raddr, rport, calls, tl, peer)


def connections(wrec: WatchRecording, show_all: bool = True) -> list[ConnTimeline]:
    """The connections of a recording a watch shows (all, or the incidents), annotated, in its order."""
    from tracer.process.selection import collected

    return collected(wrec, show_all)
