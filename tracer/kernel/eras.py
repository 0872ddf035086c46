"""What differs between kernel eras for this tool, as data: each fact names the
feature, the oldest kernel that has it, where that was read, what it changes
for the tool, and how the running kernel is asked -- its BTF, /proc/kallsyms,
a tracepoint's format in tracefs -- never its version string (distributions
backport: Debian's 6.1.192 has 6.11's tcp_done_with_error).

Trees read (`git show <tree>:<path>` or the unpacked source), cited by version below:
5.4.59, 5.7.14, 5.10.13, 5.11.14, 5.14.2, 5.15.100, 5.19, 6.1.192 (Debian's
linux-source-6.1), 6.2.12, 6.3.8, 6.9.0, 6.11.11, 6.12.117 (Debian's
linux-source-6.12); the BTF of Debian's 6.1.0-57 and 6.12.117 and of this
machine's 6.18.44; Debian's 6.1 changelog for the 6.1.y backports. A version
given as "X" below means: absent in the tree before X that was read, present
in X or the first tree read after it (the trees say which).

Pure: a fact's `present` reads a KernelView (tracer/kernel/view.py); the
verdicts use the small functions at the end on what a recording kept.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from tracer.kernel.view import KernelView

SEND_RESET_TP = "tcp:tcp_send_reset"
ERROR_REPORT_TP = "sock:inet_sk_error_report"
SEND_LENGTH_TP = "sock:sock_send_length"
# The tracepoints whose fields a recording keeps, so that replay judges as the run did.
RECORDED_FIELDS = (SEND_RESET_TP,)


@dataclass(frozen=True)
class Era:
    """One fact that differs between kernels."""

    key: str
    title: str  # a few words, for a table row
    feature: str  # what it is
    since: str  # the oldest kernel that has it ("until X": the last that has it)
    source: str  # function and file, and the trees it was read in
    effect: str  # what it changes for this tool
    asked: str  # how the running kernel is asked
    present: Callable[[KernelView], bool | None]  # None: the view cannot say
    floor: bool = False  # without it the tool refuses to run
    backports: str = ""  # stable releases that have it too

    @property
    def when(self) -> str:
        """The kernels that have it: "Linux 5.8+", "Linux until 5.18", "Linux 6.11+, stable 6.1.103+"."""
        base = f"Linux {self.since}" if self.since.startswith("until") else f"Linux {self.since}+"
        return base + (f", stable {self.backports}" if self.backports else "")


def _proto_has(func: str, param: str) -> Callable[[KernelView], bool | None]:
    def present(view: KernelView) -> bool | None:
        proto = (view.prototypes or {}).get(func)
        return None if proto is None else param in proto.names
    return present


def _tp_field(tp: str, field: str) -> Callable[[KernelView], bool | None]:
    def present(view: KernelView) -> bool | None:
        if tp not in view.tracepoints:
            return None
        fields = view.tracepoint_fields.get(tp)
        return None if fields is None else field in fields
    return present


ERAS: tuple[Era, ...] = (
    Era("btf", "BTF", "the kernel's BTF in sysfs (/sys/kernel/btf/vmlinux, CONFIG_DEBUG_INFO_BTF)", "5.4",
        "kernel/bpf/sysfs_btf.c (present in 5.4.59, the oldest tree read)",
        "every struct offset and every probed function's argument positions come from it",
        "/sys/kernel/btf/vmlinux exists", lambda v: v.btf, floor=True),
    Era("ringbuf", "BPF ring buffer", "the BPF ring buffer (BPF_MAP_TYPE_RINGBUF)", "5.8",
        "kernel/bpf/ringbuf.c, include/uapi/linux/bpf.h (absent in 5.7.14, present in 5.10.13)",
        "every event reaches user space through it (bpf/common.bpf.c)",
        "BTF: enum bpf_map_type has BPF_MAP_TYPE_RINGBUF; else kallsyms: bpf_ringbuf_output",
        lambda v: v.ringbuf, floor=True),
    Era("tcp_reset_skb", "tcp_reset(sk, skb)", "tcp_reset(sk, skb): the RST's skb as a second argument", "5.11",
        "tcp_reset, net/ipv4/tcp_input.c: (struct sock *sk) in 5.10.13, (sk, skb) in 5.11.14 and later",
        "none: every probe of tcp_reset reads only sk, its first argument, in either shape",
        "BTF: tcp_reset's prototype", _proto_has("tcp_reset", "skb")),
    Era("inet_sk_error_report", "sock:inet_sk_error_report",
        "tracepoint sock:inet_sk_error_report (sk_error_report())", "5.14",
        "sk_error_report, net/core/sock.c; include/trace/events/sock.h (absent in 5.11.14, present in 5.14.2)",
        "tracepoint backend: the sk_err an RST stored is seen there; before 5.14 only at the next write's entry",
        "tracefs: events/sock/inet_sk_error_report", lambda v: ERROR_REPORT_TP in v.tracepoints),
    Era("tcp_recvmsg_nonblock", "tcp_recvmsg(..., nonblock, ...)", "tcp_recvmsg's `nonblock` argument (6 arguments)",
        "until 5.18",
        "tcp_recvmsg, net/ipv4/tcp.c: (sk, msg, len, nonblock, flags, addr_len) in 5.15.100, (sk, msg, len, "
        "flags, addr_len) in 5.19 and 6.1.192, (sk, msg, len, flags) in the BTF of 6.18.44",
        "the fexit program's return value is in slot 6, 5 or 4: taken from BTF",
        "BTF: tcp_recvmsg's prototype", _proto_has("tcp_recvmsg", "nonblock")),
    Era("sock_send_length", "sock:sock_send_length", "tracepoint sock:sock_send_length (sock_sendmsg's result)", "6.3",
        "sock_sendmsg_nosec, net/socket.c; include/trace/events/sock.h (absent in 6.2.12, present in 6.3.8)",
        "tracepoint backend: the result inside the kernel; before 6.3 only write(2)'s return",
        "tracefs: events/sock/sock_send_length", lambda v: SEND_LENGTH_TP in v.tracepoints),
    Era("send_reset_every_rst", "tcp:tcp_send_reset on every RST",
        "tracepoint tcp:tcp_send_reset for every RST (timewait and no socket too)", "6.10",
        "tcp_v4_send_reset, net/ipv4/tcp_ipv4.c: `if (sk_fullsock(sk)) trace_tcp_send_reset(sk, skb)` in "
        "5.15.100:804, 6.1.192:823, 6.9.0:877; unconditional, with the event's new `reason` field, in "
        "6.11.11:884, 6.12.117:883 (include/trace/events/tcp.h; `state` was already in the old record)",
        "tracepoint backend: who sent an RST for data to a closed (timewait) server is seen only from 6.10",
        "tracefs: events/tcp/tcp_send_reset/format has a `reason` field", _tp_field(SEND_RESET_TP, "reason")),
    Era("tcp_done_with_error", "tcp_done_with_error", "tcp_done_with_error(sk, err) stores sk_err for tcp_reset",
        "6.11",
        "tcp_done_with_error, net/ipv4/tcp_input.c (absent in 6.9.0, present in 6.11.11 and 6.12.117; in 6.1.192 "
        "from 6.1.103: Debian's changelog, ChangeLog-6.1.103); before, tcp_reset stores sk_err itself (5.15.100)",
        "claim reset-sets-epipe: imprecise where it exists, verified where tcp_reset stores sk_err",
        "kallsyms: tcp_done_with_error", lambda v: "tcp_done_with_error" in v.functions,
        backports="6.10.y, 6.6.44+, 6.1.103+"),
)
BY_KEY: dict[str, Era] = {e.key: e for e in ERAS}


def floor_missing(view: KernelView, refused_elsewhere: tuple[str, ...] = ()) -> Era | None:
    """The first floor feature this kernel lacks (the tool then refuses), or None."""
    return next((e for e in ERAS if e.floor and e.key not in refused_elsewhere and e.present(view) is False), None)


# --- decisions on what a recording kept -------------------------------------------------------


def recorded_fields(view: KernelView) -> dict[str, list[str]]:
    """What a recording keeps of the tracepoints' fields (RECORDED_FIELDS), for replay."""
    return {tp: sorted(view.tracepoint_fields[tp]) for tp in RECORDED_FIELDS if tp in view.tracepoint_fields}


def send_reset_sees_timewait(fields: Mapping[str, list[str]] | None) -> bool | None:
    """Whether tcp:tcp_send_reset fired for timewait and no-socket RSTs on the recorded kernel:
    from its `reason` field (6.10+). None when the recording kept no fields (recorded before
    they were kept): not known."""
    if not fields or SEND_RESET_TP not in fields:
        return None
    return "reason" in fields[SEND_RESET_TP]
