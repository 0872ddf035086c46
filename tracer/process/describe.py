"""One line (and its values) for each kernel event that is not part of a read
or write path: state changes, FIN, RST, sk_err, packets, signals. Pure.

Names of numbers: TCP flag bits from include/net/tcp.h (TCPHDR_FIN 0x01 ...),
signal_generate's result from include/trace/events/signal.h
(TRACE_SIGNAL_DELIVERED 0, _IGNORED 1, _ALREADY_PENDING 2, _OVERFLOW_FAIL 3,
_LOSE_INFO 4), both as of v6.1.
"""
from __future__ import annotations

import signal as _signal
from typing import Callable

from tracer.record.event import Event, Kind
from tracer.kernel.names import TCP_ACK, TCP_FIN, TCP_PSH, TCP_RST, TCP_SYN, err_name, shutdown_name

TCP_FLAGS = ((TCP_SYN, "S"), (TCP_FIN, "F"), (TCP_RST, "R"), (TCP_PSH, "P"), (TCP_ACK, "."))
SIGNAL_RESULT = {0: "delivered", 1: "ignored", 2: "already pending", 3: "overflow", 4: "info lost"}
TIME_WAIT = "TIME_WAIT"


def flags_text(flags: int) -> str:
    """tcpdump's notation: [S], [S.], [F.], [P.], [R]."""
    return "[" + "".join(ch for bit, ch in TCP_FLAGS if flags & bit) + "]"


def rst_sender(e: Event, st: Callable[[int], str]) -> str:
    """Which server-side path sent an RST, from a SEND_RESET/ACTIVE_RESET event."""
    if e.kind == Kind.ACTIVE_RESET:
        return "active reset"
    if e.sk == 0:
        return "no socket"
    return "timewait" if st(e.state) == TIME_WAIT else "full socket"


def summary(e: Event, ret: Event | None, st: Callable[[int], str], isn: dict[int, int]) -> tuple[str, dict]:
    """(text, values) for a kernel event; ret is the paired return event, if any;
    isn maps a sender port to its initial sequence number, for relative seqs."""
    vals = {"state": st(e.state), "sk_err": e.sk_err, "sk_shutdown": e.sk_shutdown}
    k = e.kind
    if k == Kind.SET_STATE:
        return (f"state {st(e.old_state)} → {st(e.state)}", {"old_state": st(e.old_state), "state": st(e.state)})
    if k in (Kind.TCP_FIN, Kind.TCP_DONE):
        if ret:
            vals.update(state_after=st(ret.state), sk_shutdown_after=ret.sk_shutdown, sk_err_after=ret.sk_err)
            text = (f"state {st(e.state)} → {st(ret.state)}, sk_shutdown {shutdown_name(e.sk_shutdown)}"
                    f" → {shutdown_name(ret.sk_shutdown)}, sk_err {err_name(ret.sk_err)}")
        else:
            text = (f"at entry: state {st(e.state)}, sk_err {err_name(e.sk_err)}, "
                    f"sk_shutdown {shutdown_name(e.sk_shutdown)} (return not observed)")
        return ("FIN processed: " + text if k == Kind.TCP_FIN else text), vals
    if k in (Kind.TCP_RESET, Kind.RESET_TP):
        return f"RST accepted in state {st(e.state)}, sk_err {err_name(e.sk_err)} at entry", vals
    if k == Kind.DONE_WITH_ERROR:
        return (f"err={err_name(e.value)} (sk_err {err_name(e.sk_err)} at entry), state {st(e.state)}",
                {**vals, "err": e.value})
    if k == Kind.ERROR_REPORT:
        return f"sk_error_report: error {err_name(e.value)} stored in sk_err", {"error": e.value}
    if k == Kind.PACKET:
        base = isn.get(e.sport, e.seq)
        ack_base = isn.get(e.dport, 0)
        rel_ack = (e.ack_seq - ack_base) % 2**32 if e.tcp_flags & TCP_ACK else None
        text = (f"sends {flags_text(e.tcp_flags)} {e.sport} → {e.dport} seq {(e.seq - base) % 2**32}"
                + (f" ack {rel_ack}" if rel_ack is not None else "") + f" length {e.value}")
        return text, {"flags": flags_text(e.tcp_flags), "sport": e.sport, "dport": e.dport,
                      "seq": (e.seq - base) % 2**32, "ack": rel_ack, "length": e.value}
    if k == Kind.SEND_RESET:
        who = rst_sender(e, st)
        by = {"timewait": f"a timewait socket (substate {st(e.tw_substate)})", "no socket": "no socket",
              "full socket": f"a full socket in state {st(e.state)}"}[who]
        return (f"RST for an incoming segment, sent by {by}",
                {"rst_sender": who, "state": None if who == "no socket" else st(e.state),
                 **({"tw_substate": st(e.tw_substate)} if who == "timewait" else {})})
    if k == Kind.ACTIVE_RESET:
        return f"the socket resets its connection (state {st(e.state)})", {**vals, "rst_sender": "active reset"}
    if k == Kind.SIGNAL:
        try:
            name = _signal.Signals(e.value).name
        except ValueError:
            name = f"signal {e.value}"
        result = SIGNAL_RESULT.get(e.signal_result, str(e.signal_result))
        return f"{name} generated for the client ({result})", {"signal": name, "result": result}
    if k == Kind.WATCH_DESTROY:
        return f"socket destroyed in state {st(e.state)}: it leaves the watch", {"state": st(e.state)}
    return k.name, vals
