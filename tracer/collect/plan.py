"""Which backend and which probes, chosen from what this kernel offers.

Like bcc's tcpdrop.py, the tool checks before it attaches and says what it
used and what it left out. Pure: it takes a KernelView, a plain description
of the kernel that tests can write by hand.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from tracer.errors import UserError

BACKENDS = ("kprobe", "fentry", "tracepoint")


@dataclass(frozen=True)
class FuncProbe:
    func: str
    entry: str  # kprobe program name in bpf/halfclose.bpf.c
    ret: str | None  # kretprobe program, if any
    required: bool
    note: str = ""


FUNCTIONS = (
    FuncProbe("tcp_sendmsg_locked", "sendmsg_enter", "sendmsg_return", True),
    FuncProbe("sk_stream_wait_connect", "wait_connect_enter", "wait_connect_return", False),
    FuncProbe("sk_stream_error", "stream_error_enter", "stream_error_return", False),
    FuncProbe("tcp_reset", "reset_enter", None, True),
    FuncProbe("tcp_done_with_error", "done_with_error_enter", None, False,
              "mainline 6.11, stable 6.10.y, 6.6.44+, 6.1.103+; before, tcp_reset wrote sk_err itself"),
    FuncProbe("tcp_done", "done_enter", "done_return", True),
    FuncProbe("tcp_fin", "fin_enter", "fin_return", False),
    # Who sent the RST, and reads (scenarios that read).
    FuncProbe("tcp_v4_send_reset", "send_reset_enter", None, False),
    FuncProbe("tcp_v6_send_reset", "send_reset_enter", None, False),
    FuncProbe("tcp_send_active_reset", "active_reset_enter", None, False),
    FuncProbe("tcp_recvmsg", "recvmsg_enter", "recvmsg_return", False),
)
STATE_TP = "sock:inet_sock_set_state"
PACKET_TP = "net:net_dev_start_xmit"
SIGNAL_TP = "signal:signal_generate"
# Tracepoints every backend uses when present.
COMMON_TPS = (STATE_TP, PACKET_TP, SIGNAL_TP)
# The tracepoint-only backend: (tracepoint, required)
TRACEPOINTS = (
    (STATE_TP, True),
    ("tcp:tcp_receive_reset", True),
    ("syscalls:sys_enter_write", True),
    ("syscalls:sys_exit_write", True),
    ("sock:inet_sk_error_report", False),
    ("sock:sock_send_length", False),  # since 6.3
    ("tcp:tcp_send_reset", False),  # 6.1: full sockets only; 6.10+: also timewait and no socket
    ("syscalls:sys_enter_read", False),
    ("syscalls:sys_exit_read", False),
    ("syscalls:sys_enter_sendto", False),  # send(2) is sendto(2) on x86-64
    ("syscalls:sys_exit_sendto", False),
    (PACKET_TP, False),
    (SIGNAL_TP, False),
)
# Attached only while the client reads and writes (they slow every syscall of the machine).
CLIENT_IO_TPS = (
    ("syscalls:sys_enter_write", "write_enter"),
    ("syscalls:sys_exit_write", "write_exit"),
    ("syscalls:sys_enter_read", "read_enter"),
    ("syscalls:sys_exit_read", "read_exit"),
    ("syscalls:sys_enter_sendto", "write_enter"),
    ("syscalls:sys_exit_sendto", "write_exit"),
)


@dataclass(frozen=True)
class KernelView:
    """What the running kernel offers, as far as choosing probes goes."""

    kprobes: bool
    btf: bool
    functions: frozenset[str]
    tracepoints: frozenset[str]  # "category:name"


@dataclass(frozen=True)
class Plan:
    backend: str
    functions: tuple[FuncProbe, ...] = ()
    tracepoints: tuple[str, ...] = ()
    missing: tuple[str, ...] = ()
    notes: tuple[str, ...] = field(default=())

    def defines(self) -> list[str]:
        """-D flags that select the backend's section of bpf/halfclose.bpf.c."""
        flags = {"kprobe": ["-DHC_KPROBE"], "fentry": ["-DHC_FENTRY"], "tracepoint": ["-DHC_TRACEPOINTS"]}[self.backend]
        flags += [f"-DHAVE_{p.func}" for p in self.functions]
        flags += [f"-DHAVE_{tp.split(':')[1]}" for tp in self.tracepoints]
        for tp, flag in ((STATE_TP, "-DHC_STATE_TRACEPOINT"), (PACKET_TP, "-DHC_PACKETS"), (SIGNAL_TP, "-DHC_SIGNALS")):
            if tp in self.tracepoints:
                flags.append(flag)
        return flags

    def attached_names(self) -> list[str]:
        prefix = {"kprobe": ("kprobe", "kretprobe"), "fentry": ("fentry", "fexit")}.get(self.backend)
        names = []
        for p in self.functions:
            names.append(f"{prefix[0]}:{p.func}")
            if p.ret or (self.backend == "fentry" and p.func in FENTRY_RETURNS):
                names.append(f"{prefix[1]}:{p.func}")
        return names + [f"tracepoint:{tp}" for tp in self.tracepoints]


# fexit programs of bpf/halfclose.bpf.c's fentry section
FENTRY_RETURNS = {"tcp_sendmsg_locked", "sk_stream_wait_connect", "sk_stream_error", "tcp_done", "tcp_fin", "tcp_recvmsg"}


def _function_plan(backend: str, view: KernelView) -> Plan:
    present = tuple(p for p in FUNCTIONS if p.func in view.functions)
    missing = tuple(p.func for p in FUNCTIONS if p.func not in view.functions)
    required = [p.func for p in FUNCTIONS if p.required and p.func not in view.functions]
    if required:
        raise UserError(
            f"kernel function(s) {', '.join(required)} not found in /proc/kallsyms, so the {backend} "
            "backend cannot trace this kernel",
            "use --backend tracepoint, or another kernel with `trace-halfclose vm --kernel PATH`",
        )
    tps = tuple(tp for tp in COMMON_TPS if tp in view.tracepoints)
    notes = tuple(f"{p.func}: {p.note}" for p in FUNCTIONS if p.func in missing and p.note)
    return Plan(backend, present, tps, missing + tuple(tp for tp in COMMON_TPS if tp not in tps), notes)


def _tracepoint_plan(view: KernelView) -> Plan:
    required = [tp for tp, req in TRACEPOINTS if req and tp not in view.tracepoints]
    if required:
        raise UserError(
            f"tracepoint(s) {', '.join(required)} not found: the tracepoint backend cannot trace this kernel",
            "mount tracefs (mount -t tracefs nodev /sys/kernel/tracing) or use a kernel with them (4.16+)",
        )
    used = tuple(tp for tp, _ in TRACEPOINTS if tp in view.tracepoints)
    missing = tuple(tp for tp, _ in TRACEPOINTS if tp not in view.tracepoints)
    return Plan("tracepoint", (), used, missing)


def plan_for(backend: str, view: KernelView) -> Plan:
    """The plan for one backend, or a UserError saying why it cannot run here."""
    if backend == "kprobe":
        if not view.kprobes:
            raise UserError(
                "this kernel has no kprobes (kprobe_events is missing: CONFIG_KPROBES or CONFIG_KPROBE_EVENTS is off)",
                "use --backend auto (falls back to fentry, then tracepoints), or run it in a VM with a distro "
                "kernel: `sudo trace-halfclose vm`",
            )
        return _function_plan("kprobe", view)
    if backend == "fentry":
        if not view.btf:
            raise UserError("fentry/fexit needs the kernel's BTF (/sys/kernel/btf/vmlinux)",
                            "use a kernel built with CONFIG_DEBUG_INFO_BTF=y, or --backend kprobe/tracepoint")
        return _function_plan("fentry", view)
    if backend == "tracepoint":
        return _tracepoint_plan(view)
    raise UserError(f"unknown backend {backend!r}", f"choose one of auto, {', '.join(BACKENDS)}")


def candidates(requested: str, view: KernelView) -> tuple[list[Plan], list[str]]:
    """Plans to try in order, and why each skipped backend was skipped."""
    names = BACKENDS if requested == "auto" else (requested,)
    plans, skipped = [], []
    for name in names:
        try:
            plans.append(plan_for(name, view))
        except UserError as exc:
            if requested != "auto":
                raise
            skipped.append(f"{name}: {exc.message}")
    if not plans:
        raise UserError("no backend can trace this kernel: " + "; ".join(skipped), "run `trace-halfclose doctor`")
    return plans, skipped


# ---- watch: any program's writes (trace-halfclose watch, HC_WATCH in bpf/halfclose.bpf.c) ----

# The write path's functions, with the watch section's entry programs (watch_<entry>);
# the returns are the reproduction's kprobe return programs.
WATCH_FUNCS = ("tcp_sendmsg_locked", "sk_stream_wait_connect", "sk_stream_error", "tcp_reset",
               "tcp_done_with_error", "tcp_done", "tcp_fin")


@dataclass(frozen=True)
class CallHook:
    """A write-like call: where the kernel has its fd, and its syscall tracepoints."""

    call: str  # write, sendto, sendmsg, writev
    func: str  # kernel function taking the fd (kprobe, fentry)
    entry: str  # its kprobe program
    ret: str  # its kretprobe program (the return type decides the cast)
    tp_entry: str  # the program for syscalls:sys_enter_<call>

    @property
    def tracepoints(self) -> tuple[str, str]:
        return f"syscalls:sys_enter_{self.call}", f"syscalls:sys_exit_{self.call}"


WATCH_CALLS = (
    CallHook("write", "ksys_write", "watch_ksys_write", "watch_call_return_long", "watch_sys_enter_write"),
    CallHook("sendto", "__sys_sendto", "watch_sys_sendto", "watch_call_return_int", "watch_sys_enter_sendto"),
    CallHook("sendmsg", "__sys_sendmsg", "watch_sys_sendmsg", "watch_call_return_long", "watch_sys_enter_sendmsg"),
    CallHook("writev", "do_writev", "watch_do_writev", "watch_call_return_long", "watch_sys_enter_writev"),
)
WATCH_SYS_EXIT = "watch_sys_exit"  # the program for every syscalls:sys_exit_<call>
DESTROY_TP = "tcp:tcp_destroy_sock"  # a watched socket's end
NEWTASK_TP = "task:task_newtask"  # follow the command's new processes
EXIT_TP = "sched:sched_process_exit"  # forget exited pids
# The tracepoint backend's socket events (tracepoint, required).
WATCH_TP_EVENTS = (("tcp:tcp_receive_reset", True), ("sock:inet_sk_error_report", False),
                   ("sock:sock_send_length", False))


@dataclass(frozen=True)
class WatchPlan:
    """A backend for watch: functions (kprobe/fentry), write-like call hooks, tracepoints."""

    backend: str
    functions: tuple[FuncProbe, ...] = ()
    calls: tuple[CallHook, ...] = ()
    tracepoints: tuple[str, ...] = ()
    missing: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()

    def defines(self) -> list[str]:
        """-D flags for the HC_WATCH section. kprobe and fentry also compile HC_KPROBE,
        whose `entered` map and return programs report the returns."""
        flags = ["-DHC_WATCH", *{"kprobe": ["-DHC_KPROBE", "-DHC_WATCH_KPROBE"],
                                 "fentry": ["-DHC_KPROBE", "-DHC_WATCH_FENTRY"],
                                 "tracepoint": ["-DHC_WATCH_TRACEPOINTS"]}[self.backend]]
        flags += [f"-DHAVE_{p.func}" for p in self.functions]
        if self.backend == "fentry":  # fentry programs attach at load: only those that exist
            flags += [f"-DHAVE_{c.func}" for c in self.calls]
        flags += [f"-DHAVE_{tp.split(':')[1]}" for tp in self.tracepoints]
        return flags

    def attached_names(self) -> list[str]:
        names = Plan(self.backend, self.functions).attached_names()  # the write path's, named as for the reproduction
        if self.backend != "tracepoint":
            on, off = {"kprobe": ("kprobe", "kretprobe"), "fentry": ("fentry", "fexit")}[self.backend]
            names += [name for c in self.calls for name in (f"{on}:{c.func}", f"{off}:{c.func}")]
        return names + [f"tracepoint:{tp}" for tp in self.tracepoints]


def watch_plan(base: Plan, view: KernelView, follow: bool, by_pid: bool,
               btf_funcs: frozenset[str] | None = None) -> WatchPlan:
    """The watch plan on top of the reproduction's plan for the same backend (which
    checked the required functions or tracepoints). follow: the command's new
    processes are watched (needs task:task_newtask); by_pid: exited pids are forgotten."""
    if STATE_TP not in view.tracepoints:
        raise UserError(f"tracepoint {STATE_TP} not found: watch follows each socket's life with it",
                        "mount tracefs (mount -t tracefs nodev /sys/kernel/tracing), or use a kernel 4.16+")
    if follow and NEWTASK_TP not in view.tracepoints:
        raise UserError(f"tracepoint {NEWTASK_TP} not found: the command's processes cannot be followed",
                        "watch it by --comm or --port instead of starting it")
    wanted = [DESTROY_TP] + ([NEWTASK_TP] if follow else []) + ([EXIT_TP] if by_pid else [])
    if base.backend == "tracepoint":
        funcs = ()
        calls = tuple(c for c in WATCH_CALLS if all(tp in view.tracepoints for tp in c.tracepoints))
        events = [tp for tp, _ in WATCH_TP_EVENTS]
        wanted = events + [tp for c in calls for tp in c.tracepoints] + wanted
        missing_calls = [tp for c in WATCH_CALLS if c not in calls for tp in c.tracepoints]
    else:
        funcs = tuple(FuncProbe(p.func, f"watch_{p.entry}", p.ret, p.required, p.note)
                      for p in base.functions if p.func in WATCH_FUNCS)
        usable = view.functions if base.backend == "kprobe" or btf_funcs is None else view.functions & btf_funcs
        calls = tuple(c for c in WATCH_CALLS if c.func in usable)
        missing_calls = [c.func for c in WATCH_CALLS if c not in calls]
    tps = (STATE_TP,) + tuple(tp for tp in wanted if tp in view.tracepoints)
    missing = tuple(f for f in WATCH_FUNCS if base.backend != "tracepoint" and f not in view.functions)
    missing += tuple(missing_calls) + tuple(tp for tp in wanted if tp not in view.tracepoints)
    notes = tuple(n for n in base.notes if n.split(":")[0] in WATCH_FUNCS)
    return WatchPlan(base.backend, funcs, calls, tps, missing, notes)


def watch_candidates(requested: str, view: KernelView, follow: bool, by_pid: bool,
                     btf_funcs: frozenset[str] | None = None) -> tuple[list[WatchPlan], list[str]]:
    """Watch plans to try in order (the same backend choice as the reproduction's)."""
    plans, skipped = candidates(requested, view)
    return [watch_plan(p, view, follow, by_pid, btf_funcs) for p in plans], skipped
