"""Annotation: turn a Recording into a timeline of writes and kernel steps.

Pure Python, no kernel needed. Every value in the output is taken from an
event of the recording; where an expected event is missing the note says
"not observed" instead of filling in what should have happened. With the
tracepoint backend the functions inside tcp_sendmsg_locked cannot be seen:
the branch is then inferred from the observed values and the kernel source,
and marked `inferred`.

The branch descriptions name conditions of the kernel source (read in
Linux 6.1.192 and 6.12.117, identical there; docs/kernel-source.md):
  net/ipv4/tcp.c  tcp_sendmsg_locked(): outside ESTABLISHED and CLOSE_WAIT it
      calls sk_stream_wait_connect(); later
      `err = -EPIPE; if (sk->sk_err || (sk->sk_shutdown & SEND_SHUTDOWN)) goto do_error;`
      and the error path returns sk_stream_error(sk, flags, err).
  net/core/stream.c  sk_stream_wait_connect(): first `sock_error(sk)` (which
      takes sk_err and leaves 0), then -EPIPE unless SYN_SENT or SYN_RECV.
  net/ipv4/tcp_input.c  tcp_reset() -> tcp_done_with_error() -> tcp_done()
      (net/ipv4/tcp.c), which calls tcp_set_state(sk, TCP_CLOSE).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from tracer.process import describe
from tracer.record.event import Event, Kind
from tracer.kernel.names import RCV_SHUTDOWN, SEND_SHUTDOWN, TCP_SYN, err_name, ret_name, shutdown_name, state_name
from tracer.record.recording import Recording, WriteResult

# tcp_sendmsg_locked sends without waiting only in these states (net/ipv4/tcp.c, v6.1 and v6.12).
SENDING_STATES = ("ESTABLISHED", "CLOSE_WAIT")
FUNC_PATH = {
    Kind.SENDMSG_ENTER,
    Kind.SENDMSG_RETURN,
    Kind.WAIT_CONNECT_ENTER,
    Kind.WAIT_CONNECT_RETURN,
    Kind.STREAM_ERROR_ENTER,
    Kind.STREAM_ERROR_RETURN,
}
SYSCALL_PATH = {Kind.WRITE_ENTER, Kind.SEND_LENGTH, Kind.WRITE_EXIT}
READ_PATH = {Kind.RECVMSG_ENTER, Kind.RECVMSG_RETURN, Kind.READ_ENTER, Kind.READ_EXIT}
RETURNS_SHOWN_WITH_ENTRY = {Kind.TCP_FIN_RETURN, Kind.TCP_DONE_RETURN}
EPIPE = 32


@dataclass(frozen=True)
class PathStep:
    """One function (or hook) on a write's kernel path, with the values its events carried."""

    func: str
    ret: int | None
    detail: str
    values: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        d = {"func": self.func, "detail": self.detail, **self.values}
        if self.ret is not None:
            d["ret"] = self.ret
            d["ret_name"] = ret_name(self.ret)
        return d


@dataclass(frozen=True)
class WriteNote:
    index: int
    t_ns: int  # relative to the timeline's start
    size: int
    ret: int
    errno: str | None
    observed: bool  # the write was seen in the kernel
    observed_at: str | None  # where state, sk_err, sk_shutdown were read
    state: str | None
    sk_err: int | None
    sk_shutdown: int | None
    path: tuple[PathStep, ...]
    decision: str
    inferred: bool  # the deciding branch was inferred, not seen
    syscall_ns: int
    op: str = "write"  # or "read"
    killed_by: str | None = None  # the call never returned: a signal killed the client


@dataclass(frozen=True)
class KernelNote:
    t_ns: int
    side: str  # client, server, listener or socket
    func: str
    summary: str
    where: str  # placement relative to the writes, when it matters
    event: Event
    values: dict = field(default_factory=dict)
    teardown: bool = False  # after the reproduction ended: the client's and server's exit


@dataclass(frozen=True)
class MarkNote:
    t_ns: int
    what: str


@dataclass
class Timeline:
    recording: Recording
    t0_ns: int
    items: list  # WriteNote | KernelNote | MarkNote, in time order
    writes: list[WriteNote]
    findings: list[str]
    reads: list[WriteNote] = field(default_factory=list)

    def kernel_notes(self, kind: Kind | None = None, side: str | None = None) -> list[KernelNote]:
        """The scenario's kernel steps in time order (not the teardown's), optionally of one
        event kind and one side: what claims and verdicts judge."""
        return [n for n in self.items if isinstance(n, KernelNote) and not n.teardown
                and (kind is None or n.event.kind == kind) and (side is None or n.side == side)]


class _Ctx:
    """What the notes need to know about the run: names and which socket is which."""

    def __init__(self, rec: Recording):
        self.rec = rec
        self.names = rec.state_names
        # A socket keeps its address but loses its port once closed (inet_put_port
        # zeroes inet_num): learn each address's side while it still has ports.
        # An accepted socket's first event (LISTEN → SYN_RECV) still has the listener's
        # ports: inet_csk_clone_lock sets the state before it copies inet_dport from the
        # request (net/ipv4/inet_connection_sock.c, 6.1.192:1195, 6.12.117:1264). A
        # connection's own ports win over that.
        self.sk_side: dict[int, str] = {}
        for e in rec.events:
            side, known = self._by_ports(e), self.sk_side.get(e.sk)
            if e.sk and side != "socket" and (known is None or (known == "listener" and side != "listener")):
                self.sk_side[e.sk] = side
        # Initial sequence numbers by sender port (from the SYNs), for relative seqs like tcpdump's.
        self.isn = {e.sport: e.seq for e in rec.events if e.kind == Kind.PACKET and e.tcp_flags & TCP_SYN}

    def st(self, s: int) -> str:
        return state_name(self.names, s)

    def _by_ports(self, e: Event) -> str:
        r = self.rec
        if e.sport == r.client_port and e.dport == r.server_port:
            return "client"
        if e.sport == r.server_port and e.dport == r.client_port:
            return "server"
        if e.sport == r.server_port and e.dport == 0:
            return "listener"
        return "socket"

    def side(self, e: Event) -> str:
        return self.sk_side.get(e.sk, self._by_ports(e)) if e.sk else self._by_ports(e)


def _sock_values(ctx: _Ctx, e: Event) -> dict:
    return {"state": ctx.st(e.state), "sk_err": e.sk_err, "sk_shutdown": e.sk_shutdown}


def _first(path: list[Event], kind: Kind) -> Event | None:
    return next((e for e in path if e.kind == kind), None)


# --- writes ------------------------------------------------------------------


def _io_paths(events: list[Event], client_pid: int, kinds: set, opens: set, closes: set) -> list[list[Event]]:
    """The client's events of one kind of call, one list per call: from an
    opening event (an entry) to its closing one (the return), per thread."""
    paths: list[list[Event]] = []
    open_by_tid: dict[int, list[Event]] = {}
    for e in events:
        if e.pid != client_pid or e.kind not in kinds:
            continue
        if e.kind in opens:
            open_by_tid[e.tid] = [e]
            paths.append(open_by_tid[e.tid])
        elif e.tid in open_by_tid:
            open_by_tid[e.tid].append(e)
            if e.kind in closes:
                del open_by_tid[e.tid]
    return paths


def _write_paths(events: list[Event], client_pid: int) -> list[list[Event]]:
    """Per tcp_sendmsg_locked call (kprobe, fentry) or per write(2) (tracepoints)."""
    return _io_paths(events, client_pid, FUNC_PATH | SYSCALL_PATH, {Kind.SENDMSG_ENTER, Kind.WRITE_ENTER},
                     {Kind.SENDMSG_RETURN, Kind.WRITE_EXIT})


def _read_paths(events: list[Event], client_pid: int) -> list[list[Event]]:
    return _io_paths(events, client_pid, READ_PATH, {Kind.RECVMSG_ENTER, Kind.READ_ENTER},
                     {Kind.RECVMSG_RETURN, Kind.READ_EXIT})


def _function_steps(ctx: _Ctx, path: list[Event]) -> list[PathStep]:
    steps = []
    enter, ret = _first(path, Kind.SENDMSG_ENTER), _first(path, Kind.SENDMSG_RETURN)
    wc_in, wc_out = _first(path, Kind.WAIT_CONNECT_ENTER), _first(path, Kind.WAIT_CONNECT_RETURN)
    se_in, se_out = _first(path, Kind.STREAM_ERROR_ENTER), _first(path, Kind.STREAM_ERROR_RETURN)
    if enter:
        steps.append(PathStep(
            "tcp_sendmsg_locked", ret.value if ret else None,
            f"entry: state {ctx.st(enter.state)}, sk_err {err_name(enter.sk_err)}, "
            f"sk_shutdown {shutdown_name(enter.sk_shutdown)}, size {enter.value}",
            {**_sock_values(ctx, enter), "size": enter.value},
        ))
    if wc_in:
        after = f"; sk_err after: {err_name(wc_out.sk_err)}" if wc_out else "; return not observed"
        steps.append(PathStep(
            "sk_stream_wait_connect", wc_out.value if wc_out else None,
            f"entry: state {ctx.st(wc_in.state)}, sk_err {err_name(wc_in.sk_err)}{after}",
            {"state": ctx.st(wc_in.state), "sk_err": wc_in.sk_err,
             **({"sk_err_after": wc_out.sk_err} if wc_out else {})},
        ))
    if se_in:
        after = f"; sk_err then: {err_name(se_out.sk_err)}" if se_out else "; return not observed"
        steps.append(PathStep(
            "sk_stream_error", se_out.value if se_out else None,
            f"err argument {ret_name(se_in.value)}, sk_err {err_name(se_in.sk_err)}{after}",
            {"err": se_in.value, "sk_err": se_in.sk_err},
        ))
    return steps


def _syscall_steps(ctx: _Ctx, path: list[Event]) -> list[PathStep]:
    steps = []
    enter, sent, exit_ = (_first(path, k) for k in (Kind.WRITE_ENTER, Kind.SEND_LENGTH, Kind.WRITE_EXIT))
    if enter:
        steps.append(PathStep(
            "sys_enter_write", None,
            f"fd {enter.fd}: state {ctx.st(enter.state)}, sk_err {err_name(enter.sk_err)}, "
            f"sk_shutdown {shutdown_name(enter.sk_shutdown)}",
            {**_sock_values(ctx, enter), "fd": enter.fd},
        ))
    if sent:
        steps.append(PathStep(
            "sock_send_length", sent.value,
            f"sock_sendmsg returned; then state {ctx.st(sent.state)}, sk_err {err_name(sent.sk_err)}",
            {"state_after": ctx.st(sent.state), "sk_err_after": sent.sk_err},
        ))
    if exit_:
        steps.append(PathStep(
            "sys_exit_write", exit_.value,
            f"then state {ctx.st(exit_.state)}, sk_err {err_name(exit_.sk_err)}, "
            f"sk_shutdown {shutdown_name(exit_.sk_shutdown)}",
            {"state_after": ctx.st(exit_.state), "sk_err_after": exit_.sk_err, "sk_shutdown_after": exit_.sk_shutdown},
        ))
    return steps


def _function_decision(ctx: _Ctx, path: list[Event]) -> str:
    """Name the branch that decided the write's result, from the values seen."""
    enter, ret = _first(path, Kind.SENDMSG_ENTER), _first(path, Kind.SENDMSG_RETURN)
    wc_in, wc_out = _first(path, Kind.WAIT_CONNECT_ENTER), _first(path, Kind.WAIT_CONNECT_RETURN)
    if not ret:
        return "not observed: tcp_sendmsg_locked's return was not seen"
    st, r = ctx.st(enter.state), ret_name(ret.value)
    if wc_in and wc_out:
        head = f"state {st} is not ESTABLISHED/CLOSE_WAIT → sk_stream_wait_connect"
        if wc_in.sk_err and wc_out.value == -wc_in.sk_err and wc_out.sk_err == 0:
            return (f"{head} → sock_error() took sk_err={err_name(wc_in.sk_err)} (0 afterwards)"
                    f" → {ret_name(wc_out.value)} → tcp_sendmsg_locked returned {r}")
        if wc_in.sk_err == 0 and wc_out.value == -EPIPE:
            return (f"{head} with sk_err 0 → state is not SYN_SENT/SYN_RECV → -EPIPE"
                    f" → tcp_sendmsg_locked returned {r}")
        return f"{head} returned {ret_name(wc_out.value)} → tcp_sendmsg_locked returned {r}"
    if wc_in:
        return f"state {st} → sk_stream_wait_connect (return not observed) → tcp_sendmsg_locked returned {r}"
    if st not in SENDING_STATES and "sk_stream_wait_connect" in ctx.rec.missing:
        # The source sends such a write through sk_stream_wait_connect, which was not traceable here.
        return (f"not observed: in state {st} tcp_sendmsg_locked calls sk_stream_wait_connect, which could "
                f"not be traced on this kernel → tcp_sendmsg_locked returned {r}")
    if ret.value >= 0:
        if st in SENDING_STATES and enter.sk_err == 0 and not enter.sk_shutdown & SEND_SHUTDOWN:
            return (f"{st} is allowed to send, sk_err 0, send side open "
                    f"(sk_shutdown {shutdown_name(enter.sk_shutdown)}) → queued → {r}")
        return f"state {st}, no sk_stream_wait_connect → {r}"
    if ret.value == -EPIPE and (enter.sk_err or enter.sk_shutdown & SEND_SHUTDOWN):
        why = f"sk_err {err_name(enter.sk_err)}" if enter.sk_err else "SEND_SHUTDOWN set"
        return (f"state {st} is allowed to send, but {why} → "
                f"`if (sk->sk_err || (sk->sk_shutdown & SEND_SHUTDOWN))` → do_error → {r}")
    return f"state {st}, no sk_stream_wait_connect → tcp_sendmsg_locked returned {r}"


def _syscall_decision(ctx: _Ctx, path: list[Event], w: WriteResult) -> str:
    """Tracepoints see the socket before and after, not the functions between:
    say which branch the values fit, from the source, as an inference."""
    enter = _first(path, Kind.WRITE_ENTER)
    exit_ = _first(path, Kind.WRITE_EXIT)
    after = exit_ or _first(path, Kind.SEND_LENGTH)
    st = ctx.st(enter.state)
    # The kernel's result when seen (a write killed by SIGPIPE never returns to user space).
    ret = after.value if after else (w.ret if w.ret >= 0 else None)
    if ret is None:
        return "not observed: the write's return was not seen"
    seen = (f"observed: state {st}, sk_err {err_name(enter.sk_err)} at write(2) entry"
            + (f", sk_err {err_name(after.sk_err)} after" if after else "") + f", returned {ret_name(ret)}")
    if ret >= 0 and st in SENDING_STATES and not enter.sk_err and not enter.sk_shutdown & SEND_SHUTDOWN:
        return f"inferred: {st} is allowed to send, sk_err 0, send side open → queued ({seen})"
    if ret < 0 and st not in SENDING_STATES:
        if enter.sk_err and ret == -enter.sk_err and after and after.sk_err == 0:
            return (f"inferred: state {st} is not ESTABLISHED/CLOSE_WAIT → sk_stream_wait_connect, whose "
                    f"sock_error() takes sk_err={err_name(enter.sk_err)} ({seen})")
        if not enter.sk_err and ret == -EPIPE:
            return (f"inferred: state {st} with sk_err 0 → sk_stream_wait_connect: not SYN_SENT/SYN_RECV "
                    f"→ -EPIPE ({seen})")
    if ret == -EPIPE and st in SENDING_STATES and (enter.sk_err or enter.sk_shutdown & SEND_SHUTDOWN):
        return f"inferred: the sk_err/SEND_SHUTDOWN check in tcp_sendmsg_locked → -EPIPE ({seen})"
    return f"not decided: the values do not single out a branch ({seen})"


def _write_note(ctx: _Ctx, t0: int, w: WriteResult, path: list[Event]) -> WriteNote:
    enter = _first(path, Kind.SENDMSG_ENTER) or _first(path, Kind.WRITE_ENTER)
    if enter is None:
        steps, decision, at = [], "not observed: the kernel reported nothing for this write", None
    elif enter.kind == Kind.SENDMSG_ENTER:
        steps, decision, at = _function_steps(ctx, path), _function_decision(ctx, path), "tcp_sendmsg_locked entry"
    else:
        steps, decision, at = _syscall_steps(ctx, path), _syscall_decision(ctx, path, w), "write(2) entry"
    return WriteNote(
        index=w.index,
        t_ns=w.t_start_ns - t0,
        size=w.size,
        ret=w.ret,
        errno=w.errno,
        observed=enter is not None,
        observed_at=at,
        state=ctx.st(enter.state) if enter else None,
        sk_err=enter.sk_err if enter else None,
        sk_shutdown=enter.sk_shutdown if enter else None,
        path=tuple(steps),
        decision=decision,
        inferred=decision.startswith("inferred"),
        syscall_ns=w.t_end_ns - w.t_start_ns,
        killed_by=w.killed_by,
    )


def _read_note(ctx: _Ctx, t0: int, r: WriteResult, path: list[Event]) -> WriteNote:
    """A read: what tcp_recvmsg saw and returned (tcp_recvmsg_locked, net/ipv4/tcp.c, v6.1:
    with nothing queued it stops at SOCK_DONE, at sk_err (sock_error()), or at RCV_SHUTDOWN)."""
    enter = _first(path, Kind.RECVMSG_ENTER) or _first(path, Kind.READ_ENTER)
    ret = _first(path, Kind.RECVMSG_RETURN) or _first(path, Kind.READ_EXIT)
    steps, decision = [], "not observed: the kernel reported nothing for this read"
    if enter:
        func = "tcp_recvmsg" if enter.kind == Kind.RECVMSG_ENTER else "sys_enter_read"
        steps.append(PathStep(func, ret.value if ret else None,
                              f"entry: state {ctx.st(enter.state)}, sk_err {err_name(enter.sk_err)}, "
                              f"sk_shutdown {shutdown_name(enter.sk_shutdown)}", _sock_values(ctx, enter)))
        inferred = "" if enter.kind == Kind.RECVMSG_ENTER else "inferred: "
        if ret is None:
            decision = "not observed: the read's return was not seen"
        elif ret.value == 0 and enter.sk_shutdown & RCV_SHUTDOWN:
            decision = (f"{inferred}receive side shut by the FIN (sk_shutdown {shutdown_name(enter.sk_shutdown)}), "
                        "nothing queued → 0: end of file")
        elif ret.value < 0:
            decision = f"{inferred}{func} returned {ret_name(ret.value)} (sk_err {err_name(enter.sk_err)} at entry)"
        else:
            decision = f"{inferred}{ret.value} bytes were queued"
    return WriteNote(r.index, r.t_start_ns - t0, r.size, r.ret, r.errno, enter is not None,
                     "tcp_recvmsg entry" if enter and enter.kind == Kind.RECVMSG_ENTER else
                     ("read(2) entry" if enter else None),
                     ctx.st(enter.state) if enter else None, enter.sk_err if enter else None,
                     enter.sk_shutdown if enter else None, tuple(steps), decision,
                     decision.startswith("inferred"), r.t_end_ns - r.t_start_ns, op="read")


def _match_paths(writes: list[WriteResult], paths: list[list[Event]]) -> dict[int, list[Event]]:
    """Each write gets the path that started inside its syscall."""
    out: dict[int, list[Event]] = {}
    for w in writes:
        for p in paths:
            if w.t_start_ns <= p[0].ts_ns <= w.t_end_ns:
                out[w.index] = p
                break
    return out


# --- kernel steps --------------------------------------------------------------


def _pair_returns(events: list[Event]) -> dict[int, Event]:
    """For tcp_fin and tcp_done entries (by list index): their return event."""
    ret_of = {Kind.TCP_FIN: Kind.TCP_FIN_RETURN, Kind.TCP_DONE: Kind.TCP_DONE_RETURN}
    pairs: dict[int, Event] = {}
    for i, e in enumerate(events):
        want = ret_of.get(e.kind)
        if want is None:
            continue
        for r in events[i + 1 :]:
            if r.kind == want and r.sk == e.sk and r.tid == e.tid:
                pairs[i] = r
                break
    return pairs


def _where(writes: list[WriteResult], paths: dict[int, list[Event]], e: Event) -> str:
    """Place a kernel event relative to the writes (it matters for the RST)."""
    for w in writes:
        if w.t_start_ns <= e.ts_ns <= w.t_end_ns:
            path = paths.get(w.index, [])
            ret = _first(path, Kind.SENDMSG_RETURN)
            if ret and e.ts_ns > ret.ts_ns:
                return (f"during write {w.index}: {(e.ts_ns - ret.ts_ns) / 1000:.1f} µs after "
                        f"tcp_sendmsg_locked returned {ret_name(ret.value)}, before write(2) returned")
            return f"during write {w.index}'s syscall"
        if e.ts_ns < w.t_start_ns:
            return ""
        nxt = next((x for x in writes if x.index == w.index + 1), None)
        if nxt is None or e.ts_ns < nxt.t_start_ns:
            return f"{(e.ts_ns - w.t_end_ns) / 1000:.1f} µs after write {w.index} returned"
    return ""


def _kernel_notes(ctx: _Ctx, rec: Recording, t0: int, paths: dict[int, list[Event]]) -> list[KernelNote]:
    events = rec.events
    pairs = _pair_returns(events)
    windows = [(e.sk, e.ts_ns, pairs[i].ts_ns) for i, e in enumerate(events) if i in pairs]
    in_paths = {id(e) for p in paths.values() for e in p}
    notes = []
    for i, e in enumerate(events):
        if e.kind in FUNC_PATH | SYSCALL_PATH | READ_PATH | RETURNS_SHOWN_WITH_ENTRY or id(e) in in_paths:
            continue
        # Inside an observed tcp_fin/tcp_done the transition is told by that note.
        if e.kind == Kind.SET_STATE and any(sk == e.sk and a <= e.ts_ns <= b for sk, a, b in windows):
            continue
        summary, vals = describe.summary(e, pairs.get(i), ctx.st, ctx.isn)
        teardown = bool(rec.teardown_ns) and e.ts_ns >= rec.teardown_ns
        notes.append(KernelNote(e.ts_ns - t0, ctx.side(e), e.func, summary, _where(rec.writes, paths, e), e, vals,
                                teardown))
    return notes


# --- findings ------------------------------------------------------------------


def _findings(rec: Recording, writes: list[WriteNote], notes: list[KernelNote]) -> list[str]:
    """Summary lines; `writes` holds the reads too (op "read"), in order."""
    out = []
    client = [n for n in notes if n.side == "client"]
    fin = next((n for n in client if n.func == "tcp_fin"), None) or next(
        (n for n in client if n.func == "inet_sock_set_state" and n.values.get("state") == "CLOSE_WAIT"), None
    )
    out.append(f"FIN: {fin.func} moved the client to CLOSE_WAIT at {fin.t_ns / 1e6:+.3f} ms" if fin
               else "FIN: not observed on the client socket")

    reset = next((n for n in client if n.func in ("tcp_reset", "tcp_receive_reset")), None)
    if reset:
        where = f", {reset.where}" if reset.where else ""
        out.append(f"RST: {reset.func} ran with the client in {reset.values['state']}{where}")
        out.append(_who_set_sk_err(client, reset))
        done = next((n for n in client if n.func == "tcp_done" and n.t_ns >= reset.t_ns), None)
        closed = next((n for n in client if n.func == "inet_sock_set_state" and n.t_ns >= reset.t_ns
                       and n.values.get("state") == "CLOSE"), None)
        if done and "state_after" in done.values:
            out.append(f"tcp_done: client {done.values['state']} → {done.values['state_after']}, "
                       f"sk_shutdown → {shutdown_name(done.values['sk_shutdown_after'])}")
        elif closed:
            out.append(f"tcp_done: inferred from the client's {closed.values['old_state']} → CLOSE transition after "
                       "the RST (tcp_done calls tcp_set_state(sk, TCP_CLOSE), net/ipv4/tcp.c v6.1); not traceable "
                       "with this backend")
    else:
        out.append("RST: no tcp_reset was observed on the client socket")
    sender = next((n for n in notes if n.values.get("rst_sender")), None)
    if sender:
        out.append(f"RST sender: {sender.summary.removeprefix('RST for an incoming segment, sent by ')} "
                   f"({sender.func}, {sender.side} side)")
    packets = [n for n in notes if n.event.kind == Kind.PACKET]
    if packets:
        out.append("packets: " + ", ".join(
            f"{n.side} {n.values['flags']}" + (f" {n.values['length']} bytes" if n.values["length"] else "")
            for n in packets))
    signals = [n for n in notes if n.event.kind == Kind.SIGNAL]
    if signals:
        out.append("signals: " + ", ".join(f"{n.values['signal']} ({n.values['result']})" for n in signals))
    for w in writes:
        res = f"{w.ret}" if w.ret >= 0 else (f"killed by {w.killed_by}" if w.killed_by else f"-1 {w.errno}")
        label = f"{w.op} {w.index}" if w.index else f"{w.op} before the close"
        out.append(f"{label} = {res}: {w.decision}")
    if rec.lost_events:
        out.append(f"WARNING: {rec.lost_events} events were lost (ring buffer full); the timeline is incomplete")
    return out


def _who_set_sk_err(client: list[KernelNote], reset: KernelNote) -> str:
    """Which observed function wrote sk_err: the last one that saw it 0 before the first that saw it set."""
    after = [n for n in client if n.t_ns >= reset.t_ns and n.func != "inet_sock_set_state"]
    report = next((n for n in after if n.func == "inet_sk_error_report"), None)
    seen_zero = None
    for n in after:
        if n is report:
            continue
        if n.event.sk_err == 0:
            seen_zero = n
            continue
        if seen_zero is None:
            return f"sk_err: already {err_name(n.event.sk_err)} at {n.func} entry"
        if seen_zero.func == "tcp_done_with_error":
            return (f"sk_err: 0 → {err_name(n.event.sk_err)} inside tcp_done_with_error(err="
                    f"{err_name(seen_zero.event.value)}), seen at {n.func} entry")
        return (f"sk_err: 0 at {seen_zero.func} entry → {err_name(n.event.sk_err)} at {n.func} entry: "
                f"written by {seen_zero.func}")
    if seen_zero and seen_zero.values.get("sk_err_after"):
        return f"sk_err: set to {err_name(seen_zero.values['sk_err_after'])} during {seen_zero.func}"
    if report:
        return (f"sk_err: 0 at {reset.func}, then {err_name(report.event.value)} reported by inet_sk_error_report; "
                "which function stored it is not visible to tracepoints (kprobe/fentry show it)")
    return "sk_err: no change was observed after the RST"


# --- entry point ---------------------------------------------------------------


def annotate(rec: Recording) -> Timeline:
    rec.events = sorted(rec.events, key=lambda e: e.ts_ns)
    ctx = _Ctx(rec)
    starts = [e.ts_ns for e in rec.events] + [m.t_ns for m in rec.marks] + [w.t_start_ns for w in rec.writes]
    t0 = min(starts) if starts else 0

    by_write = _match_paths(rec.writes, _write_paths(rec.events, rec.client_pid))
    by_read = _match_paths(rec.reads, _read_paths(rec.events, rec.client_pid))
    writes = [_write_note(ctx, t0, w, by_write.get(w.index, [])) for w in rec.writes]
    reads = [_read_note(ctx, t0, r, by_read.get(r.index, [])) for r in rec.reads]
    notes = _kernel_notes(ctx, rec, t0, by_write)
    marks = [MarkNote(m.t_ns - t0, m.what) for m in rec.marks]
    items = sorted([*writes, *reads, *notes, *marks], key=lambda x: x.t_ns)
    scenario_notes = [n for n in notes if not n.teardown]
    return Timeline(rec, t0, items, writes, _findings(rec, reads + writes, scenario_notes), reads)


def write_json(w: WriteNote) -> dict:
    """The `"type": "write"` line of the NDJSON output."""
    return {
        "type": w.op,
        "index": w.index,
        "t_ms": round(w.t_ns / 1e6, 6),
        "size": w.size,
        "ret": w.ret,
        "errno": w.errno,
        "observed": w.observed,
        "observed_at": w.observed_at,
        "state": w.state,
        "sk_err": w.sk_err,
        "sk_err_name": err_name(w.sk_err) if w.sk_err is not None else None,
        "sk_shutdown": w.sk_shutdown,
        "sk_shutdown_name": shutdown_name(w.sk_shutdown) if w.sk_shutdown is not None else None,
        "path": [s.to_json() for s in w.path],
        "decision": w.decision,
        "inferred": w.inferred,
        "killed_by": w.killed_by,
    }


def kernel_json(n: KernelNote) -> dict:
    e = n.event
    return {
        "type": "kernel",
        "t_ms": round(n.t_ns / 1e6, 6),
        "func": n.func,
        "event": e.kind.name,
        "side": n.side,
        "summary": n.summary,
        "where": n.where or None,
        "teardown": n.teardown,
        **n.values,
        "sk": f"{e.sk:#x}",
        "pid": e.pid,
        "comm": e.comm,
    }
