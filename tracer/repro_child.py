"""The reproduction's process: a server and a client in a private network namespace.

Run by tracer/repro.py as `python -m tracer.repro_child PORT`, it takes one
command per line on stdin and answers with one JSON object per line on stdout,
so the tracer decides when each step happens (after it has seen the FIN, for
instance) and this process never sleeps blindly. It needs root (unshare).

It is the article's program in Python: SIGPIPE is ignored and every write is
a plain write(2) through os.write.

Commands: connect | close | write INDEX | exit
"""
from __future__ import annotations

import ctypes
import errno
import fcntl
import json
import os
import signal
import socket
import struct
import sys
import time

CLONE_NEWNET = 0x40000000
SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1
PAYLOADS = [b"hello\n", b"world\n", b"again\n"]


def say(**kw) -> None:
    print(json.dumps(kw), flush=True)


def now() -> int:
    # CLOCK_MONOTONIC: the clock of bpf_ktime_get_ns(), so user and kernel times line up.
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC)


def enter_private_netns() -> int:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"unshare(CLONE_NEWNET): {os.strerror(err)}")
    # A new namespace has only loopback, and it is down.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        req = struct.pack("16sH14x", b"lo", 0)
        flags = struct.unpack("16sH14x", fcntl.ioctl(s, SIOCGIFFLAGS, req))[1]
        fcntl.ioctl(s, SIOCSIFFLAGS, struct.pack("16sH14x", b"lo", flags | IFF_UP))
    return os.stat("/proc/self/ns/net").st_ino


def main(argv: list[str]) -> int:
    port = int(argv[1]) if len(argv) > 1 else 9999
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)  # as the article: the write reports EPIPE
    try:
        netns = enter_private_netns()
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", port))
        listener.listen(1)
    except OSError as exc:
        say(ev="error", message=str(exc))
        return 1
    say(ev="ready", netns=netns, pid=os.getpid(), server_port=port)

    client = server = None
    for line in sys.stdin:
        cmd = line.split()
        if not cmd:
            continue
        if cmd[0] == "connect":
            client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            t = now()
            client.connect(("127.0.0.1", port))
            server, _ = listener.accept()
            say(ev="connected", t_ns=t, client_port=client.getsockname()[1])
        elif cmd[0] == "close":
            t = now()
            server.close()
            listener.close()
            say(ev="server_closed", t_ns=t)
        elif cmd[0] == "write":
            index = int(cmd[1])
            data = PAYLOADS[(index - 1) % len(PAYLOADS)]
            t0 = now()
            try:
                ret, err = os.write(client.fileno(), data), None
            except OSError as exc:
                ret, err = -1, errno.errorcode.get(exc.errno, str(exc.errno))
            t1 = now()
            say(ev="write", index=index, size=len(data), ret=ret, errno=err, t_start_ns=t0, t_end_ns=t1)
        elif cmd[0] == "exit":
            break
    if client:
        client.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
