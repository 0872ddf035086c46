"""Annotation for `trace-halfclose watch`: a watch's events, per connection. Pure.

The kernel side (the HC_WATCH section of bpf/halfclose.bpf.c) reports, for the
sockets that passed the filters, the same events as the reproduction, plus
the write-like calls (WATCH_CALL_ENTER/EXIT: fd, size, result), the socket's
addresses when it joins the watch (WATCH_ADDR) and its destruction
(WATCH_DESTROY). Here they are grouped by socket -- events that fire in
softirq carry the socket, not a meaningful task -- and each connection is
annotated by tracer/annotate.py's annotate(), on a Recording made for it: its
write-like calls as the writes, its socket as the client's.

A connection begins where its socket joins the watch (a WATCH_ADDR event; a
socket leaves the watch when destroyed or when a new connection starts at its
address) and ends at its destruction (WATCH_DESTROY).
"""
from __future__ import annotations

import ipaddress
import json
import re
import signal
import struct
from dataclasses import dataclass, field, replace
from typing import IO, Callable, Iterable

from tracer.process.annotate import KernelNote, MarkNote, Timeline, WriteNote, annotate
from tracer.record.event import Event, Kind
from tracer.kernel.names import errno_name
from tracer.record.recording import Recording, UserMark, WriteResult

# HC_CALL_* of bpf/halfclose.bpf.c (old_state of WATCH_CALL_*); tests/unit/test_watch_annotate.py checks the mirror.
CALLS = {1: "write", 2: "sendto", 3: "sendmsg", 4: "writev"}
# A tcp_sendmsg_locked call that none of the traced calls led to (sendmmsg, sendfile, io_uring, the kernel).
UNTRACED_CALL = "tcp_sendmsg_locked"
# include/linux/socket.h (v6.1): AF_INET 2, AF_INET6 10.
FAMILIES = {2: "AF_INET", 10: "AF_INET6"}
# Events that identify a connection or a call; they do not go into annotate()'s recording as such.
WATCH_KINDS = {Kind.WATCH_ADDR, Kind.WATCH_DESTROY, Kind.WATCH_CALL_ENTER, Kind.WATCH_CALL_EXIT}
GRACE_NS = 200_000_000  # a connection is shown this long after its socket's destruction (late events)
START_MARK = "watch started (loading the probes)"


# --- the recording -------------------------------------------------------------


@dataclass
class WatchRecording:
    """What a watch saw: rec holds the kernel facts, the marks and every event."""

    rec: Recording
    filter: dict = field(default_factory=dict)  # pids, comm, port, command
    t0_ns: int = 0  # the watch began (before the probes were loaded)
    command_pid: int | None = None
    command_status: int | None = None  # exit status; negative: killed by that signal
    stop_reason: str = ""
    stop_ns: int = 0

    def header(self) -> dict:
        return {"record": "watch", "schema": 1, "filter": self.filter, "t0_ns": self.t0_ns,
                "command_pid": self.command_pid, "command_status": self.command_status,
                "stop_reason": self.stop_reason, "stop_ns": self.stop_ns}

    def dump(self, out: IO[str]) -> None:
        """A "watch" line, then the lines of a Recording: `trace-halfclose replay` refuses
        it (unknown record type), `trace-halfclose watch --replay` reads it."""
        out.write(json.dumps(self.header()) + "\n")
        self.rec.dump(out)

    @classmethod
    def load_lines(cls, lines: Iterable[str | bytes]) -> "WatchRecording":
        it = iter(lines)
        first = next(it, b"")
        try:
            head = json.loads(first)
            if not isinstance(head, dict) or head.get("record") != "watch":
                raise ValueError
        except ValueError:
            raise ValueError("line 1: not a watch recording (`trace-halfclose watch --record FILE` writes one)") \
                from None
        rec = Recording.load_lines(it)
        keys = ("filter", "t0_ns", "command_pid", "command_status", "stop_reason", "stop_ns")
        return cls(rec, **{k: head[k] for k in keys if k in head})

    @classmethod
    def load(cls, path) -> "WatchRecording":
        with open(path, "rb") as f:
            return cls.load_lines(f)


def command_end(status: int) -> str:
    if status >= 0:
        return f"the command exited with status {status}"
    try:
        name = signal.Signals(-status).name
    except ValueError:
        name = f"signal {-status}"
    return f"the command was killed by {name}"


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
        parts = {e.fd: e for e in self.events if e.kind == Kind.WATCH_ADDR}
        first = parts.get(0) or parts.get(1)
        if first is None:
            return None, None, None
        family = FAMILIES.get(first.old_state, str(first.old_state))
        raw = {i: struct.pack("<Q", e.value & 0xFFFFFFFFFFFFFFFF) for i, e in parts.items()}
        if 0 in raw:
            return family, str(ipaddress.IPv4Address(raw[0][:4])), str(ipaddress.IPv4Address(raw[0][4:]))
        if all(i in raw for i in (1, 2, 3, 4)):
            return (family, str(ipaddress.IPv6Address(raw[1] + raw[2])),
                    str(ipaddress.IPv6Address(raw[3] + raw[4])))
        return family, None, None


class Grouper:
    """Events to connections, as they arrive (watch) or all at once (replay)."""

    def __init__(self) -> None:
        self.live: dict[int, Connection] = {}  # sk -> its current connection
        self.all: list[Connection] = []
        self._shown: set[int] = set()

    def add(self, events: Iterable[Event]) -> None:
        for e in sorted(events, key=lambda e: e.ts_ns):
            if not e.sk:
                continue
            c = self.live.get(e.sk)
            joins = e.kind == Kind.WATCH_ADDR and e.fd in (0, 1)
            # A new connection at this address: after the socket's destruction (only
            # returns of functions running then may follow), or a second join. The
            # join's event may come after the first event of a write it joined in
            # (a call's entry carries the call's start time).
            if c is None or (c.ended_ns is not None and not e.is_return) or (joins and c.joined):
                if c is not None and c.ended_ns is None:
                    c.ended_ns = e.ts_ns
                c = Connection(len(self.all) + 1, e.sk)
                self.live[e.sk] = c
                self.all.append(c)
            c.events.append(e)
            c.joined |= joins
            if e.kind == Kind.WATCH_DESTROY:
                c.ended_ns = e.ts_ns

    def complete(self, now_ns: int, grace_ns: int = GRACE_NS) -> list[Connection]:
        """Connections that ended more than grace_ns ago and were not handed out yet."""
        done = [c for c in self.all if c.conn not in self._shown and c.ended_ns is not None
                and now_ns - c.ended_ns > grace_ns]
        return self._hand_out(done)

    def rest(self) -> list[Connection]:
        return self._hand_out([c for c in self.all if c.conn not in self._shown])

    def _hand_out(self, conns: list[Connection]) -> list[Connection]:
        conns.sort(key=Connection.order)
        self._shown.update(c.conn for c in conns)
        return conns


def group(events: Iterable[Event]) -> list[Connection]:
    g = Grouper()
    g.add(events)
    return g.rest()


# --- the write-like calls ------------------------------------------------------------


@dataclass(frozen=True)
class Call:
    """A write-like call on the connection, as the kernel saw it."""

    index: int
    call: str  # write, sendto, sendmsg, writev, or UNTRACED_CALL
    pid: int
    tid: int
    comm: str
    fd: int | None
    size: int  # bytes asked; -1 when not known
    ret: int | None  # the kernel's return value (negative errno); None: its return was not seen
    t_start_ns: int
    t_end_ns: int | None

    @property
    def errno(self) -> str | None:
        return errno_name(-self.ret) if self.ret is not None and self.ret < 0 else None

    def result(self) -> WriteResult | None:
        if self.ret is None:
            return None
        return WriteResult(self.index, self.size, self.ret if self.ret >= 0 else -1, self.errno,
                           self.t_start_ns, self.t_end_ns)


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
    """The connection's write-like calls: WATCH_CALL_ENTER/EXIT pairs, and the
    tcp_sendmsg_locked calls outside any of them (kprobe, fentry)."""
    calls = [(CALLS.get(a.old_state, str(a.old_state)), a, b)
             for a, b in _pairs(events, Kind.WATCH_CALL_ENTER, Kind.WATCH_CALL_EXIT)]

    def inside(e: Event) -> bool:
        return any(a.tid == e.tid and a.ts_ns <= e.ts_ns and (b is None or e.ts_ns <= b.ts_ns) for _, a, b in calls)

    calls += [(UNTRACED_CALL, a, b) for a, b in _pairs(events, Kind.SENDMSG_ENTER, Kind.SENDMSG_RETURN)
              if not inside(a)]
    calls.sort(key=lambda c: c[1].ts_ns)
    return [Call(i, name, a.pid, a.tid, a.comm, None if name == UNTRACED_CALL else a.fd, a.value,
                 b.value if b else None, a.ts_ns, b.ts_ns if b else None)
            for i, (name, a, b) in enumerate(calls, 1)]


# --- annotation --------------------------------------------------------------------


@dataclass
class ConnTimeline:
    """One connection, annotated: its identity, its write-like calls and annotate()'s timeline."""

    conn: Connection
    family: str | None
    laddr: str | None
    lport: int
    raddr: str | None
    rport: int
    calls: list[Call]
    timeline: Timeline
    peer: int | None = None  # the connection at the other end, when it is watched too

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

    def call_of(self, w: WriteNote) -> Call:
        return self.calls[w.index - 1]

    @property
    def items(self) -> list:
        """The timeline without the watch's start mark (shown once for all connections)."""
        return [i for i in self.timeline.items if not isinstance(i, MarkNote)]


def _path_events(conn: Connection, backend: str) -> list[Event]:
    """What annotate() reads: the connection's events, with the tracepoint backend's
    write-like calls as the reproduction's write(2) tracepoint events they mirror (the
    socket at the call's entry and after it)."""
    out = []
    for e in conn.events:
        if backend == "tracepoint" and e.kind == Kind.WATCH_CALL_ENTER:
            out.append(replace(e, kind=Kind.WRITE_ENTER))
        elif backend == "tracepoint" and e.kind == Kind.WATCH_CALL_EXIT:
            out.append(replace(e, kind=Kind.WRITE_EXIT))
        elif e.kind not in WATCH_KINDS:
            out.append(e)
    # annotate() takes the write paths of one process (the reproduction's client):
    # here every path event is this socket's, whichever process wrote.
    pids = {e.pid for e in out if e.kind in (Kind.SENDMSG_ENTER, Kind.WRITE_ENTER)}
    if len(pids) > 1:
        first = next(e.pid for e in out if e.kind in (Kind.SENDMSG_ENTER, Kind.WRITE_ENTER))
        path = {Kind.SENDMSG_ENTER, Kind.SENDMSG_RETURN, Kind.WAIT_CONNECT_ENTER, Kind.WAIT_CONNECT_RETURN,
                Kind.STREAM_ERROR_ENTER, Kind.STREAM_ERROR_RETURN, Kind.WRITE_ENTER, Kind.WRITE_EXIT,
                Kind.SEND_LENGTH}
        out = [replace(e, pid=first) if e.kind in path else e for e in out]
    return out


def _named_for(call: str) -> Callable[[str], str]:
    """annotate() words a syscall-level step as write(2)'s: name the real call."""
    if call == "write":
        return lambda s: s
    said = f"{call}(2)" if call in CALLS.values() else "its caller"

    def fix(s: str) -> str:
        return (s.replace("write(2)", said).replace("sys_enter_write", f"sys_enter_{call}")
                .replace("sys_exit_write", f"sys_exit_{call}"))
    return fix


def _rename(tl: Timeline, calls: list[Call]) -> None:
    """Each write note, and each placement `during write N`, named for its call."""
    def fix_write(w: WriteNote) -> WriteNote:
        fix = _named_for(calls[w.index - 1].call)
        return replace(w, observed_at=fix(w.observed_at) if w.observed_at else None, decision=fix(w.decision),
                       path=tuple(replace(s, func=fix(s.func), detail=fix(s.detail)) for s in w.path))

    def fix_text(text: str) -> str:
        m = re.search(r"write (\d+)", text)
        return _named_for(calls[int(m.group(1)) - 1].call)(text) if m and int(m.group(1)) <= len(calls) else text

    tl.writes = [fix_write(w) for w in tl.writes]
    by_index = {w.index: w for w in tl.writes}
    tl.items = [by_index[i.index] if isinstance(i, WriteNote) and i.op == "write" else
                replace(i, where=fix_text(i.where)) if isinstance(i, KernelNote) and i.where else i
                for i in tl.items]
    tl.findings = [fix_text(f) for f in tl.findings]


def _destroy_note(conn: Connection, t0: int, st) -> list[KernelNote]:
    return [KernelNote(e.ts_ns - t0, "client", "tcp_destroy_sock",
                       f"socket destroyed in state {st(e.state)}: it leaves the watch", "", e, {"state": st(e.state)})
            for e in conn.events if e.kind == Kind.WATCH_DESTROY]


def annotate_connection(wrec: WatchRecording, conn: Connection, peer: int | None = None) -> ConnTimeline:
    base = wrec.rec
    conn.events.sort(key=lambda e: e.ts_ns)  # batches from several CPUs may interleave
    calls = calls_of(conn.events)
    lport, rport = conn.ports()
    family, laddr, raddr = conn.addresses()
    results = [c.result() for c in calls]
    rec = replace(
        base,
        client_port=lport,
        server_port=rport,
        client_pid=calls[0].pid if calls else 0,
        marks=[UserMark(START_MARK, wrec.t0_ns)],
        writes=[r for r in results if r is not None],
        reads=[],
        events=_path_events(conn, base.backend),
    )
    tl = annotate(rec)
    if calls:
        _rename(tl, calls)
    else:
        tl.findings = []  # the findings tell a writer's story
    st = lambda s: base.state_names.get(s, f"state {s}")  # noqa: E731
    tl.items = sorted(tl.items + _destroy_note(conn, tl.t0_ns, st), key=lambda x: x.t_ns)
    return ConnTimeline(conn, family, laddr, lport, raddr, rport, calls, tl, peer)


def peer_of(conn: Connection, others: Iterable[Connection]) -> int | None:
    """The watched connection at the other end (on loopback both ends can be watched)."""
    (lport, rport), (_, laddr, raddr) = conn.ports(), conn.addresses()
    if not (lport and rport and laddr):
        return None
    for o in others:
        if o is not conn and o.ports() == (rport, lport) and o.addresses()[1:] == (raddr, laddr):
            return o.conn
    return None


def connections(wrec: WatchRecording) -> list[ConnTimeline]:
    """Every connection of a recording, annotated, in the order a live watch shows them."""
    conns = group(wrec.rec.events)
    return [annotate_connection(wrec, c, peer_of(c, conns)) for c in conns]


def show(wrec: WatchRecording, sink) -> list[ConnTimeline]:
    """A recorded watch, through the same sink (tracer.watch.Sink) as a live one."""
    sink.start(wrec)
    cts = connections(wrec)
    for ct in cts:
        sink.connection(ct)
    sink.end(wrec, cts)
    return cts
