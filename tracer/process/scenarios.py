"""The variants of the half-close, as data: what the server does, what the
client does, and what the kernel source says must happen.

Pure. tracer/repro_child.py acts the scenario out, tracer/verdicts.py
compares what was observed with `expect()`.

Expectations were read in Linux 6.1.192 and 6.12.117 (identical in these
paths; docs/kernel-source.md) and hold for 4.18 (tcp_sendmsg_locked) on:
  net/ipv4/tcp.c        tcp_sendmsg_locked: outside ESTABLISHED/CLOSE_WAIT,
                        sk_stream_wait_connect; tcp_close: RST instead of FIN
                        when data was unread or SO_LINGER is 0;
                        tcp_recvmsg_locked: 0 once SOCK_DONE/RCV_SHUTDOWN.
  net/core/stream.c     sk_stream_wait_connect: sock_error() first, then
                        -EPIPE; sk_stream_error: SIGPIPE for -EPIPE unless
                        MSG_NOSIGNAL.
  net/ipv4/tcp_input.c  tcp_reset: EPIPE in CLOSE_WAIT, ECONNRESET in
                        ESTABLISHED (and FIN_WAIT*); tcp_rcv_state_process:
                        data for a FIN_WAIT1/2 socket with RCV_SHUTDOWN
                        resets it (LINUX_MIB_TCPABORTONDATA);
  net/ipv4/tcp_minisocks.c  tcp_timewait_state_process: new data for a
                        FIN_WAIT2 timewait socket -> TCP_TW_RST. Whether the
                        closed server is that timewait socket or still a full
                        FIN_WAIT2 socket is a race (ORPHAN_RST below): both
                        answer the data with an RST, and the client's writes
                        come out the same.

Kernel eras (tracer/kernel/eras.py): the outcomes are the same on every
kernel from 5.10 (trees 5.10.13 to 6.12.117 read); what differs is who stores
sk_err (tcp_reset, or tcp_done_with_error from 6.11 and its backports) and
what a backend can see (tcp:tcp_send_reset sees a timewait socket's RST from
6.10; sock:sock_send_length from 6.3). Each scenario names the eras it meets.
"""
from __future__ import annotations

from dataclasses import dataclass, field


SENDERS_DOC = "timewait, full socket, active reset, no socket"
RST_SENDERS = ("timewait", "full socket", "active reset", "no socket")
SIGPIPE_EXPECTATIONS = ("ignored", "none", "kills")
SEND_FLAGS = ("MSG_NOSIGNAL", "MSG_DONTWAIT")
POLL_BITS = ("POLLIN", "POLLPRI", "POLLOUT", "POLLERR", "POLLHUP", "POLLRDNORM", "POLLWRNORM", "POLLRDHUP")
PAYLOADS = (b"hello\n", b"world\n", b"again\n")


@dataclass(frozen=True)
class Expected:
    """What the source predicts for writes 1..N ("success", an errno name, "SIGPIPE"; None: not
    judged), the reads, the SO_ERROR/poll queries, and the RST."""

    writes: tuple[str | None, ...]
    reads: tuple[str | None, ...] = ()  # "0" for end of file, a byte count, an errno name; None: not judged
    queries: tuple[tuple[str, object], ...] = ()  # (label, expected): "SO_ERROR" -> errno name or "0"; "poll" -> bits
    peer_state: str | None = None  # the client's state once the peer's close arrived (None: CLOSE_WAIT or CLOSE)
    # Who may send the RST ("timewait", "full socket", "active reset", "no socket"); any one of them matches. () = no RST.
    rst_from: tuple[str, ...] = ()
    sigpipe: str = "ignored"  # "ignored", "none", "kills" (SIG_DFL: the writer dies)
    why: tuple[str, ...] = ()  # the source facts, one per line, with function and file

    @property
    def read(self) -> str | None:
        """The first read's expectation (None when the scenario does not read)."""
        return self.reads[0] if self.reads else None


@dataclass(frozen=True)
class ServerStep:
    do: str  # accept | read | sleep | setsockopt | shutdown | close | exit
    bytes: int | None = None
    seconds: float = 0.0
    option: str | None = None
    value: object = None
    how: str | None = None
    expect: object = None
    why: tuple[str, ...] = ()
    rst: tuple[str, ...] | None = None
    rst_why: tuple[str, ...] = ()


@dataclass(frozen=True)
class ClientStep:
    do: str  # write | read | getsockopt | poll | shutdown | sleep | close
    when: str = "peer closed"  # "connected": before the server's steps after accept
    bytes: int | None = None
    data: str | None = None
    flags: tuple[str, ...] = ()
    option: str | None = None
    events: tuple[str, ...] = ()
    timeout_ms: int = 0
    how: str | None = None
    seconds: float = 0.0
    expect: object = None
    why: tuple[str, ...] = ()
    rst: tuple[str, ...] | None = None
    rst_why: tuple[str, ...] = ()
    sigpipe: str | None = None
    sigpipe_why: tuple[str, ...] = ()

    @property
    def size(self) -> int:
        """The bytes a write sends, or a read asks for."""
        if self.do == "read":
            return self.bytes or 4096
        if self.data is not None:
            return len(self.data.encode())
        return self.bytes or 6

    @property
    def label(self) -> str:
        return {"getsockopt": self.option or "SO_ERROR", "poll": "poll"}.get(self.do, self.do)

    def payload(self, index: int) -> bytes:
        """A write's bytes: its data, or the article's lines (hello, world, again, by write index) to size."""
        if self.data is not None:
            return self.data.encode()
        line = PAYLOADS[(max(index, 1) - 1) % len(PAYLOADS)]
        n = self.size
        return (line * (n // len(line) + 1))[:n]


@dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    expected: Expected
    description: str = ""
    family: str = "any"  # any | ipv4 | ipv6
    sigpipe_default: bool = False  # SIGPIPE left at SIG_DFL
    sysctls: tuple[tuple[str, str], ...] = ()  # set in the reproduction's namespace
    server_steps: tuple[ServerStep, ...] = ()
    client_steps: tuple[ClientStep, ...] = ()
    # The kernel eras that change what happens or what can be seen (keys of tracer/kernel/eras.py's
    # ERAS, each stated there with the oldest kernel that has it and where that was read).
    eras: tuple[str, ...] = ()
    source_text: str | None = None  # a user's file: its text (kept in recordings, for replay)
    source_path: str = ""

    @property
    def early_steps(self) -> tuple[ClientStep, ...]:
        """The client's steps before the server's (after accept)."""
        return tuple(s for s in self.client_steps if s.when == "connected")

    @property
    def late_steps(self) -> tuple[ClientStep, ...]:
        """The client's steps once the peer's FIN or RST arrived."""
        return tuple(s for s in self.client_steps if s.when != "connected")

    @property
    def nosignal(self) -> bool:
        return any("MSG_NOSIGNAL" in s.flags for s in self.client_steps if s.do == "write")

    @property
    def wait_for(self) -> tuple[str, ...]:
        """The client states that show the peer's close arrived (the late steps start then)."""
        return (self.expected.peer_state,) if self.expected.peer_state else ("CLOSE_WAIT", "CLOSE")

    @property
    def write_count(self) -> int:
        return sum(1 for s in self.late_steps if s.do == "write")


W_OK = None
EPIPE_VIA_SK_ERR = "sk_stream_wait_connect: sock_error() takes sk_err (net/core/stream.c)"
EPIPE_VIA_STATE = "sk_stream_wait_connect: sk_err 0 and state not SYN_SENT/SYN_RECV → -EPIPE (net/core/stream.c)"
CLOSE_WAIT_SENDS = "tcp_sendmsg_locked sends in CLOSE_WAIT without waiting (net/ipv4/tcp.c)"
TW_RST = "the closed server is a timewait socket (FIN_WAIT2): new data → TCP_TW_RST (tcp_timewait_state_process, net/ipv4/tcp_minisocks.c)"
# The close is racy: __tcp_close turns a FIN_WAIT2 socket into timewait only if the FIN's ACK
# was handled before its check (net/ipv4/tcp.c, 6.1.192:3042, 6.12.117:3198).
ORPHAN_RST = ("or, when the FIN's ACK comes while close() still owns the socket (or tcp_fin_timeout > 60 s), "
              "it stays a full orphaned FIN_WAIT2 socket (tcp_rcv_state_process, net/ipv4/tcp_input.c, 6.1.192:6771, "
              "6.12.117:6972) and new data makes it reset and send an RST (same function, 6.1.192:6828, "
              "6.12.117:7029)")
RST_FROM_CLOSED = ("timewait", "full socket")
RESET_CLOSE_WAIT = "tcp_reset: CLOSE_WAIT → sk_err = EPIPE, then tcp_done (net/ipv4/tcp_input.c)"
RESET_ESTABLISHED = "tcp_reset: ESTABLISHED → sk_err = ECONNRESET, then tcp_done (net/ipv4/tcp_input.c)"
SIGPIPE_IGNORED = "sk_stream_error raises SIGPIPE for -EPIPE without MSG_NOSIGNAL; ignored here (net/core/stream.c)"
# The eras an RST from the peer meets: who stores sk_err (tcp_reset's shape, tcp_done_with_error),
# and with tracepoints the write's result inside the kernel (sock:sock_send_length).
RESET_ERAS = ("tcp_done_with_error", "tcp_reset_skb", "sock_send_length")
# ... and, when the closed server's RST may come from its timewait socket, whether
# tcp:tcp_send_reset sees that sender.
CLOSED_SERVER_ERAS = ("send_reset_every_rst", *RESET_ERAS)


BUILTIN_ORDER = ("close", "shutdown-wr", "shutdown-rdwr", "linger0", "unread-data", "read-first", "nosignal",
                 "sigpipe-default", "no-timewait", "orphan-finwait2", "so-error", "poll")


def _builtins() -> dict[str, Scenario]:
    from tracer.process import scenario_file
    from tracer.scenarios import builtin_path

    out = {}
    for name in BUILTIN_ORDER:
        path = builtin_path(name)
        sc = scenario_file.parse(path.read_text(encoding="utf-8"), f"{name}.toml", default_name=name, builtin=True)
        out[name] = sc
    return out


SCENARIOS: dict[str, Scenario] = _builtins()
ORDER = tuple(SCENARIOS)
# The user's files loaded in this process (--scenario PATH, or a recording of one), by name.
_USER: dict[str, Scenario] = {}


def register(sc: Scenario) -> None:
    """A user's scenario, known by its name for the rest of this process (verdicts, displays)."""
    _USER[sc.name] = sc


def known(name: str) -> bool:
    return name in _USER or name in SCENARIOS


def get(name: str) -> Scenario:
    return _USER[name] if name in _USER else SCENARIOS[name]
