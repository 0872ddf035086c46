#!/usr/bin/env python3
"""bench.py: what trace-halfclose's probes cost the rest of the machine.

While the tool traces its reproduction, its hooks fire for every socket of
the machine and filter in the kernel (first thing: the socket's network
namespace, or the client's pid). This measures a loop of 64-byte writes on an
unrelated loopback TCP connection (the host namespace, another process):

  baseline        no BPF loaded
  loaded          the tool's programs loaded and armed for another namespace
  loaded+io       also the read/write syscall tracepoints the tracepoint backend
                  attaches while its client does I/O (pid-filtered)

    sudo .venv/bin/python scripts/bench.py [--backend auto|kprobe|fentry|tracepoint] [--writes N]
    sudo .venv/bin/trace-halfclose vm -- ...   (for kprobes: run this script in the VM, see README)

Prints one line per case: mean µs per write (median of 5 rounds) and the
difference to the baseline.
"""
from __future__ import annotations

import argparse
import os
import socket
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tracer.collect.prepare import load_first, prepare  # noqa: E402

PAYLOAD = b"x" * 64


def connection() -> tuple[socket.socket, threading.Thread]:
    """A loopback TCP connection whose reader drains everything in a thread."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    cli = socket.create_connection(srv.getsockname())
    peer, _ = srv.accept()
    srv.close()

    def drain():
        while peer.recv(1 << 16):
            pass

    t = threading.Thread(target=drain, daemon=True)
    t.start()
    return cli, t


def per_write_us(n: int, rounds: int = 5) -> float:
    cli, _ = connection()
    fd = cli.fileno()
    results = []
    for _ in range(rounds):
        t0 = time.perf_counter_ns()
        for _ in range(n):
            os.write(fd, PAYLOAD)
        results.append((time.perf_counter_ns() - t0) / n / 1000)
    cli.close()
    return statistics.median(results)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backend", default="auto")
    ap.add_argument("--writes", type=int, default=100_000)
    args = ap.parse_args()

    print(f"kernel {os.uname().release}, {args.writes} writes of {len(PAYLOAD)} bytes per round")
    base = per_write_us(args.writes)
    print(f"  baseline              {base:6.2f} µs/write")

    plans, skipped, btf, _ = prepare("repro", args.backend)
    session, plan = load_first(plans, skipped, btf, lambda _msg: None)
    try:
        session.trace_netns(1)  # no namespace has inode 1: every hook fires and filters out
        session.trace_client(1, 1)
        loaded = per_write_us(args.writes)
        print(f"  loaded ({plan.backend:<10})  {loaded:6.2f} µs/write  (+{loaded - base:.2f} µs, "
              f"{(loaded / base - 1) * 100:+.0f} %)")
        if plan.backend == "tracepoint":
            session.begin_client_io()
            io = per_write_us(args.writes)
            session.end_client_io()
            print(f"  loaded+io syscall tps {io:6.2f} µs/write  (+{io - base:.2f} µs, {(io / base - 1) * 100:+.0f} %)")
        lost = session.lost()
        events = len(session.poll(0))
        print(f"  events that passed the filter: {events} (lost {lost})")
    finally:
        session.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
