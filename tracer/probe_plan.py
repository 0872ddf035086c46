"""Which probes to attach on this kernel, chosen from what exists.

Like bcc's tcpdrop.py, the tool checks before it attaches and says what it
used and what it left out. Pure: it takes the set of kernel functions.
"""
from __future__ import annotations

from dataclasses import dataclass

from .errors import UserError


@dataclass(frozen=True)
class FuncProbe:
    func: str
    entry: str  # program name in bpf/kprobe.bpf.c
    ret: str | None  # return program, if any
    required: bool
    note: str = ""


KPROBES = (
    FuncProbe("tcp_sendmsg_locked", "sendmsg_enter", "sendmsg_return", True),
    FuncProbe("sk_stream_wait_connect", "wait_connect_enter", "wait_connect_return", False),
    FuncProbe("sk_stream_error", "stream_error_enter", "stream_error_return", False),
    FuncProbe("tcp_reset", "reset_enter", None, True),
    FuncProbe("tcp_done_with_error", "done_with_error_enter", None, False,
              "added in 6.10, backported to some stable kernels; older ones set sk_err in tcp_reset"),
    FuncProbe("tcp_done", "done_enter", "done_return", True),
    FuncProbe("tcp_fin", "fin_enter", "fin_return", False, "static; may be inlined"),
)
STATE_TRACEPOINT = ("sock", "inet_sock_set_state")


@dataclass(frozen=True)
class Plan:
    probes: tuple[FuncProbe, ...]
    missing: tuple[FuncProbe, ...]
    state_tracepoint: bool

    def attached_names(self) -> list[str]:
        names = []
        for p in self.probes:
            names.append(f"kprobe:{p.func}")
            if p.ret:
                names.append(f"kretprobe:{p.func}")
        if self.state_tracepoint:
            names.append("tracepoint:" + ":".join(STATE_TRACEPOINT))
        return names

    def missing_names(self) -> list[str]:
        out = [p.func for p in self.missing]
        if not self.state_tracepoint:
            out.append(":".join(STATE_TRACEPOINT))
        return out


def kprobe_plan(functions: set[str], has_state_tracepoint: bool) -> Plan:
    present = tuple(p for p in KPROBES if p.func in functions)
    missing = tuple(p for p in KPROBES if p.func not in functions)
    required = [p.func for p in missing if p.required]
    if required:
        raise UserError(
            f"kernel function(s) {', '.join(required)} not found in /proc/kallsyms: "
            "this kernel cannot be traced with kprobes",
            "check the kernel version (tcp_sendmsg_locked exists since 4.18), or run on another "
            "kernel with `trace-halfclose vm --kernel PATH`",
        )
    return Plan(present, missing, has_state_tracepoint)
