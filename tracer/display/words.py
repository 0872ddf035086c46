"""Words: the one place where the timeline's values become sentences. Pure (no rich).

Both outputs use it: the rich console (console.py) and NDJSON (ndjson.py,
whose "decision", "detail", "where", "observed_at" and "finding" fields are
these sentences). A watched call is named for what it was: `sendto(2)` rather
than the reproduction's `write(2)`.
"""
from __future__ import annotations

import signal

from tracer.kernel.names import err_name, ret_name, shutdown_name
from tracer.process.timeline import (Branch, CallFacts, Finding, Hook, IoNote, KernelNote, PathStep, Placement,
                                     Timeline)
from tracer.record.event import Kind

SYSCALLS = ("write", "sendto", "sendmsg", "writev", "read")


def syscall(call: str) -> str:
    """write -> write(2); a tcp_sendmsg_locked call with no traced caller -> its caller."""
    return f"{call}(2)" if call in SYSCALLS else "its caller"


def observed_at(at: Hook | None) -> str | None:
    if at is None:
        return None
    return f"{at.name} entry" if at.kind == "function" else f"{syscall(at.name)} entry"


def step_detail(s: PathStep) -> str:
    v = s.values
    if s.role == "sendmsg":
        return (f"entry: state {v['state']}, sk_err {err_name(v['sk_err'])}, "
                f"sk_shutdown {shutdown_name(v['sk_shutdown'])}, size {v['size']}")
    if s.role == "wait_connect":
        after = f"; sk_err after: {err_name(v['sk_err_after'])}" if s.returned else "; return not observed"
        return f"entry: state {v['state']}, sk_err {err_name(v['sk_err'])}{after}"
    if s.role == "stream_error":
        after = f"; sk_err then: {err_name(s.sk_err_at_return)}" if s.returned else "; return not observed"
        return f"err argument {ret_name(v['err'])}, sk_err {err_name(v['sk_err'])}{after}"
    if s.role == "syscall_enter":
        return (f"fd {v['fd']}: state {v['state']}, sk_err {err_name(v['sk_err'])}, "
                f"sk_shutdown {shutdown_name(v['sk_shutdown'])}")
    if s.role == "send_length":
        return f"sock_sendmsg returned; then state {v['state_after']}, sk_err {err_name(v['sk_err_after'])}"
    if s.role == "syscall_exit":
        return (f"then state {v['state_after']}, sk_err {err_name(v['sk_err_after'])}, "
                f"sk_shutdown {shutdown_name(v['sk_shutdown_after'])}")
    if s.role == "read_entry":
        return (f"entry: state {v['state']}, sk_err {err_name(v['sk_err'])}, "
                f"sk_shutdown {shutdown_name(v['sk_shutdown'])}")
    raise ValueError(f"no words for path step {s.role!r}")


def step_json(s: PathStep) -> dict:
    d = {"func": s.func, "detail": step_detail(s), **s.values}
    if s.ret is not None:
        d["ret"] = s.ret
        d["ret_name"] = ret_name(s.ret)
    return d


# The sentence for each branch, from the decision's values (formatted by _names).
_WAIT = "state {state} is not ESTABLISHED/CLOSE_WAIT → sk_stream_wait_connect"
FUNCTION_WORDS = {
    Branch.WAIT_SOCK_ERROR: _WAIT + " → sock_error() took sk_err={sk_err} (0 afterwards) → {wait_ret}"
                                   " → tcp_sendmsg_locked returned {ret}",
    Branch.WAIT_STATE: _WAIT + " with sk_err 0 → state is not SYN_SENT/SYN_RECV → -EPIPE"
                              " → tcp_sendmsg_locked returned {ret}",
    Branch.WAIT_OTHER: _WAIT + " returned {wait_ret} → tcp_sendmsg_locked returned {ret}",
    Branch.WAIT_NO_RETURN: "state {state} → sk_stream_wait_connect (return not observed)"
                           " → tcp_sendmsg_locked returned {ret}",
    Branch.WAIT_UNTRACEABLE: "not observed: in state {state} tcp_sendmsg_locked calls sk_stream_wait_connect, "
                             "which could not be traced on this kernel → tcp_sendmsg_locked returned {ret}",
    Branch.QUEUED: "{state} is allowed to send, sk_err 0, send side open (sk_shutdown {sk_shutdown}) → queued → {ret}",
    Branch.ERR_CHECK: "state {state} is allowed to send, but {why} → "
                      "`if (sk->sk_err || (sk->sk_shutdown & SEND_SHUTDOWN))` → do_error → {ret}",
    Branch.NO_WAIT: "state {state}, no sk_stream_wait_connect → {result}",
}
INFERRED_WORDS = {
    Branch.QUEUED: "{state} is allowed to send, sk_err 0, send side open → queued",
    Branch.WAIT_SOCK_ERROR: "state {state} is not ESTABLISHED/CLOSE_WAIT → sk_stream_wait_connect, whose "
                            "sock_error() takes sk_err={sk_err}",
    Branch.WAIT_STATE: "state {state} with sk_err 0 → sk_stream_wait_connect: not SYN_SENT/SYN_RECV → -EPIPE",
    Branch.ERR_CHECK: "the sk_err/SEND_SHUTDOWN check in tcp_sendmsg_locked → -EPIPE",
    Branch.UNDECIDED: "not decided: the values do not single out a branch",
}
READ_WORDS = {
    Branch.EOF: "receive side shut by the FIN (sk_shutdown {sk_shutdown}), nothing queued → 0: end of file",
    Branch.EOF_ERR_LEFT: "tcp_recvmsg_locked checks SOCK_DONE (set by tcp_fin) before sk_err: nothing queued → "
                         "0, end of file; sk_err {sk_err} stays for the next call",
    Branch.READ_SK_ERR: "tcp_recvmsg_locked: nothing queued, no SOCK_DONE (no FIN came), sk_err {sk_err} → "
                        "sock_error() returns {ret} and clears sk_err",
    Branch.READ_ERROR: "{func} returned {ret} (sk_err {sk_err} at entry)",
    Branch.READ_DATA: "{bytes} bytes were queued",
}


def _names(v: dict) -> dict:
    """A decision's values as the sentences name them: EPIPE, -EPIPE, RCV_SHUTDOWN."""
    out = dict(v)
    for k in ("sk_err", "sk_err_after"):
        if k in v:
            out[k] = err_name(v[k])
    for k in ("ret", "wait_ret"):
        if k in v:
            out[k] = ret_name(v[k])
    if "sk_shutdown" in v:
        out["sk_shutdown"] = shutdown_name(v["sk_shutdown"])
    if "ret" in v:
        out["bytes"] = v["ret"]
        out["result"] = out["ret"] if v["ret"] >= 0 else f"tcp_sendmsg_locked returned {out['ret']}"
    if "sk_err" in v:
        out["why"] = f"sk_err {out['sk_err']}" if v["sk_err"] else "SEND_SHUTDOWN set"
    return out


def decision(w: IoNote, prefix: bool = True, short: bool = False) -> str:
    """The branch that decided w's result. prefix: keep the leading "inferred: " (the
    console says it in its label instead); short: leave out what was observed."""
    d, b = w.decision, w.decision.branch
    if b == Branch.NO_EVENTS:
        return f"not observed: the kernel reported nothing for this {w.op}"
    if b == Branch.NO_RETURN:
        what = "tcp_sendmsg_locked's return" if d.values.get("at") == "tcp_sendmsg_locked" else f"the {w.op}'s return"
        return f"not observed: {what} was not seen"
    names = _names(d.values)
    lead = "inferred: " if d.inferred and prefix else ""
    if w.op == "read":
        return lead + READ_WORDS[b].format(**names)
    if d.inferred or b == Branch.UNDECIDED:
        seen = (f"observed: state {names['state']}, sk_err {names['sk_err']} at {syscall(w.call.name)} entry"
                + (f", sk_err {names['sk_err_after']} after" if "sk_err_after" in names else "")
                + f", returned {names['ret']}")
        return lead + INFERRED_WORDS[b].format(**names) + ("" if short else f" ({seen})")
    return FUNCTION_WORDS[b].format(**names)


def placement(p: Placement | None, call: str = "write") -> str:
    """Where a kernel event fell relative to write p.write; call: that write's call."""
    if p is None:
        return ""
    if p.relation == "after_return":
        return (f"during write {p.write}: {p.delta_ns / 1000:.1f} µs after tcp_sendmsg_locked returned "
                f"{ret_name(p.ret)}, before {syscall(call)} returned")
    if p.relation == "in_syscall":
        return f"during write {p.write}'s syscall"
    return f"{p.delta_ns / 1000:.1f} µs after write {p.write} returned"


def where(tl: Timeline, p: Placement | None) -> str:
    return placement(p, tl.call_name(p.write)) if p else ""


def result(w: IoNote) -> str:
    return f"{w.ret}" if w.ret >= 0 else (f"killed by {w.killed_by}" if w.killed_by else f"-1 {w.errno}")


def call_label(w: IoNote) -> str:
    return f"{w.op} {w.index}" if w.index else f"{w.op} before the close"


_SK_ERR = {
    "already": "sk_err: already {err} at {func} entry",
    "done_with_error": "sk_err: 0 → {err} inside tcp_done_with_error(err={err_arg}), seen at {func} entry",
    "between": "sk_err: 0 at {writer} entry → {err} at {func} entry: written by {writer}",
    "during": "sk_err: set to {err} during {func}",
    "reported": ("sk_err: 0 at {func}, then {err} reported by inet_sk_error_report; which function stored it is "
                 "not visible to tracepoints (kprobe/fentry show it)"),
    "unchanged": "sk_err: no change was observed after the RST",
}


def finding(f: Finding, tl: Timeline) -> str:
    v = f.values
    if f.kind == "fin":
        return (f"FIN: {v['func']} moved the client to CLOSE_WAIT at {v['t_ns'] / 1e6:+.3f} ms" if v
                else "FIN: not observed on the client socket")
    if f.kind == "rst":
        if not v:
            return "RST: no tcp_reset was observed on the client socket"
        at = where(tl, v["where"])
        return f"RST: {v['func']} ran with the client in {v['state']}" + (f", {at}" if at else "")
    if f.kind == "sk_err":
        args = {k: err_name(x) if k in ("err", "err_arg") else x for k, x in v.items()}
        return _SK_ERR[v["how"]].format(**args)
    if f.kind == "tcp_done":
        return (f"tcp_done: client {v['state']} → {v['state_after']}, "
                f"sk_shutdown → {shutdown_name(v['sk_shutdown_after'])}")
    if f.kind == "tcp_done_inferred":
        return (f"tcp_done: inferred from the client's {v['old_state']} → CLOSE transition after the RST "
                "(tcp_done calls tcp_set_state(sk, TCP_CLOSE), net/ipv4/tcp.c v6.1); not traceable with this backend")
    if f.kind == "rst_sender":
        return f"RST sender: {rst_sender(v['sender'], v['state'], v['tw_substate'])} ({v['func']}, {v['side']} side)"
    if f.kind == "packets":
        return "packets: " + ", ".join(f"{side} {flags}" + (f" {length} bytes" if length else "")
                                       for side, flags, length in v["packets"])
    if f.kind == "signals":
        return "signals: " + ", ".join(f"{sig} ({res})" for sig, res in v["signals"])
    if f.kind == "call":
        w = v["note"]
        return f"{call_label(w)} = {result(w)}: {decision(w)}"
    if f.kind == "lost":
        return f"WARNING: {v['count']} events were lost (ring buffer full); the timeline is incomplete"
    raise ValueError(f"no words for finding {f.kind!r}")


def findings(tl: Timeline) -> list[str]:
    return [finding(f, tl) for f in tl.findings]


def rst_sender(sender: str, state: str | None, tw_substate: str | None) -> str:
    """Who sent an RST, from its sender note's values."""
    return {"timewait": f"a timewait socket (substate {tw_substate})", "no socket": "no socket",
            "full socket": f"a full socket in state {state}",
            "active reset": f"the socket resets its connection (state {state})"}[sender]


def evidence(e: str | CallFacts) -> str:
    """One item of a claim's evidence."""
    if isinstance(e, str):
        return e
    w = e.note
    if e.what == "decision":
        return e.prefix + decision(w)
    res = w.ret if w.ret >= 0 else (w.killed_by or w.errno)
    return (f"{e.prefix}write {w.index} → {res}; at {observed_at(w.observed_at)}: state {w.state}, "
            f"sk_err {err_name(w.sk_err or 0)}, sk_shutdown {shutdown_name(w.sk_shutdown or 0)}")


def command_end(status: int) -> str:
    """A watched command's end, from its exit status (negative: the signal that killed it)."""
    if status >= 0:
        return f"the command exited with status {status}"
    try:
        name = signal.Signals(-status).name
    except ValueError:
        name = f"signal {-status}"
    return f"the command was killed by {name}"


# --- the ladder (display/ladder.py lays these out; console.py and svg.py draw them) ---------

# A call's reason in one line, per branch: the ladder's mark on the client's line
# has room for the deciding step only (the timeline and findings carry the full path).
REASON_WORDS = {
    Branch.QUEUED: "{state} may send, sk_err 0 → queued",
    Branch.WAIT_SOCK_ERROR: "{state} → sk_stream_wait_connect: sock_error() took sk_err {sk_err}",
    Branch.WAIT_STATE: "{state}, sk_err 0 → sk_stream_wait_connect → -EPIPE",
    Branch.WAIT_OTHER: "{state} → sk_stream_wait_connect returned {wait_ret}",
    Branch.WAIT_NO_RETURN: "{state} → sk_stream_wait_connect (its return not seen)",
    Branch.WAIT_UNTRACEABLE: "{state} → sk_stream_wait_connect (not traceable here)",
    Branch.ERR_CHECK: "{why} → the sk_err/SEND_SHUTDOWN check → do_error",
    Branch.NO_WAIT: "{state}, no sk_stream_wait_connect → {result}",
    Branch.UNDECIDED: "the values single out no branch",
    Branch.EOF: "receive side shut by the FIN, nothing queued → end of file",
    Branch.EOF_ERR_LEFT: "SOCK_DONE (the FIN) checked before sk_err → end of file, sk_err {sk_err} left",
    Branch.READ_SK_ERR: "no FIN, sk_err {sk_err} → sock_error() → {ret}",
    Branch.READ_ERROR: "{func} returned {ret}",
    Branch.READ_DATA: "{bytes} bytes were queued",
}


def reason(w: IoNote) -> str:
    """Why a call got its result, in one line: the deciding branch, marked when inferred."""
    d, b = w.decision, w.decision.branch
    if b == Branch.NO_EVENTS:
        return "not seen in the kernel"
    if b == Branch.NO_RETURN:
        return "its return was not seen"
    return ("inferred: " if d.inferred else "") + REASON_WORDS[b].format(**_names(d.values))


def short_result(w: IoNote) -> str:
    """A call's result as the ladder shows it: 6, EPIPE, killed by SIGPIPE."""
    if w.killed_by:
        return f"killed by {w.killed_by}"
    return str(w.ret) if w.ret >= 0 else (w.errno or str(w.ret))


def call_mark(w: IoNote) -> str:
    """A write or read on the client's line, up to its result: `write 1 (6 bytes) → `."""
    size = f" ({w.size} bytes)" if w.size >= 0 and w.op == "write" else ""
    return f"{call_label(w)}{size} → "


def packet(v: dict) -> str:
    """A packet on its arrow: tcpdump's flags, relative seq and ack, the length when not 0."""
    ack = f" ack {v['ack']}" if v.get("ack") is not None else ""
    length = f" len {v['length']}" if v.get("length") else ""
    return f"{v['flags']} seq {v['seq']}{ack}{length}"


def received(func: str, what: str) -> str:
    """A segment known only from its receiver's kernel function (no packet was traced)."""
    return f"{what} (seen by {func})"


def state_change(old: str, new: str) -> str:
    return f"{old} → {new}"


def value_change(name: str, old: int, new: int) -> str:
    """sk_err or sk_shutdown where it changed on a side's line."""
    show = err_name if name == "sk_err" else shutdown_name
    return f"{name} {show(old)} → {show(new)}"


def ladder_step(n: KernelNote, apart: bool = False) -> str:
    """A kernel step on its side's line; apart: a socket of neither side's (drawn across both),
    named by its side. A listener's steps are named so: another socket than the server's."""
    kind, v, func = n.event.kind, n.values, n.func
    who = f"{n.side}: " if apart else ("listener " if n.side == "listener" else "")
    if kind == Kind.SET_STATE:
        return who + state_change(v["old_state"], v["state"])
    if kind in (Kind.TCP_FIN, Kind.TCP_DONE):
        if "state_after" in v:
            return f"{who}{func}: {state_change(v['state'], v['state_after'])}"
        return f"{who}{func} in {v['state']} (its return not seen)"
    if kind in (Kind.TCP_RESET, Kind.RESET_TP):
        return f"{who}{func}: RST in {v['state']}"
    if kind == Kind.DONE_WITH_ERROR:
        return f"{who}{func}: err {err_name(v['err'])}"
    if kind == Kind.ERROR_REPORT:
        return f"{who}{func}: sk_err {err_name(v['error'])}"
    if kind in (Kind.SEND_RESET, Kind.ACTIVE_RESET):
        return who + "RST sender: " + rst_sender(v["rst_sender"], v.get("state"), v.get("tw_substate"))
    if kind == Kind.SIGNAL:
        return f"{who}{v['signal']} ({v['result']})"
    if kind == Kind.WATCH_DESTROY:
        return f"{who}destroyed in {v['state']}"
    return who + func


def where_short(p: Placement | None) -> str:
    """A step that ran inside a write after tcp_sendmsg_locked returned (an RST handled in
    release_sock): the ladder's order cannot show that, as it shows a call at its start."""
    if p is None or p.relation != "after_return":
        return ""
    return f"during write {p.write}, after tcp_sendmsg_locked returned {ret_name(p.ret)}"


def ladder_title(scenario: str, kernel: str, backend: str, family: str) -> str:
    return f"scenario {scenario} on Linux {kernel}, backend {backend}, {family}"


def repro_column(side: str, family: str, port: int, pid: int | None = None) -> str:
    """The reproduction's client or server, over its line."""
    host = "[::1]" if family == "ipv6" else "127.0.0.1"
    return f"{side} {host}:{port}" + (f" (pid {pid})" if pid else "")


def watch_column(conn: int | None, addr: str | None, port: int, writers=()) -> str:
    """A watched connection over its line, with the tasks that wrote on it ((pid, comm, fd)
    each); conn None: the other end, not watched."""
    end = f"{'?' if addr is None else (f'[{addr}]' if ':' in addr else addr)}:{port or '?'}"
    if conn is None:
        return f"{end} (not watched)"
    who = "; ".join(f"{comm} (pid {pid})" for pid, comm, _ in writers)
    return f"#{conn} {end}" + (f" {who}" if who else "")


def watch_title(conns: list[int], kernel: str, backend: str) -> str:
    which = " and ".join(f"#{c}" for c in conns)
    return f"connection{'s' if len(conns) > 1 else ''} {which} on Linux {kernel}, backend {backend}"


# --- the pcapng file (display/pcap.py): a section per run, a comment per packet ---------

# Which kernel function decided to answer with an RST, per sender (rst_sender): read in
# Linux 6.1.192 and 6.12.117 (docs/kernel-source.md; tracer/process/scenarios.py).
RST_DECIDED_BY = {
    "timewait": "tcp_timewait_state_process",  # TCP_TW_RST for new data, net/ipv4/tcp_minisocks.c
    "full socket": "tcp_rcv_state_process",  # returned 1: tcp_v4_do_rcv / tcp_v6_do_rcv answered with RST
    "active reset": "tcp_send_active_reset",  # tcp_close / tcp_disconnect, net/ipv4/tcp.c
    "no socket": "tcp_v4_rcv / tcp_v6_rcv (no socket for the segment)",
}


def rst_sent_by(v: dict) -> str:
    """The RST's sender and the function that decided it, from a sender note's values."""
    who, state = v["rst_sender"], v.get("state")
    if who == "active reset":
        sender = f"the socket itself, resetting its connection (state {state})"
    else:
        sender = rst_sender(who, state, v.get("tw_substate"))
    return f"sent by {sender}, {RST_DECIDED_BY[who]}"


def packet_call(w: IoNote) -> str:
    """A call beside the packet it sent (or after which it ran): `write 1 → 6 in CLOSE_WAIT (...)`."""
    state = f" in {w.state}" if w.state else ""
    return f"{call_label(w)} → {short_result(w)}{state} ({reason(w)})"


def packet_step(n: KernelNote) -> str:
    """A kernel step beside a packet, named by its side; an RST sender without it (the packet says who)."""
    if n.event.kind in (Kind.SEND_RESET, Kind.ACTIVE_RESET):
        return rst_sent_by(n.values)
    during = where_short(n.where)
    side = "client" if n.event.kind == Kind.SIGNAL else n.side  # signal_generate is traced for the client's pid
    return f"{side}: {ladder_step(n)}" + (f" ({during})" if during else "") + (" (teardown)" if n.teardown else "")


def packet_comment(items: list[str]) -> str:
    """One line: tshark prints frame.comment one packet a line."""
    return "; ".join(items)


def pcap_section(scenario: str, kernel: str, backend: str, family: str) -> str:
    return f"trace-halfclose: {ladder_title(scenario, kernel, backend, family)}"


def pcap_interface(netns: int) -> str:
    return f"loopback of the reproduction's network namespace (inode {netns})"


PCAP_CHECKSUMS = ("TCP checksums filled in where the whole segment was captured; a segment whose payload "
                  "was not (page fragments) keeps the kernel's partial checksum (loopback offload)")


# --- compare (trace-halfclose compare) ------------------------------------------------


def compare_reason(reason, runs) -> str:
    """Why a compared row differs (tracer.process.compare.Reason), naming the runs."""
    if reason.kind == "era":
        have = [r.label for r, h in zip(runs, reason.per_run) if h]
        lack = [r.label for r, h in zip(runs, reason.per_run) if not h]
        return f"{reason.function} on {', '.join(have)}, not on {', '.join(lack)} ({reason.note})"
    backends = ", ".join(f"{r.label}: {b}" for r, b in zip(runs, reason.per_run))
    return (f"the backends differ ({backends}): kprobe and fentry see the functions, tracepoints only the "
            "socket around the syscall, so branches are inferred and some steps are not observable")


def compare_summary(c) -> str:
    n, diffs = len(c.runs), c.differences
    if not diffs:
        return f"same behaviour on all {n} kernels ({len(c.rows)} rows in {len(c.scenarios)} scenarios)"
    scenarios = len({r.scenario for r in diffs})
    visible = len(c.user_visible_differences)
    return (f"{len(diffs)} difference{'s' if len(diffs) != 1 else ''} in {scenarios} scenario"
            f"{'s' if scenarios != 1 else ''} across {n} kernels; "
            + (f"{visible} in what a program sees (return values, errnos, signals)" if visible
               else "every return value, errno and signal is the same"))


# --- SO_ERROR and poll (tracer/process/timeline.py QueryNote) ----------------------------
# From the source (Linux 6.1.x and 6.12.x): sk_getsockopt SO_ERROR, net/core/sock.c; sock_error,
# include/net/sock.h (6.1:2598, 6.12:2453); tcp_poll, net/ipv4/tcp.c; do_pollfd, fs/select.c.
POLL_WHY = {
    "POLLIN": "RCV_SHUTDOWN set (the FIN: tcp_fin) or data queued",
    "POLLRDHUP": "RCV_SHUTDOWN set (the FIN: tcp_fin)",
    "POLLOUT": "the send side open and writeable, or SEND_SHUTDOWN set (tcp_poll's else branch)",
    "POLLHUP": "sk_shutdown == SHUTDOWN_MASK or state CLOSE (tcp_done)",
    "POLLERR": "sk_err set (tcp_reset)",
    "POLLPRI": "urgent data",
    "POLLRDNORM": "as POLLIN",
    "POLLWRNORM": "as POLLOUT",
}


def query_label(q) -> str:
    return f"getsockopt(SO_ERROR) {q.index}" if q.what == "SO_ERROR" else f"poll {q.index}"


def _at(t_ns: int | None) -> str:
    return f"{t_ns / 1e6:+.3f} ms" if t_ns is not None else "?"


def query_decision(q) -> str:
    """The kernel path that answered a SO_ERROR or poll step, and what it was decided on."""
    f = q.facts
    tag = "(inferred) " if q.inferred else ""
    state = f" (the client's socket in {f['state']})" if f.get("state") else ""
    if f["branch"] == "so_error_taken":
        stored = (f"stored by {f['reset_func']} at {_at(f['reset_at'])}" if f.get("reset_func")
                  else "stored before it (no traced event shows by whom)")
        seen = (f"sk_getsockopt entry: sk_err {err_name(f['sk_err_at_entry'])}{state}; " if f.get("at") else "")
        text = (f"{seen}sock_getsockopt → sk_getsockopt → sock_error(): sk_err {q.value}, {stored}, returned and "
                f"cleared with xchg{'' if seen else state}")
        if f.get("next_call") is not None:
            text += (f"; write {f['next_call']}'s entry then shows sk_err "
                     f"{'0: cleared, as the source says' if f['next_sk_err'] == 0 else f['next_sk_err']}")
        return f"decided {tag}{text}"
    if f["branch"] == "so_error_none":
        seen = (f"sk_getsockopt entry: sk_err {err_name(f['sk_err_at_entry'])}{state}; " if f.get("at") else "")
        return (f"decided {tag}{seen}sock_getsockopt → sk_getsockopt → sock_error(): sk_err 0, then "
                f"sk_err_soft 0 → 0{'' if seen else state}")
    bits = f.get("bits") or []
    why = "; ".join(f"{b}: {POLL_WHY.get(b, '?')}" for b in bits) or "no bit set"
    return f"decided {tag}tcp_poll{state}: {why} (POLLERR and POLLHUP are reported unasked: do_pollfd)"


# --- a busy watch: incidents, folded calls, counts (tracer/process/stream.py, fold.py) ---

RULE_WORDS = {
    "write_after_fin": "a write after the peer's FIN",
    "write_after_rst": "a write after an RST (or with sk_err set)",
    "call_failed": "a call failed",
    "rst_received": "an RST received",
    "rst_sent": "an RST sent (closed from ESTABLISHED/CLOSE_WAIT without FINs)",
    "sigpipe": "SIGPIPE",
}
RULE_SHORT = {"write_after_fin": "write after FIN", "write_after_rst": "write after RST", "call_failed": "call failed",
              "rst_received": "RST received", "rst_sent": "RST sent", "sigpipe": "SIGPIPE"}
END_WORDS = {
    "destroyed": "",
    "quiet": "no event for a while (still open: later events start a new part)",
    "part": "its events so far (too many to keep: the rest follows as another part)",
    "stopped": "still open when the watch stopped",
}


def rules(values, short: bool = False) -> str:
    """An incident's rules: why the connection is shown (short: for a table's cell)."""
    return (", " if short else "; ").join((RULE_SHORT if short else RULE_WORDS)[r.value] for r in values)


def end_note(end) -> str:
    return END_WORDS[end.value] if end is not None else ""


def _n(x: int) -> str:
    return f"{x:,}"


def fold_line(f, name: str) -> str:
    """Consecutive alike calls: "writes 2–42: sendto 65,536 B each → 65,536, ESTABLISHED, queued"."""
    (lo, hi), (rlo, rhi) = f.sizes, f.rets
    size = f"{_n(lo)} B each" if lo == hi else f"{_n(lo)}–{_n(hi)} B"
    last = f.last
    if last.killed_by:
        res = f"killed by {last.killed_by}"
    elif last.ret < 0:
        res = f"-1 {last.errno}"
    else:
        res = (_n(rlo) if rlo == rhi else f"{_n(rlo)}–{_n(rhi)}")
    branch = last.decision.branch.value
    state = last.state or "not observed"
    return f"{f.first.op}s {f.first.index}–{last.index}: {name} {size} → {res}, {state}, {branch}"


def fold_finding(f, name: str) -> str:
    """The findings' line for the same calls: the first one's decision stands for all."""
    return f"{f.first.op}s {f.first.index}–{f.last.index} ({f.count} alike) = {result(f.last)}: {decision(f.last)}"


def status_line(t, live: int) -> str:
    """The live status line (stderr, a terminal only)."""
    return (f"{_n(t.connections)} conns ({_n(live)} open), {_n(t.healthy)} healthy, {_n(t.incidents)} incidents, "
            f"{_n(t.events)} events, {_n(t.lost)} lost")


def tally_line(t) -> str:
    """The closing count of everything seen, shown or not."""
    rule_counts = ", ".join(f"{RULE_SHORT[r.value]} {n}" for r, n in sorted(t.by_rule.items(), key=lambda x: x[0].value))
    return (f"{_n(t.connections)} connections: {_n(t.healthy)} healthy, {_n(t.incidents)} incidents"
            + (f" ({rule_counts})" if rule_counts else "") + f", {_n(t.shown)} shown; "
            f"{_n(t.events)} events, {_n(t.lost)} lost")


def unshown_line(t) -> str:
    """What the stop left unshown, in one line (never replayed for minutes)."""
    return (f"at the stop, {_n(t.unshown_at_stop)} connections were not shown (no time left; "
            f"{_n(t.unshown_incidents)} of them incidents): counted above")


def shed_line(t) -> str:
    return (f"{_n(t.shed)} healthy connections were counted but not shown: the tool was behind (its ring "
            "buffer filling up), and showed the incidents first")


def lost_line(lost: int) -> str:
    return (f"WARNING: {_n(lost)} events were lost in the kernel (ring buffer full: user space did not keep "
            "up); connections may be incomplete or missing")


def calls_cell(writes) -> str:
    """A summary table's cell: a connection's write-like calls, alike ones counted together."""
    parts: list[list] = []
    for _index, name, size, ret, errno in writes:
        res = "?" if ret is None else (f"-1 {errno}" if ret < 0 else ("all" if ret == size else _n(ret)))
        key = (name, size, res)
        if parts and parts[-1][0] == key:
            parts[-1][1] += 1
        else:
            parts.append([key, 1])
    return ", ".join(f"{n}× {name} {_n(size)} B → {res}" if n > 1 else f"{name} {_n(size)} B → {res}"
                     for (name, size, res), n in parts) or "none"
