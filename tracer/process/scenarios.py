"""The built-in variants of the half-close: TOML files shipped in tracer/scenarios/
(the format: tracer/process/scenario_file.py), read once here, and the user's files
loaded in this process (register). What the server does, what the client does,
and what the kernel source says must happen, each with its citation.

Pure. tracer/collect/repro_child.py acts a scenario out, tracer/process/verdicts.py
compares what was observed with its Expected.

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

from tracer.process.scenario_model import (PAYLOADS, POLL_BITS, RST_SENDERS, SEND_FLAGS,  # noqa: F401
                                           SIGPIPE_EXPECTATIONS, ClientStep, Expected, Scenario, ServerStep)

BUILTIN_ORDER = ("close", "shutdown-wr", "shutdown-rdwr", "linger0", "unread-data", "read-first", "nosignal",
                 "sigpipe-default", "no-timewait", "orphan-finwait2", "so-error", "poll",
                 "read-after-rst", "reset-read")


def _builtins() -> dict[str, Scenario]:
    from tracer.process import scenario_file
    from tracer.scenarios import builtin_path

    out = {}
    for name in BUILTIN_ORDER:
        path = builtin_path(name)
        sc = scenario_file.parse(path.read_text(encoding="utf-8"), f"{name}.toml", default_name=name, builtin=True)
        out[name] = sc
    return out


# The article's question and its first variants: run alone, they write twice, as the article
# (their files list a third write, for `--scenario all`). Every other scenario writes as its file says.
TWO_WRITES_ALONE = BUILTIN_ORDER[:8]


def writes_alone(name: str, file: str | None, every: bool) -> int | None:
    """How many writes a scenario makes by default: 2 for one of TWO_WRITES_ALONE run alone
    (not in `all`, not a user's file), else None (as its file says)."""
    return 2 if not every and not file and name in TWO_WRITES_ALONE else None
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
