"""Which backend and which probes, for both modes, from one table.

Like bcc's tcpdrop.py, the tool checks before it attaches and says what it
used and what it left out. PROBES has one row per hook: its kernel target,
the hook's kind, the program in the mode's BPF text (tracer/collect/sources.py
joins bpf/), the modes using it, what its absence means, and when it is
attached. A Plan keeps the rows this kernel allows; the -DHAVE_ flags, the
attach loop (tracer/collect/bpf.py) and the names a recording lists as
attached are all derived from them.

Pure: it takes a KernelView (tracer/kernel/view.py), a plain description of
the kernel that tests can write by hand.
"""
from __future__ import annotations

from dataclasses import dataclass

from tracer.errors import UserError
from tracer.kernel.view import KernelView

BACKENDS = ("kprobe", "fentry", "tracepoint")
MODES = ("repro", "watch")  # the reproduction (trace-halfclose run), trace-halfclose watch
REPRO, WATCH, BOTH = ("repro",), ("watch",), ("repro", "watch")

# When a program is attached.
LOAD = "load"  # by bcc as it loads the text: KFUNC_PROBE, KRETFUNC_PROBE, TRACEPOINT_PROBE
EXPLICIT = "explicit"  # by BpfSession right after the load
CLIENT_IO = "client_io"  # only while the reproduction's client reads and writes (syscall tracepoints)

# What a target missing from this kernel means.
OPTIONAL = "optional"  # listed as missing; traced without it
BACKEND = "backend"  # this backend cannot trace the kernel (auto tries the next one)
MODE = "mode"  # the mode cannot run on this kernel with any backend (note: why; remedy: what to do)

# The backend of each function hook; a tracepoint row names its backends.
HOOK_BACKEND = {"kprobe": "kprobe", "kretprobe": "kprobe", "fentry": "fentry", "fexit": "fentry"}

STATE_TP = "sock:inet_sock_set_state"
PACKET_TP = "net:net_dev_start_xmit"
SIGNAL_TP = "signal:signal_generate"
DESTROY_TP = "tcp:tcp_destroy_sock"  # a watched socket's end
NEWTASK_TP = "task:task_newtask"  # follow the command's new processes
EXIT_TP = "sched:sched_process_exit"  # forget exited pids
# The write-like calls watch follows (kernel function taking the fd, syscall
# name), read from /proc/kallsyms of Debian's 6.1.0-56 and 6.12.117 and 6.18.44.
CALLS = (("ksys_write", "write"), ("__sys_sendto", "sendto"), ("__sys_sendmsg", "sendmsg"), ("do_writev", "writev"))


@dataclass(frozen=True)
class Probe:
    """One hook: a row of PROBES."""

    target: str  # a kernel function, or a tracepoint "category:name"
    hook: str  # kprobe, kretprobe, fentry, fexit, tracepoint
    program: str  # the program's name in the mode's joined BPF text
    modes: tuple[str, ...]
    need: str = OPTIONAL
    note: str = ""  # OPTIONAL: why it may be missing; MODE: why the mode needs it
    attach: str = EXPLICIT
    backends: tuple[str, ...] = ()  # tracepoints: the backends using it (functions: their hook's)
    only_with: str = ""  # watch: only with this filter option ("follow": a command is started; "by_pid")
    together: str = ""  # rows with the same value are used all or none (a syscall's enter and exit)
    remedy: str = ""  # MODE: what to do when it is missing

    @property
    def is_function(self) -> bool:
        return self.hook != "tracepoint"

    @property
    def name(self) -> str:
        """As recordings list it: kprobe:tcp_reset, fexit:tcp_done, tracepoint:sock:inet_sock_set_state."""
        return f"{self.hook}:{self.target}"

    @property
    def define(self) -> str:
        """HAVE_<function> or HAVE_<tracepoint name>: the guard of a program bcc attaches at load."""
        return f"-DHAVE_{self.target.split(':')[-1]}"

    def serves(self, mode: str, backend: str) -> bool:
        return mode in self.modes and backend in (self.backends or (HOOK_BACKEND[self.hook],))


def _function(func: str, entry: str, ret: str | None, modes: tuple[str, ...], need: str = OPTIONAL,
              note: str = "") -> tuple[Probe, ...]:
    """A kernel function's rows: the kprobe on entry (and a kretprobe when its return is an
    event), and the same through fentry/fexit, whose programs bcc names kfunc__/kretfunc__."""
    rows = [Probe(func, "kprobe", entry, modes, need, note)]
    rows += [Probe(func, "kretprobe", ret, modes, need, note)] if ret else []
    rows += [Probe(func, "fentry", f"kfunc__{func}", modes, need, note, LOAD)]
    rows += [Probe(func, "fexit", f"kretfunc__{func}", modes, need, note, LOAD)] if ret else []
    return tuple(rows)


def _tracepoint(tp: str, modes: tuple[str, ...], backends: tuple[str, ...], need: str = OPTIONAL,
                program: str = "", attach: str = LOAD, **more) -> Probe:
    """A tracepoint's row; a TRACEPOINT_PROBE(category, name) is bcc's tracepoint__category__name."""
    category, name = tp.split(":")
    return Probe(tp, "tracepoint", program or f"tracepoint__{category}__{name}", modes, need,
                 attach=attach, backends=backends, **more)


ALL = BACKENDS
TP = ("tracepoint",)
PROBES: tuple[Probe, ...] = (
    # The write path (tcp_sendmsg_locked, net/ipv4/tcp.c, since 4.18; what it calls on an error).
    *_function("tcp_sendmsg_locked", "sendmsg_enter", "sendmsg_return", BOTH, BACKEND),
    *_function("sk_stream_wait_connect", "wait_connect_enter", "wait_connect_return", BOTH),
    *_function("sk_stream_error", "stream_error_enter", "stream_error_return", BOTH),
    # The RST, sk_err and the close (net/ipv4/tcp_input.c, net/ipv4/tcp.c).
    *_function("tcp_reset", "reset_enter", None, BOTH, BACKEND),
    *_function("tcp_done_with_error", "done_with_error_enter", None, BOTH,
               note="mainline 6.11, stable 6.10.y, 6.6.44+, 6.1.103+; before, tcp_reset wrote sk_err itself"),
    *_function("tcp_done", "done_enter", "done_return", BOTH, BACKEND),
    *_function("tcp_fin", "fin_enter", "fin_return", BOTH),  # GCC may inline it into its callers (net/ipv4/tcp_input.c)
    # Who sent the RST, and reads (scenarios that read).
    *_function("tcp_v4_send_reset", "send_reset_enter", None, REPRO),
    *_function("tcp_v6_send_reset", "send_reset_enter", None, REPRO),
    *_function("tcp_send_active_reset", "active_reset_enter", None, REPRO),
    *_function("tcp_recvmsg", "recvmsg_enter", "recvmsg_return", REPRO),
    # watch: where each write-like call has its fd (the return type decides the kretprobe's cast).
    *_function("ksys_write", "ksys_write_enter", "call_return_long", WATCH),
    *_function("__sys_sendto", "sys_sendto_enter", "call_return_int", WATCH),
    *_function("__sys_sendmsg", "sys_sendmsg_enter", "call_return_long", WATCH),
    *_function("do_writev", "do_writev_enter", "call_return_long", WATCH),
    # Every state change: the reproduction waits for CLOSE_WAIT with it; watch follows each socket's life.
    _tracepoint(STATE_TP, REPRO, ("kprobe", "fentry")),
    _tracepoint(STATE_TP, REPRO, TP, BACKEND),
    _tracepoint(STATE_TP, WATCH, ALL, MODE, note="watch follows each socket's life with it",
                remedy="mount tracefs (mount -t tracefs nodev /sys/kernel/tracing), or use a kernel 4.16+"),
    # The tracepoint backend: tcp_reset's first statement, the client's writes, sk_err, the result.
    _tracepoint("tcp:tcp_receive_reset", BOTH, TP, BACKEND),
    _tracepoint("syscalls:sys_enter_write", REPRO, TP, BACKEND, "write_enter", CLIENT_IO),
    _tracepoint("syscalls:sys_exit_write", REPRO, TP, BACKEND, "write_exit", CLIENT_IO),
    _tracepoint("sock:inet_sk_error_report", BOTH, TP),
    _tracepoint("sock:sock_send_length", BOTH, TP),  # since 6.3
    # 6.1: full sockets only; 6.10+: also timewait and no socket. Its record changed in 6.10: attached by hand.
    _tracepoint("tcp:tcp_send_reset", REPRO, TP, program="send_reset_tp", attach=EXPLICIT),
    _tracepoint("syscalls:sys_enter_read", REPRO, TP, program="read_enter", attach=CLIENT_IO),
    _tracepoint("syscalls:sys_exit_read", REPRO, TP, program="read_exit", attach=CLIENT_IO),
    _tracepoint("syscalls:sys_enter_sendto", REPRO, TP, program="write_enter", attach=CLIENT_IO),  # send(2) on x86-64
    _tracepoint("syscalls:sys_exit_sendto", REPRO, TP, program="write_exit", attach=CLIENT_IO),
    # Packets and signals, with every backend.
    _tracepoint(PACKET_TP, REPRO, ALL),
    _tracepoint(SIGNAL_TP, REPRO, ALL),
    # watch with tracepoints: each write-like call from its syscall's enter and exit, for the whole watch.
    *(_tracepoint(f"syscalls:sys_{side}_{call}", WATCH, TP, BACKEND if call == "write" else OPTIONAL,
                  f"sys_enter_{call}" if side == "enter" else "sys_exit_call", EXPLICIT, together=call)
      for _, call in CALLS for side in ("enter", "exit")),
    # watch: a socket's end, and the processes it follows.
    _tracepoint(DESTROY_TP, WATCH, ALL),
    _tracepoint(NEWTASK_TP, WATCH, ALL, MODE, only_with="follow", note="the command's processes cannot be followed",
                remedy="watch it by --comm or --port instead of starting it"),
    _tracepoint(EXIT_TP, WATCH, ALL, only_with="by_pid"),
)


def rows(mode: str, backend: str, *, follow: bool = False, by_pid: bool = False) -> tuple[Probe, ...]:
    """The table's rows for a mode and backend, whatever the kernel has."""
    options = {"follow": follow, "by_pid": by_pid}
    return tuple(p for p in PROBES if p.serves(mode, backend) and (not p.only_with or options[p.only_with]))


def by_target(probes) -> dict[str, Probe]:
    """The first row of each target, in table order."""
    out: dict[str, Probe] = {}
    for p in probes:
        out.setdefault(p.target, p)
    return out


def functions_of(mode: str) -> dict[str, Probe]:
    """A mode's kernel functions, each with its first row (the kprobe), in table order."""
    return by_target(p for p in rows(mode, "kprobe") if p.is_function)


def function_targets() -> tuple[str, ...]:
    """Every kernel function of the table, for the kernel view."""
    return tuple(by_target(p for p in PROBES if p.is_function))


def tracepoint_targets() -> tuple[str, ...]:
    return tuple(by_target(p for p in PROBES if not p.is_function))


@dataclass(frozen=True)
class Plan:
    """A mode and a backend, with the rows this kernel allows and what it lacks."""

    mode: str
    backend: str
    probes: tuple[Probe, ...] = ()
    missing: tuple[str, ...] = ()  # targets, as recordings list them
    notes: tuple[str, ...] = ()

    def defines(self) -> list[str]:
        """-DHAVE_<target> for each target planned: the programs bcc attaches at load
        are compiled only for those (see bpf/*/fentry.bpf.c and the tracepoints)."""
        return list(dict.fromkeys(p.define for p in self.probes))

    def attached_names(self) -> list[str]:
        return [p.name for p in self.probes]

    def attached_at(self, when: str) -> tuple[Probe, ...]:
        return tuple(p for p in self.probes if p.attach == when)

    @property
    def functions(self) -> tuple[str, ...]:
        return tuple(by_target(p for p in self.probes if p.is_function))

    @property
    def tracepoints(self) -> tuple[str, ...]:
        return tuple(by_target(p for p in self.probes if not p.is_function))


def _present(p: Probe, view: KernelView) -> bool:
    if not p.is_function:
        return p.target in view.tracepoints
    if p.hook in ("fentry", "fexit") and view.btf_functions is not None:
        return p.target in view.btf_functions  # an fentry program attaches only to a function with BTF
    return p.target in view.functions


def check_mode(mode: str, view: KernelView, *, follow: bool = False, by_pid: bool = False) -> None:
    """A UserError when the kernel lacks what the mode needs with every backend (MODE rows)."""
    options = {"follow": follow, "by_pid": by_pid}
    for p in PROBES:
        if (p.need == MODE and mode in p.modes and (not p.only_with or options[p.only_with])
                and not _present(p, view)):
            raise UserError(f"tracepoint {p.target} not found: {p.note}", p.remedy)


def _check_backend(backend: str, view: KernelView) -> None:
    if backend == "kprobe" and not view.kprobes:
        raise UserError(
            "this kernel has no kprobes (kprobe_events is missing: CONFIG_KPROBES or CONFIG_KPROBE_EVENTS is off)",
            "use --backend auto (falls back to fentry, then tracepoints), or run it in a VM with a distro "
            "kernel: `sudo trace-halfclose vm`",
        )
    if backend == "fentry" and not view.btf:
        raise UserError("fentry/fexit needs the kernel's BTF (/sys/kernel/btf/vmlinux)",
                        "use a kernel built with CONFIG_DEBUG_INFO_BTF=y, or --backend kprobe/tracepoint")
    if backend not in BACKENDS:
        raise UserError(f"unknown backend {backend!r}", f"choose one of auto, {', '.join(BACKENDS)}")


def _missing_required(backend: str, absent: list[Probe], view: KernelView) -> UserError | None:
    names = list(by_target(p for p in absent if p.need == BACKEND))
    if not names:
        return None
    if backend != "tracepoint":
        where = "/proc/kallsyms" if backend == "kprobe" or view.btf_functions is None else "/proc/kallsyms with BTF"
        return UserError(
            f"kernel function(s) {', '.join(names)} not found in {where}, so the {backend} "
            "backend cannot trace this kernel",
            "use --backend tracepoint, or another kernel with `trace-halfclose vm --kernel PATH`",
        )
    return UserError(
        f"tracepoint(s) {', '.join(names)} not found: the tracepoint backend cannot trace this kernel",
        "mount tracefs (mount -t tracefs nodev /sys/kernel/tracing) or use a kernel with them (4.16+)",
    )


def plan_for(mode: str, backend: str, view: KernelView, *, follow: bool = False, by_pid: bool = False) -> Plan:
    """The plan for one mode and backend, or a UserError saying why it cannot run here.
    follow (watch): the command's new processes are watched; by_pid: exited pids are forgotten."""
    check_mode(mode, view, follow=follow, by_pid=by_pid)
    _check_backend(backend, view)
    wanted = rows(mode, backend, follow=follow, by_pid=by_pid)
    present = {p for p in wanted if _present(p, view)}
    # A row of a group is usable only when every row of its group is there.
    broken = {p.together for p in wanted if p.together and p not in present}
    usable = [p for p in wanted if p in present and p.together not in broken]
    absent = [p for p in wanted if p not in usable]
    error = _missing_required(backend, [p for p in wanted if p not in present], view)
    if error:
        raise error
    missing = tuple(by_target(absent))
    notes = tuple(f"{name}: {p.note}" for name, p in by_target(absent).items() if p.note)
    return Plan(mode, backend, tuple(usable), missing, notes)


def candidates(mode: str, requested: str, view: KernelView, *, follow: bool = False,
               by_pid: bool = False) -> tuple[list[Plan], list[str]]:
    """Plans to try in order (auto: kprobe, fentry, tracepoint), and why each skipped backend was skipped."""
    check_mode(mode, view, follow=follow, by_pid=by_pid)  # fails every backend alike: said once
    names = BACKENDS if requested == "auto" else (requested,)
    plans, skipped = [], []
    for name in names:
        try:
            plans.append(plan_for(mode, name, view, follow=follow, by_pid=by_pid))
        except UserError as exc:
            if requested != "auto":
                raise
            skipped.append(f"{name}: {exc.message}")
    if not plans:
        raise UserError("no backend can trace this kernel: " + "; ".join(skipped), "run `trace-halfclose doctor`")
    return plans, skipped
