"""Annotation: one connection's events become a timeline of calls and kernel steps. Pure.

One connection at a time, whatever the mode: the reproduction is one
connection whose roles are known (its client and server ports, the client's
pid), a watched connection is one socket with the calls its writers made
(tracer/process/connections.py). Every value in the output is taken from an
event; where an expected event is missing the decision says so instead of
filling in what should have happened (tracer/process/decide.py). Nothing here
is worded for people: tracer/display/ does that.
"""
from __future__ import annotations

from typing import Sequence

from tracer.kernel.names import TCP_SYN, state_name
from tracer.record.event import Event, Kind
from tracer.record.recording import Recording, UserMark, WriteResult
from tracer.process import decide, describe
from tracer.process.findings import findings
from tracer.process.timeline import (Branch, Call, Decision, Hook, IoNote, KernelNote, MarkNote, PathStep,
                                     Placement, QueryNote, Subject, Timeline)

FUNC_PATH = {
    Kind.SENDMSG_ENTER,
    Kind.SENDMSG_RETURN,
    Kind.WAIT_CONNECT_ENTER,
    Kind.WAIT_CONNECT_RETURN,
    Kind.STREAM_ERROR_ENTER,
    Kind.STREAM_ERROR_RETURN,
}
SYSCALL_PATH = {Kind.WRITE_ENTER, Kind.SEND_LENGTH, Kind.WRITE_EXIT}
# With tracepoints, a watched call's own events are its syscall's entry and exit.
WATCH_CALL_PATH = {Kind.WATCH_CALL_ENTER, Kind.WATCH_CALL_EXIT}
SYSCALL_ENTER = (Kind.WRITE_ENTER, Kind.WATCH_CALL_ENTER)
SYSCALL_EXIT = (Kind.WRITE_EXIT, Kind.WATCH_CALL_EXIT)
READ_PATH = {Kind.RECVMSG_ENTER, Kind.RECVMSG_RETURN, Kind.READ_ENTER, Kind.READ_EXIT}
QUERY_PATH = {Kind.GETSOCKOPT_ENTER}  # told with the SO_ERROR step it belongs to (QueryNote)
RETURNS_SHOWN_WITH_ENTRY = {Kind.TCP_FIN_RETURN, Kind.TCP_DONE_RETURN}
# Events that say which socket and which call; the timeline tells their content otherwise.
IDENTITY = {Kind.WATCH_ADDR, Kind.WATCH_CALL_ENTER, Kind.WATCH_CALL_EXIT}
# Events that are no step of the connection's story: no placement relative to the writes.
UNPLACED = {Kind.WATCH_DESTROY}


class _Sides:
    """Which socket is whose: the subject's ports name the client and the server."""

    def __init__(self, subject: Subject, events: Sequence[Event]):
        self.subject = subject
        # A socket keeps its address but loses its port once closed (inet_put_port
        # zeroes inet_num): learn each address's side while it still has ports.
        # An accepted socket's first event (LISTEN → SYN_RECV) still has the listener's
        # ports: inet_csk_clone_lock sets the state before it copies inet_dport from the
        # request (net/ipv4/inet_connection_sock.c, 6.1.192:1195, 6.12.117:1264). A
        # connection's own ports win over that.
        self.sk_side: dict[int, str] = {}
        for e in events:
            side, known = self._by_ports(e), self.sk_side.get(e.sk)
            if e.sk and side != "socket" and (known is None or (known == "listener" and side != "listener")):
                self.sk_side[e.sk] = side

    def _by_ports(self, e: Event) -> str:
        s = self.subject
        if e.sport == s.client_port and e.dport == s.server_port:
            return "client"
        if e.sport == s.server_port and e.dport == s.client_port:
            return "server"
        if e.sport == s.server_port and e.dport == 0:
            return "listener"
        return "socket"

    def of(self, e: Event) -> str:
        return self.sk_side.get(e.sk, self._by_ports(e)) if e.sk else self._by_ports(e)


# --- calls -------------------------------------------------------------------


def _io_paths(events: Sequence[Event], writer_pid: int | None, kinds: set, opens: set,
              closes: set) -> list[list[Event]]:
    """The events of one kind of call, one list per call: from an opening event (an
    entry) to its closing one (the return), per thread; of the writer's pid only,
    when the subject names one."""
    paths: list[list[Event]] = []
    open_by_tid: dict[int, list[Event]] = {}
    for e in events:
        if (writer_pid is not None and e.pid != writer_pid) or e.kind not in kinds:
            continue
        if e.kind in opens:
            open_by_tid[e.tid] = [e]
            paths.append(open_by_tid[e.tid])
        elif e.tid in open_by_tid:
            open_by_tid[e.tid].append(e)
            if e.kind in closes:
                del open_by_tid[e.tid]
    return paths


def _write_paths(events: Sequence[Event], writer_pid: int | None, backend: str) -> list[list[Event]]:
    """Per tcp_sendmsg_locked call (kprobe, fentry) or per write-like syscall (tracepoints)."""
    syscall = SYSCALL_PATH | (WATCH_CALL_PATH if backend == "tracepoint" else set())
    return _io_paths(events, writer_pid, FUNC_PATH | syscall, {Kind.SENDMSG_ENTER, *SYSCALL_ENTER},
                     {Kind.SENDMSG_RETURN, *SYSCALL_EXIT})


def _read_paths(events: Sequence[Event], writer_pid: int | None) -> list[list[Event]]:
    return _io_paths(events, writer_pid, READ_PATH, {Kind.RECVMSG_ENTER, Kind.READ_ENTER},
                     {Kind.RECVMSG_RETURN, Kind.READ_EXIT})


def _match_paths(calls: Sequence[Call], paths: list[list[Event]]) -> dict[int, list[Event]]:
    """Each call gets the path that started inside it (on its thread, when known)."""
    out: dict[int, list[Event]] = {}
    for c in calls:
        for p in paths:
            end = c.t_end_ns if c.t_end_ns is not None else p[0].ts_ns
            if c.t_start_ns <= p[0].ts_ns <= end and (c.tid is None or p[0].tid == c.tid):
                out[c.index] = p
                break
    return out


def _sock_values(st, e: Event) -> dict:
    return {"state": st(e.state), "sk_err": e.sk_err, "sk_shutdown": e.sk_shutdown}


def _function_steps(st, path: list[Event]) -> list[PathStep]:
    first = decide.first
    steps = []
    enter, ret = first(path, Kind.SENDMSG_ENTER), first(path, Kind.SENDMSG_RETURN)
    wc_in, wc_out = first(path, Kind.WAIT_CONNECT_ENTER), first(path, Kind.WAIT_CONNECT_RETURN)
    se_in, se_out = first(path, Kind.STREAM_ERROR_ENTER), first(path, Kind.STREAM_ERROR_RETURN)
    if enter:
        steps.append(PathStep("sendmsg", "tcp_sendmsg_locked", ret.value if ret else None,
                              {**_sock_values(st, enter), "size": enter.value}, ret is not None))
    if wc_in:
        steps.append(PathStep("wait_connect", "sk_stream_wait_connect", wc_out.value if wc_out else None,
                              {"state": st(wc_in.state), "sk_err": wc_in.sk_err,
                               **({"sk_err_after": wc_out.sk_err} if wc_out else {})}, wc_out is not None))
    if se_in:
        steps.append(PathStep("stream_error", "sk_stream_error", se_out.value if se_out else None,
                              {"err": se_in.value, "sk_err": se_in.sk_err}, se_out is not None,
                              se_out.sk_err if se_out else None))
    return steps


def _syscall_steps(st, path: list[Event], call: str) -> list[PathStep]:
    first = decide.first
    steps = []
    enter, sent, exit_ = first(path, *SYSCALL_ENTER), first(path, Kind.SEND_LENGTH), first(path, *SYSCALL_EXIT)
    if enter:
        steps.append(PathStep("syscall_enter", f"sys_enter_{call}", None, {**_sock_values(st, enter), "fd": enter.fd}))
    if sent:
        steps.append(PathStep("send_length", "sock_send_length", sent.value,
                              {"state_after": st(sent.state), "sk_err_after": sent.sk_err}))
    if exit_:
        steps.append(PathStep("syscall_exit", f"sys_exit_{call}", exit_.value,
                              {"state_after": st(exit_.state), "sk_err_after": exit_.sk_err,
                               "sk_shutdown_after": exit_.sk_shutdown}))
    return steps


def _write_note(rec: Recording, st, t0: int, c: Call, path: list[Event]) -> IoNote:
    enter = decide.first(path, Kind.SENDMSG_ENTER, *SYSCALL_ENTER)
    if enter is None:
        steps, decision, at = [], Decision(Branch.NO_EVENTS, False), None
    elif enter.kind == Kind.SENDMSG_ENTER:
        steps = _function_steps(st, path)
        decision = decide.function_write(path, st, "sk_stream_wait_connect" not in rec.missing)
        at = Hook("function", "tcp_sendmsg_locked")
    else:
        after = decide.first(path, *SYSCALL_EXIT) or decide.first(path, Kind.SEND_LENGTH)
        steps, at = _syscall_steps(st, path, c.name), Hook("syscall", c.name)
        decision = decide.syscall_write(enter, after, c.ret, st)
    return IoNote(c, c.t_start_ns - t0, at, st(enter.state) if enter else None, enter.sk_err if enter else None,
                  enter.sk_shutdown if enter else None, tuple(steps), decision, c.t_end_ns - c.t_start_ns)


def _read_note(st, t0: int, c: Call, path: list[Event]) -> IoNote:
    enter = decide.first(path, Kind.RECVMSG_ENTER, Kind.READ_ENTER)
    ret = decide.first(path, Kind.RECVMSG_RETURN, Kind.READ_EXIT)
    steps, decision, at = [], Decision(Branch.NO_EVENTS, False), None
    if enter:
        function = enter.kind == Kind.RECVMSG_ENTER
        at = Hook("function", "tcp_recvmsg") if function else Hook("syscall", "read")
        steps.append(PathStep("read_entry", enter.func, ret.value if ret else None, _sock_values(st, enter)))
        decision = decide.read(enter, ret)
    return IoNote(c, c.t_start_ns - t0, at, st(enter.state) if enter else None, enter.sk_err if enter else None,
                  enter.sk_shutdown if enter else None, tuple(steps), decision, c.t_end_ns - c.t_start_ns)


# --- kernel steps --------------------------------------------------------------


def _pair_returns(events: Sequence[Event]) -> dict[int, Event]:
    """For tcp_fin and tcp_done entries (by list index): their return event."""
    ret_of = {Kind.TCP_FIN: Kind.TCP_FIN_RETURN, Kind.TCP_DONE: Kind.TCP_DONE_RETURN}
    pairs: dict[int, Event] = {}
    for i, e in enumerate(events):
        want = ret_of.get(e.kind)
        if want is None:
            continue
        for r in events[i + 1:]:
            if r.kind == want and r.sk == e.sk and r.tid == e.tid:
                pairs[i] = r
                break
    return pairs


def _where(writes: Sequence[Call], paths: dict[int, list[Event]], e: Event) -> Placement | None:
    """Place a kernel event relative to the writes (it matters for the RST)."""
    for w in writes:
        if w.t_start_ns <= e.ts_ns <= w.t_end_ns:
            ret = decide.first(paths.get(w.index, []), Kind.SENDMSG_RETURN)
            if ret and e.ts_ns > ret.ts_ns:
                return Placement(w.index, "after_return", e.ts_ns - ret.ts_ns, ret.value)
            return Placement(w.index, "in_syscall")
        if e.ts_ns < w.t_start_ns:
            return None
        nxt = next((x for x in writes if x.index == w.index + 1), None)
        if nxt is None or e.ts_ns < nxt.t_start_ns:
            return Placement(w.index, "after", e.ts_ns - w.t_end_ns)
    return None


def _kernel_notes(events: Sequence[Event], writes: Sequence[Call], paths: dict[int, list[Event]], st, sides: _Sides,
                  t0: int, teardown_ns: int) -> list[KernelNote]:
    pairs = _pair_returns(events)
    windows = [(e.sk, e.ts_ns, pairs[i].ts_ns) for i, e in enumerate(events) if i in pairs]
    in_paths = {id(e) for p in paths.values() for e in p}
    isn = {e.sport: e.seq for e in events if e.kind == Kind.PACKET and e.tcp_flags & TCP_SYN}
    skipped = FUNC_PATH | SYSCALL_PATH | READ_PATH | QUERY_PATH | RETURNS_SHOWN_WITH_ENTRY | IDENTITY
    notes = []
    for i, e in enumerate(events):
        if e.kind in skipped or id(e) in in_paths:
            continue
        # Inside an observed tcp_fin/tcp_done the transition is told by that note.
        if e.kind == Kind.SET_STATE and any(sk == e.sk and a <= e.ts_ns <= b for sk, a, b in windows):
            continue
        summary, vals = describe.summary(e, pairs.get(i), st, isn)
        where = None if e.kind in UNPLACED else _where(writes, paths, e)
        teardown = bool(teardown_ns) and e.ts_ns >= teardown_ns
        notes.append(KernelNote(e.ts_ns - t0, sides.of(e), e.func, summary, where, e, vals, teardown))
    return notes


# --- entry points --------------------------------------------------------------


def timeline_of(rec: Recording, subject: Subject, calls: Sequence[Call], events: Sequence[Event],
                marks: Sequence[UserMark]) -> Timeline:
    """One connection's timeline. rec: the run's facts (kernel, backend, state
    names, what was missing); calls: its writes and reads with their results; events:
    the connection's kernel events (the reproduction: all of the run's); marks: user space."""
    events = sorted(events, key=lambda e: e.ts_ns)
    names = rec.state_names

    def st(s: int) -> str:
        return state_name(names, s)

    writes = [c for c in calls if c.op == "write" and c.ret is not None]
    reads = [c for c in calls if c.op == "read" and c.ret is not None]
    starts = [e.ts_ns for e in events] + [m.t_ns for m in marks] + [c.t_start_ns for c in writes]
    t0 = min(starts) if starts else 0
    sides = _Sides(subject, events)

    by_write = _match_paths(writes, _write_paths(events, subject.writer_pid, rec.backend))
    by_read = _match_paths(reads, _read_paths(events, subject.writer_pid))
    write_notes = [_write_note(rec, st, t0, c, by_write.get(c.index, [])) for c in writes]
    read_notes = [_read_note(st, t0, c, by_read.get(c.index, [])) for c in reads]
    notes = _kernel_notes(events, writes, by_write, st, sides, t0, rec.teardown_ns)
    mark_notes = [MarkNote(m.t_ns - t0, m.what) for m in marks]
    query_notes = _query_notes(rec, t0, notes, write_notes, events, st)
    items = sorted([*write_notes, *read_notes, *query_notes, *notes, *mark_notes], key=lambda x: x.t_ns)
    found = findings(read_notes + write_notes, notes, rec.lost_events) if calls else []
    return Timeline(rec, t0, items, write_notes, found, read_notes, query_notes)


STORES_SK_ERR = (Kind.ERROR_REPORT, Kind.DONE_WITH_ERROR, Kind.TCP_RESET, Kind.RESET_TP)


def _query_notes(rec: Recording, t0: int, notes: list[KernelNote], write_notes: list[IoNote],
                 events: Sequence[Event], st) -> list[QueryNote]:
    """The client's SO_ERROR and poll steps, each with the facts its kernel path is decided on:
    sk_getsockopt's entry when it was probed (kprobe/fentry), else the client's state and what
    the traced events say about sk_err before it."""
    out = []
    seen = [e for e in events if e.kind == Kind.GETSOCKOPT_ENTER]
    client = [n for n in notes if n.side == "client" and not n.teardown]
    for q in getattr(rec, "queries", []):
        t = q.t_start_ns - t0
        before = [n for n in client if n.t_ns <= t]
        state = next((n.values.get("state") for n in reversed(before) if n.event.kind == Kind.SET_STATE), None)
        fin = next((n for n in before if n.event.kind == Kind.TCP_FIN
                    or (n.event.kind == Kind.SET_STATE and n.values.get("state") == "CLOSE_WAIT")), None)
        reset = next((n for n in reversed(before) if n.event.kind in STORES_SK_ERR), None)
        facts: dict = {"state": state, "fin_at": fin.t_ns if fin else None, "fin_func": fin.func if fin else None,
                       "reset_at": reset.t_ns if reset else None, "reset_func": reset.func if reset else None}
        inferred = True
        if q.what == "SO_ERROR":
            after = next((w for w in write_notes if w.t_ns > t and w.sk_err is not None), None)
            facts.update(branch="so_error_taken" if q.value != "0" else "so_error_none",
                         next_call=after.index if after else None,
                         next_sk_err=after.sk_err if after else None)
            entry = next((e for e in seen if q.t_start_ns <= e.ts_ns <= q.t_end_ns), None)
            if entry is not None:
                facts.update(at="sk_getsockopt", sk_err_at_entry=entry.sk_err, state=st(entry.state))
                inferred = False
        else:
            facts.update(branch="poll", bits=q.value.split("|") if q.value != "none" else [])
        out.append(QueryNote(t, q.what, q.index, q.value, facts, inferred))
    return out


def repro_call(w: WriteResult, op: str) -> Call:
    """A reproduction's write or read as the client process reported it."""
    return Call(w.index, op, op, w.size, w.ret, w.errno, w.t_start_ns, w.t_end_ns, w.killed_by)


def annotate(rec: Recording) -> Timeline:
    """The reproduction: one connection, its client known by ports and pid."""
    calls = [repro_call(w, "write") for w in rec.writes] + [repro_call(r, "read") for r in rec.reads]
    subject = Subject(rec.client_port, rec.server_port, writer_pid=rec.client_pid)
    return timeline_of(rec, subject, calls, rec.events, rec.marks)
