"""The annotated timeline of one connection: values only, no prose.

annotate.py builds it, claims.py and verdicts.py judge it, and tracer/display/
words it (display/words.py turns each decision, placement and finding into
text). A decision is data -- which branch, the values that decided it,
observed or inferred -- so nothing downstream ever parses a sentence back.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, field

from tracer.record.event import Event, Kind
from tracer.record.recording import Recording

# A tcp_sendmsg_locked call that none of the traced write-like calls led to
# (sendmmsg, sendfile, io_uring, the kernel): watch mode names it so.
UNTRACED_CALL = "tcp_sendmsg_locked"


@dataclass(frozen=True)
class Call:
    """A write-like call or a read, with the result its caller got."""

    index: int  # 1, 2, ... (0: the reproduction's write before the server's close)
    op: str  # "write" or "read"
    name: str  # write, sendto, sendmsg, writev, read, or UNTRACED_CALL
    size: int  # bytes asked; -1 when not known
    ret: int | None  # bytes, or -1 with errno set; None: its return was not seen
    errno: str | None
    t_start_ns: int
    t_end_ns: int | None
    killed_by: str | None = None  # the caller died in this call (e.g. SIGPIPE)
    pid: int | None = None  # watch: the calling task
    tid: int | None = None
    comm: str | None = None
    fd: int | None = None


@dataclass(frozen=True)
class Subject:
    """Which sockets play which role: the connection's own socket is the client's.

    The reproduction knows its client and server ports, and the client's pid
    (only its calls are the writes). A watched connection is its own socket,
    written by whichever task wrote."""

    client_port: int
    server_port: int
    writer_pid: int | None = None  # None: every write path event is the connection's
    own_sk: int | None = None  # watch: the connection's socket (the client side)


class Branch(enum.Enum):
    """Which branch of the kernel decided a write's or read's result.

    Write branches are those of tcp_sendmsg_locked (net/ipv4/tcp.c) and
    sk_stream_wait_connect (net/core/stream.c); read branches those of
    tcp_recvmsg_locked (net/ipv4/tcp.c); read in Linux 6.1.192 and 6.12.117."""

    NO_EVENTS = "no events"  # the kernel reported nothing for the call
    NO_RETURN = "no return"  # its return was not seen
    QUEUED = "queued"  # ESTABLISHED/CLOSE_WAIT, sk_err 0, send side open
    WAIT_SOCK_ERROR = "wait_connect: sock_error"  # sk_stream_wait_connect's sock_error() took sk_err
    WAIT_STATE = "wait_connect: state"  # sk_err 0, not SYN_SENT/SYN_RECV -> -EPIPE
    WAIT_OTHER = "wait_connect: other"  # sk_stream_wait_connect returned something else
    WAIT_NO_RETURN = "wait_connect: no return"
    WAIT_UNTRACEABLE = "wait_connect: untraceable"  # the kernel's sk_stream_wait_connect could not be traced
    ERR_CHECK = "sk_err check"  # `if (sk->sk_err || (sk->sk_shutdown & SEND_SHUTDOWN))` -> do_error
    NO_WAIT = "no wait_connect"  # none of the above, without sk_stream_wait_connect
    UNDECIDED = "undecided"  # tracepoints: the values single out no branch
    EOF = "end of file"  # read: RCV_SHUTDOWN, nothing queued -> 0
    EOF_ERR_LEFT = "end of file, sk_err left"  # read: SOCK_DONE is checked before sk_err -> 0, sk_err stays
    READ_SK_ERR = "read: sock_error"  # read: nothing queued, no SOCK_DONE, sock_error() takes sk_err
    READ_ERROR = "read error"
    READ_DATA = "read data"


@dataclass(frozen=True)
class Decision:
    """The branch that decided a call's result and the values that decided it."""

    branch: Branch
    inferred: bool  # from values before and after (tracepoints), not from the functions seen
    values: dict = field(default_factory=dict)  # state, sk_err, sk_shutdown, ret, wait_ret, sk_err_after, ...

    @property
    def observed(self) -> bool:
        return self.branch not in (Branch.NO_EVENTS, Branch.NO_RETURN, Branch.WAIT_UNTRACEABLE, Branch.UNDECIDED)


@dataclass(frozen=True)
class PathStep:
    """One function (or hook) on a call's kernel path, with the values its events carried."""

    role: str  # sendmsg, wait_connect, stream_error, syscall_enter, send_length, syscall_exit, read_entry
    func: str  # the function or hook shown: tcp_sendmsg_locked, sys_enter_sendto, ...
    ret: int | None
    values: dict = field(default_factory=dict)  # what the JSON "path" entries carry besides func and ret
    returned: bool = True  # for an entry: its return event was seen
    sk_err_at_return: int | None = None  # sk_stream_error: sk_err when it returned


@dataclass(frozen=True)
class Hook:
    """Where a call's socket values were read: a kernel function's entry, or the syscall's entry."""

    kind: str  # "function" or "syscall"
    name: str  # tcp_sendmsg_locked, tcp_recvmsg; or the call: write, sendto, ..., read


@dataclass(frozen=True)
class IoNote:
    """A write or a read, annotated."""

    call: Call
    t_ns: int  # relative to the timeline's start
    observed_at: Hook | None  # None: not seen in the kernel
    state: str | None
    sk_err: int | None
    sk_shutdown: int | None
    path: tuple[PathStep, ...]
    decision: Decision
    syscall_ns: int

    @property
    def index(self) -> int:
        return self.call.index

    @property
    def op(self) -> str:
        return self.call.op

    @property
    def size(self) -> int:
        return self.call.size

    @property
    def ret(self) -> int:
        return self.call.ret

    @property
    def errno(self) -> str | None:
        return self.call.errno

    @property
    def killed_by(self) -> str | None:
        return self.call.killed_by

    @property
    def observed(self) -> bool:
        return self.observed_at is not None

    @property
    def inferred(self) -> bool:
        return self.decision.inferred




@dataclass(frozen=True)
class Placement:
    """Where a kernel event fell relative to the writes (it matters for the RST)."""

    write: int  # the write's index
    relation: str  # "after_return" (inside the syscall, after tcp_sendmsg_locked returned), "in_syscall", "after"
    delta_ns: int = 0  # after_return: since tcp_sendmsg_locked returned; after: since the write returned
    ret: int | None = None  # after_return: tcp_sendmsg_locked's return value


@dataclass(frozen=True)
class KernelNote:
    t_ns: int
    side: str  # client, server, listener or socket
    func: str
    summary: str
    where: Placement | None
    event: Event
    values: dict = field(default_factory=dict)
    teardown: bool = False  # after the reproduction ended: the client's and server's exit


@dataclass(frozen=True)
class QueryNote:
    """A client step that asked the socket (getsockopt SO_ERROR, poll), annotated with the kernel
    path that answered it. Neither sk_getsockopt nor tcp_poll is probed: the branch is worded
    from their source and the client's socket as the traced events left it, so it is inferred
    -- except that a later call's entry can confirm that SO_ERROR cleared sk_err."""

    t_ns: int
    what: str  # "SO_ERROR" or "poll"
    index: int
    value: str  # as the client got it
    facts: dict  # branch ("so_error_taken", "so_error_none", "poll"), and the values it was decided on
    inferred: bool = True


@dataclass(frozen=True)
class MarkNote:
    t_ns: int
    what: str


@dataclass(frozen=True)
class CallFacts:
    """Evidence that is a call's own facts, worded by display: "write" (its result and the
    socket at its entry) or "decision" (the branch that decided it, after `prefix`)."""

    note: IoNote
    what: str = "write"
    prefix: str = ""


@dataclass(frozen=True)
class Finding:
    """One line of the summary, as a value: `kind` says which, `values` what was seen."""

    kind: str
    values: dict = field(default_factory=dict)


@dataclass
class Timeline:
    recording: Recording
    t0_ns: int
    items: list  # IoNote | KernelNote | QueryNote | MarkNote, in time order
    writes: list[IoNote]
    findings: list[Finding]
    reads: list[IoNote] = field(default_factory=list)
    queries: list[QueryNote] = field(default_factory=list)

    def kernel_notes(self, kind: Kind | None = None, side: str | None = None) -> list[KernelNote]:
        """The scenario's kernel steps in time order (not the teardown's), optionally of one
        event kind and one side: what claims and verdicts judge."""
        return [n for n in self.items if isinstance(n, KernelNote) and not n.teardown
                and (kind is None or n.event.kind == kind) and (side is None or n.side == side)]

    def call_name(self, index: int) -> str:
        """The call behind write `index` (write, sendto, ...), for words like `sendto(2)`."""
        return next((w.call.name for w in self.writes if w.index == index), "write")
