"""Words: the one place where the timeline's values become sentences. Pure (no rich).

Both outputs use it: the rich console (console.py) and NDJSON (ndjson.py,
whose "decision", "detail", "where", "observed_at" and "finding" fields are
these sentences). A watched call is named for what it was: `sendto(2)` rather
than the reproduction's `write(2)`.
"""
from __future__ import annotations

import signal

from tracer.kernel.names import err_name, ret_name, shutdown_name
from tracer.process.timeline import Branch, CallFacts, Finding, Hook, IoNote, PathStep, Placement, Timeline

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
