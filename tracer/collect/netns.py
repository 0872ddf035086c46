"""What a reproduction's private network namespace was set to, read from inside it. Needs root.

The sysctls that shape the client's segments (the options of its SYN, ECN) go into
the recording, for the packetdrill script's backtick line (tracer/display/packetdrill.py).
A file under /proc/sys/net shows the namespace of the task that opens it
(net_ctl_header_lookup, net/sysctl_net.c, 6.1 and 6.12), so a thread joins the namespace
with setns(2) -- which changes that thread only -- reads them, and ends.
"""
from __future__ import annotations

import ctypes
import os
import threading
import time

CLONE_NEWNET = 0x40000000
# The client's SYN options (timestamps, SACK, window scaling) and its ECN negotiation.
SYSCTLS = ("net.ipv4.tcp_timestamps", "net.ipv4.tcp_sack", "net.ipv4.tcp_window_scaling", "net.ipv4.tcp_ecn")


def sysctls(pid: int, names: tuple[str, ...] = SYSCTLS) -> dict[str, str]:
    """The sysctls of the network namespace of process pid; {} when it cannot be joined
    (the process is gone): the recording then says nothing rather than this host's values."""
    found: dict[str, str] = {}

    def inside() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        try:
            fd = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY)
        except OSError:
            return
        try:
            if libc.setns(fd, CLONE_NEWNET) != 0:
                return
        finally:
            os.close(fd)
        for name in names:
            try:
                with open("/proc/sys/" + name.replace(".", "/"), encoding="ascii") as f:
                    found[name] = " ".join(f.read().split())
            except OSError:  # not on this kernel: left out
                continue

    t = threading.Thread(target=inside, name="netns-sysctls")
    t.start()
    t.join()
    return found


def wall_offset_ns() -> int:
    """CLOCK_REALTIME - CLOCK_MONOTONIC now: bpf_ktime_get_ns() + this is the wall clock."""
    return time.time_ns() - time.clock_gettime_ns(time.CLOCK_MONOTONIC)
