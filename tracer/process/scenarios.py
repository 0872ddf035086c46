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


@dataclass(frozen=True)
class Expected:
    """What the source predicts for writes 1..N (errno name or None for success), the read, and the RST."""

    writes: tuple[str | None, ...]  # per write: None = all bytes written, else the errno name
    read: str | None = None  # "0" for end of file, an errno name, or None when the scenario does not read
    peer_state: str = "CLOSE_WAIT"  # what the client's socket is in before write 1
    # Who may send the RST ("timewait", "full socket", "active reset"); any one of them matches. () = no RST.
    rst_from: tuple[str, ...] = ()
    sigpipe: str = "ignored"  # "ignored", "none", "kills" (SIG_DFL: the writer dies)
    why: tuple[str, ...] = ()  # the source facts, one per line, with function and file


@dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    server: str  # close | shutdown-wr | shutdown-rdwr | linger0
    unread: bool = False  # the client sends data the server never reads, before the close
    read_first: bool = False  # the client reads once the peer closed, before writing
    nosignal: bool = False  # send(..., MSG_NOSIGNAL) instead of write(2)
    sigpipe_default: bool = False  # SIGPIPE left at SIG_DFL
    expected: Expected = field(kw_only=True)
    # The kernel eras that change what happens or what can be seen (keys of tracer/kernel/eras.py's
    # ERAS, each stated there with the oldest kernel that has it and where that was read).
    eras: tuple[str, ...] = field(default=(), kw_only=True)

    @property
    def wait_for(self) -> str:
        """The client state that shows the peer's close arrived (the writes start then)."""
        return self.expected.peer_state


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


_ALL = (
    Scenario("close", "the article: the server closes, the client writes", "close", expected=Expected(
        writes=(W_OK, "EPIPE", "EPIPE"), rst_from=RST_FROM_CLOSED,
        why=(CLOSE_WAIT_SENDS, TW_RST, ORPHAN_RST, RESET_CLOSE_WAIT, EPIPE_VIA_SK_ERR + " (write 2)",
             EPIPE_VIA_STATE + " (write 3)", SIGPIPE_IGNORED)), eras=CLOSED_SERVER_ERAS),
    Scenario("shutdown-wr", "the server only half-closes: shutdown(SHUT_WR)", "shutdown-wr", expected=Expected(
        writes=(W_OK, W_OK, W_OK), sigpipe="none",
        why=(CLOSE_WAIT_SENDS,
             "the server's socket stays open for reading in FIN_WAIT2 and queues the data (tcp_rcv_state_process, "
             "net/ipv4/tcp_input.c): no RST, every write succeeds")), eras=("sock_send_length",)),
    Scenario("shutdown-rdwr", "the server shuts both ways without closing: shutdown(SHUT_RDWR)", "shutdown-rdwr", expected=Expected(
        writes=(W_OK, "EPIPE", "EPIPE"), rst_from=("full socket",),
        why=(CLOSE_WAIT_SENDS,
             "data for a FIN_WAIT1/2 socket with RCV_SHUTDOWN: tcp_rcv_state_process calls tcp_reset on the server's "
             "own socket and tcp_v4_do_rcv answers with an RST (net/ipv4/tcp_input.c, tcp_ipv4.c)",
             RESET_CLOSE_WAIT, EPIPE_VIA_SK_ERR + " (write 2)", EPIPE_VIA_STATE + " (write 3)", SIGPIPE_IGNORED)),
        eras=RESET_ERAS),
    Scenario("linger0", "abortive close: SO_LINGER with a zero timeout", "linger0", expected=Expected(
        writes=("ECONNRESET", "EPIPE", "EPIPE"), peer_state="CLOSE", rst_from=("active reset",),
        why=("tcp_close with SO_LINGER 0: tcp_disconnect → tcp_send_active_reset, no FIN (net/ipv4/tcp.c)",
             RESET_ESTABLISHED,
             "write 1: sk_stream_wait_connect → sock_error() takes ECONNRESET; sk_stream_error raises no SIGPIPE "
             "for it (net/core/stream.c)",
             EPIPE_VIA_STATE + " (writes 2, 3)", SIGPIPE_IGNORED)), eras=RESET_ERAS),
    Scenario("unread-data", "the server closes with unread data in its receive queue", "close", unread=True, expected=Expected(
        writes=("ECONNRESET", "EPIPE", "EPIPE"), peer_state="CLOSE", rst_from=("active reset",),
        why=("tcp_close with data unread: tcp_send_active_reset instead of a FIN, RFC 2525 2.17 (net/ipv4/tcp.c)",
             RESET_ESTABLISHED,
             "write 1: sk_stream_wait_connect → sock_error() takes ECONNRESET (net/core/stream.c)",
             EPIPE_VIA_STATE + " (writes 2, 3)", SIGPIPE_IGNORED)), eras=RESET_ERAS),
    Scenario("read-first", "the client reads after the FIN (end of file), then writes", "close", read_first=True, expected=Expected(
        writes=(W_OK, "EPIPE", "EPIPE"), read="0", rst_from=RST_FROM_CLOSED,
        why=("read: tcp_recvmsg returns 0 once the FIN set SOCK_DONE and RCV_SHUTDOWN (tcp_recvmsg_locked, "
             "net/ipv4/tcp.c; tcp_fin, net/ipv4/tcp_input.c)",
             CLOSE_WAIT_SENDS, TW_RST, ORPHAN_RST, RESET_CLOSE_WAIT, EPIPE_VIA_SK_ERR + " (write 2)", SIGPIPE_IGNORED)),
        eras=(*CLOSED_SERVER_ERAS, "tcp_recvmsg_nonblock")),
    Scenario("nosignal", "send(MSG_NOSIGNAL) instead of ignoring SIGPIPE", "close", nosignal=True,
                  sigpipe_default=True, expected=Expected(
        writes=(W_OK, "EPIPE", "EPIPE"), rst_from=RST_FROM_CLOSED, sigpipe="none",
        why=(CLOSE_WAIT_SENDS, TW_RST, ORPHAN_RST, RESET_CLOSE_WAIT, EPIPE_VIA_SK_ERR + " (write 2)",
             "sk_stream_error: MSG_NOSIGNAL → no SIGPIPE, the writer lives with SIG_DFL (net/core/stream.c)")),
        eras=CLOSED_SERVER_ERAS),
    Scenario("sigpipe-default", "SIGPIPE not ignored: the default action kills the writer", "close",
                  sigpipe_default=True, expected=Expected(
        writes=(W_OK, "SIGPIPE"), rst_from=RST_FROM_CLOSED, sigpipe="kills",
        why=(CLOSE_WAIT_SENDS, TW_RST, ORPHAN_RST, RESET_CLOSE_WAIT,
             "write 2: -EPIPE → sk_stream_error sends SIGPIPE (net/core/stream.c), whose default action "
             "terminates the process before write(2) returns")), eras=CLOSED_SERVER_ERAS),
)
SCENARIOS: dict[str, Scenario] = {s.name: s for s in _ALL}
ORDER = tuple(SCENARIOS)


def get(name: str) -> Scenario:
    return SCENARIOS[name]
