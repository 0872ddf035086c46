"""The summary of a timeline, as Finding values (worded by tracer/display/words.py). Pure.

What the kernel showed, in the order a reader follows the story: the FIN, the
RST and who stored sk_err, tcp_done, the RST's sender, the packets, the
signals, then each call's result with the branch that decided it.
"""
from __future__ import annotations

from typing import Sequence

from tracer.record.event import Kind
from tracer.process.timeline import Finding, IoNote, KernelNote

# Not part of the story the findings tell: a watched socket leaving the watch.
NOT_JUDGED = {Kind.WATCH_DESTROY}


def findings(calls: Sequence[IoNote], notes: Sequence[KernelNote], lost_events: int) -> list[Finding]:
    """calls: the reads and writes in order; notes: the kernel steps (teardown excluded here)."""
    notes = [n for n in notes if not n.teardown and n.event.kind not in NOT_JUDGED]
    out = []
    client = [n for n in notes if n.side == "client"]
    fin = next((n for n in client if n.func == "tcp_fin"), None) or next(
        (n for n in client if n.func == "inet_sock_set_state" and n.values.get("state") == "CLOSE_WAIT"), None)
    out.append(Finding("fin", {"func": fin.func, "t_ns": fin.t_ns} if fin else {}))

    reset = next((n for n in client if n.func in ("tcp_reset", "tcp_receive_reset")), None)
    if reset:
        out.append(Finding("rst", {"func": reset.func, "state": reset.values["state"], "where": reset.where}))
        out.append(_who_set_sk_err(client, reset))
        done = next((n for n in client if n.func == "tcp_done" and n.t_ns >= reset.t_ns), None)
        closed = next((n for n in client if n.func == "inet_sock_set_state" and n.t_ns >= reset.t_ns
                       and n.values.get("state") == "CLOSE"), None)
        if done and "state_after" in done.values:
            out.append(Finding("tcp_done", {"state": done.values["state"], "state_after": done.values["state_after"],
                                            "sk_shutdown_after": done.values["sk_shutdown_after"]}))
        elif closed:
            out.append(Finding("tcp_done_inferred", {"old_state": closed.values["old_state"]}))
    else:
        out.append(Finding("rst", {}))
    sender = next((n for n in notes if n.values.get("rst_sender")), None)
    if sender:
        out.append(Finding("rst_sender", {"sender": sender.values["rst_sender"], "state": sender.values.get("state"),
                                          "tw_substate": sender.values.get("tw_substate"), "func": sender.func,
                                          "side": sender.side}))
    packets = [n for n in notes if n.event.kind == Kind.PACKET]
    if packets:
        out.append(Finding("packets", {"packets": [(n.side, n.values["flags"], n.values["length"]) for n in packets]}))
    signals = [n for n in notes if n.event.kind == Kind.SIGNAL]
    if signals:
        out.append(Finding("signals", {"signals": [(n.values["signal"], n.values["result"]) for n in signals]}))
    for c in calls:
        out.append(Finding("call", {"note": c}))
    if lost_events:
        out.append(Finding("lost", {"count": lost_events}))
    return out


def _who_set_sk_err(client: list[KernelNote], reset: KernelNote) -> Finding:
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
            return Finding("sk_err", {"how": "already", "err": n.event.sk_err, "func": n.func})
        if seen_zero.func == "tcp_done_with_error":
            return Finding("sk_err", {"how": "done_with_error", "err": n.event.sk_err,
                                      "err_arg": seen_zero.event.value, "func": n.func})
        return Finding("sk_err", {"how": "between", "err": n.event.sk_err, "func": n.func,
                                  "writer": seen_zero.func})
    if seen_zero and seen_zero.values.get("sk_err_after"):
        return Finding("sk_err", {"how": "during", "err": seen_zero.values["sk_err_after"], "func": seen_zero.func})
    if report:
        return Finding("sk_err", {"how": "reported", "err": report.event.value, "func": reset.func})
    return Finding("sk_err", {"how": "unchanged"})
