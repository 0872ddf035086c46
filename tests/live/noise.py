"""Foreign TCP traffic for the robustness tests: a bounded loop of connections
on 127.0.0.1 only, to the given ports of this (the host's) network namespace.

    python tests/live/noise.py COUNT TIMES_FILE PORT [PORT...]

Each connection sends a byte and ends with an RST (SO_LINGER {1, 0}, the RST
alternately from the client and the server end), so that the receiving socket
runs tcp_reset and sk_error_report (net/ipv4/tcp_input.c): the events whose
records carry the port and, for sock:inet_sk_error_report, no socket. It stops
after COUNT connections or when its stdin closes. It writes each connection's
CLOCK_MONOTONIC time (ns, the clock of bpf_ktime_get_ns) to TIMES_FILE as
native 8-byte integers, then one line of JSON on stdout: {"connections": N}.
"""
from __future__ import annotations

import array
import json
import os
import select
import socket
import struct
import sys
import time

LINGER0 = struct.pack("ii", 1, 0)
ADDRESS = "127.0.0.1"  # this machine only


def main(argv: list[str]) -> int:
    count, times_file, ports = int(argv[1]), argv[2], [int(p) for p in argv[3:]]
    listeners = {}
    for port in ports:
        srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        srv.bind((ADDRESS, port))
        srv.listen(128)
        listeners[port] = srv
    print(json.dumps({"listening": ports}), flush=True)
    times = array.array("q")
    stdin = sys.stdin.fileno()
    for i in range(count):
        if i % 256 == 0 and select.select([stdin], [], [], 0)[0] and not os.read(stdin, 1):
            break  # told to stop (stdin closed)
        port = ports[i % len(ports)]
        client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        client.connect((ADDRESS, port))
        server, _ = listeners[port].accept()
        client.send(b"x")
        server.recv(1)
        ender, other = (client, server) if i % 2 else (server, client)
        ender.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER0)
        ender.close()  # an RST: the other end's tcp_reset and sk_error_report
        other.close()
        times.append(time.clock_gettime_ns(time.CLOCK_MONOTONIC))
    with open(times_file, "wb") as f:
        times.tofile(f)
    print(json.dumps({"connections": len(times)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
