"""Which backend and which probes, for both modes, from one table.

Like bcc's tcpdrop.py, the tool checks before it attaches and says what it
used and what it left out. PROBES has one row per hook: its kernel target,
the hook's kind, the program in the mode's BPF text (tracer/collect/sources.py
joins bpf/), the modes using it, what its absence means, and when it is
attached. A Plan keeps the rows this kernel allows; the -DHAVE_ flags, the
attach loop (tracer/collect/bpf.py) and the names a recording lists as
attached are all derived from them.

Tracepoints are attached as raw tracepoints (BPF_PROG_TYPE_RAW_TRACEPOINT):
the program gets the tracepoint's C arguments (ctx->args[n]) instead of the
record a perf tracepoint builds, and attaching or detaching one takes no RCU
grace period (closing a perf tracepoint waits for one:
perf_trace_event_unreg -> tracepoint_synchronize_unregister,
kernel/trace/trace_event_perf.c, 6.1 and 6.12). A row names the argument types
its program reads, in order (`args`); the Plan checks them against the
tracepoint's prototype in BTF (the typedef btf_trace_<name>), so no program
reads an argument the kernel passes elsewhere. A row of the tracepoint table
keeps the kernel's "category:name" (tracefs, recordings); the raw tracepoint
is attached by its name alone.

Arguments by position, from the running kernel's BTF: a row names the
parameters its program reads (`reads`, by name), the Plan turns the
prototype BTF gives into -DARG_<function>_<parameter>=<slot> and, for fexit,
-DRET_<function>=<slot> (the return value follows every parameter). A
function whose prototype lacks a parameter a row reads is not probed by that
row (missing, with the reason): no program reads a slot the kernel does not
have where the tool expects it (tcp_recvmsg has 6, 5 or 4 parameters
depending on the kernel, tracer/kernel/eras.py).

Pure: it takes a KernelView (tracer/kernel/view.py), a plain description of
the kernel that tests can write by hand.
"""
from __future__ import annotations

from dataclasses import dataclass

from tracer.errors import UserError
from tracer.kernel.eras import floor_missing
from tracer.kernel.view import KernelView

BACKENDS = ("kprobe", "fentry", "tracepoint")
MODES = ("repro", "watch")  # the reproduction (trace-halfclose run), trace-halfclose watch
REPRO, WATCH, BOTH = ("repro",), ("watch",), ("repro", "watch")

# When a program is attached.
LOAD = "load"  # by bcc as it loads the text: KFUNC_PROBE, KRETFUNC_PROBE
EXPLICIT = "explicit"  # by BpfSession right after the load (kprobes, raw tracepoints)
CLIENT_IO = "client_io"  # only while the reproduction's client reads and writes (raw_syscalls)

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
SYS_ENTER_TP = "raw_syscalls:sys_enter"  # every syscall's entry: the syscall events are built on it
SYS_EXIT_TP = "raw_syscalls:sys_exit"
# The write-like calls watch follows (kernel function taking the fd, syscall
# name), read from /proc/kallsyms of Debian's 6.1.0-56 and 6.12.117 and 6.18.44.
CALLS = (("ksys_write", "write"), ("__sys_sendto", "sendto"), ("__sys_sendmsg", "sendmsg"), ("do_writev", "writev"))


@dataclass(frozen=True)
class Probe:
    """One hook: a row of PROBES."""

    target: str  # a kernel function, or a tracepoint "category:name"
    hook: str  # kprobe, kretprobe, fentry, fexit, tracepoint (attached raw)
    program: str  # the program's name in the mode's joined BPF text
    modes: tuple[str, ...]
    need: str = OPTIONAL
    note: str = ""  # OPTIONAL: why it may be missing; MODE: why the mode needs it
    attach: str = EXPLICIT
    backends: tuple[str, ...] = ()  # tracepoints: the backends using it (functions: their hook's)
    only_with: str = ""  # watch: only with this filter option ("follow": a command is started; "by_pid")
    together: str = ""  # rows with the same value are used all or none (a syscall's enter and exit)
    remedy: str = ""  # MODE: what to do when it is missing
    reads: tuple[str, ...] = ()  # functions: the parameters its program reads, by name (slots from BTF)
    # tracepoints: the C types of the arguments its program reads, from the first on (ctx->args[0..]);
    # a tuple gives the spellings kernels use for one slot. `const` is not compared (same layout).
    args: tuple[str | tuple[str, ...], ...] = ()

    @property
    def reads_return(self) -> bool:
        """An fexit program reads the return value's slot, which only the prototype places."""
        return self.hook == "fexit"

    @property
    def is_function(self) -> bool:
        return self.hook != "tracepoint"

    @property
    def name(self) -> str:
        """As recordings list it: kprobe:tcp_reset, fexit:tcp_done, tracepoint:sock:inet_sock_set_state."""
        return f"{self.hook}:{self.target}"

    @property
    def define(self) -> str:
        """HAVE_<function> or HAVE_<tracepoint name>: the guard of an optional program."""
        return f"-DHAVE_{self.tracepoint_name}"

    @property
    def tracepoint_name(self) -> str:
        """A tracepoint's name without its category: the raw tracepoint's, and its btf_trace_ typedef's."""
        return self.target.split(":")[-1]

    def serves(self, mode: str, backend: str) -> bool:
        return mode in self.modes and backend in (self.backends or (HOOK_BACKEND[self.hook],))


def _function(func: str, entry: str, ret: str | None, modes: tuple[str, ...], need: str = OPTIONAL,
              note: str = "", reads: tuple[str, ...] = ("sk",)) -> tuple[Probe, ...]:
    """A kernel function's rows: the kprobe on entry (and a kretprobe when its return is an
    event), and the same through fentry/fexit, whose programs bcc names kfunc__/kretfunc__.
    reads: the parameters the entry and fexit programs read (a kretprobe reads only the
    return value, and reports on the socket its entry stashed). A function's rows of one
    backend are used together: a return without its entry reports nothing."""
    rows = [Probe(func, "kprobe", entry, modes, need, note, together=func, reads=reads)]
    rows += [Probe(func, "kretprobe", ret, modes, need, note, together=func)] if ret else []
    rows += [Probe(func, "fentry", f"kfunc__{func}", modes, need, note, LOAD, together=func, reads=reads)]
    rows += [Probe(func, "fexit", f"kretfunc__{func}", modes, need, note, LOAD, together=func, reads=reads)] \
        if ret else []
    return tuple(rows)


def _tracepoint(tp: str, modes: tuple[str, ...], backends: tuple[str, ...], need: str = OPTIONAL,
                program: str = "", attach: str = EXPLICIT, **more) -> Probe:
    """A tracepoint's row; its program is tp_<name> unless named."""
    return Probe(tp, "tracepoint", program or f"tp_{tp.split(':')[1]}", modes, need,
                 attach=attach, backends=backends, **more)


ALL = BACKENDS
TP = ("tracepoint",)
SK = ("struct sock *",)
STATE_ARGS = ("struct sock *", "int", "int")  # inet_sock_set_state(sk, oldstate, newstate)
SYSCALL_ARGS = ("struct pt_regs *", "long int")  # sys_enter(regs, id), sys_exit(regs, ret)
PROBES: tuple[Probe, ...] = (
    # The write path (tcp_sendmsg_locked, net/ipv4/tcp.c, since 4.18; what it calls on an error).
    # The parameter names are the kernel's (BTF; the same in every tree read, 5.4.59 to 6.12.117,
    # and in the BTF of 6.18.44), so a prototype that lacks one is a shape the tool does not know.
    *_function("tcp_sendmsg_locked", "sendmsg_enter", "sendmsg_return", BOTH, BACKEND, reads=("sk", "size")),
    *_function("sk_stream_wait_connect", "wait_connect_enter", "wait_connect_return", BOTH),
    *_function("sk_stream_error", "stream_error_enter", "stream_error_return", BOTH, reads=("sk", "err")),
    # The RST, sk_err and the close (net/ipv4/tcp_input.c, net/ipv4/tcp.c). tcp_reset(sk) until 5.10,
    # (sk, skb) since 5.11: only sk is read.
    *_function("tcp_reset", "reset_enter", None, BOTH, BACKEND),
    *_function("tcp_done_with_error", "done_with_error_enter", None, BOTH, reads=("sk", "err"),
               note="mainline 6.11, stable 6.10.y, 6.6.44+, 6.1.103+; before, tcp_reset wrote sk_err itself"),
    *_function("tcp_done", "done_enter", "done_return", BOTH, BACKEND),
    *_function("tcp_fin", "fin_enter", "fin_return", BOTH),  # GCC may inline it into its callers (net/ipv4/tcp_input.c)
    # Who sent the RST (a `reason` parameter follows since 6.10: not read), and reads (scenarios that read).
    *_function("tcp_v4_send_reset", "send_reset_v4_enter", None, REPRO, reads=("sk", "skb")),
    *_function("tcp_v6_send_reset", "send_reset_v6_enter", None, REPRO, reads=("sk", "skb")),
    *_function("tcp_send_active_reset", "active_reset_enter", None, REPRO),
    *_function("tcp_recvmsg", "recvmsg_enter", "recvmsg_return", REPRO, reads=("sk", "len")),
    # getsockopt(SO_ERROR) (scenarios that ask it): sk_getsockopt (net/core/sock.c, 6.1+) takes sk_err.
    # kprobe only: its sockptr_t arguments are structs by value, whose fentry Debian 6.1 refuses (524).
    _function("sk_getsockopt", "getsockopt_enter", None, REPRO, reads=("sk", "optname"),
              note="since 6.1 (net/core/sock.c); without it SO_ERROR is worded from the source, inferred")[0],
    # watch: where each write-like call has its fd (the return type decides the kretprobe's cast).
    *_function("ksys_write", "ksys_write_enter", "call_return_long", WATCH, reads=("fd",)),
    *_function("__sys_sendto", "sys_sendto_enter", "call_return_int", WATCH, reads=("fd",)),
    *_function("__sys_sendmsg", "sys_sendmsg_enter", "call_return_long", WATCH, reads=("fd",)),
    *_function("do_writev", "do_writev_enter", "call_return_long", WATCH, reads=("fd",)),
    # Every state change: the reproduction waits for CLOSE_WAIT with it; watch follows each socket's life.
    # The argument types of each tracepoint: its TP_PROTO (include/trace/events/{sock,tcp,net,signal,task,
    # sched,syscalls}.h of 6.1 and 6.12, Debian's headers; the btf_trace_ typedefs of 6.18.44's BTF).
    _tracepoint(STATE_TP, REPRO, ("kprobe", "fentry"), args=STATE_ARGS),
    _tracepoint(STATE_TP, REPRO, TP, BACKEND, args=STATE_ARGS),
    _tracepoint(STATE_TP, WATCH, ALL, MODE, note="watch follows each socket's life with it",
                remedy="mount tracefs (mount -t tracefs nodev /sys/kernel/tracing), or use a kernel 4.16+",
                args=STATE_ARGS),
    # The tracepoint backend: tcp_reset's first statement, the client's writes, sk_err, the result.
    _tracepoint("tcp:tcp_receive_reset", BOTH, TP, BACKEND, args=SK),
    # Every syscall's entry and exit (include/trace/events/syscalls.h: sys_enter(regs, id), sys_exit(regs,
    # ret)); the programs keep the client's read, write and sendto. Attached only while it does I/O.
    _tracepoint(SYS_ENTER_TP, REPRO, TP, BACKEND, "io_enter", CLIENT_IO, together="io", args=SYSCALL_ARGS),
    _tracepoint(SYS_EXIT_TP, REPRO, TP, BACKEND, "io_exit", CLIENT_IO, together="io", args=SYSCALL_ARGS),
    _tracepoint("sock:inet_sk_error_report", BOTH, TP, args=SK,
                note="since 5.14 (sk_error_report, net/core/sock.c); before, sk_err is seen at the next write"),
    _tracepoint("sock:sock_send_length", BOTH, TP, args=("struct sock *", "int"),
                note="since 6.3 (sock_sendmsg_nosec, net/socket.c); before, only write(2)'s return"),
    # 6.1: full sockets only; 6.10+: also timewait and no socket, and a third argument, reason (not read).
    _tracepoint("tcp:tcp_send_reset", REPRO, TP, args=("struct sock *", "struct sk_buff *")),
    # Packets and signals, with every backend.
    _tracepoint(PACKET_TP, REPRO, ALL, args=("struct sk_buff *",)),
    _tracepoint(SIGNAL_TP, REPRO, ALL, args=("int", "struct kernel_siginfo *", "struct task_struct *", "int", "int")),
    # watch with tracepoints: the write-like calls from every syscall's entry and exit, for the whole watch.
    _tracepoint(SYS_ENTER_TP, WATCH, TP, BACKEND, "watch_sys_enter", together="calls", args=SYSCALL_ARGS),
    _tracepoint(SYS_EXIT_TP, WATCH, TP, BACKEND, "watch_sys_exit", together="calls", args=SYSCALL_ARGS),
    # watch: a socket's end, and the processes it follows.
    _tracepoint(DESTROY_TP, WATCH, ALL, args=SK),
    _tracepoint(NEWTASK_TP, WATCH, ALL, MODE, only_with="follow", note="the command's processes cannot be followed",
                remedy="watch it by --comm or --port instead of starting it",
                args=("struct task_struct *", ("long unsigned int", "u64"))),  # clone_flags: unsigned long, then u64
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
    notes: tuple[str, ...] = ()  # "target: why", for the missing targets that have a reason
    # function -> its parameters' names in order (from BTF), for the planned functions that read arguments
    shapes: tuple[tuple[str, tuple[str, ...]], ...] = ()
    # -DOFF_<field>=<bytes>: the struct offsets its text reads, from BTF (prepare.offsets_for)
    offsets: tuple[str, ...] = ()

    def defines(self) -> list[str]:
        """-DHAVE_<target> for each target planned: the programs bcc attaches at load
        are compiled only for those (see bpf/*/fentry.bpf.c and the tracepoints); then
        where each planned program finds its arguments (argument_defines)."""
        return list(dict.fromkeys(p.define for p in self.probes)) + self.argument_defines()

    def argument_defines(self) -> list[str]:
        """-DARG_<function>_<parameter>=<slot> for each parameter a planned row reads, and
        -DRET_<function>=<slot> for a planned fexit: the slot of the return value, after
        every parameter. The slots are the BTF prototype's: PT_REGS_PARM<slot+1> in a
        kprobe (HC_KPROBE_ARG, bpf/args.h), ctx[slot] in an fentry/fexit program."""
        shapes = dict(self.shapes)
        out: list[str] = []
        for p in self.probes:
            names = shapes.get(p.target)
            if names is None:
                continue
            out += [f"-DARG_{p.target}_{param}={names.index(param)}" for param in p.reads]
            out += [f"-DRET_{p.target}={len(names)}"] if p.reads_return else []
        return list(dict.fromkeys(out))

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


def _needs_prototype(p: Probe) -> bool:
    """fentry/fexit programs read every argument and the return value at slots only BTF gives.
    A kprobe that reads only its function's first parameter (sk or fd: the first in every tree
    read, 5.4.59 to 6.12.117) works from kallsyms alone, for a function BTF leaves out; one that
    reads more needs the prototype."""
    return p.hook in ("fentry", "fexit") or len(p.reads) > 1


def _bare(c_type: str) -> str:
    """A C type without its const qualifiers: the layout is the same."""
    return " ".join(word for word in c_type.split() if word != "const")


def tracepoint_shape_problem(p: Probe, view: KernelView) -> str | None:
    """Why a tracepoint row's program must not be attached although the tracepoint is
    there: its prototype in BTF is unknown, or differs from the argument types the
    program reads. None: checked and right, or nothing read, or not checked (a view
    that did not read BTF, as tests write by hand)."""
    if not p.args or view.tracepoint_protos is None:
        return None
    proto = view.tracepoint_protos.get(p.target)
    if proto is None:
        why = view.prototype_errors.get(p.target) or "not in BTF"
        return f"its prototype is unknown ({why}), so where its arguments are is unknown"
    have = [_bare(x.type) for x in proto.params]
    for slot, want in enumerate(p.args):
        spellings = {_bare(w) for w in ((want,) if isinstance(want, str) else want)}
        if slot >= len(have) or have[slot] not in spellings:
            return (f"its prototype in BTF, ({', '.join(x.type for x in proto.params)}), does not begin with "
                    f"({', '.join(w if isinstance(w, str) else w[0] for w in p.args)}): a shape the tool does not know")
    return None


def _shape_problem(p: Probe, view: KernelView) -> str | None:
    """Why this row must not be used on this kernel although its function is there: the
    prototype is unknown, or lacks a parameter the program reads. None: its slots are known."""
    if not p.is_function:
        return tracepoint_shape_problem(p, view)
    if not p.reads and not p.reads_return:
        return None
    proto = (view.prototypes or {}).get(p.target)
    if proto is None:
        if not _needs_prototype(p):
            return None
        why = view.prototype_errors.get(p.target) or (
            "BTF was not read" if view.prototypes is None else "not in BTF")
        return f"its prototype is unknown ({why}), so where its arguments are is unknown"
    lacking = [param for param in p.reads if proto.position(param) is None]
    if lacking:
        return (f"its prototype in BTF, ({', '.join(proto.names)}), has no parameter "
                f"{' or '.join(repr(x) for x in lacking)}: a shape the tool does not know")
    if p.hook == "kprobe" and max(proto.position(x) for x in p.reads) >= 6:
        return "an argument it reads is past the sixth, on the stack where a kprobe does not read"
    return None


def _shape(p: Probe, view: KernelView) -> tuple[str, tuple[str, ...]] | None:
    """The parameter names a usable row's slots come from: BTF's, or, for a kprobe reading
    only its first parameter of a function BTF leaves out, that parameter in slot 0."""
    if not p.is_function or (not p.reads and not p.reads_return):
        return None
    proto = (view.prototypes or {}).get(p.target)
    return (p.target, proto.names if proto is not None else p.reads)


def check_floor(view: KernelView) -> None:
    """One line naming what the kernel lacks that every backend needs, and the oldest
    kernel that has it (tracer/kernel/eras.py): below the floor, nothing is tried."""
    lacking = floor_missing(view, refused_elsewhere=("btf",))  # without BTF, load_btf refuses first (view.py)
    if lacking:
        raise UserError(f"this kernel lacks {lacking.feature}, which every backend needs: Linux {lacking.since} "
                        f"or newer has it ({lacking.source})",
                        "boot a newer kernel, e.g. `trace-halfclose vm --kernel PATH` (`trace-halfclose vm --kconfig` "
                        "lists the options a kernel needs)")


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


def _missing_required(backend: str, absent: list[Probe], view: KernelView,
                      shapeless: dict[str, str] | None = None) -> UserError | None:
    names = list(by_target(p for p in absent if p.need == BACKEND))
    if not names and shapeless:
        target, why = next(iter(shapeless.items()))
        if ":" in target:
            return UserError(f"tracepoint {target}: {why}, so the {backend} backend cannot trace this kernel",
                             "report this kernel's prototype of the tracepoint (`bpftool btf dump file "
                             f"/sys/kernel/btf/vmlinux format c | grep 'btf_trace_{target.split(':')[1]})'`)")
        return UserError(f"kernel function {target}: {why}, so the {backend} backend cannot trace this kernel",
                         "use another backend (--backend tracepoint), or report this kernel's prototype of "
                         f"{target} (`bpftool btf dump file /sys/kernel/btf/vmlinux | grep -A3 \"'{target}'\"`)")
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
    found = {p for p in wanted if _present(p, view)}
    # There, but its arguments are not where the program would read them: not used.
    shapeless = {p: why for p in wanted if p in found and (why := _shape_problem(p, view))}
    present = found - set(shapeless)
    # A row of a group is usable only when every row of its group is there.
    broken = {p.together for p in wanted if p.together and p not in present}
    usable = [p for p in wanted if p in present and p.together not in broken]
    absent = [p for p in wanted if p not in usable]
    error = _missing_required(backend, [p for p in wanted if p not in found], view,
                              {p.target: why for p, why in shapeless.items() if p.need in (BACKEND, MODE)})
    if error:
        raise error
    missing = tuple(by_target(absent))
    whys = {p.target: why for p, why in shapeless.items()}
    notes = tuple(f"{name}: {whys.get(name) or p.note}" for name, p in by_target(absent).items()
                  if whys.get(name) or p.note)
    shapes = tuple(dict.fromkeys(s for p in usable if (s := _shape(p, view))))
    return Plan(mode, backend, tuple(usable), missing, notes, shapes)


def candidates(mode: str, requested: str, view: KernelView, *, follow: bool = False,
               by_pid: bool = False) -> tuple[list[Plan], list[str]]:
    """Plans to try in order (auto: kprobe, fentry, tracepoint), and why each skipped backend was skipped."""
    check_floor(view)
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
