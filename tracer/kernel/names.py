"""Names for the numbers the kernel reports: TCP states, sk_shutdown bits, errnos.

TCP state names are read from the running kernel's BTF (the anonymous enum
that holds TCP_ESTABLISHED); the fallback table below is
include/net/tcp_states.h as of v6.1 (the values are unchanged through 6.18).
"""
from __future__ import annotations

import errno as _errno

# include/net/tcp_states.h, Linux v6.1.
TCP_STATES_FALLBACK = {
    1: "ESTABLISHED",
    2: "SYN_SENT",
    3: "SYN_RECV",
    4: "FIN_WAIT1",
    5: "FIN_WAIT2",
    6: "TIME_WAIT",
    7: "CLOSE",
    8: "CLOSE_WAIT",
    9: "LAST_ACK",
    10: "LISTEN",
    11: "CLOSING",
    12: "NEW_SYN_RECV",
}
FALLBACK_SOURCE = "include/net/tcp_states.h (v6.1)"

# The TCP header's flag bits (byte 13; include/net/tcp.h TCPHDR_*, Linux v6.1), as
# hc_event.tcp_flags carries them (bpf/halfclose.h).
TCP_FIN, TCP_SYN, TCP_RST, TCP_PSH, TCP_ACK = 0x01, 0x02, 0x04, 0x08, 0x10

# include/net/sock.h, Linux v6.1: RCV_SHUTDOWN 1, SEND_SHUTDOWN 2, SHUTDOWN_MASK 3.
RCV_SHUTDOWN = 1
SEND_SHUTDOWN = 2


def state_names_from_btf(btf) -> dict[int, str] | None:
    """The TCP_* state enum from BTF, without the TCP_ prefix; None if absent."""
    try:
        values = btf.enum_with_value("TCP_ESTABLISHED")
    except Exception:
        return None
    names = {v: k[len("TCP_"):] for k, v in values.items() if k.startswith("TCP_")}
    # The enum ends with TCP_MAX_STATES, which is no state.
    return {v: n for v, n in names.items() if n != "MAX_STATES"} or None


def state_name(names: dict[int, str], state: int) -> str:
    return names.get(state, f"state {state}")


def shutdown_name(v: int) -> str:
    if v == 0:
        return "0"
    parts = []
    if v & RCV_SHUTDOWN:
        parts.append("RCV_SHUTDOWN")
    if v & SEND_SHUTDOWN:
        parts.append("SEND_SHUTDOWN")
    if v & ~(RCV_SHUTDOWN | SEND_SHUTDOWN):
        parts.append(hex(v & ~3))
    return "|".join(parts)


def errno_name(e: int) -> str:
    """Name of a positive errno value (EPIPE), or its number."""
    return _errno.errorcode.get(abs(e), str(abs(e)))


def ret_name(ret: int) -> str:
    """A kernel return value: -32 becomes -EPIPE, 6 stays 6."""
    return f"-{errno_name(ret)}" if ret < 0 else str(ret)


def err_name(e: int) -> str:
    """An sk_err value: 32 becomes EPIPE, 0 stays 0."""
    return errno_name(e) if e else "0"

# A task's name (comm) keeps 15 bytes and a NUL: TASK_COMM_LEN, include/linux/sched.h (v6.1, v6.12).
TASK_COMM_LEN = 16
